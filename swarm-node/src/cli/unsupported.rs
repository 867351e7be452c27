//! Docker's flags swarm does not support yet. They are parsed (hidden from
//! the option list, named in each command's `--help` instead) only to be
//! refused with the reason, never to be ignored.

use clap::Args;

/// What `service create --help` and `service update --help` say after the
/// options.
pub const SERVICE_AFTER_HELP: &str = "\
Docker's flags not supported yet (refused, never ignored):
  -t, --tty                       tasks run without a terminal
  --log-driver, --log-opt         task output goes to each node's own log, read with `service logs`
  --generic-resource[-add|-rm]    generic resources (GPUs and the like)
  --oom-score-adj                 the OOM killer's preference
  --health-start-interval         a faster check interval during --health-start-period
  --credential-spec               a Windows setting (gMSA); swarm runs Linux tasks
";

/// What `network create --help` says after the options.
pub const NETWORK_CREATE_AFTER_HELP: &str = "\
Docker's flags not supported yet (refused, never ignored):
  --internal                      overlay networks always reach the outside through the node
  --ipv6                          overlay networks are IPv4
  --ip-range, --aux-address       every address of --subnet is the allocator's
  --ipam-driver, --ipam-opt       swarm's own allocator only
  --config-only, --config-from    configuration-only networks
  --ingress                       swarm makes the one ingress network itself
  --scope                         overlay networks are swarm-scoped
";

/// What `swarm init --help` and `swarm update --help` say after the options.
pub const SWARM_AFTER_HELP: &str = "\
Docker's flags not supported yet (refused, never ignored):
  --external-ca                   an external CA signing node certificates
  --data-path-port                set per node here: `swarm daemon --data-path-port`
";

/// Each flag: whether it was given, its name, and why it is refused.
type Given<'a> = (bool, &'a str, &'a str);

fn refuse_first(given: &[Given]) -> anyhow::Result<()> {
    match given.iter().find(|(set, ..)| *set) {
        Some((_, flag, why)) => anyhow::bail!("{flag} is not supported by swarm: {why}"),
        None => Ok(()),
    }
}

/// Hidden flags of `service create` and `service update` that Docker has.
#[derive(Debug, Args, Default)]
pub struct UnsupportedServiceArgs {
    #[arg(short = 't', long, hide = true)]
    tty: bool,
    #[arg(long, hide = true, value_name = "DRIVER")]
    log_driver: Option<String>,
    #[arg(long, hide = true, value_name = "KEY=VALUE")]
    log_opt: Vec<String>,
    #[arg(
        long,
        hide = true,
        alias = "generic-resource-add",
        value_name = "RESOURCE"
    )]
    generic_resource: Vec<String>,
    #[arg(long, hide = true, value_name = "RESOURCE")]
    generic_resource_rm: Vec<String>,
    #[arg(long, hide = true, value_name = "N", allow_hyphen_values = true)]
    oom_score_adj: Option<String>,
    #[arg(long, hide = true, value_name = "DURATION")]
    health_start_interval: Option<String>,
    #[arg(long, hide = true, value_name = "SPEC")]
    credential_spec: Option<String>,
}

impl UnsupportedServiceArgs {
    /// Refuses the first unsupported flag given, with why.
    pub fn refuse(&self) -> anyhow::Result<()> {
        let given = [
            (
                self.tty,
                "--tty",
                "tasks run without a terminal; their output is kept as lines (`service logs`)",
            ),
            (
                self.log_driver.is_some() || !self.log_opt.is_empty(),
                "--log-driver/--log-opt",
                "each node keeps its tasks' output in its own log, read with `service logs`; log drivers are not supported yet",
            ),
            (
                !self.generic_resource.is_empty() || !self.generic_resource_rm.is_empty(),
                "--generic-resource",
                "generic resources (GPUs and the like) are not supported yet; use --constraint node.labels.KEY==VALUE to place tasks on the nodes that have them",
            ),
            (
                self.oom_score_adj.is_some(),
                "--oom-score-adj",
                "the OOM killer's preference is not supported yet; --limit-memory bounds a task's memory",
            ),
            (
                self.health_start_interval.is_some(),
                "--health-start-interval",
                "not supported yet; during --health-start-period the check runs every --health-interval",
            ),
            (
                self.credential_spec.is_some(),
                "--credential-spec",
                "it is a Windows setting (gMSA), and swarm runs Linux tasks",
            ),
        ];
        refuse_first(&given)
    }
}

/// Hidden flags of `network create` that Docker has.
#[derive(Debug, Args, Default)]
pub struct UnsupportedNetworkArgs {
    #[arg(long, hide = true)]
    internal: bool,
    #[arg(long, hide = true)]
    ipv6: bool,
    #[arg(long, hide = true, value_name = "CIDR")]
    ip_range: Vec<String>,
    #[arg(long, hide = true, value_name = "HOST=IP")]
    aux_address: Vec<String>,
    #[arg(long, hide = true, value_name = "DRIVER")]
    ipam_driver: Option<String>,
    #[arg(long, hide = true, value_name = "KEY=VALUE")]
    ipam_opt: Vec<String>,
    #[arg(long, hide = true)]
    config_only: bool,
    #[arg(long, hide = true, value_name = "NETWORK")]
    config_from: Option<String>,
    #[arg(long, hide = true)]
    ingress: bool,
    #[arg(long, hide = true, value_name = "SCOPE")]
    scope: Option<String>,
}

impl UnsupportedNetworkArgs {
    /// Refuses the first unsupported flag given, with why.
    pub fn refuse(&self) -> anyhow::Result<()> {
        let given = [
            (
                self.internal,
                "--internal",
                "overlay networks always reach the outside through their node",
            ),
            (self.ipv6, "--ipv6", "overlay networks are IPv4 only"),
            (
                !self.ip_range.is_empty() || !self.aux_address.is_empty(),
                "--ip-range/--aux-address",
                "the allocator hands out every address of --subnet; give a smaller --subnet instead",
            ),
            (
                self.ipam_driver.is_some() || !self.ipam_opt.is_empty(),
                "--ipam-driver/--ipam-opt",
                "swarm allocates addresses itself; --subnet and --gateway choose them",
            ),
            (
                self.config_only || self.config_from.is_some(),
                "--config-only/--config-from",
                "configuration-only networks are not supported yet; give --subnet and -o on the network itself",
            ),
            (
                self.ingress,
                "--ingress",
                "swarm makes the one ingress network at `swarm init`; a custom one is not supported yet",
            ),
            (
                self.scope.as_deref().is_some_and(|s| s != "swarm"),
                "--scope",
                "overlay networks are swarm-scoped (--scope swarm)",
            ),
        ];
        refuse_first(&given)
    }
}

/// Hidden flags of `swarm init` and `swarm update` that Docker has.
#[derive(Debug, Args, Default)]
pub struct UnsupportedSwarmArgs {
    #[arg(long, hide = true, value_name = "SPEC")]
    external_ca: Vec<String>,
    #[arg(long, hide = true, value_name = "PORT")]
    data_path_port: Option<String>,
}

impl UnsupportedSwarmArgs {
    /// Refuses the first unsupported flag given, with why.
    pub fn refuse(&self) -> anyhow::Result<()> {
        let given = [
            (
                !self.external_ca.is_empty(),
                "--external-ca",
                "the swarm's own root CA signs node certificates; an external CA is not supported yet",
            ),
            (
                self.data_path_port.is_some(),
                "--data-path-port",
                "the VXLAN port is a setting of each node here: start every daemon with `swarm daemon --data-path-port PORT`",
            ),
        ];
        refuse_first(&given)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Service {
        #[command(flatten)]
        unsupported: UnsupportedServiceArgs,
    }

    #[derive(Parser)]
    struct Network {
        #[command(flatten)]
        unsupported: UnsupportedNetworkArgs,
    }

    #[derive(Parser)]
    struct Swarm {
        #[command(flatten)]
        unsupported: UnsupportedSwarmArgs,
    }

    fn service(args: &[&str]) -> anyhow::Result<()> {
        let parsed = Service::try_parse_from(std::iter::once("x").chain(args.iter().copied()))?;
        parsed.unsupported.refuse()
    }

    #[test]
    fn each_unsupported_flag_is_refused_by_name() {
        assert!(service(&[]).is_ok());
        for (args, flag) in [
            (&["-t"][..], "--tty"),
            (&["--log-driver", "syslog"], "--log-driver"),
            (&["--log-opt", "max-size=1m"], "--log-opt"),
            (&["--generic-resource", "gpu=1"], "--generic-resource"),
            (&["--generic-resource-add", "gpu=1"], "--generic-resource"),
            (&["--oom-score-adj", "-500"], "--oom-score-adj"),
            (
                &["--health-start-interval", "1s"],
                "--health-start-interval",
            ),
            (&["--credential-spec", "file://x"], "--credential-spec"),
        ] {
            let err = service(args).unwrap_err().to_string();
            assert!(
                err.contains(flag) && err.contains("not supported"),
                "{args:?}: {err}"
            );
        }
        let network = |args: &[&str]| {
            Network::try_parse_from(std::iter::once("x").chain(args.iter().copied()))
                .unwrap()
                .unsupported
                .refuse()
        };
        assert!(network(&["--scope", "swarm"]).is_ok());
        for flag in ["--internal", "--ipv6", "--ingress", "--config-only"] {
            let err = network(&[flag]).unwrap_err().to_string();
            assert!(err.contains(flag), "{err}");
        }
        let swarm = |args: &[&str]| {
            Swarm::try_parse_from(std::iter::once("x").chain(args.iter().copied()))
                .unwrap()
                .unsupported
                .refuse()
        };
        assert!(
            swarm(&["--external-ca", "protocol=cfssl,url=https://ca"])
                .unwrap_err()
                .to_string()
                .contains("--external-ca")
        );
        assert!(
            swarm(&["--data-path-port", "4790"])
                .unwrap_err()
                .to_string()
                .contains("swarm daemon --data-path-port")
        );
    }

    #[test]
    fn the_help_texts_name_every_refused_flag() {
        for flag in [
            "--tty",
            "--log-driver",
            "--generic-resource",
            "--oom-score-adj",
            "--credential-spec",
            "--health-start-interval",
        ] {
            assert!(SERVICE_AFTER_HELP.contains(flag), "{flag}");
        }
        for flag in [
            "--internal",
            "--ipv6",
            "--ip-range",
            "--ipam-driver",
            "--config-only",
            "--ingress",
            "--scope",
        ] {
            assert!(NETWORK_CREATE_AFTER_HELP.contains(flag), "{flag}");
        }
        for flag in ["--external-ca", "--data-path-port"] {
            assert!(SWARM_AFTER_HELP.contains(flag), "{flag}");
        }
    }
}
