//! `swarm init`'s and `swarm update`'s settings of the swarm itself: the
//! address pools networks are carved from, the address a manager's API
//! listens on, Raft's snapshot interval and retained snapshots; and
//! `init --force-new-cluster`, which brings back a swarm whose managers
//! lost their quorum, keeping its services, networks, secrets and nodes.

use std::time::Duration;

use swarm_tests::{
    DATA_IFACE, Registry, Swarm, TEST_REGISTRY, Topology, TopologyOptions,
    docker_cli::{DOCKER_28, DockerCli},
    is_running_row, wait_until_within,
};

const PATIENCE: Duration = Duration::from_secs(30);

fn subnet_of(topology: &Topology, network: &str) -> String {
    let text = topology
        .daemon(0)
        .swarm_ok(&["network", "inspect", network])
        .unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    let value = if value.is_array() {
        value[0].clone()
    } else {
        value
    };
    value["IPAM"]["Config"][0]["Subnet"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The TCP listeners in host `host`'s namespace, as `ss` prints them.
fn listeners(topology: &Topology, host: usize) -> String {
    topology.hosts[host].netns.exec("ss", &["-ltnH"]).unwrap()
}

fn raft_info(topology: &Topology, host: usize) -> serde_json::Value {
    topology.daemon(host).swarm_json(&["info"]).unwrap()[0]["Swarm"]["Raft"].clone()
}

/// `n` committed writes: a node label set and set again.
fn writes(topology: &Topology, n: usize) {
    for i in 0..n {
        topology
            .daemon(0)
            .swarm_ok(&["node", "update", "--label-add", &format!("round={i}"), "h1"])
            .unwrap();
    }
}

fn refused(topology: &Topology, args: &[&str]) -> String {
    let output = topology.daemon(0).swarm(args).unwrap();
    assert!(!output.status.success(), "{args:?} was accepted");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn address_pools_listen_addresses_and_snapshot_settings_take_effect() {
    let mut topology = Topology::new(&TopologyOptions::new("sset", 2)).unwrap();
    topology.start_daemons().unwrap();

    // Refused before anything is made, naming the flag.
    let err = refused(&topology, &["init", "--default-addr-pool", "10.20.0.1/16"]);
    assert!(
        err.contains("--default-addr-pool") && err.contains("10.20.0.0/16"),
        "{err}"
    );
    let err = refused(
        &topology,
        &["init", "--default-addr-pool-mask-length", "31"],
    );
    assert!(err.contains("--default-addr-pool-mask-length"), "{err}");
    let err = refused(&topology, &["init", "--listen-addr", "198.18.9.9:2400"]);
    assert!(err.contains("--listen-addr"), "{err}");
    let err = refused(&topology, &["init", "--snapshot-interval", "3"]);
    assert!(err.contains("--snapshot-interval"), "{err}");
    let err = refused(&topology, &["init", "--force-new-cluster"]);
    assert!(err.contains("in none"), "{err}");

    Swarm::new()
        .init_args(&[
            "--default-addr-pool",
            "10.20.0.0/16",
            "--default-addr-pool-mask-length",
            "26",
            "--listen-addr",
            "198.18.0.1:2400",
            "--snapshot-interval",
            "20",
            "--max-snapshots",
            "2",
        ])
        .form(&topology)
        .unwrap_or_else(|e| panic!("{e}"));

    // The API listens on the address given, not on every address.
    let h1 = listeners(&topology, 0);
    assert!(h1.contains("198.18.0.1:2400"), "{h1}");
    assert!(
        !h1.contains("0.0.0.0:2400") && !h1.contains("*:2400"),
        "{h1}"
    );

    // A manager joins through that address, its own API on an interface.
    let token = topology
        .daemon(0)
        .swarm_ok(&["join-token", "-q", "manager"])
        .unwrap();
    let joined = topology
        .daemon(1)
        .swarm_ok(&[
            "join",
            "--token",
            token.trim(),
            "--listen-addr",
            "eth0:2401",
            "198.18.0.1:2400",
        ])
        .unwrap();
    assert!(joined.contains("as a manager"), "{joined}");
    let h2 = listeners(&topology, 1);
    assert!(h2.contains("198.18.0.2:2401"), "{h2}");

    // Networks are carved from the pool, /26 each; ingress first.
    assert_eq!(subnet_of(&topology, "ingress"), "10.20.0.0/26");
    topology
        .daemon(0)
        .swarm_ok(&["network", "create", "-d", "overlay", "pooled"])
        .unwrap();
    assert_eq!(subnet_of(&topology, "pooled"), "10.20.0.64/26");

    // Every 20 entries a snapshot, and two replaced ones kept.
    writes(&topology, 70);
    wait_until_within("snapshots every 20 entries", PATIENCE, || {
        let raft = raft_info(&topology, 0);
        let (snapshot, retained) = (
            raft["SnapshotIndex"].as_u64(),
            raft["RetainedSnapshots"].as_u64(),
        );
        match (snapshot, retained) {
            (Some(s), Some(2)) if s >= 60 => Ok(()),
            _ => Err(format!("{raft}")),
        }
    });

    // A longer interval, set while Raft runs: no snapshot for 30 entries.
    let err = refused(&topology, &["update", "--snapshot-interval", "5"]);
    assert!(err.contains("--snapshot-interval"), "{err}");
    topology
        .daemon(0)
        .swarm_ok(&["update", "--snapshot-interval", "1000"])
        .unwrap();
    let before = raft_info(&topology, 0)["SnapshotIndex"].as_u64().unwrap();
    writes(&topology, 30);
    std::thread::sleep(Duration::from_millis(500));
    let after = raft_info(&topology, 0);
    assert_eq!(after["SnapshotIndex"].as_u64(), Some(before), "{after}");
    assert!(
        after["LastApplied"].as_u64().unwrap() >= before + 30,
        "{after}"
    );
}

#[test]
fn force_new_cluster_brings_back_a_swarm_that_lost_its_quorum() {
    let mut options = TopologyOptions::new("fnc", 4);
    options.daemon_args = vec!["--insecure-registry".into(), TEST_REGISTRY.into()];
    let mut topology = Swarm::new()
        .managers([1, 2])
        .workers([3])
        .patience(PATIENCE)
        .start(&options)
        .unwrap();
    let (_registry, image) = Registry::with_busybox(&topology).unwrap();
    let h1 = topology.daemon(0);
    h1.swarm_ok(&["network", "create", "-d", "overlay", "kept"])
        .unwrap();
    let secret = topology.host_dir(0).join("secret.txt");
    std::fs::write(&secret, "kept-secret").unwrap();
    h1.swarm_ok(&["secret", "create", "kept", secret.to_str().unwrap()])
        .unwrap();
    h1.swarm_ok(&[
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "2",
        "--network",
        "kept",
        "--secret",
        "kept",
        "--constraint",
        "node.role==worker",
        &image,
        "/bin/busybox",
        "sleep",
        "3600",
    ])
    .unwrap();
    let service_id = h1.swarm_inspect(&["service", "inspect", "web"]).unwrap()[0]["ID"].clone();

    // Two of three managers die: no quorum, no writes.
    topology.daemon_mut(1).kill().unwrap();
    topology.daemon_mut(2).kill().unwrap();
    let output = topology
        .daemon(0)
        .swarm(&["node", "update", "--label-add", "lost=yes", "h4"])
        .unwrap();
    assert!(!output.status.success(), "a minority committed a write");

    let out = topology
        .daemon(0)
        .swarm_ok(&["init", "--force-new-cluster"])
        .unwrap();
    assert!(out.contains("Swarm initialized"), "{out}");
    let info = topology.daemon(0).swarm_json(&["info"]).unwrap()[0]["Swarm"].clone();
    assert_eq!(info["IsLeader"], true, "{info}");
    assert_eq!(info["Raft"]["Voters"], 1, "{info}");

    // The same swarm: its service, tasks, network and secret are there,
    // the lost managers are workers, and writes commit again.
    let h1 = topology.daemon(0);
    assert_eq!(
        h1.swarm_inspect(&["service", "inspect", "web"]).unwrap()[0]["ID"],
        service_id
    );
    let networks = h1.swarm_ok(&["network", "ls"]).unwrap();
    assert!(networks.contains("kept"), "{networks}");
    let secrets = h1.swarm_ok(&["secret", "ls"]).unwrap();
    assert!(secrets.contains("kept"), "{secrets}");
    for lost in ["h2", "h3"] {
        let node = h1.swarm_inspect(&["node", "inspect", lost]).unwrap()[0].clone();
        assert_eq!(node["Spec"]["Role"], "worker", "{node}");
    }
    h1.swarm_ok(&["service", "scale", "web=3"]).unwrap();
    wait_until_within("three tasks of web run on h4", PATIENCE, || {
        let rows = topology
            .daemon(0)
            .swarm_json(&["service", "ps", "web"])
            .map_err(|e| e.to_string())?;
        let running = rows.iter().filter(|r| is_running_row(r)).count();
        (running == 3).then_some(()).ok_or(format!("{rows:?}"))
    });

    // A lost manager that comes back is a worker of the new cluster and
    // cannot take it over; it can be promoted again.
    topology.start_daemon(1).unwrap();
    wait_until_within("h2 is back as a worker", PATIENCE, || {
        let rows = topology
            .daemon(0)
            .swarm_json(&["node", "ls"])
            .map_err(|e| e.to_string())?;
        let h2 = rows.iter().find(|r| r["Hostname"] == "h2").ok_or("no h2")?;
        let h2_info = topology
            .daemon(1)
            .swarm_json(&["info"])
            .map_err(|e| e.to_string())?[0]["Swarm"]
            .clone();
        (h2["Status"] == "Ready" && h2_info["ControlAvailable"] == false)
            .then_some(())
            .ok_or(format!("{h2} / {h2_info}"))
    });
    let info = topology.daemon(0).swarm_json(&["info"]).unwrap()[0]["Swarm"].clone();
    assert_eq!(info["IsLeader"], true, "{info}");
    topology
        .daemon(0)
        .swarm_ok(&["node", "promote", "h2"])
        .unwrap();
    wait_until_within("h2 is a voter again", PATIENCE, || {
        let raft = raft_info(&topology, 0);
        (raft["Voters"] == 2).then_some(()).ok_or(format!("{raft}"))
    });
    topology
        .daemon(1)
        .swarm_ok(&["node", "update", "--label-add", "back=yes", "h4"])
        .unwrap();
}

/// Packets sent or received on `iface` in host `host`'s namespace.
fn packets(topology: &Topology, host: usize, iface: &str, direction: &str) -> u64 {
    let path = format!("/sys/class/net/{iface}/statistics/{direction}_packets");
    topology.hosts[host]
        .netns
        .exec("cat", &[&path])
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_data_path_address_carries_the_overlay_on_its_own_network() {
    let mut options = TopologyOptions::new("dpa", 2);
    options.daemon_args = vec!["--insecure-registry".into(), TEST_REGISTRY.into()];
    let mut topology = Topology::new(&options).unwrap();
    topology.add_data_network().unwrap();
    topology.start_daemons().unwrap();
    let (_registry, image) = Registry::with_busybox(&topology).unwrap();

    let err = refused(&topology, &["init", "--data-path-addr", "198.19.9.9"]);
    assert!(err.contains("--data-path-addr"), "{err}");
    topology
        .daemon(0)
        .swarm_ok(&["init", "--data-path-addr", DATA_IFACE])
        .unwrap();
    let token = topology
        .daemon(0)
        .swarm_ok(&["join-token", "-q", "worker"])
        .unwrap();
    let join = |addr: &str| {
        topology.daemon(1).swarm(&[
            "join",
            "--token",
            token.trim(),
            "--data-path-addr",
            addr,
            "198.18.0.1:2377",
        ])
    };
    let output = join("0.0.0.0").unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--data-path-addr"),
        "{output:?}"
    );
    assert!(join("198.19.0.2").unwrap().status.success());
    let info = topology.daemon(0).swarm_json(&["info"]).unwrap()[0]["Swarm"].clone();
    assert_eq!(info["DataPathAddr"], "198.19.0.1", "{info}");

    let h1 = topology.daemon(0);
    h1.swarm_ok(&["network", "create", "-d", "overlay", "data"])
        .unwrap();
    h1.swarm_ok(&[
        "service",
        "create",
        "--name",
        "pinger",
        "--mode",
        "global",
        "--network",
        "data",
        &image,
        "/bin/busybox",
        "sleep",
        "3600",
    ])
    .unwrap();

    // Each node sends the other's tasks' traffic to its data path address.
    let mut remote = None;
    wait_until_within("h1 programs h2's task behind 198.19.0.2", PATIENCE, || {
        let rows = topology
            .daemon(0)
            .swarm_json(&["dataplane", "endpoints"])
            .map_err(|e| e.to_string())?;
        remote = rows
            .iter()
            .find(|r| r["Location"] == "remote" && r["Via"] == "198.19.0.2")
            .and_then(|r| r["IP"].as_str().map(str::to_owned));
        remote.as_ref().map(drop).ok_or(format!("{rows:?}"))
    });
    wait_until_within("h2 programs h1's task behind 198.19.0.1", PATIENCE, || {
        let rows = topology
            .daemon(1)
            .swarm_json(&["dataplane", "endpoints"])
            .map_err(|e| e.to_string())?;
        rows.iter()
            .any(|r| r["Location"] == "remote" && r["Via"] == "198.19.0.1")
            .then_some(())
            .ok_or(format!("{rows:?}"))
    });
    let local_task = topology
        .daemon(0)
        .swarm_json(&["service", "ps", "pinger"])
        .unwrap()
        .into_iter()
        .find(|r| r["Node"] == "h1" && is_running_row(r))
        .and_then(|r| r["ID"].as_str().map(str::to_owned))
        .expect("pinger runs on h1");

    // The task's packets to the other node's task cross eth1.
    let sent_before = packets(&topology, 0, DATA_IFACE, "tx");
    let received_before = packets(&topology, 1, DATA_IFACE, "rx");
    let out = swarm_tests::ping(
        &format!("swarm-{local_task}"),
        remote.as_deref().unwrap(),
        &[],
    )
    .unwrap();
    assert!(out.contains("0% packet loss"), "{out}");
    assert!(packets(&topology, 0, DATA_IFACE, "tx") >= sent_before + 3);
    assert!(packets(&topology, 1, DATA_IFACE, "rx") >= received_before + 3);
}

#[test]
fn the_docker_cli_sets_the_same_settings_through_the_engine_api() {
    let mut topology = Topology::new(&TopologyOptions::new("sdock", 1)).unwrap();
    topology.start_daemons().unwrap();
    let docker = DockerCli::new(DOCKER_28, topology.daemon(0)).unwrap();
    docker
        .ok(&[
            "swarm",
            "init",
            "--default-addr-pool",
            "10.30.0.0/16",
            "--default-addr-pool-mask-length",
            "25",
            "--snapshot-interval",
            "50",
            "--max-snapshots",
            "1",
            "--listen-addr",
            "198.18.0.1:2450",
        ])
        .unwrap();
    let settings = |docker: &DockerCli| {
        docker
            .ok(&[
                "info",
                "--format",
                "{{json .Swarm.Cluster.DefaultAddrPool}} {{.Swarm.Cluster.SubnetSize}} {{.Swarm.Cluster.Spec.Raft.SnapshotInterval}} {{.Swarm.Cluster.Spec.Raft.KeepOldSnapshots}}",
            ])
            .unwrap()
            .trim()
            .to_owned()
    };
    assert_eq!(settings(&docker), r#"["10.30.0.0/16"] 25 50 1"#);
    assert!(listeners(&topology, 0).contains("198.18.0.1:2450"));
    docker
        .ok(&["network", "create", "-d", "overlay", "dockernet"])
        .unwrap();
    let subnet = docker
        .ok(&[
            "network",
            "inspect",
            "dockernet",
            "--format",
            "{{(index .IPAM.Config 0).Subnet}}",
        ])
        .unwrap();
    assert_eq!(subnet.trim(), "10.30.0.128/25");
    docker
        .ok(&[
            "swarm",
            "update",
            "--snapshot-interval",
            "200",
            "--max-snapshots",
            "3",
        ])
        .unwrap();
    assert_eq!(settings(&docker), r#"["10.30.0.0/16"] 25 200 3"#);
    let err = docker
        .fails(&["swarm", "update", "--snapshot-interval", "2"])
        .unwrap();
    assert!(err.contains("--snapshot-interval"), "{err}");
}
