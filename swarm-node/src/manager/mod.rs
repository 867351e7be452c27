//! The managers, after swarmkit's `manager` package: the store Raft
//! replicates, and what the leader runs over it (allocator, orchestrator,
//! scheduler), what every manager answers agents (dispatcher, node CA), and
//! the control API, one module per object kind, that both front doors call.
//!
//! A [`Manager`] exists on every node, and works while the node is a
//! manager: it asks the node for its Raft through [`ManagerHost`], so it
//! never holds the node itself.

pub mod allocator;
pub mod assignments;
pub mod controlapi;
pub mod dispatcher;
mod jobs;
pub mod leader;
pub mod logs;
pub mod nodeca;
pub mod orchestrator;
pub mod raft;
pub mod reference;
pub mod scheduler;
pub mod server;
pub mod store;
pub mod templates;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard, Weak},
    time::Instant,
};

use crate::{
    api::{ClusterError, tasks::RegistryAuth},
    ca::{client::Credentials, pki::CertificateSubject},
    gossip::Gossip,
    identity::LocalNode,
    image::ImageError,
    lock::Locked as _,
};
use dispatcher::Liveness;
use logs::LogWaiters;
use raft::RaftNode;
use store::ClusterState;

/// What a manager asks of the node it runs on.
pub trait ManagerHost: Send + Sync {
    /// This node's Raft, while it is a manager.
    fn raft(&self) -> Result<RaftNode, ClusterError>;
    /// What this node dials other managers with, while it is in a swarm.
    fn credentials(&self) -> Option<Credentials>;
    /// The swarm this node is in.
    fn cluster_id(&self) -> Result<String, ClusterError>;
    /// This node's control-plane address in its swarm.
    fn api_addr(&self) -> Option<SocketAddr>;
    /// Keeps this node's role as it is (no join, leave or role change)
    /// while the guard lives.
    fn hold_role(&self) -> MutexGuard<'_, ()>;
    /// The gossip this node runs, if it does.
    fn gossip(&self) -> Option<Arc<Gossip>>;
    /// `image` pinned to the digest its registry names now (`None`: no
    /// registry's image, e.g. `host`). Blocks.
    fn resolve_image(
        &self,
        image: &str,
        login: Option<&RegistryAuth>,
    ) -> Result<Option<String>, ImageError>;
}

/// A node's manager parts, and the state they keep between requests.
pub struct Manager {
    host: Weak<dyn ManagerHost>,
    node: LocalNode,
    runtime: tokio::runtime::Handle,
    /// On the leader: when each node was last heard from.
    liveness: Mutex<Liveness>,
    /// `service logs` requests this manager waits on.
    log_waiters: LogWaiters,
}

impl Manager {
    pub fn new(
        host: Weak<dyn ManagerHost>,
        node: LocalNode,
        runtime: tokio::runtime::Handle,
    ) -> Arc<Self> {
        Arc::new(Self {
            host,
            node,
            runtime,
            liveness: Mutex::default(),
            log_waiters: LogWaiters::default(),
        })
    }

    fn host(&self) -> Result<Arc<dyn ManagerHost>, ClusterError> {
        self.host.upgrade().ok_or(ClusterError::NotInSwarm)
    }

    /// This node's Raft; fails as Docker does on a worker.
    pub fn raft(&self) -> Result<RaftNode, ClusterError> {
        self.host()?.raft()
    }

    fn liveness(&self) -> MutexGuard<'_, Liveness> {
        self.liveness.locked()
    }

    fn read_store<T>(&self, read: impl FnOnce(&ClusterState) -> T) -> Result<T, ClusterError> {
        self.raft()?.read_store(read)
    }

    /// Whether `subject` (a TLS-verified client certificate) belongs to
    /// this swarm.
    fn authorize_member(&self, subject: &CertificateSubject) -> Result<(), ClusterError> {
        if subject.cluster_id != self.host()?.cluster_id()? {
            return Err(ClusterError::Refused(format!(
                "node {} belongs to another swarm",
                subject.node_id
            )));
        }
        Ok(())
    }

    /// Whether `subject` is a manager of this swarm: only managers may call
    /// Raft and forward requests.
    pub fn authorize_manager(&self, subject: &CertificateSubject) -> Result<(), ClusterError> {
        self.authorize_member(subject)?;
        if subject.role != crate::api::Role::Manager {
            return Err(ClusterError::Refused(format!(
                "permission denied: this API is for managers, and node {} presents a {} certificate",
                subject.node_id, subject.role
            )));
        }
        Ok(())
    }

    /// Whether the caller may take part in Raft: a manager of this swarm,
    /// or a node of this swarm that Raft's membership still holds. A
    /// manager demoting itself renews its certificate as a worker while it
    /// still has to replicate its own removal; refusing it then would leave
    /// the joint configuration uncommitted for good.
    pub fn authorize_raft_peer(&self, subject: &CertificateSubject) -> Result<(), ClusterError> {
        let as_manager = self.authorize_manager(subject);
        let still_member = || {
            self.authorize_member(subject).is_ok()
                && self.raft().is_ok_and(|node| node.holds(&subject.node_id))
        };
        match as_manager {
            Err(_) if still_member() => Ok(()),
            other => other,
        }
    }

    /// Notes when this manager becomes leader, until Raft stops.
    pub fn watch_leadership(self: &Arc<Self>, raft: &RaftNode) {
        let mut metrics = raft.raft.metrics();
        let id = raft.id;
        let manager = Arc::downgrade(self);
        self.runtime.spawn(async move {
            let mut leading = false;
            loop {
                let now_leading = metrics.borrow().current_leader == Some(id);
                if now_leading != leading {
                    let Some(manager) = manager.upgrade() else {
                        return;
                    };
                    let mut liveness = manager.liveness();
                    liveness.leader_since = now_leading.then(Instant::now);
                    if !now_leading {
                        liveness.seen.clear();
                    }
                    tracing::info!(leader = now_leading, "Raft leadership changed");
                    leading = now_leading;
                }
                if metrics.changed().await.is_err() {
                    return;
                }
            }
        });
    }
}
