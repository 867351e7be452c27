//! The manager's data encryption key (swarmkit's raft DEK): every Raft log
//! entry and snapshot is sealed with it before it reaches the disk, so the
//! secrets in the store are never there in clear. Each manager has its own,
//! kept beside its TLS key. With autolock on, the key file itself is sealed
//! under the swarm's unlock key, as the TLS key is.

use std::{
    fs,
    io::{self, Write as _},
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use crate::ca::unlock_key::{self, UnlockKey, UnlockKeyError};
use ring::{
    aead::{self, Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    rand::{SecureRandom as _, SystemRandom},
};

/// What a sealed value starts with; a value without it is from a store
/// written before sealing, read as it is.
const MAGIC: &[u8] = b"swarm-sealed-1\0";
const KEY_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum DataKeyError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is not a data key ({KEY_LEN} bytes)")]
    Malformed { path: PathBuf },
    #[error("a sealed Raft value does not open with this manager's data key")]
    Open,
    #[error("no randomness for a nonce")]
    Random,
    #[error("{path} is locked: {source}")]
    Locked {
        path: PathBuf,
        source: UnlockKeyError,
    },
}

pub struct DataKey {
    key: LessSafeKey,
    /// Kept to write the key file again under another unlock key.
    raw: [u8; KEY_LEN],
    random: SystemRandom,
}

impl DataKey {
    /// The key at `path`, made (owner-only) on first use. A key file
    /// sealed under an unlock key needs `unlock`; a new one is sealed
    /// under it.
    pub fn load_or_create(path: &Path, unlock: Option<&UnlockKey>) -> Result<Self, DataKeyError> {
        let io_error = |source| DataKeyError::Io {
            path: path.to_owned(),
            source,
        };
        let bytes = match fs::read(path) {
            Ok(stored) if unlock_key::is_locked(&stored) => unlock
                .ok_or(UnlockKeyError::Wrong)
                .and_then(|key| key.open(&stored))
                .map_err(|source| DataKeyError::Locked {
                    path: path.to_owned(),
                    source,
                })?,
            Ok(bytes) => bytes,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                let mut bytes = [0u8; KEY_LEN];
                SystemRandom::new()
                    .fill(&mut bytes)
                    .map_err(|_| DataKeyError::Random)?;
                let key = Self::from_bytes(&bytes).expect("a key of the right length");
                key.store(path, unlock)?;
                return Ok(key);
            }
            Err(err) => return Err(io_error(err)),
        };
        Self::from_bytes(&bytes).ok_or_else(|| DataKeyError::Malformed {
            path: path.to_owned(),
        })
    }

    /// Writes the key file at `path` (owner-only, whole or not at all):
    /// sealed under `unlock` when autolock is on, else as it is.
    pub fn store(&self, path: &Path, unlock: Option<&UnlockKey>) -> Result<(), DataKeyError> {
        let io_error = |source| DataKeyError::Io {
            path: path.to_owned(),
            source,
        };
        let bytes = match unlock {
            Some(key) => key.seal(&self.raw).map_err(|_| DataKeyError::Random)?,
            None => self.raw.to_vec(),
        };
        let tmp = path.with_extension("tmp");
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_error)?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .and_then(|()| fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)))
            .and_then(|()| fs::rename(&tmp, path))
            .map_err(io_error)
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let raw: [u8; KEY_LEN] = bytes.try_into().ok()?;
        let key = UnboundKey::new(&CHACHA20_POLY1305, &raw).ok()?;
        Some(Self {
            key: LessSafeKey::new(key),
            raw,
            random: SystemRandom::new(),
        })
    }

    /// Whether a stored value was sealed (a value from before sealing was
    /// not).
    pub fn is_sealed(stored: &[u8]) -> bool {
        stored.starts_with(MAGIC)
    }

    /// `plain` sealed: the magic, a random nonce, the ciphertext and tag.
    pub fn seal(&self, plain: &[u8]) -> Result<Vec<u8>, DataKeyError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| DataKeyError::Random)?;
        let mut sealed = Vec::with_capacity(MAGIC.len() + NONCE_LEN + plain.len() + 16);
        sealed.extend_from_slice(MAGIC);
        sealed.extend_from_slice(&nonce);
        let mut body = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(MAGIC),
                &mut body,
            )
            .map_err(|_| DataKeyError::Open)?;
        sealed.extend_from_slice(&body);
        Ok(sealed)
    }

    /// What `seal` sealed; a value that was never sealed comes back as
    /// it is.
    pub fn open(&self, stored: &[u8]) -> Result<Vec<u8>, DataKeyError> {
        let Some(rest) = stored.strip_prefix(MAGIC) else {
            return Ok(stored.to_vec());
        };
        if rest.len() < NONCE_LEN + aead::MAX_TAG_LEN {
            return Err(DataKeyError::Open);
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| DataKeyError::Open)?;
        let mut body = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(MAGIC), &mut body)
            .map_err(|_| DataKeyError::Open)?;
        Ok(plain.to_vec())
    }

    #[cfg(test)]
    pub fn for_tests() -> Self {
        Self::from_bytes(&[7u8; KEY_LEN]).expect("a key of the right length")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_and_hide_their_bytes() {
        let key = DataKey::for_tests();
        let sealed = key.seal(b"the secret password").unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(key.open(&sealed).unwrap(), b"the secret password");
        // Two seals of one value differ (a fresh nonce each).
        assert_ne!(sealed, key.seal(b"the secret password").unwrap());
    }

    #[test]
    fn a_tampered_value_or_another_key_does_not_open() {
        let key = DataKey::for_tests();
        let mut sealed = key.seal(b"value").unwrap();
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(key.open(&sealed).is_err());
        let other = DataKey::from_bytes(&[9u8; KEY_LEN]).unwrap();
        assert!(other.open(&key.seal(b"value").unwrap()).is_err());
    }

    #[test]
    fn values_from_before_sealing_read_as_they_are() {
        let key = DataKey::for_tests();
        assert_eq!(key.open(b"{\"plain\":1}").unwrap(), b"{\"plain\":1}");
    }

    #[test]
    fn the_key_file_is_made_once_and_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft-dek");
        let first = DataKey::load_or_create(&path, None).unwrap();
        let sealed = first.seal(b"x").unwrap();
        let again = DataKey::load_or_create(&path, None).unwrap();
        assert_eq!(again.open(&sealed).unwrap(), b"x");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_locked_key_file_needs_its_unlock_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft-dek");
        let unlock = UnlockKey::generate().unwrap();
        let first = DataKey::load_or_create(&path, Some(&unlock)).unwrap();
        let sealed = first.seal(b"x").unwrap();
        let on_disk = fs::read(&path).unwrap();
        assert!(unlock_key::is_locked(&on_disk));
        assert!(!on_disk.windows(KEY_LEN).any(|w| w == first.raw));
        assert!(matches!(
            DataKey::load_or_create(&path, None),
            Err(DataKeyError::Locked { .. })
        ));
        let wrong = UnlockKey::generate().unwrap();
        assert!(DataKey::load_or_create(&path, Some(&wrong)).is_err());
        let again = DataKey::load_or_create(&path, Some(&unlock)).unwrap();
        assert_eq!(again.open(&sealed).unwrap(), b"x");
        // Autolock off: written back in clear, the same key.
        again.store(&path, None).unwrap();
        assert_eq!(fs::read(&path).unwrap(), first.raw);
    }
}
