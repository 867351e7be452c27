//! Running work on the leader: here when this manager leads, else
//! forwarded to it over the managers' API; committing commands through
//! Raft; adding and removing voters.

use std::{
    collections::BTreeSet,
    sync::Arc,
    time::{Duration, Instant},
};

use openraft::{
    ChangeMembers,
    error::{ClientWriteError, RaftError},
};
use serde::{Deserialize, Serialize};
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status};

use super::{
    Manager,
    raft::{self, Member, RaftNode},
    store::{Command, CommandResult},
};
use crate::{
    api::{
        ClusterError, Role,
        control::{Request, Response},
        proto::{self, ForwardRequest, ForwardResponse, manager_server},
    },
    ca::{client::channel, tls::caller},
};

/// Work a manager hands to the leader.
#[derive(Debug, Serialize, Deserialize)]
pub enum Forwarded {
    /// A control-socket request, from the node `origin` (which `node ls`
    /// marks as self).
    Request {
        request: Request,
        origin: String,
    },
    Command(Command),
    /// Make this manager a Raft voter.
    AddVoter {
        node_id: String,
    },
    /// Take a demoted manager out of the Raft voters.
    RemoveVoter {
        node_id: String,
    },
}

/// How long a request may wait for a leader (an election, say) and for its
/// write to commit before it fails.
pub const LEADER_WAIT: Duration = Duration::from_secs(5);
/// How long making a new manager a voter may take (it catches up first).
pub const ADD_VOTER_WAIT: Duration = Duration::from_secs(20);
/// How long one attempt at removing a voter may take.
const REMOVE_VOTER_WAIT: Duration = Duration::from_secs(5);
/// A forwarded request is forwarded once more at most.
pub const MAX_HOPS: u32 = 2;

impl Manager {
    /// Runs `work` on the leader: here if this manager leads, else forwarded
    /// to it. Waits out an election (up to LEADER_WAIT).
    pub fn lead(&self, work: Forwarded, hops: u32) -> Result<Response, ClusterError> {
        let deadline = Instant::now() + LEADER_WAIT;
        let mut last_error = None;
        loop {
            let raft = self.raft()?;
            if raft.is_leader() {
                match self.run_here(&work) {
                    Err(ClusterError::NotLeader) => {}
                    other => return other,
                }
            } else if let (Some(leader), true) = (self.leader_elsewhere(&raft), hops < MAX_HOPS) {
                match self.forward(&leader, &work, hops + 1) {
                    Ok(response) => return Ok(response),
                    Err(ForwardError::Final(message)) => {
                        return Err(ClusterError::Refused(message));
                    }
                    Err(ForwardError::Retry(message)) => last_error = Some(message),
                }
            }
            if Instant::now() >= deadline {
                let why = last_error.map_or_else(String::new, |e| format!(" (last error: {e})"));
                return Err(ClusterError::Unavailable(format!(
                    "no leader could be reached within {LEADER_WAIT:?}: a majority of managers is unreachable, or an election has not ended{why}"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The API address of the leader, when it is another manager (a
    /// leader that removed itself from the voters still names itself).
    fn leader_elsewhere(&self, raft: &RaftNode) -> Option<String> {
        raft.metrics()
            .current_leader
            .filter(|leader| *leader != raft.id)
            .and(raft.leader())
            .map(|leader| leader.addr)
    }

    /// Sends `work` to the manager at `addr`.
    pub fn forward(
        &self,
        addr: &str,
        work: &Forwarded,
        hops: u32,
    ) -> Result<Response, ForwardError> {
        let credentials = self
            .host()
            .ok()
            .and_then(|host| host.credentials())
            .ok_or_else(|| ForwardError::Final("this node left the swarm".into()))?;
        let json = serde_json::to_vec(work).map_err(|e| ForwardError::Final(e.to_string()))?;
        let channel =
            channel(addr, &credentials).map_err(|e| ForwardError::Final(e.to_string()))?;
        let answer = self.runtime.block_on(async {
            let mut client = proto::manager_client::ManagerClient::new(channel);
            tokio::time::timeout(
                LEADER_WAIT + ADD_VOTER_WAIT,
                client.forward(proto::ForwardRequest {
                    request_json: json,
                    hops,
                }),
            )
            .await
        });
        match answer {
            Err(_) => Err(ForwardError::Retry(format!("{addr} did not answer"))),
            Ok(Err(status)) => match status.code() {
                tonic::Code::Unavailable
                | tonic::Code::FailedPrecondition
                | tonic::Code::Unknown
                | tonic::Code::Cancelled => {
                    Err(ForwardError::Retry(format!("{addr}: {}", status.message())))
                }
                _ => Err(ForwardError::Final(status.message().to_owned())),
            },
            Ok(Ok(answer)) => serde_json::from_slice(&answer.into_inner().response_json)
                .map_err(|e| ForwardError::Final(format!("malformed answer from {addr}: {e}"))),
        }
    }

    /// Runs `work` on this manager, which must be the leader.
    pub fn run_here(&self, work: &Forwarded) -> Result<Response, ClusterError> {
        match work {
            Forwarded::Request { request, origin } => {
                self.confirm_leadership()?;
                self.serve_request(request, origin)
            }
            Forwarded::Command(command) => {
                self.commit_here(command.clone()).map(|()| Response::Done)
            }
            Forwarded::AddVoter { node_id } => {
                self.add_voter_here(node_id).map(|()| Response::Done)
            }
            Forwarded::RemoveVoter { node_id } => {
                self.remove_voter_here(node_id).map(|()| Response::Done)
            }
        }
    }

    /// Confirms with a quorum that this manager still leads, and waits
    /// until its store has applied all that was committed before: what it
    /// answers then is not stale. Without it, a leader cut off from the
    /// others answered from its old store (tests/tests/nemesis.rs found it).
    fn confirm_leadership(&self) -> Result<(), ClusterError> {
        let raft = self.raft()?;
        let confirmed = self.runtime.block_on(tokio::time::timeout(
            LEADER_WAIT,
            raft.raft.ensure_linearizable(),
        ));
        match confirmed {
            Ok(Ok(_)) => Ok(()),
            // Another leader, or no quorum heard: not this one's to answer.
            Ok(Err(RaftError::APIError(_))) => Err(ClusterError::NotLeader),
            Ok(Err(err)) => Err(ClusterError::Unavailable(err.to_string())),
            Err(_) => Err(ClusterError::Unavailable(format!(
                "a majority of managers did not confirm this leader within {LEADER_WAIT:?}"
            ))),
        }
    }

    /// Commits `command` through this manager's Raft, which must lead.
    pub fn commit_here(&self, command: Command) -> Result<(), ClusterError> {
        let raft = self.raft()?;
        if !raft.is_leader() {
            return Err(ClusterError::NotLeader);
        }
        let written = self.runtime.block_on(tokio::time::timeout(
            LEADER_WAIT,
            raft.raft.client_write(command),
        ));
        match written {
            Err(_) => Err(ClusterError::Unavailable(format!(
                "the write was not committed within {LEADER_WAIT:?}: a majority of managers is unreachable"
            ))),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                Err(ClusterError::NotLeader)
            }
            Ok(Err(err)) => Err(ClusterError::Unavailable(err.to_string())),
            Ok(Ok(written)) => match written.data {
                CommandResult::Done => Ok(()),
                CommandResult::Refused(message) => Err(ClusterError::Refused(message)),
            },
        }
    }

    /// Commits `command` on the leader, wherever it is.
    pub fn write(&self, command: Command) -> Result<(), ClusterError> {
        match self.lead(Forwarded::Command(command), 0)? {
            Response::Error(message) => Err(ClusterError::Refused(message)),
            _ => Ok(()),
        }
    }

    /// The leader makes manager `node_id` a Raft voter: a learner first,
    /// until it has caught up, then a voter.
    pub fn add_voter_here(&self, node_id: &str) -> Result<(), ClusterError> {
        let raft = self.raft()?;
        if !raft.is_leader() {
            return Err(ClusterError::NotLeader);
        }
        let node = self.read_store(|s| s.nodes.get(node_id).cloned())?;
        let node = node
            .filter(|n| n.role == Role::Manager)
            .ok_or_else(|| ClusterError::Refused(format!("node {node_id} is not a manager")))?;
        let id = raft::raft_id(node_id);
        let voters: BTreeSet<u64> = raft
            .metrics()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        if voters.contains(&id) {
            return Ok(());
        }
        let member = Member {
            node_id: node_id.to_owned(),
            addr: node.addr.to_string(),
        };
        let added = self
            .runtime
            .block_on(tokio::time::timeout(ADD_VOTER_WAIT, async {
                raft.raft.add_learner(id, member, true).await?;
                raft.raft
                    .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                    .await
            }));
        match added {
            Err(_) => Err(ClusterError::Unavailable(format!(
                "manager {node_id} did not catch up with the log within {ADD_VOTER_WAIT:?}"
            ))),
            Ok(Err(err)) => Err(ClusterError::Unavailable(err.to_string())),
            Ok(Ok(_)) => {
                tracing::info!(node = %node_id, "manager added to the Raft voters");
                Ok(())
            }
        }
    }

    pub fn remove_voter_here(&self, node_id: &str) -> Result<(), ClusterError> {
        let raft = self.raft()?;
        let id = raft::raft_id(node_id);
        let is_member = || raft.holds(node_id);
        if !is_member() {
            return Ok(());
        }
        if !raft.is_leader() {
            return Err(ClusterError::NotLeader);
        }
        // `retain: false`: not kept as a learner either.
        let removed = self.runtime.block_on(tokio::time::timeout(
            REMOVE_VOTER_WAIT,
            raft.raft
                .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false),
        ));
        match removed {
            Ok(Ok(_)) => Ok(()),
            // Leadership moved mid-change (a leader removing itself can lose
            // it between the joint and the final configuration, and then
            // its answer may never come): what this node appended may not
            // be committed, so the caller asks the new leader, which either
            // holds the final configuration or finishes the change.
            _ if !raft.is_leader() => Err(ClusterError::NotLeader),
            _ if !is_member() => Ok(()),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                Err(ClusterError::NotLeader)
            }
            Ok(Err(err)) => Err(ClusterError::Unavailable(err.to_string())),
            Err(_) => Err(ClusterError::Unavailable(format!(
                "removing {node_id} from the Raft voters was not committed within {REMOVE_VOTER_WAIT:?}"
            ))),
        }
    }
}

/// Why forwarding failed.
pub enum ForwardError {
    /// Worth trying again (no answer, not the leader any more).
    Retry(String),
    Final(String),
}

/// The `Manager` gRPC service: work other managers pass to the leader.
pub(super) struct ManagerService {
    pub(super) manager: Arc<Manager>,
}

#[tonic::async_trait]
impl manager_server::Manager for ManagerService {
    async fn forward(
        &self,
        request: GrpcRequest<ForwardRequest>,
    ) -> Result<GrpcResponse<ForwardResponse>, Status> {
        let subject = caller(&request)?;
        let ForwardRequest { request_json, hops } = request.into_inner();
        let work: Forwarded = serde_json::from_slice(&request_json)
            .map_err(|e| Status::invalid_argument(format!("malformed forwarded work: {e}")))?;
        // A demoted manager (whose certificate already says worker) may
        // still ask to leave the voters itself, and nothing else.
        let leaving_itself =
            matches!(&work, Forwarded::RemoveVoter { node_id } if *node_id == subject.node_id);
        if !leaving_itself {
            self.manager
                .authorize_manager(&subject)
                .map_err(|e| Status::permission_denied(e.to_string()))?;
        }
        let manager = self.manager.clone();
        let answer = tokio::task::spawn_blocking(move || manager.lead(work, hops.max(1)))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        let response = match answer {
            Ok(response) => response,
            // Retried by the caller: no leader here, or none reachable.
            Err(err @ (ClusterError::NotLeader | ClusterError::Unavailable(_))) => {
                return Err(err.into());
            }
            Err(err) => Response::Error(err.to_string()),
        };
        serde_json::to_vec(&response)
            .map(|response_json| GrpcResponse::new(ForwardResponse { response_json }))
            .map_err(|e| Status::internal(e.to_string()))
    }
}
