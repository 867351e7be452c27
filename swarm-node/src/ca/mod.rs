//! The swarm's PKI and TLS, after swarmkit's `ca` package: the root CA and
//! node certificates, join tokens and joining, and mutual TLS on both
//! sides of every connection between nodes.

pub mod client;
pub mod join;
pub mod pki;
pub mod tls;
pub mod unlock_key;
