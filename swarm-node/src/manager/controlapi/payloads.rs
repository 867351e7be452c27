//! `swarm secret|config create|ls|inspect|rm`, as the leader answers them.
//! A secret's data is never in an answer; a config's is, base64, as Docker
//! shows it.

use std::collections::BTreeMap;

use base64::{Engine as _, engine::general_purpose::STANDARD};

use crate::{
    api::{
        ClusterError,
        control::{PayloadCreateRequest, Response},
        filters::{self, Filters},
        mounts::{Opaque, PayloadKind},
    },
    clock::{now_secs, rfc3339},
    identity::new_id,
    manager::{
        Manager,
        store::{Command, payloads::PayloadRecord},
    },
};

impl Manager {
    pub(super) fn create_payload(
        &self,
        request: &PayloadCreateRequest,
    ) -> Result<Response, ClusterError> {
        let kind = request.kind;
        check_name(&request.name)?;
        let size = request.data.0.len();
        if size == 0 || size >= kind.max_size() {
            return Err(ClusterError::Refused(format!(
                "{} data must be larger than 0 and less than {} bytes",
                kind.word(),
                kind.max_size()
            )));
        }
        let id = new_id();
        let now = now_secs();
        self.commit_here(Command::CreatePayload {
            kind,
            record: PayloadRecord {
                id: id.clone(),
                name: request.name.clone(),
                labels: request.labels.iter().cloned().collect(),
                data: request.data.clone(),
                created_at: now,
                updated_at: now,
                version: 1,
            },
        })?;
        tracing::info!(kind = kind.word(), name = %request.name, %id, "created");
        Ok(Response::Notes(vec![id]))
    }

    pub(super) fn list_payloads(
        &self,
        kind: PayloadKind,
        filters: &Filters,
    ) -> Result<Response, ClusterError> {
        filters.check(filters::PAYLOAD_KEYS)?;
        let rows = self.read_store(|s| {
            s.payloads(kind)
                .values()
                .filter(|p| filters.payload_matches(&p.id, &p.name, &p.labels))
                .map(|p| {
                    serde_json::json!({
                        "ID": p.id,
                        "Name": p.name,
                        "Driver": "",
                        "CreatedAt": rfc3339(p.created_at),
                        "UpdatedAt": rfc3339(p.updated_at),
                        "Labels": p.labels,
                    })
                })
                .collect()
        })?;
        Ok(Response::Rows(rows))
    }

    pub(super) fn inspect_payloads(
        &self,
        kind: PayloadKind,
        references: &[String],
    ) -> Result<Response, ClusterError> {
        let mut shown = Vec::new();
        for reference in references {
            let payload = self
                .read_store(|s| s.resolve_payload(kind, reference).cloned())?
                .map_err(ClusterError::from)?;
            let mut spec = serde_json::json!({
                "Name": payload.name,
                "Labels": payload.labels,
            });
            if kind == PayloadKind::Config {
                spec["Data"] = STANDARD.encode(&payload.data.0).into();
            }
            shown.push(serde_json::json!({
                "ID": payload.id,
                "Version": {"Index": payload.version},
                "CreatedAt": rfc3339(payload.created_at),
                "UpdatedAt": rfc3339(payload.updated_at),
                "Spec": spec,
            }));
        }
        Ok(Response::Json(serde_json::Value::Array(shown)))
    }

    /// A secret's or config's labels replaced, as the Engine API's update
    /// does; its data cannot change (Docker's rule).
    pub(super) fn update_payload(
        &self,
        kind: PayloadKind,
        reference: &str,
        version: Option<u64>,
        labels: &BTreeMap<String, String>,
        data: Option<&Opaque>,
    ) -> Result<Response, ClusterError> {
        let payload = self
            .read_store(|s| s.resolve_payload(kind, reference).cloned())?
            .map_err(ClusterError::from)?;
        if data.is_some_and(|d| !d.0.is_empty() && d.0 != payload.data.0) {
            return Err(ClusterError::Refused(
                "only updates to Labels are allowed".into(),
            ));
        }
        self.commit_here(Command::UpdatePayload {
            kind,
            id: payload.id.clone(),
            labels: labels.clone(),
            expect_version: version,
            at: now_secs(),
        })?;
        Ok(Response::Done)
    }

    /// Each one named, in order; the first refused stops the rest.
    pub(super) fn remove_payloads(
        &self,
        kind: PayloadKind,
        references: &[String],
    ) -> Result<Response, ClusterError> {
        let mut removed = Vec::new();
        for reference in references {
            let id = self
                .read_store(|s| s.resolve_payload(kind, reference).map(|p| p.id.clone()))?
                .map_err(ClusterError::from)?;
            self.commit_here(Command::RemovePayload {
                kind,
                id: id.clone(),
            })?;
            tracing::info!(kind = kind.word(), %reference, %id, "removed");
            removed.push(reference.clone());
        }
        Ok(Response::Notes(removed))
    }

    /// Fills in the IDs of the secrets and configs a spec names, refusing
    /// one that does not exist in Docker's words.
    pub(super) fn resolve_spec_payloads(
        &self,
        spec: &mut crate::api::specs::ServiceSpec,
    ) -> Result<(), ClusterError> {
        for (kind, references) in [
            (PayloadKind::Secret, &mut spec.secrets),
            (PayloadKind::Config, &mut spec.configs),
        ] {
            let mut targets = BTreeMap::new();
            for reference in references.iter_mut() {
                let found = self.read_store(|s| {
                    s.resolve_payload(kind, &reference.name)
                        .map(|p| (p.id.clone(), p.name.clone()))
                })?;
                let (id, name) = found.map_err(|_| {
                    ClusterError::Refused(format!("{} not found: {}", kind.word(), reference.name))
                })?;
                reference.id = id;
                reference.name = name;
                let path = reference.path(kind == PayloadKind::Secret);
                if let Some(other) = targets.insert(path.clone(), reference.name.clone()) {
                    return Err(ClusterError::Refused(format!(
                        "duplicate {} target for {other} not allowed: {path}",
                        kind.word()
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Docker's rule for secret and config names.
fn check_name(name: &str) -> Result<(), ClusterError> {
    let bytes = name.as_bytes();
    let fine = !bytes.is_empty()
        && bytes.len() <= 64
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if fine {
        Ok(())
    } else {
        Err(ClusterError::Refused(
            "invalid name, only 64 [a-zA-Z0-9-_.] characters allowed, and the start and end character must be [a-zA-Z0-9]".into(),
        ))
    }
}
