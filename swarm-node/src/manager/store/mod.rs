//! The cluster store that Raft replicates between managers: the cluster's
//! settings, its CA key and join tokens, and its nodes; and the commands
//! that change it. Applying a command is deterministic, so every manager
//! that applies the same log holds the same store.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    time::Duration,
};

use serde::{Deserialize, Serialize};

pub mod events;
#[cfg(test)]
pub mod fixtures;
pub mod payloads;
mod refusal;
pub mod services;

pub use refusal::Refusal;

use self::services::{ServiceCreate, ServiceRecord, TaskChange, TaskRecord, UpdateStatus};
use super::reference::{Lookup, lookup};
use crate::{
    api::{
        Availability, ClusterError, NodeResources, Role, assignments::LogRequest,
        specs::ServiceSpec,
    },
    ca::pki::JoinToken,
};

/// Docker's default dispatcher heartbeat is 5 s (a dead node noticed after
/// about 15 s); ours is 500 ms, so three missed beats take 1.5 s. One small
/// RPC per node every 500 ms is little for a manager.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_millis(500);
/// Docker's managers rotate the gossip key every 12 hours.
pub const DEFAULT_GOSSIP_KEY_ROTATION: Duration = Duration::from_secs(12 * 3600);
/// A key must reach every node before the next replaces it (the one before
/// stays accepted): agents hear of a new one within a heartbeat or two.
pub const MIN_GOSSIP_KEY_ROTATION: Duration = Duration::from_secs(2);
/// The shortest node certificate life `swarm update` takes (Docker's).
pub const MIN_CERT_EXPIRY: Duration = Duration::from_secs(3600);
/// Docker's control-plane port.
pub const DEFAULT_LISTEN_PORT: u16 = 2377;

/// One node as the managers record it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: String,
    pub hostname: String,
    /// Its control-plane address (a manager's API listens there).
    pub addr: SocketAddr,
    pub role: Role,
    pub availability: Availability,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The labels its daemon was started with (`swarm daemon --label`,
    /// Docker's engine labels), as it last reported them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub engine_labels: BTreeMap<String, String>,
    /// What it offers tasks, as it reported when it joined.
    #[serde(default)]
    pub resources: NodeResources,
    /// Its OS and architecture, as it reported when it joined; empty for
    /// a node recorded before nodes reported them.
    #[serde(default)]
    pub platform: crate::api::Platform,
    /// Where other nodes send its overlay traffic (`--data-path-addr`);
    /// `None`: its control-plane address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_path_addr: Option<std::net::Ipv4Addr>,
    /// Bumped by every update (Docker's `Version.Index`).
    #[serde(default)]
    pub version: u64,
}

/// The replicated store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    pub cluster_id: String,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    pub worker_token: String,
    pub manager_token: String,
    /// How long node certificates last.
    pub cert_expiry_secs: u64,
    /// How often agents report to the managers.
    pub heartbeat_millis: u64,
    /// The root CA, with its key: every manager can sign certificates, as
    /// in swarmkit, where the key is in the Raft store too.
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    pub nodes: BTreeMap<String, NodeRecord>,
    /// Overlay networks by ID.
    #[serde(default)]
    pub networks: BTreeMap<String, NetworkRecord>,
    /// Services by ID.
    #[serde(default)]
    pub services: BTreeMap<String, ServiceRecord>,
    /// Tasks by ID, with the recent history of each slot.
    #[serde(default)]
    pub tasks: BTreeMap<String, TaskRecord>,
    /// Open `service logs` requests, by ID: each node holding one of the
    /// tasks sends those tasks' output to the manager that asked.
    #[serde(default)]
    pub log_requests: BTreeMap<String, LogRequest>,
    /// The key gossip between nodes is sealed with (hex); empty in a
    /// store from before gossip, where nodes do not gossip.
    #[serde(default)]
    pub gossip_key: String,
    /// Still accepted while a new key spreads.
    #[serde(default)]
    pub previous_gossip_key: Option<String>,
    /// When the gossip key was made (seconds since the epoch); 0 in a store
    /// from before rotation, whose key is due at once.
    #[serde(default)]
    pub gossip_key_made_at: u64,
    /// How often the leader rotates the gossip key; 0 in a store from
    /// before this setting: the default.
    #[serde(default)]
    pub gossip_key_rotation_secs: u64,
    /// Ended tasks kept per slot for `service ps` (`--task-history-limit`);
    /// `None`: Docker's 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_history_limit: Option<u64>,
    /// Secrets by ID.
    #[serde(default)]
    pub secrets: BTreeMap<String, payloads::PayloadRecord>,
    /// Configs by ID.
    #[serde(default)]
    pub configs: BTreeMap<String, payloads::PayloadRecord>,
    /// `init --default-addr-pool`: where network subnets come from; empty:
    /// Docker's 10.0.0.0/8.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub address_pools: Vec<(std::net::Ipv4Addr, u8)>,
    /// `init --default-addr-pool-mask-length`: the prefix length of each
    /// network's subnet; `None`: Docker's 24.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_size: Option<u8>,
    /// `--snapshot-interval`: Raft entries between snapshots; `None`:
    /// the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_interval: Option<u64>,
    /// `--max-snapshots`: older snapshots each manager keeps besides the
    /// current one; `None`: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_snapshots: Option<u64>,
    /// Autolock's unlock key (`SWMKEY-1-...`), while autolock is on: every
    /// manager seals its TLS key and Raft data key under it. Safe here as
    /// the CA key is: the store is sealed on disk with those data keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unlock_key: Option<String>,
}

/// Log requests are answered within seconds; older ones are dropped.
const LOG_REQUEST_TTL_MILLIS: u64 = 60_000;

/// An overlay network, as `swarm network create` (or `init`, for
/// `ingress`) made it, with what the allocator gave it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub id: String,
    pub name: String,
    /// Network address and prefix length.
    pub subnet: (Ipv4Addr, u8),
    pub gateway: Ipv4Addr,
    pub vni: u32,
    /// MTU inside the tasks.
    pub mtu: u32,
    pub attachable: bool,
    /// The routing mesh's network.
    pub ingress: bool,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
}

/// What `swarm network create` asks for; the allocator fills in the rest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRequest {
    pub id: String,
    pub name: String,
    pub subnet: Option<(Ipv4Addr, u8)>,
    pub gateway: Option<Ipv4Addr>,
    pub mtu: Option<u32>,
    pub attachable: bool,
    pub labels: BTreeMap<String, String>,
    pub created_at: u64,
}

/// A change to one node's spec; unset fields stay as they are.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeChange {
    pub availability: Option<Availability>,
    pub label_add: Vec<(String, String)>,
    pub label_rm: Vec<String>,
    pub role: Option<Role>,
    /// The engine labels the node reported in a heartbeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_labels: Option<BTreeMap<String, String>>,
    /// Refused unless the node is at this version (the Engine API's
    /// `?version=`).
    #[serde(default)]
    pub expect_version: Option<u64>,
}

/// What the Raft log holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// The first entry: the cluster `swarm init` made.
    Create(Box<ClusterState>),
    /// A node joined. One that was a member before keeps its availability
    /// and labels.
    AddNode(NodeRecord),
    UpdateNode {
        id: String,
        change: NodeChange,
    },
    RemoveNode {
        id: String,
    },
    SetToken {
        role: Role,
        token: String,
    },
    /// Allocated when applied (lowest free VNI from 4096, lowest free /24
    /// of 10.0.0.0/8 unless a subnet is asked for), so every manager
    /// allocates the same.
    CreateNetwork(NetworkRequest),
    RemoveNetwork {
        id: String,
    },
    /// VIPs and published ports are allocated when applied.
    CreateService(Box<ServiceCreate>),
    UpdateService {
        id: String,
        spec: Box<ServiceSpec>,
        /// The previous spec coming back (`service rollback`, or a failed
        /// update's rollback).
        rollback: bool,
        at: u64,
        /// Refused unless the service is at this version.
        #[serde(default)]
        expect_version: Option<u64>,
    },
    /// The service goes; its tasks are to be removed.
    RemoveService {
        id: String,
    },
    SetUpdateStatus {
        id: String,
        status: UpdateStatus,
    },
    /// Task addresses are allocated when applied.
    Tasks(Vec<TaskChange>),
    /// Opens a log request; requests older than a minute go.
    RequestLogs(LogRequest),
    /// A new gossip key; the one before stays accepted while it spreads.
    RotateGossipKey {
        key: String,
        /// When (seconds since the epoch).
        #[serde(default)]
        at: u64,
    },
    /// How often the leader rotates the gossip key from now on.
    SetGossipKeyRotation {
        secs: u64,
    },
    /// `swarm update --dispatcher-heartbeat --cert-expiry`: agents take the
    /// new period from their next heartbeat's answer, certificates the new
    /// expiry when next signed.
    SetSwarmSettings {
        heartbeat_millis: Option<u64>,
        cert_expiry_secs: Option<u64>,
        #[serde(default)]
        task_history_limit: Option<u64>,
        #[serde(default)]
        snapshot_interval: Option<u64>,
        #[serde(default)]
        max_snapshots: Option<u64>,
    },
    /// Autolock on with this unlock key (a new one rotates it), or off.
    SetUnlockKey {
        key: Option<String>,
    },
    /// A new secret or config; its name must be free.
    CreatePayload {
        kind: payloads::PayloadKind,
        record: payloads::PayloadRecord,
    },
    /// A secret's or config's labels replaced (their data cannot change).
    UpdatePayload {
        kind: payloads::PayloadKind,
        id: String,
        labels: BTreeMap<String, String>,
        expect_version: Option<u64>,
        at: u64,
    },
    /// Refused while a service uses it.
    RemovePayload {
        kind: payloads::PayloadKind,
        id: String,
    },
}

/// What applying a command gave.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    Done,
    /// Nothing changed; the reason is for the user.
    Refused(String),
}

impl Command {
    /// A fresh gossip key, made at `at` (seconds since the epoch).
    pub fn rotate_gossip_key(at: u64) -> Self {
        Command::RotateGossipKey {
            key: crate::gossip::transport::new_key_hex(),
            at,
        }
    }
}

impl ClusterState {
    /// How often the leader rotates the gossip key.
    pub fn gossip_key_rotation(&self) -> Duration {
        match self.gossip_key_rotation_secs {
            0 => DEFAULT_GOSSIP_KEY_ROTATION,
            secs => Duration::from_secs(secs),
        }
    }

    /// Whether the gossip key is old enough to rotate at `now` (seconds
    /// since the epoch). A store from before gossip has no key to rotate.
    pub fn gossip_key_due(&self, now: u64) -> bool {
        !self.gossip_key.is_empty()
            && now >= self.gossip_key_made_at + self.gossip_key_rotation().as_secs()
    }

    /// Applies `command` to the store (`None` before the cluster exists).
    pub fn apply(store: &mut Option<ClusterState>, command: Command) -> CommandResult {
        let refused = |why: Refusal| CommandResult::Refused(why.to_string());
        if let Command::Create(state) = command {
            if store.is_some() {
                return refused(Refusal::ClusterExists);
            }
            *store = Some(*state);
            return CommandResult::Done;
        }
        let Some(state) = store.as_mut() else {
            return refused(Refusal::NoCluster);
        };
        match command {
            Command::Create(_) => unreachable!("handled above"),
            Command::AddNode(mut node) => {
                if let Some(known) = state.nodes.get(&node.id) {
                    node.availability = known.availability;
                    node.labels = known.labels.clone();
                    node.version = known.version + 1;
                }
                state.nodes.insert(node.id.clone(), node);
            }
            Command::UpdateNode { id, change } => {
                let Some(node) = state.nodes.get_mut(&id) else {
                    return refused(Refusal::NoSuchNode(id));
                };
                if change.expect_version.is_some_and(|v| v != node.version) {
                    return refused(Refusal::OutOfSequence);
                }
                if let Some(key) = change
                    .label_rm
                    .iter()
                    .find(|key| !node.labels.contains_key(*key))
                {
                    return refused(Refusal::NoSuchLabel(key.clone()));
                }
                node.version += 1;
                if let Some(availability) = change.availability {
                    node.availability = availability;
                }
                for (key, value) in change.label_add {
                    node.labels.insert(key, value);
                }
                for key in &change.label_rm {
                    node.labels.remove(key);
                }
                if let Some(role) = change.role {
                    node.role = role;
                }
                if let Some(labels) = change.engine_labels {
                    node.engine_labels = labels;
                }
            }
            Command::RemoveNode { id } => {
                if state.nodes.remove(&id).is_none() {
                    return refused(Refusal::NoSuchNode(id));
                }
            }
            Command::RotateGossipKey { key, at } => {
                let old = std::mem::replace(&mut state.gossip_key, key);
                state.previous_gossip_key = (!old.is_empty()).then_some(old);
                state.gossip_key_made_at = at;
            }
            Command::SetGossipKeyRotation { secs } => {
                if secs < MIN_GOSSIP_KEY_ROTATION.as_secs() {
                    return refused(Refusal::RotationTooShort {
                        secs,
                        min: MIN_GOSSIP_KEY_ROTATION.as_secs(),
                    });
                }
                state.gossip_key_rotation_secs = secs;
            }
            Command::SetSwarmSettings {
                heartbeat_millis,
                cert_expiry_secs,
                task_history_limit,
                snapshot_interval,
                max_snapshots,
            } => {
                if heartbeat_millis == Some(0) {
                    return refused(Refusal::HeartbeatZero);
                }
                if let Err(why) = crate::manager::raft::check_snapshot_settings(snapshot_interval) {
                    return CommandResult::Refused(why);
                }

                if cert_expiry_secs.is_some_and(|s| s < MIN_CERT_EXPIRY.as_secs()) {
                    return refused(Refusal::CertExpiryTooShort);
                }
                if let Some(millis) = heartbeat_millis {
                    state.heartbeat_millis = millis;
                }
                if let Some(secs) = cert_expiry_secs {
                    state.cert_expiry_secs = secs;
                }
                if task_history_limit.is_some() {
                    state.task_history_limit = task_history_limit;
                }
                if snapshot_interval.is_some() {
                    state.snapshot_interval = snapshot_interval;
                }
                if max_snapshots.is_some() {
                    state.max_snapshots = max_snapshots;
                }
            }
            Command::SetUnlockKey { key } => state.unlock_key = key,
            Command::SetToken { role, token } => match role {
                Role::Worker => state.worker_token = token,
                Role::Manager => state.manager_token = token,
            },
            Command::CreateNetwork(request) => match state.allocate_network(request) {
                Ok(network) => {
                    state.networks.insert(network.id.clone(), network);
                }
                Err(why) => return refused(why),
            },
            Command::RemoveNetwork { id } => {
                if let Some(service) = state
                    .services
                    .values()
                    .find(|s| s.spec.networks.contains(&id))
                {
                    return refused(Refusal::NetworkInUse {
                        id,
                        service: service.spec.name.clone(),
                    });
                }
                if state.networks.remove(&id).is_none() {
                    return refused(Refusal::NoSuchNetwork(id));
                }
            }
            Command::CreateService(create) => {
                if let Err(why) = state.create_service(*create) {
                    return refused(why);
                }
            }
            Command::UpdateService {
                id,
                spec,
                rollback,
                at,
                expect_version,
            } => {
                let current = state.services.get(&id).map(|s| s.revision);
                if expect_version.is_some() && current.is_some() && expect_version != current {
                    return refused(Refusal::OutOfSequence);
                }
                if let Err(why) = state.update_service(&id, *spec, rollback, at) {
                    return refused(why);
                }
            }
            Command::RemoveService { id } => {
                if let Err(why) = state.remove_service(&id) {
                    return refused(why);
                }
            }
            Command::SetUpdateStatus { id, status } => {
                if let Err(why) = state.set_update_status(&id, status) {
                    return refused(why);
                }
            }
            Command::Tasks(changes) => state.change_tasks(changes),
            Command::CreatePayload { kind, record } => {
                if let Err(why) = state.create_payload(kind, record) {
                    return refused(why);
                }
            }
            Command::UpdatePayload {
                kind,
                id,
                labels,
                expect_version,
                at,
            } => {
                if let Err(why) = state.update_payload(kind, &id, labels, expect_version, at) {
                    return refused(why);
                }
            }
            Command::RemovePayload { kind, id } => {
                if let Err(why) = state.remove_payload(kind, &id) {
                    return refused(why);
                }
            }
            Command::RequestLogs(request) => {
                let now = request.at_millis;
                state
                    .log_requests
                    .retain(|_, r| r.at_millis + LOG_REQUEST_TTL_MILLIS > now);
                state.log_requests.insert(request.id.clone(), request);
            }
        }
        CommandResult::Done
    }

    /// The network `reference` names: its ID, its name or a unique ID prefix.
    pub fn resolve_network(&self, reference: &str) -> Result<&NetworkRecord, Refusal> {
        match lookup(self.networks.values(), reference, |n| &n.id, |n| &n.name) {
            Lookup::Found(network) => Ok(network),
            Lookup::Missing => Err(Refusal::NoSuchNetwork(reference.to_owned())),
            Lookup::Ambiguous(count) => Err(Refusal::AmbiguousNetwork {
                reference: reference.to_owned(),
                count,
            }),
        }
    }

    /// The role a presented token admits, if it is one of this cluster's
    /// current tokens.
    pub fn admits(&self, token: &JoinToken) -> Option<Role> {
        let current = |text: &str| text.parse::<JoinToken>().ok();
        if current(&self.manager_token).is_some_and(|t| t.same_secret(token)) {
            Some(Role::Manager)
        } else if current(&self.worker_token).is_some_and(|t| t.same_secret(token)) {
            Some(Role::Worker)
        } else {
            None
        }
    }

    /// The pools network subnets are carved from.
    pub fn address_pools(&self) -> Vec<(std::net::Ipv4Addr, u8)> {
        if self.address_pools.is_empty() {
            vec![crate::manager::allocator::POOL]
        } else {
            self.address_pools.clone()
        }
    }

    /// The prefix length of a network's subnet.
    pub fn subnet_size(&self) -> u8 {
        self.subnet_size
            .unwrap_or(crate::manager::allocator::POOL_PREFIX)
    }

    /// Raft entries between snapshots.
    pub fn snapshot_interval(&self) -> u64 {
        self.snapshot_interval
            .unwrap_or(crate::manager::raft::SNAPSHOT_EVERY)
    }

    /// Ended tasks kept per slot.
    pub fn task_history(&self) -> usize {
        self.task_history_limit
            .map_or(services::TASK_HISTORY, |limit| limit as usize)
    }

    pub fn token(&self, role: Role) -> &str {
        match role {
            Role::Worker => &self.worker_token,
            Role::Manager => &self.manager_token,
        }
    }

    /// The node `reference` names: its ID, its hostname or a unique ID
    /// prefix (as Docker resolves node references).
    pub fn resolve(&self, reference: &str) -> Result<String, ClusterError> {
        match lookup(self.nodes.values(), reference, |n| &n.id, |n| &n.hostname) {
            Lookup::Found(node) => Ok(node.id.clone()),
            Lookup::Missing => Err(ClusterError::NoSuchNode(reference.to_owned())),
            Lookup::Ambiguous(_) => Err(ClusterError::AmbiguousNode(reference.to_owned())),
        }
    }

    pub fn managers(&self) -> impl Iterator<Item = &NodeRecord> {
        self.nodes.values().filter(|n| n.role == Role::Manager)
    }
}

#[cfg(test)]
mod tests {
    use super::{fixtures::node, *};

    fn created() -> Option<ClusterState> {
        let mut store = None;
        let state = fixtures::store(&[("m1", Role::Manager)]);
        assert_eq!(
            ClusterState::apply(&mut store, Command::Create(Box::new(state))),
            CommandResult::Done
        );
        store
    }

    #[test]
    fn commands_change_the_store_and_refusals_change_nothing() {
        let mut store = created();
        ClusterState::apply(&mut store, Command::AddNode(node("w1", Role::Worker)));
        let change = NodeChange {
            label_add: vec![("zone".into(), "a".into())],
            availability: Some(Availability::Drain),
            ..NodeChange::default()
        };
        let update = |change| Command::UpdateNode {
            id: "w1".into(),
            change,
        };
        assert_eq!(
            ClusterState::apply(&mut store, update(change)),
            CommandResult::Done
        );
        let before = store.clone();
        let bad = NodeChange {
            label_rm: vec!["missing".into()],
            role: Some(Role::Manager),
            ..NodeChange::default()
        };
        assert!(matches!(
            ClusterState::apply(&mut store, update(bad)),
            CommandResult::Refused(_)
        ));
        assert_eq!(store, before, "a refused command changes nothing");
        // Joining again keeps what the managers set on the node.
        ClusterState::apply(&mut store, Command::AddNode(node("w1", Role::Worker)));
        let w1 = &store.as_ref().unwrap().nodes["w1"];
        assert_eq!(w1.availability, Availability::Drain);
        assert_eq!(w1.labels["zone"], "a");
        assert!(matches!(
            ClusterState::apply(&mut store, Command::Create(Box::new(before.unwrap()))),
            CommandResult::Refused(_)
        ));
    }

    #[test]
    fn the_gossip_key_is_due_after_its_period_and_a_rotation_keeps_the_old_one() {
        let mut store = created();
        // A store from before gossip has no key to rotate.
        assert!(!store.as_ref().unwrap().gossip_key_due(u64::MAX));
        let rotate = |store: &mut Option<ClusterState>, key: &str, at| {
            ClusterState::apply(
                store,
                Command::RotateGossipKey {
                    key: key.into(),
                    at,
                },
            )
        };
        assert_eq!(rotate(&mut store, "k1", 100), CommandResult::Done);
        let state = store.as_ref().unwrap();
        assert_eq!(state.gossip_key_rotation(), DEFAULT_GOSSIP_KEY_ROTATION);
        assert!(!state.gossip_key_due(100 + 12 * 3600 - 1));
        assert!(state.gossip_key_due(100 + 12 * 3600));

        let set = |store: &mut Option<ClusterState>, secs| {
            ClusterState::apply(store, Command::SetGossipKeyRotation { secs })
        };
        assert!(
            matches!(set(&mut store, 1), CommandResult::Refused(m) if m.contains("at least 2s"))
        );
        assert_eq!(set(&mut store, 60), CommandResult::Done);
        assert!(store.as_ref().unwrap().gossip_key_due(160));
        assert_eq!(rotate(&mut store, "k2", 160), CommandResult::Done);
        let state = store.as_ref().unwrap();
        assert_eq!(state.gossip_key, "k2");
        assert_eq!(state.previous_gossip_key.as_deref(), Some("k1"));
        assert!(!state.gossip_key_due(219));
    }

    #[test]
    fn tokens_admit_their_role_until_rotated() {
        let mut store = created();
        let state = store.as_ref().unwrap();
        let worker: JoinToken = state.worker_token.parse().unwrap();
        let manager: JoinToken = state.manager_token.parse().unwrap();
        assert_eq!(state.admits(&worker), Some(Role::Worker));
        assert_eq!(state.admits(&manager), Some(Role::Manager));
        let rotated = JoinToken::generate([7; 32]);
        ClusterState::apply(
            &mut store,
            Command::SetToken {
                role: Role::Worker,
                token: rotated.to_string(),
            },
        );
        let state = store.as_ref().unwrap();
        assert_eq!(state.admits(&worker), None, "a rotated token is refused");
        assert_eq!(state.admits(&rotated), Some(Role::Worker));
        assert_eq!(state.admits(&manager), Some(Role::Manager));
        assert_eq!(state.admits(&JoinToken::generate([1; 32])), None);
    }

    fn network(id: &str, name: &str, subnet: Option<(Ipv4Addr, u8)>) -> Command {
        Command::CreateNetwork(NetworkRequest {
            id: id.into(),
            name: name.into(),
            subnet,
            gateway: None,
            mtu: None,
            attachable: false,
            labels: BTreeMap::new(),
            created_at: 0,
        })
    }

    #[test]
    fn networks_get_the_lowest_free_subnet_and_vni_and_conflicts_are_refused() {
        let mut store = created();
        let apply = |store: &mut Option<ClusterState>, command| ClusterState::apply(store, command);
        assert_eq!(
            apply(&mut store, network("a", "front", None)),
            CommandResult::Done
        );
        let taken = (Ipv4Addr::new(10, 0, 2, 0), 24);
        assert_eq!(
            apply(&mut store, network("b", "mine", Some(taken))),
            CommandResult::Done
        );
        assert_eq!(
            apply(&mut store, network("c", "back", None)),
            CommandResult::Done
        );
        let state = store.as_ref().unwrap();
        let of = |id: &str| (state.networks[id].subnet, state.networks[id].vni);
        // ingress has 10.0.0.0/24 and VNI 4096.
        assert_eq!(of("a"), ((Ipv4Addr::new(10, 0, 1, 0), 24), 4097));
        assert_eq!(of("b"), (taken, 4098));
        assert_eq!(of("c"), ((Ipv4Addr::new(10, 0, 3, 0), 24), 4099));
        assert_eq!(state.networks["c"].gateway, Ipv4Addr::new(10, 0, 3, 1));
        assert_eq!(state.resolve_network("back").unwrap().id, "c");

        let before = store.clone();
        for bad in [
            network("d", "front", None),
            network("e", "overlapping", Some((Ipv4Addr::new(10, 0, 0, 0), 16))),
        ] {
            assert!(matches!(apply(&mut store, bad), CommandResult::Refused(_)));
        }
        assert_eq!(store, before);
        // A freed subnet and VNI are given out again.
        apply(&mut store, Command::RemoveNetwork { id: "a".into() });
        apply(&mut store, network("f", "again", None));
        let state = store.as_ref().unwrap();
        assert_eq!(state.networks["f"].subnet, (Ipv4Addr::new(10, 0, 1, 0), 24));
        assert_eq!(state.networks["f"].vni, 4097);
    }

    #[test]
    fn swarm_settings_change_and_bad_ones_are_refused() {
        let mut store = created();
        let set = |store: &mut Option<ClusterState>, heartbeat, expiry| {
            ClusterState::apply(
                store,
                Command::SetSwarmSettings {
                    heartbeat_millis: heartbeat,
                    cert_expiry_secs: expiry,
                    task_history_limit: None,
                    snapshot_interval: None,
                    max_snapshots: None,
                },
            )
        };
        let before = store.clone();
        assert!(matches!(
            set(&mut store, Some(0), None),
            CommandResult::Refused(_)
        ));
        assert!(
            matches!(set(&mut store, None, Some(60)), CommandResult::Refused(m) if m.contains("1h0m0s"))
        );
        assert_eq!(store, before);
        assert_eq!(
            set(&mut store, Some(2000), Some(48 * 3600)),
            CommandResult::Done
        );
        let state = store.as_ref().unwrap();
        assert_eq!(state.heartbeat_millis, 2000);
        assert_eq!(state.cert_expiry_secs, 48 * 3600);
        assert_eq!(set(&mut store, None, None), CommandResult::Done);
        assert_eq!(store.as_ref().unwrap().heartbeat_millis, 2000);
    }
}
