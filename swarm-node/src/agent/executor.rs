//! The agent's task executor: it asks the managers for this node's
//! assignments (a long poll that answers when the store changes), runs and
//! stops tasks through the runtime, wires each task's network namespace to
//! its overlay networks, programs remote endpoints and service VIPs,
//! backends and published ports into the data plane, and reports task
//! states back.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::Ipv4Addr,
    path::PathBuf,
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use tokio::sync::watch;

use super::{AgentHost, CallError};
use crate::lock::Locked as _;
use crate::{
    api::{
        assignments::{
            self, AssignedTask, GossipConfig, LogRequest, NodeView, RemoteEndpoint,
            SERVICE_NAME_MARK, TaskLog,
        },
        proto::{AssignmentsRequest, LogReport, TaskReport, dispatcher_client::DispatcherClient},
        tasks::{Health, TaskState, TaskStatus},
    },
    ca::client::channel,
    dataplane::{self, Dataplane, DataplaneError, LocalEndpointSpec, RemoteEndpointSpec},
    dns::{self, Resolver},
    gossip::{Gossip, GossipedEndpoints, PublishedEndpoints},
    runtime::{RunState, Runtime, RuntimeError, netns_path},
};

/// How often running tasks are checked between assignment changes.
const MONITOR_PERIOD: Duration = Duration::from_millis(200);
const RETRY: Duration = Duration::from_millis(250);
/// How long tasks get to stop when the daemon stops.
const STOP_GRACE_ON_EXIT: Duration = Duration::from_secs(2);
/// Longer than the managers' long poll.
const POLL_TIMEOUT: Duration = Duration::from_secs(10);
/// How many tasks are prepared at once.
const PARALLEL_PREPARES: usize = 8;

/// What the executor needs from the daemon.
#[derive(Clone)]
pub struct ExecutorDeps {
    pub runtime: Arc<dyn Runtime>,
    pub dataplane: Arc<Mutex<Dataplane>>,
    /// The resolver inside every task's namespace.
    pub resolver: Arc<Resolver>,
    /// UDP port of gossip between nodes (the same on every node).
    pub gossip_port: u16,
    /// The running gossip, for `network inspect` and `swarm info`.
    pub gossip: GossipSlot,
}

/// Where the executor puts the gossip it runs.
pub type GossipSlot = Arc<Mutex<Option<Arc<Gossip>>>>;

/// Runs until `stop` turns true.
pub async fn run(
    membership: Weak<dyn AgentHost>,
    deps: ExecutorDeps,
    mut stop: watch::Receiver<bool>,
) {
    let (view_tx, mut view_rx) = watch::channel::<Option<NodeView>>(None);
    let poller = tokio::spawn(poll(membership.clone(), view_tx, stop.clone()));
    let runtime = deps.runtime.clone();
    let gossip_deps = (deps.gossip_port, deps.gossip.clone());
    let mut gossip: Option<Arc<Gossip>> = None;
    let executor = Arc::new(Mutex::new(Executor::new(deps)));
    let mut unsent: Vec<(String, TaskStatus)> = Vec::new();
    let mut answered_logs: BTreeSet<String> = BTreeSet::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(MONITOR_PERIOD) => {}
            changed = view_rx.changed() => if changed.is_err() { break },
            _ = stop.wait_for(|s| *s) => break,
        }
        let Some(view) = view_rx.borrow_and_update().clone() else {
            continue;
        };
        answered_logs.retain(|id| view.log_requests.iter().any(|r| &r.id == id));
        for request in &view.log_requests {
            if answered_logs.insert(request.id.clone()) {
                tokio::spawn(answer_logs(
                    membership.clone(),
                    runtime.clone(),
                    request.clone(),
                ));
            }
        }
        if let Some(config) = &view.gossip {
            match &gossip {
                Some(running) => running.update(config),
                None => gossip = start_gossip(&membership, &gossip_deps, config).await,
            }
        }
        let gossiped = match &gossip {
            Some(running) => Some(running.endpoints().await),
            None => None,
        };
        // Pulling an image can take a while: the managers hear of the
        // tasks preparing first, as Docker shows them.
        let preparing = executor.locked().about_to_start(&view);
        if !preparing.is_empty() {
            let _ = report(&membership, &preparing).await;
        }
        let executor = executor.clone();
        let (reports, published) = tokio::task::spawn_blocking(move || {
            let mut executor = executor.locked();
            executor.gossiped = gossiped;
            let reports = executor.reconcile(&view);
            (reports, executor.published_endpoints(&view))
        })
        .await
        .unwrap_or_default();
        if let Some(running) = &gossip {
            running.publish(&published).await;
        }
        // Newer reports of a task replace older unsent ones.
        unsent.retain(|(id, _)| !reports.iter().any(|(r, _)| r == id));
        unsent.extend(reports);
        if !unsent.is_empty() && report(&membership, &unsent).await.is_ok() {
            unsent.clear();
        }
    }
    poller.abort();
    // Gossip stops with the executor (a node that left, or a stopping
    // daemon): the others see it go.
    *gossip_deps.1.locked() = None;
    drop(gossip);
    // Like dockerd without live-restore: a stopped daemon (or a node that
    // left) leaves no task behind. A crashed one does; the next start
    // adopts them.
    let _ = tokio::task::spawn_blocking(move || executor.locked().remove_all()).await;
}

/// Keeps `views` at the latest assignments from any manager.
async fn poll(
    membership: Weak<dyn AgentHost>,
    views: watch::Sender<Option<NodeView>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut known = 0;
    let mut next = 0usize;
    loop {
        let Some((managers, credentials)) = membership
            .upgrade()
            .and_then(|m| Some((m.manager_addrs(), m.credentials()?)))
        else {
            return;
        };
        if managers.is_empty() {
            return;
        }
        let target = managers[next % managers.len()].clone();
        let answer = async {
            let channel = channel(&target, &credentials)?;
            let mut client = DispatcherClient::new(channel);
            let response = tokio::time::timeout(
                POLL_TIMEOUT,
                client.assignments(AssignmentsRequest {
                    known_version: known,
                }),
            )
            .await
            .map_err(|_| CallError::Timeout(POLL_TIMEOUT))??;
            Ok::<_, CallError>(serde_json::from_slice::<NodeView>(
                &response.into_inner().view_json,
            )?)
        };
        let outcome = tokio::select! {
            outcome = answer => outcome,
            _ = stop.wait_for(|s| *s) => return,
        };
        match outcome {
            Ok(view) => {
                known = view.version;
                let _ = views.send(Some(view));
            }
            Err(err) => {
                tracing::debug!(manager = %target, error = %err, "assignments failed; trying the next manager");
                next += 1;
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

async fn report(
    membership: &Weak<dyn AgentHost>,
    statuses: &[(String, TaskStatus)],
) -> Result<(), CallError> {
    let Some((managers, credentials)) = membership
        .upgrade()
        .and_then(|m| Some((m.manager_addrs(), m.credentials()?)))
    else {
        return Err(CallError::NotInSwarm);
    };
    let json = serde_json::to_vec(statuses)?;
    let mut last = CallError::NoManagers;
    for target in managers {
        let sent = async {
            let mut client = DispatcherClient::new(channel(&target, &credentials)?);
            tokio::time::timeout(
                POLL_TIMEOUT,
                client.report_tasks(TaskReport {
                    statuses_json: json.clone(),
                }),
            )
            .await
            .map_err(|_| CallError::Timeout(POLL_TIMEOUT))??;
            Ok::<_, CallError>(())
        };
        match sent.await {
            Ok(_) => return Ok(()),
            Err(err) => last = err,
        }
    }
    tracing::debug!(error = %last, "task report failed; retrying");
    Err(last)
}

/// Starts gossiping once the managers have said how; a failure is logged
/// and tried again with the next assignments.
async fn start_gossip(
    membership: &Weak<dyn AgentHost>,
    (port, slot): &(u16, GossipSlot),
    config: &GossipConfig,
) -> Option<Arc<Gossip>> {
    let node = membership.upgrade()?.local_node().clone();
    match Gossip::start(&node.node_id, node.advertise_addr, *port, config).await {
        Ok(gossip) => {
            let gossip = Arc::new(gossip);
            *slot.locked() = Some(gossip.clone());
            tracing::info!(port, peers = config.peers.len(), "gossip started");
            Some(gossip)
        }
        Err(err) => {
            tracing::warn!(port, error = %err, "starting gossip failed; retrying");
            None
        }
    }
}

/// Sends the output of this node's tasks that `request` asks for to the
/// manager that asked.
async fn answer_logs(
    membership: Weak<dyn AgentHost>,
    runtime: Arc<dyn Runtime>,
    request: LogRequest,
) {
    let Some(credentials) = membership.upgrade().and_then(|m| m.credentials()) else {
        return;
    };
    let (tasks, tail, since) = (request.tasks.clone(), request.tail, request.since_nanos);
    let logs = tokio::task::spawn_blocking(move || {
        tasks
            .into_iter()
            .map(|task_id| {
                // A task this node no longer holds has no output left.
                let lines = runtime.logs(&task_id).unwrap_or_default();
                TaskLog {
                    lines: assignments::select(lines, since, tail),
                    task_id,
                }
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    let Ok(logs_json) = serde_json::to_vec(&logs) else {
        return;
    };
    let sent = async {
        let mut client = DispatcherClient::new(channel(&request.reply_to, &credentials)?);
        tokio::time::timeout(
            POLL_TIMEOUT,
            client.report_logs(LogReport {
                request_id: request.id.clone(),
                logs_json,
            }),
        )
        .await
        .map_err(|_| CallError::Timeout(POLL_TIMEOUT))??;
        Ok::<_, CallError>(())
    };
    if let Err(err) = sent.await {
        tracing::warn!(manager = %request.reply_to, error = %err, "sending task logs failed");
    }
}

/// Why a task could not start.
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("attaching to network {vni}: {source}")]
    Attach {
        vni: u32,
        #[source]
        source: DataplaneError,
    },
    #[error("starting its resolver at 127.0.0.11:53: {0}")]
    Resolver(#[source] std::io::Error),
}

impl StartError {
    /// What the task's status says.
    fn task_error(&self) -> String {
        match self {
            StartError::Runtime(err) => err.task_error(),
            other => other.to_string(),
        }
    }
}

/// A task this node runs (or ran).
struct LocalTask {
    /// What this node last saw of it.
    state: TaskState,
    endpoints: Vec<String>,
}

struct Executor {
    deps: ExecutorDeps,
    tasks: HashMap<String, LocalTask>,
    remotes: BTreeSet<RemoteEndpoint>,
    adopted: bool,
    /// Tasks prepared ahead of their start, with the namespace each got.
    prepared: HashMap<String, Result<PathBuf, RuntimeError>>,
    /// The swarm's networks this node has (or had) in its data plane.
    swarm_vnis: BTreeSet<u32>,
    /// What gossip says of the other nodes' endpoints, when it runs.
    gossiped: Option<GossipedEndpoints>,
}

impl Executor {
    fn new(deps: ExecutorDeps) -> Self {
        Self {
            deps,
            tasks: HashMap::new(),
            remotes: BTreeSet::new(),
            adopted: false,
            prepared: HashMap::new(),
            swarm_vnis: BTreeSet::new(),
            gossiped: None,
        }
    }

    fn dataplane(&self) -> std::sync::MutexGuard<'_, Dataplane> {
        self.deps.dataplane.locked()
    }

    /// Brings this node to `view`; returns the task states to report.
    fn reconcile(&mut self, view: &NodeView) -> Vec<(String, TaskStatus)> {
        if !self.adopted {
            self.adopt(view);
        }
        self.ensure_networks(view);
        self.prepare_new_tasks(view);
        let mut reports = Vec::new();
        for task in &view.tasks {
            if let Some(status) = self.drive(task) {
                reports.push((task.id.clone(), status));
            }
        }
        // Tasks the store forgot: nothing of them stays.
        let assigned: BTreeSet<&str> = view.tasks.iter().map(|t| t.id.as_str()).collect();
        let gone: Vec<String> = self
            .tasks
            .keys()
            .filter(|id| !assigned.contains(id.as_str()))
            .cloned()
            .collect();
        for id in gone {
            self.finish(&id, Duration::ZERO);
            if let Err(err) = self.deps.runtime.remove(&id) {
                tracing::warn!(task = %id, error = %err, "removing a task failed");
            }
            self.tasks.remove(&id);
        }
        self.sync_remotes(view);
        self.sync_services(view);
        self.prune_networks(view);
        self.deps.resolver.set_records(&dns::records::merge(
            &view.dns,
            &view.remote_endpoints,
            self.gossiped.as_ref(),
        ));
        reports
    }

    /// After a restart: tasks the runtime still holds are picked up again
    /// with their endpoints; the rest of what it holds is removed.
    fn adopt(&mut self, view: &NodeView) {
        self.adopted = true;
        let held = self.deps.runtime.list().unwrap_or_default();
        let endpoint_ids = self.dataplane().local_endpoint_ids();
        for id in held {
            let Some(task) = view.tasks.iter().find(|t| t.id == id) else {
                let _ = self.deps.runtime.remove(&id);
                continue;
            };
            let state = match self.deps.runtime.state(&id) {
                // An exit is seen, and reported, by the next pass.
                Ok(RunState::Running | RunState::Exited { .. }) => {
                    if task.state == TaskState::Starting {
                        TaskState::Starting
                    } else {
                        TaskState::Running
                    }
                }
                _ => task.state,
            };
            let endpoints = endpoint_ids
                .iter()
                .filter(|e| e.starts_with(&format!("{id}-")))
                .cloned()
                .collect();
            tracing::info!(task = %id, "task adopted after a restart");
            if let Err(err) = self
                .deps
                .resolver
                .serve(&id, &netns_path(&id), resolver_client(task))
            {
                tracing::warn!(task = %id, error = %err, "serving an adopted task's resolver failed");
            }
            self.tasks.insert(id, LocalTask { state, endpoints });
        }
    }

    fn remove_all(&mut self) {
        let ids: Vec<String> = self.tasks.keys().cloned().collect();
        for id in ids {
            self.finish(&id, STOP_GRACE_ON_EXIT);
            if let Err(err) = self.deps.runtime.remove(&id) {
                tracing::warn!(task = %id, error = %err, "removing a task failed");
            }
            self.tasks.remove(&id);
        }
    }

    fn ensure_networks(&mut self, view: &NodeView) {
        let mut dataplane = self.dataplane();
        let have: BTreeSet<u32> = dataplane.networks().iter().map(|n| n.vni).collect();
        for network in &view.networks {
            if !have.contains(&network.vni)
                && let Err(err) = dataplane.create_network(network.clone())
            {
                tracing::warn!(vni = network.vni, error = %err, "creating a network failed");
            }
        }
        drop(dataplane);
        self.swarm_vnis
            .extend(view.networks.iter().map(|network| network.vni));
    }

    /// Networks the swarm removed leave this node's data plane once nothing
    /// here uses them. Networks made by hand (`swarm dataplane network
    /// create`) are not the swarm's and stay.
    fn prune_networks(&mut self, view: &NodeView) {
        let wanted: BTreeSet<u32> = view.networks.iter().map(|n| n.vni).collect();
        let gone: Vec<u32> = self.swarm_vnis.difference(&wanted).copied().collect();
        if gone.is_empty() {
            return;
        }
        let mut dataplane = self.deps.dataplane.locked();
        for vni in gone {
            let have = dataplane.networks().iter().any(|n| n.vni == vni);
            match have.then(|| dataplane.remove_network(vni)) {
                Some(Err(err)) => {
                    tracing::debug!(vni, error = %err, "a removed network is still in use here");
                    continue;
                }
                Some(Ok(())) => tracing::info!(vni, "network removed"),
                None => {}
            }
            self.swarm_vnis.remove(&vni);
        }
    }

    /// Moves one assigned task toward its desired state; returns its new
    /// state when it changed.
    fn drive(&mut self, task: &AssignedTask) -> Option<TaskStatus> {
        let local = self.tasks.get(&task.id).map(|t| t.state);
        match (task.desired, local) {
            // Preparing: reported by this node, which then restarted mid-way.
            (TaskState::Running, None) if task.state <= TaskState::Preparing => {
                Some(self.start(task))
            }
            // The managers think it runs here, but this node does not hold
            // it (its daemon stopped and removed it): it failed.
            (TaskState::Running, None) if !task.state.is_terminal() => {
                let lost = status(
                    TaskState::Failed,
                    "lost",
                    "task: not running on its node (the node's daemon restarted without it)".into(),
                    None,
                );
                self.tasks.insert(
                    task.id.clone(),
                    LocalTask {
                        state: TaskState::Failed,
                        endpoints: Vec::new(),
                    },
                );
                Some(lost)
            }
            (TaskState::Running, Some(local @ (TaskState::Starting | TaskState::Running))) => {
                let code = match self.deps.runtime.state(&task.id) {
                    Ok(RunState::Exited { code }) => code,
                    Ok(RunState::Missing) => -1,
                    _ => return self.check_health(task, local),
                };
                self.finish(&task.id, Duration::ZERO);
                let status = if code == 0 {
                    status(TaskState::Complete, "finished", String::new(), Some(0))
                } else {
                    status(
                        TaskState::Failed,
                        "started",
                        format!("task: non-zero exit ({code})"),
                        Some(code),
                    )
                };
                self.set_state(&task.id, status.state);
                Some(status)
            }
            (desired, Some(state)) if desired > TaskState::Running && !state.is_terminal() => {
                self.finish(&task.id, Duration::from_millis(task.stop_grace_millis));
                self.set_state(&task.id, TaskState::Shutdown);
                Some(status(TaskState::Shutdown, "shutdown", String::new(), None))
            }
            _ => self.resend(task),
        }
    }

    /// A running task with a health check: Starting until the check
    /// passes, then Running (a backend); failed when it turns unhealthy.
    fn check_health(&mut self, task: &AssignedTask, local: TaskState) -> Option<TaskStatus> {
        let health = match self.deps.runtime.health(&task.spec) {
            Ok(Some(health)) => health,
            Ok(None) => return self.resend(task),
            Err(err) => {
                tracing::debug!(task = %task.id, error = %err, "reading a task's health failed");
                return self.resend(task);
            }
        };
        match (health, local) {
            (Health::Healthy, TaskState::Starting) => {
                self.set_state(&task.id, TaskState::Running);
                tracing::info!(task = %task.id, name = %task.name, "task healthy: running");
                Some(status(TaskState::Running, "started", String::new(), None))
            }
            (Health::Unhealthy, _) => {
                self.finish(&task.id, Duration::ZERO);
                self.set_state(&task.id, TaskState::Failed);
                tracing::warn!(task = %task.id, name = %task.name, "task unhealthy: stopped");
                Some(status(
                    TaskState::Failed,
                    "unhealthy",
                    "task: unhealthy container (its health check failed)".into(),
                    None,
                ))
            }
            _ => self.resend(task),
        }
    }

    /// The local state again when the managers have not recorded it yet
    /// (a report lost on the way).
    fn resend(&self, task: &AssignedTask) -> Option<TaskStatus> {
        let local = self.tasks.get(&task.id)?.state;
        (local > task.state).then(|| status(local, local.word(), String::new(), None))
    }

    fn set_state(&mut self, id: &str, state: TaskState) {
        if let Some(task) = self.tasks.get_mut(id) {
            task.state = state;
        }
    }

    /// Prepares, wires and starts a task; on failure leaves nothing running.
    fn start(&mut self, task: &AssignedTask) -> TaskStatus {
        self.tasks.insert(
            task.id.clone(),
            LocalTask {
                state: TaskState::Preparing,
                endpoints: Vec::new(),
            },
        );
        match self.try_start(task) {
            // With a health check (the spec's or the image's) it is
            // Starting until the check passes.
            Ok(()) if matches!(self.deps.runtime.health(&task.spec), Ok(Some(_))) => {
                self.set_state(&task.id, TaskState::Starting);
                tracing::info!(task = %task.id, name = %task.name, "task started; waiting for its health check");
                status(TaskState::Starting, "starting", String::new(), None)
            }
            Ok(()) => {
                self.set_state(&task.id, TaskState::Running);
                tracing::info!(task = %task.id, name = %task.name, "task running");
                status(TaskState::Running, "started", String::new(), None)
            }
            Err(err) => {
                tracing::warn!(task = %task.id, error = %err, "task failed to start");
                self.finish(&task.id, Duration::ZERO);
                self.set_state(&task.id, TaskState::Rejected);
                status(TaskState::Rejected, "preparing", err.task_error(), None)
            }
        }
    }

    /// Tasks this node is about to start, each as Preparing.
    fn about_to_start(&self, view: &NodeView) -> Vec<(String, TaskStatus)> {
        view.tasks
            .iter()
            .filter(|t| {
                t.desired == TaskState::Running
                    && t.state <= TaskState::Assigned
                    && !self.tasks.contains_key(&t.id)
            })
            .map(|t| {
                (
                    t.id.clone(),
                    status(TaskState::Preparing, "preparing", String::new(), None),
                )
            })
            .collect()
    }

    /// Prepares the tasks about to start side by side: with Docker that
    /// is creating and starting their containers, the slow part, which the
    /// engine does faster several at a time than one by one.
    fn prepare_new_tasks(&mut self, view: &NodeView) {
        let new: Vec<&AssignedTask> = view
            .tasks
            .iter()
            .filter(|t| {
                t.desired == TaskState::Running
                    && t.state <= TaskState::Preparing
                    && !self.tasks.contains_key(&t.id)
                    && !self.prepared.contains_key(&t.id)
            })
            .collect();
        if new.len() < 2 {
            return;
        }
        let runtime = &self.deps.runtime;
        for batch in new.chunks(PARALLEL_PREPARES) {
            let results: Vec<(String, Result<PathBuf, RuntimeError>)> =
                std::thread::scope(|scope| {
                    let handles: Vec<_> = batch
                        .iter()
                        .map(|task| {
                            scope.spawn(move || {
                                let prepared = runtime.prepare(&task.spec);
                                (task.id.clone(), prepared)
                            })
                        })
                        .collect();
                    handles
                        .into_iter()
                        .filter_map(|handle| handle.join().ok())
                        .collect()
                });
            self.prepared.extend(results);
        }
    }

    fn try_start(&mut self, task: &AssignedTask) -> Result<(), StartError> {
        let netns = match self.prepared.remove(&task.id) {
            Some(prepared) => prepared?,
            None => self.deps.runtime.prepare(&task.spec)?,
        };
        for (index, (vni, ip)) in task.addresses.iter().enumerate() {
            let id = format!("{}-{vni}", task.id);
            let spec = LocalEndpointSpec {
                id: id.clone(),
                vni: *vni,
                netns: netns.clone(),
                ip: *ip,
                iface: Some(format!("eth{index}")),
                default_route: index == 0,
            };
            // A remote entry for this address (the task ran elsewhere
            // before) gives way to the local one.
            let mut dataplane = self.dataplane();
            let _ = dataplane.remove_remote_endpoint(*vni, *ip);
            dataplane
                .attach_endpoint(&spec)
                .map_err(|source| StartError::Attach { vni: *vni, source })?;
            drop(dataplane);
            self.remotes.retain(|r| !(r.vni == *vni && r.ip == *ip));
            if let Some(local) = self.tasks.get_mut(&task.id) {
                local.endpoints.push(id);
            }
        }
        self.deps
            .resolver
            .serve(&task.id, &netns, resolver_client(task))
            .map_err(StartError::Resolver)?;
        Ok(self.deps.runtime.start(&task.spec)?)
    }

    /// Stops a task (after `grace`) and takes it off its networks; its
    /// files and logs stay until the task is removed.
    fn finish(&mut self, id: &str, grace: Duration) {
        self.deps.resolver.stop(id);
        if let Err(err) = self.deps.runtime.stop(id, grace) {
            tracing::warn!(task = %id, error = %err, "stopping a task failed");
        }
        let endpoints = self
            .tasks
            .get_mut(id)
            .map(|t| std::mem::take(&mut t.endpoints))
            .unwrap_or_default();
        let mut dataplane = self.dataplane();
        for endpoint in endpoints {
            if let Err(err) = dataplane.detach_endpoint(&endpoint) {
                tracing::warn!(task = %id, endpoint, error = %err, "detaching a task failed");
            }
        }
    }

    /// What this node gossips: its started tasks' endpoints, with the
    /// names of those running (a task still starting, or failing its
    /// health check, gets no traffic by name).
    fn published_endpoints(&self, view: &NodeView) -> PublishedEndpoints {
        let mut published = PublishedEndpoints::new();
        for task in &view.tasks {
            let Some(local) = self.tasks.get(&task.id) else {
                continue;
            };
            let named = match local.state {
                TaskState::Running => task.desired == TaskState::Running,
                TaskState::Starting => false,
                _ => continue,
            };
            for &(vni, ip) in &task.addresses {
                let names = task
                    .names
                    .iter()
                    .find(|(on, _)| *on == vni && named)
                    .map(|(_, names)| names.clone());
                published.insert((vni, ip), names);
            }
        }
        published
    }

    /// Remote endpoints: the managers' word, less what sits on nodes gossip
    /// holds dead, overridden and completed by what live nodes gossip.
    fn sync_remotes(&mut self, view: &NodeView) {
        // Gossip names nodes by the address they gossip on; overlay traffic
        // goes to their data path address where they have one of their own.
        let data_path = |gossip_addr: Ipv4Addr| {
            view.gossip
                .as_ref()
                .and_then(|g| g.data_paths.get(&gossip_addr).copied())
                .unwrap_or(gossip_addr)
        };
        let dead: BTreeSet<Ipv4Addr> = self
            .gossiped
            .iter()
            .flat_map(|g| g.dead_nodes.iter().map(|n| data_path(*n)))
            .collect();
        let mut by_address: BTreeMap<(u32, Ipv4Addr), RemoteEndpoint> = view
            .remote_endpoints
            .iter()
            .filter(|r| !dead.contains(&r.node))
            .map(|r| ((r.vni, r.ip), r.clone()))
            .collect();
        if let Some(gossiped) = &self.gossiped {
            let local = self.published_endpoints(view);
            for endpoint in &gossiped.endpoints {
                if !local.contains_key(&(endpoint.vni, endpoint.ip)) {
                    let endpoint = RemoteEndpoint {
                        node: data_path(endpoint.node),
                        ..endpoint.clone()
                    };
                    by_address.insert((endpoint.vni, endpoint.ip), endpoint);
                }
            }
        }
        let wanted: BTreeSet<RemoteEndpoint> = by_address.into_values().collect();
        let mut dataplane = self.deps.dataplane.locked();
        for old in self.remotes.difference(&wanted) {
            let _ = dataplane.remove_remote_endpoint(old.vni, old.ip);
        }
        for new in wanted.difference(&self.remotes) {
            let spec = RemoteEndpointSpec {
                vni: new.vni,
                ip: new.ip,
                mac: dataplane::overlay::task_mac(new.ip),
                node: new.node,
            };
            // An entry left by a previous run (or pointing at the node the
            // task ran on before) is replaced.
            let _ = dataplane.remove_remote_endpoint(new.vni, new.ip);
            if let Err(err) = dataplane.add_remote_endpoint(&spec) {
                tracing::debug!(vni = new.vni, ip = %new.ip, error = %err, "remote endpoint not added");
            }
        }
        self.remotes = wanted;
    }

    fn sync_services(&mut self, view: &NodeView) {
        let mut dataplane = self.dataplane();
        let installed: HashMap<String, dataplane::BalancedService> = dataplane
            .service_specs()
            .into_iter()
            .filter(|s| s.name.contains(SERVICE_NAME_MARK))
            .map(|s| (s.name.clone(), s))
            .collect();
        for spec in &view.services {
            let result = match installed.get(&spec.name) {
                Some(current) if current == spec => Ok(()),
                Some(current)
                    if dataplane::BalancedService {
                        backends: spec.backends.clone(),
                        ..current.clone()
                    } == *spec =>
                {
                    let add: Vec<_> = spec
                        .backends
                        .iter()
                        .filter(|b| !current.backends.contains(b))
                        .copied()
                        .collect();
                    let remove: Vec<_> = current
                        .backends
                        .iter()
                        .filter(|b| !spec.backends.contains(b))
                        .copied()
                        .collect();
                    dataplane.update_service_backends(&spec.name, &add, &remove)
                }
                Some(_) => dataplane
                    .remove_service(&spec.name)
                    .and_then(|()| dataplane.create_service(spec.clone())),
                None => dataplane.create_service(spec.clone()),
            };
            if let Err(err) = result {
                tracing::warn!(service = %spec.name, error = %err, "programming a service failed");
            }
        }
        for name in installed.keys() {
            if !view.services.iter().any(|s| &s.name == name)
                && let Err(err) = dataplane.remove_service(name)
            {
                tracing::warn!(service = %name, error = %err, "removing a service failed");
            }
        }
    }
}

fn status(state: TaskState, message: &str, err: String, exit_code: Option<i32>) -> TaskStatus {
    TaskStatus {
        state,
        timestamp_millis: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        message: message.to_owned(),
        err,
        exit_code,
    }
}

/// What the task's resolver serves it: names on its networks, others
/// forwarded to its `--dns` servers or the daemon's.
fn resolver_client(task: &AssignedTask) -> crate::dns::TaskClient {
    let vnis = task.addresses.iter().map(|(vni, _)| *vni).collect();
    crate::dns::TaskClient::new(vnis, &task.spec.container.dns_servers)
}
