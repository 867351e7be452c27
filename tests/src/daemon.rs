//! A `swarm daemon` running in a host namespace, and the CLI pointed at it.

use std::{
    fs::{self, File},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use crate::topology::Host;

const READY_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Where daemons pin their maps (`/sys/fs/bpf/swarm/<node id>`).
pub const PIN_ROOT: &str = "/sys/fs/bpf/swarm";

/// The `swarm` binary under test: `SWARM_BIN`, else the workspace's debug build.
pub fn swarm_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("SWARM_BIN") {
        return PathBuf::from(path);
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/swarm");
    assert!(
        path.exists(),
        "{} does not exist: build it first (`cargo build -p swarm-node`, or run `cargo xtask test`), or set SWARM_BIN",
        path.display()
    );
    path
}

#[derive(Debug)]
pub struct Daemon {
    pub host: String,
    pub addr: std::net::Ipv4Addr,
    pub data_dir: PathBuf,
    pub socket: PathBuf,
    /// Where it serves Docker's Engine API (`DOCKER_HOST=unix://...`).
    pub docker_socket: PathBuf,
    pub log_path: PathBuf,
    child: Option<Child>,
    /// Whether teardown removes the pins a killed daemon left (not when a
    /// restart on the same data dir is to pick them up).
    remove_pins: bool,
}

impl Daemon {
    /// Starts the daemon in `host`'s namespace with its state under `dir` and
    /// waits until its control socket answers.
    pub fn start(host: &Host, dir: &Path, extra_args: &[String]) -> anyhow::Result<Self> {
        fs::create_dir_all(dir)?;
        let data_dir = dir.join("data");
        let socket = dir.join("swarm.sock");
        let docker_socket = dir.join("docker-api").join("docker.sock");
        let log_path = dir.join("daemon.log");
        // Each daemon its own Engine API socket, unless the test names one.
        let docker_api_args: Vec<String> = if extra_args
            .iter()
            .any(|a| a.starts_with("--docker-api-socket"))
        {
            Vec::new()
        } else {
            vec![
                "--docker-api-socket".into(),
                docker_socket.display().to_string(),
            ]
        };
        let log = File::options().create(true).append(true).open(&log_path)?;
        let child = host
            .netns
            .command(swarm_bin())?
            .arg("daemon")
            .arg("--advertise-addr")
            .arg(host.addr.to_string())
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--control-socket")
            .arg(&socket)
            .arg("--hostname")
            .arg(&host.name)
            .args(&docker_api_args)
            .args(extra_args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", swarm_bin().display()))?;
        let mut daemon = Self {
            host: host.name.clone(),
            addr: host.addr,
            data_dir,
            socket,
            docker_socket,
            log_path,
            child: Some(child),
            remove_pins: true,
        };
        daemon.wait_ready()?;
        Ok(daemon)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                anyhow::bail!(
                    "swarm daemon on {} exited with {status} before it was ready:\n{}",
                    self.host,
                    self.log()
                );
            }
            if self
                .swarm(&["info", "--format", "json"])
                .is_ok_and(|o| o.status.success())
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "swarm daemon on {} not ready after {READY_TIMEOUT:?}:\n{}",
                    self.host,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Runs `swarm -H unix://<socket> ARGS...` from the host namespace.
    pub fn swarm(&self, args: &[&str]) -> std::io::Result<Output> {
        Command::new(swarm_bin())
            .arg("--host")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .output()
    }

    /// [`Daemon::swarm`] with `env` set for the CLI (e.g. `DOCKER_CONFIG`).
    pub fn swarm_env(&self, env: &[(&str, &str)], args: &[&str]) -> std::io::Result<Output> {
        Command::new(swarm_bin())
            .envs(env.iter().copied())
            .arg("--host")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .output()
    }

    /// Like [`Daemon::swarm`], but fails unless the command succeeds; returns stdout.
    pub fn swarm_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = self.swarm(args)?;
        if !output.status.success() {
            anyhow::bail!(
                "`swarm {}` on {} failed: {}",
                args.join(" "),
                self.host,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Sends raw control-protocol requests (JSON, one per line) over one
    /// connection, as the CLI would one by one; fails on the first error
    /// answer. For programming thousands of objects in a test quickly.
    pub fn requests(&self, requests: &[serde_json::Value]) -> anyhow::Result<()> {
        use std::io::{BufRead as _, BufReader, Write as _};
        let stream = std::os::unix::net::UnixStream::connect(&self.socket)?;
        let mut writer = std::io::BufWriter::new(stream.try_clone()?);
        let mut reader = BufReader::new(stream);
        let mut answer = String::new();
        for request in requests {
            writeln!(writer, "{request}")?;
            writer.flush()?;
            answer.clear();
            reader.read_line(&mut answer)?;
            let response: serde_json::Value = serde_json::from_str(&answer)?;
            if let Some(message) = response.get("Error") {
                anyhow::bail!("{request} failed on {}: {message}", self.host);
            }
        }
        Ok(())
    }

    /// `swarm ... --format json`, one JSON object per line.
    pub fn swarm_json(&self, args: &[&str]) -> anyhow::Result<Vec<serde_json::Value>> {
        let mut full = args.to_vec();
        full.extend(["--format", "json"]);
        self.swarm_ok(&full)?
            .lines()
            .map(|line| serde_json::from_str(line).with_context(|| format!("not JSON: {line}")))
            .collect()
    }

    /// `swarm ARGS` that prints one JSON document (an `inspect`), parsed.
    pub fn swarm_inspect(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let text = self.swarm_ok(args)?;
        serde_json::from_str(&text).with_context(|| format!("not JSON: {text}"))
    }

    /// A counter from `swarm dataplane stats`: kind `packet` or `drop`.
    pub fn counter(&self, kind: &str, name: &str) -> anyhow::Result<u64> {
        let rows = self.swarm_json(&["dataplane", "stats"])?;
        rows.iter()
            .find(|row| row["Kind"] == kind && row["Counter"] == name)
            .and_then(|row| row["Packets"].as_u64())
            .with_context(|| format!("no {kind} counter {name} on {}", self.host))
    }

    /// Waits until each `(kind, name, at_least)` counter of `swarm dataplane
    /// stats` has counted at least `at_least`: for a test that sent packets,
    /// before it reads exactly what was counted. Panics after
    /// [`crate::PATIENCE`], with the counts last seen.
    pub fn wait_for_counters(&self, expected: &[(&str, &str, u64)]) {
        crate::wait_until(&format!("{} counted {expected:?}", self.host), || {
            let rows = self
                .swarm_json(&["dataplane", "stats"])
                .map_err(|e| e.to_string())?;
            let counted: Vec<Option<u64>> = expected
                .iter()
                .map(|(kind, name, _)| {
                    rows.iter()
                        .find(|row| row["Kind"] == *kind && row["Counter"] == *name)
                        .and_then(|row| row["Packets"].as_u64())
                })
                .collect();
            expected
                .iter()
                .zip(&counted)
                .all(|((_, _, at_least), got)| got.is_some_and(|got| got >= *at_least))
                .then_some(())
                .ok_or(format!("counted {counted:?}"))
        });
    }

    pub fn node_id(&self) -> anyhow::Result<String> {
        Ok(fs::read_to_string(self.data_dir.join("node-id"))?
            .trim()
            .to_owned())
    }

    pub fn pin_dir(&self) -> anyhow::Result<PathBuf> {
        Ok(Path::new(PIN_ROOT).join(self.node_id()?))
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_else(|e| format!("(no log: {e})"))
    }

    /// SIGTERM, and wait for a clean exit; fails if it does not exit in time or cleanly.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM)?;
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                anyhow::ensure!(
                    status.success(),
                    "swarm daemon on {} exited with {status} on SIGTERM:\n{}",
                    self.host,
                    self.log()
                );
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!(
                    "swarm daemon on {} ignored SIGTERM for {STOP_TIMEOUT:?}",
                    self.host
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: the daemon gets no chance to clean up (a crash).
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Stops this daemon but leaves what a crash left pinned, for the next
    /// daemon on the same data dir to pick up.
    pub fn retire(mut self) -> anyhow::Result<()> {
        self.remove_pins = false;
        self.stop()
    }

    /// Best-effort stop for teardown paths: SIGTERM, then SIGKILL, then remove
    /// whatever a killed daemon left pinned.
    pub fn teardown(&mut self) {
        if self.stop().is_err() {
            let _ = self.kill();
        }
        if !self.remove_pins {
            return;
        }
        self.remove_leftover_tasks();
        if let Ok(pin_dir) = self.pin_dir() {
            let _ = fs::remove_dir_all(&pin_dir);
            let _ = fs::remove_dir(PIN_ROOT);
        }
    }
}

impl Daemon {
    /// Tasks a killed daemon left running (a clean stop removes its own):
    /// their processes, network namespaces and cgroups.
    fn remove_leftover_tasks(&self) {
        let Ok(entries) = fs::read_dir(self.data_dir.join("tasks")) else {
            return;
        };
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            crate::netns::delete(&format!("swarm-{id}"));
            let cgroups = [
                "",
                "memory/",
                "cpu,cpuacct/",
                "cpu/",
                "pids/",
                "systemd/",
                "unified/",
            ];
            for hierarchy in cgroups {
                let dir = PathBuf::from(format!("/sys/fs/cgroup/{hierarchy}swarm/{id}"));
                if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
                    for pid in procs.lines().filter_map(|p| p.parse::<i32>().ok()) {
                        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                }
                for _ in 0..50 {
                    if fs::remove_dir(&dir).is_ok() || !dir.exists() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.teardown();
    }
}
