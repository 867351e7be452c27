//! Serves the control socket until shutdown.

use std::{
    io,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::watch,
};
use tracing::{debug, warn};

use crate::api::control::{Request, Response};

/// A request line may not exceed this; a longer one is refused, not buffered.
const MAX_REQUEST_BYTES: usize = 1 << 20;

/// Answers requests; the daemon implements it.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, request: Request) -> Response;
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "another swarm daemon is already listening on {0}; give this one its own --control-socket"
    )]
    InUse(PathBuf),
    #[error("cannot bind the control socket {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
}

/// The bound socket. Dropping it removes the socket file.
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlServer {
    /// Binds `path`, replacing a stale socket file but never a live daemon's.
    pub async fn bind(path: &Path) -> Result<Self, ServerError> {
        let listener = bind_private(path)
            .await
            .map_err(|source| ServerError::Bind {
                path: path.to_owned(),
                source,
            })?
            .ok_or_else(|| ServerError::InUse(path.to_owned()))?;
        Ok(Self {
            listener,
            path: path.to_owned(),
        })
    }

    /// Accepts connections until `shutdown` turns true.
    pub async fn serve(&self, handler: Arc<dyn Handler>, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let handler = handler.clone();
                        tokio::spawn(async move {
                            if let Err(err) = serve_connection(stream, handler).await {
                                debug!(error = %err, "control connection ended with an error");
                            }
                        });
                    }
                    Err(err) => warn!(error = %err, "accepting on the control socket failed"),
                },
            }
        }
    }
}

/// Binds a Unix socket only root may use at `path` (the socket 0600, a
/// directory made for it 0700: it drives a root daemon, like docker.sock
/// without the group). A stale socket file is replaced; `None` when a live
/// server answers there.
pub async fn bind_private(path: &Path) -> io::Result<Option<UnixListener>> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.exists()
    {
        std::fs::create_dir_all(parent)?;
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700))?;
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Ok(None);
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(Some(listener))
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn serve_connection(stream: UnixStream, handler: Arc<dyn Handler>) -> io::Result<()> {
    let (reader, mut writer) = stream.into_split();
    let mut lines = BufReader::new(reader);
    let mut line = String::new();
    loop {
        line.clear();
        let read = (&mut lines)
            .take(MAX_REQUEST_BYTES as u64 + 1)
            .read_line(&mut line)
            .await?;
        if read == 0 {
            return Ok(());
        }
        let response = if line.len() > MAX_REQUEST_BYTES {
            Response::Error(format!("request larger than {MAX_REQUEST_BYTES} bytes"))
        } else {
            match serde_json::from_str::<Request>(&line) {
                Ok(request) => {
                    let handler = handler.clone();
                    tokio::task::spawn_blocking(move || handler.handle(request))
                        .await
                        .unwrap_or_else(|err| Response::Error(format!("request failed: {err}")))
                }
                Err(err) => Response::Error(format!(
                    "malformed request ({err}); is the CLI the same version as the daemon?"
                )),
            }
        };
        let mut out = serde_json::to_vec(&response).map_err(io::Error::other)?;
        out.push(b'\n');
        writer.write_all(&out).await?;
        if line.len() > MAX_REQUEST_BYTES {
            return Ok(());
        }
    }
}
