//! The multi-host test bed every integration test, the demo and the benchmarks
//! stand on: host network namespaces joined on an underlay from 198.18.0.0/15,
//! an outside client namespace, and one `swarm daemon` per host.
//!
//! Everything it makes is torn down when the [`Topology`] is dropped, on
//! success, failure and panic; namespaces left by a process that was killed
//! outright are swept by the next one.

mod daemon;
pub mod docker;
pub mod docker_cli;
pub mod linearizable;
mod netns;
mod overlay;
pub mod packets;
mod raw;
mod registry;
pub mod servers;
mod swarm;
mod topology;

pub use daemon::{Daemon, swarm_bin};
pub use netns::{Netns, in_netns, spawn_in_netns, sweep_stale};
pub use overlay::OverlayTask;
pub use raw::send_raw_frames;
pub use registry::{
    Registry, TEST_REGISTRY, TestImage, TestLayer, busybox_swarm, htpasswd_file, test_certificates,
};
pub use swarm::{Formed, Swarm};
pub use topology::{DATA_IFACE, Host, Topology, TopologyOptions, UNDERLAY_PREFIX_LEN};

/// A native task (`service create ... WEB_TASK`) that answers HTTP on port
/// 80 with its hostname: its task ID prefix unless --hostname is given.
pub const WEB_TASK: &[&str] = &[
    "host",
    "sh",
    "-c",
    "mkdir -p /tmp/www && hostname > /tmp/www/index.html && exec busybox httpd -f -p 80 -h /tmp/www",
];

/// Runs a command and returns its stdout, failing with its stderr when it fails.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = std::process::Command::new(program)
        .args(args)
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run {program}: {e}"))?;
    if !output.status.success() {
        anyhow::bail!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `dig @127.0.0.11 ARGS` from inside task `task_id`'s network namespace:
/// a question to the resolver the task itself uses.
pub fn dig_in_task(task_id: &str, args: &[&str]) -> anyhow::Result<String> {
    let netns = format!("swarm-{task_id}");
    let mut full = vec![
        "netns",
        "exec",
        &netns,
        "dig",
        "@127.0.0.11",
        "+time=2",
        "+tries=1",
    ];
    full.extend_from_slice(args);
    run("ip", &full)
}

/// The A records `dig +short NAME` gives inside task `task_id`, sorted;
/// none when dig fails.
pub fn resolve_in_task(task_id: &str, name: &str) -> std::collections::BTreeSet<String> {
    dig_in_task(task_id, &["+short", name])
        .unwrap_or_default()
        .lines()
        .map(|line| line.trim().to_owned())
        .filter(|line| !line.is_empty())
        .collect()
}

/// Whether a `service ps --format json` row is a task meant to run and
/// running.
pub fn is_running_row(row: &serde_json::Value) -> bool {
    row["DesiredState"] == "Running"
        && row["CurrentState"]
            .as_str()
            .unwrap_or("")
            .starts_with("Running")
}

/// `ping -c 3` from inside namespace `netns` (with `extra` flags, e.g. `-M do
/// -s 1422`); `Err` when no reply came back.
pub fn ping(netns: &str, to: &str, extra: &[&str]) -> anyhow::Result<String> {
    let mut args = vec![
        "netns", "exec", netns, "ping", "-c", "3", "-i", "0.2", "-W", "2",
    ];
    args.extend_from_slice(extra);
    args.push(to);
    run("ip", &args)
}

/// Fails loudly unless running as root: the harness makes namespaces and
/// loads eBPF, and a test that cannot do that must not pass by skipping.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "swarm's integration tests need root (network namespaces, eBPF); run them with `cargo xtask test`"
    );
}

/// How long [`wait_until`] waits for what it polls: generous, for a busy
/// 2-core VM.
pub const PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// How often the waits poll.
const POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// Polls `check` until it passes, or panics after [`PATIENCE`] saying what
/// it waited for and the last thing `check` reported.
pub fn wait_until(what: &str, check: impl FnMut() -> Result<(), String>) {
    wait_until_within(what, PATIENCE, check);
}

/// [`wait_until`] with `patience` instead of [`PATIENCE`].
pub fn wait_until_within(
    what: &str,
    patience: std::time::Duration,
    check: impl FnMut() -> Result<(), String>,
) {
    if let Err(e) = try_wait_until(what, patience, check) {
        panic!("{e}");
    }
}

/// Polls `check` until it passes; after `patience`, an error saying what it
/// waited for and the last thing `check` reported (`never WHAT: LAST`). For
/// callers that report errors rather than panic: the harness, the demo and
/// the benches.
pub fn try_wait_until(
    what: &str,
    patience: std::time::Duration,
    mut check: impl FnMut() -> Result<(), String>,
) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + patience;
    loop {
        match check() {
            Ok(()) => return Ok(()),
            Err(last) if std::time::Instant::now() >= deadline => {
                anyhow::bail!("never {what}: {last}")
            }
            Err(_) => std::thread::sleep(POLL_INTERVAL),
        }
    }
}
