//! `swarm ca`, as docker/cli's: the swarm's root CA certificate (PEM), and
//! `--cert-expiry` for the certificates it signs from now on. Rotating the
//! root (`--rotate`, `--ca-cert`, `--ca-key`) is refused by name: it is
//! not built yet.

use clap::Args;

use super::{call, parse_duration};
use crate::api::control::{Request, Response};

#[derive(Debug, Args)]
#[command(after_help = "\
Docker's flags not supported yet (refused, never ignored):
  --rotate                        rotating the root CA: the swarm keeps the root made at init
  --ca-cert, --ca-key             a root CA of your own (they rotate the root)
  --external-ca                   an external CA signing node certificates
")]
pub struct CaArgs {
    /// How long node certificates last from now on, e.g. 2160h (at least 1h).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub cert_expiry: Option<std::time::Duration>,
    /// Do not wait for a root rotation to converge (none runs without --rotate).
    #[arg(short, long)]
    pub detach: bool,
    /// Print only the certificate (there is no progress to show without a
    /// rotation).
    #[arg(short, long)]
    pub quiet: bool,
    #[arg(long, hide = true)]
    rotate: bool,
    #[arg(long, hide = true, value_name = "FILE")]
    ca_cert: Option<String>,
    #[arg(long, hide = true, value_name = "FILE")]
    ca_key: Option<String>,
    #[arg(long, hide = true, value_name = "SPEC")]
    external_ca: Vec<String>,
}

pub fn run(host: &str, args: &CaArgs) -> anyhow::Result<()> {
    if args.rotate || args.ca_cert.is_some() || args.ca_key.is_some() {
        let flag = if args.rotate {
            "--rotate"
        } else if args.ca_cert.is_some() {
            "--ca-cert"
        } else {
            "--ca-key"
        };
        anyhow::bail!(
            "{flag} is not supported by swarm: rotating the root CA is not built yet; the swarm keeps the root CA `swarm init` made"
        );
    }
    if !args.external_ca.is_empty() {
        anyhow::bail!(
            "--external-ca is not supported by swarm: the swarm's own root CA signs node certificates"
        );
    }
    if let Some(expiry) = args.cert_expiry {
        let least = crate::manager::store::MIN_CERT_EXPIRY;
        if expiry < least {
            anyhow::bail!("--cert-expiry {expiry:?} is too short: use at least {least:?}");
        }
        call(
            host,
            &Request::SwarmUpdateSettings {
                heartbeat_millis: None,
                cert_expiry_secs: Some(expiry.as_secs()),
                task_history_limit: None,
                snapshot_interval: None,
                max_snapshots: None,
                autolock: None,
            },
        )?;
    }
    let Response::Json(swarm) = call(host, &Request::SwarmInspect)? else {
        anyhow::bail!("the daemon answered with something else");
    };
    let root = swarm["TLSInfo"]["TrustRoot"].as_str().unwrap_or_default();
    anyhow::ensure!(!root.is_empty(), "the swarm has no root CA certificate");
    print!("{root}");
    if !root.ends_with('\n') {
        println!();
    }
    Ok(())
}
