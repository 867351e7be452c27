//! The composition root of a node's membership: what this node keeps of
//! its swarm (its certificate, its managers' addresses, its Raft on a
//! manager), and the pieces it starts and stops as that changes: the
//! managers' API while it is a manager, the agent's session and executor
//! while it is in a swarm.
//!
//! The pieces get narrow handles, never the membership: the manager a
//! [`ManagerHost`], the agent an [`AgentHost`].
//! `lifecycle.rs` joins, leaves and changes role; `requests.rs` answers
//! the control socket's cluster requests; `certificates.rs` keeps this
//! node's certificate.

mod certificates;
mod lifecycle;
mod local;
mod requests;

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex, MutexGuard, Weak,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::sync::watch;

use self::local::Cluster;
use crate::{
    agent::{self, AgentHost, executor::ExecutorDeps},
    api::{ClusterError, tasks::RegistryAuth},
    ca::{client::Credentials, pki::NodeCertificate, tls::ServedCertificate},
    identity::LocalNode,
    image::{ImageError, ImageSource, ImageStore, pinned},
    lock::{Locked as _, ReadWriteLocked as _},
    manager::{Manager, ManagerHost, raft::RaftNode, server},
};

/// This node's membership, if any, and what runs beside it.
pub struct Membership {
    node: LocalNode,
    cluster: Mutex<Option<Cluster>>,
    /// A manager restarted with its keys sealed under the unlock key: in a
    /// swarm, but nothing runs until `swarm unlock`.
    locked: AtomicBool,
    /// Held while joining, leaving or changing role, so those never overlap.
    transition: Mutex<()>,
    runtime: tokio::runtime::Handle,
    /// This node's manager parts; they work while it is a manager.
    manager: Arc<Manager>,
    /// The certificate the API presents; renewal swaps it in place.
    served_certificate: Arc<ServedCertificate>,
    /// What runs tasks here.
    executor_deps: Mutex<Option<ExecutorDeps>>,
    /// Resolves image tags to digests, for the manager's pinning.
    images: Arc<ImageStore>,
    api: Mutex<Option<Background>>,
    session: Mutex<Option<Background>>,
    executor: Mutex<Option<Background>>,
}

/// A task and the switch that stops it.
type Background = (watch::Sender<bool>, tokio::task::JoinHandle<()>);

impl Membership {
    /// Picks up the cluster this node was in before a restart (a manager
    /// starts Raft over its store again), then runs what its role needs,
    /// with `executor` running tasks while it is in a swarm.
    pub async fn load(
        node: LocalNode,
        executor: ExecutorDeps,
        images: Arc<ImageStore>,
    ) -> Result<Arc<Self>, ClusterError> {
        // A manager whose keys are sealed under an unlock key (autolock)
        // stays locked, running nothing, until `swarm unlock`.
        let (mut cluster, locked) = match Cluster::load(&node.data_dir, &node.node_id, None) {
            Ok(cluster) => (cluster, false),
            Err(ClusterError::SwarmLocked) => (None, true),
            Err(err) => return Err(err),
        };
        if let Some(cluster) = cluster.as_mut() {
            start_raft_if_manager(cluster).await?;
        }
        let runtime = tokio::runtime::Handle::current();
        let membership = Arc::new_cyclic(|me: &Weak<Self>| {
            let host: Weak<dyn ManagerHost> = me.clone();
            Self {
                manager: Manager::new(host, node.clone(), runtime.clone()),
                node,
                cluster: Mutex::new(None),
                locked: AtomicBool::new(locked),
                transition: Mutex::new(()),
                runtime,
                served_certificate: Arc::default(),
                executor_deps: Mutex::new(Some(executor)),
                images,
                api: Mutex::new(None),
                session: Mutex::new(None),
                executor: Mutex::new(None),
            }
        });
        if let Some(raft) = cluster.as_ref().and_then(|c| c.raft.clone()) {
            membership.manager.watch_leadership(&raft);
        }
        *membership.lock() = cluster;
        membership.sync_api();
        membership.manager.start_orchestrator();
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
                    membership.sync_lock();
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
        self.cluster.locked()
    }

    /// Whether this manager waits for `swarm unlock`.
    fn is_locked(&self) -> bool {
        self.locked.load(Ordering::SeqCst)
    }

    /// This node's Raft, on a manager.
    fn current_raft(&self) -> Option<RaftNode> {
        self.lock().as_ref().and_then(|c| c.raft.clone())
    }

    /// Serves the control-plane API while this node is a manager, and runs
    /// the agent while it is in a swarm; each only then.
    pub fn sync_api(self: &Arc<Self>) {
        self.sync_agent();
        let serving = {
            let cluster = self.lock();
            cluster.as_ref().filter(|c| c.raft.is_some()).map(|c| {
                (
                    Credentials {
                        cert_pem: c.certificate.cert_pem.clone(),
                        key_pem: c.certificate.key_pem.clone(),
                        ca_pem: c.ca_pem().to_owned(),
                    },
                    SocketAddr::new(
                        c.local
                            .listen_ip
                            .map_or(self.node.listen_addr.ip(), Into::into),
                        c.local.addr.port(),
                    ),
                )
            })
        };
        let mut api = self.api.locked();
        // A server that stopped on its own (its port was taken) is started again.
        if api.as_ref().is_some_and(|(_, task)| task.is_finished()) {
            *api = None;
        }
        match (serving, api.is_some()) {
            (Some((credentials, addr)), false) => {
                if let Err(err) = self.served_certificate.set(
                    &credentials.cert_pem,
                    &credentials.key_pem,
                    &credentials.ca_pem,
                ) {
                    tracing::error!(error = %err, "this manager's certificate cannot be served");
                    return;
                }
                let (stop_tx, stop_rx) = watch::channel(false);
                let manager = self.manager.clone();
                let certificate = self.served_certificate.clone();
                let task = self.runtime.spawn(async move {
                    let ca_pem = credentials.ca_pem;
                    if let Err(err) =
                        server::serve(manager, certificate, &ca_pem, addr, stop_rx).await
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

    /// The gossip this node runs, if it does.
    pub fn gossip(&self) -> Option<Arc<crate::gossip::Gossip>> {
        let deps = self.executor_deps.locked();
        let slot = deps.as_ref()?.gossip.locked();
        slot.clone()
    }

    fn sync_executor(self: &Arc<Self>) {
        let in_swarm = self.lock().is_some();
        let deps = self.executor_deps.locked().clone();
        let mut executor = self.executor.locked();
        match (in_swarm, deps, executor.is_some()) {
            (true, Some(deps), false) => {
                let (stop_tx, stop_rx) = watch::channel(false);
                let host: Arc<dyn AgentHost> = self.clone();
                let task =
                    self.runtime
                        .spawn(agent::executor::run(Arc::downgrade(&host), deps, stop_rx));
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
        let mut session = self.session.locked();
        match (reporting, session.is_some()) {
            (Some((managers, period)), false) => {
                let (stop_tx, stop_rx) = watch::channel(false);
                let host: Arc<dyn AgentHost> = self.clone();
                let task = self.runtime.spawn(agent::session::run(
                    Arc::downgrade(&host),
                    managers,
                    period,
                    stop_rx,
                ));
                *session = Some((stop_tx, task));
            }
            (None, true) => {
                if let Some((stop, _task)) = session.take() {
                    let _ = stop.send(true);
                }
            }
            _ => {}
        }
    }

    /// Stops the API, the agent and Raft (daemon shutdown).
    pub async fn stop(&self) {
        let api = self.api.locked().take();
        let session = self.session.locked().take();
        let executor = self.executor.locked().take();
        // The daemon takes its data plane back for a clean shutdown.
        self.executor_deps.locked().take();
        for (stop, task) in api.into_iter().chain(session).chain(executor) {
            let _ = stop.send(true);
            let _ = task.await;
        }
        if let Some(raft) = self.current_raft() {
            let _ = raft.raft.shutdown().await;
        }
    }

    /// The credentials this node dials other nodes with.
    fn dial_credentials(&self) -> Option<Credentials> {
        self.lock()
            .as_ref()
            .map(|c| c.credentials.read_locked().clone())
    }
}

impl ManagerHost for Membership {
    fn raft(&self) -> Result<RaftNode, ClusterError> {
        let slot = self.lock();
        let cluster = slot.as_ref().ok_or(ClusterError::NotInSwarm)?;
        cluster.require_manager().cloned()
    }

    fn credentials(&self) -> Option<Credentials> {
        self.dial_credentials()
    }

    fn cluster_id(&self) -> Result<String, ClusterError> {
        self.lock()
            .as_ref()
            .map(|c| c.local.cluster_id.clone())
            .ok_or(ClusterError::NotInSwarm)
    }

    fn api_addr(&self) -> Option<SocketAddr> {
        self.lock().as_ref().map(|c| c.local.addr)
    }

    fn hold_role(&self) -> MutexGuard<'_, ()> {
        self.transition.locked()
    }

    fn gossip(&self) -> Option<Arc<crate::gossip::Gossip>> {
        Membership::gossip(self)
    }

    fn resolve_image(
        &self,
        image: &str,
        login: Option<&RegistryAuth>,
    ) -> Result<Option<String>, ImageError> {
        let ImageSource::Registry(reference) = ImageSource::parse(image)? else {
            return Ok(None);
        };
        if reference.digest().is_some() {
            return Ok(Some(image.to_owned()));
        }
        let digest = self.images.resolve(&reference, login)?;
        Ok(Some(pinned(image, &digest)))
    }
}

impl AgentHost for Membership {
    fn local_node(&self) -> &LocalNode {
        &self.node
    }

    fn credentials(&self) -> Option<Credentials> {
        self.dial_credentials()
    }

    fn manager_addrs(&self) -> Vec<String> {
        self.lock()
            .as_ref()
            .map(|c| c.local.managers.iter().map(ToString::to_string).collect())
            .unwrap_or_default()
    }

    fn note_managers(&self, managers: Vec<SocketAddr>, period_millis: u64) {
        Membership::note_managers(self, managers, period_millis);
    }

    fn keep_certificate(&self, certificate: NodeCertificate) -> Result<(), ClusterError> {
        self.store_certificate(certificate)
    }

    fn role_changed(self: Arc<Self>) {
        self.sync_role();
    }
}

/// Starts Raft on a manager's membership, over its store sealed with its
/// data key.
async fn start_raft_if_manager(cluster: &mut Cluster) -> Result<(), ClusterError> {
    if cluster.role != crate::api::Role::Manager {
        return Ok(());
    }
    let key = cluster.data_key()?;
    cluster.raft = Some(
        RaftNode::start(
            &cluster.raft_dir(),
            &cluster.node_id,
            cluster.credentials.clone(),
            key,
        )
        .await?,
    );
    Ok(())
}
