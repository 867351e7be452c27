//! Building an agent's assignments from the store: the tasks assigned to
//! its node and what the node's data plane needs to reach every other task.
//! The agent reconciles its node to it.

use std::{collections::BTreeMap, net::IpAddr, net::Ipv4Addr};

use super::store::{
    ClusterState,
    services::{ServiceRecord, TaskRecord},
};
use super::templates::TemplateContext;
use crate::{
    api::{
        assignments::{
            AssignedTask, DnsRecord, EndpointNames, GossipConfig, LogRequest, NodeView,
            RemoteEndpoint, SERVICE_NAME_MARK,
        },
        mounts::{PayloadKind, TaskFile},
        specs::{EndpointMode, ServiceSpec},
        tasks::{Resources, TaskSpec},
    },
    dataplane::{self, OverlayNetwork, PublishedPort},
};

/// Node `node_id`'s share of the store, at store version `version`.
pub fn node_view(state: &ClusterState, node_id: &str, version: u64) -> NodeView {
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
            let service_name = service.map_or(task.spec.name.as_str(), |s| s.spec.name.as_str());
            let name = task.name(service_name);
            let templates = TemplateContext {
                service_id: &task.service_id,
                service_name,
                service_labels: service.map_or(&task.spec.labels, |s| &s.spec.labels),
                node_id,
                node_hostname: state.nodes.get(node_id).map_or("", |n| n.hostname.as_str()),
                platform: &state
                    .nodes
                    .get(node_id)
                    .map(|n| n.platform.clone())
                    .unwrap_or_default(),
                task_id: &task.id,
                slot: task.slot,
            };
            // Checked at create and update; a spec stored before that
            // check keeps its text as written.
            let expanded = templates.expand_spec(&task.spec);
            let spec = expanded.as_ref().unwrap_or(&task.spec);
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
                        pids: spec.limits.pids,
                    },
                    healthcheck: spec.healthcheck.clone(),
                    no_healthcheck: spec.no_healthcheck,
                    files: task_files(state, spec),
                    mounts: spec.mounts.clone(),
                    registry_auth: spec.registry_auth.clone(),
                    entrypoint: spec.entrypoint.clone(),
                    workdir: spec.workdir.clone(),
                    user: spec.user.clone(),
                    container: spec.container.clone(),
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
        let data_path = state.nodes.get(node).and_then(|n| n.data_path_addr);
        let Some(node_ip) = data_path.or_else(|| node_ip(node)) else {
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
            data_paths: state
                .nodes
                .values()
                .filter_map(|n| Some((node_ip(&n.id)?, n.data_path_addr?)))
                .collect(),
        }),
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
            reverse: None,
        };
        if let Some(service_addresses) = service_addresses {
            for alias in service.spec.aliases.get(network_id).into_iter().flatten() {
                records.push(record(alias.clone(), service_addresses.clone()));
            }
            records.push(record(service.spec.name.clone(), service_addresses));
        }
        records.push(record(format!("tasks.{}", service.spec.name), addresses));
        for (task_name, ip) in running {
            let reverse = format!("{task_name}.{}", network.name).to_ascii_lowercase();
            records.push(DnsRecord {
                reverse: Some(reverse),
                ..record(task_name, vec![ip])
            });
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
) -> Vec<dataplane::BalancedService> {
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
            Some(dataplane::BalancedService {
                name: format!("{}{SERVICE_NAME_MARK}{}", service.spec.name, network.name),
                vni: network.vni,
                vip,
                backends,
                published,
            })
        })
        .collect()
}

/// The bytes of the secrets and configs a task's spec names, for the node
/// that runs it; one deleted meanwhile is left out.
fn task_files(state: &ClusterState, spec: &ServiceSpec) -> Vec<TaskFile> {
    [
        (PayloadKind::Secret, &spec.secrets),
        (PayloadKind::Config, &spec.configs),
    ]
    .into_iter()
    .flat_map(|(kind, references)| {
        references.iter().filter_map(move |reference| {
            let payload = state.payloads(kind).get(&reference.id)?;
            Some(TaskFile {
                path: reference.path(kind == PayloadKind::Secret),
                uid: reference.uid,
                gid: reference.gid,
                mode: reference.mode,
                data: payload.data.clone(),
            })
        })
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{
        api::{
            Role,
            mounts::{FileReference, Opaque},
            specs::ServiceMode,
            tasks::{TaskState, TaskStatus},
        },
        manager::store::{
            fixtures,
            payloads::PayloadRecord,
            services::{ServiceCreate, TaskRecord},
        },
    };

    #[test]
    fn only_the_node_running_a_task_gets_its_secret() {
        let mut state = fixtures::store(&[("a", Role::Manager), ("b", Role::Worker)]);
        let secret = b"the bytes of the secret";
        state.secrets.insert(
            "s1".into(),
            PayloadRecord {
                id: "s1".into(),
                name: "pw".into(),
                labels: BTreeMap::new(),
                data: Opaque(secret.to_vec()),
                created_at: 0,
                updated_at: 0,
                version: 1,
            },
        );
        let mut spec = ServiceSpec::new("app", "host", ServiceMode::Replicated { replicas: 1 });
        spec.secrets.push(FileReference {
            id: "s1".into(),
            ..FileReference::named("pw")
        });
        state
            .create_service(ServiceCreate {
                id: "svc".into(),
                spec: spec.clone(),
                at: 0,
            })
            .unwrap();
        state.tasks.insert(
            "t1".into(),
            TaskRecord {
                id: "t1".into(),
                service_id: "svc".into(),
                slot: 1,
                node_id: Some("a".into()),
                spec_version: 1,
                spec,
                desired: TaskState::Running,
                status: TaskStatus {
                    state: TaskState::Assigned,
                    timestamp_millis: 0,
                    message: String::new(),
                    err: String::new(),
                    exit_code: None,
                },
                addresses: BTreeMap::new(),
                created_at_millis: 0,
                running_since_millis: None,
            },
        );
        let mine = node_view(&state, "a", 1);
        assert_eq!(mine.tasks[0].spec.files.len(), 1);
        assert_eq!(mine.tasks[0].spec.files[0].path, "/run/secrets/pw");
        assert_eq!(mine.tasks[0].spec.files[0].data.0, secret);
        let other = serde_json::to_string(&node_view(&state, "b", 1)).unwrap();
        let encoded = serde_json::to_string(&Opaque(secret.to_vec())).unwrap();
        assert!(!other.contains(encoded.trim_matches('"')), "{other}");
        // Nor does a log line of the view print it.
        assert!(!format!("{mine:?}").contains("the bytes"));
    }
}
