//! What cluster requests fail with; messages follow Docker's where Docker
//! has one.

use std::path::PathBuf;

/// A cause from a lower layer, boxed so this module names no layer
/// below it (`ca` and `manager::raft` convert their errors into it).
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "This node is already part of a swarm. Use \"swarm leave\" to leave this swarm and join another one."
    )]
    AlreadyInSwarm,
    #[error(
        "This node is not part of a swarm: run `swarm init` to create one, or `swarm join --token TOKEN MANAGER:2377` to join one"
    )]
    NotInSwarm,
    #[error(
        "This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. Please run this command on a manager node or promote the current node to a manager."
    )]
    NotManager,
    #[error("{0}")]
    Join(String),
    #[error("node {0} not found (see `swarm node ls`)")]
    NoSuchNode(String),
    #[error("node reference {0:?} matches more than one node; name it by ID (see `swarm node ls`)")]
    AmbiguousNode(String),
    #[error("{0}")]
    Refused(String),
    #[error(
        "You are attempting to leave the swarm on a node that is participating as a manager. Removing the last manager erases all current state of the swarm. Use `--force` to ignore this message."
    )]
    LastManager,
    #[error(
        "You are attempting to leave the swarm on a node that is participating as a manager. Demote it first (`swarm node demote` on another manager), or use `--force`, which leaves the other managers one fewer for their quorum."
    )]
    ManagerLeaving,
    /// This manager is not (or no longer) the leader; the work goes to the
    /// one that is.
    #[error("this manager is not the leader")]
    NotLeader,
    /// No leader could be reached, or it could not commit: a majority of
    /// managers is unreachable, or an election is under way.
    #[error("{0}")]
    Unavailable(String),
    /// A certificate could not be made or read.
    #[error(transparent)]
    Pki(Cause),
    /// This manager's Raft store failed.
    #[error(transparent)]
    Raft(Cause),
    #[error("cluster state in {path}: {message}")]
    Store { path: PathBuf, message: String },
    /// Docker's words: autolock is on and this manager was restarted.
    #[error(
        "Swarm is encrypted and needs to be unlocked before it can be used. Please use \"swarm unlock\" to unlock it."
    )]
    SwarmLocked,
    /// `swarm unlock` on a node that is not locked (Docker's words).
    #[error("swarm is not locked")]
    NotLocked,
    /// An unlock key that is malformed or does not open this manager's
    /// keys (Docker's words, from `ca::unlock_key`).
    #[error("{0}")]
    UnlockKey(String),
}

/// A cluster error as a gRPC status; the codes callers retry on are
/// `Unavailable` and `FailedPrecondition`.
impl From<ClusterError> for tonic::Status {
    fn from(err: ClusterError) -> Self {
        match err {
            ClusterError::NotLeader => tonic::Status::failed_precondition(err.to_string()),
            ClusterError::Unavailable(_) | ClusterError::NotManager => {
                tonic::Status::unavailable(err.to_string())
            }
            _ => tonic::Status::permission_denied(err.to_string()),
        }
    }
}
