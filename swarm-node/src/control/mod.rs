//! The control socket: how the CLI talks to its local daemon. One JSON request
//! per line, one JSON response per line, over a Unix socket.

mod client;
mod server;

use serde::{Deserialize, Serialize};

use crate::cluster::Role;
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

#[derive(Clone, Debug, Serialize, Deserialize)]
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
    /// `swarm init`.
    SwarmInit(SwarmInitRequest),
    /// `swarm join`.
    SwarmJoin(SwarmJoinRequest),
    /// `swarm join-token`.
    JoinToken {
        role: Role,
        rotate: bool,
    },
    /// `swarm node ls`.
    NodeList,
    /// `swarm node inspect`.
    NodeInspect {
        node: String,
    },
    /// `swarm node update`.
    NodeUpdate(NodeUpdateRequest),
    /// `swarm node rm`.
    NodeRemove {
        node: String,
        force: bool,
    },
    /// `swarm network create`.
    SwarmNetworkCreate(SwarmNetworkCreateRequest),
    /// `swarm network ls`.
    SwarmNetworkList,
    /// `swarm network inspect`.
    SwarmNetworkInspect {
        network: String,
    },
    /// `swarm network rm`.
    SwarmNetworkRemove {
        networks: Vec<String>,
    },
    /// `swarm node promote`.
    NodePromote {
        nodes: Vec<String>,
    },
    /// `swarm node demote`.
    NodeDemote {
        nodes: Vec<String>,
    },
    /// `swarm leave`.
    SwarmLeave {
        force: bool,
    },
}

impl Request {
    /// Whether the leader answers it (node, token and network commands): a
    /// manager that does not lead forwards it.
    pub fn is_for_managers(&self) -> bool {
        matches!(
            self,
            Request::JoinToken { .. }
                | Request::NodeList
                | Request::NodeInspect { .. }
                | Request::NodeUpdate(_)
                | Request::NodeRemove { .. }
                | Request::NodePromote { .. }
                | Request::NodeDemote { .. }
                | Request::SwarmNetworkCreate(_)
                | Request::SwarmNetworkList
                | Request::SwarmNetworkInspect { .. }
                | Request::SwarmNetworkRemove { .. }
        )
    }
}

/// `swarm node update`'s changes to one node.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NodeUpdateRequest {
    /// ID, unique ID prefix, or hostname.
    pub node: String,
    pub availability: Option<crate::cluster::Availability>,
    pub label_add: Vec<(String, String)>,
    pub label_rm: Vec<String>,
    /// `--role`: promote or demote.
    #[serde(default)]
    pub role: Option<Role>,
}

/// `swarm join`'s arguments; unset ones take the daemon's defaults.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SwarmJoinRequest {
    pub token: String,
    pub manager: std::net::SocketAddr,
    #[serde(default)]
    pub advertise_addr: Option<std::net::Ipv4Addr>,
    /// Where this node's API listens if it is (or becomes) a manager.
    #[serde(default)]
    pub listen_port: Option<u16>,
}

/// `swarm network create`'s flags.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SwarmNetworkCreateRequest {
    pub name: String,
    /// Network address and prefix length [default: the next free /24 of 10.0.0.0/8].
    pub subnet: Option<(std::net::Ipv4Addr, u8)>,
    pub gateway: Option<std::net::Ipv4Addr>,
    /// MTU inside the tasks (`-o mtu=N`).
    pub mtu: Option<u32>,
    pub attachable: bool,
    pub labels: Vec<(String, String)>,
}

/// One row of `swarm network ls`, with Docker's keys.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkRow {
    #[serde(rename = "ID")]
    pub id: String,
    pub name: String,
    pub driver: String,
    pub scope: String,
}

/// `swarm init`'s flags; unset ones take the daemon's defaults.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SwarmInitRequest {
    pub advertise_addr: Option<std::net::Ipv4Addr>,
    pub listen_port: Option<u16>,
    pub cert_expiry_secs: Option<u64>,
    pub heartbeat_millis: Option<u64>,
}

/// This node's part in a swarm, with Docker's `docker info` keys.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SwarmInfo {
    /// `inactive` or `active`.
    pub local_node_state: String,
    #[serde(rename = "NodeID")]
    pub node_id: String,
    pub node_addr: String,
    /// Whether this node is a manager.
    pub control_available: bool,
    #[serde(rename = "ClusterID")]
    pub cluster_id: String,
    pub managers: usize,
    pub nodes: usize,
    /// Whether this manager leads the Raft cluster.
    #[serde(default)]
    pub is_leader: bool,
    /// The leader's control-plane address, as this manager knows it.
    #[serde(default)]
    pub leader_addr: String,
    /// This manager's Raft, when it is one.
    #[serde(default)]
    pub raft: Option<RaftInfo>,
}

/// Where this manager's Raft stands.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RaftInfo {
    pub term: u64,
    /// Index of the last log entry applied to this manager's store.
    pub last_applied: u64,
    /// Index of the last entry in this manager's log.
    pub last_log_index: u64,
    /// Index of the last entry in the latest snapshot.
    pub snapshot_index: u64,
    /// Entries up to this index are deleted from the log (they are in the
    /// snapshot).
    pub purged_index: u64,
    pub voters: usize,
}

/// One row of `swarm node ls`, with Docker's keys.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeRow {
    #[serde(rename = "ID")]
    pub id: String,
    pub hostname: String,
    /// `Ready` or `Down`.
    pub status: String,
    /// `Active`, `Pause` or `Drain`.
    pub availability: String,
    /// `Leader`, `Reachable`, `Unreachable`, or empty for a worker.
    pub manager_status: String,
    /// Whether this row is the node answering.
    #[serde(rename = "Self")]
    pub is_self: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    Info(Box<DaemonInfo>),
    DataplaneStats(DataplaneStats),
    Endpoints(Vec<EndpointRow>),
    Endpoint(EndpointRow),
    Services(Vec<ServiceRow>),
    /// A join token and the manager address to join through.
    JoinToken {
        role: Role,
        token: String,
        manager_addr: String,
    },
    /// `swarm init` succeeded: this node's ID, and the worker join token.
    SwarmInitialized {
        node_id: String,
        worker_token: String,
        manager_addr: String,
    },
    Nodes(Vec<NodeRow>),
    Networks(Vec<NetworkRow>),
    /// `swarm network inspect`: Docker's shape, as JSON.
    NetworkInspect(serde_json::Value),
    /// `swarm node inspect`: Docker's shape, as JSON.
    NodeInspect(serde_json::Value),
    /// `swarm join` succeeded in this role.
    Joined {
        role: Role,
    },
    /// Done; one line to print per thing done.
    Notes(Vec<String>),
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
    /// Filled in when asked: membership changes while the daemon runs.
    #[serde(default)]
    pub swarm: SwarmInfo,
}
