//! The scheduler, after swarmkit's: filters (availability, constraints,
//! resources), then spread over the nodes that pass.

use std::collections::{BTreeMap, BTreeSet};

use super::store::{
    ClusterState, NodeRecord,
    services::{TaskChange, TaskRecord},
};
use crate::api::{Availability, NodeResources, Role, specs::Constraint, tasks::TaskState};

/// How loaded a node is for a task, least first: the service's tasks in
/// each spread preference's group, on the node, then all tasks on it.
type Load = (Vec<u64>, u64, u64);

/// Places new tasks: available nodes that satisfy the constraints, then the
/// one with the fewest tasks of the service, then the fewest tasks in all.
/// A global task is assigned to its own node.
pub(super) fn schedule(
    state: &ClusterState,
    ready: &BTreeSet<String>,
    created: &mut Vec<TaskRecord>,
    changes: &mut Vec<TaskChange>,
    now_millis: u64,
) {
    let mut per_service: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    let mut per_node: BTreeMap<&str, u64> = BTreeMap::new();
    // What the live tasks on each node reserve.
    let mut reserved: BTreeMap<String, NodeResources> = BTreeMap::new();
    for task in state.tasks.values() {
        if task.desired == TaskState::Running
            && !task.status.state.is_terminal()
            && let Some(node) = &task.node_id
        {
            *per_service.entry((&task.service_id, node)).or_default() += 1;
            *per_node.entry(node).or_default() += 1;
            reserve(reserved.entry(node.clone()).or_default(), task);
        }
    }
    let mut assigned: Vec<(String, String)> = Vec::new();
    let mut waiting: Vec<&TaskRecord> = state
        .tasks
        .values()
        .filter(|t| t.desired == TaskState::Running && t.status.state <= TaskState::Pending)
        .collect();
    waiting.sort_by_key(|t| (t.created_at_millis, t.slot, t.id.clone()));
    let fresh: Vec<TaskRecord> = std::mem::take(created);
    let candidates: Vec<&TaskRecord> = waiting.into_iter().chain(fresh.iter()).collect();
    let mut counts: BTreeMap<(String, String), u64> = per_service
        .into_iter()
        .map(|((s, n), c)| ((s.to_owned(), n.to_owned()), c))
        .collect();
    let mut totals: BTreeMap<String, u64> = per_node
        .into_iter()
        .map(|(n, c)| (n.to_owned(), c))
        .collect();
    for task in candidates {
        if let Some(node) = &task.node_id {
            assigned.push((task.id.clone(), node.clone()));
            continue;
        }
        let mut not_available = 0;
        let mut not_matching = 0;
        let mut short_of_resources = 0;
        let mut at_max = 0;
        let mut best: Option<(&NodeRecord, Load)> = None;
        for node in state.nodes.values() {
            if !ready.contains(&node.id) || node.availability != Availability::Active {
                not_available += 1;
                continue;
            }
            if !satisfies(node, &task.spec.constraints) {
                not_matching += 1;
                continue;
            }
            if !fits(node, reserved.get(&node.id), task) {
                short_of_resources += 1;
                continue;
            }
            let on_node = counts
                .get(&(task.service_id.clone(), node.id.clone()))
                .copied()
                .unwrap_or(0);
            if task
                .spec
                .max_replicas_per_node
                .is_some_and(|max| on_node >= max)
            {
                at_max += 1;
                continue;
            }
            // Spread preferences first, each over the values of its key:
            // the value whose nodes hold the fewest of the service's tasks.
            let spread: Vec<u64> = task
                .spec
                .placement_prefs
                .iter()
                .map(|key| {
                    let value = placement_value(node, key);
                    state
                        .nodes
                        .values()
                        .filter(|other| placement_value(other, key) == value)
                        .map(|other| {
                            counts
                                .get(&(task.service_id.clone(), other.id.clone()))
                                .copied()
                                .unwrap_or(0)
                        })
                        .sum()
                })
                .collect();
            let load = (spread, on_node, totals.get(&node.id).copied().unwrap_or(0));
            if best.as_ref().is_none_or(|(_, best_load)| load < *best_load) {
                best = Some((node, load));
            }
        }
        match best {
            Some((node, _)) => {
                *counts
                    .entry((task.service_id.clone(), node.id.clone()))
                    .or_default() += 1;
                *totals.entry(node.id.clone()).or_default() += 1;
                reserve(reserved.entry(node.id.clone()).or_default(), task);
                assigned.push((task.id.clone(), node.id.clone()));
            }
            None => {
                let mut reasons = Vec::new();
                if not_available > 0 {
                    reasons.push(format!("{not_available} not available for new tasks"));
                }
                if not_matching > 0 {
                    reasons.push(format!(
                        "scheduling constraints not satisfied on {not_matching}"
                    ));
                }
                if short_of_resources > 0 {
                    reasons.push(format!("insufficient resources on {short_of_resources}"));
                }
                if at_max > 0 {
                    reasons.push(format!("max replicas per node limit exceed on {at_max}"));
                }
                if reasons.is_empty() {
                    reasons.push("no nodes in the swarm".into());
                }
                let reason = format!("no suitable node ({})", reasons.join("; "));
                if task.status.err != reason || task.status.state != TaskState::Pending {
                    changes.push(TaskChange::Unplaceable {
                        id: task.id.clone(),
                        reason,
                        at_millis: now_millis,
                    });
                }
            }
        }
    }
    let fresh_changes: Vec<TaskChange> = fresh
        .into_iter()
        .map(|t| TaskChange::Create(Box::new(t)))
        .collect();
    // Created before assigned or marked pending, in the same batch.
    let rest = std::mem::take(changes);
    *changes = fresh_changes;
    changes.extend(rest);
    changes.extend(
        assigned
            .into_iter()
            .map(|(id, node_id)| TaskChange::Assign { id, node_id }),
    );
}

/// A node's value for a spread preference's key (`node.labels.zone`,
/// `node.hostname`, ...); nodes without it form a group of their own.
fn placement_value<'a>(node: &'a NodeRecord, key: &str) -> Option<&'a str> {
    match key {
        "node.id" => Some(node.id.as_str()),
        "node.hostname" => Some(node.hostname.as_str()),
        key => label_value(node, key),
    }
}

/// A node's label named by `node.labels.KEY` (set by `node update`) or
/// `engine.labels.KEY` (its daemon's `--label`).
fn label_value<'a>(node: &'a NodeRecord, key: &str) -> Option<&'a str> {
    if let Some(label) = key.strip_prefix("node.labels.") {
        node.labels.get(label).map(String::as_str)
    } else {
        key.strip_prefix("engine.labels.")
            .and_then(|label| node.engine_labels.get(label))
            .map(String::as_str)
    }
}

/// Adds what `task` reserves to `total`.
fn reserve(total: &mut NodeResources, task: &TaskRecord) {
    let wants = &task.spec.reservations;
    total.nano_cpus += wants.nano_cpus.unwrap_or(0);
    total.memory_bytes += wants.memory_bytes.unwrap_or(0);
}

/// Whether `task`'s reservations fit in what `node` offers beyond what its
/// tasks reserve already. A node that reported nothing limits nothing.
fn fits(node: &NodeRecord, reserved: Option<&NodeResources>, task: &TaskRecord) -> bool {
    let reserved = reserved.copied().unwrap_or_default();
    let wants = &task.spec.reservations;
    let room = |offered: u64, taken: u64, wanted: Option<u64>| {
        offered == 0 || wanted.is_none_or(|w| taken.saturating_add(w) <= offered)
    };
    room(
        node.resources.nano_cpus,
        reserved.nano_cpus,
        wants.nano_cpus,
    ) && room(
        node.resources.memory_bytes,
        reserved.memory_bytes,
        wants.memory_bytes,
    )
}

/// Whether `node` meets every constraint.
pub fn satisfies(node: &NodeRecord, constraints: &[Constraint]) -> bool {
    constraints.iter().all(|c| {
        let actual = match c.key.as_str() {
            "node.id" => Some(node.id.clone()),
            "node.hostname" => Some(node.hostname.clone()),
            "node.role" => Some(
                match node.role {
                    Role::Manager => "manager",
                    Role::Worker => "worker",
                }
                .to_owned(),
            ),
            // The node's own, as it reported them (not this manager's).
            "node.platform.os" => Some(node.platform.os.clone()).filter(|os| !os.is_empty()),
            "node.platform.arch" => {
                Some(node.platform.architecture.clone()).filter(|arch| !arch.is_empty())
            }
            key => label_value(node, key).map(str::to_owned),
        };
        // A missing label equals nothing, as in swarmkit.
        match actual {
            Some(actual) => (actual == c.value) == c.equal,
            None => !c.equal,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{api::Platform, manager::store::fixtures};

    #[test]
    fn platform_constraints_are_checked_against_each_nodes_own() {
        let mut arm = fixtures::node("arm", Role::Worker);
        arm.platform = Platform {
            os: "linux".into(),
            architecture: "aarch64".into(),
        };
        let mut intel = fixtures::node("intel", Role::Worker);
        intel.platform = Platform {
            os: "linux".into(),
            architecture: "x86_64".into(),
        };
        let on_arm: Vec<Constraint> = vec!["node.platform.arch==aarch64".parse().unwrap()];
        assert!(satisfies(&arm, &on_arm));
        assert!(!satisfies(&intel, &on_arm));
        let linux: Vec<Constraint> = vec!["node.platform.os==linux".parse().unwrap()];
        assert!(satisfies(&arm, &linux) && satisfies(&intel, &linux));
        // A node recorded before nodes reported it matches no platform.
        let mut old = fixtures::node("old", Role::Worker);
        old.platform = Platform::default();
        assert!(!satisfies(&old, &linux));
    }
}
