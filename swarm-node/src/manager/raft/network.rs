//! Raft's network client: openraft's messages, JSON, over the managers'
//! gRPC API with mutual TLS (this manager's certificate; peers checked
//! against the cluster CA).

// openraft's StorageError and RPCError are large; they are what its traits return.
#![allow(clippy::result_large_err)]

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use openraft::{
    RaftNetwork, RaftNetworkFactory,
    error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable},
    network::RPCOption,
    raft::{
        AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest,
        InstallSnapshotResponse, VoteRequest, VoteResponse,
    },
};
use serde::{Serialize, de::DeserializeOwned};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::{Member, TypeConfig};
use crate::cluster::api::proto::{RaftMessage, raft_client::RaftClient};

/// How long connecting to a peer may take before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// The TLS material a node dials other nodes with.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
}

/// A channel to a node's API at `addr` (HOST:PORT), authenticated both ways.
/// It connects when first used.
pub fn channel(addr: &str, credentials: &Credentials) -> Result<Channel, String> {
    let host = addr
        .rsplit_once(':')
        .map_or(addr, |(host, _)| host)
        .trim_matches(|c| c == '[' || c == ']');
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&credentials.ca_pem))
        .identity(Identity::from_pem(
            &credentials.cert_pem,
            &credentials.key_pem,
        ))
        .domain_name(host.to_owned());
    Ok(Endpoint::from_shared(format!("https://{addr}"))
        .map_err(|e| e.to_string())?
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect_timeout(CONNECT_TIMEOUT)
        .connect_lazy())
}

/// Makes a client per peer; reads the credentials when it does, so a renewed
/// certificate is used from the next connection on.
pub struct Network {
    credentials: Arc<RwLock<Credentials>>,
}

impl Network {
    pub fn new(credentials: Arc<RwLock<Credentials>>) -> Self {
        Self { credentials }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &Member) -> Self::Network {
        Peer {
            target,
            addr: node.addr.clone(),
            credentials: self.credentials.clone(),
            channel: None,
        }
    }
}

pub struct Peer {
    target: u64,
    addr: String,
    credentials: Arc<RwLock<Credentials>>,
    channel: Option<Channel>,
}

#[derive(Clone, Copy)]
enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

/// Why a call got no answer from the peer's Raft.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("{0}")]
    Unreachable(String),
    #[error("{0}")]
    Network(String),
}

impl Peer {
    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &mut self,
        rpc: Rpc,
        request: &Req,
        ttl: Duration,
    ) -> Result<Resp, CallError> {
        let json = serde_json::to_vec(request).map_err(|e| CallError::Network(e.to_string()))?;
        let channel = match &self.channel {
            Some(channel) => channel.clone(),
            None => {
                let credentials = self
                    .credentials
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                let channel = channel(&self.addr, &credentials).map_err(CallError::Network)?;
                self.channel = Some(channel.clone());
                channel
            }
        };
        let mut client = RaftClient::new(channel);
        let message = RaftMessage { json };
        let answer = tokio::time::timeout(ttl, async {
            match rpc {
                Rpc::AppendEntries => client.append_entries(message).await,
                Rpc::Vote => client.vote(message).await,
                Rpc::InstallSnapshot => client.install_snapshot(message).await,
            }
        })
        .await;
        let answer = match answer {
            Err(_) => {
                self.channel = None;
                return Err(CallError::Unreachable(format!(
                    "{} did not answer within {ttl:?}",
                    self.addr
                )));
            }
            Ok(Err(status)) => {
                // Reconnect next time (perhaps with a renewed certificate).
                self.channel = None;
                return Err(match status.code() {
                    tonic::Code::Unavailable | tonic::Code::Unknown => {
                        CallError::Unreachable(format!("{}: {}", self.addr, status.message()))
                    }
                    _ => CallError::Network(format!("{}: {}", self.addr, status.message())),
                });
            }
            Ok(Ok(answer)) => answer.into_inner().json,
        };
        serde_json::from_slice(&answer).map_err(|e| CallError::Network(e.to_string()))
    }
}

/// Turns a call's outcome into openraft's result.
fn answer<T, E: std::error::Error>(
    target: u64,
    outcome: Result<Result<T, E>, CallError>,
) -> Result<T, RPCError<u64, Member, E>> {
    let io = |message: String| std::io::Error::other(message);
    match outcome {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(remote)) => Err(RPCError::RemoteError(RemoteError::new(target, remote))),
        Err(CallError::Unreachable(message)) => {
            Err(RPCError::Unreachable(Unreachable::new(&io(message))))
        }
        Err(CallError::Network(message)) => Err(RPCError::Network(NetworkError::new(&io(message)))),
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        request: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, Member, RaftError<u64>>> {
        let outcome = self
            .call(Rpc::AppendEntries, &request, option.hard_ttl())
            .await;
        answer(self.target, outcome)
    }

    async fn install_snapshot(
        &mut self,
        request: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, Member, RaftError<u64, InstallSnapshotError>>,
    > {
        let outcome = self
            .call(Rpc::InstallSnapshot, &request, option.hard_ttl())
            .await;
        answer(self.target, outcome)
    }

    async fn vote(
        &mut self,
        request: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, Member, RaftError<u64>>> {
        let outcome = self.call(Rpc::Vote, &request, option.hard_ttl()).await;
        answer(self.target, outcome)
    }

    /// Retries an unreachable peer every 200 ms rather than openraft's 500 ms,
    /// so a manager that comes back is caught up soon.
    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}
