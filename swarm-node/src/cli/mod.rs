//! The `swarm` command line: Docker's verbs, talking to the local daemon.

mod output;

use std::{net::Ipv4Addr, path::PathBuf};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{
    control::{self, Client, DEFAULT_CONTROL_SOCKET, Request, Response},
    daemon::{self, DaemonConfig},
};

#[derive(Debug, Parser)]
#[command(
    name = "swarm",
    version,
    about = "Docker Swarm mode, rebuilt in Rust with an eBPF data plane",
    propagate_version = true
)]
pub struct Cli {
    /// The daemon to talk to: its control socket as unix:///path.
    #[arg(
        long,
        short = 'H',
        global = true,
        env = "SWARM_HOST",
        default_value = concat!("unix://", "/run/swarm/swarm.sock")
    )]
    pub host: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the node daemon (one per host; needs root).
    Daemon(DaemonArgs),
    /// Show this node's daemon: identity, underlay, data plane.
    Info(FormatArgs),
    /// Inspect what the kernel data plane holds and counts.
    #[command(subcommand)]
    Dataplane(DataplaneCommand),
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// This node's address on the underlay, which other nodes and clients reach it by.
    #[arg(long, value_name = "IP")]
    pub advertise_addr: Ipv4Addr,
    /// Where the node keeps its state.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/swarm")]
    pub data_dir: PathBuf,
    /// The Unix socket the CLI talks to.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONTROL_SOCKET)]
    pub control_socket: PathBuf,
    /// The node's name in the cluster [default: this host's hostname].
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
    /// The underlay interface to attach to [default: the one holding --advertise-addr].
    #[arg(long, value_name = "IF")]
    pub underlay_iface: Option<String>,
    /// UDP port of the VXLAN data path (Docker's --data-path-port).
    #[arg(long, value_name = "PORT", default_value_t = swarm_common::DEFAULT_DATA_PATH_PORT,
          value_parser = clap::value_parser!(u16).range(1024..=49151))]
    pub data_path_port: u16,
}

#[derive(Debug, Subcommand)]
pub enum DataplaneCommand {
    /// Packet counters per protocol and drops per reason, summed over CPUs.
    Stats(FormatArgs),
}

#[derive(Debug, Args)]
pub struct FormatArgs {
    /// Output format: a table for people, or one JSON object per line.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// Runs one command to completion.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Daemon(args) => run_daemon(args),
        Command::Info(args) => {
            let Response::Info(info) = call(&cli.host, &Request::Info)? else {
                anyhow::bail!("the daemon answered `info` with something else");
            };
            output::print_info(&info, args.format)
        }
        Command::Dataplane(DataplaneCommand::Stats(args)) => {
            let Response::DataplaneStats(stats) = call(&cli.host, &Request::DataplaneStats)? else {
                anyhow::bail!("the daemon answered `dataplane stats` with something else");
            };
            output::print_stats(&stats, args.format)
        }
    }
}

fn call(host: &str, request: &Request) -> anyhow::Result<Response> {
    let path = control::parse_host(host)?;
    Ok(Client::connect(&path)?.call(request)?)
}

fn run_daemon(args: DaemonArgs) -> anyhow::Result<()> {
    let hostname = match args.hostname {
        Some(name) => name,
        None => nix::unistd::gethostname()
            .context("reading this host's hostname (or pass --hostname)")?
            .to_string_lossy()
            .into_owned(),
    };
    let config = DaemonConfig {
        advertise_addr: args.advertise_addr,
        data_dir: args.data_dir,
        control_socket: args.control_socket,
        hostname,
        underlay_iface: args.underlay_iface,
        data_path_port: args.data_path_port,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        daemon::run(config, shutdown_signal()).await?;
        Ok(())
    })
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(err) => {
            tracing::error!(error = %err, "cannot listen for SIGTERM; stop with Ctrl-C");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
