//! The agent's link to the managers: a heartbeat over mutual TLS with the
//! node's certificate, every period the manager asks for. A manager that
//! stops hearing from a node marks it Down after three missed beats.

use std::{net::SocketAddr, time::Duration};

use tokio::sync::watch;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use super::{
    api::proto::{HeartbeatRequest, dispatcher_client::DispatcherClient},
    pki::NodeCertificate,
};

/// How long to wait before trying a manager again after a failure.
const RETRY: Duration = Duration::from_millis(500);

/// Sends heartbeats to `manager` until `stop` turns true.
pub async fn run(
    manager: SocketAddr,
    certificate: NodeCertificate,
    ca_pem: String,
    period: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca_pem))
        .identity(Identity::from_pem(
            &certificate.cert_pem,
            &certificate.key_pem,
        ))
        .domain_name(manager.ip().to_string());
    let mut period = period;
    loop {
        let failed = tokio::select! {
            err = beat_until_failure(manager, &tls, &mut period) => err,
            _ = stop.wait_for(|s| *s) => return,
        };
        tracing::warn!(%manager, error = %failed, "heartbeat failed; retrying");
        tokio::select! {
            () = tokio::time::sleep(RETRY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Connects and beats every `period` (as the manager last asked) until
/// something fails; returns what.
async fn beat_until_failure(
    manager: SocketAddr,
    tls: &ClientTlsConfig,
    period: &mut Duration,
) -> String {
    let channel = match Channel::from_shared(format!("https://{manager}"))
        .map_err(|e| e.to_string())
        .and_then(|endpoint| endpoint.tls_config(tls.clone()).map_err(|e| e.to_string()))
    {
        Ok(endpoint) => endpoint,
        Err(err) => return err,
    };
    let channel = match channel
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect()
        .await
    {
        Ok(channel) => channel,
        Err(err) => return err.to_string(),
    };
    let mut client = DispatcherClient::new(channel);
    loop {
        match client.heartbeat(HeartbeatRequest {}).await {
            Ok(answer) => {
                let asked = Duration::from_millis(answer.into_inner().period_millis);
                if !asked.is_zero() {
                    *period = asked;
                }
            }
            Err(status) => return status.message().to_owned(),
        }
        tokio::time::sleep(*period).await;
    }
}
