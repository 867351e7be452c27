//! Becoming a member (`init`, `join`), changing role (promotion and
//! demotion as this node's certificate says), and leaving.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use super::{
    Membership,
    local::{Cluster, LocalState},
};
use crate::{
    api::{
        Availability, ClusterError, NodeResources, Role,
        control::{Response, SwarmInitRequest, SwarmJoinRequest},
    },
    ca::{
        join::{self, Joiner},
        pki::{DEFAULT_CERT_EXPIRY, JoinToken, RootCa},
        unlock_key::UnlockKey,
    },
    clock::now_secs,
    identity::{local_ipv4, new_id},
    lock::Locked as _,
    manager::{
        allocator::{POOL, POOL_PREFIX, check_address_pools, first_free_subnet, ingress_network},
        leader::{ADD_VOTER_WAIT, ForwardError, Forwarded},
        raft::{Member, RaftNode, check_snapshot_settings},
        store::{
            ClusterState, Command, DEFAULT_GOSSIP_KEY_ROTATION, DEFAULT_HEARTBEAT,
            MIN_GOSSIP_KEY_ROTATION, NodeRecord,
        },
    },
};

impl Membership {
    pub fn init(self: &Arc<Self>, request: SwarmInitRequest) -> Result<Response, ClusterError> {
        let _transition = self.transition.locked();
        if self.is_locked() {
            return Err(ClusterError::SwarmLocked);
        }
        if request.force_new_cluster {
            return self.force_new_cluster(request);
        }
        if self.lock().is_some() {
            return Err(ClusterError::AlreadyInSwarm);
        }
        let listen_ip = listen_ip(request.listen_host.as_deref())?;
        let data_path_addr = data_path_addr(request.data_path_addr.as_deref())?;
        let subnet_size = request.subnet_size.unwrap_or(POOL_PREFIX);
        check_address_pools(&request.address_pools, subnet_size).map_err(ClusterError::Refused)?;
        check_snapshot_settings(request.snapshot_interval).map_err(ClusterError::Refused)?;
        let pools = if request.address_pools.is_empty() {
            vec![POOL]
        } else {
            request.address_pools.clone()
        };
        let ingress_subnet = first_free_subnet(&pools, subnet_size, std::iter::empty())
            .ok_or_else(|| ClusterError::Refused("--default-addr-pool holds no subnet".into()))?;
        let ip = request.advertise_addr.unwrap_or(self.node.advertise_addr);
        let port = request.listen_port.unwrap_or(self.node.listen_addr.port());
        let advertise = SocketAddr::from((ip, port));
        let cert_expiry = request
            .cert_expiry_secs
            .map_or(DEFAULT_CERT_EXPIRY, Duration::from_secs);
        let heartbeat = request
            .heartbeat_millis
            .map_or(DEFAULT_HEARTBEAT, Duration::from_millis);
        let gossip_key_rotation = request
            .gossip_key_rotation_secs
            .map_or(DEFAULT_GOSSIP_KEY_ROTATION, Duration::from_secs);
        if gossip_key_rotation < MIN_GOSSIP_KEY_ROTATION {
            return Err(ClusterError::Refused(format!(
                "--gossip-key-rotation {}s is too short; use at least {}s",
                gossip_key_rotation.as_secs(),
                MIN_GOSSIP_KEY_ROTATION.as_secs()
            )));
        }
        let cluster_id = new_id();
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
            availability: request.availability.unwrap_or(Availability::Active),
            labels: BTreeMap::new(),
            engine_labels: self.node.engine_labels.clone(),
            resources: NodeResources::of_this_host(),
            platform: crate::api::Platform::of_this_host(),
            data_path_addr,
            version: 1,
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
            networks: {
                let ingress = ingress_network(new_id(), now_secs(), ingress_subnet);
                BTreeMap::from([(ingress.id.clone(), ingress)])
            },
            services: BTreeMap::new(),
            tasks: BTreeMap::new(),
            log_requests: BTreeMap::new(),
            gossip_key: crate::gossip::transport::new_key_hex(),
            previous_gossip_key: None,
            gossip_key_made_at: now_secs(),
            gossip_key_rotation_secs: gossip_key_rotation.as_secs(),
            task_history_limit: request.task_history_limit,
            secrets: BTreeMap::new(),
            configs: BTreeMap::new(),
            address_pools: request.address_pools,
            subnet_size: request.subnet_size,
            snapshot_interval: request.snapshot_interval,
            max_snapshots: request.max_snapshots,
            unlock_key: request
                .autolock
                .then(UnlockKey::generate)
                .transpose()
                .map_err(|e| ClusterError::Unavailable(e.to_string()))?
                .map(|key| key.to_string()),
        };
        let local = LocalState {
            cluster_id: cluster_id.clone(),
            addr: advertise,
            managers: vec![advertise],
            heartbeat_millis: state.heartbeat_millis,
            listen_ip,
            data_path_addr,
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
                cluster.data_key()?,
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
        self.manager.watch_leadership(&raft);
        let worker_token = state.worker_token.clone();
        if let Err(err) = self.manager.write(Command::Create(Box::new(state))) {
            self.abandon();
            return Err(err);
        }
        // With --autolock, the keys are sealed before `init` answers.
        self.sync_lock();
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

    /// `init --force-new-cluster`: on a manager whose swarm lost its
    /// quorum, Raft starts afresh with this node its only voter and the
    /// store as this node last applied it: the same swarm (ID, CA, tokens,
    /// nodes, services, networks, secrets). The other managers become
    /// workers in the store, so this Raft refuses their calls; one that
    /// comes back renews its certificate as a worker and can be promoted.
    fn force_new_cluster(
        self: &Arc<Self>,
        request: SwarmInitRequest,
    ) -> Result<Response, ClusterError> {
        let ignored_settings = request.listen_host.is_some()
            || request.listen_port.is_some()
            || request.advertise_addr.is_some()
            || request.data_path_addr.is_some()
            || !request.address_pools.is_empty()
            || request.subnet_size.is_some();
        if ignored_settings {
            return Err(ClusterError::Refused(
                "--force-new-cluster keeps this manager's addresses and the swarm's address pools; run it without --advertise-addr, --listen-addr, --data-path-addr and --default-addr-pool*".into(),
            ));
        }
        check_snapshot_settings(request.snapshot_interval).map_err(ClusterError::Refused)?;
        let (old_raft, addr, credentials, dir, data_key) = {
            let slot = self.lock();
            let cluster = slot.as_ref().ok_or_else(|| {
                ClusterError::Refused(
                    "--force-new-cluster restarts a swarm this node manages, and it is in none; run `swarm init` without it".into(),
                )
            })?;
            let raft = cluster.raft.clone().ok_or_else(|| {
                ClusterError::Refused(
                    "--force-new-cluster must run on a manager; this node is a worker".into(),
                )
            })?;
            (
                raft,
                cluster.local.addr,
                cluster.credentials.clone(),
                cluster.raft_dir(),
                cluster.data_key()?,
            )
        };
        let mut state = old_raft.read_store(Clone::clone)?;
        let me = self.node.node_id.clone();
        for node in state.nodes.values_mut().filter(|n| n.id != me) {
            if node.role == Role::Manager {
                node.role = Role::Worker;
                node.version += 1;
            }
        }
        if let Some(node) = state.nodes.get_mut(&me) {
            if let Some(availability) = request.availability {
                node.availability = availability;
            }
            node.version += 1;
        }
        if let Some(limit) = request.task_history_limit {
            state.task_history_limit = Some(limit);
        }
        if request.snapshot_interval.is_some() {
            state.snapshot_interval = request.snapshot_interval;
        }
        if request.max_snapshots.is_some() {
            state.max_snapshots = request.max_snapshots;
        }
        if let Some(cluster) = self.lock().as_mut() {
            cluster.raft = None;
        }
        let _ = self.runtime.block_on(old_raft.raft.shutdown());
        if let Some(cluster) = self.lock().as_ref() {
            cluster.remove_raft_store()?;
        }
        let raft = self.runtime.block_on(async {
            let raft = RaftNode::start(&dir, &me, credentials, data_key).await?;
            raft.bootstrap(Member {
                node_id: me.clone(),
                addr: addr.to_string(),
            })
            .await?;
            Ok::<_, ClusterError>(raft)
        })?;
        if let Some(cluster) = self.lock().as_mut() {
            cluster.raft = Some(raft.clone());
            cluster.local.managers = vec![addr];
            cluster.save_local()?;
        }
        self.manager.watch_leadership(&raft);
        let worker_token = state.worker_token.clone();
        let cluster_id = state.cluster_id.clone();
        self.manager.write(Command::Create(Box::new(state)))?;
        self.sync_api();
        tracing::warn!(%cluster_id, node_id = %me, "forced a new cluster: this node is the swarm's only manager");
        Ok(Response::SwarmInitialized {
            node_id: me,
            worker_token,
            manager_addr: addr.to_string(),
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

    /// `swarm join`: becomes a member through the manager at `manager`. A
    /// new manager starts Raft and is made a voter before this returns.
    pub fn join(self: &Arc<Self>, request: SwarmJoinRequest) -> Result<Response, ClusterError> {
        let _transition = self.transition.locked();
        if self.is_locked() {
            return Err(ClusterError::SwarmLocked);
        }
        if self.lock().is_some() {
            return Err(ClusterError::AlreadyInSwarm);
        }
        let manager = request.manager;
        let listen_ip = listen_ip(request.listen_host.as_deref())?;
        let data_path_addr = data_path_addr(request.data_path_addr.as_deref())?;
        let addr = SocketAddr::from((
            request.advertise_addr.unwrap_or(self.node.advertise_addr),
            request.listen_port.unwrap_or(self.node.listen_addr.port()),
        ));
        let joiner = Joiner {
            node_id: &self.node.node_id,
            hostname: &self.node.hostname,
            advertise_addr: addr.ip(),
            listen_port: addr.port(),
            availability: request.availability.unwrap_or(Availability::Active),
            data_path_addr,
            engine_labels: &self.node.engine_labels,
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
            listen_ip,
            data_path_addr,
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
        let (dir, credentials, data_key) = {
            let slot = self.lock();
            let cluster = slot.as_ref().ok_or(ClusterError::NotInSwarm)?;
            if cluster.raft.is_some() {
                return Ok(());
            }
            (
                cluster.raft_dir(),
                cluster.credentials.clone(),
                cluster.data_key()?,
            )
        };
        let raft = self.runtime.block_on(RaftNode::start(
            &dir,
            &self.node.node_id,
            credentials,
            data_key,
        ))?;
        if let Some(cluster) = self.lock().as_mut() {
            cluster.raft = Some(raft.clone());
        }
        self.manager.watch_leadership(&raft);
        // The leader must reach this node's API to replicate to it.
        self.sync_api();
        let work = Forwarded::AddVoter {
            node_id: self.node.node_id.clone(),
        };
        let mut last_error = String::from("no manager to ask");
        let deadline = Instant::now() + ADD_VOTER_WAIT;
        while Instant::now() < deadline {
            for addr in through {
                match self.manager.forward(&addr.to_string(), &work, 1) {
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
        // Stopped and removed before the node stops saying it manages, so
        // that once `swarm info` says worker, no Raft store is left.
        let raft = self.lock().as_ref().and_then(|c| c.raft.clone());
        if let Some(raft) = raft {
            let _ = self.runtime.block_on(raft.raft.shutdown());
        }
        if let Some(cluster) = self.lock().as_ref() {
            cluster.remove_raft_store()?;
        }
        if let Some(cluster) = self.lock().as_mut() {
            cluster.raft = None;
        }
        tracing::info!("demoted: Raft stopped and its store removed");
        self.sync_api();
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

    pub fn leave(self: &Arc<Self>, force: bool) -> Result<Response, ClusterError> {
        let _transition = self.transition.locked();
        if self.is_locked() {
            // Docker's way out for a lost unlock key: leave, then join again.
            if !force {
                return Err(ClusterError::ManagerLeaving);
            }
            Cluster::forget(&self.node.data_dir)?;
            self.locked
                .store(false, std::sync::atomic::Ordering::SeqCst);
            self.manager.forget_all();
            tracing::info!("left the swarm while locked");
            return Ok(Response::Done);
        }
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
        self.manager.forget_all();
        tracing::info!("left the swarm");
        Ok(Response::Done)
    }
}

/// `--listen-addr`'s address, resolved on this host.
fn listen_ip(host: Option<&str>) -> Result<Option<std::net::Ipv4Addr>, ClusterError> {
    host.map(|host| {
        local_ipv4(host).map_err(|why| ClusterError::Refused(format!("--listen-addr: {why}")))
    })
    .transpose()
}

/// `--data-path-addr`, resolved on this host: an address other nodes can
/// send to, so not 0.0.0.0.
fn data_path_addr(host: Option<&str>) -> Result<Option<std::net::Ipv4Addr>, ClusterError> {
    let refused = |why: String| ClusterError::Refused(format!("--data-path-addr: {why}"));
    match host.map(local_ipv4).transpose().map_err(refused)? {
        Some(ip) if ip.is_unspecified() => Err(refused(
            "0.0.0.0 is no address another node can send to; give one of this host's addresses or an interface".into(),
        )),
        ip => Ok(ip),
    }
}
