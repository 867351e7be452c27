//! The control socket: how the CLI talks to its local daemon. One JSON request
//! per line, one JSON response per line, over a Unix socket.

mod client;
mod server;

use serde::{Deserialize, Serialize};

use crate::dataplane::{
    DataplaneStats, EndpointRow, LocalDelivery, LocalEndpointSpec, OverlayNetwork,
    RemoteEndpointSpec, ServiceRow, ServiceSpec, UnderlayHook,
};

pub use client::{Client, ClientError, parse_host};
pub use server::{ControlServer, Handler, ServerError};

/// The daemon's default control socket, like Docker's /var/run/docker.sock.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/swarm/swarm.sock";
/// The CLI's default `--host`: the default control socket.
pub const DEFAULT_HOST: &str = "unix:///run/swarm/swarm.sock";

#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    /// The daemon's identity and what it has attached.
    Info,
    /// The data plane's packet and drop counters.
    DataplaneStats,
    /// Every endpoint the overlay maps hold.
    Endpoints,
    NetworkCreate(OverlayNetwork),
    NetworkRemove {
        vni: u32,
    },
    EndpointAttach(LocalEndpointSpec),
    EndpointDetach {
        id: String,
    },
    RemoteAdd(RemoteEndpointSpec),
    RemoteRemove {
        vni: u32,
        ip: std::net::Ipv4Addr,
    },
    Services,
    ServiceCreate(ServiceSpec),
    ServiceUpdate {
        name: String,
        add: Vec<std::net::Ipv4Addr>,
        remove: Vec<std::net::Ipv4Addr>,
    },
    ServiceRemove {
        name: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    Info(DaemonInfo),
    DataplaneStats(DataplaneStats),
    Endpoints(Vec<EndpointRow>),
    Endpoint(EndpointRow),
    Services(Vec<ServiceRow>),
    /// Done; nothing to report.
    Done,
    /// The request failed; the message says why and what to do.
    Error(String),
}

/// Keys as Docker spells them, so `--format json` reads like `docker info`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DaemonInfo {
    #[serde(rename = "NodeID")]
    pub node_id: String,
    pub hostname: String,
    pub advertise_addr: String,
    #[serde(rename = "UnderlayInterface")]
    pub underlay_iface: String,
    pub underlay_hook: UnderlayHook,
    pub local_delivery: LocalDelivery,
    pub data_path_port: u16,
    pub data_dir: String,
    pub pin_dir: String,
    pub pid: u32,
    pub version: String,
}
