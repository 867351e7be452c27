//! The client side of mutual TLS between nodes: the credentials a node
//! dials others with, and channels to a node's API authenticated both ways.

use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// How long connecting to a node may take before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// An address that cannot be dialled.
#[derive(Debug, thiserror::Error)]
#[error("cannot dial {addr}: {source}")]
pub struct ChannelError {
    addr: String,
    #[source]
    source: tonic::transport::Error,
}

/// The TLS material a node dials other nodes with.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
}

/// A channel to a node's API at `addr` (HOST:PORT), authenticated both ways.
/// It connects when first used.
pub fn channel(addr: &str, credentials: &Credentials) -> Result<Channel, ChannelError> {
    let host = addr
        .rsplit_once(':')
        .map_or(addr, |(host, _)| host)
        .trim_matches(|c| c == '[' || c == ']');
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&credentials.ca_pem))
        .identity(Identity::from_pem(
            &credentials.cert_pem,
            &credentials.key_pem,
        ))
        .domain_name(host.to_owned());
    let endpoint =
        Endpoint::from_shared(format!("https://{addr}")).map_err(|source| ChannelError {
            addr: addr.to_owned(),
            source,
        })?;
    Ok(endpoint
        .tls_config(tls)
        .map_err(|source| ChannelError {
            addr: addr.to_owned(),
            source,
        })?
        .connect_timeout(CONNECT_TIMEOUT)
        .connect_lazy())
}
