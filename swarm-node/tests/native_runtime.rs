//! The native runtime run for real (root): the task's own network, mount,
//! UTS and PID namespaces and cgroup, its init forwarding SIGTERM and
//! reporting exit codes, chroot into a busybox root, limits, a restarted
//! daemon adopting its running tasks, and nothing left behind.

use std::{
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use swarm_node::{
    identity::new_id,
    runtime::{
        Resources, RunState, Runtime, RuntimeError, TaskSpec, native::NativeRuntime, netns_name,
        netns_path,
    },
};
use swarm_tests::{require_root, run};
use tempfile::TempDir;

const BUSYBOX: &str = "/bin/busybox";

/// A runtime on a state dir of its own; every task it made is removed when
/// dropped, on success and on panic.
struct Tasks {
    runtime: NativeRuntime,
    state_dir: TempDir,
    made: Vec<String>,
}

impl Tasks {
    fn new() -> Self {
        require_root();
        let state_dir = tempfile::tempdir().expect("a temporary state dir");
        let runtime =
            NativeRuntime::new(state_dir.path().join("tasks")).expect("the native runtime");
        Self {
            runtime,
            state_dir,
            made: Vec::new(),
        }
    }

    /// A spec on the host's filesystem running `args`, with a fresh task ID.
    fn spec(&mut self, args: &[&str]) -> TaskSpec {
        let task_id = new_id();
        self.made.push(task_id.clone());
        TaskSpec {
            task_id,
            image: "host".into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: Vec::new(),
            hostname: "task-host".into(),
            hosts: Vec::new(),
            resources: Resources::default(),
            healthcheck: None,
            no_healthcheck: false,
            registry_auth: None,
            entrypoint: None,
            workdir: None,
            user: None,
            files: Vec::new(),
            mounts: Vec::new(),
            container: Default::default(),
        }
    }

    fn prepare_and_start(&self, spec: &TaskSpec) {
        self.runtime.prepare(spec).expect("prepare");
        self.runtime.start(spec).expect("start");
    }

    /// Simulates a daemon restart: a new runtime on the same state dir.
    fn restart_runtime(&mut self) {
        self.runtime = NativeRuntime::new(self.state_dir.path().join("tasks"))
            .expect("the native runtime again");
    }

    fn wait_exited(&self, task_id: &str) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.runtime.state(task_id).expect("state") {
                RunState::Exited { code } => return code,
                state if Instant::now() > deadline => panic!("task still {state:?} after 10 s"),
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Waits until the task's log holds `needle`; the log then.
    fn wait_for_log(&self, task_id: &str, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log(task_id);
            if log.contains(needle) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the log after 10 s: {log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self, task_id: &str) -> String {
        let lines = self.runtime.logs(task_id).expect("logs");
        lines
            .iter()
            .map(|line| format!("{}\n", line.text))
            .collect()
    }

    /// Removes the task and checks that nothing of it is left.
    fn remove(&self, task_id: &str) {
        let cgroups = self.runtime.cgroup_dirs(task_id);
        self.runtime.remove(task_id).expect("remove");
        assert_eq!(self.runtime.state(task_id).unwrap(), RunState::Missing);
        assert!(!netns_path(task_id).exists(), "the namespace file stays");
        assert!(
            !netns_list().contains(&netns_name(task_id)),
            "`ip netns list` still shows the task"
        );
        for dir in cgroups {
            assert!(!dir.exists(), "cgroup {} stays", dir.display());
        }
        assert!(
            !self.state_dir.path().join("tasks").join(task_id).exists(),
            "the task dir stays"
        );
        assert!(!self.runtime.list().unwrap().contains(&task_id.to_owned()));
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for task_id in &self.made {
            if let Err(err) = self.runtime.remove(task_id) {
                eprintln!("cleaning up task {task_id}: {err}");
            }
        }
    }
}

fn netns_list() -> Vec<String> {
    run("ip", &["netns", "list"])
        .expect("ip netns list")
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// The value after `key=` on a line of `log`.
fn logged<'a>(log: &'a str, key: &str) -> &'a str {
    log.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= line in the log: {log}"))
}

#[test]
fn a_task_runs_in_its_own_namespaces_with_its_files() {
    let mut tasks = Tasks::new();
    let mut spec = tasks.spec(&[
        "sh",
        "-c",
        "echo hello; echo oops >&2; hostname; cat /etc/hosts; \
         echo pid=$$; echo init=$(cat /proc/1/comm); \
         echo processes=$(ls /proc | grep -c '^[0-9]'); \
         echo tmp=$(stat -f -c %T /tmp); echo env=$HOSTNAME,$FOO,$PATH",
    ]);
    spec.hostname = "web-1".into();
    spec.env = vec!["FOO=bar".into()];
    spec.hosts = vec![(Ipv4Addr::new(10, 0, 0, 5), "web-1".into())];

    let netns = tasks.runtime.prepare(&spec).expect("prepare");
    assert_eq!(netns, netns_path(&spec.task_id));
    assert!(netns_list().contains(&netns_name(&spec.task_id)));
    let lo = run(
        "ip",
        &["-n", &netns_name(&spec.task_id), "link", "show", "lo"],
    )
    .unwrap();
    assert!(
        lo.contains(",UP"),
        "lo is not up in the task's namespace: {lo}"
    );
    // Preparing again is fine.
    assert_eq!(tasks.runtime.prepare(&spec).expect("prepare again"), netns);
    assert_eq!(
        tasks.runtime.state(&spec.task_id).unwrap(),
        RunState::Created
    );

    tasks.runtime.start(&spec).expect("start");
    assert_eq!(tasks.wait_exited(&spec.task_id), 0);
    let log = tasks.log(&spec.task_id);
    for line in [
        "hello",
        "oops",
        "web-1",
        "127.0.0.1\tlocalhost",
        "10.0.0.5\tweb-1",
    ] {
        assert!(
            log.lines().any(|l| l == line),
            "no line {line:?} in the log: {log}"
        );
    }
    // The shell is the first child of the task's init, in a PID namespace
    // holding only the task.
    assert_eq!(logged(&log, "pid"), "2");
    assert_eq!(logged(&log, "init"), "swarm-init");
    let processes: usize = logged(&log, "processes").parse().unwrap();
    assert!(
        processes <= 5,
        "{processes} processes visible in the task's /proc"
    );
    assert_eq!(logged(&log, "tmp"), "tmpfs");
    let env = logged(&log, "env");
    assert!(
        env.starts_with("web-1,bar,/usr/local/sbin:"),
        "environment: {env}"
    );

    tasks.remove(&spec.task_id);
}

#[test]
fn exit_codes_and_refusals() {
    let mut tasks = Tasks::new();
    let spec = tasks.spec(&["sh", "-c", "exit 3"]);
    tasks.prepare_and_start(&spec);
    assert_eq!(tasks.wait_exited(&spec.task_id), 3);
    tasks.remove(&spec.task_id);

    // A program that cannot run: start fails, nothing runs, the task is
    // back to created.
    let missing = tasks.spec(&["no-such-program-anywhere"]);
    tasks.runtime.prepare(&missing).expect("prepare");
    let err = tasks
        .runtime
        .start(&missing)
        .expect_err("start of a missing program");
    assert!(
        err.to_string().contains("no-such-program-anywhere"),
        "{err}"
    );
    assert_eq!(
        tasks.runtime.state(&missing.task_id).unwrap(),
        RunState::Created
    );
    for dir in tasks.runtime.cgroup_dirs(&missing.task_id) {
        let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        assert!(
            procs.trim().is_empty(),
            "processes left in {}: {procs}",
            dir.display()
        );
    }
    tasks.remove(&missing.task_id);

    let no_command = tasks.spec(&[]);
    let err = tasks.runtime.prepare(&no_command).expect_err("no command");
    assert!(matches!(err, RuntimeError::Invalid { .. }));
    assert!(err.to_string().contains("needs a command"), "{err}");
    let mut bad_image = tasks.spec(&["true"]);
    bad_image.image = "busybox:latest".into();
    let err = tasks
        .runtime
        .prepare(&bad_image)
        .expect_err("an image reference");
    assert!(matches!(err, RuntimeError::Invalid { .. }));
    assert!(err.to_string().contains("absolute directory"), "{err}");
    assert_eq!(
        tasks.runtime.state(&bad_image.task_id).unwrap(),
        RunState::Missing
    );
}

#[test]
fn stop_goes_through_init_and_kills_after_the_grace_period() {
    let mut tasks = Tasks::new();
    let spec = tasks.spec(&["sleep", "1000"]);
    tasks.prepare_and_start(&spec);
    assert_eq!(
        tasks.runtime.state(&spec.task_id).unwrap(),
        RunState::Running
    );
    // Starting again is a no-op while it runs.
    tasks.runtime.start(&spec).expect("start again");

    let started = Instant::now();
    tasks
        .runtime
        .stop(&spec.task_id, Duration::from_secs(5))
        .expect("stop");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "stop took {took:?}: SIGTERM did not reach sleep"
    );
    assert_eq!(
        tasks.runtime.state(&spec.task_id).unwrap(),
        RunState::Exited { code: 143 }
    );
    // Stopping an exited task is fine.
    tasks
        .runtime
        .stop(&spec.task_id, Duration::from_secs(5))
        .expect("stop again");
    tasks.remove(&spec.task_id);
    tasks
        .runtime
        .stop(&spec.task_id, Duration::from_secs(5))
        .expect("stop a missing task");
    tasks
        .runtime
        .remove(&spec.task_id)
        .expect("remove a missing task");

    // A program that ignores SIGTERM is killed once the grace period is over.
    let stubborn = tasks.spec(&[
        "sh",
        "-c",
        "trap '' TERM; echo ready; while :; do sleep 1; done",
    ]);
    tasks.prepare_and_start(&stubborn);
    tasks.wait_for_log(&stubborn.task_id, "ready");
    let started = Instant::now();
    tasks
        .runtime
        .stop(&stubborn.task_id, Duration::from_millis(500))
        .expect("stop");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(500),
        "stop took only {took:?}"
    );
    assert_eq!(
        tasks.runtime.state(&stubborn.task_id).unwrap(),
        RunState::Exited { code: 137 }
    );
    tasks.remove(&stubborn.task_id);
}

#[test]
fn the_task_uses_the_prepared_network_namespace() {
    let mut tasks = Tasks::new();
    let spec = tasks.spec(&["sh", "-c", "echo netns=$(readlink /proc/self/ns/net)"]);
    tasks.prepare_and_start(&spec);
    assert_eq!(tasks.wait_exited(&spec.task_id), 0);
    let inside = tasks.log(&spec.task_id);
    let inside = logged(&inside, "netns");
    let prepared = run(
        "stat",
        &[
            "-L",
            "-c",
            "%i",
            netns_path(&spec.task_id).to_str().unwrap(),
        ],
    )
    .unwrap();
    assert_eq!(inside, format!("net:[{}]", prepared.trim()));
    let ours = fs::read_link("/proc/self/ns/net").unwrap();
    assert_ne!(
        Path::new(inside),
        ours,
        "the task shares the test's namespace"
    );
    tasks.remove(&spec.task_id);
}

#[test]
fn a_task_chroots_into_a_root_directory() {
    assert!(
        Path::new(BUSYBOX).is_file(),
        "{BUSYBOX} is missing: run `cargo xtask setup` (it installs busybox-static)"
    );
    let mut tasks = Tasks::new();
    let rootfs = tempfile::tempdir().expect("a rootfs dir");
    for dir in ["bin", "etc", "dev"] {
        fs::create_dir(rootfs.path().join(dir)).unwrap();
    }
    fs::copy(BUSYBOX, rootfs.path().join("bin/busybox")).unwrap();
    let mut spec = tasks.spec(&[
        "/bin/busybox",
        "sh",
        "-c",
        "echo ls-begin; /bin/busybox ls /; echo ls-end; /bin/busybox cat /etc/hosts; \
         echo hostname=$(/bin/busybox hostname); echo x > /dev/null && echo devnull=ok",
    ]);
    spec.image = rootfs.path().to_str().unwrap().into();
    spec.hostname = "box".into();
    spec.hosts = vec![(Ipv4Addr::new(10, 0, 0, 9), "box".into())];
    tasks.prepare_and_start(&spec);
    assert_eq!(
        tasks.wait_exited(&spec.task_id),
        0,
        "log: {}",
        tasks.log(&spec.task_id)
    );

    let log = tasks.log(&spec.task_id);
    let listing: Vec<&str> = log
        .lines()
        .skip_while(|l| *l != "ls-begin")
        .skip(1)
        .take_while(|l| *l != "ls-end")
        .flat_map(str::split_whitespace)
        .collect();
    assert_eq!(listing, ["bin", "dev", "etc", "proc", "tmp"], "log: {log}");
    assert!(log.lines().any(|l| l == "10.0.0.9\tbox"), "log: {log}");
    assert_eq!(logged(&log, "hostname"), "box");
    assert_eq!(logged(&log, "devnull"), "ok");
    tasks.remove(&spec.task_id);
}

#[test]
fn limits_show_in_the_task_cgroup() {
    let mut tasks = Tasks::new();
    let mut spec = tasks.spec(&[
        "sh",
        "-c",
        "cat /proc/self/cgroup; echo listed; exec sleep 1000",
    ]);
    spec.resources = Resources {
        nano_cpus: Some(500_000_000),
        memory_bytes: Some(64 << 20),
        pids: None,
    };
    tasks.prepare_and_start(&spec);
    let log = tasks.wait_for_log(&spec.task_id, "listed");
    let expected_path = format!("/swarm/{}", spec.task_id);
    // `hierarchy:controllers:path` lines, as the task's process sees them.
    let cgroup_of = |controller: &str| -> PathBuf {
        let line = log
            .lines()
            .filter_map(|line| line.splitn(3, ':').collect::<Vec<_>>().try_into().ok())
            .find(|[_, controllers, _]: &[&str; 3]| {
                if controller.is_empty() {
                    controllers.is_empty()
                } else {
                    controllers.split(',').any(|c| c == controller)
                }
            })
            .unwrap_or_else(|| panic!("no {controller:?} cgroup in the log: {log}"));
        let [_, controllers, path] = line;
        assert_eq!(path, expected_path, "the task's {controller:?} cgroup");
        Path::new("/sys/fs/cgroup")
            .join(controllers)
            .join(path.trim_start_matches('/'))
    };
    let read = |file: PathBuf| {
        fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
            .trim()
            .to_owned()
    };
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        let dir = cgroup_of("");
        assert_eq!(read(dir.join("memory.max")), (64u64 << 20).to_string());
        assert_eq!(read(dir.join("cpu.max")), "50000 100000");
    } else {
        let memory = cgroup_of("memory");
        assert_eq!(
            read(memory.join("memory.limit_in_bytes")),
            (64u64 << 20).to_string()
        );
        let cpu = cgroup_of("cpu");
        assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "50000");
        assert_eq!(read(cpu.join("cpu.cfs_period_us")), "100000");
        cgroup_of("pids");
    }
    for dir in tasks.runtime.cgroup_dirs(&spec.task_id) {
        assert!(dir.is_dir(), "no cgroup {}", dir.display());
    }
    tasks.remove(&spec.task_id);
}

#[test]
fn a_restarted_daemon_finds_and_stops_its_running_tasks() {
    let mut tasks = Tasks::new();
    let spec = tasks.spec(&["sh", "-c", "echo up; exec sleep 1000"]);
    tasks.prepare_and_start(&spec);
    tasks.wait_for_log(&spec.task_id, "up");

    tasks.restart_runtime();
    assert_eq!(tasks.runtime.list().unwrap(), vec![spec.task_id.clone()]);
    assert_eq!(
        tasks.runtime.state(&spec.task_id).unwrap(),
        RunState::Running
    );
    assert!(tasks.log(&spec.task_id).contains("up"));
    let started = Instant::now();
    tasks
        .runtime
        .stop(&spec.task_id, Duration::from_secs(5))
        .expect("stop");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        tasks.runtime.state(&spec.task_id).unwrap(),
        RunState::Exited { code: 143 }
    );
    tasks.remove(&spec.task_id);
}

#[test]
fn output_lines_carry_the_time_they_were_written() {
    let mut tasks = Tasks::new();
    let spec = tasks.spec(&[
        "sh",
        "-c",
        "echo one; sleep 1; echo two >&2; head -c 40000 /dev/zero | tr '\\0' x; echo; printf partial",
    ]);
    tasks.runtime.prepare(&spec).expect("prepare");
    // A log from before lines were stamped is read first, without times.
    let task_dir = tasks.state_dir.path().join("tasks").join(&spec.task_id);
    fs::write(task_dir.join("log"), "from an older swarm\n").expect("an old log");
    let started = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    tasks.runtime.start(&spec).expect("start");
    assert_eq!(tasks.wait_exited(&spec.task_id), 0);
    let ended = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();

    let lines = tasks.runtime.logs(&spec.task_id).expect("logs");
    let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(
        texts[..3],
        ["from an older swarm", "one", "two"],
        "{texts:?}"
    );
    assert_eq!(lines[0].at_nanos, None);
    // The long line arrives whole, in pieces of at most 16 KiB.
    let long: Vec<&str> = texts[3..texts.len() - 1].to_vec();
    assert_eq!(
        long.iter().map(|l| l.len()).collect::<Vec<_>>(),
        [16384, 16384, 7232]
    );
    assert!(long.iter().all(|l| l.bytes().all(|b| b == b'x')));
    // The last line had no newline: the shim writes it when the task ends.
    assert_eq!(texts.last(), Some(&"partial"));

    let times: Vec<i64> = lines[1..]
        .iter()
        .map(|l| l.at_nanos.expect("a time"))
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert!(
        times[0] >= started.as_nanos() as i64 && times[times.len() - 1] <= ended.as_nanos() as i64
    );
    assert!(
        times[1] - times[0] >= 900_000_000,
        "`sleep 1` between: {times:?}"
    );
    tasks.remove(&spec.task_id);
}
