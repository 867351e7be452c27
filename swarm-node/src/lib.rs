//! The swarm node: daemon, CLI, control socket and eBPF data-plane loader.

pub mod cli;
pub mod cluster;
pub mod control;
pub mod daemon;
pub mod dataplane;
pub mod dns;
pub mod gossip;
pub mod identity;
pub mod runtime;
