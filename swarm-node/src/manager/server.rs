//! The managers' gRPC API on the control-plane port, over TLS with the
//! node's certificate: `NodeCa` admits nodes that present a join token and
//! renews certificates (`nodeca`); `Dispatcher` takes agents' heartbeats,
//! reports and long polls (`dispatcher`); `Raft` carries Raft between
//! managers (`raft::server`) and `Manager` passes work to the leader
//! (`leader`), both for manager certificates only. Client certificates are
//! checked when presented (the CA is the only root) and not required, since
//! a joining node has none yet; each call that needs one says so (TLS
//! itself is in `ca::tls`).

use std::{net::SocketAddr, sync::Arc};

use tokio::sync::watch;
use tonic::transport::Server;

use super::{
    Manager, dispatcher::DispatcherService, leader::ManagerService, nodeca::NodeCaService,
    raft::server::RaftService,
};
use crate::{
    api::proto::{
        dispatcher_server::DispatcherServer, manager_server::ManagerServer,
        node_ca_server::NodeCaServer, raft_server::RaftServer,
    },
    ca::tls::{ServedCertificate, ServingError, accept_tls, server_config},
};

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
    manager: Arc<Manager>,
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
            manager: manager.clone(),
        }))
        .add_service(DispatcherServer::new(DispatcherService {
            manager: manager.clone(),
        }))
        .add_service(ManagerServer::new(ManagerService {
            manager: manager.clone(),
        }))
        .add_service(RaftServer::new(RaftService { manager }))
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = stop.wait_for(|stop| *stop).await;
        })
        .await?;
    Ok(())
}
