//! An image's configuration, the parts a runtime honours as Docker does:
//! Entrypoint and Cmd, Env, WorkingDir, User, ExposedPorts and Docker's
//! Healthcheck (OCI's config has no health check; Docker's does).

use serde::{Deserialize, Serialize};

use crate::api::tasks::HealthCheck;

/// The config blob's JSON, as far as it is read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub config: RunConfig,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: String,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub exposed_ports: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    pub healthcheck: Option<DockerHealthcheck>,
}

/// Docker's `Healthcheck`: durations in nanoseconds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DockerHealthcheck {
    #[serde(default)]
    pub test: Vec<String>,
    #[serde(default)]
    pub interval: u64,
    #[serde(default)]
    pub timeout: u64,
    #[serde(default)]
    pub start_period: u64,
    #[serde(default)]
    pub retries: u32,
}

impl ImageConfig {
    /// The program and arguments a task runs: the Entrypoint (`entrypoint`
    /// in place of the image's) with `args` in place of the Cmd. The
    /// image's Cmd runs only with its own Entrypoint and no `args`, as in
    /// Docker.
    pub fn command(&self, entrypoint: Option<&[String]>, args: &[String]) -> Vec<String> {
        let mut command = match entrypoint {
            Some(entrypoint) => entrypoint.to_vec(),
            None => self.config.entrypoint.clone().unwrap_or_default(),
        };
        if !args.is_empty() {
            command.extend(args.iter().cloned());
        } else if entrypoint.is_none() {
            command.extend(self.config.cmd.clone().unwrap_or_default());
        }
        command
    }

    /// The image's environment with `env` on top (a key in `env` wins).
    pub fn env(&self, env: &[String]) -> Vec<String> {
        let key = |var: &str| var.split('=').next().unwrap_or(var).to_owned();
        let mut merged: Vec<String> = self
            .config
            .env
            .iter()
            .flatten()
            .filter(|var| !env.iter().any(|own| key(own) == key(var)))
            .cloned()
            .collect();
        merged.extend(env.iter().cloned());
        merged
    }

    /// The image's health check, unless it disables one (`NONE`).
    pub fn healthcheck(&self) -> Option<HealthCheck> {
        let check = self.config.healthcheck.as_ref()?;
        let command = match check.test.split_first() {
            Some((kind, rest)) if kind == "CMD-SHELL" => rest.join(" "),
            Some((kind, rest)) if kind == "CMD" => rest
                .iter()
                .map(|arg| shell_quote(arg))
                .collect::<Vec<_>>()
                .join(" "),
            _ => return None,
        };
        let defaults = HealthCheck::default();
        let millis = |nanos: u64, default: u64| {
            if nanos == 0 {
                default
            } else {
                nanos / 1_000_000
            }
        };
        Some(HealthCheck {
            command,
            interval_millis: millis(check.interval, defaults.interval_millis),
            timeout_millis: millis(check.timeout, defaults.timeout_millis),
            retries: if check.retries == 0 {
                defaults.retries
            } else {
                check.retries
            },
            start_period_millis: millis(check.start_period, defaults.start_period_millis),
        })
    }

    /// `80/tcp`, ... as the image declares them.
    pub fn exposed_ports(&self) -> Vec<String> {
        self.config
            .exposed_ports
            .iter()
            .flat_map(|ports| ports.keys().cloned())
            .collect()
    }
}

fn shell_quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b))
    {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> ImageConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn service_args_replace_cmd_and_keep_the_entrypoint() {
        let image = config(
            r#"{"config":{"Entrypoint":["/bin/busybox"],"Cmd":["httpd","-f"],"Env":["PATH=/bin","MODE=a"]}}"#,
        );
        assert_eq!(image.command(None, &[]), ["/bin/busybox", "httpd", "-f"]);
        assert_eq!(image.command(None, &["sh".into()]), ["/bin/busybox", "sh"]);
        let sh = ["/bin/sh".to_owned()];
        assert_eq!(image.command(Some(&sh), &[]), ["/bin/sh"]);
        assert_eq!(
            image.command(Some(&sh), &["-c".into(), "true".into()]),
            ["/bin/sh", "-c", "true"]
        );
        assert_eq!(
            image.env(&["MODE=b".into(), "X=1".into()]),
            ["PATH=/bin", "MODE=b", "X=1"]
        );
    }

    #[test]
    fn dockers_healthcheck_becomes_a_task_check() {
        let image = config(
            r#"{"config":{"Healthcheck":{"Test":["CMD","wget","-q","http://localhost/"],"Interval":2000000000,"Retries":2}}}"#,
        );
        let check = image.healthcheck().unwrap();
        assert_eq!(check.command, "wget -q http://localhost/");
        assert_eq!((check.interval_millis, check.retries), (2000, 2));
        assert_eq!(check.timeout_millis, HealthCheck::default().timeout_millis);
        let none = config(r#"{"config":{"Healthcheck":{"Test":["NONE"]}}}"#);
        assert_eq!(none.healthcheck(), None);
    }
}
