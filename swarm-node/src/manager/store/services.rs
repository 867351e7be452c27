//! Services and tasks in the replicated store: what users declare (a
//! service's spec), what the orchestrator makes of it (tasks), and the
//! allocator that gives services their VIPs and published ports and tasks
//! their addresses. Allocation happens when a command is applied, so every
//! manager allocates the same.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::Ipv4Addr,
    str::FromStr,
};

use serde::{Deserialize, Serialize};

use super::state::{ClusterState, NetworkRecord};
/// A port as `--publish` asks for it; the allocator picks `published`
/// from [`DYNAMIC_PORTS`] when it is not given.
pub use crate::dataplane::PortConfig;
use crate::dataplane::Protocol;

/// Docker's range for published ports it picks itself.
pub const DYNAMIC_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;
/// Terminal tasks kept per slot (Docker's `--task-history-limit`).
pub const TASK_HISTORY: usize = 5;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceMode {
    Replicated { replicas: u64 },
    Global,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    Vip,
    Dnsrr,
}

/// `--restart-condition`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum RestartCondition {
    None,
    OnFailure,
    Any,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    pub condition: RestartCondition,
    pub delay_millis: u64,
    /// 0: no limit (Docker's default).
    pub max_attempts: u64,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        // Docker's defaults: any, 5 s, unlimited.
        Self {
            condition: RestartCondition::Any,
            delay_millis: 5000,
            max_attempts: 0,
        }
    }
}

/// `--update-failure-action` (and `--rollback-failure-action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FailureAction {
    Pause,
    Continue,
    Rollback,
}

/// `--update-order`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    StopFirst,
    StartFirst,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateConfig {
    /// Tasks replaced at once; 0 means all at once.
    pub parallelism: u64,
    pub delay_millis: u64,
    pub failure_action: FailureAction,
    /// How long a new task must run before it counts as updated.
    pub monitor_millis: u64,
    pub order: UpdateOrder,
}

impl Default for UpdateConfig {
    fn default() -> Self {
        // Docker's defaults: 1, 0 s, pause, 5 s, stop-first.
        Self {
            parallelism: 1,
            delay_millis: 0,
            failure_action: FailureAction::Pause,
            monitor_millis: 5000,
            order: UpdateOrder::StopFirst,
        }
    }
}

/// One placement constraint: `node.labels.zone==a`, `node.role!=manager`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Constraint {
    /// `node.id`, `node.hostname`, `node.role`, `node.labels.<key>`,
    /// `node.platform.os`, `node.platform.arch`.
    pub key: String,
    pub equal: bool,
    pub value: String,
}

impl FromStr for Constraint {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (key, equal, value) = if let Some((k, v)) = text.split_once("!=") {
            (k, false, v)
        } else if let Some((k, v)) = text.split_once("==") {
            (k, true, v)
        } else {
            return Err(format!(
                "constraint {text:?} has no == or != (e.g. node.role==manager)"
            ));
        };
        let key = key.trim();
        let known = matches!(
            key,
            "node.id" | "node.hostname" | "node.role" | "node.platform.os" | "node.platform.arch"
        ) || key
            .strip_prefix("node.labels.")
            .is_some_and(|l| !l.is_empty());
        if !known {
            return Err(format!(
                "constraint key {key:?} is not one of node.id, node.hostname, node.role, node.labels.<label>, node.platform.os, node.platform.arch"
            ));
        }
        Ok(Constraint {
            key: key.to_owned(),
            equal,
            value: value.trim().to_owned(),
        })
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = if self.equal { "==" } else { "!=" };
        write!(f, "{}{op}{}", self.key, self.value)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceSpec {
    pub nano_cpus: Option<u64>,
    pub memory_bytes: Option<u64>,
}

/// What `swarm service create` declares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub image: String,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub hostname: Option<String>,
    pub mode: ServiceMode,
    /// Network IDs (names are resolved when the service is created).
    pub networks: Vec<String>,
    /// More names for the service on a network (`--network
    /// name=N,alias=A`), by network (IDs, once resolved).
    #[serde(default)]
    pub aliases: BTreeMap<String, Vec<String>>,
    pub endpoint_mode: EndpointMode,
    pub ports: Vec<PortConfig>,
    pub constraints: Vec<Constraint>,
    pub restart: RestartPolicy,
    pub update: UpdateConfig,
    pub rollback: UpdateConfig,
    pub limits: ResourceSpec,
    pub reservations: ResourceSpec,
    /// `--health-cmd` and friends; `None`: no check.
    #[serde(default)]
    pub healthcheck: Option<crate::runtime::HealthCheck>,
    pub stop_grace_millis: u64,
    /// Bumped by `service update --force`: tasks are replaced although
    /// nothing else changed.
    #[serde(default)]
    pub force_update: u64,
}

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
            ServiceMode::Global => None,
        }
    }
}

/// Docker's task states, in the order a task moves through them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    New,
    Pending,
    Assigned,
    Accepted,
    Preparing,
    Starting,
    Running,
    Complete,
    Shutdown,
    Failed,
    Rejected,
    Remove,
    Orphaned,
}

impl TaskState {
    /// Past running: the task will not run again.
    pub fn is_terminal(self) -> bool {
        self > TaskState::Running
    }

    pub fn word(self) -> &'static str {
        match self {
            TaskState::New => "New",
            TaskState::Pending => "Pending",
            TaskState::Assigned => "Assigned",
            TaskState::Accepted => "Accepted",
            TaskState::Preparing => "Preparing",
            TaskState::Starting => "Starting",
            TaskState::Running => "Running",
            TaskState::Complete => "Complete",
            TaskState::Shutdown => "Shutdown",
            TaskState::Failed => "Failed",
            TaskState::Rejected => "Rejected",
            TaskState::Remove => "Remove",
            TaskState::Orphaned => "Orphaned",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStatus {
    pub state: TaskState,
    /// Milliseconds since the Unix epoch.
    pub timestamp_millis: u64,
    pub message: String,
    /// Why it failed or cannot be placed.
    pub err: String,
    pub exit_code: Option<i32>,
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
    pub fn create_service(&mut self, create: ServiceCreate) -> Result<(), String> {
        if self
            .services
            .values()
            .any(|s| s.spec.name == create.spec.name)
        {
            return Err(format!(
                "service {} already exists (see `swarm service ls`)",
                create.spec.name
            ));
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
    ) -> Result<(), String> {
        let mut service = self
            .services
            .get(id)
            .cloned()
            .ok_or_else(|| format!("service {id} not found"))?;
        if service.spec.name != spec.name {
            return Err("a service cannot be renamed".into());
        }
        let tasks_change = task_relevant(&service.spec) != task_relevant(&spec);
        service.previous_spec = Some(std::mem::replace(&mut service.spec, spec));
        if rollback {
            // Docker forgets the previous spec once it is rolled back to.
            service.previous_spec = None;
        }
        service.updated_at = at;
        if tasks_change {
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

    /// VIPs on the service's networks and its published ports; those it
    /// holds already (an update) are kept.
    fn allocate_endpoint(&self, service: &mut ServiceRecord) -> Result<(), String> {
        let held_vips = std::mem::take(&mut service.vips);
        let held_ports = std::mem::take(&mut service.ports);
        for network in &service.spec.networks {
            if !self.networks.contains_key(network) {
                return Err(format!("network {network} not found"));
            }
        }
        let mut ports = Vec::new();
        for port in &service.spec.ports {
            let taken = |published: u16, protocol: Protocol| {
                ports
                    .iter()
                    .any(|p: &PortConfig| p.published == Some(published) && p.protocol == protocol)
                    || self.services.values().any(|s| {
                        s.id != service.id
                            && s.ports
                                .iter()
                                .any(|p| p.published == Some(published) && p.protocol == protocol)
                    })
            };
            let published = match port.published {
                Some(published) => {
                    if taken(published, port.protocol) {
                        return Err(format!(
                            "port '{published}' is already in use by another service's published port"
                        ));
                    }
                    published
                }
                None => match held_ports.iter().find(|held| {
                    held.target == port.target
                        && held.protocol == port.protocol
                        && held.mode == port.mode
                        && held.published.is_some_and(|p| !taken(p, port.protocol))
                }) {
                    Some(held) => held.published.unwrap_or_default(),
                    None => DYNAMIC_PORTS
                        .clone()
                        .find(|p| !taken(*p, port.protocol))
                        .ok_or("no free port left in 30000-32767 to publish")?,
                },
            };
            ports.push(PortConfig {
                published: Some(published),
                ..*port
            });
        }
        service.ports = ports;
        if service.spec.endpoint_mode == EndpointMode::Vip {
            for network in service.task_networks(self) {
                let ip = match held_vips.get(&network) {
                    Some(ip) => *ip,
                    None => self.free_address(&network)?,
                };
                service.vips.insert(network, ip);
            }
        }
        Ok(())
    }

    /// The lowest address of `network` nobody holds: not the network, its
    /// gateway or broadcast address, a VIP, or a live task's.
    fn free_address(&self, network_id: &str) -> Result<Ipv4Addr, String> {
        let network = self
            .networks
            .get(network_id)
            .ok_or_else(|| format!("network {network_id} not found"))?;
        let mut used = BTreeSet::from([network.gateway]);
        used.extend(
            self.services
                .values()
                .filter_map(|s| s.vips.get(network_id)),
        );
        used.extend(
            self.tasks
                .values()
                .filter(|t| t.holds_addresses())
                .filter_map(|t| t.addresses.get(network_id)),
        );
        first_free(network, &used)
            .ok_or_else(|| format!("network {} has no free address left", network.name))
    }

    pub fn remove_service(&mut self, id: &str) -> Result<(), String> {
        self.services
            .remove(id)
            .ok_or_else(|| format!("service {id} not found"))?;
        for task in self.tasks.values_mut().filter(|t| t.service_id == id) {
            task.desired = TaskState::Remove;
        }
        Ok(())
    }

    pub fn set_update_status(&mut self, id: &str, status: UpdateStatus) -> Result<(), String> {
        let service = self
            .services
            .get_mut(id)
            .ok_or_else(|| format!("service {id} not found"))?;
        service.update_status = Some(status);
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
                            Err(message) => {
                                task.status.state = TaskState::Rejected;
                                task.status.err = message;
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
        ServiceMode::Global => ServiceMode::Global,
    };
    spec.update = UpdateConfig::default();
    spec.rollback = UpdateConfig::default();
    spec.labels.clear();
    serde_json::to_value(spec).unwrap_or_default()
}

fn first_free(network: &NetworkRecord, used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let (net, prefix) = network.subnet;
    let size = 1u64 << (32 - u32::from(prefix));
    let base = u64::from(u32::from(net));
    // Skip the network address and the broadcast address.
    (1..size.saturating_sub(1))
        .map(|offset| Ipv4Addr::from((base + offset) as u32))
        .find(|ip| !used.contains(ip))
}
