//! The overlay's user-space half: the VXLAN device, task veths, and the maps
//! that tell the programs where every overlay address lives.

use std::{collections::HashMap, fs::File, net::Ipv4Addr, path::PathBuf};

use aya::{
    maps::{Array, MapData},
    programs::tc::SchedClassifierLinkId,
};
use serde::{Deserialize, Serialize};
use swarm_common::{
    map_names,
    overlay::{Endpoint, EndpointKey, Network, NodeConfig, Port},
    program_names,
};
use tracing::{info, warn};

use super::{
    BalancedService, Dataplane, DataplaneError, LocalDelivery, LocalEndpoint, Tunnel, netlink,
};

/// VXLAN overhead: outer Ethernet, IPv4, UDP and VXLAN headers.
pub const VXLAN_OVERHEAD: u32 = 50;
/// The interface name a task sees, like Docker's.
pub const TASK_IFACE: &str = "eth0";
/// The node's collect-metadata VXLAN device.
pub const TUNNEL_IFACE: &str = "swarm-vxlan";

/// An overlay network as the data plane needs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayNetwork {
    pub vni: u32,
    pub subnet: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    /// MTU inside tasks: the underlay's minus [`VXLAN_OVERHEAD`].
    pub mtu: u32,
}

impl OverlayNetwork {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix_len))
            .unwrap_or(0);
        u32::from(ip) & mask == u32::from(self.subnet) & mask
    }
}

/// A task's attachment on this node: its network namespace and address.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LocalEndpointSpec {
    /// Unique on this node (the task ID later); names the host-side veth.
    pub id: String,
    pub vni: u32,
    /// The task's network namespace, e.g. /run/netns/swarm-<task id>.
    pub netns: PathBuf,
    pub ip: Ipv4Addr,
    /// The interface's name in the task (default `eth0`): a task on several
    /// networks has one per network.
    #[serde(default)]
    pub iface: Option<String>,
    /// Whether the task's default route goes through this network's
    /// gateway (only one network can have it).
    #[serde(default = "default_route")]
    pub default_route: bool,
}

fn default_route() -> bool {
    true
}

/// An endpoint on another node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RemoteEndpointSpec {
    pub vni: u32,
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
    /// The other node's underlay address.
    pub node: Ipv4Addr,
}

/// One row of `swarm dataplane endpoints`: what the endpoint map holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRow {
    pub vni: u32,
    pub ip: Ipv4Addr,
    pub mac: String,
    /// `local` or `remote`.
    pub location: String,
    /// The host-side veth (local) or the node's underlay address (remote).
    pub via: String,
}

/// What survives a restart in the data dir: the maps (pinned) hold the rest.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PersistedOverlay {
    pub networks: Vec<OverlayNetwork>,
    pub endpoints: Vec<PersistedEndpoint>,
    #[serde(default)]
    pub services: Vec<BalancedService>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PersistedEndpoint {
    pub id: String,
    pub vni: u32,
    pub ip: Ipv4Addr,
    pub host_iface: String,
}

impl Dataplane {
    /// Creates the node's collect-metadata VXLAN device on `data_path_port`
    /// and attaches the decapsulation-side program to it; frames for local
    /// tasks are handed over as `delivery` says. A device a crashed daemon
    /// left behind is replaced.
    pub fn start_overlay(
        &mut self,
        data_path_port: u16,
        delivery: LocalDelivery,
        node_ip: Ipv4Addr,
    ) -> Result<(), DataplaneError> {
        let netlink = netlink::Netlink::open()?;
        let kept = self.read_state()?;
        let ifindex = match netlink.link_index(TUNNEL_IFACE)? {
            // Left by a previous run for its tasks: keep it, and their flows.
            Some(existing) if !kept.endpoints.is_empty() => existing,
            Some(stale) => {
                netlink.delete_link(stale)?;
                netlink.add_external_vxlan(TUNNEL_IFACE, data_path_port)?
            }
            None => netlink.add_external_vxlan(TUNNEL_IFACE, data_path_port)?,
        };
        let link = self.attach_tc(program_names::VXLAN_INGRESS, TUNNEL_IFACE)?;
        let name = map_names::NODE_CONFIG;
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(DataplaneError::Missing { kind: "map", name })?;
        let mut config: Array<&mut MapData, NodeConfig> =
            Array::try_from(map).map_err(|source| DataplaneError::Map { name, source })?;
        config
            .set(
                0,
                NodeConfig {
                    vxlan_ifindex: ifindex,
                    local_delivery: delivery.map_value(),
                    node_ip: u32::from_ne_bytes(node_ip.octets()),
                    underlay_ifindex: self.underlay_ifindex,
                },
                0,
            )
            .map_err(|source| DataplaneError::MapWrite { name, source })?;
        self.tunnel = Some(Tunnel { ifindex, link });
        info!(
            device = TUNNEL_IFACE,
            ifindex,
            port = data_path_port,
            ?delivery,
            "overlay started"
        );
        self.adopt(&netlink, kept)
    }

    /// Takes over what the previous run left: its networks, and the task
    /// endpoints whose veths still exist (the others are forgotten).
    fn adopt(
        &mut self,
        netlink: &netlink::Netlink,
        kept: PersistedOverlay,
    ) -> Result<(), DataplaneError> {
        for network in kept.networks {
            self.serve_network(network)?;
        }
        for endpoint in kept.endpoints {
            let key = EndpointKey {
                vni: endpoint.vni,
                ip: u32::from_ne_bytes(endpoint.ip.octets()),
            };
            let (Some(ifindex), Ok(network)) = (
                netlink.link_index(&endpoint.host_iface)?,
                self.network(endpoint.vni).cloned(),
            ) else {
                let _ = self
                    .hash_map::<EndpointKey, Endpoint>(map_names::ENDPOINTS)?
                    .remove(&key);
                warn!(id = %endpoint.id, "endpoint's veth is gone; forgotten");
                continue;
            };
            self.write_local_entries(key, ifindex, &network, task_mac(endpoint.ip))?;
            let link = self.attach_tc(program_names::TASK_INGRESS, &endpoint.host_iface)?;
            info!(id = %endpoint.id, iface = %endpoint.host_iface, "endpoint adopted");
            self.local.insert(
                endpoint.id,
                LocalEndpoint {
                    vni: endpoint.vni,
                    ip: endpoint.ip,
                    host_iface: endpoint.host_iface,
                    ifindex,
                    link,
                },
            );
        }
        self.restore_services(kept.services)?;
        self.save_state()
    }

    /// The port and endpoint entries of a local endpoint.
    fn write_local_entries(
        &mut self,
        key: EndpointKey,
        ifindex: u32,
        network: &OverlayNetwork,
        mac: [u8; 6],
    ) -> Result<(), DataplaneError> {
        let port = Port {
            vni: network.vni,
            gateway_ip: u32::from_ne_bytes(network.gateway.octets()),
            gateway_mac: gateway_mac(network.vni),
            _pad: [0; 2],
        };
        self.hash_map::<u32, Port>(map_names::PORTS)?
            .insert(ifindex, port, 0)
            .map_err(|source| DataplaneError::MapWrite {
                name: map_names::PORTS,
                source,
            })?;
        let endpoint = Endpoint {
            mac,
            _pad: [0; 2],
            ifindex,
            node_ip: 0,
        };
        self.hash_map::<EndpointKey, Endpoint>(map_names::ENDPOINTS)?
            .insert(key, endpoint, 0)
            .map_err(|source| DataplaneError::MapWrite {
                name: map_names::ENDPOINTS,
                source,
            })
    }

    fn read_state(&self) -> Result<PersistedOverlay, DataplaneError> {
        let Some(path) = &self.state_file else {
            return Ok(PersistedOverlay::default());
        };
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| DataplaneError::State {
                path: path.clone(),
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(PersistedOverlay::default()),
            Err(e) => Err(DataplaneError::State {
                path: path.clone(),
                message: e.to_string(),
            }),
        }
    }

    /// Records networks and local endpoints so a restart can adopt them.
    pub(super) fn save_state(&self) -> Result<(), DataplaneError> {
        let Some(path) = &self.state_file else {
            return Ok(());
        };
        let mut networks: Vec<OverlayNetwork> = self.networks.values().cloned().collect();
        networks.sort_by_key(|n| n.vni);
        let mut endpoints: Vec<PersistedEndpoint> = self
            .local
            .iter()
            .map(|(id, e)| PersistedEndpoint {
                id: id.clone(),
                vni: e.vni,
                ip: e.ip,
                host_iface: e.host_iface.clone(),
            })
            .collect();
        endpoints.sort_by(|a, b| a.id.cmp(&b.id));
        let state = PersistedOverlay {
            networks,
            endpoints,
            services: self.services.specs(),
        };
        let bytes = serde_json::to_vec_pretty(&state).expect("plain data serializes");
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bytes)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| DataplaneError::State {
                path: path.clone(),
                message: e.to_string(),
            })
    }

    pub(super) fn remove_state(&self) -> Result<(), DataplaneError> {
        match &self.state_file {
            Some(path) => match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(DataplaneError::State {
                    path: path.clone(),
                    message: e.to_string(),
                }),
                _ => Ok(()),
            },
            None => Ok(()),
        }
    }

    /// Serves overlay network `network` on this node.
    pub fn create_network(&mut self, network: OverlayNetwork) -> Result<(), DataplaneError> {
        self.serve_network(network)?;
        self.save_state()
    }

    /// Checks `network` and puts it in the map, without recording the state.
    fn serve_network(&mut self, network: OverlayNetwork) -> Result<(), DataplaneError> {
        if self.tunnel.is_none() {
            return Err(DataplaneError::OverlayNotStarted);
        }
        if !(1..1 << 24).contains(&network.vni) {
            return Err(DataplaneError::InvalidNetwork(format!(
                "VNI {} is outside 1-16777215",
                network.vni
            )));
        }
        if network.prefix_len == 0 || network.prefix_len > 30 {
            return Err(DataplaneError::InvalidNetwork(format!(
                "prefix length /{} must be between /1 and /30",
                network.prefix_len
            )));
        }
        if !network.contains(network.gateway) {
            return Err(DataplaneError::InvalidNetwork(format!(
                "gateway {} is outside {}/{}",
                network.gateway, network.subnet, network.prefix_len
            )));
        }
        if !(576..=9000).contains(&network.mtu) {
            return Err(DataplaneError::InvalidNetwork(format!(
                "MTU {} is outside 576-9000",
                network.mtu
            )));
        }
        let value = Network {
            gateway_ip: u32::from_ne_bytes(network.gateway.octets()),
            gateway_mac: gateway_mac(network.vni),
            flags: 0,
            _pad: 0,
        };
        let name = map_names::NETWORKS;
        self.hash_map::<u32, Network>(name)?
            .insert(network.vni, value, 0)
            .map_err(|source| DataplaneError::MapWrite { name, source })?;
        info!(vni = network.vni, subnet = %network.subnet, prefix_len = network.prefix_len, "network created");
        self.networks.insert(network.vni, network);
        Ok(())
    }

    /// Stops serving network `vni`: its remote endpoints go too.
    pub fn remove_network(&mut self, vni: u32) -> Result<(), DataplaneError> {
        if let Some(service) = self.services.specs().iter().find(|s| s.vni == vni) {
            return Err(DataplaneError::NetworkInUse {
                vni,
                ids: format!("service {}", service.name),
            });
        }
        if !self.networks.contains_key(&vni) {
            return Err(DataplaneError::NoSuchNetwork(vni));
        }
        let users: Vec<&str> = self
            .local
            .iter()
            .filter(|(_, e)| e.vni == vni)
            .map(|(id, _)| id.as_str())
            .collect();
        if !users.is_empty() {
            return Err(DataplaneError::NetworkInUse {
                vni,
                ids: users.join(", "),
            });
        }
        let name = map_names::ENDPOINTS;
        let mut endpoints = self.hash_map::<EndpointKey, Endpoint>(name)?;
        let keys: Vec<EndpointKey> = endpoints
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.vni == vni)
            .collect();
        for key in keys {
            let _ = endpoints.remove(&key);
        }
        let _ = self
            .hash_map::<u32, Network>(map_names::NETWORKS)?
            .remove(&vni);
        self.networks.remove(&vni);
        info!(vni, "network removed");
        self.save_state()
    }

    pub(super) fn network(&self, vni: u32) -> Result<&OverlayNetwork, DataplaneError> {
        self.networks
            .get(&vni)
            .ok_or(DataplaneError::NoSuchNetwork(vni))
    }

    fn check_address(&mut self, vni: u32, ip: Ipv4Addr) -> Result<EndpointKey, DataplaneError> {
        let network = self.network(vni)?;
        if !network.contains(ip) || ip == network.gateway {
            return Err(DataplaneError::OutsideSubnet {
                ip,
                vni,
                subnet: network.subnet,
                prefix_len: network.prefix_len,
            });
        }
        let key = EndpointKey {
            vni,
            ip: u32::from_ne_bytes(ip.octets()),
        };
        if self
            .hash_map::<EndpointKey, Endpoint>(map_names::ENDPOINTS)?
            .get(&key, 0)
            .is_ok()
        {
            return Err(DataplaneError::AddressInUse { ip, vni });
        }
        Ok(key)
    }

    /// Connects a task's network namespace to network `spec.vni`: a veth pair
    /// whose task end becomes `eth0` (address, MTU, default route via the
    /// gateway) and whose host end carries the task-side program.
    pub fn attach_endpoint(
        &mut self,
        spec: &LocalEndpointSpec,
    ) -> Result<EndpointRow, DataplaneError> {
        if self.local.contains_key(&spec.id) {
            return Err(DataplaneError::EndpointExists(spec.id.clone()));
        }
        let key = self.check_address(spec.vni, spec.ip)?;
        let network = self.network(spec.vni)?.clone();
        let netns = File::open(&spec.netns).map_err(|source| DataplaneError::OpenNetns {
            path: spec.netns.clone(),
            source,
        })?;
        let (host_iface, peer_iface) = veth_names(&spec.id);
        let mac = task_mac(spec.ip);

        let netlink = netlink::Netlink::open()?;
        netlink.add_veth(&host_iface, &peer_iface, network.mtu)?;
        let wired = (|| -> Result<(u32, SchedClassifierLinkId), DataplaneError> {
            let host_index = netlink.require_link(&host_iface)?;
            // Maps first: the task's first frames (ARP, IPv6 announcements)
            // then find their port.
            self.write_local_entries(key, host_index, &network, mac)?;
            let link = self.attach_tc(program_names::TASK_INGRESS, &host_iface)?;
            let peer_index = netlink.require_link(&peer_iface)?;
            netlink.move_to_netns(peer_index, &netns)?;
            let (ip, prefix, gateway) = (spec.ip, network.prefix_len, network.gateway);
            let task_iface = spec.iface.clone().unwrap_or_else(|| TASK_IFACE.to_owned());
            let with_route = spec.default_route;
            netlink::in_netns(&spec.netns, move |task| {
                let index = task.require_link(&peer_iface)?;
                task.rename_and_up(index, &task_iface, mac)?;
                if let Some(lo) = task.link_index("lo")? {
                    task.set_up(lo)?;
                }
                task.add_address(index, ip, prefix)?;
                if with_route {
                    task.add_default_route(gateway)?;
                }
                Ok(())
            })?;
            netlink.set_up(host_index)?;
            Ok((host_index, link))
        })();
        let (ifindex, link) = match wired {
            Ok(wired) => wired,
            Err(err) => {
                if let Ok(Some(index)) = netlink.link_index(&host_iface) {
                    let _ = self.hash_map::<u32, Port>(map_names::PORTS)?.remove(&index);
                    // Deleting the host end removes the pair, wherever the peer went.
                    let _ = netlink.delete_link(index);
                }
                let _ = self
                    .hash_map::<EndpointKey, Endpoint>(map_names::ENDPOINTS)?
                    .remove(&key);
                return Err(err);
            }
        };
        info!(id = %spec.id, vni = spec.vni, ip = %spec.ip, iface = %host_iface, "endpoint attached");
        self.local.insert(
            spec.id.clone(),
            LocalEndpoint {
                vni: spec.vni,
                ip: spec.ip,
                host_iface: host_iface.clone(),
                ifindex,
                link,
            },
        );
        self.refresh_local_backends()?;
        self.save_state()?;
        Ok(EndpointRow {
            vni: spec.vni,
            ip: spec.ip,
            mac: format_mac(mac),
            location: "local".into(),
            via: host_iface,
        })
    }

    /// Disconnects a task: its address leaves the maps first (traffic stops at
    /// once), then the program and the veth pair go.
    pub fn detach_endpoint(&mut self, id: &str) -> Result<(), DataplaneError> {
        let endpoint = self
            .local
            .remove(id)
            .ok_or_else(|| DataplaneError::NoSuchEndpoint(id.to_owned()))?;
        let key = EndpointKey {
            vni: endpoint.vni,
            ip: u32::from_ne_bytes(endpoint.ip.octets()),
        };
        let _ = self
            .hash_map::<EndpointKey, Endpoint>(map_names::ENDPOINTS)?
            .remove(&key);
        let _ = self
            .hash_map::<u32, Port>(map_names::PORTS)?
            .remove(&endpoint.ifindex);
        let _ = self
            .classifier(program_names::TASK_INGRESS)?
            .detach(endpoint.link);
        let netlink = netlink::Netlink::open()?;
        if let Some(index) = netlink.link_index(&endpoint.host_iface)? {
            netlink.delete_link(index)?;
        }
        info!(id, vni = endpoint.vni, ip = %endpoint.ip, "endpoint detached");
        self.refresh_local_backends()?;
        self.save_state()
    }

    /// Teaches this node where an endpoint on another node is.
    pub fn add_remote_endpoint(&mut self, spec: &RemoteEndpointSpec) -> Result<(), DataplaneError> {
        let key = self.check_address(spec.vni, spec.ip)?;
        let endpoint = Endpoint {
            mac: spec.mac,
            _pad: [0; 2],
            ifindex: 0,
            node_ip: u32::from_ne_bytes(spec.node.octets()),
        };
        self.hash_map::<EndpointKey, Endpoint>(map_names::ENDPOINTS)?
            .insert(key, endpoint, 0)
            .map_err(|source| DataplaneError::MapWrite {
                name: map_names::ENDPOINTS,
                source,
            })
    }

    pub fn remove_remote_endpoint(&mut self, vni: u32, ip: Ipv4Addr) -> Result<(), DataplaneError> {
        let key = EndpointKey {
            vni,
            ip: u32::from_ne_bytes(ip.octets()),
        };
        let mut endpoints = self.hash_map::<EndpointKey, Endpoint>(map_names::ENDPOINTS)?;
        match endpoints.get(&key, 0) {
            Ok(endpoint) if endpoint.ifindex == 0 => {
                endpoints
                    .remove(&key)
                    .map_err(|source| DataplaneError::MapWrite {
                        name: map_names::ENDPOINTS,
                        source,
                    })
            }
            _ => Err(DataplaneError::NoSuchRemote { vni, ip }),
        }
    }

    /// The overlay networks this node serves.
    pub fn networks(&self) -> Vec<OverlayNetwork> {
        self.networks.values().cloned().collect()
    }

    /// The IDs of the task endpoints attached on this node.
    pub fn local_endpoint_ids(&self) -> Vec<String> {
        self.local.keys().cloned().collect()
    }

    /// Every endpoint the kernel programs know, sorted by network and address.
    pub fn endpoints(&mut self) -> Result<Vec<EndpointRow>, DataplaneError> {
        let names: HashMap<u32, String> = self
            .local
            .values()
            .map(|e| (e.ifindex, e.host_iface.clone()))
            .collect();
        let endpoints = self.hash_map::<EndpointKey, Endpoint>(map_names::ENDPOINTS)?;
        let mut rows: Vec<EndpointRow> = endpoints
            .iter()
            .filter_map(Result::ok)
            .map(|(key, endpoint)| {
                let ip = Ipv4Addr::from(key.ip.to_ne_bytes());
                let (location, via) = if endpoint.ifindex != 0 {
                    let name = names
                        .get(&endpoint.ifindex)
                        .cloned()
                        .unwrap_or_else(|| format!("ifindex {}", endpoint.ifindex));
                    ("local", name)
                } else {
                    (
                        "remote",
                        Ipv4Addr::from(endpoint.node_ip.to_ne_bytes()).to_string(),
                    )
                };
                EndpointRow {
                    vni: key.vni,
                    ip,
                    mac: format_mac(endpoint.mac),
                    location: location.into(),
                    via,
                }
            })
            .collect();
        rows.sort_by_key(|row| (row.vni, row.ip));
        Ok(rows)
    }
}

/// The gateway's MAC on network `vni`: locally administered, fixed per VNI,
/// so every node answers ARP for the gateway alike.
pub fn gateway_mac(vni: u32) -> [u8; 6] {
    let [_, a, b, c] = vni.to_be_bytes();
    [0x02, 0x73, 0x77, a, b, c]
}

/// A task's MAC from its address, as Docker does (02:42 + the IPv4 address).
pub fn task_mac(ip: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = ip.octets();
    [0x02, 0x42, a, b, c, d]
}

pub fn format_mac(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// What [`remove_leftovers`] found and removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Leftovers {
    /// Host-side task veths and the VXLAN device.
    pub links: Vec<String>,
    /// The pinned maps' directory, when it was there.
    pub pin_dir: Option<PathBuf>,
}

/// Removes what a daemon that died without a clean stop left in this
/// network namespace and on bpffs for `config`'s node: the host side of
/// its task veths (those of `task_ids` and those its state file names),
/// its VXLAN device, its state file and its pinned maps. Its programs
/// went with its process: their links are not pinned.
pub fn remove_leftovers(
    config: &super::DataplaneConfig,
    task_ids: &[String],
) -> Result<Leftovers, DataplaneError> {
    let state_error = |path: &PathBuf, e: &dyn std::fmt::Display| DataplaneError::State {
        path: path.clone(),
        message: e.to_string(),
    };
    let recorded: PersistedOverlay = match &config.state_file {
        Some(path) => match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| state_error(path, &e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => PersistedOverlay::default(),
            Err(e) => return Err(state_error(path, &e)),
        },
        None => PersistedOverlay::default(),
    };
    let pinned = config.pin_dir.exists();
    let mut leftovers = Leftovers::default();
    let netlink = netlink::Netlink::open()?;
    let mut names: Vec<String> = task_ids.iter().map(|id| veth_names(id).0).collect();
    names.extend(recorded.endpoints.into_iter().map(|e| e.host_iface));
    // The VXLAN device is this node's only when something of it is left:
    // its pins or its state.
    let recorded_anything = config.state_file.as_ref().is_some_and(|p| p.exists());
    if pinned || recorded_anything {
        names.push(TUNNEL_IFACE.to_owned());
    }
    names.sort();
    names.dedup();
    for name in names {
        if let Some(index) = netlink.link_index(&name)? {
            netlink.delete_link(index)?;
            leftovers.links.push(name);
        }
    }
    if let Some(path) = &config.state_file {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(state_error(path, &e));
            }
            _ => {}
        }
    }
    if pinned {
        super::bpffs::remove_pin_dir(&config.pin_dir)?;
        leftovers.pin_dir = Some(config.pin_dir.clone());
    }
    Ok(leftovers)
}

/// Host-side and temporary peer names for endpoint `id`: short, stable, unique.
pub fn veth_names(id: &str) -> (String, String) {
    // FNV-1a: stable across runs, unlike std's hasher.
    let hash = id.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    (format!("swh{hash:08x}"), format!("swp{hash:08x}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_and_names() {
        assert_eq!(format_mac(gateway_mac(4096)), "02:73:77:00:10:00");
        assert_eq!(
            format_mac(task_mac(Ipv4Addr::new(10, 0, 1, 2))),
            "02:42:0a:00:01:02"
        );
        assert_eq!(
            parse_mac("02:42:0a:00:01:02"),
            Some(task_mac(Ipv4Addr::new(10, 0, 1, 2)))
        );
        assert_eq!(parse_mac("02:42:0a:00:01"), None);
        assert_eq!(parse_mac("02:42:0a:00:01:02:03"), None);
        let (host, peer) = veth_names("task-1");
        assert!(host.len() <= 15 && peer.len() <= 15 && host != peer);
        assert_eq!(veth_names("task-1"), (host, peer));
    }

    #[test]
    fn subnet_membership() {
        let net = OverlayNetwork {
            vni: 4096,
            subnet: Ipv4Addr::new(10, 0, 1, 0),
            prefix_len: 24,
            gateway: Ipv4Addr::new(10, 0, 1, 1),
            mtu: 1450,
        };
        assert!(net.contains(Ipv4Addr::new(10, 0, 1, 200)));
        assert!(!net.contains(Ipv4Addr::new(10, 0, 2, 1)));
    }
}
