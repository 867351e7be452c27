//! The node's identity and its claim on a data directory.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
};

use nix::fcntl::{Flock, FlockArg};
use rand::Rng as _;

const NODE_ID_FILE: &str = "node-id";
const LOCK_FILE: &str = "daemon.lock";
/// Docker's node IDs: 25 characters of lowercase base 36.
const NODE_ID_LEN: usize = 25;
const NODE_ID_ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot create data dir {path}: {source}")]
    CreateDataDir { path: PathBuf, source: io::Error },
    #[error("cannot open {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error(
        "another swarm daemon already uses data dir {path}; stop it first or give this one its own --data-dir"
    )]
    DataDirInUse { path: PathBuf },
    #[error(
        "{path} holds {found:?}, which is not a node ID; move the data dir aside to start afresh"
    )]
    BadNodeId { path: PathBuf, found: String },
}

/// Held for the daemon's lifetime: the node ID and the lock that keeps a
/// second daemon off the same data dir.
#[derive(Debug)]
pub struct NodeIdentity {
    pub node_id: String,
    pub data_dir: PathBuf,
    _lock: Flock<File>,
}

impl NodeIdentity {
    /// Locks `data_dir` (creating it) and reads the node ID, making one on first start.
    pub fn claim(data_dir: &Path) -> Result<Self, IdentityError> {
        fs::create_dir_all(data_dir).map_err(|source| IdentityError::CreateDataDir {
            path: data_dir.to_owned(),
            source,
        })?;
        let lock_path = data_dir.join(LOCK_FILE);
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| IdentityError::Open {
                path: lock_path,
                source,
            })?;
        let lock = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock).map_err(|_| {
            IdentityError::DataDirInUse {
                path: data_dir.to_owned(),
            }
        })?;

        let id_path = data_dir.join(NODE_ID_FILE);
        let node_id = match fs::read_to_string(&id_path) {
            Ok(text) => {
                let id = text.trim().to_owned();
                if !is_node_id(&id) {
                    return Err(IdentityError::BadNodeId {
                        path: id_path,
                        found: id,
                    });
                }
                id
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                let id = new_id();
                write_atomically(&id_path, id.as_bytes()).map_err(|source| {
                    IdentityError::Open {
                        path: id_path.clone(),
                        source,
                    }
                })?;
                id
            }
            Err(source) => {
                return Err(IdentityError::Open {
                    path: id_path,
                    source,
                });
            }
        };
        Ok(Self {
            node_id,
            data_dir: data_dir.to_owned(),
            _lock: lock,
        })
    }
}

/// Who this node is, for cluster requests.
#[derive(Clone, Debug)]
pub struct LocalNode {
    pub data_dir: PathBuf,
    pub node_id: String,
    pub hostname: String,
    pub advertise_addr: Ipv4Addr,
    /// The daemon's `--listen-addr`: the address the API binds to, and the
    /// port a swarm's API uses unless `init`/`join` name another.
    pub listen_addr: SocketAddr,
    /// The daemon's `--label`s, reported to the swarm as engine labels.
    pub engine_labels: std::collections::BTreeMap<String, String>,
}

/// An address of this host given as Docker takes one: an IPv4 address
/// this host holds (or 0.0.0.0, every one), or the name of an interface
/// holding one.
pub fn local_ipv4(host: &str) -> Result<Ipv4Addr, String> {
    let interfaces: Vec<(String, Ipv4Addr)> = nix::ifaddrs::getifaddrs()
        .map_err(|e| format!("listing this host's interfaces: {e}"))?
        .filter_map(|i| {
            let ip = i.address.as_ref()?.as_sockaddr_in()?.ip();
            Some((i.interface_name, ip))
        })
        .collect();
    match host.parse::<Ipv4Addr>() {
        Ok(ip) if ip.is_unspecified() || interfaces.iter().any(|(_, held)| *held == ip) => Ok(ip),
        Ok(ip) => Err(format!(
            "{ip} is not an address of this host; give one of its addresses or an interface name"
        )),
        Err(_) => interfaces
            .into_iter()
            .find(|(name, _)| name == host)
            .map(|(_, ip)| ip)
            .ok_or_else(|| {
                format!("{host:?} is neither an IPv4 address nor an interface of this host")
            }),
    }
}

/// 25 lowercase alphanumerics, like Docker's IDs: a node's, and every
/// object's in the store.
pub fn new_id() -> String {
    let mut rng = rand::thread_rng();
    (0..NODE_ID_LEN)
        .map(|_| NODE_ID_ALPHABET[rng.gen_range(0..NODE_ID_ALPHABET.len())] as char)
        .collect()
}

pub fn is_node_id(id: &str) -> bool {
    id.len() == NODE_ID_LEN && id.bytes().all(|b| NODE_ID_ALPHABET.contains(&b))
}

/// Writes via a temporary file and rename so a crash never leaves half a file.
fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_is_stable_across_restarts_and_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let first = NodeIdentity::claim(dir.path()).unwrap();
        assert!(is_node_id(&first.node_id));
        assert!(matches!(
            NodeIdentity::claim(dir.path()),
            Err(IdentityError::DataDirInUse { .. })
        ));
        let id = first.node_id.clone();
        drop(first);
        let second = NodeIdentity::claim(dir.path()).unwrap();
        assert_eq!(second.node_id, id);
    }

    #[test]
    fn corrupt_node_id_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(NODE_ID_FILE), "not an id").unwrap();
        let err = NodeIdentity::claim(dir.path()).unwrap_err();
        assert!(matches!(err, IdentityError::BadNodeId { .. }), "{err}");
        assert_eq!(
            fs::read_to_string(dir.path().join(NODE_ID_FILE)).unwrap(),
            "not an id"
        );
    }
}
