//! Bad starts and bad input get a clear error naming what is wrong and what to
//! do, a non-zero exit, and leave nothing behind.

use std::process::{Command, Output};

use swarm_tests::{Host, Topology, TopologyOptions, swarm_bin};

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Starts `swarm daemon` with `args` in host 0 and expects it to fail with `message`.
fn daemon_fails(topology: &Topology, args: &[&str], message: &str) {
    let dir = topology.workdir.path().join("refused");
    let output = topology.hosts[0]
        .netns
        .command(swarm_bin())
        .unwrap()
        .arg("daemon")
        .args(args)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .output()
        .unwrap();
    assert!(!output.status.success(), "daemon started with {args:?}");
    let text = stderr(&output);
    assert!(
        text.contains(message),
        "{args:?}: expected {message:?} in: {text}"
    );
}

#[test]
fn daemon_refuses_bad_starts_with_clear_messages() {
    let mut topology = Topology::new(&TopologyOptions::new("swt", 1)).unwrap();
    let socket = topology.workdir.path().join("other.sock");
    let socket = socket.to_str().unwrap();

    daemon_fails(
        &topology,
        &[
            "--advertise-addr",
            "198.18.0.1",
            "--underlay-iface",
            "nope0",
            "--control-socket",
            socket,
        ],
        "no such interface \"nope0\"",
    );
    daemon_fails(
        &topology,
        &[
            "--advertise-addr",
            "198.18.0.77",
            "--control-socket",
            socket,
        ],
        "no interface on this host holds the advertise address 198.18.0.77",
    );
    daemon_fails(
        &topology,
        &[
            "--advertise-addr",
            "198.18.0.1",
            "--runtime",
            "docker",
            "--docker-host",
            "unix:///nonexistent/docker.sock",
            "--control-socket",
            socket,
        ],
        "no Docker engine answers at unix:///nonexistent/docker.sock",
    );
    daemon_fails(
        &topology,
        &[
            "--advertise-addr",
            "198.18.0.1",
            "--dns-upstream",
            "resolver",
        ],
        "--dns-upstream \"resolver\": give an IP, IP:PORT or `none`",
    );
    daemon_fails(
        &topology,
        &["--advertise-addr", "not-an-ip", "--control-socket", socket],
        "--advertise-addr",
    );
    daemon_fails(
        &topology,
        &[
            "--advertise-addr",
            "198.18.0.1",
            "--data-path-port",
            "80",
            "--control-socket",
            socket,
        ],
        "--data-path-port",
    );

    topology.start_daemons().unwrap();
    let running = topology.daemon(0);
    // Same data dir as the running daemon.
    let output = topology.hosts[0]
        .netns
        .command(swarm_bin())
        .unwrap()
        .args([
            "daemon",
            "--advertise-addr",
            "198.18.0.1",
            "--control-socket",
            socket,
        ])
        .arg("--data-dir")
        .arg(&running.data_dir)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("already uses data dir"),
        "{}",
        stderr(&output)
    );
    // Same control socket as the running daemon.
    daemon_fails(
        &topology,
        &[
            "--advertise-addr",
            "198.18.0.1",
            "--control-socket",
            running.socket.to_str().unwrap(),
        ],
        "already listening on",
    );
    // Same interface as the running daemon: its XDP program is in the way.
    daemon_fails(
        &topology,
        &["--advertise-addr", "198.18.0.1", "--control-socket", socket],
        "already has an XDP program",
    );
    // The refused starts did not disturb the running daemon.
    let link = topology.hosts[0]
        .netns
        .ip(&["link", "show", Host::UNDERLAY_IFACE])
        .unwrap();
    assert!(link.contains(" xdp"));
    topology
        .daemon(0)
        .swarm_ok(&["dataplane", "stats"])
        .unwrap();
}

#[test]
fn daemon_refuses_to_run_without_root() {
    swarm_tests::require_root();
    let dir = tempfile::tempdir().unwrap();
    let output = {
        use std::os::unix::process::CommandExt as _;
        Command::new(swarm_bin())
            .args(["daemon", "--advertise-addr", "127.0.0.1"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--control-socket")
            .arg(dir.path().join("s.sock"))
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap()
    };
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("must run as root"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn cli_errors_name_the_flag_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("unix://{}", dir.path().join("none.sock").display());

    let output = Command::new(swarm_bin())
        .args(["--host", &missing, "dataplane", "stats"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let text = stderr(&output);
    assert!(
        text.contains("cannot reach the swarm daemon") && text.contains("SWARM_HOST"),
        "{text}"
    );

    let output = Command::new(swarm_bin())
        .args(["--host", "tcp://198.18.0.1:2375", "dataplane", "stats"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(stderr(&output).contains("unix:///"), "{}", stderr(&output));

    let output = Command::new(swarm_bin())
        .args([
            "--host",
            &missing,
            "dataplane",
            "stats",
            "--format",
            "{{.Counter",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let text = stderr(&output);
    // Any other text is a Go template, as Docker's --format; a broken one
    // is refused before the daemon is asked.
    assert!(
        text.contains("--format") && !text.contains("cannot reach"),
        "{text}"
    );

    // SWARM_HOST is honoured when --host is absent.
    let output = Command::new(swarm_bin())
        .args(["info"])
        .env("SWARM_HOST", &missing)
        .output()
        .unwrap();
    assert!(stderr(&output).contains("none.sock"), "{}", stderr(&output));
}
