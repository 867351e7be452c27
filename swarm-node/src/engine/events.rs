//! `/events`: the swarm's service, node, network, secret and config events
//! as dockerd streams them (one JSON object a line). They are found by
//! comparing what the control API lists, twice a second, with what it
//! listed before: a create, an update (a new version, or a node's state
//! changing) or a removal, each once.

use std::{collections::BTreeMap, time::Duration};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;

use super::{
    ApiError, Call, Engine, Reply,
    filters::{self, Filters},
    streaming_reply, text,
};
use crate::{
    api::{control::Request, mounts::PayloadKind},
    clock::now_millis,
};

/// How often the objects are compared.
const PERIOD: Duration = Duration::from_millis(500);

/// Filter keys that name an object: an event passes when its actor's ID
/// or name starts with one of the values.
const OBJECT_KEYS: &[&str] = &[
    "config",
    "container",
    "daemon",
    "image",
    "network",
    "node",
    "plugin",
    "secret",
    "service",
    "volume",
];

/// One object as last seen: its name, what changes with an update, and
/// the attributes an update event reports old and new.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    name: String,
    revision: String,
    attributes: BTreeMap<&'static str, String>,
}

type Snapshot = BTreeMap<(&'static str, String), Seen>;

pub async fn stream(engine: &Engine, call: &Call) -> Result<Reply, ApiError> {
    let mut accepted = vec!["type", "event", "scope", "label"];
    accepted.extend_from_slice(OBJECT_KEYS);
    let filters = filters::parse(call, &accepted)?;
    let until = match call.query("until").filter(|u| !u.is_empty()) {
        None => None,
        Some(raw) => Some(parse_time(raw)?),
    };
    if let Some(since) = call.query("since").filter(|s| !s.is_empty()) {
        parse_time(since)?;
    }
    let mut before = snapshot(engine).await?;
    let (sender, receiver) = mpsc::channel::<Bytes>(256);
    let engine = engine.clone();
    tokio::spawn(async move {
        let mut shutdown = engine.shutdown.clone();
        loop {
            if until.is_some_and(|until| now_millis() >= until) {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(PERIOD) => {}
                _ = sender.closed() => return,
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            let Ok(now) = snapshot(&engine).await else {
                // Leadership moving, or the node leaving: try again.
                continue;
            };
            for event in changes(&before, &now, now_millis()) {
                if passes(&filters, &event) {
                    let mut line = serde_json::to_vec(&event).expect("plain data serializes");
                    line.push(b'\n');
                    if sender.send(Bytes::from(line)).await.is_err() {
                        return;
                    }
                }
            }
            before = now;
        }
    });
    Ok(streaming_reply("application/json", receiver))
}

/// `since`/`until` as Docker takes them: Unix seconds, with a fraction.
fn parse_time(raw: &str) -> Result<u64, ApiError> {
    raw.parse::<f64>()
        .ok()
        .filter(|t| *t >= 0.0)
        .map(|t| (t * 1000.0) as u64)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "invalid time {raw:?}: give Unix seconds, as 1700000000 or 1700000000.5"
            ))
        })
}

/// What the control API lists now, by kind and ID.
async fn snapshot(engine: &Engine) -> Result<Snapshot, ApiError> {
    let mut seen = Snapshot::new();
    for service in array(engine.json(Request::SwarmServiceObjects).await?) {
        let replicas = &service["Spec"]["Mode"]["Replicated"]["Replicas"];
        let mut attributes = BTreeMap::new();
        attributes.insert(
            "image",
            text(&service["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]),
        );
        if !replicas.is_null() {
            attributes.insert("replicas", text(replicas));
        }
        if !service["UpdateStatus"]["State"].is_null() {
            attributes.insert("updatestate", text(&service["UpdateStatus"]["State"]));
        }
        seen.insert(
            ("service", text(&service["ID"])),
            Seen {
                name: text(&service["Spec"]["Name"]),
                revision: text(&service["Version"]["Index"]),
                attributes,
            },
        );
    }
    for node in array(engine.json(Request::NodeObjects).await?) {
        let mut attributes = BTreeMap::new();
        attributes.insert("availability", text(&node["Spec"]["Availability"]));
        attributes.insert("role", text(&node["Spec"]["Role"]));
        attributes.insert("state", text(&node["Status"]["State"]));
        if !node["ManagerStatus"].is_null() {
            attributes.insert("leader", text(&node["ManagerStatus"]["Leader"]));
            attributes.insert("reachability", text(&node["ManagerStatus"]["Reachability"]));
        }
        seen.insert(
            ("node", text(&node["ID"])),
            Seen {
                name: text(&node["Description"]["Hostname"]),
                revision: text(&node["Version"]["Index"]),
                attributes,
            },
        );
    }
    for network in array(
        engine
            .json(Request::SwarmNetworkList {
                filters: Default::default(),
            })
            .await?,
    ) {
        seen.insert(
            ("network", text(&network["ID"])),
            Seen {
                name: text(&network["Name"]),
                revision: String::new(),
                attributes: BTreeMap::new(),
            },
        );
    }
    for (kind, word) in [
        (PayloadKind::Secret, "secret"),
        (PayloadKind::Config, "config"),
    ] {
        for payload in array(
            engine
                .json(Request::PayloadList {
                    kind,
                    filters: Default::default(),
                })
                .await?,
        ) {
            seen.insert(
                (word, text(&payload["ID"])),
                Seen {
                    name: text(&payload["Name"]),
                    revision: text(&payload["UpdatedAt"]),
                    attributes: BTreeMap::new(),
                },
            );
        }
    }
    Ok(seen)
}

fn array(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items,
        _ => Vec::new(),
    }
}

/// The events that take `before` to `now`, stamped `at` (milliseconds).
fn changes(before: &Snapshot, now: &Snapshot, at: u64) -> Vec<Value> {
    let mut events = Vec::new();
    let event = |kind: &str, action: &str, id: &str, attributes: BTreeMap<String, String>| {
        serde_json::json!({
            "Type": kind,
            "Action": action,
            "Actor": {"ID": id, "Attributes": attributes},
            "scope": "swarm",
            "time": at / 1000,
            "timeNano": u128::from(at) * 1_000_000,
        })
    };
    for ((kind, id), seen) in now {
        let named = || BTreeMap::from([("name".to_owned(), seen.name.clone())]);
        match before.get(&(*kind, id.clone())) {
            None => events.push(event(kind, "create", id, named())),
            Some(old) if old != seen => {
                let mut attributes = named();
                for (key, value) in &seen.attributes {
                    let previous = old.attributes.get(key);
                    if previous != Some(value) {
                        if let Some(previous) = previous {
                            attributes.insert(format!("{key}.old"), previous.clone());
                        }
                        attributes.insert(format!("{key}.new"), value.clone());
                    }
                }
                events.push(event(kind, "update", id, attributes));
            }
            Some(_) => {}
        }
    }
    for ((kind, id), old) in before {
        if !now.contains_key(&(*kind, id.clone())) {
            let attributes = BTreeMap::from([("name".to_owned(), old.name.clone())]);
            events.push(event(kind, "remove", id, attributes));
        }
    }
    events
}

/// Docker's event filters: every key given must match (values of one key
/// are alternatives).
fn passes(filters: &Filters, event: &Value) -> bool {
    let id = text(&event["Actor"]["ID"]);
    let name = text(&event["Actor"]["Attributes"]["name"]);
    filters.exact("type", &text(&event["Type"]))
        && filters.exact("event", &text(&event["Action"]))
        && filters.exact("scope", "swarm")
        && filters.json_labels("label", &event["Actor"]["Attributes"])
        && OBJECT_KEYS.iter().all(|key| {
            !filters.has(key)
                || filters
                    .values(key)
                    .iter()
                    .any(|v| id.starts_with(v.as_str()) || name.starts_with(v.as_str()))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(name: &str, revision: &str, replicas: &str) -> Seen {
        Seen {
            name: name.into(),
            revision: revision.into(),
            attributes: BTreeMap::from([("replicas", replicas.to_owned())]),
        }
    }

    #[test]
    fn creates_updates_and_removals_are_each_reported_once() {
        let before = Snapshot::from([
            (("service", "a".to_owned()), seen("web", "1", "1")),
            (("service", "b".to_owned()), seen("old", "1", "1")),
        ]);
        let now = Snapshot::from([
            (("service", "a".to_owned()), seen("web", "2", "3")),
            (("node", "n".to_owned()), seen("node1", "1", "0")),
        ]);
        let events = changes(&before, &now, 1_500);
        let actions: Vec<(String, String)> = events
            .iter()
            .map(|e| (text(&e["Type"]), text(&e["Action"])))
            .collect();
        assert_eq!(
            actions,
            [
                ("node".into(), "create".into()),
                ("service".into(), "update".into()),
                ("service".into(), "remove".into())
            ]
        );
        let update = &events[1]["Actor"]["Attributes"];
        assert_eq!(update["replicas.old"], "1");
        assert_eq!(update["replicas.new"], "3");
        assert_eq!(events[1]["timeNano"], 1_500_000_000u64);
        assert!(changes(&now, &now, 2_000).is_empty());
    }
}
