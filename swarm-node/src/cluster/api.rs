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
    HeartbeatRequest, HeartbeatResponse, JoinRequest, JoinResponse, RenewRequest, RenewResponse,
    dispatcher_server::{Dispatcher, DispatcherServer},
    node_ca_server::{NodeCa, NodeCaServer},
};

use super::pki::CertificateSubject;

/// Who is calling: the subject of the client certificate TLS has already
/// checked against the CA.
#[allow(clippy::result_large_err)] // tonic's Status is what handlers return.
fn caller<T>(request: &Request<T>) -> Result<CertificateSubject, Status> {
    let certs = request
        .peer_certs()
        .ok_or_else(|| Status::unauthenticated("a node certificate is required"))?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("a node certificate is required"))?;
    CertificateSubject::from_der(leaf.as_ref()).map_err(|e| Status::unauthenticated(e.to_string()))
}

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
        let subject = caller(&request)?;
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

    async fn renew(
        &self,
        request: Request<RenewRequest>,
    ) -> Result<Response<RenewResponse>, Status> {
        let subject = caller(&request)?;
        let csr_pem = request.into_inner().csr_pem;
        let membership = self.membership.clone();
        let node = subject.node_id.clone();
        let cert_pem = tokio::task::spawn_blocking(move || membership.renew(&subject, &csr_pem))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::permission_denied(e.to_string()))?;
        tracing::info!(%node, "certificate renewed");
        Ok(Response::new(RenewResponse { cert_pem }))
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
