//! The real docker CLI, and a plain HTTP client, pointed at a swarm
//! daemon's Engine API socket.

use std::{
    io::{BufReader, Read as _, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

use anyhow::Context as _;

use crate::Daemon;

/// Docker 28.2 (API 1.50).
pub const DOCKER_28: &str = "/usr/local/bin/docker";
/// Debian's docker 20.10 (API 1.41).
pub const DOCKER_20_10: &str = "/usr/bin/docker";

/// One docker CLI binary talking to one daemon's socket, with a config
/// directory of its own (no login or context of the machine's leaks in).
pub struct DockerCli {
    bin: PathBuf,
    socket: PathBuf,
    config: tempfile::TempDir,
}

impl DockerCli {
    pub fn new(bin: &str, daemon: &Daemon) -> anyhow::Result<Self> {
        anyhow::ensure!(
            Path::new(bin).exists(),
            "{bin} is missing: `cargo xtask setup` installs the docker CLIs"
        );
        Ok(Self {
            bin: bin.into(),
            socket: daemon.docker_socket.clone(),
            config: tempfile::tempdir()?,
        })
    }

    /// The same binary and config against another daemon.
    pub fn at(&self, daemon: &Daemon) -> anyhow::Result<Self> {
        Self::new(&self.bin.display().to_string(), daemon)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.bin);
        command
            .env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .env("DOCKER_CONFIG", self.config.path())
            .env_remove("DOCKER_API_VERSION")
            .env_remove("DOCKER_CONTEXT")
            .args(args);
        command
    }

    pub fn run(&self, args: &[&str]) -> anyhow::Result<Output> {
        self.command(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", self.bin.display()))
    }

    pub fn run_with_stdin(&self, args: &[&str], input: &[u8]) -> anyhow::Result<Output> {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child.stdin.take().expect("piped").write_all(input)?;
        Ok(child.wait_with_output()?)
    }

    /// stdout of `docker ARGS`, failing with its stderr when it fails.
    pub fn ok(&self, args: &[&str]) -> anyhow::Result<String> {
        checked(&self.bin, args, self.run(args)?)
    }

    pub fn ok_with_stdin(&self, args: &[&str], input: &[u8]) -> anyhow::Result<String> {
        checked(&self.bin, args, self.run_with_stdin(args, input)?)
    }

    /// stderr of `docker ARGS`, which must fail.
    pub fn fails(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = self.run(args)?;
        anyhow::ensure!(
            !output.status.success(),
            "`docker {}` succeeded but should have failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout)
        );
        Ok(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

fn checked(bin: &Path, args: &[&str], output: Output) -> anyhow::Result<String> {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    anyhow::ensure!(
        output.status.success(),
        "`{} {}` failed ({}): {}{}",
        bin.display(),
        args.join(" "),
        output.status,
        stdout,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(stdout)
}

/// An answer read off the socket.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpAnswer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// One HTTP/1.1 request over the Unix socket, read to its end.
pub fn http(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<HttpAnswer> {
    let mut stream = UnixStream::connect(socket)
        .with_context(|| format!("connecting to {}", socket.display()))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut reader = BufReader::new(stream);
    let (status, headers) = read_head(&mut reader)?;
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let mut body = Vec::new();
    if chunked {
        loop {
            let chunk = read_chunk(&mut reader)?;
            if chunk.is_empty() {
                break;
            }
            body.extend(chunk);
        }
    } else {
        reader.read_to_end(&mut body)?;
    }
    Ok(HttpAnswer {
        status,
        headers,
        body,
    })
}

type Head = (u16, Vec<(String, String)>);

fn read_head(reader: &mut impl std::io::BufRead) -> anyhow::Result<Head> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no HTTP status in {line:?}"))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        if let Some((k, v)) = trimmed.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    Ok((status, headers))
}

fn read_chunk(reader: &mut impl std::io::BufRead) -> anyhow::Result<Vec<u8>> {
    let mut size = String::new();
    reader.read_line(&mut size)?;
    let size = usize::from_str_radix(size.trim(), 16)
        .with_context(|| format!("bad chunk size {size:?}"))?;
    let mut chunk = vec![0; size + 2];
    reader.read_exact(&mut chunk)?;
    chunk.truncate(size);
    Ok(chunk)
}

/// A streamed answer (`/events`) read a chunk at a time.
pub struct HttpStream {
    pub status: u16,
    reader: BufReader<UnixStream>,
    pending: Vec<u8>,
}

impl HttpStream {
    pub fn open(socket: &Path, path: &str) -> anyhow::Result<Self> {
        let mut stream = UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(stream, "GET {path} HTTP/1.1\r\nHost: docker\r\n\r\n")?;
        let mut reader = BufReader::new(stream);
        let (status, _) = read_head(&mut reader)?;
        Ok(Self {
            status,
            reader,
            pending: Vec::new(),
        })
    }

    /// The next line of the stream (one JSON event).
    pub fn next_line(&mut self) -> anyhow::Result<String> {
        loop {
            if let Some(at) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=at).collect();
                return Ok(String::from_utf8_lossy(&line).trim().to_owned());
            }
            let chunk = read_chunk(&mut self.reader)?;
            anyhow::ensure!(!chunk.is_empty(), "the stream ended");
            self.pending.extend(chunk);
        }
    }
}

/// Whether `line` of `docker ... --format` output is there.
pub fn has_line(output: &str, line: &str) -> bool {
    output.lines().any(|l| l.trim() == line)
}
