//! A private Docker engine for the Docker-runtime tests and benchmarks: a
//! real dockerd on its own socket, data and exec roots, that leaves the
//! host's networking alone (no bridge, no iptables, no forwarding), with a
//! busybox image made by `docker import` (there is no registry here).
//!
//! Dropping it removes its containers and stops the engine; the image store
//! is kept, so the next run does not import again.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;

/// The image the tests run: busybox, with `sh`, `httpd` and friends.
pub const BUSYBOX_IMAGE: &str = "swarm-test/busybox:latest";
const RUN_DIR: &str = "/run/swarm-test-docker";
const DATA_DIR: &str = "/var/lib/swarm-test-docker";
const BUSYBOX: &str = "/bin/busybox";
/// Applets the image links to busybox.
const APPLETS: &[&str] = &[
    "sh", "httpd", "sleep", "hostname", "mkdir", "cat", "echo", "kill", "wget", "nc", "ls", "ps",
];
const START_PATIENCE: Duration = Duration::from_secs(60);

/// Which engine to start, and where.
#[derive(Clone, Debug, Default)]
pub struct EngineOptions {
    /// Names its directories; engines of different instances run side by
    /// side. Empty: the tests' one engine.
    pub instance: String,
    /// The network namespace it runs (and pulls) in; `None`: this one.
    pub netns: Option<String>,
    /// Registries it reaches over plain HTTP (`--insecure-registry`).
    pub insecure_registries: Vec<String>,
}

pub struct DockerEngine {
    dockerd: Option<Child>,
    socket: PathBuf,
}

impl DockerEngine {
    /// Starts the engine (stopping one a killed run left) and imports the
    /// busybox image if it is missing. Fails loudly when dockerd is not
    /// installed: `cargo xtask setup` installs docker.io.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(&EngineOptions::default())
    }

    /// An engine of its own per `options.instance` (its own socket, data
    /// and exec roots), inside `options.netns` when given.
    pub fn start_with(options: &EngineOptions) -> anyhow::Result<Self> {
        crate::require_root();
        anyhow::ensure!(
            Path::new("/usr/sbin/dockerd").exists() || which("dockerd"),
            "dockerd is missing: run `cargo xtask setup` (it installs Debian's docker.io)"
        );
        let suffix = match options.instance.as_str() {
            "" => String::new(),
            instance => format!("-{instance}"),
        };
        let run = PathBuf::from(format!("{RUN_DIR}{suffix}"));
        let data = PathBuf::from(format!("{DATA_DIR}{suffix}"));
        stop_stale(&run);
        fs::create_dir_all(&run)?;
        fs::create_dir_all(&data)?;
        // An empty config: nothing from /etc/docker/daemon.json applies.
        fs::write(run.join("daemon.json"), "{}")?;
        let socket = run.join("docker.sock");
        let log = fs::File::create(run.join("dockerd.log"))?;
        let mut command = match &options.netns {
            // nsenter, not `ip netns exec`: that mounts a sysfs of its own,
            // which hides the cgroup hierarchy dockerd needs.
            Some(netns) => {
                let mut command = Command::new("nsenter");
                command
                    .arg(format!("--net=/run/netns/{netns}"))
                    .arg("dockerd");
                command
            }
            None => Command::new("dockerd"),
        };
        command
            .arg("--host")
            .arg(format!("unix://{}", socket.display()))
            .arg("--data-root")
            .arg(&data)
            .arg("--exec-root")
            .arg(run.join("exec"))
            .arg("--pidfile")
            .arg(run.join("docker.pid"))
            .arg("--config-file")
            .arg(run.join("daemon.json"))
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-forward=false",
                "--ip-masq=false",
                "--containerd-namespace",
                "swarm-test",
                "--containerd-plugins-namespace",
                "swarm-test-plugins",
            ]);
        for registry in &options.insecure_registries {
            command.args(["--insecure-registry", registry]);
        }
        let dockerd = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting dockerd")?;
        let mut engine = Self {
            dockerd: Some(dockerd),
            socket,
        };
        let started = Instant::now();
        loop {
            if engine
                .docker(&["version", "--format", "{{.Server.Version}}"])
                .is_ok()
            {
                break;
            }
            if let Some(child) = engine.dockerd.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                anyhow::bail!(
                    "dockerd exited ({status}); its log: {}",
                    fs::read_to_string(run.join("dockerd.log")).unwrap_or_default()
                );
            }
            anyhow::ensure!(
                started.elapsed() < START_PATIENCE,
                "dockerd did not answer within {START_PATIENCE:?}; its log: {}",
                fs::read_to_string(run.join("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        engine.ensure_busybox_image()?;
        Ok(engine)
    }

    /// `unix:///...`, for `swarm daemon --docker-host`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Runs the docker CLI against this engine.
    pub fn docker(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut full = vec!["-H".to_owned(), self.host()];
        full.extend(args.iter().map(|a| a.to_string()));
        let full: Vec<&str> = full.iter().map(String::as_str).collect();
        crate::run("docker", &full)
    }

    /// IDs of the swarm task containers the engine holds, running or not.
    pub fn task_containers(&self) -> anyhow::Result<Vec<String>> {
        Ok(self
            .docker(&["ps", "-aq", "--filter", "label=swarm.task.id"])?
            .lines()
            .map(str::to_owned)
            .collect())
    }

    fn ensure_busybox_image(&self) -> anyhow::Result<()> {
        if self.docker(&["image", "inspect", BUSYBOX_IMAGE]).is_ok() {
            return Ok(());
        }
        anyhow::ensure!(
            Path::new(BUSYBOX).exists(),
            "{BUSYBOX} is missing: run `cargo xtask setup` (it installs busybox-static)"
        );
        let root = tempfile::tempdir()?;
        let bin = root.path().join("bin");
        fs::create_dir_all(&bin)?;
        fs::copy(BUSYBOX, bin.join("busybox"))?;
        for applet in APPLETS {
            std::os::unix::fs::symlink("busybox", bin.join(applet))?;
        }
        for dir in ["tmp", "etc", "proc", "sys", "dev"] {
            fs::create_dir_all(root.path().join(dir))?;
        }
        let tarball = root.path().join("rootfs.tar");
        crate::run(
            "tar",
            &[
                "-C",
                &root.path().display().to_string(),
                "--exclude",
                "./rootfs.tar",
                "-cf",
                &tarball.display().to_string(),
                ".",
            ],
        )?;
        self.docker(&[
            "import",
            "--change",
            "ENV PATH=/bin",
            "--change",
            r#"CMD ["/bin/sh"]"#,
            &tarball.display().to_string(),
            BUSYBOX_IMAGE,
        ])?;
        Ok(())
    }
}

impl Drop for DockerEngine {
    fn drop(&mut self) {
        if let Ok(ids) = self.task_containers()
            && !ids.is_empty()
        {
            let mut args = vec!["rm", "-f"];
            args.extend(ids.iter().map(String::as_str));
            let _ = self.docker(&args);
        }
        if let Some(mut child) = self.dockerd.take() {
            stop(&mut child);
        }
    }
}

/// SIGTERM, then SIGKILL if it has not exited within 20 s.
fn stop(child: &mut Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A dockerd a killed run left (its pid file says which): stopped.
fn stop_stale(run: &Path) {
    let Ok(pid) = fs::read_to_string(run.join("docker.pid")) else {
        return;
    };
    let Ok(pid) = pid.trim().parse::<i32>() else {
        return;
    };
    let pid = nix::unistd::Pid::from_raw(pid);
    let is_dockerd =
        fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == "dockerd");
    if !is_dockerd {
        return;
    }
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    for _ in 0..200 {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}
