//! Raft's network server: the `Raft` gRPC service on the managers' API. Only
//! managers of this swarm, and nodes Raft's membership still holds (a
//! manager demoting itself), may call it; TLS has checked the caller's
//! certificate against the CA, and this checks its role.

use std::sync::Arc;

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::{Serialize, de::DeserializeOwned};
use tonic::{Request, Response, Status};

use super::{Raft, TypeConfig};
use crate::{
    api::proto::{RaftMessage, raft_server},
    ca::tls::caller,
    manager::Manager,
};

pub struct RaftService {
    pub manager: Arc<Manager>,
}

impl RaftService {
    /// This node's Raft, if the caller may take part in it.
    #[allow(clippy::result_large_err)] // tonic's Status is what handlers return.
    fn authorized<T>(&self, request: &Request<T>) -> Result<Raft, Status> {
        let subject = caller(request)?;
        self.manager
            .authorize_raft_peer(&subject)
            .map_err(|e| Status::permission_denied(e.to_string()))?;
        self.manager
            .raft()
            .map(|node| node.raft)
            .map_err(|_| Status::unavailable("this node runs no Raft (it is not a manager)"))
    }
}

#[allow(clippy::result_large_err)]
fn decode<T: DeserializeOwned>(message: RaftMessage) -> Result<T, Status> {
    serde_json::from_slice(&message.json)
        .map_err(|e| Status::invalid_argument(format!("malformed Raft message: {e}")))
}

#[allow(clippy::result_large_err)]
fn encode<T: Serialize>(value: &T) -> Result<Response<RaftMessage>, Status> {
    serde_json::to_vec(value)
        .map(|json| Response::new(RaftMessage { json }))
        .map_err(|e| Status::internal(e.to_string()))
}

#[tonic::async_trait]
impl raft_server::Raft for RaftService {
    async fn append_entries(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let raft = self.authorized(&request)?;
        let message: AppendEntriesRequest<TypeConfig> = decode(request.into_inner())?;
        encode(&raft.append_entries(message).await)
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let raft = self.authorized(&request)?;
        let message: VoteRequest<u64> = decode(request.into_inner())?;
        encode(&raft.vote(message).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let raft = self.authorized(&request)?;
        let message: InstallSnapshotRequest<TypeConfig> = decode(request.into_inner())?;
        encode(&raft.install_snapshot(message).await)
    }
}
