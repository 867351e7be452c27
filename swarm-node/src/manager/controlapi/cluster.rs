//! The swarm itself as the leader shows it: Docker's `Swarm` object.

use bollard::models as docker;

use crate::{
    api::{ClusterError, Role, control::Response},
    ca::unlock_key::UnlockKey,
    clock::rfc3339,
    manager::{Manager, raft::LOG_KEPT_BEHIND_SNAPSHOT, store::Command},
};

const NANOS_PER_MILLI: i64 = 1_000_000;

impl Manager {
    /// The swarm's ID, settings and join tokens (`GET /swarm`). Its
    /// version is the index of the Raft entry last applied.
    pub(super) fn swarm_inspect(&self) -> Result<Response, ClusterError> {
        let applied = self
            .raft()?
            .metrics()
            .last_applied
            .map_or(0, |log_id| log_id.index);
        let object = self.read_store(|s| docker::Swarm {
            id: Some(s.cluster_id.clone()),
            version: Some(docker::ObjectVersion {
                index: Some(applied),
            }),
            created_at: Some(rfc3339(s.created_at)),
            updated_at: Some(rfc3339(s.created_at)),
            spec: Some(docker::SwarmSpec {
                name: Some("default".into()),
                labels: Some(Default::default()),
                orchestration: Some(docker::SwarmSpecOrchestration {
                    task_history_retention_limit: Some(s.task_history() as i64),
                }),
                raft: Some(docker::SwarmSpecRaft {
                    snapshot_interval: Some(s.snapshot_interval()),
                    keep_old_snapshots: Some(s.max_snapshots.unwrap_or(0)),
                    log_entries_for_slow_followers: Some(LOG_KEPT_BEHIND_SNAPSHOT),
                    ..Default::default()
                }),
                dispatcher: Some(docker::SwarmSpecDispatcher {
                    heartbeat_period: Some(s.heartbeat_millis as i64 * NANOS_PER_MILLI),
                }),
                ca_config: Some(docker::SwarmSpecCaConfig {
                    node_cert_expiry: Some(s.cert_expiry_secs as i64 * 1_000 * NANOS_PER_MILLI),
                    ..Default::default()
                }),
                encryption_config: Some(docker::SwarmSpecEncryptionConfig {
                    auto_lock_managers: Some(s.unlock_key.is_some()),
                }),
                task_defaults: None,
            }),
            tls_info: Some(docker::TlsInfo {
                trust_root: Some(s.ca_cert_pem.clone()),
                ..Default::default()
            }),
            root_rotation_in_progress: Some(false),
            data_path_port: None,
            default_addr_pool: Some(
                s.address_pools()
                    .iter()
                    .map(|(ip, prefix)| format!("{ip}/{prefix}"))
                    .collect(),
            ),
            subnet_size: Some(u32::from(s.subnet_size())),
            join_tokens: Some(docker::JoinTokens {
                worker: Some(s.token(Role::Worker).to_owned()),
                manager: Some(s.token(Role::Manager).to_owned()),
            }),
        })?;
        Ok(Response::Json(
            serde_json::to_value(object).expect("plain data serializes"),
        ))
    }

    /// `swarm update --autolock=true|false`: a new unlock key when turned
    /// on (an existing one is kept), none when turned off. Each manager
    /// seals its keys under it (or writes them in clear) once it applies
    /// the change.
    pub(super) fn set_autolock(&self, on: bool) -> Result<(), ClusterError> {
        let current = self.read_store(|s| s.unlock_key.clone())?;
        let key = match (on, current) {
            (true, Some(_)) | (false, None) => return Ok(()),
            (true, None) => Some(new_unlock_key()?),
            (false, Some(_)) => None,
        };
        self.commit_here(Command::SetUnlockKey { key })
    }

    /// `swarm unlock-key [--rotate]`: the unlock key, as Docker's
    /// `{"UnlockKey": ...}`; empty while autolock is off. A rotated key
    /// replaces the old one in the store; a manager keeps its keys sealed
    /// under the old one until it applies the change, so the old key
    /// still unlocks a manager that was down meanwhile.
    pub(super) fn unlock_key(&self, rotate: bool) -> Result<Response, ClusterError> {
        if rotate {
            if self.read_store(|s| s.unlock_key.is_none())? {
                return Err(ClusterError::Refused(
                    "cannot rotate because autolock is not turned on".into(),
                ));
            }
            self.commit_here(Command::SetUnlockKey {
                key: Some(new_unlock_key()?),
            })?;
        }
        let key = self.read_store(|s| s.unlock_key.clone())?;
        Ok(Response::Json(
            serde_json::json!({ "UnlockKey": key.unwrap_or_default() }),
        ))
    }
}

fn new_unlock_key() -> Result<String, ClusterError> {
    UnlockKey::generate()
        .map(|key| key.to_string())
        .map_err(|e| ClusterError::Unavailable(e.to_string()))
}
