//! The agent's link to the managers: a heartbeat over mutual TLS with the
//! node's certificate, every period the manager asks for (a manager that
//! stops hearing from a node marks it Down after three missed beats), and
//! the certificate's renewal once half its life has passed.

use std::{net::SocketAddr, sync::Weak, time::Duration};

use tokio::sync::watch;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use super::{
    api::proto::{
        HeartbeatRequest, RenewRequest, dispatcher_client::DispatcherClient,
        node_ca_client::NodeCaClient,
    },
    node::Membership,
    pki::{self, CertificateSubject, NodeCertificate},
};

/// How long to wait before trying a manager again after a failure.
const RETRY: Duration = Duration::from_millis(500);

/// Sends heartbeats to `manager` until `stop` turns true.
pub async fn run(
    membership: Weak<Membership>,
    manager: SocketAddr,
    ca_pem: String,
    period: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut period = period;
    loop {
        // The certificate may have been renewed since the last connection.
        let Some(certificate) = membership.upgrade().and_then(|m| m.certificate()) else {
            return;
        };
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&ca_pem))
            .identity(Identity::from_pem(
                &certificate.cert_pem,
                &certificate.key_pem,
            ))
            .domain_name(manager.ip().to_string());
        let ended = tokio::select! {
            ended = beat_until_failure(manager, &tls, &certificate, &membership, &mut period) => ended,
            _ = stop.wait_for(|s| *s) => return,
        };
        match ended {
            Ended::Renewed => {
                tracing::info!(%manager, "certificate renewed; reconnecting with it");
                continue;
            }
            Ended::Failed(err) => {
                tracing::warn!(%manager, error = %err, "heartbeat failed; retrying")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(RETRY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Why a connection to the manager ended.
enum Ended {
    /// The certificate was renewed: reconnect with the new one.
    Renewed,
    Failed(String),
}

/// Connects and beats every `period` (as the manager last asked) until
/// something fails or the certificate was renewed.
async fn beat_until_failure(
    manager: SocketAddr,
    tls: &ClientTlsConfig,
    certificate: &NodeCertificate,
    membership: &Weak<Membership>,
    period: &mut Duration,
) -> Ended {
    let channel = match Channel::from_shared(format!("https://{manager}"))
        .map_err(|e| e.to_string())
        .and_then(|endpoint| endpoint.tls_config(tls.clone()).map_err(|e| e.to_string()))
    {
        Ok(endpoint) => endpoint,
        Err(err) => return Ended::Failed(err),
    };
    let channel = match channel
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect()
        .await
    {
        Ok(channel) => channel,
        Err(err) => return Ended::Failed(err.to_string()),
    };
    let mut ca = NodeCaClient::new(channel.clone());
    let mut client = DispatcherClient::new(channel);
    loop {
        if renewal_due(certificate) {
            match renew(&mut ca).await {
                Ok(renewed) => {
                    let Some(membership) = membership.upgrade() else {
                        return Ended::Failed("shutting down".into());
                    };
                    return match membership.store_certificate(renewed) {
                        Ok(()) => Ended::Renewed,
                        Err(err) => Ended::Failed(err.to_string()),
                    };
                }
                Err(err) => tracing::warn!(error = %err, "certificate renewal failed; retrying"),
            }
        }
        match client.heartbeat(HeartbeatRequest {}).await {
            Ok(answer) => {
                let asked = Duration::from_millis(answer.into_inner().period_millis);
                if !asked.is_zero() {
                    *period = asked;
                }
            }
            Err(status) => return Ended::Failed(status.message().to_owned()),
        }
        tokio::time::sleep(*period).await;
    }
}

fn renewal_due(certificate: &NodeCertificate) -> bool {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    CertificateSubject::from_pem(&certificate.cert_pem).map_or(true, |s| s.renewal_due(now))
}

/// A new key and a certificate for it, over the current connection (which
/// the current certificate authenticates).
async fn renew(ca: &mut NodeCaClient<Channel>) -> Result<NodeCertificate, String> {
    let (key, csr_pem) = pki::key_and_request().map_err(|e| e.to_string())?;
    let response = ca
        .renew(RenewRequest { csr_pem })
        .await
        .map_err(|status| status.message().to_owned())?;
    Ok(NodeCertificate {
        cert_pem: response.into_inner().cert_pem,
        key_pem: key.serialize_pem(),
    })
}
