//! The state machine: the cluster store, applied in memory, and its
//! snapshots, kept in redb beside the log. A restarted manager loads the
//! last snapshot and applies the committed entries after it again.

// openraft's StorageError and RPCError are large; they are what its traits return.
#![allow(clippy::result_large_err)]

use std::{io::Cursor, sync::Arc};

use openraft::{
    EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership, storage::RaftStateMachine,
};
use redb::{Database, ReadableTable as _, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{Member, SharedStore, TypeConfig, data_key::DataKey};
use crate::lock::ReadWriteLocked as _;
use crate::manager::store::{
    ClusterState, CommandResult,
    events::{Before, EventLog},
};

pub(super) const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_snapshot");
const CURRENT: &str = "current";
/// Older snapshots kept by `--max-snapshots`, by when they were replaced.
const RETAINED_PREFIX: &str = "retained/";

type Result<T> = std::result::Result<T, StorageError<u64>>;

/// A snapshot as stored: its metadata and the store, JSON.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<u64, Member>,
    data: Vec<u8>,
}

pub struct StateMachine {
    db: Arc<Database>,
    /// Snapshots are sealed with it on disk.
    key: Arc<DataKey>,
    store: SharedStore,
    last_applied: Option<LogId<u64>>,
    last_membership: StoredMembership<u64, Member>,
    /// Makes snapshot IDs unique between snapshots of the same log position.
    snapshots_built: u64,
    /// What the applied entries changed, for `swarm events`.
    events: Arc<EventLog>,
}

impl StateMachine {
    pub fn open(db: Arc<Database>, key: Arc<DataKey>) -> Result<Self> {
        let txn = db.begin_write().map_err(|e| StorageIOError::write(&e))?;
        txn.open_table(SNAPSHOT)
            .map_err(|e| StorageIOError::write(&e))?;
        txn.commit().map_err(|e| StorageIOError::write(&e))?;
        let mut machine = Self {
            db,
            key,
            store: SharedStore::default(),
            last_applied: None,
            last_membership: StoredMembership::default(),
            snapshots_built: 0,
            events: Arc::default(),
        };
        if let Some(snapshot) = machine.read_snapshot()? {
            machine.load(&snapshot)?;
        }
        Ok(machine)
    }

    /// The store this machine applies to, shared with readers.
    pub fn store(&self) -> SharedStore {
        self.store.clone()
    }

    pub fn events(&self) -> Arc<EventLog> {
        self.events.clone()
    }

    fn read_snapshot(&self) -> Result<Option<StoredSnapshot>> {
        let txn = self
            .db
            .begin_read()
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        let table = txn
            .open_table(SNAPSHOT)
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        let Some(value) = table
            .get(CURRENT)
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?
        else {
            return Ok(None);
        };
        let bytes = self
            .key
            .open(value.value())
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StorageIOError::read_snapshot(None, &e).into())
    }

    /// Replaces the store with a snapshot's.
    fn load(&mut self, snapshot: &StoredSnapshot) -> Result<()> {
        let state: Option<ClusterState> = serde_json::from_slice(&snapshot.data)
            .map_err(|e| StorageIOError::read_snapshot(Some(snapshot.meta.signature()), &e))?;
        *self.store.write_locked() = state;
        self.last_applied = snapshot.meta.last_log_id;
        self.last_membership = snapshot.meta.last_membership.clone();
        Ok(())
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotView;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, Member>)> {
        Ok((self.last_applied, self.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let started = std::time::Instant::now();
        let mut results = Vec::new();
        let mut store = self.store.write_locked();
        let before = Before::of(store.as_ref());
        for entry in entries {
            self.last_applied = Some(entry.log_id);
            results.push(match entry.payload {
                EntryPayload::Blank => CommandResult::Done,
                EntryPayload::Normal(command) => ClusterState::apply(&mut store, command),
                EntryPayload::Membership(membership) => {
                    self.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                    CommandResult::Done
                }
            });
        }
        self.events
            .push(before.events(store.as_ref(), crate::log_time::now_nanos()));
        crate::metrics::instruments()
            .raft_apply_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.snapshots_built += 1;
        crate::metrics::instruments().raft_snapshots_built.inc();
        // A copy taken now: entries applied while it is written do not leak in.
        let store = self.store.read_locked().clone();
        SnapshotView {
            db: self.db.clone(),
            key: self.key.clone(),
            store,
            last_applied: self.last_applied,
            last_membership: self.last_membership.clone(),
            id: self.snapshots_built,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, Member>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<()> {
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: snapshot.into_inner(),
        };
        self.load(&stored)?;
        let keep = retained_wanted(self.store.read_locked().as_ref());
        write_snapshot(&self.db, &self.key, &stored, keep)
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>> {
        Ok(self.read_snapshot()?.map(|stored| Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        }))
    }
}

/// The store as it was when a snapshot was asked for.
pub struct SnapshotView {
    db: Arc<Database>,
    key: Arc<DataKey>,
    store: Option<ClusterState>,
    last_applied: Option<LogId<u64>>,
    last_membership: StoredMembership<u64, Member>,
    id: u64,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotView {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>> {
        let data =
            serde_json::to_vec(&self.store).map_err(|e| StorageIOError::read_state_machine(&e))?;
        let snapshot_id = match self.last_applied {
            Some(last) => format!("{}-{}-{}", last.leader_id, last.index, self.id),
            None => format!("--{}", self.id),
        };
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.last_membership.clone(),
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        write_snapshot(
            &self.db,
            &self.key,
            &stored,
            retained_wanted(self.store.as_ref()),
        )?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

/// How many replaced snapshots the store asks each manager to keep.
fn retained_wanted(store: Option<&ClusterState>) -> usize {
    store.and_then(|s| s.max_snapshots).unwrap_or(0) as usize
}

/// How many replaced snapshots this manager keeps now.
pub fn retained_snapshots(db: &Database) -> usize {
    let Ok(txn) = db.begin_read() else {
        return 0;
    };
    let Ok(table) = txn.open_table(SNAPSHOT) else {
        return 0;
    };
    table
        .range(RETAINED_PREFIX..)
        .map(|range| {
            range
                .filter_map(|entry| entry.ok())
                .take_while(|(k, _)| k.value().starts_with(RETAINED_PREFIX))
                .count()
        })
        .unwrap_or(0)
}

/// Keeps `snapshot` as the current one, durably; the one it replaces is
/// kept too while fewer than `keep` older ones are (`--max-snapshots`).
fn write_snapshot(
    db: &Database,
    key: &DataKey,
    snapshot: &StoredSnapshot,
    keep: usize,
) -> Result<()> {
    let signature = Some(snapshot.meta.signature());
    let plain = serde_json::to_vec(snapshot)
        .map_err(|e| StorageIOError::write_snapshot(signature.clone(), &e))?;
    let bytes = key
        .seal(&plain)
        .map_err(|e| StorageIOError::write_snapshot(signature.clone(), &e))?;
    let txn = db
        .begin_write()
        .map_err(|e| StorageIOError::write_snapshot(signature.clone(), &e))?;
    {
        let mut table = txn
            .open_table(SNAPSHOT)
            .map_err(|e| StorageIOError::write_snapshot(signature.clone(), &e))?;
        let replaced = table
            .insert(CURRENT, bytes.as_slice())
            .map_err(|e| StorageIOError::write_snapshot(signature.clone(), &e))?
            .map(|old| old.value().to_vec());
        if let Some(replaced) = replaced.filter(|_| keep > 0) {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let name = format!("{RETAINED_PREFIX}{nanos:030}");
            table
                .insert(name.as_str(), replaced.as_slice())
                .map_err(|e| StorageIOError::write_snapshot(signature.clone(), &e))?;
        }
        let retained: Vec<String> = table
            .range(RETAINED_PREFIX..)
            .map_err(|e| StorageIOError::write_snapshot(signature.clone(), &e))?
            .filter_map(|entry| entry.ok())
            .map(|(k, _)| k.value().to_owned())
            .take_while(|k| k.starts_with(RETAINED_PREFIX))
            .collect();
        for name in &retained[..retained.len().saturating_sub(keep)] {
            table
                .remove(name.as_str())
                .map_err(|e| StorageIOError::write_snapshot(signature.clone(), &e))?;
        }
    }
    tokio::task::block_in_place(|| txn.commit())
        .map_err(|e| StorageIOError::write_snapshot(signature, &e).into())
}
