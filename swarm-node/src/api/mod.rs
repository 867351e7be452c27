//! What crosses a boundary, and nothing that acts on it: the managers' gRPC
//! messages, the control API's requests and answers (for the CLI and
//! Docker's Engine API), the specs users declare and Docker's JSON for
//! them, the assignments managers send agents, and the errors cluster
//! requests fail with.

pub mod assignments;
pub mod control;
pub mod docker;
pub mod error;
pub mod filters;
pub mod mounts;
pub mod nodes;
pub mod proto;
pub mod specs;
pub mod tasks;

pub use error::ClusterError;
pub use nodes::{Availability, NodeResources, Platform, Role};
