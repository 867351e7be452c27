//! The services bench rows, on a swarm of one manager and two workers, once
//! per runtime: `service create` of 10 replicas until all run, scale 10 ->
//! 50 and 10 -> 100 until all run, and kill -9 of a worker's daemon until
//! its tasks run elsewhere. Timed from the CLI call to the first `service
//! ps` that shows every task Running.

use std::time::{Duration, Instant};

use swarm_tests::{
    Swarm, Topology, TopologyOptions,
    docker::{BUSYBOX_IMAGE, DockerEngine},
};

/// Docker Swarm 20.10 on this VM, one node, Docker runtime (the issue's
/// reference figures).
pub const DOCKER_SWARM_CREATE_10_S: f64 = 6.6;
pub const DOCKER_SWARM_SCALE_10_TO_50_S: f64 = 16.8;

const WORKER_KILLED: usize = 2;
const PATIENCE: Duration = Duration::from_secs(300);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runtime {
    Native,
    Docker,
}

impl Runtime {
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Native => "native",
            Runtime::Docker => "docker",
        }
    }
}

pub struct ServiceFigures {
    pub runtime: Runtime,
    pub create_10_s: f64,
    pub scale_10_to_50_s: f64,
    pub scale_10_to_100_s: f64,
    /// From kill -9 of a worker's daemon until every task runs on the
    /// other nodes (node-down detection included).
    pub worker_killed_s: f64,
    /// The tasks' resolver (measured once, in the native round).
    pub dns: Option<DnsFigures>,
}

pub fn run(runtime: Runtime) -> anyhow::Result<ServiceFigures> {
    // Dropped after the topology, whose daemons remove their containers.
    let engine = match runtime {
        Runtime::Docker => Some(DockerEngine::start()?),
        Runtime::Native => None,
    };
    let mut options = TopologyOptions::new("swbenchsv", 3);
    if let Some(engine) = &engine {
        options.daemon_args = vec![
            "--runtime".into(),
            "docker".into(),
            "--docker-host".into(),
            engine.host(),
        ];
    }
    let mut topology = Swarm::new().workers([1, 2]).start(&options)?;

    // A small HTTP server per task: something that really runs.
    let task: &[&str] = match runtime {
        Runtime::Native => &["host", "busybox", "httpd", "-f", "-p", "80", "-h", "/tmp"],
        Runtime::Docker => &[BUSYBOX_IMAGE, "httpd", "-f", "-p", "80", "-h", "/tmp"],
    };
    let name = runtime.name();
    println!("bench: services ({name} runtime): create 10");
    let started = Instant::now();
    let mut create = vec![
        "service",
        "create",
        "-d",
        "--name",
        "bench",
        "--replicas",
        "10",
    ];
    create.extend_from_slice(task);
    topology.daemon(0).swarm_ok(&create)?;
    wait_running(&topology, 10, None)?;
    let create_10_s = started.elapsed().as_secs_f64();

    let scale_10_to_50_s = scale(&topology, 50)?;
    println!("bench: services ({name} runtime): back to 10");
    scale(&topology, 10)?;
    let scale_10_to_100_s = scale(&topology, 100)?;

    println!("bench: services ({name} runtime): kill -9 of a worker's daemon");
    let killed = format!("h{}", WORKER_KILLED + 1);
    let started = Instant::now();
    topology.daemon_mut(WORKER_KILLED).kill()?;
    wait_running(&topology, 100, Some(&killed))?;
    let worker_killed_s = started.elapsed().as_secs_f64();

    topology.daemon(0).swarm_ok(&["service", "rm", "bench"])?;
    let dns = match runtime {
        Runtime::Native => Some(dns_queries(&topology)?),
        Runtime::Docker => None,
    };
    // The daemons stop and remove their tasks (the killed worker's
    // containers go with the engine), then the engine stops.
    drop(topology);
    drop(engine);
    Ok(ServiceFigures {
        runtime,
        create_10_s,
        scale_10_to_50_s,
        scale_10_to_100_s,
        worker_killed_s,
        dns,
    })
}

/// DNS queries per second from a task (4 clients) and their p99 latency.
pub struct DnsFigures {
    pub queries_per_s: f64,
    pub p99_us: f64,
}

const DNS_CLIENTS: usize = 4;
const DNS_QUERIES_PER_CLIENT: usize = 5_000;

/// A service `named` and a `client` on an overlay network; from the
/// client task's namespace, clients ask 127.0.0.11 for `named` in a loop.
fn dns_queries(topology: &Topology) -> anyhow::Result<DnsFigures> {
    println!("bench: services (native runtime): DNS queries from a task");
    let daemon = topology.daemon(0);
    daemon.swarm_ok(&["network", "create", "-d", "overlay", "names"])?;
    for name in ["named", "client"] {
        daemon.swarm_ok(&[
            "service",
            "create",
            "--name",
            name,
            "--network",
            "names",
            "host",
            "sleep",
            "100000",
        ])?;
    }
    let task = daemon
        .swarm_ok(&["service", "ps", "-q", "client"])?
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    let netns = format!("swarm-{task}");
    let clients: Vec<_> = (0..DNS_CLIENTS)
        .map(|client| {
            swarm_tests::spawn_in_netns(&netns, move || {
                let socket = std::net::UdpSocket::bind(("127.0.0.1", 0))?;
                socket.connect(("127.0.0.11", 53))?;
                socket.set_read_timeout(Some(Duration::from_secs(2)))?;
                let mut latencies = Vec::with_capacity(DNS_QUERIES_PER_CLIENT);
                let mut answer = [0u8; 512];
                for n in 0..DNS_QUERIES_PER_CLIENT {
                    let id = (client * DNS_QUERIES_PER_CLIENT + n) as u16;
                    let mut query = id.to_be_bytes().to_vec();
                    query.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 5]);
                    query.extend_from_slice(b"named");
                    query.extend_from_slice(&[0, 0, 1, 0, 1]);
                    let sent = Instant::now();
                    socket.send(&query)?;
                    let len = socket.recv(&mut answer)?;
                    anyhow::ensure!(
                        len > 12 && answer[..2] == id.to_be_bytes() && answer[3] & 0xf == 0,
                        "a bad answer to query {n}"
                    );
                    latencies.push(sent.elapsed());
                }
                Ok(latencies)
            })
        })
        .collect();
    let started = Instant::now();
    let mut latencies = Vec::new();
    for client in clients {
        latencies.extend(
            client
                .join()
                .map_err(|_| anyhow::anyhow!("a DNS client panicked"))??,
        );
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    for name in ["client", "named"] {
        daemon.swarm_ok(&["service", "rm", name])?;
    }
    Ok(DnsFigures {
        queries_per_s: latencies.len() as f64 / elapsed,
        p99_us: p99.as_secs_f64() * 1e6,
    })
}

/// Seconds from `service scale bench=N -d` to N tasks running.
fn scale(topology: &Topology, replicas: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    topology
        .daemon(0)
        .swarm_ok(&["service", "scale", "-d", &format!("bench={replicas}")])?;
    wait_running(topology, replicas, None)?;
    Ok(started.elapsed().as_secs_f64())
}

/// Polls `service ps` until exactly `count` tasks are meant to run and do,
/// none of them on node `not_on`.
fn wait_running(topology: &Topology, count: usize, not_on: Option<&str>) -> anyhow::Result<()> {
    wait_service_running(topology, "bench", count, not_on)
}

/// Until `count` tasks of `service` are Running (none of them on node
/// `not_on`), as `service ps` on h1 shows them.
pub fn wait_service_running(
    topology: &Topology,
    service: &str,
    count: usize,
    not_on: Option<&str>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let rows = topology.daemon(0).swarm_json(&["service", "ps", service])?;
        let live: Vec<&serde_json::Value> = rows
            .iter()
            .filter(|r| r["DesiredState"] == "Running")
            .collect();
        let running = live
            .iter()
            .filter(|r| {
                r["CurrentState"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("Running")
                    && not_on.is_none_or(|node| r["Node"] != node)
            })
            .count();
        if live.len() == count && running == count {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < PATIENCE,
            "{running} of {count} tasks running after {PATIENCE:?}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Nodes in the endpoint-convergence swarm (1 manager, 4 workers).
const CONVERGENCE_NODES: usize = 5;
const CONVERGENCE_ROUNDS: usize = 3;

/// What the 5-node swarm measures.
pub struct ConvergenceFigures {
    /// From a task seen Running to its endpoint on every other node.
    pub endpoint_s: f64,
    /// From `service scale` (1 -> 4) until a task on another node
    /// resolves all four in `tasks.<service>`.
    pub dns_scale_s: f64,
    /// From kill -9 of a node's daemon until its task's address leaves
    /// `tasks.<service>` as a task on another node resolves it.
    pub dns_dead_node_s: f64,
}

/// Seconds from a task seen Running (`service ps`, polled) to its endpoint
/// in the data plane of every other node (`dataplane endpoints`, polled),
/// median over a few tasks, on 5 nodes; then how fast the tasks' resolver
/// follows scaling and a dead node.
pub fn endpoint_convergence() -> anyhow::Result<ConvergenceFigures> {
    println!("bench: endpoint convergence on {CONVERGENCE_NODES} nodes");
    let mut topology = Swarm::new()
        .workers(1..CONVERGENCE_NODES)
        .start(&TopologyOptions::new("swbenchgs", CONVERGENCE_NODES))?;
    let daemon = topology.daemon(0);
    daemon.swarm_ok(&["network", "create", "-d", "overlay", "spread"])?;
    let network = daemon.swarm_inspect(&["network", "inspect", "spread"])?;
    let network_id = network[0]["Id"].as_str().unwrap_or_default().to_owned();
    let endpoint_s = endpoint_samples(&topology, &network_id)?;
    let (dns_scale_s, dns_dead_node_s) = dns_follows(&mut topology, &network_id)?;
    Ok(ConvergenceFigures {
        endpoint_s,
        dns_scale_s,
        dns_dead_node_s,
    })
}

/// The median of a few tasks' time from Running to every other node.
fn endpoint_samples(topology: &Topology, network_id: &str) -> anyhow::Result<f64> {
    let daemon = topology.daemon(0);
    let mut samples = Vec::new();
    for round in 0..CONVERGENCE_ROUNDS {
        let name = format!("probe{round}");
        daemon.swarm_ok(&[
            "service",
            "create",
            "-d",
            "--name",
            &name,
            "--network",
            "spread",
            "--constraint",
            "node.hostname==h2",
            "host",
            "sleep",
            "100000",
        ])?;
        let started = Instant::now();
        let mut running_at = None;
        loop {
            anyhow::ensure!(started.elapsed() < PATIENCE, "{name} never converged");
            let rows = daemon.swarm_json(&["service", "ps", &name])?;
            let running = rows.iter().find(|r| {
                r["CurrentState"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("Running")
            });
            let Some(row) = running else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            let seen = *running_at.get_or_insert_with(Instant::now);
            let ip = row["Addresses"][network_id]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let everywhere = (0..CONVERGENCE_NODES).filter(|&h| h != 1).all(|h| {
                topology
                    .daemon(h)
                    .swarm_json(&["dataplane", "endpoints"])
                    .is_ok_and(|rows| rows.iter().any(|r| r["IP"] == ip.as_str()))
            });
            if everywhere {
                samples.push(seen.elapsed().as_secs_f64());
                break;
            }
        }
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples[samples.len() / 2])
}

/// A client task on h1 asks its resolver for `tasks.<service>`: seconds
/// from `service scale` 1 -> 4 until it lists four addresses, and from
/// kill -9 of the daemon of a node running one of them until that task's
/// address leaves the list.
fn dns_follows(topology: &mut Topology, network_id: &str) -> anyhow::Result<(f64, f64)> {
    println!("bench: the resolver follows scaling and a dead node");
    let daemon = topology.daemon(0);
    let on_spread = |name: &str, extra: &[&str]| -> anyhow::Result<()> {
        let mut args = vec![
            "service",
            "create",
            "-d",
            "--name",
            name,
            "--network",
            "spread",
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["host", "sleep", "100000"]);
        daemon.swarm_ok(&args)?;
        Ok(())
    };
    on_spread("asker", &["--constraint", "node.hostname==h1"])?;
    on_spread("answers", &["--constraint", "node.hostname!=h1"])?;
    let running_rows = |service: &str| -> anyhow::Result<Vec<serde_json::Value>> {
        Ok(daemon
            .swarm_json(&["service", "ps", service])?
            .into_iter()
            .filter(swarm_tests::is_running_row)
            .collect())
    };
    let started = Instant::now();
    let asker = loop {
        anyhow::ensure!(started.elapsed() < PATIENCE, "the asking task never ran");
        if let Some(row) = running_rows("asker")?.first() {
            break row["ID"].as_str().unwrap_or_default().to_owned();
        }
        std::thread::sleep(Duration::from_millis(25));
    };
    let resolved = || -> Vec<String> {
        swarm_tests::resolve_in_task(&asker, "tasks.answers")
            .into_iter()
            .collect()
    };
    let wait_for = |what: &str, done: &dyn Fn(&[String]) -> bool| -> anyhow::Result<()> {
        let started = Instant::now();
        while !done(&resolved()) {
            anyhow::ensure!(started.elapsed() < PATIENCE, "{what} never happened");
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    };
    wait_for("one answer", &|ips| ips.len() == 1)?;

    let started = Instant::now();
    daemon.swarm_ok(&["service", "scale", "-d", "answers=4"])?;
    wait_for("four answers", &|ips| ips.len() == 4)?;
    let scale_s = started.elapsed().as_secs_f64();

    // The last worker running one (never h2, which runs the probes too).
    let (killed, doomed) = running_rows("answers")?
        .iter()
        .filter_map(|r| {
            let host: usize = r["Node"].as_str()?.strip_prefix('h')?.parse().ok()?;
            let ip = r["Addresses"][network_id].as_str()?.to_owned();
            Some((host - 1, ip))
        })
        .max()
        .ok_or_else(|| anyhow::anyhow!("no running task of answers"))?;
    anyhow::ensure!(killed > 1, "answers runs on h2 alone");
    let started = Instant::now();
    topology.daemon_mut(killed).kill()?;
    wait_for("the dead node's task leaving", &|ips| {
        !ips.is_empty() && !ips.contains(&doomed)
    })?;
    let dead_node_s = started.elapsed().as_secs_f64();
    Ok((scale_s, dead_node_s))
}

/// Simulated nodes for the gossip convergence row.
const SIMULATED_NODES: usize = 100;

/// Seconds for an endpoint to reach every one of 100 simulated nodes
/// (`swarm gossip-simulation`, in a namespace of its own).
pub fn simulated_convergence() -> anyhow::Result<f64> {
    println!("bench: gossip among {SIMULATED_NODES} simulated nodes");
    let netns = swarm_tests::Netns::create("swbenchsim")?;
    netns.ip(&["link", "set", "lo", "up"])?;
    let output = netns
        .command(swarm_tests::swarm_bin())?
        .args(["gossip-simulation", "--nodes", &SIMULATED_NODES.to_string()])
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "gossip simulation failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).trim().parse()?)
}
