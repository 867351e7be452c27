//! `swarm events`: the changes a manager applies to its store, streamed to
//! the CLI while a service is created and scaled, a node drained and a
//! secret created; in order, filtered, and bounded by --since/--until.

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use swarm_tests::{Daemon, Swarm, TopologyOptions, swarm_bin, wait_until};

/// An event looked for: type, action and attributes it must hold.
type Wanted<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

/// A running `swarm events`, its lines gathered; killed when dropped.
struct Stream {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Stream {
    fn start(daemon: &Daemon, args: &[&str]) -> Self {
        let mut child = Command::new(swarm_bin())
            .arg("--host")
            .arg(format!("unix://{}", daemon.socket.display()))
            .arg("events")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let gathered = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                gathered.lock().unwrap().push(line);
            }
        });
        Self { child, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unix_now() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    format!("{}.{:09}", now.as_secs(), now.subsec_nanos())
}

/// Each line as the JSON event it is.
fn parsed(lines: &[String]) -> Vec<serde_json::Value> {
    lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Index of the first event of `kind` and `action` whose attributes hold
/// all of `attributes`.
fn find(
    events: &[serde_json::Value],
    kind: &str,
    action: &str,
    attrs: &[(&str, &str)],
) -> Option<usize> {
    events.iter().position(|e| {
        e["Type"] == kind
            && e["Action"] == action
            && attrs
                .iter()
                .all(|(k, v)| e["Actor"]["Attributes"][*k] == *v)
    })
}

#[test]
fn events_stream_changes_in_order_with_filters_since_and_until() {
    let topology = Swarm::new()
        .workers([1])
        .start(&TopologyOptions::new("swe", 2))
        .unwrap();
    let h1 = topology.daemon(0);
    let start = unix_now();
    let all = Stream::start(h1, &["--since", &start, "--format", "json"]);
    let nodes = Stream::start(
        h1,
        &[
            "--since",
            &start,
            "--format",
            "json",
            "--filter",
            "type=node",
        ],
    );
    let text = Stream::start(h1, &["--filter", "type=service"]);

    h1.swarm_ok(&[
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "1",
        "host",
        "sleep",
        "600",
    ])
    .unwrap();
    h1.swarm_ok(&["service", "scale", "web=2"]).unwrap();
    h1.swarm_ok(&["node", "update", "--availability", "drain", "h2"])
        .unwrap();
    let secret = topology.workdir.path().join("pw");
    std::fs::write(&secret, "hunter2").unwrap();
    h1.swarm_ok(&["secret", "create", "pw", secret.to_str().unwrap()])
        .unwrap();

    let wanted: [Wanted; 5] = [
        ("service", "create", &[("name", "web"), ("replicas", "1")]),
        (
            "service",
            "update",
            &[
                ("name", "web"),
                ("replicas.new", "2"),
                ("replicas.old", "1"),
            ],
        ),
        (
            "node",
            "update",
            &[
                ("name", "h2"),
                ("availability.new", "drain"),
                ("availability.old", "active"),
            ],
        ),
        ("secret", "create", &[("name", "pw")]),
        // Tasks change state as they start.
        ("task", "update", &[("state.new", "running")]),
    ];
    wait_until("every change streamed, in order", || {
        let events = parsed(&all.lines());
        let at: Vec<Option<usize>> = wanted
            .iter()
            .map(|(kind, action, attrs)| find(&events, kind, action, attrs))
            .collect();
        let order: Vec<usize> = at[..4].iter().flatten().copied().collect();
        (order.len() == 4 && at[4].is_some() && order.is_sorted())
            .then_some(())
            .ok_or(format!("{at:?} in {events:#?}"))
    });
    // The secret's data is no event's business.
    assert!(all.lines().iter().all(|l| !l.contains("hunter2")));
    // The node filter passes node events alone.
    wait_until("the node stream has the drain", || {
        let events = parsed(&nodes.lines());
        find(&events, "node", "update", &[("availability.new", "drain")])
            .ok_or(format!("{events:?}"))
            .map(|_| ())
    });
    assert!(parsed(&nodes.lines()).iter().all(|e| e["Type"] == "node"));
    // Docker's line: time, type, action, ID, then the attributes.
    wait_until("the text stream has the service's create", || {
        let lines = text.lines();
        lines
            .iter()
            .find(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                words.len() >= 4
                    && words[0].ends_with('Z')
                    && words[1] == "service"
                    && words[2] == "create"
                    && l.ends_with("(name=web, replicas=1)")
            })
            .map(|_| ())
            .ok_or(format!("{lines:?}"))
    });
    assert!(text.lines().iter().all(|l| l.contains(" service ")));

    // --until: the kept events between the two times, then it ends.
    let until = unix_now();
    let output = h1
        .swarm(&[
            "events",
            "--since",
            &start,
            "--until",
            &until,
            "--format",
            "json",
            "--filter",
            "type=secret",
        ])
        .unwrap();
    assert!(output.status.success());
    let bounded = parsed(
        &String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>(),
    );
    assert_eq!(bounded.len(), 1, "{bounded:?}");
    assert_eq!(bounded[0]["Actor"]["Attributes"]["name"], "pw");
    // Nothing since a moment ago, until now: none.
    let output = h1
        .swarm(&[
            "events",
            "--since",
            &until,
            "--until",
            &unix_now(),
            "--filter",
            "type=secret",
        ])
        .unwrap();
    assert!(output.status.success());
    assert!(output.stdout.is_empty());

    // Bad filters are refused, naming what is taken.
    let refused = h1.swarm(&["events", "--filter", "type=volume"]).unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("the types are service"));
    // Workers hold no store.
    let worker = topology.daemon(1).swarm(&["events"]).unwrap();
    assert!(!worker.status.success());
}
