//! Secrets and configs in the replicated store: named bytes that a
//! service's tasks see as files. In memory the store holds them in clear;
//! on disk the Raft log and snapshots are sealed (`raft::data_key`), and
//! they leave the managers only in the assignments of nodes whose tasks
//! use them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ClusterState, Refusal};
pub use crate::api::mounts::PayloadKind;
use crate::{
    api::mounts::Opaque,
    manager::reference::{Lookup, lookup},
};

/// A secret or a config as the store keeps it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadRecord {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub data: Opaque,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    pub updated_at: u64,
    /// Bumped by every change (Docker's `Version.Index`).
    pub version: u64,
}

impl std::fmt::Debug for PayloadRecord {
    /// Never the data: records end up in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayloadRecord")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("labels", &self.labels)
            .field("data", &self.data)
            .finish_non_exhaustive()
    }
}

impl ClusterState {
    pub fn payloads(&self, kind: PayloadKind) -> &BTreeMap<String, PayloadRecord> {
        match kind {
            PayloadKind::Secret => &self.secrets,
            PayloadKind::Config => &self.configs,
        }
    }

    fn payloads_mut(&mut self, kind: PayloadKind) -> &mut BTreeMap<String, PayloadRecord> {
        match kind {
            PayloadKind::Secret => &mut self.secrets,
            PayloadKind::Config => &mut self.configs,
        }
    }

    /// The secret or config `reference` names: its ID, name or a unique
    /// ID prefix.
    pub fn resolve_payload(
        &self,
        kind: PayloadKind,
        reference: &str,
    ) -> Result<&PayloadRecord, Refusal> {
        match lookup(
            self.payloads(kind).values(),
            reference,
            |p| &p.id,
            |p| &p.name,
        ) {
            Lookup::Found(payload) => Ok(payload),
            Lookup::Missing | Lookup::Ambiguous(_) => Err(Refusal::NoSuchPayload {
                kind,
                reference: reference.to_owned(),
            }),
        }
    }

    /// The names of the services whose tasks use payload `id`.
    pub fn payload_users(&self, kind: PayloadKind, id: &str) -> Vec<String> {
        self.services
            .values()
            .filter(|service| {
                let references = match kind {
                    PayloadKind::Secret => &service.spec.secrets,
                    PayloadKind::Config => &service.spec.configs,
                };
                references.iter().any(|r| r.id == id)
            })
            .map(|service| service.spec.name.clone())
            .collect()
    }

    pub(super) fn create_payload(
        &mut self,
        kind: PayloadKind,
        record: PayloadRecord,
    ) -> Result<(), Refusal> {
        if self.payloads(kind).values().any(|p| p.name == record.name) {
            return Err(Refusal::PayloadExists {
                kind,
                name: record.name,
            });
        }
        self.payloads_mut(kind).insert(record.id.clone(), record);
        Ok(())
    }

    pub(super) fn update_payload(
        &mut self,
        kind: PayloadKind,
        id: &str,
        labels: BTreeMap<String, String>,
        expect_version: Option<u64>,
        at: u64,
    ) -> Result<(), Refusal> {
        let payload =
            self.payloads_mut(kind)
                .get_mut(id)
                .ok_or_else(|| Refusal::NoSuchPayload {
                    kind,
                    reference: id.to_owned(),
                })?;
        if expect_version.is_some_and(|v| v != payload.version) {
            return Err(Refusal::OutOfSequence);
        }
        payload.labels = labels;
        payload.version += 1;
        payload.updated_at = at;
        Ok(())
    }

    pub(super) fn remove_payload(&mut self, kind: PayloadKind, id: &str) -> Result<(), Refusal> {
        let users = self.payload_users(kind, id);
        let payload = self
            .payloads(kind)
            .get(id)
            .ok_or_else(|| Refusal::NoSuchPayload {
                kind,
                reference: id.to_owned(),
            })?;
        if !users.is_empty() {
            return Err(Refusal::PayloadInUse {
                kind,
                name: payload.name.clone(),
                services: users,
            });
        }
        self.payloads_mut(kind).remove(id);
        Ok(())
    }
}
