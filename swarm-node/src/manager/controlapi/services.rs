//! `swarm service ...` as the leader answers it.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use bollard::models as docker;

use crate::{
    api::{
        ClusterError,
        assignments::LogRequest,
        control::{Response, ServiceReplaceRequest, ServiceUpdateRequest, TaskOutput},
        docker as docker_json,
        filters::{self, Filters, ServiceFacts},
        specs::{ServiceMode, ServiceSpec},
        tasks::TaskState,
    },
    clock::{human_duration, now_millis, now_secs, rfc3339},
    identity::new_id,
    manager::{
        Manager,
        reference::{Lookup, lookup},
        store::{
            ClusterState, Command, Refusal,
            services::{ServiceCreate, ServiceRecord, TaskRecord},
        },
    },
};

/// How many times a change to a service is made again on a newer spec
/// when another update landed while it was made.
const UPDATE_ATTEMPTS: u32 = 20;

/// How long `service logs` waits for the nodes to answer.
const LOGS_WAIT: Duration = Duration::from_secs(5);

impl Manager {
    pub(super) fn create_service(
        &self,
        spec: &ServiceSpec,
        resolve_image: bool,
    ) -> Result<Response, ClusterError> {
        let mut spec = spec.clone();
        let warnings = self.resolve_spec(&mut spec, resolve_image)?;
        let id = new_id();
        self.commit_here(Command::CreateService(Box::new(ServiceCreate {
            id: id.clone(),
            spec,
            at: now_secs(),
        })))?;
        tracing::info!(service = %id, "service created");
        Ok(Response::Service { id, warnings })
    }

    /// `stack deploy`'s service: created, or updated in place to `spec`
    /// when one of its name exists (nothing changes, and nothing restarts,
    /// when the spec is the same).
    pub(super) fn deploy_service(
        &self,
        spec: &ServiceSpec,
        resolve_image: bool,
    ) -> Result<Response, ClusterError> {
        let existing = self.read_store(|s| {
            s.services
                .values()
                .find(|service| service.spec.name == spec.name)
                .cloned()
        })?;
        let Some(service) = existing else {
            return self.create_service(spec, resolve_image);
        };
        let mut spec = spec.clone();
        let warnings = self.resolve_spec(&mut spec, resolve_image)?;
        // What deploy does not set stays as the service has it.
        spec.force_update = service.spec.force_update;
        if spec.registry_auth.is_none() {
            spec.registry_auth = service.spec.registry_auth.clone();
        }
        if spec != service.spec {
            self.commit_spec(&service.id, spec, false)?;
        }
        Ok(Response::Service {
            id: service.id,
            warnings,
        })
    }

    /// Names in `spec` (networks, secrets, configs) to IDs, and its image
    /// pinned when `pin` says so; the warnings for the user.
    fn resolve_spec(&self, spec: &mut ServiceSpec, pin: bool) -> Result<Vec<String>, ClusterError> {
        spec.container.normalize().map_err(ClusterError::Refused)?;
        crate::manager::templates::check(spec).map_err(ClusterError::Refused)?;
        self.resolve_spec_networks(spec)?;
        self.resolve_spec_payloads(spec)?;
        if pin {
            self.pin_image(spec)
        } else {
            Ok(Vec::new())
        }
    }

    /// Pins `spec`'s image to the digest its registry names now, so every
    /// node runs the same bytes; a registry out of reach leaves the tag as
    /// it is, with Docker's warning.
    fn pin_image(&self, spec: &mut ServiceSpec) -> Result<Vec<String>, ClusterError> {
        match self
            .host()?
            .resolve_image(&spec.image, spec.registry_auth.as_ref())
        {
            Ok(Some(pinned)) => {
                spec.image = pinned;
                Ok(Vec::new())
            }
            Ok(None) => Ok(Vec::new()),
            Err(err) => Ok(vec![format!(
                "image {image} could not be accessed on a registry to record its digest. Each node will access {image} independently, possibly leading to different nodes running different versions of the image. ({err})",
                image = spec.image
            )]),
        }
    }

    /// Network names (and the aliases' network names) to IDs; aliases on
    /// a network the service is not on go.
    fn resolve_spec_networks(&self, spec: &mut ServiceSpec) -> Result<(), ClusterError> {
        spec.networks = self.resolve_networks(&spec.networks)?;
        let mut aliases = BTreeMap::new();
        for (network, names) in std::mem::take(&mut spec.aliases) {
            let Some(id) = self.resolve_networks(&[network])?.into_iter().next() else {
                continue;
            };
            if spec.networks.contains(&id) {
                aliases.insert(id, names);
            }
        }
        spec.aliases = aliases;
        Ok(())
    }

    fn resolve_networks(&self, references: &[String]) -> Result<Vec<String>, ClusterError> {
        self.read_store(|s| {
            references
                .iter()
                .map(|r| s.resolve_network(r).map(|n| n.id.clone()))
                .collect::<Result<Vec<_>, _>>()
        })?
        .map_err(ClusterError::from)
    }

    /// Asks the nodes holding the tasks of service (or task) `reference`
    /// for their output, and waits a few seconds for every one to answer.
    pub(super) fn service_logs(
        &self,
        reference: &str,
        tail: Option<u64>,
        since_nanos: Option<i64>,
    ) -> Result<Response, ClusterError> {
        let mut tasks = self.read_store(|s| logged_tasks(s, reference))??;
        let reply_to = self
            .raft()?
            .leader()
            .map(|me| me.addr)
            .ok_or(ClusterError::NotLeader)?;
        let request_id = new_id();
        let answers = self.log_waiters.open(&request_id);
        let committed = self.commit_here(Command::RequestLogs(LogRequest {
            id: request_id.clone(),
            tasks: tasks.iter().map(|t| t.task_id.clone()).collect(),
            tail,
            reply_to,
            at_millis: now_millis(),
            since_nanos,
        }));
        let mut waiting: BTreeSet<String> = tasks.iter().map(|t| t.node_id.clone()).collect();
        let deadline = Instant::now() + LOGS_WAIT;
        while committed.is_ok() && !waiting.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok((node_id, logs)) = answers.recv_timeout(left) else {
                break;
            };
            waiting.remove(&node_id);
            for log in logs {
                // A node speaks only for its own tasks.
                if let Some(task) = tasks
                    .iter_mut()
                    .find(|t| t.task_id == log.task_id && t.node_id == node_id)
                {
                    task.lines = log.lines;
                }
            }
        }
        self.log_waiters.close(&request_id);
        committed?;
        let unanswered = tasks
            .iter()
            .filter(|t| waiting.contains(&t.node_id))
            .map(|t| t.node.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        Ok(Response::Logs { tasks, unanswered })
    }

    fn resolve_service(&self, reference: &str) -> Result<ServiceRecord, ClusterError> {
        self.read_store(|s| resolve_service(s, reference).cloned())?
    }

    pub(super) fn list_services(&self, filters: &Filters) -> Result<Response, ClusterError> {
        filters.check(filters::SERVICE_KEYS)?;
        let rows = self.read_store(|s| {
            s.services
                .values()
                .filter(|service| {
                    filters.service_matches(&ServiceFacts {
                        id: &service.id,
                        name: &service.spec.name,
                        mode: service.spec.mode.filter_word(),
                        labels: &service.spec.labels,
                    })
                })
                .map(|service| {
                    let counts = TaskCounts::of(service, s);
                    serde_json::json!({
                        "ID": service.id,
                        "Name": service.spec.name,
                        "Mode": service.spec.mode.word(),
                        "Replicas": match (&service.spec.mode, service.spec.max_replicas_per_node) {
                            // Docker's column names a per-node cap.
                            (ServiceMode::Replicated { .. }, Some(max)) => format!(
                                "{} (max {max} per node)",
                                counts.replicas_text(&service.spec.mode)
                            ),
                            (mode, _) => counts.replicas_text(mode),
                        },
                        "Image": service.spec.image,
                        "Ports": ports_text(service),
                        "Labels": service.spec.labels,
                    })
                })
                .collect()
        })?;
        Ok(Response::Rows(rows))
    }

    pub(super) fn inspect_service(&self, reference: &str) -> Result<Response, ClusterError> {
        let object = self.read_store(|s| {
            resolve_service(s, reference).map(|service| service_object(service, s))
        })??;
        Ok(Response::Json(serde_json::Value::Array(vec![object])))
    }

    /// Every service as Docker's objects (the Engine API's list).
    pub(super) fn service_objects(&self) -> Result<Response, ClusterError> {
        let objects = self.read_store(|s| {
            s.services
                .values()
                .map(|service| service_object(service, s))
                .collect()
        })?;
        Ok(Response::Json(serde_json::Value::Array(objects)))
    }

    /// Every task as Docker's objects.
    pub(super) fn task_objects(&self) -> Result<Response, ClusterError> {
        let objects =
            self.read_store(|s| s.tasks.values().map(|task| task_object(task, s)).collect())?;
        Ok(Response::Json(serde_json::Value::Array(objects)))
    }

    /// The Engine API's update: the whole spec as the caller read it at
    /// `version`, or (`rollback`) the previous spec back.
    pub(super) fn replace_service(
        &self,
        request: &ServiceReplaceRequest,
    ) -> Result<Response, ClusterError> {
        let service = self.resolve_service(&request.service)?;
        if request.rollback {
            let previous = service.previous_spec.clone().ok_or_else(|| {
                ClusterError::Refused(format!(
                    "service {} does not have a previous spec",
                    request.service
                ))
            })?;
            self.commit_versioned(&service.id, previous, true, request.version)?;
            return Ok(Response::Service {
                id: service.id,
                warnings: Vec::new(),
            });
        }
        let mut spec = request.spec.clone();
        if spec.name != service.spec.name {
            return Err(ClusterError::Refused(
                "renaming services is not supported".into(),
            ));
        }
        if spec.registry_auth.is_none() {
            spec.registry_auth = service.spec.registry_auth.clone();
        }
        let warnings = self.resolve_spec(&mut spec, request.resolve_image)?;
        if spec == service.spec {
            // Nothing to change (a stack deployed again): no new tasks,
            // but a stale version is still refused.
            if request.version.is_some_and(|v| v != service.revision) {
                return Err(ClusterError::Refused("update out of sequence".into()));
            }
        } else {
            self.commit_versioned(&service.id, spec, false, request.version)?;
        }
        Ok(Response::Service {
            id: service.id,
            warnings,
        })
    }

    /// The tasks of the services `references` names (of every service when
    /// it names none) that `filters` keeps; a `node` filter names nodes as
    /// `node inspect` does, `self` being the node `origin` asking.
    pub(super) fn service_tasks(
        &self,
        references: &[String],
        filters: &Filters,
        origin: &str,
    ) -> Result<Response, ClusterError> {
        filters.check(filters::TASK_KEYS)?;
        let rows = self.read_store(|s| {
            let services: Vec<&ServiceRecord> = if references.is_empty() {
                let mut all: Vec<&ServiceRecord> = s.services.values().collect();
                all.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
                all
            } else {
                references
                    .iter()
                    .map(|reference| resolve_service(s, reference))
                    .collect::<Result<_, _>>()?
            };
            let nodes: Vec<String> = filters
                .values("node")
                .iter()
                .map(|node| s.resolve(if node == "self" { origin } else { node }))
                .collect::<Result<_, _>>()?;
            let mut rows = Vec::new();
            for service in services {
                let mut tasks: Vec<&TaskRecord> = s
                    .tasks
                    .values()
                    .filter(|t| t.service_id == service.id)
                    .filter(|t| {
                        filters.task_matches(&t.id, &t.name(&service.spec.name), t.desired.word())
                            && (nodes.is_empty()
                                || t.node_id.as_ref().is_some_and(|n| nodes.contains(n)))
                    })
                    .collect();
                // Docker's order: by slot (or node), the newest first.
                tasks.sort_by(|a, b| {
                    (a.slot, &a.node_id)
                        .cmp(&(b.slot, &b.node_id))
                        .then(b.created_at_millis.cmp(&a.created_at_millis))
                });
                let mut previous: Option<(u64, Option<String>)> = None;
                for task in tasks {
                    let key = (
                        task.slot,
                        if task.slot == 0 {
                            task.node_id.clone()
                        } else {
                            None
                        },
                    );
                    let history = previous.as_ref() == Some(&key);
                    previous = Some(key);
                    let name = task.name(&service.spec.name);
                    let node = task
                        .node_id
                        .as_ref()
                        .and_then(|n| s.nodes.get(n))
                        .map(|n| n.hostname.clone())
                        .unwrap_or_default();
                    rows.push(serde_json::json!({
                        "ID": task.id,
                        "Name": if history { format!(" \\_ {name}") } else { name },
                        "Image": task.spec.image,
                        "Node": node,
                        "DesiredState": shown_desired(task, service).word(),
                        "CurrentState": format!(
                            "{} {}",
                            task.status.state.word(),
                            ago(task.status.timestamp_millis)
                        ),
                        "Error": task.status.err,
                        "Ports": "",
                        "Slot": task.slot,
                        "NodeID": task.node_id,
                        "ServiceID": service.id,
                        "Addresses": task.addresses,
                    }));
                }
            }
            Ok::<_, ClusterError>(rows)
        })??;
        Ok(Response::Rows(rows))
    }

    pub(super) fn scale_services(
        &self,
        scales: &[(String, u64)],
    ) -> Result<Response, ClusterError> {
        let mut notes = Vec::new();
        for (reference, replicas) in scales {
            self.change_spec(reference, false, |service| {
                let mut spec = service.spec.clone();
                // A replicated job's count is its completions (Docker's rule).
                match &mut spec.mode {
                    ServiceMode::Replicated { replicas: count }
                    | ServiceMode::ReplicatedJob {
                        total_completions: count,
                        ..
                    } => *count = *replicas,
                    ServiceMode::Global | ServiceMode::GlobalJob => {
                        return Err(ClusterError::Refused(format!(
                            "{reference}: scale can only be used with replicated or replicated-job mode"
                        )));
                    }
                }
                Ok((spec, ()))
            })?;
            notes.push(format!("{reference} scaled to {replicas}"));
        }
        Ok(Response::Notes(notes))
    }

    /// Commits `spec` as service `id`'s new spec (`rollback`: the previous
    /// one coming back).
    fn commit_spec(&self, id: &str, spec: ServiceSpec, rollback: bool) -> Result<(), ClusterError> {
        self.commit_versioned(id, spec, rollback, None)
    }

    /// Commits `change` of service `reference`'s spec at the revision it
    /// was made from: when another update lands in between (two clients
    /// changing one service at once), the commit is out of sequence and
    /// the change is made again on the newer spec, so neither is lost
    /// (tests/tests/nemesis.rs found such lost updates).
    fn change_spec<T>(
        &self,
        reference: &str,
        rollback: bool,
        mut change: impl FnMut(&ServiceRecord) -> Result<(ServiceSpec, T), ClusterError>,
    ) -> Result<T, ClusterError> {
        let out_of_sequence = Refusal::OutOfSequence.to_string();
        let mut attempt = 1;
        loop {
            let service = self.resolve_service(reference)?;
            let (spec, made) = change(&service)?;
            match self.commit_versioned(&service.id, spec, rollback, Some(service.revision)) {
                Err(ClusterError::Refused(why))
                    if why == out_of_sequence && attempt < UPDATE_ATTEMPTS =>
                {
                    attempt += 1;
                }
                committed => return committed.map(|()| made),
            }
        }
    }

    /// As `commit_spec`, refused unless the service is at `version`.
    fn commit_versioned(
        &self,
        id: &str,
        spec: ServiceSpec,
        rollback: bool,
        version: Option<u64>,
    ) -> Result<(), ClusterError> {
        self.commit_here(Command::UpdateService {
            id: id.to_owned(),
            spec: Box::new(spec),
            rollback,
            at: now_secs(),
            expect_version: version,
        })
    }

    pub(super) fn update_service(
        &self,
        request: &ServiceUpdateRequest,
    ) -> Result<Response, ClusterError> {
        // The spec holds network IDs; the user names them.
        let mut request = request.clone();
        request.network_rm = self.resolve_networks(&request.network_rm)?;
        let warnings = self.change_spec(&request.service, false, |service| {
            let mut spec = service.spec.clone();
            request
                .apply(&mut spec)
                .map_err(|e| ClusterError::Refused(e.to_string()))?;
            let warnings = self.resolve_spec(
                &mut spec,
                request.image.is_some() && !request.no_resolve_image,
            )?;
            Ok((spec, warnings))
        })?;
        Ok(Response::Service {
            id: request.service.clone(),
            warnings,
        })
    }

    pub(super) fn rollback_service(&self, reference: &str) -> Result<Response, ClusterError> {
        self.change_spec(reference, true, |service| {
            let previous = service.previous_spec.clone().ok_or_else(|| {
                ClusterError::Refused(format!(
                    "service {reference} has no previous spec to roll back to (it was never updated, or was rolled back already)"
                ))
            })?;
            Ok((previous, ()))
        })?;
        Ok(Response::Notes(vec![reference.to_owned()]))
    }

    pub(super) fn remove_services(&self, references: &[String]) -> Result<Response, ClusterError> {
        let mut removed = Vec::new();
        for reference in references {
            let service = self.resolve_service(reference)?;
            self.commit_here(Command::RemoveService { id: service.id })?;
            removed.push(reference.clone());
        }
        Ok(Response::Notes(removed))
    }
}

fn resolve_service<'a>(
    state: &'a ClusterState,
    reference: &str,
) -> Result<&'a ServiceRecord, ClusterError> {
    match lookup(
        state.services.values(),
        reference,
        |s| &s.id,
        |s| &s.spec.name,
    ) {
        Lookup::Found(service) => Ok(service),
        Lookup::Missing => Err(ClusterError::Refused(format!(
            "service {reference} not found"
        ))),
        Lookup::Ambiguous(count) => Err(ClusterError::Refused(format!(
            "service {reference} is ambiguous ({count} matches)"
        ))),
    }
}

/// The tasks `service logs REFERENCE` shows, in `service ps` order: a
/// service's (those placed on a node), or the one task REFERENCE names.
fn logged_tasks(state: &ClusterState, reference: &str) -> Result<Vec<TaskOutput>, ClusterError> {
    let mut tasks: Vec<&TaskRecord> = match resolve_service(state, reference) {
        Ok(service) => state
            .tasks
            .values()
            .filter(|t| t.service_id == service.id)
            .collect(),
        Err(not_a_service) => {
            let matches: Vec<&TaskRecord> = state
                .tasks
                .values()
                .filter(|t| t.id.starts_with(reference))
                .collect();
            match matches[..] {
                [one] => vec![one],
                [] => return Err(not_a_service),
                _ => {
                    return Err(ClusterError::Refused(format!(
                        "task {reference} is ambiguous ({} matches)",
                        matches.len()
                    )));
                }
            }
        }
    };
    tasks.sort_by(|a, b| {
        (a.slot, &a.node_id)
            .cmp(&(b.slot, &b.node_id))
            .then(a.created_at_millis.cmp(&b.created_at_millis))
    });
    Ok(tasks
        .into_iter()
        .filter_map(|task| {
            let node_id = task.node_id.clone()?;
            let service_name = state
                .services
                .get(&task.service_id)
                .map_or(task.spec.name.as_str(), |s| s.spec.name.as_str());
            Some(TaskOutput {
                task_id: task.id.clone(),
                name: task.name(service_name),
                node: state
                    .nodes
                    .get(&node_id)
                    .map_or_else(|| node_id.clone(), |n| n.hostname.clone()),
                node_id,
                service_id: task.service_id.clone(),
                lines: Vec::new(),
            })
        })
        .collect())
}

/// Docker's `CurrentState` suffix: "2 seconds ago".
fn ago(millis: u64) -> String {
    let secs = now_millis().saturating_sub(millis) / 1000;
    format!("{} ago", human_duration(secs).to_lowercase())
}

/// `service ls`'s PORTS: `*:8080->80/tcp`.
fn ports_text(service: &ServiceRecord) -> String {
    service
        .ports
        .iter()
        .map(|p| {
            format!(
                "*:{}->{}/{}",
                p.published.unwrap_or(0),
                p.target,
                p.protocol
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A service as Docker's `Service`: its spec, the ports and VIPs it was
/// given, its update's state, and how many of its tasks run
/// (`ServiceStatus`), with the spec before the last update.
fn service_object(service: &ServiceRecord, state: &ClusterState) -> serde_json::Value {
    let spec = &service.spec;
    let docker_spec = docker_json::service_spec(spec);
    let endpoint_spec = docker_spec.endpoint_spec.clone();
    let counts = TaskCounts::of(service, state);
    let object = docker::Service {
        id: Some(service.id.clone()),
        version: Some(docker::ObjectVersion {
            index: Some(service.revision),
        }),
        created_at: Some(rfc3339(service.created_at)),
        updated_at: Some(rfc3339(service.updated_at)),
        spec: Some(docker_spec),
        endpoint: Some(docker::ServiceEndpoint {
            spec: endpoint_spec,
            ports: Some(service.ports.iter().map(docker_json::port).collect()),
            virtual_ips: Some(
                service
                    .vips
                    .iter()
                    .map(|(network, ip)| {
                        let prefix = state.networks.get(network).map_or(24, |n| n.subnet.1);
                        docker::ServiceEndpointVirtualIps {
                            network_id: Some(network.clone()),
                            addr: Some(format!("{ip}/{prefix}")),
                        }
                    })
                    .collect(),
            ),
        }),
        update_status: service
            .update_status
            .as_ref()
            .map(|u| docker::ServiceUpdateStatus {
                state: serde_json::to_value(u.state)
                    .ok()
                    .and_then(|v| serde_json::from_value(v).ok()),
                started_at: Some(rfc3339(u.started_at)),
                completed_at: u.completed_at.map(rfc3339),
                message: Some(u.message.clone()),
            }),
        service_status: Some(docker::ServiceServiceStatus {
            running_tasks: Some(counts.running),
            desired_tasks: Some(counts.desired),
            completed_tasks: Some(counts.completed),
        }),
        // A job's iteration is its version: every update runs it again.
        job_status: spec.mode.is_job().then(|| docker::ServiceJobStatus {
            job_iteration: Some(docker::ObjectVersion {
                index: Some(service.version),
            }),
            last_execution: Some(rfc3339(service.updated_at)),
        }),
    };
    let mut value = docker_json::to_docker_json(&object);
    if let Some(previous) = &service.previous_spec {
        value["PreviousSpec"] = docker_json::to_docker_json(&docker_json::service_spec(previous));
    }
    value
}

/// How many of a service's tasks run, are wanted and completed, as
/// swarmkit counts them (`ServiceStatus`); a job counts only the tasks of
/// its current iteration.
struct TaskCounts {
    running: u64,
    desired: u64,
    completed: u64,
}

impl TaskCounts {
    fn of(service: &ServiceRecord, state: &ClusterState) -> Self {
        let job = service.spec.mode.is_job();
        let tasks = state
            .tasks
            .values()
            .filter(|t| t.service_id == service.id && (!job || t.spec_version == service.version));
        let mut counts = TaskCounts {
            running: 0,
            desired: match service.spec.mode {
                ServiceMode::Replicated { replicas } => replicas,
                ServiceMode::ReplicatedJob { max_concurrent, .. } => max_concurrent,
                ServiceMode::Global | ServiceMode::GlobalJob => 0,
            },
            completed: 0,
        };
        for task in tasks {
            if task.is_running() {
                counts.running += 1;
            }
            if task.status.state == TaskState::Complete {
                counts.completed += 1;
            }
            // Global: the tasks meant to run (for a job, not yet done).
            if service.spec.mode.is_global()
                && task.desired == TaskState::Running
                && task.status.state != TaskState::Complete
            {
                counts.desired += 1;
            }
        }
        counts
    }

    /// `service ls`'s REPLICAS, as the docker CLI writes it.
    fn replicas_text(&self, mode: &ServiceMode) -> String {
        let Self {
            running,
            desired,
            completed,
        } = self;
        match mode {
            ServiceMode::ReplicatedJob {
                total_completions, ..
            } => format!("{running}/{desired} ({completed}/{total_completions} completed)"),
            ServiceMode::GlobalJob => format!(
                "{running}/{desired} ({completed}/{} completed)",
                desired + completed
            ),
            ServiceMode::Replicated { .. } | ServiceMode::Global => {
                format!("{running}/{desired}")
            }
        }
    }
}

/// A job's task that is meant to run is meant to complete, as Docker shows
/// it.
fn shown_desired(task: &TaskRecord, service: &ServiceRecord) -> TaskState {
    if service.spec.mode.is_job() && task.desired == TaskState::Running {
        TaskState::Complete
    } else {
        task.desired
    }
}

/// A task as Docker's `Task`, with the addresses it holds on each network
/// (`NetworksAttachments`).
fn task_object(task: &TaskRecord, state: &ClusterState) -> serde_json::Value {
    let timestamp = rfc3339(task.status.timestamp_millis / 1000);
    let state_word = |s: TaskState| {
        serde_json::from_value::<docker::TaskState>(serde_json::Value::String(
            s.word().to_lowercase(),
        ))
        .ok()
    };
    let service_name = state
        .services
        .get(&task.service_id)
        .map_or(task.spec.name.as_str(), |s| s.spec.name.as_str());
    let mut labels = std::collections::HashMap::new();
    labels.extend(task.spec.labels.clone());
    let object = docker::Task {
        id: Some(task.id.clone()),
        version: Some(docker::ObjectVersion {
            index: Some(task.spec_version),
        }),
        created_at: Some(rfc3339(task.created_at_millis / 1000)),
        updated_at: Some(timestamp.clone()),
        name: Some(task.name(service_name)),
        labels: Some(labels),
        spec: Some(docker_json::task_spec(&task.spec)),
        service_id: Some(task.service_id.clone()),
        slot: (task.slot > 0).then_some(task.slot as i64),
        node_id: task.node_id.clone(),
        assigned_generic_resources: None,
        status: Some(docker::TaskStatus {
            timestamp: Some(timestamp),
            state: state_word(task.status.state),
            message: Some(task.status.message.clone()),
            err: (!task.status.err.is_empty()).then(|| task.status.err.clone()),
            container_status: Some(docker::ContainerStatus {
                container_id: Some(task.id.clone()),
                pid: None,
                exit_code: task.status.exit_code.map(i64::from),
            }),
            port_status: None,
        }),
        desired_state: state_word(
            state
                .services
                .get(&task.service_id)
                .map_or(task.desired, |service| shown_desired(task, service)),
        ),
        job_iteration: task.spec.mode.is_job().then_some(docker::ObjectVersion {
            index: Some(task.spec_version),
        }),
    };
    let mut value = docker_json::to_docker_json(&object);
    value["NetworksAttachments"] = task
        .addresses
        .iter()
        .map(|(network, ip)| {
            let (name, prefix) = state
                .networks
                .get(network)
                .map_or((String::new(), 24), |n| (n.name.clone(), n.subnet.1));
            serde_json::json!({
                "Network": {"ID": network, "Spec": {"Name": name, "Labels": {}}},
                "Addresses": [format!("{ip}/{prefix}")],
            })
        })
        .collect();
    value
}
