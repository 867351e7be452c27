//! `swarm daemon --metrics-addr`: a real two-node swarm scraped from inside
//! its hosts' namespaces. The text is checked line by line against the
//! OpenMetrics format Prometheus reads, and the numbers against what the
//! swarm does: tasks by state, nodes, Raft, and counters that move with
//! traffic between tasks (overlay packets, resolver queries, VIP flows).

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use swarm_tests::{Swarm, Topology, TopologyOptions, in_netns, wait_until};

const METRICS_PORT: u16 = 9323;

/// One series: the sample's name and its labels, sorted.
type Series = (String, BTreeMap<String, String>);

/// A scrape, checked: each sample's value by series.
struct Scraped {
    samples: BTreeMap<Series, f64>,
}

impl Scraped {
    /// The sum of `name`'s samples whose labels include `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|((n, l), _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, v)| v)
            .sum()
    }

    fn has(&self, name: &str) -> bool {
        self.samples.keys().any(|(n, _)| n == name)
    }
}

/// `GET /metrics` from inside `netns`: status, content type and body.
fn get(netns: &str, target: SocketAddr, path: &'static str) -> anyhow::Result<(String, String)> {
    in_netns(netns, move || {
        let mut conn = TcpStream::connect_timeout(&target, Duration::from_secs(2))?;
        conn.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            conn,
            "GET {path} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n"
        )?;
        let mut response = String::new();
        conn.read_to_string(&mut response)?;
        let (head, body) = response
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow::anyhow!("no HTTP header end in {response:?}"))?;
        Ok((head.to_owned(), body.to_owned()))
    })
}

fn scrape(topology: &Topology, host: usize) -> Scraped {
    let target = SocketAddr::from((topology.hosts[host].addr, METRICS_PORT));
    let (head, body) = get(topology.hosts[host].netns.name(), target, "/metrics").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    parse_openmetrics(&body).unwrap_or_else(|err| panic!("{err}\n{body}"))
}

/// Checks `text` as OpenMetrics text: every family has a TYPE and HELP
/// before its samples, every sample belongs to a declared family with a
/// suffix its type allows, labels are quoted pairs, values are numbers,
/// the unit (if any) ends the family's name, and `# EOF` ends it all.
fn parse_openmetrics(text: &str) -> Result<Scraped, String> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helps: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    let mut ended = false;
    for line in text.lines() {
        if ended {
            return Err(format!("a line after # EOF: {line:?}"));
        }
        if line == "# EOF" {
            ended = true;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, family, value) = (parts.next(), parts.next(), parts.next());
            let (Some(kind), Some(family), Some(value)) = (kind, family, value) else {
                return Err(format!("a short descriptor line: {line:?}"));
            };
            match kind {
                "TYPE" => {
                    if !["counter", "gauge", "histogram"].contains(&value) {
                        return Err(format!("an unexpected type: {line:?}"));
                    }
                    types.insert(family.to_owned(), value.to_owned());
                }
                "HELP" => {
                    if value.trim().is_empty() {
                        return Err(format!("empty help: {line:?}"));
                    }
                    helps.insert(family.to_owned(), value.to_owned());
                }
                "UNIT" => {
                    if !family.ends_with(&format!("_{value}")) {
                        return Err(format!("a unit its name does not end in: {line:?}"));
                    }
                }
                _ => return Err(format!("an unknown descriptor: {line:?}")),
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| format!("a sample without a value: {line:?}"))?;
        let value: f64 = value
            .parse()
            .map_err(|_| format!("a value that is not a number: {line:?}"))?;
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels
                    .strip_suffix('}')
                    .ok_or_else(|| format!("unclosed labels: {line:?}"))?;
                (
                    name,
                    parse_labels(labels).map_err(|e| format!("{e}: {line:?}"))?,
                )
            }
            None => (series, BTreeMap::new()),
        };
        let family = types
            .iter()
            .filter(|(family, kind)| {
                let suffixes: &[&str] = match kind.as_str() {
                    "counter" => &["_total"],
                    "gauge" => &[""],
                    _ => &["_bucket", "_sum", "_count"],
                };
                suffixes
                    .iter()
                    .any(|suffix| name == format!("{family}{suffix}"))
            })
            .map(|(family, _)| family.clone())
            .next()
            .ok_or_else(|| format!("a sample of no declared family: {line:?}"))?;
        if !helps.contains_key(&family) {
            return Err(format!("family {family} has no HELP"));
        }
        if types[&family] == "histogram" && name.ends_with("_bucket") && !labels.contains_key("le")
        {
            return Err(format!("a bucket without le: {line:?}"));
        }
        if samples.insert((name.to_owned(), labels), value).is_some() {
            return Err(format!("a series given twice: {line:?}"));
        }
    }
    if !ended {
        return Err("no # EOF at the end".into());
    }
    Ok(Scraped { samples })
}

fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").ok_or("a label without =\"")?;
        let end = after.find('"').ok_or("an unclosed label value")?;
        labels.insert(key.to_owned(), after[..end].to_owned());
        rest = after[end + 1..]
            .strip_prefix(',')
            .unwrap_or(&after[end + 1..]);
    }
    Ok(labels)
}

fn running_tasks(topology: &Topology, service: &str) -> Vec<String> {
    topology
        .daemon(0)
        .swarm_json(&["service", "ps", service])
        .unwrap()
        .into_iter()
        .filter(swarm_tests::is_running_row)
        .map(|r| r["ID"].as_str().unwrap().to_owned())
        .collect()
}

/// Summed over both nodes.
fn total(scrapes: &[Scraped], name: &str, labels: &[(&str, &str)]) -> f64 {
    scrapes.iter().map(|s| s.sum(name, labels)).sum()
}

#[test]
fn metrics_follow_tasks_nodes_raft_and_traffic() {
    let mut topology = Topology::new(&TopologyOptions::new("swm", 2)).unwrap();
    for host in 0..2 {
        let addr = format!("{}:{METRICS_PORT}", topology.hosts[host].addr);
        topology
            .start_daemon_with(host, &["--metrics-addr".into(), addr])
            .unwrap();
    }
    // Served before the node is in a swarm: the data plane's counters.
    let alone = scrape(&topology, 1);
    assert!(alone.has("swarm_dataplane_packets_total"));
    assert_eq!(alone.sum("swarm_in_swarm", &[]), 0.0);
    assert!(!alone.has("swarm_raft_term"));

    Swarm::new().workers([1]).form(&topology).unwrap();
    let h1 = topology.daemon(0);
    h1.swarm_ok(&["network", "create", "-d", "overlay", "back"])
        .unwrap();
    let create = |name: &str, replicas: &str| {
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
    };
    create("web", "2");
    create("client", "1");
    wait_until("3 tasks Running by the metrics", || {
        let s = scrape(&topology, 0);
        let running = s.sum("swarm_tasks", &[("state", "Running")]);
        (running == 3.0)
            .then_some(())
            .ok_or(format!("{running} Running"))
    });
    let client = running_tasks(&topology, "client").remove(0);
    let web = running_tasks(&topology, "web");

    let manager = scrape(&topology, 0);
    assert_eq!(
        manager.sum(
            "swarm_nodes",
            &[("status", "ready"), ("availability", "active")]
        ),
        2.0
    );
    assert_eq!(manager.sum("swarm_nodes", &[("role", "manager")]), 1.0);
    assert_eq!(manager.sum("swarm_services", &[]), 2.0);
    assert_eq!(manager.sum("swarm_raft_is_leader", &[]), 1.0);
    assert!(manager.sum("swarm_raft_term", &[]) >= 1.0);
    assert!(manager.sum("swarm_raft_applied_index", &[]) >= 1.0);
    assert!(manager.sum("swarm_raft_apply_seconds_count", &[]) >= 1.0);
    assert_eq!(manager.sum("swarm_raft_voters", &[]), 1.0);
    // Raft is the managers': the worker reports none of it.
    let worker = scrape(&topology, 1);
    assert!(!worker.has("swarm_raft_term"));
    assert_eq!(worker.sum("swarm_in_swarm", &[]), 1.0);
    // Gossip sees both nodes from either side.
    wait_until("gossip sees 2 members on both nodes", || {
        let seen: Vec<f64> = (0..2)
            .map(|h| scrape(&topology, h).sum("swarm_gossip_members", &[]))
            .collect();
        (seen == [2.0, 2.0])
            .then_some(())
            .ok_or(format!("{seen:?}"))
    });
    // Each running task's cgroup: memory in use, and CPU time. (A
    // manager labels its tasks with their service; a worker has no store.)
    let both = [scrape(&topology, 0), scrape(&topology, 1)];
    for task in &web {
        let memory = total(&both, "swarm_task_memory_bytes", &[("task", task)]);
        assert!(memory > 0.0, "task {task} uses no memory by the metrics");
        assert!(both.iter().any(|s| {
            s.samples
                .keys()
                .any(|(n, l)| n == "swarm_task_cpu_seconds_total" && l.get("task") == Some(task))
        }));
    }

    // Traffic from the client task to web's VIP, by name.
    let before = [scrape(&topology, 0), scrape(&topology, 1)];
    let requests = 5;
    // In the task's mount namespace too: its resolv.conf names the resolver.
    let pid = std::fs::read_to_string(format!("/sys/fs/cgroup/pids/swarm/{client}/cgroup.procs"))
        .or_else(|_| std::fs::read_to_string(format!("/sys/fs/cgroup/swarm/{client}/cgroup.procs")))
        .unwrap();
    let pid = pid.lines().next().unwrap().trim().to_owned();
    for _ in 0..requests {
        let body = swarm_tests::run(
            "nsenter",
            &[
                "-t",
                &pid,
                "-m",
                "-n",
                "wget",
                "-q",
                "-T",
                "3",
                "-O",
                "-",
                "http://web/",
            ],
        )
        .unwrap();
        assert!(!body.trim().is_empty());
    }
    let after = [scrape(&topology, 0), scrape(&topology, 1)];
    let moved = |name: &str, labels: &[(&str, &str)]| {
        total(&after, name, labels) - total(&before, name, labels)
    };
    assert!(
        moved("swarm_resolver_queries_total", &[]) >= f64::from(requests),
        "resolver queries moved by {}",
        moved("swarm_resolver_queries_total", &[])
    );
    assert!(moved("swarm_resolver_answers_total", &[("rcode", "noerror")]) >= 1.0);
    assert!(moved("swarm_resolver_query_seconds_count", &[]) >= f64::from(requests));
    assert!(
        moved(
            "swarm_dataplane_packets_total",
            &[("counter", "overlay-from-task")]
        ) > 0.0
    );
    assert!(
        moved(
            "swarm_dataplane_bytes_total",
            &[("counter", "overlay-from-task")]
        ) > 0.0
    );
    assert!(
        moved(
            "swarm_dataplane_packets_total",
            &[("counter", "service-new-flow")]
        ) >= f64::from(requests),
        "new VIP flows moved by {}",
        moved(
            "swarm_dataplane_packets_total",
            &[("counter", "service-new-flow")]
        )
    );
    // Drops by reason are there, whatever their values.
    assert!(after[0].has("swarm_dataplane_drops_total"));
    assert!(after[0].has("swarm_conntrack_entries"));

    // Only /metrics is served.
    let target = SocketAddr::from((topology.hosts[0].addr, METRICS_PORT));
    let (head, _) = get(topology.hosts[0].netns.name(), target, "/").unwrap();
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
}

#[test]
fn a_bad_metrics_addr_is_refused_naming_the_flag() {
    let output = std::process::Command::new(swarm_tests::swarm_bin())
        .args(["daemon", "--metrics-addr", "localhost"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--metrics-addr") && stderr.contains("127.0.0.1:9323"),
        "{stderr}"
    );
}
