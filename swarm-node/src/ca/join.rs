//! Joining a swarm, as swarmkit does it: read the CA's digest from the
//! token, fetch the manager's certificate chain without trusting it, keep it
//! only if it holds a CA with that digest (so a wrong or intercepted manager
//! is refused), then ask for a certificate over TLS verified against that CA.
//! The node's private key never leaves it: the manager signs a request.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use rustls::{
    DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature},
    pki_types::{CertificateDer, ServerName, UnixTime},
};
use sha2::{Digest as _, Sha256};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use super::pki::{self, JoinToken, NodeCertificate};
use crate::api::{
    ClusterError, NodeResources, Role,
    proto::{JoinRequest, node_ca_client::NodeCaClient},
};
use crate::lock::Locked as _;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What a node that joined keeps.
pub struct Joined {
    pub cluster_id: String,
    pub certificate: NodeCertificate,
    pub ca_pem: String,
    pub managers: Vec<SocketAddr>,
}

/// Who is joining.
pub struct Joiner<'a> {
    pub node_id: &'a str,
    pub hostname: &'a str,
    pub advertise_addr: IpAddr,
    pub listen_port: u16,
    /// What the node is to take from the start (`join --availability`).
    pub availability: crate::api::Availability,
    /// `join --data-path-addr`.
    pub data_path_addr: Option<std::net::Ipv4Addr>,
    /// The daemon's `--label`s.
    pub engine_labels: &'a std::collections::BTreeMap<String, String>,
}

pub async fn join(
    token: &str,
    manager: SocketAddr,
    joiner: Joiner<'_>,
) -> Result<Joined, ClusterError> {
    let parsed: JoinToken = token
        .parse()
        .map_err(|e: pki::TokenError| ClusterError::Join(e.to_string()))?;
    let chain = fetch_chain(manager)
        .await
        .map_err(|e| ClusterError::Join(format!("cannot reach a manager at {manager}: {e}")))?;
    let ca_der = chain
        .iter()
        .find(|cert| parsed.pins(&Sha256::digest(cert.as_ref()).into()))
        .ok_or_else(|| {
            ClusterError::Join(format!(
                "the manager at {manager} presented a CA that does not match the join token: the token belongs to another swarm (or the connection is intercepted)"
            ))
        })?;
    let ca_pem = pem::encode(&pem::Pem::new("CERTIFICATE", ca_der.as_ref().to_vec()));

    let (key, csr_pem) = pki::key_and_request()?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca_pem))
        .domain_name(manager.ip().to_string());
    let channel = Channel::from_shared(format!("https://{manager}"))
        .map_err(|e| ClusterError::Join(e.to_string()))?
        .tls_config(tls)
        .map_err(|e| ClusterError::Join(e.to_string()))?
        .connect_timeout(CONNECT_TIMEOUT)
        .connect()
        .await
        .map_err(|e| ClusterError::Join(format!("connecting to {manager} over TLS: {e}")))?;
    let resources = NodeResources::of_this_host();
    let response = NodeCaClient::new(channel)
        .join(JoinRequest {
            token: token.trim().to_owned(),
            node_id: joiner.node_id.to_owned(),
            hostname: joiner.hostname.to_owned(),
            advertise_addr: joiner.advertise_addr.to_string(),
            listen_port: joiner.listen_port.into(),
            csr_pem,
            nano_cpus: resources.nano_cpus,
            memory_bytes: resources.memory_bytes,
            os: std::env::consts::OS.to_owned(),
            architecture: std::env::consts::ARCH.to_owned(),
            availability: serde_json::to_value(joiner.availability)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            data_path_addr: joiner
                .data_path_addr
                .map(|ip| ip.to_string())
                .unwrap_or_default(),
            engine_labels: joiner.engine_labels.clone().into_iter().collect(),
        })
        .await
        .map_err(|status| ClusterError::Join(status.message().to_owned()))?
        .into_inner();
    let role = match response.role.as_str() {
        "manager" => Role::Manager,
        "worker" => Role::Worker,
        other => {
            return Err(ClusterError::Join(format!(
                "the manager answered with role {other:?}"
            )));
        }
    };
    let subject = pki::CertificateSubject::from_pem(&response.cert_pem)?;
    if subject.node_id != joiner.node_id || subject.role != role {
        return Err(ClusterError::Join(
            "the manager issued a certificate for another node or role".into(),
        ));
    }
    Ok(Joined {
        cluster_id: response.cluster_id,
        certificate: NodeCertificate {
            cert_pem: response.cert_pem,
            key_pem: key.serialize_pem(),
        },
        ca_pem,
        managers: response
            .managers
            .iter()
            .filter_map(|m| m.parse().ok())
            .collect(),
    })
}

/// The certificate chain the manager presents, taken without verifying it:
/// the caller decides whether to trust it by the token's digest.
async fn fetch_chain(manager: SocketAddr) -> std::io::Result<Vec<CertificateDer<'static>>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let capture = Arc::new(CaptureChain {
        chain: Mutex::new(Vec::new()),
        provider: provider.clone(),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(capture.clone())
        .with_no_client_auth();
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(manager))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connection timed out"))??;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::IpAddress(manager.ip().into());
    tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
        })??;
    let chain = capture.chain.locked().clone();
    Ok(chain)
}

/// Accepts any chain and records it (signatures are still checked, so the
/// peer holds the key of the certificate it presents).
#[derive(Debug)]
struct CaptureChain {
    chain: Mutex<Vec<CertificateDer<'static>>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for CaptureChain {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut chain = self.chain.locked();
        chain.push(end_entity.clone().into_owned());
        chain.extend(intermediates.iter().map(|c| c.clone().into_owned()));
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
