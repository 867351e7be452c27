//! The orchestrator's pass over a job (`replicated-job`, `global-job`):
//! tasks that run to completion. A replicated job runs one task per
//! completion slot, at most `max_concurrent` at once; a global job one per
//! eligible node. A completed slot is done; a failed one follows the
//! restart policy. Every spec change is a new iteration (the service's
//! version, Docker's `JobIteration`): the old one's tasks stop and its
//! slots run again.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    orchestrator::{Restart, SlotKey, new_task, restart_decision},
    scheduler::satisfies,
    store::{
        ClusterState,
        services::{ServiceRecord, TaskRecord},
    },
};
use crate::api::{Availability, specs::ServiceMode, tasks::TaskState};

/// One job service as one pass sees it.
pub(super) struct JobPass<'a> {
    pub service: &'a ServiceRecord,
    pub state: &'a ClusterState,
    pub ready: &'a BTreeSet<String>,
    /// Its tasks by slot (or node), oldest first.
    pub slots: &'a BTreeMap<SlotKey, Vec<&'a TaskRecord>>,
    /// The slots of this iteration: 1..=completions, or the eligible nodes.
    pub wanted: &'a BTreeSet<SlotKey>,
    pub now_millis: u64,
}

/// Where one slot of the current iteration stands.
enum SlotProgress {
    Completed,
    /// A task runs, or a failed one restarts (now or after the delay).
    InProgress,
    /// Its tasks failed and the restart policy gives up.
    GivenUp,
    /// Nothing ran in it yet.
    Free,
}

impl JobPass<'_> {
    /// Records in `desired` the tasks to stop or mark done, and returns
    /// the tasks to create.
    pub fn reconcile(
        &self,
        desired: &mut BTreeMap<String, TaskState>,
        new_id: &mut dyn FnMut() -> String,
    ) -> Vec<TaskRecord> {
        for (key, list) in self.slots {
            for task in list.iter().filter(|t| t.desired == TaskState::Running) {
                if let Some(state) = self.settle(key, task) {
                    desired.insert(task.id.clone(), state);
                }
            }
        }
        let mut created = Vec::new();
        let mut in_progress = 0;
        let mut free = Vec::new();
        for key in self.wanted {
            let list = self.slots.get(key).map(Vec::as_slice).unwrap_or_default();
            match self.progress(list, desired) {
                SlotProgress::Completed | SlotProgress::GivenUp => {}
                SlotProgress::InProgress => in_progress += 1,
                SlotProgress::Free => free.push(key),
            }
            if self.restart_now(list, desired) {
                created.push(self.task_for(key, new_id()));
            }
        }
        let budget = match self.service.spec.mode {
            ServiceMode::ReplicatedJob { max_concurrent, .. } => {
                max_concurrent.saturating_sub(in_progress) as usize
            }
            _ => usize::MAX,
        };
        for key in free
            .into_iter()
            .filter(|k| self.may_start_on(k))
            .take(budget)
        {
            created.push(self.task_for(key, new_id()));
        }
        created
    }

    /// The desired state a task that is meant to run gets in this pass:
    /// done once it ended, stopped when of an old iteration, lost with its
    /// node, or no longer wanted.
    fn settle(&self, key: &SlotKey, task: &TaskRecord) -> Option<TaskState> {
        if task.status.state == TaskState::Complete {
            return Some(TaskState::Complete);
        }
        if task.status.state.is_terminal() || task.spec_version != self.service.version {
            return Some(TaskState::Shutdown);
        }
        let node = task
            .node_id
            .as_ref()
            .map(|id| (id, self.state.nodes.get(id)));
        let lost = match node {
            None => false,
            Some((_, None)) => true,
            Some((id, Some(node))) => {
                !self.ready.contains(id)
                    || node.availability == Availability::Drain
                    || (self.service.spec.mode.is_global()
                        && !satisfies(node, &self.service.spec.constraints))
            }
        };
        (lost || !self.wanted.contains(key)).then_some(TaskState::Shutdown)
    }

    /// The slot's tasks of the current iteration.
    fn current<'t>(&self, list: &'t [&'t TaskRecord]) -> Vec<&'t TaskRecord> {
        list.iter()
            .copied()
            .filter(|t| t.spec_version == self.service.version)
            .collect()
    }

    fn progress(
        &self,
        list: &[&TaskRecord],
        desired: &BTreeMap<String, TaskState>,
    ) -> SlotProgress {
        let current = self.current(list);
        if current.is_empty() {
            return SlotProgress::Free;
        }
        if current
            .iter()
            .any(|t| t.status.state == TaskState::Complete)
        {
            return SlotProgress::Completed;
        }
        if current.iter().any(|t| runs(t, desired)) {
            return SlotProgress::InProgress;
        }
        match restart_decision(self.service, &current, self.now_millis) {
            Restart::Now | Restart::Later => SlotProgress::InProgress,
            Restart::Never => SlotProgress::GivenUp,
        }
    }

    /// Whether a slot of this iteration whose task ended gets its next one
    /// in this pass.
    fn restart_now(&self, list: &[&TaskRecord], desired: &BTreeMap<String, TaskState>) -> bool {
        let current = self.current(list);
        !current.is_empty()
            && !current
                .iter()
                .any(|t| t.status.state == TaskState::Complete || runs(t, desired))
            && restart_decision(self.service, &current, self.now_millis) == Restart::Now
    }

    /// A paused node gets no new task (swarmkit's rule for global ones).
    fn may_start_on(&self, key: &SlotKey) -> bool {
        match key {
            SlotKey::Node(id) => self
                .state
                .nodes
                .get(id)
                .is_some_and(|n| n.availability == Availability::Active),
            SlotKey::Slot(_) => true,
        }
    }

    fn task_for(&self, key: &SlotKey, id: String) -> TaskRecord {
        new_task(self.service, key, id, self.now_millis)
    }
}

/// Whether the task is meant to run and still does (or is about to).
fn runs(task: &TaskRecord, desired: &BTreeMap<String, TaskState>) -> bool {
    task.desired == TaskState::Running
        && !task.status.state.is_terminal()
        && desired
            .get(&task.id)
            .is_none_or(|d| *d == TaskState::Running)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        api::{
            Role,
            specs::{RestartCondition, ServiceSpec},
        },
        manager::orchestrator::tests::Cluster,
    };

    fn job(mode: ServiceMode) -> ServiceSpec {
        ServiceSpec {
            args: vec!["true".into()],
            stop_grace_millis: 0,
            ..ServiceSpec::new("job", "host", mode)
        }
    }

    #[test]
    fn a_replicated_job_completes_every_slot_at_most_max_concurrent_at_once() {
        let mut cluster = Cluster::new(
            &[("m1", Role::Manager), ("w1", Role::Worker)],
            job(ServiceMode::ReplicatedJob {
                max_concurrent: 2,
                total_completions: 5,
            }),
        );
        let mut most = 0;
        for _ in 0..30 {
            cluster.step(&|_| Some(TaskState::Complete));
            most = most.max(cluster.running());
        }
        assert_eq!(most, 2);
        assert_eq!(cluster.count(TaskState::Complete), 5);
        assert_eq!(
            cluster.state.tasks.len(),
            5,
            "a completed task is never rerun"
        );
        let slots: BTreeSet<u64> = cluster.state.tasks.values().map(|t| t.slot).collect();
        assert_eq!(slots, (1..=5).collect());
        assert!(
            cluster
                .state
                .tasks
                .values()
                .all(|t| t.desired == TaskState::Complete)
        );
    }

    #[test]
    fn a_failed_job_task_restarts_on_failure_up_to_max_attempts() {
        let mut spec = job(ServiceMode::ReplicatedJob {
            max_concurrent: 1,
            total_completions: 1,
        });
        assert_eq!(spec.restart.condition, RestartCondition::OnFailure);
        spec.restart.delay_millis = 0;
        spec.restart.max_attempts = 2;
        let mut cluster = Cluster::new(&[("m1", Role::Manager)], spec);
        for _ in 0..30 {
            cluster.step(&|_| Some(TaskState::Failed));
        }
        // The first run and two restarts, then the policy gives up.
        assert_eq!(cluster.count(TaskState::Failed), 3);
        assert_eq!(cluster.state.tasks.len(), 3);
    }

    #[test]
    fn a_global_job_runs_once_per_node_and_an_update_runs_it_again() {
        let mut cluster = Cluster::new(
            &[
                ("m1", Role::Manager),
                ("w1", Role::Worker),
                ("w2", Role::Worker),
            ],
            job(ServiceMode::GlobalJob),
        );
        for _ in 0..10 {
            cluster.step(&|_| Some(TaskState::Complete));
        }
        let nodes: Vec<String> = cluster
            .state
            .tasks
            .values()
            .filter_map(|t| t.node_id.clone())
            .collect();
        assert_eq!(nodes, ["m1", "w1", "w2"]);
        assert_eq!(cluster.count(TaskState::Complete), 3);

        // `update --force`: the next iteration, once more on every node.
        let mut spec = cluster.state.services["s"].spec.clone();
        spec.force_update += 1;
        cluster.state.update_service("s", spec, false, 2).unwrap();
        assert_eq!(cluster.state.services["s"].update_status, None);
        for _ in 0..10 {
            cluster.step(&|_| Some(TaskState::Complete));
        }
        assert_eq!(cluster.count(TaskState::Complete), 6);
        let version = cluster.state.services["s"].version;
        assert_eq!(
            cluster
                .state
                .tasks
                .values()
                .filter(|t| t.spec_version == version)
                .count(),
            3
        );
    }

    #[test]
    fn a_new_iteration_stops_the_tasks_of_the_last_one() {
        let mut cluster = Cluster::new(
            &[("m1", Role::Manager)],
            job(ServiceMode::ReplicatedJob {
                max_concurrent: 1,
                total_completions: 1,
            }),
        );
        cluster.step(&|_| None);
        cluster.step(&|_| None);
        assert_eq!(cluster.running(), 1);
        let mut spec = cluster.state.services["s"].spec.clone();
        spec.env.push("RUN=2".into());
        cluster.state.update_service("s", spec, false, 2).unwrap();
        for _ in 0..5 {
            cluster.step(&|t| (t.spec_version == 2).then_some(TaskState::Complete));
        }
        assert_eq!(cluster.count(TaskState::Shutdown), 1);
        assert_eq!(cluster.count(TaskState::Complete), 1);
    }
}
