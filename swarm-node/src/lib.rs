//! The swarm node: daemon, CLI, control socket and eBPF data-plane loader.
//!
//! Layers, top to bottom (a module uses only those below it; see
//! docs/architecture.md): `cli` → `daemon` → `node`, `engine` → `manager`,
//! `agent` → `runtime` → `ca`, `image`, `dns`, `gossip`, `control` → `api` →
//! `dataplane`, `identity`, `metrics`, `clock`, `log_time`, `lock`.

pub mod agent;
pub mod api;
pub mod ca;
pub mod cli;
pub mod clock;
pub mod compose;
pub mod control;
pub mod daemon;
pub mod dataplane;
pub mod dns;
pub mod engine;
pub mod gossip;
pub mod identity;
pub mod image;
pub mod lock;
pub mod log_time;
pub mod manager;
pub mod metrics;
pub mod node;
pub mod runtime;
pub mod stack;
