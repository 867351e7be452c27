//! Named network namespaces (visible to `ip netns`) and running code inside them.

use std::{fs::File, path::Path, thread};

use nix::sched::{CloneFlags, setns};

use crate::run;

/// A namespace made with `ip netns add`. Dropping it kills what still runs
/// inside and deletes it.
#[derive(Debug)]
pub struct Netns {
    name: String,
    /// Whether dropping this handle deletes the namespace.
    owned: bool,
}

impl Netns {
    pub fn create(name: &str) -> anyhow::Result<Self> {
        run("ip", &["netns", "add", name])?;
        let ns = Self {
            name: name.to_owned(),
            owned: true,
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A handle on a namespace someone else owns: dropping it deletes nothing.
    pub fn existing(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            owned: false,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n <ns> ARGS...`
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Runs a program inside the namespace (`ip netns exec`).
    pub fn exec(&self, program: &str, args: &[&str]) -> anyhow::Result<String> {
        let mut full = vec!["netns", "exec", self.name.as_str(), program];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// A `Command` that will run inside the namespace (network only: the
    /// mount namespace, and so /sys/fs/bpf, stays the host's).
    pub fn command(
        &self,
        program: impl AsRef<std::ffi::OsStr>,
    ) -> anyhow::Result<std::process::Command> {
        use std::os::unix::process::CommandExt as _;
        // Opened here, not in the child: only async-signal-safe calls after fork.
        let file = File::open(netns_path(&self.name))?;
        let mut cmd = std::process::Command::new(program);
        // SAFETY: setns is async-signal-safe and the closure allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                setns(&file, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
            });
        }
        Ok(cmd)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if self.owned {
            delete(&self.name);
        }
    }
}

fn netns_path(name: &str) -> std::path::PathBuf {
    Path::new("/run/netns").join(name)
}

/// Kills every process in the namespace and deletes it.
pub(crate) fn delete(name: &str) {
    if let Ok(pids) = run("ip", &["netns", "pids", name]) {
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    let _ = run("ip", &["netns", "del", name]);
}

/// Runs `f` on a thread that has entered the namespace `name`, and returns its result.
pub fn in_netns<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    spawn_in_netns(name, f)
        .join()
        .map_err(|_| anyhow::anyhow!("thread in netns panicked"))?
}

/// Starts `f` on a thread inside the namespace `name` and returns at once.
pub fn spawn_in_netns<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> thread::JoinHandle<anyhow::Result<T>> {
    let path = netns_path(name);
    thread::spawn(move || {
        let file = File::open(&path)?;
        setns(&file, CloneFlags::CLONE_NEWNET)?;
        f()
    })
}

/// Namespaces are named `<tag>-<pid>-<n>-<role>`. Deletes those whose creating
/// process is gone (a test run killed before it could clean up).
pub fn sweep_stale(tag: &str) {
    let Ok(list) = run("ip", &["netns", "list"]) else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = name.strip_prefix(tag).and_then(|r| r.strip_prefix('-')) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            delete(name);
        }
    }
}
