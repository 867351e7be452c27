//! The daemon's side of cluster membership. Every node runs the agent
//! (heartbeats to the leader, certificate renewal, role changes); managers
//! also run Raft and the control-plane API. Control-socket requests that
//! need the cluster store are run by the leader: a manager that is not the
//! leader forwards them to it, so every write is committed by the leader.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use openraft::{
    ChangeMembers,
    error::{ClientWriteError, RaftError},
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{
    Availability, Cluster, ClusterError, ClusterState, Command, CommandResult, LocalState,
    NodeChange, NodeRecord, Role,
    api::{self, ServerCredentials, proto},
    join::{self, Joiner},
    pki::{CertificateSubject, DEFAULT_CERT_EXPIRY, JoinToken, NodeCertificate, RootCa},
    raft::{self, Member, RaftNode},
    state::{DEFAULT_HEARTBEAT, DEFAULT_LISTEN_PORT},
};
use crate::control::{
    NodeRow, NodeUpdateRequest, RaftInfo, Request, Response, SwarmInfo, SwarmInitRequest,
    SwarmJoinRequest,
};

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

/// Work a manager hands to the leader.
#[derive(Debug, Serialize, Deserialize)]
pub enum Forwarded {
    /// A control-socket request, from the node `origin` (which `node ls`
    /// marks as self).
    Request {
        request: Request,
        origin: String,
    },
    Command(Command),
    /// Make this manager a Raft voter.
    AddVoter {
        node_id: String,
    },
}

/// How long a request may wait for a leader (an election, say) and for its
/// write to commit before it fails.
const LEADER_WAIT: Duration = Duration::from_secs(5);
/// How long making a new manager a voter may take (it catches up first).
const ADD_VOTER_WAIT: Duration = Duration::from_secs(20);
/// A forwarded request is forwarded once more at most.
pub const MAX_HOPS: u32 = 2;

/// This node's membership, if any; and, on a manager, the control-plane API
/// it serves.
pub struct Membership {
    node: LocalNode,
    cluster: Mutex<Option<Cluster>>,
    /// Held while joining, leaving or changing role, so those never overlap.
    transition: Mutex<()>,
    runtime: tokio::runtime::Handle,
    api: Mutex<Option<Background>>,
    /// The certificate the running API serves.
    served_certificate: Mutex<String>,
    agent: Mutex<Option<Background>>,
    liveness: Mutex<Liveness>,
}

/// On the leader: when each node was last heard from.
#[derive(Default)]
struct Liveness {
    seen: HashMap<String, Instant>,
    /// When this manager became leader: nodes count as heard from then, so
    /// a new leader does not call every node Down before they report to it.
    leader_since: Option<Instant>,
}

/// A task and the switch that stops it.
type Background = (watch::Sender<bool>, tokio::task::JoinHandle<()>);

/// A node missing this many heartbeats in a row is Down.
const MISSED_BEATS: u32 = 3;

impl Membership {
    /// Picks up the cluster this node was in before a restart; a manager
    /// starts Raft over its store again.
    pub async fn load(node: LocalNode) -> Result<Arc<Self>, ClusterError> {
        let mut cluster = Cluster::load(&node.data_dir, &node.node_id)?;
        if let Some(cluster) = cluster.as_mut().filter(|c| c.role == Role::Manager) {
            cluster.raft = Some(
                RaftNode::start(
                    &cluster.raft_dir(),
                    &cluster.node_id,
                    cluster.credentials.clone(),
                )
                .await?,
            );
        }
        let membership = Arc::new(Self {
            node,
            cluster: Mutex::new(None),
            transition: Mutex::new(()),
            runtime: tokio::runtime::Handle::current(),
            api: Mutex::new(None),
            served_certificate: Mutex::new(String::new()),
            agent: Mutex::new(None),
            liveness: Mutex::new(Liveness::default()),
        });
        if let Some(raft) = cluster.as_ref().and_then(|c| c.raft.clone()) {
            membership.watch_leadership(&raft);
        }
        *membership.lock() = cluster;
        membership.sync_api();
        let ticking = Arc::downgrade(&membership);
        membership.runtime.spawn(async move {
            // Certificates and roles are checked once a second; the task
            // ends with the membership.
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let Some(membership) = ticking.upgrade() else {
                    return;
                };
                let _ = tokio::task::spawn_blocking(move || {
                    membership.renew_own_if_due();
                    membership.sync_role();
                    membership.sync_api();
                })
                .await;
            }
        });
        Ok(membership)
    }

    fn lock(&self) -> MutexGuard<'_, Option<Cluster>> {
        self.cluster.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn liveness(&self) -> MutexGuard<'_, Liveness> {
        self.liveness.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This node's Raft, on a manager.
    pub fn raft(&self) -> Option<RaftNode> {
        self.lock().as_ref().and_then(|c| c.raft.clone())
    }

    fn require_raft(&self) -> Result<RaftNode, ClusterError> {
        let slot = self.lock();
        let cluster = slot.as_ref().ok_or(ClusterError::NotInSwarm)?;
        cluster.require_manager().cloned()
    }

    /// Notes when this manager becomes leader.
    fn watch_leadership(self: &Arc<Self>, raft: &RaftNode) {
        let mut metrics = raft.raft.metrics();
        let id = raft.id;
        let membership = Arc::downgrade(self);
        self.runtime.spawn(async move {
            let mut leading = false;
            loop {
                let now_leading = metrics.borrow().current_leader == Some(id);
                if now_leading != leading {
                    let Some(membership) = membership.upgrade() else {
                        return;
                    };
                    let mut liveness = membership.liveness();
                    liveness.leader_since = now_leading.then(Instant::now);
                    if !now_leading {
                        liveness.seen.clear();
                    }
                    tracing::info!(leader = now_leading, "Raft leadership changed");
                    leading = now_leading;
                }
                if metrics.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    /// Serves the control-plane API while this node is a manager, and runs
    /// the agent while it is in a swarm; each only then.
    pub fn sync_api(self: &Arc<Self>) {
        self.sync_agent();
        let serving = {
            let cluster = self.lock();
            cluster.as_ref().filter(|c| c.raft.is_some()).map(|c| {
                (
                    ServerCredentials {
                        cert_pem: c.certificate.cert_pem.clone(),
                        key_pem: c.certificate.key_pem.clone(),
                        ca_pem: c.ca_pem().to_owned(),
                    },
                    c.local.addr.port(),
                )
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
                *self
                    .served_certificate
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = credentials.cert_pem.clone();
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
            cluster.as_ref().map(|c| {
                (
                    c.local.managers.clone(),
                    Duration::from_millis(c.local.heartbeat_millis.max(1)),
                )
            })
        };
        let mut agent = self.agent.lock().unwrap_or_else(|p| p.into_inner());
        match (reporting, agent.is_some()) {
            (Some((managers, period)), false) => {
                let (stop_tx, stop_rx) = watch::channel(false);
                let task = self.runtime.spawn(super::agent::run(
                    Arc::downgrade(self),
                    managers,
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

    /// Stops the API, the agent and Raft (daemon shutdown).
    pub async fn stop(&self) {
        let api = self.api.lock().unwrap_or_else(|p| p.into_inner()).take();
        let agent = self.agent.lock().unwrap_or_else(|p| p.into_inner()).take();
        for (stop, task) in api.into_iter().chain(agent) {
            let _ = stop.send(true);
            let _ = task.await;
        }
        if let Some(raft) = self.raft() {
            let _ = raft.raft.shutdown().await;
        }
    }

    /// The credentials this node dials other nodes with.
    pub fn credentials(&self) -> Option<raft::Credentials> {
        self.lock().as_ref().map(|c| {
            c.credentials
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        })
    }

    /// Whether `subject` (a TLS-verified client certificate) is a manager of
    /// this swarm: only managers may call Raft and forward requests.
    pub fn authorize_manager(&self, subject: &CertificateSubject) -> Result<(), ClusterError> {
        self.authorize_member(subject)?;
        if subject.role != Role::Manager {
            return Err(ClusterError::Refused(format!(
                "permission denied: this API is for managers, and node {} presents a {} certificate",
                subject.node_id, subject.role
            )));
        }
        Ok(())
    }

    fn authorize_member(&self, subject: &CertificateSubject) -> Result<(), ClusterError> {
        let slot = self.lock();
        let cluster = slot.as_ref().ok_or(ClusterError::NotInSwarm)?;
        if subject.cluster_id != cluster.local.cluster_id {
            return Err(ClusterError::Refused(format!(
                "node {} belongs to another swarm",
                subject.node_id
            )));
        }
        Ok(())
    }

    // ---- Leader routing -------------------------------------------------

    /// Runs `work` on the leader: here if this manager leads, else forwarded
    /// to it. Waits out an election (up to LEADER_WAIT).
    pub fn lead(&self, work: Forwarded, hops: u32) -> Result<Response, ClusterError> {
        let deadline = Instant::now() + LEADER_WAIT;
        let mut last_error = None;
        loop {
            let raft = self.require_raft()?;
            let leader = raft.metrics().current_leader;
            if leader == Some(raft.id) {
                match self.run_here(&work) {
                    Err(ClusterError::NotLeader) => {}
                    other => return other,
                }
            } else if let (Some(leader), true) = (raft.leader(), hops < MAX_HOPS) {
                match self.forward(&leader.addr, &work, hops + 1) {
                    Ok(response) => return Ok(response),
                    Err(ForwardError::Final(message)) => {
                        return Err(ClusterError::Refused(message));
                    }
                    Err(ForwardError::Retry(message)) => last_error = Some(message),
                }
            }
            if Instant::now() >= deadline {
                let why = last_error.map_or_else(String::new, |e| format!(" (last error: {e})"));
                return Err(ClusterError::Unavailable(format!(
                    "no leader could be reached within {LEADER_WAIT:?}: a majority of managers is unreachable, or an election has not ended{why}"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `work` to the manager at `addr`.
    fn forward(&self, addr: &str, work: &Forwarded, hops: u32) -> Result<Response, ForwardError> {
        let credentials = self
            .credentials()
            .ok_or_else(|| ForwardError::Final("this node left the swarm".into()))?;
        let json = serde_json::to_vec(work).map_err(|e| ForwardError::Final(e.to_string()))?;
        let channel = raft::network::channel(addr, &credentials).map_err(ForwardError::Final)?;
        let answer = self.runtime.block_on(async {
            let mut client = proto::manager_client::ManagerClient::new(channel);
            tokio::time::timeout(
                LEADER_WAIT + ADD_VOTER_WAIT,
                client.forward(proto::ForwardRequest {
                    request_json: json,
                    hops,
                }),
            )
            .await
        });
        match answer {
            Err(_) => Err(ForwardError::Retry(format!("{addr} did not answer"))),
            Ok(Err(status)) => match status.code() {
                tonic::Code::Unavailable
                | tonic::Code::FailedPrecondition
                | tonic::Code::Unknown
                | tonic::Code::Cancelled => {
                    Err(ForwardError::Retry(format!("{addr}: {}", status.message())))
                }
                _ => Err(ForwardError::Final(status.message().to_owned())),
            },
            Ok(Ok(answer)) => serde_json::from_slice(&answer.into_inner().response_json)
                .map_err(|e| ForwardError::Final(format!("malformed answer from {addr}: {e}"))),
        }
    }

    /// Runs `work` on this manager, which must be the leader.
    fn run_here(&self, work: &Forwarded) -> Result<Response, ClusterError> {
        match work {
            Forwarded::Request { request, origin } => self.serve_request(request, origin),
            Forwarded::Command(command) => {
                self.commit_here(command.clone()).map(|()| Response::Done)
            }
            Forwarded::AddVoter { node_id } => {
                self.add_voter_here(node_id).map(|()| Response::Done)
            }
        }
    }

    fn serve_request(&self, request: &Request, origin: &str) -> Result<Response, ClusterError> {
        match request {
            Request::NodeList => self.nodes(origin),
            Request::NodeInspect { node } => self.inspect(node),
            Request::NodeUpdate(update) => self.update(update),
            Request::NodeRemove { node, force } => self.remove(node, *force),
            Request::NodePromote { nodes } => self.change_roles(nodes, Role::Manager),
            Request::NodeDemote { nodes } => self.change_roles(nodes, Role::Worker),
            Request::JoinToken { role, rotate } => self.join_token_here(*role, *rotate),
            other => Err(ClusterError::Refused(format!(
                "{other:?} is not a request the leader runs"
            ))),
        }
    }

    /// Commits `command` through this manager's Raft, which must lead.
    fn commit_here(&self, command: Command) -> Result<(), ClusterError> {
        let raft = self.require_raft()?;
        if !raft.is_leader() {
            return Err(ClusterError::NotLeader);
        }
        let written = self.runtime.block_on(tokio::time::timeout(
            LEADER_WAIT,
            raft.raft.client_write(command),
        ));
        match written {
            Err(_) => Err(ClusterError::Unavailable(format!(
                "the write was not committed within {LEADER_WAIT:?}: a majority of managers is unreachable"
            ))),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                Err(ClusterError::NotLeader)
            }
            Ok(Err(err)) => Err(ClusterError::Unavailable(err.to_string())),
            Ok(Ok(written)) => match written.data {
                CommandResult::Done => Ok(()),
                CommandResult::Refused(message) => Err(ClusterError::Refused(message)),
            },
        }
    }

    /// Commits `command` on the leader, wherever it is.
    fn write(&self, command: Command) -> Result<(), ClusterError> {
        match self.lead(Forwarded::Command(command), 0)? {
            Response::Error(message) => Err(ClusterError::Refused(message)),
            _ => Ok(()),
        }
    }

    /// The leader makes manager `node_id` a Raft voter: a learner first,
    /// until it has caught up, then a voter.
    fn add_voter_here(&self, node_id: &str) -> Result<(), ClusterError> {
        let raft = self.require_raft()?;
        if !raft.is_leader() {
            return Err(ClusterError::NotLeader);
        }
        let node = self.read_store(|s| s.nodes.get(node_id).cloned())?;
        let node = node
            .filter(|n| n.role == Role::Manager)
            .ok_or_else(|| ClusterError::Refused(format!("node {node_id} is not a manager")))?;
        let id = raft::raft_id(node_id);
        let voters: BTreeSet<u64> = raft
            .metrics()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        if voters.contains(&id) {
            return Ok(());
        }
        let member = Member {
            node_id: node_id.to_owned(),
            addr: node.addr.to_string(),
        };
        let added = self
            .runtime
            .block_on(tokio::time::timeout(ADD_VOTER_WAIT, async {
                raft.raft.add_learner(id, member, true).await?;
                raft.raft
                    .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                    .await
            }));
        match added {
            Err(_) => Err(ClusterError::Unavailable(format!(
                "manager {node_id} did not catch up with the log within {ADD_VOTER_WAIT:?}"
            ))),
            Ok(Err(err)) => Err(ClusterError::Unavailable(err.to_string())),
            Ok(Ok(_)) => {
                tracing::info!(node = %node_id, "manager added to the Raft voters");
                Ok(())
            }
        }
    }

    fn read_store<T>(&self, read: impl FnOnce(&ClusterState) -> T) -> Result<T, ClusterError> {
        let slot = self.lock();
        slot.as_ref()
            .ok_or(ClusterError::NotInSwarm)?
            .with_store(read)
    }

    // ---- Requests from the control socket --------------------------------

    /// A request for the managers (node and token commands): run by the
    /// leader.
    pub fn manager_request(&self, request: Request) -> Result<Response, ClusterError> {
        {
            let slot = self.lock();
            slot.as_ref()
                .ok_or(ClusterError::NotInSwarm)?
                .require_manager()?;
        }
        self.lead(
            Forwarded::Request {
                request,
                origin: self.node.node_id.clone(),
            },
            0,
        )
    }

    pub fn info(&self) -> SwarmInfo {
        let cluster = self.lock();
        let Some(cluster) = cluster.as_ref() else {
            return SwarmInfo {
                local_node_state: "inactive".into(),
                ..SwarmInfo::default()
            };
        };
        let counts = cluster
            .with_store(|s| (s.managers().count(), s.nodes.len()))
            .unwrap_or_default();
        let leader = cluster.raft.as_ref().and_then(|r| r.leader());
        SwarmInfo {
            local_node_state: "active".into(),
            node_id: cluster.node_id.clone(),
            node_addr: cluster.local.addr.ip().to_string(),
            control_available: cluster.raft.is_some(),
            cluster_id: cluster.local.cluster_id.clone(),
            // A worker does not see the cluster's node list.
            managers: counts.0,
            nodes: counts.1,
            is_leader: leader
                .as_ref()
                .is_some_and(|l| l.node_id == cluster.node_id),
            leader_addr: leader.map(|l| l.addr).unwrap_or_default(),
            raft: cluster.raft.as_ref().map(|raft| {
                let metrics = raft.metrics();
                RaftInfo {
                    term: metrics.current_term,
                    last_applied: metrics.last_applied.map_or(0, |l| l.index),
                    last_log_index: metrics.last_log_index.unwrap_or(0),
                    snapshot_index: metrics.snapshot.map_or(0, |l| l.index),
                    purged_index: metrics.purged.map_or(0, |l| l.index),
                    voters: metrics.membership_config.membership().voter_ids().count(),
                }
            }),
        }
    }

    pub fn init(self: &Arc<Self>, request: SwarmInitRequest) -> Result<Response, ClusterError> {
        let _transition = self.transition.lock().unwrap_or_else(|p| p.into_inner());
        if self.lock().is_some() {
            return Err(ClusterError::AlreadyInSwarm);
        }
        let ip = request.advertise_addr.unwrap_or(self.node.advertise_addr);
        let port = request.listen_port.unwrap_or(DEFAULT_LISTEN_PORT);
        let advertise = SocketAddr::from((ip, port));
        let cert_expiry = request
            .cert_expiry_secs
            .map_or(DEFAULT_CERT_EXPIRY, Duration::from_secs);
        let heartbeat = request
            .heartbeat_millis
            .map_or(DEFAULT_HEARTBEAT, Duration::from_millis);
        let cluster_id = random_id();
        let ca = RootCa::generate(&cluster_id)?;
        let certificate = ca.issue(
            &cluster_id,
            &self.node.node_id,
            Role::Manager,
            &[advertise.ip()],
            cert_expiry,
        )?;
        let me = NodeRecord {
            id: self.node.node_id.clone(),
            hostname: self.node.hostname.clone(),
            addr: advertise,
            role: Role::Manager,
            availability: Availability::Active,
            labels: BTreeMap::new(),
        };
        let state = ClusterState {
            cluster_id: cluster_id.clone(),
            created_at: now_secs(),
            worker_token: JoinToken::generate(ca.digest()).to_string(),
            manager_token: JoinToken::generate(ca.digest()).to_string(),
            cert_expiry_secs: cert_expiry.as_secs(),
            heartbeat_millis: heartbeat.as_millis() as u64,
            ca_cert_pem: ca.cert_pem().to_owned(),
            ca_key_pem: ca.key_pem(),
            nodes: BTreeMap::from([(me.id.clone(), me)]),
        };
        let local = LocalState {
            cluster_id: cluster_id.clone(),
            addr: advertise,
            managers: vec![advertise],
            heartbeat_millis: state.heartbeat_millis,
        };
        let mut cluster = Cluster::create(
            &self.node.data_dir,
            &self.node.node_id,
            local,
            ca.cert_pem().to_owned(),
            certificate,
        )?;
        let started = self.runtime.block_on(async {
            let raft = RaftNode::start(
                &cluster.raft_dir(),
                &self.node.node_id,
                cluster.credentials.clone(),
            )
            .await?;
            raft.bootstrap(Member {
                node_id: self.node.node_id.clone(),
                addr: advertise.to_string(),
            })
            .await?;
            Ok::<_, ClusterError>(raft)
        });
        let raft = match started {
            Ok(raft) => raft,
            Err(err) => {
                let _ = cluster.remove();
                return Err(err);
            }
        };
        cluster.raft = Some(raft.clone());
        *self.lock() = Some(cluster);
        self.watch_leadership(&raft);
        let worker_token = state.worker_token.clone();
        if let Err(err) = self.write(Command::Create(Box::new(state))) {
            self.abandon();
            return Err(err);
        }
        self.sync_api();
        tracing::info!(
            %cluster_id,
            node_id = %self.node.node_id,
            addr = %advertise,
            "swarm initialized; this node is its manager"
        );
        Ok(Response::SwarmInitialized {
            node_id: self.node.node_id.clone(),
            worker_token,
            manager_addr: advertise.to_string(),
        })
    }

    /// Undoes a membership that could not be completed.
    fn abandon(self: &Arc<Self>) {
        let Some(mut cluster) = self.lock().take() else {
            return;
        };
        if let Some(raft) = cluster.raft.take() {
            let _ = self.runtime.block_on(raft.raft.shutdown());
        }
        self.sync_api();
        let _ = cluster.remove();
    }

    fn join_token_here(&self, role: Role, rotate: bool) -> Result<Response, ClusterError> {
        if rotate {
            let digest = self.read_store(|s| RootCa::from_pem(&s.ca_cert_pem, &s.ca_key_pem))??;
            let token = JoinToken::generate(digest.digest()).to_string();
            self.commit_here(Command::SetToken { role, token })?;
            tracing::info!(%role, "join token rotated");
        }
        let token = self.read_store(|s| s.token(role).to_owned())?;
        let addr = self
            .lock()
            .as_ref()
            .map(|c| c.local.addr.to_string())
            .unwrap_or_default();
        Ok(Response::JoinToken {
            role,
            token,
            manager_addr: addr,
        })
    }

    /// Whether the leader heard from node `id` within three heartbeats (or,
    /// for one it has not heard from yet, since it became leader).
    fn alive(&self, id: &str, period: Duration) -> bool {
        let liveness = self.liveness();
        let last = liveness.seen.get(id).copied().max(liveness.leader_since);
        last.is_some_and(|seen| seen.elapsed() <= period * MISSED_BEATS)
    }

    fn nodes(&self, origin: &str) -> Result<Response, ClusterError> {
        let raft = self.require_raft()?;
        let leader = raft.metrics().current_leader;
        let (nodes, period) = self.read_store(|s| {
            (
                s.nodes.values().cloned().collect::<Vec<_>>(),
                Duration::from_millis(s.heartbeat_millis.max(1)),
            )
        })?;
        let rows = nodes
            .into_iter()
            .map(|node| {
                let here = node.id == self.node.node_id;
                let ready = here || self.alive(&node.id, period);
                NodeRow {
                    hostname: node.hostname.clone(),
                    status: if ready { "Ready" } else { "Down" }.into(),
                    availability: availability_word(node.availability).into(),
                    manager_status: match node.role {
                        Role::Manager if leader == Some(raft::raft_id(&node.id)) => "Leader".into(),
                        Role::Manager if ready => "Reachable".into(),
                        Role::Manager => "Unreachable".into(),
                        Role::Worker => String::new(),
                    },
                    is_self: node.id == origin,
                    id: node.id,
                }
            })
            .collect();
        Ok(Response::Nodes(rows))
    }

    fn inspect(&self, reference: &str) -> Result<Response, ClusterError> {
        let raft = self.require_raft()?;
        let leader = raft.metrics().current_leader;
        let (node, period) = self.read_store(|s| {
            s.resolve(reference).map(|id| {
                (
                    s.nodes[&id].clone(),
                    Duration::from_millis(s.heartbeat_millis.max(1)),
                )
            })
        })??;
        let ready = node.id == self.node.node_id || self.alive(&node.id, period);
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
                "Leader": leader == Some(raft::raft_id(&node.id)),
                "Reachability": if ready { "reachable" } else { "unreachable" },
                "Addr": node.addr.to_string(),
            });
        }
        Ok(Response::NodeInspect(serde_json::Value::Array(vec![value])))
    }

    fn update(&self, request: &NodeUpdateRequest) -> Result<Response, ClusterError> {
        let id = self.read_store(|s| s.resolve(&request.node))??;
        if let Some(role) = request.role {
            self.change_roles(std::slice::from_ref(&id), role)?;
        }
        let change = NodeChange {
            availability: request.availability,
            label_add: request.label_add.clone(),
            label_rm: request.label_rm.clone(),
            role: None,
        };
        if change != NodeChange::default() {
            self.commit_here(Command::UpdateNode {
                id: id.clone(),
                change,
            })?;
        }
        tracing::info!(node = %id, "node updated");
        Ok(Response::Done)
    }

    /// `node promote` / `node demote`: the role in the store first; the
    /// node's agent sees it in its next heartbeat and renews its certificate.
    /// A demoted manager leaves the Raft voters here.
    fn change_roles(&self, references: &[String], role: Role) -> Result<Response, ClusterError> {
        // Held so that this node's agent, seeing its own demotion, does not
        // stop Raft before the leader (this node) has removed itself.
        let _transition = self.transition.lock().unwrap_or_else(|p| p.into_inner());
        let mut notes = Vec::new();
        for reference in references {
            let (id, current, managers) = self.read_store(|s| {
                s.resolve(reference)
                    .map(|id| (id.clone(), s.nodes[&id].role, s.managers().count()))
            })??;
            if current == role {
                notes.push(format!("Node {reference} is already a {role}."));
                continue;
            }
            if role == Role::Worker && managers <= 1 {
                return Err(ClusterError::Refused(format!(
                    "demote {reference}: attempting to demote the last manager of the swarm"
                )));
            }
            self.commit_here(Command::UpdateNode {
                id: id.clone(),
                change: NodeChange {
                    role: Some(role),
                    ..NodeChange::default()
                },
            })?;
            if role == Role::Worker {
                self.remove_voter_here(&id)?;
            }
            tracing::info!(node = %id, %role, "node role changed");
            notes.push(match role {
                Role::Manager => format!("Node {reference} promoted to a manager in the swarm."),
                Role::Worker => format!("Manager {reference} demoted in the swarm."),
            });
        }
        Ok(Response::Notes(notes))
    }

    fn remove_voter_here(&self, node_id: &str) -> Result<(), ClusterError> {
        let raft = self.require_raft()?;
        let id = raft::raft_id(node_id);
        let membership = raft.metrics().membership_config.membership().clone();
        if !membership.voter_ids().any(|v| v == id) && membership.get_node(&id).is_none() {
            return Ok(());
        }
        // `retain: false`: not kept as a learner either.
        let removed = self.runtime.block_on(tokio::time::timeout(
            LEADER_WAIT,
            raft.raft
                .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false),
        ));
        match removed {
            Err(_) => Err(ClusterError::Unavailable(format!(
                "removing {node_id} from the Raft voters was not committed within {LEADER_WAIT:?}"
            ))),
            Ok(Err(err)) => Err(ClusterError::Unavailable(err.to_string())),
            Ok(Ok(_)) => Ok(()),
        }
    }

    fn remove(&self, reference: &str, force: bool) -> Result<Response, ClusterError> {
        let (id, role, period) = self.read_store(|s| {
            s.resolve(reference).map(|id| {
                (
                    id.clone(),
                    s.nodes[&id].role,
                    Duration::from_millis(s.heartbeat_millis.max(1)),
                )
            })
        })??;
        if role == Role::Manager {
            return Err(ClusterError::Refused(format!(
                "rm {reference}: node {id} is a cluster manager and is a member of the raft cluster. It must be demoted to worker before removal"
            )));
        }
        if self.alive(&id, period) && !force {
            return Err(ClusterError::Refused(format!(
                "rm {reference}: node {id} is not down and can't be removed; stop it first (`swarm leave` there) or use --force"
            )));
        }
        self.commit_here(Command::RemoveNode { id: id.clone() })?;
        self.liveness().seen.remove(&id);
        tracing::info!(node = %id, "node removed");
        Ok(Response::Done)
    }

    // ---- The managers' API ---------------------------------------------

    /// A manager hearing from a node. The leader records it alive; any
    /// manager says how often to call again, who leads, where the managers
    /// are, and the role the cluster gives the caller.
    pub fn heartbeat(
        &self,
        subject: &CertificateSubject,
    ) -> Result<proto::HeartbeatResponse, ClusterError> {
        self.authorize_member(subject)?;
        let raft = self.require_raft()?;
        let (record, managers, period) = self.read_store(|s| {
            (
                s.nodes.get(&subject.node_id).cloned(),
                s.managers().map(|m| m.addr.to_string()).collect::<Vec<_>>(),
                s.heartbeat_millis,
            )
        })?;
        let record = record.ok_or_else(|| {
            ClusterError::Refused(format!(
                "node {} is not a member of this swarm (it was removed)",
                subject.node_id
            ))
        })?;
        let leading = raft.is_leader();
        if leading {
            self.liveness()
                .seen
                .insert(subject.node_id.clone(), Instant::now());
        }
        Ok(proto::HeartbeatResponse {
            period_millis: period.max(1),
            leader: if leading {
                String::new()
            } else {
                raft.leader().map(|l| l.addr).unwrap_or_default()
            },
            managers,
            role: record.role.to_string(),
        })
    }

    /// A manager's answer to a joining node: a certificate for the role its
    /// token admits; the node is recorded through the leader.
    pub fn admit(&self, request: &proto::JoinRequest) -> Result<proto::JoinResponse, ClusterError> {
        let addr: IpAddr = request.advertise_addr.parse().map_err(|_| {
            ClusterError::Join(format!(
                "invalid advertise address {:?}",
                request.advertise_addr
            ))
        })?;
        let token: JoinToken = request
            .token
            .parse()
            .map_err(|e: super::pki::TokenError| ClusterError::Join(e.to_string()))?;
        let listen_port = match request.listen_port {
            0 => DEFAULT_LISTEN_PORT,
            port => u16::try_from(port)
                .map_err(|_| ClusterError::Join(format!("invalid listen port {port}")))?,
        };
        let node_id = &request.node_id;
        let valid_id = !node_id.is_empty()
            && node_id.len() <= 64
            && node_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !valid_id {
            return Err(ClusterError::Join(format!("invalid node ID {node_id:?}")));
        }
        let (role, cert_pem, cluster_id, ca_pem, managers) = self.read_store(|s| {
            let role = s.admits(&token).ok_or_else(|| {
                ClusterError::Join(
                    "invalid join token: it was rotated, or it belongs to another swarm; get the current one with `swarm join-token worker` (or manager) on a manager".into(),
                )
            })?;
            if s.nodes.get(node_id).is_some_and(|n| n.role == Role::Manager) {
                return Err(ClusterError::Join(format!(
                    "node {node_id} is a manager of this swarm already"
                )));
            }
            let ca = RootCa::from_pem(&s.ca_cert_pem, &s.ca_key_pem)?;
            let cert = ca.sign_request(
                &request.csr_pem,
                &s.cluster_id,
                node_id,
                role,
                &[addr],
                Duration::from_secs(s.cert_expiry_secs),
            )?;
            let managers: Vec<String> = s.managers().map(|m| m.addr.to_string()).collect();
            Ok::<_, ClusterError>((role, cert, s.cluster_id.clone(), s.ca_cert_pem.clone(), managers))
        })??;
        self.write(Command::AddNode(NodeRecord {
            id: node_id.clone(),
            hostname: request.hostname.clone(),
            addr: SocketAddr::new(addr, listen_port),
            role,
            availability: Availability::Active,
            labels: BTreeMap::new(),
        }))?;
        Ok(proto::JoinResponse {
            cluster_id,
            role: role.to_string(),
            cert_pem,
            ca_pem,
            managers,
        })
    }

    /// A manager renewing a member's certificate: same node, in the role the
    /// cluster now gives it, for the key in `csr_pem`.
    pub fn renew(
        &self,
        subject: &CertificateSubject,
        csr_pem: &str,
    ) -> Result<String, ClusterError> {
        self.authorize_member(subject)?;
        self.read_store(|s| {
            let node = s
                .nodes
                .get(&subject.node_id)
                .ok_or_else(|| ClusterError::NoSuchNode(subject.node_id.clone()))?;
            let ca = RootCa::from_pem(&s.ca_cert_pem, &s.ca_key_pem)?;
            Ok(ca.sign_request(
                csr_pem,
                &s.cluster_id,
                &node.id,
                node.role,
                &[node.addr.ip()],
                Duration::from_secs(s.cert_expiry_secs),
            )?)
        })?
    }

    /// `swarm join`: becomes a member through the manager at `manager`. A
    /// new manager starts Raft and is made a voter before this returns.
    pub fn join(self: &Arc<Self>, request: SwarmJoinRequest) -> Result<Response, ClusterError> {
        let _transition = self.transition.lock().unwrap_or_else(|p| p.into_inner());
        if self.lock().is_some() {
            return Err(ClusterError::AlreadyInSwarm);
        }
        let manager = request.manager;
        let addr = SocketAddr::from((
            request.advertise_addr.unwrap_or(self.node.advertise_addr),
            request.listen_port.unwrap_or(DEFAULT_LISTEN_PORT),
        ));
        let joiner = Joiner {
            node_id: &self.node.node_id,
            hostname: &self.node.hostname,
            advertise_addr: addr.ip(),
            listen_port: addr.port(),
        };
        let joined = self
            .runtime
            .block_on(join::join(&request.token, manager, joiner))?;
        let local = LocalState {
            cluster_id: joined.cluster_id,
            addr,
            managers: if joined.managers.is_empty() {
                vec![manager]
            } else {
                joined.managers
            },
            heartbeat_millis: DEFAULT_HEARTBEAT.as_millis() as u64,
        };
        let cluster = Cluster::create(
            &self.node.data_dir,
            &self.node.node_id,
            local,
            joined.ca_pem,
            joined.certificate,
        )?;
        let role = cluster.role;
        *self.lock() = Some(cluster);
        if role == Role::Manager
            && let Err(err) = self.become_manager(&[manager])
        {
            self.abandon();
            return Err(err);
        }
        self.sync_api();
        tracing::info!(%role, %manager, "joined a swarm");
        Ok(Response::Joined { role })
    }

    /// Starts Raft and the API on a node whose certificate now says manager,
    /// and asks the managers at `through` to make it a voter.
    fn become_manager(self: &Arc<Self>, through: &[SocketAddr]) -> Result<(), ClusterError> {
        let (dir, credentials) = {
            let slot = self.lock();
            let cluster = slot.as_ref().ok_or(ClusterError::NotInSwarm)?;
            if cluster.raft.is_some() {
                return Ok(());
            }
            (cluster.raft_dir(), cluster.credentials.clone())
        };
        let raft = self
            .runtime
            .block_on(RaftNode::start(&dir, &self.node.node_id, credentials))?;
        if let Some(cluster) = self.lock().as_mut() {
            cluster.raft = Some(raft.clone());
        }
        self.watch_leadership(&raft);
        // The leader must reach this node's API to replicate to it.
        self.sync_api();
        let work = Forwarded::AddVoter {
            node_id: self.node.node_id.clone(),
        };
        let mut last_error = String::from("no manager to ask");
        let deadline = Instant::now() + ADD_VOTER_WAIT;
        while Instant::now() < deadline {
            for addr in through {
                match self.forward(&addr.to_string(), &work, 1) {
                    Ok(Response::Error(message)) => last_error = message,
                    Ok(_) => {
                        tracing::info!("this node is a Raft voter");
                        return Ok(());
                    }
                    Err(ForwardError::Final(message)) => {
                        return Err(ClusterError::Join(message));
                    }
                    Err(ForwardError::Retry(message)) => last_error = message,
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(ClusterError::Unavailable(format!(
            "could not become a Raft voter: {last_error}"
        )))
    }

    /// Stops Raft and the API on a node whose certificate now says worker.
    fn become_worker(self: &Arc<Self>) -> Result<(), ClusterError> {
        let raft = self.lock().as_mut().and_then(|c| c.raft.take());
        if let Some(raft) = raft {
            let _ = self.runtime.block_on(raft.raft.shutdown());
            tracing::info!("demoted: Raft stopped and its store removed");
        }
        self.sync_api();
        if let Some(cluster) = self.lock().as_ref() {
            cluster.remove_raft_store()?;
        }
        Ok(())
    }

    /// Brings Raft in line with this node's certificate: started when it
    /// says manager, stopped when it says worker.
    pub fn sync_role(self: &Arc<Self>) {
        let Ok(_transition) = self.transition.try_lock() else {
            return;
        };
        let wanted = {
            let slot = self.lock();
            match slot.as_ref() {
                Some(c) if c.role == Role::Manager && c.raft.is_none() => {
                    Some((Role::Manager, c.local.managers.clone()))
                }
                Some(c) if c.role == Role::Worker && c.raft.is_some() => {
                    Some((Role::Worker, Vec::new()))
                }
                _ => None,
            }
        };
        let outcome = match wanted {
            Some((Role::Manager, managers)) => self.become_manager(&managers),
            Some((Role::Worker, _)) => self.become_worker(),
            None => Ok(()),
        };
        if let Err(err) = outcome {
            tracing::warn!(error = %err, "changing this node's role failed; retrying");
            if let Some(raft) = self.lock().as_mut().and_then(|c| c.raft.take()) {
                let _ = self.runtime.block_on(raft.raft.shutdown());
            }
        }
    }

    /// This node's current certificate.
    pub fn certificate(&self) -> Option<NodeCertificate> {
        self.lock().as_ref().map(|c| c.certificate.clone())
    }

    /// Keeps a renewed certificate (from a manager); its role may differ.
    pub fn store_certificate(&self, certificate: NodeCertificate) -> Result<(), ClusterError> {
        let mut slot = self.lock();
        let cluster = slot.as_mut().ok_or(ClusterError::NotInSwarm)?;
        cluster.replace_certificate(certificate)
    }

    /// Keeps what the agent heard of the managers.
    pub fn note_managers(&self, managers: Vec<SocketAddr>, period_millis: u64) {
        let mut slot = self.lock();
        let Some(cluster) = slot.as_mut() else {
            return;
        };
        if managers.is_empty()
            || (cluster.local.managers == managers
                && cluster.local.heartbeat_millis == period_millis)
        {
            return;
        }
        cluster.local.managers = managers;
        cluster.local.heartbeat_millis = period_millis;
        if let Err(err) = cluster.save_local() {
            tracing::warn!(error = %err, "saving the managers' addresses failed");
        }
    }

    /// Signs this manager's new certificate once half the old one's life
    /// has passed; says whether it did.
    fn renew_own_certificate(&self) -> bool {
        let mut slot = self.lock();
        let Some(cluster) = slot.as_mut().filter(|c| c.raft.is_some()) else {
            return false;
        };
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let due = CertificateSubject::from_pem(&cluster.certificate.cert_pem)
            .map_or(true, |subject| subject.renewal_due(now));
        if !due {
            return false;
        }
        let node_id = cluster.node_id.clone();
        let issued = cluster.with_store(|s| {
            let me = s
                .nodes
                .get(&node_id)
                .ok_or_else(|| ClusterError::NoSuchNode(node_id.clone()))?;
            let ca = RootCa::from_pem(&s.ca_cert_pem, &s.ca_key_pem)?;
            Ok::<_, ClusterError>(ca.issue(
                &s.cluster_id,
                &node_id,
                me.role,
                &[me.addr.ip()],
                Duration::from_secs(s.cert_expiry_secs),
            )?)
        });
        match issued
            .and_then(|issued| issued)
            .and_then(|cert| cluster.replace_certificate(cert))
        {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(error = %err, "renewing this manager's certificate failed");
                false
            }
        }
    }

    /// A manager signs its own new certificate when half the old one's life
    /// has passed, then serves the API with it.
    fn renew_own_if_due(self: &Arc<Self>) {
        let renewed = self.renew_own_certificate();
        if renewed {
            tracing::info!("manager certificate renewed");
        }
        // Renewed here, or by the agent through another manager: serve it.
        let current = self.certificate().map(|c| c.cert_pem);
        let served = self
            .served_certificate
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let serving = self.api.lock().unwrap_or_else(|p| p.into_inner()).is_some();
        if serving && current.is_some_and(|current| current != served) {
            tracing::info!("serving the API with the renewed certificate");
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

    pub fn leave(self: &Arc<Self>, force: bool) -> Result<Response, ClusterError> {
        let _transition = self.transition.lock().unwrap_or_else(|p| p.into_inner());
        {
            let slot = self.lock();
            let cluster = slot.as_ref().ok_or(ClusterError::NotInSwarm)?;
            if cluster.raft.is_some() && !force {
                let managers = cluster.with_store(|s| s.managers().count()).unwrap_or(1);
                return Err(if managers <= 1 {
                    ClusterError::LastManager
                } else {
                    ClusterError::ManagerLeaving
                });
            }
        }
        let Some(mut cluster) = self.lock().take() else {
            return Err(ClusterError::NotInSwarm);
        };
        if let Some(raft) = cluster.raft.take() {
            let _ = self.runtime.block_on(raft.raft.shutdown());
        }
        self.sync_api();
        cluster.remove()?;
        *self.liveness() = Liveness::default();
        tracing::info!("left the swarm");
        Ok(Response::Done)
    }
}

/// Why forwarding failed.
enum ForwardError {
    /// Worth trying again (no answer, not the leader any more).
    Retry(String),
    Final(String),
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// 25 lowercase alphanumerics, like Docker's object IDs.
fn random_id() -> String {
    use rand::Rng as _;
    const CHARS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::thread_rng();
    (0..25)
        .map(|_| CHARS[rng.gen_range(0..CHARS.len())] as char)
        .collect()
}
