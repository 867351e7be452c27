//! Services on a swarm of 3 managers and 2 workers, with the native
//! runtime: placement, scaling, restarts, failures, drain, constraints,
//! global services, rolling updates and rollbacks, and traffic through the
//! routing mesh and VIPs to the tasks.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    time::{Duration, Instant},
};

use swarm_tests::{
    Swarm, Topology, TopologyOptions,
    docker::{BUSYBOX_IMAGE, DockerEngine},
    servers::http_get,
    wait_until,
};

const WORKERS: [usize; 2] = [3, 4];

/// A task that answers HTTP on port 80 with its hostname (its task ID
/// prefix unless --hostname is given).
const WEB: &[&str] = swarm_tests::WEB_TASK;

/// h1 inits, h2 and h3 join as managers, h4 and h5 as workers.
fn five_node_swarm(tag: &str) -> Topology {
    five_node_swarm_with(tag, &[])
}

/// The same, every daemon started with `daemon_args`.
fn five_node_swarm_with(tag: &str, daemon_args: &[String]) -> Topology {
    let mut options = TopologyOptions::new(tag, 5);
    options.daemon_args = daemon_args.to_vec();
    Swarm::new()
        .managers([1, 2])
        .workers(WORKERS)
        .start(&options)
        .unwrap()
}

fn hostname_of(host: usize) -> String {
    format!("h{}", host + 1)
}

/// Whether a `service ps` row's task is Running now.
fn running_now(row: &serde_json::Value) -> bool {
    row["CurrentState"]
        .as_str()
        .unwrap_or("")
        .starts_with("Running")
}

/// `service ps` rows whose desired state is Running.
fn live_tasks(topology: &Topology, service: &str) -> Vec<serde_json::Value> {
    topology
        .daemon(0)
        .swarm_json(&["service", "ps", service])
        .unwrap()
        .into_iter()
        .filter(|r| r["DesiredState"] == "Running")
        .collect()
}

/// Waits until `count` tasks of `service` run; returns tasks per node.
fn wait_running(topology: &Topology, service: &str, count: usize) -> BTreeMap<String, usize> {
    let mut per_node = BTreeMap::new();
    wait_until(&format!("{count} tasks of {service} running"), || {
        let rows = live_tasks(topology, service);
        let running: Vec<&serde_json::Value> = rows.iter().filter(|r| running_now(r)).collect();
        if running.len() != count || rows.len() != count {
            return Err(format!("{rows:#?}"));
        }
        per_node.clear();
        for row in running {
            *per_node
                .entry(row["Node"].as_str().unwrap().to_owned())
                .or_insert(0) += 1;
        }
        Ok(())
    });
    per_node
}

/// The hostnames answering on `port` of node `via`, over `tries` requests
/// from the client namespace.
fn answers_through(topology: &Topology, via: usize, port: u16, tries: usize) -> BTreeSet<String> {
    let client = topology.client.netns.name();
    let target = SocketAddr::new(topology.hosts[via].addr.into(), port);
    (0..tries)
        .filter_map(|_| http_get(client, target).ok())
        .map(|answer| {
            answer
                .rsplit(" | ")
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned()
        })
        .collect()
}

fn create(topology: &Topology, args: &[&str]) -> String {
    let mut full = vec!["service", "create"];
    full.extend_from_slice(args);
    topology
        .daemon(0)
        .swarm_ok(&full)
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn six_replicas_spread_evenly_scale_and_answer_through_every_node() {
    let topology = five_node_swarm("svs");
    let mut args = vec!["--name", "web", "--replicas", "6", "-p", "8080:80"];
    args.extend_from_slice(WEB);
    create(&topology, &args);
    assert_even_spread(&wait_running(&topology, "web", 6));
    every_replica_answers_through_every_node(&topology);

    topology
        .daemon(1)
        .swarm_ok(&["service", "scale", "web=9"])
        .unwrap();
    wait_running(&topology, "web", 9);
    scale_web_to_2_and_remove_it(&topology);
}

/// No node runs more than one task above another.
fn assert_even_spread(per_node: &BTreeMap<String, usize>) {
    let counts: Vec<usize> = (0..5)
        .map(|h| per_node.get(&hostname_of(h)).copied().unwrap_or(0))
        .collect();
    let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
    assert!(max - min <= 1, "uneven spread: {counts:?}");
}

/// The 12-character IDs (the tasks' hostnames) of `service`'s live tasks.
fn live_hostnames(topology: &Topology, service: &str) -> BTreeSet<String> {
    live_tasks(topology, service)
        .iter()
        .map(|r| r["ID"].as_str().unwrap()[..12].to_owned())
        .collect()
}

/// Every node's port 8080 reaches every replica of `web`.
fn every_replica_answers_through_every_node(topology: &Topology) {
    let replicas = live_hostnames(topology, "web");
    for via in 0..5 {
        wait_until(&format!("all replicas answer through h{}", via + 1), || {
            let seen = answers_through(topology, via, 8080, 18);
            (seen == replicas)
                .then_some(())
                .ok_or(format!("saw {seen:?}, want {replicas:?}"))
        });
    }
}

/// Scales `web` down to 2, checks only those answer, removes it and waits
/// until none of its tasks has a namespace left.
fn scale_web_to_2_and_remove_it(topology: &Topology) {
    topology
        .daemon(0)
        .swarm_ok(&["service", "scale", "web=2"])
        .unwrap();
    wait_running(topology, "web", 2);
    let remaining = live_hostnames(topology, "web");
    wait_until("only the 2 remaining replicas answer", || {
        let seen = answers_through(topology, 3, 8080, 8);
        (seen == remaining)
            .then_some(())
            .ok_or(format!("saw {seen:?}, want {remaining:?}"))
    });
    let every_task = all_task_ids(topology, "web");
    topology
        .daemon(0)
        .swarm_ok(&["service", "rm", "web"])
        .unwrap();
    wait_until_namespaces_gone(&every_task);
}

/// Every task ID `service ps` shows for `service`, history included.
fn all_task_ids(topology: &Topology, service: &str) -> Vec<String> {
    topology
        .daemon(0)
        .swarm_ok(&["service", "ps", "-q", service])
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Waits until none of `tasks` has a network namespace left.
fn wait_until_namespaces_gone(tasks: &[String]) {
    wait_until("the service's tasks are gone everywhere", || {
        let listed = swarm_tests::run("ip", &["netns", "list"]).map_err(|e| e.to_string())?;
        let left: Vec<&str> = listed
            .lines()
            .filter(|l| tasks.iter().any(|t| l.starts_with(&format!("swarm-{t}"))))
            .collect();
        left.is_empty().then_some(()).ok_or(format!("{left:?}"))
    });
}

/// Marks the task whose hostname is `hostname` unhealthy for the health
/// check below, until dropped.
struct UnhealthyMark(std::path::PathBuf);

impl UnhealthyMark {
    fn set(hostname: &str) -> Self {
        let path = std::path::PathBuf::from(format!("/run/swt-unhealthy-{hostname}"));
        std::fs::write(&path, b"").unwrap();
        Self(path)
    }
}

impl Drop for UnhealthyMark {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn health_checks_gate_running_and_replace_unhealthy_tasks_and_logs_are_gathered() {
    let topology = five_node_swarm("svh");
    // Ready a second after it starts; unhealthy once its mark exists (the
    // task sees the host's /run, and its own /tmp).
    let task = "echo starting as $(hostname) && (sleep 1 && touch /tmp/ready) & mkdir -p /tmp/www && hostname > /tmp/www/index.html && exec busybox httpd -f -p 80 -h /tmp/www";
    let check = "test -e /tmp/ready && test ! -e /run/swt-unhealthy-$(hostname)";
    create(
        &topology,
        &[
            "--name",
            "checked",
            "--replicas",
            "2",
            "-d",
            "-p",
            "8090:80",
            "--health-cmd",
            check,
            "--health-interval",
            "200ms",
            "--health-retries",
            "2",
            // Failures before /tmp/ready exists do not count.
            "--health-start-period",
            "10s",
            "host",
            "sh",
            "-c",
            task,
        ],
    );
    wait_until("a task is Starting before its check passes", || {
        let rows = live_tasks(&topology, "checked");
        rows.iter()
            .any(|r| {
                r["CurrentState"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("Starting")
            })
            .then_some(())
            .ok_or(format!("{rows:#?}"))
    });
    wait_running(&topology, "checked", 2);
    let inspect = topology
        .daemon(0)
        .swarm_ok(&["service", "inspect", "checked"])
        .unwrap();
    assert!(inspect.contains("\"Healthcheck\""), "{inspect}");

    // `service logs` from any manager: each task's line, with Docker's
    // prefix; --tail and --raw.
    let tasks = task_nodes(&topology, "checked");
    let logs = topology
        .daemon(1)
        .swarm_ok(&["service", "logs", "checked"])
        .unwrap();
    for (id, node) in &tasks {
        let line = format!("{}@{node}    | starting as {}", &id[..12], &id[..12]);
        assert!(logs.contains(&line), "no `{line}` in:\n{logs}");
    }
    let raw = topology
        .daemon(0)
        .swarm_ok(&["service", "logs", "--raw", "--tail", "1", &tasks[0].0])
        .unwrap();
    assert_eq!(raw.trim(), format!("starting as {}", &tasks[0].0[..12]));

    // One task turns unhealthy: it fails, and a healthy one replaces it.
    let (sick, _) = &tasks[0];
    let _mark = UnhealthyMark::set(&sick[..12]);
    wait_until("the unhealthy task failed", || {
        let rows = topology
            .daemon(0)
            .swarm_json(&["service", "ps", "checked"])
            .map_err(|e| e.to_string())?;
        rows.iter()
            .any(|r| {
                r["ID"] == sick.as_str() && r["Error"].as_str().unwrap_or("").contains("unhealthy")
            })
            .then_some(())
            .ok_or(format!("{rows:#?}"))
    });
    wait_running(&topology, "checked", 2);
    let healthy = live_hostnames(&topology, "checked");
    assert!(!healthy.contains(&sick[..12]));
    wait_until("the mesh reaches only the healthy tasks", || {
        let seen = answers_through(&topology, 0, 8090, 8);
        (seen == healthy)
            .then_some(())
            .ok_or(format!("saw {seen:?}, want {healthy:?}"))
    });
}

/// A task of the busybox image that says it started, then answers HTTP on
/// port 80 with its hostname.
const WEB_IN_BUSYBOX: &str = "echo serving as $(hostname) && mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www";

#[test]
fn the_same_scenario_on_the_docker_runtime() {
    // Declared first, so it is dropped last: after the daemons removed
    // their containers.
    let engine = DockerEngine::start().unwrap();
    let topology = five_node_swarm_with(
        "svk",
        &[
            "--runtime".into(),
            "docker".into(),
            "--docker-host".into(),
            engine.host(),
        ],
    );
    create(
        &topology,
        &[
            "--name",
            "web",
            "--replicas",
            "6",
            "-p",
            "8080:80",
            "--health-cmd",
            "test -s /www/index.html",
            "--health-interval",
            "300ms",
            BUSYBOX_IMAGE,
            "sh",
            "-c",
            WEB_IN_BUSYBOX,
        ],
    );
    assert_even_spread(&wait_running(&topology, "web", 6));

    // Real containers, one per task, each with its namespace in `ip netns`.
    let tasks = task_nodes(&topology, "web");
    assert_eq!(engine.task_containers().unwrap().len(), 6);
    let namespaces = swarm_tests::run("ip", &["netns", "list"]).unwrap();
    for (id, _) in &tasks {
        assert!(
            namespaces.contains(&format!("swarm-{id}")),
            "no namespace for task {id}: {namespaces}"
        );
        let labels = engine
            .docker(&[
                "inspect",
                "--format",
                "{{.HostConfig.NetworkMode}}",
                &format!("swarm-{id}"),
            ])
            .unwrap();
        assert_eq!(labels.trim(), "none");
        // Names go to the agent's resolver, in the container's namespace.
        let resolv = engine
            .docker(&["exec", &format!("swarm-{id}"), "cat", "/etc/resolv.conf"])
            .unwrap();
        assert!(resolv.contains("nameserver 127.0.0.11"), "{resolv}");
    }

    every_replica_answers_through_every_node(&topology);

    // `service logs` gathers each container's output from its node.
    let logs = topology
        .daemon(2)
        .swarm_ok(&["service", "logs", "web"])
        .unwrap();
    for (id, node) in &tasks {
        let line = format!("{}@{node}    | serving as {}", &id[..12], &id[..12]);
        assert!(logs.contains(&line), "no `{line}` in:\n{logs}");
    }
    // Each line with the time the engine keeps for it (-t).
    let timed = topology
        .daemon(2)
        .swarm_ok(&["service", "logs", "-t", "--raw", "--tail", "1", &tasks[0].0])
        .unwrap();
    let (stamp, text) = timed.trim_end().split_once(' ').unwrap();
    assert_eq!(text, format!("serving as {}", &tasks[0].0[..12]));
    let written = swarm_node::log_time::parse_stamp(stamp).expect("a time");
    let age = swarm_node::log_time::now_nanos() - written;
    assert!((0..600_000_000_000).contains(&age), "{timed}");

    // A container killed from outside is a failed task, replaced.
    let (victim, _) = &tasks[0];
    engine
        .docker(&["kill", &format!("swarm-{victim}")])
        .unwrap();
    wait_until("the killed container's task is replaced", || {
        let rows = topology
            .daemon(0)
            .swarm_json(&["service", "ps", "web"])
            .map_err(|e| e.to_string())?;
        let failed = rows.iter().any(|r| {
            r["ID"] == victim.as_str()
                && r["CurrentState"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("Failed")
        });
        failed.then_some(()).ok_or(format!("{rows:#?}"))
    });
    wait_running(&topology, "web", 6);

    scale_web_to_2_and_remove_it(&topology);
    wait_until("the service's containers are removed", || {
        let left = engine.task_containers().map_err(|e| e.to_string())?;
        left.is_empty().then_some(()).ok_or(format!("{left:?}"))
    });
}

/// The task IDs of `service`'s live tasks, by node hostname.
fn task_nodes(topology: &Topology, service: &str) -> Vec<(String, String)> {
    live_tasks(topology, service)
        .iter()
        .map(|r| {
            (
                r["ID"].as_str().unwrap().to_owned(),
                r["Node"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn exited_tasks_restart_and_a_dead_workers_tasks_come_back_elsewhere() {
    let mut topology = five_node_swarm("svr");
    // Exits with 3 after a moment: restarted per policy, attempts counted.
    create(
        &topology,
        &[
            "--name",
            "flaky",
            "--replicas",
            "1",
            "--restart-delay",
            "100ms",
            "--restart-max-attempts",
            "2",
            "--constraint",
            "node.role==manager",
            "host",
            "sh",
            "-c",
            "sleep 0.3; exit 3",
        ],
    );
    wait_until("flaky ran 3 times and gave up", || {
        let rows = topology
            .daemon(0)
            .swarm_json(&["service", "ps", "flaky"])
            .map_err(|e| e.to_string())?;
        let failed = rows
            .iter()
            .filter(|r| {
                r["CurrentState"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("Failed")
            })
            .count();
        let errors_ok = rows
            .iter()
            .filter(|r| {
                r["CurrentState"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("Failed")
            })
            .all(|r| r["Error"] == "task: non-zero exit (3)");
        (failed == 3 && rows.len() == 3 && errors_ok)
            .then_some(())
            .ok_or(format!("{rows:#?}"))
    });
    // And stays given up.
    std::thread::sleep(Duration::from_millis(800));
    let rows = topology
        .daemon(0)
        .swarm_json(&["service", "ps", "flaky"])
        .unwrap();
    assert_eq!(rows.len(), 3, "{rows:#?}");

    let mut args = vec![
        "--name",
        "web",
        "--replicas",
        "4",
        "-p",
        "8081:80",
        "--constraint",
        "node.role==worker",
    ];
    args.extend_from_slice(WEB);
    create(&topology, &args);
    let per_node = wait_running(&topology, "web", 4);
    assert_eq!(per_node.get("h4"), Some(&2), "{per_node:?}");
    assert_eq!(per_node.get("h5"), Some(&2), "{per_node:?}");
    topology.daemon_mut(4).kill().unwrap();
    wait_until("h5's tasks run on h4", || {
        let placed = task_nodes(&topology, "web");
        let running = live_tasks(&topology, "web")
            .iter()
            .filter(|r| running_now(r))
            .count();
        (placed.iter().all(|(_, node)| node == "h4") && placed.len() == 4 && running == 4)
            .then_some(())
            .ok_or(format!("{placed:?}"))
    });
    let replicas: BTreeSet<String> = live_tasks(&topology, "web")
        .iter()
        .map(|r| r["ID"].as_str().unwrap()[..12].to_owned())
        .collect();
    wait_until("the mesh reaches the moved replicas", || {
        let seen = answers_through(&topology, 1, 8081, 16);
        (seen == replicas)
            .then_some(())
            .ok_or(format!("saw {seen:?}, want {replicas:?}"))
    });
}

#[test]
fn drain_labels_global_services_and_a_late_joiner() {
    // h5's daemon runs, outside the swarm until it joins below.
    let topology = Swarm::new()
        .managers([1, 2])
        .workers([3])
        .start(&TopologyOptions::new("svg", 5))
        .unwrap();
    let d0 = topology.daemon(0);
    d0.swarm_ok(&["node", "update", "--label-add", "zone=a", "h4"])
        .unwrap();
    let mut args = vec![
        "--name",
        "zoned",
        "--replicas",
        "3",
        "--constraint",
        "node.labels.zone==a",
    ];
    args.extend_from_slice(WEB);
    create(&topology, &args);
    assert_eq!(wait_running(&topology, "zoned", 3).get("h4"), Some(&3));

    // Nowhere to go: pending, with the reason.
    let mut args = vec![
        "--name",
        "nowhere",
        "-d",
        "--constraint",
        "node.labels.zone==b",
    ];
    args.extend_from_slice(WEB);
    create(&topology, &args);
    wait_until("the unplaceable task is pending with its reason", || {
        let rows = live_tasks(&topology, "nowhere");
        let ok = rows.len() == 1
            && rows[0]["CurrentState"]
                .as_str()
                .unwrap_or("")
                .starts_with("Pending")
            && rows[0]["Error"]
                .as_str()
                .unwrap_or("")
                .contains("scheduling constraints not satisfied on 4");
        ok.then_some(()).ok_or(format!("{rows:#?}"))
    });

    // More CPUs reserved than any node has: pending, with the reason.
    let mut args = vec!["--name", "greedy", "-d", "--reserve-cpu", "64"];
    args.extend_from_slice(WEB);
    create(&topology, &args);
    wait_until("the oversized task is pending with its reason", || {
        let rows = live_tasks(&topology, "greedy");
        let ok = rows.len() == 1
            && rows[0]["Error"]
                .as_str()
                .unwrap_or("")
                .contains("insufficient resources on 4");
        ok.then_some(()).ok_or(format!("{rows:#?}"))
    });
    let inspect = topology
        .daemon(0)
        .swarm_inspect(&["node", "inspect", "h4"])
        .unwrap();
    let cpus = inspect[0]["Description"]["Resources"]["NanoCPUs"]
        .as_u64()
        .unwrap();
    assert!(cpus >= 1_000_000_000, "{inspect}");

    let mut args = vec!["--name", "agent", "--mode", "global"];
    args.extend_from_slice(WEB);
    create(&topology, &args);
    let per_node = wait_running(&topology, "agent", 4);
    assert!(per_node.values().all(|&n| n == 1), "{per_node:?}");
    // A node that joins later gets one too.
    topology.join(4, "worker", 0).unwrap();
    let per_node = wait_running(&topology, "agent", 5);
    assert_eq!(per_node.get("h5"), Some(&1), "{per_node:?}");

    // Draining h4 moves the zoned tasks nowhere (constraint) and the
    // global task off it.
    topology
        .daemon(0)
        .swarm_ok(&["node", "update", "--availability", "drain", "h4"])
        .unwrap();
    let per_node = wait_running(&topology, "agent", 4);
    assert_eq!(per_node.get("h4"), None, "{per_node:?}");
    wait_until("zoned's tasks left h4 and wait", || {
        let rows = live_tasks(&topology, "zoned");
        let pending = rows
            .iter()
            .filter(|r| {
                r["CurrentState"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("Pending")
            })
            .count();
        (pending == 3).then_some(()).ok_or(format!("{rows:#?}"))
    });
}

#[test]
fn rolling_update_start_first_a_failed_update_rolls_back_and_tasks_reach_vips() {
    let topology = five_node_swarm("svu");
    topology
        .daemon(0)
        .swarm_ok(&["network", "create", "-d", "overlay", "backnet"])
        .unwrap();
    let mut args = vec![
        "--name",
        "api",
        "--replicas",
        "4",
        "--network",
        "backnet",
        "--update-parallelism",
        "2",
        "--update-order",
        "start-first",
        "--update-monitor",
        "300ms",
        "--update-failure-action",
        "rollback",
    ];
    args.extend_from_slice(WEB);
    create(&topology, &args);
    let before: BTreeSet<String> = task_nodes(&topology, "api")
        .into_iter()
        .map(|t| t.0)
        .collect();
    wait_running(&topology, "api", 4);

    // start-first with parallelism 2: never fewer than 4 running.
    let updating = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            let mut fewest = usize::MAX;
            let deadline = Instant::now() + Duration::from_secs(8);
            while Instant::now() < deadline {
                let running = live_tasks(&topology, "api")
                    .iter()
                    .filter(|r| running_now(r))
                    .count();
                fewest = fewest.min(running);
                std::thread::sleep(Duration::from_millis(50));
            }
            fewest
        });
        topology
            .daemon(1)
            .swarm_ok(&["service", "update", "--env-add", "VERSION=2", "api"])
            .unwrap();
        watcher.join().unwrap()
    });
    assert!(
        updating >= 4,
        "start-first dropped to {updating} running tasks"
    );
    let after: BTreeSet<String> = task_nodes(&topology, "api")
        .into_iter()
        .map(|t| t.0)
        .collect();
    assert!(before.is_disjoint(&after), "every task replaced");
    let inspect = topology
        .daemon(0)
        .swarm_inspect(&["service", "inspect", "api"])
        .unwrap();
    assert_eq!(inspect[0]["UpdateStatus"]["State"], "completed");
    assert!(
        inspect[0]["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("VERSION=2"))
    );

    // A task of another service reaches api through its VIP on backnet.
    let vip = inspect[0]["Endpoint"]["VirtualIPs"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|v| v["Addr"].as_str())
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let mut args = vec!["--name", "client", "--network", "backnet"];
    args.extend_from_slice(WEB);
    create(&topology, &args);
    wait_running(&topology, "client", 1);
    let client_task = task_nodes(&topology, "client")[0].0.clone();
    let replicas: BTreeSet<String> = after.iter().map(|id| id[..12].to_owned()).collect();
    wait_until("the client task reaches every api replica by VIP", || {
        let netns = format!("swarm-{client_task}");
        let target = SocketAddr::new(vip.parse().unwrap(), 80);
        let seen: BTreeSet<String> = (0..16)
            .filter_map(|_| http_get(&netns, target).ok())
            .map(|a| a.rsplit(" | ").next().unwrap_or_default().trim().to_owned())
            .collect();
        (seen == replicas)
            .then_some(())
            .ok_or(format!("saw {seen:?}, want {replicas:?}"))
    });

    // An update whose tasks fail rolls back to the working spec.
    // `false` exits 1 at once; the CLI waits for the rollback to end.
    let _ = topology
        .daemon(0)
        .swarm(&["service", "update", "--args", "false", "api"])
        .unwrap();
    wait_until("the failed update rolled back", || {
        let inspect = topology
            .daemon(0)
            .swarm_inspect(&["service", "inspect", "api"])
            .map_err(|e| e.to_string())?;
        let state = inspect[0]["UpdateStatus"]["State"].clone();
        let args = inspect[0]["Spec"]["TaskTemplate"]["ContainerSpec"]["Args"].clone();
        (state == "rollback_completed" && args.to_string().contains("httpd"))
            .then_some(())
            .ok_or(format!("{state} {args}"))
    });
    wait_running(&topology, "api", 4);
}
