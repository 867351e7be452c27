//! The eBPF overlay across three hosts: tasks on two networks reach each other
//! on the same node and across nodes, networks stay apart, full-size frames
//! pass, and a removed endpoint stops receiving.

use std::net::Ipv4Addr;

use swarm_tests::{OverlayTask, Topology, TopologyOptions};

const NET_A: u32 = 4096;
const NET_B: u32 = 4097;

/// Three hosts; networks A (10.0.1.0/24) and B (10.0.2.0/24) on every host;
/// on host i a task on A (10.0.1.1i) and one on B (10.0.2.1i); a second task
/// on A on host 1 (10.0.1.21). Every node learns the other nodes' endpoints.
fn overlay_topology() -> (Topology, Vec<OverlayTask>) {
    let mut topology = Topology::new(&TopologyOptions::new("swt", 3)).unwrap();
    topology.start_daemons().unwrap();
    let ip = |net: u8, host: u8| Ipv4Addr::new(10, 0, net, host);
    let mut tasks = topology
        .overlay(
            NET_A,
            "10.0.1.0/24",
            &[
                (0, "t1a", ip(1, 11)),
                (1, "t2a", ip(1, 12)),
                (2, "t3a", ip(1, 13)),
                (0, "t1a2", ip(1, 21)),
            ],
        )
        .unwrap();
    tasks.extend(
        topology
            .overlay(
                NET_B,
                "10.0.2.0/24",
                &[
                    (0, "t1b", ip(2, 11)),
                    (1, "t2b", ip(2, 12)),
                    (2, "t3b", ip(2, 13)),
                ],
            )
            .unwrap(),
    );
    (topology, tasks)
}

fn ping(from: &OverlayTask, to: &str, extra: &[&str]) -> bool {
    swarm_tests::ping(&from.netns, to, extra).is_ok()
}

fn task<'a>(tasks: &'a [OverlayTask], netns_suffix: &str) -> &'a OverlayTask {
    tasks
        .iter()
        .find(|t| t.netns.ends_with(&format!("-{netns_suffix}")))
        .unwrap()
}

#[test]
fn tasks_reach_each_other_on_one_node_and_across_nodes_and_networks_stay_apart() {
    let (topology, tasks) = overlay_topology();
    let t1a = task(&tasks, "t1a");
    let t2b = task(&tasks, "t2b");

    assert!(ping(t1a, "10.0.1.21", &[]), "same node, same network");
    assert!(ping(t1a, "10.0.1.12", &[]), "host 1 -> host 2 on A");
    assert!(ping(t1a, "10.0.1.13", &[]), "host 1 -> host 3 on A");
    assert!(ping(t2b, "10.0.2.13", &[]), "host 2 -> host 3 on B");
    assert!(ping(t2b, "10.0.2.11", &[]), "host 2 -> host 1 on B");

    let h1 = topology.daemon(0);
    assert!(h1.counter("packet", "overlay-local").unwrap() >= 2);
    assert!(h1.counter("packet", "overlay-encap").unwrap() >= 4);
    assert!(h1.counter("packet", "overlay-decap").unwrap() >= 4);
    assert!(h1.counter("packet", "overlay-arp-replied").unwrap() >= 1);
    assert!(
        h1.counter("packet", "vxlan").unwrap() >= 4,
        "VXLAN seen on the underlay"
    );

    // Network A cannot reach B's tasks, on this node or another.
    let before = h1.counter("drop", "unknown-destination").unwrap();
    assert!(!ping(t1a, "10.0.2.11", &[]), "A reached B on the same node");
    assert!(!ping(t1a, "10.0.2.12", &[]), "A reached B across nodes");
    assert!(h1.counter("drop", "unknown-destination").unwrap() >= before + 4);

    let rows = h1.swarm_json(&["dataplane", "endpoints"]).unwrap();
    assert_eq!(rows.len(), 7, "3 local + 4 remote on host 1: {rows:?}");
}

#[test]
fn full_size_frames_pass_larger_do_not_and_tcp_works_at_full_mtu() {
    let (topology, tasks) = overlay_topology();
    let t1a = task(&tasks, "t1a");
    let t2a = task(&tasks, "t2a");
    // 1450-byte IP packets (1422 bytes of ICMP payload) with DF cross nodes.
    assert!(
        ping(t1a, "10.0.1.12", &["-M", "do", "-s", "1422"]),
        "1450 with DF"
    );
    assert!(
        !ping(t1a, "10.0.1.12", &["-M", "do", "-s", "1423"]),
        "1451 with DF"
    );

    let server = topology
        .extra_netns
        .iter()
        .find(|n| n.name() == t2a.netns)
        .unwrap()
        .command("iperf3")
        .unwrap()
        .args(["-s", "-1", "-p", "5201"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut report = None;
    // Retry while the server comes up, for a few seconds at most.
    let ran = swarm_tests::try_wait_until("iperf3 ran", std::time::Duration::from_secs(5), || {
        // Bounded: a stalled transfer must fail the test, not hang it.
        let text = swarm_tests::run(
            "timeout",
            &[
                "60",
                "ip",
                "netns",
                "exec",
                &t1a.netns,
                "iperf3",
                "-c",
                "10.0.1.12",
                "-n",
                "50M",
                "-J",
            ],
        )
        .map_err(|e| e.to_string())?;
        report = Some(text);
        Ok(())
    });
    let mut server = server;
    let _ = server.kill();
    let _ = server.wait();
    ran.unwrap();
    let report: serde_json::Value = serde_json::from_str(&report.expect("iperf3 ran")).unwrap();
    // iperf3 exits cleanly only once the peer acknowledged every byte.
    let sent = report["end"]["sum_sent"]["bytes"].as_f64().unwrap();
    assert!(sent >= 50.0 * 1024.0 * 1024.0, "sent {sent} bytes");
    assert!(report["end"]["sum_received"]["bytes"].as_f64().unwrap() > 0.0);
    let mss = report["start"]["tcp_mss_default"].as_f64().unwrap_or(0.0);
    assert!(mss >= 1398.0, "full-size segments: MSS {mss}");
}

#[test]
fn a_detached_endpoint_stops_receiving_and_its_veth_is_gone() {
    let (topology, tasks) = overlay_topology();
    let t1a = task(&tasks, "t1a");
    let t2a = task(&tasks, "t2a");
    assert!(ping(t1a, "10.0.1.12", &[]));

    let h2 = topology.daemon(1);
    h2.swarm_ok(&["dataplane", "endpoint", "detach", &t2a.netns])
        .unwrap();
    assert!(!ping(t1a, "10.0.1.12", &[]), "still reachable after detach");
    let links = swarm_tests::run("ip", &["-n", &t2a.netns, "link", "show"]).unwrap();
    assert!(!links.contains("eth0"), "eth0 left in the task: {links}");
    let rows = h2.swarm_json(&["dataplane", "endpoints"]).unwrap();
    assert!(!rows.iter().any(|r| r["IP"] == "10.0.1.12"), "{rows:?}");
    // The other tasks are unaffected.
    assert!(ping(t1a, "10.0.1.13", &[]));
}

#[test]
fn established_flows_survive_daemon_restarts() {
    use std::{
        io::{Read as _, Write as _},
        net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
        sync::mpsc,
        time::Duration,
    };

    let (mut topology, tasks) = overlay_topology();
    let t1a = task(&tasks, "t1a").netns.clone();
    let t2a = task(&tasks, "t2a").netns.clone();

    let (ready_tx, ready_rx) = mpsc::channel();
    let server = swarm_tests::spawn_in_netns(&t2a, move || {
        let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 7100))?;
        ready_tx.send(())?;
        let (mut conn, _) = listener.accept()?;
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = conn.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            conn.write_all(&buf[..n])?;
        }
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();

    // One connection for the whole test; each round trips 256 kB over it.
    let (round_tx, round_rx) = mpsc::channel::<()>();
    let (result_tx, result_rx) = mpsc::channel::<bool>();
    let client = swarm_tests::spawn_in_netns(&t1a, move || {
        let target = SocketAddr::from((Ipv4Addr::new(10, 0, 1, 12), 7100));
        let mut conn = TcpStream::connect_timeout(&target, Duration::from_secs(5))?;
        conn.set_read_timeout(Some(Duration::from_secs(20)))?;
        let sent: Vec<u8> = (0..256 * 1024u32).map(|i| (i % 253) as u8).collect();
        for () in round_rx {
            conn.write_all(&sent)?;
            let mut back = vec![0u8; sent.len()];
            let ok = conn.read_exact(&mut back).is_ok() && back == sent;
            result_tx.send(ok)?;
        }
        Ok(())
    });
    let round = |label: &str| {
        round_tx.send(()).unwrap();
        let ok = result_rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or(false);
        assert!(ok, "the connection carried no data {label}");
    };

    round("before the restarts");
    topology.start_daemon(0).unwrap();
    topology.start_daemon(1).unwrap();
    round("after both daemons restarted");

    for i in 0..2 {
        let log = topology.daemon(i).log();
        assert!(
            log.contains("endpoint adopted"),
            "host {} did not adopt its tasks:\n{log}",
            i + 1
        );
        let rows = topology
            .daemon(i)
            .swarm_json(&["dataplane", "endpoints"])
            .unwrap();
        assert!(rows.iter().any(|r| r["Location"] == "local"), "{rows:?}");
    }
    assert!(
        ping(task(&tasks, "t1a"), "10.0.1.13", &[]),
        "new flows after restart"
    );

    drop(round_tx);
    client.join().unwrap().unwrap();
    server.join().unwrap().unwrap();
}

#[test]
fn bad_overlay_input_is_refused_with_a_clear_message_and_changes_nothing() {
    let mut topology = Topology::new(&TopologyOptions::new("swt", 1)).unwrap();
    topology.start_daemons().unwrap();
    let task = topology.add_netns("t1").unwrap().name().to_owned();
    let daemon = topology.daemon(0);
    let fails = |args: &[&str], message: &str| {
        let output = daemon.swarm(args).unwrap();
        assert!(!output.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(message),
            "{args:?}: expected {message:?} in {stderr}"
        );
    };
    fails(
        &[
            "dataplane",
            "network",
            "create",
            "--vni",
            "4096",
            "--subnet",
            "10.0.1.0",
        ],
        "write it like 10.0.1.0/24",
    );
    fails(
        &[
            "dataplane",
            "network",
            "create",
            "--vni",
            "0",
            "--subnet",
            "10.0.1.0/24",
        ],
        "--vni",
    );
    fails(
        &[
            "dataplane",
            "endpoint",
            "attach",
            "--vni",
            "4096",
            "--netns",
            &task,
            "--ip",
            "10.0.1.5",
        ],
        "no overlay network with VNI 4096",
    );
    daemon
        .swarm_ok(&[
            "dataplane",
            "network",
            "create",
            "--vni",
            "4096",
            "--subnet",
            "10.0.1.0/24",
        ])
        .unwrap();
    fails(
        &[
            "dataplane",
            "endpoint",
            "attach",
            "--vni",
            "4096",
            "--netns",
            &task,
            "--ip",
            "10.0.2.5",
        ],
        "not in network 4096's subnet",
    );
    fails(
        &[
            "dataplane",
            "endpoint",
            "attach",
            "--vni",
            "4096",
            "--netns",
            "no-such-ns",
            "--ip",
            "10.0.1.5",
        ],
        "cannot open the task's network namespace",
    );
    daemon
        .swarm_ok(&[
            "dataplane",
            "endpoint",
            "attach",
            "--vni",
            "4096",
            "--netns",
            &task,
            "--ip",
            "10.0.1.5",
        ])
        .unwrap();
    fails(
        &[
            "dataplane",
            "endpoint",
            "add-remote",
            "--vni",
            "4096",
            "--ip",
            "10.0.1.5",
            "--mac",
            "02:42:0a:00:01:05",
            "--node",
            "198.18.0.9",
        ],
        "10.0.1.5 is already in use on network 4096",
    );
    fails(
        &[
            "dataplane",
            "endpoint",
            "add-remote",
            "--vni",
            "4096",
            "--ip",
            "10.0.1.6",
            "--mac",
            "02:42:zz",
            "--node",
            "198.18.0.9",
        ],
        "is not a MAC address",
    );
    fails(&["dataplane", "network", "rm", "4096"], "is still in use");
    fails(
        &["dataplane", "endpoint", "detach", "nope"],
        "no local endpoint \"nope\"",
    );
    fails(
        &[
            "dataplane",
            "endpoint",
            "rm-remote",
            "--vni",
            "4096",
            "--ip",
            "10.0.1.5",
        ],
        "no remote endpoint 10.0.1.5",
    );
    // None of that disturbed the endpoint that was attached.
    let rows = daemon.swarm_json(&["dataplane", "endpoints"]).unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["IP"], "10.0.1.5");
}

#[test]
fn delivery_by_plain_redirect_reaches_tasks_on_one_node_and_across_nodes() {
    let mut topology = Topology::new(&TopologyOptions::new("swt", 2)).unwrap();
    let redirect = ["--local-delivery".to_owned(), "redirect".to_owned()];
    topology.start_daemon_with(0, &redirect).unwrap();
    topology.start_daemon_with(1, &redirect).unwrap();
    let ip = |host: u8| Ipv4Addr::new(10, 0, 1, host);
    let tasks = topology
        .overlay(
            NET_A,
            "10.0.1.0/24",
            &[(0, "r1", ip(11)), (0, "r1b", ip(21)), (1, "r2", ip(12))],
        )
        .unwrap();
    let info = topology.daemon(0).swarm_json(&["info"]).unwrap();
    assert_eq!(info[0]["LocalDelivery"], "redirect");
    let (r1, r1b, r2) = (&tasks[0], &tasks[1], &tasks[2]);
    assert!(ping(r1, "10.0.1.21", &[]), "same node");
    assert!(ping(r1, "10.0.1.12", &[]), "across nodes");
    assert!(ping(r2, "10.0.1.21", &[]), "across nodes, back");
    assert!(
        ping(r1b, "10.0.1.12", &["-s", "1422", "-M", "do"]),
        "full size"
    );
    let decapped = topology
        .daemon(1)
        .counter("packet", "overlay-decap")
        .unwrap();
    assert!(decapped > 0, "node 2 delivered nothing it decapsulated");
}
