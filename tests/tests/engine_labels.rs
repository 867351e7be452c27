//! Engine labels: each daemon's `--label KEY=VALUE`, as dockerd's. Nodes
//! report them when they join and in every heartbeat, `node inspect`
//! shows them, `node ls --filter label=` matches them, and services place
//! by them with `engine.labels.*` constraints and spread preferences.

use std::collections::BTreeMap;

use swarm_tests::{Topology, TopologyOptions, WEB_TASK, is_running_row, wait_until};

fn labels(pairs: &[&str]) -> Vec<String> {
    pairs
        .iter()
        .flat_map(|pair| ["--label".to_owned(), (*pair).to_owned()])
        .collect()
}

/// Running tasks of `service` per node, once `count` run.
fn running_per_node(topology: &Topology, service: &str, count: usize) -> BTreeMap<String, usize> {
    let mut per_node = BTreeMap::new();
    wait_until(&format!("{count} tasks of {service} running"), || {
        let rows = topology
            .daemon(0)
            .swarm_json(&["service", "ps", service])
            .map_err(|e| e.to_string())?;
        let live: Vec<_> = rows
            .iter()
            .filter(|r| r["DesiredState"] == "Running")
            .collect();
        if live.len() != count || !live.iter().all(|r| is_running_row(r)) {
            return Err(format!("{rows:#?}"));
        }
        per_node.clear();
        for row in live {
            *per_node
                .entry(row["Node"].as_str().unwrap_or_default().to_owned())
                .or_insert(0) += 1;
        }
        Ok(())
    });
    per_node
}

fn engine_labels(topology: &Topology, node: &str) -> serde_json::Value {
    topology
        .daemon(0)
        .swarm_inspect(&["node", "inspect", node])
        .unwrap()[0]["Description"]["Engine"]["Labels"]
        .clone()
}

fn ids_of(topology: &Topology, filter: &str) -> Vec<String> {
    let out = topology
        .daemon(0)
        .swarm_ok(&["node", "ls", "-q", "--filter", filter])
        .unwrap();
    let mut ids: Vec<String> = out.lines().map(str::to_owned).collect();
    ids.sort();
    ids
}

#[test]
fn engine_labels_are_reported_filtered_and_placed_by() {
    let mut topology = Topology::new(&TopologyOptions::new("elab", 3)).unwrap();
    topology.start_daemon_with(0, &labels(&["zone=a"])).unwrap();
    topology
        .start_daemon_with(1, &labels(&["zone=b", "disk=ssd"]))
        .unwrap();
    topology.start_daemon_with(2, &labels(&["zone=b"])).unwrap();
    topology.daemon(0).swarm_ok(&["init"]).unwrap();
    topology.join(1, "worker", 0).unwrap();
    topology.join(2, "worker", 0).unwrap();

    // Reported as they joined, shown as Docker shows them.
    assert_eq!(
        engine_labels(&topology, "h2"),
        serde_json::json!({"disk": "ssd", "zone": "b"})
    );
    assert_eq!(
        engine_labels(&topology, "h1"),
        serde_json::json!({"zone": "a"})
    );
    let pretty = topology
        .daemon(0)
        .swarm_ok(&["node", "inspect", "--pretty", "h2"])
        .unwrap();
    assert!(
        pretty.contains("Engine Labels:\n - disk=ssd\n - zone=b"),
        "{pretty}"
    );

    // `label` filters engine labels, `node.label` node labels (as Docker).
    let h2 = topology.daemon(1).node_id().unwrap();
    let h3 = topology.daemon(2).node_id().unwrap();
    assert_eq!(ids_of(&topology, "label=disk=ssd"), vec![h2.clone()]);
    let mut zone_b = vec![h2.clone(), h3.clone()];
    zone_b.sort();
    assert_eq!(ids_of(&topology, "label=zone=b"), zone_b);
    assert!(ids_of(&topology, "node.label=zone=b").is_empty());

    // A constraint on an engine label places only there.
    let mut args = vec![
        "service",
        "create",
        "--name",
        "fast",
        "--replicas",
        "3",
        "--constraint",
        "engine.labels.disk==ssd",
    ];
    args.extend_from_slice(WEB_TASK);
    topology.daemon(0).swarm_ok(&args).unwrap();
    assert_eq!(
        running_per_node(&topology, "fast", 3),
        BTreeMap::from([("h2".to_owned(), 3)])
    );

    // Spread over an engine label's values: half in zone a (h1 alone),
    // half in zone b (h2 and h3).
    let mut args = vec![
        "service",
        "create",
        "--name",
        "spread",
        "--replicas",
        "4",
        "--placement-pref",
        "spread=engine.labels.zone",
    ];
    args.extend_from_slice(WEB_TASK);
    topology.daemon(0).swarm_ok(&args).unwrap();
    let per_node = running_per_node(&topology, "spread", 4);
    assert_eq!(per_node.get("h1"), Some(&2), "{per_node:?}");
    assert_eq!(
        per_node.get("h2").unwrap_or(&0) + per_node.get("h3").unwrap_or(&0),
        2,
        "{per_node:?}"
    );

    // A daemon restarted with other labels: the swarm learns them from its
    // heartbeats, and a global service on the new label runs there too.
    topology
        .start_daemon_with(2, &labels(&["disk=ssd"]))
        .unwrap();
    wait_until("h3 reports its new engine labels", || {
        let now = engine_labels(&topology, "h3");
        (now == serde_json::json!({"disk": "ssd"}))
            .then_some(())
            .ok_or(now.to_string())
    });
    let mut args = vec![
        "service",
        "create",
        "--name",
        "everyssd",
        "--mode",
        "global",
        "--constraint",
        "engine.labels.disk==ssd",
    ];
    args.extend_from_slice(WEB_TASK);
    topology.daemon(0).swarm_ok(&args).unwrap();
    assert_eq!(
        running_per_node(&topology, "everyssd", 2),
        BTreeMap::from([("h2".to_owned(), 1), ("h3".to_owned(), 1)])
    );

    // Bad input names the fix.
    let out = topology
        .daemon(0)
        .swarm(&[
            "service",
            "create",
            "--constraint",
            "engine.label.x==1",
            "host",
            "true",
        ])
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("engine.labels.<label>"),
        "{err}"
    );
    let out = topology
        .daemon(0)
        .swarm(&["daemon", "--advertise-addr", "198.18.0.1", "--label", "=x"])
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--label"), "{err}");
}
