//! `swarm node ...` and `swarm join-token` as the leader answers them.

use std::time::{Duration, Instant};

use crate::{
    api::{
        Availability, ClusterError, Role,
        control::{NodeRow, NodeUpdateRequest, Response},
    },
    ca::pki::{JoinToken, RootCa},
    manager::{
        Manager,
        leader::Forwarded,
        raft,
        store::{Command, NodeChange},
    },
};

/// How long taking a demoted manager out of the voters may be retried.
const REMOVE_VOTER_PATIENCE: Duration = Duration::from_secs(15);

impl Manager {
    pub(super) fn join_token_here(
        &self,
        role: Role,
        rotate: bool,
    ) -> Result<Response, ClusterError> {
        if rotate {
            let digest = self.read_store(|s| RootCa::from_pem(&s.ca_cert_pem, &s.ca_key_pem))??;
            let token = JoinToken::generate(digest.digest()).to_string();
            self.commit_here(Command::SetToken { role, token })?;
            tracing::info!(%role, "join token rotated");
        }
        let token = self.read_store(|s| s.token(role).to_owned())?;
        let addr = self
            .host()?
            .api_addr()
            .map(|addr| addr.to_string())
            .unwrap_or_default();
        Ok(Response::JoinToken {
            role,
            token,
            manager_addr: addr,
        })
    }

    pub(super) fn nodes(&self, origin: &str) -> Result<Response, ClusterError> {
        let raft = self.raft()?;
        let leader = raft.metrics().current_leader;
        let (nodes, period) = self.read_store(|s| {
            (
                s.nodes.values().cloned().collect::<Vec<_>>(),
                Duration::from_millis(s.heartbeat_millis.max(1)),
            )
        })?;
        let rows = nodes
            .into_iter()
            .map(|node| {
                let here = node.id == self.node.node_id;
                let ready = here || self.alive(&node.id, period);
                NodeRow {
                    hostname: node.hostname.clone(),
                    status: if ready { "Ready" } else { "Down" }.into(),
                    availability: availability_word(node.availability).into(),
                    manager_status: match node.role {
                        Role::Manager if leader == Some(raft::raft_id(&node.id)) => "Leader".into(),
                        Role::Manager if ready => "Reachable".into(),
                        Role::Manager => "Unreachable".into(),
                        Role::Worker => String::new(),
                    },
                    is_self: node.id == origin,
                    id: node.id,
                }
            })
            .collect();
        Ok(Response::Nodes(rows))
    }

    pub(super) fn inspect(&self, reference: &str) -> Result<Response, ClusterError> {
        let raft = self.raft()?;
        let leader = raft.metrics().current_leader;
        let (node, period) = self.read_store(|s| {
            s.resolve(reference).map(|id| {
                (
                    s.nodes[&id].clone(),
                    Duration::from_millis(s.heartbeat_millis.max(1)),
                )
            })
        })??;
        let ready = node.id == self.node.node_id || self.alive(&node.id, period);
        let mut value = serde_json::json!({
            "ID": node.id,
            "Spec": {
                "Labels": node.labels,
                "Role": node.role.to_string(),
                "Availability": availability_word(node.availability).to_lowercase(),
            },
            "Description": {
                "Hostname": node.hostname,
                "Platform": {
                    "Architecture": node.platform.architecture,
                    "OS": node.platform.os,
                },
                "Resources": {
                    "NanoCPUs": node.resources.nano_cpus,
                    "MemoryBytes": node.resources.memory_bytes,
                },
            },
            "Status": {
                "State": if ready { "ready" } else { "down" },
                "Addr": node.addr.ip().to_string(),
            },
        });
        if node.role == Role::Manager {
            value["ManagerStatus"] = serde_json::json!({
                "Leader": leader == Some(raft::raft_id(&node.id)),
                "Reachability": if ready { "reachable" } else { "unreachable" },
                "Addr": node.addr.to_string(),
            });
        }
        Ok(Response::NodeInspect(serde_json::Value::Array(vec![value])))
    }

    pub(super) fn update(&self, request: &NodeUpdateRequest) -> Result<Response, ClusterError> {
        let id = self.read_store(|s| s.resolve(&request.node))??;
        if let Some(role) = request.role {
            self.change_roles(std::slice::from_ref(&id), role)?;
        }
        let change = NodeChange {
            availability: request.availability,
            label_add: request.label_add.clone(),
            label_rm: request.label_rm.clone(),
            role: None,
        };
        if change != NodeChange::default() {
            self.commit_here(Command::UpdateNode {
                id: id.clone(),
                change,
            })?;
        }
        tracing::info!(node = %id, "node updated");
        Ok(Response::Done)
    }

    /// `node promote` / `node demote`: the role in the store first; the
    /// node's agent sees it in its next heartbeat and renews its
    /// certificate. A demoted manager leaves the Raft voters here.
    pub(super) fn change_roles(
        &self,
        references: &[String],
        role: Role,
    ) -> Result<Response, ClusterError> {
        // Held so that this node's agent, seeing its own demotion, does not
        // stop Raft before the leader (this node) has removed itself.
        let host = self.host()?;
        let _transition = host.hold_role();
        let mut notes = Vec::new();
        for reference in references {
            let (id, current, managers) = self.read_store(|s| {
                s.resolve(reference)
                    .map(|id| (id.clone(), s.nodes[&id].role, s.managers().count()))
            })??;
            if current == role {
                notes.push(format!("Node {reference} is already a {role}."));
                continue;
            }
            if role == Role::Worker && managers <= 1 {
                return Err(ClusterError::Refused(format!(
                    "demote {reference}: attempting to demote the last manager of the swarm"
                )));
            }
            // The role first, while the node is still a voter and applies
            // it; then out of the voters. A leader demoting itself can lose
            // leadership midway and then asks the next leader (through
            // `lead`), which takes that one request from a worker's
            // certificate: the node's own removal.
            self.commit_here(Command::UpdateNode {
                id: id.clone(),
                change: NodeChange {
                    role: Some(role),
                    ..NodeChange::default()
                },
            })?;
            if role == Role::Worker {
                self.leave_voters(&id)?;
            }
            tracing::info!(node = %id, %role, "node role changed");
            notes.push(match role {
                Role::Manager => format!("Node {reference} promoted to a manager in the swarm."),
                Role::Worker => format!("Manager {reference} demoted in the swarm."),
            });
        }
        Ok(Response::Notes(notes))
    }

    /// Takes a demoted manager out of the Raft voters through the leader; a
    /// change that could not be made or committed yet (another membership
    /// change still committing, a loaded machine, an election midway) is
    /// tried again for a while.
    fn leave_voters(&self, id: &str) -> Result<(), ClusterError> {
        let deadline = Instant::now() + REMOVE_VOTER_PATIENCE;
        loop {
            let work = Forwarded::RemoveVoter {
                node_id: id.to_owned(),
            };
            match self.lead(work, 0) {
                Err(ClusterError::Unavailable(_)) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                outcome => return outcome.map(drop),
            }
        }
    }

    pub(super) fn remove(&self, reference: &str, force: bool) -> Result<Response, ClusterError> {
        let (id, role, period) = self.read_store(|s| {
            s.resolve(reference).map(|id| {
                (
                    id.clone(),
                    s.nodes[&id].role,
                    Duration::from_millis(s.heartbeat_millis.max(1)),
                )
            })
        })??;
        if role == Role::Manager {
            return Err(ClusterError::Refused(format!(
                "rm {reference}: node {id} is a cluster manager and is a member of the raft cluster. It must be demoted to worker before removal"
            )));
        }
        if self.alive(&id, period) && !force {
            return Err(ClusterError::Refused(format!(
                "rm {reference}: node {id} is not down and can't be removed; stop it first (`swarm leave` there) or use --force"
            )));
        }
        self.commit_here(Command::RemoveNode { id: id.clone() })?;
        self.forget(&id);
        tracing::info!(node = %id, "node removed");
        Ok(Response::Done)
    }
}

fn availability_word(availability: Availability) -> &'static str {
    match availability {
        Availability::Active => "Active",
        Availability::Pause => "Pause",
        Availability::Drain => "Drain",
    }
}
