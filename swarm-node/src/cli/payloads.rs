//! `swarm secret ...` and `swarm config ...`: the same verbs for both, as
//! in Docker.

use std::io::Read as _;

use anyhow::Context as _;
use clap::Subcommand;

use super::{
    FormatArgs, InspectFormatArgs, call, inspected,
    listing::{self, FilterArgs},
    output, parse_label, print_notes,
};
use crate::api::{
    control::{PayloadCreateRequest, Request, Response},
    mounts::{Opaque, PayloadKind},
};

#[derive(Debug, Subcommand)]
pub enum PayloadCommand {
    /// Create one from a file, or from stdin with `-`; prints its ID.
    Create {
        /// Add a label, KEY=VALUE (repeat for each).
        #[arg(short, long, value_name = "KEY=VALUE", value_parser = parse_label)]
        label: Vec<(String, String)>,
        name: String,
        /// The file holding the data, or `-` for stdin.
        file: String,
    },
    /// List them; -f takes id, label, name.
    #[command(alias = "list")]
    Ls {
        /// Only the IDs.
        #[arg(short, long)]
        quiet: bool,
        #[command(flatten)]
        filter: FilterArgs,
        #[command(flatten)]
        format: FormatArgs,
    },
    /// Show them as JSON, shaped like Docker's (a secret without its data).
    Inspect {
        #[command(flatten)]
        format: InspectFormatArgs,
        #[arg(required = true)]
        references: Vec<String>,
    },
    /// Remove them; refused for one a service uses.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        references: Vec<String>,
    },
}

pub fn run(host: &str, kind: PayloadKind, command: PayloadCommand) -> anyhow::Result<()> {
    let word = kind.word();
    match command {
        PayloadCommand::Create { label, name, file } => {
            let data = if file == "-" {
                let mut data = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut data)
                    .context("reading stdin")?;
                data
            } else {
                std::fs::read(&file).with_context(|| format!("reading {file}"))?
            };
            let request = Request::PayloadCreate(PayloadCreateRequest {
                kind,
                name,
                labels: label,
                data: Opaque(data),
            });
            print_notes(call(host, &request)?)
        }
        PayloadCommand::Ls {
            quiet,
            filter,
            format,
        } => {
            let request = Request::PayloadList {
                kind,
                filters: filter.filters(),
            };
            let Response::Rows(rows) = call(host, &request)? else {
                anyhow::bail!("the daemon answered `{word} ls` with something else");
            };
            let shown = match kind {
                PayloadKind::Secret => &listing::SECRETS,
                PayloadKind::Config => &listing::CONFIGS,
            };
            let contexts: Vec<_> = rows
                .iter()
                .map(|row| listing::payload(row, shown))
                .collect();
            let format = format.format.or_quiet(quiet, "ID");
            output::print_listing(&rows, &contexts, shown, &format)
        }
        PayloadCommand::Inspect { format, references } => {
            let Response::Json(value) = call(host, &Request::PayloadInspect { kind, references })?
            else {
                anyhow::bail!("the daemon answered `{word} inspect` with something else");
            };
            format.print(&inspected(value))
        }
        PayloadCommand::Rm { references } => {
            print_notes(call(host, &Request::PayloadRemove { kind, references })?)
        }
    }
}
