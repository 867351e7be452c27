//! The control socket's cluster requests, handed to the leader, `swarm
//! info`, which this node answers itself, and autolock on this node:
//! `swarm unlock`, and its keys kept sealed under the swarm's unlock key.

use std::sync::{Arc, atomic::Ordering};

use super::{Membership, local::Cluster, start_raft_if_manager};
use crate::lock::Locked as _;
use crate::{
    api::{
        ClusterError, Role,
        control::{RaftInfo, Request, Response, SwarmInfo},
    },
    ca::unlock_key::UnlockKey,
    manager::leader::Forwarded,
};

impl Membership {
    /// A request for the managers (node and token commands): run by the
    /// leader.
    pub fn manager_request(&self, request: Request) -> Result<Response, ClusterError> {
        if self.is_locked() {
            return Err(ClusterError::SwarmLocked);
        }
        {
            let slot = self.lock();
            slot.as_ref()
                .ok_or(ClusterError::NotInSwarm)?
                .require_manager()?;
        }
        let answer = self.manager.lead(
            Forwarded::Request {
                request,
                origin: self.node.node_id.clone(),
            },
            0,
        );
        // An autolock change applied here is sealed at once, not at the
        // next tick.
        self.sync_lock();
        answer
    }

    /// `swarm unlock`: opens this locked manager's keys with `key`, then
    /// runs what a manager runs. A malformed or wrong key is refused with
    /// Docker's words and the node stays locked.
    pub fn unlock(self: &Arc<Self>, key: &str) -> Result<Response, ClusterError> {
        let _transition = self.transition.locked();
        if !self.is_locked() {
            return Err(if self.lock().is_some() {
                ClusterError::NotLocked
            } else {
                ClusterError::NotInSwarm
            });
        }
        let key: UnlockKey = key
            .parse()
            .map_err(|e: crate::ca::unlock_key::UnlockKeyError| {
                ClusterError::UnlockKey(e.to_string())
            })?;
        let mut cluster = Cluster::load(&self.node.data_dir, &self.node.node_id, Some(&key))?
            .ok_or(ClusterError::NotInSwarm)?;
        self.runtime.block_on(start_raft_if_manager(&mut cluster))?;
        let raft = cluster.raft.clone();
        *self.lock() = Some(cluster);
        self.locked.store(false, Ordering::SeqCst);
        if let Some(raft) = raft {
            self.manager.watch_leadership(&raft);
        }
        // A key rotated while this manager was down takes over at once
        // when its own store already holds it.
        self.sync_lock();
        self.sync_api();
        tracing::info!("unlocked: this manager's keys are open and it runs again");
        Ok(Response::Done)
    }

    /// Keeps this node's keys on disk sealed under the swarm's unlock key
    /// while autolock is on (under the new one once it is rotated), and in
    /// clear while it is off. Only managers lock; a worker's keys are in
    /// clear, as in Docker.
    pub fn sync_lock(&self) {
        let mut slot = self.lock();
        let Some(cluster) = slot.as_mut() else {
            return;
        };
        let wanted = if cluster.role == Role::Manager {
            // A manager that has not received the store yet keeps what it has.
            let Ok(text) = cluster.with_store(|s| s.unlock_key.clone()) else {
                return;
            };
            match text.map(|t| t.parse::<UnlockKey>()).transpose() {
                Ok(key) => key,
                Err(err) => {
                    tracing::error!(error = %err, "the swarm's unlock key does not parse");
                    return;
                }
            }
        } else {
            None
        };
        if wanted.as_ref() == cluster.unlock_key() {
            return;
        }
        let on = wanted.is_some();
        match cluster.seal_keys_under(wanted) {
            Ok(()) if on => tracing::info!(
                "autolock: this manager's keys are sealed under the current unlock key"
            ),
            Ok(()) => tracing::info!("autolock off: this node's keys are in clear"),
            Err(err) => tracing::error!(error = %err, "sealing this node's keys failed; retrying"),
        }
    }

    pub fn info(&self) -> SwarmInfo {
        if self.is_locked() {
            return SwarmInfo {
                local_node_state: "locked".into(),
                node_id: self.node.node_id.clone(),
                ..SwarmInfo::default()
            };
        }
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
