//! Stores for tests: nodes, and a cluster with an ingress network.

use std::collections::BTreeMap;

use super::{ClusterState, NodeRecord};
use crate::{
    api::{Availability, NodeResources, Role},
    ca::pki::JoinToken,
    manager::allocator::{POOL, POOL_PREFIX, ingress_network},
};

/// An active node whose hostname is its ID.
pub fn node(id: &str, role: Role) -> NodeRecord {
    NodeRecord {
        data_path_addr: None,
        id: id.into(),
        hostname: id.into(),
        addr: "198.18.0.1:2377".parse().unwrap(),
        role,
        availability: Availability::Active,
        labels: BTreeMap::new(),
        engine_labels: BTreeMap::new(),
        resources: NodeResources::default(),
        platform: crate::api::Platform::of_this_host(),
        version: 1,
    }
}

/// A cluster `c` of `nodes`, with its ingress network `i`.
pub fn store(nodes: &[(&str, Role)]) -> ClusterState {
    ClusterState {
        cluster_id: "c".into(),
        created_at: 0,
        worker_token: JoinToken::generate([7; 32]).to_string(),
        manager_token: JoinToken::generate([7; 32]).to_string(),
        cert_expiry_secs: 3600,
        heartbeat_millis: 500,
        ca_cert_pem: String::new(),
        ca_key_pem: String::new(),
        nodes: nodes
            .iter()
            .map(|(id, role)| (id.to_string(), node(id, *role)))
            .collect(),
        networks: BTreeMap::from([(
            "i".into(),
            ingress_network("i".into(), 0, (POOL.0, POOL_PREFIX)),
        )]),
        services: BTreeMap::new(),
        tasks: BTreeMap::new(),
        log_requests: BTreeMap::new(),
        gossip_key: String::new(),
        previous_gossip_key: None,
        gossip_key_made_at: 0,
        gossip_key_rotation_secs: 0,
        task_history_limit: None,
        secrets: BTreeMap::new(),
        configs: BTreeMap::new(),
        address_pools: Vec::new(),
        subnet_size: None,
        snapshot_interval: None,
        max_snapshots: None,
        unlock_key: None,
    }
}
