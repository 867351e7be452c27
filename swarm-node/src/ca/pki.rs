//! The cluster's PKI, after swarmkit's `ca` package: a root CA made by
//! `swarm init`, node certificates whose OU is the node's role (and CN its
//! node ID, O the cluster ID), and join tokens that carry the CA's digest so
//! a joining node can pin the CA before it trusts anything it is sent.

use std::{fmt, net::IpAddr, str::FromStr, time::Duration};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use sha2::{Digest as _, Sha256};

use crate::api::{ClusterError, Role};

/// Certificates last this long unless `--cert-expiry` says otherwise (90
/// days, as in Docker).
pub const DEFAULT_CERT_EXPIRY: Duration = Duration::from_secs(90 * 24 * 3600);
/// The root CA lasts 20 years, as swarmkit's does.
const ROOT_CA_EXPIRY: Duration = Duration::from_secs(20 * 365 * 24 * 3600);
/// Certificates are valid from a little before they are issued, so a node
/// whose clock lags slightly still accepts them.
const BACKDATE: Duration = Duration::from_secs(3600);

impl From<PkiError> for ClusterError {
    fn from(err: PkiError) -> Self {
        ClusterError::Pki(Box::new(err))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("generating or signing a certificate failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("not a usable certificate: {0}")]
    BadCertificate(String),
}

/// The root CA, able to sign node certificates.
pub struct RootCa {
    certificate: Certificate,
    key: KeyPair,
    cert_pem: String,
}

impl RootCa {
    /// A new self-signed root CA for cluster `cluster_id`.
    pub fn generate(cluster_id: &str) -> Result<Self, PkiError> {
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "swarm-ca");
        params
            .distinguished_name
            .push(DnType::OrganizationName, cluster_id);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + ROOT_CA_EXPIRY;
        let key = KeyPair::generate()?;
        let certificate = params.self_signed(&key)?;
        let cert_pem = certificate.pem();
        Ok(Self {
            certificate,
            key,
            cert_pem,
        })
    }

    /// The CA saved by [`RootCa::cert_pem`] and [`RootCa::key_pem`].
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem)?;
        let params = CertificateParams::from_ca_cert_pem(cert_pem)?;
        // Re-signing the parsed parameters gives rcgen a signer with the same
        // name and key; the saved certificate stays the one handed out.
        let certificate = params.self_signed(&key)?;
        Ok(Self {
            certificate,
            key,
            cert_pem: cert_pem.to_owned(),
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// SHA-256 of the CA certificate (DER): what join tokens pin.
    pub fn digest(&self) -> [u8; 32] {
        digest_of_pem(&self.cert_pem).unwrap_or_default()
    }

    /// A certificate for node `node_id` in role `role`, valid for `expiry`,
    /// usable as TLS server and client, with `addrs` as IP SANs; its key is
    /// made here (for this node's own certificate).
    pub fn issue(
        &self,
        cluster_id: &str,
        node_id: &str,
        role: Role,
        addrs: &[IpAddr],
        expiry: Duration,
    ) -> Result<NodeCertificate, PkiError> {
        let params = node_params(cluster_id, node_id, role, addrs, expiry);
        let key = KeyPair::generate()?;
        let certificate = params.signed_by(&key, &self.certificate, &self.key)?;
        Ok(NodeCertificate {
            cert_pem: certificate.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs a joining node's request: only its public key is taken from
    /// it; name, role and validity are the CA's to decide.
    pub fn sign_request(
        &self,
        csr_pem: &str,
        cluster_id: &str,
        node_id: &str,
        role: Role,
        addrs: &[IpAddr],
        expiry: Duration,
    ) -> Result<String, PkiError> {
        let mut request = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| PkiError::BadCertificate(format!("certificate request: {e}")))?;
        request.params = node_params(cluster_id, node_id, role, addrs, expiry);
        Ok(request.signed_by(&self.certificate, &self.key)?.pem())
    }
}

/// A key and a certificate request for it, made by a joining node: the key
/// never leaves the node.
pub fn key_and_request() -> Result<(KeyPair, String), PkiError> {
    let key = KeyPair::generate()?;
    let request = CertificateParams::default().serialize_request(&key)?;
    Ok((key, request.pem()?))
}

fn node_params(
    cluster_id: &str,
    node_id: &str,
    role: Role,
    addrs: &[IpAddr],
    expiry: Duration,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, node_id);
    params
        .distinguished_name
        .push(DnType::OrganizationalUnitName, role.organizational_unit());
    params
        .distinguished_name
        .push(DnType::OrganizationName, cluster_id);
    params.subject_alt_names = addrs.iter().map(|ip| SanType::IpAddress(*ip)).collect();
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + expiry;
    params
}

/// A node's certificate and private key, PEM.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct NodeCertificate {
    pub cert_pem: String,
    pub key_pem: String,
}

/// What a node certificate says about its holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateSubject {
    pub node_id: String,
    pub role: Role,
    pub cluster_id: String,
    /// Seconds since the Unix epoch.
    pub not_before: i64,
    /// Seconds since the Unix epoch.
    pub not_after: i64,
    /// Who signed it: the issuer's name, DER.
    pub issuer: Vec<u8>,
}

/// A CA certificate's name and public key (DER), as Docker's `TLSInfo`
/// shows an issuer's.
pub fn ca_identity(ca_pem: &str) -> Result<(Vec<u8>, Vec<u8>), PkiError> {
    let der = pem_der(ca_pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| PkiError::BadCertificate(e.to_string()))?;
    Ok((
        cert.subject().as_raw().to_vec(),
        cert.public_key().raw.to_vec(),
    ))
}

impl CertificateSubject {
    /// Reads a DER certificate (as a TLS peer presents it).
    pub fn from_der(der: &[u8]) -> Result<Self, PkiError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| PkiError::BadCertificate(e.to_string()))?;
        let subject = cert.subject();
        let first = |attrs: Vec<&str>| attrs.first().map(|s| (*s).to_owned());
        let node_id = first(
            subject
                .iter_common_name()
                .filter_map(|a| a.as_str().ok())
                .collect(),
        )
        .ok_or_else(|| PkiError::BadCertificate("no CN (node ID)".into()))?;
        let ou = first(
            subject
                .iter_organizational_unit()
                .filter_map(|a| a.as_str().ok())
                .collect(),
        )
        .ok_or_else(|| PkiError::BadCertificate("no OU (role)".into()))?;
        let role = Role::from_organizational_unit(&ou)
            .ok_or_else(|| PkiError::BadCertificate(format!("OU {ou:?} is not a swarm role")))?;
        let cluster_id = first(
            subject
                .iter_organization()
                .filter_map(|a| a.as_str().ok())
                .collect(),
        )
        .unwrap_or_default();
        Ok(Self {
            node_id,
            role,
            cluster_id,
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            issuer: cert.issuer().as_raw().to_vec(),
        })
    }

    pub fn from_pem(pem_text: &str) -> Result<Self, PkiError> {
        Self::from_der(&pem_der(pem_text)?)
    }

    /// Whether half of the certificate's lifetime has passed at `now`
    /// (seconds since the epoch): time to get a new one, long before it
    /// lapses, so renewing never interrupts anything.
    pub fn renewal_due(&self, now: i64) -> bool {
        let issued = self.not_before + BACKDATE.as_secs() as i64;
        let lifetime = (self.not_after - issued).max(1);
        now >= issued + lifetime / 2
    }
}

fn pem_der(pem_text: &str) -> Result<Vec<u8>, PkiError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem_text.as_bytes())
        .map_err(|e| PkiError::BadCertificate(e.to_string()))?;
    Ok(pem.contents)
}

/// SHA-256 of a PEM certificate's DER bytes.
pub fn digest_of_pem(pem_text: &str) -> Result<[u8; 32], PkiError> {
    Ok(Sha256::digest(pem_der(pem_text)?).into())
}

/// A join token: `SWMTKN-1-<CA digest, base36, 50 chars>-<secret, base36, 25
/// chars>`, as Docker writes them. The digest lets the joining node pin the
/// CA; the secret admits it in one role.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct JoinToken {
    ca_digest: [u8; 32],
    secret: [u8; 16],
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never log the secret.
        f.write_str("JoinToken(SWMTKN-1-…)")
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error(
        "invalid join token: it must look like SWMTKN-1-<50 characters>-<25 characters>; copy it again from `swarm join-token worker` (or manager) on a manager"
    )]
    Malformed,
    #[error("invalid join token: version {0} is not supported (only SWMTKN-1)")]
    Version(String),
}

const TOKEN_PREFIX: &str = "SWMTKN";
const DIGEST_CHARS: usize = 50;
const SECRET_CHARS: usize = 25;

impl JoinToken {
    /// A new token for the CA with `ca_digest`, with a fresh random secret.
    pub fn generate(ca_digest: [u8; 32]) -> Self {
        Self {
            ca_digest,
            secret: rand::random(),
        }
    }

    /// Whether this token was made for the CA with `digest`.
    pub fn pins(&self, digest: &[u8; 32]) -> bool {
        &self.ca_digest == digest
    }

    /// Whether `other` carries the same secret; compares every byte whatever
    /// differs, so timing tells an attacker nothing.
    pub fn same_secret(&self, other: &JoinToken) -> bool {
        self.secret
            .iter()
            .zip(other.secret.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
            && self.ca_digest == other.ca_digest
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{TOKEN_PREFIX}-1-{}-{}",
            base36(&self.ca_digest, DIGEST_CHARS),
            base36(&self.secret, SECRET_CHARS)
        )
    }
}

impl FromStr for JoinToken {
    type Err = TokenError;

    fn from_str(text: &str) -> Result<Self, TokenError> {
        let parts: Vec<&str> = text.trim().split('-').collect();
        let [prefix, version, digest, secret] = parts[..] else {
            return Err(TokenError::Malformed);
        };
        if prefix != TOKEN_PREFIX {
            return Err(TokenError::Malformed);
        }
        if version != "1" {
            return Err(TokenError::Version(version.to_owned()));
        }
        if digest.len() != DIGEST_CHARS || secret.len() != SECRET_CHARS {
            return Err(TokenError::Malformed);
        }
        Ok(Self {
            ca_digest: from_base36(digest).ok_or(TokenError::Malformed)?,
            secret: from_base36(secret).ok_or(TokenError::Malformed)?,
        })
    }
}

const BASE36: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// Big-endian `bytes` as a base-36 number, zero-padded to `width` digits.
fn base36(bytes: &[u8], width: usize) -> String {
    let mut number = bytes.to_vec();
    let mut digits = Vec::new();
    while number.iter().any(|&b| b != 0) {
        let mut remainder = 0u32;
        for byte in number.iter_mut() {
            let value = (remainder << 8) | u32::from(*byte);
            *byte = (value / 36) as u8;
            remainder = value % 36;
        }
        digits.push(BASE36[remainder as usize]);
    }
    while digits.len() < width {
        digits.push(b'0');
    }
    digits.reverse();
    String::from_utf8(digits).expect("ASCII digits")
}

/// The inverse of [`base36`]; `None` for other characters or overflow.
fn from_base36<const N: usize>(text: &str) -> Option<[u8; N]> {
    let mut number = [0u8; N];
    for ch in text.bytes() {
        let digit = BASE36.iter().position(|&d| d == ch.to_ascii_lowercase())? as u32;
        let mut carry = digit;
        for byte in number.iter_mut().rev() {
            let value = u32::from(*byte) * 36 + carry;
            *byte = value as u8;
            carry = value >> 8;
        }
        if carry != 0 {
            return None;
        }
    }
    Some(number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_look_like_dockers() {
        let ca = RootCa::generate("cluster1").unwrap();
        let token = JoinToken::generate(ca.digest());
        let text = token.to_string();
        assert!(text.starts_with("SWMTKN-1-"));
        assert_eq!(text.len(), "SWMTKN-1-".len() + 50 + 1 + 25);
        let parsed: JoinToken = text.parse().unwrap();
        assert_eq!(parsed, token);
        assert!(parsed.pins(&ca.digest()));
        assert!(parsed.same_secret(&token));
        let other = JoinToken::generate(ca.digest());
        assert!(!other.same_secret(&token));
        let foreign = RootCa::generate("cluster2").unwrap();
        assert!(!parsed.pins(&foreign.digest()));
    }

    #[test]
    fn malformed_tokens_are_refused_with_a_reason() {
        let good = JoinToken::generate([7; 32]).to_string();
        for bad in [
            "",
            "SWMTKN",
            "hello",
            &good.replace("SWMTKN", "SWMTKX"),
            &good[..good.len() - 1],
            &format!("{good}-x"),
            &good.replace('-', "_"),
            &format!("{}!{}", &good[..20], &good[21..]),
        ] {
            assert_eq!(
                bad.parse::<JoinToken>(),
                Err(TokenError::Malformed),
                "{bad:?}"
            );
        }
        assert_eq!(
            good.replacen("-1-", "-2-", 1).parse::<JoinToken>(),
            Err(TokenError::Version("2".into()))
        );
        // 50 z's is more than 2^256.
        let too_big = format!("SWMTKN-1-{}-{}", "z".repeat(50), "0".repeat(25));
        assert_eq!(too_big.parse::<JoinToken>(), Err(TokenError::Malformed));
    }

    #[test]
    fn node_certificates_carry_role_id_and_cluster_and_survive_a_ca_reload() {
        let ca = RootCa::generate("c1").unwrap();
        let reloaded = RootCa::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
        assert_eq!(reloaded.digest(), ca.digest());
        let addr: IpAddr = "198.18.0.1".parse().unwrap();
        let cert = reloaded
            .issue("c1", "node-a", Role::Worker, &[addr], DEFAULT_CERT_EXPIRY)
            .unwrap();
        let subject = CertificateSubject::from_pem(&cert.cert_pem).unwrap();
        assert_eq!(subject.node_id, "node-a");
        assert_eq!(subject.role, Role::Worker);
        assert_eq!(subject.cluster_id, "c1");
        let days = (subject.not_after - time::OffsetDateTime::now_utc().unix_timestamp()) / 86_400;
        assert!((89..=90).contains(&days), "{days} days");
        assert!(
            CertificateSubject::from_pem(ca.cert_pem()).is_err(),
            "the CA has no role"
        );
    }
}
