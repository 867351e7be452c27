//! The Raft log and vote, in redb (an embedded, crash-safe B-tree store).
//! Every write commits durably before it is acknowledged, which is what Raft
//! needs of a vote or an appended entry.

// openraft's StorageError and RPCError are large; they are what its traits return.
#![allow(clippy::result_large_err)]

use std::{fmt::Debug, ops::RangeBounds, sync::Arc};

use openraft::{
    Entry, LogId, LogState, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote,
    storage::{LogFlushed, RaftLogStorage},
};
use redb::{Database, ReadableTable as _, TableDefinition};

use super::{
    TypeConfig,
    data_key::{DataKey, DataKeyError},
};

pub(super) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
pub(super) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";

type Result<T> = std::result::Result<T, StorageError<u64>>;

#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    /// Entries are sealed with it on disk.
    key: Arc<DataKey>,
}

impl LogStore {
    pub fn open(db: Arc<Database>, key: Arc<DataKey>) -> Result<Self> {
        // Both tables exist from the first start on, so reads never miss them.
        let txn = db.begin_write().map_err(|e| StorageIOError::write(&e))?;
        txn.open_table(LOG).map_err(|e| StorageIOError::write(&e))?;
        txn.open_table(META)
            .map_err(|e| StorageIOError::write(&e))?;
        txn.commit().map_err(|e| StorageIOError::write(&e))?;
        Ok(Self { db, key })
    }

    fn decode_entry(&self, stored: &[u8]) -> std::result::Result<Entry<TypeConfig>, ReadError> {
        let bytes = self.key.open(stored)?;
        Ok(serde_json::from_slice(&bytes)?)
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let txn = self.db.begin_read().map_err(|e| StorageIOError::read(&e))?;
        let table = txn.open_table(META).map_err(|e| StorageIOError::read(&e))?;
        let Some(value) = table.get(key).map_err(|e| StorageIOError::read(&e))? else {
            return Ok(None);
        };
        serde_json::from_slice(value.value())
            .map(Some)
            .map_err(|e| StorageIOError::read(&e).into())
    }

    fn write_meta<T: serde::Serialize>(&self, key: &str, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec(value).map_err(|e| StorageIOError::write(&e))?;
        self.write(|txn| {
            txn.open_table(META)?.insert(key, bytes.as_slice())?;
            Ok(())
        })
    }

    /// Deletes the entries at `from..to` (and, when given, records the last
    /// purged ID in the same transaction).
    fn delete(&self, from: u64, to: u64, purged: Option<&LogId<u64>>) -> Result<()> {
        let purged = purged
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| StorageIOError::write(&e))?;
        self.write(|txn| {
            txn.open_table(LOG)?.retain_in(from..to, |_, _| false)?;
            if let Some(purged) = &purged {
                txn.open_table(META)?
                    .insert(LAST_PURGED, purged.as_slice())?;
            }
            Ok(())
        })
    }

    /// Reads the log table in one read transaction.
    fn read_log<T>(
        &self,
        read: impl FnOnce(&redb::ReadOnlyTable<u64, &[u8]>) -> std::result::Result<T, ReadError>,
    ) -> Result<T> {
        let txn = self
            .db
            .begin_read()
            .map_err(|e| StorageIOError::read_logs(&e))?;
        let log = txn
            .open_table(LOG)
            .map_err(|e| StorageIOError::read_logs(&e))?;
        read(&log).map_err(|e| StorageIOError::read_logs(&e).into())
    }

    /// One write transaction: `fill` writes, then it commits durably. redb's
    /// commit fsyncs; the runtime is told this thread blocks for it.
    fn write(
        &self,
        fill: impl FnOnce(&redb::WriteTransaction) -> std::result::Result<(), redb::Error>,
    ) -> Result<()> {
        let txn = self
            .db
            .begin_write()
            .map_err(|e| StorageIOError::write(&e))?;
        fill(&txn).map_err(|e| StorageIOError::write(&e))?;
        tokio::task::block_in_place(|| txn.commit()).map_err(|e| StorageIOError::write(&e).into())
    }
}

/// Why reading the log failed: the store, or an entry that does not decode.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error(transparent)]
    Store(#[from] redb::StorageError),
    #[error("undecodable log entry: {0}")]
    Entry(#[from] serde_json::Error),
    #[error(transparent)]
    Sealed(#[from] DataKeyError),
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>> {
        self.read_log(|log| {
            log.range(range)?
                .map(|item| self.decode_entry(item?.1.value()))
                .collect()
        })
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>> {
        let last_purged_log_id: Option<LogId<u64>> = self.read_meta(LAST_PURGED)?;
        let last = self.read_log(|log| {
            log.last()?
                .map(|(_, value)| Ok(self.decode_entry(value.value())?.log_id))
                .transpose()
        })?;
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last.or(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<()> {
        self.write_meta(VOTE, vote)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>> {
        self.read_meta(VOTE)
    }

    /// Kept so that a restarted manager applies what it knows was committed
    /// at once, without waiting to hear from a leader.
    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<()> {
        self.write_meta(COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>> {
        Ok(self.read_meta::<Option<LogId<u64>>>(COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let rows = entries
            .into_iter()
            .map(|entry| {
                let plain = serde_json::to_vec(&entry)?;
                Ok((entry.log_id.index, self.key.seal(&plain)?))
            })
            .collect::<std::result::Result<Vec<_>, ReadError>>()
            .map_err(|e| StorageIOError::write_logs(&e))?;
        let committed = self.write(|txn| {
            let mut log = txn.open_table(LOG)?;
            for (index, bytes) in &rows {
                log.insert(*index, bytes.as_slice())?;
            }
            Ok(())
        });
        callback.log_io_completed(
            committed
                .as_ref()
                .map(|_| ())
                .map_err(|e| std::io::Error::other(e.to_string())),
        );
        committed
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<()> {
        self.delete(log_id.index, u64::MAX, None)
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<()> {
        self.delete(0, log_id.index + 1, Some(&log_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 7), index),
            payload: EntryPayload::Blank,
        }
    }

    fn store(dir: &std::path::Path) -> LogStore {
        let db = Database::create(dir.join("raft.redb")).unwrap();
        LogStore::open(Arc::new(db), Arc::new(DataKey::for_tests())).unwrap()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn vote_log_and_purge_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = store(dir.path());
            log.save_vote(&Vote::new(3, 7)).await.unwrap();
            let txn = log.db.begin_write().unwrap();
            {
                let mut table = txn.open_table(LOG).unwrap();
                for index in 1..=10 {
                    let bytes = serde_json::to_vec(&entry(index)).unwrap();
                    table.insert(index, bytes.as_slice()).unwrap();
                }
            }
            txn.commit().unwrap();
            log.purge(entry(4).log_id).await.unwrap();
            log.truncate(entry(9).log_id).await.unwrap();
        }
        let mut log = store(dir.path());
        assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(3, 7)));
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(entry(4).log_id));
        assert_eq!(state.last_log_id, Some(entry(8).log_id));
        let kept: Vec<u64> = log
            .try_get_log_entries(0..100)
            .await
            .unwrap()
            .iter()
            .map(|e| e.log_id.index)
            .collect();
        assert_eq!(kept, vec![5, 6, 7, 8]);
    }
}
