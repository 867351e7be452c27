//! The managers' node CA, after swarmkit's `ca` server: a joining node's
//! certificate for the role its token admits, and members' renewals.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use tonic::{Request, Response, Status};

use super::{
    Manager,
    store::{Command, DEFAULT_LISTEN_PORT, NodeChange, NodeRecord},
};
use crate::{
    api::{
        Availability, ClusterError, NodeResources, Role,
        proto::{
            self, JoinRequest, JoinResponse, RenewRequest, RenewResponse, node_ca_server::NodeCa,
        },
    },
    ca::{
        pki::{CertificateSubject, JoinToken, RootCa, TokenError},
        tls::caller,
    },
};

impl Manager {
    /// A manager's answer to a joining node: a certificate for the role its
    /// token admits; the node is recorded through the leader.
    pub fn admit(&self, request: &proto::JoinRequest) -> Result<proto::JoinResponse, ClusterError> {
        let addr: IpAddr = request.advertise_addr.parse().map_err(|_| {
            ClusterError::Join(format!(
                "invalid advertise address {:?}",
                request.advertise_addr
            ))
        })?;
        let token: JoinToken = request
            .token
            .parse()
            .map_err(|e: TokenError| ClusterError::Join(e.to_string()))?;
        let listen_port = match request.listen_port {
            0 => DEFAULT_LISTEN_PORT,
            port => u16::try_from(port)
                .map_err(|_| ClusterError::Join(format!("invalid listen port {port}")))?,
        };
        let node_id = &request.node_id;
        let valid_id = !node_id.is_empty()
            && node_id.len() <= 64
            && node_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !valid_id {
            return Err(ClusterError::Join(format!("invalid node ID {node_id:?}")));
        }
        let (role, cert_pem, cluster_id, ca_pem, managers) = self.read_store(|s| {
            let role = s.admits(&token).ok_or_else(|| {
                ClusterError::Join(
                    "invalid join token: it was rotated, or it belongs to another swarm; get the current one with `swarm join-token worker` (or manager) on a manager".into(),
                )
            })?;
            if s.nodes.get(node_id).is_some_and(|n| n.role == Role::Manager) {
                return Err(ClusterError::Join(format!(
                    "node {node_id} is still a manager of this swarm (it left with --force): demote it first with `swarm node demote {node_id}` on a manager, then join again"
                )));
            }
            let ca = RootCa::from_pem(&s.ca_cert_pem, &s.ca_key_pem)?;
            let cert = ca.sign_request(
                &request.csr_pem,
                &s.cluster_id,
                node_id,
                role,
                &[addr],
                Duration::from_secs(s.cert_expiry_secs),
            )?;
            let managers: Vec<String> = s.managers().map(|m| m.addr.to_string()).collect();
            Ok::<_, ClusterError>((role, cert, s.cluster_id.clone(), s.ca_cert_pem.clone(), managers))
        })??;
        let data_path_addr =
            match request.data_path_addr.as_str() {
                "" => None,
                text => Some(text.parse().map_err(|_| {
                    ClusterError::Join(format!("invalid data path address {text:?}"))
                })?),
            };
        let availability = match request.availability.as_str() {
            "" | "active" => Availability::Active,
            "pause" => Availability::Pause,
            "drain" => Availability::Drain,
            other => {
                return Err(ClusterError::Refused(format!(
                    "invalid availability {other:?}: give active, pause or drain"
                )));
            }
        };
        self.write(Command::AddNode(NodeRecord {
            id: node_id.clone(),
            hostname: request.hostname.clone(),
            addr: SocketAddr::new(addr, listen_port),
            role,
            availability,
            labels: BTreeMap::new(),
            engine_labels: request.engine_labels.clone().into_iter().collect(),
            resources: NodeResources {
                nano_cpus: request.nano_cpus,
                memory_bytes: request.memory_bytes,
            },
            platform: crate::api::Platform {
                os: request.os.clone(),
                architecture: request.architecture.clone(),
            },
            data_path_addr,
            version: 1,
        }))?;
        // A node joining again keeps its availability, unless it asks for one.
        if !request.availability.is_empty() {
            self.write(Command::UpdateNode {
                id: node_id.clone(),
                change: NodeChange {
                    availability: Some(availability),
                    ..NodeChange::default()
                },
            })?;
        }
        Ok(proto::JoinResponse {
            cluster_id,
            role: role.to_string(),
            cert_pem,
            ca_pem,
            managers,
        })
    }

    /// A manager renewing a member's certificate: same node, in the role the
    /// cluster now gives it, for the key in `csr_pem`.
    pub fn renew(
        &self,
        subject: &CertificateSubject,
        csr_pem: &str,
    ) -> Result<String, ClusterError> {
        self.authorize_member(subject)?;
        self.read_store(|s| {
            let node = s
                .nodes
                .get(&subject.node_id)
                .ok_or_else(|| ClusterError::NoSuchNode(subject.node_id.clone()))?;
            let ca = RootCa::from_pem(&s.ca_cert_pem, &s.ca_key_pem)?;
            Ok(ca.sign_request(
                csr_pem,
                &s.cluster_id,
                &node.id,
                node.role,
                &[node.addr.ip()],
                Duration::from_secs(s.cert_expiry_secs),
            )?)
        })?
    }
}

/// The `NodeCa` gRPC service.
pub(super) struct NodeCaService {
    pub(super) manager: Arc<Manager>,
}

#[tonic::async_trait]
impl NodeCa for NodeCaService {
    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let peer = request.remote_addr();
        let request = request.into_inner();
        let manager = self.manager.clone();
        let admitted = tokio::task::spawn_blocking(move || manager.admit(&request))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        match admitted {
            Ok(response) => {
                tracing::info!(?peer, role = %response.role, "node joined");
                Ok(Response::new(response))
            }
            Err(err) => {
                tracing::warn!(?peer, error = %err, "join refused");
                Err(Status::permission_denied(err.to_string()))
            }
        }
    }

    async fn renew(
        &self,
        request: Request<RenewRequest>,
    ) -> Result<Response<RenewResponse>, Status> {
        let subject = caller(&request)?;
        let csr_pem = request.into_inner().csr_pem;
        let manager = self.manager.clone();
        let node = subject.node_id.clone();
        let cert_pem = tokio::task::spawn_blocking(move || manager.renew(&subject, &csr_pem))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::permission_denied(e.to_string()))?;
        tracing::info!(%node, "certificate renewed");
        Ok(Response::new(RenewResponse { cert_pem }))
    }
}
