//! The Docker runtime: each task is a container of a real dockerd, driven
//! through its API (bollard). Containers start with no network (`none`);
//! their network namespace is bound at `/run/netns/swarm-<task id>` and the
//! agent wires it like a native task's. Several swarm nodes may share one
//! engine (as in the test harness): each only sees containers labelled with
//! its own node ID.

use std::{collections::HashMap, path::PathBuf, time::Duration};

use bollard::{
    API_DEFAULT_VERSION, Docker,
    auth::DockerCredentials,
    errors::Error as DockerError,
    models::{
        ContainerCreateBody, ContainerStateStatusEnum, HealthConfig, HealthStatusEnum, HostConfig,
        Mount as DockerMount, MountTmpfsOptions, MountType, MountVolumeOptions, ResourcesUlimits,
    },
    query_parameters::{
        CreateContainerOptionsBuilder, CreateImageOptionsBuilder, InspectContainerOptions,
        ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
        StartContainerOptions, StopContainerOptionsBuilder,
    },
};
use futures::TryStreamExt;

use super::{Health, RunState, Runtime, RuntimeError, TaskSpec, log_lines, netns, netns_path};
use crate::{api::assignments::LogLine, lock::Locked as _};

/// Labels that mark a container as a swarm task.
const TASK_LABEL: &str = "swarm.task.id";
const NODE_LABEL: &str = "swarm.node.id";
/// Longest any engine call may take; `stop` adds its grace period.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

pub struct DockerRuntime {
    docker: Docker,
    node_id: String,
    /// A directory per task this node holds, so that whoever cleans up
    /// after a killed daemon finds the namespaces it bound.
    state_dir: PathBuf,
    /// bollard is async; the runtime trait blocks. Calls run here, off the
    /// daemon's own runtime.
    calls: tokio::runtime::Runtime,
    /// Running tasks the engine runs no health check for: not asked again.
    unchecked: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl DockerRuntime {
    /// Connects to the engine at `host` (`unix:///path` or a socket path)
    /// and checks that it answers.
    pub fn connect(host: &str, node_id: &str, state_dir: PathBuf) -> Result<Self, RuntimeError> {
        std::fs::create_dir_all(&state_dir).map_err(|source| RuntimeError::Io {
            task: String::new(),
            what: format!("creating {}", state_dir.display()),
            source,
        })?;
        let path = host.strip_prefix("unix://").unwrap_or(host);
        if host.contains("://") && !host.starts_with("unix://") {
            return Err(RuntimeError::Docker(format!(
                "--docker-host {host}: only unix sockets are supported; write unix:///var/run/docker.sock"
            )));
        }
        let calls = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("docker-calls")
            .enable_all()
            .build()
            .map_err(|e| RuntimeError::Docker(format!("starting a runtime: {e}")))?;
        let docker = calls.block_on(async {
            let docker =
                Docker::connect_with_unix(path, CALL_TIMEOUT.as_secs(), API_DEFAULT_VERSION)?
                    .negotiate_version()
                    .await?;
            docker.ping().await?;
            Ok::<_, DockerError>(docker)
        });
        let docker = docker.map_err(|e| {
            RuntimeError::Docker(format!(
                "no Docker engine answers at {host} ({e}); start dockerd or pass --docker-host"
            ))
        })?;
        Ok(Self {
            docker,
            node_id: node_id.to_owned(),
            state_dir,
            calls,
            unchecked: Default::default(),
        })
    }

    /// Pulls `image` through the engine unless it holds it already, as
    /// `docker run` does.
    async fn pull_if_missing(
        &self,
        image: &str,
        login: Option<&crate::api::tasks::RegistryAuth>,
    ) -> Result<(), (&'static str, DockerError)> {
        match self.docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(err) if is_not_found(&err) => {}
            Err(err) => return Err(("inspecting the image", err)),
        }
        let options = CreateImageOptionsBuilder::default()
            .from_image(image)
            .build();
        self.docker
            .create_image(
                Some(options),
                None,
                login.map(|login| DockerCredentials {
                    username: Some(login.username.clone()),
                    password: Some(login.password.clone()),
                    ..Default::default()
                }),
            )
            .try_collect::<Vec<_>>()
            .await
            .map(drop)
            .map_err(|err| ("pulling the image", err))
    }

    fn container(task_id: &str) -> String {
        format!("swarm-{task_id}")
    }

    fn engine_error(task_id: &str, what: &str, err: DockerError) -> RuntimeError {
        RuntimeError::Invalid {
            task: task_id.to_owned(),
            message: format!("{what}: {}", describe(&err)),
        }
    }

    /// The pid of the container's main process, if it runs.
    fn running_pid(&self, task_id: &str) -> Result<Option<i64>, DockerError> {
        let info = self.calls.block_on(
            self.docker
                .inspect_container(&Self::container(task_id), None::<InspectContainerOptions>),
        )?;
        let state = info.state.unwrap_or_default();
        Ok(state
            .running
            .unwrap_or(false)
            .then_some(state.pid)
            .flatten()
            .filter(|pid| *pid > 0))
    }
}

impl Runtime for DockerRuntime {
    fn name(&self) -> &'static str {
        "docker"
    }

    /// Creates and starts the container with no network, and binds its
    /// network namespace where the agent wires it: a container has a
    /// namespace only once it runs, so the task starts here, and its
    /// interfaces appear moments later.
    fn prepare(&self, spec: &TaskSpec) -> Result<PathBuf, RuntimeError> {
        let task = spec.task_id.as_str();
        let name = Self::container(task);
        let path = netns_path(task);
        let marker = self.state_dir.join(task);
        std::fs::create_dir_all(&marker).map_err(|source| RuntimeError::Io {
            task: task.to_owned(),
            what: format!("creating {}", marker.display()),
            source,
        })?;
        if let Ok(Some(pid)) = self.running_pid(task) {
            netns::bind_process(pid as i32, &path).map_err(|(what, source)| RuntimeError::Io {
                task: task.to_owned(),
                what,
                source,
            })?;
            return Ok(path);
        }
        super::mounts::check_bind_sources(task, &spec.mounts)?;
        // Secrets and configs: files on a tmpfs of the task's, bound in.
        super::mounts::write_task_files(task, &marker, &spec.files)?;
        let mut mounts: Vec<DockerMount> = spec
            .files
            .iter()
            .enumerate()
            .map(|(n, file)| DockerMount {
                typ: Some(MountType::BIND),
                source: Some(
                    super::mounts::task_file_path(&marker, n)
                        .display()
                        .to_string(),
                ),
                target: Some(file.path.clone()),
                read_only: Some(true),
                ..Default::default()
            })
            .collect();
        mounts.extend(spec.mounts.iter().map(docker_mount));
        let container = &spec.container;
        // The user's container labels, with ours (which find the task) over them.
        let mut labels: HashMap<String, String> = container.labels.clone().into_iter().collect();
        labels.insert(TASK_LABEL.to_owned(), task.to_owned());
        labels.insert(NODE_LABEL.to_owned(), self.node_id.clone());
        let mut dns_options = vec!["ndots:0".to_owned()];
        if container
            .dns_options
            .iter()
            .any(|o| o.starts_with("ndots:"))
        {
            dns_options.clear();
        }
        dns_options.extend(container.dns_options.iter().cloned());
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: (!spec.args.is_empty()).then(|| spec.args.clone()),
            entrypoint: spec.entrypoint.clone(),
            working_dir: spec.workdir.clone(),
            user: spec.user.clone(),
            env: Some(spec.env.clone()),
            hostname: Some(spec.hostname.clone()),
            labels: Some(labels),
            stop_signal: container.stop_signal.clone(),
            // None: the engine runs the image's HEALTHCHECK, as Docker does.
            healthcheck: match &spec.healthcheck {
                Some(check) => Some(HealthConfig {
                    test: Some(vec!["CMD-SHELL".into(), check.command.clone()]),
                    interval: Some(nanos(check.interval_millis)),
                    timeout: Some(nanos(check.timeout_millis)),
                    retries: Some(i64::from(check.retries)),
                    start_period: Some(nanos(check.start_period_millis)),
                    ..Default::default()
                }),
                None if spec.no_healthcheck => Some(HealthConfig {
                    test: Some(vec!["NONE".into()]),
                    ..Default::default()
                }),
                None => None,
            },
            host_config: Some(HostConfig {
                network_mode: Some("none".into()),
                // Our resolver, which forwards to the --dns servers.
                dns: Some(vec![crate::dns::RESOLVER_ADDR.to_string()]),
                dns_options: Some(dns_options),
                dns_search: Some(container.dns_search.clone()),
                nano_cpus: spec.resources.nano_cpus.map(|n| n as i64),
                memory: spec.resources.memory_bytes.map(|m| m as i64),
                pids_limit: spec.resources.pids.map(|p| p as i64),
                extra_hosts: Some(
                    spec.hosts
                        .iter()
                        .map(|(ip, name)| format!("{name}:{ip}"))
                        .chain(
                            container
                                .extra_hosts
                                .iter()
                                .map(|extra| format!("{}:{}", extra.host, extra.ip)),
                        )
                        .collect(),
                ),
                cap_add: Some(container.cap_add.clone()),
                cap_drop: Some(container.cap_drop.clone()),
                sysctls: Some(container.sysctls.clone().into_iter().collect()),
                readonly_rootfs: Some(container.read_only),
                group_add: Some(container.groups.clone()),
                ulimits: Some(
                    container
                        .ulimits
                        .iter()
                        .map(|limit| ResourcesUlimits {
                            name: Some(limit.name.clone()),
                            soft: Some(limit.soft),
                            hard: Some(limit.hard),
                        })
                        .collect(),
                ),
                init: Some(container.init.unwrap_or(true)),
                mounts: Some(mounts),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        let started = self.calls.block_on(async {
            self.pull_if_missing(&spec.image, spec.registry_auth.as_ref())
                .await?;
            match self.docker.create_container(Some(options), body).await {
                Ok(_) => {}
                // Made by an earlier attempt that failed later: start it.
                Err(DockerError::DockerResponseServerError {
                    status_code: 409, ..
                }) => {}
                Err(err) => return Err(("creating the container", err)),
            }
            self.docker
                .start_container(&name, None::<StartContainerOptions>)
                .await
                .map_err(|err| ("starting the container", err))
        });
        if let Err((what, err)) = started {
            return Err(Self::engine_error(task, what, err));
        }
        let pid = match self.running_pid(task) {
            Ok(Some(pid)) => pid,
            Ok(None) => {
                return Err(RuntimeError::Invalid {
                    task: task.to_owned(),
                    message: "the container exited as soon as it started".into(),
                });
            }
            Err(err) => return Err(Self::engine_error(task, "inspecting the container", err)),
        };
        netns::bind_process(pid as i32, &path).map_err(|(what, source)| RuntimeError::Io {
            task: task.to_owned(),
            what,
            source,
        })?;
        Ok(path)
    }

    /// Already started by `prepare`.
    fn start(&self, _spec: &TaskSpec) -> Result<(), RuntimeError> {
        Ok(())
    }

    fn state(&self, task_id: &str) -> Result<RunState, RuntimeError> {
        let inspected = self.calls.block_on(
            self.docker
                .inspect_container(&Self::container(task_id), None::<InspectContainerOptions>),
        );
        let info = match inspected {
            Ok(info) => info,
            Err(err) if is_not_found(&err) => return Ok(RunState::Missing),
            Err(err) => return Err(Self::engine_error(task_id, "inspecting the container", err)),
        };
        let state = info.state.unwrap_or_default();
        Ok(match state.status {
            Some(ContainerStateStatusEnum::CREATED) => RunState::Created,
            Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD) => {
                RunState::Exited {
                    code: state.exit_code.unwrap_or(-1) as i32,
                }
            }
            _ => RunState::Running,
        })
    }

    fn stop(&self, task_id: &str, grace: Duration) -> Result<(), RuntimeError> {
        let seconds = grace.as_secs_f64().ceil() as i32;
        let options = StopContainerOptionsBuilder::default().t(seconds).build();
        let stopped = self.calls.block_on(
            self.docker
                .stop_container(&Self::container(task_id), Some(options)),
        );
        match stopped {
            Ok(()) => {}
            Err(err) if is_not_found(&err) => {}
            Err(err) => return Err(Self::engine_error(task_id, "stopping the container", err)),
        }
        // Its secrets go with it.
        super::mounts::remove_task_files(task_id, &self.state_dir.join(task_id))
    }

    fn remove(&self, task_id: &str) -> Result<(), RuntimeError> {
        self.unchecked.locked().remove(task_id);
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        let removed = self.calls.block_on(
            self.docker
                .remove_container(&Self::container(task_id), Some(options)),
        );
        match removed {
            Ok(()) => {}
            Err(err) if is_not_found(&err) => {}
            Err(err) => return Err(Self::engine_error(task_id, "removing the container", err)),
        }
        netns::remove(&netns_path(task_id)).map_err(|source| RuntimeError::Io {
            task: task_id.to_owned(),
            what: "removing its network namespace".into(),
            source,
        })?;
        super::mounts::remove_task_files(task_id, &self.state_dir.join(task_id))?;
        match std::fs::remove_dir_all(self.state_dir.join(task_id)) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(RuntimeError::Io {
                task: task_id.to_owned(),
                what: "removing its state directory".into(),
                source: err,
            }),
            _ => Ok(()),
        }
    }

    /// The engine runs the check: the spec's, given with the container,
    /// or the image's.
    fn health(&self, spec: &TaskSpec) -> Result<Option<Health>, RuntimeError> {
        let task = spec.task_id.as_str();
        if spec.no_healthcheck || self.unchecked.locked().contains(task) {
            return Ok(None);
        }
        let info = self
            .calls
            .block_on(
                self.docker
                    .inspect_container(&Self::container(task), None::<InspectContainerOptions>),
            )
            .map_err(|e| Self::engine_error(task, "inspecting the container", e))?;
        let health = info.state.as_ref().and_then(|s| s.health.as_ref());
        let running = info.state.as_ref().and_then(|s| s.running) == Some(true);
        if health.is_none() && running && spec.healthcheck.is_none() {
            self.unchecked.locked().insert(task.to_owned());
            return Ok(None);
        }
        let status = health.and_then(|h| h.status);
        Ok(Some(match status {
            Some(HealthStatusEnum::HEALTHY) => Health::Healthy,
            Some(HealthStatusEnum::UNHEALTHY) => Health::Unhealthy,
            _ => Health::Starting,
        }))
    }

    fn logs(&self, task_id: &str) -> Result<Vec<LogLine>, RuntimeError> {
        // The engine keeps each line's time: it starts the line it returns.
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .timestamps(true)
            .build();
        let chunks = self.calls.block_on(
            self.docker
                .logs(&Self::container(task_id), Some(options))
                .try_collect::<Vec<_>>(),
        );
        match chunks {
            // One chunk per line (or per piece of a line the engine split).
            Ok(chunks) => Ok(chunks
                .iter()
                .map(|chunk| log_lines::stamped_line(chunk.as_ref()))
                .collect()),
            Err(err) if is_not_found(&err) => Err(RuntimeError::NoSuchTask(task_id.to_owned())),
            Err(err) => Err(Self::engine_error(task_id, "reading its logs", err)),
        }
    }

    fn list(&self) -> Result<Vec<String>, RuntimeError> {
        let filters = HashMap::from([("label", vec![format!("{NODE_LABEL}={}", self.node_id)])]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let containers = self
            .calls
            .block_on(self.docker.list_containers(Some(options)))
            .map_err(|e| RuntimeError::Docker(format!("listing containers: {}", describe(&e))))?;
        let mut tasks: Vec<String> = containers
            .into_iter()
            .filter_map(|c| c.labels?.get(TASK_LABEL).cloned())
            .collect();
        tasks.sort();
        Ok(tasks)
    }
}

fn nanos(millis: u64) -> i64 {
    i64::try_from(millis.saturating_mul(1_000_000)).unwrap_or(i64::MAX)
}

fn is_not_found(err: &DockerError) -> bool {
    matches!(
        err,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// The engine's own message when it gave one.
fn describe(err: &DockerError) -> String {
    match err {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// A `--mount` as the engine takes it: it keeps the volumes itself.
fn docker_mount(mount: &crate::api::mounts::Mount) -> DockerMount {
    use crate::api::mounts::MountKind;
    DockerMount {
        typ: Some(match mount.kind {
            MountKind::Bind => MountType::BIND,
            MountKind::Volume => MountType::VOLUME,
            MountKind::Tmpfs => MountType::TMPFS,
        }),
        source: (!mount.source.is_empty()).then(|| mount.source.clone()),
        target: Some(mount.target.clone()),
        read_only: Some(mount.readonly),
        volume_options: (mount.kind == MountKind::Volume).then(|| MountVolumeOptions {
            no_copy: Some(mount.volume_nocopy),
            labels: Some(mount.volume_labels.clone().into_iter().collect()),
            ..Default::default()
        }),
        tmpfs_options: (mount.kind == MountKind::Tmpfs).then(|| MountTmpfsOptions {
            size_bytes: mount.tmpfs_size.map(|size| size as i64),
            mode: mount.tmpfs_mode.map(i64::from),
            ..Default::default()
        }),
        ..Default::default()
    }
}
