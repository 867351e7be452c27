//! `/networks` (the swarm's overlay networks), `/secrets`, `/configs`, and
//! `/distribution` (what a registry names for an image).

use base64::Engine as _;
use bollard::models as docker;
use hyper::{Method, StatusCode};
use serde_json::Value;

use super::{ApiError, Call, Engine, Reply, empty_reply, filters, json_reply, no_route, text};
use crate::api::{
    control::{PayloadCreateRequest, Request, Response, SwarmNetworkCreateRequest},
    mounts::{Opaque, PayloadKind},
};

pub async fn route(engine: &Engine, call: &Call, path: &[&str]) -> Result<Reply, ApiError> {
    let kind_of = |plural: &str| match plural {
        "secrets" => PayloadKind::Secret,
        _ => PayloadKind::Config,
    };
    match (&call.method, path) {
        (&Method::GET, ["networks"]) => list_networks(engine, call).await,
        (&Method::GET, ["networks", network]) => {
            let network = inspect_network(engine, network).await?;
            Ok(json_reply(StatusCode::OK, &network))
        }
        (&Method::POST, ["networks", "create"]) => create_network(engine, call).await,
        (&Method::DELETE, ["networks", network]) => {
            engine
                .call(Request::SwarmNetworkRemove {
                    networks: vec![(*network).to_owned()],
                })
                .await?;
            Ok(empty_reply(StatusCode::NO_CONTENT))
        }
        (&Method::GET, [plural @ ("secrets" | "configs")]) => {
            list_payloads(engine, call, kind_of(plural)).await
        }
        (&Method::POST, [plural @ ("secrets" | "configs"), "create"]) => {
            create_payload(engine, call, kind_of(plural)).await
        }
        (&Method::GET, [plural @ ("secrets" | "configs"), reference]) => {
            let object = engine
                .first(Request::PayloadInspect {
                    kind: kind_of(plural),
                    references: vec![(*reference).to_owned()],
                })
                .await?;
            Ok(json_reply(StatusCode::OK, &object))
        }
        (&Method::POST, [plural @ ("secrets" | "configs"), reference, "update"]) => {
            update_payload(engine, call, kind_of(plural), reference).await
        }
        (&Method::DELETE, [plural @ ("secrets" | "configs"), reference]) => {
            engine
                .call(Request::PayloadRemove {
                    kind: kind_of(plural),
                    references: vec![(*reference).to_owned()],
                })
                .await?;
            Ok(empty_reply(StatusCode::NO_CONTENT))
        }
        (&Method::POST, ["auth"]) => login(engine, call).await,
        (&Method::GET, ["distribution", image @ .., "json"]) if !image.is_empty() => {
            distribution(engine, call, &image.join("/")).await
        }
        _ => Err(no_route(call)),
    }
}

/// A swarm network as Docker shows it, `Containers` included (none: tasks
/// are not containers of this engine).
async fn inspect_network(engine: &Engine, reference: &str) -> Result<Value, ApiError> {
    let mut network = engine
        .first(Request::SwarmNetworkInspect {
            network: reference.to_owned(),
        })
        .await?;
    if let Some(map) = network.as_object_mut() {
        map.entry("Containers")
            .or_insert_with(|| Value::Object(Default::default()));
        map.entry("ConfigOnly").or_insert(Value::Bool(false));
        map.entry("ConfigFrom")
            .or_insert_with(|| serde_json::json!({"Network": ""}));
    }
    Ok(network)
}

async fn list_networks(engine: &Engine, call: &Call) -> Result<Reply, ApiError> {
    let filters = filters::parse(
        call,
        &["dangling", "driver", "id", "label", "name", "scope", "type"],
    )?;
    let rows = match engine
        .call(Request::SwarmNetworkList {
            filters: Default::default(),
        })
        .await
    {
        Ok(Response::Networks(rows)) => rows,
        Ok(other) => return Err(super::unexpected(&other)),
        // A node outside a swarm, or a worker, has no swarm networks to
        // list; dockerd lists its local ones, of which swarm has none.
        Err(err) if err.status == StatusCode::SERVICE_UNAVAILABLE => Vec::new(),
        Err(err) => return Err(err),
    };
    let mut shown = Vec::new();
    for row in rows {
        let network = inspect_network(engine, &row.id).await?;
        let keep = filters.network_matches(
            &text(&network["Id"]),
            &text(&network["Name"]),
            &filters::label_map(&network["Labels"]),
        );
        if keep {
            shown.push(network);
        }
    }
    Ok(json_reply(StatusCode::OK, &shown))
}

async fn create_network(engine: &Engine, call: &Call) -> Result<Reply, ApiError> {
    let request: docker::NetworkCreateRequest = call.json()?;
    if request.name.trim().is_empty() {
        return Err(ApiError::bad_request("network name must be given"));
    }
    match request.driver.as_deref() {
        Some("overlay") => {}
        other => {
            return Err(ApiError::bad_request(format!(
                "swarm serves overlay networks only, not {:?}: create it with -d overlay",
                other.unwrap_or("bridge")
            )));
        }
    }
    if request.ingress == Some(true) {
        return Err(ApiError::bad_request(
            "the swarm has its routing-mesh network already (ingress); another cannot be created",
        ));
    }
    if request.internal == Some(true) {
        return Err(ApiError::bad_request(
            "--internal is not supported by swarm's overlay networks",
        ));
    }
    let config = request
        .ipam
        .and_then(|ipam| ipam.config)
        .unwrap_or_default()
        .into_iter()
        .next()
        .unwrap_or_default();
    let subnet = match config.subnet.filter(|s| !s.is_empty()) {
        None => None,
        Some(text) => Some(parse_subnet(&text)?),
    };
    let gateway = match config.gateway.filter(|g| !g.is_empty()) {
        None => None,
        Some(text) => Some(
            text.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid gateway address {text}")))?,
        ),
    };
    let options = request.options.unwrap_or_default();
    let mtu = match options.get("com.docker.network.driver.mtu") {
        None => None,
        Some(text) => Some(
            text.parse::<u32>()
                .ok()
                .filter(|m| (576..=9000).contains(m))
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "invalid com.docker.network.driver.mtu {text}: give a number from 576 to 9000"
                    ))
                })?,
        ),
    };
    let create = SwarmNetworkCreateRequest {
        name: request.name,
        subnet,
        gateway,
        mtu,
        attachable: request.attachable.unwrap_or(false),
        labels: request.labels.unwrap_or_default().into_iter().collect(),
    };
    match engine.call(Request::SwarmNetworkCreate(create)).await? {
        Response::Notes(ids) => Ok(json_reply(
            StatusCode::CREATED,
            &serde_json::json!({
                "Id": ids.into_iter().next().unwrap_or_default(),
                "Warning": "",
            }),
        )),
        other => Err(super::unexpected(&other)),
    }
}

fn parse_subnet(text: &str) -> Result<(std::net::Ipv4Addr, u8), ApiError> {
    let invalid = || {
        ApiError::bad_request(format!(
            "invalid subnet {text}: give IPv4 CIDR, as 10.1.0.0/24"
        ))
    };
    let (addr, prefix) = text.split_once('/').ok_or_else(invalid)?;
    let addr = addr.parse().map_err(|_| invalid())?;
    let prefix: u8 = prefix.parse().map_err(|_| invalid())?;
    if prefix > 32 {
        return Err(invalid());
    }
    Ok((addr, prefix))
}

async fn list_payloads(engine: &Engine, call: &Call, kind: PayloadKind) -> Result<Reply, ApiError> {
    let accepted: &[&str] = match kind {
        PayloadKind::Secret => &["id", "label", "name", "names"],
        PayloadKind::Config => &["id", "label", "name"],
    };
    let filters = filters::parse(call, accepted)?;
    let rows = engine
        .json(Request::PayloadList {
            kind,
            filters: Default::default(),
        })
        .await?;
    let ids: Vec<String> = rows
        .as_array()
        .into_iter()
        .flatten()
        .map(|row| text(&row["ID"]))
        .collect();
    let objects = if ids.is_empty() {
        Value::Array(Vec::new())
    } else {
        engine
            .json(Request::PayloadInspect {
                kind,
                references: ids,
            })
            .await?
    };
    let shown: Vec<&Value> = objects
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            let name = text(&p["Spec"]["Name"]);
            filters.payload_matches(
                &text(&p["ID"]),
                &name,
                &filters::label_map(&p["Spec"]["Labels"]),
            ) && filters.exact("names", &name)
        })
        .collect();
    Ok(json_reply(StatusCode::OK, &shown))
}

fn decode_data(data: Option<&str>) -> Result<Opaque, ApiError> {
    base64::engine::general_purpose::STANDARD
        .decode(data.unwrap_or_default())
        .map(Opaque)
        .map_err(|e| ApiError::bad_request(format!("invalid Data: not base64 ({e})")))
}

async fn create_payload(
    engine: &Engine,
    call: &Call,
    kind: PayloadKind,
) -> Result<Reply, ApiError> {
    let spec: docker::SecretSpec = call.json()?;
    if spec.driver.as_ref().is_some_and(|d| !d.name.is_empty()) {
        return Err(ApiError::bad_request(format!(
            "{} drivers are not supported by swarm: the data is kept in the swarm's encrypted Raft store",
            kind.word()
        )));
    }
    if spec.templating.as_ref().is_some_and(|t| !t.name.is_empty()) {
        return Err(ApiError::bad_request(format!(
            "{} templating is not supported by swarm",
            kind.word()
        )));
    }
    let request = PayloadCreateRequest {
        kind,
        name: spec.name.unwrap_or_default(),
        labels: spec.labels.unwrap_or_default().into_iter().collect(),
        data: decode_data(spec.data.as_deref())?,
    };
    match engine.call(Request::PayloadCreate(request)).await? {
        Response::Notes(ids) => Ok(json_reply(
            StatusCode::CREATED,
            &serde_json::json!({"ID": ids.into_iter().next().unwrap_or_default()}),
        )),
        other => Err(super::unexpected(&other)),
    }
}

async fn update_payload(
    engine: &Engine,
    call: &Call,
    kind: PayloadKind,
    reference: &str,
) -> Result<Reply, ApiError> {
    let version = call.version(kind.word())?;
    let spec: docker::SecretSpec = call.json()?;
    let data = match spec.data.as_deref() {
        None | Some("") => None,
        Some(data) => Some(decode_data(Some(data))?),
    };
    engine
        .call(Request::PayloadUpdate {
            kind,
            reference: reference.to_owned(),
            version,
            labels: spec.labels.unwrap_or_default().into_iter().collect(),
            data,
        })
        .await?;
    Ok(empty_reply(StatusCode::OK))
}

async fn distribution(engine: &Engine, call: &Call, image: &str) -> Result<Reply, ApiError> {
    let registry_auth = call.registry_auth()?;
    let answer = engine
        .json(Request::ImageDistribution {
            image: image.to_owned(),
            registry_auth,
        })
        .await?;
    Ok(json_reply(StatusCode::OK, &answer))
}

/// `docker login`: the registry asked whether it takes the login. The
/// login is not kept: the CLI keeps it and sends it with each request
/// that needs it (`--with-registry-auth`).
async fn login(engine: &Engine, call: &Call) -> Result<Reply, ApiError> {
    #[derive(Default, serde::Deserialize)]
    struct AuthConfig {
        #[serde(default)]
        username: String,
        #[serde(default)]
        password: String,
        #[serde(default)]
        serveraddress: String,
    }
    let auth: AuthConfig = call.json()?;
    let server = auth
        .serveraddress
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    // Docker Hub's login address names no registry host.
    let registry = match server {
        "" | "index.docker.io/v1" | "registry-1.docker.io" => "docker.io",
        other => other,
    };
    let login = crate::api::tasks::RegistryAuth {
        username: auth.username,
        password: auth.password,
    };
    match engine
        .call(Request::RegistryLogin {
            registry: registry.to_owned(),
            registry_auth: login,
        })
        .await
    {
        Ok(_) => Ok(json_reply(
            StatusCode::OK,
            &serde_json::json!({"Status": "Login Succeeded", "IdentityToken": ""}),
        )),
        Err(err) if err.message.contains("unauthorized") => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            format!("login attempt to {server} failed: {}", err.message),
        )),
        Err(err) => Err(err),
    }
}
