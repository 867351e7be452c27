//! `/services` and `/tasks`, with their logs.

use std::{collections::BTreeMap, time::Duration};

use bollard::models as docker;
use bytes::Bytes;
use hyper::{Method, StatusCode};
use rand::seq::SliceRandom as _;
use serde_json::Value;
use tokio::sync::mpsc;

use super::{
    ApiError, Call, Engine, Reply, empty_reply, filters, json_reply, no_route, streaming_reply,
    text,
};
use crate::{
    api::{
        assignments::LogLine,
        control::{Request, Response, ServiceReplaceRequest, TaskOutput},
        docker::from_service_spec,
        filters::ServiceFacts,
    },
    log_time,
};

/// How often followed logs ask the nodes for more.
const FOLLOW_PERIOD: Duration = Duration::from_secs(1);

pub async fn route(engine: &Engine, call: &Call, path: &[&str]) -> Result<Reply, ApiError> {
    match (&call.method, path) {
        (&Method::GET, ["services"]) => list_services(engine, call).await,
        (&Method::POST, ["services", "create"]) => create(engine, call).await,
        (&Method::GET, ["services", service]) => {
            let mut object = inspect(engine, service).await?;
            // Docker counts tasks only in lists.
            if let Some(map) = object.as_object_mut() {
                map.remove("ServiceStatus");
            }
            Ok(json_reply(StatusCode::OK, &object))
        }
        (&Method::POST, ["services", service, "update"]) => update(engine, call, service).await,
        (&Method::DELETE, ["services", service]) => {
            engine
                .call(Request::SwarmServiceRemove {
                    services: vec![(*service).to_owned()],
                })
                .await?;
            Ok(empty_reply(StatusCode::OK))
        }
        (&Method::GET, ["services", service, "logs"]) => {
            let object = inspect(engine, service).await?;
            let id = text(&object["ID"]);
            logs(engine, call, id.clone(), id).await
        }
        (&Method::GET, ["tasks"]) => list_tasks(engine, call).await,
        (&Method::GET, ["tasks", task]) => {
            let object = find_task(engine, task).await?;
            Ok(json_reply(StatusCode::OK, &object))
        }
        (&Method::GET, ["tasks", task, "logs"]) => {
            let object = find_task(engine, task).await?;
            logs(
                engine,
                call,
                text(&object["ID"]),
                text(&object["ServiceID"]),
            )
            .await
        }
        _ => Err(no_route(call)),
    }
}

async fn inspect(engine: &Engine, service: &str) -> Result<Value, ApiError> {
    engine
        .first(Request::SwarmServiceInspect {
            service: service.to_owned(),
        })
        .await
}

async fn list_services(engine: &Engine, call: &Call) -> Result<Reply, ApiError> {
    let filters = filters::parse(call, &["id", "label", "mode", "name", "runtime"])?;
    let status = call.flag("status");
    let services = engine.json(Request::SwarmServiceObjects).await?;
    let shown: Vec<Value> = services
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| {
            // Docker's words for the `mode` filter.
            let spec_mode = &s["Spec"]["Mode"];
            let mode = if spec_mode["Global"].is_object() {
                "global"
            } else if spec_mode["ReplicatedJob"].is_object() {
                "replicated-job"
            } else if spec_mode["GlobalJob"].is_object() {
                "global-job"
            } else {
                "replicated"
            };
            filters.service_matches(&ServiceFacts {
                id: &text(&s["ID"]),
                name: &text(&s["Spec"]["Name"]),
                mode,
                labels: &filters::label_map(&s["Spec"]["Labels"]),
            }) && filters.exact("runtime", "container")
        })
        .cloned()
        .map(|mut s| {
            if !status && let Some(map) = s.as_object_mut() {
                map.remove("ServiceStatus");
            }
            s
        })
        .collect();
    Ok(json_reply(StatusCode::OK, &shown))
}

/// A name for a service created without one, as Docker gives one.
fn random_name() -> String {
    const ADJECTIVES: &[&str] = &[
        "brave", "calm", "eager", "fervent", "gallant", "jolly", "keen", "lucid", "nifty",
        "quirky", "serene", "vibrant", "wizardly", "zealous",
    ];
    const NAMES: &[&str] = &[
        "babbage", "curie", "darwin", "euler", "franklin", "hopper", "lovelace", "noether",
        "pascal", "ritchie", "thompson", "turing", "wozniak",
    ];
    let mut rng = rand::thread_rng();
    format!(
        "{}_{}",
        ADJECTIVES.choose(&mut rng).expect("not empty"),
        NAMES.choose(&mut rng).expect("not empty")
    )
}

async fn create(engine: &Engine, call: &Call) -> Result<Reply, ApiError> {
    let docker_spec: docker::ServiceSpec = call.json()?;
    let (mut spec, mut warnings) =
        from_service_spec(docker_spec, random_name).map_err(|e| ApiError::bad_request(e.0))?;
    spec.registry_auth = call.registry_auth()?;
    // The docker CLI pins the image itself (`/distribution`), as dockerd
    // expects of its clients.
    match engine
        .call(Request::SwarmServiceCreate {
            spec: Box::new(spec),
            resolve_image: false,
        })
        .await?
    {
        Response::Service { id, warnings: more } => {
            warnings.extend(more);
            let created = docker::ServiceCreateResponse {
                id: Some(id),
                warnings: (!warnings.is_empty()).then_some(warnings),
            };
            Ok(json_reply(StatusCode::CREATED, &created))
        }
        other => Err(super::unexpected(&other)),
    }
}

async fn update(engine: &Engine, call: &Call, service: &str) -> Result<Reply, ApiError> {
    let version = call.version("service")?;
    let rollback = match call.query("rollback") {
        None | Some("") | Some("none") => false,
        Some("previous") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unrecognized rollback option {other}"
            )));
        }
    };
    if let Some(from) = call.query("registryAuthFrom")
        && !matches!(from, "" | "spec" | "previous-spec")
    {
        return Err(ApiError::bad_request("unsupported registryAuthFrom value"));
    }
    let docker_spec: docker::ServiceSpec = call.json()?;
    let current = inspect(engine, service).await?;
    let name = text(&current["Spec"]["Name"]);
    let (mut spec, mut warnings) =
        from_service_spec(docker_spec, || name).map_err(|e| ApiError::bad_request(e.0))?;
    spec.registry_auth = call.registry_auth()?;
    let request = ServiceReplaceRequest {
        service: text(&current["ID"]),
        version,
        spec,
        rollback,
        resolve_image: false,
    };
    match engine
        .call(Request::SwarmServiceReplace(Box::new(request)))
        .await?
    {
        Response::Service { warnings: more, .. } => {
            warnings.extend(more);
            let answer = docker::ServiceUpdateResponse {
                warnings: (!warnings.is_empty()).then_some(warnings),
            };
            // The client decodes the body: `{"Warnings":null}` at least.
            let mut value = serde_json::to_value(answer).expect("plain data serializes");
            value
                .as_object_mut()
                .expect("an object")
                .entry("Warnings")
                .or_insert(Value::Null);
            Ok(json_reply(StatusCode::OK, &value))
        }
        other => Err(super::unexpected(&other)),
    }
}

async fn list_tasks(engine: &Engine, call: &Call) -> Result<Reply, ApiError> {
    let filters = filters::parse(
        call,
        &[
            "_up-to-date",
            "desired-state",
            "id",
            "label",
            "name",
            "node",
            "runtime",
            "service",
        ],
    )?;
    let tasks = engine.json(Request::SwarmTaskObjects).await?;
    let services = engine.json(Request::SwarmServiceObjects).await?;
    let services: BTreeMap<String, &Value> = services
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| (text(&s["ID"]), s))
        .collect();
    // Services and nodes named by ID, name or ID prefix, as Docker
    // resolves them; one that names none is refused.
    let mut wanted_services = Vec::new();
    for reference in filters.values("service") {
        let found = resolve(services.values().copied(), reference, |s| {
            text(&s["Spec"]["Name"])
        })
        .ok_or_else(|| ApiError::not_found(format!("service {reference} not found")))?;
        wanted_services.push(found);
    }
    let mut wanted_nodes = Vec::new();
    if filters.has("node") {
        let nodes = engine.json(Request::NodeObjects).await?;
        for reference in filters.values("node") {
            let found = resolve(nodes.as_array().into_iter().flatten(), reference, |n| {
                text(&n["Description"]["Hostname"])
            })
            .ok_or_else(|| ApiError::not_found(format!("node {reference} not found")))?;
            wanted_nodes.push(found);
        }
    }
    let up_to_date = filters.has("_up-to-date");
    let shown: Vec<&Value> = tasks
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| {
            let service = services.get(&text(&t["ServiceID"]));
            let service_labels = service.map_or(Value::Null, |s| s["Spec"]["Labels"].clone());
            let desired = text(&t["DesiredState"]);
            filters.task_matches(&text(&t["ID"]), &text(&t["Name"]), &desired)
                && (wanted_services.is_empty() || wanted_services.contains(&text(&t["ServiceID"])))
                && (wanted_nodes.is_empty() || wanted_nodes.contains(&text(&t["NodeID"])))
                && filters.json_labels("label", &service_labels)
                && (!up_to_date || service.is_some_and(|s| s["Spec"]["TaskTemplate"] == t["Spec"]))
        })
        .collect();
    Ok(json_reply(StatusCode::OK, &shown))
}

/// The ID of the object `reference` names: its ID, its name, or a unique
/// ID prefix.
fn resolve<'a>(
    objects: impl Iterator<Item = &'a Value> + Clone,
    reference: &str,
    name: impl Fn(&Value) -> String,
) -> Option<String> {
    let id = |o: &Value| text(&o["ID"]);
    if let Some(found) = objects.clone().find(|o| id(o) == reference) {
        return Some(id(found));
    }
    if let Some(found) = objects.clone().find(|o| name(o) == reference) {
        return Some(id(found));
    }
    let mut prefixed = objects.filter(|o| id(o).starts_with(reference));
    match (prefixed.next(), prefixed.next()) {
        (Some(one), None) => Some(id(one)),
        _ => None,
    }
}

async fn find_task(engine: &Engine, reference: &str) -> Result<Value, ApiError> {
    let tasks = engine.json(Request::SwarmTaskObjects).await?;
    let tasks = tasks.as_array().cloned().unwrap_or_default();
    let id = resolve(tasks.iter(), reference, |t| text(&t["Name"]))
        .ok_or_else(|| ApiError::not_found(format!("task {reference} not found")))?;
    Ok(tasks
        .into_iter()
        .find(|t| text(&t["ID"]) == id)
        .expect("resolved from this list"))
}

/// What a logs request asks for.
struct LogOptions {
    follow: bool,
    tail: Option<usize>,
    timestamps: bool,
    details: bool,
    /// Lines written at or after this time, and at or before that one
    /// (nanoseconds since the epoch).
    since: Option<i64>,
    until: Option<i64>,
}

impl LogOptions {
    fn of(call: &Call) -> Result<Self, ApiError> {
        if !call.flag("stdout") && !call.flag("stderr") {
            return Err(ApiError::bad_request(
                "Bad parameters: you must choose at least one stream",
            ));
        }
        let tail = match call.query("tail") {
            None | Some("") | Some("all") => None,
            Some(n) => Some(n.parse::<usize>().map_err(|_| {
                ApiError::bad_request("tail value must be a positive integer or \"all\"")
            })?),
        };
        Ok(Self {
            follow: call.flag("follow"),
            tail,
            timestamps: call.flag("timestamps"),
            details: call.flag("details"),
            since: time_param(call, "since")?,
            until: time_param(call, "until")?,
        })
    }

    fn shows(&self, line: &LogLine) -> bool {
        self.until
            .is_none_or(|until| line.at_nanos.is_some_and(|at| at <= until))
    }
}

/// `since` or `until`: a Unix timestamp, as the docker CLI sends them
/// (`0` or nothing: no limit).
fn time_param(call: &Call, name: &str) -> Result<Option<i64>, ApiError> {
    match call.query(name) {
        None | Some("") | Some("0") => Ok(None),
        Some(value) => log_time::parse_unix_timestamp(value)
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "invalid value for {name}: {value:?} is not a Unix timestamp"
                ))
            }),
    }
}

/// A service's (or task's) output as dockerd streams it: one stdcopy
/// frame per line, the line prefixed with the task's node, service and
/// task IDs when `details` is asked (the docker CLI always asks), and with
/// the time it was written when `timestamps` is.
async fn logs(
    engine: &Engine,
    call: &Call,
    reference: String,
    service_id: String,
) -> Result<Reply, ApiError> {
    let options = LogOptions::of(call)?;
    let since = options.since;
    let first = fetch_logs(engine, &reference, &service_id, since).await?;
    let (sender, receiver) = mpsc::channel::<Bytes>(64);
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    emit(&sender, &first, &options, &mut seen, true).await;
    if options.follow {
        let engine_shutdown = engine.shutdown.clone();
        let engine = engine.clone();
        tokio::spawn(async move {
            let mut shutdown = engine_shutdown;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(FOLLOW_PERIOD) => {}
                    _ = sender.closed() => return,
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
                let Ok(now) = fetch_logs(&engine, &reference, &service_id, since).await else {
                    // The service is gone: the stream ends, as Docker's does.
                    return;
                };
                if !emit(&sender, &now, &options, &mut seen, false).await {
                    return;
                }
            }
        });
    } else {
        drop(sender);
    }
    Ok(streaming_reply(
        "application/vnd.docker.multiplexed-stream",
        receiver,
    ))
}

/// The output of `reference` (a service, or one task), whose tasks are
/// all `service_id`'s, written since `since_nanos`.
async fn fetch_logs(
    engine: &Engine,
    reference: &str,
    service_id: &str,
    since_nanos: Option<i64>,
) -> Result<Vec<TaskOutput>, ApiError> {
    match engine
        .call(Request::SwarmServiceLogs {
            reference: reference.to_owned(),
            tail: None,
            since_nanos,
        })
        .await?
    {
        Response::Logs { mut tasks, .. } => {
            for task in &mut tasks {
                task.service_id = service_id.to_owned();
            }
            Ok(tasks)
        }
        other => Err(super::unexpected(&other)),
    }
}

/// Sends the lines of `logs` not sent before (the last `tail` of them on
/// the first round); false once the client is gone.
async fn emit(
    sender: &mpsc::Sender<Bytes>,
    logs: &[TaskOutput],
    options: &LogOptions,
    seen: &mut BTreeMap<String, usize>,
    first: bool,
) -> bool {
    for log in logs {
        let lines = &log.lines;
        let done = seen.entry(log.task_id.clone()).or_insert(0);
        if lines.len() < *done {
            // The log started over (the task's output was cut).
            *done = 0;
        }
        let mut start = *done;
        if first && let Some(tail) = options.tail {
            start = lines.len().saturating_sub(tail);
        }
        for line in lines[start..].iter().filter(|line| options.shows(line)) {
            let mut payload = String::new();
            if options.timestamps {
                payload.push_str(&log_time::stamp(line.at_nanos));
                payload.push(' ');
            }
            if options.details {
                payload.push_str(&log.details());
                payload.push(' ');
            }
            payload.push_str(&line.text);
            payload.push('\n');
            if sender
                .send(stdcopy_frame(1, payload.as_bytes()))
                .await
                .is_err()
            {
                return false;
            }
        }
        *done = lines.len();
    }
    true
}

/// Docker's multiplexed stream: an 8-byte header (stream, 0, 0, 0, length
/// big-endian), then the bytes.
fn stdcopy_frame(stream: u8, payload: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(8 + payload.len());
    frame.extend_from_slice(&[stream, 0, 0, 0]);
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(payload);
    Bytes::from(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_carries_its_stream_and_length() {
        let frame = stdcopy_frame(1, b"hi\n");
        assert_eq!(&frame[..8], &[1, 0, 0, 0, 0, 0, 0, 3]);
        assert_eq!(&frame[8..], b"hi\n");
    }

    #[test]
    fn references_resolve_by_id_then_name_then_unique_prefix() {
        let objects = [
            serde_json::json!({"ID": "abc1", "Spec": {"Name": "web"}}),
            serde_json::json!({"ID": "abd2", "Spec": {"Name": "abc1x"}}),
        ];
        let name = |o: &Value| text(&o["Spec"]["Name"]);
        assert_eq!(
            resolve(objects.iter(), "abc1", name).as_deref(),
            Some("abc1")
        );
        assert_eq!(
            resolve(objects.iter(), "web", name).as_deref(),
            Some("abc1")
        );
        assert_eq!(
            resolve(objects.iter(), "abd", name).as_deref(),
            Some("abd2")
        );
        assert_eq!(resolve(objects.iter(), "ab", name), None);
    }
}
