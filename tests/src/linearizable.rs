//! A linearizability checker for histories of registers (Wing and Gong's
//! search with Lowe's memoisation, as Porcupine and Knossos do it): each
//! key is checked alone, since registers compose.
//!
//! An operation is invoked at one time and completes at a later one, or
//! never (its outcome unknown: a write that timed out may or may not have
//! taken effect). The history is linearizable when some order of the
//! operations respects real time (an operation that completed before
//! another was invoked comes first) and makes every read return the value
//! of the write before it (or the register's initial value).

use std::collections::{BTreeMap, HashSet};

/// What a client did to one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Wrote this value, and the write was acknowledged.
    Write(String),
    /// Wrote this value, and does not know whether it took effect.
    WriteUnknown(String),
    /// Read this value (`None`: the key was not set).
    Read(Option<String>),
}

/// One operation: `invoked` and `completed` in any monotonic unit
/// (`completed` is ignored for an unknown write, which never completes).
#[derive(Clone, Debug)]
pub struct Operation {
    pub key: String,
    pub action: Action,
    pub invoked: u64,
    pub completed: u64,
}

/// Why a key's history is not linearizable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anomaly {
    pub key: String,
    /// The key's operations, in invocation order, for the report.
    pub operations: Vec<String>,
}

/// Checks every key; the anomalies found (none: linearizable). Values
/// written must be unique per key.
pub fn check(history: &[Operation]) -> Vec<Anomaly> {
    // An unknown write whose value nobody read may be taken as never
    // done: with it, no read would have had another write before it. This
    // keeps the search from trying every subset of them.
    let read: HashSet<(&str, &str)> = history
        .iter()
        .filter_map(|op| match &op.action {
            Action::Read(Some(v)) => Some((op.key.as_str(), v.as_str())),
            _ => None,
        })
        .collect();
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in history {
        if let Action::WriteUnknown(v) = &op.action
            && !read.contains(&(op.key.as_str(), v.as_str()))
        {
            continue;
        }
        by_key.entry(&op.key).or_default().push(op);
    }
    by_key
        .into_iter()
        .filter(|(_, ops)| !Search::new(ops).run())
        .map(|(key, mut ops)| {
            ops.sort_by_key(|op| op.invoked);
            Anomaly {
                key: key.to_owned(),
                operations: ops.iter().map(|op| format!("{op:?}")).collect(),
            }
        })
        .collect()
}

/// The search over one key's operations.
struct Search<'a> {
    ops: Vec<&'a Operation>,
    /// (linearized set, register value) pairs already explored and failed.
    seen: HashSet<(Vec<u64>, Option<String>)>,
}

impl<'a> Search<'a> {
    fn new(ops: &[&'a Operation]) -> Self {
        let mut ops = ops.to_vec();
        ops.sort_by_key(|op| op.invoked);
        Self {
            ops,
            seen: HashSet::new(),
        }
    }

    fn completes(op: &Operation) -> u64 {
        match op.action {
            Action::WriteUnknown(_) => u64::MAX,
            _ => op.completed,
        }
    }

    fn run(&mut self) -> bool {
        let words = self.ops.len().div_ceil(64);
        self.linearize(&mut vec![0; words], None)
    }

    /// Whether the operations not in `done` can be linearized after
    /// `done`, starting from `value`.
    fn linearize(&mut self, done: &mut Vec<u64>, value: Option<String>) -> bool {
        let is_done = |done: &[u64], i: usize| done[i / 64] & (1 << (i % 64)) != 0;
        let pending: Vec<usize> = (0..self.ops.len()).filter(|&i| !is_done(done, i)).collect();
        // Only unknown writes left: they may never have happened.
        if pending
            .iter()
            .all(|&i| matches!(self.ops[i].action, Action::WriteUnknown(_)))
        {
            return true;
        }
        if !self.seen.insert((done.clone(), value.clone())) {
            return false;
        }
        // The next one must have been invoked before every pending one
        // completed.
        let horizon = pending
            .iter()
            .map(|&i| Self::completes(self.ops[i]))
            .min()
            .unwrap_or(u64::MAX);
        for &i in &pending {
            let op = self.ops[i];
            if op.invoked > horizon {
                break;
            }
            let next = match &op.action {
                Action::Write(v) | Action::WriteUnknown(v) => Some(v.clone()),
                Action::Read(seen) if *seen == value => value.clone(),
                Action::Read(_) => continue,
            };
            done[i / 64] |= 1 << (i % 64);
            let found = self.linearize(done, next);
            done[i / 64] &= !(1 << (i % 64));
            if found {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(action: Action, invoked: u64, completed: u64) -> Operation {
        Operation {
            key: "k".into(),
            action,
            invoked,
            completed,
        }
    }
    fn w(v: &str, i: u64, c: u64) -> Operation {
        op(Action::Write(v.into()), i, c)
    }
    fn r(v: Option<&str>, i: u64, c: u64) -> Operation {
        op(Action::Read(v.map(str::to_owned)), i, c)
    }

    #[test]
    fn sequential_and_concurrent_histories_that_hold() {
        assert!(
            check(&[
                w("1", 0, 1),
                r(Some("1"), 2, 3),
                w("2", 4, 5),
                r(Some("2"), 6, 7)
            ])
            .is_empty()
        );
        // A read concurrent with a write may see either value.
        assert!(check(&[w("1", 0, 1), w("2", 2, 6), r(Some("1"), 3, 4)]).is_empty());
        assert!(check(&[w("1", 0, 1), w("2", 2, 6), r(Some("2"), 3, 4)]).is_empty());
        // Before any write, nothing.
        assert!(check(&[r(None, 0, 1), w("1", 2, 3)]).is_empty());
    }

    #[test]
    fn stale_and_impossible_reads_are_found() {
        // Reads a value overwritten before it was invoked: stale.
        let stale = check(&[w("1", 0, 1), w("2", 2, 3), r(Some("1"), 4, 5)]);
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].key, "k");
        // Reads a value nobody wrote.
        assert_eq!(check(&[w("1", 0, 1), r(Some("9"), 2, 3)]).len(), 1);
        // Two sequential reads going back in time.
        let backwards = [
            w("1", 0, 10),
            w("2", 0, 10),
            r(Some("2"), 11, 12),
            r(Some("1"), 13, 14),
        ];
        assert_eq!(check(&backwards).len(), 1);
        // A read of a value before its write was invoked.
        assert_eq!(check(&[r(Some("1"), 0, 1), w("1", 2, 3)]).len(), 1);
    }

    #[test]
    fn unknown_writes_may_or_may_not_have_happened() {
        let unknown = |v: &str, i| op(Action::WriteUnknown(v.into()), i, 0);
        // Took effect, even long after it was invoked.
        assert!(
            check(&[
                w("1", 0, 1),
                unknown("2", 2),
                r(Some("1"), 3, 4),
                r(Some("2"), 50, 51)
            ])
            .is_empty()
        );
        // Never took effect.
        assert!(check(&[w("1", 0, 1), unknown("2", 2), r(Some("1"), 50, 51)]).is_empty());
        // But once seen, it cannot be undone.
        let undone = [
            w("1", 0, 1),
            unknown("2", 2),
            r(Some("2"), 3, 4),
            r(Some("1"), 5, 6),
        ];
        assert_eq!(check(&undone).len(), 1);
    }

    #[test]
    fn keys_are_checked_apart() {
        let mut other = w("1", 0, 1);
        other.key = "j".into();
        let history = [other, r(Some("1"), 2, 3)];
        let anomalies = check(&history);
        assert_eq!(anomalies.len(), 1);
        assert_eq!(anomalies[0].key, "k");
    }

    #[test]
    fn a_long_concurrent_history_holds() {
        // Three clients, 600 operations with overlapping windows.
        let mut history = Vec::new();
        let mut value = None;
        for i in 0..200u64 {
            let t = i * 10;
            history.push(w(&i.to_string(), t, t + 4));
            history.push(r(Some(&i.to_string()), t + 5, t + 9));
            history.push(r(value.as_deref(), t, t + 3));
            value = Some(i.to_string());
        }
        assert!(check(&history).is_empty());
        // The same with one read made stale.
        history[301] = r(Some("3"), 1005, 1009);
        assert_eq!(check(&history).len(), 1);
    }
}
