//! `?filters=` as Docker encodes it (`{"key": {"value": true}}`, or the
//! older `{"key": ["value"]}`), and the ways Docker matches each key.

use std::collections::BTreeMap;

use super::{ApiError, Call};

/// A list's filters: each key with its values.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Filters(BTreeMap<String, Vec<String>>);

impl Filters {
    /// The call's filters; a key not in `accepted` is refused as dockerd
    /// refuses it.
    pub fn parse(call: &Call, accepted: &[&str]) -> Result<Self, ApiError> {
        let Some(raw) = call.query("filters").filter(|f| !f.trim().is_empty()) else {
            return Ok(Self::default());
        };
        let value: serde_json::Value = serde_json::from_str(raw)
            .map_err(|e| ApiError::bad_request(format!("invalid filter: {e}")))?;
        let object = value
            .as_object()
            .ok_or_else(|| ApiError::bad_request("invalid filter: not a JSON object"))?;
        let mut filters = BTreeMap::new();
        for (key, values) in object {
            if !accepted.contains(&key.as_str()) {
                return Err(ApiError::bad_request(format!("invalid filter '{key}'")));
            }
            let values: Vec<String> = match values {
                serde_json::Value::Object(map) => map
                    .iter()
                    .filter(|(_, on)| on.as_bool() != Some(false))
                    .map(|(v, _)| v.clone())
                    .collect(),
                serde_json::Value::Array(items) => items
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "invalid filter '{key}': its values must be an object or a list"
                    )));
                }
            };
            filters.insert(key.clone(), values);
        }
        Ok(Self(filters))
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

    /// Every `label` value (`KEY` or `KEY=VALUE`) among `labels`.
    pub fn labels(&self, labels: &serde_json::Value) -> bool {
        self.labels_of("label", labels)
    }

    /// Every value of `key` (`KEY` or `KEY=VALUE`) among `labels`.
    pub fn labels_of(&self, key: &str, labels: &serde_json::Value) -> bool {
        self.values(key).iter().all(|wanted| {
            let (key, value) = match wanted.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (wanted.as_str(), None),
            };
            match (labels.get(key).and_then(|v| v.as_str()), value) {
                (Some(_), None) => true,
                (Some(have), Some(want)) => have == want,
                (None, _) => false,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(filters: &str) -> Call {
        Call {
            method: hyper::Method::GET,
            path: vec![],
            query: vec![("filters".into(), filters.into())],
            headers: Default::default(),
            body: Default::default(),
        }
    }

    #[test]
    fn both_encodings_parse_and_unknown_keys_are_refused() {
        let new = Filters::parse(&call(r#"{"label":{"a=b":true}}"#), &["label"]).unwrap();
        let old = Filters::parse(&call(r#"{"label":["a=b"]}"#), &["label"]).unwrap();
        assert_eq!(new, old);
        assert!(new.labels(&serde_json::json!({"a": "b"})));
        assert!(!new.labels(&serde_json::json!({"a": "c"})));
        let refused = Filters::parse(&call(r#"{"colour":{"red":true}}"#), &["label"]).unwrap_err();
        assert_eq!(refused.message, "invalid filter 'colour'");
        assert!(Filters::parse(&call("{not json"), &["label"]).is_err());
    }
}
