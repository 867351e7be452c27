//! What users declare: a service's spec, its modes, policies, placement
//! constraints and ports, as the CLI sends them and the store keeps them.

use std::{collections::BTreeMap, fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// A port as `--publish` asks for it; the allocator picks `published`
/// when it is not given.
pub use crate::dataplane::PortConfig;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceMode {
    Replicated {
        replicas: u64,
    },
    Global,
    /// `--mode replicated-job`: `total_completions` tasks run to
    /// completion, at most `max_concurrent` at once.
    ReplicatedJob {
        max_concurrent: u64,
        total_completions: u64,
    },
    /// `--mode global-job`: one task runs to completion on every eligible
    /// node.
    GlobalJob,
}

impl ServiceMode {
    /// Whether its tasks run to completion instead of running on.
    pub fn is_job(&self) -> bool {
        matches!(
            self,
            ServiceMode::ReplicatedJob { .. } | ServiceMode::GlobalJob
        )
    }

    /// Whether it runs one task per eligible node.
    pub fn is_global(&self) -> bool {
        matches!(self, ServiceMode::Global | ServiceMode::GlobalJob)
    }

    /// As `service ls` shows it (Docker's words).
    pub fn word(&self) -> &'static str {
        match self {
            ServiceMode::Replicated { .. } => "replicated",
            ServiceMode::Global => "global",
            ServiceMode::ReplicatedJob { .. } => "replicated job",
            ServiceMode::GlobalJob => "global job",
        }
    }

    /// As Docker's `mode` filter names it.
    pub fn filter_word(&self) -> &'static str {
        match self {
            ServiceMode::Replicated { .. } => "replicated",
            ServiceMode::Global => "global",
            ServiceMode::ReplicatedJob { .. } => "replicated-job",
            ServiceMode::GlobalJob => "global-job",
        }
    }
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
    /// `--restart-window`: only restarts this recent count toward
    /// `max_attempts`; 0: every restart counts.
    #[serde(default, skip_serializing_if = "is_default")]
    pub window_millis: u64,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        // Docker's defaults: any, 5 s, unlimited.
        Self {
            condition: RestartCondition::Any,
            delay_millis: 5000,
            max_attempts: 0,
            window_millis: 0,
        }
    }
}

impl RestartPolicy {
    /// Docker's default for jobs: a task that completed is done, so only a
    /// failed one restarts.
    pub fn for_jobs() -> Self {
        Self {
            condition: RestartCondition::OnFailure,
            ..Self::default()
        }
    }
}

/// `--update-max-failure-ratio`: the share of updated tasks that may fail
/// before the failure action applies, 0 to 1.
#[derive(Clone, Copy, Debug, Default, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FailureRatio(f32);

// Always a number in 0..=1 (see `new`), so equality is total.
impl Eq for FailureRatio {}

impl FailureRatio {
    pub fn new(ratio: f32) -> Result<Self, String> {
        if (0.0..=1.0).contains(&ratio) {
            Ok(Self(ratio))
        } else {
            Err(format!(
                "invalid max failure ratio {ratio}: it must be between 0 and 1"
            ))
        }
    }

    pub fn get(self) -> f32 {
        self.0
    }

    /// Whether `failures` of `tasks` are more than the ratio allows.
    pub fn exceeded(self, failures: u64, tasks: u64) -> bool {
        failures > 0 && failures as f32 / tasks.max(1) as f32 > self.0
    }
}

impl FromStr for FailureRatio {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let ratio = text.parse::<f32>().map_err(|_| {
            format!("invalid max failure ratio {text:?}: write a number such as 0.2")
        })?;
        Self::new(ratio)
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
    /// Failures of new tasks tolerated, as a share of the tasks updated.
    #[serde(default, skip_serializing_if = "is_default")]
    pub max_failure_ratio: FailureRatio,
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
            max_failure_ratio: FailureRatio::default(),
        }
    }
}

/// One placement constraint: `node.labels.zone==a`, `node.role!=manager`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Constraint {
    /// `node.id`, `node.hostname`, `node.role`, `node.labels.<key>`,
    /// `engine.labels.<key>`, `node.platform.os`, `node.platform.arch`.
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
        "constraint key {0:?} is not one of node.id, node.hostname, node.role, node.labels.<label>, engine.labels.<label>, node.platform.os, node.platform.arch"
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
            .or_else(|| key.strip_prefix("engine.labels."))
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
    /// `--limit-pids`: processes the task may hold at once (limits only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
}

/// How the task's process is set up beyond its image and command, as
/// Docker's ContainerSpec holds it; every node's runtime applies it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSettings {
    /// `--dns`: where the task's resolver sends names that are not the
    /// swarm's (instead of the daemon's upstreams).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_servers: Vec<std::net::IpAddr>,
    /// `--dns-search`: the `search` line of the task's resolv.conf.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
    /// `--dns-option`: more `options` of the task's resolv.conf.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_options: Vec<String>,
    /// `--host HOST:IP`: more lines of the task's /etc/hosts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<ExtraHost>,
    /// `--cap-add`: capabilities on top of Docker's default set (`ALL`: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    /// `--cap-drop`: capabilities taken out of it (`ALL`: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    /// `--sysctl`: namespaced kernel settings (`net.*`) set in the task.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctls: BTreeMap<String, String>,
    /// `--read-only`: the root filesystem is mounted read-only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// `--init`: an init reaps and forwards signals (the native runtime
    /// always runs one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<bool>,
    /// `--stop-signal`: what stopping sends first [default: SIGTERM].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// `--ulimit`: resource limits of the task's process.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<Ulimit>,
    /// `--group`: more groups the process runs with, by name or number.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// `--container-label`: labels of the container (Docker runtime) or of
    /// the task (shown by inspect).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// One `--host` line: `HOST:IP`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraHost {
    pub host: String,
    pub ip: std::net::IpAddr,
}

impl FromStr for ExtraHost {
    type Err = String;

    /// `HOST:IP` as Docker's `--host` (and `HOST=IP`), IPv6 allowed.
    fn from_str(text: &str) -> Result<Self, String> {
        let split = text
            .split_once('=')
            .or_else(|| text.split_once(':'))
            .filter(|(host, _)| !host.is_empty());
        let parsed = split.and_then(|(host, ip)| {
            let ip = ip.trim_start_matches('[').trim_end_matches(']');
            Some(ExtraHost {
                host: host.to_owned(),
                ip: ip.parse().ok()?,
            })
        });
        parsed.ok_or_else(|| {
            format!("--host {text:?}: write HOST:IP, for example --host db:198.18.0.5")
        })
    }
}

impl fmt::Display for ExtraHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.ip)
    }
}

/// One `--ulimit NAME=SOFT[:HARD]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

/// The limits `--ulimit` knows, as Docker names them.
pub const ULIMIT_NAMES: [&str; 16] = [
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
    "as",
];

impl FromStr for Ulimit {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let fix = "write NAME=SOFT[:HARD], for example --ulimit nofile=1024:2048";
        let (name, values) = text
            .split_once('=')
            .ok_or_else(|| format!("--ulimit {text:?}: {fix}"))?;
        if !ULIMIT_NAMES.contains(&name) {
            return Err(format!(
                "--ulimit {text:?}: unknown limit {name:?}; one of {}",
                ULIMIT_NAMES.join(", ")
            ));
        }
        let number = |value: &str| {
            value
                .parse::<i64>()
                .map_err(|_| format!("--ulimit {text:?}: {value:?} is not a number; {fix}"))
        };
        let (soft, hard) = match values.split_once(':') {
            Some((soft, hard)) => (number(soft)?, number(hard)?),
            None => (number(values)?, number(values)?),
        };
        // -1 is "unlimited" for either; otherwise soft may not pass hard.
        if hard != -1 && (soft == -1 || soft > hard) {
            return Err(format!(
                "--ulimit {text:?}: the soft limit {soft} is above the hard limit {hard}"
            ));
        }
        Ok(Ulimit {
            name: name.to_owned(),
            soft,
            hard,
        })
    }
}

impl fmt::Display for Ulimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}:{}", self.name, self.soft, self.hard)
    }
}

/// The capabilities Docker gives a container unless told otherwise.
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// A capability as Docker accepts it (`NET_ADMIN`, `CAP_NET_ADMIN`,
/// `net_admin`, `ALL`), spelled as Docker stores it: `CAP_NET_ADMIN`, `ALL`.
pub fn normalize_capability(text: &str) -> Result<String, String> {
    let upper = text.trim().to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(upper);
    }
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    if capability_number(bare).is_none() {
        return Err(format!(
            "unknown capability {text:?}: use a Linux capability name such as NET_ADMIN or SYS_PTRACE (see capabilities(7)), or ALL"
        ));
    }
    Ok(format!("CAP_{bare}"))
}

/// A capability's number in the kernel's ABI (capability.h), by its name
/// without `CAP_`.
pub fn capability_number(name: &str) -> Option<u32> {
    const NAMES: [&str; 41] = [
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "KILL",
        "SETGID",
        "SETUID",
        "SETPCAP",
        "LINUX_IMMUTABLE",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_ADMIN",
        "NET_RAW",
        "IPC_LOCK",
        "IPC_OWNER",
        "SYS_MODULE",
        "SYS_RAWIO",
        "SYS_CHROOT",
        "SYS_PTRACE",
        "SYS_PACCT",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_NICE",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "MKNOD",
        "LEASE",
        "AUDIT_WRITE",
        "AUDIT_CONTROL",
        "SETFCAP",
        "MAC_OVERRIDE",
        "MAC_ADMIN",
        "SYSLOG",
        "WAKE_ALARM",
        "BLOCK_SUSPEND",
        "AUDIT_READ",
        "PERFMON",
        "BPF",
        "CHECKPOINT_RESTORE",
    ];
    let name = name.strip_prefix("CAP_").unwrap_or(name);
    NAMES.iter().position(|n| *n == name).map(|i| i as u32)
}

impl ContainerSettings {
    /// Refuses what no runtime could apply, and spells capabilities as
    /// Docker stores them (`CAP_NET_ADMIN`).
    pub fn normalize(&mut self) -> Result<(), String> {
        for caps in [&mut self.cap_add, &mut self.cap_drop] {
            for cap in caps.iter_mut() {
                *cap = normalize_capability(cap)?;
            }
            caps.sort();
            caps.dedup();
        }
        for key in self.sysctls.keys() {
            check_sysctl(key)?;
        }
        if let Some(signal) = &self.stop_signal {
            signal_number(signal)?;
        }
        Ok(())
    }

    /// The capabilities the task's process keeps, as kernel numbers:
    /// Docker's defaults, then `--cap-drop`, then `--cap-add` (an added
    /// one wins over a dropped one, as in Docker).
    pub fn capabilities(&self) -> Vec<u32> {
        let all = || (0..=40).collect::<Vec<u32>>();
        let mut kept: Vec<u32> = if self.cap_drop.iter().any(|c| c == "ALL") {
            Vec::new()
        } else {
            DEFAULT_CAPABILITIES
                .iter()
                .filter_map(|name| capability_number(name))
                .filter(|cap| {
                    !self
                        .cap_drop
                        .iter()
                        .any(|drop| capability_number(drop) == Some(*cap))
                })
                .collect()
        };
        if self.cap_add.iter().any(|c| c == "ALL") {
            return all();
        }
        kept.extend(self.cap_add.iter().filter_map(|c| capability_number(c)));
        kept.sort_unstable();
        kept.dedup();
        kept
    }
}

/// `--sysctl KEY=VALUE`: only settings a task's own namespaces hold.
pub fn check_sysctl(key: &str) -> Result<(), String> {
    let namespaced = key.starts_with("net.")
        && !key.contains("..")
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if namespaced {
        Ok(())
    } else {
        Err(format!(
            "--sysctl {key}: only network settings (net.*) belong to a task's own namespace; set others on the host"
        ))
    }
}

/// A signal by Docker's spelling (`SIGUSR1`, `USR1`, `10`), as its number.
pub fn signal_number(text: &str) -> Result<i32, String> {
    if let Ok(number) = text.parse::<i32>()
        && nix::sys::signal::Signal::try_from(number).is_ok()
    {
        return Ok(number);
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .map(|signal| signal as i32)
        .map_err(|_| {
            format!(
                "--stop-signal {text:?}: not a signal; use a name such as SIGINT, SIGQUIT or SIGUSR1, or its number"
            )
        })
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
    /// DNS, hosts, capabilities, sysctls, ulimits and the rest of how the
    /// process is set up.
    #[serde(default, skip_serializing_if = "is_default")]
    pub container: ContainerSettings,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

impl ServiceSpec {
    /// A service running `image` in `mode`, with Docker's defaults for the
    /// rest (restart on any exit, on failure for jobs, 10 s to stop, a VIP,
    /// no limits).
    pub fn new(name: impl Into<String>, image: impl Into<String>, mode: ServiceMode) -> Self {
        let restart = if mode.is_job() {
            RestartPolicy::for_jobs()
        } else {
            RestartPolicy::default()
        };
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
            restart,
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
            container: ContainerSettings::default(),
        }
    }
}
