//! `service logs` with the times lines were written: a busybox task on a
//! worker prints lines over several seconds; `-t` shows each line's time,
//! `--since` keeps the lines at or after a time, `--details` shows Docker's
//! attributes, `--tail` and `--follow` neither lose nor repeat a line, and
//! a line longer than the shim's buffer arrives whole, split. The docker
//! CLI reads the same times through the Engine API.

use std::{
    io::Read as _,
    process::{Command, Stdio},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use swarm_node::log_time;
use swarm_tests::{
    busybox_swarm,
    docker_cli::{DOCKER_28, DockerCli},
    swarm_bin, wait_until,
};

/// The shim's line buffer: a longer line arrives in pieces of this size.
const LINE_MAX: usize = 16 * 1024;
const LONG_LINE: usize = 40_000;

/// Lines a few seconds apart, a line longer than the shim's buffer, and a
/// last line without a newline (written when the task's output ends).
const TALKER: &str = "echo first; sleep 2; echo second; \
     head -c 40000 /dev/zero | tr '\\0' x; echo; echo third >&2; sleep 6; \
     echo fourth; sleep 1; printf fifth";

/// Every line the talker prints, in order.
fn expected_lines() -> Vec<String> {
    let mut lines = vec!["first".to_owned(), "second".to_owned()];
    let mut left = LONG_LINE;
    while left > 0 {
        lines.push("x".repeat(left.min(LINE_MAX)));
        left -= left.min(LINE_MAX);
    }
    lines.extend(["third", "fourth", "fifth"].map(String::from));
    lines
}

/// Lines short enough for a failure message: each one's start and length.
fn summary<S: AsRef<str>>(lines: &[S]) -> Vec<String> {
    lines
        .iter()
        .map(|line| {
            let line = line.as_ref();
            format!("{:.24} ({} bytes)", line, line.len())
        })
        .collect()
}

/// Asserts that `output` is exactly `expected`, line by line.
fn assert_lines<S: AsRef<str>>(output: &str, expected: &[S], what: &str) {
    let lines: Vec<&str> = output.lines().collect();
    let expected: Vec<&str> = expected.iter().map(AsRef::as_ref).collect();
    assert!(
        lines == expected,
        "{what}: {:?}, not {:?}",
        summary(&lines),
        summary(&expected)
    );
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// `<stamp> <text>` lines: (time, text).
fn stamped(output: &str) -> Vec<(i64, String)> {
    output
        .lines()
        .map(|line| {
            let (stamp, text) = line.split_once(' ').expect("a stamp and a line");
            assert_eq!(stamp.len(), 30, "Docker's fixed nine digits: {line:.60}");
            let at = log_time::parse_stamp(stamp).unwrap_or_else(|| panic!("a time: {line:.60}"));
            (at, text.to_owned())
        })
        .collect()
}

#[test]
fn service_logs_show_when_each_line_was_written() {
    let (topology, _registry, image) = busybox_swarm("logs");
    let manager = topology.daemon(0);
    let began = now_nanos();
    manager
        .swarm_ok(&[
            "service",
            "create",
            "--name",
            "talker",
            "--detach",
            "--restart-condition",
            "none",
            "--constraint",
            "node.role==worker",
            &image,
            "sh",
            "-c",
            TALKER,
        ])
        .unwrap();

    // A follower from the start: each line once, in order, none lost.
    let mut follower = Command::new(swarm_bin())
        .arg("--host")
        .arg(format!("unix://{}", manager.socket.display()))
        .args(["service", "logs", "--raw", "--follow", "talker"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let expected = expected_lines();
    let mut raw = String::new();
    wait_until("all the talker's lines in service logs", || {
        raw = manager
            .swarm_ok(&["service", "logs", "--raw", "talker"])
            .map_err(|e| e.to_string())?;
        raw.ends_with("fifth\n")
            .then_some(())
            .ok_or_else(|| format!("{:?}", summary(&raw.lines().collect::<Vec<_>>())))
    });
    let ended = now_nanos();
    assert_lines(&raw, &expected, "service logs --raw");

    // Two more rounds of the follower, then what it printed.
    std::thread::sleep(Duration::from_millis(2_500));
    follower.kill().unwrap();
    let mut followed = String::new();
    follower
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut followed)
        .unwrap();
    follower.wait().unwrap();
    assert_lines(&followed, &expected, "service logs --follow");

    // -t: the times the lines were written, in order, within the test.
    let timed = stamped(
        &manager
            .swarm_ok(&["service", "logs", "-t", "--raw", "talker"])
            .unwrap(),
    );
    let texts: Vec<&str> = timed.iter().map(|(_, text)| text.as_str()).collect();
    assert!(texts == expected, "{:?}", summary(&texts));
    let times: Vec<i64> = timed.iter().map(|(at, _)| *at).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert!(
        began <= times[0] && times[times.len() - 1] <= ended,
        "{times:?}"
    );
    let (first, second) = (times[0], times[1]);
    assert!(
        second - first >= 1_900_000_000,
        "`sleep 2` between: {times:?}"
    );

    // With the prefix, as docker prints it: `<time> <task>@<node>    | <line>`.
    let worker = &topology.hosts[1].name;
    let pretty = manager
        .swarm_ok(&["service", "logs", "-t", "talker"])
        .unwrap();
    let first_line = pretty.lines().next().unwrap();
    let (stamp, rest) = first_line.split_once(' ').unwrap();
    assert_eq!(log_time::parse_stamp(stamp), Some(first));
    assert!(
        rest.starts_with("talker.1.") && rest.ends_with(&format!("@{worker}    | first")),
        "{first_line}"
    );

    // --since a time between the first two lines: the later ones only;
    // as a date, a Unix timestamp, or a duration before now.
    let between = first + (second - first) / 2;
    let since_date = log_time::stamp(Some(between));
    let since_unix = format!("{}.{:09}", between / 1_000_000_000, between % 1_000_000_000);
    for since in [since_date.as_str(), since_unix.as_str()] {
        let later = manager
            .swarm_ok(&["service", "logs", "--raw", "--since", since, "talker"])
            .unwrap();
        assert_lines(&later, &expected[1..], &format!("--since {since}"));
    }
    let all = manager
        .swarm_ok(&["service", "logs", "--raw", "--since", "10m", "talker"])
        .unwrap();
    assert_eq!(all.lines().count(), expected.len());
    let none = manager
        .swarm_ok(&["service", "logs", "--raw", "--since=-1h", "talker"])
        .unwrap();
    assert_eq!(none, "");
    let refused = manager
        .swarm(&["service", "logs", "--since", "yesterday", "talker"])
        .unwrap();
    let words = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && words.contains("--since") && words.contains("for example"),
        "{words}"
    );

    // --tail, with and without a time limit.
    let tail = manager
        .swarm_ok(&["service", "logs", "--raw", "--tail", "2", "talker"])
        .unwrap();
    assert_eq!(tail, "fourth\nfifth\n");

    // --details: Docker's attributes with --raw; docker's CLI shows an
    // empty list (and its space) in front of a prefix.
    let service_id = manager
        .swarm_inspect(&["service", "inspect", "talker"])
        .unwrap()[0]["ID"]
        .as_str()
        .unwrap()
        .to_owned();
    let node_id = topology.daemon(1).node_id().unwrap();
    let detailed = manager
        .swarm_ok(&["service", "logs", "--raw", "--details", "talker"])
        .unwrap();
    let (details, text) = detailed.lines().next().unwrap().split_once(' ').unwrap();
    assert_eq!(text, "first");
    let prefix = format!(
        "com.docker.swarm.node.id={node_id},com.docker.swarm.service.id={service_id},com.docker.swarm.task.id="
    );
    assert!(details.starts_with(&prefix), "{details}");
    let task_id = &details[prefix.len()..];
    assert!(task_id.len() > 12, "{details}");
    let pretty_details = manager
        .swarm_ok(&["service", "logs", "--details", "talker"])
        .unwrap();
    let pretty_first = pretty_details.lines().next().unwrap();
    assert!(pretty_first.ends_with("    |  first"), "{pretty_first}");

    // The docker CLI through the Engine API: the same times and lines.
    let docker = DockerCli::new(DOCKER_28, manager).unwrap();
    let docker_timed = docker.ok(&["service", "logs", "-t", "talker"]).unwrap();
    let docker_first = docker_timed.lines().next().unwrap();
    assert!(
        docker_first.starts_with(&format!("{stamp} talker.1.{}@{worker}", &task_id[..12]))
            && docker_first.ends_with("| first"),
        "{docker_first}"
    );
    let docker_lines: Vec<&str> = docker_timed
        .lines()
        .map(|line| line.split_once("| ").map_or(line, |(_, text)| text))
        .collect();
    assert!(docker_lines == expected, "{:?}", summary(&docker_lines));
    let docker_since = docker
        .ok(&["service", "logs", "--raw", "--since", &since_date, "talker"])
        .unwrap();
    assert_lines(&docker_since, &expected[1..], "docker service logs --since");
    let docker_details = docker
        .ok(&[
            "service",
            "logs",
            "--raw",
            "--details",
            "--tail",
            "1",
            "talker",
        ])
        .unwrap();
    assert_eq!(docker_details, format!("{details} fifth\n"));
}
