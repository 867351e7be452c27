//! What every manager answers agents, after swarmkit's dispatcher:
//! heartbeats (the leader records who is alive), assignments (a long poll
//! that answers when the store changes), task reports, and answers to
//! `service logs` requests.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use tonic::{Request, Response, Status};

use super::{Manager, assignments::node_view, raft::Member};
use crate::{
    api::{
        ClusterError,
        assignments::{NodeView, TaskLog},
        proto::{
            self, AssignmentsRequest, AssignmentsResponse, HeartbeatRequest, HeartbeatResponse,
            LogReport, LogReportResponse, TaskReport, TaskReportResponse,
            dispatcher_server::Dispatcher,
        },
        tasks::TaskStatus,
    },
    ca::{pki::CertificateSubject, tls::caller},
    manager::store::{Command, NodeChange, NodeRecord, services::TaskChange},
};

/// How long an agent's request for assignments waits for a change.
const ASSIGNMENTS_WAIT: Duration = Duration::from_secs(5);
/// A node missing this many heartbeats in a row is Down.
const MISSED_BEATS: u32 = 3;

/// On the leader: when each node was last heard from.
#[derive(Default)]
pub(super) struct Liveness {
    pub(super) seen: HashMap<String, Instant>,
    /// When this manager became leader: nodes count as heard from then, so
    /// a new leader does not call every node Down before they report to it.
    pub(super) leader_since: Option<Instant>,
    /// The issuer of the certificate each node last called with (DER
    /// name), for Docker's TLS status.
    pub(super) issuers: HashMap<String, Vec<u8>>,
}

impl Manager {
    /// A manager hearing from a node. The leader records it alive; any
    /// manager says how often to call again, who leads, where the managers
    /// are, and the role the cluster gives the caller.
    pub fn heartbeat(
        &self,
        subject: &CertificateSubject,
    ) -> Result<(proto::HeartbeatResponse, Option<NodeRecord>), ClusterError> {
        self.authorize_member(subject)?;
        let raft = self.raft()?;
        let (record, managers, period) = self.read_store(|s| {
            (
                s.nodes.get(&subject.node_id).cloned(),
                s.managers().map(|m| m.addr.to_string()).collect::<Vec<_>>(),
                s.heartbeat_millis,
            )
        })?;
        let record = record.ok_or_else(|| {
            ClusterError::Refused(format!(
                "node {} is not a member of this swarm (it was removed)",
                subject.node_id
            ))
        })?;
        let leading = raft.is_leader();
        if leading {
            let mut liveness = self.liveness();
            liveness
                .seen
                .insert(subject.node_id.clone(), Instant::now());
            liveness
                .issuers
                .insert(subject.node_id.clone(), subject.issuer.clone());
        }
        let response = proto::HeartbeatResponse {
            period_millis: period.max(1),
            leader: if leading {
                String::new()
            } else {
                raft.leader().map(|l| l.addr).unwrap_or_default()
            },
            managers,
            role: record.role.to_string(),
        };
        Ok((response, leading.then_some(record)))
    }

    /// The leader records the engine labels node `id` reports (its daemon
    /// restarted with other `--label`s than the store holds).
    fn note_engine_labels(
        &self,
        id: String,
        reported: BTreeMap<String, String>,
    ) -> Result<(), ClusterError> {
        self.write(Command::UpdateNode {
            id,
            change: NodeChange {
                engine_labels: Some(reported),
                ..NodeChange::default()
            },
        })
    }

    /// Whether the leader heard from node `id` within three heartbeats (or,
    /// for one it has not heard from yet, since it became leader).
    pub fn alive(&self, id: &str, period: Duration) -> bool {
        let liveness = self.liveness();
        let last = liveness.seen.get(id).copied().max(liveness.leader_since);
        last.is_some_and(|seen| seen.elapsed() <= period * MISSED_BEATS)
    }

    /// Forgets every node (this node left its swarm).
    pub fn forget_all(&self) {
        *self.liveness() = Liveness::default();
    }

    /// Forgets a removed node.
    pub(super) fn forget(&self, id: &str) {
        let mut liveness = self.liveness();
        liveness.seen.remove(id);
        liveness.issuers.remove(id);
    }

    /// Who issued the certificate node `id` last called with, if heard.
    pub(super) fn issuer_of(&self, id: &str) -> Option<Vec<u8>> {
        self.liveness().issuers.get(id).cloned()
    }

    /// An agent's assignments, once the store is past `known` (or after a
    /// few seconds without change).
    pub async fn assignments(
        &self,
        subject: &CertificateSubject,
        known: u64,
    ) -> Result<NodeView, ClusterError> {
        self.authorize_member(subject)?;
        let raft = self.raft()?;
        let mut metrics = raft.raft.metrics();
        let applied =
            |m: &openraft::RaftMetrics<u64, Member>| m.last_applied.map_or(0, |l| l.index);
        let _ =
            tokio::time::timeout(ASSIGNMENTS_WAIT, metrics.wait_for(|m| applied(m) != known)).await;
        let version = applied(&metrics.borrow());
        self.read_store(|s| node_view(s, &subject.node_id, version))
    }

    /// Task states an agent observed, for its own tasks only.
    /// A node's answer to a `service logs` request this manager serves.
    pub fn deliver_logs(&self, request_id: &str, from: &CertificateSubject, logs: Vec<TaskLog>) {
        self.log_waiters.deliver(request_id, &from.node_id, logs);
    }

    pub fn report_tasks(
        &self,
        subject: &CertificateSubject,
        statuses: Vec<(String, TaskStatus)>,
    ) -> Result<(), ClusterError> {
        self.authorize_member(subject)?;
        let changes: Vec<TaskChange> = self.read_store(|s| {
            statuses
                .into_iter()
                .filter(|(id, _)| {
                    s.tasks
                        .get(id)
                        .is_some_and(|t| t.node_id.as_deref() == Some(&subject.node_id))
                })
                .map(|(id, status)| TaskChange::Status { id, status })
                .collect()
        })?;
        if changes.is_empty() {
            return Ok(());
        }
        self.write(Command::Tasks(changes))
    }
}

/// The `Dispatcher` gRPC service.
pub(super) struct DispatcherService {
    pub(super) manager: Arc<Manager>,
}

#[tonic::async_trait]
impl Dispatcher for DispatcherService {
    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        // TLS has checked the certificate against the CA; its subject says
        // which node is calling.
        let subject = caller(&request)?;
        let (response, record) = self.manager.heartbeat(&subject).map_err(Status::from)?;
        let reported: BTreeMap<String, String> =
            request.into_inner().engine_labels.into_iter().collect();
        if let Some(record) = record.filter(|r| r.engine_labels != reported) {
            let manager = self.manager.clone();
            tokio::task::spawn_blocking(move || manager.note_engine_labels(record.id, reported))
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(Status::from)?;
        }
        Ok(Response::new(response))
    }

    async fn assignments(
        &self,
        request: Request<AssignmentsRequest>,
    ) -> Result<Response<AssignmentsResponse>, Status> {
        let subject = caller(&request)?;
        let view = self
            .manager
            .assignments(&subject, request.get_ref().known_version)
            .await
            .map_err(Status::from)?;
        let view_json = serde_json::to_vec(&view).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(AssignmentsResponse { view_json }))
    }

    async fn report_tasks(
        &self,
        request: Request<TaskReport>,
    ) -> Result<Response<TaskReportResponse>, Status> {
        let subject = caller(&request)?;
        let statuses = serde_json::from_slice(&request.get_ref().statuses_json)
            .map_err(|e| Status::invalid_argument(format!("malformed task report: {e}")))?;
        let manager = self.manager.clone();
        tokio::task::spawn_blocking(move || manager.report_tasks(&subject, statuses))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(Status::from)?;
        Ok(Response::new(TaskReportResponse {}))
    }

    async fn report_logs(
        &self,
        request: Request<LogReport>,
    ) -> Result<Response<LogReportResponse>, Status> {
        let subject = caller(&request)?;
        let report = request.into_inner();
        let logs = serde_json::from_slice(&report.logs_json)
            .map_err(|e| Status::invalid_argument(format!("malformed log report: {e}")))?;
        self.manager
            .deliver_logs(&report.request_id, &subject, logs);
        Ok(Response::new(LogReportResponse {}))
    }
}
