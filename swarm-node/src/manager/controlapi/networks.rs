//! `swarm network create|ls|inspect|rm`, as the leader answers them: the
//! networks live in the replicated store, where the allocator gives each a
//! subnet and a VNI when its creation is applied.

use std::collections::BTreeMap;

use crate::{
    api::{
        ClusterError,
        control::{NetworkRow, Response, SwarmNetworkCreateRequest},
        filters::{self, Filters},
    },
    clock::now_secs,
    identity::new_id,
    manager::{
        Manager,
        store::{Command, NetworkRequest},
    },
};

impl Manager {
    pub(super) fn create_network(
        &self,
        request: &SwarmNetworkCreateRequest,
    ) -> Result<Response, ClusterError> {
        let id = new_id();
        self.commit_here(Command::CreateNetwork(NetworkRequest {
            id: id.clone(),
            name: request.name.clone(),
            subnet: request.subnet,
            gateway: request.gateway,
            mtu: request.mtu,
            attachable: request.attachable,
            labels: request.labels.iter().cloned().collect(),
            created_at: now_secs(),
        }))?;
        tracing::info!(network = %request.name, %id, "network created");
        Ok(Response::Notes(vec![id]))
    }

    pub(super) fn networks(&self, filters: &Filters) -> Result<Response, ClusterError> {
        filters.check(filters::NETWORK_KEYS)?;
        let rows = self.read_store(|s| {
            s.networks
                .values()
                .filter(|n| filters.network_matches(&n.id, &n.name, &n.labels))
                .map(|n| NetworkRow {
                    id: n.id.clone(),
                    name: n.name.clone(),
                    driver: "overlay".into(),
                    scope: "swarm".into(),
                    ipv6: false,
                    internal: false,
                    labels: n.labels.clone(),
                    created_at: crate::clock::rfc3339(n.created_at),
                })
                .collect()
        })?;
        Ok(Response::Networks(rows))
    }

    pub(super) fn inspect_network(&self, reference: &str) -> Result<Response, ClusterError> {
        let network = self
            .read_store(|s| s.resolve_network(reference).cloned())?
            .map_err(ClusterError::from)?;
        let created = crate::clock::rfc3339(network.created_at);
        let (net, prefix) = network.subnet;
        // The nodes this manager gossips with, the endpoints each publishes
        // on this network, and (as Docker's `inspect --verbose`) the
        // services those endpoints answer for.
        let gossiped = self
            .host()?
            .gossip()
            .map(|gossip| self.runtime.block_on(gossip.peers()))
            .unwrap_or_default();
        let mut services: BTreeMap<String, serde_json::Value> = BTreeMap::new();
        let mut peers: Vec<serde_json::Value> = Vec::new();
        for peer in &gossiped {
            let on_network = || {
                peer.endpoints
                    .iter()
                    .filter(|(vni, ..)| *vni == network.vni)
            };
            for (_, ip, names) in on_network() {
                let Some(names) = names.as_ref().filter(|_| peer.live) else {
                    continue;
                };
                let service = services.entry(names.service.clone()).or_insert_with(|| {
                    serde_json::json!({
                        "VIP": names.vip.map(|vip| vip.to_string()).unwrap_or_default(),
                        "Aliases": names.aliases,
                        "Tasks": [],
                    })
                });
                if let Some(tasks) = service["Tasks"].as_array_mut() {
                    tasks.push(serde_json::json!({
                        "Name": names.task,
                        "EndpointIP": ip.to_string(),
                        "Info": { "Host IP": peer.addr.to_string() },
                    }));
                }
            }
            let endpoints: Vec<String> = on_network().map(|(_, ip, _)| ip.to_string()).collect();
            peers.push(serde_json::json!({
                "Name": peer.node_id,
                "IP": peer.addr.to_string(),
                "Live": peer.live,
                "Endpoints": endpoints,
            }));
        }
        Ok(Response::NetworkInspect(serde_json::json!([{
            "Peers": peers,
            "Services": services,
            "Name": network.name,
            "Id": network.id,
            "Created": created,
            "Scope": "swarm",
            "Driver": "overlay",
            "EnableIPv6": false,
            "IPAM": {
                "Driver": "default",
                "Options": null,
                "Config": [{ "Subnet": format!("{net}/{prefix}"), "Gateway": network.gateway.to_string() }],
            },
            "Internal": false,
            "Attachable": network.attachable,
            "Ingress": network.ingress,
            "Options": {
                "com.docker.network.driver.overlay.vxlanid_list": network.vni.to_string(),
                "com.docker.network.driver.mtu": network.mtu.to_string(),
            },
            "Labels": network.labels,
        }])))
    }

    pub(super) fn remove_networks(&self, references: &[String]) -> Result<Response, ClusterError> {
        let mut removed = Vec::new();
        for reference in references {
            let id = self
                .read_store(|s| s.resolve_network(reference).map(|n| n.id.clone()))?
                .map_err(ClusterError::from)?;
            self.commit_here(Command::RemoveNetwork { id: id.clone() })?;
            tracing::info!(network = %reference, %id, "network removed");
            removed.push(reference.clone());
        }
        Ok(Response::Notes(removed))
    }
}
