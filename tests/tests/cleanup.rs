//! Nothing the harness or a daemon makes outlives them: namespaces, daemons,
//! pins, files; after success, after a panic, and across a daemon crash.

use std::{
    path::{Path, PathBuf},
    sync::Mutex,
};

use swarm_tests::{Host, Topology, TopologyOptions, run};

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
