//! The CLI's side of the control socket.

use std::{
    io::{self, BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
};

use crate::api::control::{Request, Response};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "unsupported --host {0:?}: give the daemon's control socket as unix:///path/to/swarm.sock"
    )]
    BadHost(String),
    #[error(
        "cannot reach the swarm daemon at {path}: {source}. Is `swarm daemon` running? Point --host or SWARM_HOST at its --control-socket"
    )]
    Connect { path: PathBuf, source: io::Error },
    #[error("talking to the swarm daemon at {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "the daemon at {path} sent an answer this CLI cannot read ({source}); are both the same version?"
    )]
    Decode {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{0}")]
    Daemon(String),
}

/// Turns `unix:///run/swarm/swarm.sock` (or a bare absolute path) into a path.
pub fn parse_host(host: &str) -> Result<PathBuf, ClientError> {
    let path = host.strip_prefix("unix://").unwrap_or(host);
    if path.starts_with('/') {
        Ok(PathBuf::from(path))
    } else {
        Err(ClientError::BadHost(host.to_owned()))
    }
}

pub struct Client {
    path: PathBuf,
    stream: BufReader<UnixStream>,
}

impl Client {
    pub fn connect(path: &Path) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self {
            path: path.to_owned(),
            stream: BufReader::new(stream),
        })
    }

    /// Sends one request and waits for its answer; a daemon-side error becomes `Err`.
    pub fn call(&mut self, request: &Request) -> Result<Response, ClientError> {
        let io_err = |source| ClientError::Io {
            path: self.path.clone(),
            source,
        };
        let mut line = serde_json::to_vec(request).map_err(|e| io_err(io::Error::other(e)))?;
        line.push(b'\n');
        self.stream.get_mut().write_all(&line).map_err(io_err)?;
        let mut answer = String::new();
        if self.stream.read_line(&mut answer).map_err(io_err)? == 0 {
            return Err(io_err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the daemon closed the connection",
            )));
        }
        match serde_json::from_str(&answer) {
            Ok(Response::Error(message)) => Err(ClientError::Daemon(message)),
            Ok(response) => Ok(response),
            Err(source) => Err(ClientError::Decode {
                path: self.path.clone(),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_forms() {
        assert_eq!(
            parse_host("unix:///run/swarm/swarm.sock").unwrap(),
            PathBuf::from("/run/swarm/swarm.sock")
        );
        assert_eq!(
            parse_host("/tmp/s.sock").unwrap(),
            PathBuf::from("/tmp/s.sock")
        );
        assert_eq!(
            parse_host(super::super::DEFAULT_HOST).unwrap(),
            PathBuf::from(super::super::DEFAULT_CONTROL_SOCKET)
        );
        let err = parse_host("tcp://1.2.3.4:2375").unwrap_err().to_string();
        assert!(err.contains("unix:///"), "{err}");
    }
}
