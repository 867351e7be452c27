//! What users declare: a service's spec, its modes, policies, placement
//! constraints and ports, as the CLI sends them and the store keeps them.

use std::{collections::BTreeMap, fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// A port as `--publish` asks for it; the allocator picks `published`
/// when it is not given.
pub use crate::dataplane::PortConfig;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceMode {
    Replicated { replicas: u64 },
    Global,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    Vip,
    Dnsrr,
}

/// `--restart-condition`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureAction {
    Pause,
    Continue,
    Rollback,
}

/// `--update-order`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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

/// Why a `--constraint` value does not parse.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConstraintError {
    #[error("constraint {0:?} has no == or != (e.g. node.role==manager)")]
    NoOperator(String),
    #[error(
        "constraint key {0:?} is not one of node.id, node.hostname, node.role, node.labels.<label>, node.platform.os, node.platform.arch"
    )]
    UnknownKey(String),
}

impl FromStr for Constraint {
    type Err = ConstraintError;

    fn from_str(text: &str) -> Result<Self, ConstraintError> {
        let (key, equal, value) = if let Some((k, v)) = text.split_once("!=") {
            (k, false, v)
        } else if let Some((k, v)) = text.split_once("==") {
            (k, true, v)
        } else {
            return Err(ConstraintError::NoOperator(text.to_owned()));
        };
        let key = key.trim();
        let known = matches!(
            key,
            "node.id" | "node.hostname" | "node.role" | "node.platform.os" | "node.platform.arch"
        ) || key
            .strip_prefix("node.labels.")
            .is_some_and(|l| !l.is_empty());
        if !known {
            return Err(ConstraintError::UnknownKey(key.to_owned()));
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
    /// Replaces the image's Entrypoint (`--entrypoint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// `--workdir`: replaces the image's WorkingDir.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// `--user`: replaces the image's User.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
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
    /// `--placement-pref spread=node.labels.zone`: tasks spread evenly over
    /// the values of each key, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement_prefs: Vec<String>,
    /// `--replicas-max-per-node`: at most this many tasks on one node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas_per_node: Option<u64>,
    pub restart: RestartPolicy,
    pub update: UpdateConfig,
    pub rollback: UpdateConfig,
    pub limits: ResourceSpec,
    pub reservations: ResourceSpec,
    /// `--health-cmd` and friends; `None`: no check.
    #[serde(default)]
    pub healthcheck: Option<super::tasks::HealthCheck>,
    /// `--no-healthcheck`: the image's HEALTHCHECK is not run either.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_healthcheck: bool,
    pub stop_grace_millis: u64,
    /// Bumped by `service update --force`: tasks are replaced although
    /// nothing else changed.
    #[serde(default)]
    pub force_update: u64,
    /// The registry login the nodes pull with (`--with-registry-auth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_auth: Option<super::tasks::RegistryAuth>,
    /// `--secret`: files under /run/secrets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<super::mounts::FileReference>,
    /// `--config`: files at their target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<super::mounts::FileReference>,
    /// `--mount`: binds, volumes and tmpfs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<super::mounts::Mount>,
}

impl ServiceSpec {
    /// A service running `image` in `mode`, with Docker's defaults for the
    /// rest (restart on any exit, 10 s to stop, a VIP, no limits).
    pub fn new(name: impl Into<String>, image: impl Into<String>, mode: ServiceMode) -> Self {
        Self {
            name: name.into(),
            labels: BTreeMap::new(),
            image: image.into(),
            args: Vec::new(),
            env: Vec::new(),
            hostname: None,
            entrypoint: None,
            workdir: None,
            user: None,
            mode,
            networks: Vec::new(),
            aliases: BTreeMap::new(),
            endpoint_mode: EndpointMode::Vip,
            ports: Vec::new(),
            constraints: Vec::new(),
            placement_prefs: Vec::new(),
            max_replicas_per_node: None,
            restart: RestartPolicy::default(),
            update: UpdateConfig::default(),
            rollback: UpdateConfig::default(),
            limits: ResourceSpec::default(),
            reservations: ResourceSpec::default(),
            healthcheck: None,
            no_healthcheck: false,
            stop_grace_millis: 10_000,
            force_update: 0,
            registry_auth: None,
            secrets: Vec::new(),
            configs: Vec::new(),
            mounts: Vec::new(),
        }
    }
}
