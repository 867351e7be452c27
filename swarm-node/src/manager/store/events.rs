//! `swarm events`: what changed in the store, found as each batch of Raft
//! entries is applied, by comparing a digest of every object (its name,
//! version and the attributes an update reports) before and after. Each
//! manager keeps the latest [`RETAINED`] events in memory, as dockerd does.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Condvar, Mutex},
    time::Duration,
};

use super::ClusterState;
use crate::api::control::SwarmEvent;

/// Events each manager keeps for `--since` (Docker keeps 1000 too).
pub const RETAINED: usize = 1000;

/// One object as the events see it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Digest {
    name: String,
    version: u64,
    /// Reported old and new on an update.
    attributes: BTreeMap<&'static str, String>,
}

type Digests = BTreeMap<(&'static str, String), Digest>;

/// Every object of `state` an event can name.
fn digests(state: Option<&ClusterState>) -> Digests {
    let mut all = Digests::new();
    let Some(state) = state else {
        return all;
    };
    for node in state.nodes.values() {
        let attributes = BTreeMap::from([
            (
                "availability",
                format!("{:?}", node.availability).to_lowercase(),
            ),
            ("role", node.role.to_string()),
        ]);
        all.insert(
            ("node", node.id.clone()),
            Digest {
                name: node.hostname.clone(),
                version: node.version,
                attributes,
            },
        );
    }
    for service in state.services.values() {
        let mut attributes = BTreeMap::new();
        if let crate::api::specs::ServiceMode::Replicated { replicas } = service.spec.mode {
            attributes.insert("replicas", replicas.to_string());
        }
        all.insert(
            ("service", service.id.clone()),
            Digest {
                name: service.spec.name.clone(),
                version: service.version,
                attributes,
            },
        );
    }
    for network in state.networks.values() {
        all.insert(
            ("network", network.id.clone()),
            Digest {
                name: network.name.clone(),
                version: 0,
                attributes: BTreeMap::new(),
            },
        );
    }
    for (kind, payloads) in [("secret", &state.secrets), ("config", &state.configs)] {
        for payload in payloads.values() {
            all.insert(
                (kind, payload.id.clone()),
                Digest {
                    name: payload.name.clone(),
                    version: payload.version,
                    attributes: BTreeMap::new(),
                },
            );
        }
    }
    for task in state.tasks.values() {
        let service = state
            .services
            .get(&task.service_id)
            .map_or(task.service_id.as_str(), |s| s.spec.name.as_str());
        all.insert(
            ("task", task.id.clone()),
            Digest {
                name: task.name(service),
                version: 0,
                attributes: BTreeMap::from([
                    ("state", task.status.state.word().to_lowercase()),
                    ("desired-state", task.desired.word().to_lowercase()),
                ]),
            },
        );
    }
    all
}

/// A snapshot of the store's objects, taken before a batch is applied.
pub struct Before(Digests);

impl Before {
    pub fn of(state: Option<&ClusterState>) -> Self {
        Self(digests(state))
    }

    /// The events between this and `after`, stamped `time_nanos`: removals,
    /// then creations and updates, each kind in a fixed order.
    pub fn events(&self, after: Option<&ClusterState>, time_nanos: i64) -> Vec<SwarmEvent> {
        let after = digests(after);
        let before = &self.0;
        let event = |(kind, id): &(&'static str, String),
                     action: &str,
                     attributes: BTreeMap<String, String>| SwarmEvent {
            seq: 0,
            time_nanos,
            kind: (*kind).to_owned(),
            action: action.to_owned(),
            id: id.clone(),
            attributes,
        };
        let named = |digest: &Digest| BTreeMap::from([("name".to_owned(), digest.name.clone())]);
        let mut events = Vec::new();
        for (key, old) in before {
            if !after.contains_key(key) {
                events.push(event(key, "remove", named(old)));
            }
        }
        for (key, new) in &after {
            match before.get(key) {
                None => {
                    let mut attributes = named(new);
                    for (k, v) in &new.attributes {
                        attributes.insert((*k).to_owned(), v.clone());
                    }
                    events.push(event(key, "create", attributes));
                }
                Some(old) if old != new => {
                    let mut attributes = named(new);
                    for (k, v) in &new.attributes {
                        let was = old.attributes.get(k);
                        if was != Some(v) {
                            attributes.insert(format!("{k}.new"), v.clone());
                            attributes.insert(format!("{k}.old"), was.cloned().unwrap_or_default());
                        }
                    }
                    events.push(event(key, "update", attributes));
                }
                Some(_) => {}
            }
        }
        events
    }
}

/// The latest events, numbered, and a way to wait for more.
#[derive(Default)]
pub struct EventLog {
    events: Mutex<(u64, VecDeque<SwarmEvent>)>,
    added: Condvar,
}

impl EventLog {
    pub fn push(&self, events: Vec<SwarmEvent>) {
        if events.is_empty() {
            return;
        }
        let mut guard = self
            .events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (next, log) = &mut *guard;
        for mut event in events {
            *next += 1;
            event.seq = *next;
            log.push_back(event);
            if log.len() > RETAINED {
                log.pop_front();
            }
        }
        self.added.notify_all();
    }

    /// The events numbered after `after` (all kept when `None`), waiting up
    /// to `wait` for one when there is none yet; and the last number given.
    pub fn after(&self, after: Option<u64>, wait: Duration) -> (Vec<SwarmEvent>, u64) {
        let guard = self
            .events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let newer = |(next, _): &mut (u64, VecDeque<SwarmEvent>)| after.is_some_and(|a| *next <= a);
        let (guard, _) = self
            .added
            .wait_timeout_while(guard, wait, newer)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (next, log) = &*guard;
        let events = log
            .iter()
            .filter(|e| after.is_none_or(|a| e.seq > a))
            .cloned()
            .collect();
        (events, *next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::nodes::{Availability, Role};
    use crate::manager::store::fixtures;

    #[test]
    fn creates_updates_and_removals_are_each_reported_once_with_what_changed() {
        let before_state = fixtures::store(&[("n1", Role::Manager), ("n2", Role::Worker)]);
        let before = Before::of(Some(&before_state));
        let mut after = before_state.clone();
        let n2 = after.nodes.get_mut("n2").unwrap();
        n2.availability = Availability::Drain;
        n2.version += 1;
        after.nodes.remove("n1");
        after
            .nodes
            .insert("n3".into(), fixtures::node("n3", Role::Worker));
        let events = before.events(Some(&after), 7);
        let actions: Vec<(&str, &str, &str)> = events
            .iter()
            .map(|e| (e.kind.as_str(), e.action.as_str(), e.id.as_str()))
            .collect();
        assert_eq!(
            actions,
            [
                ("node", "remove", "n1"),
                ("node", "update", "n2"),
                ("node", "create", "n3")
            ]
        );
        let update = &events[1].attributes;
        assert_eq!(update["availability.old"], "active");
        assert_eq!(update["availability.new"], "drain");
        assert!(!update.contains_key("role.new"));
        assert_eq!(events[1].time_nanos, 7);
        assert!(Before::of(Some(&after)).events(Some(&after), 8).is_empty());
    }

    #[test]
    fn the_log_numbers_events_keeps_the_latest_and_waits_for_more() {
        let log = EventLog::default();
        let event = |id: &str| SwarmEvent {
            seq: 0,
            time_nanos: 0,
            kind: "service".into(),
            action: "create".into(),
            id: id.into(),
            attributes: BTreeMap::new(),
        };
        log.push((0..RETAINED + 5).map(|i| event(&i.to_string())).collect());
        let (kept, last) = log.after(None, Duration::ZERO);
        assert_eq!(kept.len(), RETAINED);
        assert_eq!(last, (RETAINED + 5) as u64);
        assert_eq!(kept[0].seq, 6);
        let started = std::time::Instant::now();
        let (none, same) = log.after(Some(last), Duration::from_millis(50));
        assert!(none.is_empty());
        assert_eq!(same, last);
        assert!(started.elapsed() >= Duration::from_millis(50));
        log.push(vec![event("new")]);
        let (new, _) = log.after(Some(last), Duration::from_secs(5));
        assert_eq!(new.len(), 1);
        assert_eq!(new[0].id, "new");
    }
}
