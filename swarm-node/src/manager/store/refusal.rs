//! Why the store refuses a command. The refusal is applied, like the
//! command, on every manager, and reaches the user in Docker's words where
//! Docker has them.

use std::net::Ipv4Addr;

use crate::api::mounts::PayloadKind;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the cluster exists already")]
    ClusterExists,
    #[error("the cluster does not exist yet")]
    NoCluster,
    #[error("node {0} not found (see `swarm node ls`)")]
    NoSuchNode(String),
    #[error("key {0} doesn't exist in node's labels")]
    NoSuchLabel(String),
    /// The object changed since the version the update was made from
    /// (Docker's words and meaning).
    #[error("update out of sequence")]
    OutOfSequence,
    #[error("the dispatcher heartbeat period must be positive")]
    HeartbeatZero,
    #[error("minimum certificate expiry time is 1h0m0s")]
    CertExpiryTooShort,
    #[error("a gossip key rotation period of {secs}s is too short; use at least {min}s")]
    RotationTooShort { secs: u64, min: u64 },
    #[error("network with name {0} already exists")]
    NetworkExists(String),
    #[error(
        "invalid pool request: the subnet {}/{} overlaps with network {other}'s {}/{}",
        .subnet.0, .subnet.1, .other_subnet.0, .other_subnet.1
    )]
    SubnetOverlaps {
        subnet: (Ipv4Addr, u8),
        other: String,
        other_subnet: (Ipv4Addr, u8),
    },
    #[error("the address pool 10.0.0.0/8 is exhausted")]
    PoolExhausted,
    #[error("the gateway {gateway} is outside the subnet {}/{}", .subnet.0, .subnet.1)]
    GatewayOutside {
        gateway: Ipv4Addr,
        subnet: (Ipv4Addr, u8),
    },
    #[error("network {0} not found")]
    NoSuchNetwork(String),
    #[error("network {reference} is ambiguous ({count} matches)")]
    AmbiguousNetwork { reference: String, count: usize },
    #[error("network {id} is in use by service {service}: remove the service first")]
    NetworkInUse { id: String, service: String },
    #[error("network {0} has no free address left")]
    NoFreeAddress(String),
    #[error("port '{0}' is already in use by another service's published port")]
    PortInUse(u16),
    #[error("no free port left in 30000-32767 to publish")]
    NoFreePort,
    #[error("service {0} already exists (see `swarm service ls`)")]
    ServiceExists(String),
    #[error("service {0} not found")]
    NoSuchService(String),
    #[error("a service cannot be renamed")]
    Rename,
    #[error("{} {name} already exists", .kind.word())]
    PayloadExists { kind: PayloadKind, name: String },
    #[error("{} {reference} not found", .kind.word())]
    NoSuchPayload {
        kind: PayloadKind,
        reference: String,
    },
    #[error(
        "{} '{name}' is in use by the following service{}: {}",
        .kind.word(),
        if .services.len() > 1 { "s" } else { "" },
        .services.join(", ")
    )]
    PayloadInUse {
        kind: PayloadKind,
        name: String,
        services: Vec<String>,
    },
}

impl From<Refusal> for crate::api::ClusterError {
    fn from(refusal: Refusal) -> Self {
        crate::api::ClusterError::Refused(refusal.to_string())
    }
}
