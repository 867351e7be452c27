//! What a manager sends an agent: the tasks assigned to its node, and what
//! the node's data plane needs to reach every other task (networks, remote
//! endpoints, service VIPs, backends and published ports). Built from the
//! store; the agent reconciles its node to it.

use std::{collections::BTreeMap, net::IpAddr, net::Ipv4Addr};

use serde::{Deserialize, Serialize};

use super::{
    services::{EndpointMode, ServiceRecord, TaskRecord, TaskState},
    state::{ClusterState, LogRequest},
};
use crate::{
    dataplane::{self, OverlayNetwork, PublishedPort},
    gossip::GossipConfig,
    runtime::{Resources, TaskSpec},
};

/// One node's share of the store, at store version `version`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    pub version: u64,
    pub tasks: Vec<AssignedTask>,
    pub networks: Vec<OverlayNetwork>,
    /// Addresses of tasks on other nodes.
    pub remote_endpoints: Vec<RemoteEndpoint>,
    pub services: Vec<dataplane::ServiceSpec>,
    /// `service logs` requests for tasks of this node.
    #[serde(default)]
    pub log_requests: Vec<LogRequest>,
    /// The names tasks resolve, per network.
    #[serde(default)]
    pub dns: Vec<DnsRecord>,
    /// How to gossip with the other nodes; `None` in a swarm from before
    /// gossip.
    #[serde(default)]
    pub gossip: Option<GossipConfig>,
}

/// A name the tasks' resolver answers on network `vni`: a service (its VIP,
/// or its tasks' addresses with `--endpoint-mode dnsrr`), `tasks.<service>`
/// (its running tasks' addresses), or a task's name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DnsRecord {
    pub vni: u32,
    pub name: String,
    pub addresses: Vec<Ipv4Addr>,
}

/// The names a task's address on one network answers to. The task's node
/// gossips them with the endpoint, so every node's resolver learns of the
/// task even while the managers are out of reach.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EndpointNames {
    pub service: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// The service's VIP on this network; none with `--endpoint-mode dnsrr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip: Option<Ipv4Addr>,
    /// `<service>.<slot>.<task id>`, as the resolver answers it.
    pub task: String,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RemoteEndpoint {
    pub vni: u32,
    pub ip: Ipv4Addr,
    pub node: Ipv4Addr,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AssignedTask {
    pub id: String,
    pub service_id: String,
    /// `<service>.<slot>` (or `<service>.<node id>` for global services).
    pub name: String,
    pub desired: TaskState,
    /// The state the managers last recorded.
    pub state: TaskState,
    pub spec: TaskSpec,
    /// The task's address on each network: (VNI, address), the first one
    /// carrying the default route.
    pub addresses: Vec<(u32, Ipv4Addr)>,
    pub stop_grace_millis: u64,
    /// What its address on each network (but `ingress`) answers to.
    #[serde(default)]
    pub names: Vec<(u32, EndpointNames)>,
}

/// Dataplane service names the agent manages contain this; others (made
/// by hand with `swarm dataplane service create`) are left alone.
pub const SERVICE_NAME_MARK: char = '@';

impl NodeView {
    pub fn build(state: &ClusterState, node_id: &str, version: u64) -> NodeView {
        let vni_of = |network: &str| state.networks.get(network).map(|n| n.vni);
        let node_ip = |node: &str| {
            state.nodes.get(node).and_then(|n| match n.addr.ip() {
                IpAddr::V4(ip) => Some(ip),
                IpAddr::V6(_) => None,
            })
        };
        let mut tasks = Vec::new();
        let mut remote_endpoints = Vec::new();
        for task in state.tasks.values() {
            let Some(node) = &task.node_id else { continue };
            let ordered = ordered_addresses(state, task.service_id.as_str(), &task.addresses);
            if node == node_id {
                let service = state.services.get(&task.service_id);
                let service_name =
                    service.map_or(task.spec.name.as_str(), |s| s.spec.name.as_str());
                let name = task.name(service_name);
                let spec = &task.spec;
                tasks.push(AssignedTask {
                    id: task.id.clone(),
                    service_id: task.service_id.clone(),
                    desired: task.desired,
                    state: task.status.state,
                    spec: TaskSpec {
                        task_id: task.id.clone(),
                        image: spec.image.clone(),
                        args: spec.args.clone(),
                        env: spec.env.clone(),
                        hostname: spec
                            .hostname
                            .clone()
                            .unwrap_or_else(|| task.id.chars().take(12).collect()),
                        hosts: Vec::new(),
                        resources: Resources {
                            nano_cpus: spec.limits.nano_cpus,
                            memory_bytes: spec.limits.memory_bytes,
                        },
                        healthcheck: spec.healthcheck.clone(),
                    },
                    addresses: ordered
                        .iter()
                        .filter_map(|(network, ip)| Some((vni_of(network)?, **ip)))
                        .collect(),
                    stop_grace_millis: spec.stop_grace_millis,
                    name,
                    names: service
                        .map(|service| endpoint_names(state, service, task))
                        .unwrap_or_default(),
                });
                continue;
            }
            if !task.holds_addresses() {
                continue;
            }
            let Some(node_ip) = node_ip(node) else {
                continue;
            };
            for (network, ip) in &task.addresses {
                if let Some(vni) = vni_of(network) {
                    remote_endpoints.push(RemoteEndpoint {
                        vni,
                        ip: *ip,
                        node: node_ip,
                    });
                }
            }
        }
        for task in &mut tasks {
            task.spec.hosts = task
                .addresses
                .iter()
                .map(|(_, ip)| (*ip, task.spec.hostname.clone()))
                .collect();
        }
        let networks = state
            .networks
            .values()
            .map(|n| OverlayNetwork {
                vni: n.vni,
                subnet: n.subnet.0,
                prefix_len: n.subnet.1,
                gateway: n.gateway,
                mtu: n.mtu,
            })
            .collect();
        let services = state
            .services
            .values()
            .flat_map(|service| dataplane_services(state, service))
            .collect();
        remote_endpoints.sort();
        let log_requests = state
            .log_requests
            .values()
            .filter_map(|request| {
                let mine: Vec<String> = request
                    .tasks
                    .iter()
                    .filter(|id| tasks.iter().any(|t| &t.id == *id))
                    .cloned()
                    .collect();
                (!mine.is_empty()).then(|| LogRequest {
                    tasks: mine,
                    ..request.clone()
                })
            })
            .collect();
        let mut dns: Vec<DnsRecord> = state
            .services
            .values()
            .flat_map(|service| dns_records(state, service))
            .collect();
        dns.sort();
        NodeView {
            version,
            tasks,
            networks,
            remote_endpoints,
            services,
            log_requests,
            dns,
            gossip: (!state.gossip_key.is_empty()).then(|| GossipConfig {
                cluster_id: state.cluster_id.clone(),
                key: state.gossip_key.clone(),
                previous_key: state.previous_gossip_key.clone(),
                peers: state
                    .nodes
                    .values()
                    .filter_map(|n| node_ip(&n.id))
                    .collect(),
            }),
        }
    }
}

/// A task's addresses with the ingress network's (which carries the
/// default route, for replies to mesh clients) first.
fn ordered_addresses<'a>(
    state: &ClusterState,
    service_id: &str,
    addresses: &'a BTreeMap<String, Ipv4Addr>,
) -> Vec<(&'a String, &'a Ipv4Addr)> {
    let order = state
        .services
        .get(service_id)
        .map(|s| s.task_networks(state))
        .unwrap_or_default();
    let mut ordered: Vec<_> = addresses.iter().collect();
    ordered.sort_by_key(|(network, _)| {
        order
            .iter()
            .position(|n| n == *network)
            .unwrap_or(usize::MAX)
    });
    ordered
}

/// The data-plane services one swarm service needs: one per network it is
/// on, balanced over its running tasks there; the ingress one carries the
/// published ports.
/// `service`'s names on each of its networks but `ingress` (which, as in
/// Docker, carries no names).
fn dns_records(state: &ClusterState, service: &ServiceRecord) -> Vec<DnsRecord> {
    let mut records = Vec::new();
    for network_id in &service.spec.networks {
        let Some(network) = state.networks.get(network_id).filter(|n| !n.ingress) else {
            continue;
        };
        let mut running: Vec<(String, Ipv4Addr)> = state
            .tasks
            .values()
            .filter(|t| t.service_id == service.id && t.is_running())
            .filter_map(|t| {
                let ip = *t.addresses.get(network_id)?;
                Some((task_dns_name(service, t), ip))
            })
            .collect();
        running.sort();
        let addresses: Vec<Ipv4Addr> = running.iter().map(|(_, ip)| *ip).collect();
        let service_addresses = match service.spec.endpoint_mode {
            EndpointMode::Vip => service.vips.get(network_id).map(|vip| vec![*vip]),
            EndpointMode::Dnsrr => Some(addresses.clone()),
        };
        let record = |name: String, addresses: Vec<Ipv4Addr>| DnsRecord {
            vni: network.vni,
            name: name.to_ascii_lowercase(),
            addresses,
        };
        if let Some(service_addresses) = service_addresses {
            for alias in service.spec.aliases.get(network_id).into_iter().flatten() {
                records.push(record(alias.clone(), service_addresses.clone()));
            }
            records.push(record(service.spec.name.clone(), service_addresses));
        }
        records.push(record(format!("tasks.{}", service.spec.name), addresses));
        for (task_name, ip) in running {
            records.push(record(task_name, vec![ip]));
        }
    }
    records
}

/// A task's own name in DNS: `<service>.<slot>.<task id>`.
fn task_dns_name(service: &ServiceRecord, task: &TaskRecord) -> String {
    format!("{}.{}", task.name(&service.spec.name), task.id).to_ascii_lowercase()
}

/// What `task`'s address on each of `service`'s networks but `ingress`
/// answers to.
fn endpoint_names(
    state: &ClusterState,
    service: &ServiceRecord,
    task: &TaskRecord,
) -> Vec<(u32, EndpointNames)> {
    service
        .spec
        .networks
        .iter()
        .filter(|network_id| task.addresses.contains_key(*network_id))
        .filter_map(|network_id| {
            let network = state.networks.get(network_id).filter(|n| !n.ingress)?;
            let lower = |name: &String| name.to_ascii_lowercase();
            Some((
                network.vni,
                EndpointNames {
                    service: lower(&service.spec.name),
                    aliases: service
                        .spec
                        .aliases
                        .get(network_id)
                        .into_iter()
                        .flatten()
                        .map(lower)
                        .collect(),
                    vip: match service.spec.endpoint_mode {
                        EndpointMode::Vip => service.vips.get(network_id).copied(),
                        EndpointMode::Dnsrr => None,
                    },
                    task: task_dns_name(service, task),
                },
            ))
        })
        .collect()
}

fn dataplane_services(
    state: &ClusterState,
    service: &ServiceRecord,
) -> Vec<dataplane::ServiceSpec> {
    let networks = service.task_networks(state);
    networks
        .iter()
        .filter_map(|network_id| {
            let network = state.networks.get(network_id)?;
            let mut backends: Vec<Ipv4Addr> = state
                .tasks
                .values()
                .filter(|t| t.service_id == service.id && t.is_running())
                .filter_map(|t| t.addresses.get(network_id).copied())
                .collect();
            backends.sort();
            let published = if network.ingress {
                service
                    .ports
                    .iter()
                    .filter_map(|p| {
                        Some(PublishedPort {
                            protocol: p.protocol,
                            published: p.published?,
                            target: p.target,
                            mode: p.mode,
                        })
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let vip = match service.spec.endpoint_mode {
                EndpointMode::Vip => service.vips.get(network_id).copied(),
                EndpointMode::Dnsrr => None,
            };
            // A network with neither a VIP nor published ports needs no
            // balancing here (DNS round robin is issue 7's resolver).
            if vip.is_none() && published.is_empty() {
                return None;
            }
            Some(dataplane::ServiceSpec {
                name: format!("{}{SERVICE_NAME_MARK}{}", service.spec.name, network.name),
                vni: network.vni,
                vip,
                backends,
                published,
            })
        })
        .collect()
}
