//! The control plane's bench rows, on a swarm of three managers and one
//! worker: how soon a dead worker is Down, how soon a new leader commits
//! after kill -9 of the old one, and committed writes per second through
//! the control socket with 1 and 64 clients.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::Path,
    sync::{Arc, Barrier},
    time::{Duration, Instant},
};

use swarm_tests::{Swarm, Topology, TopologyOptions};

/// swarmkit's dispatcher: a 5 s heartbeat, a node Down after 3 missed.
pub const SWARMKIT_DOWN_DETECTION_S: f64 = 15.0;
/// swarmkit's Raft: 1 s ticks and an election after 10 of them.
pub const SWARMKIT_FAILOVER_S: f64 = 10.0;

const MANAGERS: [usize; 3] = [0, 1, 2];
const WORKER: usize = 3;
const WORKER_NAME: &str = "h4";

pub struct ControlFigures {
    pub node_down_s: f64,
    pub failover_s: f64,
    pub writes_per_s_1: f64,
    pub writes_per_s_64: f64,
}

pub fn run(rounds: u32, seconds: u32) -> anyhow::Result<ControlFigures> {
    // h1 inits; h2 and h3 join as managers, h4 as a worker.
    let mut topology = Swarm::new()
        .managers([1, 2])
        .workers([WORKER])
        .start(&TopologyOptions::new("swbenchcp", 4))?;
    let node_down_s = node_down_detection(&mut topology, rounds)?;
    let failover_s = leader_failover(&mut topology, rounds)?;
    let leader = leader(&topology)?;
    let socket = topology.daemon(leader).socket.clone();
    let window = Duration::from_secs(seconds.max(1).into());
    println!("bench: committed writes, 1 client");
    let writes_per_s_1 = writes_per_second(&socket, 1, window)?;
    println!("bench: committed writes, 64 clients");
    let writes_per_s_64 = writes_per_second(&socket, 64, window)?;
    Ok(ControlFigures {
        node_down_s,
        failover_s,
        writes_per_s_1,
        writes_per_s_64,
    })
}

/// The manager all three agree leads.
fn leader(topology: &Topology) -> anyhow::Result<usize> {
    let start = Instant::now();
    loop {
        let mut leaders = Vec::new();
        for host in MANAGERS {
            let info = &topology.daemon(host).swarm_json(&["info"])?[0]["Swarm"];
            if info["IsLeader"] == true && info["Raft"]["Voters"] == 3 {
                leaders.push(host);
            }
        }
        if let [one] = leaders[..] {
            return Ok(one);
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(60),
            "the managers never agreed on a leader"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until every manager has applied the same entries, then a second.
fn caught_up(topology: &Topology) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let mut applied = Vec::new();
        for host in MANAGERS {
            let info = &topology.daemon(host).swarm_json(&["info"])?[0]["Swarm"];
            applied.push(info["Raft"]["LastApplied"].as_u64().unwrap_or_default());
        }
        if applied.iter().all(|&a| a == applied[0]) {
            std::thread::sleep(Duration::from_secs(1));
            return Ok(());
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(60),
            "the managers never caught up: {applied:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn worker_status(topology: &Topology, via: usize) -> anyhow::Result<String> {
    let rows = topology.daemon(via).swarm_json(&["node", "ls"])?;
    Ok(rows
        .iter()
        .find(|r| r["Hostname"] == WORKER_NAME)
        .and_then(|r| r["Status"].as_str())
        .unwrap_or_default()
        .to_owned())
}

/// Seconds from kill -9 of the worker's daemon to `node ls` saying Down
/// (default heartbeat), median over `rounds`.
fn node_down_detection(topology: &mut Topology, rounds: u32) -> anyhow::Result<f64> {
    let wait_for = |topology: &Topology, wanted: &str| -> anyhow::Result<Duration> {
        let start = Instant::now();
        while worker_status(topology, 0)? != wanted {
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(60),
                "{WORKER_NAME} never became {wanted}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(start.elapsed())
    };
    let mut samples = Vec::new();
    for round in 1..=rounds {
        println!("bench: round {round}/{rounds}: node down detection");
        wait_for(topology, "Ready")?;
        topology.daemon_mut(WORKER).kill()?;
        samples.push(wait_for(topology, "Down")?.as_secs_f64());
        topology.start_daemon(WORKER)?;
    }
    Ok(median(samples))
}

/// Seconds from kill -9 of the leader's daemon to the first write committed
/// by its successor (asked of a surviving manager, which waits out the
/// election and forwards to the new leader), median over `rounds`.
fn leader_failover(topology: &mut Topology, rounds: u32) -> anyhow::Result<f64> {
    let mut samples = Vec::new();
    for round in 1..=rounds {
        println!("bench: round {round}/{rounds}: leader failover");
        // A healthy swarm: the manager restarted last round has caught up
        // (a manager behind would lose an election and delay the next).
        let old = leader(topology)?;
        caught_up(topology)?;
        let survivor = MANAGERS
            .into_iter()
            .find(|&h| h != old)
            .expect("3 managers");
        let socket = topology.daemon(survivor).socket.clone();
        let mut client = Client::connect(&socket)?;
        topology.daemon_mut(old).kill()?;
        let killed = Instant::now();
        let mut attempt = 0u64;
        loop {
            attempt += 1;
            if client.write(&format!("failover-{round}"), attempt)?.is_ok() {
                break;
            }
            anyhow::ensure!(
                killed.elapsed() < Duration::from_secs(60),
                "no write committed after the leader died"
            );
        }
        let took = killed.elapsed().as_secs_f64();
        println!(
            "bench:   h{} killed; a write committed after {took:.3} s ({attempt} attempts)",
            old + 1
        );
        samples.push(took);
        topology.start_daemon(old)?;
    }
    leader(topology)?;
    Ok(median(samples))
}

/// Committed writes per second with `clients` connections writing in a
/// loop for `window`.
fn writes_per_second(socket: &Path, clients: usize, window: Duration) -> anyhow::Result<f64> {
    let start = Arc::new(Barrier::new(clients + 1));
    let workers: Vec<_> = (0..clients)
        .map(|id| {
            let socket = socket.to_owned();
            let start = start.clone();
            std::thread::spawn(move || -> anyhow::Result<u64> {
                let mut client = Client::connect(&socket)?;
                start.wait();
                let begun = Instant::now();
                let mut committed = 0;
                while begun.elapsed() < window {
                    client
                        .write(&format!("bench-{id}"), committed)?
                        .map_err(|e| anyhow::anyhow!("a write failed: {e}"))?;
                    committed += 1;
                }
                Ok(committed)
            })
        })
        .collect();
    start.wait();
    let begun = Instant::now();
    let mut total = 0;
    for worker in workers {
        total += worker
            .join()
            .map_err(|_| anyhow::anyhow!("a writer panicked"))??;
    }
    Ok(total as f64 / begun.elapsed().as_secs_f64())
}

/// One control-socket connection, as the CLI makes.
struct Client {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Client {
    fn connect(socket: &Path) -> anyhow::Result<Self> {
        let stream = UnixStream::connect(socket)?;
        Ok(Self {
            writer: stream.try_clone()?,
            reader: BufReader::new(stream),
        })
    }

    /// `swarm node update --label-add KEY=VALUE h4`: one committed write.
    /// The outer error is the socket's; the inner one the daemon's answer.
    fn write(&mut self, key: &str, value: u64) -> anyhow::Result<Result<(), String>> {
        let request = serde_json::json!({"NodeUpdate": {
            "node": WORKER_NAME,
            "label_add": [[key, value.to_string()]],
            "label_rm": [],
        }});
        writeln!(self.writer, "{request}")?;
        let mut answer = String::new();
        self.reader.read_line(&mut answer)?;
        let answer: serde_json::Value = serde_json::from_str(&answer)?;
        Ok(match answer.get("Error") {
            Some(message) => Err(message.to_string()),
            None => Ok(()),
        })
    }
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}
