//! The agent's link to the managers: a heartbeat over mutual TLS with the
//! node's certificate to the leader (a manager that does not lead names the
//! one that does), every period the leader asks for; the leader marks a node
//! Down after three missed beats. The certificate is renewed once half its
//! life has passed, or at once when the cluster gives the node another role
//! (promotion, demotion).

use std::{net::SocketAddr, sync::Weak, time::Duration};

use tokio::sync::watch;

use super::{AgentHost, CallError};
use crate::{
    api::proto::{
        HeartbeatRequest, RenewRequest, dispatcher_client::DispatcherClient,
        node_ca_client::NodeCaClient,
    },
    ca::{
        client::{Credentials, channel},
        pki::{self, CertificateSubject, NodeCertificate},
    },
};

/// How long to wait before trying the next manager after a failure.
const RETRY: Duration = Duration::from_millis(250);
/// A pause before following a manager's pointer to the leader.
const REDIRECT_PAUSE: Duration = Duration::from_millis(20);
/// A heartbeat not answered in this long counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Reports to the managers until `stop` turns true.
pub async fn run(
    host: Weak<dyn AgentHost>,
    managers: Vec<SocketAddr>,
    period: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut managers: Vec<String> = managers.iter().map(ToString::to_string).collect();
    let mut next = 0;
    let mut leader: Option<String> = None;
    let mut period = period;
    loop {
        // The certificate may have been renewed since the last connection.
        let Some(credentials) = host.upgrade().and_then(|m| m.credentials()) else {
            return;
        };
        let target = match leader.take() {
            Some(leader) => leader,
            None if managers.is_empty() => return,
            None => {
                next = (next + 1) % managers.len();
                managers[next].clone()
            }
        };
        let mut link = Link {
            target: &target,
            credentials: &credentials,
            host: &host,
            period: &mut period,
            managers: &mut managers,
        };
        let ended = tokio::select! {
            ended = link.beat_until_failure() => ended,
            _ = stop.wait_for(|s| *s) => return,
        };
        match ended {
            Ended::Redirected(to) => {
                tracing::debug!(from = %target, to = %to, "reporting to the leader");
                leader = Some(to);
                // Two managers with stale views could point at each other.
                tokio::time::sleep(REDIRECT_PAUSE).await;
                continue;
            }
            Ended::Renewed => {
                tracing::info!(manager = %target, "certificate renewed; reconnecting with it");
                leader = Some(target);
                continue;
            }
            Ended::Failed(err) => {
                tracing::warn!(manager = %target, error = %err, "heartbeat failed; trying the next manager")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(RETRY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Why a connection to a manager ended.
enum Ended {
    /// That manager does not lead; this one does.
    Redirected(String),
    /// The certificate was renewed: reconnect with the new one.
    Renewed,
    Failed(String),
}

struct Link<'a> {
    target: &'a str,
    credentials: &'a Credentials,
    host: &'a Weak<dyn AgentHost>,
    period: &'a mut Duration,
    managers: &'a mut Vec<String>,
}

impl Link<'_> {
    /// Beats every period (as the leader last asked) until something fails,
    /// the manager names another leader, or the certificate was renewed.
    async fn beat_until_failure(&mut self) -> Ended {
        let channel = match channel(self.target, self.credentials) {
            Ok(channel) => channel,
            Err(err) => return Ended::Failed(err.to_string()),
        };
        let mut ca = NodeCaClient::new(channel.clone());
        let mut client = DispatcherClient::new(channel);
        let held_role = CertificateSubject::from_pem(&self.credentials.cert_pem)
            .map(|s| s.role)
            .ok();
        let mut role_changed = false;
        let engine_labels: std::collections::HashMap<String, String> = self
            .host
            .upgrade()
            .map(|host| {
                host.local_node()
                    .engine_labels
                    .clone()
                    .into_iter()
                    .collect()
            })
            .unwrap_or_default();
        loop {
            if role_changed || renewal_due(&self.credentials.cert_pem) {
                match renew(&mut ca).await {
                    Ok(renewed) => return self.keep(renewed, role_changed),
                    Err(err) => {
                        tracing::warn!(error = %err, "certificate renewal failed; retrying")
                    }
                }
            }
            let answer = tokio::time::timeout(
                CALL_TIMEOUT,
                client.heartbeat(HeartbeatRequest {
                    engine_labels: engine_labels.clone(),
                }),
            )
            .await;
            let answer = match answer {
                Err(_) => return Ended::Failed(format!("no answer within {CALL_TIMEOUT:?}")),
                Ok(Err(status)) => return Ended::Failed(status.message().to_owned()),
                Ok(Ok(answer)) => answer.into_inner(),
            };
            let asked = Duration::from_millis(answer.period_millis);
            // A new period (`swarm update --dispatcher-heartbeat`) is kept
            // for the next start as the managers' addresses are.
            let period_changed = answer.period_millis > 0 && asked != *self.period;
            if answer.period_millis > 0 {
                *self.period = asked;
            }
            if !answer.managers.is_empty() && (*self.managers != answer.managers || period_changed)
            {
                *self.managers = answer.managers.clone();
                if let Some(host) = self.host.upgrade() {
                    let parsed = answer.managers.iter().filter_map(|m| m.parse().ok());
                    host.note_managers(parsed.collect(), answer.period_millis);
                }
            }
            if !answer.leader.is_empty() && answer.leader != self.target {
                return Ended::Redirected(answer.leader);
            }
            role_changed = held_role.is_some_and(|held| held.to_string() != answer.role);
            if !role_changed {
                tokio::time::sleep(*self.period).await;
            }
        }
    }

    /// Keeps a renewed certificate; with a new role, the node starts or
    /// stops being a manager.
    fn keep(&self, renewed: NodeCertificate, role_changed: bool) -> Ended {
        let Some(host) = self.host.upgrade() else {
            return Ended::Failed("shutting down".into());
        };
        if let Err(err) = host.keep_certificate(renewed) {
            return Ended::Failed(err.to_string());
        }
        if role_changed {
            tracing::info!("the cluster gave this node another role");
            tokio::task::spawn_blocking(move || host.role_changed());
        }
        Ended::Renewed
    }
}

fn renewal_due(cert_pem: &str) -> bool {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    CertificateSubject::from_pem(cert_pem).map_or(true, |s| s.renewal_due(now))
}

/// A new key and a certificate for it, over the current connection (which
/// the current certificate authenticates).
async fn renew(
    ca: &mut NodeCaClient<tonic::transport::Channel>,
) -> Result<NodeCertificate, CallError> {
    let (key, csr_pem) = pki::key_and_request()?;
    let response = tokio::time::timeout(CALL_TIMEOUT, ca.renew(RenewRequest { csr_pem }))
        .await
        .map_err(|_| CallError::Timeout(CALL_TIMEOUT))??;
    Ok(NodeCertificate {
        cert_pem: response.into_inner().cert_pem,
        key_pem: key.serialize_pem(),
    })
}
