//! The load balancer's user-space half: services (a VIP and backends on an
//! overlay network, published ports) written into the frontend and backend
//! maps, host-mode ports kept to local backends, and the connection table's
//! clean-up (idle flows, flows of removed backends).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
    net::Ipv4Addr,
    str::FromStr,
    time::Duration,
};

use aya::maps::{Array, MapData};
use serde::{Deserialize, Serialize};
use swarm_common::{
    map_names,
    overlay::{Endpoint, EndpointKey, NETWORK_INGRESS, Network},
    service::{
        BackendKey, CT_FLAG_CLOSING, CT_FLAG_ESTABLISHED, CT_FLAG_MESH, CT_FORWARD, CT_REPLY,
        CtEntry, CtKey, FRONTEND_HOST_MODE, Frontend, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP,
        MAX_BACKEND_SETS, PublishedKey, VipKey,
    },
};
use tracing::info;

use super::{
    Dataplane, DataplaneError,
    overlay::gateway_mac,
    probe::{self, Nudge},
};

/// Flows that saw a FIN or RST go after this long idle (or the idle
/// timeout, when shorter).
const CLOSING_TIMEOUT: Duration = Duration::from_secs(10);
/// Service changes closer together than this share one write of the state file.
const STATE_SAVE_INTERVAL: Duration = Duration::from_millis(200);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    /// Balanced and published as TCP and UDP are; the NAT keeps SCTP's
    /// CRC32c right when the mesh changes a port.
    Sctp,
}

impl Protocol {
    fn number(self) -> u8 {
        match self {
            Protocol::Tcp => IPPROTO_TCP,
            Protocol::Udp => IPPROTO_UDP,
            Protocol::Sctp => IPPROTO_SCTP,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        })
    }
}

/// Docker's publish modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    /// The routing mesh: every node answers and balances over all backends.
    Ingress,
    /// Only nodes running a backend answer, with their own backends.
    Host,
}

/// A published port, written as Docker's `--publish` takes it:
/// `8080:80`, `8080:80/udp`, or `published=8080,target=80,protocol=udp,mode=host`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedPort {
    pub protocol: Protocol,
    pub published: u16,
    pub target: u16,
    pub mode: PublishMode,
}

impl fmt::Display for PublishedPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.published, self.target, self.protocol)?;
        if self.mode == PublishMode::Host {
            f.write_str(" (host)")?;
        }
        Ok(())
    }
}

/// Why a `--publish` value does not parse.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error("{what} port {value:?} is not a port number (1-65535)")]
    NotAPort { what: &'static str, value: String },
    #[error("protocol {0:?} is not tcp, udp or sctp")]
    Protocol(String),
    #[error("mode {0:?} is not ingress or host")]
    Mode(String),
    #[error("{0:?} is not key=value")]
    NotKeyValue(String),
    #[error("unknown field {0:?} (use published, target, protocol, mode)")]
    UnknownField(String),
    #[error("{0}=PORT is required")]
    Missing(&'static str),
    #[error("{0:?} is not PUBLISHED:TARGET[/PROTOCOL]")]
    NoPublished(String),
}

impl FromStr for PublishedPort {
    type Err = PortError;

    /// Docker's `--publish` with both ports given.
    fn from_str(text: &str) -> Result<Self, PortError> {
        let config: PortConfig = text.parse()?;
        let published = config.published.ok_or_else(|| {
            if text.contains('=') {
                PortError::Missing("published")
            } else {
                PortError::NoPublished(text.to_owned())
            }
        })?;
        Ok(PublishedPort {
            protocol: config.protocol,
            published,
            target: config.target,
            mode: config.mode,
        })
    }
}

/// A port as `--publish` asks for it: the published port may be left to
/// the allocator (`swarm service create -p 80`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortConfig {
    pub protocol: Protocol,
    pub target: u16,
    pub published: Option<u16>,
    pub mode: PublishMode,
}

impl FromStr for PortConfig {
    type Err = PortError;

    /// Docker's short (`8080:80[/udp]`, `80`) and long
    /// (`published=8080,target=80,protocol=udp,mode=host`) syntaxes.
    fn from_str(text: &str) -> Result<Self, PortError> {
        let port = |value: &str, what: &'static str| match value.parse::<u16>() {
            Ok(port) if port != 0 => Ok(port),
            _ => Err(PortError::NotAPort {
                what,
                value: value.to_owned(),
            }),
        };
        let protocol = |value: &str| match value {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            "sctp" => Ok(Protocol::Sctp),
            other => Err(PortError::Protocol(other.to_owned())),
        };
        let mut config = PortConfig {
            protocol: Protocol::Tcp,
            target: 0,
            published: None,
            mode: PublishMode::Ingress,
        };
        if text.contains('=') {
            let mut target = None;
            for field in text.split(',') {
                let (key, value) = field
                    .split_once('=')
                    .ok_or_else(|| PortError::NotKeyValue(field.to_owned()))?;
                match key {
                    "published" => config.published = Some(port(value, "published")?),
                    "target" => target = Some(port(value, "target")?),
                    "protocol" => config.protocol = protocol(value)?,
                    "mode" => {
                        config.mode = match value {
                            "ingress" => PublishMode::Ingress,
                            "host" => PublishMode::Host,
                            other => return Err(PortError::Mode(other.to_owned())),
                        }
                    }
                    other => {
                        return Err(PortError::UnknownField(other.to_owned()));
                    }
                }
            }
            config.target = target.ok_or(PortError::Missing("target"))?;
            return Ok(config);
        }
        let ports = match text.split_once('/') {
            Some((ports, proto)) => {
                config.protocol = protocol(proto)?;
                ports
            }
            None => text,
        };
        match ports.split_once(':') {
            Some((published, target)) => {
                config.published = Some(port(published, "published")?);
                config.target = port(target, "target")?;
            }
            None => config.target = port(ports, "target")?,
        }
        Ok(config)
    }
}

/// A service as the data plane needs it: on network `vni`, reachable at
/// `vip` from tasks on that network and on its published ports from outside,
/// balanced over `backends` (task addresses on the same network).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalancedService {
    pub name: String,
    pub vni: u32,
    pub vip: Option<Ipv4Addr>,
    pub backends: Vec<Ipv4Addr>,
    #[serde(default)]
    pub published: Vec<PublishedPort>,
}

/// One row of `swarm dataplane services`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceRow {
    pub name: String,
    #[serde(rename = "VNI")]
    pub vni: u32,
    #[serde(rename = "VIP")]
    pub vip: Option<Ipv4Addr>,
    pub published: Vec<String>,
    pub backends: Vec<Ipv4Addr>,
    /// Backends whose task runs on this node.
    pub local_backends: Vec<Ipv4Addr>,
    /// Flows this node balanced and still tracks.
    pub connections: u64,
}

/// One balanced flow, as `swarm dataplane flows` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FlowRow {
    pub service: String,
    pub protocol: String,
    /// Who connected: a task, or an outside client through the mesh.
    pub client: String,
    /// What it dialled: the VIP or a published port, and the port.
    pub frontend: String,
    pub backend: String,
    /// Where the backend runs: `local`, the node's underlay address, or
    /// `gone` when its endpoint is no longer known.
    pub node: String,
    /// Seconds since the flow last carried a packet (counted to the second).
    pub idle_secs: u64,
    /// `new`, `established` or `closing`.
    pub state: String,
    /// Came in through the routing mesh (a published port).
    pub mesh: bool,
}

/// Services installed on this node.
#[derive(Default)]
pub struct Services {
    installed: BTreeMap<String, Installed>,
    free_sets: Vec<u32>,
    next_set: u32,
}

struct Installed {
    spec: BalancedService,
    /// Every backend: for the VIP and ingress-mode ports.
    all_set: u32,
    /// This node's backends: for host-mode ports.
    local_set: u32,
    local_backends: Vec<Ipv4Addr>,
}

impl Services {
    fn allocate_set(&mut self) -> Result<u32, DataplaneError> {
        if let Some(set) = self.free_sets.pop() {
            return Ok(set);
        }
        if self.next_set >= MAX_BACKEND_SETS {
            return Err(DataplaneError::InvalidService(format!(
                "this node holds the most services it can ({})",
                MAX_BACKEND_SETS / 2
            )));
        }
        self.next_set += 1;
        Ok(self.next_set - 1)
    }

    pub fn specs(&self) -> Vec<BalancedService> {
        self.installed.values().map(|s| s.spec.clone()).collect()
    }
}

fn be(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

fn published_key(port: &PublishedPort) -> PublishedKey {
    PublishedKey {
        port: port.published.to_be(),
        protocol: port.protocol.number(),
        _pad: 0,
    }
}

impl Dataplane {
    /// The services installed on this node, as they were specified.
    pub fn service_specs(&self) -> Vec<BalancedService> {
        self.services.specs()
    }

    /// Installs a service: its VIP, backends and published ports.
    pub fn create_service(&mut self, spec: BalancedService) -> Result<(), DataplaneError> {
        self.check_service(&spec)?;
        let all_set = self.services.allocate_set()?;
        let local_set = match self.services.allocate_set() {
            Ok(set) => set,
            Err(err) => {
                self.services.free_sets.push(all_set);
                return Err(err);
            }
        };
        for set in [all_set, local_set] {
            self.reset_turns(set)?;
        }
        let name = spec.name.clone();
        self.services.installed.insert(
            name.clone(),
            Installed {
                spec,
                all_set,
                local_set,
                local_backends: Vec::new(),
            },
        );
        let written = self
            .local_addresses()
            .and_then(|local| self.write_service(&name, 0, &local));
        if let Err(err) = written {
            let _ = self.remove_service(&name);
            return Err(err);
        }
        self.mark_ingress_networks()?;
        let spec = &self.services.installed[&name].spec;
        info!(
            service = %name,
            vni = spec.vni,
            vip = ?spec.vip,
            backends = spec.backends.len(),
            published = spec.published.len(),
            "service created"
        );
        self.save_state_soon()
    }

    /// Adds and removes backends. New connections never pick a removed
    /// backend; its tracked flows are forgotten, so their next packet is
    /// answered with a reset.
    pub fn update_service_backends(
        &mut self,
        name: &str,
        add: &[Ipv4Addr],
        remove: &[Ipv4Addr],
    ) -> Result<(), DataplaneError> {
        let service = self
            .services
            .installed
            .get(name)
            .ok_or_else(|| DataplaneError::NoSuchService(name.to_owned()))?;
        let mut backends = service.spec.backends.clone();
        let old_len = backends.len() as u32;
        for ip in remove {
            if !backends.contains(ip) {
                return Err(DataplaneError::InvalidService(format!(
                    "{ip} is not a backend of {name}"
                )));
            }
        }
        backends.retain(|ip| !remove.contains(ip));
        for ip in add {
            if backends.contains(ip) {
                return Err(DataplaneError::InvalidService(format!(
                    "{ip} is already a backend of {name}"
                )));
            }
            backends.push(*ip);
        }
        let mut candidate = service.spec.clone();
        candidate.backends = backends;
        self.check_backends(&candidate)?;
        let sets = [service.all_set, service.local_set];
        self.services
            .installed
            .get_mut(name)
            .expect("checked above")
            .spec = candidate;
        let local = self.local_addresses()?;
        self.write_service(name, old_len, &local)?;
        let gone: BTreeSet<u32> = remove.iter().map(|ip| be(*ip)).collect();
        let doomed = |key: &CtKey, entry: &CtEntry| {
            sets.contains(&entry.backend_set)
                && if key.kind == CT_FORWARD {
                    gone.contains(&entry.nat_ip)
                } else {
                    gone.contains(&key.saddr)
                }
        };
        self.end_flows(doomed)?;
        info!(service = %name, added = add.len(), removed = remove.len(), "service backends updated");
        self.save_state_soon()
    }

    /// Removes a service and forgets its flows.
    pub fn remove_service(&mut self, name: &str) -> Result<(), DataplaneError> {
        let service = self
            .services
            .installed
            .remove(name)
            .ok_or_else(|| DataplaneError::NoSuchService(name.to_owned()))?;
        if let Some(vip) = service.spec.vip {
            let _ = self
                .hash_map::<VipKey, Frontend>(map_names::VIPS)?
                .remove(&VipKey {
                    vni: service.spec.vni,
                    vip: be(vip),
                });
        }
        let mut published = self.hash_map::<PublishedKey, Frontend>(map_names::PUBLISHED)?;
        for port in &service.spec.published {
            let _ = published.remove(&published_key(port));
        }
        let slots = [
            (service.all_set, service.spec.backends.len()),
            (service.local_set, service.local_backends.len()),
        ];
        let mut backends = self.hash_map::<BackendKey, u32>(map_names::BACKENDS)?;
        for (set, len) in slots {
            for slot in 0..len as u32 {
                let _ = backends.remove(&BackendKey {
                    backend_set: set,
                    slot,
                });
            }
        }
        let sets = [service.all_set, service.local_set];
        let doomed = |_: &CtKey, entry: &CtEntry| sets.contains(&entry.backend_set);
        self.end_flows(doomed)?;
        self.services.free_sets.extend(sets);
        self.mark_ingress_networks()?;
        info!(service = %name, "service removed");
        self.save_state_soon()
    }

    /// Every installed service, with what the maps hold for it.
    pub fn services(&mut self) -> Result<Vec<ServiceRow>, DataplaneError> {
        let mut flows: HashMap<u32, u64> = HashMap::new();
        let conntrack = self.hash_map::<CtKey, CtEntry>(map_names::CONNTRACK)?;
        for (key, entry) in conntrack.iter().filter_map(Result::ok) {
            if key.kind == CT_FORWARD {
                *flows.entry(entry.backend_set).or_default() += 1;
            }
        }
        Ok(self
            .services
            .installed
            .iter()
            .map(|(name, s)| ServiceRow {
                name: name.clone(),
                vni: s.spec.vni,
                vip: s.spec.vip,
                published: s.spec.published.iter().map(|p| p.to_string()).collect(),
                backends: s.spec.backends.clone(),
                local_backends: s.local_backends.clone(),
                connections: flows.get(&s.all_set).copied().unwrap_or(0)
                    + flows.get(&s.local_set).copied().unwrap_or(0),
            })
            .collect())
    }

    /// Host-mode ports follow the tasks on this node: called whenever a
    /// local endpoint comes or goes.
    pub(super) fn refresh_local_backends(&mut self) -> Result<(), DataplaneError> {
        let local = self.local_addresses()?;
        let names: Vec<String> = self.services.installed.keys().cloned().collect();
        for name in names {
            let len = self.services.installed[&name].spec.backends.len() as u32;
            self.write_service(&name, len, &local)?;
        }
        Ok(())
    }

    /// Addresses of the endpoints on this node (read once per change, not
    /// once per service).
    fn local_addresses(&mut self) -> Result<BTreeSet<u32>, DataplaneError> {
        let endpoints = self.hash_map::<EndpointKey, Endpoint>(map_names::ENDPOINTS)?;
        Ok(endpoints
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, e)| e.ifindex != 0)
            .map(|(k, _)| k.ip)
            .collect())
    }

    /// Removes tracked flows idle for longer than `idle`, except established
    /// TCP flows, which stay however long they idle (IPVS drops them after
    /// 900 s; we do not). Closing flows go after 10 s at most. Returns how
    /// many entries went.
    pub fn expire_flows(&mut self, idle: Duration) -> Result<usize, DataplaneError> {
        let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|t| Duration::from(t).as_nanos() as u64)
            .unwrap_or(0);
        let closing = idle.min(CLOSING_TIMEOUT).as_nanos() as u64;
        let idle = idle.as_nanos() as u64;
        self.forget_flows(|key, entry| {
            let idle_for = now.saturating_sub(entry.last_seen_ns);
            if entry.flags & CT_FLAG_CLOSING != 0 {
                idle_for > closing
            } else if key.protocol == IPPROTO_TCP && entry.flags & CT_FLAG_ESTABLISHED != 0 {
                false
            } else {
                idle_for > idle
            }
        })
        .map(|gone| gone.len())
    }

    /// The balanced flows this node tracks (`swarm dataplane flows`): each
    /// forward entry of the connection table, with its service, backend,
    /// the backend's node, how long it idles and its state; only
    /// `service`'s when given.
    pub fn flows(&mut self, service: Option<&str>) -> Result<Vec<FlowRow>, DataplaneError> {
        if let Some(name) = service
            && !self.services.installed.contains_key(name)
        {
            return Err(DataplaneError::InvalidService(format!(
                "no service {name} on this node (see `swarm dataplane services`)"
            )));
        }
        let by_set: HashMap<u32, String> = self
            .services
            .installed
            .iter()
            .flat_map(|(name, s)| [(s.all_set, name.clone()), (s.local_set, name.clone())])
            .collect();
        let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|t| Duration::from(t).as_nanos() as u64)
            .unwrap_or(0);
        let forward: Vec<(CtKey, CtEntry)> = self
            .hash_map::<CtKey, CtEntry>(map_names::CONNTRACK)?
            .iter()
            .filter_map(Result::ok)
            .filter(|(key, _)| key.kind == CT_FORWARD)
            .collect();
        let endpoints = self.hash_map::<EndpointKey, Endpoint>(map_names::ENDPOINTS)?;
        let address = |ip: u32, port: u16| {
            std::net::SocketAddrV4::new(Ipv4Addr::from(ip.to_ne_bytes()), u16::from_be(port))
        };
        let mut rows: Vec<FlowRow> = forward
            .into_iter()
            .filter_map(|(key, entry)| {
                let name = by_set.get(&entry.backend_set)?;
                if service.is_some_and(|wanted| wanted != name) {
                    return None;
                }
                let backend_key = EndpointKey {
                    vni: entry.vni,
                    ip: entry.nat_ip,
                };
                let node = match endpoints.get(&backend_key, 0) {
                    Ok(e) if e.ifindex != 0 => "local".to_owned(),
                    Ok(e) => Ipv4Addr::from(e.node_ip.to_ne_bytes()).to_string(),
                    Err(_) => "gone".to_owned(),
                };
                let state = if entry.flags & CT_FLAG_CLOSING != 0 {
                    "closing"
                } else if entry.flags & CT_FLAG_ESTABLISHED != 0 {
                    "established"
                } else {
                    "new"
                };
                Some(FlowRow {
                    service: name.clone(),
                    protocol: match key.protocol {
                        IPPROTO_TCP => "tcp",
                        IPPROTO_UDP => "udp",
                        _ => "other",
                    }
                    .to_owned(),
                    client: address(key.saddr, key.sport).to_string(),
                    frontend: address(key.daddr, key.dport).to_string(),
                    backend: address(entry.nat_ip, entry.nat_port).to_string(),
                    node,
                    idle_secs: now.saturating_sub(entry.last_seen_ns) / 1_000_000_000,
                    state: state.to_owned(),
                    mesh: entry.flags & CT_FLAG_MESH != 0,
                })
            })
            .collect();
        rows.sort_by(|a, b| (&a.service, &a.client).cmp(&(&b.service, &b.client)));
        Ok(rows)
    }

    /// Entries of the connection table by kind (`forward`, `reply`,
    /// `return`), read from the map now.
    pub fn conntrack_counts(&mut self) -> Result<[(&'static str, u64); 3], DataplaneError> {
        let conntrack = self.hash_map::<CtKey, CtEntry>(map_names::CONNTRACK)?;
        let mut counts = [("forward", 0), ("reply", 0), ("return", 0)];
        for key in conntrack.keys().filter_map(Result::ok) {
            let slot = match key.kind {
                CT_FORWARD => 0,
                CT_REPLY => 1,
                _ => 2,
            };
            counts[slot].1 += 1;
        }
        Ok(counts)
    }

    /// Removes the tracked flows `doomed` picks; returns them.
    fn forget_flows(
        &mut self,
        doomed: impl Fn(&CtKey, &CtEntry) -> bool,
    ) -> Result<Vec<(CtKey, CtEntry)>, DataplaneError> {
        let mut conntrack = self.hash_map::<CtKey, CtEntry>(map_names::CONNTRACK)?;
        let gone: Vec<(CtKey, CtEntry)> = conntrack
            .iter()
            .filter_map(Result::ok)
            .filter(|(key, entry)| doomed(key, entry))
            .collect();
        for (key, _) in &gone {
            let _ = conntrack.remove(key);
        }
        Ok(gone)
    }

    /// Forgets the flows `doomed` picks, then gets the clients of the TCP
    /// connections among them reset at once (see [`probe`]): their next
    /// packet finds no flow, and the nudge makes them send one.
    fn end_flows(
        &mut self,
        doomed: impl Fn(&CtKey, &CtEntry) -> bool,
    ) -> Result<(), DataplaneError> {
        let gone = self.forget_flows(doomed)?;
        let nudges = self.nudges_for(&gone)?;
        if let Err(err) = probe::send(&nudges) {
            tracing::warn!(error = %err, count = nudges.len(), "could not nudge clients of removed backends; they get their reset at their next packet");
        }
        Ok(())
    }

    /// The out-of-window ACK for the client of every TCP connection among
    /// the forgotten flows `gone` (one per reply entry).
    fn nudges_for(&mut self, gone: &[(CtKey, CtEntry)]) -> Result<Vec<Nudge>, DataplaneError> {
        let replies = gone
            .iter()
            .filter(|(key, _)| key.kind == CT_REPLY && key.protocol == IPPROTO_TCP);
        let endpoints = self.hash_map::<EndpointKey, Endpoint>(map_names::ENDPOINTS)?;
        let mut nudges = Vec::new();
        for &(key, entry) in replies {
            let client = (
                Ipv4Addr::from(key.daddr.to_ne_bytes()),
                u16::from_be(key.dport),
            );
            let dialled = (
                Ipv4Addr::from(entry.nat_ip.to_ne_bytes()),
                u16::from_be(entry.nat_port),
            );
            if entry.flags & CT_FLAG_MESH != 0 {
                nudges.push(Nudge {
                    ifindex: entry.ifindex,
                    dst_mac: entry.client_mac,
                    src_mac: entry.node_mac,
                    client,
                    dialled,
                });
                continue;
            }
            let task = EndpointKey {
                vni: entry.vni,
                ip: key.daddr,
            };
            if let Ok(task) = endpoints.get(&task, 0)
                && task.ifindex != 0
            {
                nudges.push(Nudge {
                    ifindex: task.ifindex,
                    dst_mac: task.mac,
                    src_mac: gateway_mac(entry.vni),
                    client,
                    dialled,
                });
            }
        }
        Ok(nudges)
    }

    fn check_service(&mut self, spec: &BalancedService) -> Result<(), DataplaneError> {
        let invalid = |message: String| Err(DataplaneError::InvalidService(message));
        if spec.name.is_empty() || spec.name.len() > 63 {
            return invalid("a service name is 1 to 63 characters".into());
        }
        if self.services.installed.contains_key(&spec.name) {
            return invalid(format!(
                "service {:?} exists; remove it first or pick another name",
                spec.name
            ));
        }
        if spec.vip.is_none() && spec.published.is_empty() {
            return invalid("give the service a --vip, a --publish, or both".into());
        }
        let network = self.network(spec.vni)?.clone();
        if let Some(vip) = spec.vip {
            if !network.contains(vip) || vip == network.gateway {
                return invalid(format!(
                    "VIP {vip} must be an address of network {}'s subnet {}/{} other than its gateway",
                    spec.vni, network.subnet, network.prefix_len
                ));
            }
            let key = EndpointKey {
                vni: spec.vni,
                ip: be(vip),
            };
            if self
                .hash_map::<EndpointKey, Endpoint>(map_names::ENDPOINTS)?
                .get(&key, 0)
                .is_ok()
            {
                return invalid(format!(
                    "VIP {vip} is a task's address on network {}",
                    spec.vni
                ));
            }
            let taken = self
                .services
                .installed
                .values()
                .any(|s| s.spec.vni == spec.vni && s.spec.vip == Some(vip));
            if taken {
                return invalid(format!("VIP {vip} belongs to another service"));
            }
        }
        let mut seen = BTreeSet::new();
        for port in &spec.published {
            if !seen.insert((port.protocol, port.published)) {
                return invalid(format!(
                    "port {}/{} is published twice",
                    port.published, port.protocol
                ));
            }
            let owner = self.services.installed.values().find(|s| {
                s.spec
                    .published
                    .iter()
                    .any(|p| p.protocol == port.protocol && p.published == port.published)
            });
            if let Some(owner) = owner {
                return invalid(format!(
                    "port {}/{} is already published by service {:?}",
                    port.published, port.protocol, owner.spec.name
                ));
            }
        }
        self.check_backends(spec)
    }

    fn check_backends(&self, spec: &BalancedService) -> Result<(), DataplaneError> {
        let network = self.network(spec.vni)?;
        let mut seen = BTreeSet::new();
        for ip in &spec.backends {
            if !network.contains(*ip) {
                return Err(DataplaneError::InvalidService(format!(
                    "backend {ip} is not in network {}'s subnet {}/{}",
                    spec.vni, network.subnet, network.prefix_len
                )));
            }
            if !seen.insert(*ip) {
                return Err(DataplaneError::InvalidService(format!(
                    "backend {ip} is listed twice"
                )));
            }
        }
        Ok(())
    }

    /// Writes a service's backend slots and frontends. `old_len` is how many
    /// slots its full set had, so surplus ones are removed after the
    /// frontends stop counting them.
    fn write_service(
        &mut self,
        name: &str,
        old_len: u32,
        local: &BTreeSet<u32>,
    ) -> Result<(), DataplaneError> {
        let service = self.services.installed.get_mut(name).expect("installed");
        let spec = service.spec.clone();
        let local_backends: Vec<Ipv4Addr> = spec
            .backends
            .iter()
            .copied()
            .filter(|ip| local.contains(&be(*ip)))
            .collect();
        let old_local_len = service.local_backends.len() as u32;
        service.local_backends = local_backends.clone();
        let (all_set, local_set) = (service.all_set, service.local_set);

        let mut backends = self.hash_map::<BackendKey, u32>(map_names::BACKENDS)?;
        for (set, list) in [(all_set, &spec.backends), (local_set, &local_backends)] {
            for (slot, ip) in list.iter().enumerate() {
                let key = BackendKey {
                    backend_set: set,
                    slot: slot as u32,
                };
                backends
                    .insert(key, be(*ip), 0)
                    .map_err(|source| DataplaneError::MapWrite {
                        name: map_names::BACKENDS,
                        source,
                    })?;
            }
        }

        let frontend = |set: u32, count: usize, target: u16, flags: u8| Frontend {
            backend_set: set,
            backend_count: count as u32,
            vni: spec.vni,
            target_port: target.to_be(),
            flags,
            _pad: 0,
        };
        if let Some(vip) = spec.vip {
            let key = VipKey {
                vni: spec.vni,
                vip: be(vip),
            };
            self.hash_map::<VipKey, Frontend>(map_names::VIPS)?
                .insert(key, frontend(all_set, spec.backends.len(), 0, 0), 0)
                .map_err(|source| DataplaneError::MapWrite {
                    name: map_names::VIPS,
                    source,
                })?;
        }
        let mut published = self.hash_map::<PublishedKey, Frontend>(map_names::PUBLISHED)?;
        for port in &spec.published {
            let key = published_key(port);
            let value = match port.mode {
                PublishMode::Ingress => frontend(all_set, spec.backends.len(), port.target, 0),
                // No local task: the port is not ours to answer on this node.
                PublishMode::Host if local_backends.is_empty() => {
                    let _ = published.remove(&key);
                    continue;
                }
                PublishMode::Host => frontend(
                    local_set,
                    local_backends.len(),
                    port.target,
                    FRONTEND_HOST_MODE,
                ),
            };
            published
                .insert(key, value, 0)
                .map_err(|source| DataplaneError::MapWrite {
                    name: map_names::PUBLISHED,
                    source,
                })?;
        }

        let mut backends = self.hash_map::<BackendKey, u32>(map_names::BACKENDS)?;
        for (set, from, to) in [
            (all_set, spec.backends.len() as u32, old_len),
            (local_set, local_backends.len() as u32, old_local_len),
        ] {
            for slot in from..to {
                let _ = backends.remove(&BackendKey {
                    backend_set: set,
                    slot,
                });
            }
        }
        Ok(())
    }

    /// Starts a backend set's round robin at its first slot.
    fn reset_turns(&mut self, set: u32) -> Result<(), DataplaneError> {
        let name = map_names::ROUND_ROBIN;
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(DataplaneError::Missing { kind: "map", name })?;
        let mut turns: Array<&mut MapData, u32> =
            Array::try_from(map).map_err(|source| DataplaneError::Map { name, source })?;
        turns
            .set(set, 0, 0)
            .map_err(|source| DataplaneError::MapWrite { name, source })
    }

    /// Networks published ports balance onto are flagged, so the nodes with
    /// their backends remember which node took each outside connection.
    fn mark_ingress_networks(&mut self) -> Result<(), DataplaneError> {
        let ingress: BTreeSet<u32> = self
            .services
            .installed
            .values()
            .filter(|s| !s.spec.published.is_empty())
            .map(|s| s.spec.vni)
            .collect();
        let mut networks = self.hash_map::<u32, Network>(map_names::NETWORKS)?;
        let current: Vec<(u32, Network)> = networks.iter().filter_map(Result::ok).collect();
        for (vni, mut network) in current {
            let flags = if ingress.contains(&vni) {
                network.flags | NETWORK_INGRESS
            } else {
                network.flags & !NETWORK_INGRESS
            };
            if flags != network.flags {
                network.flags = flags;
                networks
                    .insert(vni, network, 0)
                    .map_err(|source| DataplaneError::MapWrite {
                        name: map_names::NETWORKS,
                        source,
                    })?;
            }
        }
        Ok(())
    }

    /// Records the state now, or within [`STATE_SAVE_INTERVAL`] when it was
    /// just written: installing thousands of services one by one must not
    /// rewrite the whole file thousands of times. [`Dataplane::flush_state`]
    /// writes what is pending.
    fn save_state_soon(&mut self) -> Result<(), DataplaneError> {
        if self
            .state_saved_at
            .is_some_and(|at| at.elapsed() < STATE_SAVE_INTERVAL)
        {
            self.state_pending = true;
            return Ok(());
        }
        self.save_state()?;
        self.state_saved_at = Some(std::time::Instant::now());
        self.state_pending = false;
        Ok(())
    }

    /// Writes state a recent change left pending.
    pub fn flush_state(&mut self) -> Result<(), DataplaneError> {
        if !self.state_pending {
            return Ok(());
        }
        self.state_saved_at = None;
        self.save_state_soon()
    }

    /// Re-installs the services a previous run recorded.
    pub(super) fn restore_services(
        &mut self,
        specs: Vec<BalancedService>,
    ) -> Result<(), DataplaneError> {
        for spec in specs {
            let name = spec.name.clone();
            if let Err(err) = self.create_service(spec) {
                tracing::warn!(service = %name, error = %err, "recorded service not restored");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_specs_parse_like_docker() {
        let short: PublishedPort = "8080:80".parse().unwrap();
        assert_eq!(
            short,
            PublishedPort {
                protocol: Protocol::Tcp,
                published: 8080,
                target: 80,
                mode: PublishMode::Ingress
            }
        );
        let udp: PublishedPort = "5353:53/udp".parse().unwrap();
        assert_eq!(udp.protocol, Protocol::Udp);
        let long: PublishedPort = "mode=host,published=9000,target=90,protocol=udp"
            .parse()
            .unwrap();
        assert_eq!(
            long,
            PublishedPort {
                protocol: Protocol::Udp,
                published: 9000,
                target: 90,
                mode: PublishMode::Host
            }
        );
        for bad in [
            "8080",
            "0:80",
            "8080:80/dccp",
            "published=1",
            "mode=x,published=1,target=2",
            "a:b",
        ] {
            assert!(bad.parse::<PublishedPort>().is_err(), "{bad} parsed");
        }
    }
}
