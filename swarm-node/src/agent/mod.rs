//! The agent on every node, after swarmkit's `agent` package: a session
//! with the managers (heartbeats, certificate renewal, role changes) and
//! the executor that runs this node's assigned tasks and programs its data
//! plane. It reaches the node it runs on only through [`AgentHost`].

pub mod executor;
pub mod session;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use crate::{
    api::ClusterError,
    ca::{
        client::{ChannelError, Credentials},
        pki::{NodeCertificate, PkiError},
    },
    identity::LocalNode,
};

/// Why a call to a manager failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    Dial(#[from] ChannelError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{}", .0.message())]
    Refused(#[from] tonic::Status),
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("this node is not in a swarm")]
    NotInSwarm,
    #[error("no manager to call")]
    NoManagers,
}

/// What the agent asks of the node it runs on.
pub trait AgentHost: Send + Sync {
    fn local_node(&self) -> &LocalNode;
    /// What this node dials the managers with, while it is in a swarm.
    fn credentials(&self) -> Option<Credentials>;
    /// The managers' control-plane addresses this node knows.
    fn manager_addrs(&self) -> Vec<String>;
    /// Keeps what the session heard of the managers.
    fn note_managers(&self, managers: Vec<SocketAddr>, period_millis: u64);
    /// Keeps a renewed certificate; its role may differ.
    fn keep_certificate(&self, certificate: NodeCertificate) -> Result<(), ClusterError>;
    /// The swarm gave this node another role: it starts or stops being a
    /// manager. Blocks.
    fn role_changed(self: Arc<Self>);
}
