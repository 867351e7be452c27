//! The flags of `service create` and `service update` that set up the
//! task's process as Docker's ContainerSpec does: DNS, hosts, capabilities,
//! sysctls, ulimits, groups and container labels.

use std::{net::IpAddr, path::PathBuf};

use clap::Args;

use super::parse_label;
use crate::api::{
    control::ContainerUpdate,
    specs::{ContainerSettings, ExtraHost, Ulimit, check_sysctl, normalize_capability},
};

#[derive(Debug, Args, Default)]
pub struct ContainerArgs {
    /// A DNS server for names that are not the swarm's (repeat for more);
    /// the task's resolver at 127.0.0.11 forwards to it, as Docker's does.
    #[arg(long, value_name = "IP")]
    dns: Vec<IpAddr>,
    /// A DNS search domain of the task's resolv.conf (repeat for more).
    #[arg(long, value_name = "DOMAIN")]
    dns_search: Vec<String>,
    /// A resolv.conf option, e.g. ndots:2 or timeout:1 (repeat for more).
    #[arg(long, value_name = "OPTION")]
    dns_option: Vec<String>,
    /// A line of the task's /etc/hosts: HOST:IP (repeat for more).
    #[arg(long, value_name = "HOST:IP")]
    host: Vec<ExtraHost>,
    /// A capability on top of Docker's default set, e.g. NET_ADMIN, or ALL.
    #[arg(long, value_name = "CAP", value_parser = normalize_capability)]
    cap_add: Vec<String>,
    /// A capability out of Docker's default set, e.g. NET_RAW, or ALL.
    #[arg(long, value_name = "CAP", value_parser = normalize_capability)]
    cap_drop: Vec<String>,
    /// A network kernel setting in the task's namespace: net.KEY=VALUE.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_sysctl)]
    sysctl: Vec<(String, String)>,
    /// A resource limit of the process: NAME=SOFT[:HARD], e.g. nofile=1024:2048.
    #[arg(long, value_name = "NAME=SOFT[:HARD]")]
    ulimit: Vec<Ulimit>,
    /// Another group the process runs with, by name (in the image) or number.
    #[arg(long, value_name = "GROUP")]
    group: Vec<String>,
    /// A label of each task's container, KEY=VALUE.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_label)]
    container_label: Vec<(String, String)>,
    /// Read environment variables from a file: KEY=VALUE lines (`#` starts a
    /// comment; a bare KEY takes this shell's value); --env wins over it.
    #[arg(long, value_name = "FILE")]
    env_file: Vec<PathBuf>,
}

impl ContainerArgs {
    pub fn settings(&self) -> ContainerSettings {
        ContainerSettings {
            dns_servers: self.dns.clone(),
            dns_search: self.dns_search.clone(),
            dns_options: self.dns_option.clone(),
            extra_hosts: self.host.clone(),
            cap_add: self.cap_add.clone(),
            cap_drop: self.cap_drop.clone(),
            sysctls: self.sysctl.iter().cloned().collect(),
            ulimits: self.ulimit.clone(),
            groups: self.group.clone(),
            labels: self.container_label.iter().cloned().collect(),
            ..ContainerSettings::default()
        }
    }

    /// The variables of every --env-file, in order.
    pub fn env_files(&self) -> anyhow::Result<Vec<String>> {
        let mut env = Vec::new();
        for path in &self.env_file {
            let text = std::fs::read_to_string(path)
                .map_err(|err| anyhow::anyhow!("--env-file {}: {err}", path.display()))?;
            env.extend(
                parse_env_file(&text).map_err(|message| {
                    anyhow::anyhow!("--env-file {}: {message}", path.display())
                })?,
            );
        }
        Ok(env)
    }
}

#[derive(Debug, Args, Default)]
pub struct ContainerUpdateArgs {
    /// Add a DNS server (as --dns of `create`).
    #[arg(long, value_name = "IP")]
    dns_add: Vec<IpAddr>,
    /// Remove a DNS server.
    #[arg(long, value_name = "IP")]
    dns_rm: Vec<IpAddr>,
    /// Add a DNS search domain.
    #[arg(long, value_name = "DOMAIN")]
    dns_search_add: Vec<String>,
    /// Remove a DNS search domain.
    #[arg(long, value_name = "DOMAIN")]
    dns_search_rm: Vec<String>,
    /// Add a resolv.conf option.
    #[arg(long, value_name = "OPTION")]
    dns_option_add: Vec<String>,
    /// Remove a resolv.conf option.
    #[arg(long, value_name = "OPTION")]
    dns_option_rm: Vec<String>,
    /// Add an /etc/hosts line, HOST:IP.
    #[arg(long, value_name = "HOST:IP")]
    host_add: Vec<ExtraHost>,
    /// Remove /etc/hosts lines, by HOST or HOST:IP.
    #[arg(long, value_name = "HOST[:IP]")]
    host_rm: Vec<String>,
    /// Add a capability (and take it out of the dropped ones).
    #[arg(long, value_name = "CAP", value_parser = normalize_capability)]
    cap_add: Vec<String>,
    /// Drop a capability (and take it out of the added ones).
    #[arg(long, value_name = "CAP", value_parser = normalize_capability)]
    cap_drop: Vec<String>,
    /// Add or change a sysctl, net.KEY=VALUE.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_sysctl)]
    sysctl_add: Vec<(String, String)>,
    /// Remove a sysctl, by key.
    #[arg(long, value_name = "KEY")]
    sysctl_rm: Vec<String>,
    /// Add or change a ulimit, NAME=SOFT[:HARD].
    #[arg(long, value_name = "NAME=SOFT[:HARD]")]
    ulimit_add: Vec<Ulimit>,
    /// Remove a ulimit, by name.
    #[arg(long, value_name = "NAME")]
    ulimit_rm: Vec<String>,
    /// Add a group.
    #[arg(long, value_name = "GROUP")]
    group_add: Vec<String>,
    /// Remove a group.
    #[arg(long, value_name = "GROUP")]
    group_rm: Vec<String>,
    /// Add or change a container label, KEY=VALUE.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_label)]
    container_label_add: Vec<(String, String)>,
    /// Remove a container label, by key.
    #[arg(long, value_name = "KEY")]
    container_label_rm: Vec<String>,
}

impl ContainerUpdateArgs {
    /// The changes, with the shared flags (`--read-only`, `--init`,
    /// `--stop-signal`) left to the caller.
    pub fn update(&self) -> ContainerUpdate {
        ContainerUpdate {
            dns_add: self.dns_add.clone(),
            dns_rm: self.dns_rm.clone(),
            dns_search_add: self.dns_search_add.clone(),
            dns_search_rm: self.dns_search_rm.clone(),
            dns_option_add: self.dns_option_add.clone(),
            dns_option_rm: self.dns_option_rm.clone(),
            host_add: self.host_add.clone(),
            host_rm: self.host_rm.clone(),
            cap_add: self.cap_add.clone(),
            cap_drop: self.cap_drop.clone(),
            sysctl_add: self.sysctl_add.clone(),
            sysctl_rm: self.sysctl_rm.clone(),
            ulimit_add: self.ulimit_add.clone(),
            ulimit_rm: self.ulimit_rm.clone(),
            group_add: self.group_add.clone(),
            group_rm: self.group_rm.clone(),
            label_add: self.container_label_add.clone(),
            label_rm: self.container_label_rm.clone(),
            ..ContainerUpdate::default()
        }
    }
}

fn parse_sysctl(text: &str) -> Result<(String, String), String> {
    let (key, value) = text.split_once('=').ok_or_else(|| {
        format!("--sysctl {text:?}: write KEY=VALUE, for example net.ipv4.ip_forward=1")
    })?;
    check_sysctl(key)?;
    Ok((key.to_owned(), value.to_owned()))
}

/// Docker's env file: one KEY=VALUE a line, blank lines and `#` comments
/// skipped, a bare KEY taken from this process's environment (or left out).
fn parse_env_file(text: &str) -> Result<Vec<String>, String> {
    let mut env = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = match line.split_once('=') {
            Some((key, value)) => (key, Some(value)),
            None => (line.trim_end(), None),
        };
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(format!(
                "line {}: variable {key:?} is empty or has whitespace; write KEY=VALUE",
                number + 1
            ));
        }
        match value {
            Some(value) => env.push(format!("{key}={value}")),
            None => {
                if let Ok(value) = std::env::var(key) {
                    env.push(format!("{key}={value}"));
                }
            }
        }
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_files_read_as_docker_reads_them() {
        let env = parse_env_file("# a comment\n\nA=1\n  B=two words\nC=\n").unwrap();
        assert_eq!(env, ["A=1", "B=two words", "C="]);
        assert!(
            parse_env_file("BAD KEY=1\n")
                .unwrap_err()
                .contains("line 1")
        );
    }

    #[test]
    fn sysctls_outside_the_network_are_refused() {
        assert!(parse_sysctl("net.ipv4.ip_forward=1").is_ok());
        assert!(
            parse_sysctl("kernel.shmmax=1")
                .unwrap_err()
                .contains("net.*")
        );
        assert!(parse_sysctl("net.core.somaxconn").is_err());
    }
}
