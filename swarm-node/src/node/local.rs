//! What a node keeps of its own membership, in `<data dir>/cluster/`:
//! `state.json` (cluster ID, this node's address, where the managers are),
//! the CA certificate (`ca.pem`) and this node's certificate (`node.pem`,
//! `node-key.pem`). A manager's Raft store is in `raft/` beside them, and its
//! data key in `raft-dek.key`. With autolock on, a manager's key and data
//! key are sealed under the swarm's unlock key. Files are written whole to
//! a temporary name and renamed, so a crash leaves the old or the new
//! content.

use std::{
    fs,
    net::SocketAddr,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use serde::{Deserialize, Serialize};

use crate::lock::ReadWriteLocked as _;
use crate::{
    api::{ClusterError, Role},
    ca::{
        client::Credentials,
        pki::{CertificateSubject, NodeCertificate},
        unlock_key::{self, UnlockKey},
    },
    manager::{
        raft::{
            RaftNode,
            data_key::{DataKey, DataKeyError},
        },
        store::ClusterState,
    },
};

/// `state.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalState {
    pub cluster_id: String,
    /// This node's control-plane address (a manager's API listens there).
    pub addr: SocketAddr,
    /// Where the managers are reached, as last heard.
    pub managers: Vec<SocketAddr>,
    /// How often this node's agent reports, as last heard.
    pub heartbeat_millis: u64,
    /// The address a manager's API listens on (`--listen-addr`); `None`:
    /// the daemon's --listen-addr address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_ip: Option<std::net::Ipv4Addr>,
    /// Where other nodes send this node's overlay traffic
    /// (`--data-path-addr`); `None`: its advertise address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_path_addr: Option<std::net::Ipv4Addr>,
}

/// This node's membership. On a manager, `raft` runs and holds the
/// replicated store.
pub struct Cluster {
    dir: PathBuf,
    pub node_id: String,
    pub role: Role,
    pub local: LocalState,
    ca_pem: String,
    pub certificate: NodeCertificate,
    /// What Raft and the agent dial other nodes with; updated on renewal.
    pub credentials: Arc<RwLock<Credentials>>,
    pub raft: Option<RaftNode>,
    /// The unlock key this node's keys are sealed under on disk; `None`:
    /// they are in clear (autolock off, or a worker).
    unlock_key: Option<UnlockKey>,
}

impl Cluster {
    /// The cluster this node belonged to when it last ran, if any. Raft is
    /// not started here. Keys sealed under an unlock key need `unlock`:
    /// without it the answer is `SwarmLocked`, with a wrong one Docker's
    /// "invalid key provided".
    pub fn load(
        data_dir: &Path,
        node_id: &str,
        unlock: Option<&UnlockKey>,
    ) -> Result<Option<Self>, ClusterError> {
        let dir = cluster_dir(data_dir);
        let state_path = dir.join(STATE_FILE);
        let local: LocalState = match fs::read(&state_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| store_err(&state_path, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(store_err(&state_path, e)),
        };
        let read = |name: &str| {
            let path = dir.join(name);
            fs::read_to_string(&path).map_err(|e| store_err(&path, e))
        };
        let key_path = dir.join(NODE_KEY_FILE);
        let stored_key = fs::read(&key_path).map_err(|e| store_err(&key_path, e))?;
        let locked = unlock_key::is_locked(&stored_key);
        let key_pem = match (locked, unlock) {
            (false, _) => stored_key,
            (true, None) => return Err(ClusterError::SwarmLocked),
            (true, Some(unlock)) => unlock
                .open(&stored_key)
                .map_err(|e| ClusterError::UnlockKey(e.to_string()))?,
        };
        let certificate = NodeCertificate {
            cert_pem: read(NODE_CERT_FILE)?,
            key_pem: String::from_utf8(key_pem).map_err(|e| store_err(&key_path, e))?,
        };
        let ca_pem = read(CA_CERT_FILE)?;
        let mut cluster = Self::new(dir, node_id, local, ca_pem, certificate)?;
        if locked {
            cluster.unlock_key = unlock.cloned();
            // The data key must open too: a key that opens only one of
            // the two unlocks nothing.
            if cluster.data_key_path().exists() {
                cluster.data_key()?;
            }
        }
        Ok(Some(cluster))
    }

    fn data_key_path(&self) -> PathBuf {
        self.dir.join(DATA_KEY_FILE)
    }

    /// The manager's Raft data key, made on first use (sealed under the
    /// unlock key while autolock is on).
    pub fn data_key(&self) -> Result<Arc<DataKey>, ClusterError> {
        let path = self.data_key_path();
        DataKey::load_or_create(&path, self.unlock_key.as_ref())
            .map(Arc::new)
            .map_err(|e| match e {
                DataKeyError::Locked { source, .. } => ClusterError::UnlockKey(source.to_string()),
                other => store_err(&path, other),
            })
    }

    /// The unlock key this node's keys are sealed under on disk.
    pub fn unlock_key(&self) -> Option<&UnlockKey> {
        self.unlock_key.as_ref()
    }

    /// Writes this node's TLS key and Raft data key again, sealed under
    /// `unlock` (autolock turned on, or its key rotated) or in clear
    /// (`None`: autolock turned off).
    pub fn seal_keys_under(&mut self, unlock: Option<UnlockKey>) -> Result<(), ClusterError> {
        let path = self.data_key_path();
        if path.exists() {
            let key = self.data_key()?;
            key.store(&path, unlock.as_ref())
                .map_err(|e| store_err(&path, e))?;
        }
        let key_pem = self.certificate.key_pem.clone();
        self.write_secret(NODE_KEY_FILE, key_pem.as_bytes(), unlock.as_ref())?;
        self.unlock_key = unlock;
        Ok(())
    }

    /// A new membership (`swarm init`, `swarm join`), written to disk.
    pub fn create(
        data_dir: &Path,
        node_id: &str,
        local: LocalState,
        ca_pem: String,
        certificate: NodeCertificate,
    ) -> Result<Self, ClusterError> {
        let dir = cluster_dir(data_dir);
        if dir.join(STATE_FILE).exists() {
            return Err(ClusterError::AlreadyInSwarm);
        }
        // What a node that left behind may still hold goes first.
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(|e| store_err(&dir, e))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| store_err(&dir, e))?;
        let cluster = Self::new(dir, node_id, local, ca_pem, certificate)?;
        cluster.write(CA_CERT_FILE, &cluster.ca_pem)?;
        cluster.write(NODE_KEY_FILE, &cluster.certificate.key_pem)?;
        cluster.write(NODE_CERT_FILE, &cluster.certificate.cert_pem)?;
        // Last: its presence is what says this node is a member.
        cluster.save_local()?;
        Ok(cluster)
    }

    fn new(
        dir: PathBuf,
        node_id: &str,
        local: LocalState,
        ca_pem: String,
        certificate: NodeCertificate,
    ) -> Result<Self, ClusterError> {
        let role = CertificateSubject::from_pem(&certificate.cert_pem)?.role;
        let credentials = Credentials {
            cert_pem: certificate.cert_pem.clone(),
            key_pem: certificate.key_pem.clone(),
            ca_pem: ca_pem.clone(),
        };
        Ok(Self {
            dir,
            node_id: node_id.to_owned(),
            role,
            local,
            ca_pem,
            certificate,
            credentials: Arc::new(RwLock::new(credentials)),
            raft: None,
            unlock_key: None,
        })
    }

    pub fn raft_dir(&self) -> PathBuf {
        self.dir.join("raft")
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Reads the replicated store; only managers have one.
    pub fn with_store<T>(&self, read: impl FnOnce(&ClusterState) -> T) -> Result<T, ClusterError> {
        self.require_manager()?.read_store(read)
    }

    /// Fails as Docker does on a worker.
    pub fn require_manager(&self) -> Result<&RaftNode, ClusterError> {
        self.raft.as_ref().ok_or(ClusterError::NotManager)
    }

    /// Replaces this node's certificate (its role may change with it), on
    /// disk too.
    pub fn replace_certificate(
        &mut self,
        certificate: NodeCertificate,
    ) -> Result<(), ClusterError> {
        let role = CertificateSubject::from_pem(&certificate.cert_pem)?.role;
        self.write_secret(
            NODE_KEY_FILE,
            certificate.key_pem.as_bytes(),
            self.unlock_key.as_ref(),
        )?;
        self.write(NODE_CERT_FILE, &certificate.cert_pem)?;
        {
            let mut credentials = self.credentials.write_locked();
            credentials.cert_pem = certificate.cert_pem.clone();
            credentials.key_pem = certificate.key_pem.clone();
        }
        self.certificate = certificate;
        self.role = role;
        Ok(())
    }

    pub fn save_local(&self) -> Result<(), ClusterError> {
        let text = serde_json::to_string_pretty(&self.local).expect("plain data serializes");
        self.write(STATE_FILE, &text)
    }

    /// Forgets the cluster: removes everything this node kept of it. Raft
    /// must have been shut down.
    pub fn remove(self) -> Result<(), ClusterError> {
        fs::remove_dir_all(&self.dir).map_err(|e| store_err(&self.dir, e))
    }

    /// Removes what this node kept of its cluster without loading it (a
    /// locked manager leaving).
    pub fn forget(data_dir: &Path) -> Result<(), ClusterError> {
        let dir = cluster_dir(data_dir);
        fs::remove_dir_all(&dir).map_err(|e| store_err(&dir, e))
    }

    /// Removes the Raft store (a demoted manager's).
    pub fn remove_raft_store(&self) -> Result<(), ClusterError> {
        let dir = self.raft_dir();
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(store_err(&dir, e)),
            _ => Ok(()),
        }
    }

    fn write(&self, name: &str, text: &str) -> Result<(), ClusterError> {
        self.write_bytes(name, text.as_bytes())
    }

    /// Writes a key: sealed under `unlock` when given.
    fn write_secret(
        &self,
        name: &str,
        bytes: &[u8],
        unlock: Option<&UnlockKey>,
    ) -> Result<(), ClusterError> {
        match unlock {
            Some(unlock) => {
                let sealed = unlock
                    .seal(bytes)
                    .map_err(|e| store_err(&self.dir.join(name), e))?;
                self.write_bytes(name, &sealed)
            }
            None => self.write_bytes(name, bytes),
        }
    }

    fn write_bytes(&self, name: &str, bytes: &[u8]) -> Result<(), ClusterError> {
        let path = self.dir.join(name);
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, bytes)
            .and_then(|()| fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)))
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(|e| store_err(&path, e))
    }
}

const STATE_FILE: &str = "state.json";
const CA_CERT_FILE: &str = "ca.pem";
const NODE_CERT_FILE: &str = "node.pem";
const NODE_KEY_FILE: &str = "node-key.pem";
/// The manager's Raft data key, beside its TLS key and outside the Raft
/// store it seals.
const DATA_KEY_FILE: &str = "raft-dek.key";

fn cluster_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("cluster")
}

fn store_err(path: &Path, err: impl std::fmt::Display) -> ClusterError {
    ClusterError::Store {
        path: path.to_owned(),
        message: err.to_string(),
    }
}
