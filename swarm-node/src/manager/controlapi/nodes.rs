//! `swarm node ...` and `swarm join-token` as the leader answers them.

use std::time::{Duration, Instant};

use bollard::models as docker;

use crate::{
    api::{
        Availability, ClusterError, Role,
        control::{NodeRow, NodeUpdateRequest, Response},
        filters::{self, Filters, NodeFacts},
    },
    ca::pki::{JoinToken, RootCa},
    manager::{
        Manager,
        leader::Forwarded,
        raft,
        store::{Command, NodeChange, NodeRecord},
    },
};

/// What nodes report as their engine's version.
const ENGINE_VERSION: &str = concat!("swarm ", env!("CARGO_PKG_VERSION"));

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

    pub(super) fn nodes(&self, origin: &str, filters: &Filters) -> Result<Response, ClusterError> {
        filters.check(filters::NODE_KEYS)?;
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
            .filter(|node| {
                filters.node_matches(&NodeFacts {
                    id: &node.id,
                    hostname: &node.hostname,
                    role: &node.role.to_string(),
                    labels: &node.labels,
                    engine_labels: &node.engine_labels,
                })
            })
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
                    engine_version: ENGINE_VERSION.into(),
                    id: node.id,
                }
            })
            .collect();
        Ok(Response::Nodes(rows))
    }

    /// One node as Docker's `Node`; `self` is the node asking, as in Docker.
    pub(super) fn inspect(&self, reference: &str, origin: &str) -> Result<Response, ClusterError> {
        let reference = if reference == "self" {
            origin
        } else {
            reference
        };
        let node = self.read_store(|s| s.resolve(reference).map(|id| s.nodes[&id].clone()))??;
        let (leader, period) = self.node_view()?;
        let object = self.node_object(&node, leader, period);
        Ok(Response::NodeInspect(serde_json::Value::Array(vec![
            object,
        ])))
    }

    /// Every node as Docker's objects (the Engine API's list).
    pub(super) fn node_objects(&self) -> Result<Response, ClusterError> {
        let nodes = self.read_store(|s| s.nodes.values().cloned().collect::<Vec<_>>())?;
        let (leader, period) = self.node_view()?;
        let objects = nodes
            .iter()
            .map(|node| self.node_object(node, leader, period))
            .collect();
        Ok(Response::Json(serde_json::Value::Array(objects)))
    }

    /// The Raft ID of the leader, and how often nodes beat.
    fn node_view(&self) -> Result<(Option<u64>, Duration), ClusterError> {
        let leader = self.raft()?.metrics().current_leader;
        let period = self.read_store(|s| Duration::from_millis(s.heartbeat_millis.max(1)))?;
        Ok((leader, period))
    }

    /// A node as Docker's `Node`, with whether it is heard from now.
    fn node_object(
        &self,
        node: &NodeRecord,
        leader: Option<u64>,
        period: Duration,
    ) -> serde_json::Value {
        let ready = node.id == self.node.node_id || self.alive(&node.id, period);
        let object = docker::Node {
            id: Some(node.id.clone()),
            version: Some(docker::ObjectVersion {
                index: Some(node.version),
            }),
            created_at: None,
            updated_at: None,
            spec: Some(docker::NodeSpec {
                name: None,
                labels: Some(node.labels.clone().into_iter().collect()),
                role: Some(match node.role {
                    Role::Manager => docker::NodeSpecRoleEnum::MANAGER,
                    Role::Worker => docker::NodeSpecRoleEnum::WORKER,
                }),
                availability: Some(match node.availability {
                    Availability::Active => docker::NodeSpecAvailabilityEnum::ACTIVE,
                    Availability::Pause => docker::NodeSpecAvailabilityEnum::PAUSE,
                    Availability::Drain => docker::NodeSpecAvailabilityEnum::DRAIN,
                }),
            }),
            description: Some(docker::NodeDescription {
                hostname: Some(node.hostname.clone()),
                platform: Some(docker::Platform {
                    architecture: Some(node.platform.architecture.clone()),
                    os: Some(node.platform.os.clone()),
                }),
                resources: Some(docker::ResourceObject {
                    nano_cpus: Some(node.resources.nano_cpus as i64),
                    memory_bytes: Some(node.resources.memory_bytes as i64),
                    generic_resources: None,
                }),
                engine: Some(docker::EngineDescription {
                    engine_version: Some(ENGINE_VERSION.into()),
                    labels: Some(node.engine_labels.clone().into_iter().collect()),
                    plugins: None,
                }),
                tls_info: None,
            }),
            status: Some(docker::NodeStatus {
                state: Some(if ready {
                    docker::NodeState::READY
                } else {
                    docker::NodeState::DOWN
                }),
                message: None,
                addr: Some(node.addr.ip().to_string()),
            }),
            manager_status: (node.role == Role::Manager).then(|| docker::ManagerStatus {
                leader: Some(leader == Some(raft::raft_id(&node.id))),
                reachability: Some(if ready {
                    docker::Reachability::REACHABLE
                } else {
                    docker::Reachability::UNREACHABLE
                }),
                addr: Some(node.addr.to_string()),
            }),
        };
        serde_json::to_value(object).expect("plain data serializes")
    }

    pub(super) fn update(&self, request: &NodeUpdateRequest) -> Result<Response, ClusterError> {
        let (id, labels, version) = self.read_store(|s| {
            s.resolve(&request.node).map(|id| {
                let node = &s.nodes[&id];
                (id.clone(), node.labels.clone(), node.version)
            })
        })??;
        if request.version.is_some_and(|v| v != version) {
            return Err(ClusterError::Refused("update out of sequence".into()));
        }
        let (mut label_add, mut label_rm) = (request.label_add.clone(), request.label_rm.clone());
        if let Some(wanted) = &request.labels {
            label_rm.extend(labels.keys().filter(|k| !wanted.contains_key(*k)).cloned());
            label_add.extend(
                wanted
                    .iter()
                    .filter(|(k, v)| labels.get(*k) != Some(*v))
                    .map(|(k, v)| (k.clone(), v.clone())),
            );
        }
        if let Some(role) = request.role {
            self.change_roles(std::slice::from_ref(&id), role)?;
        }
        let change = NodeChange {
            availability: request.availability,
            label_add,
            label_rm,
            role: None,
            engine_labels: None,
            // A role change first bumps the version the caller read.
            expect_version: request.version.filter(|_| request.role.is_none()),
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
