//! The managers' gRPC API on the control-plane port, over TLS with the
//! node's certificate: `Join` admits nodes that present a join token;
//! `Heartbeat` takes agents' reports, naming them by their certificate. Client
//! certificates are checked when presented (the CA is the only root) and not
//! required, since a joining node has none yet.

use std::{net::SocketAddr, sync::Arc};

use tokio::sync::watch;
use tonic::{
    Request, Response, Status,
    transport::{Certificate, Identity, Server, ServerTlsConfig},
};

use super::node::Membership;

pub mod proto {
    tonic::include_proto!("swarm.cluster.v1");
}

use proto::{
    HeartbeatRequest, HeartbeatResponse, JoinRequest, JoinResponse,
    dispatcher_server::{Dispatcher, DispatcherServer},
    node_ca_server::{NodeCa, NodeCaServer},
};

use super::pki::CertificateSubject;

struct DispatcherService {
    membership: Arc<Membership>,
}

#[tonic::async_trait]
impl Dispatcher for DispatcherService {
    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        // TLS has checked the certificate against the CA; its subject says
        // which node is calling.
        let certs = request
            .peer_certs()
            .ok_or_else(|| Status::unauthenticated("a node certificate is required"))?;
        let leaf = certs
            .first()
            .ok_or_else(|| Status::unauthenticated("a node certificate is required"))?;
        let subject = CertificateSubject::from_der(leaf.as_ref())
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        let period = self
            .membership
            .heartbeat(&subject)
            .map_err(|e| Status::permission_denied(e.to_string()))?;
        Ok(Response::new(HeartbeatResponse {
            period_millis: period.as_millis() as u64,
        }))
    }
}

struct NodeCaService {
    membership: Arc<Membership>,
}

#[tonic::async_trait]
impl NodeCa for NodeCaService {
    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let peer = request.remote_addr();
        let request = request.into_inner();
        let membership = self.membership.clone();
        let admitted = tokio::task::spawn_blocking(move || membership.admit(&request))
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
}

/// TLS material for serving: this node's certificate and key, and the CA.
pub struct ServerCredentials {
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
}

/// Serves the API on `addr` until `stop` turns true.
pub async fn serve(
    membership: Arc<Membership>,
    credentials: ServerCredentials,
    addr: SocketAddr,
    mut stop: watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    // The chain includes the CA, so a joining node can pin it by digest.
    let identity = Identity::from_pem(
        format!("{}{}", credentials.cert_pem, credentials.ca_pem),
        credentials.key_pem,
    );
    let tls = ServerTlsConfig::new()
        .identity(identity)
        .client_ca_root(Certificate::from_pem(credentials.ca_pem))
        .client_auth_optional(true);
    tracing::info!(%addr, "control-plane API listening");
    Server::builder()
        .tls_config(tls)?
        .add_service(NodeCaServer::new(NodeCaService {
            membership: membership.clone(),
        }))
        .add_service(DispatcherServer::new(DispatcherService { membership }))
        .serve_with_shutdown(addr, async move {
            let _ = stop.wait_for(|stop| *stop).await;
        })
        .await
}
