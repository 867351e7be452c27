//! Nothing the harness or a daemon makes outlives them: namespaces, daemons,
//! pins, files; after success, after a panic, and across a daemon crash;
//! and `swarm daemon --cleanup` removes what a killed daemon left.

use std::{
    path::{Path, PathBuf},
    sync::Mutex,
};

use swarm_tests::{Host, Swarm, Topology, TopologyOptions, run, wait_until};

/// What a topology made, recorded so it can be looked for after it is gone.
#[derive(Debug, Default)]
struct Footprint {
    netns: Vec<String>,
    pin_dirs: Vec<PathBuf>,
    pids: Vec<u32>,
    workdir: PathBuf,
}

impl Footprint {
    fn of(topology: &Topology) -> Self {
        let daemons = topology.daemons.iter().flatten();
        Self {
            netns: topology.netns_names(),
            pin_dirs: daemons.clone().map(|d| d.pin_dir().unwrap()).collect(),
            pids: daemons.filter_map(|d| d.pid()).collect(),
            workdir: topology.workdir.path().to_owned(),
        }
    }

    fn assert_gone(&self) {
        assert!(!self.netns.is_empty() && !self.pin_dirs.is_empty() && !self.pids.is_empty());
        let listed = run("ip", &["netns", "list"]).unwrap();
        for name in &self.netns {
            assert!(
                !listed
                    .lines()
                    .any(|l| l.split_whitespace().next() == Some(name)),
                "namespace {name} left behind"
            );
        }
        for dir in &self.pin_dirs {
            assert!(!dir.exists(), "pins left in {}", dir.display());
        }
        for pid in &self.pids {
            assert!(
                !Path::new(&format!("/proc/{pid}")).exists(),
                "daemon pid {pid} still running"
            );
        }
        assert!(
            !self.workdir.exists(),
            "{} left behind",
            self.workdir.display()
        );
    }
}

#[test]
fn teardown_leaves_nothing_after_success() {
    let footprint = {
        let mut topology = Topology::new(&TopologyOptions::new("swt", 2)).unwrap();
        topology.start_daemons().unwrap();
        let footprint = Footprint::of(&topology);
        for dir in &footprint.pin_dirs {
            assert!(dir.exists(), "daemon should pin under {}", dir.display());
        }
        footprint
    };
    footprint.assert_gone();
}

#[test]
fn teardown_leaves_nothing_after_a_panic() {
    let recorded = Mutex::new(Footprint::default());
    let outcome = std::panic::catch_unwind(|| {
        let mut topology = Topology::new(&TopologyOptions::new("swt", 2)).unwrap();
        topology.start_daemons().unwrap();
        *recorded.lock().unwrap() = Footprint::of(&topology);
        panic!("deliberate panic inside a test with live daemons");
    });
    assert!(outcome.is_err(), "the closure must have panicked");
    recorded.into_inner().unwrap().assert_gone();
}

#[test]
fn sigterm_detaches_unpins_and_removes_the_socket() {
    let mut topology = Topology::new(&TopologyOptions::new("swt", 1)).unwrap();
    topology.start_daemons().unwrap();
    let pin_dir = topology.daemon(0).pin_dir().unwrap();
    let socket = topology.daemon(0).socket.clone();
    assert!(pin_dir.exists() && socket.exists());

    topology.daemon_mut(0).stop().unwrap();

    let link = topology.hosts[0]
        .netns
        .ip(&["link", "show", Host::UNDERLAY_IFACE])
        .unwrap();
    assert!(
        !link.contains(" xdp"),
        "XDP still attached after SIGTERM: {link}"
    );
    assert!(!pin_dir.exists(), "pins left after SIGTERM");
    assert!(!socket.exists(), "control socket left after SIGTERM");
}

#[test]
fn a_crashed_daemon_restarts_into_its_pinned_counters() {
    let mut topology = Topology::new(&TopologyOptions::new("swt", 1)).unwrap();
    topology.start_daemons().unwrap();
    let addr = topology.hosts[0].addr.to_string();
    topology
        .client
        .netns
        .exec("ping", &["-c", "4", "-i", "0.2", "-W", "2", &addr])
        .unwrap();
    let before = topology.daemon(0).counter("packet", "icmp").unwrap();
    let node_id = topology.daemon(0).node_id().unwrap();
    assert!(before >= 4);

    topology.daemon_mut(0).kill().unwrap();
    let pin_dir = topology.daemon(0).pin_dir().unwrap();
    assert!(
        pin_dir.exists(),
        "a crash must leave the pinned maps for the restart"
    );
    let link = topology.hosts[0]
        .netns
        .ip(&["link", "show", Host::UNDERLAY_IFACE])
        .unwrap();
    assert!(
        !link.contains(" xdp"),
        "the XDP link dies with its process: {link}"
    );

    topology.start_daemon(0).unwrap();
    assert_eq!(topology.daemon(0).node_id().unwrap(), node_id);
    let after = topology.daemon(0).counter("packet", "icmp").unwrap();
    assert!(
        after >= before,
        "counters lost across the crash: {before} -> {after}"
    );
    let link = topology.hosts[0]
        .netns
        .ip(&["link", "show", Host::UNDERLAY_IFACE])
        .unwrap();
    assert!(
        link.contains(" xdp"),
        "not re-attached after restart: {link}"
    );
}

/// The running task of `service` on h1, once there is one.
fn running_task(topology: &Topology, service: &str) -> String {
    let mut task = String::new();
    wait_until(&format!("a running task of {service}"), || {
        let rows = topology
            .daemon(0)
            .swarm_json(&["service", "ps", service])
            .map_err(|e| e.to_string())?;
        let row = rows
            .iter()
            .find(|r| swarm_tests::is_running_row(r))
            .ok_or(format!("{rows:?}"))?;
        task = row["ID"].as_str().unwrap_or_default().to_owned();
        Ok::<(), String>(())
    });
    task
}

/// The processes in a task's cgroup (v2, or the pids hierarchy of v1).
fn task_pids(task: &str) -> Vec<u32> {
    ["/sys/fs/cgroup/swarm", "/sys/fs/cgroup/pids/swarm"]
        .iter()
        .find_map(|root| std::fs::read_to_string(format!("{root}/{task}/cgroup.procs")).ok())
        .unwrap_or_default()
        .lines()
        .filter_map(|pid| pid.trim().parse().ok())
        .collect()
}

/// The host's links a daemon makes: task veths (`swh...`) and the VXLAN
/// device.
fn swarm_links(host: &Host) -> Vec<String> {
    host.netns
        .ip(&["-o", "link", "show"])
        .unwrap()
        .lines()
        .filter_map(|line| line.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_owned())
        .filter(|name| name.starts_with("swh") || name == "swarm-vxlan")
        .collect()
}

/// Whether a process is alive (a zombie is not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(") ")
            .next()
            .is_some_and(|rest| !rest.starts_with('Z'))
    })
}

#[test]
fn cleanup_removes_what_a_killed_daemon_left() {
    let mut topology = Topology::new(&TopologyOptions::new("swt", 1)).unwrap();
    topology.start_daemons().unwrap();
    Swarm::new().form(&topology).unwrap();
    let h1 = topology.daemon(0);
    h1.swarm_ok(&["network", "create", "-d", "overlay", "back"])
        .unwrap();
    h1.swarm_ok(&[
        "service",
        "create",
        "--name",
        "web",
        "--network",
        "back",
        "host",
        "sleep",
        "600",
    ])
    .unwrap();
    let task = running_task(&topology, "web");
    let pids = task_pids(&task);
    let pin_dir = h1.pin_dir().unwrap();
    let data_dir = h1.data_dir.to_str().unwrap().to_owned();
    let node_id = h1.node_id().unwrap();
    // In the host's network namespace, as the daemon ran; `ip netns exec`
    // would mount a /sys of its own, without the host's cgroups and bpffs.
    let cleanup = |topology: &Topology| -> Result<String, String> {
        let out = topology.hosts[0]
            .netns
            .command(swarm_tests::swarm_bin())
            .unwrap()
            .args(["daemon", "--cleanup", "--data-dir", &data_dir])
            .output()
            .unwrap();
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        if out.status.success() {
            Ok(text(&out.stdout))
        } else {
            Err(text(&out.stderr))
        }
    };

    // A live daemon's data dir is refused, with the reason.
    let refused = cleanup(&topology).unwrap_err();
    assert!(
        refused.contains("a swarm daemon is running on data dir"),
        "{refused}"
    );

    topology.daemon_mut(0).kill().unwrap();
    // What a kill -9 leaves.
    assert!(
        !pids.is_empty() && pids.iter().all(|&pid| alive(pid)),
        "{pids:?}"
    );
    assert!(pin_dir.exists());
    let links = swarm_links(&topology.hosts[0]);
    assert!(links.len() >= 2, "{links:?}");
    assert!(
        run("ip", &["netns", "list"])
            .unwrap()
            .contains(&format!("swarm-{task}"))
    );

    let said = cleanup(&topology).unwrap();
    assert!(
        said.contains(&format!("node {node_id}: removed 1 task(s)")),
        "{said}"
    );
    for pid in &pids {
        assert!(!alive(*pid), "task process {pid} survives --cleanup");
    }
    assert!(!pin_dir.exists(), "pins left in {}", pin_dir.display());
    assert_eq!(swarm_links(&topology.hosts[0]), Vec::<String>::new());
    assert!(
        !run("ip", &["netns", "list"])
            .unwrap()
            .contains(&format!("swarm-{task}"))
    );
    assert!(task_pids(&task).is_empty());
    // A second run finds nothing.
    let again = cleanup(&topology).unwrap();
    assert!(
        again.contains("removed 0 task(s), 0 link(s), no pins"),
        "{again}"
    );

    // The node starts again as itself, and its swarm replaces the task.
    topology.start_daemon(0).unwrap();
    assert_eq!(topology.daemon(0).node_id().unwrap(), node_id);
    wait_until("a new task of web running", || {
        let now = running_task(&topology, "web");
        (now != task).then_some(()).ok_or(now)
    });
}
