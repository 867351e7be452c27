//! `cargo xtask`: set-up, tests, the demo, the daemon and the benchmarks.

mod bench;
mod control_bench;
mod demo;
mod images_bench;
mod process;
mod services_bench;
mod setup;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::process::{cargo, workspace_root};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "swarm's developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what is missing: Debian packages, nightly + rust-src, bpf-linker.
    Setup,
    /// Set up, then fmt check, clippy (warnings denied) and every test, as root.
    Test,
    /// Build and run `swarm daemon ARGS...` on this machine.
    Run {
        /// Build with optimisations.
        #[arg(long)]
        release: bool,
        /// Arguments for `swarm daemon`, e.g. `-- --advertise-addr 198.18.0.1`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Three hosts in namespaces, three daemons, client traffic, counters; then clean up.
    Demo,
    /// The fault-injection suite (tests/tests/nemesis.rs) for longer than
    /// `cargo xtask test` runs it: kills, pauses and partitions of managers
    /// while clients write and read, the history checked for linearizability.
    Chaos {
        /// How long the nemesis injects faults.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
        minutes: u64,
    },
    /// Data-plane paths side by side with their baselines (underlay, kernel
    /// VXLAN, nftables DNAT), then the control plane's rows.
    Bench {
        /// Only the control plane's rows (node down detection, leader
        /// failover, committed writes per second): about a minute.
        #[arg(long)]
        control_plane_only: bool,
        /// Only the services rows (create, scale, a killed worker; native
        /// and Docker runtimes): a few minutes.
        #[arg(long, conflicts_with = "control_plane_only")]
        services_only: bool,
        /// Only the images rows (cold and warm pulls of 10 replicas of a
        /// 5 MB and a 50 MB image; native and Docker runtimes): a few
        /// minutes.
        #[arg(long, conflicts_with_all = ["control_plane_only", "services_only"])]
        images_only: bool,
        /// Also write the results as one flat JSON object here.
        #[arg(long, value_name = "PATH")]
        json: Option<std::path::PathBuf>,
        /// Seconds per throughput and connection-rate run.
        #[arg(long, default_value_t = 3)]
        seconds: u32,
        /// Rounds; every figure is the median over them.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
        rounds: u32,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Task::Setup => setup::run(),
        Task::Test => test(),
        Task::Run { release, args } => run_daemon(release, &args),
        Task::Demo => {
            setup::run()?;
            build_swarm(false)?;
            demo::run()
        }
        Task::Chaos { minutes } => {
            setup::run()?;
            require_root("cargo xtask chaos")?;
            build_swarm(false)?;
            // SAFETY: xtask is single-threaded here.
            unsafe { std::env::set_var("NEMESIS_SECONDS", (minutes * 60).to_string()) };
            let (passed, failed) = process::cargo_test(&[
                "test",
                "--package",
                "swarm-tests",
                "--test",
                "nemesis",
                "--",
                "--nocapture",
            ])?;
            anyhow::ensure!(failed == 0 && passed == 1, "the nemesis suite failed");
            Ok(())
        }
        Task::Bench {
            control_plane_only,
            services_only,
            images_only,
            json,
            seconds,
            rounds,
        } => {
            setup::run()?;
            build_swarm(true)?;
            if control_plane_only {
                bench::run_control_plane(json.as_deref(), seconds, rounds)
            } else if services_only {
                bench::run_services(json.as_deref())
            } else if images_only {
                bench::run_images(json.as_deref())
            } else {
                bench::run(json.as_deref(), seconds, rounds)
            }
        }
    }
}

fn test() -> anyhow::Result<()> {
    setup::run()?;
    require_root("cargo xtask test")?;
    cargo(&["fmt", "--all", "--", "--check"]).context("formatting: run `cargo fmt --all`")?;
    cargo(&[
        "clippy",
        "--workspace",
        "--exclude",
        "swarm-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    process::run(
        "rustup",
        &[
            "run",
            "nightly",
            "cargo",
            "clippy",
            "--package",
            "swarm-ebpf",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--",
            "-D",
            "warnings",
        ],
    )
    .context("clippy on the eBPF programs")?;
    build_swarm(false)?;
    let (passed, failed) =
        process::cargo_test(&["test", "--workspace", "--exclude", "swarm-ebpf"])?;
    // One closing line for the whole run: cargo's own last line is a doc-test
    // binary's, often with nothing in it.
    println!("xtask test: fmt and clippy clean; every test binary ran");
    println!("{passed} passed, {failed} failed");
    anyhow::ensure!(failed == 0, "{failed} tests failed");
    Ok(())
}

/// Builds the `swarm` binary, points the harness (and child processes) at it
/// through `SWARM_BIN`, and returns its path.
fn build_swarm(release: bool) -> anyhow::Result<std::path::PathBuf> {
    let mut args = vec!["build", "--package", "swarm-node", "--bin", "swarm"];
    if release {
        args.push("--release");
    }
    cargo(&args)?;
    let profile = if release { "release" } else { "debug" };
    let swarm = workspace_root().join("target").join(profile).join("swarm");
    // SAFETY: xtask is single-threaded whenever it builds.
    unsafe { std::env::set_var("SWARM_BIN", &swarm) };
    Ok(swarm)
}

fn run_daemon(release: bool, args: &[String]) -> anyhow::Result<()> {
    setup::run()?;
    require_root("swarm daemon")?;
    let swarm = build_swarm(release)?;
    let mut full = vec!["daemon".to_owned()];
    full.extend_from_slice(args);
    use std::os::unix::process::CommandExt as _;
    let err = std::process::Command::new(&swarm).args(&full).exec();
    Err(anyhow::anyhow!("cannot exec {}: {err}", swarm.display()))
}

fn require_root(what: &str) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!("{what} needs root (network namespaces, eBPF): run it with sudo");
    }
    Ok(())
}
