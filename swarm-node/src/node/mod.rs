//! The daemon's side of cluster membership. Every node runs the agent
//! (heartbeats to the leader, certificate renewal, role changes); managers
//! also run Raft and the control-plane API. Control-socket requests that
//! need the cluster store are run by the leader: a manager that is not the
//! leader forwards them to it, so every write is committed by the leader.
//!
//! This file holds the membership itself and what runs beside it (the API
//! server, the agent, the leadership watch); `leader.rs` runs work on the
//! leader, `requests.rs` answers the control socket's node commands,
//! `lifecycle.rs` joins, leaves and changes role, and `dispatcher.rs`
//! answers other nodes and keeps this node's certificate.

mod dispatcher;
mod leader;
mod lifecycle;
mod networks;
mod requests;
mod services;

pub use leader::Forwarded;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use openraft::{
    ChangeMembers,
    error::{ClientWriteError, RaftError},
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{
    Availability, Cluster, ClusterError, ClusterState, Command, CommandResult, LocalState,
    NetworkRequest, NodeChange, NodeRecord, NodeResources, Role,
    api::{self, proto},
    join::{self, Joiner},
    pki::{CertificateSubject, DEFAULT_CERT_EXPIRY, JoinToken, NodeCertificate, RootCa},
    raft::{self, Member, RaftNode},
    serving::ServedCertificate,
    state::{
        DEFAULT_GOSSIP_KEY_ROTATION, DEFAULT_HEARTBEAT, DEFAULT_LISTEN_PORT,
        MIN_GOSSIP_KEY_ROTATION,
    },
};
use crate::control::{
    NodeRow, NodeUpdateRequest, RaftInfo, Request, Response, SwarmInfo, SwarmInitRequest,
    SwarmJoinRequest,
};

/// Who this node is, for cluster requests.
#[derive(Clone, Debug)]
pub struct LocalNode {
    pub data_dir: PathBuf,
    pub node_id: String,
    pub hostname: String,
    pub advertise_addr: Ipv4Addr,
    /// The daemon's `--listen-addr`: the address the API binds to, and the
    /// port a swarm's API uses unless `init`/`join` name another.
    pub listen_addr: SocketAddr,
}

/// This node's membership, if any; and, on a manager, the control-plane API
/// it serves.
pub struct Membership {
    node: LocalNode,
    cluster: Mutex<Option<Cluster>>,
    /// Held while joining, leaving or changing role, so those never overlap.
    transition: Mutex<()>,
    runtime: tokio::runtime::Handle,
    api: Mutex<Option<Background>>,
    /// The certificate the API presents; renewal swaps it in place.
    served_certificate: Arc<ServedCertificate>,
    agent: Mutex<Option<Background>>,
    liveness: Mutex<Liveness>,
    /// What runs tasks here, once the daemon has set it.
    executor_deps: Mutex<Option<super::executor::ExecutorDeps>>,
    executor: Mutex<Option<Background>>,
    /// `service logs` requests this manager waits on.
    log_waiters: super::logs::LogWaiters,
}

/// On the leader: when each node was last heard from.
#[derive(Default)]
struct Liveness {
    seen: HashMap<String, Instant>,
    /// When this manager became leader: nodes count as heard from then, so
    /// a new leader does not call every node Down before they report to it.
    leader_since: Option<Instant>,
}

/// A task and the switch that stops it.
type Background = (watch::Sender<bool>, tokio::task::JoinHandle<()>);

/// A node missing this many heartbeats in a row is Down.
const MISSED_BEATS: u32 = 3;

impl Membership {
    /// Picks up the cluster this node was in before a restart; a manager
    /// starts Raft over its store again.
    pub async fn load(node: LocalNode) -> Result<Arc<Self>, ClusterError> {
        let mut cluster = Cluster::load(&node.data_dir, &node.node_id)?;
        if let Some(cluster) = cluster.as_mut().filter(|c| c.role == Role::Manager) {
            cluster.raft = Some(
                RaftNode::start(
                    &cluster.raft_dir(),
                    &cluster.node_id,
                    cluster.credentials.clone(),
                )
                .await?,
            );
        }
        let membership = Arc::new(Self {
            node,
            cluster: Mutex::new(None),
            transition: Mutex::new(()),
            runtime: tokio::runtime::Handle::current(),
            api: Mutex::new(None),
            served_certificate: Arc::default(),
            agent: Mutex::new(None),
            liveness: Mutex::new(Liveness::default()),
            executor_deps: Mutex::new(None),
            executor: Mutex::new(None),
            log_waiters: Default::default(),
        });
        if let Some(raft) = cluster.as_ref().and_then(|c| c.raft.clone()) {
            membership.watch_leadership(&raft);
        }
        *membership.lock() = cluster;
        membership.sync_api();
        membership.start_orchestrator();
        let ticking = Arc::downgrade(&membership);
        membership.runtime.spawn(async move {
            // Certificates and roles are checked once a second; the task
            // ends with the membership.
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let Some(membership) = ticking.upgrade() else {
                    return;
                };
                let _ = tokio::task::spawn_blocking(move || {
                    membership.renew_own_if_due();
                    membership.sync_role();
                    membership.sync_api();
                })
                .await;
            }
        });
        Ok(membership)
    }

    fn lock(&self) -> MutexGuard<'_, Option<Cluster>> {
        self.cluster.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn liveness(&self) -> MutexGuard<'_, Liveness> {
        self.liveness.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This node's Raft, on a manager.
    pub fn raft(&self) -> Option<RaftNode> {
        self.lock().as_ref().and_then(|c| c.raft.clone())
    }

    fn require_raft(&self) -> Result<RaftNode, ClusterError> {
        let slot = self.lock();
        let cluster = slot.as_ref().ok_or(ClusterError::NotInSwarm)?;
        cluster.require_manager().cloned()
    }

    /// Notes when this manager becomes leader.
    fn watch_leadership(self: &Arc<Self>, raft: &RaftNode) {
        let mut metrics = raft.raft.metrics();
        let id = raft.id;
        let membership = Arc::downgrade(self);
        self.runtime.spawn(async move {
            let mut leading = false;
            loop {
                let now_leading = metrics.borrow().current_leader == Some(id);
                if now_leading != leading {
                    let Some(membership) = membership.upgrade() else {
                        return;
                    };
                    let mut liveness = membership.liveness();
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

    /// Serves the control-plane API while this node is a manager, and runs
    /// the agent while it is in a swarm; each only then.
    pub fn sync_api(self: &Arc<Self>) {
        self.sync_agent();
        let serving = {
            let cluster = self.lock();
            cluster.as_ref().filter(|c| c.raft.is_some()).map(|c| {
                (
                    raft::Credentials {
                        cert_pem: c.certificate.cert_pem.clone(),
                        key_pem: c.certificate.key_pem.clone(),
                        ca_pem: c.ca_pem().to_owned(),
                    },
                    c.local.addr.port(),
                )
            })
        };
        let mut api = self.api.lock().unwrap_or_else(|p| p.into_inner());
        // A server that stopped on its own (its port was taken) is started again.
        if api.as_ref().is_some_and(|(_, task)| task.is_finished()) {
            *api = None;
        }
        match (serving, api.is_some()) {
            (Some((credentials, port)), false) => {
                if let Err(err) = self.served_certificate.set(
                    &credentials.cert_pem,
                    &credentials.key_pem,
                    &credentials.ca_pem,
                ) {
                    tracing::error!(error = %err, "this manager's certificate cannot be served");
                    return;
                }
                let (stop_tx, stop_rx) = watch::channel(false);
                let addr = SocketAddr::new(self.node.listen_addr.ip(), port);
                let membership = self.clone();
                let certificate = self.served_certificate.clone();
                let task = self.runtime.spawn(async move {
                    let ca_pem = credentials.ca_pem;
                    if let Err(err) =
                        api::serve(membership, certificate, &ca_pem, addr, stop_rx).await
                    {
                        tracing::error!(%addr, error = %err, "control-plane API stopped");
                    }
                });
                *api = Some((stop_tx, task));
            }
            (None, true) => {
                if let Some((stop, _task)) = api.take() {
                    let _ = stop.send(true);
                }
            }
            _ => {}
        }
    }

    /// Gives the membership what runs tasks on this node; from then on the
    /// executor runs while the node is in a swarm.
    pub fn set_executor(self: &Arc<Self>, deps: super::executor::ExecutorDeps) {
        *self.executor_deps.lock().unwrap_or_else(|p| p.into_inner()) = Some(deps);
        self.sync_agent();
    }

    /// This node's identity and addresses.
    pub fn local_node(&self) -> &LocalNode {
        &self.node
    }

    /// The gossip this node runs, if it does.
    pub(crate) fn gossip(&self) -> Option<Arc<crate::gossip::Gossip>> {
        let deps = self.executor_deps.lock().unwrap_or_else(|p| p.into_inner());
        let slot = deps
            .as_ref()?
            .gossip
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        slot.clone()
    }

    /// The managers' control-plane addresses this node knows.
    pub fn manager_addrs(&self) -> Vec<String> {
        self.lock()
            .as_ref()
            .map(|c| c.local.managers.iter().map(ToString::to_string).collect())
            .unwrap_or_default()
    }

    fn sync_executor(self: &Arc<Self>) {
        let in_swarm = self.lock().is_some();
        let deps = self
            .executor_deps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut executor = self.executor.lock().unwrap_or_else(|p| p.into_inner());
        match (in_swarm, deps, executor.is_some()) {
            (true, Some(deps), false) => {
                let (stop_tx, stop_rx) = watch::channel(false);
                let task =
                    self.runtime
                        .spawn(super::executor::run(Arc::downgrade(self), deps, stop_rx));
                *executor = Some((stop_tx, task));
            }
            (false, _, true) => {
                if let Some((stop, _task)) = executor.take() {
                    let _ = stop.send(true);
                }
            }
            _ => {}
        }
    }

    fn sync_agent(self: &Arc<Self>) {
        self.sync_executor();
        let reporting = {
            let cluster = self.lock();
            cluster.as_ref().map(|c| {
                (
                    c.local.managers.clone(),
                    Duration::from_millis(c.local.heartbeat_millis.max(1)),
                )
            })
        };
        let mut agent = self.agent.lock().unwrap_or_else(|p| p.into_inner());
        match (reporting, agent.is_some()) {
            (Some((managers, period)), false) => {
                let (stop_tx, stop_rx) = watch::channel(false);
                let task = self.runtime.spawn(super::agent::run(
                    Arc::downgrade(self),
                    managers,
                    period,
                    stop_rx,
                ));
                *agent = Some((stop_tx, task));
            }
            (None, true) => {
                if let Some((stop, _task)) = agent.take() {
                    let _ = stop.send(true);
                }
            }
            _ => {}
        }
    }

    /// Stops the API, the agent and Raft (daemon shutdown).
    pub async fn stop(&self) {
        let api = self.api.lock().unwrap_or_else(|p| p.into_inner()).take();
        let agent = self.agent.lock().unwrap_or_else(|p| p.into_inner()).take();
        let executor = self
            .executor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        // The daemon takes its data plane back for a clean shutdown.
        self.executor_deps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        for (stop, task) in api.into_iter().chain(agent).chain(executor) {
            let _ = stop.send(true);
            let _ = task.await;
        }
        if let Some(raft) = self.raft() {
            let _ = raft.raft.shutdown().await;
        }
    }

    /// The credentials this node dials other nodes with.
    pub fn credentials(&self) -> Option<raft::Credentials> {
        self.lock().as_ref().map(|c| {
            c.credentials
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        })
    }

    /// Whether `subject` (a TLS-verified client certificate) is a manager of
    /// this swarm: only managers may call Raft and forward requests.
    pub fn authorize_manager(&self, subject: &CertificateSubject) -> Result<(), ClusterError> {
        self.authorize_member(subject)?;
        if subject.role != Role::Manager {
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
                && self.raft().is_some_and(|node| node.holds(&subject.node_id))
        };
        match as_manager {
            Err(_) if still_member() => Ok(()),
            other => other,
        }
    }

    fn authorize_member(&self, subject: &CertificateSubject) -> Result<(), ClusterError> {
        let slot = self.lock();
        let cluster = slot.as_ref().ok_or(ClusterError::NotInSwarm)?;
        if subject.cluster_id != cluster.local.cluster_id {
            return Err(ClusterError::Refused(format!(
                "node {} belongs to another swarm",
                subject.node_id
            )));
        }
        Ok(())
    }

    fn read_store<T>(&self, read: impl FnOnce(&ClusterState) -> T) -> Result<T, ClusterError> {
        let slot = self.lock();
        slot.as_ref()
            .ok_or(ClusterError::NotInSwarm)?
            .with_store(read)
    }
}
