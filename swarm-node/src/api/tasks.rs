//! Tasks as both sides see them: the states Docker names, a task's status
//! as agents report it, and what a runtime needs to run one.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

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

/// What a runtime needs to run one task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub task_id: String,
    /// Native: `host` (the host's filesystem) or an absolute path to a root
    /// directory to chroot into. Docker: an image reference.
    pub image: String,
    /// The program and its arguments. Empty: the image's default (Docker
    /// only; the native runtime refuses it).
    pub args: Vec<String>,
    /// `KEY=VALUE` pairs.
    pub env: Vec<String>,
    pub hostname: String,
    /// Lines for the task's own /etc/hosts besides localhost: its addresses
    /// with its hostname.
    pub hosts: Vec<(Ipv4Addr, String)>,
    pub resources: Resources,
    /// Run inside the task to tell whether it is healthy. `None`: the
    /// image's HEALTHCHECK, if it has one, unless `no_healthcheck`.
    #[serde(default)]
    pub healthcheck: Option<HealthCheck>,
    /// `--no-healthcheck`: not even the image's check runs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_healthcheck: bool,
    /// Replaces the image's Entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the image's WorkingDir.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// Replaces the image's User.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// How to log in to the image's registry (`--with-registry-auth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_auth: Option<RegistryAuth>,
    /// Its secrets and configs, with their bytes: only the node that runs
    /// the task gets them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<super::mounts::TaskFile>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<super::mounts::Mount>,
    /// DNS, capabilities, sysctls, ulimits and the rest, as the service
    /// declares them (templates already expanded).
    #[serde(default)]
    pub container: super::specs::ContainerSettings,
}

/// A login to a registry, as `docker login` keeps it. Sent only to the
/// nodes that run the service's tasks; never shown by `inspect`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryAuth {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Docker's HEALTHCHECK: `sh -c COMMAND` run inside the task every
/// interval; exit 0 is healthy. `retries` failures in a row make the task
/// unhealthy; failures within the start period do not count.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    pub command: String,
    pub interval_millis: u64,
    pub timeout_millis: u64,
    pub retries: u32,
    pub start_period_millis: u64,
}

impl Default for HealthCheck {
    /// Docker's defaults: every 30 s, 30 s to answer, 3 retries.
    fn default() -> Self {
        Self {
            command: String::new(),
            interval_millis: 30_000,
            timeout_millis: 30_000,
            retries: 3,
            start_period_millis: 0,
        }
    }
}

/// What a task's health check says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Health {
    /// No verdict yet.
    Starting,
    Healthy,
    Unhealthy,
}

/// Limits enforced through the task's cgroup (Docker's `--limit-*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// CPUs in billionths (`--limit-cpu 0.5` is 500_000_000).
    pub nano_cpus: Option<u64>,
    pub memory_bytes: Option<u64>,
    /// `--limit-pids`: the cgroup's `pids.max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
}
