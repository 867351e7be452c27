//! The cluster control plane: PKI and join tokens, and the cluster state a
//! manager keeps. Raft replication between managers, the join protocol and
//! node liveness build on these.

mod agent;
pub mod api;
mod join;
pub mod node;
pub mod pki;
pub mod state;

pub use pki::Role;
pub use state::{Availability, Cluster, ClusterError, ClusterState, InitOptions, NodeRecord};
