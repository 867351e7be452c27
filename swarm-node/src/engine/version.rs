//! API versions as dockerd negotiates them (`/_ping`, `/vX.Y/...`), and
//! what the node is: `/version` and `/info`.

use bollard::models as docker;
use hyper::{Method, StatusCode, header};

use super::{ApiError, Call, Engine, Reply, full, json_reply, no_route};
use crate::api::control::{DaemonInfo, Request, Response};

/// The newest API this server speaks: docker 28.2's.
pub const MAX_API_VERSION: &str = "1.50";
/// The oldest: docker 20.10's (Debian's `/usr/bin/docker`).
pub const MIN_API_VERSION: &str = "1.41";

fn parse_version(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// The path's version (none: the newest) and its segments after it,
/// percent-decoded; a version out of range is refused as dockerd does.
pub fn split_path(path: &str) -> Result<(Option<String>, Vec<String>), ApiError> {
    let mut segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let Some(version) = segments
        .first()
        .and_then(|first| first.strip_prefix('v'))
        .filter(|v| parse_version(v).is_some())
        .map(str::to_owned)
    else {
        return Ok((None, segments));
    };
    let asked = parse_version(&version).expect("checked above");
    let max = parse_version(MAX_API_VERSION).expect("a version");
    let min = parse_version(MIN_API_VERSION).expect("a version");
    if asked > max {
        return Err(ApiError::bad_request(format!(
            "client version {version} is too new. Maximum supported API version is {MAX_API_VERSION}"
        )));
    }
    if asked < min {
        return Err(ApiError::bad_request(format!(
            "client version {version} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version"
        )));
    }
    segments.remove(0);
    Ok((Some(version), segments))
}

fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[at] == b'%'
            && at + 2 < bytes.len()
            && let (Some(high), Some(low)) = (hex(bytes[at + 1]), hex(bytes[at + 2]))
        {
            out.push((high * 16 + low) as u8);
            at += 3;
            continue;
        }
        out.push(bytes[at]);
        at += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub async fn route(engine: &Engine, call: &Call, path: &[&str]) -> Result<Reply, ApiError> {
    match (&call.method, path) {
        (&Method::GET | &Method::HEAD, ["_ping"]) => ping(engine, call).await,
        (&Method::GET, ["version"]) => {
            let info = daemon_info(engine).await?;
            Ok(json_reply(StatusCode::OK, &system_version(&info)))
        }
        (&Method::GET, ["info"]) => info(engine).await,
        _ => Err(no_route(call)),
    }
}

pub async fn daemon_info(engine: &Engine) -> Result<DaemonInfo, ApiError> {
    match engine.call(Request::Info).await? {
        Response::Info(info) => Ok(*info),
        other => Err(super::unexpected(&other)),
    }
}

/// `Swarm: active/manager` and the rest of what a ping tells a client.
async fn ping(engine: &Engine, call: &Call) -> Result<Reply, ApiError> {
    let info = daemon_info(engine).await?;
    let swarm = match (
        info.swarm.local_node_state.as_str(),
        info.swarm.control_available,
    ) {
        ("active", true) => "active/manager".to_owned(),
        ("active", false) => "active/worker".to_owned(),
        (state, _) => state.to_owned(),
    };
    let head = call.method == Method::HEAD;
    let reply = hyper::Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-cache, no-store, must-revalidate")
        .header(header::PRAGMA, "no-cache")
        .header("Swarm", swarm)
        .body(full(if head { "" } else { "OK" }))
        .expect("a valid response");
    Ok(reply)
}

fn system_version(info: &DaemonInfo) -> docker::SystemVersion {
    let version = format!("swarm-{}", info.version);
    docker::SystemVersion {
        platform: Some(docker::SystemVersionPlatform {
            name: "swarm".into(),
        }),
        components: Some(vec![docker::SystemVersionComponents {
            name: "Engine".into(),
            version: version.clone(),
            details: Some(
                [
                    ("ApiVersion".to_owned(), MAX_API_VERSION.to_owned()),
                    ("MinAPIVersion".to_owned(), MIN_API_VERSION.to_owned()),
                    ("Os".to_owned(), "linux".to_owned()),
                    ("Arch".to_owned(), go_arch().to_owned()),
                    ("KernelVersion".to_owned(), kernel_version()),
                    ("Experimental".to_owned(), "false".to_owned()),
                ]
                .into_iter()
                .collect(),
            ),
        }]),
        version: Some(version),
        api_version: Some(MAX_API_VERSION.into()),
        min_api_version: Some(MIN_API_VERSION.into()),
        git_commit: None,
        go_version: None,
        os: Some("linux".into()),
        arch: Some(go_arch().into()),
        kernel_version: Some(kernel_version()),
        experimental: Some(false),
        build_time: None,
    }
}

/// This machine's architecture in Go's words, as dockerd reports it.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn kernel_version() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Bytes of memory this machine has (`/proc/meminfo`'s MemTotal).
fn mem_total() -> Option<i64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `/info`: the node, and its `Swarm` section as dockerd fills it.
async fn info(engine: &Engine) -> Result<Reply, ApiError> {
    let info = daemon_info(engine).await?;
    let swarm = &info.swarm;
    let state: Option<docker::LocalNodeState> =
        serde_json::from_value(serde_json::Value::String(swarm.local_node_state.clone())).ok();
    let mut section = docker::SwarmInfo {
        node_id: Some(swarm.node_id.clone()),
        node_addr: Some(swarm.node_addr.clone()),
        local_node_state: state,
        control_available: Some(swarm.control_available),
        error: Some(String::new()),
        remote_managers: None,
        nodes: None,
        managers: None,
        cluster: None,
    };
    if swarm.control_available {
        // The cluster's view; a manager that cannot reach the leader still
        // answers with what it knows of itself.
        if let Ok(nodes) = engine.json(Request::NodeObjects).await {
            let nodes = nodes.as_array().cloned().unwrap_or_default();
            section.nodes = Some(nodes.len() as i64);
            let managers: Vec<docker::PeerNode> = nodes
                .iter()
                .filter(|n| !n["ManagerStatus"].is_null())
                .map(|n| docker::PeerNode {
                    node_id: n["ID"].as_str().map(str::to_owned),
                    addr: n["ManagerStatus"]["Addr"].as_str().map(str::to_owned),
                })
                .collect();
            section.managers = Some(managers.len() as i64);
            section.remote_managers = Some(managers);
        }
        if let Ok(cluster) = engine.json(Request::SwarmInspect).await {
            section.cluster = serde_json::from_value(cluster).ok();
        }
    } else if swarm.local_node_state == "active" && !swarm.leader_addr.is_empty() {
        section.remote_managers = Some(vec![docker::PeerNode {
            node_id: None,
            addr: Some(swarm.leader_addr.clone()),
        }]);
    }
    let host = nix::sys::utsname::uname().ok();
    let object = docker::SystemInfo {
        id: Some(info.node_id.clone()),
        name: Some(info.hostname.clone()),
        server_version: Some(format!("swarm-{}", info.version)),
        operating_system: Some("swarm (Linux)".into()),
        os_type: Some("linux".into()),
        architecture: host
            .as_ref()
            .map(|u| u.machine().to_string_lossy().into_owned()),
        kernel_version: Some(kernel_version()),
        ncpu: std::thread::available_parallelism()
            .ok()
            .map(|n| n.get() as i64),
        docker_root_dir: Some(info.data_dir.clone()),
        mem_total: mem_total(),
        containers: Some(0),
        images: Some(0),
        swarm: Some(section),
        ..Default::default()
    };
    Ok(json_reply(StatusCode::OK, &object))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_in_range_are_stripped_and_others_refused() {
        let (version, path) = split_path("/v1.41/services/web%2Fx").unwrap();
        assert_eq!(version.as_deref(), Some("1.41"));
        assert_eq!(path, ["services", "web/x"]);
        assert_eq!(split_path("/_ping").unwrap().1, ["_ping"]);
        let new = split_path("/v1.99/info").unwrap_err();
        assert_eq!(
            new.message,
            "client version 1.99 is too new. Maximum supported API version is 1.50"
        );
        assert!(
            split_path("/v1.24/info").unwrap_err().message.starts_with(
                "client version 1.24 is too old. Minimum supported API version is 1.41"
            )
        );
    }
}
