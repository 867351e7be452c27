//! A compose file made into what a stack deploys, with Docker's naming:
//! every object `<stack>_<name>` with the label
//! `com.docker.stack.namespace=<stack>`, services on `<stack>_default`
//! unless they name networks, each reachable there by its short name too;
//! `external` objects used as they are, never made.

use std::{collections::BTreeMap, path::Path, time::Duration};

use crate::{
    api::{
        mounts::{FileReference, Mount},
        specs::{
            Constraint, ContainerSettings, EndpointMode, ExtraHost, FailureAction, FailureRatio,
            PortConfig, RestartCondition, ServiceMode, ServiceSpec, Ulimit, UpdateOrder,
            check_sysctl, normalize_capability, signal_number,
        },
        tasks::HealthCheck,
    },
    compose::{
        Loaded,
        model::{External, FileUse, Port, Scalar, Service, UpdateConfig, VolumeUse},
    },
};

/// The label Docker puts on a stack's objects.
pub const NAMESPACE_LABEL: &str = "com.docker.stack.namespace";

/// What a deploy makes or updates.
#[derive(Debug, Default)]
pub struct StackPlan {
    /// Keys read but not acted on, for `Ignoring unsupported options`.
    pub unsupported: Vec<String>,
    pub networks: Vec<StackNetwork>,
    pub secrets: Vec<StackPayload>,
    pub configs: Vec<StackPayload>,
    pub services: Vec<ServiceSpec>,
}

#[derive(Debug)]
pub struct StackNetwork {
    pub name: String,
    /// Must exist; never made or removed.
    pub external: bool,
    pub attachable: bool,
    pub labels: Vec<(String, String)>,
    /// `ipam.config[0].subnet`.
    pub subnet: Option<(std::net::Ipv4Addr, u8)>,
    /// `driver_opts: com.docker.network.driver.mtu`.
    pub mtu: Option<u32>,
}

#[derive(Debug)]
pub struct StackPayload {
    pub name: String,
    pub external: bool,
    pub labels: Vec<(String, String)>,
    /// Read from its `file`; none for an external one.
    pub data: Option<Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StackError(String);

fn refuse(message: impl Into<String>) -> StackError {
    StackError(message.into())
}

/// The objects of stack `stack` that `loaded` declares.
pub fn plan(stack: &str, loaded: &Loaded) -> Result<StackPlan, StackError> {
    let compose = &loaded.compose;
    let scoped = |name: &str| format!("{stack}_{name}");
    let namespace = vec![(NAMESPACE_LABEL.to_owned(), stack.to_owned())];
    let mut plan = StackPlan::default();
    let external_name =
        |key: &str, external: &Option<External>, name: &Option<String>| match external {
            Some(External::Named { name }) => Some(name.clone()),
            Some(External::Flag(true)) => Some(name.clone().unwrap_or_else(|| key.to_owned())),
            _ => None,
        };

    // Networks: the ones named, and `default` when a service names none.
    let mut network_names: BTreeMap<String, String> = BTreeMap::new();
    for (key, network) in &compose.networks {
        let network = network.clone().unwrap_or_default();
        if let Some(driver) = network.driver.as_deref()
            && driver != "overlay"
        {
            return Err(refuse(format!(
                "network {key}: driver {driver:?} does not span a swarm; use overlay"
            )));
        }
        let (name, external) = match external_name(key, &network.external, &network.name) {
            Some(name) => (name, true),
            None => (network.name.clone().unwrap_or_else(|| scoped(key)), false),
        };
        network_names.insert(key.clone(), name.clone());
        let mut labels = namespace.clone();
        if let Some(own) = &network.labels {
            labels.extend(
                own.pairs()
                    .into_iter()
                    .map(|(k, v)| (k, v.unwrap_or_default())),
            );
        }
        let mut mtu = None;
        for (option, value) in &network.driver_opts {
            match option.as_str() {
                "com.docker.network.driver.mtu" | "mtu" => {
                    mtu = Some(value.text().parse::<u32>().map_err(|_| {
                        refuse(format!(
                            "networks.{key}.driver_opts.{option}: {:?} is not a number",
                            value.text()
                        ))
                    })?);
                }
                other => plan
                    .unsupported
                    .push(format!("networks.{key}.driver_opts.{other}")),
            }
        }
        let subnet_text = network
            .ipam
            .as_ref()
            .and_then(|i| i.config.first())
            .and_then(|c| c.subnet.as_deref());
        let subnet = match subnet_text {
            Some(text) => Some(parse_subnet(text).ok_or_else(|| {
                refuse(format!(
                    "networks.{key}.ipam.config.subnet: {text:?} is not an IPv4 CIDR (e.g. 10.0.9.0/24)"
                ))
            })?),
            None => None,
        };
        if network.internal {
            plan.unsupported.push(format!("networks.{key}.internal"));
        }
        plan.networks.push(StackNetwork {
            name,
            external,
            attachable: network.attachable,
            labels,
            subnet,
            mtu,
        });
    }
    let needs_default = compose.services.values().any(|s| s.networks.is_none());
    if needs_default && !network_names.contains_key("default") {
        network_names.insert("default".into(), scoped("default"));
        plan.networks.push(StackNetwork {
            name: scoped("default"),
            external: false,
            attachable: false,
            labels: namespace.clone(),
            subnet: None,
            mtu: None,
        });
    }

    // Secrets and configs: data read from their files, beside the file.
    let mut payload_names: [BTreeMap<String, String>; 2] = Default::default();
    for (index, (objects, out)) in [
        (&compose.secrets, &mut plan.secrets),
        (&compose.configs, &mut plan.configs),
    ]
    .into_iter()
    .enumerate()
    {
        for (key, object) in objects {
            let (name, external) = match external_name(key, &object.external, &object.name) {
                Some(name) => (name, true),
                None => (object.name.clone().unwrap_or_else(|| scoped(key)), false),
            };
            let data = match (&object.file, external) {
                (_, true) => None,
                (Some(file), false) => {
                    let path = loaded.base_dir.join(file);
                    Some(std::fs::read(&path).map_err(|e| {
                        refuse(format!("reading {} for {key}: {e}", path.display()))
                    })?)
                }
                (None, false) => {
                    return Err(refuse(format!(
                        "{key}: give it a file, or mark it external"
                    )));
                }
            };
            payload_names[index].insert(key.clone(), name.clone());
            let mut labels = namespace.clone();
            if let Some(own) = &object.labels {
                labels.extend(
                    own.pairs()
                        .into_iter()
                        .map(|(k, v)| (k, v.unwrap_or_default())),
                );
            }
            out.push(StackPayload {
                name,
                external,
                labels,
                data,
            });
        }
    }

    // Named volumes: the stack's own, or an external one by its name.
    let mut volume_names: BTreeMap<String, String> = BTreeMap::new();
    for (key, volume) in &compose.volumes {
        let volume = volume.clone().unwrap_or_default();
        let name = external_name(key, &volume.external, &volume.name)
            .or(volume.name.clone())
            .unwrap_or_else(|| scoped(key));
        if volume.driver.as_deref().is_some_and(|d| d != "local") || !volume.driver_opts.is_empty()
        {
            plan.unsupported.push(format!("volumes.{key}.driver"));
        }
        volume_names.insert(key.clone(), name);
    }

    for (key, service) in &compose.services {
        plan.unsupported.extend(unsupported_in(key, service));
        plan.services.push(service_spec(
            stack,
            key,
            service,
            &network_names,
            &payload_names,
            &volume_names,
            &loaded.base_dir,
        )?);
    }
    plan.unsupported.sort();
    plan.unsupported.dedup();
    Ok(plan)
}

/// Keys of `service` that are read but not acted on yet.
fn unsupported_in(key: &str, service: &Service) -> Vec<String> {
    let mut keys = Vec::new();
    let mut note = |present: bool, what: &str| {
        if present {
            keys.push(format!("services.{key}.{what}"));
        }
    };
    if let Some(check) = &service.healthcheck {
        note(check.start_interval.is_some(), "healthcheck.start_interval");
    }
    if let Some(resources) = service.deploy.as_ref().and_then(|d| d.resources.as_ref()) {
        // A pids limit is a limit only (Docker has no pids reservation).
        note(
            resources
                .reservations
                .as_ref()
                .is_some_and(|r| r.pids.is_some()),
            "deploy.resources.reservations.pids",
        );
        for amounts in [&resources.limits, &resources.reservations]
            .into_iter()
            .flatten()
        {
            note(amounts.devices.is_some(), "deploy.resources.devices");
            note(
                amounts.generic_resources.is_some(),
                "deploy.resources.generic_resources",
            );
        }
    }
    if let Some(crate::compose::model::ServiceNetworks::Map(map)) = &service.networks {
        note(
            map.values().flatten().any(|n| n.ipv4_address.is_some()),
            "networks.ipv4_address",
        );
    }
    keys
}

/// The keys of a compose service that set up its process, as
/// `docker stack deploy` turns them into the ContainerSpec.
fn container_settings(key: &str, service: &Service) -> Result<ContainerSettings, StackError> {
    use crate::compose::model::ComposeUlimit;
    let field = |what: &str, message: String| refuse(format!("services.{key}.{what}: {message}"));
    let dns_servers = service
        .dns
        .as_ref()
        .map(|d| d.words())
        .unwrap_or_default()
        .iter()
        .map(|ip| {
            ip.parse()
                .map_err(|_| field("dns", format!("{ip:?} is not an IP address")))
        })
        .collect::<Result<_, _>>()?;
    let extra_hosts = match &service.extra_hosts {
        None => Vec::new(),
        Some(crate::compose::model::ListOrMap::List(lines)) => lines
            .iter()
            .map(|line| {
                line.parse::<ExtraHost>()
                    .map_err(|e| field("extra_hosts", e))
            })
            .collect::<Result<_, _>>()?,
        Some(map) => map
            .pairs()
            .into_iter()
            .map(|(host, ip)| {
                format!("{host}:{}", ip.unwrap_or_default())
                    .parse::<ExtraHost>()
                    .map_err(|e| field("extra_hosts", e))
            })
            .collect::<Result<_, _>>()?,
    };
    let capabilities = |caps: &[String], what: &str| {
        caps.iter()
            .map(|c| normalize_capability(c).map_err(|e| field(what, e)))
            .collect::<Result<Vec<_>, _>>()
    };
    let mut sysctls = BTreeMap::new();
    for (name, value) in service
        .sysctls
        .as_ref()
        .map(|s| s.pairs())
        .unwrap_or_default()
    {
        check_sysctl(&name).map_err(|e| field("sysctls", e))?;
        sysctls.insert(name, value.unwrap_or_default());
    }
    let ulimits = service
        .ulimits
        .iter()
        .map(|(name, limit)| {
            let (soft, hard) = match limit {
                ComposeUlimit::Single(n) => (*n, *n),
                ComposeUlimit::Pair { soft, hard } => (*soft, *hard),
            };
            format!("{name}={soft}:{hard}")
                .parse::<Ulimit>()
                .map_err(|e| field("ulimits", e))
        })
        .collect::<Result<_, _>>()?;
    if let Some(signal) = &service.stop_signal {
        signal_number(signal).map_err(|e| field("stop_signal", e))?;
    }
    Ok(ContainerSettings {
        dns_servers,
        dns_search: service
            .dns_search
            .as_ref()
            .map(|d| d.words())
            .unwrap_or_default(),
        dns_options: service.dns_opt.clone(),
        extra_hosts,
        cap_add: capabilities(&service.cap_add, "cap_add")?,
        cap_drop: capabilities(&service.cap_drop, "cap_drop")?,
        sysctls,
        read_only: service.read_only,
        init: service.init,
        stop_signal: service.stop_signal.clone(),
        ulimits,
        groups: service.group_add.iter().map(|g| g.text()).collect(),
        // A service's `labels` are its containers' (deploy.labels are the
        // service's own).
        labels: service
            .labels
            .as_ref()
            .map(|l| l.pairs())
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.unwrap_or_default()))
            .collect(),
    })
}

/// `10.0.9.0/24`.
fn parse_subnet(text: &str) -> Option<(std::net::Ipv4Addr, u8)> {
    let (ip, prefix) = text.split_once('/')?;
    let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32)?;
    Some((ip.parse().ok()?, prefix))
}

fn service_spec(
    stack: &str,
    key: &str,
    service: &Service,
    networks: &BTreeMap<String, String>,
    payloads: &[BTreeMap<String, String>; 2],
    volumes: &BTreeMap<String, String>,
    base_dir: &Path,
) -> Result<ServiceSpec, StackError> {
    let image = service.image.clone().ok_or_else(|| {
        refuse(format!(
            "Service {key} has neither an image nor a build context specified. At least one must be provided."
        ))
    })?;
    let deploy = service.deploy.clone().unwrap_or_default();
    let mode = match deploy.mode.as_deref().unwrap_or("replicated") {
        "replicated" => ServiceMode::Replicated {
            replicas: deploy.replicas.unwrap_or(1),
        },
        "global" => ServiceMode::Global,
        // As docker stack deploy: the replicas are the completions and as
        // many run at once.
        "replicated-job" => ServiceMode::ReplicatedJob {
            max_concurrent: deploy.replicas.unwrap_or(1),
            total_completions: deploy.replicas.unwrap_or(1),
        },
        "global-job" => ServiceMode::GlobalJob,
        other => {
            return Err(refuse(format!(
                "services.{key}.deploy.mode: {other:?} is not replicated, global, replicated-job or global-job"
            )));
        }
    };
    let mut spec = ServiceSpec::new(format!("{stack}_{key}"), image, mode);
    spec.labels.insert(NAMESPACE_LABEL.into(), stack.into());
    if let Some(labels) = &deploy.labels {
        spec.labels.extend(
            labels
                .pairs()
                .into_iter()
                .map(|(k, v)| (k, v.unwrap_or_default())),
        );
    }
    spec.args = service
        .command
        .as_ref()
        .map(|c| c.words())
        .unwrap_or_default();
    spec.entrypoint = service.entrypoint.as_ref().map(|e| e.words());
    spec.hostname = service.hostname.clone();
    spec.user = service.user.clone();
    spec.workdir = service.working_dir.clone();
    for file in service
        .env_file
        .as_ref()
        .map(|f| f.words())
        .unwrap_or_default()
    {
        let path = base_dir.join(&file);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| refuse(format!("services.{key}.env_file {}: {e}", path.display())))?;
        spec.env.extend(
            crate::compose::interpolate::parse_env_file(&text)
                .into_iter()
                .map(|(k, v)| format!("{k}={v}")),
        );
    }
    if let Some(environment) = &service.environment {
        for (name, value) in environment.pairs() {
            spec.env
                .retain(|e| e.split('=').next() != Some(name.as_str()));
            // A name without a value takes the deploying shell's.
            match value.or_else(|| std::env::var(&name).ok()) {
                Some(value) => spec.env.push(format!("{name}={value}")),
                None => continue,
            }
        }
    }
    for port in &service.ports {
        spec.ports.extend(ports(key, port)?);
    }
    let service_networks = match &service.networks {
        Some(named) => named.entries(),
        None => vec![("default".to_owned(), Vec::new())],
    };
    for (network, mut aliases) in service_networks {
        let name = networks.get(&network).cloned().ok_or_else(|| {
            refuse(format!(
                "service {key} refers to undefined network {network}: invalid compose project"
            ))
        })?;
        // Reachable by its short name, as in Docker.
        aliases.insert(0, key.to_owned());
        spec.aliases.insert(name.clone(), aliases);
        spec.networks.push(name);
    }
    for (index, uses) in [&service.secrets, &service.configs].into_iter().enumerate() {
        let word = ["secret", "config"][index];
        for file_use in uses {
            let (source, target, uid, gid, mode) = match file_use {
                FileUse::Name(name) => (name.clone(), None, None, None, None),
                FileUse::Long(long) => (
                    long.source.clone(),
                    long.target.clone(),
                    long.uid.as_ref().map(Scalar::text),
                    long.gid.as_ref().map(Scalar::text),
                    long.mode,
                ),
            };
            let name = payloads[index].get(&source).ok_or_else(|| {
                refuse(format!(
                    "service {key} refers to undefined {word} {source}: invalid compose project"
                ))
            })?;
            let number = |value: Option<String>, what: &str| {
                value.map(|v| v.parse::<u32>()).transpose().map_err(|_| {
                    refuse(format!(
                        "services.{key}.{word}s {source}: {what} is a number"
                    ))
                })
            };
            let mut reference = FileReference::named(name);
            // A config's default target is /<key>, a secret's /run/secrets/<key>.
            reference.target = target.unwrap_or_else(|| source.clone());
            reference.uid = number(uid, "uid")?.unwrap_or(0);
            reference.gid = number(gid, "gid")?.unwrap_or(0);
            if let Some(mode) = mode {
                reference.mode = mode as u32;
            }
            if index == 0 {
                spec.secrets.push(reference);
            } else {
                spec.configs.push(reference);
            }
        }
    }
    for volume in &service.volumes {
        spec.mounts
            .push(mount(stack, key, volume, volumes, base_dir)?);
    }
    if let Some(check) = &service.healthcheck {
        if check.disable {
            spec.no_healthcheck = true;
        } else if let Some(test) = &check.test {
            let command = match test {
                crate::compose::model::StringOrList::String(text) => text.clone(),
                crate::compose::model::StringOrList::List(list) => match list.split_first() {
                    Some((kind, rest)) if kind == "CMD-SHELL" => rest.join(" "),
                    Some((kind, rest)) if kind == "CMD" => rest.join(" "),
                    Some((kind, _)) if kind == "NONE" => String::new(),
                    _ => list.join(" "),
                },
            };
            if command.is_empty() {
                spec.no_healthcheck = true;
            } else {
                let defaults = HealthCheck::default();
                spec.healthcheck = Some(HealthCheck {
                    command,
                    interval_millis: millis(key, &check.interval)?
                        .unwrap_or(defaults.interval_millis),
                    timeout_millis: millis(key, &check.timeout)?.unwrap_or(defaults.timeout_millis),
                    retries: check.retries.map_or(defaults.retries, |r| r as u32),
                    start_period_millis: millis(key, &check.start_period)?
                        .unwrap_or(defaults.start_period_millis),
                });
            }
        }
    }
    if let Some(grace) = millis(key, &service.stop_grace_period)? {
        spec.stop_grace_millis = grace;
    }
    if let Some(placement) = &deploy.placement {
        for preference in &placement.preferences {
            for (strategy, descriptor) in preference {
                if strategy != "spread" {
                    return Err(refuse(format!(
                        "services.{key}.deploy.placement.preferences: {strategy:?} is not spread"
                    )));
                }
                spec.placement_prefs.push(descriptor.clone());
            }
        }
        spec.max_replicas_per_node = placement.max_replicas_per_node.filter(|max| *max > 0);
        for constraint in &placement.constraints {
            spec.constraints
                .push(constraint.parse::<Constraint>().map_err(|e| {
                    refuse(format!("services.{key}.deploy.placement.constraints: {e}"))
                })?);
        }
    }
    if let Some(resources) = &deploy.resources {
        for (amounts, target) in [
            (&resources.limits, &mut spec.limits),
            (&resources.reservations, &mut spec.reservations),
        ] {
            let Some(amounts) = amounts else { continue };
            if let Some(cpus) = &amounts.cpus {
                let cpus: f64 = cpus.text().parse().map_err(|_| {
                    refuse(format!(
                        "services.{key}.deploy.resources: cpus {:?} is not a number",
                        cpus.text()
                    ))
                })?;
                target.nano_cpus = Some((cpus * 1e9) as u64);
            }
            if let Some(memory) = &amounts.memory {
                target.memory_bytes = Some(bytes(&memory.text()).ok_or_else(|| {
                    refuse(format!(
                        "services.{key}.deploy.resources: memory {:?} is not a size (e.g. 64M)",
                        memory.text()
                    ))
                })?);
            }
        }
    }
    if let Some(pids) = deploy
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .and_then(|l| l.pids.as_ref())
    {
        let pids: u64 = pids.text().parse().map_err(|_| {
            refuse(format!(
                "services.{key}.deploy.resources.limits.pids: {:?} is not a whole number",
                pids.text()
            ))
        })?;
        spec.limits.pids = (pids > 0).then_some(pids);
    }
    spec.container = container_settings(key, service)?;
    // As docker stack deploy marks the containers too.
    spec.container
        .labels
        .insert(NAMESPACE_LABEL.into(), stack.into());
    if let Some(restart) = &deploy.restart_policy {
        if let Some(condition) = restart.condition.as_deref() {
            spec.restart.condition = match condition {
                "any" => RestartCondition::Any,
                "on-failure" => RestartCondition::OnFailure,
                "none" => RestartCondition::None,
                other => {
                    return Err(refuse(format!(
                        "services.{key}.deploy.restart_policy.condition: {other:?}"
                    )));
                }
            };
        }
        if let Some(delay) = millis(key, &restart.delay)? {
            spec.restart.delay_millis = delay;
        }
        if let Some(attempts) = restart.max_attempts {
            spec.restart.max_attempts = attempts;
        }
        if let Some(window) = millis(key, &restart.window)? {
            spec.restart.window_millis = window;
        }
    }
    for (config, target) in [
        (&deploy.update_config, &mut spec.update),
        (&deploy.rollback_config, &mut spec.rollback),
    ] {
        let Some(config) = config else { continue };
        apply_update_config(key, config, target)?;
    }
    if let Some(endpoint_mode) = deploy.endpoint_mode.as_deref() {
        spec.endpoint_mode = match endpoint_mode {
            "vip" => EndpointMode::Vip,
            "dnsrr" => EndpointMode::Dnsrr,
            other => {
                return Err(refuse(format!(
                    "services.{key}.deploy.endpoint_mode: {other:?} is not vip or dnsrr"
                )));
            }
        };
    }
    Ok(spec)
}

fn apply_update_config(
    key: &str,
    config: &UpdateConfig,
    target: &mut crate::api::specs::UpdateConfig,
) -> Result<(), StackError> {
    if let Some(parallelism) = config.parallelism {
        target.parallelism = parallelism;
    }
    if let Some(delay) = millis(key, &config.delay)? {
        target.delay_millis = delay;
    }
    if let Some(monitor) = millis(key, &config.monitor)? {
        target.monitor_millis = monitor;
    }
    if let Some(action) = config.failure_action.as_deref() {
        target.failure_action = match action {
            "pause" => FailureAction::Pause,
            "continue" => FailureAction::Continue,
            "rollback" => FailureAction::Rollback,
            other => return Err(refuse(format!("services.{key}: failure_action {other:?}"))),
        };
    }
    if let Some(order) = config.order.as_deref() {
        target.order = match order {
            "start-first" => UpdateOrder::StartFirst,
            "stop-first" => UpdateOrder::StopFirst,
            other => return Err(refuse(format!("services.{key}: order {other:?}"))),
        };
    }
    if let Some(ratio) = &config.max_failure_ratio {
        target.max_failure_ratio = ratio
            .text()
            .parse::<FailureRatio>()
            .map_err(|e| refuse(format!("services.{key}: max_failure_ratio: {e}")))?;
    }
    Ok(())
}

/// A port in the short syntax (ranges expanded, a host IP dropped) or the long.
fn ports(key: &str, port: &Port) -> Result<Vec<PortConfig>, StackError> {
    let parse = |text: &str| {
        text.parse::<PortConfig>()
            .map_err(|e| refuse(format!("services.{key}.ports {text:?}: {e}")))
    };
    match port {
        Port::Long(long) => {
            let mut text = format!("target={}", long.target);
            if let Some(published) = long.published {
                text.push_str(&format!(",published={published}"));
            }
            if let Some(protocol) = &long.protocol {
                text.push_str(&format!(",protocol={protocol}"));
            }
            if let Some(mode) = &long.mode {
                text.push_str(&format!(",mode={mode}"));
            }
            Ok(vec![parse(&text)?])
        }
        Port::Short(short) => {
            let text = short.text();
            let (body, protocol) = match text.split_once('/') {
                Some((body, protocol)) => (body.to_owned(), format!("/{protocol}")),
                None => (text.clone(), String::new()),
            };
            let parts: Vec<&str> = body.split(':').collect();
            // IP:PUBLISHED:TARGET: the mesh publishes on every address.
            let parts = if parts.len() == 3 {
                &parts[1..]
            } else {
                &parts[..]
            };
            let range = |part: &str| -> Result<Vec<u16>, StackError> {
                let (from, to) = part.split_once('-').unwrap_or((part, part));
                let (from, to) = (from.parse::<u16>(), to.parse::<u16>());
                match (from, to) {
                    (Ok(from), Ok(to)) if from <= to => Ok((from..=to).collect()),
                    _ => Err(refuse(format!(
                        "services.{key}.ports {text:?}: not a port or range"
                    ))),
                }
            };
            match parts {
                [target] => range(target)?
                    .into_iter()
                    .map(|t| parse(&format!("{t}{protocol}")))
                    .collect(),
                [published, target] => {
                    let (published, target) = (range(published)?, range(target)?);
                    if published.len() != target.len() {
                        return Err(refuse(format!(
                            "services.{key}.ports {text:?}: the ranges differ in length"
                        )));
                    }
                    published
                        .iter()
                        .zip(&target)
                        .map(|(p, t)| parse(&format!("{p}:{t}{protocol}")))
                        .collect()
                }
                _ => Err(refuse(format!("services.{key}.ports {text:?}: not a port"))),
            }
        }
    }
}

/// A volume in the short (`SRC:DST[:ro]`, `DST`) or long syntax; a named
/// volume is the stack's (`<stack>_<name>`).
fn mount(
    stack: &str,
    key: &str,
    volume: &VolumeUse,
    volumes: &BTreeMap<String, String>,
    base_dir: &Path,
) -> Result<Mount, StackError> {
    let source_of = |kind: &str, source: &str| match kind {
        "bind" if !source.starts_with('/') => base_dir.join(source).display().to_string(),
        "volume" => volumes
            .get(source)
            .cloned()
            .unwrap_or_else(|| format!("{stack}_{source}")),
        _ => source.to_owned(),
    };
    let text = match volume {
        VolumeUse::Short(short) => {
            let parts: Vec<&str> = short.split(':').collect();
            let (source, target, options) = match parts.as_slice() {
                [target] => ("", *target, ""),
                [source, target] => (*source, *target, ""),
                [source, target, options] => (*source, *target, *options),
                _ => {
                    return Err(refuse(format!(
                        "services.{key}.volumes {short:?}: not SRC:DST[:ro]"
                    )));
                }
            };
            let readonly = options.split(',').any(|o| o == "ro");
            let kind = if source.starts_with(['/', '.', '~']) {
                "bind"
            } else {
                "volume"
            };
            let mut text = format!("type={kind},target={target}");
            if !source.is_empty() {
                text.push_str(&format!(",source={}", source_of(kind, source)));
            }
            if readonly {
                text.push_str(",readonly");
            }
            text
        }
        VolumeUse::Long(long) => {
            let mut text = format!("type={},target={}", long.kind, long.target);
            if let Some(source) = &long.source {
                text.push_str(&format!(",source={}", source_of(&long.kind, source)));
            }
            if long.read_only {
                text.push_str(",readonly");
            }
            if long.volume.as_ref().is_some_and(|v| v.nocopy) {
                text.push_str(",volume-nocopy");
            }
            if let Some(tmpfs) = &long.tmpfs {
                if let Some(size) = &tmpfs.size {
                    text.push_str(&format!(",tmpfs-size={}", size.text()));
                }
                if let Some(mode) = tmpfs.mode {
                    text.push_str(&format!(",tmpfs-mode={mode:o}"));
                }
            }
            text
        }
    };
    Mount::parse(&text).map_err(|e| refuse(format!("services.{key}.volumes: {e}")))
}

fn millis(key: &str, text: &Option<String>) -> Result<Option<u64>, StackError> {
    text.as_deref()
        .map(|t| {
            duration(t).map(|d| d.as_millis() as u64).ok_or_else(|| {
                refuse(format!(
                    "services.{key}: {t:?} is not a duration (e.g. 10s, 1m30s, 500ms)"
                ))
            })
        })
        .transpose()
}

/// Go's durations as compose writes them: `1h`, `1m30s`, `500ms`, `2.5s`.
fn duration(text: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut rest = text.trim();
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let (number, tail) = rest.split_at(digits);
        let number: f64 = number.parse().ok()?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += number * scale;
        rest = tail;
    }
    Some(Duration::from_secs_f64(total))
}

/// `64M`, `1g`, `512k`, `1024`: bytes.
fn bytes(text: &str) -> Option<u64> {
    let lower = text.trim().to_ascii_lowercase();
    let lower = lower.trim_end_matches('b');
    let (digits, scale) = match lower.chars().last()? {
        'k' => (&lower[..lower.len() - 1], 1u64 << 10),
        'm' => (&lower[..lower.len() - 1], 1 << 20),
        'g' => (&lower[..lower.len() - 1], 1 << 30),
        _ => (lower, 1),
    };
    let number: f64 = digits.trim().parse().ok()?;
    Some((number * scale as f64) as u64)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{api::mounts::MountKind, compose};

    fn planned(text: &str) -> StackPlan {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("compose.yml");
        std::fs::write(&file, text).unwrap();
        std::fs::write(dir.path().join("pw.txt"), "pw").unwrap();
        let loaded = compose::load(&[file], &BTreeMap::new()).unwrap();
        plan("shop", &loaded).unwrap()
    }

    #[test]
    fn docker_naming_defaults_and_short_syntaxes() {
        let plan = planned(
            r#"
services:
  web:
    image: web:1
    ports: ["8080-8081:80-81/udp", {target: 443, published: 8443, mode: host}]
    volumes: ["cache:/cache", "./static:/static:ro", "/srv:/srv"]
    secrets: [pw]
    labels: [a=b]
    dns: 198.18.0.53
    extra_hosts: ["db:198.18.0.7"]
    cap_add: [net_admin]
    sysctls: {net.core.somaxconn: 1024}
    ulimits: {nofile: {soft: 1024, hard: 2048}, nproc: 64}
    read_only: true
    stop_signal: SIGINT
    deploy:
      placement: {preferences: [{spread: node.labels.zone}]}
      resources: {limits: {cpus: "0.5", memory: 64M, pids: 50}}
      update_config: {order: start-first, delay: 1m30s}
volumes:
  cache:
    external: true
secrets:
  pw: {file: ./pw.txt}
"#,
        );
        assert_eq!(plan.networks.len(), 1);
        assert_eq!(plan.networks[0].name, "shop_default");
        let web = &plan.services[0];
        assert_eq!(web.name, "shop_web");
        assert_eq!(web.labels[NAMESPACE_LABEL], "shop");
        assert_eq!(web.networks, ["shop_default"]);
        assert_eq!(web.aliases["shop_default"], ["web"]);
        let ports: Vec<(Option<u16>, u16)> =
            web.ports.iter().map(|p| (p.published, p.target)).collect();
        assert_eq!(
            ports,
            [(Some(8080), 80), (Some(8081), 81), (Some(8443), 443)]
        );
        assert_eq!(web.mounts[0].source, "cache");
        assert_eq!(web.mounts[1].kind, MountKind::Bind);
        assert!(web.mounts[1].source.ends_with("/static") && web.mounts[1].readonly);
        assert_eq!(web.secrets[0].name, "shop_pw");
        assert_eq!(web.secrets[0].path(true), "/run/secrets/pw");
        assert_eq!(plan.secrets[0].data.as_deref(), Some(&b"pw"[..]));
        assert_eq!(web.limits.nano_cpus, Some(500_000_000));
        assert_eq!(web.limits.memory_bytes, Some(64 << 20));
        assert_eq!(web.update.delay_millis, 90_000);
        assert_eq!(web.placement_prefs, ["node.labels.zone"]);
        assert!(plan.unsupported.is_empty(), "{:?}", plan.unsupported);
        let container = &web.container;
        assert_eq!(container.labels["a"], "b");
        assert_eq!(container.labels[NAMESPACE_LABEL], "shop");
        assert_eq!(
            container.dns_servers,
            ["198.18.0.53".parse::<std::net::IpAddr>().unwrap()]
        );
        assert_eq!(container.extra_hosts[0].to_string(), "db:198.18.0.7");
        assert_eq!(container.cap_add, ["CAP_NET_ADMIN"]);
        assert_eq!(container.sysctls["net.core.somaxconn"], "1024");
        let ulimits: Vec<String> = container.ulimits.iter().map(|u| u.to_string()).collect();
        assert_eq!(ulimits, ["nofile=1024:2048", "nproc=64:64"]);
        assert!(container.read_only);
        assert_eq!(container.stop_signal.as_deref(), Some("SIGINT"));
        assert_eq!(web.limits.pids, Some(50));
    }

    #[test]
    fn job_modes_restart_windows_and_failure_ratios_are_acted_on() {
        let plan = planned(
            r#"
services:
  migrate:
    image: tools:1
    deploy: {mode: replicated-job, replicas: 3}
  setup:
    image: tools:1
    deploy: {mode: global-job}
  web:
    image: web:1
    deploy:
      restart_policy: {max_attempts: 3, window: 2m}
      update_config: {max_failure_ratio: 0.25}
      rollback_config: {max_failure_ratio: "0.5"}
"#,
        );
        assert!(plan.unsupported.is_empty(), "{:?}", plan.unsupported);
        let by_name = |name: &str| plan.services.iter().find(|s| s.name == name).unwrap();
        assert_eq!(
            by_name("shop_migrate").mode,
            ServiceMode::ReplicatedJob {
                max_concurrent: 3,
                total_completions: 3
            }
        );
        assert_eq!(
            by_name("shop_migrate").restart.condition,
            RestartCondition::OnFailure
        );
        assert_eq!(by_name("shop_setup").mode, ServiceMode::GlobalJob);
        let web = by_name("shop_web");
        assert_eq!(web.restart.window_millis, 120_000);
        assert_eq!(web.update.max_failure_ratio.get(), 0.25);
        assert_eq!(web.rollback.max_failure_ratio.get(), 0.5);
    }

    #[test]
    fn a_service_without_an_image_or_an_unknown_network_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("compose.yml");
        std::fs::write(&file, "services:\n  web:\n    build: .\n").unwrap();
        let loaded = compose::load(std::slice::from_ref(&file), &BTreeMap::new()).unwrap();
        assert!(
            plan("s", &loaded)
                .unwrap_err()
                .to_string()
                .contains("Service web has neither an image nor a build context")
        );
        std::fs::write(
            &file,
            "services:\n  web:\n    image: x\n    networks: [nope]\n",
        )
        .unwrap();
        let loaded = compose::load(&[file], &BTreeMap::new()).unwrap();
        assert!(
            plan("s", &loaded)
                .unwrap_err()
                .to_string()
                .contains("undefined network nope")
        );
    }
}
