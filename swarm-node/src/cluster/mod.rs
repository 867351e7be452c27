//! The cluster control plane: PKI and join tokens, the cluster store that
//! Raft replicates between managers, what each node keeps of its own
//! membership, the managers' API, and the agent that reports to them.

mod agent;
pub mod api;
pub mod assignments;
mod error;
pub mod executor;
mod join;
mod local;
pub mod logs;
pub mod node;
pub mod orchestrator;
pub mod pki;
pub mod raft;
mod reference;
pub mod services;
pub mod serving;
pub mod state;

pub use error::ClusterError;
pub use local::{Cluster, LocalState};
pub use pki::Role;
pub use state::{
    Availability, ClusterState, Command, CommandResult, NetworkRecord, NetworkRequest, NodeChange,
    NodeRecord, NodeResources,
};
