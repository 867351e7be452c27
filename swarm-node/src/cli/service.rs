//! `swarm service ...`: Docker's flags, turned into service specs and
//! updates for the leader.

use std::{
    collections::{BTreeMap, HashMap},
    io::Write,
    time::Duration,
};

use clap::{Args, Subcommand};

use super::container::{ContainerArgs, ContainerUpdateArgs};
use super::registry_login;
use super::unsupported;
use super::{
    Format, FormatArgs, InspectFormatArgs, call,
    listing::{self, FilterArgs},
    output, parse_label, print_notes,
};
use crate::api::{
    assignments::{LogLine, tail},
    control::{ContainerUpdate, Request, Response, ServiceUpdateRequest, TaskOutput},
    mounts::{FileReference, Mount},
    specs::{
        Constraint, EndpointMode, FailureAction, FailureRatio, PortConfig, RestartCondition,
        ServiceMode, ServiceSpec, UpdateOrder,
    },
};
use crate::image::ImageSource;

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Create a service; prints its ID once its tasks run (or at once with -d).
    Create(Box<CreateArgs>),
    /// List services; -f takes id, label, mode, name.
    #[command(alias = "list")]
    Ls {
        /// Only the service IDs.
        #[arg(short, long)]
        quiet: bool,
        #[command(flatten)]
        filter: FilterArgs,
        #[command(flatten)]
        format: FormatArgs,
    },
    /// List services' tasks, with their history; -f takes desired-state, id, name, node.
    Ps {
        #[command(flatten)]
        list: TaskListArgs,
        /// Service name or ID (one or more).
        #[arg(required = true)]
        services: Vec<String>,
    },
    /// Show services as JSON shaped like Docker's, or as Docker's text with --pretty.
    Inspect {
        /// Docker's human-readable layout instead of JSON.
        #[arg(long)]
        pretty: bool,
        #[command(flatten)]
        format: InspectFormatArgs,
        #[arg(required = true)]
        services: Vec<String>,
    },
    /// Set the replica count of replicated services: SERVICE=REPLICAS ...
    Scale {
        /// Return at once instead of waiting for the tasks.
        #[arg(short, long)]
        detach: bool,
        #[arg(required = true, value_parser = parse_scale)]
        scales: Vec<(String, u64)>,
    },
    /// Change a service; its tasks are replaced by a rolling update when
    /// their spec changes.
    Update(Box<ServiceUpdateArgs>),
    /// Go back to the spec before the last update.
    Rollback {
        /// Return at once instead of waiting for the tasks.
        #[arg(short, long)]
        detach: bool,
        /// Print no progress while waiting.
        #[arg(short, long)]
        quiet: bool,
        service: String,
    },
    /// Remove services and their tasks.
    Rm {
        #[arg(required = true)]
        services: Vec<String>,
    },
    /// Print the output (stdout and stderr) of a service's tasks, or of one
    /// task, fetched from the nodes that ran them.
    Logs(LogsArgs),
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Keep printing new output (asks the nodes again every second).
    #[arg(short, long)]
    follow: bool,
    /// Only the last N lines of each task's output: a number or `all`.
    #[arg(short = 'n', long, default_value = "all", value_parser = parse_tail)]
    tail: Tail,
    /// Only lines written since a time: a date (e.g. "2013-01-02T13:23:37Z"),
    /// a Unix timestamp, or a time before now (e.g. "42m" for 42 minutes).
    #[arg(long, value_parser = parse_since)]
    since: Option<Since>,
    /// Start each line with the time it was written.
    #[arg(short, long)]
    timestamps: bool,
    /// Show the attributes of each line, as Docker: with --raw, the
    /// swarm's (node, service and task IDs); else those other than these,
    /// which swarm's logs have none of.
    #[arg(long)]
    details: bool,
    /// Leave the task ID out of each line's prefix.
    #[arg(long)]
    no_task_ids: bool,
    /// Print whole task IDs.
    #[arg(long)]
    no_trunc: bool,
    /// Node IDs instead of host names in the prefix.
    #[arg(long)]
    no_resolve: bool,
    /// The output alone, without a prefix.
    #[arg(long)]
    raw: bool,
    /// Service name or ID, or a task ID.
    service: String,
}

/// `--since`: nanoseconds since the epoch.
#[derive(Clone, Copy, Debug)]
pub struct Since(i64);

fn parse_since(text: &str) -> Result<Since, String> {
    crate::log_time::parse_since(text, crate::log_time::now_nanos())
        .map(Since)
        .map_err(|err| format!("{err}; for example --since 2013-01-02T13:23:37Z or --since 42m"))
}

/// `--tail`: `all` or a line count.
#[derive(Clone, Copy, Debug)]
pub struct Tail(Option<u64>);

fn parse_tail(text: &str) -> Result<Tail, String> {
    if text == "all" {
        return Ok(Tail(None));
    }
    text.parse().map(|n| Tail(Some(n))).map_err(|_| {
        format!("--tail takes a number of lines or `all`, not `{text}`; for example --tail 20")
    })
}

#[derive(Debug, Args)]
#[command(after_help = unsupported::SERVICE_AFTER_HELP)]
pub struct CreateArgs {
    /// The service's name [default: a generated one].
    #[arg(long)]
    name: Option<String>,
    /// Keep the image's tag as given instead of pinning it to the digest
    /// its registry names now (every node then pulls the tag itself).
    #[arg(long)]
    no_resolve_image: bool,
    /// Send the registry login `docker login` keeps (~/.docker/config.json,
    /// or $DOCKER_CONFIG/config.json) to the nodes that run the tasks.
    #[arg(long)]
    with_registry_auth: bool,
    /// replicated, global, replicated-job (tasks that run to completion) or
    /// global-job (one such task on every node).
    #[arg(long, default_value = "replicated", value_parser = ["replicated", "global", "replicated-job", "global-job"])]
    mode: String,
    /// Number of tasks (replicated mode), or of completions (replicated-job
    /// mode) [default: 1].
    #[arg(long)]
    replicas: Option<u64>,
    /// Job tasks that run at once (replicated-job mode) [default: --replicas].
    #[arg(long, value_name = "N")]
    max_concurrent: Option<u64>,
    /// Publish a port: PUBLISHED:TARGET[/PROTO], TARGET, or
    /// published=P,target=T,protocol=tcp|udp,mode=ingress|host.
    #[arg(short, long, value_parser = parse_port)]
    publish: Vec<PortConfig>,
    /// Attach to a network: NAME (or ID), or name=NAME,alias=A[,alias=B]
    /// for more names the service answers to there (repeat for more
    /// networks).
    #[arg(long, value_parser = parse_network)]
    network: Vec<(String, Vec<String>)>,
    #[arg(long, value_enum, default_value = "vip")]
    endpoint_mode: EndpointMode,
    /// Placement constraint, e.g. node.role==worker, node.labels.zone!=a or
    /// engine.labels.disk==ssd (a daemon's --label).
    #[arg(long, value_parser = parse_constraint)]
    constraint: Vec<Constraint>,
    /// Environment variable KEY=VALUE.
    #[arg(short, long)]
    env: Vec<String>,
    /// Service label KEY=VALUE.
    #[arg(short, long, value_parser = parse_label)]
    label: Vec<(String, String)>,
    /// Spread tasks evenly over a node attribute's values:
    /// spread=node.labels.KEY or spread=engine.labels.KEY (repeat for more,
    /// in order).
    #[arg(long, value_name = "PREF", value_parser = parse_placement_pref)]
    placement_pref: Vec<String>,
    /// A secret the tasks see at /run/secrets/NAME: NAME, or
    /// source=NAME,target=FILE,uid=N,gid=N,mode=0400.
    #[arg(long, value_name = "SECRET", value_parser = FileReference::parse)]
    secret: Vec<FileReference>,
    /// A config the tasks see at /NAME: NAME, or
    /// source=NAME,target=/PATH,uid=N,gid=N,mode=0444.
    #[arg(long, value_name = "CONFIG", value_parser = FileReference::parse)]
    config: Vec<FileReference>,
    /// type=bind|volume|tmpfs,source=..,target=..[,readonly][,volume-nocopy]
    /// [,volume-label=K=V][,tmpfs-size=64m][,tmpfs-mode=1777].
    #[arg(long, value_name = "MOUNT", value_parser = Mount::parse)]
    mount: Vec<Mount>,
    #[command(flatten)]
    policies: PolicyArgs,
    #[command(flatten)]
    container: ContainerArgs,
    #[command(flatten)]
    unsupported: unsupported::UnsupportedServiceArgs,
    /// Return at once instead of waiting for the tasks to run (a job's to
    /// complete).
    #[arg(short, long)]
    detach: bool,
    /// Print no progress while waiting (only the service ID).
    #[arg(short, long)]
    quiet: bool,
    /// An image from a registry (`nginx:alpine`, `HOST:PORT/NAME:TAG`,
    /// `NAME@sha256:...`), pulled by each node that runs a task of it;
    /// with the native runtime also `host` (the host's filesystem) or a
    /// root directory by its absolute path.
    image: String,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// Flags `create` and `update` share.
#[derive(Debug, Args, Default)]
pub struct PolicyArgs {
    #[arg(long)]
    hostname: Option<String>,
    /// Replace the image's ENTRYPOINT (split on spaces); its CMD is not
    /// used then, as in Docker.
    #[arg(long)]
    entrypoint: Option<String>,
    /// The directory the command runs in [default: the image's WorkingDir, or /].
    #[arg(short, long, value_name = "DIR")]
    workdir: Option<String>,
    /// Who the command runs as: NAME, UID, NAME:GROUP or UID:GID, looked up in
    /// the image [default: the image's User, or root].
    #[arg(short, long, value_name = "USER")]
    user: Option<String>,
    /// any, on-failure or none [default: any; on-failure for jobs].
    #[arg(long, value_enum)]
    restart_condition: Option<RestartCondition>,
    /// Wait between restarts, e.g. 5s or 500ms [default: 5s].
    #[arg(long, value_parser = parse_duration)]
    restart_delay: Option<Duration>,
    /// Give up after this many restarts (0: never) [default: 0].
    #[arg(long)]
    restart_max_attempts: Option<u64>,
    /// Only restarts within this window count toward --restart-max-attempts,
    /// e.g. 1m (0s: all count) [default: 0s].
    #[arg(long, value_parser = parse_duration)]
    restart_window: Option<Duration>,
    /// Tasks updated at once (0: all) [default: 1].
    #[arg(long)]
    update_parallelism: Option<u64>,
    /// Wait between update batches [default: 0s].
    #[arg(long, value_parser = parse_duration)]
    update_delay: Option<Duration>,
    /// pause, continue or rollback [default: pause].
    #[arg(long, value_enum)]
    update_failure_action: Option<FailureAction>,
    /// How long a new task must run to count as updated [default: 5s].
    #[arg(long, value_parser = parse_duration)]
    update_monitor: Option<Duration>,
    /// stop-first or start-first [default: stop-first].
    #[arg(long, value_enum)]
    update_order: Option<UpdateOrder>,
    /// Share of updated tasks that may fail (or end) within the monitor
    /// period before the failure action applies, 0 to 1 [default: 0].
    #[arg(long, value_name = "RATIO")]
    update_max_failure_ratio: Option<FailureRatio>,
    /// Tasks a rollback replaces at once (0: all) [default: as --update-parallelism].
    #[arg(long, value_name = "N")]
    rollback_parallelism: Option<u64>,
    /// Wait between rollback batches [default: as --update-delay].
    #[arg(long, value_parser = parse_duration)]
    rollback_delay: Option<Duration>,
    /// When a rolled-back task fails: pause or continue [default: pause].
    #[arg(long, value_parser = parse_rollback_action)]
    rollback_failure_action: Option<FailureAction>,
    /// How long a task must run to count as rolled back [default: as --update-monitor].
    #[arg(long, value_parser = parse_duration)]
    rollback_monitor: Option<Duration>,
    /// stop-first or start-first [default: as --update-order].
    #[arg(long, value_enum)]
    rollback_order: Option<UpdateOrder>,
    /// Share of rolled-back tasks that may fail before the failure action
    /// applies, 0 to 1 [default: as --update-max-failure-ratio].
    #[arg(long, value_name = "RATIO")]
    rollback_max_failure_ratio: Option<FailureRatio>,
    /// CPUs the task may use, e.g. 0.5.
    #[arg(long, value_parser = parse_cpus)]
    limit_cpu: Option<u64>,
    /// Memory the task may use, e.g. 64M or 1G.
    #[arg(long, value_parser = parse_bytes)]
    limit_memory: Option<u64>,
    /// CPUs to reserve on the node.
    #[arg(long, value_parser = parse_cpus)]
    reserve_cpu: Option<u64>,
    /// Memory to reserve on the node.
    #[arg(long, value_parser = parse_bytes)]
    reserve_memory: Option<u64>,
    /// Time to wait after SIGTERM before killing [default: 10s].
    #[arg(long, value_parser = parse_duration)]
    stop_grace_period: Option<Duration>,
    /// Command run inside each task (with sh -c) to check its health; a
    /// task is Running (and gets traffic) once it passes.
    #[arg(long, value_name = "COMMAND")]
    health_cmd: Option<String>,
    /// Time between health checks [default: 30s].
    #[arg(long, value_parser = parse_duration)]
    health_interval: Option<Duration>,
    /// Longest a health check may run [default: 30s].
    #[arg(long, value_parser = parse_duration)]
    health_timeout: Option<Duration>,
    /// Failures in a row that make a task unhealthy [default: 3].
    #[arg(long)]
    health_retries: Option<u32>,
    /// Time after start when failures do not count [default: 0s].
    #[arg(long, value_parser = parse_duration)]
    health_start_period: Option<Duration>,
    /// At most this many of the service's tasks on one node (0: no limit).
    #[arg(long, value_name = "N")]
    replicas_max_per_node: Option<u64>,
    /// No health check (drops one set before).
    #[arg(long, conflicts_with = "health_cmd")]
    no_healthcheck: bool,
    /// Processes the task may hold at once (0: no limit).
    #[arg(long, value_name = "N")]
    limit_pids: Option<u64>,
    /// Mount the image's root filesystem read-only (--read-only=false undoes it).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    read_only: Option<bool>,
    /// Run an init in the task that reaps orphans and forwards signals (the
    /// native runtime always runs one; the docker runtime does by default).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    init: Option<bool>,
    /// The signal that stops a task, e.g. SIGINT or SIGQUIT [default: SIGTERM].
    #[arg(long, value_name = "SIGNAL", value_parser = parse_stop_signal)]
    stop_signal: Option<String>,
    /// Container isolation: only `default` exists for Linux tasks (process
    /// and hyperv are Windows settings).
    #[arg(long, value_name = "KIND", value_parser = parse_isolation)]
    isolation: Option<String>,
}

fn parse_rollback_action(text: &str) -> Result<FailureAction, String> {
    match text {
        "pause" => Ok(FailureAction::Pause),
        "continue" => Ok(FailureAction::Continue),
        other => Err(format!(
            "--rollback-failure-action {other}: a rollback can pause or continue when a task fails (there is no rollback of a rollback)"
        )),
    }
}

fn parse_stop_signal(text: &str) -> Result<String, String> {
    crate::api::specs::signal_number(text).map(|_| text.to_owned())
}

fn parse_isolation(text: &str) -> Result<String, String> {
    match text {
        "default" => Ok(text.to_owned()),
        other => Err(format!(
            "--isolation {other}: process and hyperv isolation are Windows container settings; swarm runs Linux tasks, which take only `default` (leave the flag out)"
        )),
    }
}

#[derive(Debug, Args)]
#[command(after_help = unsupported::SERVICE_AFTER_HELP)]
pub struct ServiceUpdateArgs {
    #[arg(long)]
    image: Option<String>,
    /// Keep the new image's tag as given instead of pinning it to the
    /// digest its registry names now.
    #[arg(long)]
    no_resolve_image: bool,
    /// Send the registry login `docker login` keeps to the nodes.
    #[arg(long)]
    with_registry_auth: bool,
    /// Replace the command's arguments (one string, split on spaces).
    #[arg(long)]
    args: Option<String>,
    /// Number of tasks, or of completions of a replicated job.
    #[arg(long)]
    replicas: Option<u64>,
    /// Job tasks that run at once (replicated-job mode).
    #[arg(long, value_name = "N")]
    max_concurrent: Option<u64>,
    #[arg(long)]
    env_add: Vec<String>,
    #[arg(long)]
    env_rm: Vec<String>,
    #[arg(long, value_parser = parse_port)]
    publish_add: Vec<PortConfig>,
    /// Target port to unpublish.
    #[arg(long)]
    publish_rm: Vec<u16>,
    #[arg(long)]
    network_add: Vec<String>,
    #[arg(long)]
    network_rm: Vec<String>,
    #[arg(long, value_parser = parse_constraint)]
    constraint_add: Vec<Constraint>,
    #[arg(long)]
    constraint_rm: Vec<String>,
    #[arg(long, value_parser = parse_label)]
    label_add: Vec<(String, String)>,
    #[arg(long)]
    label_rm: Vec<String>,
    /// Add a spread preference (as --placement-pref of `create`).
    #[arg(long, value_name = "PREF", value_parser = parse_placement_pref)]
    placement_pref_add: Vec<String>,
    /// Remove a spread preference.
    #[arg(long, value_name = "PREF", value_parser = parse_placement_pref)]
    placement_pref_rm: Vec<String>,
    /// Add a secret (as --secret of `create`).
    #[arg(long, value_name = "SECRET", value_parser = FileReference::parse)]
    secret_add: Vec<FileReference>,
    /// Remove a secret, by name.
    #[arg(long, value_name = "NAME")]
    secret_rm: Vec<String>,
    /// Add a config (as --config of `create`).
    #[arg(long, value_name = "CONFIG", value_parser = FileReference::parse)]
    config_add: Vec<FileReference>,
    /// Remove a config, by name.
    #[arg(long, value_name = "NAME")]
    config_rm: Vec<String>,
    /// Add a mount (as --mount of `create`); it replaces one at the same target.
    #[arg(long, value_name = "MOUNT", value_parser = Mount::parse)]
    mount_add: Vec<Mount>,
    /// Remove a mount, by its target.
    #[arg(long, value_name = "TARGET")]
    mount_rm: Vec<String>,
    #[command(flatten)]
    policies: PolicyArgs,
    #[command(flatten)]
    container: ContainerUpdateArgs,
    #[command(flatten)]
    unsupported: unsupported::UnsupportedServiceArgs,
    /// Replace the tasks even if nothing changed.
    #[arg(long)]
    force: bool,
    /// Roll back to the previous spec.
    #[arg(long)]
    rollback: bool,
    /// Return at once instead of waiting for the tasks.
    #[arg(short, long)]
    detach: bool,
    /// Print no progress while waiting.
    #[arg(short, long)]
    quiet: bool,
    service: String,
}

pub fn run(host: &str, command: ServiceCommand) -> anyhow::Result<()> {
    match command {
        ServiceCommand::Create(args) => create(host, *args),
        ServiceCommand::Ls {
            quiet,
            filter,
            format,
        } => {
            let request = Request::SwarmServiceList {
                filters: filter.filters(),
            };
            let rows = rows(call(host, &request)?)?;
            print_services(&rows, format.format, quiet)
        }
        ServiceCommand::Ps { list, services } => {
            let request = Request::SwarmServiceTasks {
                services,
                filters: list.filter.filters(),
            };
            let rows = rows(call(host, &request)?)?;
            list.print(&rows)
        }
        ServiceCommand::Inspect {
            pretty,
            format,
            services,
        } => {
            format.check_pretty(pretty)?;
            let mut all = Vec::new();
            for service in services {
                let Response::Json(serde_json::Value::Array(items)) =
                    call(host, &Request::SwarmServiceInspect { service })?
                else {
                    anyhow::bail!("the daemon answered `service inspect` with something else");
                };
                all.extend(items);
            }
            if pretty {
                print!("{}", super::inspect::pretty_services(&all));
                Ok(())
            } else {
                format.print(&all)
            }
        }
        ServiceCommand::Scale { detach, scales } => {
            print_notes(call(
                host,
                &Request::SwarmServiceScale {
                    scales: scales.clone(),
                },
            )?)?;
            if !detach {
                for (service, _) in &scales {
                    converge(host, service, false)?;
                }
            }
            Ok(())
        }
        ServiceCommand::Update(args) => update(host, *args),
        ServiceCommand::Rollback {
            detach,
            quiet,
            service,
        } => {
            print_notes(call(
                host,
                &Request::SwarmServiceRollback {
                    service: service.clone(),
                },
            )?)?;
            if !detach {
                converge(host, &service, quiet)?;
            }
            Ok(())
        }
        ServiceCommand::Rm { services } => {
            print_notes(call(host, &Request::SwarmServiceRemove { services })?)
        }
        ServiceCommand::Logs(args) => logs(host, &args),
    }
}

/// How often `service logs --follow` asks the nodes again.
const FOLLOW_PERIOD: Duration = Duration::from_secs(1);

fn logs(host: &str, args: &LogsArgs) -> anyhow::Result<()> {
    // Lines of each task's output already printed (when following): a
    // task's log only grows, and so do the lines of it since a time.
    let mut printed: HashMap<String, usize> = HashMap::new();
    let mut first = true;
    loop {
        let request = Request::SwarmServiceLogs {
            reference: args.service.clone(),
            // A follower needs whole outputs to see what is new.
            tail: if args.follow { None } else { args.tail.0 },
            since_nanos: args.since.map(|since| since.0),
        };
        let Response::Logs { tasks, unanswered } = call(host, &request)? else {
            anyhow::bail!("the daemon answered `service logs` with something else");
        };
        if first && !unanswered.is_empty() {
            eprintln!(
                "warning: no answer from {}: the output of their tasks is missing",
                unanswered.join(", ")
            );
        }
        let prefixes: Vec<String> = tasks.iter().map(|t| log_prefix(t, args)).collect();
        let width = prefixes.iter().map(String::len).max().unwrap_or(0);
        let mut out = std::io::stdout().lock();
        for (task, prefix) in tasks.iter().zip(&prefixes) {
            let seen = printed.entry(task.task_id.clone()).or_insert(0);
            // Output shorter than what was printed: the task was replaced
            // under the same ID (never, in practice) or its log rotated.
            let new = task.lines.get(*seen..).unwrap_or(&task.lines);
            let new = if first && args.follow {
                tail(new, args.tail.0)
            } else {
                new
            };
            *seen = task.lines.len();
            let details = task.details();
            for line in new {
                writeln!(out, "{}", log_line(line, prefix, width, &details, args))?;
            }
        }
        out.flush()?;
        if !args.follow {
            return Ok(());
        }
        first = false;
        std::thread::sleep(FOLLOW_PERIOD);
    }
}

/// A line as `docker service logs` prints it: `[<time> ]<prefix>    |
/// [<details> ]<text>`, or with --raw as the engine sends it: `[<time>
/// ][<details> ]<text>`. Docker's CLI takes the swarm's attributes out of
/// the details it prints in front of a prefix (the prefix says as much),
/// leaving an empty list and its space.
fn log_line(line: &LogLine, prefix: &str, width: usize, details: &str, args: &LogsArgs) -> String {
    let mut shown = String::new();
    if args.timestamps {
        shown.push_str(&crate::log_time::stamp(line.at_nanos));
        shown.push(' ');
    }
    if !args.raw {
        shown.push_str(&format!("{prefix:width$}    | "));
    }
    if args.details {
        if args.raw {
            shown.push_str(details);
        }
        shown.push(' ');
    }
    shown.push_str(&line.text);
    shown
}

/// Docker's prefix: `<service>.<slot>.<task id>@<node>`.
fn log_prefix(task: &TaskOutput, args: &LogsArgs) -> String {
    let node = if args.no_resolve {
        &task.node_id
    } else {
        &task.node
    };
    if args.no_task_ids {
        return format!("{}@{node}", task.name);
    }
    let id: String = if args.no_trunc {
        task.task_id.clone()
    } else {
        task.task_id.chars().take(12).collect()
    };
    format!("{}.{id}@{node}", task.name)
}

fn rows(response: Response) -> anyhow::Result<Vec<serde_json::Value>> {
    match response {
        Response::Rows(rows) => Ok(rows),
        _ => anyhow::bail!("the daemon answered with something else"),
    }
}

fn create(host: &str, args: CreateArgs) -> anyhow::Result<()> {
    args.unsupported.refuse()?;
    ImageSource::parse(&args.image)?;
    let mode = service_mode(&args.mode, args.replicas, args.max_concurrent)?;
    let name = args.name.unwrap_or_else(generated_name);
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if !valid {
        anyhow::bail!(
            "--name {name:?}: a service name is 1-63 letters, digits, '-' or '_', starting with a letter or digit"
        );
    }
    if args.endpoint_mode == EndpointMode::Dnsrr
        && args
            .publish
            .iter()
            .any(|p| p.mode == crate::dataplane::PublishMode::Ingress)
    {
        anyhow::bail!(
            "--endpoint-mode dnsrr: ports published in ingress mode need a VIP; publish with mode=host or use --endpoint-mode vip"
        );
    }
    for env in &args.env {
        if !env.contains('=') || env.starts_with('=') {
            anyhow::bail!("--env {env:?}: write it as KEY=VALUE");
        }
    }
    // --env wins over --env-file, as in Docker: later values of a key win.
    let mut env = args.container.env_files()?;
    let key = |var: &str| var.split('=').next().unwrap_or(var).to_owned();
    for var in args.env {
        env.retain(|earlier| key(earlier) != key(&var));
        env.push(var);
    }
    let policies = &args.policies;
    let mut spec = ServiceSpec {
        labels: args.label.into_iter().collect::<BTreeMap<_, _>>(),
        args: args.command,
        env,
        container: args.container.settings(),
        networks: args.network.iter().map(|(name, _)| name.clone()).collect(),
        aliases: args
            .network
            .iter()
            .filter(|(_, aliases)| !aliases.is_empty())
            .cloned()
            .collect(),
        endpoint_mode: args.endpoint_mode,
        ports: args.publish,
        constraints: args.constraint,
        placement_prefs: args.placement_pref,
        secrets: args.secret,
        configs: args.config,
        mounts: args.mount,
        ..ServiceSpec::new(name.clone(), args.image, mode)
    };
    let policy = policies.to_update(String::new());
    policy.apply(&mut spec).map_err(anyhow::Error::msg)?;
    // A rollback goes as the update went, unless --rollback-* say otherwise.
    spec.rollback = spec.update.clone();
    policy.apply_rollback(&mut spec);
    if args.with_registry_auth {
        spec.registry_auth = registry_login::for_image(&spec.image)?;
    }
    let request = Request::SwarmServiceCreate {
        spec: Box::new(spec),
        resolve_image: !args.no_resolve_image,
    };
    let id = print_service(call(host, &request)?)?;
    if !args.detach {
        converge(host, &id, args.quiet)?;
    }
    Ok(())
}

/// `--mode` with `--replicas` and `--max-concurrent`, checked as Docker
/// checks them.
fn service_mode(
    mode: &str,
    replicas: Option<u64>,
    max_concurrent: Option<u64>,
) -> anyhow::Result<ServiceMode> {
    let replicated = matches!(mode, "replicated" | "replicated-job");
    if replicas.is_some() && !replicated {
        anyhow::bail!("replicas can only be used with replicated or replicated-job mode");
    }
    if max_concurrent.is_some() && mode != "replicated-job" {
        anyhow::bail!("max-concurrent can only be used with replicated-job mode");
    }
    Ok(match mode {
        "global" => ServiceMode::Global,
        "global-job" => ServiceMode::GlobalJob,
        "replicated-job" => ServiceMode::ReplicatedJob {
            max_concurrent: max_concurrent.or(replicas).unwrap_or(1),
            total_completions: replicas.unwrap_or(1),
        },
        _ => ServiceMode::Replicated {
            replicas: replicas.unwrap_or(1),
        },
    })
}

fn update(host: &str, args: ServiceUpdateArgs) -> anyhow::Result<()> {
    args.unsupported.refuse()?;
    if args.rollback {
        print_notes(call(
            host,
            &Request::SwarmServiceRollback {
                service: args.service.clone(),
            },
        )?)?;
    } else {
        let mut request = args.policies.to_update(args.service.clone());
        request.container = ContainerUpdate {
            read_only: request.container.read_only,
            init: request.container.init,
            stop_signal: request.container.stop_signal.clone(),
            ..args.container.update()
        };
        if let Some(image) = &args.image {
            ImageSource::parse(image)?;
        }
        request.image = args.image;
        request.args = args
            .args
            .map(|a| a.split_whitespace().map(str::to_owned).collect());
        request.replicas = args.replicas;
        request.max_concurrent = args.max_concurrent;
        request.env_add = args.env_add;
        request.env_rm = args.env_rm;
        request.publish_add = args.publish_add;
        request.publish_rm = args.publish_rm;
        request.network_add = args.network_add;
        request.network_rm = args.network_rm;
        request.constraint_add = args.constraint_add;
        request.constraint_rm = args.constraint_rm;
        request.label_add = args.label_add;
        request.label_rm = args.label_rm;
        request.placement_pref_add = args.placement_pref_add;
        request.placement_pref_rm = args.placement_pref_rm;
        request.secret_add = args.secret_add;
        request.secret_rm = args.secret_rm;
        request.config_add = args.config_add;
        request.config_rm = args.config_rm;
        request.mount_add = args.mount_add;
        request.mount_rm = args.mount_rm;
        request.force = args.force;
        request.no_resolve_image = args.no_resolve_image;
        if args.with_registry_auth {
            let service = call(
                host,
                &Request::SwarmServiceInspect {
                    service: args.service.clone(),
                },
            )?;
            let image = match (&request.image, service) {
                (Some(image), _) => image.clone(),
                (None, Response::Json(json)) => {
                    json[0]["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned()
                }
                _ => anyhow::bail!("the daemon answered `service inspect` with something else"),
            };
            request.registry_auth = registry_login::for_image(&image)?;
        }
        print_service(call(host, &Request::SwarmServiceUpdate(Box::new(request)))?)?;
    }
    if !args.detach {
        converge(host, &args.service, args.quiet)?;
    }
    Ok(())
}

fn split_words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

/// A created or updated service's ID on stdout, warnings on stderr.
fn print_service(response: Response) -> anyhow::Result<String> {
    let Response::Service { id, warnings } = response else {
        anyhow::bail!("the daemon answered with something else");
    };
    for warning in warnings {
        eprintln!("{warning}");
    }
    println!("{id}");
    Ok(id)
}

impl PolicyArgs {
    fn to_update(&self, service: String) -> ServiceUpdateRequest {
        let millis = |d: Option<Duration>| d.map(|d| d.as_millis() as u64);
        ServiceUpdateRequest {
            hostname: self.hostname.clone(),
            entrypoint: self.entrypoint.as_deref().map(split_words),
            workdir: self.workdir.clone(),
            user: self.user.clone(),
            service,
            limit_cpu: self.limit_cpu,
            limit_memory: self.limit_memory,
            reserve_cpu: self.reserve_cpu,
            reserve_memory: self.reserve_memory,
            restart_condition: self.restart_condition,
            restart_delay_millis: millis(self.restart_delay),
            restart_max_attempts: self.restart_max_attempts,
            restart_window_millis: millis(self.restart_window),
            update_parallelism: self.update_parallelism,
            update_delay_millis: millis(self.update_delay),
            update_failure_action: self.update_failure_action,
            update_monitor_millis: millis(self.update_monitor),
            update_order: self.update_order,
            update_max_failure_ratio: self.update_max_failure_ratio,
            rollback_max_failure_ratio: self.rollback_max_failure_ratio,
            rollback_parallelism: self.rollback_parallelism,
            rollback_delay_millis: millis(self.rollback_delay),
            rollback_failure_action: self.rollback_failure_action,
            rollback_monitor_millis: millis(self.rollback_monitor),
            rollback_order: self.rollback_order,
            stop_grace_millis: millis(self.stop_grace_period),
            health_cmd: self.health_cmd.clone(),
            health_interval_millis: millis(self.health_interval),
            health_timeout_millis: millis(self.health_timeout),
            health_retries: self.health_retries,
            health_start_period_millis: millis(self.health_start_period),
            no_healthcheck: self.no_healthcheck,
            max_replicas_per_node: self.replicas_max_per_node,
            limit_pids: self.limit_pids,
            container: ContainerUpdate {
                read_only: self.read_only,
                init: self.init,
                stop_signal: self.stop_signal.clone(),
                ..ContainerUpdate::default()
            },
            ..ServiceUpdateRequest::default()
        }
    }
}

/// `service ls` (and `stack services`): Docker's columns, or IDs only.
pub(super) fn print_services(
    rows: &[serde_json::Value],
    format: Format,
    quiet: bool,
) -> anyhow::Result<()> {
    let contexts: Vec<_> = rows.iter().map(listing::service).collect();
    let format = format.or_quiet(quiet, "ID");
    output::print_listing(rows, &contexts, &listing::SERVICES, &format)
}

/// `service ps` (and `node ps`, `stack ps`): IDs and errors cut short
/// unless `no_trunc`, or IDs only.
/// The flags of every task listing: `service ps`, `node ps`, `stack ps`.
#[derive(Debug, Args)]
pub struct TaskListArgs {
    /// Only the task IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Whole IDs and errors (a table cuts them short).
    #[arg(long)]
    pub no_trunc: bool,
    /// Show service and node IDs instead of their names.
    #[arg(long)]
    pub no_resolve: bool,
    #[command(flatten)]
    pub filter: FilterArgs,
    #[command(flatten)]
    pub format: FormatArgs,
}

impl TaskListArgs {
    /// Prints the daemon's task rows as asked.
    pub fn print(self, rows: &[serde_json::Value]) -> anyhow::Result<()> {
        let contexts: Vec<_> = rows
            .iter()
            .map(|row| listing::task(row, self.no_trunc, self.no_resolve))
            .collect();
        let format = self.format.format.or_quiet(self.quiet, "ID");
        output::print_listing(rows, &contexts, &listing::TASKS, &format)
    }
}

/// How long `create`, `scale` and `update` wait for the tasks to converge.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(120);

/// Waits until the service's tasks all run at its current spec (Docker's
/// progress display, as lines on stderr).
/// Waits until `service` runs as its spec asks (a job: completes), showing
/// Docker's progress on stderr unless `quiet`.
pub(super) fn converge(host: &str, service: &str, quiet: bool) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + CONVERGE_TIMEOUT;
    let mut stderr: Box<dyn Write> = if quiet {
        Box::new(std::io::sink())
    } else {
        Box::new(std::io::stderr())
    };
    let mut last = String::new();
    loop {
        let services = rows(call(
            host,
            &Request::SwarmServiceList {
                filters: Default::default(),
            },
        )?)?;
        let row = services
            .iter()
            .find(|r| r["ID"] == service || r["Name"] == service)
            .ok_or_else(|| anyhow::anyhow!("service {service} not found"))?;
        let replicas = row["Replicas"].as_str().unwrap_or("0/0").to_owned();
        if row["Mode"].as_str().is_some_and(|m| m.ends_with(" job")) {
            if job_complete(&replicas, &mut last, &mut stderr)? {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "job {service} did not complete within {CONVERGE_TIMEOUT:?} ({replicas}): see `swarm service ps {service}`"
                );
            }
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        let Response::Json(inspect) = call(
            host,
            &Request::SwarmServiceInspect {
                service: service.to_owned(),
            },
        )?
        else {
            anyhow::bail!("the daemon answered `service inspect` with something else");
        };
        let update_state = inspect[0]["UpdateStatus"]["State"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let (running, wanted) = replicas.split_once('/').unwrap_or(("0", "0"));
        // `2/3 (max 1 per node)`: the count is the first word.
        let wanted = wanted.split(' ').next().unwrap_or("0");
        let updating = matches!(update_state.as_str(), "updating" | "rollback_started");
        let mut line = format!("overall progress: {running} out of {wanted} tasks");
        for slot in slot_lines(host, service, wanted)? {
            line.push('\n');
            line.push_str(&slot);
        }
        if line != last {
            writeln!(stderr, "{line}")?;
            last = line;
        }
        if running == wanted && !updating {
            writeln!(stderr, "verify: Service {service} converged")?;
            return Ok(());
        }
        if matches!(update_state.as_str(), "paused" | "rollback_paused") {
            let message = inspect[0]["UpdateStatus"]["Message"].as_str().unwrap_or("");
            anyhow::bail!("update of {service} paused: {message}");
        }
        if std::time::Instant::now() >= deadline {
            anyhow::bail!(
                "service {service} did not converge within {CONVERGE_TIMEOUT:?} ({running} of {wanted} tasks running): see `swarm service ps {service}`"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A job's progress from its REPLICAS (`1/2 (3/5 completed)`), as
/// Docker's lines on stderr (when they change); whether it is complete.
fn job_complete(replicas: &str, last: &mut String, stderr: &mut dyn Write) -> anyhow::Result<bool> {
    let (active, completions) = replicas
        .trim_end_matches(" completed)")
        .split_once(" (")
        .unwrap_or((replicas, "0/0"));
    let (completed, total) = completions.split_once('/').unwrap_or(("0", "0"));
    let done = completed == total && total != "0";
    let line = format!(
        "job progress: {completed} out of {total} complete\nactive tasks: {} out of {} tasks",
        active.split('/').next().unwrap_or("0"),
        active.split('/').nth(1).unwrap_or("0"),
    );
    if line != *last {
        writeln!(stderr, "{line}")?;
        *last = line;
    }
    if done {
        writeln!(stderr, "verify: Job complete")?;
    }
    Ok(done)
}

/// Docker's line per slot under the overall progress: `2/4: running`, or
/// the task's error.
fn slot_lines(host: &str, service: &str, wanted: &str) -> anyhow::Result<Vec<String>> {
    let tasks = rows(call(
        host,
        &Request::SwarmServiceTasks {
            services: vec![service.to_owned()],
            filters: Default::default(),
        },
    )?)?;
    let mut lines: Vec<(String, String)> = tasks
        .iter()
        .filter(|t| t["DesiredState"] == "Running")
        .map(|t| {
            let slot = t["Name"]
                .as_str()
                .and_then(|name| name.rsplit('.').next())
                .unwrap_or("?")
                .to_owned();
            let error = t["Error"].as_str().unwrap_or_default();
            let state = match error {
                "" => t["CurrentState"]
                    .as_str()
                    .unwrap_or_default()
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_lowercase(),
                error => error.to_owned(),
            };
            (slot, state)
        })
        .collect();
    lines.sort_by_key(|(slot, _)| (slot.parse::<u64>().unwrap_or(u64::MAX), slot.clone()));
    Ok(lines
        .into_iter()
        .map(|(slot, state)| match slot.parse::<u64>() {
            Ok(_) => format!("{slot}/{wanted}: {state}"),
            Err(_) => format!("{slot}: {state}"),
        })
        .collect())
}

fn generated_name() -> String {
    use rand::Rng as _;
    const ADJECTIVES: [&str; 8] = [
        "brave", "calm", "eager", "happy", "jolly", "keen", "quick", "wise",
    ];
    const NAMES: [&str; 8] = [
        "turing", "hopper", "lovelace", "knuth", "ritchie", "thompson", "liskov", "dijkstra",
    ];
    let mut rng = rand::thread_rng();
    format!(
        "{}_{}",
        ADJECTIVES[rng.gen_range(0..ADJECTIVES.len())],
        NAMES[rng.gen_range(0..NAMES.len())]
    )
}

/// `--network`: NAME, or Docker's long form name=NAME,alias=A,...
fn parse_network(text: &str) -> Result<(String, Vec<String>), String> {
    if !text.contains('=') {
        return Ok((text.to_owned(), Vec::new()));
    }
    let mut name = None;
    let mut aliases = Vec::new();
    for field in text.split(',') {
        match field.split_once('=') {
            Some(("name" | "target", value)) if !value.is_empty() => name = Some(value.to_owned()),
            Some(("alias", value)) if !value.is_empty() => aliases.push(value.to_owned()),
            _ => {
                return Err(format!(
                    "--network {text:?}: write NAME, or name=NAME,alias=ALIAS (e.g. name=back,alias=db)"
                ));
            }
        }
    }
    let name = name.ok_or_else(|| format!("--network {text:?}: name=NAME is missing"))?;
    Ok((name, aliases))
}

fn parse_port(text: &str) -> Result<PortConfig, String> {
    text.parse()
        .map_err(|e: crate::dataplane::PortError| e.to_string())
}

/// `spread=node.labels.zone`: the key, the one strategy Docker has.
fn parse_placement_pref(text: &str) -> Result<String, String> {
    match text.split_once('=') {
        Some(("spread", key))
            if key == "node.id"
                || key == "node.hostname"
                || key.starts_with("node.labels.")
                || key.starts_with("engine.labels.") =>
        {
            Ok(key.to_owned())
        }
        _ => Err(format!(
            "{text:?}: write it as spread=node.labels.KEY or spread=engine.labels.KEY (spread is the only strategy)"
        )),
    }
}

fn parse_constraint(text: &str) -> Result<Constraint, String> {
    text.parse()
        .map_err(|e: crate::api::specs::ConstraintError| e.to_string())
}

fn parse_scale(text: &str) -> Result<(String, u64), String> {
    let (service, replicas) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: write it as SERVICE=REPLICAS"))?;
    let replicas = replicas
        .parse()
        .map_err(|_| format!("{text:?}: REPLICAS must be a whole number"))?;
    Ok((service.to_owned(), replicas))
}

/// Docker's durations: `500ms`, `5s`, `1m30s`, `2h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration (e.g. 500ms, 5s, 1m30s)");
    let mut total = Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (number, tail) = rest.split_at(digits);
        let value: f64 = number.parse().map_err(|_| bad())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let seconds = match unit {
            "ms" => value / 1000.0,
            "s" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            "us" | "µs" => value / 1e6,
            "ns" => value / 1e9,
            _ => return Err(bad()),
        };
        total += Duration::from_secs_f64(seconds);
        rest = tail;
    }
    Ok(total)
}

/// `0.5` CPUs as billionths.
fn parse_cpus(text: &str) -> Result<u64, String> {
    match text.parse::<f64>() {
        Ok(cpus) if cpus > 0.0 && cpus <= 1024.0 => Ok((cpus * 1e9).round() as u64),
        _ => Err(format!("{text:?} is not a number of CPUs (e.g. 0.5)")),
    }
}

/// Docker's memory sizes: `64m`, `1g`, `512k`, `1048576`.
fn parse_bytes(text: &str) -> Result<u64, String> {
    let lower = text.to_ascii_lowercase();
    let trimmed = lower.trim_end_matches('b').trim_end_matches('i');
    let (number, multiplier) = match trimmed.chars().last() {
        Some('k') => (&trimmed[..trimmed.len() - 1], 1u64 << 10),
        Some('m') => (&trimmed[..trimmed.len() - 1], 1 << 20),
        Some('g') => (&trimmed[..trimmed.len() - 1], 1 << 30),
        _ => (trimmed, 1),
    };
    number
        .parse::<f64>()
        .ok()
        .filter(|n| *n > 0.0)
        .map(|n| (n * multiplier as f64) as u64)
        .ok_or_else(|| format!("{text:?} is not a size (e.g. 64M, 1G)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_sizes_and_cpus_parse_like_docker() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("5 parsecs").is_err());
        assert_eq!(parse_bytes("64M"), Ok(64 << 20));
        assert_eq!(parse_bytes("1g"), Ok(1 << 30));
        assert!(parse_bytes("lots").is_err());
        assert_eq!(parse_cpus("0.5"), Ok(500_000_000));
        assert!(parse_cpus("-1").is_err());
    }
}
