//! Gossip between nodes on UDP 7946: endpoints and their names keep
//! spreading to a worker cut off from the managers (its tasks reach and
//! resolve a task started meanwhile), `network inspect` shows the peers and
//! services, and garbage or datagrams sealed with another key are dropped
//! and counted.

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    time::Duration,
};

use swarm_tests::{Swarm, Topology, TopologyOptions, in_netns, servers::http_get, wait_until};

const GOSSIP_PORT: u16 = 7946;

/// h1 inits (with `init_args`), the others join as workers; returns once
/// every node is Ready and each gossips.
fn swarm(tag: &str, hosts: usize, init_args: &[&str]) -> Topology {
    let topology = Swarm::new()
        .init_args(init_args)
        .workers(1..hosts)
        .start(&TopologyOptions::new(tag, hosts))
        .unwrap();
    for host in 0..hosts {
        wait_until(&format!("h{} gossips", host + 1), || {
            let received = gossip_stat(&topology, host, "Received");
            (received > 0)
                .then_some(())
                .ok_or("nothing received".into())
        });
    }
    topology
}

fn key_id(topology: &Topology, host: usize) -> String {
    topology.daemon(host).swarm_json(&["info"]).unwrap()[0]["Gossip"]["KeyID"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

fn gossip_stat(topology: &Topology, host: usize, key: &str) -> u64 {
    topology.daemon(host).swarm_json(&["info"]).unwrap()[0]["Gossip"][key]
        .as_u64()
        .unwrap_or(0)
}

/// The running task of `service` and its address on network `back`.
fn task_of(topology: &Topology, service: &str) -> (String, Ipv4Addr) {
    let network = topology
        .daemon(0)
        .swarm_inspect(&["network", "inspect", "back"])
        .unwrap();
    let network_id = network[0]["Id"].as_str().unwrap().to_owned();
    let mut found = None;
    wait_until(&format!("{service} runs"), || {
        let rows = topology
            .daemon(0)
            .swarm_json(&["service", "ps", service])
            .map_err(|e| e.to_string())?;
        let row = rows
            .iter()
            .find(|r| swarm_tests::is_running_row(r))
            .ok_or(format!("{rows:?}"))?;
        let ip = row["Addresses"][&network_id]
            .as_str()
            .and_then(|ip| ip.parse().ok())
            .ok_or(format!("{row}"))?;
        found = Some((row["ID"].as_str().unwrap().to_owned(), ip));
        Ok(())
    });
    found.unwrap()
}

#[test]
fn endpoints_reach_a_worker_cut_off_from_the_managers_and_peers_show() {
    let topology = swarm("swg", 3, &[]);
    topology
        .daemon(0)
        .swarm_ok(&["network", "create", "-d", "overlay", "back"])
        .unwrap();
    let pinned = |name: &str, host: &str| {
        let mut args = vec![
            "service",
            "create",
            "--name",
            name,
            "--network",
            "back",
            "--constraint",
        ];
        let constraint = format!("node.hostname=={host}");
        args.push(&constraint);
        args.extend_from_slice(swarm_tests::WEB_TASK);
        topology.daemon(0).swarm_ok(&args).unwrap();
    };
    pinned("client", "h3");
    let (client, client_ip) = task_of(&topology, "client");

    // `network inspect` lists the nodes gossip knows, with the endpoints
    // each publishes on the network.
    wait_until("h3's endpoint is in network inspect", || {
        let inspect = topology
            .daemon(0)
            .swarm_inspect(&["network", "inspect", "back"])
            .map_err(|e| e.to_string())?;
        let peers = inspect[0]["Peers"].as_array().cloned().unwrap_or_default();
        let h3 = peers.iter().find(|p| p["IP"] == "198.18.0.3");
        let ok = peers.len() == 3
            && h3.is_some_and(|p| {
                p["Live"] == true
                    && p["Endpoints"]
                        .as_array()
                        .is_some_and(|e| e.iter().any(|ip| ip == &client_ip.to_string()))
            });
        ok.then_some(()).ok_or(format!("{peers:#?}"))
    });

    // h3 and the manager (h1) lose each other, both ways (one way only, and
    // the manager's long poll would still bring h3 news); h2 stays in
    // reach of both.
    let cut = |action: &str| {
        topology.hosts[2]
            .netns
            .ip(&["route", action, "blackhole", "198.18.0.1/32"])
            .unwrap();
        topology.hosts[0]
            .netns
            .ip(&["route", action, "blackhole", "198.18.0.3/32"])
            .unwrap();
    };
    cut("add");
    // A task started now on h2 is known to h3 through gossip alone: the
    // managers cannot tell it.
    pinned("server", "h2");
    let (server, server_ip) = task_of(&topology, "server");
    let netns = format!("swarm-{client}");
    wait_until("h3's task reaches the new task on h2", || {
        http_get(&netns, SocketAddr::from((server_ip, 80)))
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    // Its names came with it: h3 has no VIP of `server` programmed, so the
    // task answers for the service until the managers are back.
    let only_server = BTreeSet::from([server_ip.to_string()]);
    let task_name = format!("server.1.{server}");
    for name in ["server", "tasks.server", task_name.as_str()] {
        wait_until(&format!("h3's task resolves {name} while cut off"), || {
            let got = swarm_tests::resolve_in_task(&client, name);
            (got == only_server).then_some(()).ok_or(format!("{got:?}"))
        });
    }
    cut("del");
    // Back in reach: the managers' word names the VIP again. (Cut off, h3
    // was Down to the managers: its task was replaced by a new one there.)
    let service = topology
        .daemon(0)
        .swarm_inspect(&["service", "inspect", "server"])
        .unwrap();
    let vip = service[0]["Endpoint"]["VirtualIPs"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|v| {
            let addr = v["Addr"].as_str()?.split('/').next()?.to_owned();
            let ip: Ipv4Addr = addr.parse().ok()?;
            (ip.octets()[..3] == server_ip.octets()[..3]).then_some(addr)
        })
        .unwrap();
    wait_until("h3's task resolves server to its VIP", || {
        let (client, _) = task_of(&topology, "client");
        let got = swarm_tests::resolve_in_task(&client, "server");
        (got == BTreeSet::from([vip.clone()]))
            .then_some(())
            .ok_or(format!("{got:?}"))
    });
    // `network inspect` shows the services gossip knows on the network,
    // with each task's address and node (as Docker's `inspect --verbose`).
    let inspect = topology
        .daemon(0)
        .swarm_inspect(&["network", "inspect", "back"])
        .unwrap();
    let tasks = &inspect[0]["Services"]["server"]["Tasks"];
    assert_eq!(
        inspect[0]["Services"]["server"]["VIP"],
        vip.as_str(),
        "{inspect:#}"
    );
    assert_eq!(tasks[0]["Name"], task_name.as_str(), "{inspect:#}");
    assert_eq!(tasks[0]["EndpointIP"], server_ip.to_string(), "{inspect:#}");
    assert_eq!(tasks[0]["Info"]["Host IP"], "198.18.0.2", "{inspect:#}");
}

#[test]
fn garbage_and_datagrams_sealed_with_another_key_are_dropped_and_counted() {
    let topology = swarm("swk", 2, &[]);
    let target = SocketAddr::from((topology.hosts[0].addr, GOSSIP_PORT));
    let malformed = gossip_stat(&topology, 0, "DroppedMalformed");
    let unauthenticated = gossip_stat(&topology, 0, "DroppedUnauthenticated");
    // Garbage; then a well-formed datagram (version, nonce, body and tag)
    // sealed with a key of another swarm.
    let foreign = swarm_node::gossip::transport::GossipKey::from_hex(
        &swarm_node::gossip::transport::new_key_hex(),
    )
    .unwrap();
    let sealed = swarm_node::gossip::transport::seal(&foreign, b"not for this swarm");
    in_netns(topology.client.netns.name(), move || {
        let socket = UdpSocket::bind(("0.0.0.0", 0))?;
        socket.send_to(b"garbage", target)?;
        socket.send_to(&sealed, target)?;
        Ok(())
    })
    .unwrap();
    wait_until("both drops counted", || {
        let m = gossip_stat(&topology, 0, "DroppedMalformed");
        let u = gossip_stat(&topology, 0, "DroppedUnauthenticated");
        (m > malformed && u > unauthenticated)
            .then_some(())
            .ok_or(format!(
                "malformed {malformed}->{m}, unauthenticated {unauthenticated}->{u}"
            ))
    });
    // Gossip goes on, also across a key rotation: counted from when both
    // nodes seal with the new key.
    let old_key = key_id(&topology, 0);
    let out = topology
        .daemon(0)
        .swarm_ok(&["update", "--rotate-gossip-key"])
        .unwrap();
    assert_eq!(out.trim(), "Gossip key rotated.");
    wait_until("both nodes seal with the new key", || {
        let keys: Vec<String> = (0..2).map(|h| key_id(&topology, h)).collect();
        keys.iter()
            .all(|key| *key != old_key && *key == keys[0])
            .then_some(())
            .ok_or(format!("{old_key} before; now {keys:?}"))
    });
    for host in 0..2 {
        let received = gossip_stat(&topology, host, "Received");
        wait_until("gossip goes on after the rotation", || {
            (gossip_stat(&topology, host, "Received") > received)
                .then_some(())
                .ok_or("no more gossip".into())
        });
    }
}

#[test]
fn the_leader_rotates_the_gossip_key_and_gossip_carries_on() {
    let topology = swarm("swr", 3, &["--gossip-key-rotation", "2s"]);
    // Every rotation reaches every node: h1's key changes again and again,
    // and each time all three seal with the same one.
    let mut seen = BTreeSet::new();
    wait_until("three keys in turn, each on every node", || {
        let keys: BTreeSet<String> = (0..3).map(|h| key_id(&topology, h)).collect();
        if let [key] = keys.iter().collect::<Vec<_>>()[..] {
            seen.insert(key.clone());
        }
        (seen.len() >= 3)
            .then_some(())
            .ok_or(format!("agreed on {seen:?}; now {keys:?}"))
    });
    // Gossip still works under the newest key: every node sees the other
    // two live, and an endpoint published now reaches them.
    topology
        .daemon(0)
        .swarm_ok(&["network", "create", "-d", "overlay", "back"])
        .unwrap();
    let mut args = vec![
        "service",
        "create",
        "--name",
        "late",
        "--network",
        "back",
        "--constraint",
        "node.hostname==h3",
    ];
    args.extend_from_slice(swarm_tests::WEB_TASK);
    topology.daemon(0).swarm_ok(&args).unwrap();
    let (_, late_ip) = task_of(&topology, "late");
    wait_until("h1 gossips h3's new endpoint, all peers live", || {
        let inspect = topology
            .daemon(0)
            .swarm_inspect(&["network", "inspect", "back"])
            .map_err(|e| e.to_string())?;
        let peers = inspect[0]["Peers"].as_array().cloned().unwrap_or_default();
        let all_live = peers.len() == 3 && peers.iter().all(|p| p["Live"] == true);
        let has_late = peers.iter().any(|p| {
            p["Endpoints"]
                .as_array()
                .is_some_and(|e| e.iter().any(|ip| ip == &late_ip.to_string()))
        });
        (all_live && has_late)
            .then_some(())
            .ok_or(format!("{peers:#?}"))
    });

    // Too short a period is refused, naming the flag; a long one holds the key.
    let output = topology
        .daemon(0)
        .swarm(&["update", "--gossip-key-rotation", "1s"])
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && err.contains("--gossip-key-rotation") && err.contains("2s"),
        "{err}"
    );
    topology
        .daemon(0)
        .swarm_ok(&["update", "--gossip-key-rotation", "1h"])
        .unwrap();
    // The key made just before the change may still be spreading.
    std::thread::sleep(Duration::from_secs(3));
    let held = key_id(&topology, 0);
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        key_id(&topology, 0),
        held,
        "no rotation within 6s of a 1h period"
    );
    // `--rotate-gossip-key` still rotates at once.
    topology
        .daemon(0)
        .swarm_ok(&["update", "--rotate-gossip-key"])
        .unwrap();
    wait_until("h1 seals with a new key", || {
        let now = key_id(&topology, 0);
        (now != held).then_some(()).ok_or(now)
    });
}
