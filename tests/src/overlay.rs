//! Programming swarm's overlay across the topology's daemons through the CLI,
//! as a user (and, later, the control plane and gossip) would.

use std::{collections::BTreeSet, net::Ipv4Addr};

use anyhow::Context as _;

use crate::Topology;

/// A task namespace attached to an overlay network.
#[derive(Clone, Debug)]
pub struct OverlayTask {
    pub host: usize,
    pub netns: String,
    pub vni: u32,
    pub ip: Ipv4Addr,
    pub mac: String,
}

impl Topology {
    /// Creates network `vni` with `subnet` on every host in `plan`, attaches a
    /// new namespace `<prefix>-<role>` with address `ip` on its host for each
    /// entry, and tells every host where the other hosts' tasks are. The hosts'
    /// daemons must be running.
    pub fn overlay(
        &mut self,
        vni: u32,
        subnet: &str,
        plan: &[(usize, &str, Ipv4Addr)],
    ) -> anyhow::Result<Vec<OverlayTask>> {
        let vni_text = vni.to_string();
        let hosts: BTreeSet<usize> = plan.iter().map(|(host, _, _)| *host).collect();
        for &host in &hosts {
            self.daemon(host).swarm_ok(&[
                "dataplane",
                "network",
                "create",
                "--vni",
                &vni_text,
                "--subnet",
                subnet,
            ])?;
        }
        let mut tasks = Vec::new();
        for &(host, role, ip) in plan {
            let netns = self.add_netns(role)?.name().to_owned();
            let ip_text = ip.to_string();
            let daemon = self.daemon(host);
            daemon.swarm_ok(&[
                "dataplane",
                "endpoint",
                "attach",
                "--vni",
                &vni_text,
                "--netns",
                &netns,
                "--ip",
                &ip_text,
            ])?;
            let rows = daemon.swarm_json(&["dataplane", "endpoints"])?;
            let mac = rows
                .iter()
                .find(|r| r["IP"] == ip_text.as_str() && r["VNI"] == vni)
                .and_then(|r| r["MAC"].as_str())
                .with_context(|| format!("{ip} not listed after attach"))?
                .to_owned();
            tasks.push(OverlayTask {
                host,
                netns,
                vni,
                ip,
                mac,
            });
        }
        for task in &tasks {
            let node = self.hosts[task.host].addr.to_string();
            for &other in hosts.iter().filter(|&&h| h != task.host) {
                self.daemon(other).swarm_ok(&[
                    "dataplane",
                    "endpoint",
                    "add-remote",
                    "--vni",
                    &vni_text,
                    "--ip",
                    &task.ip.to_string(),
                    "--mac",
                    &task.mac,
                    "--node",
                    &node,
                ])?;
            }
        }
        Ok(tasks)
    }
}
