//! The first manager of a swarm: `swarm init`, join tokens, `node ls`,
//! `leave`, and the cluster kept across a daemon crash.

use std::time::Duration;

use swarm_tests::{Swarm, Topology, TopologyOptions, wait_until_within};

fn swarm_info(topology: &Topology) -> serde_json::Value {
    topology.daemon(0).swarm_json(&["info"]).unwrap()[0]["Swarm"].clone()
}

fn stderr_of(topology: &Topology, args: &[&str]) -> String {
    let output = topology.daemon(0).swarm(args).unwrap();
    assert!(
        !output.status.success(),
        "`swarm {}` succeeded",
        args.join(" ")
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn init_makes_a_one_manager_swarm_with_docker_style_tokens_kept_across_a_crash() {
    let mut topology = Topology::new(&TopologyOptions::new("swt", 1)).unwrap();
    topology.start_daemon(0).unwrap();
    let daemon = topology.daemon(0);

    // Idle until init.
    assert_eq!(swarm_info(&topology)["LocalNodeState"], "inactive");
    assert!(stderr_of(&topology, &["node", "ls"]).contains("not part of a swarm"));

    let out = daemon.swarm_ok(&["init"]).unwrap();
    let node_id = daemon.node_id().unwrap();
    assert!(
        out.contains(&format!(
            "Swarm initialized: current node ({node_id}) is now a manager."
        )),
        "{out}"
    );
    let worker_token = out
        .split_whitespace()
        .find(|w| w.starts_with("SWMTKN-1-"))
        .unwrap()
        .to_owned();
    assert_eq!(worker_token.len(), 85, "{worker_token}");
    assert!(out.contains(&format!(
        "swarm join --token {worker_token} 198.18.0.1:2377"
    )));

    let info = swarm_info(&topology);
    assert_eq!(info["LocalNodeState"], "active");
    assert_eq!(info["NodeID"], node_id.as_str());
    assert_eq!(info["ControlAvailable"], true);
    assert_eq!(info["Managers"], 1);
    assert_eq!(info["Nodes"], 1);
    let cluster_id = info["ClusterID"].as_str().unwrap().to_owned();

    let quiet = |role: &str| {
        daemon
            .swarm_ok(&["join-token", "-q", role])
            .unwrap()
            .trim()
            .to_owned()
    };
    assert_eq!(quiet("worker"), worker_token);
    let manager_token = quiet("manager");
    assert_ne!(manager_token, worker_token);
    // The CA digest part is the same; the secret is not.
    assert_eq!(manager_token[..60], worker_token[..60]);

    let rotated = daemon
        .swarm_ok(&["join-token", "--rotate", "worker"])
        .unwrap();
    assert!(
        rotated.contains("Successfully rotated worker join token."),
        "{rotated}"
    );
    let new_worker_token = quiet("worker");
    assert_ne!(new_worker_token, worker_token);
    assert_eq!(quiet("manager"), manager_token);

    let rows = daemon.swarm_json(&["node", "ls"]).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["ID"], node_id.as_str());
    assert_eq!(rows[0]["Hostname"], "h1");
    assert_eq!(rows[0]["Status"], "Ready");
    assert_eq!(rows[0]["Availability"], "Active");
    assert_eq!(rows[0]["ManagerStatus"], "Leader");
    let table = daemon.swarm_ok(&["node", "ls"]).unwrap();
    assert!(table.starts_with("ID"), "{table}");
    assert!(table.contains(&format!("{node_id} *")), "{table}");

    assert!(stderr_of(&topology, &["init"]).contains("already part of a swarm"));

    // A crash loses nothing.
    topology.daemon_mut(0).kill().unwrap();
    topology.start_daemon(0).unwrap();
    let daemon = topology.daemon(0);
    let info = swarm_info(&topology);
    assert_eq!(info["LocalNodeState"], "active");
    assert_eq!(info["ClusterID"], cluster_id.as_str());
    assert_eq!(
        daemon
            .swarm_ok(&["join-token", "-q", "worker"])
            .unwrap()
            .trim(),
        new_worker_token
    );

    // The last manager leaves only with --force.
    assert!(stderr_of(&topology, &["leave"]).contains("--force"));
    assert_eq!(swarm_info(&topology)["LocalNodeState"], "active");
    topology.daemon(0).swarm_ok(&["leave", "--force"]).unwrap();
    assert_eq!(swarm_info(&topology)["LocalNodeState"], "inactive");
}

#[test]
fn bad_init_flags_name_the_flag_and_the_fix() {
    let mut topology = Topology::new(&TopologyOptions::new("swt", 1)).unwrap();
    topology.start_daemon(0).unwrap();
    let err = stderr_of(&topology, &["init", "--cert-expiry", "5x"]);
    assert!(
        err.contains("--cert-expiry") && err.contains("2160h"),
        "{err}"
    );
    // An address without a port is Docker's form too; a port of 0 is not.
    let err = stderr_of(&topology, &["init", "--listen-addr", "0.0.0.0:0"]);
    assert!(
        err.contains("--listen-addr") && err.contains(":2377"),
        "{err}"
    );
    let err = stderr_of(&topology, &["join-token", "admin"]);
    assert!(err.contains("worker") && err.contains("manager"), "{err}");
    assert_eq!(swarm_info(&topology)["LocalNodeState"], "inactive");

    let out = topology
        .daemon(0)
        .swarm_ok(&["init", "--listen-addr", ":4242", "--cert-expiry", "720h"])
        .unwrap();
    assert!(out.contains("198.18.0.1:4242"), "{out}");
}

#[test]
fn workers_join_over_tls_with_a_pinned_ca_and_bad_tokens_are_refused() {
    let mut topology = Topology::new(&TopologyOptions::new("swt", 4)).unwrap();
    topology.start_daemons().unwrap();
    let manager = "198.18.0.1:2377";
    topology.daemon(0).swarm_ok(&["init"]).unwrap();
    let token = |host: usize, role: &str| {
        topology
            .daemon(host)
            .swarm_ok(&["join-token", "-q", role])
            .unwrap()
            .trim()
            .to_owned()
    };
    let worker_token = token(0, "worker");

    let out = topology
        .daemon(1)
        .swarm_ok(&["join", "--token", &worker_token, manager])
        .unwrap();
    assert!(
        out.contains("This node joined a swarm as a worker."),
        "{out}"
    );
    let info = topology.daemon(1).swarm_json(&["info"]).unwrap()[0]["Swarm"].clone();
    assert_eq!(info["LocalNodeState"], "active");
    assert_eq!(info["ControlAvailable"], false);
    let rows = topology.daemon(0).swarm_json(&["node", "ls"]).unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let worker = rows.iter().find(|r| r["Hostname"] == "h2").unwrap();
    assert_eq!(worker["ID"], topology.daemon(1).node_id().unwrap().as_str());
    assert_eq!(worker["ManagerStatus"], "");
    // A worker cannot read or change cluster state.
    for args in [&["node", "ls"][..], &["join-token", "worker"]] {
        let output = topology.daemon(1).swarm(args).unwrap();
        let err = String::from_utf8_lossy(&output.stderr);
        assert!(
            err.contains("This node is not a swarm manager."),
            "{args:?}: {err}"
        );
    }

    // A foreign swarm's token: its CA digest does not match h1's CA.
    topology.daemon(2).swarm_ok(&["init"]).unwrap();
    let foreign = token(2, "worker");
    let rotated_away = worker_token.clone();
    let rotated_manager = token(0, "manager");
    for role in ["worker", "manager"] {
        topology
            .daemon(0)
            .swarm_ok(&["join-token", "--rotate", role])
            .unwrap();
    }
    let digest_only = format!("{}-", &worker_token[..60]);
    let cases = [
        ("SWMTKN-1-nonsense", "invalid join token"),
        (&digest_only[..], "invalid join token"),
        (&foreign[..], "does not match the join token"),
        (&rotated_away[..], "rotated"),
        (&rotated_manager[..], "rotated"),
    ];
    for (bad, expected) in cases {
        let output = topology
            .daemon(3)
            .swarm(&["join", "--token", bad, manager])
            .unwrap();
        let err = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && err.contains(expected),
            "{bad}: {err}"
        );
    }
    let output = topology
        .daemon(3)
        .swarm(&["join", "--token", &token(0, "worker"), "198.18.0.4:2377"])
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot reach a manager"));
    let info = topology.daemon(3).swarm_json(&["info"]).unwrap()[0]["Swarm"].clone();
    assert_eq!(
        info["LocalNodeState"], "inactive",
        "refused joins change nothing"
    );

    topology
        .daemon(3)
        .swarm_ok(&["join", "--token", &token(0, "worker"), manager])
        .unwrap();
    assert_eq!(node_count(&topology), 3);
}

/// Two hosts: h1 runs `swarm init` with `init_flags`, h2 joins as a worker
/// and reports Ready.
fn swarm_of_two(init_flags: &[&str]) -> Topology {
    Swarm::new()
        .init_args(init_flags)
        .workers([1])
        .patience(STATUS_PATIENCE)
        .start(&TopologyOptions::new("swt", 2))
        .unwrap()
}

/// How many nodes the manager (h1) lists.
fn node_count(topology: &Topology) -> usize {
    topology
        .daemon(0)
        .swarm_json(&["node", "ls"])
        .unwrap()
        .len()
}

/// How long the manager's `node ls` may take to show a node's new status.
const STATUS_PATIENCE: Duration = Duration::from_secs(15);

/// Polls `node ls` on the manager until `hostname` shows `status`.
fn wait_for_status(topology: &Topology, hostname: &str, status: &str) {
    wait_until_within(
        &format!("{hostname} became {status}"),
        STATUS_PATIENCE,
        || {
            let rows = topology.daemon(0).swarm_json(&["node", "ls"]).unwrap();
            let row = rows.iter().find(|r| r["Hostname"] == hostname).unwrap();
            (row["Status"] == status)
                .then_some(())
                .ok_or(format!("{row}"))
        },
    );
}

#[test]
fn workers_heartbeat_with_their_certificate_and_a_stopped_one_goes_down() {
    let mut topology = swarm_of_two(&["--dispatcher-heartbeat", "500ms"]);

    topology.daemon_mut(1).kill().unwrap();
    wait_for_status(&topology, "h2", "Down");

    // Restarted, it is still a member and reports again.
    topology.start_daemon(1).unwrap();
    wait_for_status(&topology, "h2", "Ready");
}

#[test]
fn nodes_are_updated_inspected_and_removed_once_down() {
    let mut topology = swarm_of_two(&[]);
    let manager = topology.daemon(0);
    let worker_id = topology.daemon(1).node_id().unwrap();

    // By hostname and by ID prefix, as Docker resolves them.
    manager
        .swarm_ok(&[
            "node",
            "update",
            "--availability",
            "drain",
            "--label-add",
            "zone=east",
            "h2",
        ])
        .unwrap();
    manager
        .swarm_ok(&["node", "update", "--label-add", "disk=ssd", &worker_id[..6]])
        .unwrap();
    manager
        .swarm_ok(&["node", "update", "--label-rm", "disk", "h2"])
        .unwrap();
    let rows = manager.swarm_json(&["node", "ls"]).unwrap();
    let row = rows.iter().find(|r| r["Hostname"] == "h2").unwrap();
    assert_eq!(row["Availability"], "Drain");
    let inspect = manager.swarm_inspect(&["node", "inspect", "h2"]).unwrap();
    let node = &inspect[0];
    assert_eq!(node["ID"], worker_id.as_str());
    assert_eq!(node["Spec"]["Role"], "worker");
    assert_eq!(node["Spec"]["Availability"], "drain");
    assert_eq!(node["Spec"]["Labels"], serde_json::json!({"zone": "east"}));
    assert_eq!(node["Status"]["State"], "ready");
    assert_eq!(node["Status"]["Addr"], "198.18.0.2");
    let me = manager.swarm_inspect(&["node", "inspect", "h1"]).unwrap();
    assert_eq!(me[0]["ManagerStatus"]["Leader"], true);

    let refused = |args: &[&str], expected: &str| {
        let output = topology.daemon(0).swarm(args).unwrap();
        let err = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && err.contains(expected),
            "{args:?}: {err}"
        );
    };
    refused(
        &["node", "update", "--label-rm", "nope", "h2"],
        "doesn't exist",
    );
    refused(&["node", "update", "h2"], "nothing to update");
    refused(&["node", "inspect", "h9"], "not found");
    refused(&["node", "rm", "h2"], "not down");
    refused(&["node", "rm", "h1"], "demoted");

    topology.daemon_mut(1).kill().unwrap();
    wait_for_status(&topology, "h2", "Down");
    topology.daemon(0).swarm_ok(&["node", "rm", "h2"]).unwrap();
    assert_eq!(node_count(&topology), 1);
}

#[test]
fn certificates_renew_before_they_expire_without_the_node_going_down() {
    let topology = swarm_of_two(&["--cert-expiry", "6s", "--dispatcher-heartbeat", "500ms"]);
    let cert_of = |host: usize| {
        std::fs::read_to_string(topology.daemon(host).data_dir.join("cluster/node.pem")).unwrap()
    };
    let (manager_cert, worker_cert) = (cert_of(0), cert_of(1));

    // Twice the certificates' lifetime: without renewal both would have
    // lapsed and every heartbeat's TLS handshake would fail.
    std::thread::sleep(Duration::from_secs(12));
    assert_ne!(cert_of(0), manager_cert, "the manager renewed its own");
    assert_ne!(cert_of(1), worker_cert, "the worker got a new one");
    let rows = topology.daemon(0).swarm_json(&["node", "ls"]).unwrap();
    for row in &rows {
        assert_eq!(row["Status"], "Ready", "{row}");
    }
    // The worker is still a member, with its renewed certificate.
    let info = topology.daemon(1).swarm_json(&["info"]).unwrap()[0]["Swarm"].clone();
    assert_eq!(info["LocalNodeState"], "active");
}
