//! Task runtimes: what runs a task's process on this node. The agent asks a
//! runtime to prepare a task (its network namespace, visible to `ip netns`
//! as `swarm-<task id>`), wires that namespace to the overlay, then starts
//! the task, watches its state, stops it and removes what it left.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::api::assignments::LogLine;
pub use crate::api::tasks::{Health, HealthCheck, Resources, TaskSpec};

pub mod docker;
pub mod log_lines;
pub mod mounts;
pub mod native;
mod netns;

/// Where task network namespaces are bound, as `ip netns add` does.
pub const NETNS_DIR: &str = "/run/netns";

/// The name `ip netns` shows for a task's network namespace.
pub fn netns_name(task_id: &str) -> String {
    format!("swarm-{task_id}")
}

pub fn netns_path(task_id: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(netns_name(task_id))
}

/// Where a task stands, as its runtime sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunState {
    /// Prepared, not started.
    Created,
    Running,
    /// Its main process ended with this code (128 + N for signal N).
    Exited {
        code: i32,
    },
    /// The runtime knows nothing of it.
    Missing,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("task {task}: {what}: {source}")]
    Io {
        task: String,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("task {task}: {message}")]
    Invalid { task: String, message: String },
    #[error("the Docker engine: {0}")]
    Docker(String),
    #[error("no task {0} in this runtime")]
    NoSuchTask(String),
    #[error("task {task}: {source}")]
    Image {
        task: String,
        #[source]
        source: crate::image::ImageError,
    },
}

impl RuntimeError {
    /// What the task's own status says (`service ps`'s ERROR): the task is
    /// the row already, so its ID is left out, as Docker shows it.
    pub fn task_error(&self) -> String {
        match self {
            RuntimeError::Invalid { message, .. } => message.clone(),
            RuntimeError::Io { what, source, .. } => format!("{what}: {source}"),
            RuntimeError::Image { source, .. } => source.to_string(),
            other => other.to_string(),
        }
    }
}

/// A way to run tasks. Calls block; the agent makes them off its async
/// runtime. Every method is idempotent where it can be: preparing a task
/// twice, or stopping or removing one that is gone, is not an error.
pub trait Runtime: Send + Sync {
    /// `native` or `docker`.
    fn name(&self) -> &'static str;
    /// Makes what the task needs before its network is wired: at least its
    /// network namespace at [`netns_path`], with `lo` up. Returns that path.
    fn prepare(&self, spec: &TaskSpec) -> Result<PathBuf, RuntimeError>;
    /// Starts the task's process in the namespace `prepare` made.
    fn start(&self, spec: &TaskSpec) -> Result<(), RuntimeError>;
    fn state(&self, task_id: &str) -> Result<RunState, RuntimeError>;
    /// Asks the task to stop (SIGTERM), and kills it after `grace`.
    fn stop(&self, task_id: &str, grace: Duration) -> Result<(), RuntimeError>;
    /// Removes all the task left: processes, cgroup, namespace, files, logs.
    fn remove(&self, task_id: &str) -> Result<(), RuntimeError>;
    /// What the task's health check says; `None` when it has none. Asked
    /// with the task's spec, so that a runtime can take up checking a task
    /// it adopted after a restart.
    fn health(&self, spec: &TaskSpec) -> Result<Option<Health>, RuntimeError>;
    /// What the task wrote to stdout and stderr, interleaved, in order,
    /// line by line with the time each was written.
    fn logs(&self, task_id: &str) -> Result<Vec<LogLine>, RuntimeError>;
    /// The tasks this runtime holds on this node, running or not (after a
    /// daemon restart: what to adopt or remove).
    fn list(&self) -> Result<Vec<String>, RuntimeError>;
    /// What the task has used so far, for the metrics; `None` where this
    /// runtime cannot tell.
    fn usage(&self, _task_id: &str) -> Option<TaskUsage> {
        None
    }
}

/// A task's CPU time and memory, read from its cgroup.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TaskUsage {
    pub cpu_seconds: f64,
    pub memory_bytes: u64,
}
