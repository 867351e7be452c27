//! The managers' gRPC API on the control-plane port, over TLS with the
//! node's certificate: `Join` admits nodes that present a join token;
//! `Heartbeat` takes agents' reports, naming them by their certificate;
//! `Raft` carries Raft between managers and `Manager` passes work to the
//! leader, both for manager certificates only. Client certificates are
//! checked when presented (the CA is the only root) and not required, since
//! a joining node has none yet; each call that needs one says so (TLS
//! itself is in `serving`).

use std::{net::SocketAddr, sync::Arc};

use tokio::sync::watch;
use tonic::{Request, Response, Status, transport::Server};

use super::node::Membership;

pub mod proto {
    tonic::include_proto!("swarm.cluster.v1");
}

use proto::{
    AssignmentsRequest, AssignmentsResponse, ForwardRequest, ForwardResponse, HeartbeatRequest,
    HeartbeatResponse, JoinRequest, JoinResponse, LogReport, LogReportResponse, RenewRequest,
    RenewResponse, TaskReport, TaskReportResponse,
    dispatcher_server::{Dispatcher, DispatcherServer},
    manager_server::{Manager, ManagerServer},
    node_ca_server::{NodeCa, NodeCaServer},
    raft_server::RaftServer,
};

use super::{
    ClusterError,
    node::Forwarded,
    pki::CertificateSubject,
    raft::server::RaftService,
    serving::{ServedCertificate, ServingError, accept_tls, server_config},
};

/// Who is calling: the subject of the client certificate TLS has already
/// checked against the CA.
#[allow(clippy::result_large_err)] // tonic's Status is what handlers return.
pub fn caller<T>(request: &Request<T>) -> Result<CertificateSubject, Status> {
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
        self.membership
            .heartbeat(&subject)
            .map(Response::new)
            .map_err(status)
    }

    async fn assignments(
        &self,
        request: Request<AssignmentsRequest>,
    ) -> Result<Response<AssignmentsResponse>, Status> {
        let subject = caller(&request)?;
        let view = self
            .membership
            .assignments(&subject, request.get_ref().known_version)
            .await
            .map_err(status)?;
        let view_json = serde_json::to_vec(&view).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(AssignmentsResponse { view_json }))
    }

    async fn report_tasks(
        &self,
        request: Request<TaskReport>,
    ) -> Result<Response<TaskReportResponse>, Status> {
        let subject = caller(&request)?;
        let statuses = serde_json::from_slice(&request.get_ref().statuses_json)
            .map_err(|e| Status::invalid_argument(format!("malformed task report: {e}")))?;
        let membership = self.membership.clone();
        tokio::task::spawn_blocking(move || membership.report_tasks(&subject, statuses))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(status)?;
        Ok(Response::new(TaskReportResponse {}))
    }

    async fn report_logs(
        &self,
        request: Request<LogReport>,
    ) -> Result<Response<LogReportResponse>, Status> {
        let subject = caller(&request)?;
        let report = request.into_inner();
        let logs = serde_json::from_slice(&report.logs_json)
            .map_err(|e| Status::invalid_argument(format!("malformed log report: {e}")))?;
        self.membership
            .deliver_logs(&report.request_id, &subject, logs);
        Ok(Response::new(LogReportResponse {}))
    }
}

/// A cluster error as a gRPC status; the codes callers retry on are
/// `Unavailable` and `FailedPrecondition`.
fn status(err: ClusterError) -> Status {
    match err {
        ClusterError::NotLeader => Status::failed_precondition(err.to_string()),
        ClusterError::Unavailable(_) | ClusterError::NotManager => {
            Status::unavailable(err.to_string())
        }
        _ => Status::permission_denied(err.to_string()),
    }
}

struct ManagerService {
    membership: Arc<Membership>,
}

#[tonic::async_trait]
impl Manager for ManagerService {
    async fn forward(
        &self,
        request: Request<ForwardRequest>,
    ) -> Result<Response<ForwardResponse>, Status> {
        let subject = caller(&request)?;
        let ForwardRequest { request_json, hops } = request.into_inner();
        let work: Forwarded = serde_json::from_slice(&request_json)
            .map_err(|e| Status::invalid_argument(format!("malformed forwarded work: {e}")))?;
        // A demoted manager (whose certificate already says worker) may
        // still ask to leave the voters itself, and nothing else.
        let leaving_itself =
            matches!(&work, Forwarded::RemoveVoter { node_id } if *node_id == subject.node_id);
        if !leaving_itself {
            self.membership
                .authorize_manager(&subject)
                .map_err(|e| Status::permission_denied(e.to_string()))?;
        }
        let membership = self.membership.clone();
        let answer = tokio::task::spawn_blocking(move || membership.lead(work, hops.max(1)))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        let response = match answer {
            Ok(response) => response,
            // Retried by the caller: no leader here, or none reachable.
            Err(err @ (ClusterError::NotLeader | ClusterError::Unavailable(_))) => {
                return Err(status(err));
            }
            Err(err) => crate::control::Response::Error(err.to_string()),
        };
        serde_json::to_vec(&response)
            .map(|response_json| Response::new(ForwardResponse { response_json }))
            .map_err(|e| Status::internal(e.to_string()))
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

/// Why the API could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] ServingError),
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
}

/// Serves the API on `addr` until `stop` turns true, presenting
/// `certificate` (swapped in place when renewed) and checking client
/// certificates against `ca_pem`.
pub async fn serve(
    membership: Arc<Membership>,
    certificate: Arc<ServedCertificate>,
    ca_pem: &str,
    addr: SocketAddr,
    stop: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    let config = server_config(certificate, ca_pem)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Listen { addr, source })?;
    tracing::info!(%addr, "control-plane API listening");
    let connections = accept_tls(listener, config, stop.clone());
    let incoming = futures::stream::unfold(connections, |mut connections| async move {
        connections.recv().await.map(|next| (next, connections))
    });
    let mut stop = stop;
    Server::builder()
        .add_service(NodeCaServer::new(NodeCaService {
            membership: membership.clone(),
        }))
        .add_service(DispatcherServer::new(DispatcherService {
            membership: membership.clone(),
        }))
        .add_service(ManagerServer::new(ManagerService {
            membership: membership.clone(),
        }))
        .add_service(RaftServer::new(RaftService { membership }))
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = stop.wait_for(|stop| *stop).await;
        })
        .await?;
    Ok(())
}
