//! What a manager sends an agent, and what agents send back: the tasks
//! assigned to its node and what the node's data plane needs to reach every
//! other task (networks, remote endpoints, service VIPs, backends and
//! published ports), the names its resolver answers, gossip settings, and
//! `service logs` requests and answers.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::tasks::{TaskSpec, TaskState};
use crate::dataplane::{self, OverlayNetwork};

/// One node's share of the store, at store version `version`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    pub version: u64,
    pub tasks: Vec<AssignedTask>,
    pub networks: Vec<OverlayNetwork>,
    /// Addresses of tasks on other nodes.
    pub remote_endpoints: Vec<RemoteEndpoint>,
    pub services: Vec<dataplane::BalancedService>,
    /// `service logs` requests for tasks of this node.
    #[serde(default)]
    pub log_requests: Vec<LogRequest>,
    /// The names tasks resolve, per network.
    #[serde(default)]
    pub dns: Vec<DnsRecord>,
    /// How to gossip with the other nodes; `None` in a swarm from before
    /// gossip.
    #[serde(default)]
    pub gossip: Option<GossipConfig>,
}

/// A name the tasks' resolver answers on network `vni`: a service (its VIP,
/// or its tasks' addresses with `--endpoint-mode dnsrr`), `tasks.<service>`
/// (its running tasks' addresses), or a task's name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DnsRecord {
    pub vni: u32,
    pub name: String,
    pub addresses: Vec<Ipv4Addr>,
    /// For a task's own name: what a reverse (PTR) lookup of its address
    /// answers, `<task name>.<network name>` as in Docker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverse: Option<String>,
}

/// The names a task's address on one network answers to. The task's node
/// gossips them with the endpoint, so every node's resolver learns of the
/// task even while the managers are out of reach.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EndpointNames {
    pub service: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// The service's VIP on this network; none with `--endpoint-mode dnsrr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip: Option<Ipv4Addr>,
    /// `<service>.<slot>.<task id>`, as the resolver answers it.
    pub task: String,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RemoteEndpoint {
    pub vni: u32,
    pub ip: Ipv4Addr,
    pub node: Ipv4Addr,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AssignedTask {
    pub id: String,
    pub service_id: String,
    /// `<service>.<slot>` (or `<service>.<node id>` for global services).
    pub name: String,
    pub desired: TaskState,
    /// The state the managers last recorded.
    pub state: TaskState,
    pub spec: TaskSpec,
    /// The task's address on each network: (VNI, address), the first one
    /// carrying the default route.
    pub addresses: Vec<(u32, Ipv4Addr)>,
    pub stop_grace_millis: u64,
    /// What its address on each network (but `ingress`) answers to.
    #[serde(default)]
    pub names: Vec<(u32, EndpointNames)>,
}

/// Dataplane service names the agent manages contain this; others (made
/// by hand with `swarm dataplane service create`) are left alone.
pub const SERVICE_NAME_MARK: char = '@';

/// What the managers tell a node about gossip.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipConfig {
    pub cluster_id: String,
    /// Hex; the previous one is still accepted during a rotation.
    pub key: String,
    pub previous_key: Option<String>,
    /// Every node's address: the seeds (on this node's gossip port, which
    /// is the same on every node, as Docker's).
    pub peers: Vec<Ipv4Addr>,
    /// Nodes whose overlay traffic goes to another address than the one
    /// they gossip on (`--data-path-addr`): gossip address to data path.
    #[serde(default)]
    pub data_paths: std::collections::BTreeMap<Ipv4Addr, Ipv4Addr>,
}

/// A manager asks the nodes for some tasks' output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRequest {
    pub id: String,
    pub tasks: Vec<String>,
    /// Only the last lines of each task's output.
    pub tail: Option<u64>,
    /// The manager API address the nodes answer to.
    pub reply_to: String,
    pub at_millis: u64,
    /// Only lines written at or after this time (nanoseconds since the
    /// epoch): `--since`.
    #[serde(default)]
    pub since_nanos: Option<i64>,
}

/// One task's output, as its node keeps it (stdout and stderr together).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskLog {
    pub task_id: String,
    pub lines: Vec<LogLine>,
}

/// One line a task wrote, without its newline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// When it was written, in nanoseconds since the epoch; none for lines
    /// written before swarm kept times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_nanos: Option<i64>,
    pub text: String,
}

/// The last `count` of `lines` (all of them without a limit).
pub fn tail<T>(lines: &[T], count: Option<u64>) -> &[T] {
    let Some(count) = count else { return lines };
    let keep = usize::try_from(count)
        .unwrap_or(usize::MAX)
        .min(lines.len());
    &lines[lines.len() - keep..]
}

/// The lines a request asks for: those written at or after `since` (a
/// line without a time is not known to be), then the last `count`.
pub fn select(
    mut lines: Vec<LogLine>,
    since_nanos: Option<i64>,
    count: Option<u64>,
) -> Vec<LogLine> {
    if let Some(since) = since_nanos {
        lines.retain(|line| line.at_nanos.is_some_and(|at| at >= since));
    }
    let keep = tail(&lines, count).len();
    lines.split_off(lines.len() - keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        let lines = ["a", "b", "c"];
        assert_eq!(tail(&lines, Some(2)), ["b", "c"]);
        assert_eq!(tail(&lines, Some(5)), lines);
        assert!(tail(&lines, Some(0)).is_empty());
        assert_eq!(tail(&lines, None), lines);
        assert!(tail::<&str>(&[], Some(3)).is_empty());
    }

    fn line(at_nanos: Option<i64>, text: &str) -> LogLine {
        LogLine {
            at_nanos,
            text: text.into(),
        }
    }

    #[test]
    fn select_filters_by_time_then_tails() {
        let lines = vec![
            line(None, "old"),
            line(Some(10), "a"),
            line(Some(20), "b"),
            line(Some(30), "c"),
        ];
        assert_eq!(select(lines.clone(), None, None), lines);
        assert_eq!(select(lines.clone(), Some(20), None), lines[2..]);
        assert_eq!(select(lines.clone(), Some(11), Some(1)), lines[3..]);
        assert_eq!(select(lines.clone(), None, Some(3)), lines[1..]);
        assert!(select(lines, Some(31), None).is_empty());
    }
}
