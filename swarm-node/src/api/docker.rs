//! Docker's JSON for what users declare: a service's spec in the Engine
//! API's models (bollard's, generated from Docker's swagger) and back.
//! `service inspect` shows the first; the Engine API reads the second.

use std::collections::{BTreeMap, HashMap};

use bollard::models as docker;
use serde::{Serialize, de::DeserializeOwned};

use super::{
    mounts::{FileReference, Mount, MountKind},
    specs::{
        Constraint, ContainerSettings, EndpointMode, ExtraHost, FailureRatio, PortConfig,
        ResourceSpec, RestartPolicy, ServiceMode, ServiceSpec, Ulimit, UpdateConfig,
    },
    tasks::HealthCheck,
};
use crate::dataplane::{Protocol, PublishMode};

/// A Docker spec that cannot become ours: the message is Docker's where
/// Docker has one (status 400).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

const NANOS_PER_MILLI: i64 = 1_000_000;

/// One enum to another through the word both spell the same way.
fn same_word<T: Serialize, U: DeserializeOwned>(value: T) -> Option<U> {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| serde_json::from_value(v).ok())
}

fn nanos(millis: u64) -> i64 {
    i64::try_from(millis).unwrap_or(i64::MAX / NANOS_PER_MILLI) * NANOS_PER_MILLI
}

fn millis(nanos: Option<i64>, default: u64) -> u64 {
    nanos.map_or(default, |n| u64::try_from(n / NANOS_PER_MILLI).unwrap_or(0))
}

fn map(labels: &BTreeMap<String, String>) -> HashMap<String, String> {
    labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn non_empty<T: Clone>(items: &[T]) -> Option<Vec<T>> {
    (!items.is_empty()).then(|| items.to_vec())
}

/// Keys Docker's JSON spells otherwise than its swagger (and so bollard):
/// Go decodes keys case-insensitively, serde does not.
const DOCKER_SPELLINGS: &[(&str, &str)] = &[("HealthCheck", "Healthcheck")];

fn respell(value: &mut serde_json::Value, from_swagger: bool) {
    match value {
        serde_json::Value::Object(map) => {
            for (swagger, docker) in DOCKER_SPELLINGS {
                let (from, to) = if from_swagger {
                    (swagger, docker)
                } else {
                    (docker, swagger)
                };
                if let Some(moved) = map.remove(*from) {
                    map.insert((*to).to_owned(), moved);
                }
            }
            map.values_mut().for_each(|v| respell(v, from_swagger));
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| respell(v, from_swagger)),
        _ => {}
    }
}

/// A `Spec` as JSON with Docker's own spellings (`Healthcheck`).
pub fn to_docker_json(value: &impl Serialize) -> serde_json::Value {
    let mut json = serde_json::to_value(value).expect("plain data serializes");
    respell(&mut json, true);
    json
}

/// Docker's JSON (as the docker CLI writes it) as bollard's model.
pub fn parse_docker_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, SpecError> {
    let mut json: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| SpecError(format!("invalid JSON: {e}")))?;
    respell(&mut json, false);
    serde_json::from_value(json).map_err(|e| SpecError(format!("invalid JSON: {e}")))
}

/// Our spec as Docker's `Spec` (network references are IDs).
pub fn service_spec(spec: &ServiceSpec) -> docker::ServiceSpec {
    let mode = match spec.mode {
        ServiceMode::Replicated { replicas } => docker::ServiceSpecMode {
            replicated: Some(docker::ServiceSpecModeReplicated {
                replicas: Some(replicas as i64),
            }),
            ..Default::default()
        },
        ServiceMode::Global => docker::ServiceSpecMode {
            global: Some(HashMap::new()),
            ..Default::default()
        },
        ServiceMode::ReplicatedJob {
            max_concurrent,
            total_completions,
        } => docker::ServiceSpecMode {
            replicated_job: Some(docker::ServiceSpecModeReplicatedJob {
                max_concurrent: Some(max_concurrent as i64),
                total_completions: Some(total_completions as i64),
            }),
            ..Default::default()
        },
        ServiceMode::GlobalJob => docker::ServiceSpecMode {
            global_job: Some(HashMap::new()),
            ..Default::default()
        },
    };
    // Jobs are not rolled out, so Docker shows no update settings for them.
    let rolled = !spec.mode.is_job();
    docker::ServiceSpec {
        name: Some(spec.name.clone()),
        labels: Some(map(&spec.labels)),
        task_template: Some(task_spec(spec)),
        mode: Some(mode),
        update_config: rolled.then(|| update_config(&spec.update)),
        rollback_config: rolled.then(|| rollback_config(&spec.rollback)),
        networks: None,
        endpoint_spec: Some(endpoint_spec(spec.endpoint_mode, &spec.ports)),
    }
}

/// The task template of `spec`: what each task of the service runs.
pub fn task_spec(spec: &ServiceSpec) -> docker::TaskSpec {
    let healthcheck = match &spec.healthcheck {
        Some(check) => Some(docker::HealthConfig {
            test: Some(vec!["CMD-SHELL".into(), check.command.clone()]),
            interval: Some(nanos(check.interval_millis)),
            timeout: Some(nanos(check.timeout_millis)),
            retries: Some(i64::from(check.retries)),
            start_period: Some(nanos(check.start_period_millis)),
            start_interval: None,
        }),
        None if spec.no_healthcheck => Some(docker::HealthConfig {
            test: Some(vec!["NONE".into()]),
            ..Default::default()
        }),
        None => None,
    };
    let container = docker::TaskSpecContainerSpec {
        image: Some(spec.image.clone()),
        command: spec.entrypoint.clone(),
        args: non_empty(&spec.args),
        hostname: spec.hostname.clone(),
        env: non_empty(&spec.env),
        dir: spec.workdir.clone(),
        user: spec.user.clone(),
        mounts: non_empty(&spec.mounts.iter().map(mount).collect::<Vec<_>>()),
        stop_grace_period: Some(nanos(spec.stop_grace_millis)),
        health_check: healthcheck,
        secrets: non_empty(
            &spec
                .secrets
                .iter()
                .map(|r| docker::TaskSpecContainerSpecSecrets {
                    file: Some(file_of(r)),
                    secret_id: Some(r.id.clone()),
                    secret_name: Some(r.name.clone()),
                })
                .collect::<Vec<_>>(),
        ),
        configs: non_empty(
            &spec
                .configs
                .iter()
                .map(|r| docker::TaskSpecContainerSpecConfigs {
                    // The same fields under another generated name.
                    file: same_word(file_of(r)),
                    runtime: None,
                    config_id: Some(r.id.clone()),
                    config_name: Some(r.name.clone()),
                })
                .collect::<Vec<_>>(),
        ),
        labels: non_empty_map(&spec.container.labels),
        groups: non_empty(&spec.container.groups),
        read_only: spec.container.read_only.then_some(true),
        stop_signal: spec.container.stop_signal.clone(),
        hosts: non_empty(
            &spec
                .container
                .extra_hosts
                .iter()
                .map(|extra| format!("{} {}", extra.ip, extra.host))
                .collect::<Vec<_>>(),
        ),
        dns_config: dns_config(&spec.container),
        init: spec.container.init,
        sysctls: non_empty_map(&spec.container.sysctls),
        capability_add: non_empty(&spec.container.cap_add),
        capability_drop: non_empty(&spec.container.cap_drop),
        ulimits: non_empty(
            &spec
                .container
                .ulimits
                .iter()
                .map(|limit| docker::ResourcesUlimits {
                    name: Some(limit.name.clone()),
                    soft: Some(limit.soft),
                    hard: Some(limit.hard),
                })
                .collect::<Vec<_>>(),
        ),
        ..Default::default()
    };
    let resources = |r: &ResourceSpec| {
        (
            r.nano_cpus.map(|n| n as i64),
            r.memory_bytes.map(|n| n as i64),
        )
    };
    let (limit_cpus, limit_memory) = resources(&spec.limits);
    let (reserve_cpus, reserve_memory) = resources(&spec.reservations);
    docker::TaskSpec {
        container_spec: Some(container),
        resources: Some(docker::TaskSpecResources {
            limits: Some(docker::Limit {
                nano_cpus: limit_cpus,
                memory_bytes: limit_memory,
                pids: spec.limits.pids.map(|p| p as i64),
            }),
            reservations: Some(docker::ResourceObject {
                nano_cpus: reserve_cpus,
                memory_bytes: reserve_memory,
                generic_resources: None,
            }),
            ..Default::default()
        }),
        restart_policy: Some(docker::TaskSpecRestartPolicy {
            condition: same_word(spec.restart.condition),
            delay: Some(nanos(spec.restart.delay_millis)),
            max_attempts: Some(spec.restart.max_attempts as i64),
            window: Some(nanos(spec.restart.window_millis)),
        }),
        placement: Some(docker::TaskSpecPlacement {
            constraints: non_empty(
                &spec
                    .constraints
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>(),
            ),
            preferences: non_empty(
                &spec
                    .placement_prefs
                    .iter()
                    .map(|key| docker::TaskSpecPlacementPreferences {
                        spread: Some(docker::TaskSpecPlacementSpread {
                            spread_descriptor: Some(key.clone()),
                        }),
                    })
                    .collect::<Vec<_>>(),
            ),
            max_replicas: spec.max_replicas_per_node.map(|m| m as i64),
            platforms: None,
        }),
        force_update: Some(spec.force_update),
        runtime: Some("container".into()),
        networks: non_empty(
            &spec
                .networks
                .iter()
                .map(|network| docker::NetworkAttachmentConfig {
                    target: Some(network.clone()),
                    aliases: spec.aliases.get(network).cloned(),
                    driver_opts: None,
                })
                .collect::<Vec<_>>(),
        ),
        ..Default::default()
    }
}

/// A secret's or config's file as Docker shows it; its name is the
/// target, or the secret's name when no target was given.
fn file_of(reference: &FileReference) -> docker::TaskSpecContainerSpecFile {
    let name = if reference.target.is_empty() {
        reference.name.clone()
    } else {
        reference.target.clone()
    };
    docker::TaskSpecContainerSpecFile {
        name: Some(name),
        uid: Some(reference.uid.to_string()),
        gid: Some(reference.gid.to_string()),
        mode: Some(reference.mode),
    }
}

fn update_config(config: &UpdateConfig) -> docker::ServiceSpecUpdateConfig {
    docker::ServiceSpecUpdateConfig {
        parallelism: Some(config.parallelism as i64),
        delay: Some(nanos(config.delay_millis)),
        failure_action: same_word(config.failure_action),
        monitor: Some(nanos(config.monitor_millis)),
        max_failure_ratio: Some(f64::from(config.max_failure_ratio.get())),
        order: same_word(config.order),
    }
}

/// The same fields as an update's, under another generated type; a
/// rollback cannot itself roll back, so that action is not carried.
fn rollback_config(config: &UpdateConfig) -> docker::ServiceSpecRollbackConfig {
    let mut fields = update_config(config);
    if fields.failure_action == Some(docker::ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK) {
        fields.failure_action = None;
    }
    same_word(fields).unwrap_or_default()
}

/// Ports as Docker's endpoint spec holds them.
pub fn endpoint_spec(mode: EndpointMode, ports: &[PortConfig]) -> docker::EndpointSpec {
    docker::EndpointSpec {
        mode: same_word(mode),
        ports: non_empty(&ports.iter().map(port).collect::<Vec<_>>()),
    }
}

pub fn port(port: &PortConfig) -> docker::EndpointPortConfig {
    docker::EndpointPortConfig {
        name: None,
        protocol: Some(match port.protocol {
            Protocol::Tcp => docker::EndpointPortConfigProtocolEnum::TCP,
            Protocol::Udp => docker::EndpointPortConfigProtocolEnum::UDP,
            Protocol::Sctp => docker::EndpointPortConfigProtocolEnum::SCTP,
        }),
        target_port: Some(i64::from(port.target)),
        published_port: port.published.map(i64::from),
        publish_mode: Some(match port.mode {
            PublishMode::Ingress => docker::EndpointPortConfigPublishModeEnum::INGRESS,
            PublishMode::Host => docker::EndpointPortConfigPublishModeEnum::HOST,
        }),
    }
}

fn mount(mount: &Mount) -> docker::Mount {
    let mut shown = docker::Mount {
        target: Some(mount.target.clone()),
        source: Some(mount.source.clone()),
        typ: Some(match mount.kind {
            MountKind::Bind => docker::MountType::BIND,
            MountKind::Volume => docker::MountType::VOLUME,
            MountKind::Tmpfs => docker::MountType::TMPFS,
        }),
        read_only: Some(mount.readonly),
        ..Default::default()
    };
    match mount.kind {
        MountKind::Volume => {
            shown.volume_options = Some(docker::MountVolumeOptions {
                no_copy: Some(mount.volume_nocopy),
                labels: Some(map(&mount.volume_labels)),
                driver_config: Some(docker::MountVolumeOptionsDriverConfig {
                    name: Some("local".into()),
                    options: None,
                }),
                subpath: None,
            });
        }
        MountKind::Tmpfs => {
            shown.tmpfs_options = Some(docker::MountTmpfsOptions {
                size_bytes: mount.tmpfs_size.map(|s| s as i64),
                mode: mount.tmpfs_mode.map(i64::from),
                options: None,
            });
        }
        MountKind::Bind => {}
    }
    shown
}

/// Docker's `Spec` as ours, with a warning for each thing set that swarm
/// does not do (Docker ignores some of them on swarm too). `name` fills an
/// empty `Name`, as Docker gives one.
pub fn from_service_spec(
    spec: docker::ServiceSpec,
    name: impl FnOnce() -> String,
) -> Result<(ServiceSpec, Vec<String>), SpecError> {
    let mut warnings = Vec::new();
    let template = spec.task_template.unwrap_or_default();
    let container = template.container_spec.clone().ok_or_else(|| {
        SpecError(
            "ContainerSpec: this node runs container tasks only; a service needs TaskTemplate.ContainerSpec"
                .into(),
        )
    })?;
    let image = container.image.clone().unwrap_or_default();
    if image.trim().is_empty() {
        return Err(SpecError(
            "ContainerSpec: image reference must be provided".into(),
        ));
    }
    let mode = match spec.mode {
        None => ServiceMode::Replicated { replicas: 1 },
        Some(docker::ServiceSpecMode {
            replicated_job: Some(job),
            ..
        }) => {
            let count = |value: Option<i64>, field: &str| {
                value
                    .map(|v| {
                        u64::try_from(v)
                            .map_err(|_| SpecError(format!("invalid {field} value {v}")))
                    })
                    .transpose()
            };
            // Docker's defaults: one at a time; as many completions as that.
            let max_concurrent = count(job.max_concurrent, "MaxConcurrent")?.unwrap_or(1);
            ServiceMode::ReplicatedJob {
                max_concurrent,
                total_completions: count(job.total_completions, "TotalCompletions")?
                    .unwrap_or(max_concurrent),
            }
        }
        Some(docker::ServiceSpecMode {
            global_job: Some(_),
            ..
        }) => ServiceMode::GlobalJob,
        Some(docker::ServiceSpecMode {
            global: Some(_), ..
        }) => ServiceMode::Global,
        Some(docker::ServiceSpecMode { replicated, .. }) => {
            let replicas = replicated.and_then(|r| r.replicas).unwrap_or(1);
            ServiceMode::Replicated {
                replicas: u64::try_from(replicas)
                    .map_err(|_| SpecError(format!("invalid replicas value {replicas}")))?,
            }
        }
    };
    let name = match spec.name.filter(|n| !n.is_empty()) {
        Some(name) => name,
        None => name(),
    };
    let mut ours = ServiceSpec::new(name, image, mode);
    ours.labels = spec.labels.unwrap_or_default().into_iter().collect();
    ours.entrypoint = container.command.clone().filter(|c| !c.is_empty());
    ours.args = container.args.clone().unwrap_or_default();
    ours.env = container.env.clone().unwrap_or_default();
    ours.hostname = container.hostname.clone().filter(|h| !h.is_empty());
    ours.workdir = container.dir.clone().filter(|d| !d.is_empty());
    ours.user = container.user.clone().filter(|u| !u.is_empty());
    if let Some(grace) = container.stop_grace_period {
        ours.stop_grace_millis = millis(Some(grace), 10_000);
    }
    apply_healthcheck(&mut ours, container.health_check.clone())?;
    ours.mounts = container
        .mounts
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(from_mount)
        .collect::<Result<_, _>>()?;
    ours.secrets = container
        .secrets
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|s| file_reference(s.secret_id, s.secret_name, s.file))
        .collect::<Result<_, _>>()?;
    ours.configs = container
        .configs
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|c| file_reference(c.config_id, c.config_name, c.file.and_then(same_word)))
        .collect::<Result<_, _>>()?;
    ours.container = container_settings(&container)?;
    warn_unsupported(&container, &template, &mut warnings);
    if let Some(resources) = template.resources {
        let limits = resources.limits.unwrap_or_default();
        ours.limits = ResourceSpec {
            nano_cpus: positive(limits.nano_cpus),
            memory_bytes: positive(limits.memory_bytes),
            pids: positive(limits.pids),
        };
        let reservations = resources.reservations.unwrap_or_default();
        ours.reservations = ResourceSpec {
            nano_cpus: positive(reservations.nano_cpus),
            memory_bytes: positive(reservations.memory_bytes),
            pids: None,
        };
    }
    if let Some(policy) = template.restart_policy {
        // The mode's defaults: a job restarts on failure only.
        let defaults = ours.restart.clone();
        ours.restart = RestartPolicy {
            condition: policy
                .condition
                .and_then(same_word)
                .unwrap_or(defaults.condition),
            delay_millis: millis(policy.delay, defaults.delay_millis),
            max_attempts: policy
                .max_attempts
                .and_then(|m| u64::try_from(m).ok())
                .unwrap_or(0),
            window_millis: millis(policy.window, defaults.window_millis),
        };
    }
    if let Some(placement) = template.placement {
        ours.constraints = placement
            .constraints
            .unwrap_or_default()
            .iter()
            .map(|c| {
                c.parse::<Constraint>()
                    .map_err(|e| SpecError(format!("invalid constraint: {e}")))
            })
            .collect::<Result<_, _>>()?;
        ours.placement_prefs = placement
            .preferences
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| p.spread.and_then(|s| s.spread_descriptor))
            .collect();
        ours.max_replicas_per_node = placement
            .max_replicas
            .and_then(|m| u64::try_from(m).ok())
            .filter(|m| *m > 0);
    }
    ours.force_update = template.force_update.unwrap_or(0);
    let networks = template
        .networks
        .filter(|n| !n.is_empty())
        .or(spec.networks)
        .unwrap_or_default();
    for network in networks {
        let target = network
            .target
            .filter(|t| !t.is_empty())
            .ok_or_else(|| SpecError("a network attachment needs a Target".into()))?;
        if let Some(aliases) = network.aliases.filter(|a| !a.is_empty()) {
            ours.aliases.insert(target.clone(), aliases);
        }
        ours.networks.push(target);
    }
    if let Some(config) = spec.update_config {
        ours.update = from_update_config(config)?;
    }
    // The same fields under another generated type (its actions a subset).
    if let Some(config) = spec.rollback_config.and_then(same_word) {
        ours.rollback = from_update_config(config)?;
    }
    if let Some(endpoint) = spec.endpoint_spec {
        ours.endpoint_mode = endpoint
            .mode
            .and_then(same_word)
            .unwrap_or(EndpointMode::Vip);
        ours.ports = endpoint
            .ports
            .unwrap_or_default()
            .into_iter()
            .map(from_port)
            .collect::<Result<_, _>>()?;
    }
    Ok((ours, warnings))
}

fn positive(value: Option<i64>) -> Option<u64> {
    value.and_then(|v| u64::try_from(v).ok()).filter(|v| *v > 0)
}

fn from_update_config(config: docker::ServiceSpecUpdateConfig) -> Result<UpdateConfig, SpecError> {
    let defaults = UpdateConfig::default();
    let max_failure_ratio = match config.max_failure_ratio {
        Some(ratio) => FailureRatio::new(ratio as f32).map_err(SpecError)?,
        None => defaults.max_failure_ratio,
    };
    Ok(UpdateConfig {
        parallelism: config
            .parallelism
            .and_then(|p| u64::try_from(p).ok())
            .unwrap_or(defaults.parallelism),
        delay_millis: millis(config.delay, defaults.delay_millis),
        failure_action: config
            .failure_action
            .and_then(same_word)
            .unwrap_or(defaults.failure_action),
        monitor_millis: match millis(config.monitor, defaults.monitor_millis) {
            0 => defaults.monitor_millis,
            m => m,
        },
        order: config.order.and_then(same_word).unwrap_or(defaults.order),
        max_failure_ratio,
    })
}

/// Docker's `Test`: `["NONE"]`, `["CMD-SHELL", line]`, `["CMD", arg...]`,
/// or empty for the image's own check.
fn apply_healthcheck(
    spec: &mut ServiceSpec,
    config: Option<docker::HealthConfig>,
) -> Result<(), SpecError> {
    let Some(config) = config else {
        return Ok(());
    };
    let test = config.test.clone().unwrap_or_default();
    let command = match test.first().map(String::as_str) {
        None => return Ok(()),
        Some("NONE") => {
            spec.no_healthcheck = true;
            return Ok(());
        }
        Some("CMD-SHELL") if test.len() == 2 => test[1].clone(),
        Some("CMD") if test.len() > 1 => test[1..]
            .iter()
            .map(|arg| shell_quote(arg))
            .collect::<Vec<_>>()
            .join(" "),
        Some(other) => {
            return Err(SpecError(format!(
                "invalid Healthcheck.Test {test:?}: the first item must be NONE, CMD or CMD-SHELL (got {other:?}) with a command after it"
            )));
        }
    };
    let defaults = HealthCheck::default();
    let or_default = |value: Option<i64>, default: u64| match millis(value, default) {
        0 => default,
        m => m,
    };
    spec.healthcheck = Some(HealthCheck {
        command,
        interval_millis: or_default(config.interval, defaults.interval_millis),
        timeout_millis: or_default(config.timeout, defaults.timeout_millis),
        retries: match config.retries.and_then(|r| u32::try_from(r).ok()) {
            Some(0) | None => defaults.retries,
            Some(r) => r,
        },
        start_period_millis: millis(config.start_period, defaults.start_period_millis),
    });
    Ok(())
}

/// `arg` as one word of a POSIX shell line.
fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

fn file_reference(
    id: Option<String>,
    name: Option<String>,
    file: Option<docker::TaskSpecContainerSpecFile>,
) -> Result<FileReference, SpecError> {
    let docker::TaskSpecContainerSpecFile {
        name: file_name,
        uid,
        gid,
        mode,
    } = file.unwrap_or_default();
    let name = name.unwrap_or_default();
    let id = id.unwrap_or_default();
    if name.is_empty() && id.is_empty() {
        return Err(SpecError(
            "a secret or config reference needs its name or ID".into(),
        ));
    }
    let number = |value: Option<String>, what: &str| -> Result<u32, SpecError> {
        match value.filter(|v| !v.is_empty()) {
            None => Ok(0),
            Some(v) => v
                .parse()
                .map_err(|_| SpecError(format!("invalid {what} {v:?}: not a number"))),
        }
    };
    let mut reference = FileReference::named(if name.is_empty() { &id } else { &name });
    reference.id = id;
    reference.target = file_name
        .filter(|t| !t.is_empty() && *t != reference.name)
        .unwrap_or_default();
    reference.uid = number(uid, "UID")?;
    reference.gid = number(gid, "GID")?;
    if let Some(mode) = mode {
        reference.mode = mode;
    }
    Ok(reference)
}

fn from_mount(mount: docker::Mount) -> Result<Mount, SpecError> {
    let kind = match mount.typ {
        Some(docker::MountType::BIND) => MountKind::Bind,
        Some(docker::MountType::VOLUME) | None => MountKind::Volume,
        Some(docker::MountType::TMPFS) => MountKind::Tmpfs,
        Some(other) => {
            return Err(SpecError(format!(
                "mount type {other:?} is not supported by swarm: use bind, volume or tmpfs"
            )));
        }
    };
    let target = mount.target.unwrap_or_default();
    if !target.starts_with('/') {
        return Err(SpecError(format!(
            "invalid mount config: mount path must be absolute: {target:?}"
        )));
    }
    let volume = mount.volume_options.unwrap_or_default();
    let tmpfs = mount.tmpfs_options.unwrap_or_default();
    Ok(Mount {
        kind,
        source: mount.source.unwrap_or_default(),
        target,
        readonly: mount.read_only.unwrap_or(false),
        volume_nocopy: volume.no_copy.unwrap_or(false),
        volume_labels: volume.labels.unwrap_or_default().into_iter().collect(),
        tmpfs_size: tmpfs.size_bytes.and_then(|s| u64::try_from(s).ok()),
        tmpfs_mode: tmpfs.mode.and_then(|m| u32::try_from(m).ok()),
    })
}

fn from_port(port: docker::EndpointPortConfig) -> Result<PortConfig, SpecError> {
    let protocol = match port.protocol {
        None
        | Some(docker::EndpointPortConfigProtocolEnum::TCP)
        | Some(docker::EndpointPortConfigProtocolEnum::EMPTY) => Protocol::Tcp,
        Some(docker::EndpointPortConfigProtocolEnum::UDP) => Protocol::Udp,
        Some(docker::EndpointPortConfigProtocolEnum::SCTP) => Protocol::Sctp,
    };
    let target = port
        .target_port
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .ok_or_else(|| {
            SpecError(format!(
                "invalid TargetPort {:?}: a port from 1 to 65535",
                port.target_port
            ))
        })?;
    let published = match port.published_port {
        None | Some(0) => None,
        Some(p) => Some(u16::try_from(p).map_err(|_| {
            SpecError(format!("invalid PublishedPort {p}: a port from 1 to 65535"))
        })?),
    };
    let mode = match port.publish_mode {
        Some(docker::EndpointPortConfigPublishModeEnum::HOST) => PublishMode::Host,
        _ => PublishMode::Ingress,
    };
    Ok(PortConfig {
        protocol,
        target,
        published,
        mode,
    })
}

/// Whether a JSON value says anything: not null, false, 0, "", [] or an
/// object of such (the docker CLI sends some fields empty).
fn is_set(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Null => false,
        serde_json::Value::Bool(b) => *b,
        serde_json::Value::Number(n) => n.as_f64() != Some(0.0),
        serde_json::Value::String(s) => !s.is_empty(),
        serde_json::Value::Array(items) => !items.is_empty(),
        serde_json::Value::Object(map) => map.values().any(is_set),
    }
}

/// Fields set that swarm's runtimes do not apply.
/// Docker's `DNSConfig` of ours; none when nothing is set.
fn dns_config(settings: &ContainerSettings) -> Option<docker::TaskSpecContainerSpecDnsConfig> {
    let servers: Vec<String> = settings
        .dns_servers
        .iter()
        .map(|ip| ip.to_string())
        .collect();
    let config = docker::TaskSpecContainerSpecDnsConfig {
        nameservers: non_empty(&servers),
        search: non_empty(&settings.dns_search),
        options: non_empty(&settings.dns_options),
    };
    (config != Default::default()).then_some(config)
}

fn non_empty_map(map: &BTreeMap<String, String>) -> Option<HashMap<String, String>> {
    (!map.is_empty()).then(|| map.clone().into_iter().collect())
}

/// The ContainerSpec fields of our `ContainerSettings`, refused as Docker
/// words it when malformed.
fn container_settings(
    container: &docker::TaskSpecContainerSpec,
) -> Result<ContainerSettings, SpecError> {
    use docker::TaskSpecContainerSpecIsolationEnum as Isolation;
    if let Some(isolation) = container
        .isolation
        .filter(|i| !matches!(i, Isolation::DEFAULT | Isolation::EMPTY))
    {
        return Err(SpecError(format!(
            "ContainerSpec: isolation {isolation} is for Windows containers; swarm runs Linux tasks with the default isolation"
        )));
    }
    let dns = container.dns_config.clone().unwrap_or_default();
    let dns_servers = dns
        .nameservers
        .unwrap_or_default()
        .iter()
        .map(|server| {
            server
                .parse()
                .map_err(|_| SpecError(format!("invalid DNS nameserver {server:?}")))
        })
        .collect::<Result<_, _>>()?;
    let mut extra_hosts = Vec::new();
    for line in container.hosts.clone().unwrap_or_default() {
        // "IP HOST [ALIAS...]", as a hosts file line.
        let mut fields = line.split_whitespace();
        let ip = fields
            .next()
            .and_then(|ip| ip.parse().ok())
            .ok_or_else(|| {
                SpecError(format!(
                    "invalid hosts entry {line:?}: want \"IP HOSTNAME\""
                ))
            })?;
        for host in fields {
            extra_hosts.push(ExtraHost {
                host: host.to_owned(),
                ip,
            });
        }
    }
    let ulimits = container
        .ulimits
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|limit| {
            let name = limit.name.unwrap_or_default();
            let soft = limit.soft.unwrap_or(0);
            let hard = limit.hard.unwrap_or(soft);
            format!("{name}={soft}:{hard}")
                .parse::<Ulimit>()
                .map_err(SpecError)
        })
        .collect::<Result<_, _>>()?;
    Ok(ContainerSettings {
        dns_servers,
        dns_search: dns.search.unwrap_or_default(),
        dns_options: dns.options.unwrap_or_default(),
        extra_hosts,
        cap_add: container.capability_add.clone().unwrap_or_default(),
        cap_drop: container.capability_drop.clone().unwrap_or_default(),
        sysctls: container
            .sysctls
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        read_only: container.read_only.unwrap_or(false),
        init: container.init,
        stop_signal: container.stop_signal.clone().filter(|s| !s.is_empty()),
        ulimits,
        groups: container.groups.clone().unwrap_or_default(),
        labels: container
            .labels
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
    })
}

fn warn_unsupported(
    container: &docker::TaskSpecContainerSpec,
    template: &docker::TaskSpec,
    warnings: &mut Vec<String>,
) {
    let json = |value: serde_json::Result<serde_json::Value>| value.unwrap_or_default();
    let fields = [
        ("TTY", json(serde_json::to_value(container.tty))),
        (
            "OpenStdin",
            json(serde_json::to_value(container.open_stdin)),
        ),
        (
            "Privileges",
            json(serde_json::to_value(&container.privileges)),
        ),
        (
            "LogDriver",
            json(serde_json::to_value(&template.log_driver)),
        ),
    ];
    for (field, value) in &fields {
        if is_set(value) {
            warnings.push(format!(
                "ContainerSpec.{field} is not supported by swarm and was ignored"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(spec: &ServiceSpec) -> ServiceSpec {
        let json = to_docker_json(&service_spec(spec)).to_string();
        assert!(json.contains("\"Healthcheck\""), "{json}");
        let docker: docker::ServiceSpec = parse_docker_json(json.as_bytes()).unwrap();
        from_service_spec(docker, || unreachable!("named"))
            .unwrap()
            .0
    }

    #[test]
    fn a_full_spec_survives_docker_json_and_back() {
        let mut spec =
            ServiceSpec::new("web", "busybox:1", ServiceMode::Replicated { replicas: 3 });
        spec.labels.insert("tier".into(), "front".into());
        spec.args = vec!["httpd".into(), "-f".into()];
        spec.env = vec!["A=1".into()];
        spec.entrypoint = Some(vec!["/bin/sh".into()]);
        spec.networks = vec!["net1".into()];
        spec.aliases.insert("net1".into(), vec!["www".into()]);
        spec.ports = vec!["8080:80".parse().unwrap(), "53/udp".parse().unwrap()];
        spec.constraints = vec!["node.role==worker".parse().unwrap()];
        spec.placement_prefs = vec!["node.labels.zone".into()];
        spec.max_replicas_per_node = Some(2);
        spec.limits.memory_bytes = Some(64 << 20);
        spec.healthcheck = Some(HealthCheck {
            command: "true".into(),
            ..HealthCheck::default()
        });
        spec.secrets = vec![FileReference::parse("source=s1,target=app,mode=0400").unwrap()];
        spec.mounts = vec![Mount::parse("type=tmpfs,target=/cache").unwrap()];
        spec.force_update = 2;
        spec.limits.pids = Some(50);
        spec.container = ContainerSettings {
            dns_servers: vec!["198.18.0.53".parse().unwrap()],
            dns_search: vec!["example.test".into()],
            dns_options: vec!["timeout:2".into()],
            extra_hosts: vec!["db:198.18.0.7".parse().unwrap()],
            cap_add: vec!["CAP_NET_ADMIN".into()],
            cap_drop: vec!["CAP_NET_RAW".into()],
            sysctls: BTreeMap::from([("net.core.somaxconn".into(), "1024".into())]),
            read_only: true,
            init: Some(true),
            stop_signal: Some("SIGINT".into()),
            ulimits: vec!["nofile=512:1024".parse().unwrap()],
            groups: vec!["staff".into()],
            labels: BTreeMap::from([("team".into(), "web".into())]),
        };
        assert_eq!(round_trip(&spec), spec);
    }

    #[test]
    fn job_modes_restart_windows_and_failure_ratios_map_both_ways() {
        use crate::api::specs::RestartCondition;
        let mut spec = ServiceSpec::new(
            "batch",
            "busybox:1",
            ServiceMode::ReplicatedJob {
                max_concurrent: 2,
                total_completions: 5,
            },
        );
        spec.healthcheck = Some(HealthCheck::default());
        spec.restart.window_millis = 60_000;
        spec.restart.max_attempts = 3;
        let docker_spec = service_spec(&spec);
        let json = to_docker_json(&docker_spec);
        assert_eq!(
            json["Mode"],
            serde_json::json!({"ReplicatedJob": {"MaxConcurrent": 2, "TotalCompletions": 5}})
        );
        assert_eq!(
            json["TaskTemplate"]["RestartPolicy"]["Condition"],
            "on-failure"
        );
        assert_eq!(
            json["TaskTemplate"]["RestartPolicy"]["Window"],
            60_000_000_000i64
        );
        assert!(json.get("UpdateConfig").is_none(), "{json}");
        assert_eq!(round_trip(&spec), spec);

        spec.mode = ServiceMode::GlobalJob;
        assert_eq!(round_trip(&spec), spec);

        let mut web = ServiceSpec::new("web", "busybox:1", ServiceMode::Replicated { replicas: 1 });
        web.healthcheck = Some(HealthCheck::default());
        web.update.max_failure_ratio = FailureRatio::new(0.25).unwrap();
        web.rollback.max_failure_ratio = FailureRatio::new(0.5).unwrap();
        assert_eq!(round_trip(&web), web);

        // What the docker CLI sends for `--mode replicated-job` alone.
        let docker: docker::ServiceSpec = serde_json::from_value(serde_json::json!({
            "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}},
            "Mode": {"ReplicatedJob": {"MaxConcurrent": 3}},
        }))
        .unwrap();
        let (ours, _) = from_service_spec(docker, || "j".into()).unwrap();
        assert_eq!(
            ours.mode,
            ServiceMode::ReplicatedJob {
                max_concurrent: 3,
                total_completions: 3
            }
        );
        assert_eq!(ours.restart.condition, RestartCondition::OnFailure);
    }

    #[test]
    fn docker_defaults_fill_what_the_cli_leaves_out() {
        let docker: docker::ServiceSpec = parse_docker_json(
            serde_json::json!({
                "Name": "",
                "TaskTemplate": {"ContainerSpec": {"Image": "busybox", "Healthcheck": {"Test": ["CMD", "wget", "-q", "a b"]}}},
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        let (spec, warnings) = from_service_spec(docker, || "named".into()).unwrap();
        assert_eq!(spec.name, "named");
        assert_eq!(spec.mode, ServiceMode::Replicated { replicas: 1 });
        assert_eq!(spec.healthcheck.unwrap().command, "wget -q 'a b'");
        assert!(warnings.is_empty());
        let docker: docker::ServiceSpec = serde_json::from_value(serde_json::json!({
            "TaskTemplate": {"ContainerSpec": {"Image": "busybox", "DNSConfig": {}, "TTY": true}},
        }))
        .unwrap();
        let (_, warnings) = from_service_spec(docker, || "named".into()).unwrap();
        assert_eq!(
            warnings,
            ["ContainerSpec.TTY is not supported by swarm and was ignored"]
        );
    }

    #[test]
    fn bad_specs_are_refused_with_the_field() {
        let refused = |value: serde_json::Value| {
            let docker: docker::ServiceSpec = serde_json::from_value(value).unwrap();
            from_service_spec(docker, || "x".into()).unwrap_err().0
        };
        assert!(
            refused(serde_json::json!({"TaskTemplate": {"ContainerSpec": {}}}))
                .contains("image reference must be provided")
        );
        assert!(refused(serde_json::json!({"TaskTemplate": {"ContainerSpec": {"Image": "a"}}, "Mode": {"ReplicatedJob": {"MaxConcurrent": -1}}})).contains("MaxConcurrent"));
        assert!(refused(serde_json::json!({"TaskTemplate": {"ContainerSpec": {"Image": "a"}}, "UpdateConfig": {"MaxFailureRatio": 1.5}})).contains("max failure ratio"));
        assert!(refused(serde_json::json!({"TaskTemplate": {"ContainerSpec": {"Image": "a"}}, "EndpointSpec": {"Ports": [{"TargetPort": 0}]}})).contains("TargetPort"));
    }
}
