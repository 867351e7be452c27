//! Service VIPs and the ingress routing mesh on three hosts, with real TCP
//! and UDP servers in task namespaces: round robin, the client's own address
//! at the backend, idle connections kept, removed backends reset, published
//! ports on every node, host-mode ports, many services, malformed packets.

use std::{
    collections::BTreeMap,
    io::ErrorKind,
    net::{Ipv4Addr, SocketAddr},
    time::Duration,
};

use swarm_tests::{
    OverlayTask, Topology, TopologyOptions,
    servers::{Conversation, WhoAmI, tcp_ask, udp_ask},
};

const NET: u32 = 4096;
const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 100);
const PORT: u16 = 80;
const PUBLISHED: u16 = 8080;

struct Cluster {
    topology: Topology,
    tasks: Vec<OverlayTask>,
    _servers: Vec<WhoAmI>,
}

impl Cluster {
    /// Three hosts (daemons started with `daemon_args`), backends b1-b3 at
    /// 10.0.1.11-13 on hosts 1-3 serving TCP and UDP port 80, clients c1 on
    /// host 1 (10.0.1.21) and c2 on host 2 (10.0.1.22); service `web` with
    /// VIP 10.0.1.100 and 8080:80 published (TCP and UDP) on every node.
    fn new(daemon_args: &[&str]) -> Self {
        let mut topology = Topology::new(&TopologyOptions::new("swt", 3)).unwrap();
        let args: Vec<String> = daemon_args.iter().map(|a| (*a).to_owned()).collect();
        for host in 0..3 {
            topology.start_daemon_with(host, &args).unwrap();
        }
        let ip = |last: u8| Ipv4Addr::new(10, 0, 1, last);
        let tasks = topology
            .overlay(
                NET,
                "10.0.1.0/24",
                &[
                    (0, "b1", ip(11)),
                    (1, "b2", ip(12)),
                    (2, "b3", ip(13)),
                    (0, "c1", ip(21)),
                    (1, "c2", ip(22)),
                ],
            )
            .unwrap();
        let servers = ["b1", "b2", "b3"]
            .iter()
            .map(|name| WhoAmI::start(&task(&tasks, name).netns, name, PORT).unwrap())
            .collect();
        let cluster = Self {
            topology,
            tasks,
            _servers: servers,
        };
        cluster.on_every_node(&[
            "dataplane",
            "service",
            "create",
            "web",
            "--vni",
            "4096",
            "--vip",
            "10.0.1.100",
            "--backend",
            "10.0.1.11",
            "--backend",
            "10.0.1.12",
            "--backend",
            "10.0.1.13",
            "-p",
            "8080:80",
            "-p",
            "8080:80/udp",
        ]);
        cluster
    }

    fn on_every_node(&self, args: &[&str]) {
        for host in 0..3 {
            self.topology.daemon(host).swarm_ok(args).unwrap();
        }
    }

    fn netns(&self, name: &str) -> &str {
        &task(&self.tasks, name).netns
    }

    fn client(&self) -> &str {
        self.topology.client.netns.name()
    }

    fn client_ip(&self) -> Ipv4Addr {
        self.topology.client.addr
    }

    fn node(&self, host: usize, port: u16) -> SocketAddr {
        SocketAddr::from((self.topology.hosts[host].addr, port))
    }

    fn services(&self, host: usize) -> BTreeMap<String, serde_json::Value> {
        self.topology
            .daemon(host)
            .swarm_json(&["dataplane", "services"])
            .unwrap()
            .into_iter()
            .map(|row| (row["Name"].as_str().unwrap().to_owned(), row))
            .collect()
    }
}

fn task<'a>(tasks: &'a [OverlayTask], name: &str) -> &'a OverlayTask {
    tasks
        .iter()
        .find(|t| t.netns.ends_with(&format!("-{name}")))
        .unwrap()
}

fn vip(port: u16) -> SocketAddr {
    SocketAddr::from((VIP, port))
}

/// How many answers each backend gave.
fn tally(servers: impl IntoIterator<Item = String>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for server in servers {
        *counts.entry(server).or_insert(0) += 1;
    }
    counts
}

fn even(per_backend: usize) -> BTreeMap<String, usize> {
    ["b1", "b2", "b3"]
        .iter()
        .map(|b| ((*b).to_owned(), per_backend))
        .collect()
}

#[test]
fn vip_connections_take_turns_over_three_backends_on_three_hosts_and_keep_the_client_address() {
    let cluster = Cluster::new(&[]);
    for (client, client_ip) in [("c1", "10.0.1.21"), ("c2", "10.0.1.22")] {
        let answers: Vec<_> = (0..6)
            .map(|_| tcp_ask(cluster.netns(client), vip(PORT)).unwrap())
            .collect();
        for answer in &answers {
            assert_eq!(answer.peer.ip().to_string(), client_ip, "{answer:?}");
        }
        assert_eq!(tally(answers.into_iter().map(|a| a.server)), even(2));
    }
    let udp: Vec<_> = (0..6)
        .map(|_| udp_ask(cluster.netns("c1"), vip(PORT)).unwrap())
        .collect();
    for answer in &udp {
        assert_eq!(answer.peer.ip().to_string(), "10.0.1.21");
    }
    assert_eq!(tally(udp.into_iter().map(|a| a.server)), even(2));

    // A backend dialling its own service reaches itself in its turn too
    // (hairpin): it then sees the gateway as the caller.
    let from_backend: Vec<_> = (0..3)
        .map(|_| tcp_ask(cluster.netns("b1"), vip(PORT)).unwrap())
        .collect();
    for answer in &from_backend {
        let expected = if answer.server == "b1" {
            "10.0.1.1"
        } else {
            "10.0.1.11"
        };
        assert_eq!(answer.peer.ip().to_string(), expected, "{answer:?}");
    }
    assert_eq!(tally(from_backend.into_iter().map(|a| a.server)), even(1));

    // Any port of the VIP is balanced, as Docker's VIPs do: nothing listens
    // on 81, so the backend's own kernel refuses.
    let refused = tcp_ask(cluster.netns("c1"), vip(81)).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);

    let web = &cluster.services(0)["web"];
    assert_eq!(web["VIP"], "10.0.1.100");
    assert_eq!(web["LocalBackends"], serde_json::json!(["10.0.1.11"]));
    assert!(web["Connections"].as_u64().unwrap() >= 12, "{web}");
    let h1 = cluster.topology.daemon(0);
    assert!(h1.counter("packet", "service-new-flow").unwrap() >= 12);
    assert!(h1.counter("packet", "service-reverse-nat").unwrap() > 0);
}

#[test]
fn published_port_answers_on_every_node_and_backends_see_the_real_client() {
    let cluster = Cluster::new(&[]);
    for host in 0..3 {
        let answers: Vec<_> = (0..3)
            .map(|_| tcp_ask(cluster.client(), cluster.node(host, PUBLISHED)).unwrap())
            .collect();
        for answer in &answers {
            assert_eq!(
                answer.peer.ip(),
                cluster.client_ip(),
                "backend saw {answer:?} through node {}",
                host + 1
            );
        }
        assert_eq!(
            tally(answers.into_iter().map(|a| a.server)),
            even(1),
            "through node {}",
            host + 1
        );
        // udp_ask checks the answer comes from the address dialled.
        let udp: Vec<_> = (0..3)
            .map(|_| udp_ask(cluster.client(), cluster.node(host, PUBLISHED)).unwrap())
            .collect();
        for answer in &udp {
            assert_eq!(answer.peer.ip(), cluster.client_ip());
        }
        assert_eq!(tally(udp.into_iter().map(|a| a.server)), even(1));
    }
    // A port nobody published is the host's own business: nothing listens.
    let untouched = tcp_ask(cluster.client(), cluster.node(0, 8081)).unwrap_err();
    assert_eq!(untouched.kind(), ErrorKind::ConnectionRefused);
    for host in 0..3 {
        let daemon = cluster.topology.daemon(host);
        assert!(daemon.counter("packet", "mesh-new-flow").unwrap() >= 6);
        assert!(daemon.counter("packet", "mesh-out").unwrap() > 0);
        assert!(daemon.counter("packet", "mesh-return").unwrap() > 0);
    }
}

#[test]
fn idle_connections_outlive_the_idle_timeout_while_idle_udp_flows_are_forgotten() {
    let cluster = Cluster::new(&["--conntrack-idle-timeout", "1"]);
    let mut via_vip = Conversation::open(cluster.netns("c1"), vip(PORT)).unwrap();
    let mut via_mesh = Conversation::open(cluster.client(), cluster.node(1, PUBLISHED)).unwrap();
    let first = (via_vip.ask().unwrap(), via_mesh.ask().unwrap());
    udp_ask(cluster.netns("c1"), vip(PORT)).unwrap();
    assert_eq!(cluster.services(0)["web"]["Connections"], 2);

    // Four times the timeout, then both connections carry on with the same backends.
    std::thread::sleep(Duration::from_secs(4));
    let again = (via_vip.ask().unwrap(), via_mesh.ask().unwrap());
    assert_eq!(first, again);
    assert_eq!(
        cluster.services(0)["web"]["Connections"],
        1,
        "the idle UDP flow should be gone, the TCP one kept"
    );
}

#[test]
fn a_removed_backend_gets_no_new_connections_and_its_open_ones_are_reset() {
    let cluster = Cluster::new(&[]);
    let mut talking = Conversation::open(cluster.netns("c1"), vip(PORT)).unwrap();
    let doomed = talking.ask().unwrap().server;
    let doomed_ip = format!("10.0.1.1{}", &doomed[1..]);
    // More connections on the same backend: through the VIP, and through
    // the routing mesh via another node.
    let on_doomed = |netns: &str, target: SocketAddr| loop {
        let mut conversation = Conversation::open(netns, target).unwrap();
        if conversation.ask().unwrap().server == doomed {
            return conversation;
        }
    };
    let mut waiting = on_doomed(cluster.netns("c1"), vip(PORT));
    let mut mesh_talking = on_doomed(cluster.client(), cluster.node(2, PUBLISHED));
    let mut mesh_waiting = on_doomed(cluster.client(), cluster.node(2, PUBLISHED));
    cluster.on_every_node(&[
        "dataplane",
        "service",
        "update",
        "web",
        "--backend-rm",
        &doomed_ip,
    ]);

    // Clients that send get a reset at once; clients only waiting to read
    // are reset too, instead of hanging.
    for (name, conversation) in [("VIP", &mut talking), ("mesh", &mut mesh_talking)] {
        let err = conversation.ask().unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::ConnectionReset,
            "{name}, sending: {err}"
        );
    }
    for (name, conversation) in [("VIP", &mut waiting), ("mesh", &mut mesh_waiting)] {
        let err = conversation.wait_end();
        assert_eq!(
            err.kind(),
            ErrorKind::ConnectionReset,
            "{name}, reading: {err}"
        );
    }
    for _ in 0..6 {
        let answer = tcp_ask(cluster.netns("c1"), vip(PORT)).unwrap();
        assert_ne!(answer.server, doomed);
        let answer = tcp_ask(cluster.client(), cluster.node(0, PUBLISHED)).unwrap();
        assert_ne!(answer.server, doomed);
    }
    let backends = &cluster.services(0)["web"]["Backends"];
    assert_eq!(backends.as_array().unwrap().len(), 2, "{backends}");
    assert!(
        cluster
            .topology
            .daemon(0)
            .counter("packet", "reset-sent")
            .unwrap()
            >= 2
    );
}

#[test]
fn a_service_without_backends_refuses_at_once() {
    let cluster = Cluster::new(&[]);
    cluster.on_every_node(&[
        "dataplane",
        "service",
        "create",
        "empty",
        "--vni",
        "4096",
        "--vip",
        "10.0.1.101",
        "-p",
        "8181:80",
    ]);
    let started = std::time::Instant::now();
    let from_task = tcp_ask(
        cluster.netns("c1"),
        SocketAddr::from(([10, 0, 1, 101], PORT)),
    )
    .unwrap_err();
    assert_eq!(
        from_task.kind(),
        ErrorKind::ConnectionRefused,
        "{from_task}"
    );
    let from_outside = tcp_ask(cluster.client(), cluster.node(1, 8181)).unwrap_err();
    assert_eq!(
        from_outside.kind(),
        ErrorKind::ConnectionRefused,
        "{from_outside}"
    );
    // Refused, not timed out (the connect timeout is 2 s each).
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        cluster
            .topology
            .daemon(0)
            .counter("drop", "no-backend")
            .unwrap()
            >= 1
    );
}

#[test]
fn host_mode_ports_answer_only_where_a_task_runs() {
    let cluster = Cluster::new(&[]);
    cluster.on_every_node(&[
        "dataplane",
        "service",
        "create",
        "direct",
        "--vni",
        "4096",
        "--backend",
        "10.0.1.12",
        "-p",
        "mode=host,published=9090,target=80",
    ]);
    for _ in 0..3 {
        let answer = tcp_ask(cluster.client(), cluster.node(1, 9090)).unwrap();
        assert_eq!(answer.server, "b2");
        assert_eq!(answer.peer.ip(), cluster.client_ip());
    }
    for host in [0, 2] {
        let err = tcp_ask(cluster.client(), cluster.node(host, 9090)).unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::ConnectionRefused,
            "node {}",
            host + 1
        );
    }
    assert_eq!(
        cluster.services(1)["direct"]["LocalBackends"],
        serde_json::json!(["10.0.1.12"])
    );
    assert_eq!(
        cluster.services(0)["direct"]["LocalBackends"],
        serde_json::json!([])
    );
}

#[test]
fn ten_thousand_services_are_programmed_and_the_first_and_last_still_answer() {
    let mut topology = Topology::new(&TopologyOptions::new("swt", 1)).unwrap();
    topology.start_daemon(0).unwrap();
    let tasks = topology
        .overlay(
            4097,
            "10.1.0.0/16",
            &[
                (0, "many-b", Ipv4Addr::new(10, 1, 200, 250)),
                (0, "many-c", Ipv4Addr::new(10, 1, 200, 251)),
            ],
        )
        .unwrap();
    let _server = WhoAmI::start(&tasks[0].netns, "backend", PORT).unwrap();
    let vip_of = |i: u32| Ipv4Addr::new(10, 1, (i / 250 + 1) as u8, (i % 250 + 2) as u8);
    let requests: Vec<serde_json::Value> = (0..10_000)
        .map(|i| {
            serde_json::json!({"ServiceCreate": {
                "name": format!("svc{i}"),
                "vni": 4097,
                "vip": vip_of(i),
                "backends": ["10.1.200.250"],
            }})
        })
        .collect();
    topology.daemon(0).requests(&requests).unwrap();
    let rows = topology
        .daemon(0)
        .swarm_json(&["dataplane", "services"])
        .unwrap();
    assert_eq!(rows.len(), 10_000);
    for i in [0, 4_999, 9_999] {
        let answer = tcp_ask(&tasks[1].netns, SocketAddr::from((vip_of(i), PORT))).unwrap();
        assert_eq!(answer.server, "backend");
        assert_eq!(answer.peer.ip(), tasks[1].ip);
    }
}

#[test]
fn malformed_packets_to_a_published_port_are_dropped_and_counted() {
    use swarm_tests::{Host, in_netns, packets::*, send_raw_frames};

    let cluster = Cluster::new(&[]);
    let host = &cluster.topology.hosts[0];
    let (host_mac, client_mac) = (host.mac().unwrap(), cluster.topology.client.mac().unwrap());
    let addressed = |mut frame: Vec<u8>| {
        frame[..6].copy_from_slice(&host_mac);
        frame[6..12].copy_from_slice(&client_mac);
        frame
    };
    let syn = addressed(ipv4_frame(PROTO_TCP, &tcp(40000, PUBLISHED, b"")));
    let mut bad_offset = syn.clone();
    bad_offset[L4_OFFSET + 12] = 2 << 4;
    // The IP header says 28 bytes: 8 of TCP, cut short.
    let mut truncated = syn[..L4_OFFSET + 8].to_vec();
    truncated[L3_OFFSET + 2..L3_OFFSET + 4].copy_from_slice(&28u16.to_be_bytes());
    fix_ipv4_checksum(&mut truncated, L3_OFFSET);
    let mut bad_udp = addressed(ipv4_frame(PROTO_UDP, &udp(40000, PUBLISHED, b"hello")));
    bad_udp[L4_OFFSET + 4..L4_OFFSET + 6].copy_from_slice(&400u16.to_be_bytes());
    let frames: Vec<Vec<u8>> = std::iter::repeat_n(bad_offset, 3)
        .chain(std::iter::repeat_n(truncated, 2))
        .chain(std::iter::repeat_n(bad_udp, 4))
        .collect();
    in_netns(cluster.client(), move || {
        send_raw_frames(Host::UNDERLAY_IFACE, &frames)?;
        Ok(())
    })
    .unwrap();

    let daemon = cluster.topology.daemon(0);
    daemon.wait_for_counters(&[
        ("drop", "tcp-bad-header-length", 3),
        ("drop", "tcp-truncated", 2),
        ("drop", "udp-bad-length", 4),
    ]);
    assert_eq!(daemon.counter("drop", "tcp-bad-header-length").unwrap(), 3);
    assert_eq!(daemon.counter("drop", "tcp-truncated").unwrap(), 2);
    assert_eq!(daemon.counter("drop", "udp-bad-length").unwrap(), 4);
    assert_eq!(daemon.counter("packet", "mesh-new-flow").unwrap(), 0);
    assert_eq!(cluster.services(0)["web"]["Connections"], 0);
    // The port still serves well-formed requests.
    let answer = tcp_ask(cluster.client(), cluster.node(0, PUBLISHED)).unwrap();
    assert_eq!(answer.peer.ip(), cluster.client_ip());
}

#[test]
fn services_and_their_flows_survive_a_daemon_crash() {
    let mut cluster = Cluster::new(&[]);
    let mut conversation = Conversation::open(cluster.netns("c1"), vip(PORT)).unwrap();
    let before = conversation.ask().unwrap();
    cluster.topology.daemon_mut(0).kill().unwrap();
    cluster.topology.start_daemon(0).unwrap();
    assert_eq!(conversation.ask().unwrap(), before);
    let web = &cluster.services(0)["web"];
    assert_eq!(web["VIP"], "10.0.1.100");
    assert_eq!(web["Backends"].as_array().unwrap().len(), 3);
    let answer = tcp_ask(cluster.client(), cluster.node(0, PUBLISHED)).unwrap();
    assert_eq!(answer.peer.ip(), cluster.client_ip());
}
