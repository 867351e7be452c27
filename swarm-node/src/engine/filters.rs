//! `?filters=` as Docker encodes it (`{"key": {"value": true}}`, or the
//! older `{"key": ["value"]}`), and the ways Docker matches each key.

use std::collections::BTreeMap;

use crate::api::filters::FilterError;
pub use crate::api::filters::Filters;

use super::{ApiError, Call};

/// The call's filters; a key not in `accepted` is refused as dockerd
/// refuses it.
pub fn parse(call: &Call, accepted: &[&str]) -> Result<Filters, ApiError> {
    let Some(raw) = call.query("filters").filter(|f| !f.trim().is_empty()) else {
        return Ok(Filters::default());
    };
    let value: serde_json::Value = serde_json::from_str(raw)
        .map_err(|e| ApiError::bad_request(format!("invalid filter: {e}")))?;
    let object = value
        .as_object()
        .ok_or_else(|| ApiError::bad_request("invalid filter: not a JSON object"))?;
    let mut filters = Filters::default();
    for (key, values) in object {
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
        // A key given with no values still counts (`_up-to-date`).
        filters.ensure(key);
        for value in values {
            filters.add(key.clone(), value);
        }
    }
    filters.check(accepted).map_err(|err| match err {
        // dockerd's exact words: clients match on them.
        FilterError::UnknownKey { key, .. } => {
            ApiError::bad_request(format!("invalid filter '{key}'"))
        }
        other => ApiError::bad_request(other.to_string()),
    })?;
    Ok(filters)
}

/// A Docker object's `Labels` as a map, for the shared matchers.
pub fn label_map(labels: &serde_json::Value) -> BTreeMap<String, String> {
    labels
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect()
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
        let new = parse(&call(r#"{"label":{"a=b":true}}"#), &["label"]).unwrap();
        let old = parse(&call(r#"{"label":["a=b"]}"#), &["label"]).unwrap();
        assert_eq!(new, old);
        assert!(new.json_labels("label", &serde_json::json!({"a": "b"})));
        assert!(!new.json_labels("label", &serde_json::json!({"a": "c"})));
        let refused = parse(&call(r#"{"colour":{"red":true}}"#), &["label"]).unwrap_err();
        assert_eq!(refused.message, "invalid filter 'colour'");
        assert!(parse(&call("{not json"), &["label"]).is_err());
    }
}
