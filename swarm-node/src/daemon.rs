//! `swarm daemon`: one per host. Claims its data dir, loads and attaches the
//! data plane, serves the control socket, and undoes all of it on shutdown.

use std::{
    future::Future,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::watch;
use tracing::{info, warn};

mod scrape;

use crate::lock::Locked as _;
use crate::{
    agent::executor::{ExecutorDeps, GossipSlot},
    api::{
        ClusterError,
        control::{DaemonInfo, Request, Response},
    },
    control::{ControlServer, Handler, ServerError},
    dataplane::{
        self, Dataplane, DataplaneConfig, DataplaneError, LocalDelivery, Shutdown,
        UnderlayHookChoice,
    },
    dns::Resolver,
    engine::{EngineError, EngineServer},
    identity::{IdentityError, LocalNode, NodeIdentity},
    image::{ImageError, ImageSource, ImageStore, Registries},
    metrics::{MetricsError, MetricsServer},
    node::Membership,
    runtime::{
        Runtime, RuntimeError,
        docker::DockerRuntime,
        mounts::{VolumeInfo, Volumes},
        native::NativeRuntime,
    },
};

/// Everything `swarm daemon` is started with.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    pub advertise_addr: Ipv4Addr,
    pub data_dir: PathBuf,
    pub control_socket: PathBuf,
    /// Where Docker's Engine API is served.
    pub docker_api: DockerApi,
    pub hostname: String,
    /// The interface holding the advertise address when not given.
    pub underlay_iface: Option<String>,
    pub data_path_port: u16,
    pub underlay_hook: UnderlayHookChoice,
    pub local_delivery: LocalDelivery,
    /// How long a balanced flow may idle (established TCP excepted).
    pub conntrack_idle_timeout: Duration,
    /// Where a manager's control-plane API listens (its default port too).
    pub listen_addr: std::net::SocketAddr,
    /// What runs this node's tasks.
    pub runtime: RuntimeChoice,
    /// Where the tasks' resolver sends names that are not the swarm's.
    pub dns_upstreams: Vec<std::net::SocketAddr>,
    /// UDP port of gossip between nodes.
    pub gossip_port: u16,
    /// Registries reached over plain HTTP (`--insecure-registry`).
    pub insecure_registries: Vec<String>,
    /// Where Prometheus metrics are served (`--metrics-addr`), if anywhere.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// This node's engine labels (`--label`).
    pub engine_labels: std::collections::BTreeMap<String, String>,
}

/// Where `swarm daemon --docker-api-socket` serves Docker's Engine API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DockerApi {
    /// The default path: when another daemon on this host serves it
    /// already, this one serves none and says so.
    Default(PathBuf),
    /// A path the user gave: it must be served.
    At(PathBuf),
    Off,
}

/// The task runtime a node uses (`swarm daemon --runtime`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuntimeChoice {
    /// Processes in their own namespaces and cgroups; needs only the kernel.
    Native,
    /// Containers of the Docker engine at this address.
    Docker { host: String },
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(
        "swarm daemon must run as root: it loads eBPF programs and manages network interfaces (try sudo)"
    )]
    NotRoot,
    #[error(
        "no interface on this host holds the advertise address {0}: give one of this host's addresses (`ip -br addr`), or name the interface with --underlay-iface"
    )]
    NoInterfaceForAddr(Ipv4Addr),
    #[error("listing this host's addresses failed: {0}")]
    Ifaddrs(nix::Error),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    #[error(transparent)]
    Control(#[from] ServerError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Images(#[from] ImageError),
    #[error(
        "a swarm daemon is running on data dir {0}: --cleanup is for a daemon that died; stop a live one with SIGTERM, which removes what it made itself"
    )]
    StillRunning(PathBuf),
    #[error(
        "{0} holds no swarm node (no node-id file): give --cleanup the --data-dir the dead daemon ran with"
    )]
    NoNode(PathBuf),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}

/// Runs the daemon until `shutdown` completes, then cleans up: the XDP program
/// is detached, the pins removed, the control socket deleted.
pub async fn run(
    config: DaemonConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(DaemonError::NotRoot);
    }
    // Registry clients (reqwest) take the process's TLS provider: ring, as
    // the rest of the daemon. A second install in one process is refused.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let underlay_iface = match &config.underlay_iface {
        Some(iface) => iface.clone(),
        None => iface_holding(config.advertise_addr)?,
    };
    let identity = NodeIdentity::claim(&config.data_dir)?;
    let images = Arc::new(ImageStore::open(
        config.data_dir.join(IMAGES_DIR),
        Registries {
            insecure: config.insecure_registries.clone(),
            certs_dir: config.data_dir.join(CERTS_DIR),
        },
        tokio::runtime::Handle::current(),
    )?);
    let volumes = Volumes::new(config.data_dir.join(VOLUMES_DIR));
    // Before any kernel object is made: a missing engine fails the start
    // with nothing to undo.
    let task_runtime = open_runtime(
        &config.runtime,
        &config.data_dir,
        &identity.node_id,
        images.clone(),
        volumes.clone(),
    )
    .await?;
    // Bound before the data plane loads, so a taken socket fails fast; clients
    // that connect early wait in the backlog until serving starts.
    let server = ControlServer::bind(&config.control_socket).await?;
    let engine = match &config.docker_api {
        DockerApi::Off => None,
        DockerApi::At(path) => Some(EngineServer::bind(path).await?),
        DockerApi::Default(path) => match EngineServer::bind(path).await {
            Ok(engine) => Some(engine),
            Err(err @ EngineError::InUse(_)) => {
                warn!(error = %err, "this daemon serves no Docker API");
                None
            }
            Err(err) => return Err(err.into()),
        },
    };
    let metrics = match config.metrics_addr {
        Some(addr) => Some(MetricsServer::bind(addr).await?),
        None => None,
    };
    let dataplane_config = DataplaneConfig {
        state_file: Some(config.data_dir.join(OVERLAY_STATE_FILE)),
        ..DataplaneConfig::for_node(&identity.node_id, config.data_path_port)
    };
    // Removes the pins however this function ends, panics included, unless a
    // clean shutdown keeps them for the tasks still attached.
    let mut pins = PinDirGuard(Some(dataplane_config.pin_dir.clone()));

    // Netlink calls block on a runtime of their own: keep them off this one.
    let (dataplane, underlay_hook) = {
        let iface = underlay_iface.clone();
        let port = config.data_path_port;
        let choice = config.underlay_hook;
        let delivery = config.local_delivery;
        let advertise_addr = config.advertise_addr;
        let dataplane_config = dataplane_config.clone();
        tokio::task::spawn_blocking(move || -> Result<_, DataplaneError> {
            let mut dataplane = Dataplane::load(&dataplane_config)?;
            let hook = dataplane.attach_underlay(&iface, choice)?;
            dataplane.start_overlay(port, delivery, advertise_addr)?;
            Ok((dataplane, hook))
        })
        .await
        .expect("data-plane set-up panicked")?
    };

    let info = DaemonInfo {
        node_id: identity.node_id.clone(),
        hostname: config.hostname.clone(),
        advertise_addr: config.advertise_addr.to_string(),
        underlay_iface: underlay_iface.clone(),
        underlay_hook,
        local_delivery: config.local_delivery,
        data_path_port: config.data_path_port,
        runtime: task_runtime.name().to_owned(),
        data_dir: display(&config.data_dir),
        pin_dir: display(dataplane.pin_dir()),
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        swarm: Default::default(),
        dns: Default::default(),
        gossip: None,
    };
    info!(
        node_id = %info.node_id,
        hostname = %info.hostname,
        advertise_addr = %info.advertise_addr,
        underlay_iface = %info.underlay_iface,
        control_socket = %config.control_socket.display(),
        runtime = task_runtime.name(),
        "swarm daemon ready"
    );

    let dataplane = Arc::new(Mutex::new(dataplane));
    let resolver = Arc::new(Resolver::new(
        tokio::runtime::Handle::current(),
        config.dns_upstreams.clone(),
    ));
    let gossip = GossipSlot::default();
    let executor = ExecutorDeps {
        runtime: task_runtime.clone(),
        dataplane: dataplane.clone(),
        resolver: resolver.clone(),
        gossip_port: config.gossip_port,
        gossip: gossip.clone(),
    };
    let membership = Membership::load(
        LocalNode {
            data_dir: config.data_dir.clone(),
            node_id: identity.node_id.clone(),
            hostname: config.hostname.clone(),
            advertise_addr: config.advertise_addr,
            listen_addr: config.listen_addr,
            engine_labels: config.engine_labels.clone(),
        },
        executor,
        images.clone(),
    )
    .await?;
    let state = Arc::new(DaemonState {
        info,
        images: images.clone(),
        volumes,
        dataplane,
        membership,
        resolver,
        gossip,
        runtime: task_runtime,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let engine = engine.map(|engine| {
        let handler: Arc<dyn Handler> = state.clone();
        let stop = stop_rx.clone();
        tokio::spawn(async move { engine.serve(handler, stop).await })
    });
    let metrics = metrics.map(|metrics| {
        tokio::spawn(metrics.serve(scrape::collector(state.clone()), stop_rx.clone()))
    });
    let expiry = tokio::spawn(expire_flows(
        state.clone(),
        config.conntrack_idle_timeout,
        stop_rx.clone(),
    ));
    tokio::select! {
        () = server.serve(state.clone(), stop_rx) => {}
        () = shutdown => {
            info!("shutting down");
            let _ = stop_tx.send(true);
        }
    }
    drop(server);
    let _ = stop_tx.send(true);
    let _ = expiry.await;
    if let Some(metrics) = metrics {
        let _ = metrics.await;
    }
    if let Some(engine) = engine {
        let _ = engine.await;
    }
    state.membership.stop().await;

    // Handler tasks may still hold the state for a moment; the guard unpins regardless.
    let dataplane = Arc::try_unwrap(state)
        .ok()
        .and_then(|state| Arc::try_unwrap(state.dataplane).ok());
    if let Some(dataplane) = dataplane {
        let dataplane = dataplane
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let outcome = tokio::task::spawn_blocking(move || dataplane.shutdown())
            .await
            .expect("data-plane teardown panicked")?;
        match outcome {
            Shutdown::Removed => info!("stopped; data plane detached and unpinned"),
            Shutdown::KeptEndpoints(count) => {
                pins.0 = None;
                info!(
                    endpoints = count,
                    "stopped; task endpoints, the VXLAN device and the pinned maps stay for the next start"
                );
            }
        }
    }
    Ok(())
}

/// The task runtime `choice` names, keeping its tasks under the data dir.
async fn open_runtime(
    choice: &RuntimeChoice,
    data_dir: &Path,
    node_id: &str,
    images: Arc<ImageStore>,
    volumes: Volumes,
) -> Result<Arc<dyn Runtime>, DaemonError> {
    let state_dir = data_dir.join(TASKS_DIR);
    Ok(match choice {
        RuntimeChoice::Native => Arc::new(
            NativeRuntime::new(state_dir)?
                .with_images(images)
                .with_volumes(volumes),
        ),
        RuntimeChoice::Docker { host } => {
            let (host, node_id) = (host.clone(), node_id.to_owned());
            // It starts a runtime of its own: not from within this one.
            Arc::new(
                tokio::task::spawn_blocking(move || {
                    DockerRuntime::connect(&host, &node_id, state_dir)
                })
                .await
                .expect("connecting to Docker panicked")?,
            )
        }
    })
}

/// Where `swarm daemon --cleanup` looks.
#[derive(Clone, Debug)]
pub struct CleanupConfig {
    pub data_dir: PathBuf,
    pub runtime: RuntimeChoice,
    pub data_path_port: u16,
}

/// What `swarm daemon --cleanup` removed.
#[derive(Debug, Default)]
pub struct Cleaned {
    pub node_id: String,
    pub tasks: Vec<String>,
    pub links: Vec<String>,
    pub pin_dir: Option<PathBuf>,
}

/// Removes what a daemon that died without a clean stop (kill -9, a
/// crash, power cut short of a reboot) left on this host for its data dir:
/// its tasks (processes, cgroups, namespaces, mounts), the host side of
/// their veths, its VXLAN device and its pinned maps. The node's identity,
/// certificates and Raft data stay: the next start is the same node.
/// Refused while a daemon runs on that data dir.
pub async fn cleanup(config: CleanupConfig) -> Result<Cleaned, DaemonError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(DaemonError::NotRoot);
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let identity = match NodeIdentity::claim_existing(&config.data_dir) {
        Ok(Some(identity)) => identity,
        Ok(None) => return Err(DaemonError::NoNode(config.data_dir)),
        Err(IdentityError::DataDirInUse { path }) => return Err(DaemonError::StillRunning(path)),
        Err(err) => return Err(err.into()),
    };
    let images = Arc::new(ImageStore::open(
        config.data_dir.join(IMAGES_DIR),
        Registries {
            insecure: Vec::new(),
            certs_dir: config.data_dir.join(CERTS_DIR),
        },
        tokio::runtime::Handle::current(),
    )?);
    let volumes = Volumes::new(config.data_dir.join(VOLUMES_DIR));
    let runtime = open_runtime(
        &config.runtime,
        &config.data_dir,
        &identity.node_id,
        images,
        volumes,
    )
    .await?;
    let dataplane_config = DataplaneConfig {
        state_file: Some(config.data_dir.join(OVERLAY_STATE_FILE)),
        ..DataplaneConfig::for_node(&identity.node_id, config.data_path_port)
    };
    tokio::task::spawn_blocking(move || {
        let tasks = runtime.list()?;
        for task in &tasks {
            runtime.remove(task)?;
            info!(task = %task, "leftover task removed");
        }
        let leftovers = dataplane::overlay::remove_leftovers(&dataplane_config, &tasks)?;
        Ok(Cleaned {
            node_id: identity.node_id.clone(),
            tasks,
            links: leftovers.links,
            pin_dir: leftovers.pin_dir,
        })
    })
    .await
    .expect("cleaning up panicked")
}

struct DaemonState {
    info: DaemonInfo,
    images: Arc<ImageStore>,
    /// This node's named volumes (native runtime).
    volumes: Volumes,
    dataplane: Arc<Mutex<Dataplane>>,
    membership: Arc<Membership>,
    resolver: Arc<Resolver>,
    gossip: GossipSlot,
    /// What runs this node's tasks: their cgroups' usage for the metrics.
    runtime: Arc<dyn Runtime>,
}

impl Handler for DaemonState {
    fn handle(&self, request: Request) -> Response {
        let membership = &self.membership;
        let cluster_result = match request {
            Request::Info => Ok(Response::Info(Box::new(DaemonInfo {
                swarm: membership.info(),
                dns: self.resolver.stats(),
                gossip: self.gossip.locked().as_ref().map(|g| g.stats()),
                ..self.info.clone()
            }))),
            Request::SwarmInit(init) => membership.init(init),
            Request::Events { after, wait_millis } => membership.events(after, wait_millis),
            Request::SwarmJoin(join) => membership.join(join),
            Request::SwarmUnlock { key } => membership.unlock(&key),
            request if request.is_for_managers() => membership.manager_request(request),
            Request::SwarmLeave { force } => membership.leave(force),
            request @ (Request::ImageList
            | Request::ImageRemove { .. }
            | Request::ImagePrune
            | Request::ImageDistribution { .. }
            | Request::RegistryLogin { .. }) => {
                return self.handle_images(request);
            }
            request @ (Request::VolumeList
            | Request::VolumeInspect { .. }
            | Request::VolumeRemove { .. }
            | Request::VolumePrune) => return self.handle_volumes(request),
            dataplane_request => return self.handle_dataplane(dataplane_request),
        };
        // Becoming a manager starts the API; leaving stops it.
        membership.sync_api();
        cluster_result.unwrap_or_else(|err| Response::Error(err.to_string()))
    }
}

impl DaemonState {
    /// `swarm volume ...`: this node's own volumes.
    fn handle_volumes(&self, request: Request) -> Response {
        if self.info.runtime == "docker" {
            return Response::Error(
                "this node runs tasks with Docker, whose engine keeps the volumes: use `docker volume`".into(),
            );
        }
        let result = match request {
            Request::VolumeList => self
                .volumes
                .list()
                .map(|volumes| Response::Rows(volumes.iter().map(volume_row).collect())),
            Request::VolumeInspect { names } => names
                .iter()
                .map(|name| self.volumes.inspect(name).map(|v| volume_row(&v)))
                .collect::<Result<Vec<_>, _>>()
                .map(|rows| Response::Json(serde_json::Value::Array(rows))),
            Request::VolumeRemove { names } => names
                .iter()
                .map(|name| self.volumes.remove(name).map(|()| name.clone()))
                .collect::<Result<Vec<_>, _>>()
                .map(Response::Notes),
            Request::VolumePrune => self.volumes.prune().map(|removed| {
                Response::Notes(
                    removed
                        .into_iter()
                        .map(|r| format!("Deleted: {r}"))
                        .collect(),
                )
            }),
            _ => return Response::Error("not a volume request".into()),
        };
        result.unwrap_or_else(|err| Response::Error(err.to_string()))
    }

    /// `swarm image ...`: this node's own images.
    fn handle_images(&self, request: Request) -> Response {
        let result = match request {
            Request::ImageList => self.images.list().map(|images| {
                Response::Rows(
                    images
                        .iter()
                        .map(|(image, tasks)| image_row(image, tasks.len()))
                        .collect(),
                )
            }),
            Request::ImageRemove { images } => images
                .iter()
                .map(|reference| {
                    self.images
                        .remove(reference)
                        .map(|digest| format!("Deleted: {digest}"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Response::Notes),
            Request::ImagePrune => self.images.prune().map(|removed| {
                Response::Notes(
                    removed
                        .into_iter()
                        .map(|r| format!("Deleted: {r}"))
                        .collect(),
                )
            }),
            Request::ImageDistribution {
                image,
                registry_auth,
            } => self.distribution(&image, registry_auth.as_ref()),
            Request::RegistryLogin {
                registry,
                registry_auth,
            } => self
                .images
                .check_login(&registry, &registry_auth)
                .map(|()| Response::Notes(vec!["Login Succeeded".into()])),
            _ => return Response::Error("not an image request".into()),
        };
        result.unwrap_or_else(|err| Response::Error(err.to_string()))
    }

    /// Docker's `DistributionInspect` for `image`, asked of its registry.
    fn distribution(
        &self,
        image: &str,
        login: Option<&crate::api::tasks::RegistryAuth>,
    ) -> Result<Response, ImageError> {
        let ImageSource::Registry(reference) = ImageSource::parse(image)? else {
            return Err(ImageError::NotFound(image.to_owned()));
        };
        let found = self.images.distribution(&reference, login)?;
        let answer = bollard::models::DistributionInspect {
            descriptor: bollard::models::OciDescriptor {
                media_type: Some(found.media_type),
                digest: Some(found.digest),
                size: Some(found.size as i64),
                ..Default::default()
            },
            platforms: found
                .platforms
                .into_iter()
                .map(|(os, architecture)| bollard::models::OciPlatform {
                    os: Some(os),
                    architecture: Some(architecture),
                    ..Default::default()
                })
                .collect(),
        };
        Ok(Response::Json(
            serde_json::to_value(answer).expect("plain data serializes"),
        ))
    }

    fn handle_dataplane(&self, request: Request) -> Response {
        let mut dataplane = self.dataplane.locked();
        let result = match request {
            Request::DataplaneStats => dataplane.stats().map(Response::DataplaneStats),
            Request::Endpoints => dataplane.endpoints().map(Response::Endpoints),
            Request::DataplaneNetworks => Ok(Response::Rows(
                sorted_networks(&dataplane)
                    .iter()
                    .map(|n| {
                        serde_json::json!({
                            "VNI": n.vni,
                            "Subnet": format!("{}/{}", n.subnet, n.prefix_len),
                            "Gateway": n.gateway.to_string(),
                            "MTU": n.mtu,
                        })
                    })
                    .collect(),
            )),
            Request::NetworkCreate(network) => {
                dataplane.create_network(network).map(|()| Response::Done)
            }
            Request::NetworkRemove { vni } => {
                dataplane.remove_network(vni).map(|()| Response::Done)
            }
            Request::EndpointAttach(spec) => {
                dataplane.attach_endpoint(&spec).map(Response::Endpoint)
            }
            Request::EndpointDetach { id } => {
                dataplane.detach_endpoint(&id).map(|()| Response::Done)
            }
            Request::RemoteAdd(spec) => dataplane
                .add_remote_endpoint(&spec)
                .map(|()| Response::Done),
            Request::RemoteRemove { vni, ip } => dataplane
                .remove_remote_endpoint(vni, ip)
                .map(|()| Response::Done),
            Request::Services => dataplane.services().map(Response::Services),
            Request::DataplaneFlows { service } => {
                dataplane.flows(service.as_deref()).map(|rows| {
                    Response::Rows(
                        rows.iter()
                            .map(|row| serde_json::to_value(row).expect("plain data serializes"))
                            .collect(),
                    )
                })
            }
            Request::ServiceCreate(spec) => dataplane.create_service(spec).map(|()| Response::Done),
            Request::ServiceUpdate { name, add, remove } => dataplane
                .update_service_backends(&name, &add, &remove)
                .map(|()| Response::Done),
            Request::ServiceRemove { name } => {
                dataplane.remove_service(&name).map(|()| Response::Done)
            }
            // The rest are answered by the membership before this is called.
            cluster => unreachable!("{cluster:?} is answered by the membership"),
        };
        result.unwrap_or_else(|err| Response::Error(err.to_string()))
    }
}

/// Sweeps idle flows out of the connection table, and writes pending state,
/// until `stop` turns true.
async fn expire_flows(state: Arc<DaemonState>, idle: Duration, mut stop: watch::Receiver<bool>) {
    // Often enough that a flow goes within a second or so of its timeout,
    // and that state changes left pending reach the disk within a second.
    let period = (idle / 4).clamp(Duration::from_millis(250), Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.changed() => return,
        }
        let state = state.clone();
        let swept = tokio::task::spawn_blocking(move || {
            let mut dataplane = state.dataplane.locked();
            dataplane.flush_state()?;
            dataplane.expire_flows(idle)
        })
        .await;
        match swept {
            Ok(Ok(0)) => {}
            Ok(Ok(count)) => {
                crate::metrics::instruments()
                    .conntrack_expired
                    .inc_by(count as u64);
                tracing::debug!(count, "idle flows expired")
            }
            Ok(Err(err)) => warn!(error = %err, "expiring idle flows failed"),
            Err(err) => warn!(error = %err, "flow expiry panicked"),
        }
    }
}

struct PinDirGuard(Option<PathBuf>);

impl Drop for PinDirGuard {
    fn drop(&mut self) {
        if let Some(dir) = &self.0
            && let Err(err) = dataplane::remove_pin_dir(dir)
        {
            warn!(error = %err, "could not remove the pin dir");
        }
    }
}

/// Where the native runtime keeps each task's files and logs (the Docker
/// runtime: a directory per task it holds).
const TASKS_DIR: &str = "tasks";
/// The image store, under the data dir.
const IMAGES_DIR: &str = "images";
const VOLUMES_DIR: &str = "volumes";
/// Registries' own CAs, as Docker's /etc/docker/certs.d.
const CERTS_DIR: &str = "certs.d";

/// Networks and task endpoints this node serves, for the next start to adopt.
const OVERLAY_STATE_FILE: &str = "overlay.json";

/// The name of the interface that holds `addr`.
pub fn iface_holding(addr: Ipv4Addr) -> Result<String, DaemonError> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(DaemonError::Ifaddrs)?;
    for ifaddr in addrs {
        let held = ifaddr
            .address
            .as_ref()
            .and_then(|a| a.as_sockaddr_in())
            .map(|sin| IpAddr::V4(sin.ip()));
        if held == Some(IpAddr::V4(addr)) {
            return Ok(ifaddr.interface_name);
        }
    }
    Err(DaemonError::NoInterfaceForAddr(addr))
}

/// `volume ls|inspect`'s row, in Docker's words.
fn volume_row(volume: &VolumeInfo) -> serde_json::Value {
    let created = crate::clock::rfc3339(volume.created_at);
    serde_json::json!({
        "Name": volume.name,
        "Driver": "local",
        "Scope": "local",
        "Mountpoint": volume.mountpoint,
        "CreatedAt": created,
        "Labels": volume.labels,
        "Tasks": volume.tasks.len(),
    })
}

/// `image ls`'s row, in Docker's words.
fn image_row(image: &crate::image::Image, tasks: usize) -> serde_json::Value {
    let (repository, tag) = image.repository_and_tag();
    let size: u64 = image.layers.iter().map(|layer| dir_size(layer)).sum();
    let short = |digest: &str| {
        digest
            .trim_start_matches("sha256:")
            .chars()
            .take(12)
            .collect::<String>()
    };
    serde_json::json!({
        "Repository": repository,
        "Tag": tag,
        "Digest": image.digest,
        "ID": short(&image.config_digest),
        "Size": size,
        "Tasks": tasks,
    })
}

/// Bytes of the files under `dir` (links not followed).
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| Some((entry.path(), entry.file_type().ok()?)))
        .map(|(path, kind)| {
            if kind.is_dir() {
                dir_size(&path)
            } else {
                std::fs::symlink_metadata(&path).map_or(0, |m| m.len())
            }
        })
        .sum()
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

fn sorted_networks(dataplane: &Dataplane) -> Vec<crate::dataplane::OverlayNetwork> {
    let mut networks = dataplane.networks();
    networks.sort_by_key(|n| n.vni);
    networks
}
