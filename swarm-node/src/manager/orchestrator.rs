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
    Manager,
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
        // Slots: 1..=replicas, or one per eligible node for global services.
        let mut slots: BTreeMap<SlotKey, Vec<&TaskRecord>> = BTreeMap::new();
        let wanted: BTreeSet<SlotKey> = match service.spec.mode {
            ServiceMode::Replicated { replicas } => (1..=replicas).map(SlotKey::Slot).collect(),
            ServiceMode::Global => state
                .nodes
                .values()
                .filter(|n| eligible_node(n))
                .map(|n| SlotKey::Node(n.id.clone()))
                .collect(),
        };
        for task in &tasks {
            let key = match &service.spec.mode {
                ServiceMode::Replicated { .. } => SlotKey::Slot(task.slot),
                ServiceMode::Global => SlotKey::Node(task.node_id.clone().unwrap_or_default()),
            };
            slots.entry(key).or_default().push(task);
        }
        for list in slots.values_mut() {
            list.sort_by_key(|t| (t.created_at_millis, t.id.clone()));
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

        let update = rolling_update(service, &slots, &desired, now_millis, &mut plan);
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
                if restart_due(service, list, now_millis) {
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

        // History: the latest few ended tasks of each slot stay for `ps`.
        for list in slots.values() {
            let ended: Vec<&&TaskRecord> = list
                .iter()
                .filter(|t| t.desired != TaskState::Running && t.status.state.is_terminal())
                .collect();
            for task in ended
                .iter()
                .take(ended.len().saturating_sub(state.task_history()))
            {
                plan.tasks.push(TaskChange::Delete {
                    id: task.id.clone(),
                });
            }
        }
    }

    for (id, state) in desired {
        plan.tasks
            .push(TaskChange::SetDesired { id, desired: state });
    }
    schedule(state, ready, &mut created, &mut plan.tasks, now_millis);
    plan
}

/// A slot of a replicated service, or the node of a global one.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum SlotKey {
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
    // A new task that failed (rather than being stopped) fails the update.
    let failed = new_tasks.iter().find(|t| {
        matches!(t.status.state, TaskState::Failed | TaskState::Rejected)
            && t.status.timestamp_millis >= status.started_at * 1000
    });
    if let Some(task) = failed
        && config.failure_action != FailureAction::Continue
    {
        let message = format!(
            "update paused due to failure or early termination of task {}: {}",
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

/// Whether a slot whose tasks have all ended gets a new one now, per the
/// restart policy (condition, delay, attempts).
fn restart_due(service: &ServiceRecord, history: &[&TaskRecord], now_millis: u64) -> bool {
    let Some(last) = history.last() else {
        return true;
    };
    // Replaced rather than ended (node lost, drained, scaled, updated):
    // always comes back, at once.
    if !last.status.state.is_terminal() || last.status.state == TaskState::Shutdown {
        return true;
    }
    let policy = &service.spec.restart;
    let failed = last.status.state != TaskState::Complete;
    let allowed = match policy.condition {
        RestartCondition::Any => true,
        RestartCondition::OnFailure => failed,
        RestartCondition::None => false,
    };
    if !allowed {
        return false;
    }
    if policy.max_attempts > 0 {
        let attempts = history
            .iter()
            .filter(|t| t.spec_version == service.version && t.status.state.is_terminal())
            .count() as u64;
        // The first run is not a restart.
        if attempts > policy.max_attempts {
            return false;
        }
    }
    now_millis >= last.status.timestamp_millis + policy.delay_millis
}

fn new_task(service: &ServiceRecord, key: &SlotKey, id: String, now_millis: u64) -> TaskRecord {
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
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::{
        api::{NodeResources, Role},
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
}
