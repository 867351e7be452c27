//! Docker's list filters (`-f KEY=VALUE`, `?filters=`): the keys each list
//! accepts and how Docker matches each one. Values of one key are OR'ed,
//! different keys AND'ed. Both front doors (the `swarm` CLI's control
//! requests and the Engine API) filter with these rules, on the manager.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `node ls`.
pub const NODE_KEYS: &[&str] = &["id", "label", "membership", "name", "node.label", "role"];
/// `service ls` and `stack services`.
pub const SERVICE_KEYS: &[&str] = &["id", "label", "mode", "name"];
/// `service ps`, `node ps` and `stack ps`.
pub const TASK_KEYS: &[&str] = &["desired-state", "id", "name", "node"];
/// `network ls`.
pub const NETWORK_KEYS: &[&str] = &["driver", "id", "label", "name", "scope", "type"];
/// `secret ls` and `config ls`.
pub const PAYLOAD_KEYS: &[&str] = &["id", "label", "name"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// Docker's words, with the keys this list takes.
    #[error("invalid filter '{key}' (this list takes: {})", accepted.join(", "))]
    UnknownKey { key: String, accepted: Vec<String> },
    #[error("bad format of filter (expected name=value): {0:?}")]
    NotKeyValue(String),
}

/// The control API refuses a bad filter as any bad request.
impl From<FilterError> for super::ClusterError {
    fn from(err: FilterError) -> Self {
        super::ClusterError::Refused(err.to_string())
    }
}

/// A list's filters: each key with its values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filters(BTreeMap<String, Vec<String>>);

impl Filters {
    /// `-f KEY=VALUE` arguments, as Docker's CLI reads them.
    pub fn from_args<S: AsRef<str>>(args: &[S]) -> Result<Self, FilterError> {
        let mut filters = Self::default();
        for arg in args {
            let arg = arg.as_ref();
            let (key, value) = arg
                .split_once('=')
                .ok_or_else(|| FilterError::NotKeyValue(arg.to_owned()))?;
            filters.add(key.trim().to_lowercase(), value.to_owned());
        }
        Ok(filters)
    }

    /// `key` present, with or without values.
    pub fn ensure(&mut self, key: &str) {
        self.0.entry(key.to_owned()).or_default();
    }

    pub fn add(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.0.entry(key.into()).or_default().push(value.into());
    }

    /// Refuses a key the list does not take.
    pub fn check(&self, accepted: &[&str]) -> Result<(), FilterError> {
        match self.0.keys().find(|key| !accepted.contains(&key.as_str())) {
            Some(key) => Err(FilterError::UnknownKey {
                key: key.clone(),
                accepted: accepted.iter().map(|k| (*k).to_owned()).collect(),
            }),
            None => Ok(()),
        }
    }

    pub fn values(&self, key: &str) -> &[String] {
        self.0.get(key).map_or(&[], Vec::as_slice)
    }

    pub fn has(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// No value for `key`, or one of them equal to `value`.
    pub fn exact(&self, key: &str, value: &str) -> bool {
        !self.has(key) || self.values(key).iter().any(|v| v == value)
    }

    /// [`Filters::exact`], ignoring case (Docker's roles, modes, states).
    pub fn exact_folded(&self, key: &str, value: &str) -> bool {
        !self.has(key)
            || self
                .values(key)
                .iter()
                .any(|v| v.eq_ignore_ascii_case(value))
    }

    /// No value for `key`, or `text` starting with one of them (Docker
    /// matches swarm objects' names and IDs by prefix).
    pub fn prefix(&self, key: &str, text: &str) -> bool {
        !self.has(key)
            || self
                .values(key)
                .iter()
                .any(|v| text.starts_with(v.as_str()))
    }

    /// No value for `key`, or `text` containing one of them (networks).
    pub fn contains(&self, key: &str, text: &str) -> bool {
        !self.has(key) || self.values(key).iter().any(|v| text.contains(v.as_str()))
    }

    /// Every value of `key` (`KEY` or `KEY=VALUE`) among the labels
    /// `label` looks up (Docker ANDs label filters).
    pub fn labels_of<'a>(&self, key: &str, label: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.values(key).iter().all(|wanted| {
            let (name, value) = match wanted.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (wanted.as_str(), None),
            };
            match (label(name), value) {
                (Some(_), None) => true,
                (Some(have), Some(want)) => have == want,
                (None, _) => false,
            }
        })
    }

    /// `label` among a JSON object of labels.
    pub fn json_labels(&self, key: &str, labels: &serde_json::Value) -> bool {
        self.labels_of(key, |name| labels.get(name).and_then(|v| v.as_str()))
    }

    /// `label` among a map of labels.
    pub fn map_labels(&self, key: &str, labels: &BTreeMap<String, String>) -> bool {
        self.labels_of(key, |name| labels.get(name).map(String::as_str))
    }

    /// A node: ID and hostname by prefix, role exactly, labels; every
    /// listed node is an accepted member. As Docker's, `label` looks at
    /// engine labels and `node.label` at node labels.
    pub fn node_matches(&self, node: &NodeFacts<'_>) -> bool {
        self.prefix("id", node.id)
            && self.prefix("name", node.hostname)
            && self.exact_folded("role", node.role)
            && self.exact_folded("membership", "accepted")
            && self.map_labels("label", node.engine_labels)
            && self.map_labels("node.label", node.labels)
    }

    /// A service: ID and name by prefix, mode exactly, labels.
    pub fn service_matches(&self, service: &ServiceFacts<'_>) -> bool {
        self.prefix("id", service.id)
            && self.prefix("name", service.name)
            && self.exact_folded("mode", service.mode)
            && self.map_labels("label", service.labels)
    }

    /// A task: ID and name by prefix, desired state as Docker groups it.
    /// `node` is matched by the caller, which resolves node references.
    pub fn task_matches(&self, id: &str, name: &str, desired: &str) -> bool {
        self.prefix("id", id)
            && self.prefix("name", name)
            && (!self.has("desired-state")
                || self
                    .values("desired-state")
                    .iter()
                    .any(|wanted| desired_state_matches(wanted, desired)))
    }

    /// A network: name by substring, ID by prefix, and what every swarm
    /// network is (an overlay, swarm-scoped, user-made).
    pub fn network_matches(&self, id: &str, name: &str, labels: &BTreeMap<String, String>) -> bool {
        self.contains("name", name)
            && self.prefix("id", id)
            && self.exact("driver", "overlay")
            && self.exact("scope", "swarm")
            && self.exact("type", "custom")
            && self.map_labels("label", labels)
    }

    /// A secret or config: ID and name by prefix, labels.
    pub fn payload_matches(&self, id: &str, name: &str, labels: &BTreeMap<String, String>) -> bool {
        self.prefix("id", id) && self.prefix("name", name) && self.map_labels("label", labels)
    }
}

/// What a node filter looks at.
pub struct NodeFacts<'a> {
    pub id: &'a str,
    pub hostname: &'a str,
    /// `manager` or `worker`.
    pub role: &'a str,
    /// Set by `node update --label-add`.
    pub labels: &'a BTreeMap<String, String>,
    /// Its daemon's `--label`s.
    pub engine_labels: &'a BTreeMap<String, String>,
}

/// What a service filter looks at.
pub struct ServiceFacts<'a> {
    pub id: &'a str,
    pub name: &'a str,
    /// `replicated` or `global`.
    pub mode: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

/// Docker's `desired-state=VALUE`: `shutdown` takes every ended state.
fn desired_state_matches(wanted: &str, desired: &str) -> bool {
    let desired = desired.to_ascii_lowercase();
    match wanted.to_ascii_lowercase().as_str() {
        "shutdown" => matches!(
            desired.as_str(),
            "shutdown" | "remove" | "complete" | "failed"
        ),
        other => other == desired,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn arguments_parse_and_unknown_keys_are_refused() {
        let filters = Filters::from_args(&["name=web", "Label=tier=front", "name=db"]).unwrap();
        assert_eq!(filters.values("name"), ["web", "db"]);
        assert_eq!(filters.values("label"), ["tier=front"]);
        assert!(filters.check(SERVICE_KEYS).is_ok());
        let refused = Filters::from_args(&["colour=red"])
            .unwrap()
            .check(SERVICE_KEYS)
            .unwrap_err();
        assert_eq!(
            refused.to_string(),
            "invalid filter 'colour' (this list takes: id, label, mode, name)"
        );
        assert!(matches!(
            Filters::from_args(&["name"]),
            Err(FilterError::NotKeyValue(_))
        ));
    }

    #[test]
    fn one_key_ors_its_values_and_keys_and() {
        let tiers = labels(&[("tier", "front")]);
        let facts = |name| ServiceFacts {
            id: "abc123",
            name,
            mode: "replicated",
            labels: &tiers,
        };
        let filters = Filters::from_args(&["name=web", "name=db"]).unwrap();
        assert!(filters.service_matches(&facts("web-1")));
        assert!(filters.service_matches(&facts("db")));
        assert!(!filters.service_matches(&facts("cache")));
        let both = Filters::from_args(&["name=web", "mode=global"]).unwrap();
        assert!(!both.service_matches(&facts("web")));
        let by_id = Filters::from_args(&["id=abc", "mode=Replicated"]).unwrap();
        assert!(by_id.service_matches(&facts("x")));
    }

    #[test]
    fn labels_match_by_key_or_key_and_value() {
        let have = labels(&[("tier", "front"), ("zone", "")]);
        let matches = |arg: &str| {
            Filters::from_args(&[arg])
                .unwrap()
                .map_labels("label", &have)
        };
        assert!(matches("label=tier"));
        assert!(matches("label=tier=front"));
        assert!(!matches("label=tier=back"));
        assert!(matches("label=zone"));
        assert!(!matches("label=rack"));
        // Two label filters must both hold.
        let both = Filters::from_args(&["label=tier", "label=rack"]).unwrap();
        assert!(!both.map_labels("label", &have));
    }

    #[test]
    fn tasks_nodes_and_networks_match_as_docker() {
        let shutdown = Filters::from_args(&["desired-state=shutdown"]).unwrap();
        assert!(shutdown.task_matches("t1", "web.1", "Complete"));
        assert!(!shutdown.task_matches("t1", "web.1", "Running"));
        let running = Filters::from_args(&["desired-state=running", "name=web.1"]).unwrap();
        assert!(running.task_matches("t1", "web.1", "Running"));
        assert!(!running.task_matches("t1", "web.2", "Running"));

        let zone = labels(&[("zone", "east")]);
        let disk = labels(&[("disk", "ssd")]);
        let node = NodeFacts {
            id: "n1abc",
            hostname: "h1",
            role: "manager",
            labels: &zone,
            engine_labels: &disk,
        };
        for (arg, expected) in [
            ("role=manager", true),
            ("role=worker", false),
            ("node.label=zone=east", true),
            ("node.label=disk", false),
            ("label=disk=ssd", true),
            ("label=zone", false),
            ("membership=accepted", true),
            ("membership=pending", false),
            ("name=h2", false),
        ] {
            let filters = Filters::from_args(&[arg]).unwrap();
            assert_eq!(filters.node_matches(&node), expected, "{arg}");
        }

        let none = BTreeMap::new();
        let network = |arg: &str| {
            Filters::from_args(&[arg])
                .unwrap()
                .network_matches("abcdef", "backend-net", &none)
        };
        assert!(network("name=end"));
        assert!(network("driver=overlay"));
        assert!(!network("driver=bridge"));
        assert!(network("scope=swarm"));
        assert!(!network("type=builtin"));
        assert!(!network("id=bcd"));
    }
}
