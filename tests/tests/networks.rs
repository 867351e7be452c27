//! `swarm network`: overlay networks in the replicated store, allocated
//! subnets and VNIs, Docker's output, and refusals that say why.

use swarm_tests::{Swarm, Topology, TopologyOptions, wait_until};

fn refused(topology: &Topology, host: usize, args: &[&str], expected: &str) {
    let output = topology.daemon(host).swarm(args).unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && err.contains(expected),
        "{args:?}: {err}"
    );
}

fn inspect(topology: &Topology, host: usize, network: &str) -> serde_json::Value {
    let text = topology
        .daemon(host)
        .swarm_ok(&["network", "inspect", network])
        .unwrap();
    serde_json::from_str::<serde_json::Value>(&text).unwrap()[0].clone()
}

#[test]
fn networks_are_allocated_by_the_leader_and_seen_by_every_manager() {
    // h1 and h2 managers, h3 a worker.
    let topology = Swarm::new()
        .managers([1])
        .workers([2])
        .start(&TopologyOptions::new("swt", 3))
        .unwrap();

    // `init` made Docker's ingress network.
    let ingress = inspect(&topology, 0, "ingress");
    assert_eq!(ingress["Ingress"], true);
    assert_eq!(ingress["IPAM"]["Config"][0]["Subnet"], "10.0.0.0/24");
    assert_eq!(
        ingress["Options"]["com.docker.network.driver.overlay.vxlanid_list"],
        "4096"
    );

    // Created through a follower: the leader allocates the next /24 and VNI.
    let id = topology
        .daemon(1)
        .swarm_ok(&["network", "create", "-d", "overlay", "front"])
        .unwrap();
    let id = id.trim();
    assert_eq!(id.len(), 25, "{id}");
    topology
        .daemon(0)
        .swarm_ok(&[
            "network",
            "create",
            "--subnet",
            "10.0.9.0/24",
            "--gateway",
            "10.0.9.254",
            "--attachable",
            "-o",
            "com.docker.network.driver.mtu=1400",
            "--label",
            "team=a",
            "back",
        ])
        .unwrap();

    let front = inspect(&topology, 0, &id[..8]);
    assert_eq!(front["Name"], "front");
    assert_eq!(front["Id"], id);
    assert_eq!(front["Scope"], "swarm");
    assert_eq!(front["Driver"], "overlay");
    assert_eq!(front["IPAM"]["Config"][0]["Subnet"], "10.0.1.0/24");
    assert_eq!(front["IPAM"]["Config"][0]["Gateway"], "10.0.1.1");
    assert_eq!(
        front["Options"]["com.docker.network.driver.overlay.vxlanid_list"],
        "4097"
    );
    let back = inspect(&topology, 1, "back");
    assert_eq!(back["IPAM"]["Config"][0]["Subnet"], "10.0.9.0/24");
    assert_eq!(back["IPAM"]["Config"][0]["Gateway"], "10.0.9.254");
    assert_eq!(back["Attachable"], true);
    assert_eq!(back["Options"]["com.docker.network.driver.mtu"], "1400");
    assert_eq!(back["Labels"], serde_json::json!({"team": "a"}));

    let rows = topology.daemon(1).swarm_json(&["network", "ls"]).unwrap();
    let mut names: Vec<&str> = rows.iter().map(|r| r["Name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["back", "front", "ingress"]);
    for row in &rows {
        assert_eq!(row["Driver"], "overlay");
        assert_eq!(row["Scope"], "swarm");
    }
    let table = topology.daemon(0).swarm_ok(&["network", "ls"]).unwrap();
    assert!(table.starts_with("NETWORK ID"), "{table}");
    assert!(
        table.contains(&id[..12]) && !table.contains(&id[..13]),
        "{table}"
    );

    refused(
        &topology,
        0,
        &["network", "create", "front"],
        "already exists",
    );
    refused(
        &topology,
        1,
        &["network", "create", "--subnet", "10.0.0.0/16", "wide"],
        "overlaps",
    );
    refused(
        &topology,
        0,
        &["network", "create", "-d", "bridge", "local"],
        "-d overlay",
    );
    refused(
        &topology,
        0,
        &["network", "create", "-o", "mtu=50", "tiny"],
        "-o mtu=50",
    );
    refused(&topology, 2, &["network", "ls"], "not a swarm manager");

    // Every node serves the swarm's networks in its data plane (4097 is
    // front's VNI), and stops when one is removed.
    let served = |host: usize| -> Vec<u64> {
        topology
            .daemon(host)
            .swarm_json(&["dataplane", "network", "ls"])
            .unwrap()
            .iter()
            .map(|row| row["VNI"].as_u64().unwrap())
            .collect()
    };
    wait_until("every node serves front", || {
        let all: Vec<Vec<u64>> = (0..3).map(served).collect();
        all.iter()
            .all(|vnis| vnis.contains(&4097))
            .then_some(())
            .ok_or(format!("{all:?}"))
    });
    let out = topology
        .daemon(1)
        .swarm_ok(&["network", "rm", "front"])
        .unwrap();
    assert_eq!(out.trim(), "front");
    wait_until("no node serves front any more", || {
        let all: Vec<Vec<u64>> = (0..3).map(served).collect();
        all.iter()
            .all(|vnis| !vnis.contains(&4097) && vnis.contains(&4096))
            .then_some(())
            .ok_or(format!("{all:?}"))
    });
    refused(&topology, 0, &["network", "inspect", "front"], "not found");
    refused(&topology, 0, &["network", "rm", "front"], "not found");
    // Its subnet and VNI are free again.
    topology
        .daemon(0)
        .swarm_ok(&["network", "create", "again"])
        .unwrap();
    let again = inspect(&topology, 1, "again");
    assert_eq!(again["IPAM"]["Config"][0]["Subnet"], "10.0.1.0/24");
    assert_eq!(
        again["Options"]["com.docker.network.driver.overlay.vxlanid_list"],
        "4097"
    );
}

#[test]
fn network_rm_on_update_takes_a_network_off_a_service_by_name() {
    let topology = Swarm::new()
        .start(&TopologyOptions::new("swnr", 1))
        .unwrap();
    let manager = topology.daemon(0);
    manager
        .swarm_ok(&["network", "create", "-d", "overlay", "back"])
        .unwrap();
    manager
        .swarm_ok(&[
            "service",
            "create",
            "--detach",
            "--name",
            "s",
            "--network",
            "back",
            "host",
            "sleep",
            "1000",
        ])
        .unwrap();
    let networks = |topology: &Topology| {
        topology
            .daemon(0)
            .swarm_inspect(&["service", "inspect", "s"])
            .unwrap()[0]["Spec"]["TaskTemplate"]["Networks"]
            .as_array()
            .map_or(0, Vec::len)
    };
    assert_eq!(networks(&topology), 1);
    manager
        .swarm_ok(&["service", "update", "--detach", "--network-rm", "back", "s"])
        .unwrap();
    assert_eq!(
        networks(&topology),
        0,
        "--network-rm back left the network on"
    );
    // Now unused, the network can go.
    manager.swarm_ok(&["network", "rm", "back"]).unwrap();
}
