//! `swarm stack ...`: a compose file deployed as a stack, as `docker stack`
//! does it. Everything here goes through the control API's own requests;
//! the objects are told apart by the `com.docker.stack.namespace` label.

use std::{collections::BTreeSet, path::PathBuf};

use clap::{Args, Subcommand, ValueEnum};

use super::{
    FormatArgs, call,
    listing::{self, FilterArgs},
    output, registry_login,
};
use crate::{
    api::{
        control::{PayloadCreateRequest, Request, Response, SwarmNetworkCreateRequest},
        filters::Filters,
        mounts::{Opaque, PayloadKind},
    },
    compose,
    stack::{self, NAMESPACE_LABEL},
};

#[derive(Debug, Subcommand)]
pub enum StackCommand {
    /// Deploy a new stack or update an existing one from compose files.
    #[command(alias = "up")]
    Deploy(DeployArgs),
    /// List the stacks.
    #[command(alias = "list")]
    Ls(FormatArgs),
    /// List a stack's services; -f takes id, label, mode, name.
    Services {
        /// Only the service IDs.
        #[arg(short, long)]
        quiet: bool,
        #[command(flatten)]
        filter: FilterArgs,
        #[command(flatten)]
        format: FormatArgs,
        stack: String,
    },
    /// List a stack's tasks; -f takes desired-state, id, name, node.
    Ps {
        #[command(flatten)]
        list: super::service::TaskListArgs,
        stack: String,
    },
    /// Remove stacks: their services, networks, secrets and configs.
    #[command(alias = "remove", alias = "down")]
    Rm {
        #[arg(required = true)]
        stacks: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// A compose file (repeat to merge several, later ones winning).
    #[arg(short = 'c', long = "compose-file", required = true)]
    compose_file: Vec<PathBuf>,
    /// Remove the stack's services the files no longer name.
    #[arg(long)]
    prune: bool,
    /// Pin images to their registry's digest: always, changed or never.
    #[arg(long, value_enum, default_value_t = ResolveImage::Always)]
    resolve_image: ResolveImage,
    /// Send the registry login `docker login` keeps to the nodes.
    #[arg(long)]
    with_registry_auth: bool,
    /// Return at once (the default, as Docker's); `--detach=false` waits
    /// for every service to converge.
    #[arg(short, long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    detach: bool,
    /// Print no progress while waiting (with --detach=false).
    #[arg(short, long)]
    quiet: bool,
    stack: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ResolveImage {
    Always,
    Changed,
    Never,
}

pub fn run(host: &str, command: StackCommand) -> anyhow::Result<()> {
    match command {
        StackCommand::Deploy(args) => deploy(host, args),
        StackCommand::Ls(format) => {
            let mut stacks: std::collections::BTreeMap<String, usize> = Default::default();
            for row in service_rows(host, Filters::default())? {
                if let Some(stack) = row["Labels"][NAMESPACE_LABEL].as_str() {
                    *stacks.entry(stack.to_owned()).or_default() += 1;
                }
            }
            let rows: Vec<serde_json::Value> = stacks
                .into_iter()
                .map(|(name, services)| listing::stack(&name, services))
                .collect();
            output::print_rows(&rows, &listing::STACKS, &format.format)
        }
        StackCommand::Services {
            quiet,
            filter,
            format,
            stack,
        } => {
            let mut filters = filter.filters();
            filters.add("label", format!("{NAMESPACE_LABEL}={stack}"));
            let rows = service_rows(host, filters)?;
            super::service::print_services(&rows, format.format, quiet)
        }
        StackCommand::Ps { list, stack } => {
            let services: Vec<String> = stack_services(host, &stack)?
                .iter()
                .filter_map(|r| r["ID"].as_str().map(str::to_owned))
                .collect();
            if services.is_empty() {
                anyhow::bail!("nothing found in stack: {stack}");
            }
            let request = Request::SwarmServiceTasks {
                services,
                filters: list.filter.filters(),
            };
            let Response::Rows(rows) = call(host, &request)? else {
                anyhow::bail!("the daemon answered `stack ps` with something else");
            };
            list.print(&rows)
        }
        StackCommand::Rm { stacks } => {
            for stack in stacks {
                remove(host, &stack)?;
            }
            Ok(())
        }
    }
}

fn deploy(host: &str, args: DeployArgs) -> anyhow::Result<()> {
    let environment = std::env::vars().collect();
    let loaded = compose::load(&args.compose_file, &environment)?;
    let plan = stack::plan(&args.stack, &loaded)?;
    let mut unsupported = loaded.unsupported.clone();
    unsupported.extend(plan.unsupported.iter().cloned());
    if !unsupported.is_empty() {
        eprintln!("Ignoring unsupported options: {}", unsupported.join(", "));
    }

    let Response::Networks(networks) = call(
        host,
        &Request::SwarmNetworkList {
            filters: Default::default(),
        },
    )?
    else {
        anyhow::bail!("the daemon answered `network ls` with something else");
    };
    let existing: BTreeSet<String> = networks.into_iter().map(|n| n.name).collect();
    for network in &plan.networks {
        if existing.contains(&network.name) {
            continue;
        }
        if network.external {
            anyhow::bail!(
                "network {:?} is declared as external, but could not be found. You need to create a swarm-scoped network before the stack is deployed",
                network.name
            );
        }
        println!("Creating network {}", network.name);
        call(
            host,
            &Request::SwarmNetworkCreate(SwarmNetworkCreateRequest {
                name: network.name.clone(),
                subnet: network.subnet,
                gateway: None,
                mtu: network.mtu,
                attachable: network.attachable,
                labels: network.labels.clone(),
            }),
        )?;
    }
    for (kind, payloads) in [
        (PayloadKind::Secret, &plan.secrets),
        (PayloadKind::Config, &plan.configs),
    ] {
        let Response::Rows(rows) = call(
            host,
            &Request::PayloadList {
                kind,
                filters: Default::default(),
            },
        )?
        else {
            anyhow::bail!(
                "the daemon answered `{} ls` with something else",
                kind.word()
            );
        };
        let existing: BTreeSet<String> = rows
            .iter()
            .filter_map(|r| r["Name"].as_str().map(str::to_owned))
            .collect();
        for payload in payloads {
            if existing.contains(&payload.name) {
                continue;
            }
            let Some(data) = &payload.data else {
                anyhow::bail!("{} not found: {}", kind.word(), payload.name);
            };
            println!("Creating {} {}", kind.word(), payload.name);
            call(
                host,
                &Request::PayloadCreate(PayloadCreateRequest {
                    kind,
                    name: payload.name.clone(),
                    labels: payload.labels.clone(),
                    data: Opaque(data.clone()),
                }),
            )?;
        }
    }
    let before: BTreeSet<String> = stack_services(host, &args.stack)?
        .iter()
        .filter_map(|r| r["Name"].as_str().map(str::to_owned))
        .collect();
    for spec in &plan.services {
        let mut spec = spec.clone();
        if args.with_registry_auth {
            spec.registry_auth = registry_login::for_image(&spec.image)?;
        }
        let verb = if before.contains(&spec.name) {
            "Updating"
        } else {
            "Creating"
        };
        println!("{verb} service {}", spec.name);
        let Response::Service { warnings, .. } = call(
            host,
            &Request::SwarmServiceDeploy {
                resolve_image: args.resolve_image != ResolveImage::Never,
                spec: Box::new(spec),
            },
        )?
        else {
            anyhow::bail!("the daemon answered `stack deploy` with something else");
        };
        for warning in warnings {
            eprintln!("{warning}");
        }
    }
    if args.prune {
        let wanted: BTreeSet<&str> = plan.services.iter().map(|s| s.name.as_str()).collect();
        let gone: Vec<String> = before
            .iter()
            .filter(|name| !wanted.contains(name.as_str()))
            .cloned()
            .collect();
        for name in &gone {
            println!("Removing service {name}");
        }
        if !gone.is_empty() {
            call(host, &Request::SwarmServiceRemove { services: gone })?;
        }
    }
    if !args.detach {
        for spec in &plan.services {
            super::service::converge(host, &spec.name, args.quiet)?;
        }
    }
    Ok(())
}

/// Removes the stack's services, then its networks, secrets and configs
/// (what carries its label; external objects do not).
fn remove(host: &str, stack: &str) -> anyhow::Result<()> {
    let services: Vec<String> = stack_services(host, stack)?
        .iter()
        .filter_map(|r| r["Name"].as_str().map(str::to_owned))
        .collect();
    let mut found = !services.is_empty();
    for name in &services {
        println!("Removing service {name}");
    }
    if !services.is_empty() {
        call(host, &Request::SwarmServiceRemove { services })?;
    }
    for kind in [PayloadKind::Secret, PayloadKind::Config] {
        let Response::Rows(rows) = call(
            host,
            &Request::PayloadList {
                kind,
                filters: Default::default(),
            },
        )?
        else {
            anyhow::bail!(
                "the daemon answered `{} ls` with something else",
                kind.word()
            );
        };
        let names: Vec<String> = rows
            .iter()
            .filter(|r| r["Labels"][NAMESPACE_LABEL] == stack)
            .filter_map(|r| r["Name"].as_str().map(str::to_owned))
            .collect();
        for name in &names {
            println!("Removing {} {name}", kind.word());
        }
        if !names.is_empty() {
            found = true;
            call(
                host,
                &Request::PayloadRemove {
                    kind,
                    references: names,
                },
            )?;
        }
    }
    let Response::Networks(networks) = call(
        host,
        &Request::SwarmNetworkList {
            filters: Default::default(),
        },
    )?
    else {
        anyhow::bail!("the daemon answered `network ls` with something else");
    };
    for network in networks {
        let Response::NetworkInspect(inspect) = call(
            host,
            &Request::SwarmNetworkInspect {
                network: network.id.clone(),
            },
        )?
        else {
            continue;
        };
        if inspect[0]["Labels"][NAMESPACE_LABEL] != stack {
            continue;
        }
        found = true;
        println!("Removing network {}", network.name);
        call(
            host,
            &Request::SwarmNetworkRemove {
                networks: vec![network.id],
            },
        )?;
    }
    if !found {
        println!("Nothing found in stack: {stack}");
    }
    Ok(())
}

fn service_rows(host: &str, filters: Filters) -> anyhow::Result<Vec<serde_json::Value>> {
    let Response::Rows(rows) = call(host, &Request::SwarmServiceList { filters })? else {
        anyhow::bail!("the daemon answered `service ls` with something else");
    };
    Ok(rows)
}

fn stack_services(host: &str, stack: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut filters = Filters::default();
    filters.add("label", format!("{NAMESPACE_LABEL}={stack}"));
    service_rows(host, filters)
}
