//! TLS for the control-plane API, with a certificate that is swapped in
//! place when renewed. Restarting the server for each renewal would cut
//! every open connection (Raft's, the agents' long polls) and refuse new
//! ones until the old ones drained; with short certificate lifetimes that
//! cost elections and commits.

use std::{
    net::SocketAddr,
    sync::{Arc, RwLock},
    time::Duration,
};

use rustls::{
    RootCertStore, ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier},
    sign::CertifiedKey,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch},
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tonic::{Request, Status};

use super::pki::CertificateSubject;
use crate::lock::ReadWriteLocked as _;

/// A client that has not finished its TLS handshake by then is dropped, so
/// a silent client holds nothing for long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ServingError {
    #[error("not a usable PEM certificate or key: {0}")]
    Pem(String),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("the cluster CA is not a usable client root: {0}")]
    ClientRoots(String),
}

/// The certificate chain (this node's, then the CA's, so a joining node can
/// pin the CA by digest) the API presents to every new handshake.
#[derive(Debug)]
pub struct ServedCertificate {
    provider: Arc<CryptoProvider>,
    current: RwLock<Option<(String, Arc<CertifiedKey>)>>,
}

impl Default for ServedCertificate {
    fn default() -> Self {
        Self {
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            current: RwLock::new(None),
        }
    }
}

impl ServedCertificate {
    /// Presents `cert_pem` (with `key_pem`) from the next handshake on.
    pub fn set(&self, cert_pem: &str, key_pem: &str, ca_pem: &str) -> Result<(), ServingError> {
        let pem = |e: rustls::pki_types::pem::Error| ServingError::Pem(e.to_string());
        let chain = CertificateDer::pem_slice_iter(format!("{cert_pem}{ca_pem}").as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(pem)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(pem)?;
        let signing_key = self.provider.key_provider.load_private_key(key)?;
        let key = Arc::new(CertifiedKey::new(chain, signing_key));
        *self.current.write_locked() = Some((cert_pem.to_owned(), key));
        Ok(())
    }

    /// The PEM of the certificate being presented, if any.
    pub fn cert_pem(&self) -> Option<String> {
        let current = self.current.read_locked();
        current.as_ref().map(|(pem, _)| pem.clone())
    }
}

impl ResolvesServerCert for ServedCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let current = self.current.read_locked();
        current.as_ref().map(|(_, key)| key.clone())
    }
}

/// The server side of the API's TLS: `certificate` presented; a client
/// certificate checked against the CA when offered and not required, since
/// a joining node has none yet (each call that needs one says so).
pub fn server_config(
    certificate: Arc<ServedCertificate>,
    ca_pem: &str,
) -> Result<ServerConfig, ServingError> {
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let ca = ca.map_err(|e| ServingError::Pem(e.to_string()))?;
        roots
            .add(ca)
            .map_err(|e| ServingError::ClientRoots(e.to_string()))?;
    }
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), certificate.provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| ServingError::ClientRoots(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(certificate.provider.clone())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(certificate);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Accepts connections on `listener` and hands on those that finish the TLS
/// handshake, until `stop` turns true.
pub fn accept_tls(
    listener: TcpListener,
    config: ServerConfig,
    mut stop: watch::Receiver<bool>,
) -> mpsc::Receiver<std::io::Result<TlsStream<TcpStream>>> {
    let (ready_tx, ready_rx) = mpsc::channel(64);
    let acceptor = TlsAcceptor::from(Arc::new(config));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = stop.wait_for(|stop| *stop) => return,
                accepted = listener.accept() => accepted,
            };
            let (tcp, peer): (TcpStream, SocketAddr) = match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of descriptors and the like: pass, then go on.
                    tracing::warn!(error = %err, "accepting an API connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let ready = ready_tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = ready.send(Ok(tls)).await;
                    }
                    Ok(Err(err)) => {
                        tracing::debug!(%peer, error = %err, "API TLS handshake failed")
                    }
                    Err(_) => tracing::debug!(%peer, "API TLS handshake timed out"),
                }
            });
        }
    });
    ready_rx
}

/// Who is calling: the subject of the client certificate TLS has already
/// checked against the CA.
#[allow(clippy::result_large_err)] // tonic's Status is what handlers return.
pub fn caller<T>(request: &Request<T>) -> Result<CertificateSubject, Status> {
    let certs = request
        .peer_certs()
        .ok_or_else(|| Status::unauthenticated("a node certificate is required"))?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("a node certificate is required"))?;
    CertificateSubject::from_der(leaf.as_ref()).map_err(|e| Status::unauthenticated(e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use rustls::{ClientConfig, pki_types::ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::TlsConnector;

    use super::*;
    use crate::{
        api::Role,
        ca::pki::{NodeCertificate, RootCa},
    };

    const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn issue(ca: &RootCa, node: &str) -> NodeCertificate {
        ca.issue(
            "cluster",
            node,
            Role::Manager,
            &[LOCALHOST],
            Duration::from_secs(60),
        )
        .unwrap()
    }

    /// A client trusting only `ca`, presenting `client` if given; returns
    /// the node ID of the certificate the server presented.
    async fn handshake(
        addr: SocketAddr,
        ca: &RootCa,
        client: Option<&NodeCertificate>,
    ) -> std::io::Result<(String, tokio_rustls::client::TlsStream<TcpStream>)> {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap())
            .unwrap();
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots);
        let config = match client {
            Some(cert) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_slice(cert.cert_pem.as_bytes()).unwrap()],
                    PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        let tcp = TcpStream::connect(addr).await?;
        let mut tls = TlsConnector::from(Arc::new(config))
            .connect(ServerName::IpAddress(LOCALHOST.into()), tcp)
            .await?;
        // TLS 1.3 reports a refused client certificate with the first read.
        tls.write_all(b"ping").await?;
        let mut answer = [0u8; 4];
        tls.read_exact(&mut answer).await?;
        let (_, session) = tls.get_ref();
        let leaf = session.peer_certificates().unwrap()[0].clone();
        let node = CertificateSubject::from_der(leaf.as_ref()).unwrap().node_id;
        Ok((node, tls))
    }

    #[tokio::test]
    async fn a_renewed_certificate_is_presented_to_new_handshakes_and_old_ones_carry_on() {
        let ca = RootCa::generate("cluster").unwrap();
        let served = Arc::new(ServedCertificate::default());
        let first = issue(&ca, "first");
        served
            .set(&first.cert_pem, &first.key_pem, ca.cert_pem())
            .unwrap();
        let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut accepted = accept_tls(
            listener,
            server_config(served.clone(), ca.cert_pem()).unwrap(),
            stop_rx,
        );
        // The server side echoes what each connection sends.
        tokio::spawn(async move {
            while let Some(Ok(mut tls)) = accepted.recv().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4];
                    while tls.read_exact(&mut buf).await.is_ok() {
                        if tls.write_all(&buf).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });

        let client = issue(&ca, "client");
        let (node, mut open) = handshake(addr, &ca, Some(&client)).await.unwrap();
        assert_eq!(node, "first");

        let renewed = issue(&ca, "renewed");
        served
            .set(&renewed.cert_pem, &renewed.key_pem, ca.cert_pem())
            .unwrap();
        assert_eq!(served.cert_pem().unwrap(), renewed.cert_pem);
        let (node, _) = handshake(addr, &ca, Some(&client)).await.unwrap();
        assert_eq!(node, "renewed");
        // The connection made before the swap still works.
        open.write_all(b"more").await.unwrap();
        let mut answer = [0u8; 4];
        open.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"more");

        // No client certificate is allowed (a joining node has none) ...
        let (node, _) = handshake(addr, &ca, None).await.unwrap();
        assert_eq!(node, "renewed");
        // ... one from another CA is refused.
        let stranger = issue(&RootCa::generate("other").unwrap(), "stranger");
        assert!(handshake(addr, &ca, Some(&stranger)).await.is_err());

        stop_tx.send(true).unwrap();
    }

    #[test]
    fn a_key_that_is_not_pem_is_refused_and_the_old_certificate_kept() {
        let ca = RootCa::generate("cluster").unwrap();
        let served = ServedCertificate::default();
        let first = issue(&ca, "first");
        served
            .set(&first.cert_pem, &first.key_pem, ca.cert_pem())
            .unwrap();
        let err = served
            .set(&first.cert_pem, "not a key", ca.cert_pem())
            .unwrap_err();
        assert!(matches!(err, ServingError::Pem(_)), "{err}");
        assert_eq!(served.cert_pem().unwrap(), first.cert_pem);
    }
}
