//! Chitchat's messages over UDP, sealed with the swarm's gossip key
//! (ChaCha20-Poly1305): a datagram that does not open with the current or
//! the previous key (garbage, another swarm, a node with a wrong key) is
//! dropped and counted, as is one that opens but does not parse.

use std::{
    net::SocketAddr,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use async_trait::async_trait;
use chitchat::{
    ChitchatMessage, Deserializable, Serializable,
    transport::{Socket, Transport},
};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use crate::api::control::GossipStats;
use crate::lock::ReadWriteLocked as _;

/// The first byte of every sealed datagram.
const FORMAT_VERSION: u8 = 1;
const AAD: &[u8] = b"swarm gossip v1";
const TAG_LEN: usize = 16;
const MAX_DATAGRAM: usize = 65_507;

/// A 32-byte key, as the managers hand it out (hex).
#[derive(Clone)]
pub struct GossipKey([u8; 32]);

impl GossipKey {
    pub fn from_hex(hex: &str) -> Option<Self> {
        let bytes = decode_hex(hex)?;
        Some(Self(bytes.try_into().ok()?))
    }

    /// What names the key without giving it away: the first 8 hex digits
    /// of its SHA-256, so operators can check every node seals with the
    /// same one.
    pub fn id(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.0);
        digest.as_ref()[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn aead(&self) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &self.0).expect("a 32-byte key"))
    }
}

/// A fresh random key, as hex.
pub fn new_key_hex() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(hex.get(at..at + 2)?, 16).ok())
        .collect()
}

/// The keys a node accepts: the current one (which it seals with) and,
/// during a rotation, the one before.
#[derive(Clone)]
pub struct Keys {
    pub current: GossipKey,
    pub previous: Option<GossipKey>,
}

/// Seals `payload` with `key`: version, nonce, ciphertext and tag.
pub fn seal(key: &GossipKey, payload: &[u8]) -> Vec<u8> {
    let nonce_bytes: [u8; NONCE_LEN] = rand::random();
    let mut sealed = Vec::with_capacity(1 + NONCE_LEN + payload.len() + TAG_LEN);
    sealed.push(FORMAT_VERSION);
    sealed.extend_from_slice(&nonce_bytes);
    let mut body = payload.to_vec();
    key.aead()
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce_bytes),
            Aad::from(AAD),
            &mut body,
        )
        .expect("sealing cannot fail for a valid key");
    sealed.extend_from_slice(&body);
    sealed
}

/// Why a datagram was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Too short, or an unknown format.
    Malformed,
    /// Not sealed with an accepted key.
    Unauthenticated,
}

/// Opens a sealed datagram with any of `keys`.
pub fn open(keys: &Keys, datagram: &[u8]) -> Result<Vec<u8>, DropReason> {
    if datagram.len() < 1 + NONCE_LEN + TAG_LEN || datagram[0] != FORMAT_VERSION {
        return Err(DropReason::Malformed);
    }
    let nonce: [u8; NONCE_LEN] = datagram[1..1 + NONCE_LEN]
        .try_into()
        .expect("sliced to size");
    for key in std::iter::once(&keys.current).chain(keys.previous.as_ref()) {
        let mut body = datagram[1 + NONCE_LEN..].to_vec();
        if let Ok(plain) = key.aead().open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(AAD),
            &mut body,
        ) {
            let len = plain.len();
            body.truncate(len);
            return Ok(body);
        }
    }
    Err(DropReason::Unauthenticated)
}

#[derive(Default)]
pub struct DatagramCounters {
    sent: AtomicU64,
    received: AtomicU64,
    malformed: AtomicU64,
    unauthenticated: AtomicU64,
    bad_message: AtomicU64,
}

impl DatagramCounters {
    pub fn stats(&self) -> GossipStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        GossipStats {
            key_id: String::new(),
            sent: load(&self.sent),
            received: load(&self.received),
            dropped_malformed: load(&self.malformed),
            dropped_unauthenticated: load(&self.unauthenticated),
            dropped_bad_message: load(&self.bad_message),
        }
    }
}

/// Chitchat's transport: UDP, every datagram sealed.
pub struct SealedTransport {
    pub keys: Arc<RwLock<Keys>>,
    pub counters: Arc<DatagramCounters>,
}

#[async_trait]
impl Transport for SealedTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let socket = tokio::net::UdpSocket::bind(listen_addr).await?;
        Ok(Box::new(SealedSocket {
            socket,
            keys: self.keys.clone(),
            counters: self.counters.clone(),
            buffer: vec![0; MAX_DATAGRAM],
        }))
    }
}

struct SealedSocket {
    socket: tokio::net::UdpSocket,
    keys: Arc<RwLock<Keys>>,
    counters: Arc<DatagramCounters>,
    buffer: Vec<u8>,
}

impl SealedSocket {
    fn keys(&self) -> Keys {
        self.keys.read_locked().clone()
    }
}

#[async_trait]
impl Socket for SealedSocket {
    async fn send(&mut self, to: SocketAddr, message: ChitchatMessage) -> anyhow::Result<()> {
        let mut payload = Vec::new();
        message.serialize(&mut payload);
        let sealed = seal(&self.keys().current, &payload);
        // A peer that cannot be reached now is gossip's business, not an
        // error that stops it.
        if self.socket.send_to(&sealed, to).await.is_ok() {
            self.counters.sent.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn recv(&mut self) -> anyhow::Result<(SocketAddr, ChitchatMessage)> {
        loop {
            let (len, from) = match self.socket.recv_from(&mut self.buffer).await {
                Ok(received) => received,
                Err(err) => {
                    tracing::debug!(error = %err, "gossip receive error");
                    continue;
                }
            };
            let keys = self.keys();
            let payload = match open(&keys, &self.buffer[..len]) {
                Ok(payload) => payload,
                Err(reason) => {
                    let counter = match reason {
                        DropReason::Malformed => &self.counters.malformed,
                        DropReason::Unauthenticated => &self.counters.unauthenticated,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%from, ?reason, "gossip datagram dropped");
                    continue;
                }
            };
            match ChitchatMessage::deserialize(&mut payload.as_slice()) {
                Ok(message) => {
                    self.counters.received.fetch_add(1, Ordering::Relaxed);
                    return Ok((from, message));
                }
                Err(_) => {
                    self.counters.bad_message.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_datagrams_open_only_with_an_accepted_key() {
        let key = GossipKey::from_hex(&new_key_hex()).unwrap();
        let other = GossipKey::from_hex(&new_key_hex()).unwrap();
        let keys = Keys {
            current: key.clone(),
            previous: None,
        };
        let sealed = seal(&key, b"hello");
        assert_eq!(open(&keys, &sealed).unwrap(), b"hello");
        assert_eq!(
            open(&keys, &seal(&other, b"hello")),
            Err(DropReason::Unauthenticated)
        );
        let rotated = Keys {
            current: other.clone(),
            previous: Some(key.clone()),
        };
        assert_eq!(open(&rotated, &sealed).unwrap(), b"hello");
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(open(&keys, &tampered), Err(DropReason::Unauthenticated));
        assert_eq!(open(&keys, b"junk"), Err(DropReason::Malformed));
        assert!(GossipKey::from_hex("abc").is_none());
        assert!(GossipKey::from_hex(&"zz".repeat(32)).is_none());
    }
}
