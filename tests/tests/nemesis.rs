//! Faults while clients work: three (and five) managers and two workers,
//! clients writing and reading node labels and service labels (a service
//! spec, versioned) through every manager, and a nemesis that kills the
//! leader (-9) and restarts it, pauses a manager (SIGSTOP), cuts one
//! manager off from the others both ways or one way (nftables in its
//! namespace), and promotes a worker to one more manager and demotes it
//! again. The history of every
//! operation is checked for linearizability per label
//! (`swarm_tests::linearizable`), and after healing a service's tasks
//! converge: the replicas Running, one per slot.
//!
//! Bounded here (`NEMESIS_SECONDS`, 30 by default); `cargo xtask chaos
//! --minutes N` runs it longer.

use std::{
    collections::BTreeMap,
    io::Read as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use swarm_tests::{
    Swarm, Topology, TopologyOptions,
    linearizable::{self, Action, Operation},
    swarm_bin, wait_until,
};

/// Keys: labels of node h1 and of service web.
const KEYS: &[(&str, &str)] = &[
    ("node", "k0"),
    ("node", "k1"),
    ("service", "k2"),
    ("service", "k3"),
];
/// How long a client waits for one command before calling it unknown.
const CALL_TIMEOUT: Duration = Duration::from_secs(8);

/// Runs `swarm ARGS` against `socket`; `None` when it did not finish in
/// time (killed), else whether it succeeded and its stdout.
fn call(socket: &Path, args: &[&str]) -> Option<(bool, String)> {
    let mut child = Command::new(swarm_bin())
        .arg("--host")
        .arg(format!("unix://{}", socket.display()))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + CALL_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let mut out = String::new();
                child.stdout.take()?.read_to_string(&mut out).ok()?;
                return Some((status.success(), out));
            }
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// A small deterministic generator, so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A client talking to one manager until `stop`: writes and reads of
/// labels on node h1, each recorded with when it was invoked and answered.
fn client(
    id: usize,
    socket: PathBuf,
    started: Instant,
    stop: Arc<AtomicBool>,
    history: Arc<Mutex<Vec<Operation>>>,
) {
    let mut rng = Rng(0x9e37_79b9 + id as u64);
    let mut n = 0;
    let micros = || started.elapsed().as_micros() as u64;
    while !stop.load(Ordering::Relaxed) {
        let (kind, key) = KEYS[rng.below(KEYS.len())];
        let object = if kind == "node" { "h1" } else { "web" };
        let invoked = micros();
        let op = if rng.below(2) == 0 {
            n += 1;
            let value = format!("c{id}-{n}");
            let label = format!("{key}={value}");
            let mut args = vec![kind, "update", "--label-add", &label];
            if kind == "service" {
                // The label alone: no rolling update to wait for.
                args.push("--detach");
            }
            args.push(object);
            let answer = call(&socket, &args);
            let action = match answer {
                Some((true, _)) => Action::Write(value),
                // Refused or cut off: it may still have been committed.
                _ => Action::WriteUnknown(value),
            };
            Some((action, micros()))
        } else {
            match call(&socket, &[kind, "inspect", object]) {
                Some((true, out)) => {
                    serde_json::from_str::<serde_json::Value>(&out)
                        .ok()
                        .map(|v| {
                            let seen = v[0]["Spec"]["Labels"][key].as_str().map(str::to_owned);
                            (Action::Read(seen), micros())
                        })
                }
                // A read that failed says nothing.
                _ => None,
            }
        };
        if let Some((action, completed)) = op {
            history.lock().unwrap().push(Operation {
                key: format!("{kind} {key}"),
                action,
                invoked,
                completed,
            });
        }
    }
}

/// The manager that leads, as a reachable manager says.
fn leader(topology: &Topology, alive: &[bool]) -> Option<usize> {
    (0..alive.len()).filter(|&i| alive[i]).find_map(|i| {
        let out = topology
            .daemon(i)
            .swarm_ok(&["node", "ls", "--format", "{{.Hostname}} {{.ManagerStatus}}"])
            .ok()?;
        out.lines()
            .find(|l| l.ends_with(" Leader"))
            .and_then(|l| {
                l.strip_prefix('h')?
                    .split(' ')
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .map(|h| h - 1)
    })
}

/// Drops what manager `i` receives from the other managers, and what it
/// sends them unless `one_way`.
fn isolate(topology: &Topology, managers: usize, i: usize, one_way: bool) {
    let others: Vec<String> = (0..managers)
        .filter(|&j| j != i)
        .map(|j| topology.hosts[j].addr.to_string())
        .collect();
    let set = others.join(", ");
    let output = if one_way {
        String::new()
    } else {
        format!(
            " chain output {{ type filter hook output priority 0; ip daddr {{ {set} }} drop; }}\n"
        )
    };
    let rules = format!(
        "table inet nemesis {{\n chain input {{ type filter hook input priority 0; ip saddr {{ {set} }} drop; }}\n{output}}}\n"
    );
    let path = topology.workdir.path().join(format!("nemesis-{i}.nft"));
    std::fs::write(&path, rules).unwrap();
    topology.hosts[i]
        .netns
        .exec("nft", &["-f", path.to_str().unwrap()])
        .unwrap();
}

fn heal(topology: &Topology, i: usize) {
    let _ = topology.hosts[i]
        .netns
        .exec("nft", &["delete", "table", "inet", "nemesis"]);
}

#[test]
fn three_managers_under_crashes_pauses_and_partitions_stay_linearizable() {
    nemesis("nem3", 3, 0x5eed);
}

#[test]
fn five_managers_under_crashes_pauses_and_partitions_stay_linearizable() {
    nemesis("nem5", 5, 0xfeed);
}

/// `managers` managers and two workers, faults for `NEMESIS_SECONDS`
/// (30 by default), the nemesis's choices drawn from `seed`.
fn nemesis(tag: &str, managers: usize, seed: u64) {
    let seconds: u64 = std::env::var("NEMESIS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let promoted = managers; // the first worker
    let mut topology = Swarm::new()
        .managers(1..managers)
        .workers([managers, managers + 1])
        .start(&TopologyOptions::new(tag, managers + 2))
        .unwrap();
    let mut args = vec!["service", "create", "--name", "web", "--replicas", "3"];
    args.extend_from_slice(swarm_tests::WEB_TASK);
    topology.daemon(0).swarm_ok(&args).unwrap();

    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let history = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..managers)
        .map(|i| {
            let socket = topology.daemon(i).socket.clone();
            let (stop, history) = (stop.clone(), history.clone());
            thread::spawn(move || client(i, socket, started, stop, history))
        })
        .collect();

    let mut rng = Rng(seed);
    let mut alive = vec![true; managers];
    let mut faults: BTreeMap<&str, usize> = BTreeMap::new();
    let end = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < end {
        thread::sleep(Duration::from_millis(1000 + rng.below(1000) as u64));
        match rng.below(6) {
            // The leader more often than the others.
            0 | 1 => {
                let victim = leader(&topology, &alive).unwrap_or_else(|| rng.below(managers));
                topology.daemon_mut(victim).kill().unwrap();
                alive[victim] = false;
                thread::sleep(Duration::from_millis(500 + rng.below(1500) as u64));
                topology.start_daemon(victim).unwrap();
                alive[victim] = true;
                *faults.entry("kill -9 and restart").or_default() += 1;
            }
            2 => {
                let victim = rng.below(managers);
                let pid = Pid::from_raw(topology.daemon(victim).pid().unwrap() as i32);
                kill(pid, Signal::SIGSTOP).unwrap();
                thread::sleep(Duration::from_millis(1000 + rng.below(2000) as u64));
                kill(pid, Signal::SIGCONT).unwrap();
                *faults.entry("pause").or_default() += 1;
            }
            3 | 4 => {
                let victim = leader(&topology, &alive).unwrap_or_else(|| rng.below(managers));
                let one_way = rng.below(2) == 0;
                isolate(&topology, managers, victim, one_way);
                thread::sleep(Duration::from_millis(2000 + rng.below(2000) as u64));
                heal(&topology, victim);
                let fault = if one_way {
                    "one-way partition"
                } else {
                    "partition"
                };
                *faults.entry(fault).or_default() += 1;
            }
            _ => {
                // A membership change under load: h4 becomes a manager and a
                // worker again (through any manager that answers).
                let through = (0..managers).find(|&i| alive[i]).unwrap_or(0);
                let promoted = format!("h{}", promoted + 1);
                for verb in ["promote", "demote"] {
                    let _ = topology.daemon(through).swarm(&["node", verb, &promoted]);
                    thread::sleep(Duration::from_millis(1500));
                }
                *faults.entry("promote and demote").or_default() += 1;
            }
        }
    }
    // Healed: a few quiet seconds of work, then stop.
    thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    let history = history.lock().unwrap().clone();
    let count = |f: fn(&Action) -> bool| history.iter().filter(|op| f(&op.action)).count();
    let acknowledged = count(|a| matches!(a, Action::Write(_)));
    let unknown = count(|a| matches!(a, Action::WriteUnknown(_)));
    let reads = count(|a| matches!(a, Action::Read(_)));
    eprintln!(
        "nemesis: {} operations ({acknowledged} writes acknowledged, {unknown} unknown, {reads} reads), faults {faults:?}",
        history.len()
    );
    assert!(
        acknowledged > 0 && reads > 0,
        "the clients got nothing done: {history:?}"
    );
    let anomalies = linearizable::check(&history);
    if !anomalies.is_empty() {
        topology.dump_logs();
    }
    assert!(anomalies.is_empty(), "not linearizable: {anomalies:#?}");

    // The membership settles: the promoted node a worker again.
    wait_until("the promoted node a worker again", || {
        let out = topology
            .daemon(0)
            .swarm_ok(&["node", "ls", "--format", "{{.Hostname}} {{.ManagerStatus}}"])
            .map_err(|e| e.to_string())?;
        // `h4 ` for a worker; `h1 Leader`, `h2 Reachable` for managers.
        let count = out
            .lines()
            .filter(|l| l.split(' ').nth(1).is_some_and(|status| !status.is_empty()))
            .count();
        (count == managers).then_some(()).ok_or(out)
    });
    // The tasks converge: three Running, one per slot.
    wait_until("web's three slots Running once each", || {
        let rows = topology
            .daemon(0)
            .swarm_json(&["service", "ps", "web"])
            .map_err(|e| e.to_string())?;
        let mut slots: Vec<u64> = rows
            .iter()
            .filter(|r| swarm_tests::is_running_row(r))
            .filter_map(|r| r["Slot"].as_u64())
            .collect();
        slots.sort_unstable();
        (slots == [1, 2, 3])
            .then_some(())
            .ok_or(format!("{rows:#?}"))
    });
}
