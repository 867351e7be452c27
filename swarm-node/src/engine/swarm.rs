//! `/swarm` (init, join, leave, update, unlock) and `/nodes`.

use std::net::{Ipv4Addr, SocketAddr};

use bollard::models as docker;
use hyper::{Method, StatusCode};

use super::{ApiError, Call, Engine, Reply, empty_reply, filters, json_reply, no_route};
use crate::api::{
    Availability, Role,
    control::{NodeUpdateRequest, Request, Response, SwarmInitRequest, SwarmJoinRequest},
    filters::NodeFacts,
};

/// The control-plane port when an address names none.
const DEFAULT_PORT: u16 = 2377;

pub async fn route(engine: &Engine, call: &Call, path: &[&str]) -> Result<Reply, ApiError> {
    match (&call.method, path) {
        (&Method::GET, ["swarm"]) => {
            let swarm = engine.json(Request::SwarmInspect).await?;
            Ok(json_reply(StatusCode::OK, &swarm))
        }
        (&Method::POST, ["swarm", "init"]) => init(engine, call).await,
        (&Method::POST, ["swarm", "join"]) => join(engine, call).await,
        (&Method::POST, ["swarm", "leave"]) => {
            engine
                .call(Request::SwarmLeave {
                    force: call.flag("force"),
                })
                .await?;
            Ok(empty_reply(StatusCode::OK))
        }
        (&Method::POST, ["swarm", "update"]) => update(engine, call).await,
        (&Method::GET, ["swarm", "unlockkey"]) => {
            let key = engine
                .json(Request::SwarmUnlockKey { rotate: false })
                .await?;
            Ok(json_reply(StatusCode::OK, &key))
        }
        (&Method::POST, ["swarm", "unlock"]) => {
            let request: docker::SwarmUnlockRequest = call.json()?;
            engine
                .call(Request::SwarmUnlock {
                    key: request.unlock_key.unwrap_or_default(),
                })
                .await?;
            Ok(empty_reply(StatusCode::OK))
        }
        (&Method::GET, ["nodes"]) => list_nodes(engine, call).await,
        (&Method::GET, ["nodes", node]) => {
            let node = engine
                .first(Request::NodeInspect {
                    node: (*node).to_owned(),
                })
                .await?;
            Ok(json_reply(StatusCode::OK, &node))
        }
        (&Method::POST, ["nodes", node, "update"]) => update_node(engine, call, node).await,
        (&Method::DELETE, ["nodes", node]) => {
            engine
                .call(Request::NodeRemove {
                    node: (*node).to_owned(),
                    force: call.flag("force"),
                })
                .await?;
            Ok(empty_reply(StatusCode::OK))
        }
        _ => Err(no_route(call)),
    }
}

/// `ListenAddr`'s port (`0.0.0.0:2377`, `:2377`, an interface and port).
fn listen_port(listen: Option<&str>) -> Result<Option<u16>, ApiError> {
    let Some(listen) = listen.filter(|l| !l.is_empty()) else {
        return Ok(None);
    };
    match listen.rsplit_once(':') {
        Some((_, port)) => port.parse().map(Some).map_err(|_| {
            ApiError::bad_request(format!(
                "invalid ListenAddr {listen:?}: the port must be a number"
            ))
        }),
        None => Ok(None),
    }
}

/// `ListenAddr`'s address or interface (`0.0.0.0:2377`, `eth0:2377`,
/// `198.18.0.1`), if it names one.
fn listen_host(listen: Option<&str>) -> Option<String> {
    let listen = listen.filter(|l| !l.is_empty())?;
    let host = listen.rsplit_once(':').map_or(listen, |(host, _)| host);
    (!host.is_empty()).then(|| host.to_owned())
}

/// `A.B.C.D/N`.
fn parse_cidr(text: &str) -> Option<(Ipv4Addr, u8)> {
    let (ip, prefix) = text.split_once('/')?;
    Some((ip.parse().ok()?, prefix.parse().ok().filter(|p| *p <= 32)?))
}

/// `AdvertiseAddr`: an IPv4 address (with or without a port) or the name
/// of an interface holding one.
fn advertise_ip(addr: Option<&str>) -> Result<Option<Ipv4Addr>, ApiError> {
    let Some(addr) = addr.filter(|a| !a.is_empty()) else {
        return Ok(None);
    };
    let host = match addr.parse::<SocketAddr>() {
        Ok(socket) => socket.ip().to_string(),
        Err(_) => addr.split(':').next().unwrap_or(addr).to_owned(),
    };
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(Some(ip));
    }
    let interfaces = nix::ifaddrs::getifaddrs()
        .map_err(|e| ApiError::bad_request(format!("listing interfaces: {e}")))?;
    for interface in interfaces.filter(|i| i.interface_name == host) {
        if let Some(ip) = interface
            .address
            .as_ref()
            .and_then(|a| a.as_sockaddr_in())
            .map(|sin| sin.ip())
        {
            return Ok(Some(ip));
        }
    }
    Err(ApiError::bad_request(format!(
        "advertise address must be a non-zero IP address or network interface (with optional port number): {addr}"
    )))
}

async fn init(engine: &Engine, call: &Call) -> Result<Reply, ApiError> {
    let request: docker::SwarmInitRequest = call.json()?;
    let raw: serde_json::Value = call.json()?;
    let spec = request.spec.unwrap_or_default();
    // docker/cli sends it at the top and, when the flag is given, in the spec.
    let autolock = raw["AutoLockManagers"] == true
        || spec
            .encryption_config
            .as_ref()
            .and_then(|e| e.auto_lock_managers)
            == Some(true);
    let millis = |nanos: Option<i64>| nanos.filter(|n| *n > 0).map(|n| (n / 1_000_000) as u64);
    let address_pools = request
        .default_addr_pool
        .unwrap_or_default()
        .iter()
        .map(|pool| {
            parse_cidr(pool).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "invalid default address pool {pool:?}: give an IPv4 CIDR like 10.20.0.0/16"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let subnet_size = match request.subnet_size.filter(|s| *s != 0) {
        None => None,
        Some(size) => Some(
            u8::try_from(size)
                .ok()
                .filter(|s| *s <= 32)
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "invalid subnet size {size}: give a prefix length"
                    ))
                })?,
        ),
    };
    let raft = spec.raft.clone().unwrap_or_default();
    let init = SwarmInitRequest {
        autolock,
        advertise_addr: advertise_ip(request.advertise_addr.as_deref())?,
        listen_port: listen_port(request.listen_addr.as_deref())?,
        listen_host: listen_host(request.listen_addr.as_deref()),
        data_path_addr: request.data_path_addr.filter(|a| !a.is_empty()),
        address_pools,
        subnet_size,
        snapshot_interval: raft.snapshot_interval.filter(|n| *n != 0),
        max_snapshots: raft.keep_old_snapshots.filter(|n| *n != 0),
        force_new_cluster: request.force_new_cluster == Some(true),
        cert_expiry_secs: millis(spec.ca_config.and_then(|c| c.node_cert_expiry)).map(|m| m / 1000),
        heartbeat_millis: millis(spec.dispatcher.and_then(|d| d.heartbeat_period)),
        gossip_key_rotation_secs: None,
        task_history_limit: spec
            .orchestration
            .and_then(|o| o.task_history_retention_limit)
            .filter(|l| *l > 0)
            .map(|l| l as u64),
        availability: availability(&raw)?,
    };
    match engine.call(Request::SwarmInit(init)).await? {
        Response::SwarmInitialized { node_id, .. } => Ok(json_reply(StatusCode::OK, &node_id)),
        other => Err(super::unexpected(&other)),
    }
}

/// The request's `Availability` (bollard's init and join models lack it).
fn availability(raw: &serde_json::Value) -> Result<Option<Availability>, ApiError> {
    match raw["Availability"].as_str().unwrap_or_default() {
        "" => Ok(None),
        "active" => Ok(Some(Availability::Active)),
        "pause" => Ok(Some(Availability::Pause)),
        "drain" => Ok(Some(Availability::Drain)),
        other => Err(ApiError::bad_request(format!(
            "invalid Availability {other:?}: active, pause or drain"
        ))),
    }
}

async fn join(engine: &Engine, call: &Call) -> Result<Reply, ApiError> {
    let request: docker::SwarmJoinRequest = call.json()?;
    let remote = request
        .remote_addrs
        .unwrap_or_default()
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::bad_request("RemoteAddrs: give the address of a manager"))?;
    let manager = match remote.parse::<SocketAddr>() {
        Ok(addr) => addr,
        Err(_) => format!("{remote}:{DEFAULT_PORT}").parse().map_err(|_| {
            ApiError::bad_request(format!(
                "invalid remote address {remote:?}: give a manager's IP:PORT"
            ))
        })?,
    };
    let join = SwarmJoinRequest {
        token: request.join_token.unwrap_or_default(),
        manager,
        advertise_addr: advertise_ip(request.advertise_addr.as_deref())?,
        listen_port: listen_port(request.listen_addr.as_deref())?,
        listen_host: listen_host(request.listen_addr.as_deref()),
        data_path_addr: request.data_path_addr.filter(|a| !a.is_empty()),
        availability: availability(&call.json()?)?,
    };
    engine.call(Request::SwarmJoin(join)).await?;
    Ok(empty_reply(StatusCode::OK))
}

/// `swarm update`: the heartbeat, certificate expiry, task history
/// limit, Raft's snapshot settings and autolock changed, join tokens and
/// the unlock key rotated, as asked.
async fn update(engine: &Engine, call: &Call) -> Result<Reply, ApiError> {
    call.version("swarm")?;
    let wanted: docker::SwarmSpec = call.json()?;
    let current: docker::Swarm =
        serde_json::from_value(engine.json(Request::SwarmInspect).await?).unwrap_or_default();
    let current = current.spec.unwrap_or_default();
    // A value the caller changed: set, not zero, not what it read.
    let changed = |wanted: Option<i64>, current: Option<i64>| {
        wanted.filter(|w| *w != 0 && Some(*w) != current)
    };
    let heartbeat = changed(
        wanted.dispatcher.as_ref().and_then(|d| d.heartbeat_period),
        current.dispatcher.as_ref().and_then(|d| d.heartbeat_period),
    );
    let expiry = changed(
        wanted.ca_config.as_ref().and_then(|c| c.node_cert_expiry),
        current.ca_config.as_ref().and_then(|c| c.node_cert_expiry),
    );
    let history = changed(
        wanted
            .orchestration
            .as_ref()
            .and_then(|o| o.task_history_retention_limit),
        current
            .orchestration
            .as_ref()
            .and_then(|o| o.task_history_retention_limit),
    );
    let raft = wanted.raft.clone().unwrap_or_default();
    let current_raft = current.raft.clone().unwrap_or_default();
    let snapshot_interval = changed(
        raft.snapshot_interval.map(|v| v as i64),
        current_raft.snapshot_interval.map(|v| v as i64),
    )
    .map(|v| v as u64);
    let max_snapshots = raft
        .keep_old_snapshots
        .filter(|v| Some(*v) != current_raft.keep_old_snapshots);
    // `docker swarm ca --rotate` (and --ca-cert/--ca-key): refused, not
    // ignored; the root CA does not rotate yet.
    let ca = wanted.ca_config.clone().unwrap_or_default();
    let rotates = ca.force_rotate.unwrap_or(0)
        != current
            .ca_config
            .as_ref()
            .and_then(|c| c.force_rotate)
            .unwrap_or(0)
        || ca.signing_ca_cert.as_deref().is_some_and(|c| !c.is_empty())
        || ca.signing_ca_key.as_deref().is_some_and(|k| !k.is_empty());
    if rotates {
        return Err(ApiError::bad_request(
            "rotating the root CA (docker swarm ca --rotate, --ca-cert, --ca-key) is not supported by swarm yet; nothing was changed",
        ));
    }
    let autolock = wanted
        .encryption_config
        .as_ref()
        .and_then(|e| e.auto_lock_managers)
        .filter(|on| {
            Some(*on)
                != current
                    .encryption_config
                    .as_ref()
                    .and_then(|e| e.auto_lock_managers)
        });
    if let Some(limit) = history.filter(|l| *l < 0) {
        return Err(ApiError::bad_request(format!(
            "invalid task history limit {limit}: give 0 or more"
        )));
    }
    if heartbeat.is_some()
        || expiry.is_some()
        || history.is_some()
        || snapshot_interval.is_some()
        || max_snapshots.is_some()
        || autolock.is_some()
    {
        const NANOS_PER_MILLI: i64 = 1_000_000;
        engine
            .call(Request::SwarmUpdateSettings {
                heartbeat_millis: heartbeat.map(|n| (n / NANOS_PER_MILLI).max(1) as u64),
                cert_expiry_secs: expiry.map(|n| (n / (1000 * NANOS_PER_MILLI)) as u64),
                task_history_limit: history.map(|l| l as u64),
                snapshot_interval,
                max_snapshots,
                autolock,
            })
            .await?;
    }
    for (flag, role) in [
        ("rotateWorkerToken", Role::Worker),
        ("rotateManagerToken", Role::Manager),
    ] {
        if call.flag(flag) {
            engine
                .call(Request::JoinToken { role, rotate: true })
                .await?;
        }
    }
    if call.flag("rotateManagerUnlockKey") {
        engine
            .call(Request::SwarmUnlockKey { rotate: true })
            .await?;
    }
    Ok(empty_reply(StatusCode::OK))
}

async fn list_nodes(engine: &Engine, call: &Call) -> Result<Reply, ApiError> {
    let filters = filters::parse(
        call,
        &["id", "label", "membership", "name", "node.label", "role"],
    )?;
    let nodes = engine.json(Request::NodeObjects).await?;
    let shown: Vec<&serde_json::Value> = nodes
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| {
            let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
            let role = text(&n["Spec"]["Role"]);
            filters.node_matches(&NodeFacts {
                id: &text(&n["ID"]),
                hostname: &text(&n["Description"]["Hostname"]),
                role: &role,
                labels: &filters::label_map(&n["Spec"]["Labels"]),
                engine_labels: &filters::label_map(&n["Description"]["Engine"]["Labels"]),
            })
        })
        .collect();
    Ok(json_reply(StatusCode::OK, &shown))
}

async fn update_node(engine: &Engine, call: &Call, node: &str) -> Result<Reply, ApiError> {
    let version = call.version("node")?;
    let spec: docker::NodeSpec = call.json()?;
    let availability = match spec.availability {
        Some(docker::NodeSpecAvailabilityEnum::ACTIVE) => Some(Availability::Active),
        Some(docker::NodeSpecAvailabilityEnum::PAUSE) => Some(Availability::Pause),
        Some(docker::NodeSpecAvailabilityEnum::DRAIN) => Some(Availability::Drain),
        _ => None,
    };
    let role = match spec.role {
        Some(docker::NodeSpecRoleEnum::MANAGER) => Some(Role::Manager),
        Some(docker::NodeSpecRoleEnum::WORKER) => Some(Role::Worker),
        _ => None,
    };
    engine
        .call(Request::NodeUpdate(NodeUpdateRequest {
            node: node.to_owned(),
            availability,
            role,
            labels: Some(spec.labels.unwrap_or_default().into_iter().collect()),
            version,
            ..NodeUpdateRequest::default()
        }))
        .await?;
    Ok(empty_reply(StatusCode::OK))
}
