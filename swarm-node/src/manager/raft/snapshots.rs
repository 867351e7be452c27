//! When a manager snapshots its store: every `--snapshot-interval`
//! entries, a setting of the swarm that can change while Raft runs, so
//! openraft's own policy (fixed at start) is off and this task asks.

use super::{Raft, SNAPSHOT_EVERY, SharedStore};
use crate::lock::ReadWriteLocked as _;

/// Runs until Raft shuts down: after each change of the metrics, asks for
/// a snapshot once the entries applied since the last one (or since the
/// last ask) reach the interval.
pub async fn trigger(raft: Raft, store: SharedStore) {
    let mut metrics = raft.metrics();
    let mut asked_at = 0;
    while metrics.changed().await.is_ok() {
        let (applied, snapshot) = {
            let m = metrics.borrow();
            (
                m.last_applied.map_or(0, |l| l.index),
                m.snapshot.map_or(0, |l| l.index),
            )
        };
        let interval = store
            .read_locked()
            .as_ref()
            .map_or(SNAPSHOT_EVERY, |s| s.snapshot_interval());
        if due(applied, snapshot.max(asked_at), interval) {
            asked_at = applied;
            if let Err(err) = raft.trigger().snapshot().await {
                tracing::debug!(error = %err, "asking for a snapshot failed");
                return;
            }
        }
    }
}

fn due(applied: u64, since: u64, interval: u64) -> bool {
    applied >= since.saturating_add(interval)
}

#[cfg(test)]
mod tests {
    use super::due;

    #[test]
    fn a_snapshot_is_due_once_the_interval_has_been_applied() {
        assert!(!due(0, 0, 1000));
        assert!(!due(999, 0, 1000));
        assert!(due(1000, 0, 1000));
        assert!(!due(1500, 1000, 1000));
        assert!(due(2000, 1000, 1000));
        assert!(due(20, 10, 10));
    }
}
