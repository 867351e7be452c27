//! The leader's reconciliation: from the store and which nodes are alive,
//! the task changes that bring every service to its declared state. It
//! makes tasks for empty slots (replicated) and eligible nodes (global),
//! applies restart policies, replaces tasks on dead or drained nodes, rolls
//! updates out batch by batch, schedules new tasks and trims history. It is
//! a pure function of its inputs, so it is tested without a cluster; the
//! leader's loop here commits what it returns.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use super::{
    Manager, jobs,
    scheduler::{satisfies, schedule},
    store::{
        ClusterState, Command, NodeRecord,
        services::{ServiceRecord, TaskChange, TaskRecord, UpdateState, UpdateStatus},
    },
};
use crate::{
    api::{
        Availability, ClusterError,
        specs::{FailureAction, RestartCondition, ServiceMode, ServiceSpec, UpdateOrder},
        tasks::{TaskState, TaskStatus},
    },
    clock::now_millis,
    identity::new_id,
};

/// How often the leader reconciles when nothing wakes it sooner.
const RECONCILE_PERIOD: Duration = Duration::from_millis(100);

impl Manager {
    /// The leader's loop: reconcile services and tasks, commit the changes.
    pub fn start_orchestrator(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        self.runtime.spawn(async move {
            loop {
                tokio::time::sleep(RECONCILE_PERIOD).await;
                let Some(membership) = weak.upgrade() else {
                    return;
                };
                let pass = tokio::task::spawn_blocking(move || membership.reconcile_once()).await;
                if let Ok(Err(err)) = pass {
                    tracing::debug!(error = %err, "reconciliation pass failed");
                }
            }
        });
    }

    /// Docker's managers rotate the gossip key every 12 hours; so does the
    /// leader here, at the swarm's `--gossip-key-rotation`.
    fn rotate_gossip_key_if_due(&self) -> Result<(), ClusterError> {
        let now = now_millis() / 1000;
        if self.read_store(|s| s.gossip_key_due(now))? {
            tracing::info!("rotating the gossip key");
            self.commit_here(Command::rotate_gossip_key(now))?;
        }
        Ok(())
    }

    fn reconcile_once(&self) -> Result<(), ClusterError> {
        let Ok(raft) = self.raft() else {
            return Ok(());
        };
        if !raft.is_leader() {
            return Ok(());
        }
        self.rotate_gossip_key_if_due()?;
        let now = now_millis();
        let plan = self.read_store(|s| {
            let period = Duration::from_millis(s.heartbeat_millis.max(1));
            let ready: BTreeSet<String> = s
                .nodes
                .keys()
                .filter(|id| **id == self.node.node_id || self.alive(id, period))
                .cloned()
                .collect();
            reconcile(s, &ready, now, &mut new_id)
        })?;
        if plan.is_empty() {
            return Ok(());
        }
        for (id, spec) in plan.rollbacks {
            tracing::warn!(service = %id, "update failed; rolling back");
            self.commit_here(Command::UpdateService {
                id,
                spec: Box::new(spec),
                rollback: true,
                at: now / 1000,
                expect_version: None,
            })?;
        }
        for (id, status) in plan.update_statuses {
            tracing::info!(service = %id, state = ?status.state, "update status");
            self.commit_here(Command::SetUpdateStatus { id, status })?;
        }
        if !plan.tasks.is_empty() {
            self.commit_here(Command::Tasks(plan.tasks))?;
        }
        Ok(())
    }
}

/// What the leader commits after one pass.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub tasks: Vec<TaskChange>,
    pub update_statuses: Vec<(String, UpdateStatus)>,
    /// Services whose failed update rolls back to their previous spec.
    pub rollbacks: Vec<(String, ServiceSpec)>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty() && self.update_statuses.is_empty() && self.rollbacks.is_empty()
    }
}

/// One reconciliation pass. `ready` holds the nodes the leader hears from;
/// `new_id` names new tasks.
pub fn reconcile(
    state: &ClusterState,
    ready: &BTreeSet<String>,
    now_millis: u64,
    new_id: &mut dyn FnMut() -> String,
) -> Plan {
    let mut plan = Plan::default();
    let mut created = Vec::new();
    let mut desired: BTreeMap<String, TaskState> = BTreeMap::new();

    // Tasks whose service is gone, or that are to be removed.
    for task in state.tasks.values() {
        let orphan = !state.services.contains_key(&task.service_id);
        if orphan || task.desired == TaskState::Remove {
            let node_ready = task.node_id.as_ref().is_some_and(|n| ready.contains(n));
            if task.status.state.is_terminal() || !node_ready {
                plan.tasks.push(TaskChange::Delete {
                    id: task.id.clone(),
                });
            } else if task.desired != TaskState::Remove {
                desired.insert(task.id.clone(), TaskState::Remove);
            }
        }
    }

    for service in state.services.values() {
        let tasks: Vec<&TaskRecord> = state
            .tasks
            .values()
            .filter(|t| t.service_id == service.id && t.desired != TaskState::Remove)
            .collect();
        let eligible_node = |node: &NodeRecord| {
            ready.contains(&node.id)
                && node.availability != Availability::Drain
                && satisfies(node, &service.spec.constraints)
        };
        // Slots: 1..=replicas (or completions), or one per eligible node for
        // global services.
        let mut slots: BTreeMap<SlotKey, Vec<&TaskRecord>> = BTreeMap::new();
        let wanted: BTreeSet<SlotKey> = match service.spec.mode {
            ServiceMode::Replicated { replicas: count }
            | ServiceMode::ReplicatedJob {
                total_completions: count,
                ..
            } => (1..=count).map(SlotKey::Slot).collect(),
            ServiceMode::Global | ServiceMode::GlobalJob => state
                .nodes
                .values()
                .filter(|n| eligible_node(n))
                .map(|n| SlotKey::Node(n.id.clone()))
                .collect(),
        };
        for task in &tasks {
            let key = if service.spec.mode.is_global() {
                SlotKey::Node(task.node_id.clone().unwrap_or_default())
            } else {
                SlotKey::Slot(task.slot)
            };
            slots.entry(key).or_default().push(task);
        }
        for list in slots.values_mut() {
            list.sort_by_key(|t| (t.created_at_millis, t.id.clone()));
        }

        if service.spec.mode.is_job() {
            let pass = jobs::JobPass {
                service,
                state,
                ready,
                slots: &slots,
                wanted: &wanted,
                now_millis,
            };
            created.extend(pass.reconcile(&mut desired, new_id));
            trim_history(&slots, state.task_history(), &mut plan.tasks);
            continue;
        }

        // Live tasks that have to go: on a dead, drained or (global) no
        // longer eligible node; ended; or beyond the replica count.
        for (key, list) in &slots {
            for task in list.iter().filter(|t| t.desired == TaskState::Running) {
                let node = task.node_id.as_ref().and_then(|n| state.nodes.get(n));
                let lost = match (&task.node_id, node) {
                    (None, _) => false,
                    (Some(_), None) => true,
                    (Some(id), Some(node)) => {
                        !ready.contains(id) || node.availability == Availability::Drain
                    }
                };
                if !wanted.contains(key) {
                    desired.insert(task.id.clone(), TaskState::Remove);
                } else if lost
                    || task.status.state.is_terminal()
                    || (matches!(key, SlotKey::Node(_))
                        && node.is_some_and(|n| !satisfies(n, &service.spec.constraints)))
                {
                    desired.insert(task.id.clone(), TaskState::Shutdown);
                }
            }
        }

        let update = rolling_update(
            service,
            &slots,
            wanted.len() as u64,
            &desired,
            now_millis,
            &mut plan,
        );
        for key in &wanted {
            // A paused node keeps its global task as it is: nothing new
            // starts there, an update included (swarmkit's rule).
            if let SlotKey::Node(id) = key
                && state
                    .nodes
                    .get(id)
                    .is_some_and(|n| n.availability != Availability::Active)
            {
                continue;
            }
            let list = slots.get(key).map(Vec::as_slice).unwrap_or_default();
            let live: Vec<&&TaskRecord> = list
                .iter()
                .filter(|t| {
                    t.desired == TaskState::Running
                        && desired.get(&t.id).is_none_or(|d| *d == TaskState::Running)
                })
                .collect();
            let current = live.iter().any(|t| t.spec_version == service.version);
            let outdated: Vec<&&&TaskRecord> = live
                .iter()
                .filter(|t| t.spec_version != service.version)
                .collect();
            if live.is_empty() {
                if restart_decision(service, list, now_millis) == Restart::Now {
                    created.push(new_task(service, key, new_id(), now_millis));
                }
                continue;
            }
            if outdated.is_empty() || !update.proceed {
                continue;
            }
            if current {
                // start-first: the new task is up; the old one goes.
                let new_running = live.iter().any(|t| {
                    t.spec_version == service.version && t.status.state == TaskState::Running
                });
                if new_running {
                    for old in &outdated {
                        desired.insert(old.id.clone(), TaskState::Shutdown);
                    }
                }
                continue;
            }
            if update.budget.get() == 0 {
                continue;
            }
            update.budget.set(update.budget.get() - 1);
            if update.order == UpdateOrder::StopFirst {
                for old in &outdated {
                    desired.insert(old.id.clone(), TaskState::Shutdown);
                }
            }
            created.push(new_task(service, key, new_id(), now_millis));
        }

        trim_history(&slots, state.task_history(), &mut plan.tasks);
    }

    for (id, state) in desired {
        plan.tasks
            .push(TaskChange::SetDesired { id, desired: state });
    }
    schedule(state, ready, &mut created, &mut plan.tasks, now_millis);
    plan
}

/// History: the latest `keep` ended tasks of each slot stay for `ps`.
fn trim_history(
    slots: &BTreeMap<SlotKey, Vec<&TaskRecord>>,
    keep: usize,
    changes: &mut Vec<TaskChange>,
) {
    for list in slots.values() {
        let ended: Vec<&&TaskRecord> = list
            .iter()
            .filter(|t| t.desired != TaskState::Running && t.status.state.is_terminal())
            .collect();
        for task in ended.iter().take(ended.len().saturating_sub(keep)) {
            changes.push(TaskChange::Delete {
                id: task.id.clone(),
            });
        }
    }
}

/// A slot of a replicated service, or the node of a global one.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum SlotKey {
    Slot(u64),
    Node(String),
}

struct UpdatePass {
    /// Whether outdated tasks are replaced in this pass.
    proceed: bool,
    /// How many more slots this pass may start replacing.
    budget: std::cell::Cell<u64>,
    order: UpdateOrder,
}

/// Decides how far a rolling update moves in this pass, and records its
/// completion, pause or rollback in `plan`.
fn rolling_update(
    service: &ServiceRecord,
    slots: &BTreeMap<SlotKey, Vec<&TaskRecord>>,
    slot_count: u64,
    desired: &BTreeMap<String, TaskState>,
    now_millis: u64,
    plan: &mut Plan,
) -> UpdatePass {
    let rollback = matches!(
        service.update_status.as_ref().map(|s| s.state),
        Some(UpdateState::RollbackStarted)
    );
    let config = if rollback {
        &service.spec.rollback
    } else {
        &service.spec.update
    };
    let idle = UpdatePass {
        proceed: false,
        budget: std::cell::Cell::new(0),
        order: config.order,
    };
    let Some(status) = &service.update_status else {
        // Never updated: outdated tasks cannot exist.
        return idle;
    };
    if !matches!(
        status.state,
        UpdateState::Updating | UpdateState::RollbackStarted
    ) {
        return idle;
    }
    let tasks = || slots.values().flatten();
    let new_tasks: Vec<&&TaskRecord> = tasks()
        .filter(|t| t.spec_version == service.version)
        .collect();
    // New tasks that failed or ended (rather than being stopped) within
    // their monitor period; past the ratio of the slots updated, the
    // failure action applies (swarmkit's updater).
    let failures: Vec<&&&TaskRecord> = new_tasks
        .iter()
        .filter(|t| failed_while_monitored(t, status.started_at * 1000, config.monitor_millis))
        .collect();
    let last_failure = failures.iter().max_by_key(|t| t.status.timestamp_millis);
    if let Some(task) = last_failure
        && config
            .max_failure_ratio
            .exceeded(failures.len() as u64, slot_count)
        && config.failure_action != FailureAction::Continue
    {
        let what = if rollback { "rollback" } else { "update" };
        let message = format!(
            "{what} paused due to failure or early termination of task {}: {}",
            task.id, task.status.err
        );
        if config.failure_action == FailureAction::Rollback
            && !rollback
            && let Some(previous) = &service.previous_spec
        {
            plan.rollbacks.push((service.id.clone(), previous.clone()));
        } else {
            plan.update_statuses.push((
                service.id.clone(),
                UpdateStatus {
                    state: if rollback {
                        UpdateState::RollbackPaused
                    } else {
                        UpdateState::Paused
                    },
                    started_at: status.started_at,
                    completed_at: None,
                    message,
                },
            ));
        }
        return idle;
    }
    let live = |t: &&&TaskRecord| {
        t.desired == TaskState::Running
            && desired.get(&t.id).is_none_or(|d| *d == TaskState::Running)
    };
    let outdated = tasks()
        .filter(live)
        .any(|t| t.spec_version != service.version);
    // A new task counts as updated once it has run for the monitor period.
    let starting = new_tasks
        .iter()
        .filter(|t| {
            live(t)
                && (t.status.state < TaskState::Running
                    || now_millis < t.status.timestamp_millis + config.monitor_millis)
        })
        .count() as u64;
    if !outdated && starting == 0 {
        plan.update_statuses.push((
            service.id.clone(),
            UpdateStatus {
                state: if rollback {
                    UpdateState::RollbackCompleted
                } else {
                    UpdateState::Completed
                },
                started_at: status.started_at,
                completed_at: Some(now_millis / 1000),
                message: if rollback {
                    "rollback completed".into()
                } else {
                    "update completed".into()
                },
            },
        ));
        return idle;
    }
    // The next batch waits for the last one to run, then for the delay.
    let last_batch = new_tasks
        .iter()
        .map(|t| t.created_at_millis)
        .max()
        .unwrap_or(0);
    if starting > 0 || now_millis < last_batch + config.delay_millis {
        return UpdatePass {
            proceed: true,
            budget: std::cell::Cell::new(0),
            order: config.order,
        };
    }
    let parallelism = if config.parallelism == 0 {
        u64::MAX
    } else {
        config.parallelism
    };
    UpdatePass {
        proceed: true,
        budget: std::cell::Cell::new(parallelism),
        order: config.order,
    }
}

/// Whether a task of an update failed or ended by itself before it had
/// run for the monitor period (`update_started` and the result in ms).
fn failed_while_monitored(task: &TaskRecord, update_started: u64, monitor_millis: u64) -> bool {
    let ended = matches!(
        task.status.state,
        TaskState::Failed | TaskState::Rejected | TaskState::Complete
    );
    ended
        && task.status.timestamp_millis >= update_started
        && task
            .running_since_millis
            .is_none_or(|since| task.status.timestamp_millis <= since + monitor_millis)
}

/// What the restart policy says of a slot whose tasks have all ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Restart {
    /// A new task now.
    Now,
    /// A new task once the restart delay has passed.
    Later,
    /// No new task: the condition or the attempts say so.
    Never,
}

/// Decides, per the restart policy (condition, delay, attempts within the
/// window), whether a slot whose tasks have all ended gets a new one.
pub(super) fn restart_decision(
    service: &ServiceRecord,
    history: &[&TaskRecord],
    now_millis: u64,
) -> Restart {
    let Some(last) = history.last() else {
        return Restart::Now;
    };
    // Replaced rather than ended (node lost, drained, scaled, updated):
    // always comes back, at once.
    if !last.status.state.is_terminal() || last.status.state == TaskState::Shutdown {
        return Restart::Now;
    }
    let policy = &service.spec.restart;
    let failed = last.status.state != TaskState::Complete;
    let allowed = match policy.condition {
        // A job that completed is done, whatever the condition.
        RestartCondition::Any => failed || !service.spec.mode.is_job(),
        RestartCondition::OnFailure => failed,
        RestartCondition::None => false,
    };
    if !allowed {
        return Restart::Never;
    }
    if policy.max_attempts > 0 && counted_restarts(service, history, last) >= policy.max_attempts {
        return Restart::Never;
    }
    if now_millis >= last.status.timestamp_millis + policy.delay_millis {
        Restart::Now
    } else {
        Restart::Later
    }
}

/// The restarts of the slot that count toward `--restart-max-attempts`:
/// those at the current spec, and with a window only those made within it
/// before `last` ended (swarmkit's restart supervisor).
fn counted_restarts(service: &ServiceRecord, history: &[&TaskRecord], last: &TaskRecord) -> u64 {
    let runs = history
        .iter()
        .filter(|t| t.spec_version == service.version && t.status.state.is_terminal());
    // The first run is not a restart.
    let restarts = runs.skip(1);
    let window = service.spec.restart.window_millis;
    if window == 0 {
        return restarts.count() as u64;
    }
    let since = last.status.timestamp_millis.saturating_sub(window);
    restarts.filter(|t| t.created_at_millis > since).count() as u64
}

pub(super) fn new_task(
    service: &ServiceRecord,
    key: &SlotKey,
    id: String,
    now_millis: u64,
) -> TaskRecord {
    let (slot, node_id) = match key {
        SlotKey::Slot(slot) => (*slot, None),
        SlotKey::Node(node) => (0, Some(node.clone())),
    };
    TaskRecord {
        id,
        service_id: service.id.clone(),
        slot,
        node_id,
        spec_version: service.version,
        spec: service.spec.clone(),
        desired: TaskState::Running,
        status: TaskStatus {
            state: TaskState::New,
            timestamp_millis: now_millis,
            message: "created".into(),
            err: String::new(),
            exit_code: None,
        },
        addresses: BTreeMap::new(),
        created_at_millis: now_millis,
        running_since_millis: None,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::{
        api::{NodeResources, Role, specs::FailureRatio},
        manager::store::{fixtures::store, services::ServiceCreate},
    };

    fn spec(name: &str, mode: ServiceMode) -> ServiceSpec {
        ServiceSpec {
            args: vec!["sleep".into(), "1000".into()],
            ports: vec!["8080:80".parse().unwrap()],
            stop_grace_millis: 0,
            ..ServiceSpec::new(name, "host", mode)
        }
    }

    /// Runs passes (committing each) until nothing changes; agents report
    /// every assigned task Running.
    fn settle(state: &mut ClusterState, ready: &BTreeSet<String>) {
        // New IDs after those a settle before made.
        let mut next = state
            .tasks
            .keys()
            .filter_map(|id| id.strip_prefix('t')?.parse::<usize>().ok())
            .max()
            .unwrap_or(0);
        for _ in 0..20 {
            let plan = reconcile(state, ready, 1_000_000, &mut || {
                next += 1;
                format!("t{next:03}")
            });
            if plan.is_empty() {
                return;
            }
            state.change_tasks(plan.tasks);
            let running: Vec<TaskChange> = state
                .tasks
                .values()
                .filter(|t| t.status.state == TaskState::Assigned)
                .map(|t| TaskChange::Status {
                    id: t.id.clone(),
                    status: TaskStatus {
                        state: TaskState::Running,
                        timestamp_millis: 0,
                        message: String::new(),
                        err: String::new(),
                        exit_code: None,
                    },
                })
                .collect();
            state.change_tasks(running);
        }
        panic!("never settled");
    }

    fn report(id: &str, state: TaskState, at: u64) -> TaskChange {
        TaskChange::Status {
            id: id.to_owned(),
            status: TaskStatus {
                state,
                timestamp_millis: at,
                message: String::new(),
                err: String::new(),
                exit_code: None,
            },
        }
    }

    /// A small cluster run by hand: each `step` is one orchestrator pass
    /// at `now`, then the agents' reports, which `outcome` decides for
    /// every task that runs (None: it keeps running).
    pub(in crate::manager) struct Cluster {
        pub state: ClusterState,
        pub ready: BTreeSet<String>,
        next_id: usize,
        pub now: u64,
    }

    impl Cluster {
        pub fn new(nodes: &[(&str, Role)], spec: ServiceSpec) -> Self {
            let mut state = store(nodes);
            state
                .create_service(ServiceCreate {
                    id: "s".into(),
                    spec,
                    at: 0,
                })
                .unwrap();
            let ready = state.nodes.keys().cloned().collect();
            Self {
                state,
                ready,
                next_id: 0,
                now: 1_000,
            }
        }

        pub fn step(&mut self, outcome: &dyn Fn(&TaskRecord) -> Option<TaskState>) {
            self.now += 100;
            let next = &mut self.next_id;
            let plan = reconcile(&self.state, &self.ready, self.now, &mut || {
                *next += 1;
                format!("t{next:03}")
            });
            for (id, spec) in plan.rollbacks {
                self.state
                    .update_service(&id, spec, true, self.now / 1000)
                    .unwrap();
            }
            for (id, status) in plan.update_statuses {
                self.state.set_update_status(&id, status).unwrap();
            }
            self.state.change_tasks(plan.tasks);
            let reports: Vec<TaskChange> = self
                .state
                .tasks
                .values()
                .filter_map(|t| match t.status.state {
                    TaskState::Assigned => Some(report(&t.id, TaskState::Running, self.now)),
                    TaskState::Running if t.desired != TaskState::Running => {
                        Some(report(&t.id, TaskState::Shutdown, self.now))
                    }
                    TaskState::Running => outcome(t).map(|s| report(&t.id, s, self.now)),
                    _ => None,
                })
                .collect();
            self.state.change_tasks(reports);
        }

        pub fn running(&self) -> usize {
            self.state.tasks.values().filter(|t| t.is_running()).count()
        }

        pub fn count(&self, state: TaskState) -> usize {
            self.state
                .tasks
                .values()
                .filter(|t| t.status.state == state)
                .count()
        }
    }

    fn per_node(state: &ClusterState) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for task in state
            .tasks
            .values()
            .filter(|t| t.desired == TaskState::Running)
        {
            *counts.entry(task.node_id.clone().unwrap()).or_default() += 1;
        }
        counts
    }

    #[test]
    fn replicas_spread_evenly_get_addresses_and_follow_dead_nodes() {
        let mut state = store(&[
            ("m1", Role::Manager),
            ("w1", Role::Worker),
            ("w2", Role::Worker),
        ]);
        state
            .create_service(ServiceCreate {
                id: "s".into(),
                spec: spec("web", ServiceMode::Replicated { replicas: 7 }),
                at: 0,
            })
            .unwrap();
        let all: BTreeSet<String> = state.nodes.keys().cloned().collect();
        settle(&mut state, &all);
        let counts = per_node(&state);
        assert_eq!(counts.values().sum::<usize>(), 7);
        assert!(counts.values().max().unwrap() - counts.values().min().unwrap() <= 1);
        let addresses: BTreeSet<Ipv4Addr> =
            state.tasks.values().map(|t| t.addresses["i"]).collect();
        assert_eq!(addresses.len(), 7, "every task its own address");
        assert!(!addresses.contains(&state.services["s"].vips["i"]));

        // w2 dies: its tasks are replaced on the others.
        let alive: BTreeSet<String> = ["m1", "w1"].map(String::from).into();
        settle(&mut state, &alive);
        let counts = per_node(&state);
        assert_eq!(counts.get("w2"), None, "{counts:?}");
        assert_eq!(counts.values().sum::<usize>(), 7);
    }

    #[test]
    fn updates_keep_the_vip_and_the_published_ports() {
        let mut state = store(&[("m1", Role::Manager)]);
        let mut web = spec("web", ServiceMode::Replicated { replicas: 1 });
        web.ports = vec!["80".parse().unwrap()];
        state
            .create_service(ServiceCreate {
                id: "s".into(),
                spec: web.clone(),
                at: 0,
            })
            .unwrap();
        let all: BTreeSet<String> = state.nodes.keys().cloned().collect();
        settle(&mut state, &all);
        let before = state.services["s"].clone();
        web.mode = ServiceMode::Replicated { replicas: 3 };
        web.env = vec!["V=2".into()];
        state.update_service("s", web, false, 1).unwrap();
        let after = &state.services["s"];
        assert_eq!(after.vips, before.vips);
        assert_eq!(after.ports, before.ports);
        assert!(after.ports[0].published.is_some());
    }

    #[test]
    fn reservations_place_only_where_they_fit() {
        let mut state = store(&[("m1", Role::Manager), ("w1", Role::Worker)]);
        for node in state.nodes.values_mut() {
            node.resources = NodeResources {
                nano_cpus: 2_000_000_000,
                memory_bytes: 1 << 30,
            };
        }
        let mut heavy = spec("heavy", ServiceMode::Replicated { replicas: 3 });
        heavy.reservations.nano_cpus = Some(1_500_000_000);
        state
            .create_service(ServiceCreate {
                id: "h".into(),
                spec: heavy,
                at: 0,
            })
            .unwrap();
        let mut light = spec("light", ServiceMode::Replicated { replicas: 2 });
        light.reservations.memory_bytes = Some(512 << 20);
        light.ports.clear();
        state
            .create_service(ServiceCreate {
                id: "l".into(),
                spec: light,
                at: 0,
            })
            .unwrap();
        let all: BTreeSet<String> = state.nodes.keys().cloned().collect();
        settle(&mut state, &all);
        let placed = |service: &str| {
            let mut nodes: Vec<String> = state
                .tasks
                .values()
                .filter(|t| t.service_id == service)
                .filter_map(|t| t.node_id.clone())
                .collect();
            nodes.sort();
            nodes
        };
        // 1.5 of 2 CPUs: one heavy task per node; the third waits.
        assert_eq!(placed("h"), ["m1", "w1"]);
        let waiting: Vec<&TaskRecord> = state
            .tasks
            .values()
            .filter(|t| t.service_id == "h" && t.node_id.is_none())
            .collect();
        assert_eq!(waiting.len(), 1);
        assert_eq!(waiting[0].status.state, TaskState::Pending);
        assert_eq!(
            waiting[0].status.err,
            "no suitable node (insufficient resources on 2)"
        );
        // Memory is counted apart from CPUs: both light tasks fit.
        assert_eq!(placed("l").len(), 2);
    }

    #[test]
    fn constraints_and_global_services_place_where_they_may() {
        let mut state = store(&[
            ("m1", Role::Manager),
            ("w1", Role::Worker),
            ("w2", Role::Worker),
        ]);
        let mut workers = spec("work", ServiceMode::Replicated { replicas: 4 });
        workers.constraints = vec!["node.role==worker".parse().unwrap()];
        workers.ports.clear();
        state
            .create_service(ServiceCreate {
                id: "a".into(),
                spec: workers,
                at: 0,
            })
            .unwrap();
        let mut global = spec("agent", ServiceMode::Global);
        global.ports = vec!["9000:90".parse().unwrap()];
        state
            .create_service(ServiceCreate {
                id: "g".into(),
                spec: global,
                at: 0,
            })
            .unwrap();
        let all: BTreeSet<String> = state.nodes.keys().cloned().collect();
        settle(&mut state, &all);
        let of = |service: &str| {
            let mut nodes: Vec<String> = state
                .tasks
                .values()
                .filter(|t| t.service_id == service && t.desired == TaskState::Running)
                .map(|t| t.node_id.clone().unwrap())
                .collect();
            nodes.sort();
            nodes
        };
        assert_eq!(of("a"), ["w1", "w1", "w2", "w2"]);
        assert_eq!(of("g"), ["m1", "w1", "w2"]);
        // An unsatisfiable constraint leaves the task pending with why.
        let mut nowhere = spec("nowhere", ServiceMode::Replicated { replicas: 1 });
        nowhere.constraints = vec!["node.labels.zone==b".parse().unwrap()];
        nowhere.ports.clear();
        state
            .create_service(ServiceCreate {
                id: "n".into(),
                spec: nowhere,
                at: 0,
            })
            .unwrap();
        settle(&mut state, &all);
        let pending = state.tasks.values().find(|t| t.service_id == "n").unwrap();
        assert_eq!(pending.status.state, TaskState::Pending);
        assert_eq!(
            pending.status.err,
            "no suitable node (scheduling constraints not satisfied on 3)"
        );
    }

    #[test]
    fn a_paused_node_gets_no_new_global_task_but_keeps_its_own() {
        let mut state = store(&[
            ("m1", Role::Manager),
            ("w1", Role::Worker),
            ("w2", Role::Worker),
        ]);
        state.nodes.get_mut("w1").unwrap().availability = Availability::Pause;
        state
            .create_service(ServiceCreate {
                id: "g".into(),
                spec: spec("agent", ServiceMode::Global),
                at: 0,
            })
            .unwrap();
        let all: BTreeSet<String> = state.nodes.keys().cloned().collect();
        settle(&mut state, &all);
        let on = |state: &ClusterState| {
            let mut nodes: Vec<String> = state
                .tasks
                .values()
                .filter(|t| t.desired == TaskState::Running)
                .map(|t| t.node_id.clone().unwrap())
                .collect();
            nodes.sort();
            nodes
        };
        assert_eq!(on(&state), ["m1", "w2"]);
        state.nodes.get_mut("w1").unwrap().availability = Availability::Active;
        state.nodes.get_mut("w2").unwrap().availability = Availability::Pause;
        settle(&mut state, &all);
        assert_eq!(on(&state), ["m1", "w1", "w2"]);
    }

    #[test]
    fn spread_preferences_and_a_per_node_maximum_shape_placement() {
        let mut state = store(&[
            ("a1", Role::Manager),
            ("a2", Role::Worker),
            ("b1", Role::Worker),
        ]);
        for (node, zone) in [("a1", "a"), ("a2", "a"), ("b1", "b")] {
            state
                .nodes
                .get_mut(node)
                .unwrap()
                .labels
                .insert("zone".into(), zone.into());
        }
        let mut spread = spec("spread", ServiceMode::Replicated { replicas: 4 });
        spread.ports.clear();
        spread.placement_prefs = vec!["node.labels.zone".into()];
        state
            .create_service(ServiceCreate {
                id: "s".into(),
                spec: spread,
                at: 0,
            })
            .unwrap();
        let mut capped = spec("capped", ServiceMode::Replicated { replicas: 4 });
        capped.ports.clear();
        capped.max_replicas_per_node = Some(1);
        state
            .create_service(ServiceCreate {
                id: "c".into(),
                spec: capped,
                at: 0,
            })
            .unwrap();
        let all: BTreeSet<String> = state.nodes.keys().cloned().collect();
        settle(&mut state, &all);
        let count = |service: &str, node: &str| {
            state
                .tasks
                .values()
                .filter(|t| t.service_id == service && t.node_id.as_deref() == Some(node))
                .count()
        };
        // Zone b (one node) holds half of the spread service's tasks.
        assert_eq!(count("s", "b1"), 2);
        assert_eq!(count("s", "a1") + count("s", "a2"), 2);
        // One task per node; the fourth waits, saying why.
        for node in ["a1", "a2", "b1"] {
            assert_eq!(count("c", node), 1);
        }
        let waiting = state
            .tasks
            .values()
            .find(|t| t.service_id == "c" && t.node_id.is_none())
            .unwrap();
        assert_eq!(
            waiting.status.err,
            "no suitable node (max replicas per node limit exceed on 3)"
        );
    }

    /// A replicated service of four, updated to a spec whose tasks fail at
    /// once; returns the update's state and the new tasks that failed.
    fn failing_update(ratio: f32, action: FailureAction) -> (UpdateState, usize) {
        let mut web = spec("web", ServiceMode::Replicated { replicas: 4 });
        web.ports.clear();
        web.update.max_failure_ratio = FailureRatio::new(ratio).unwrap();
        web.update.failure_action = action;
        web.update.monitor_millis = 10_000;
        web.restart.condition = RestartCondition::None;
        let mut cluster = Cluster::new(&[("m1", Role::Manager)], web.clone());
        for _ in 0..5 {
            cluster.step(&|_| None);
        }
        assert_eq!(cluster.running(), 4);
        web.args = vec!["false".into()];
        cluster
            .state
            .update_service("s", web, false, cluster.now / 1000)
            .unwrap();
        for _ in 0..40 {
            cluster.step(&|t| (t.spec_version == 2).then_some(TaskState::Failed));
        }
        let service = &cluster.state.services["s"];
        let failed = cluster
            .state
            .tasks
            .values()
            .filter(|t| t.spec_version == 2 && t.status.state == TaskState::Failed)
            .count();
        (service.update_status.as_ref().unwrap().state, failed)
    }

    #[test]
    fn an_update_pauses_once_failures_pass_the_max_failure_ratio() {
        // Ratio 0: the first failure pauses the update.
        assert_eq!(
            failing_update(0.0, FailureAction::Pause),
            (UpdateState::Paused, 1)
        );
        // 0.5 of four slots: two failures are tolerated, the third is not.
        assert_eq!(
            failing_update(0.5, FailureAction::Pause),
            (UpdateState::Paused, 3)
        );
        // A ratio of 1 tolerates every failure: the update runs through.
        assert_eq!(
            failing_update(1.0, FailureAction::Pause),
            (UpdateState::Completed, 4)
        );
        // Continue never stops.
        assert_eq!(
            failing_update(0.0, FailureAction::Continue),
            (UpdateState::Completed, 4)
        );
    }

    #[test]
    fn a_failure_after_the_monitor_period_does_not_count() {
        let task = |running_since: Option<u64>, failed_at: u64| TaskRecord {
            running_since_millis: running_since,
            status: TaskStatus {
                state: TaskState::Failed,
                timestamp_millis: failed_at,
                message: String::new(),
                err: String::new(),
                exit_code: Some(1),
            },
            ..new_task(
                &ServiceRecord {
                    id: "s".into(),
                    spec: spec("web", ServiceMode::Replicated { replicas: 1 }),
                    previous_spec: None,
                    version: 2,
                    created_at: 0,
                    updated_at: 0,
                    vips: BTreeMap::new(),
                    ports: Vec::new(),
                    update_status: None,
                    revision: 1,
                },
                &SlotKey::Slot(1),
                "t".into(),
                0,
            )
        };
        assert!(failed_while_monitored(&task(None, 2_000), 1_000, 5_000));
        assert!(failed_while_monitored(
            &task(Some(2_000), 6_000),
            1_000,
            5_000
        ));
        assert!(!failed_while_monitored(
            &task(Some(2_000), 8_000),
            1_000,
            5_000
        ));
        // Ended before this update began: another update's failure.
        assert!(!failed_while_monitored(&task(None, 500), 1_000, 5_000));
    }

    #[test]
    fn only_restarts_within_the_window_count_toward_max_attempts() {
        let mut crashing = spec("crash", ServiceMode::Replicated { replicas: 1 });
        crashing.ports.clear();
        crashing.restart.delay_millis = 0;
        crashing.restart.max_attempts = 1;
        let run_for = |window_millis: u64| {
            let mut crashing = crashing.clone();
            crashing.restart.window_millis = window_millis;
            let mut cluster = Cluster::new(&[("m1", Role::Manager)], crashing);
            // Each task runs a second (ten steps), then fails.
            for _ in 0..100 {
                let now = cluster.now;
                cluster
                    .step(&|t| (now >= t.created_at_millis + 1_000).then_some(TaskState::Failed));
            }
            cluster.state.tasks.len()
        };
        // No window: one restart in all.
        assert_eq!(run_for(0), 2);
        // A window shorter than a run: no restart is recent when a task
        // fails, so they go on (history keeps the last five).
        assert!(run_for(500) >= 5, "{}", run_for(500));
        // A window longer than a run: the one before counts.
        assert_eq!(run_for(1_500), 2);
    }
}
