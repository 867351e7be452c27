//! One Prometheus scrape of the daemon: every number read at this moment
//! from where it is kept (eBPF maps, Raft, the store, cgroups), never
//! counted per packet in user space.

use std::sync::Arc;

use futures::FutureExt as _;
use prometheus_client::registry::Unit;
use tracing::warn;

use super::DaemonState;
use crate::{
    api::control::{Request, Response},
    lock::Locked as _,
    metrics::Scrape,
};

/// The `--metrics-addr` server's way to read `state`.
pub(super) fn collector(state: Arc<DaemonState>) -> crate::metrics::Collect {
    Arc::new(move || {
        let state = state.clone();
        async move {
            let gossip = state.gossip.locked().clone();
            let members = match gossip {
                Some(gossip) => Some(gossip.peers().await),
                None => None,
            };
            let live = members.map(|peers| peers.iter().filter(|p| p.live).count());
            tokio::task::spawn_blocking(move || state.scrape(live))
                .await
                .unwrap_or_else(|err| {
                    warn!(error = %err, "a metrics scrape panicked");
                    String::new()
                })
        }
        .boxed()
    })
}

impl DaemonState {
    /// Reads everything; blocks (map reads, a request to the leader).
    fn scrape(&self, gossip_members: Option<usize>) -> String {
        let mut scrape = Scrape::new();
        self.scrape_dataplane(&mut scrape);
        self.scrape_cluster(&mut scrape);
        let dns = self.resolver.stats();
        scrape.counter(
            "resolver_queries",
            "DNS queries the tasks' resolver received",
            None,
            &[],
            dns.queries,
        );
        for (rcode, count) in [
            ("noerror", dns.answered),
            ("nxdomain", dns.nxdomain),
            ("servfail", dns.servfail),
            ("formerr", dns.malformed),
        ] {
            scrape.counter(
                "resolver_answers",
                "Answers the resolver gave itself, by response code (forwarded answers are the upstream's)",
                None,
                &[("rcode", rcode)],
                count,
            );
        }
        scrape.counter(
            "resolver_forwarded",
            "Queries for names not the swarm's, forwarded to the upstream resolvers",
            None,
            &[],
            dns.forwarded,
        );
        if let Some(gossip) = self.gossip.locked().as_ref().map(|g| g.stats()) {
            scrape.gauge(
                "gossip_members",
                "Nodes gossip sees alive, this one included",
                None,
                &[],
                gossip_members.unwrap_or(0) as f64,
            );
            scrape.counter(
                "gossip_datagrams_sent",
                "Gossip datagrams sent",
                None,
                &[],
                gossip.sent,
            );
            scrape.counter(
                "gossip_datagrams_received",
                "Gossip datagrams received",
                None,
                &[],
                gossip.received,
            );
            for (reason, count) in [
                ("malformed", gossip.dropped_malformed),
                ("unauthenticated", gossip.dropped_unauthenticated),
                ("bad-message", gossip.dropped_bad_message),
            ] {
                scrape.counter(
                    "gossip_datagrams_dropped",
                    "Gossip datagrams dropped, by reason",
                    None,
                    &[("reason", reason)],
                    count,
                );
            }
        }
        scrape.finish()
    }

    fn scrape_dataplane(&self, scrape: &mut Scrape) {
        let mut dataplane = self.dataplane.locked();
        match dataplane.stats() {
            Ok(stats) => {
                for row in &stats.packets {
                    let labels = [("counter", row.name.as_str())];
                    scrape.counter(
                        "dataplane_packets",
                        "Packets the eBPF programs counted, by counter",
                        None,
                        &labels,
                        row.packets,
                    );
                    scrape.counter(
                        "dataplane",
                        "Bytes of the packets the eBPF programs counted, by counter",
                        Some(Unit::Bytes),
                        &labels,
                        row.bytes,
                    );
                }
                for row in &stats.drops {
                    let labels = [("reason", row.name.as_str())];
                    scrape.counter(
                        "dataplane_drops",
                        "Packets the eBPF programs dropped, by reason",
                        None,
                        &labels,
                        row.packets,
                    );
                    scrape.counter(
                        "dataplane_dropped",
                        "Bytes of the packets the eBPF programs dropped, by reason",
                        Some(Unit::Bytes),
                        &labels,
                        row.bytes,
                    );
                }
            }
            Err(err) => warn!(error = %err, "reading the data-plane counters for metrics failed"),
        }
        match dataplane.conntrack_counts() {
            Ok(counts) => {
                for (kind, count) in counts {
                    scrape.gauge(
                        "conntrack_entries",
                        "Entries in the balanced flows' connection table, by kind",
                        None,
                        &[("kind", kind)],
                        count as f64,
                    );
                }
            }
            Err(err) => warn!(error = %err, "reading the connection table for metrics failed"),
        }
    }

    fn scrape_cluster(&self, scrape: &mut Scrape) {
        let info = self.membership.info();
        scrape.gauge(
            "in_swarm",
            "1 when this node is in a swarm",
            None,
            &[],
            f64::from(u8::from(info.local_node_state == "active")),
        );
        let cluster = self.membership.cluster_metrics();
        let task_services = cluster
            .as_ref()
            .map(|c| c.task_services.clone())
            .unwrap_or_default();
        self.scrape_tasks(scrape, &task_services);
        let Some(cluster) = cluster else {
            return;
        };
        scrape.gauge(
            "raft_is_leader",
            "1 when this manager leads the Raft cluster",
            None,
            &[],
            f64::from(u8::from(cluster.is_leader)),
        );
        if let Some(raft) = &cluster.raft {
            for (name, help, value) in [
                ("raft_term", "This manager's current Raft term", raft.term),
                (
                    "raft_last_log_index",
                    "Index of the last entry in this manager's Raft log",
                    raft.last_log_index,
                ),
                (
                    "raft_applied_index",
                    "Index of the last Raft entry applied to this manager's store",
                    raft.last_applied,
                ),
                (
                    "raft_snapshot_index",
                    "Index of the last entry in this manager's latest snapshot",
                    raft.snapshot_index,
                ),
                (
                    "raft_voters",
                    "Voting members of the Raft cluster",
                    raft.voters as u64,
                ),
                (
                    "raft_retained_snapshots",
                    "Replaced snapshots this manager keeps",
                    raft.retained_snapshots as u64,
                ),
            ] {
                scrape.gauge(name, help, None, &[], value as f64);
            }
        }
        for (state, count) in &cluster.tasks_by_state {
            scrape.gauge(
                "tasks",
                "Tasks in the store, by current state",
                None,
                &[("state", state)],
                *count as f64,
            );
        }
        scrape.gauge(
            "services",
            "Services in the store",
            None,
            &[],
            cluster.services as f64,
        );
        // Ready or down is the leader's to say (it hears the heartbeats).
        match self.membership.manager_request(Request::NodeList {
            filters: Default::default(),
        }) {
            Ok(Response::Nodes(rows)) => {
                let mut counts = std::collections::BTreeMap::new();
                for row in &rows {
                    let role = if row.manager_status.is_empty() {
                        "worker"
                    } else {
                        "manager"
                    };
                    *counts
                        .entry((
                            row.status.to_lowercase(),
                            row.availability.to_lowercase(),
                            role,
                        ))
                        .or_insert(0u64) += 1;
                }
                for ((status, availability, role), count) in counts {
                    scrape.gauge(
                        "nodes",
                        "Nodes of the swarm, by status, availability and role",
                        None,
                        &[
                            ("status", &status),
                            ("availability", &availability),
                            ("role", role),
                        ],
                        count as f64,
                    );
                }
            }
            Ok(_) => {}
            Err(err) => tracing::debug!(error = %err, "no node list for metrics"),
        }
    }

    /// CPU and memory of each task this node runs, from its cgroup.
    fn scrape_tasks(
        &self,
        scrape: &mut Scrape,
        services: &std::collections::BTreeMap<String, String>,
    ) {
        let Ok(tasks) = self.runtime.list() else {
            return;
        };
        for task in tasks {
            let Some(usage) = self.runtime.usage(&task) else {
                continue;
            };
            let service = services.get(&task).map_or("", String::as_str);
            let labels = [("task", task.as_str()), ("service", service)];
            scrape.float_counter(
                "task_cpu",
                "CPU time the task's processes used",
                Some(Unit::Seconds),
                &labels,
                usage.cpu_seconds,
            );
            scrape.gauge(
                "task_memory",
                "Memory the task's cgroup uses now",
                Some(Unit::Bytes),
                &labels,
                usage.memory_bytes as f64,
            );
        }
    }
}
