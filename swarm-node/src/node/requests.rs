//! The control socket's cluster requests, handed to the leader, and
//! `swarm info`, which this node answers itself.

use super::Membership;
use crate::{
    api::{
        ClusterError,
        control::{RaftInfo, Request, Response, SwarmInfo},
    },
    manager::leader::Forwarded,
};

impl Membership {
    /// A request for the managers (node and token commands): run by the
    /// leader.
    pub fn manager_request(&self, request: Request) -> Result<Response, ClusterError> {
        {
            let slot = self.lock();
            slot.as_ref()
                .ok_or(ClusterError::NotInSwarm)?
                .require_manager()?;
        }
        self.manager.lead(
            Forwarded::Request {
                request,
                origin: self.node.node_id.clone(),
            },
            0,
        )
    }

    pub fn info(&self) -> SwarmInfo {
        let cluster = self.lock();
        let Some(cluster) = cluster.as_ref() else {
            return SwarmInfo {
                local_node_state: "inactive".into(),
                ..SwarmInfo::default()
            };
        };
        let counts = cluster
            .with_store(|s| (s.managers().count(), s.nodes.len()))
            .unwrap_or_default();
        let leader = cluster.raft.as_ref().and_then(|r| r.leader());
        SwarmInfo {
            local_node_state: "active".into(),
            node_id: cluster.node_id.clone(),
            node_addr: cluster.local.addr.ip().to_string(),
            data_path_addr: cluster
                .local
                .data_path_addr
                .map_or_else(|| cluster.local.addr.ip().to_string(), |ip| ip.to_string()),
            control_available: cluster.raft.is_some(),
            cluster_id: cluster.local.cluster_id.clone(),
            // A worker does not see the cluster's node list.
            managers: counts.0,
            nodes: counts.1,
            is_leader: leader
                .as_ref()
                .is_some_and(|l| l.node_id == cluster.node_id),
            leader_addr: leader.map(|l| l.addr).unwrap_or_default(),
            raft: cluster.raft.as_ref().map(|raft| {
                let metrics = raft.metrics();
                RaftInfo {
                    term: metrics.current_term,
                    last_applied: metrics.last_applied.map_or(0, |l| l.index),
                    last_log_index: metrics.last_log_index.unwrap_or(0),
                    snapshot_index: metrics.snapshot.map_or(0, |l| l.index),
                    purged_index: metrics.purged.map_or(0, |l| l.index),
                    voters: metrics.membership_config.membership().voter_ids().count(),
                    retained_snapshots: raft.retained_snapshots(),
                }
            }),
        }
    }
}

/// What the metrics report of the cluster from this manager's replica of
/// the store.
#[derive(Debug, Default)]
pub struct ClusterMetrics {
    pub raft: Option<RaftInfo>,
    pub is_leader: bool,
    /// Tasks by their current state (Docker's word).
    pub tasks_by_state: std::collections::BTreeMap<&'static str, u64>,
    pub services: usize,
    /// Each task's service name, to label the tasks' usage with.
    pub task_services: std::collections::BTreeMap<String, String>,
}

impl Membership {
    /// `None` on a worker, or outside a swarm: only managers hold the store.
    pub fn cluster_metrics(&self) -> Option<ClusterMetrics> {
        let info = self.info();
        if !info.control_available {
            return None;
        }
        let cluster = self.lock();
        let cluster = cluster.as_ref()?;
        let (tasks_by_state, services, task_services) = cluster
            .with_store(|s| {
                let mut by_state = std::collections::BTreeMap::new();
                let mut names = std::collections::BTreeMap::new();
                for task in s.tasks.values() {
                    *by_state.entry(task.status.state.word()).or_insert(0) += 1;
                    if let Some(service) = s.services.get(&task.service_id) {
                        names.insert(task.id.clone(), service.spec.name.clone());
                    }
                }
                (by_state, s.services.len(), names)
            })
            .ok()?;
        Some(ClusterMetrics {
            raft: info.raft,
            is_leader: info.is_leader,
            tasks_by_state,
            services,
            task_services,
        })
    }
}

/// The longest one `swarm events` request waits for a change: the CLI asks
/// again, so a manager that goes away is noticed.
const EVENTS_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(2);

impl Membership {
    /// `swarm events`: this manager's changes after number `after`.
    pub fn events(&self, after: Option<u64>, wait_millis: u64) -> Result<Response, ClusterError> {
        let log = {
            let cluster = self.lock();
            let cluster = cluster.as_ref().ok_or(ClusterError::NotInSwarm)?;
            cluster.require_manager()?.events.clone()
        };
        let wait = std::time::Duration::from_millis(wait_millis).min(EVENTS_WAIT_MAX);
        let (events, last) = log.after(after, wait);
        Ok(Response::Events { events, last })
    }
}
