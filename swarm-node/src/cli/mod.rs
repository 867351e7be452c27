//! The `swarm` command line: Docker's verbs, talking to the local daemon.

mod autolock;
mod ca;
mod container;
mod events;
mod format;
mod inspect;
mod listing;
mod output;
mod payloads;
mod registry_login;
mod service;
mod stack;
mod unsupported;
mod values;

use std::{net::Ipv4Addr, path::PathBuf};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};

pub use self::format::{Format, FormatArgs, InspectFormatArgs, inspected};
use self::listing::FilterArgs;

use crate::{
    api::{
        Availability, Role,
        control::{
            NodeUpdateRequest, Request, Response, SwarmInitRequest, SwarmJoinRequest,
            SwarmNetworkCreateRequest,
        },
    },
    control::{self, Client, DEFAULT_CONTROL_SOCKET, DEFAULT_HOST},
    daemon::{self, DaemonConfig, DockerApi, RuntimeChoice},
    dataplane::{
        BalancedService, LocalDelivery, LocalEndpointSpec, OverlayNetwork, PublishedPort,
        RemoteEndpointSpec, UnderlayHookChoice, overlay::VXLAN_OVERHEAD,
    },
};

/// The MTU driver option as Docker spells it.
const MTU_OPTION: &str = "com.docker.network.driver.mtu";

#[derive(Debug, Parser)]
#[command(
    name = "swarm",
    version,
    about = "Docker Swarm mode, rebuilt in Rust with an eBPF data plane",
    propagate_version = true
)]
pub struct Cli {
    /// The daemon to talk to: its control socket as unix:///path (before
    /// the command, as docker's -H; `service create --host` is a hosts line).
    #[arg(
        long,
        short = 'H',
        env = "SWARM_HOST",
        default_value = DEFAULT_HOST
    )]
    pub host: String,

    #[command(subcommand)]
    pub command: CliCommand,
}

#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Run the node daemon (one per host; needs root).
    Daemon(DaemonArgs),
    /// Bench helper: gossip among N simulated nodes on loopback addresses
    /// (run it in a network namespace of its own); prints the seconds an
    /// endpoint takes to reach every node.
    #[command(hide = true)]
    GossipSimulation {
        #[arg(long, default_value_t = 100)]
        nodes: usize,
        #[arg(long, default_value_t = crate::gossip::DEFAULT_GOSSIP_PORT)]
        port: u16,
    },
    /// Show this node's daemon and swarm: identity, underlay, data plane, membership.
    Info(FormatArgs),
    /// Stream the swarm's changes (services, nodes, networks, secrets,
    /// configs, tasks) as a manager applies them (managers only).
    Events(events::EventsArgs),
    /// Inspect (and, low-level, program) what the kernel data plane holds and counts.
    #[command(subcommand)]
    Dataplane(DataplaneCommand),
    /// The images this node pulled for its tasks (native runtime).
    #[command(subcommand)]
    Image(ImageCommand),
    /// Create a swarm with this node as its first manager.
    Init(InitArgs),
    /// Join a swarm through one of its managers, as a worker or a manager (the token says which).
    Join(JoinArgs),
    /// Show (or rotate) the token that admits workers or managers.
    JoinToken(JoinTokenArgs),
    /// Leave the swarm.
    Leave(LeaveArgs),
    /// Change the swarm's settings.
    Update(SwarmUpdateArgs),
    /// Show the swarm's root CA certificate (PEM); --cert-expiry changes how long node certificates last.
    Ca(ca::CaArgs),
    /// Show (or rotate) the key that unlocks a manager restarted with autolock on.
    UnlockKey(autolock::UnlockKeyArgs),
    /// Unlock a manager restarted with autolock on: reads the unlock key
    /// from a prompt (or a line of stdin).
    Unlock,
    /// Manage the swarm's nodes.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Manage services: tasks kept running across the swarm.
    #[command(subcommand)]
    Service(service::ServiceCommand),
    /// Manage the swarm's overlay networks.
    #[command(subcommand)]
    Network(NetworkCommand),
    /// Manage secrets: data tasks see under /run/secrets, never on a disk.
    #[command(subcommand)]
    Secret(payloads::PayloadCommand),
    /// Manage configs: files tasks see at their target.
    #[command(subcommand)]
    Config(payloads::PayloadCommand),
    /// The named volumes on this node (native runtime).
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// Deploy and manage stacks: an application's services from compose files.
    #[command(subcommand)]
    Stack(stack::StackCommand),
}

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// The volumes on this node, with how many tasks use each.
    #[command(alias = "list")]
    Ls {
        /// Only the names.
        #[arg(short, long)]
        quiet: bool,
        #[command(flatten)]
        format: FormatArgs,
    },
    /// Show volumes as JSON.
    Inspect {
        #[command(flatten)]
        format: InspectFormatArgs,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove volumes (and their data) no task uses.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove every volume no task uses.
    Prune {
        /// Do not ask (this never asks).
        #[arg(short, long)]
        force: bool,
        /// Docker's `-a`: what prune always does here.
        #[arg(short, long)]
        all: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Create an overlay network; prints its ID.
    #[command(after_help = unsupported::NETWORK_CREATE_AFTER_HELP)]
    Create {
        /// Driver: only overlay networks span a swarm.
        #[arg(short, long, default_value = "overlay", value_parser = parse_driver)]
        driver: String,
        /// The network's subnet, e.g. 10.0.9.0/24 [default: the next free /24 of 10.0.0.0/8].
        #[arg(long, value_name = "CIDR", value_parser = parse_cidr)]
        subnet: Option<(Ipv4Addr, u8)>,
        /// Gateway address [default: the subnet's first address].
        #[arg(long, value_name = "IP")]
        gateway: Option<Ipv4Addr>,
        /// Recorded and shown as Docker does; attaching anything started
        /// outside services is not supported yet.
        #[arg(long)]
        attachable: bool,
        /// Driver option, KEY=VALUE: mtu=N (or Docker's
        /// com.docker.network.driver.mtu=N) sets the MTU inside the tasks (default 1450).
        #[arg(short = 'o', long = "opt", value_name = "KEY=VALUE", value_parser = parse_label)]
        opt: Vec<(String, String)>,
        /// Add a label, KEY=VALUE (repeat for each).
        #[arg(long, value_name = "KEY=VALUE", value_parser = parse_label)]
        label: Vec<(String, String)>,
        #[command(flatten)]
        unsupported: Box<unsupported::UnsupportedNetworkArgs>,
        name: String,
    },
    /// List the swarm's networks; -f takes driver, id, label, name, scope, type.
    #[command(alias = "list")]
    Ls {
        /// Only the network IDs.
        #[arg(short, long)]
        quiet: bool,
        /// Whole network IDs.
        #[arg(long)]
        no_trunc: bool,
        #[command(flatten)]
        filter: FilterArgs,
        #[command(flatten)]
        format: FormatArgs,
    },
    /// Show networks as JSON, shaped like Docker's.
    Inspect {
        #[command(flatten)]
        format: InspectFormatArgs,
        /// ID, unique ID prefix, or name.
        network: String,
    },
    /// Remove networks.
    Rm {
        /// IDs, unique ID prefixes, or names.
        #[arg(required = true)]
        networks: Vec<String>,
    },
}

fn parse_driver(text: &str) -> Result<String, String> {
    match text {
        "overlay" => Ok(text.to_owned()),
        other => Err(format!(
            "driver {other:?} is not available in a swarm; use -d overlay"
        )),
    }
}

#[derive(Debug, Args)]
#[command(after_help = unsupported::SWARM_AFTER_HELP)]
pub struct InitArgs {
    /// Address other nodes reach this manager at [default: the daemon's --advertise-addr].
    #[arg(long, value_name = "IP")]
    pub advertise_addr: Option<Ipv4Addr>,
    /// Where this manager's control-plane API listens: ADDR[:PORT],
    /// INTERFACE[:PORT] or :PORT [default: the daemon's --listen-addr, 0.0.0.0:2377].
    #[arg(long, value_name = "ADDR:PORT", value_parser = parse_listen_addr)]
    pub listen_addr: Option<ListenAddr>,
    /// How long node certificates last, e.g. 2160h or 90d [default: 90 days].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub cert_expiry: Option<std::time::Duration>,
    /// How often agents report to managers, e.g. 1s or 500ms [default: 500ms]; a node is Down after three missed.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub dispatcher_heartbeat: Option<std::time::Duration>,
    /// How often the leader rotates the key gossip is sealed with, e.g. 12h or 30m [default: 12h, as Docker; at least 2s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub gossip_key_rotation: Option<std::time::Duration>,
    /// Ended tasks kept per slot for `service ps` [default: 5].
    #[arg(long, value_name = "N")]
    pub task_history_limit: Option<u64>,
    /// What this node takes from the start: active, pause or drain [default: active].
    #[arg(long, value_enum)]
    pub availability: Option<Availability>,
    /// Where network subnets come from, as CIDR (repeat for several pools,
    /// used in order) [default: 10.0.0.0/8].
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr)]
    pub default_addr_pool: Vec<(Ipv4Addr, u8)>,
    /// Where other nodes send this node's overlay (VXLAN) traffic: an
    /// address or interface of this host, e.g. on a separate data network
    /// [default: the advertise address].
    #[arg(long, value_name = "ADDR|INTERFACE")]
    pub data_path_addr: Option<String>,
    /// The prefix length of each network's subnet carved from the pools [default: 24].
    #[arg(long, value_name = "N")]
    pub default_addr_pool_mask_length: Option<u8>,
    /// Raft entries between snapshots of the store (at least 10) [default: 1000].
    #[arg(long, value_name = "N")]
    pub snapshot_interval: Option<u64>,
    /// Older Raft snapshots each manager keeps besides the current one [default: 0].
    #[arg(long, value_name = "N")]
    pub max_snapshots: Option<u64>,
    /// On a manager whose swarm lost its quorum: become the only manager of
    /// the same swarm, keeping its services, networks, secrets and nodes;
    /// the other managers are demoted and may join again as managers.
    #[arg(long)]
    pub force_new_cluster: bool,
    /// Seal each manager's TLS key and Raft data key under an unlock key
    /// on disk: a restarted manager runs nothing until `swarm unlock`.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", value_parser = autolock::parse_bool)]
    pub autolock: Option<bool>,
    #[command(flatten)]
    pub unsupported: unsupported::UnsupportedSwarmArgs,
}

#[derive(Debug, Args)]
pub struct JoinArgs {
    /// The join token, from `swarm join-token worker` (or manager) on a manager.
    #[arg(long)]
    pub token: String,
    /// Address other nodes reach this node at [default: the daemon's --advertise-addr].
    #[arg(long, value_name = "IP")]
    pub advertise_addr: Option<Ipv4Addr>,
    /// Where this node's control-plane API listens if it is or becomes a
    /// manager: ADDR[:PORT], INTERFACE[:PORT] or :PORT [default: the daemon's --listen-addr, 0.0.0.0:2377].
    #[arg(long, value_name = "ADDR:PORT", value_parser = parse_listen_addr)]
    pub listen_addr: Option<ListenAddr>,
    /// A manager's control-plane address, HOST[:PORT] (port 2377 by default).
    #[arg(value_name = "HOST:PORT", value_parser = parse_manager_addr)]
    pub manager: std::net::SocketAddr,
    /// What this node takes from the start: active, pause or drain [default: active].
    #[arg(long, value_enum)]
    pub availability: Option<Availability>,
    /// Where other nodes send this node's overlay (VXLAN) traffic: an
    /// address or interface of this host [default: the advertise address].
    #[arg(long, value_name = "ADDR|INTERFACE")]
    pub data_path_addr: Option<String>,
}

#[derive(Debug, Args)]
pub struct JoinTokenArgs {
    /// Which token: worker or manager.
    #[arg(value_enum)]
    pub role: RoleArg,
    /// Print only the token.
    #[arg(short, long)]
    pub quiet: bool,
    /// Replace the token: the old one stops admitting nodes at once.
    #[arg(long)]
    pub rotate: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    Worker,
    Manager,
}

impl From<RoleArg> for Role {
    fn from(role: RoleArg) -> Role {
        match role {
            RoleArg::Worker => Role::Worker,
            RoleArg::Manager => Role::Manager,
        }
    }
}

#[derive(Debug, Args)]
pub struct LeaveArgs {
    /// Leave even as a manager: the last one erases the swarm; any other leaves its peers one voter short until it is demoted.
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List the swarm's nodes; -f takes id, label, membership, name, node.label, role.
    #[command(alias = "list")]
    Ls {
        /// Only the node IDs.
        #[arg(short, long)]
        quiet: bool,
        #[command(flatten)]
        filter: FilterArgs,
        #[command(flatten)]
        format: FormatArgs,
    },
    /// Show nodes as JSON shaped like Docker's, or as Docker's text with --pretty.
    Inspect {
        /// Docker's human-readable layout instead of JSON.
        #[arg(long)]
        pretty: bool,
        #[command(flatten)]
        format: InspectFormatArgs,
        /// IDs, unique ID prefixes, hostnames, or `self` (the node asked).
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// List the tasks on nodes (by default this one); -f takes desired-state, id, name, node.
    Ps {
        #[command(flatten)]
        list: service::TaskListArgs,
        /// IDs, unique ID prefixes, hostnames, or `self`.
        #[arg(default_value = "self")]
        nodes: Vec<String>,
    },
    /// Change a node's availability, labels or role.
    Update {
        /// manager or worker: the same as `node promote` or `node demote`.
        #[arg(long, value_enum)]
        role: Option<RoleArg>,
        /// active: takes tasks; pause: keeps its tasks, takes no new ones;
        /// drain: its tasks move elsewhere.
        #[arg(long, value_enum)]
        availability: Option<Availability>,
        /// Add or change a label, KEY=VALUE (repeat for each).
        #[arg(long = "label-add", value_name = "KEY=VALUE", value_parser = parse_label)]
        label_add: Vec<(String, String)>,
        /// Remove a label by key (repeat for each).
        #[arg(long = "label-rm", value_name = "KEY")]
        label_rm: Vec<String>,
        /// ID, unique ID prefix, or hostname.
        node: String,
    },
    /// Make workers managers (they join the Raft voters).
    Promote {
        /// IDs, unique ID prefixes, or hostnames.
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Make managers workers (they leave the Raft voters).
    Demote {
        /// IDs, unique ID prefixes, or hostnames.
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Remove a worker that is down (or, with --force, one that is not).
    Rm {
        /// Remove it even though it is still reporting.
        #[arg(short, long)]
        force: bool,
        /// ID, unique ID prefix, or hostname.
        node: String,
    },
}

fn network_command(host: &str, command: NetworkCommand) -> anyhow::Result<()> {
    match command {
        NetworkCommand::Create {
            driver: _,
            subnet,
            gateway,
            attachable,
            opt,
            label,
            unsupported,
            name,
        } => {
            unsupported.refuse()?;
            let mut mtu = None;
            for (key, value) in opt {
                match key.as_str() {
                    "mtu" | MTU_OPTION => {
                        let parsed = value
                            .parse::<u32>()
                            .ok()
                            .filter(|m| (576..=9000).contains(m));
                        mtu = Some(parsed.ok_or_else(|| {
                            anyhow::anyhow!("-o mtu={value}: give a number from 576 to 9000")
                        })?);
                    }
                    other => {
                        anyhow::bail!(
                            "-o {other}: unknown option; the overlay driver takes mtu=N (or {MTU_OPTION}=N)"
                        )
                    }
                }
            }
            let subnet = subnet.map(|(ip, prefix)| {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                (Ipv4Addr::from(u32::from(ip) & mask), prefix)
            });
            let request = Request::SwarmNetworkCreate(SwarmNetworkCreateRequest {
                name,
                subnet,
                gateway,
                mtu,
                attachable,
                labels: label,
            });
            print_notes(call(host, &request)?)
        }
        NetworkCommand::Ls {
            quiet,
            no_trunc,
            filter,
            format,
        } => {
            let request = Request::SwarmNetworkList {
                filters: filter.filters(),
            };
            let Response::Networks(rows) = call(host, &request)? else {
                anyhow::bail!("the daemon answered `network ls` with something else");
            };
            let rows = rows
                .iter()
                .map(serde_json::to_value)
                .collect::<Result<Vec<_>, _>>()?;
            let contexts: Vec<_> = rows
                .iter()
                .map(|row| listing::network(row, no_trunc))
                .collect();
            let format = format.format.or_quiet(quiet, "ID");
            output::print_listing(&rows, &contexts, &listing::NETWORKS, &format)
        }
        NetworkCommand::Inspect { format, network } => {
            let Response::NetworkInspect(value) =
                call(host, &Request::SwarmNetworkInspect { network })?
            else {
                anyhow::bail!("the daemon answered `network inspect` with something else");
            };
            format.print(&inspected(value))
        }
        NetworkCommand::Rm { networks } => {
            print_notes(call(host, &Request::SwarmNetworkRemove { networks })?)
        }
    }
}

fn print_notes(response: Response) -> anyhow::Result<()> {
    let Response::Notes(notes) = response else {
        anyhow::bail!("the daemon answered with something else");
    };
    for note in notes {
        println!("{note}");
    }
    Ok(())
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    let (key, value) = text.split_once('=').unwrap_or((text, ""));
    if key.is_empty() {
        return Err(format!("{text:?} has no key; write it like zone=east"));
    }
    Ok((key.to_owned(), value.to_owned()))
}

#[derive(Debug, Args)]
#[command(group(
    clap::ArgGroup::new("change")
        .required(true)
        .multiple(true)
        .args(["rotate_gossip_key", "gossip_key_rotation", "cert_expiry", "dispatcher_heartbeat", "task_history_limit", "snapshot_interval", "max_snapshots", "autolock", "external_ca", "data_path_port"])
))]
#[command(after_help = unsupported::SWARM_AFTER_HELP)]
pub struct SwarmUpdateArgs {
    /// Seal gossip between nodes with a new key now (the old one stays
    /// accepted while the new one spreads).
    #[arg(long)]
    pub rotate_gossip_key: bool,
    /// How often the leader rotates the gossip key from now on, e.g. 12h or 30m (at least 2s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub gossip_key_rotation: Option<std::time::Duration>,
    /// How long node certificates last from now on, e.g. 48h (at least
    /// 1h); each node's takes it when next renewed.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub cert_expiry: Option<std::time::Duration>,
    /// How often agents report to managers from now on, e.g. 2s; a node
    /// is Down after three missed.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub dispatcher_heartbeat: Option<std::time::Duration>,
    /// Ended tasks kept per slot for `service ps` from now on.
    #[arg(long, value_name = "N")]
    pub task_history_limit: Option<u64>,
    /// Raft entries between snapshots of the store, from now on (at least 10).
    #[arg(long, value_name = "N")]
    pub snapshot_interval: Option<u64>,
    /// Older Raft snapshots each manager keeps besides the current one.
    #[arg(long, value_name = "N")]
    pub max_snapshots: Option<u64>,
    /// Turn autolock on (a new unlock key is printed) or off: each manager
    /// seals its keys under the unlock key, or writes them in clear.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", value_parser = autolock::parse_bool)]
    pub autolock: Option<bool>,
    #[command(flatten)]
    pub unsupported: unsupported::UnsupportedSwarmArgs,
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// This node's address on the underlay, which other nodes and clients reach it by.
    #[arg(long, value_name = "IP", required_unless_present = "cleanup")]
    pub advertise_addr: Option<Ipv4Addr>,
    /// Remove what a daemon on --data-dir that died without a clean stop
    /// (kill -9, a crash) left on this host, then exit: its tasks
    /// (processes, cgroups, namespaces), their veths, its VXLAN device and
    /// its pinned maps under /sys/fs/bpf/swarm/<node id>. The node's
    /// identity and swarm state stay. Run it in the network namespace the
    /// daemon ran in; refused while a daemon runs on --data-dir.
    #[arg(long)]
    pub cleanup: bool,
    /// Where the node keeps its state.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/swarm")]
    pub data_dir: PathBuf,
    /// The Unix socket the CLI talks to.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONTROL_SOCKET)]
    pub control_socket: PathBuf,
    /// Where Docker's Engine API is served, for the docker CLI and tools
    /// that speak it (DOCKER_HOST=unix://PATH); `none` serves none
    /// [default: /run/swarm/docker.sock, skipped with a warning when
    /// another daemon holds it].
    #[arg(long, value_name = "PATH|none")]
    pub docker_api_socket: Option<String>,
    /// The node's name in the cluster [default: this host's hostname].
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
    /// The underlay interface to attach to [default: the one holding --advertise-addr].
    #[arg(long, value_name = "IF")]
    pub underlay_iface: Option<String>,
    /// UDP port of the VXLAN data path (Docker's --data-path-port).
    #[arg(long, value_name = "PORT", default_value_t = swarm_common::DEFAULT_DATA_PATH_PORT,
          value_parser = clap::value_parser!(u16).range(1024..=49151))]
    pub data_path_port: u16,
    /// Where the underlay program runs: `auto` is XDP, native except on a veth
    /// (where native XDP strips the peer's segmentation offload), generic there.
    #[arg(long, value_enum, default_value_t = UnderlayHookChoice::Auto)]
    pub underlay_hook: UnderlayHookChoice,
    /// How overlay frames reach a task on this node; `redirect` exists to
    /// measure `peer` against (see docs/dataplane.md).
    #[arg(long, value_enum, default_value_t = LocalDelivery::Peer)]
    pub local_delivery: LocalDelivery,
    /// Seconds a balanced flow may idle before it is forgotten. Established
    /// TCP connections are exempt: they stay however long they idle.
    #[arg(long, value_name = "SECONDS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub conntrack_idle_timeout: u64,
    /// Where a manager's control-plane API (Raft, joins, heartbeats)
    /// listens, ADDR:PORT or :PORT; `init --listen-addr` and
    /// `join --listen-addr` choose another port for one swarm.
    #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:2377",
          value_parser = parse_bind_addr)]
    pub listen_addr: std::net::SocketAddr,
    /// What runs this node's tasks: `native` (processes in their own
    /// namespaces and cgroups; needs only the kernel) or `docker` (containers
    /// of the Docker engine at --docker-host).
    #[arg(long, value_enum, default_value_t = RuntimeKind::Native)]
    pub runtime: RuntimeKind,
    /// The Docker engine's socket, for --runtime docker.
    #[arg(
        long,
        value_name = "ADDR",
        env = "DOCKER_HOST",
        default_value = "unix:///var/run/docker.sock"
    )]
    pub docker_host: String,
    /// Where the tasks' resolver (127.0.0.11) sends names that are not the
    /// swarm's: IP or IP:PORT, repeatable, or `none` (they are NXDOMAIN)
    /// [default: the nameservers of this host's /etc/resolv.conf].
    #[arg(long, value_name = "ADDR", value_parser = parse_upstream)]
    pub dns_upstream: Vec<Option<std::net::SocketAddr>>,
    /// UDP port of gossip between the nodes (the same on every node).
    #[arg(long, value_name = "PORT", default_value_t = crate::gossip::DEFAULT_GOSSIP_PORT,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub gossip_port: u16,
    /// A registry reached over plain HTTP, as HOST:PORT (repeatable), as
    /// Docker's daemon flag; registries on loopback are anyway. A
    /// registry's own CA goes in <data dir>/certs.d/HOST:PORT/ca.crt.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_registry)]
    pub insecure_registry: Vec<String>,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics, as Docker's
    /// `metrics-addr` (e.g. 127.0.0.1:9323) [default: not served].
    #[arg(long, value_name = "ADDR:PORT", value_parser = parse_metrics_addr)]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// An engine label of this node, KEY=VALUE (repeatable), as dockerd's
    /// --label: services place by it with `--constraint
    /// engine.labels.KEY==VALUE` or `--placement-pref spread=engine.labels.KEY`.
    /// A restart with other labels replaces them in the swarm.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
}

fn parse_registry(text: &str) -> Result<String, String> {
    let valid = text.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok_and(|p| p != 0)
    });
    if valid {
        Ok(text.to_owned())
    } else {
        Err(format!("{text:?} is not HOST:PORT (e.g. 198.18.0.9:5000)"))
    }
}

fn parse_upstream(text: &str) -> Result<Option<std::net::SocketAddr>, String> {
    if text == "none" {
        return Ok(None);
    }
    text.parse::<std::net::SocketAddr>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(|ip| (ip, 53).into()))
        .map(Some)
        .map_err(|_| {
            format!(
                "--dns-upstream {text:?}: give an IP, IP:PORT or `none`, e.g. --dns-upstream 192.0.2.53"
            )
        })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeKind {
    Native,
    Docker,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// The images this node holds, with the tasks running each.
    #[command(alias = "list")]
    Ls {
        /// Only the image IDs.
        #[arg(short, long)]
        quiet: bool,
        #[command(flatten)]
        format: FormatArgs,
    },
    /// Removes images no task on this node runs.
    #[command(alias = "remove")]
    Rm {
        /// By reference (`web:1`, `HOST:PORT/web:1`), digest or ID prefix.
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Removes every image no task on this node runs.
    Prune {
        /// Docker's `-a` (every unused image, not only dangling ones):
        /// what prune always does here.
        #[arg(short, long)]
        all: bool,
        /// Do not ask (this never asks).
        #[arg(short, long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DataplaneCommand {
    /// Packet counters per protocol and drops per reason, summed over CPUs.
    Stats(FormatArgs),
    /// Every overlay endpoint the kernel programs know: local and remote.
    Endpoints(FormatArgs),
    /// Low-level: serve an overlay network on this node by hand.
    #[command(subcommand)]
    Network(DataplaneNetworkCommand),
    /// Low-level: connect tasks' namespaces, or teach where remote ones are.
    #[command(subcommand)]
    Endpoint(EndpointCommand),
    /// Services the load balancer holds: VIP, published ports, backends
    /// (local ones too) and the connections it tracks.
    Services(FormatArgs),
    /// The balanced flows this node tracks (its connection table): client,
    /// what it dialled, backend, the backend's node, idle time and state.
    Flows {
        /// Only this service's flows (its name as `dataplane services` shows it).
        #[arg(long, value_name = "SERVICE")]
        service: Option<String>,
        #[command(flatten)]
        format: FormatArgs,
    },
    /// Low-level: install services (VIPs, published ports, backends) by hand.
    #[command(subcommand)]
    Service(DataplaneServiceCommand),
}

#[derive(Debug, Subcommand)]
pub enum DataplaneServiceCommand {
    /// Balance a VIP and/or published ports over backends on network VNI.
    Create {
        /// The service's name on this node.
        name: String,
        /// The overlay network the VIP and the backends are on.
        #[arg(long)]
        vni: u32,
        /// Virtual IP in the network's subnet: any TCP/UDP port sent to it
        /// from a task on the network is balanced (as Docker's VIPs are).
        #[arg(long, value_name = "IP")]
        vip: Option<Ipv4Addr>,
        /// A backend's address on the network (repeat for each).
        #[arg(long = "backend", value_name = "IP")]
        backends: Vec<Ipv4Addr>,
        /// Publish a port on every node (routing mesh), as Docker writes it:
        /// PUBLISHED:TARGET[/udp], or published=P,target=T[,protocol=udp][,mode=host]
        /// (host mode: only nodes running a backend answer, with their own).
        #[arg(short = 'p', long = "publish", value_name = "SPEC")]
        published: Vec<PublishedPort>,
    },
    /// Add or remove backends; a removed backend's connections get a reset.
    Update {
        /// The service's name.
        name: String,
        /// Add this backend (repeat for each).
        #[arg(long = "backend-add", value_name = "IP")]
        add: Vec<Ipv4Addr>,
        /// Remove this backend (repeat for each).
        #[arg(long = "backend-rm", value_name = "IP")]
        remove: Vec<Ipv4Addr>,
    },
    /// Remove a service: its VIP and ports stop answering, its flows are forgotten.
    Rm {
        /// The service's name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DataplaneNetworkCommand {
    /// Serve network VNI with SUBNET on this node.
    Create {
        /// VXLAN network identifier (Docker's start at 4096).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..16_777_216))]
        vni: u32,
        /// The network's subnet, e.g. 10.0.1.0/24.
        #[arg(long, value_name = "CIDR", value_parser = parse_cidr)]
        subnet: (Ipv4Addr, u8),
        /// Gateway address the tasks route through [default: the subnet's first address].
        #[arg(long, value_name = "IP")]
        gateway: Option<Ipv4Addr>,
        /// MTU inside the tasks [default: the underlay's MTU minus 50].
        #[arg(long)]
        mtu: Option<u32>,
    },
    /// Stop serving network VNI (its local endpoints must be detached first).
    Rm {
        /// The network's VXLAN network identifier.
        vni: u32,
    },
    /// The networks this node serves (the swarm's and those made by hand).
    Ls(FormatArgs),
}

#[derive(Debug, Subcommand)]
pub enum EndpointCommand {
    /// Give the network namespace NETNS an eth0 on network VNI with address IP.
    Attach {
        /// The network's VXLAN network identifier.
        #[arg(long)]
        vni: u32,
        /// A name under /run/netns (as `ip netns` lists them) or a path.
        #[arg(long)]
        netns: String,
        /// The task's address, inside the network's subnet.
        #[arg(long, value_name = "IP")]
        ip: Ipv4Addr,
        /// Name of the endpoint on this node [default: the namespace's name].
        #[arg(long)]
        id: Option<String>,
    },
    /// Remove a local endpoint: its traffic stops and its veth pair goes.
    Detach {
        /// The endpoint's name (`--id` at attach; by default the namespace's name).
        id: String,
    },
    /// Record that IP on network VNI lives on the node with underlay address NODE.
    AddRemote {
        /// The network's VXLAN network identifier.
        #[arg(long)]
        vni: u32,
        /// The remote endpoint's overlay address.
        #[arg(long, value_name = "IP")]
        ip: Ipv4Addr,
        /// The endpoint's MAC, aa:bb:cc:dd:ee:ff.
        #[arg(long, value_parser = parse_mac_arg)]
        mac: [u8; 6],
        /// The other node's underlay address.
        #[arg(long, value_name = "IP")]
        node: Ipv4Addr,
    },
    /// Forget a remote endpoint.
    RmRemote {
        /// The network's VXLAN network identifier.
        #[arg(long)]
        vni: u32,
        /// The remote endpoint's overlay address.
        #[arg(long, value_name = "IP")]
        ip: Ipv4Addr,
    },
}

fn parse_manager_addr(text: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    text.parse::<Ipv4Addr>()
        .map(|ip| std::net::SocketAddr::from((ip, 2377)))
        .map_err(|_| format!("{text:?} is not a manager address; write it like 198.18.0.1:2377"))
}

/// `ADDR:PORT` or `:PORT`; only the port is used for now (the daemon
/// listens on all addresses).
/// `init|join --listen-addr`: an address or interface (resolved by the
/// daemon, on its host), a port, or both.
#[derive(Clone, Debug, Default)]
pub struct ListenAddr {
    pub host: Option<String>,
    pub port: Option<u16>,
}

fn parse_listen_addr(text: &str) -> Result<ListenAddr, String> {
    let bad = || {
        format!(
            "{text:?} is not a listen address; write it like 198.18.0.1:2377, eth0:2377 or :2377"
        )
    };
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) => (
            host,
            Some(
                port.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(bad)?,
            ),
        ),
        None => (text, None),
    };
    if host.contains(['/', ' ']) || (host.is_empty() && port.is_none()) {
        return Err(bad());
    }
    Ok(ListenAddr {
        host: (!host.is_empty()).then(|| host.to_owned()),
        port,
    })
}

/// `ADDR:PORT` or `:PORT` (all addresses) to bind to.
fn parse_bind_addr(text: &str) -> Result<std::net::SocketAddr, String> {
    let bad = || format!("{text:?} is not a listen address; write it like 0.0.0.0:2377 or :2377");
    let (ip, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let ip = if ip.is_empty() {
        Ipv4Addr::UNSPECIFIED
    } else {
        ip.parse().map_err(|_| bad())?
    };
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(bad)?;
    Ok(std::net::SocketAddr::from((ip, port)))
}

/// Go-style durations as Docker takes them: 90s, 1m30s, 2160h, 500ms, and
/// days as 90d.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("{text:?} is not a duration; write it like 2160h, 90d, 5s or 500ms");
    let mut total = std::time::Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let value: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let secs = |s: u64| std::time::Duration::from_secs(value.saturating_mul(s));
        total += match &rest[..unit_len] {
            "ms" => std::time::Duration::from_millis(value),
            "s" => secs(1),
            "m" => secs(60),
            "h" => secs(3600),
            "d" => secs(86_400),
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
    }
    if total.is_zero() {
        return Err(format!("{text:?}: the duration must be above zero"));
    }
    Ok(total)
}

fn parse_cidr(text: &str) -> Result<(Ipv4Addr, u8), String> {
    let (ip, len) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?} is not a CIDR block; write it like 10.0.1.0/24"))?;
    let ip: Ipv4Addr = ip.parse().map_err(|e| format!("{ip:?}: {e}"))?;
    let len: u8 = len
        .parse()
        .ok()
        .filter(|l| (1..=30).contains(l))
        .ok_or_else(|| format!("prefix length {len:?} must be 1-30"))?;
    Ok((ip, len))
}

fn parse_mac_arg(text: &str) -> Result<[u8; 6], String> {
    crate::dataplane::overlay::parse_mac(text)
        .ok_or_else(|| format!("{text:?} is not a MAC address; write it like 02:42:0a:00:01:02"))
}

/// Runs one command to completion.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        CliCommand::Daemon(args) => run_daemon(args),
        CliCommand::Update(SwarmUpdateArgs {
            rotate_gossip_key,
            gossip_key_rotation,
            cert_expiry,
            dispatcher_heartbeat,
            task_history_limit,
            snapshot_interval,
            max_snapshots,
            autolock,
            unsupported,
        }) => {
            unsupported.refuse()?;
            // As docker/cli: the key is printed when autolock turns on.
            let was_locking = match autolock {
                Some(true) => autolock::autolock_on(&cli.host)?,
                _ => true,
            };
            if cert_expiry.is_some()
                || dispatcher_heartbeat.is_some()
                || task_history_limit.is_some()
                || snapshot_interval.is_some()
                || max_snapshots.is_some()
                || autolock.is_some()
            {
                let least = crate::manager::store::MIN_CERT_EXPIRY;
                if let Some(expiry) = cert_expiry.filter(|e| *e < least) {
                    anyhow::bail!("--cert-expiry {expiry:?} is too short: use at least {least:?}");
                }
                if dispatcher_heartbeat.is_some_and(|h| h.is_zero()) {
                    anyhow::bail!("--dispatcher-heartbeat must be positive, e.g. 1s");
                }
                print_notes(call(
                    &cli.host,
                    &Request::SwarmUpdateSettings {
                        heartbeat_millis: dispatcher_heartbeat
                            .map(|h| (h.as_millis() as u64).max(1)),
                        cert_expiry_secs: cert_expiry.map(|e| e.as_secs()),
                        task_history_limit,
                        snapshot_interval,
                        max_snapshots,
                        autolock,
                    },
                )?)?;
                if !was_locking {
                    autolock::print_unlock_command(&autolock::unlock_key(&cli.host, false)?);
                }
            }
            if let Some(period) = gossip_key_rotation {
                let secs = period.as_secs();
                let least = crate::manager::store::MIN_GOSSIP_KEY_ROTATION;
                if secs < least.as_secs() {
                    anyhow::bail!(
                        "--gossip-key-rotation {period:?} is too short: a key must reach every node before the next; use at least {least:?}"
                    );
                }
                print_notes(call(
                    &cli.host,
                    &Request::SwarmSetGossipKeyRotation { secs },
                )?)?;
            }
            if rotate_gossip_key {
                print_notes(call(&cli.host, &Request::SwarmRotateGossipKey)?)?;
            }
            Ok(())
        }
        CliCommand::GossipSimulation { nodes, port } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let took =
                runtime.block_on(crate::gossip::simulate::endpoint_convergence(nodes, port))?;
            println!("{:.3}", took.as_secs_f64());
            Ok(())
        }
        CliCommand::Events(args) => events::run(&cli.host, args),
        CliCommand::Info(args) => {
            let Response::Info(info) = call(&cli.host, &Request::Info)? else {
                anyhow::bail!("the daemon answered `info` with something else");
            };
            output::print_info(&info, &args.format)
        }
        CliCommand::Dataplane(DataplaneCommand::Stats(args)) => {
            let Response::DataplaneStats(stats) = call(&cli.host, &Request::DataplaneStats)? else {
                anyhow::bail!("the daemon answered `dataplane stats` with something else");
            };
            output::print_stats(&stats, &args.format)
        }
        CliCommand::Dataplane(DataplaneCommand::Endpoints(args)) => {
            let Response::Endpoints(rows) = call(&cli.host, &Request::Endpoints)? else {
                anyhow::bail!("the daemon answered `dataplane endpoints` with something else");
            };
            output::print_endpoints(&rows, &args.format)
        }
        CliCommand::Stack(command) => stack::run(&cli.host, command),
        CliCommand::Secret(command) => {
            payloads::run(&cli.host, crate::api::mounts::PayloadKind::Secret, command)
        }
        CliCommand::Config(command) => {
            payloads::run(&cli.host, crate::api::mounts::PayloadKind::Config, command)
        }
        CliCommand::Volume(VolumeCommand::Ls { quiet, format }) => {
            let Response::Rows(rows) = call(&cli.host, &Request::VolumeList)? else {
                anyhow::bail!("the daemon answered `volume ls` with something else");
            };
            let format = format.format.or_quiet(quiet, "Name");
            output::print_rows(&rows, &listing::VOLUMES, &format)
        }
        CliCommand::Volume(VolumeCommand::Inspect { format, names }) => {
            let Response::Json(value) = call(&cli.host, &Request::VolumeInspect { names })? else {
                anyhow::bail!("the daemon answered `volume inspect` with something else");
            };
            format.print(&inspected(value))
        }
        CliCommand::Volume(VolumeCommand::Rm { names }) => {
            print_notes(call(&cli.host, &Request::VolumeRemove { names })?)
        }
        CliCommand::Volume(VolumeCommand::Prune { .. }) => {
            print_notes(call(&cli.host, &Request::VolumePrune)?)
        }
        CliCommand::Image(ImageCommand::Ls { quiet, format }) => {
            let Response::Rows(rows) = call(&cli.host, &Request::ImageList)? else {
                anyhow::bail!("the daemon answered `image ls` with something else");
            };
            let format = format.format.or_quiet(quiet, "ID");
            output::print_rows(&rows, &listing::IMAGES, &format)
        }
        CliCommand::Image(ImageCommand::Rm { images }) => {
            print_notes(call(&cli.host, &Request::ImageRemove { images })?)
        }
        CliCommand::Image(ImageCommand::Prune { .. }) => {
            print_notes(call(&cli.host, &Request::ImagePrune)?)
        }
        CliCommand::Dataplane(DataplaneCommand::Flows { service, format }) => {
            let Response::Rows(rows) = call(&cli.host, &Request::DataplaneFlows { service })?
            else {
                anyhow::bail!("the daemon answered `dataplane flows` with something else");
            };
            output::print_rows(&rows, &listing::DATAPLANE_FLOWS, &format.format)
        }
        CliCommand::Dataplane(DataplaneCommand::Network(DataplaneNetworkCommand::Ls(args))) => {
            let Response::Rows(rows) = call(&cli.host, &Request::DataplaneNetworks)? else {
                anyhow::bail!("the daemon answered `dataplane network ls` with something else");
            };
            output::print_rows(&rows, &listing::DATAPLANE_NETWORKS, &args.format)
        }
        CliCommand::Dataplane(DataplaneCommand::Network(command)) => {
            let request = match command {
                DataplaneNetworkCommand::Create {
                    vni,
                    subnet: (subnet, prefix_len),
                    gateway,
                    mtu,
                } => {
                    let mask = u32::MAX << (32 - u32::from(prefix_len));
                    let base = Ipv4Addr::from(u32::from(subnet) & mask);
                    Request::NetworkCreate(OverlayNetwork {
                        vni,
                        subnet: base,
                        prefix_len,
                        gateway: gateway.unwrap_or_else(|| Ipv4Addr::from(u32::from(base) + 1)),
                        mtu: mtu.unwrap_or(1500 - VXLAN_OVERHEAD),
                    })
                }
                DataplaneNetworkCommand::Rm { vni } => Request::NetworkRemove { vni },
                DataplaneNetworkCommand::Ls(_) => unreachable!("listed above"),
            };
            call(&cli.host, &request)?;
            Ok(())
        }
        CliCommand::Init(args) => {
            args.unsupported.refuse()?;
            let listen = args.listen_addr.unwrap_or_default();
            let request = Request::SwarmInit(SwarmInitRequest {
                autolock: args.autolock.unwrap_or(false),
                advertise_addr: args.advertise_addr,
                listen_port: listen.port,
                listen_host: listen.host,
                data_path_addr: args.data_path_addr,
                address_pools: args.default_addr_pool,
                subnet_size: args.default_addr_pool_mask_length,
                snapshot_interval: args.snapshot_interval,
                max_snapshots: args.max_snapshots,
                force_new_cluster: args.force_new_cluster,
                cert_expiry_secs: args.cert_expiry.map(|d| d.as_secs().max(1)),
                heartbeat_millis: args
                    .dispatcher_heartbeat
                    .map(|d| d.as_millis().max(1) as u64),
                gossip_key_rotation_secs: args.gossip_key_rotation.map(|d| d.as_secs()),
                task_history_limit: args.task_history_limit,
                availability: args.availability,
            });
            let Response::SwarmInitialized {
                node_id,
                worker_token,
                manager_addr,
            } = call(&cli.host, &request)?
            else {
                anyhow::bail!("the daemon answered `init` with something else");
            };
            println!("Swarm initialized: current node ({node_id}) is now a manager.\n");
            output::print_join_command("worker", &worker_token, &manager_addr)?;
            println!(
                "To add a manager to this swarm, run 'swarm join-token manager' and follow the instructions.\n"
            );
            if args.autolock == Some(true) {
                autolock::print_unlock_command(&autolock::unlock_key(&cli.host, false)?);
            }
            Ok(())
        }
        CliCommand::Join(args) => {
            let listen = args.listen_addr.unwrap_or_default();
            let request = Request::SwarmJoin(SwarmJoinRequest {
                token: args.token,
                manager: args.manager,
                advertise_addr: args.advertise_addr,
                listen_port: listen.port,
                listen_host: listen.host,
                data_path_addr: args.data_path_addr,
                availability: args.availability,
            });
            let Response::Joined { role } = call(&cli.host, &request)? else {
                anyhow::bail!("the daemon answered `join` with something else");
            };
            println!("This node joined a swarm as a {role}.");
            Ok(())
        }
        CliCommand::JoinToken(args) => {
            let request = Request::JoinToken {
                role: args.role.into(),
                rotate: args.rotate,
            };
            let Response::JoinToken {
                role,
                token,
                manager_addr,
            } = call(&cli.host, &request)?
            else {
                anyhow::bail!("the daemon answered `join-token` with something else");
            };
            if args.quiet {
                println!("{token}");
                return Ok(());
            }
            if args.rotate {
                println!("Successfully rotated {role} join token.\n");
            }
            output::print_join_command(&role.to_string(), &token, &manager_addr)
        }
        CliCommand::Ca(args) => ca::run(&cli.host, &args),
        CliCommand::UnlockKey(args) => autolock::run_unlock_key(&cli.host, &args),
        CliCommand::Unlock => autolock::run_unlock(&cli.host),
        CliCommand::Leave(args) => {
            call(&cli.host, &Request::SwarmLeave { force: args.force })?;
            println!("Node left the swarm.");
            Ok(())
        }
        CliCommand::Node(NodeCommand::Inspect {
            pretty,
            format,
            nodes,
        }) => {
            format.check_pretty(pretty)?;
            let mut all = Vec::new();
            for node in nodes {
                let Response::NodeInspect(serde_json::Value::Array(items)) =
                    call(&cli.host, &Request::NodeInspect { node })?
                else {
                    anyhow::bail!("the daemon answered `node inspect` with something else");
                };
                all.extend(items);
            }
            if pretty {
                print!("{}", inspect::pretty_nodes(&all));
                Ok(())
            } else {
                format.print(&all)
            }
        }
        CliCommand::Node(NodeCommand::Ps { list, nodes }) => {
            let mut filters = list.filter.filters();
            for node in nodes {
                filters.add("node", node);
            }
            let request = Request::SwarmServiceTasks {
                services: Vec::new(),
                filters,
            };
            let Response::Rows(rows) = call(&cli.host, &request)? else {
                anyhow::bail!("the daemon answered `node ps` with something else");
            };
            list.print(&rows)
        }
        CliCommand::Node(NodeCommand::Update {
            role,
            availability,
            label_add,
            label_rm,
            node,
        }) => {
            if role.is_none()
                && availability.is_none()
                && label_add.is_empty()
                && label_rm.is_empty()
            {
                anyhow::bail!(
                    "nothing to update: give --availability, --label-add KEY=VALUE, --label-rm KEY or --role"
                );
            }
            let request = Request::NodeUpdate(NodeUpdateRequest {
                node: node.clone(),
                availability,
                label_add,
                label_rm,
                role: role.map(Into::into),
                ..NodeUpdateRequest::default()
            });
            call(&cli.host, &request)?;
            println!("{node}");
            Ok(())
        }
        CliCommand::Network(command) => network_command(&cli.host, command),
        CliCommand::Service(command) => service::run(&cli.host, command),
        CliCommand::Node(NodeCommand::Promote { nodes }) => {
            print_notes(call(&cli.host, &Request::NodePromote { nodes })?)
        }
        CliCommand::Node(NodeCommand::Demote { nodes }) => {
            print_notes(call(&cli.host, &Request::NodeDemote { nodes })?)
        }
        CliCommand::Node(NodeCommand::Rm { force, node }) => {
            call(
                &cli.host,
                &Request::NodeRemove {
                    node: node.clone(),
                    force,
                },
            )?;
            println!("{node}");
            Ok(())
        }
        CliCommand::Node(NodeCommand::Ls {
            quiet,
            filter,
            format,
        }) => {
            let request = Request::NodeList {
                filters: filter.filters(),
            };
            let Response::Nodes(rows) = call(&cli.host, &request)? else {
                anyhow::bail!("the daemon answered `node ls` with something else");
            };
            let rows = rows
                .iter()
                .map(serde_json::to_value)
                .collect::<Result<Vec<_>, _>>()?;
            let contexts: Vec<_> = rows.iter().map(listing::node).collect();
            let format = format.format.or_quiet(quiet, "ID");
            output::print_listing(&rows, &contexts, &listing::NODES, &format)
        }
        CliCommand::Dataplane(DataplaneCommand::Services(args)) => {
            let Response::Services(rows) = call(&cli.host, &Request::Services)? else {
                anyhow::bail!("the daemon answered `dataplane services` with something else");
            };
            output::print_services(&rows, &args.format)
        }
        CliCommand::Dataplane(DataplaneCommand::Service(command)) => {
            let request = match command {
                DataplaneServiceCommand::Create {
                    name,
                    vni,
                    vip,
                    backends,
                    published,
                } => Request::ServiceCreate(BalancedService {
                    name,
                    vni,
                    vip,
                    backends,
                    published,
                }),
                DataplaneServiceCommand::Update { name, add, remove } => {
                    if add.is_empty() && remove.is_empty() {
                        anyhow::bail!(
                            "nothing to update: give --backend-add IP or --backend-rm IP"
                        );
                    }
                    Request::ServiceUpdate { name, add, remove }
                }
                DataplaneServiceCommand::Rm { name } => Request::ServiceRemove { name },
            };
            call(&cli.host, &request)?;
            Ok(())
        }
        CliCommand::Dataplane(DataplaneCommand::Endpoint(command)) => {
            let request = match command {
                EndpointCommand::Attach { vni, netns, ip, id } => {
                    let path = if netns.contains('/') {
                        PathBuf::from(&netns)
                    } else {
                        PathBuf::from("/run/netns").join(&netns)
                    };
                    let id =
                        id.unwrap_or_else(|| netns.rsplit('/').next().unwrap_or(&netns).to_owned());
                    Request::EndpointAttach(LocalEndpointSpec {
                        id,
                        vni,
                        netns: path,
                        ip,
                        iface: None,
                        default_route: true,
                    })
                }
                EndpointCommand::Detach { id } => Request::EndpointDetach { id },
                EndpointCommand::AddRemote { vni, ip, mac, node } => {
                    Request::RemoteAdd(RemoteEndpointSpec { vni, ip, mac, node })
                }
                EndpointCommand::RmRemote { vni, ip } => Request::RemoteRemove { vni, ip },
            };
            if let Response::Endpoint(row) = call(&cli.host, &request)? {
                output::print_endpoints(&[row], &Format::Table)?;
            }
            Ok(())
        }
    }
}

fn call(host: &str, request: &Request) -> anyhow::Result<Response> {
    let path = control::parse_host(host)?;
    Ok(Client::connect(&path)?.call(request)?)
}

/// `--metrics-addr`: an address and a port, as Docker's daemon takes it.
fn parse_metrics_addr(value: &str) -> Result<std::net::SocketAddr, String> {
    value.parse().map_err(|_| {
        format!("invalid --metrics-addr {value:?}: give ADDR:PORT, e.g. 127.0.0.1:9323")
    })
}

fn run_daemon(args: DaemonArgs) -> anyhow::Result<()> {
    let runtime_choice = match args.runtime {
        RuntimeKind::Native => RuntimeChoice::Native,
        RuntimeKind::Docker => RuntimeChoice::Docker {
            host: args.docker_host.clone(),
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    if args.cleanup {
        let cleaned = runtime.block_on(daemon::cleanup(daemon::CleanupConfig {
            data_dir: args.data_dir,
            runtime: runtime_choice,
            data_path_port: args.data_path_port,
        }))?;
        println!(
            "node {}: removed {} task(s), {} link(s), {}",
            cleaned.node_id,
            cleaned.tasks.len(),
            cleaned.links.len(),
            match &cleaned.pin_dir {
                Some(dir) => format!("the pins in {}", dir.display()),
                None => "no pins (none were left)".to_owned(),
            }
        );
        return Ok(());
    }
    let Some(advertise_addr) = args.advertise_addr else {
        anyhow::bail!(
            "swarm daemon needs --advertise-addr IP (this node's address on the underlay)"
        );
    };
    let hostname = match args.hostname {
        Some(name) => name,
        None => nix::unistd::gethostname()
            .context("reading this host's hostname (or pass --hostname)")?
            .to_string_lossy()
            .into_owned(),
    };
    let config = DaemonConfig {
        advertise_addr,
        data_dir: args.data_dir,
        control_socket: args.control_socket,
        docker_api: match args.docker_api_socket.as_deref() {
            None => DockerApi::Default(crate::engine::DEFAULT_SOCKET.into()),
            Some("none") => DockerApi::Off,
            Some("") => anyhow::bail!(
                "--docker-api-socket needs a path (e.g. /run/swarm/docker.sock), or `none` to serve no Docker API"
            ),
            Some(path) => DockerApi::At(path.into()),
        },
        hostname,
        underlay_iface: args.underlay_iface,
        data_path_port: args.data_path_port,
        underlay_hook: args.underlay_hook,
        local_delivery: args.local_delivery,
        conntrack_idle_timeout: std::time::Duration::from_secs(args.conntrack_idle_timeout),
        listen_addr: args.listen_addr,
        gossip_port: args.gossip_port,
        insecure_registries: args.insecure_registry,
        metrics_addr: args.metrics_addr,
        engine_labels: args.labels.into_iter().collect(),
        dns_upstreams: if args.dns_upstream.is_empty() {
            crate::dns::host_upstreams()
        } else {
            args.dns_upstream.into_iter().flatten().collect()
        },
        runtime: runtime_choice,
    };
    runtime.block_on(async {
        daemon::run(config, shutdown_signal()).await?;
        Ok(())
    })
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(err) => {
            tracing::error!(error = %err, "cannot listen for SIGTERM; stop with Ctrl-C");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{parse_duration, parse_listen_addr};

    #[test]
    fn durations_read_like_go_and_docker() {
        assert_eq!(
            parse_duration("2160h"),
            Ok(Duration::from_secs(2160 * 3600))
        );
        assert_eq!(parse_duration("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        for bad in ["", "5", "5x", "h", "0s", "-1s", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bind_addresses_take_an_optional_ip() {
        assert_eq!(
            super::parse_bind_addr(":2377"),
            Ok("0.0.0.0:2377".parse().unwrap())
        );
        assert_eq!(
            super::parse_bind_addr("198.18.0.1:4242"),
            Ok("198.18.0.1:4242".parse().unwrap())
        );
        assert!(super::parse_bind_addr("2377").is_err());
        assert!(super::parse_bind_addr("host:2377").is_err());
    }

    #[test]
    fn listen_addresses_give_an_address_an_interface_or_a_port() {
        let parsed = |text| {
            parse_listen_addr(text).map(|l| (l.host.unwrap_or_default(), l.port.unwrap_or(0)))
        };
        assert_eq!(parsed("0.0.0.0:2377"), Ok(("0.0.0.0".into(), 2377)));
        assert_eq!(parsed(":4242"), Ok((String::new(), 4242)));
        assert_eq!(parsed("eth1:2400"), Ok(("eth1".into(), 2400)));
        assert_eq!(parsed("198.18.0.1"), Ok(("198.18.0.1".into(), 0)));
        assert!(parse_listen_addr(":0").is_err());
        assert!(parse_listen_addr(":").is_err());
        assert!(parse_listen_addr("").is_err());
        assert!(parse_listen_addr("10.0.0.0/8:2377").is_err());
    }
}
