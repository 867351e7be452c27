//! Raft between managers, with openraft: the type configuration, and how a
//! manager's Raft is started over its on-disk store. The log store, the
//! state machine, the network client and the network server each have a
//! file of their own.

pub mod data_key;
mod log_store;
mod migrate;
pub mod network;
pub mod server;
mod snapshots;
mod state_machine;

use std::{
    collections::BTreeMap,
    io::Cursor,
    path::Path,
    sync::{Arc, RwLock},
    time::Duration,
};

use openraft::{Config, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use self::data_key::DataKey;
use super::store::{ClusterState, Command, CommandResult};
use crate::{api::ClusterError, ca::client::Credentials, lock::ReadWriteLocked as _};

pub use log_store::LogStore;
pub use network::RaftPeers;
pub use state_machine::StateMachine;

/// A manager as Raft knows it: its swarm node ID and where its API listens.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub node_id: String,
    /// HOST:PORT of the member's control-plane API.
    pub addr: String,
}

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = u64,
        Node = Member,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type RaftMetrics = openraft::RaftMetrics<u64, Member>;

/// The replicated store as applied on this manager; `None` until the entry
/// that creates the cluster is applied.
pub type SharedStore = Arc<RwLock<Option<ClusterState>>>;

#[derive(Debug, thiserror::Error)]
pub enum RaftStoreError {
    #[error("opening the Raft store {path}: {message}")]
    Open {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("starting Raft: {0}")]
    Start(String),
}

impl From<RaftStoreError> for ClusterError {
    fn from(err: RaftStoreError) -> Self {
        ClusterError::Raft(Box::new(err))
    }
}

/// Raft's ID for a swarm node: stable, derived from its node ID.
pub fn raft_id(node_id: &str) -> u64 {
    let digest = Sha256::digest(node_id.as_bytes());
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// Raft timing. Swarmkit ticks once a second and elects after 10 ticks. A
/// leader here beats every 50 ms. openraft lets a follower stand for election
/// once the leader's lease (the maximum election timeout, 300 ms) and then
/// its own random election timeout (150-300 ms) have passed without a beat:
/// 450-600 ms after a leader dies, so a new one commits in under a second.
pub const HEARTBEAT: Duration = Duration::from_millis(50);
const ELECTION_TIMEOUT_MIN: Duration = Duration::from_millis(150);
const ELECTION_TIMEOUT_MAX: Duration = Duration::from_millis(300);
/// A snapshot is taken every this many entries unless `--snapshot-interval`
/// says otherwise, and older entries are dropped, so the log stays bounded
/// on disk.
pub const SNAPSHOT_EVERY: u64 = 1000;
/// The shortest `--snapshot-interval`: a snapshot per handful of entries
/// would write the whole store on nearly every change.
pub const MIN_SNAPSHOT_INTERVAL: u64 = 10;

/// Refuses a `--snapshot-interval` under the minimum.
pub fn check_snapshot_settings(interval: Option<u64>) -> Result<(), String> {
    match interval {
        Some(n) if n < MIN_SNAPSHOT_INTERVAL => Err(format!(
            "--snapshot-interval {n}: give at least {MIN_SNAPSHOT_INTERVAL} entries (Docker's default is 10000, swarm's {SNAPSHOT_EVERY})"
        )),
        _ => Ok(()),
    }
}
/// Entries kept behind a snapshot, so that a follower a little behind is
/// sent entries rather than the whole snapshot.
pub const LOG_KEPT_BEHIND_SNAPSHOT: u64 = 200;

fn config() -> Result<Arc<Config>, RaftStoreError> {
    let config = Config {
        cluster_name: "swarm".into(),
        heartbeat_interval: HEARTBEAT.as_millis() as u64,
        election_timeout_min: ELECTION_TIMEOUT_MIN.as_millis() as u64,
        election_timeout_max: ELECTION_TIMEOUT_MAX.as_millis() as u64,
        // The interval is the swarm's setting, read from the store as it
        // changes: `snapshots::trigger` asks for each snapshot.
        snapshot_policy: SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: LOG_KEPT_BEHIND_SNAPSHOT,
        ..Default::default()
    };
    config
        .validate()
        .map(Arc::new)
        .map_err(|e| RaftStoreError::Start(e.to_string()))
}

/// A manager's Raft and the store it applies to.
#[derive(Clone)]
pub struct RaftNode {
    pub id: u64,
    pub raft: Raft,
    pub store: SharedStore,
    /// What applying entries changed, for `swarm events`.
    pub events: Arc<crate::manager::store::events::EventLog>,
    db: Arc<redb::Database>,
}

impl RaftNode {
    /// Starts Raft over the store in `dir` (created when missing), sealed
    /// with `key`: a restarted manager comes back with its vote, log and
    /// snapshot. A store from before sealing is sealed first.
    pub async fn start(
        dir: &Path,
        node_id: &str,
        credentials: Arc<RwLock<Credentials>>,
        key: Arc<DataKey>,
    ) -> Result<Self, RaftStoreError> {
        let id = raft_id(node_id);
        std::fs::create_dir_all(dir).map_err(|e| RaftStoreError::Open {
            path: dir.to_owned(),
            message: e.to_string(),
        })?;
        let db_path = dir.join("raft.redb");
        // Once, on the first start after sealing came in; blocking briefly.
        migrate::seal_clear_values(&db_path, &key).map_err(|e| RaftStoreError::Open {
            path: db_path.clone(),
            message: e.to_string(),
        })?;
        let db = redb::Database::create(&db_path).map_err(|e| RaftStoreError::Open {
            path: db_path.clone(),
            message: e.to_string(),
        })?;
        let db = Arc::new(db);
        let open_err = |e: openraft::StorageError<u64>| RaftStoreError::Open {
            path: db_path.clone(),
            message: e.to_string(),
        };
        let log_store = LogStore::open(db.clone(), key.clone()).map_err(open_err)?;
        let state_machine = StateMachine::open(db.clone(), key).map_err(open_err)?;
        let store = state_machine.store();
        let events = state_machine.events();
        let raft = Raft::new(
            id,
            config()?,
            RaftPeers::new(credentials),
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| RaftStoreError::Start(e.to_string()))?;
        tokio::spawn(snapshots::trigger(raft.clone(), store.clone()));
        tokio::spawn(count_leader_changes(raft.clone()));
        Ok(Self {
            id,
            raft,
            store,
            events,
            db,
        })
    }

    /// Makes this node the one voter of a new cluster.
    pub async fn bootstrap(&self, me: Member) -> Result<(), RaftStoreError> {
        let members = BTreeMap::from([(self.id, me)]);
        self.raft
            .initialize(members)
            .await
            .map_err(|e| RaftStoreError::Start(e.to_string()))
    }

    /// Reads the replicated store as applied here.
    pub fn read_store<T>(&self, read: impl FnOnce(&ClusterState) -> T) -> Result<T, ClusterError> {
        let store = self.store.read_locked();
        let state = store.as_ref().ok_or_else(|| {
            ClusterError::Unavailable(
                "this manager has not received the cluster store from the leader yet; try again"
                    .into(),
            )
        })?;
        Ok(read(state))
    }

    /// Replaced snapshots this manager keeps (`--max-snapshots`).
    pub fn retained_snapshots(&self) -> usize {
        state_machine::retained_snapshots(&self.db)
    }

    pub fn metrics(&self) -> RaftMetrics {
        self.raft.metrics().borrow().clone()
    }

    /// Whether this manager is the leader right now.
    /// Leads now: a leader that removed itself from the voters still names
    /// itself leader for a while after it stepped down.
    pub fn is_leader(&self) -> bool {
        let metrics = self.metrics();
        metrics.current_leader == Some(self.id) && metrics.state == openraft::ServerState::Leader
    }

    /// Whether Raft's membership (the effective one, perhaps a joint
    /// configuration still committing) holds node `node_id`, as a voter or
    /// a learner.
    pub fn holds(&self, node_id: &str) -> bool {
        let id = raft_id(node_id);
        let metrics = self.metrics();
        let membership = metrics.membership_config.membership();
        membership.voter_ids().any(|v| v == id) || membership.get_node(&id).is_some()
    }

    /// The leader's address, if one is known.
    pub fn leader(&self) -> Option<Member> {
        let metrics = self.metrics();
        let leader = metrics.current_leader?;
        metrics
            .membership_config
            .membership()
            .get_node(&leader)
            .cloned()
    }
}

/// Counts each change of leader this manager sees, for the metrics,
/// until Raft shuts down.
async fn count_leader_changes(raft: Raft) {
    let mut metrics = raft.metrics();
    let mut leader = metrics.borrow().current_leader;
    while metrics.changed().await.is_ok() {
        let now = metrics.borrow().current_leader;
        if now != leader {
            leader = now;
            crate::metrics::instruments().raft_leader_changes.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use openraft::{StorageError, testing::StoreBuilder};

    use super::*;

    /// A log store and state machine over a fresh redb file; the directory
    /// lives as long as the stores.
    struct RedbStores;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for RedbStores {
        async fn build(
            &self,
        ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<u64>> {
            let dir = tempfile::tempdir().expect("temporary directory");
            let db = Arc::new(redb::Database::create(dir.path().join("raft.redb")).expect("redb"));
            let key = Arc::new(data_key::DataKey::for_tests());
            let log = LogStore::open(db.clone(), key.clone())?;
            let machine = StateMachine::open(db, key)?;
            Ok((dir, log, machine))
        }
    }

    /// openraft's conformance suite for storage implementations.
    #[test]
    fn the_redb_store_passes_openraft_storage_conformance() {
        openraft::testing::Suite::test_all(RedbStores).unwrap();
    }

    /// Raft IDs are persisted in every manager's log and membership: the
    /// derivation must never change.
    #[test]
    fn raft_ids_are_the_first_8_bytes_of_the_node_ids_sha256() {
        // sha256("abc") = ba7816bf8f01cfea 414140de...
        assert_eq!(raft_id("abc"), 0xba78_16bf_8f01_cfea);
        assert_ne!(raft_id("abc"), raft_id("abd"));
    }
}
