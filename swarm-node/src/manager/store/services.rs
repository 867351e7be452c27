//! Services and tasks in the replicated store: what a service was given
//! (its spec, VIPs, ports), what the orchestrator makes of it (tasks), and
//! the commands that change them. The allocator fills in addresses and
//! ports when a command is applied, so every manager allocates the same.

use std::{collections::BTreeMap, net::Ipv4Addr};

use serde::{Deserialize, Serialize};

use super::{ClusterState, Refusal};
use crate::api::{
    specs::{PortConfig, ServiceMode, ServiceSpec, UpdateConfig},
    tasks::{TaskState, TaskStatus},
};

/// Terminal tasks kept per slot (Docker's `--task-history-limit`).
pub const TASK_HISTORY: usize = 5;

/// Where a rolling update stands (Docker's `UpdateStatus.State`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateState {
    Updating,
    Paused,
    Completed,
    RollbackStarted,
    RollbackPaused,
    RollbackCompleted,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateStatus {
    pub state: UpdateState,
    pub started_at: u64,
    pub completed_at: Option<u64>,
    pub message: String,
}

/// A service in the store, with what the allocator gave it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRecord {
    pub id: String,
    pub spec: ServiceSpec,
    /// The spec before the last update, for `service rollback`.
    pub previous_spec: Option<ServiceSpec>,
    /// Bumped by every update: tasks made from an older spec are out of date.
    pub version: u64,
    pub created_at: u64,
    pub updated_at: u64,
    /// One VIP per network (with the ingress network when ports are
    /// published), in VIP endpoint mode.
    pub vips: BTreeMap<String, Ipv4Addr>,
    /// `spec.ports` with every published port filled in.
    pub ports: Vec<PortConfig>,
    pub update_status: Option<UpdateStatus>,
    /// Bumped by every change to the record, the update status's too
    /// (Docker's `Version.Index`, which updates must name).
    #[serde(default)]
    pub revision: u64,
}

impl ServiceRecord {
    /// The networks its tasks join: the routing mesh's first when ports are
    /// published in ingress mode.
    pub fn task_networks(&self, state: &ClusterState) -> Vec<String> {
        let mut networks = Vec::new();
        // Host-mode ports are served through the ingress network's
        // addresses too, by the node's local tasks only.
        if !self.ports.is_empty()
            && let Some(ingress) = state.networks.values().find(|n| n.ingress)
        {
            networks.push(ingress.id.clone());
        }
        for network in &self.spec.networks {
            if !networks.contains(network) {
                networks.push(network.clone());
            }
        }
        networks
    }

    pub fn replicas(&self) -> Option<u64> {
        match self.spec.mode {
            ServiceMode::Replicated { replicas } => Some(replicas),
            ServiceMode::ReplicatedJob {
                total_completions, ..
            } => Some(total_completions),
            ServiceMode::Global | ServiceMode::GlobalJob => None,
        }
    }
}
/// One task: a slot of a replicated service (or a node of a global one)
/// running the service's spec at `spec_version`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub id: String,
    pub service_id: String,
    /// 1.. for replicated services; 0 for global ones.
    pub slot: u64,
    /// Where it runs; a global task is made for its node.
    pub node_id: Option<String>,
    pub spec_version: u64,
    pub spec: ServiceSpec,
    pub desired: TaskState,
    pub status: TaskStatus,
    /// Its address on each network, by network ID.
    pub addresses: BTreeMap<String, Ipv4Addr>,
    pub created_at_millis: u64,
    /// When its node first reported it running: a rolling update
    /// watches it for the monitor period from then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_since_millis: Option<u64>,
}

impl TaskRecord {
    /// `<service>.<slot>`, or `<service>.<node id>` for a global service's.
    pub fn name(&self, service_name: &str) -> String {
        match (&self.node_id, self.slot) {
            (Some(node), 0) => format!("{service_name}.{node}"),
            _ => format!("{service_name}.{}", self.slot),
        }
    }

    /// Whether it runs and is meant to: a backend, a replica in `service ls`.
    pub fn is_running(&self) -> bool {
        self.desired == TaskState::Running && self.status.state == TaskState::Running
    }

    /// Whether its addresses are still its own: until it has ended.
    pub fn holds_addresses(&self) -> bool {
        !self.status.state.is_terminal()
    }
}

/// A change to tasks, as the orchestrator, scheduler and agents make them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskChange {
    /// A new task; its addresses are allocated when applied.
    Create(Box<TaskRecord>),
    Assign {
        id: String,
        node_id: String,
    },
    /// Placement failed: the task stays pending with the reason.
    Unplaceable {
        id: String,
        reason: String,
        at_millis: u64,
    },
    SetDesired {
        id: String,
        desired: TaskState,
    },
    /// An agent's report. A report never moves a task backwards.
    Status {
        id: String,
        status: TaskStatus,
    },
    /// Forgotten: removed, or old history.
    Delete {
        id: String,
    },
}

/// `service create`: the allocator fills in VIPs and ports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceCreate {
    pub id: String,
    pub spec: ServiceSpec,
    pub at: u64,
}

impl ClusterState {
    pub fn create_service(&mut self, create: ServiceCreate) -> Result<(), Refusal> {
        if self
            .services
            .values()
            .any(|s| s.spec.name == create.spec.name)
        {
            return Err(Refusal::ServiceExists(create.spec.name));
        }
        let mut service = ServiceRecord {
            id: create.id,
            spec: create.spec,
            previous_spec: None,
            version: 1,
            created_at: create.at,
            updated_at: create.at,
            vips: BTreeMap::new(),
            ports: Vec::new(),
            update_status: None,
            revision: 1,
        };
        self.allocate_endpoint(&mut service)?;
        self.services.insert(service.id.clone(), service);
        Ok(())
    }

    /// A new spec for service `id`; `rollback` says it is the previous one
    /// coming back, which Docker records in the update status.
    pub fn update_service(
        &mut self,
        id: &str,
        spec: ServiceSpec,
        rollback: bool,
        at: u64,
    ) -> Result<(), Refusal> {
        let mut service = self
            .services
            .get(id)
            .cloned()
            .ok_or_else(|| Refusal::NoSuchService(id.to_owned()))?;
        if service.spec.name != spec.name {
            return Err(Refusal::Rename);
        }
        // Any change to a job runs it again (Docker's next JobIteration).
        let job = spec.mode.is_job();
        let tasks_change = job || task_relevant(&service.spec) != task_relevant(&spec);
        service.previous_spec = Some(std::mem::replace(&mut service.spec, spec));
        if rollback {
            // Docker forgets the previous spec once it is rolled back to.
            service.previous_spec = None;
        }
        service.updated_at = at;
        service.revision += 1;
        if job {
            // A job's tasks are not rolled: the new iteration replaces them.
            service.version += 1;
            service.update_status = None;
        } else if tasks_change {
            service.version += 1;
            service.update_status = Some(UpdateStatus {
                state: if rollback {
                    UpdateState::RollbackStarted
                } else {
                    UpdateState::Updating
                },
                started_at: at,
                completed_at: None,
                message: if rollback {
                    "manually requested rollback".into()
                } else {
                    "update in progress".into()
                },
            });
        }
        // An update keeps the VIPs and the ports it was given on networks
        // and targets it keeps: clients hold on to them.
        self.allocate_endpoint(&mut service)?;
        self.services.insert(id.to_owned(), service);
        Ok(())
    }

    pub fn remove_service(&mut self, id: &str) -> Result<(), Refusal> {
        self.services
            .remove(id)
            .ok_or_else(|| Refusal::NoSuchService(id.to_owned()))?;
        for task in self.tasks.values_mut().filter(|t| t.service_id == id) {
            task.desired = TaskState::Remove;
        }
        Ok(())
    }

    pub fn set_update_status(&mut self, id: &str, status: UpdateStatus) -> Result<(), Refusal> {
        let service = self
            .services
            .get_mut(id)
            .ok_or_else(|| Refusal::NoSuchService(id.to_owned()))?;
        service.update_status = Some(status);
        service.revision += 1;
        Ok(())
    }

    /// Applies a batch of task changes; one that no longer fits (its task
    /// is gone) is skipped, so a stale report cannot fail the batch.
    pub fn change_tasks(&mut self, changes: Vec<TaskChange>) {
        for change in changes {
            match change {
                TaskChange::Create(mut task) => {
                    let Some(service) = self.services.get(&task.service_id) else {
                        continue;
                    };
                    let networks = service.task_networks(self);
                    let mut addresses = BTreeMap::new();
                    for network in networks {
                        match self.free_address(&network) {
                            Ok(ip) => {
                                addresses.insert(network, ip);
                            }
                            Err(why) => {
                                task.status.state = TaskState::Rejected;
                                task.status.err = why.to_string();
                                task.desired = TaskState::Shutdown;
                                addresses.clear();
                                break;
                            }
                        }
                    }
                    task.addresses = addresses;
                    self.tasks.insert(task.id.clone(), *task);
                }
                TaskChange::Assign { id, node_id } => {
                    if let Some(task) = self.tasks.get_mut(&id)
                        && task.status.state <= TaskState::Pending
                    {
                        task.node_id = Some(node_id);
                        task.status.state = TaskState::Assigned;
                        task.status.message = "scheduler assigned task to node".into();
                        task.status.err.clear();
                    }
                }
                TaskChange::Unplaceable {
                    id,
                    reason,
                    at_millis,
                } => {
                    if let Some(task) = self.tasks.get_mut(&id)
                        && task.status.state <= TaskState::Pending
                    {
                        task.status.state = TaskState::Pending;
                        task.status.err = reason;
                        task.status.timestamp_millis = at_millis;
                    }
                }
                TaskChange::SetDesired { id, desired } => {
                    if let Some(task) = self.tasks.get_mut(&id) {
                        task.desired = task.desired.max(desired);
                    }
                }
                TaskChange::Status { id, status } => {
                    if let Some(task) = self.tasks.get_mut(&id)
                        && status.state > task.status.state
                        && !task.status.state.is_terminal()
                    {
                        if status.state == TaskState::Running {
                            task.running_since_millis = Some(status.timestamp_millis);
                        }
                        task.status = status;
                    }
                }
                TaskChange::Delete { id } => {
                    self.tasks.remove(&id);
                }
            }
        }
    }
}

/// What decides a task's behaviour: a change here replaces tasks; a change
/// only to the replica count or update settings does not.
fn task_relevant(spec: &ServiceSpec) -> serde_json::Value {
    let mut spec = spec.clone();
    spec.mode = match spec.mode {
        ServiceMode::Replicated { .. } => ServiceMode::Replicated { replicas: 0 },
        mode => mode,
    };
    spec.update = UpdateConfig::default();
    spec.rollback = UpdateConfig::default();
    spec.labels.clear();
    serde_json::to_value(spec).unwrap_or_default()
}
