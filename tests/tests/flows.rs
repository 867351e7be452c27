//! `swarm dataplane flows`: the connection table as the node that balanced
//! the flows shows it, after real requests from a task to a service's VIP.

use std::collections::BTreeSet;

use swarm_tests::{Swarm, Topology, TopologyOptions, wait_until};

/// Running tasks of `service`: (ID, host index, address on `back`).
fn running(topology: &Topology, service: &str) -> Vec<(String, usize, String)> {
    let h1 = topology.daemon(0);
    let net = h1.swarm_inspect(&["network", "inspect", "back"]).unwrap()[0]["Id"]
        .as_str()
        .unwrap()
        .to_owned();
    h1.swarm_json(&["service", "ps", service])
        .unwrap()
        .into_iter()
        .filter(swarm_tests::is_running_row)
        .map(|r| {
            let node = r["Node"].as_str().unwrap();
            let host = topology
                .hosts
                .iter()
                .position(|h| h.name == node)
                .unwrap_or_else(|| panic!("no host {node}"));
            let ip = r["Addresses"][&net].as_str().unwrap_or("").to_owned();
            (r["ID"].as_str().unwrap().to_owned(), host, ip)
        })
        .collect()
}

#[test]
fn flows_show_client_backend_node_and_state_per_service() {
    let topology = Swarm::new()
        .workers([1])
        .start(&TopologyOptions::new("swf", 2))
        .unwrap();
    let h1 = topology.daemon(0);
    h1.swarm_ok(&["network", "create", "-d", "overlay", "back"])
        .unwrap();
    for (name, replicas) in [("web", "2"), ("client", "1")] {
        let mut args = vec![
            "service",
            "create",
            "--name",
            name,
            "--replicas",
            replicas,
            "--network",
            "back",
        ];
        args.extend_from_slice(swarm_tests::WEB_TASK);
        h1.swarm_ok(&args).unwrap();
    }
    let mut web = Vec::new();
    wait_until("2 web tasks and a client running", || {
        web = running(&topology, "web");
        let clients = running(&topology, "client");
        (web.len() == 2 && clients.len() == 1)
            .then_some(())
            .ok_or(format!("{web:?} {clients:?}"))
    });
    let (client, client_host, client_ip) = running(&topology, "client").remove(0);
    let back = h1.swarm_inspect(&["network", "inspect", "back"]).unwrap()[0]["Id"].clone();
    let vip =
        h1.swarm_inspect(&["service", "inspect", "web"]).unwrap()[0]["Endpoint"]["VirtualIPs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["NetworkID"] == back)
            .unwrap()["Addr"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_owned();
    let node = topology.daemon(client_host);
    // Nothing dialled yet: no flows of web.
    let before = node
        .swarm_json(&["dataplane", "flows", "--service", "web@back"])
        .unwrap();
    assert!(before.is_empty(), "{before:?}");

    let pid = std::fs::read_to_string(format!("/sys/fs/cgroup/pids/swarm/{client}/cgroup.procs"))
        .or_else(|_| std::fs::read_to_string(format!("/sys/fs/cgroup/swarm/{client}/cgroup.procs")))
        .unwrap();
    let pid = pid.lines().next().unwrap().trim().to_owned();
    for _ in 0..4 {
        swarm_tests::run(
            "nsenter",
            &[
                "-t",
                &pid,
                "-n",
                "wget",
                "-q",
                "-T",
                "3",
                "-O",
                "-",
                &format!("http://{vip}/"),
            ],
        )
        .unwrap();
    }
    // The client's node balanced them: each a row, from the client's
    // address to the VIP, on to one of web's tasks on the node it runs on.
    let rows = node
        .swarm_json(&["dataplane", "flows", "--service", "web@back"])
        .unwrap();
    assert_eq!(rows.len(), 4, "{rows:#?}");
    let backends: BTreeSet<String> = web.iter().map(|(_, _, ip)| format!("{ip}:80")).collect();
    for row in &rows {
        assert_eq!(row["Service"], "web@back");
        assert_eq!(row["Protocol"], "tcp");
        assert!(
            row["Client"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{client_ip}:")),
            "{row}"
        );
        assert_eq!(row["Frontend"], format!("{vip}:80"));
        let backend = row["Backend"].as_str().unwrap();
        assert!(backends.contains(backend), "{backend} not in {backends:?}");
        let (_, backend_host, _) = web
            .iter()
            .find(|(_, _, ip)| backend.starts_with(&format!("{ip}:")))
            .unwrap();
        let expected_node = if *backend_host == client_host {
            "local".to_owned()
        } else {
            topology.hosts[*backend_host].addr.to_string()
        };
        assert_eq!(row["Node"], expected_node.as_str(), "{row}");
        // wget closed each connection: the flow waits out its close.
        assert!(
            ["closing", "established"].contains(&row["State"].as_str().unwrap()),
            "{row}"
        );
        assert!(row["IdleSecs"].as_u64().unwrap() < 30);
        assert_eq!(row["Mesh"], false);
    }
    // Round robin: both backends got some.
    let used: BTreeSet<&str> = rows
        .iter()
        .map(|r| r["Backend"].as_str().unwrap())
        .collect();
    assert_eq!(used.len(), 2, "{rows:#?}");
    // All flows include them; another service's flows are not web's.
    let all = node.swarm_json(&["dataplane", "flows"]).unwrap();
    assert!(all.len() >= 4);
    let others = node
        .swarm_json(&["dataplane", "flows", "--service", "client@back"])
        .unwrap();
    assert!(others.is_empty(), "{others:?}");
    // The table, as a person reads it.
    let table = node.swarm_ok(&["dataplane", "flows"]).unwrap();
    assert!(table.starts_with("SERVICE"), "{table}");
    assert!(table.contains(&format!("{vip}:80")), "{table}");
    // An unknown service is refused, saying where to look.
    let refused = node
        .swarm(&["dataplane", "flows", "--service", "nope"])
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("dataplane services"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}
