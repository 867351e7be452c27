//! The daemon's side of cluster membership: answers the control socket's
//! swarm requests (init, join tokens, node list, leave, info) from the
//! cluster state this node keeps, which it loads again after a restart.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::watch;

use super::{
    Availability, Cluster, ClusterError, ClusterState, InitOptions, NodeRecord, Role,
    api::{self, ServerCredentials, proto},
    join::{self, Joiner},
    pki::{CertificateSubject, DEFAULT_CERT_EXPIRY, JoinToken, NodeCertificate},
    state::{DEFAULT_HEARTBEAT, DEFAULT_LISTEN_PORT},
};
use crate::control::{NodeRow, NodeUpdateRequest, Response, SwarmInfo, SwarmInitRequest};

fn availability_word(availability: Availability) -> &'static str {
    match availability {
        Availability::Active => "Active",
        Availability::Pause => "Pause",
        Availability::Drain => "Drain",
    }
}

/// Who this node is, for cluster requests.
pub struct LocalNode {
    pub data_dir: PathBuf,
    pub node_id: String,
    pub hostname: String,
    pub advertise_addr: Ipv4Addr,
}

/// This node's membership, if any, behind a lock; and, on a manager, the
/// control-plane API it serves.
pub struct Membership {
    node: LocalNode,
    cluster: Mutex<Option<Cluster>>,
    runtime: tokio::runtime::Handle,
    api: Mutex<Option<Background>>,
    /// On a worker: the heartbeat task.
    agent: Mutex<Option<Background>>,
    /// On a manager: when each node was last heard from.
    liveness: Mutex<HashMap<String, Instant>>,
}

/// A task and the switch that stops it.
type Background = (watch::Sender<bool>, tokio::task::JoinHandle<()>);

/// A node missing this many heartbeats in a row is Down.
const MISSED_BEATS: u32 = 3;

impl Membership {
    /// Picks up the cluster this node was in before a restart. Call from
    /// inside the daemon's runtime.
    pub fn load(node: LocalNode) -> Result<Arc<Self>, ClusterError> {
        let cluster = Cluster::load(&node.data_dir, &node.node_id)?;
        let membership = Arc::new(Self {
            node,
            cluster: Mutex::new(cluster),
            runtime: tokio::runtime::Handle::current(),
            api: Mutex::new(None),
            agent: Mutex::new(None),
            liveness: Mutex::new(HashMap::new()),
        });
        membership.sync_api();
        let ticking = Arc::downgrade(&membership);
        membership.runtime.spawn(async move {
            // Certificates are checked once a second; the task ends with the membership.
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let Some(membership) = ticking.upgrade() else {
                    return;
                };
                let _ = tokio::task::spawn_blocking(move || {
                    membership.renew_own_if_due();
                    membership.sync_api();
                })
                .await;
            }
        });
        Ok(membership)
    }

    /// Serves the control-plane API while this node is a manager, and runs
    /// the heartbeat agent while it is a worker; each only then.
    pub fn sync_api(self: &Arc<Self>) {
        self.sync_agent();
        let serving = {
            let cluster = self.lock();
            cluster
                .as_ref()
                .filter(|c| c.role == Role::Manager)
                .and_then(|c| {
                    Some((
                        ServerCredentials {
                            cert_pem: c.certificate.cert_pem.clone(),
                            key_pem: c.certificate.key_pem.clone(),
                            ca_pem: c.ca_pem().to_owned(),
                        },
                        c.manager_addr()?.port(),
                    ))
                })
        };
        let mut api = self.api.lock().unwrap_or_else(|p| p.into_inner());
        // A server that stopped on its own (its port was taken) is started again.
        if api.as_ref().is_some_and(|(_, task)| task.is_finished()) {
            *api = None;
        }
        match (serving, api.is_some()) {
            (Some((credentials, port)), false) => {
                let (stop_tx, stop_rx) = watch::channel(false);
                let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
                let membership = self.clone();
                let task = self.runtime.spawn(async move {
                    if let Err(err) = api::serve(membership, credentials, addr, stop_rx).await {
                        tracing::error!(%addr, error = %err, "control-plane API stopped");
                    }
                });
                *api = Some((stop_tx, task));
            }
            (None, true) => {
                if let Some((stop, _task)) = api.take() {
                    let _ = stop.send(true);
                }
            }
            _ => {}
        }
    }

    fn sync_agent(self: &Arc<Self>) {
        let reporting = {
            let cluster = self.lock();
            cluster
                .as_ref()
                .filter(|c| c.role == Role::Worker)
                .and_then(|c| {
                    Some((
                        *c.state.managers.first()?,
                        c.ca_pem().to_owned(),
                        Duration::from_millis(c.state.heartbeat_millis.max(1)),
                    ))
                })
        };
        let mut agent = self.agent.lock().unwrap_or_else(|p| p.into_inner());
        match (reporting, agent.is_some()) {
            (Some((manager, ca_pem, period)), false) => {
                let (stop_tx, stop_rx) = watch::channel(false);
                let task = self.runtime.spawn(super::agent::run(
                    Arc::downgrade(self),
                    manager,
                    ca_pem,
                    period,
                    stop_rx,
                ));
                *agent = Some((stop_tx, task));
            }
            (None, true) => {
                if let Some((stop, _task)) = agent.take() {
                    let _ = stop.send(true);
                }
            }
            _ => {}
        }
    }

    /// Stops the API and the agent (daemon shutdown).
    pub async fn stop_api(&self) {
        let api = self.api.lock().unwrap_or_else(|p| p.into_inner()).take();
        let agent = self.agent.lock().unwrap_or_else(|p| p.into_inner()).take();
        for (stop, task) in api.into_iter().chain(agent) {
            let _ = stop.send(true);
            let _ = task.await;
        }
    }

    /// A manager renewing a member's certificate: same node, same role as
    /// recorded, for the key in `csr_pem`.
    pub fn renew(
        &self,
        subject: &CertificateSubject,
        csr_pem: &str,
    ) -> Result<String, ClusterError> {
        let slot = self.lock();
        let cluster = slot.as_ref().ok_or(ClusterError::NotInSwarm)?;
        let ca = cluster.manager_ca()?;
        let node = cluster
            .state
            .nodes
            .get(&subject.node_id)
            .filter(|_| subject.cluster_id == cluster.state.cluster_id)
            .ok_or_else(|| ClusterError::NoSuchNode(subject.node_id.clone()))?;
        Ok(ca.sign_request(
            csr_pem,
            &cluster.state.cluster_id,
            &node.id,
            node.role,
            &[node.addr.ip()],
            Duration::from_secs(cluster.state.cert_expiry_secs),
        )?)
    }

    /// This node's current certificate.
    pub fn certificate(&self) -> Option<NodeCertificate> {
        self.lock().as_ref().map(|c| c.certificate.clone())
    }

    /// Keeps a renewed certificate (an agent's, from a manager).
    pub fn store_certificate(&self, certificate: NodeCertificate) -> Result<(), ClusterError> {
        let mut slot = self.lock();
        let cluster = slot.as_mut().ok_or(ClusterError::NotInSwarm)?;
        cluster.replace_certificate(certificate)
    }

    /// A manager signs its own new certificate when half the old one's life
    /// has passed, then serves the API with it.
    fn renew_own_if_due(self: &Arc<Self>) {
        let renewed = {
            let mut slot = self.lock();
            let Some(cluster) = slot.as_mut() else {
                return;
            };
            let Ok(ca) = cluster.manager_ca() else {
                return;
            };
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let due = CertificateSubject::from_pem(&cluster.certificate.cert_pem)
                .map_or(true, |subject| subject.renewal_due(now));
            if !due {
                return;
            }
            let Some(me) = cluster.state.nodes.get(&cluster.node_id) else {
                return;
            };
            let issued = ca.issue(
                &cluster.state.cluster_id,
                &cluster.node_id,
                Role::Manager,
                &[me.addr.ip()],
                Duration::from_secs(cluster.state.cert_expiry_secs),
            );
            match issued
                .map_err(ClusterError::from)
                .and_then(|cert| cluster.replace_certificate(cert))
            {
                Ok(()) => true,
                Err(err) => {
                    tracing::warn!(error = %err, "renewing this manager's certificate failed");
                    false
                }
            }
        };
        if renewed {
            tracing::info!("manager certificate renewed; serving with it");
            self.restart_api();
        }
    }

    /// Stops the API, waits until its port is free, and serves again (with
    /// the current certificate). Call from a blocking thread.
    fn restart_api(self: &Arc<Self>) {
        let running = self.api.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((stop, task)) = running {
            let _ = stop.send(true);
            let _ = self.runtime.block_on(task);
        }
        self.sync_api();
    }

    /// A manager hearing from a node: records it alive; says how often to
    /// call again.
    pub fn heartbeat(&self, subject: &CertificateSubject) -> Result<Duration, ClusterError> {
        let slot = self.lock();
        let cluster = slot.as_ref().ok_or(ClusterError::NotInSwarm)?;
        cluster.require_manager()?;
        if subject.cluster_id != cluster.state.cluster_id
            || !cluster.state.nodes.contains_key(&subject.node_id)
        {
            return Err(ClusterError::Join(format!(
                "node {} is not a member of this swarm",
                subject.node_id
            )));
        }
        self.liveness
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(subject.node_id.clone(), Instant::now());
        Ok(Duration::from_millis(cluster.state.heartbeat_millis.max(1)))
    }

    /// A manager's answer to a joining node.
    pub fn admit(&self, request: &proto::JoinRequest) -> Result<proto::JoinResponse, ClusterError> {
        let mut slot = self.lock();
        let cluster = slot.as_mut().ok_or(ClusterError::NotInSwarm)?;
        cluster.require_manager()?;
        let addr: IpAddr = request.advertise_addr.parse().map_err(|_| {
            ClusterError::Join(format!(
                "invalid advertise address {:?}",
                request.advertise_addr
            ))
        })?;
        let token: Option<JoinToken> = request.token.parse().ok();
        if token.is_some_and(|t| cluster.admits(&t) == Some(Role::Manager)) {
            return Err(ClusterError::Join(
                "joining as a manager needs Raft between managers, which this version does not have yet; join with the worker token".into(),
            ));
        }
        let (role, cert_pem) = cluster.admit(
            &request.token,
            &request.node_id,
            &request.hostname,
            addr,
            &request.csr_pem,
        )?;
        Ok(proto::JoinResponse {
            cluster_id: cluster.state.cluster_id.clone(),
            role: role.to_string(),
            cert_pem,
            ca_pem: cluster.ca_pem().to_owned(),
            managers: cluster
                .state
                .managers
                .iter()
                .map(|m| m.to_string())
                .collect(),
        })
    }

    /// `swarm join`: becomes a member through the manager at `manager`.
    pub fn join(&self, token: &str, manager: SocketAddr) -> Result<Response, ClusterError> {
        let mut slot = self.lock();
        if slot.is_some() {
            return Err(ClusterError::AlreadyInSwarm);
        }
        let joiner = Joiner {
            node_id: &self.node.node_id,
            hostname: &self.node.hostname,
            advertise_addr: IpAddr::V4(self.node.advertise_addr),
        };
        let joined = self.runtime.block_on(join::join(token, manager, joiner))?;
        let mut nodes = BTreeMap::new();
        nodes.insert(
            self.node.node_id.clone(),
            NodeRecord {
                id: self.node.node_id.clone(),
                hostname: self.node.hostname.clone(),
                addr: SocketAddr::from((self.node.advertise_addr, DEFAULT_LISTEN_PORT)),
                role: joined.role,
                availability: Availability::Active,
                labels: BTreeMap::new(),
            },
        );
        let state = ClusterState {
            cluster_id: joined.cluster_id,
            created_at: 0,
            worker_token: String::new(),
            manager_token: String::new(),
            cert_expiry_secs: 0,
            heartbeat_millis: DEFAULT_HEARTBEAT.as_millis() as u64,
            nodes,
            managers: joined.managers,
        };
        let cluster = Cluster::joined(
            &self.node.data_dir,
            &self.node.node_id,
            joined.role,
            joined.ca_pem,
            joined.certificate,
            state,
        )?;
        tracing::info!(role = %cluster.role, %manager, "joined a swarm");
        let role = cluster.role;
        *slot = Some(cluster);
        Ok(Response::Joined { role })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Cluster>> {
        self.cluster.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn info(&self) -> SwarmInfo {
        let cluster = self.lock();
        let Some(cluster) = cluster.as_ref() else {
            return SwarmInfo {
                local_node_state: "inactive".into(),
                ..SwarmInfo::default()
            };
        };
        let me = cluster.state.nodes.get(&cluster.node_id);
        let manager = cluster.role == Role::Manager;
        SwarmInfo {
            local_node_state: "active".into(),
            node_id: cluster.node_id.clone(),
            node_addr: me.map(|n| n.addr.ip().to_string()).unwrap_or_default(),
            control_available: manager,
            cluster_id: cluster.state.cluster_id.clone(),
            // A worker does not see the cluster's node list.
            managers: if manager { cluster.managers() } else { 0 },
            nodes: if manager {
                cluster.state.nodes.len()
            } else {
                0
            },
        }
    }

    pub fn init(&self, request: SwarmInitRequest) -> Result<Response, ClusterError> {
        let mut slot = self.lock();
        if slot.is_some() {
            return Err(ClusterError::AlreadyInSwarm);
        }
        let ip = request.advertise_addr.unwrap_or(self.node.advertise_addr);
        let port = request.listen_port.unwrap_or(DEFAULT_LISTEN_PORT);
        let options = InitOptions {
            hostname: self.node.hostname.clone(),
            advertise: SocketAddr::from((ip, port)),
            cert_expiry: request
                .cert_expiry_secs
                .map_or(DEFAULT_CERT_EXPIRY, Duration::from_secs),
            heartbeat: request
                .heartbeat_millis
                .map_or(DEFAULT_HEARTBEAT, Duration::from_millis),
        };
        let cluster = Cluster::init(&self.node.data_dir, &self.node.node_id, &options)?;
        tracing::info!(
            cluster_id = %cluster.state.cluster_id,
            node_id = %cluster.node_id,
            addr = %options.advertise,
            "swarm initialized; this node is its manager"
        );
        let response = Response::SwarmInitialized {
            node_id: cluster.node_id.clone(),
            worker_token: cluster.state.worker_token.clone(),
            manager_addr: options.advertise.to_string(),
        };
        *slot = Some(cluster);
        Ok(response)
    }

    pub fn join_token(&self, role: Role, rotate: bool) -> Result<Response, ClusterError> {
        let mut slot = self.lock();
        let cluster = slot.as_mut().ok_or(ClusterError::NotInSwarm)?;
        let token = cluster.join_token(role, rotate)?;
        if rotate {
            tracing::info!(%role, "join token rotated");
        }
        Ok(Response::JoinToken {
            role,
            token,
            manager_addr: cluster
                .manager_addr()
                .map(|a| a.to_string())
                .unwrap_or_default(),
        })
    }

    pub fn nodes(&self) -> Result<Response, ClusterError> {
        let slot = self.lock();
        let cluster = slot.as_ref().ok_or(ClusterError::NotInSwarm)?;
        cluster.require_manager()?;
        let rows = cluster
            .state
            .nodes
            .values()
            .map(|node| {
                let is_self = node.id == cluster.node_id;
                NodeRow {
                    id: node.id.clone(),
                    hostname: node.hostname.clone(),
                    status: if is_self || self.alive(cluster, &node.id) {
                        "Ready"
                    } else {
                        "Down"
                    }
                    .into(),
                    availability: availability_word(node.availability).into(),
                    manager_status: match node.role {
                        Role::Manager if is_self => "Leader".into(),
                        Role::Manager => "Unreachable".into(),
                        Role::Worker => String::new(),
                    },
                    is_self,
                }
            })
            .collect();
        Ok(Response::Nodes(rows))
    }

    pub fn inspect(&self, reference: &str) -> Result<Response, ClusterError> {
        let slot = self.lock();
        let cluster = slot.as_ref().ok_or(ClusterError::NotInSwarm)?;
        cluster.require_manager()?;
        let id = cluster.resolve(reference)?;
        let node = &cluster.state.nodes[&id];
        let is_self = id == cluster.node_id;
        let ready = is_self || self.alive(cluster, &id);
        let mut value = serde_json::json!({
            "ID": node.id,
            "Spec": {
                "Labels": node.labels,
                "Role": node.role.to_string(),
                "Availability": availability_word(node.availability).to_lowercase(),
            },
            "Description": { "Hostname": node.hostname },
            "Status": {
                "State": if ready { "ready" } else { "down" },
                "Addr": node.addr.ip().to_string(),
            },
        });
        if node.role == Role::Manager {
            value["ManagerStatus"] = serde_json::json!({
                "Leader": is_self,
                "Reachability": if ready { "reachable" } else { "unreachable" },
                "Addr": node.addr.to_string(),
            });
        }
        Ok(Response::NodeInspect(serde_json::Value::Array(vec![value])))
    }

    pub fn update(&self, request: NodeUpdateRequest) -> Result<Response, ClusterError> {
        let mut slot = self.lock();
        let cluster = slot.as_mut().ok_or(ClusterError::NotInSwarm)?;
        cluster.require_manager()?;
        let id = cluster.resolve(&request.node)?;
        let node = cluster.state.nodes.get_mut(&id).expect("resolved");
        if let Some(availability) = request.availability {
            node.availability = availability;
        }
        for (key, value) in request.label_add {
            node.labels.insert(key, value);
        }
        for key in &request.label_rm {
            if node.labels.remove(key).is_none() {
                return Err(ClusterError::Refused(format!(
                    "key {key} doesn't exist in node's labels"
                )));
            }
        }
        cluster.save_state()?;
        tracing::info!(node = %id, "node updated");
        Ok(Response::Done)
    }

    pub fn remove(&self, reference: &str, force: bool) -> Result<Response, ClusterError> {
        let mut slot = self.lock();
        let cluster = slot.as_mut().ok_or(ClusterError::NotInSwarm)?;
        cluster.require_manager()?;
        let id = cluster.resolve(reference)?;
        let node = &cluster.state.nodes[&id];
        if node.role == Role::Manager {
            return Err(ClusterError::Refused(format!(
                "rm {reference}: node {id} is a cluster manager and is a member of the raft cluster. It must be demoted to worker before removal"
            )));
        }
        if self.alive(cluster, &id) && !force {
            return Err(ClusterError::Refused(format!(
                "rm {reference}: node {id} is not down and can't be removed; stop it first (`swarm leave` there) or use --force"
            )));
        }
        cluster.state.nodes.remove(&id);
        cluster.save_state()?;
        self.liveness
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        tracing::info!(node = %id, "node removed");
        Ok(Response::Done)
    }

    /// Whether the manager heard from node `id` within three heartbeats.
    fn alive(&self, cluster: &Cluster, id: &str) -> bool {
        let period = Duration::from_millis(cluster.state.heartbeat_millis.max(1));
        self.liveness
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .is_some_and(|seen| seen.elapsed() <= period * MISSED_BEATS)
    }

    pub fn leave(&self, force: bool) -> Result<Response, ClusterError> {
        let mut slot = self.lock();
        let cluster = slot.take().ok_or(ClusterError::NotInSwarm)?;
        let reload_dir = self.node.data_dir.clone();
        if let Err(err) = cluster.leave(force) {
            // Still a member: put the state back as it is on disk.
            *slot = Cluster::load(&reload_dir, &self.node.node_id)?;
            return Err(err);
        }
        tracing::info!("left the swarm");
        Ok(Response::Done)
    }
}
