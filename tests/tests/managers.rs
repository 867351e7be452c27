//! Three managers replicating the cluster store with Raft, and two workers:
//! forming the cluster, losing the leader to kill -9, a cut-off minority,
//! promotion and demotion.

use std::time::Duration;

use swarm_tests::{Swarm, Topology, TopologyOptions, wait_until_within};

const MANAGERS: [usize; 3] = [0, 1, 2];
const WORKERS: [usize; 2] = [3, 4];
/// What every wait here allows: elections take under a second, heartbeats
/// are 500 ms, and a busy 2-core VM is slower than that.
const PATIENCE: Duration = Duration::from_secs(20);

fn addr(host: usize) -> String {
    format!("198.18.0.{}:2377", host + 1)
}

fn swarm_info(topology: &Topology, host: usize) -> serde_json::Value {
    topology.daemon(host).swarm_json(&["info"]).unwrap()[0]["Swarm"].clone()
}

/// h1 runs `swarm init`; h2 and h3 join as managers, h4 and h5 as workers.
fn five_node_swarm() -> Topology {
    // h3 joins through h2, a follower: its admission is forwarded to the
    // leader, and so is its request to become a voter.
    swarm(
        5,
        Swarm::new()
            .manager_through(1, 0)
            .manager_through(2, 1)
            .workers(WORKERS),
    )
}

/// `hosts` hosts with `spec` formed on them; returns once every node is
/// Ready.
fn swarm(hosts: usize, spec: Swarm) -> Topology {
    spec.patience(PATIENCE)
        .start(&TopologyOptions::new("swt", hosts))
        .unwrap()
}

/// Polls `node ls` on `host` until `check` accepts its rows.
fn wait_for_rows(
    topology: &Topology,
    host: usize,
    check: impl Fn(&[serde_json::Value]) -> Result<(), String>,
) {
    wait_until_within("saw the expected node list", PATIENCE, || {
        let rows = topology
            .daemon(host)
            .swarm_json(&["node", "ls"])
            .map_err(|e| e.to_string())?;
        check(&rows).map_err(|e| format!("{e}: {rows:?}"))
    });
}

/// The manager that leads, as the managers in `among` agree.
fn leader(topology: &Topology, among: &[usize]) -> usize {
    let mut found = None;
    wait_until_within("agreed on a leader", PATIENCE, || {
        let leaders: Vec<usize> = among
            .iter()
            .copied()
            .filter(|&h| swarm_info(topology, h)["IsLeader"] == true)
            .collect();
        let [one] = leaders[..] else {
            return Err(format!("leaders: {leaders:?}"));
        };
        for &h in among {
            let seen = swarm_info(topology, h)["LeaderAddr"].clone();
            if seen != addr(one).as_str() {
                return Err(format!("h{} sees leader {seen}", h + 1));
            }
        }
        found = Some(one);
        Ok(())
    });
    found.unwrap()
}

fn label(topology: &Topology, via: usize, key: &str) {
    label_node(topology, via, "h4", key);
}

fn label_node(topology: &Topology, via: usize, node: &str, key: &str) {
    topology
        .daemon(via)
        .swarm_ok(&["node", "update", "--label-add", &format!("{key}=yes"), node])
        .unwrap();
}

fn labels(topology: &Topology, via: usize) -> serde_json::Value {
    let text = topology
        .daemon(via)
        .swarm_ok(&["node", "inspect", "h4"])
        .unwrap();
    serde_json::from_str::<serde_json::Value>(&text).unwrap()[0]["Spec"]["Labels"].clone()
}

/// Takes host `host`'s underlay link down or up.
fn set_link(topology: &Topology, host: usize, state: &str) {
    topology.hosts[host]
        .netns
        .ip(&["link", "set", "eth0", state])
        .unwrap();
}

/// A write through `host` fails, saying a majority is out of reach.
fn assert_cannot_commit(topology: &Topology, host: usize) {
    let output = topology
        .daemon(host)
        .swarm(&["node", "update", "--label-add", "lost=yes", "h4"])
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a minority committed a write");
    assert!(err.contains("majority of managers"), "{err}");
}

fn last_applied(topology: &Topology, host: usize) -> u64 {
    swarm_info(topology, host)["Raft"]["LastApplied"]
        .as_u64()
        .unwrap()
}

/// Waits until manager `host` has applied all that manager `leader` has.
fn wait_caught_up(topology: &Topology, host: usize, leader: usize) {
    wait_until_within(&format!("h{} caught up", host + 1), PATIENCE, || {
        let (mine, theirs) = (last_applied(topology, host), last_applied(topology, leader));
        (mine >= theirs)
            .then_some(())
            .ok_or(format!("applied {mine}, leader {theirs}"))
    });
}

#[test]
fn three_managers_replicate_and_survive_losing_the_leader_to_kill_9() {
    let mut topology = five_node_swarm();

    // Every manager sees the same cluster; the workers are not managers.
    for host in MANAGERS {
        let info = swarm_info(&topology, host);
        assert_eq!(info["ControlAvailable"], true, "h{}", host + 1);
        assert_eq!(info["Managers"], 3);
        assert_eq!(info["Nodes"], 5);
        assert_eq!(info["Raft"]["Voters"], 3);
    }
    let first = leader(&topology, &MANAGERS);
    assert_eq!(first, 0, "the initial manager leads");
    wait_for_rows(&topology, 1, |rows| {
        let status = |h: &str| {
            let row = rows.iter().find(|r| r["Hostname"] == h).unwrap();
            row["ManagerStatus"].as_str().unwrap().to_owned()
        };
        let seen = [status("h1"), status("h2"), status("h3"), status("h4")];
        (seen == ["Leader", "Reachable", "Reachable", ""])
            .then_some(())
            .ok_or(format!("{seen:?}"))
    });
    let rows = topology.daemon(1).swarm_json(&["node", "ls"]).unwrap();
    let me = rows.iter().find(|r| r["Self"] == true).unwrap();
    assert_eq!(
        me["Hostname"], "h2",
        "Self is the node asked, not the leader"
    );

    // A write through a follower is forwarded to the leader and committed.
    label(&topology, 1, "before");
    label(&topology, 2, "through-h3");
    assert_eq!(
        labels(&topology, 2),
        serde_json::json!({"before": "yes", "through-h3": "yes"})
    );

    // kill -9 the leader: the other two elect one and it serves writes.
    topology.daemon_mut(first).kill().unwrap();
    let survivors = [1, 2];
    let second = leader(&topology, &survivors);
    label(&topology, second, "after-failover");
    let other = survivors.into_iter().find(|&h| h != second).unwrap();
    label(&topology, other, "after-failover-via-follower");
    let expected = serde_json::json!({
        "before": "yes",
        "through-h3": "yes",
        "after-failover": "yes",
        "after-failover-via-follower": "yes",
    });
    assert_eq!(labels(&topology, other), expected);
    wait_for_rows(&topology, second, |rows| {
        let h1 = rows.iter().find(|r| r["Hostname"] == "h1").unwrap();
        (h1["ManagerStatus"] == "Unreachable" && h1["Status"] == "Down")
            .then_some(())
            .ok_or("h1 still counted up".into())
    });

    // The workers report to the new leader: still Ready once the grace a
    // new leader gives them (three heartbeats) is over; a stopped one is Down.
    std::thread::sleep(Duration::from_secs(2));
    wait_for_rows(&topology, other, |rows| {
        let status = |h: &str| rows.iter().find(|r| r["Hostname"] == h).unwrap()["Status"].clone();
        (status("h4") == "Ready" && status("h5") == "Ready")
            .then_some(())
            .ok_or("a worker is not Ready".into())
    });
    topology.daemon_mut(4).kill().unwrap();
    wait_for_rows(&topology, other, |rows| {
        let h5 = rows.iter().find(|r| r["Hostname"] == "h5").unwrap();
        (h5["Status"] == "Down")
            .then_some(())
            .ok_or("h5 not Down".into())
    });

    // The old leader restarts as a follower and catches up.
    topology.start_daemon(first).unwrap();
    assert_eq!(leader(&topology, &MANAGERS), second, "leadership stays");
    wait_caught_up(&topology, first, second);
    assert_eq!(labels(&topology, first), expected);

    // Lose the second leader too: what the restarted h1 holds is enough
    // for the remaining two to go on, with nothing committed lost.
    topology.daemon_mut(second).kill().unwrap();
    let remaining = [first, other];
    let third = leader(&topology, &remaining);
    label(&topology, third, "third-leader");
    let mut expected = expected;
    expected["third-leader"] = "yes".into();
    for host in remaining {
        assert_eq!(labels(&topology, host), expected);
    }
}

#[test]
fn a_cut_off_leader_cannot_commit_and_rejoins_cleanly() {
    let topology = five_node_swarm();
    let cut = leader(&topology, &MANAGERS);
    label(&topology, cut, "before");
    set_link(&topology, cut, "down");
    // The cut-off leader cannot reach a majority: its write fails, clearly.
    assert_cannot_commit(&topology, cut);

    // The majority elects a leader among themselves and goes on.
    let majority: Vec<usize> = MANAGERS.into_iter().filter(|&h| h != cut).collect();
    let new_leader = leader(&topology, &majority);
    label(&topology, new_leader, "during-cut");

    // Reconnected, the old leader follows the new one and catches up; the
    // write it could not commit is not there.
    set_link(&topology, cut, "up");
    assert_eq!(leader(&topology, &MANAGERS), new_leader);
    wait_caught_up(&topology, cut, new_leader);
    label(&topology, cut, "after-cut");
    assert_eq!(
        labels(&topology, cut),
        serde_json::json!({"before": "yes", "during-cut": "yes", "after-cut": "yes"})
    );
}

#[test]
fn a_worker_is_promoted_to_manager_and_demoted_back() {
    let topology = five_node_swarm();
    let out = topology
        .daemon(0)
        .swarm_ok(&["node", "promote", "h4"])
        .unwrap();
    assert!(
        out.contains("Node h4 promoted to a manager in the swarm."),
        "{out}"
    );
    // h4 renews its certificate as a manager, starts Raft and becomes a voter.
    wait_until_within("h4 became a manager", PATIENCE, || {
        let info = swarm_info(&topology, 3);
        (info["ControlAvailable"] == true && info["Raft"]["Voters"] == 4)
            .then_some(())
            .ok_or(format!("{info}"))
    });
    wait_for_rows(&topology, 3, |rows| {
        let h4 = rows.iter().find(|r| r["Hostname"] == "h4").unwrap();
        (h4["ManagerStatus"] == "Reachable")
            .then_some(())
            .ok_or("h4 not Reachable".into())
    });
    let out = topology
        .daemon(0)
        .swarm_ok(&["node", "promote", "h4"])
        .unwrap();
    assert!(out.contains("Node h4 is already a manager."), "{out}");

    let out = topology
        .daemon(3)
        .swarm_ok(&["node", "demote", "h4"])
        .unwrap();
    assert!(out.contains("Manager h4 demoted in the swarm."), "{out}");
    wait_until_within("h4 became a worker again", PATIENCE, || {
        let info = swarm_info(&topology, 3);
        (info["ControlAvailable"] == false)
            .then_some(())
            .ok_or(format!("{info}"))
    });
    let output = topology.daemon(3).swarm(&["node", "ls"]).unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("This node is not a swarm manager."));
    for host in MANAGERS {
        let info = swarm_info(&topology, host);
        assert_eq!(info["Managers"], 3);
        assert_eq!(info["Raft"]["Voters"], 3, "h{}", host + 1);
    }
    assert!(
        !topology.daemon(3).data_dir.join("cluster/raft").exists(),
        "a demoted manager's Raft store is removed"
    );
    // The swarm still commits with its three managers.
    label(&topology, 1, "after-demote");
}

#[test]
fn snapshots_bound_the_log_and_bring_a_new_manager_up_to_date() {
    let topology = five_node_swarm();
    // 1,500 committed writes: past the snapshot interval (1,000 entries).
    let writes: Vec<serde_json::Value> = (0..1500)
        .map(|i| {
            serde_json::json!({"NodeUpdate": {
                "node": "h5",
                "label_add": [[format!("k{}", i % 50), i.to_string()]],
                "label_rm": [],
            }})
        })
        .collect();
    topology.daemon(0).requests(&writes).unwrap();
    for host in MANAGERS {
        wait_until_within(
            "every manager took a snapshot and dropped old entries",
            PATIENCE,
            || {
                let raft = swarm_info(&topology, host)["Raft"].clone();
                let (snapshot, purged, last) = (
                    raft["SnapshotIndex"].as_u64().unwrap(),
                    raft["PurgedIndex"].as_u64().unwrap(),
                    raft["LastLogIndex"].as_u64().unwrap(),
                );
                (snapshot >= 999 && purged > 0 && last - purged <= 1300)
                    .then_some(())
                    .ok_or(format!("h{}: {raft}", host + 1))
            },
        );
    }

    // A manager added now starts from the snapshot: the early entries are gone.
    topology
        .daemon(0)
        .swarm_ok(&["node", "promote", "h4"])
        .unwrap();
    // Caught up means the snapshot and every entry after it: a read on h4
    // right after the snapshot alone can miss the last 500 writes.
    let committed = MANAGERS
        .iter()
        .map(|&h| {
            swarm_info(&topology, h)["Raft"]["LastApplied"]
                .as_u64()
                .unwrap()
        })
        .max()
        .unwrap();
    wait_until_within("h4 caught up from the snapshot", PATIENCE, || {
        let info = swarm_info(&topology, 3);
        let raft = &info["Raft"];
        (info["Nodes"] == 5
            && raft["SnapshotIndex"].as_u64() >= Some(999)
            && raft["LastApplied"].as_u64() >= Some(committed))
        .then_some(())
        .ok_or(format!("{info}"))
    });
    let inspect = topology
        .daemon(3)
        .swarm_inspect(&["node", "inspect", "h5"])
        .unwrap();
    assert_eq!(inspect[0]["Spec"]["Labels"]["k49"], "1499");
}

#[test]
fn the_leader_can_demote_itself_and_leadership_moves() {
    let topology = five_node_swarm();
    let first = leader(&topology, &MANAGERS);
    let name = format!("h{}", first + 1);
    let out = topology
        .daemon(first)
        .swarm_ok(&["node", "demote", &name])
        .unwrap();
    assert!(out.contains("demoted in the swarm"), "{out}");
    assert_demoted_leader_left(&topology, first);
}

/// A leader demoting itself needs every remaining voter for its joint
/// configuration. With one of them out of reach, the demotion waits; by the
/// time it is back the old leader's certificate says worker, and its Raft
/// reconnects with that certificate. Raft still takes it, as Raft's
/// membership still holds the node, so the removal commits.
#[test]
fn a_leader_demoting_itself_waits_for_a_voter_out_of_reach_and_finishes() {
    let topology = five_node_swarm();
    let first = leader(&topology, &MANAGERS);
    let away = MANAGERS.into_iter().find(|&h| h != first).unwrap();
    // `first` and `away` lose each other, both ways; the third manager
    // stays in reach of both.
    let cut = |action: &str| {
        for (from, to) in [(first, away), (away, first)] {
            topology.hosts[from]
                .netns
                .ip(&[
                    "route",
                    action,
                    "blackhole",
                    &format!("198.18.0.{}/32", to + 1),
                ])
                .unwrap();
        }
    };
    cut("add");
    let name = format!("h{}", first + 1);
    let out = std::thread::scope(|scope| {
        scope.spawn(|| {
            std::thread::sleep(Duration::from_secs(3));
            cut("del");
        });
        topology.daemon(first).swarm_ok(&["node", "demote", &name])
    })
    .unwrap();
    assert!(out.contains("demoted in the swarm"), "{out}");
    assert_demoted_leader_left(&topology, first);
}

/// After `first`, the leader, demoted itself: another manager leads, the
/// two left are the voters, writes commit, and `first` is a Ready worker.
fn assert_demoted_leader_left(topology: &Topology, first: usize) {
    let name = format!("h{}", first + 1);
    let rest: Vec<usize> = MANAGERS.into_iter().filter(|&h| h != first).collect();
    let next = leader(topology, &rest);
    wait_until_within("the old leader became a worker", PATIENCE, || {
        let info = swarm_info(topology, first);
        (info["ControlAvailable"] == false)
            .then_some(())
            .ok_or(format!("{info}"))
    });
    // The final configuration reaches both remaining managers (with the
    // next heartbeat when a new leader finished the change).
    for host in rest {
        wait_until_within("2 managers and 2 voters", PATIENCE, || {
            let info = swarm_info(topology, host);
            (info["Managers"] == 2 && info["Raft"]["Voters"] == 2)
                .then_some(())
                .ok_or(format!("{info}"))
        });
    }
    label(topology, next, "after-leader-demoted");
    wait_for_rows(topology, next, |rows| {
        let old = rows
            .iter()
            .find(|r| r["Hostname"] == name.as_str())
            .unwrap();
        (old["ManagerStatus"] == "" && old["Status"] == "Ready")
            .then_some(())
            .ok_or("the old leader is not a Ready worker".into())
    });
}

#[test]
fn managers_listen_where_init_join_and_the_daemon_say() {
    let mut topology = Topology::new(&TopologyOptions::new("swt", 3)).unwrap();
    topology.start_daemon(0).unwrap();
    topology.start_daemon(1).unwrap();
    // h3's daemon names its own listen address; its join does not.
    topology
        .start_daemon_with(2, &["--listen-addr".into(), "198.18.0.3:4545".into()])
        .unwrap();
    topology
        .daemon(0)
        .swarm_ok(&["init", "--listen-addr", ":4242"])
        .unwrap();
    let token = topology
        .daemon(0)
        .swarm_ok(&["join-token", "-q", "manager"])
        .unwrap();
    topology
        .daemon(1)
        .swarm_ok(&[
            "join",
            "--token",
            token.trim(),
            "--listen-addr",
            "0.0.0.0:4343",
            "198.18.0.1:4242",
        ])
        .unwrap();
    let info = swarm_info(&topology, 1);
    assert_eq!(info["Raft"]["Voters"], 2, "{info}");
    assert_eq!(info["LeaderAddr"], "198.18.0.1:4242");
    let inspect = topology
        .daemon(0)
        .swarm_inspect(&["node", "inspect", "h2"])
        .unwrap();
    assert_eq!(inspect[0]["ManagerStatus"]["Addr"], "198.18.0.2:4343");
    topology
        .daemon(2)
        .swarm_ok(&["join", "--token", token.trim(), "198.18.0.2:4343"])
        .unwrap();
    let inspect = topology
        .daemon(1)
        .swarm_inspect(&["node", "inspect", "h3"])
        .unwrap();
    assert_eq!(inspect[0]["ManagerStatus"]["Addr"], "198.18.0.3:4545");
    assert_eq!(swarm_info(&topology, 2)["Raft"]["Voters"], 3);
    // A write through h3 commits, replicated to managers on three ports.
    topology
        .daemon(2)
        .swarm_ok(&["node", "update", "--label-add", "port=4545", "h3"])
        .unwrap();
}

#[test]
fn certificates_renew_on_every_manager_and_raft_keeps_committing() {
    let mut topology = swarm(
        4,
        Swarm::new()
            .init_args(&["--cert-expiry", "6s"])
            .managers([1, 2])
            .workers([3]),
    );
    let cert_of = |host: usize| {
        std::fs::read_to_string(topology.daemon(host).data_dir.join("cluster/node.pem")).unwrap()
    };
    let before: Vec<String> = (0..4).map(cert_of).collect();
    // Twice the certificates' lifetime: without renewal every new TLS
    // connection (Raft's, the agents') would fail by now.
    std::thread::sleep(Duration::from_secs(12));
    for (host, old) in before.iter().enumerate() {
        assert_ne!(&cert_of(host), old, "h{} renewed", host + 1);
    }
    let first = leader(&topology, &MANAGERS);
    wait_for_rows(&topology, first, |rows| {
        let ready = rows.iter().filter(|r| r["Status"] == "Ready").count();
        (ready == 4)
            .then_some(())
            .ok_or(format!("{ready} of 4 Ready"))
    });
    label(&topology, 1, "renewed");
    // A new election now needs fresh connections between the managers.
    topology.daemon_mut(first).kill().unwrap();
    let rest: Vec<usize> = MANAGERS.into_iter().filter(|&h| h != first).collect();
    let next = leader(&topology, &rest);
    label(&topology, next, "after-renewal-failover");
}

#[test]
fn a_cut_off_follower_cannot_commit_and_rejoins_cleanly() {
    let topology = five_node_swarm();
    let first = leader(&topology, &MANAGERS);
    let cut = MANAGERS.into_iter().find(|&h| h != first).unwrap();
    set_link(&topology, cut, "down");
    // Alone, it reaches no leader: its write fails, saying why.
    assert_cannot_commit(&topology, cut);
    // The other two still commit.
    label(&topology, first, "during-cut");

    set_link(&topology, cut, "up");
    let rejoined = leader(&topology, &MANAGERS);
    wait_caught_up(&topology, cut, rejoined);
    label(&topology, cut, "after-cut");
    assert_eq!(
        labels(&topology, cut),
        serde_json::json!({"during-cut": "yes", "after-cut": "yes"})
    );
}

#[test]
fn a_manager_that_left_is_demoted_and_joins_again() {
    let topology = swarm(3, Swarm::new().managers([1, 2]));
    let refused = |args: &[&str], expected: &str| {
        let output = topology.daemon(2).swarm(args).unwrap();
        let err = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && err.contains(expected),
            "{args:?}: {err}"
        );
    };
    refused(&["leave"], "--force");
    topology.daemon(2).swarm_ok(&["leave", "--force"]).unwrap();
    assert_eq!(swarm_info(&topology, 2)["LocalNodeState"], "inactive");
    wait_for_rows(&topology, 0, |rows| {
        let h3 = rows.iter().find(|r| r["Hostname"] == "h3").unwrap();
        (h3["ManagerStatus"] == "Unreachable")
            .then_some(())
            .ok_or("h3 still reachable".into())
    });
    // Still a voter of the swarm: it must be demoted before it joins again.
    let token = topology
        .daemon(0)
        .swarm_ok(&["join-token", "-q", "manager"])
        .unwrap();
    let join = ["join", "--token", token.trim(), "198.18.0.1:2377"];
    refused(&join, "swarm node demote");
    topology
        .daemon(0)
        .swarm_ok(&["node", "demote", "h3"])
        .unwrap();
    assert_eq!(swarm_info(&topology, 0)["Raft"]["Voters"], 2);
    topology.daemon(2).swarm_ok(&join).unwrap();
    for host in MANAGERS {
        wait_until_within("three voters again", PATIENCE, || {
            let info = swarm_info(&topology, host);
            (info["Raft"]["Voters"] == 3)
                .then_some(())
                .ok_or(format!("h{}: {info}", host + 1))
        });
    }
    label_node(&topology, 2, "h3", "back");
}
