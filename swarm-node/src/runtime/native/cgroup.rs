//! Each task's cgroup: `swarm/<task id>` in the unified tree (cgroup v2), or
//! in each v1 hierarchy the runtime uses (memory, cpu, pids).

use std::{
    fs, io,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tracing::{debug, warn};

use super::super::{Resources, RuntimeError, TaskUsage};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The directory under each hierarchy's root that holds the tasks' cgroups.
const PARENT: &str = "swarm";
/// Docker's CFS period: `--limit-cpu` scales the quota against it.
pub(super) const CPU_PERIOD_US: u64 = 100_000;
const V2_CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];

#[derive(Clone, Debug)]
pub(super) enum CgroupLayout {
    /// One tree with controllers enabled per subtree.
    V2 { root: PathBuf },
    /// A tree per controller (or per group of co-mounted controllers); `None`
    /// where that controller is not mounted.
    V1 {
        memory: Option<PathBuf>,
        cpu: Option<PathBuf>,
        pids: Option<PathBuf>,
    },
}

impl CgroupLayout {
    /// Pure v2 when the root is the unified tree, else the v1 hierarchies
    /// found in this process's mount table.
    pub(super) fn detect() -> io::Result<Self> {
        let root = Path::new(CGROUP_ROOT);
        if root.join("cgroup.controllers").exists() {
            return Ok(Self::V2 {
                root: root.to_owned(),
            });
        }
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
        let layout = Self::V1 {
            memory: v1_mount_point(&mountinfo, "memory"),
            cpu: v1_mount_point(&mountinfo, "cpu"),
            pids: v1_mount_point(&mountinfo, "pids"),
        };
        if layout.hierarchies().is_empty() {
            return Err(io::Error::other(format!(
                "{CGROUP_ROOT} is not cgroup v2 and no v1 hierarchy for memory, cpu or pids is mounted; mount one (e.g. `mount -t cgroup -o memory cgroup {CGROUP_ROOT}/memory`)"
            )));
        }
        Ok(layout)
    }

    /// The roots of the hierarchies in use, the one that lists a task's
    /// processes first (pids when mounted: it has no other job).
    fn hierarchies(&self) -> Vec<&Path> {
        match self {
            Self::V2 { root } => vec![root.as_path()],
            Self::V1 { memory, cpu, pids } => {
                let mut roots: Vec<&Path> = Vec::new();
                for root in [pids, memory, cpu].into_iter().flatten() {
                    // Co-mounted controllers share one directory.
                    if !roots.contains(&root.as_path()) {
                        roots.push(root);
                    }
                }
                roots
            }
        }
    }

    /// The task's cgroup directories, the one listing its processes first.
    pub(super) fn task_dirs(&self, task_id: &str) -> Vec<PathBuf> {
        self.hierarchies()
            .into_iter()
            .map(|root| root.join(PARENT).join(task_id))
            .collect()
    }

    /// Creates the task's cgroups with `resources` as limits (an unset limit
    /// is lifted, so starting again with other limits applies them) and
    /// returns their `cgroup.procs` files, for the task's init to join.
    pub(super) fn create(
        &self,
        task_id: &str,
        resources: &Resources,
    ) -> Result<Vec<PathBuf>, RuntimeError> {
        let io = |what: String| {
            let task = task_id.to_owned();
            move |source| RuntimeError::Io { task, what, source }
        };
        if let Self::V2 { root } = self {
            enable_v2_controllers(root, &root.join(PARENT))
                .map_err(io(format!("creating {}", root.join(PARENT).display())))?;
        }
        let dirs = self.task_dirs(task_id);
        for dir in &dirs {
            fs::create_dir_all(dir).map_err(io(format!("creating cgroup {}", dir.display())))?;
        }
        // Zero means no limit, as in Docker.
        let memory_bytes = resources.memory_bytes.filter(|&bytes| bytes > 0);
        let quota = resources
            .nano_cpus
            .filter(|&nano| nano > 0)
            .map(|nano| (nano.saturating_mul(CPU_PERIOD_US) / 1_000_000_000).max(1000));
        let pids = resources.pids.filter(|&pids| pids > 0);
        let limits: Vec<(PathBuf, String)> = match self {
            Self::V2 { root } => {
                let dir = root.join(PARENT).join(task_id);
                let mut limits = Vec::new();
                for (file, controller, limit, unlimited) in [
                    (
                        "memory.max",
                        "memory",
                        memory_bytes.map(|b| b.to_string()),
                        "max".to_owned(),
                    ),
                    (
                        "cpu.max",
                        "cpu",
                        quota.map(|q| format!("{q} {CPU_PERIOD_US}")),
                        format!("max {CPU_PERIOD_US}"),
                    ),
                    (
                        "pids.max",
                        "pids",
                        pids.map(|p| p.to_string()),
                        "max".to_owned(),
                    ),
                ] {
                    // The file exists only where the controller is enabled.
                    let file = dir.join(file);
                    match limit {
                        Some(_) if !file.exists() => {
                            return Err(RuntimeError::Invalid {
                                task: task_id.to_owned(),
                                message: format!(
                                    "a {controller} limit needs the cgroup v2 {controller} controller, which {} does not offer; enable it in {}/cgroup.subtree_control or drop the limit",
                                    dir.display(),
                                    root.display()
                                ),
                            });
                        }
                        Some(value) => limits.push((file, value)),
                        None if file.exists() => limits.push((file, unlimited)),
                        None => {}
                    }
                }
                limits
            }
            Self::V1 {
                memory,
                cpu,
                pids: pids_root,
            } => {
                let controller_dir = |root: &Option<PathBuf>, name: &str, wanted: bool| match root {
                    Some(root) => Ok(Some(root.join(PARENT).join(task_id))),
                    None if wanted => Err(RuntimeError::Invalid {
                        task: task_id.to_owned(),
                        message: format!(
                            "a {name} limit needs the cgroup v1 {name} controller, which is not mounted; mount it or drop the limit"
                        ),
                    }),
                    None => Ok(None),
                };
                let mut limits = Vec::new();
                if let Some(dir) = controller_dir(memory, "memory", memory_bytes.is_some())? {
                    let bytes = memory_bytes.map_or("-1".to_owned(), |b| b.to_string());
                    limits.push((dir.join("memory.limit_in_bytes"), bytes));
                }
                if let Some(dir) = controller_dir(cpu, "cpu", quota.is_some())? {
                    limits.push((dir.join("cpu.cfs_period_us"), CPU_PERIOD_US.to_string()));
                    let quota = quota.map_or("-1".to_owned(), |q| q.to_string());
                    limits.push((dir.join("cpu.cfs_quota_us"), quota));
                }
                if let Some(dir) = controller_dir(pids_root, "pids", pids.is_some())? {
                    let max = pids.map_or("max".to_owned(), |p| p.to_string());
                    limits.push((dir.join("pids.max"), max));
                }
                limits
            }
        };
        for (file, value) in limits {
            fs::write(&file, &value)
                .map_err(io(format!("writing {value} to {}", file.display())))?;
        }
        Ok(dirs.iter().map(|dir| dir.join("cgroup.procs")).collect())
    }

    /// CPU time and memory the task's cgroup has used; `None` when it has
    /// no cgroup (gone, or never started).
    pub(super) fn usage(&self, task_id: &str) -> Option<TaskUsage> {
        let read = |path: PathBuf| fs::read_to_string(path).ok();
        let number = |text: Option<String>| text.and_then(|t| t.trim().parse::<u64>().ok());
        match self {
            Self::V2 { root } => {
                let dir = root.join(PARENT).join(task_id);
                let cpu_usec = read(dir.join("cpu.stat")).and_then(|stat| {
                    stat.lines()
                        .find_map(|line| line.strip_prefix("usage_usec "))
                        .and_then(|v| v.trim().parse::<u64>().ok())
                });
                let memory = number(read(dir.join("memory.current")));
                (cpu_usec.is_some() || memory.is_some()).then(|| TaskUsage {
                    cpu_seconds: cpu_usec.unwrap_or(0) as f64 / 1e6,
                    memory_bytes: memory.unwrap_or(0),
                })
            }
            Self::V1 { memory, cpu, .. } => {
                let in_v1 = |root: &Option<PathBuf>, file: &str| {
                    root.as_ref()
                        .and_then(|root| number(read(root.join(PARENT).join(task_id).join(file))))
                };
                let cpu_ns = in_v1(cpu, "cpuacct.usage");
                let memory = in_v1(memory, "memory.usage_in_bytes");
                (cpu_ns.is_some() || memory.is_some()).then(|| TaskUsage {
                    cpu_seconds: cpu_ns.unwrap_or(0) as f64 / 1e9,
                    memory_bytes: memory.unwrap_or(0),
                })
            }
        }
    }

    /// The processes in the task's cgroup (none when it has no cgroup).
    pub(super) fn pids(&self, task_id: &str) -> Vec<Pid> {
        let Some(dir) = self.task_dirs(task_id).into_iter().next() else {
            return Vec::new();
        };
        fs::read_to_string(dir.join("cgroup.procs"))
            .map(|procs| {
                procs
                    .lines()
                    .filter_map(|line| line.trim().parse().ok())
                    .map(Pid::from_raw)
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(super) fn is_empty(&self, task_id: &str) -> bool {
        self.pids(task_id).is_empty()
    }

    pub(super) fn signal_all(&self, task_id: &str, signal: Signal) {
        for pid in self.pids(task_id) {
            if let Err(err) = kill(pid, signal) {
                debug!(task = task_id, %pid, %signal, %err, "cannot signal a task process");
            }
        }
    }

    /// SIGKILLs everything in the task's cgroup until it is empty, or
    /// `timeout` passes; whether it emptied.
    pub(super) fn kill_all(&self, task_id: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let pids = self.pids(task_id);
            if pids.is_empty() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            // Repeated: a process may fork between the listing and the kill.
            self.signal_all(task_id, Signal::SIGKILL);
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Removes the task's cgroups, retrying while the last processes drain.
    pub(super) fn remove(&self, task_id: &str) -> Result<(), RuntimeError> {
        for dir in self.task_dirs(task_id) {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match fs::remove_dir(&dir) {
                    Ok(()) => break,
                    Err(err) if err.kind() == io::ErrorKind::NotFound => break,
                    Err(err)
                        if err.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline =>
                    {
                        thread::sleep(Duration::from_millis(20));
                    }
                    Err(source) => {
                        return Err(RuntimeError::Io {
                            task: task_id.to_owned(),
                            what: format!("removing cgroup {}", dir.display()),
                            source,
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

/// The mount point of the v1 hierarchy holding `controller`, from
/// /proc/self/mountinfo (`... <mount point> ... - cgroup <source> rw,memory`).
fn v1_mount_point(mountinfo: &str, controller: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (mount, filesystem) = line.split_once(" - ")?;
        let mut filesystem = filesystem.split_whitespace();
        if filesystem.next()? != "cgroup" {
            return None;
        }
        let options = filesystem.nth(1)?;
        if !options.split(',').any(|option| option == controller) {
            return None;
        }
        mount.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// Lets `parent`'s children use the v2 controllers: enabled in the root's
/// and in `parent`'s subtree. One controller at a time, so that one the
/// kernel lacks does not keep the others off.
fn enable_v2_controllers(root: &Path, parent: &Path) -> io::Result<()> {
    fs::create_dir_all(parent)?;
    for dir in [root, parent] {
        let available = fs::read_to_string(dir.join("cgroup.controllers"))?;
        for controller in V2_CONTROLLERS {
            if !available.split_whitespace().any(|c| c == controller) {
                continue;
            }
            if let Err(err) =
                fs::write(dir.join("cgroup.subtree_control"), format!("+{controller}"))
            {
                warn!(cgroup = %dir.display(), controller, %err, "cannot enable a cgroup controller");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn finds_v1_hierarchies_by_exact_controller_name() {
        assert_eq!(
            v1_mount_point(MOUNTINFO, "cpu"),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"))
        );
        assert_eq!(
            v1_mount_point(MOUNTINFO, "memory"),
            Some(PathBuf::from("/sys/fs/cgroup/memory"))
        );
        assert_eq!(v1_mount_point(MOUNTINFO, "pids"), None);
    }
}
