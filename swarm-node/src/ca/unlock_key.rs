//! Autolock's unlock key (swarmkit's key encryption key): with autolock on,
//! a manager's TLS key and Raft data key are sealed under it on disk, so a
//! manager restarted from disk can do nothing until an operator gives the
//! key back (`swarm unlock`). Shown as Docker shows it: `SWMKEY-1-` and
//! the 32 key bytes in base64 (standard alphabet, no padding).

use base64::{Engine as _, engine::general_purpose::STANDARD_NO_PAD};
use ring::{
    aead::{self, Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    hkdf,
    rand::{SecureRandom as _, SystemRandom},
};

const PREFIX: &str = "SWMKEY-1-";
const KEY_LEN: usize = 32;
/// What a file sealed under an unlock key starts with.
const MAGIC: &[u8] = b"swarm-locked-1\0";
/// Binds the derived sealing key to this one use of the unlock key.
const HKDF_INFO: &[u8] = b"swarm autolock: manager keys at rest";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UnlockKeyError {
    /// Docker's words for a key that is not `SWMKEY-1-` and base64.
    #[error("invalid key string")]
    Malformed,
    /// Docker's words for a well-formed key that does not open this
    /// manager's keys.
    #[error("swarm could not be unlocked: invalid key provided")]
    Wrong,
    #[error("no randomness for a key or nonce")]
    Random,
}

/// An unlock key. Its text is a secret: it is only shown to the operator
/// (`swarm unlock-key`) and kept in the Raft store, which is sealed.
#[derive(Clone, PartialEq, Eq)]
pub struct UnlockKey {
    bytes: [u8; KEY_LEN],
}

impl std::fmt::Debug for UnlockKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UnlockKey(..)")
    }
}

impl std::fmt::Display for UnlockKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{PREFIX}{}", STANDARD_NO_PAD.encode(self.bytes))
    }
}

impl std::str::FromStr for UnlockKey {
    type Err = UnlockKeyError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let body = text
            .trim()
            .strip_prefix(PREFIX)
            .ok_or(UnlockKeyError::Malformed)?;
        let bytes = STANDARD_NO_PAD
            .decode(body)
            .map_err(|_| UnlockKeyError::Malformed)?;
        let bytes = bytes.try_into().map_err(|_| UnlockKeyError::Malformed)?;
        Ok(Self { bytes })
    }
}

impl UnlockKey {
    pub fn generate() -> Result<Self, UnlockKeyError> {
        let mut bytes = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| UnlockKeyError::Random)?;
        Ok(Self { bytes })
    }

    /// The AEAD key files are sealed with: derived, so the key shown to
    /// the operator is never used directly.
    fn sealing_key(&self) -> LessSafeKey {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, MAGIC).extract(&self.bytes);
        let okm = prk
            .expand(&[HKDF_INFO], &CHACHA20_POLY1305)
            .expect("one ChaCha20 key is within HKDF's output limit");
        LessSafeKey::new(UnboundKey::from(okm))
    }

    /// `plain` sealed under this key: the magic, a random nonce, the
    /// ciphertext and its tag.
    pub fn seal(&self, plain: &[u8]) -> Result<Vec<u8>, UnlockKeyError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| UnlockKeyError::Random)?;
        let mut body = plain.to_vec();
        self.sealing_key()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(MAGIC),
                &mut body,
            )
            .map_err(|_| UnlockKeyError::Random)?;
        let mut sealed = Vec::with_capacity(MAGIC.len() + NONCE_LEN + body.len());
        sealed.extend_from_slice(MAGIC);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&body);
        Ok(sealed)
    }

    /// What `seal` sealed; `Wrong` when this key did not seal it.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, UnlockKeyError> {
        let rest = sealed.strip_prefix(MAGIC).ok_or(UnlockKeyError::Wrong)?;
        if rest.len() < NONCE_LEN + aead::MAX_TAG_LEN {
            return Err(UnlockKeyError::Wrong);
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| UnlockKeyError::Wrong)?;
        let mut body = body.to_vec();
        let plain = self
            .sealing_key()
            .open_in_place(nonce, Aad::from(MAGIC), &mut body)
            .map_err(|_| UnlockKeyError::Wrong)?;
        Ok(plain.to_vec())
    }
}

/// Whether a file's content is sealed under an unlock key (its manager is
/// locked until the key is given).
pub fn is_locked(stored: &[u8]) -> bool {
    stored.starts_with(MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_read_back_from_their_docker_form() {
        let key = UnlockKey::generate().unwrap();
        let text = key.to_string();
        assert!(text.starts_with("SWMKEY-1-"));
        // 32 bytes: 43 base64 characters without padding, as Docker's.
        assert_eq!(text.len(), "SWMKEY-1-".len() + 43);
        assert_eq!(text.parse::<UnlockKey>().unwrap(), key);
        assert_eq!(format!("{key:?}"), "UnlockKey(..)");
    }

    #[test]
    fn malformed_keys_are_refused_with_dockers_words() {
        for text in [
            "",
            "SWMKEY-1-",
            "SWMKEY-2-abc",
            "SWMKEY-1-!!!!",
            "SWMKEY-1-YWJj",
        ] {
            let err = text.parse::<UnlockKey>().unwrap_err();
            assert_eq!(err.to_string(), "invalid key string", "{text}");
        }
    }

    #[test]
    fn sealed_bytes_open_only_under_their_key() {
        let key = UnlockKey::generate().unwrap();
        let sealed = key.seal(b"-----BEGIN PRIVATE KEY-----").unwrap();
        assert!(is_locked(&sealed));
        assert!(!sealed.windows(7).any(|w| w == b"PRIVATE"));
        assert_eq!(key.open(&sealed).unwrap(), b"-----BEGIN PRIVATE KEY-----");
        let other = UnlockKey::generate().unwrap();
        assert_eq!(other.open(&sealed), Err(UnlockKeyError::Wrong));
        assert_eq!(
            UnlockKeyError::Wrong.to_string(),
            "swarm could not be unlocked: invalid key provided"
        );
        assert!(!is_locked(b"-----BEGIN PRIVATE KEY-----"));
    }
}
