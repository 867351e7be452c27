//! Gossip between nodes on UDP 7946: endpoints keep spreading to a worker
//! cut off from the managers, `network inspect` shows the peers, and
//! garbage or datagrams sealed with another key are dropped and counted.

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    time::Duration,
};

use swarm_tests::{Topology, TopologyOptions, in_netns, servers::http_get};

const PATIENCE: Duration = Duration::from_secs(30);
const GOSSIP_PORT: u16 = 7946;

fn wait_until(what: &str, check: impl FnMut() -> Result<(), String>) {
    swarm_tests::wait_until(what, PATIENCE, check);
}

/// h1 inits, the others join as workers; returns once each gossips.
fn swarm(tag: &str, hosts: usize) -> Topology {
    let mut topology = Topology::new(&TopologyOptions::new(tag, hosts)).unwrap();
    topology.start_daemons().unwrap();
    topology.daemon(0).swarm_ok(&["init"]).unwrap();
    for host in 1..hosts {
        topology.join(host, "worker", 0).unwrap();
    }
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

fn gossip_stat(topology: &Topology, host: usize, key: &str) -> u64 {
    topology.daemon(host).swarm_json(&["info"]).unwrap()[0]["Gossip"][key]
        .as_u64()
        .unwrap_or(0)
}

/// The running task of `service` and its address on network `back`.
fn task_of(topology: &Topology, service: &str) -> (String, Ipv4Addr) {
    let network: serde_json::Value = serde_json::from_str(
        &topology
            .daemon(0)
            .swarm_ok(&["network", "inspect", "back"])
            .unwrap(),
    )
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
            .find(|r| {
                r["DesiredState"] == "Running"
                    && r["CurrentState"]
                        .as_str()
                        .unwrap_or("")
                        .starts_with("Running")
            })
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
    let topology = swarm("swg", 3);
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
        let text = topology
            .daemon(0)
            .swarm_ok(&["network", "inspect", "back"])
            .map_err(|e| e.to_string())?;
        let inspect: serde_json::Value = serde_json::from_str(&text).unwrap();
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

    // h3 loses the manager (h1); h2 stays in reach of both.
    topology.hosts[2]
        .netns
        .ip(&["route", "add", "blackhole", "198.18.0.1/32"])
        .unwrap();
    // A task started now on h2 is known to h3 through gossip alone: the
    // managers cannot tell it.
    pinned("server", "h2");
    let (_, server_ip) = task_of(&topology, "server");
    let netns = format!("swarm-{client}");
    wait_until("h3's task reaches the new task on h2", || {
        http_get(&netns, SocketAddr::from((server_ip, 80)))
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    topology.hosts[2]
        .netns
        .ip(&["route", "del", "blackhole", "198.18.0.1/32"])
        .unwrap();
}

#[test]
fn garbage_and_datagrams_sealed_with_another_key_are_dropped_and_counted() {
    let topology = swarm("swk", 2);
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
    // Gossip goes on, also across a key rotation.
    let out = topology
        .daemon(0)
        .swarm_ok(&["update", "--rotate-gossip-key"])
        .unwrap();
    assert_eq!(out.trim(), "Gossip key rotated.");
    std::thread::sleep(Duration::from_secs(1));
    for host in 0..2 {
        let received = gossip_stat(&topology, host, "Received");
        wait_until("gossip goes on after the rotation", || {
            (gossip_stat(&topology, host, "Received") > received)
                .then_some(())
                .ok_or("no more gossip".into())
        });
    }
}
