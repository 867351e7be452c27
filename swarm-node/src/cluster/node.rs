//! The daemon's side of cluster membership: answers the control socket's
//! swarm requests (init, join tokens, node list, leave, info) from the
//! cluster state this node keeps, which it loads again after a restart.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::Mutex,
    time::Duration,
};

use super::{
    Availability, Cluster, ClusterError, InitOptions, Role,
    pki::DEFAULT_CERT_EXPIRY,
    state::{DEFAULT_HEARTBEAT, DEFAULT_LISTEN_PORT},
};
use crate::control::{NodeRow, Response, SwarmInfo, SwarmInitRequest};

/// Who this node is, for cluster requests.
pub struct LocalNode {
    pub data_dir: PathBuf,
    pub node_id: String,
    pub hostname: String,
    pub advertise_addr: Ipv4Addr,
}

/// This node's membership, if any, behind a lock.
pub struct Membership {
    node: LocalNode,
    cluster: Mutex<Option<Cluster>>,
}

impl Membership {
    /// Picks up the cluster this node was in before a restart.
    pub fn load(node: LocalNode) -> Result<Self, ClusterError> {
        let cluster = Cluster::load(&node.data_dir, &node.node_id)?;
        Ok(Self {
            node,
            cluster: Mutex::new(cluster),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Cluster>> {
        self.cluster.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn info(&self) -> SwarmInfo {
        let cluster = self.lock();
        let Some(cluster) = cluster.as_ref() else {
            return SwarmInfo {
                local_node_state: "inactive".into(),
                ..SwarmInfo::default()
            };
        };
        let me = cluster.state.nodes.get(&cluster.node_id);
        SwarmInfo {
            local_node_state: "active".into(),
            node_id: cluster.node_id.clone(),
            node_addr: me.map(|n| n.addr.ip().to_string()).unwrap_or_default(),
            control_available: me.is_some_and(|n| n.role == Role::Manager),
            cluster_id: cluster.state.cluster_id.clone(),
            managers: cluster.managers(),
            nodes: cluster.state.nodes.len(),
        }
    }

    pub fn init(&self, request: SwarmInitRequest) -> Result<Response, ClusterError> {
        let mut slot = self.lock();
        if slot.is_some() {
            return Err(ClusterError::AlreadyInSwarm);
        }
        let ip = request.advertise_addr.unwrap_or(self.node.advertise_addr);
        let port = request.listen_port.unwrap_or(DEFAULT_LISTEN_PORT);
        let options = InitOptions {
            hostname: self.node.hostname.clone(),
            advertise: SocketAddr::from((ip, port)),
            cert_expiry: request
                .cert_expiry_secs
                .map_or(DEFAULT_CERT_EXPIRY, Duration::from_secs),
            heartbeat: request
                .heartbeat_millis
                .map_or(DEFAULT_HEARTBEAT, Duration::from_millis),
        };
        let cluster = Cluster::init(&self.node.data_dir, &self.node.node_id, &options)?;
        tracing::info!(
            cluster_id = %cluster.state.cluster_id,
            node_id = %cluster.node_id,
            addr = %options.advertise,
            "swarm initialized; this node is its manager"
        );
        let response = Response::SwarmInitialized {
            node_id: cluster.node_id.clone(),
            worker_token: cluster.state.worker_token.clone(),
            manager_addr: options.advertise.to_string(),
        };
        *slot = Some(cluster);
        Ok(response)
    }

    pub fn join_token(&self, role: Role, rotate: bool) -> Result<Response, ClusterError> {
        let mut slot = self.lock();
        let cluster = slot.as_mut().ok_or(ClusterError::NotInSwarm)?;
        let token = cluster.join_token(role, rotate)?;
        if rotate {
            tracing::info!(%role, "join token rotated");
        }
        Ok(Response::JoinToken {
            role,
            token,
            manager_addr: cluster
                .manager_addr()
                .map(|a| a.to_string())
                .unwrap_or_default(),
        })
    }

    pub fn nodes(&self) -> Result<Response, ClusterError> {
        let slot = self.lock();
        let cluster = slot.as_ref().ok_or(ClusterError::NotInSwarm)?;
        let rows = cluster
            .state
            .nodes
            .values()
            .map(|node| {
                let is_self = node.id == cluster.node_id;
                NodeRow {
                    id: node.id.clone(),
                    hostname: node.hostname.clone(),
                    // The only node this state knows alive is the one answering;
                    // liveness of others comes with agent heartbeats.
                    status: if is_self { "Ready" } else { "Unknown" }.into(),
                    availability: match node.availability {
                        Availability::Active => "Active",
                        Availability::Pause => "Pause",
                        Availability::Drain => "Drain",
                    }
                    .into(),
                    manager_status: match node.role {
                        Role::Manager if is_self => "Leader".into(),
                        Role::Manager => "Unreachable".into(),
                        Role::Worker => String::new(),
                    },
                    is_self,
                }
            })
            .collect();
        Ok(Response::Nodes(rows))
    }

    pub fn leave(&self, force: bool) -> Result<Response, ClusterError> {
        let mut slot = self.lock();
        let cluster = slot.take().ok_or(ClusterError::NotInSwarm)?;
        let reload_dir = self.node.data_dir.clone();
        if let Err(err) = cluster.leave(force) {
            // Still a member: put the state back as it is on disk.
            *slot = Cluster::load(&reload_dir, &self.node.node_id)?;
            return Err(err);
        }
        tracing::info!("left the swarm");
        Ok(Response::Done)
    }
}
