//! `/events`: the swarm's service, node, network, secret, config and task
//! events as dockerd streams them (one JSON object a line), from the same
//! stream as `swarm events`: the changes the manager applies to its store.

use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;

use super::{
    ApiError, Call, Engine, Reply,
    filters::{self, Filters},
    streaming_reply, text,
};
use crate::{
    api::control::{Request, Response, SwarmEvent},
    log_time::now_nanos,
};

/// How long one request to the manager waits for a change.
const WAIT: Duration = Duration::from_millis(1000);

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
    "task",
    "volume",
];

pub async fn stream(engine: &Engine, call: &Call) -> Result<Reply, ApiError> {
    let mut accepted = vec!["type", "event", "scope", "label"];
    accepted.extend_from_slice(OBJECT_KEYS);
    let filters = filters::parse(call, &accepted)?;
    let until = match call.query("until").filter(|u| !u.is_empty()) {
        None => None,
        Some(raw) => Some(parse_time(raw)?),
    };
    let since = match call.query("since").filter(|s| !s.is_empty()) {
        None => None,
        Some(raw) => Some(parse_time(raw)?),
    };
    // What the manager keeps; only with `since` is any of it sent.
    let (kept, mut last) = events(engine, None, Duration::ZERO).await?;
    let kept: Vec<SwarmEvent> = match since {
        Some(since) => kept.into_iter().filter(|e| e.time_nanos >= since).collect(),
        None => Vec::new(),
    };
    let (sender, receiver) = mpsc::channel::<Bytes>(256);
    let engine = engine.clone();
    tokio::spawn(async move {
        let mut shutdown = engine.shutdown.clone();
        let send = |event: &SwarmEvent| {
            let message = event.docker_message();
            let mut line = serde_json::to_vec(&message).expect("plain data serializes");
            line.push(b'\n');
            (passes(&filters, &message), Bytes::from(line))
        };
        let mut batch = kept;
        loop {
            for event in &batch {
                if until.is_some_and(|until| event.time_nanos > until) {
                    return;
                }
                let (passes, line) = send(event);
                if passes && sender.send(line).await.is_err() {
                    return;
                }
            }
            if until.is_some_and(|until| now_nanos() >= until) {
                return;
            }
            let asked = tokio::select! {
                asked = events(&engine, Some(last), WAIT) => asked,
                _ = sender.closed() => return,
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            match asked {
                Ok((events, now_last)) => {
                    batch = events;
                    last = now_last;
                }
                // Leadership moving, or the node leaving: try again.
                Err(_) => {
                    batch = Vec::new();
                    tokio::time::sleep(WAIT).await;
                }
            }
        }
    });
    Ok(streaming_reply("application/json", receiver))
}

/// The manager's events after `after`, and the last number it gave.
async fn events(
    engine: &Engine,
    after: Option<u64>,
    wait: Duration,
) -> Result<(Vec<SwarmEvent>, u64), ApiError> {
    let request = Request::Events {
        after,
        wait_millis: wait.as_millis() as u64,
    };
    match engine.call(request).await? {
        Response::Events { events, last } => Ok((events, last)),
        other => Err(super::unexpected(&other)),
    }
}

/// `since`/`until` as Docker takes them: Unix seconds, with a fraction;
/// nanoseconds since the epoch.
fn parse_time(raw: &str) -> Result<i64, ApiError> {
    crate::log_time::parse_unix_timestamp(raw)
        .filter(|t| *t >= 0)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "invalid time {raw:?}: give Unix seconds, as 1700000000 or 1700000000.5"
            ))
        })
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
