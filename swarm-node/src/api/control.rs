//! The control API's requests and answers: what the CLI sends the daemon
//! over the control socket, and what the daemon's managers answer. The
//! Docker Engine API front door maps onto the same requests.

use serde::{Deserialize, Serialize};

use super::{
    assignments::LogLine,
    filters::Filters,
    mounts::{FileReference, Mount, Opaque, PayloadKind},
    nodes::{Availability, Role},
    specs::{
        Constraint, ContainerSettings, ExtraHost, FailureAction, FailureRatio, PortConfig,
        RestartCondition, ServiceMode, ServiceSpec, Ulimit, UpdateOrder,
    },
    tasks::RegistryAuth,
};
use crate::dataplane::{
    BalancedService, DataplaneStats, EndpointRow, LocalDelivery, LocalEndpointSpec, OverlayNetwork,
    RemoteEndpointSpec, ServiceRow, UnderlayHook,
};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Request {
    /// The daemon's identity and what it has attached.
    Info,
    /// The images this node holds (`swarm image ls`).
    ImageList,
    /// Removes images no task runs (`swarm image rm`).
    ImageRemove {
        images: Vec<String>,
    },
    /// Removes every image no task runs (`swarm image prune`).
    ImagePrune,
    /// This node's volumes (`swarm volume ls`).
    VolumeList,
    VolumeInspect {
        names: Vec<String>,
    },
    /// Removes volumes no task uses (`swarm volume rm`).
    VolumeRemove {
        names: Vec<String>,
    },
    /// Removes every volume no task uses.
    VolumePrune,
    /// `swarm stack deploy`: the service of this name created, or updated
    /// to `spec` in place.
    SwarmServiceDeploy {
        spec: Box<ServiceSpec>,
        resolve_image: bool,
    },
    /// `swarm secret|config create`.
    PayloadCreate(PayloadCreateRequest),
    PayloadList {
        kind: PayloadKind,
        #[serde(default)]
        filters: Filters,
    },
    PayloadInspect {
        kind: PayloadKind,
        references: Vec<String>,
    },
    PayloadRemove {
        kind: PayloadKind,
        references: Vec<String>,
    },
    /// The data plane's packet and drop counters.
    DataplaneStats,
    /// Every endpoint the overlay maps hold.
    Endpoints,
    NetworkCreate(OverlayNetwork),
    /// The overlay networks this node's data plane serves.
    DataplaneNetworks,
    NetworkRemove {
        vni: u32,
    },
    EndpointAttach(LocalEndpointSpec),
    EndpointDetach {
        id: String,
    },
    RemoteAdd(RemoteEndpointSpec),
    RemoteRemove {
        vni: u32,
        ip: std::net::Ipv4Addr,
    },
    Services,
    /// The balanced flows this node tracks, all or one service's.
    DataplaneFlows {
        service: Option<String>,
    },
    ServiceCreate(BalancedService),
    ServiceUpdate {
        name: String,
        add: Vec<std::net::Ipv4Addr>,
        remove: Vec<std::net::Ipv4Addr>,
    },
    ServiceRemove {
        name: String,
    },
    /// `swarm init`.
    SwarmInit(SwarmInitRequest),
    /// `swarm join`.
    SwarmJoin(SwarmJoinRequest),
    /// `swarm join-token`.
    JoinToken {
        role: Role,
        rotate: bool,
    },
    /// `swarm node ls`.
    NodeList {
        #[serde(default)]
        filters: Filters,
    },
    /// `swarm node inspect`: by ID, unique ID prefix, hostname, or `self`.
    NodeInspect {
        node: String,
    },
    /// `swarm node update`.
    NodeUpdate(NodeUpdateRequest),
    /// `swarm node rm`.
    NodeRemove {
        node: String,
        force: bool,
    },
    /// `swarm network create`.
    SwarmNetworkCreate(SwarmNetworkCreateRequest),
    /// `swarm network ls`.
    SwarmNetworkList {
        #[serde(default)]
        filters: Filters,
    },
    /// `swarm network inspect`.
    SwarmNetworkInspect {
        network: String,
    },
    /// `swarm network rm`.
    SwarmNetworkRemove {
        networks: Vec<String>,
    },
    /// `swarm node promote`.
    NodePromote {
        nodes: Vec<String>,
    },
    /// `swarm node demote`.
    NodeDemote {
        nodes: Vec<String>,
    },
    /// `swarm leave`.
    SwarmLeave {
        force: bool,
    },
    /// `swarm service create`: network references are resolved by the leader.
    SwarmServiceCreate {
        spec: Box<ServiceSpec>,
        /// Pin the image to the digest its registry names now, as Docker
        /// does unless `--no-resolve-image`.
        resolve_image: bool,
    },
    SwarmServiceList {
        #[serde(default)]
        filters: Filters,
    },
    SwarmServiceInspect {
        service: String,
    },
    /// `swarm service ps` (and `node ps`, `stack ps`): the tasks of
    /// `services`, or of every service when none is named.
    SwarmServiceTasks {
        services: Vec<String>,
        #[serde(default)]
        filters: Filters,
    },
    SwarmServiceScale {
        scales: Vec<(String, u64)>,
    },
    SwarmServiceUpdate(Box<ServiceUpdateRequest>),
    SwarmServiceRollback {
        service: String,
    },
    SwarmServiceRemove {
        services: Vec<String>,
    },
    /// `swarm update --rotate-gossip-key`.
    SwarmRotateGossipKey,
    SwarmSetGossipKeyRotation {
        secs: u64,
    },
    /// `swarm update --dispatcher-heartbeat --cert-expiry`.
    SwarmUpdateSettings {
        heartbeat_millis: Option<u64>,
        cert_expiry_secs: Option<u64>,
        #[serde(default)]
        task_history_limit: Option<u64>,
        #[serde(default)]
        snapshot_interval: Option<u64>,
        #[serde(default)]
        max_snapshots: Option<u64>,
        /// `--autolock=true|false`.
        #[serde(default)]
        autolock: Option<bool>,
    },
    /// `swarm unlock-key [--rotate]`: the unlock key as Docker's
    /// `{"UnlockKey": ...}` (empty while autolock is off), a new one first
    /// with `rotate`.
    SwarmUnlockKey {
        rotate: bool,
    },
    /// `swarm unlock`: this locked manager's keys opened with `key`.
    SwarmUnlock {
        key: String,
    },
    /// `swarm service logs`: a service's tasks (or one task) output.
    SwarmServiceLogs {
        reference: String,
        tail: Option<u64>,
        /// Only lines written at or after this time (nanoseconds since the
        /// epoch).
        #[serde(default)]
        since_nanos: Option<i64>,
    },
    /// Every service as Docker's `Service`, with its `ServiceStatus` (the
    /// Engine API's `GET /services`).
    SwarmServiceObjects,
    /// Every task as Docker's `Task` (`GET /tasks`).
    SwarmTaskObjects,
    /// Every node as Docker's `Node` (`GET /nodes`).
    NodeObjects,
    /// The swarm as Docker's `Swarm`: its ID, spec and join tokens.
    SwarmInspect,
    /// A service's whole spec replaced (the Engine API's update).
    SwarmServiceReplace(Box<ServiceReplaceRequest>),
    /// A secret's or config's labels replaced; its data cannot change.
    PayloadUpdate {
        kind: PayloadKind,
        reference: String,
        version: Option<u64>,
        labels: std::collections::BTreeMap<String, String>,
        /// The data the update was sent with: refused unless unchanged.
        data: Option<Opaque>,
    },
    /// What a registry names for an image now (`/distribution`): this
    /// node asks it.
    ImageDistribution {
        image: String,
        registry_auth: Option<RegistryAuth>,
    },
    /// `swarm events`: the changes this manager applied after number
    /// `after` (all it keeps when `None`), waiting up to `wait_millis` for
    /// one.
    Events {
        after: Option<u64>,
        wait_millis: u64,
    },
    /// Whether a registry takes a login (`docker login`): this node asks.
    RegistryLogin {
        registry: String,
        registry_auth: RegistryAuth,
    },
}

/// The Engine API's service update: the whole spec, as read at `version`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServiceReplaceRequest {
    pub service: String,
    /// Refused with "update out of sequence" unless the service is at it.
    pub version: Option<u64>,
    pub spec: ServiceSpec,
    /// `?rollback=previous`: the previous spec comes back instead.
    pub rollback: bool,
    /// Pin the image to its digest now (the docker CLI pins it itself).
    pub resolve_image: bool,
}

/// A new secret or config: its name, labels and data.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PayloadCreateRequest {
    pub kind: PayloadKind,
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub data: Opaque,
}

/// `swarm service update`: changes to a service's spec; unset ones keep it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ServiceUpdateRequest {
    pub service: String,
    pub image: Option<String>,
    /// Keep a new image's tag as given (`--no-resolve-image`).
    #[serde(default)]
    pub no_resolve_image: bool,
    /// A registry login for the nodes (`--with-registry-auth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_auth: Option<RegistryAuth>,
    pub args: Option<Vec<String>>,
    pub env_add: Vec<String>,
    pub env_rm: Vec<String>,
    pub replicas: Option<u64>,
    pub publish_add: Vec<PortConfig>,
    /// Target ports to unpublish.
    pub publish_rm: Vec<u16>,
    pub network_add: Vec<String>,
    pub network_rm: Vec<String>,
    pub constraint_add: Vec<Constraint>,
    pub constraint_rm: Vec<String>,
    pub label_add: Vec<(String, String)>,
    pub label_rm: Vec<String>,
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
    pub limit_cpu: Option<u64>,
    pub limit_memory: Option<u64>,
    pub reserve_cpu: Option<u64>,
    pub reserve_memory: Option<u64>,
    pub restart_condition: Option<RestartCondition>,
    pub restart_delay_millis: Option<u64>,
    pub restart_max_attempts: Option<u64>,
    /// `--restart-window`.
    #[serde(default)]
    pub restart_window_millis: Option<u64>,
    /// `--max-concurrent` of a replicated job.
    #[serde(default)]
    pub max_concurrent: Option<u64>,
    pub update_parallelism: Option<u64>,
    pub update_delay_millis: Option<u64>,
    pub update_failure_action: Option<FailureAction>,
    pub update_monitor_millis: Option<u64>,
    pub update_order: Option<UpdateOrder>,
    /// `--rollback-*`: how a rollback replaces the tasks.
    #[serde(default)]
    pub rollback_parallelism: Option<u64>,
    #[serde(default)]
    pub rollback_delay_millis: Option<u64>,
    #[serde(default)]
    pub rollback_failure_action: Option<FailureAction>,
    #[serde(default)]
    pub rollback_monitor_millis: Option<u64>,
    #[serde(default)]
    pub rollback_order: Option<UpdateOrder>,
    /// `--update-max-failure-ratio`, `--rollback-max-failure-ratio`.
    #[serde(default)]
    pub update_max_failure_ratio: Option<FailureRatio>,
    #[serde(default)]
    pub rollback_max_failure_ratio: Option<FailureRatio>,
    pub stop_grace_millis: Option<u64>,
    pub health_cmd: Option<String>,
    pub health_interval_millis: Option<u64>,
    pub health_timeout_millis: Option<u64>,
    pub health_retries: Option<u32>,
    pub health_start_period_millis: Option<u64>,
    /// `--no-healthcheck`: drop the health check, the image's too.
    pub no_healthcheck: bool,
    /// `--force`: replace the tasks although nothing else changed.
    pub force: bool,
    /// `--secret-add`, `--config-add`: names the leader resolves.
    #[serde(default)]
    pub secret_add: Vec<FileReference>,
    /// `--secret-rm`, `--config-rm`: by name or ID.
    #[serde(default)]
    pub secret_rm: Vec<String>,
    #[serde(default)]
    pub config_add: Vec<FileReference>,
    #[serde(default)]
    pub config_rm: Vec<String>,
    /// `--mount-add`; one with the target of an existing mount replaces it.
    #[serde(default)]
    pub mount_add: Vec<Mount>,
    /// `--mount-rm`: by target.
    #[serde(default)]
    pub mount_rm: Vec<String>,
    /// `--placement-pref-add spread=KEY` (the key).
    #[serde(default)]
    pub placement_pref_add: Vec<String>,
    #[serde(default)]
    pub placement_pref_rm: Vec<String>,
    /// `--replicas-max-per-node`; 0 lifts the limit.
    #[serde(default)]
    pub max_replicas_per_node: Option<u64>,
    /// `--limit-pids`; 0 lifts the limit.
    #[serde(default)]
    pub limit_pids: Option<u64>,
    /// DNS, hosts, capabilities, sysctls, ulimits, groups, container labels.
    #[serde(default)]
    pub container: ContainerUpdate,
}

/// `service update`'s changes to how the task's process is set up.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ContainerUpdate {
    pub dns_add: Vec<std::net::IpAddr>,
    pub dns_rm: Vec<std::net::IpAddr>,
    pub dns_search_add: Vec<String>,
    pub dns_search_rm: Vec<String>,
    pub dns_option_add: Vec<String>,
    pub dns_option_rm: Vec<String>,
    pub host_add: Vec<ExtraHost>,
    /// `HOST` or `HOST:IP`.
    pub host_rm: Vec<String>,
    /// Capabilities as Docker spells them (`CAP_NET_ADMIN`, `ALL`).
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub sysctl_add: Vec<(String, String)>,
    pub sysctl_rm: Vec<String>,
    pub ulimit_add: Vec<Ulimit>,
    /// By name (`nofile`).
    pub ulimit_rm: Vec<String>,
    pub group_add: Vec<String>,
    pub group_rm: Vec<String>,
    pub label_add: Vec<(String, String)>,
    pub label_rm: Vec<String>,
    pub read_only: Option<bool>,
    pub init: Option<bool>,
    pub stop_signal: Option<String>,
}

impl ContainerUpdate {
    pub fn apply(&self, settings: &mut ContainerSettings) {
        fn edit<T: PartialEq + Clone>(list: &mut Vec<T>, remove: &[T], add: &[T]) {
            list.retain(|item| !remove.contains(item));
            for item in add {
                if !list.contains(item) {
                    list.push(item.clone());
                }
            }
        }
        edit(&mut settings.dns_servers, &self.dns_rm, &self.dns_add);
        edit(
            &mut settings.dns_search,
            &self.dns_search_rm,
            &self.dns_search_add,
        );
        edit(
            &mut settings.dns_options,
            &self.dns_option_rm,
            &self.dns_option_add,
        );
        settings.extra_hosts.retain(|extra| {
            !self
                .host_rm
                .iter()
                .any(|rm| *rm == extra.host || *rm == extra.to_string())
        });
        edit(&mut settings.extra_hosts, &[], &self.host_add);
        // As docker/cli: adding takes a capability out of the drops, and
        // dropping takes it out of the adds.
        edit(&mut settings.cap_drop, &self.cap_add, &[]);
        edit(&mut settings.cap_add, &self.cap_drop, &self.cap_add);
        edit(&mut settings.cap_drop, &[], &self.cap_drop);
        for key in &self.sysctl_rm {
            settings.sysctls.remove(key);
        }
        settings.sysctls.extend(self.sysctl_add.iter().cloned());
        settings.ulimits.retain(|limit| {
            !self.ulimit_rm.contains(&limit.name)
                && !self.ulimit_add.iter().any(|add| add.name == limit.name)
        });
        settings.ulimits.extend(self.ulimit_add.iter().cloned());
        edit(&mut settings.groups, &self.group_rm, &self.group_add);
        for key in &self.label_rm {
            settings.labels.remove(key);
        }
        settings.labels.extend(self.label_add.iter().cloned());
        if let Some(read_only) = self.read_only {
            settings.read_only = read_only;
        }
        if let Some(init) = self.init {
            settings.init = Some(init);
        }
        if let Some(signal) = &self.stop_signal {
            settings.stop_signal = Some(signal.clone()).filter(|s| !s.is_empty());
        }
    }
}

/// An update that cannot apply to a service's spec.
#[derive(Debug, thiserror::Error)]
pub enum InvalidUpdate {
    #[error("replicas can only be used with replicated or replicated-job mode")]
    ReplicasOfGlobal,
    #[error("max-concurrent can only be used with replicated-job mode")]
    MaxConcurrentOfNonJob,
    #[error("update and rollback configuration is not supported for jobs")]
    UpdateConfigOfJob,
    #[error(
        "--health-interval, --health-timeout, --health-retries and --health-start-period need a health check: give --health-cmd too"
    )]
    HealthWithoutCommand,
}

impl ServiceUpdateRequest {
    fn apply_healthcheck(&self, spec: &mut ServiceSpec) -> Result<(), InvalidUpdate> {
        if self.no_healthcheck {
            spec.healthcheck = None;
            spec.no_healthcheck = true;
            return Ok(());
        }
        let changes = self.health_cmd.is_some()
            || self.health_interval_millis.is_some()
            || self.health_timeout_millis.is_some()
            || self.health_retries.is_some()
            || self.health_start_period_millis.is_some();
        if !changes {
            return Ok(());
        }
        let mut check = spec.healthcheck.take().unwrap_or_default();
        if let Some(command) = &self.health_cmd {
            check.command = command.clone();
        }
        if check.command.trim().is_empty() {
            return Err(InvalidUpdate::HealthWithoutCommand);
        }
        if let Some(interval) = self.health_interval_millis {
            check.interval_millis = interval.max(1);
        }
        if let Some(timeout) = self.health_timeout_millis {
            check.timeout_millis = timeout.max(1);
        }
        if let Some(retries) = self.health_retries {
            check.retries = retries.max(1);
        }
        if let Some(period) = self.health_start_period_millis {
            check.start_period_millis = period;
        }
        spec.healthcheck = Some(check);
        spec.no_healthcheck = false;
        Ok(())
    }

    /// The `--rollback-*` changes alone.
    pub fn apply_rollback(&self, spec: &mut ServiceSpec) {
        let rollback = &mut spec.rollback;
        if let Some(parallelism) = self.rollback_parallelism {
            rollback.parallelism = parallelism;
        }
        if let Some(delay) = self.rollback_delay_millis {
            rollback.delay_millis = delay;
        }
        if let Some(action) = self.rollback_failure_action {
            rollback.failure_action = action;
        }
        if let Some(monitor) = self.rollback_monitor_millis {
            rollback.monitor_millis = monitor;
        }
        if let Some(order) = self.rollback_order {
            rollback.order = order;
        }
        if let Some(ratio) = self.rollback_max_failure_ratio {
            rollback.max_failure_ratio = ratio;
        }
    }

    /// Whether any `--update-*` or `--rollback-*` setting is given, which
    /// a job refuses (it is not rolled out).
    pub fn sets_update_config(&self) -> bool {
        self.update_parallelism.is_some()
            || self.update_delay_millis.is_some()
            || self.update_failure_action.is_some()
            || self.update_monitor_millis.is_some()
            || self.update_order.is_some()
            || self.update_max_failure_ratio.is_some()
            || self.rollback_parallelism.is_some()
            || self.rollback_delay_millis.is_some()
            || self.rollback_failure_action.is_some()
            || self.rollback_monitor_millis.is_some()
            || self.rollback_order.is_some()
            || self.rollback_max_failure_ratio.is_some()
    }

    /// Applies the changes to `spec`.
    pub fn apply(&self, spec: &mut ServiceSpec) -> Result<(), InvalidUpdate> {
        if let Some(image) = &self.image {
            spec.image = image.clone();
        }
        if let Some(login) = &self.registry_auth {
            spec.registry_auth = Some(login.clone());
        }
        if let Some(args) = &self.args {
            spec.args = args.clone();
        }
        let env_key = |e: &str| e.split('=').next().unwrap_or(e).to_owned();
        spec.env.retain(|e| !self.env_rm.contains(&env_key(e)));
        for add in &self.env_add {
            spec.env.retain(|e| env_key(e) != env_key(add));
            spec.env.push(add.clone());
        }
        if let Some(replicas) = self.replicas {
            match &mut spec.mode {
                ServiceMode::Replicated { replicas: count }
                | ServiceMode::ReplicatedJob {
                    total_completions: count,
                    ..
                } => *count = replicas,
                ServiceMode::Global | ServiceMode::GlobalJob => {
                    return Err(InvalidUpdate::ReplicasOfGlobal);
                }
            }
        }
        if let Some(concurrent) = self.max_concurrent {
            let ServiceMode::ReplicatedJob { max_concurrent, .. } = &mut spec.mode else {
                return Err(InvalidUpdate::MaxConcurrentOfNonJob);
            };
            *max_concurrent = concurrent;
        }
        if spec.mode.is_job() && self.sets_update_config() {
            return Err(InvalidUpdate::UpdateConfigOfJob);
        }
        spec.ports.retain(|p| !self.publish_rm.contains(&p.target));
        spec.ports.extend(self.publish_add.iter().copied());
        spec.networks.retain(|n| !self.network_rm.contains(n));
        spec.aliases.retain(|n, _| !self.network_rm.contains(n));
        spec.networks.extend(self.network_add.iter().cloned());
        spec.constraints
            .retain(|c| !self.constraint_rm.contains(&c.to_string()));
        spec.constraints.extend(self.constraint_add.iter().cloned());
        for key in &self.label_rm {
            spec.labels.remove(key);
        }
        spec.labels.extend(self.label_add.iter().cloned());
        if let Some(hostname) = &self.hostname {
            spec.hostname = Some(hostname.clone());
        }
        if let Some(entrypoint) = &self.entrypoint {
            spec.entrypoint = Some(entrypoint.clone());
        }
        if let Some(workdir) = &self.workdir {
            spec.workdir = Some(workdir.clone());
        }
        if let Some(user) = &self.user {
            spec.user = Some(user.clone());
        }
        let set = |target: &mut Option<u64>, value: Option<u64>| {
            if value.is_some() {
                *target = value;
            }
        };
        set(&mut spec.limits.nano_cpus, self.limit_cpu);
        set(&mut spec.limits.memory_bytes, self.limit_memory);
        set(&mut spec.reservations.nano_cpus, self.reserve_cpu);
        set(&mut spec.reservations.memory_bytes, self.reserve_memory);
        if let Some(condition) = self.restart_condition {
            spec.restart.condition = condition;
        }
        if let Some(delay) = self.restart_delay_millis {
            spec.restart.delay_millis = delay;
        }
        if let Some(attempts) = self.restart_max_attempts {
            spec.restart.max_attempts = attempts;
        }
        if let Some(window) = self.restart_window_millis {
            spec.restart.window_millis = window;
        }
        if let Some(parallelism) = self.update_parallelism {
            spec.update.parallelism = parallelism;
        }
        if let Some(delay) = self.update_delay_millis {
            spec.update.delay_millis = delay;
        }
        if let Some(action) = self.update_failure_action {
            spec.update.failure_action = action;
        }
        if let Some(monitor) = self.update_monitor_millis {
            spec.update.monitor_millis = monitor;
        }
        if let Some(order) = self.update_order {
            spec.update.order = order;
        }
        if let Some(ratio) = self.update_max_failure_ratio {
            spec.update.max_failure_ratio = ratio;
        }
        self.apply_rollback(spec);
        if let Some(grace) = self.stop_grace_millis {
            spec.stop_grace_millis = grace;
        }
        self.apply_healthcheck(spec)?;
        for (references, remove, add) in [
            (&mut spec.secrets, &self.secret_rm, &self.secret_add),
            (&mut spec.configs, &self.config_rm, &self.config_add),
        ] {
            references.retain(|r| !remove.contains(&r.name) && !remove.contains(&r.id));
            references.extend(add.iter().cloned());
        }
        spec.mounts.retain(|m| {
            !self.mount_rm.contains(&m.target)
                && !self.mount_add.iter().any(|add| add.target == m.target)
        });
        spec.mounts.extend(self.mount_add.iter().cloned());
        spec.placement_prefs
            .retain(|key| !self.placement_pref_rm.contains(key));
        spec.placement_prefs
            .extend(self.placement_pref_add.iter().cloned());
        if let Some(max) = self.max_replicas_per_node {
            spec.max_replicas_per_node = (max > 0).then_some(max);
        }
        if let Some(pids) = self.limit_pids {
            spec.limits.pids = (pids > 0).then_some(pids);
        }
        self.container.apply(&mut spec.container);
        if self.force {
            spec.force_update += 1;
        }
        Ok(())
    }
}

impl Request {
    /// Whether the leader answers it (node, token and network commands): a
    /// manager that does not lead forwards it.
    pub fn is_for_managers(&self) -> bool {
        matches!(
            self,
            Request::JoinToken { .. }
                | Request::NodeList { .. }
                | Request::NodeInspect { .. }
                | Request::NodeUpdate(_)
                | Request::NodeRemove { .. }
                | Request::NodePromote { .. }
                | Request::NodeDemote { .. }
                | Request::SwarmNetworkCreate(_)
                | Request::SwarmNetworkList { .. }
                | Request::SwarmNetworkInspect { .. }
                | Request::SwarmNetworkRemove { .. }
                | Request::SwarmServiceCreate { .. }
                | Request::SwarmServiceList { .. }
                | Request::SwarmServiceInspect { .. }
                | Request::SwarmServiceTasks { .. }
                | Request::SwarmServiceScale { .. }
                | Request::SwarmServiceUpdate(_)
                | Request::SwarmServiceRollback { .. }
                | Request::SwarmServiceRemove { .. }
                | Request::SwarmServiceLogs { .. }
                | Request::SwarmRotateGossipKey
                | Request::SwarmSetGossipKeyRotation { .. }
                | Request::SwarmUpdateSettings { .. }
                | Request::SwarmUnlockKey { .. }
                | Request::SwarmServiceDeploy { .. }
                | Request::PayloadCreate(_)
                | Request::PayloadList { .. }
                | Request::PayloadInspect { .. }
                | Request::PayloadRemove { .. }
                | Request::SwarmServiceObjects
                | Request::SwarmTaskObjects
                | Request::NodeObjects
                | Request::SwarmInspect
                | Request::SwarmServiceReplace(_)
                | Request::PayloadUpdate { .. }
        )
    }
}

/// `swarm node update`'s changes to one node.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NodeUpdateRequest {
    /// ID, unique ID prefix, or hostname.
    pub node: String,
    pub availability: Option<Availability>,
    pub label_add: Vec<(String, String)>,
    pub label_rm: Vec<String>,
    /// `--role`: promote or demote.
    #[serde(default)]
    pub role: Option<Role>,
    /// The labels replaced by these (the Engine API's whole spec).
    #[serde(default)]
    pub labels: Option<std::collections::BTreeMap<String, String>>,
    /// Refused unless the node is at this version.
    #[serde(default)]
    pub version: Option<u64>,
}

/// `swarm join`'s arguments; unset ones take the daemon's defaults.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SwarmJoinRequest {
    pub token: String,
    pub manager: std::net::SocketAddr,
    #[serde(default)]
    pub advertise_addr: Option<std::net::Ipv4Addr>,
    /// Where this node's API listens if it is (or becomes) a manager.
    #[serde(default)]
    pub listen_port: Option<u16>,
    /// `--listen-addr`'s address: an IPv4 address or an interface holding
    /// one, resolved by the daemon [default: the daemon's --listen-addr].
    #[serde(default)]
    pub listen_host: Option<String>,
    /// `--data-path-addr`: where other nodes send this node's overlay
    /// traffic, an address or interface resolved by the daemon [default:
    /// the advertise address].
    #[serde(default)]
    pub data_path_addr: Option<String>,
    /// `--availability`: what the node takes from the start.
    #[serde(default)]
    pub availability: Option<Availability>,
}

/// `swarm network create`'s flags.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SwarmNetworkCreateRequest {
    pub name: String,
    /// Network address and prefix length [default: the next free /24 of 10.0.0.0/8].
    pub subnet: Option<(std::net::Ipv4Addr, u8)>,
    pub gateway: Option<std::net::Ipv4Addr>,
    /// MTU inside the tasks (`-o mtu=N`).
    pub mtu: Option<u32>,
    pub attachable: bool,
    pub labels: Vec<(String, String)>,
}

/// One row of `swarm network ls`, with Docker's keys.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkRow {
    #[serde(rename = "ID")]
    pub id: String,
    pub name: String,
    pub driver: String,
    pub scope: String,
    #[serde(default, rename = "IPv6")]
    pub ipv6: bool,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// RFC 3339, as Docker's.
    #[serde(default)]
    pub created_at: String,
}

/// `swarm init`'s flags; unset ones take the daemon's defaults.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SwarmInitRequest {
    /// `--autolock`: managers' keys sealed under an unlock key on disk.
    #[serde(default)]
    pub autolock: bool,
    pub advertise_addr: Option<std::net::Ipv4Addr>,
    pub listen_port: Option<u16>,
    pub cert_expiry_secs: Option<u64>,
    pub heartbeat_millis: Option<u64>,
    /// How often the leader rotates the gossip key.
    #[serde(default)]
    pub gossip_key_rotation_secs: Option<u64>,
    /// Ended tasks kept per slot.
    #[serde(default)]
    pub task_history_limit: Option<u64>,
    /// `--availability` of this first node.
    #[serde(default)]
    pub availability: Option<Availability>,
    /// `--listen-addr`'s address, as for `join`.
    #[serde(default)]
    pub listen_host: Option<String>,
    /// `--data-path-addr`, as for `join`.
    #[serde(default)]
    pub data_path_addr: Option<String>,
    /// `--default-addr-pool`: where network subnets come from.
    #[serde(default)]
    pub address_pools: Vec<(std::net::Ipv4Addr, u8)>,
    /// `--default-addr-pool-mask-length`.
    #[serde(default)]
    pub subnet_size: Option<u8>,
    /// `--snapshot-interval`: Raft entries between snapshots.
    #[serde(default)]
    pub snapshot_interval: Option<u64>,
    /// `--max-snapshots`: older snapshots kept besides the current one.
    #[serde(default)]
    pub max_snapshots: Option<u64>,
    /// `--force-new-cluster`: a manager that lost its quorum becomes the
    /// only manager of the same swarm, keeping its state.
    #[serde(default)]
    pub force_new_cluster: bool,
}

/// This node's part in a swarm, with Docker's `docker info` keys.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SwarmInfo {
    /// `inactive` or `active`.
    pub local_node_state: String,
    #[serde(rename = "NodeID")]
    pub node_id: String,
    pub node_addr: String,
    /// Where other nodes send its overlay traffic (`--data-path-addr`).
    #[serde(default)]
    pub data_path_addr: String,
    /// Whether this node is a manager.
    pub control_available: bool,
    #[serde(rename = "ClusterID")]
    pub cluster_id: String,
    pub managers: usize,
    pub nodes: usize,
    /// Whether this manager leads the Raft cluster.
    #[serde(default)]
    pub is_leader: bool,
    /// The leader's control-plane address, as this manager knows it.
    #[serde(default)]
    pub leader_addr: String,
    /// This manager's Raft, when it is one.
    #[serde(default)]
    pub raft: Option<RaftInfo>,
}

/// Where this manager's Raft stands.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RaftInfo {
    pub term: u64,
    /// Index of the last log entry applied to this manager's store.
    pub last_applied: u64,
    /// Index of the last entry in this manager's log.
    pub last_log_index: u64,
    /// Index of the last entry in the latest snapshot.
    pub snapshot_index: u64,
    /// Entries up to this index are deleted from the log (they are in the
    /// snapshot).
    pub purged_index: u64,
    pub voters: usize,
    /// Replaced snapshots this manager keeps (`--max-snapshots`).
    #[serde(default)]
    pub retained_snapshots: usize,
}

/// One task's output for `swarm service logs`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskOutput {
    pub task_id: String,
    /// `<service>.<slot>` (or `<service>.<node id>` for a global service).
    pub name: String,
    pub node_id: String,
    pub node: String,
    pub service_id: String,
    pub lines: Vec<LogLine>,
}

impl TaskOutput {
    /// The attributes Docker gives each line of a swarm task's log (what
    /// `--details` shows), sorted by key, as its API writes them.
    pub fn details(&self) -> String {
        format!(
            "com.docker.swarm.node.id={},com.docker.swarm.service.id={},com.docker.swarm.task.id={}",
            self.node_id, self.service_id, self.task_id
        )
    }
}

/// One change to the swarm's objects, as Docker's events name it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmEvent {
    /// Its number on the manager that applied it.
    pub seq: u64,
    pub time_nanos: i64,
    /// `service`, `node`, `network`, `secret`, `config` or `task`.
    pub kind: String,
    /// `create`, `update` or `remove`.
    pub action: String,
    pub id: String,
    /// `name`, and for an update what changed as `KEY.old` and `KEY.new`.
    pub attributes: std::collections::BTreeMap<String, String>,
}

impl SwarmEvent {
    /// Docker's `events.Message`, as `/events` and `--format json` give it.
    pub fn docker_message(&self) -> serde_json::Value {
        serde_json::json!({
            "Type": self.kind,
            "Action": self.action,
            "Actor": { "ID": self.id, "Attributes": self.attributes },
            "scope": "swarm",
            "time": self.time_nanos.div_euclid(1_000_000_000),
            "timeNano": self.time_nanos,
        })
    }
}

/// One row of `swarm node ls`, with Docker's keys.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeRow {
    #[serde(rename = "ID")]
    pub id: String,
    pub hostname: String,
    /// `Ready` or `Down`.
    pub status: String,
    /// `Active`, `Pause` or `Drain`.
    pub availability: String,
    /// `Leader`, `Reachable`, `Unreachable`, or empty for a worker.
    pub manager_status: String,
    /// Whether this row is the node answering.
    #[serde(rename = "Self")]
    pub is_self: bool,
    #[serde(default)]
    pub engine_version: String,
    /// Docker's TLS status: `Ready` when the node's certificate is signed
    /// by the swarm's root CA, `Needs Rotation` when by another, `Unknown`
    /// until the leader has heard from it.
    #[serde(default, rename = "TLSStatus")]
    pub tls_status: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    Info(Box<DaemonInfo>),
    /// A service created or updated, and what the user should know of it
    /// (an image that could not be pinned to a digest).
    Service {
        id: String,
        warnings: Vec<String>,
    },
    DataplaneStats(DataplaneStats),
    Endpoints(Vec<EndpointRow>),
    Endpoint(EndpointRow),
    Services(Vec<ServiceRow>),
    /// A join token and the manager address to join through.
    JoinToken {
        role: Role,
        token: String,
        manager_addr: String,
    },
    /// `swarm init` succeeded: this node's ID, and the worker join token.
    SwarmInitialized {
        node_id: String,
        worker_token: String,
        manager_addr: String,
    },
    Nodes(Vec<NodeRow>),
    Networks(Vec<NetworkRow>),
    /// `swarm network inspect`: Docker's shape, as JSON.
    NetworkInspect(serde_json::Value),
    /// `swarm node inspect`: Docker's shape, as JSON.
    NodeInspect(serde_json::Value),
    /// `swarm join` succeeded in this role.
    Joined {
        role: Role,
    },
    /// Rows with Docker's keys, for a table or one JSON object per line.
    Rows(Vec<serde_json::Value>),
    /// An inspect's JSON, shaped like Docker's.
    Json(serde_json::Value),
    /// Done; one line to print per thing done.
    Notes(Vec<String>),
    /// `swarm service logs`: each task's output, in `service ps` order, and
    /// the nodes that did not answer.
    Logs {
        tasks: Vec<TaskOutput>,
        unanswered: Vec<String>,
    },
    /// `swarm events`: changes, in order, and the last number given.
    Events {
        events: Vec<SwarmEvent>,
        last: u64,
    },
    /// Done; nothing to report.
    Done,
    /// The request failed; the message says why and what to do.
    Error(String),
}

/// Keys as Docker spells them, so `--format json` reads like `docker info`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DaemonInfo {
    #[serde(rename = "NodeID")]
    pub node_id: String,
    pub hostname: String,
    pub advertise_addr: String,
    #[serde(rename = "UnderlayInterface")]
    pub underlay_iface: String,
    pub underlay_hook: UnderlayHook,
    pub local_delivery: LocalDelivery,
    pub data_path_port: u16,
    /// What runs this node's tasks: `native` or `docker`.
    #[serde(default)]
    pub runtime: String,
    pub data_dir: String,
    pub pin_dir: String,
    pub pid: u32,
    pub version: String,
    /// Filled in when asked: membership changes while the daemon runs.
    #[serde(default)]
    pub swarm: SwarmInfo,
    /// The tasks' resolver's counters, filled in when asked.
    #[serde(default)]
    pub dns: DnsStats,
    /// Gossip's datagrams, and those dropped by reason; `None` while this
    /// node does not gossip (not in a swarm).
    #[serde(default)]
    pub gossip: Option<GossipStats>,
}

/// What the resolver has done since the daemon started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DnsStats {
    pub queries: u64,
    /// Answered from the swarm's names.
    pub answered: u64,
    pub forwarded: u64,
    pub nxdomain: u64,
    pub servfail: u64,
    /// Dropped (no header) or answered FORMERR.
    pub malformed: u64,
}

/// Datagrams in and out, and those dropped, by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GossipStats {
    /// The ID of the key this node seals with (see `GossipKey::id`).
    #[serde(default, rename = "KeyID")]
    pub key_id: String,
    pub sent: u64,
    pub received: u64,
    pub dropped_malformed: u64,
    pub dropped_unauthenticated: u64,
    pub dropped_bad_message: u64,
}
