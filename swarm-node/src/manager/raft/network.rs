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
use tonic::transport::Channel;

use super::{Member, TypeConfig};
use crate::lock::ReadWriteLocked as _;
use crate::{
    api::proto::{RaftMessage, raft_client::RaftClient},
    ca::client::{ChannelError, Credentials, channel},
};

/// Makes a client per peer; reads the credentials when it does, so a renewed
/// certificate is used from the next connection on.
pub struct RaftPeers {
    credentials: Arc<RwLock<Credentials>>,
}

impl RaftPeers {
    pub fn new(credentials: Arc<RwLock<Credentials>>) -> Self {
        Self { credentials }
    }
}

impl RaftNetworkFactory<TypeConfig> for RaftPeers {
    type Network = RaftPeer;

    async fn new_client(&mut self, target: u64, node: &Member) -> Self::Network {
        RaftPeer {
            target,
            addr: node.addr.clone(),
            credentials: self.credentials.clone(),
            channel: None,
        }
    }
}

/// One peer as Raft's network sees it.
pub struct RaftPeer {
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
    #[error("{addr} did not answer within {ttl:?}")]
    Timeout { addr: String, ttl: Duration },
    /// Worth trying again: the peer is down or restarting.
    #[error("{addr}: {}", status.message())]
    Unavailable { addr: String, status: tonic::Status },
    #[error("{addr}: {}", status.message())]
    Refused { addr: String, status: tonic::Status },
    #[error(transparent)]
    Dial(#[from] ChannelError),
    #[error("malformed Raft message: {0}")]
    Malformed(#[from] serde_json::Error),
}

impl RaftPeer {
    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &mut self,
        rpc: Rpc,
        request: &Req,
        ttl: Duration,
    ) -> Result<Resp, CallError> {
        let json = serde_json::to_vec(request)?;
        let channel = match &self.channel {
            Some(channel) => channel.clone(),
            None => {
                let credentials = self.credentials.read_locked().clone();
                let channel = channel(&self.addr, &credentials)?;
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
                return Err(CallError::Timeout {
                    addr: self.addr.clone(),
                    ttl,
                });
            }
            Ok(Err(status)) => {
                // Reconnect next time (perhaps with a renewed certificate).
                self.channel = None;
                let addr = self.addr.clone();
                return Err(match status.code() {
                    tonic::Code::Unavailable | tonic::Code::Unknown => {
                        CallError::Unavailable { addr, status }
                    }
                    _ => CallError::Refused { addr, status },
                });
            }
            Ok(Ok(answer)) => answer.into_inner().json,
        };
        Ok(serde_json::from_slice(&answer)?)
    }
}

/// Turns a call's outcome into openraft's result.
fn answer<T, E: std::error::Error>(
    target: u64,
    outcome: Result<Result<T, E>, CallError>,
) -> Result<T, RPCError<u64, Member, E>> {
    match outcome {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(remote)) => Err(RPCError::RemoteError(RemoteError::new(target, remote))),
        Err(err @ (CallError::Timeout { .. } | CallError::Unavailable { .. })) => {
            Err(RPCError::Unreachable(Unreachable::new(&err)))
        }
        Err(err) => Err(RPCError::Network(NetworkError::new(&err))),
    }
}

impl RaftNetwork<TypeConfig> for RaftPeer {
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
