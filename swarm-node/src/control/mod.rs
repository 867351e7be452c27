//! The control socket: how the CLI talks to its local daemon. One JSON request
//! per line, one JSON response per line, over a Unix socket. The requests
//! and answers are in `api::control`.

mod client;
mod server;

pub use client::{Client, ClientError, parse_host};
pub use server::{ControlServer, Handler, ServerError, bind_private};

/// The daemon's default control socket, like Docker's /var/run/docker.sock.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/swarm/swarm.sock";
/// The CLI's default `--host`: the default control socket.
pub const DEFAULT_HOST: &str = "unix:///run/swarm/swarm.sock";
