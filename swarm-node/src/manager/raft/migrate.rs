//! A Raft store written before entries were sealed, sealed on first start.
//! The store is copied whole into a new file with every clear log entry and
//! snapshot sealed, then renamed over the old one: rewriting values in place
//! would leave their clear bytes in the B-tree's freed pages.

// redb's Error is large; it is what its calls return, once, on start.
#![allow(clippy::result_large_err)]

use std::{
    fs,
    path::{Path, PathBuf},
};

use redb::{Database, ReadableTable as _, ReadableTableMetadata as _, TableDefinition};

use super::{
    data_key::DataKey,
    log_store::{LOG, META},
    state_machine::SNAPSHOT,
};

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("sealing the Raft store {path} written before sealing: {message}")]
    Reseal { path: PathBuf, message: String },
}

/// Seals the clear values of the store at `path`, if any; says whether it
/// had any.
pub fn seal_clear_values(path: &Path, key: &DataKey) -> Result<bool, MigrateError> {
    let fail = |e: &dyn std::fmt::Display| MigrateError::Reseal {
        path: path.to_owned(),
        message: e.to_string(),
    };
    if !path.exists() || !holds_clear_values(path).map_err(|e| fail(&e))? {
        return Ok(false);
    }
    let new_path = path.with_extension("sealing");
    let _ = fs::remove_file(&new_path);
    {
        let old = Database::open(path).map_err(|e| fail(&e))?;
        let new = Database::create(&new_path).map_err(|e| fail(&e))?;
        let read = old.begin_read().map_err(|e| fail(&e))?;
        let write = new.begin_write().map_err(|e| fail(&e))?;
        copy(&read, &write, LOG, |v| seal(key, v)).map_err(|e| fail(&e))?;
        copy(&read, &write, SNAPSHOT, |v| seal(key, v)).map_err(|e| fail(&e))?;
        // The vote, the committed and purged log IDs: index and term only.
        copy(&read, &write, META, |v| Ok(v.to_vec())).map_err(|e| fail(&e))?;
        write.commit().map_err(|e| fail(&e))?;
    }
    fs::rename(&new_path, path).map_err(|e| fail(&e))?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| fail(&e))?;
    }
    tracing::info!(path = %path.display(), "Raft entries written before sealing are sealed now");
    Ok(true)
}

fn seal(key: &DataKey, value: &[u8]) -> Result<Vec<u8>, redb::Error> {
    if DataKey::is_sealed(value) {
        return Ok(value.to_vec());
    }
    key.seal(value)
        .map_err(|e| redb::Error::Io(std::io::Error::other(e.to_string())))
}

fn holds_clear_values(path: &Path) -> Result<bool, redb::Error> {
    let db = Database::open(path)?;
    let txn = db.begin_read()?;
    if let Some(log) = open_if_there(&txn, LOG)? {
        for row in log.iter()? {
            if !DataKey::is_sealed(row?.1.value()) {
                return Ok(true);
            }
        }
    }
    if let Some(snapshots) = open_if_there(&txn, SNAPSHOT)? {
        for row in snapshots.iter()? {
            if !DataKey::is_sealed(row?.1.value()) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

type Table<K> = redb::ReadOnlyTable<K, &'static [u8]>;

fn open_if_there<K: redb::Key + 'static>(
    txn: &redb::ReadTransaction,
    table: TableDefinition<K, &'static [u8]>,
) -> Result<Option<Table<K>>, redb::Error> {
    match txn.open_table(table) {
        Ok(table) => Ok(Some(table)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn copy<K: redb::Key + 'static>(
    read: &redb::ReadTransaction,
    write: &redb::WriteTransaction,
    table: TableDefinition<K, &'static [u8]>,
    value: impl Fn(&[u8]) -> Result<Vec<u8>, redb::Error>,
) -> Result<(), redb::Error> {
    let mut to = write.open_table(table)?;
    let Some(from) = open_if_there(read, table)? else {
        return Ok(());
    };
    if from.len()? == 0 {
        return Ok(());
    }
    for row in from.iter()? {
        let (k, v) = row?;
        to.insert(k.value(), value(v.value())?.as_slice())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LABEL: &[u8] = b"zone-label-value-7f3a";

    fn holds(path: &Path, needle: &[u8]) -> bool {
        fs::read(path)
            .unwrap()
            .windows(needle.len())
            .any(|w| w == needle)
    }

    #[test]
    fn clear_entries_and_snapshots_are_sealed_and_leave_no_trace() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft.redb");
        let key = DataKey::for_tests();
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut log = txn.open_table(LOG).unwrap();
                for index in 1..=50u64 {
                    let entry =
                        format!("{{\"index\":{index},\"label\":\"zone-label-value-7f3a\"}}");
                    log.insert(index, entry.as_bytes()).unwrap();
                }
                // One entry sealed already, as a store half-way through.
                log.insert(51, key.seal(b"sealed").unwrap().as_slice())
                    .unwrap();
                txn.open_table(SNAPSHOT)
                    .unwrap()
                    .insert(
                        "current",
                        b"{\"snapshot\":\"zone-label-value-7f3a\"}".as_slice(),
                    )
                    .unwrap();
                txn.open_table(META)
                    .unwrap()
                    .insert("vote", b"{\"term\":3}".as_slice())
                    .unwrap();
            }
            txn.commit().unwrap();
        }
        assert!(holds(&path, LABEL));

        assert!(seal_clear_values(&path, &key).unwrap());

        assert!(!holds(&path, LABEL), "a clear value is left in the file");
        let db = Database::open(&path).unwrap();
        let txn = db.begin_read().unwrap();
        let log = txn.open_table(LOG).unwrap();
        assert_eq!(log.len().unwrap(), 51);
        let first = key.open(log.get(1).unwrap().unwrap().value()).unwrap();
        assert_eq!(first, b"{\"index\":1,\"label\":\"zone-label-value-7f3a\"}");
        assert_eq!(
            key.open(log.get(51).unwrap().unwrap().value()).unwrap(),
            b"sealed"
        );
        let snapshot = txn.open_table(SNAPSHOT).unwrap();
        let current = key
            .open(snapshot.get("current").unwrap().unwrap().value())
            .unwrap();
        assert_eq!(current, b"{\"snapshot\":\"zone-label-value-7f3a\"}");
        let meta = txn.open_table(META).unwrap();
        assert_eq!(meta.get("vote").unwrap().unwrap().value(), b"{\"term\":3}");
        drop((log, snapshot, meta, txn, db));

        // A second start finds nothing to seal.
        assert!(!seal_clear_values(&path, &key).unwrap());
    }
}
