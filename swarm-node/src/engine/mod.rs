//! Docker's Engine API on a Unix socket, so the `docker` CLI and the tools
//! built on the API (Portainer, Traefik, Prometheus's swarm discovery)
//! drive the swarm. Every request becomes a control API request, the same
//! the `swarm` CLI sends; this module only translates, in Docker's JSON
//! (bollard's models) with Docker's status codes and words.

mod error;
mod events;
mod filters;
mod objects;
mod services;
mod swarm;
mod version;

use std::{
    convert::Infallible,
    io,
    path::{Path, PathBuf},
    sync::Arc,
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, combinators::BoxBody};
use hyper::{Method, StatusCode, body::Incoming, header, service::service_fn};
use hyper_util::rt::TokioIo;
use serde::{Serialize, de::DeserializeOwned};
use tokio::{net::UnixListener, sync::watch};
use tracing::{debug, info, warn};

pub use error::ApiError;

use crate::{
    api::control::{Request, Response},
    control::Handler,
};

/// Where `swarm daemon` serves the API unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/swarm/docker.sock";

/// A request body larger than this is refused (Docker's own limit on
/// specs is far below it).
const MAX_BODY_BYTES: usize = 16 << 20;

pub type Body = BoxBody<Bytes, Infallible>;
pub type Reply = hyper::Response<Body>;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(
        "another daemon already serves the Docker API on {0}; give this one its own --docker-api-socket, or `none`"
    )]
    InUse(PathBuf),
    #[error("cannot serve the Docker API on {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
}

/// The bound socket. Dropping it removes the socket file.
pub struct EngineServer {
    listener: UnixListener,
    path: PathBuf,
}

impl EngineServer {
    /// Binds `path` in a directory only root may enter, as dockerd's
    /// socket is root's; a stale socket file is replaced, a live one is not.
    pub async fn bind(path: &Path) -> Result<Self, EngineError> {
        let listener = crate::control::bind_private(path)
            .await
            .map_err(|source| EngineError::Bind {
                path: path.to_owned(),
                source,
            })?
            .ok_or_else(|| EngineError::InUse(path.to_owned()))?;
        info!(socket = %path.display(), "serving the Docker Engine API");
        Ok(Self {
            listener,
            path: path.to_owned(),
        })
    }

    /// Answers HTTP/1.1 on each connection until `shutdown` turns true.
    pub async fn serve(&self, handler: Arc<dyn Handler>, mut shutdown: watch::Receiver<bool>) {
        let engine = Arc::new(Engine {
            handler,
            shutdown: shutdown.clone(),
        });
        loop {
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let engine = engine.clone();
                        let mut stop = engine.shutdown.clone();
                        tokio::spawn(async move {
                            let service = service_fn(move |request| {
                                let engine = engine.clone();
                                async move { Ok::<_, Infallible>(engine.answer(request).await) }
                            });
                            let connection = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service);
                            // A kept-alive connection ends with the daemon.
                            tokio::select! {
                                served = connection => if let Err(err) = served {
                                    debug!(error = %err, "Docker API connection ended with an error");
                                },
                                _ = stop.wait_for(|stop| *stop) => {}
                            }
                        });
                    }
                    Err(err) => warn!(error = %err, "accepting on the Docker API socket failed"),
                },
            }
        }
    }
}

impl Drop for EngineServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One request, read: its route without the version, its query and body.
pub struct Call {
    pub method: Method,
    /// The path's segments after `/vX.Y`, percent-decoded.
    pub path: Vec<String>,
    pub query: Vec<(String, String)>,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Call {
    /// The last value of query parameter `key`.
    pub fn query(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean parameter as Docker reads one: `1`, `true`, `True`...
    pub fn flag(&self, key: &str) -> bool {
        self.query(key).is_some_and(|v| {
            matches!(
                v.to_ascii_lowercase().as_str(),
                "1" | "true" | "t" | "yes" | "y"
            )
        })
    }

    /// `?version=` of an update, as Docker parses it.
    pub fn version(&self, what: &str) -> Result<Option<u64>, ApiError> {
        match self.query("version") {
            None => Ok(None),
            Some(raw) => raw
                .parse()
                .map(Some)
                .map_err(|e| ApiError::bad_request(format!("invalid {what} version '{raw}': {e}"))),
        }
    }

    /// The body as `T`, in Docker's spellings; an empty one is `T`'s
    /// default, as Docker takes it.
    pub fn json<T: DeserializeOwned + Default>(&self) -> Result<T, ApiError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(T::default());
        }
        crate::api::docker::parse_docker_json(&self.body).map_err(|e| ApiError::bad_request(e.0))
    }

    /// The registry login of `X-Registry-Auth` (base64url JSON), if any.
    pub fn registry_auth(&self) -> Result<Option<crate::api::tasks::RegistryAuth>, ApiError> {
        use base64::Engine as _;
        let Some(value) = self.headers.get("x-registry-auth") else {
            return Ok(None);
        };
        let text = value.to_str().unwrap_or_default().trim();
        if text.is_empty() || text == "e30=" || text == "e30" {
            return Ok(None);
        }
        let bytes = base64::engine::general_purpose::URL_SAFE
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text))
            .or_else(|_| base64::engine::general_purpose::STANDARD.decode(text))
            .map_err(|_| ApiError::bad_request("invalid X-Registry-Auth header: not base64"))?;
        #[derive(serde::Deserialize)]
        struct Login {
            #[serde(default)]
            username: String,
            #[serde(default)]
            password: String,
        }
        let login: Login = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad_request(format!("invalid X-Registry-Auth header: {e}")))?;
        Ok(
            (!login.username.is_empty()).then_some(crate::api::tasks::RegistryAuth {
                username: login.username,
                password: login.password,
            }),
        )
    }
}

/// What every route reaches the control API through.
#[derive(Clone)]
pub struct Engine {
    handler: Arc<dyn Handler>,
    /// Long answers (followed logs, events) end when the daemon stops.
    shutdown: watch::Receiver<bool>,
}

impl Engine {
    /// Sends `request` as the `swarm` CLI would; a refusal becomes
    /// Docker's status and words.
    pub async fn call(&self, request: Request) -> Result<Response, ApiError> {
        let handler = self.handler.clone();
        let response = tokio::task::spawn_blocking(move || handler.handle(request))
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("request failed: {e}"),
                )
            })?;
        match response {
            Response::Error(message) => Err(ApiError::from_control(&message)),
            response => Ok(response),
        }
    }

    /// `request`'s JSON answer (an inspect, a list of objects).
    pub async fn json(&self, request: Request) -> Result<serde_json::Value, ApiError> {
        match self.call(request).await? {
            Response::Json(value)
            | Response::NodeInspect(value)
            | Response::NetworkInspect(value) => Ok(value),
            Response::Rows(rows) => Ok(serde_json::Value::Array(rows)),
            Response::Networks(rows) => Ok(serde_json::to_value(rows).expect("plain data")),
            other => Err(unexpected(&other)),
        }
    }

    /// The first object of an inspect's array.
    pub async fn first(&self, request: Request) -> Result<serde_json::Value, ApiError> {
        match self.json(request).await? {
            serde_json::Value::Array(mut items) if !items.is_empty() => Ok(items.swap_remove(0)),
            other => Ok(other),
        }
    }

    async fn answer(&self, request: hyper::Request<Incoming>) -> Reply {
        let (parts, body) = request.into_parts();
        let body = match read_body(body).await {
            Ok(body) => body,
            Err(err) => return error_reply(&err),
        };
        let query = parts
            .uri
            .query()
            .map(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).unwrap_or_default())
            .unwrap_or_default();
        let (version, path) = match version::split_path(parts.uri.path()) {
            Ok(split) => split,
            Err(err) => return with_common_headers(error_reply(&err)),
        };
        let call = Call {
            method: parts.method,
            path,
            query,
            headers: parts.headers,
            body,
        };
        debug!(method = %call.method, path = ?call.path, ?version, "Docker API request");
        let reply = match self.route(&call).await {
            Ok(reply) => reply,
            Err(err) => error_reply(&err),
        };
        with_common_headers(reply)
    }

    async fn route(&self, call: &Call) -> Result<Reply, ApiError> {
        let path: Vec<&str> = call.path.iter().map(String::as_str).collect();
        match path.first().copied() {
            Some("_ping" | "version" | "info") => version::route(self, call, &path).await,
            Some("swarm" | "nodes") => swarm::route(self, call, &path).await,
            Some("services" | "tasks") => services::route(self, call, &path).await,
            Some("networks" | "secrets" | "configs" | "distribution" | "auth") => {
                objects::route(self, call, &path).await
            }
            Some("events") if call.method == Method::GET => events::stream(self, call).await,
            _ => Err(no_route(call)),
        }
    }
}

/// A field of Docker's JSON as text: a string as it is, null as empty,
/// anything else as JSON (`2`, `true`).
pub fn text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Docker's answer to a path it does not serve.
pub fn no_route(call: &Call) -> ApiError {
    ApiError::not_found(format!(
        "page not found: {} /{} is not an endpoint swarm serves (see docs/engine-api.md)",
        call.method,
        call.path.join("/")
    ))
}

fn unexpected(response: &Response) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("unexpected answer from the control API: {response:?}"),
    )
}

async fn read_body(body: Incoming) -> Result<Bytes, ApiError> {
    let limited = http_body_util::Limited::new(body, MAX_BODY_BYTES);
    limited
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// `value` as the JSON body of a `status` answer.
pub fn json_reply(status: StatusCode, value: &impl Serialize) -> Reply {
    let mut bytes = serde_json::to_vec(value).expect("plain data serializes");
    bytes.push(b'\n');
    hyper::Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(bytes))
        .expect("a valid response")
}

/// A body of the chunks `receiver` yields, until its senders are gone.
pub fn streaming_reply(content_type: &str, receiver: tokio::sync::mpsc::Receiver<Bytes>) -> Reply {
    let chunks = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| {
            (
                Ok::<_, Infallible>(hyper::body::Frame::data(chunk)),
                receiver,
            )
        })
    });
    hyper::Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .body(http_body_util::StreamBody::new(chunks).boxed())
        .expect("a valid response")
}

pub fn empty_reply(status: StatusCode) -> Reply {
    hyper::Response::builder()
        .status(status)
        .body(full(Bytes::new()))
        .expect("a valid response")
}

/// Docker's error body; the client parses it only with exactly this
/// content type.
pub fn error_reply(err: &ApiError) -> Reply {
    json_reply(err.status, &serde_json::json!({ "message": err.message }))
}

/// The headers dockerd puts on every answer.
fn with_common_headers(mut reply: Reply) -> Reply {
    let headers = reply.headers_mut();
    headers.insert(
        "Api-Version",
        header::HeaderValue::from_static(version::MAX_API_VERSION),
    );
    headers.insert("Ostype", header::HeaderValue::from_static("linux"));
    headers.insert(
        "Docker-Experimental",
        header::HeaderValue::from_static("false"),
    );
    headers.insert(
        header::SERVER,
        header::HeaderValue::from_static(concat!("swarm/", env!("CARGO_PKG_VERSION"), " (linux)")),
    );
    reply
}
