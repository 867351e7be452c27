//! What a manager knows of its cluster, and how it is kept on disk:
//! `<data dir>/cluster/` holds `state.json` (cluster ID, tokens, nodes), the
//! CA (`ca.pem`, and its key `ca-key.pem` on managers) and this node's
//! certificate (`node.pem`, `node-key.pem`). Files are written whole to a
//! temporary name and renamed, so a crash leaves the old or the new state.

use std::{
    collections::BTreeMap,
    fs,
    net::SocketAddr,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use super::pki::{self, JoinToken, NodeCertificate, Role, RootCa};

/// Docker's default dispatcher heartbeat is 5 s (a dead node noticed after
/// about 15 s); ours is 500 ms, so three missed beats take 1.5 s. One small
/// RPC per node every 500 ms is little for a manager.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_millis(500);
/// Docker's control-plane port.
pub const DEFAULT_LISTEN_PORT: u16 = 2377;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "This node is already part of a swarm. Use \"swarm leave\" to leave this swarm and join another one."
    )]
    AlreadyInSwarm,
    #[error(
        "This node is not part of a swarm: run `swarm init` to create one, or `swarm join --token TOKEN MANAGER:2377` to join one"
    )]
    NotInSwarm,
    #[error(
        "This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. Please run this command on a manager node or promote the current node to a manager."
    )]
    NotManager,
    #[error("{0}")]
    Join(String),
    #[error("node {0} not found (see `swarm node ls`)")]
    NoSuchNode(String),
    #[error("node reference {0:?} matches more than one node; use a longer ID prefix")]
    AmbiguousNode(String),
    #[error("{0}")]
    Refused(String),
    #[error(
        "You are attempting to leave the swarm on a node that is participating as a manager. Removing the last manager erases all current state of the swarm. Use `--force` to ignore this message."
    )]
    LastManager,
    #[error("{0}")]
    Pki(#[from] pki::PkiError),
    #[error("cluster state in {path}: {message}")]
    Store { path: PathBuf, message: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Availability {
    Active,
    Pause,
    Drain,
}

/// One node as the managers record it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: String,
    pub hostname: String,
    pub addr: SocketAddr,
    pub role: Role,
    pub availability: Availability,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The cluster store (what Raft will replicate between managers).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterState {
    pub cluster_id: String,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    pub worker_token: String,
    pub manager_token: String,
    /// How long node certificates last.
    pub cert_expiry_secs: u64,
    /// How often agents report to the managers.
    pub heartbeat_millis: u64,
    pub nodes: BTreeMap<String, NodeRecord>,
    /// Where the managers are reached (what a worker keeps of the cluster).
    #[serde(default)]
    pub managers: Vec<SocketAddr>,
}

/// This node's membership: the cluster store (on managers), the CA and this
/// node's own certificate. Only managers hold the CA's key.
pub struct Cluster {
    dir: PathBuf,
    pub state: ClusterState,
    pub node_id: String,
    pub role: Role,
    ca_pem: String,
    ca: Option<RootCa>,
    pub certificate: NodeCertificate,
}

/// What `swarm init` is given.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InitOptions {
    pub hostname: String,
    /// Where other nodes reach this manager (advertise address and port).
    pub advertise: SocketAddr,
    pub cert_expiry: Duration,
    pub heartbeat: Duration,
}

impl Cluster {
    /// The cluster this node belonged to when it last ran, if any.
    pub fn load(data_dir: &Path, node_id: &str) -> Result<Option<Self>, ClusterError> {
        let dir = cluster_dir(data_dir);
        let state_path = dir.join(STATE_FILE);
        let state: ClusterState = match fs::read(&state_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| store_err(&state_path, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(store_err(&state_path, e)),
        };
        let read = |name: &str| {
            let path = dir.join(name);
            fs::read_to_string(&path).map_err(|e| store_err(&path, e))
        };
        let ca_pem = read(CA_CERT_FILE)?;
        let ca = if dir.join(CA_KEY_FILE).exists() {
            Some(RootCa::from_pem(&ca_pem, &read(CA_KEY_FILE)?)?)
        } else {
            None
        };
        let certificate = NodeCertificate {
            cert_pem: read(NODE_CERT_FILE)?,
            key_pem: read(NODE_KEY_FILE)?,
        };
        let role = pki::CertificateSubject::from_pem(&certificate.cert_pem)?.role;
        Ok(Some(Self {
            dir,
            state,
            node_id: node_id.to_owned(),
            role,
            ca_pem,
            ca,
            certificate,
        }))
    }

    /// A node that joined: its certificate (for `role`), the CA, and what
    /// it was told of the cluster.
    pub fn joined(
        data_dir: &Path,
        node_id: &str,
        role: Role,
        ca_pem: String,
        certificate: NodeCertificate,
        state: ClusterState,
    ) -> Result<Self, ClusterError> {
        let cluster = Self {
            dir: cluster_dir(data_dir),
            state,
            node_id: node_id.to_owned(),
            role,
            ca_pem,
            ca: None,
            certificate,
        };
        cluster.save_all()?;
        Ok(cluster)
    }

    /// `swarm init`: a new cluster with this node as its only manager.
    pub fn init(
        data_dir: &Path,
        node_id: &str,
        options: &InitOptions,
    ) -> Result<Self, ClusterError> {
        let dir = cluster_dir(data_dir);
        if dir.join(STATE_FILE).exists() {
            return Err(ClusterError::AlreadyInSwarm);
        }
        let cluster_id = random_id();
        let ca = RootCa::generate(&cluster_id)?;
        let certificate = ca.issue(
            &cluster_id,
            node_id,
            Role::Manager,
            &[options.advertise.ip()],
            options.cert_expiry,
        )?;
        let mut nodes = BTreeMap::new();
        nodes.insert(
            node_id.to_owned(),
            NodeRecord {
                id: node_id.to_owned(),
                hostname: options.hostname.clone(),
                addr: options.advertise,
                role: Role::Manager,
                availability: Availability::Active,
                labels: BTreeMap::new(),
            },
        );
        let state = ClusterState {
            cluster_id,
            created_at: now_secs(),
            worker_token: JoinToken::generate(ca.digest()).to_string(),
            manager_token: JoinToken::generate(ca.digest()).to_string(),
            cert_expiry_secs: options.cert_expiry.as_secs(),
            heartbeat_millis: options.heartbeat.as_millis() as u64,
            nodes,
            managers: vec![options.advertise],
        };
        let cluster = Self {
            dir,
            state,
            node_id: node_id.to_owned(),
            role: Role::Manager,
            ca_pem: ca.cert_pem().to_owned(),
            ca: Some(ca),
            certificate,
        };
        cluster.save_all()?;
        Ok(cluster)
    }

    /// The join token for `role`, made anew first when `rotate`: the old
    /// one stops admitting nodes at once.
    pub fn join_token(&mut self, role: Role, rotate: bool) -> Result<String, ClusterError> {
        let digest = self.manager_ca()?.digest();
        if rotate {
            let token = JoinToken::generate(digest).to_string();
            match role {
                Role::Worker => self.state.worker_token = token,
                Role::Manager => self.state.manager_token = token,
            }
            self.save_state()?;
        }
        Ok(match role {
            Role::Worker => self.state.worker_token.clone(),
            Role::Manager => self.state.manager_token.clone(),
        })
    }

    /// The role a presented token admits, if it is one of this cluster's
    /// current tokens.
    pub fn admits(&self, token: &JoinToken) -> Option<Role> {
        let current = |text: &str| text.parse::<JoinToken>().ok();
        if current(&self.state.manager_token).is_some_and(|t| t.same_secret(token)) {
            Some(Role::Manager)
        } else if current(&self.state.worker_token).is_some_and(|t| t.same_secret(token)) {
            Some(Role::Worker)
        } else {
            None
        }
    }

    /// A manager admitting a joining node: the role its token admits, and a
    /// certificate for the key in its request. The node is recorded.
    pub fn admit(
        &mut self,
        token: &str,
        node_id: &str,
        hostname: &str,
        addr: std::net::IpAddr,
        csr_pem: &str,
    ) -> Result<(Role, String), ClusterError> {
        let token: JoinToken = token
            .parse()
            .map_err(|e: pki::TokenError| ClusterError::Join(e.to_string()))?;
        let role = self.admits(&token).ok_or_else(|| {
            ClusterError::Join(
                "invalid join token: it was rotated, or it belongs to another swarm; get the current one with `swarm join-token worker` (or manager) on a manager".into(),
            )
        })?;
        let valid_id = !node_id.is_empty()
            && node_id.len() <= 64
            && node_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !valid_id {
            return Err(ClusterError::Join(format!("invalid node ID {node_id:?}")));
        }
        if node_id == self.node_id {
            return Err(ClusterError::Join(
                "a node cannot join the swarm it manages".into(),
            ));
        }
        let expiry = Duration::from_secs(self.state.cert_expiry_secs);
        let cert = self.manager_ca()?.sign_request(
            csr_pem,
            &self.state.cluster_id,
            node_id,
            role,
            &[addr],
            expiry,
        )?;
        let availability = self
            .state
            .nodes
            .get(node_id)
            .map_or(Availability::Active, |n| n.availability);
        self.state.nodes.insert(
            node_id.to_owned(),
            NodeRecord {
                id: node_id.to_owned(),
                hostname: hostname.to_owned(),
                addr: SocketAddr::new(addr, DEFAULT_LISTEN_PORT),
                role,
                availability,
                labels: BTreeMap::new(),
            },
        );
        self.save_state()?;
        Ok((role, cert))
    }

    /// The node `reference` names: its ID, a unique prefix of it, or its
    /// hostname (as Docker resolves node references).
    pub fn resolve(&self, reference: &str) -> Result<String, ClusterError> {
        if self.state.nodes.contains_key(reference) {
            return Ok(reference.to_owned());
        }
        let matches: Vec<&NodeRecord> = self
            .state
            .nodes
            .values()
            .filter(|n| n.hostname == reference || n.id.starts_with(reference))
            .collect();
        match matches.as_slice() {
            [one] => Ok(one.id.clone()),
            [] => Err(ClusterError::NoSuchNode(reference.to_owned())),
            _ => Err(ClusterError::AmbiguousNode(reference.to_owned())),
        }
    }

    /// Where this manager is reached: the address join commands name.
    pub fn manager_addr(&self) -> Option<SocketAddr> {
        self.state.nodes.get(&self.node_id).map(|n| n.addr)
    }

    pub fn managers(&self) -> usize {
        self.state
            .nodes
            .values()
            .filter(|n| n.role == Role::Manager)
            .count()
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The CA with its key: only on managers.
    pub fn manager_ca(&self) -> Result<&RootCa, ClusterError> {
        self.ca.as_ref().ok_or(ClusterError::NotManager)
    }

    /// Fails as Docker does on a worker.
    pub fn require_manager(&self) -> Result<(), ClusterError> {
        self.manager_ca().map(|_| ())
    }

    /// `swarm leave`: forget the cluster. The last manager needs `force`,
    /// because its leaving erases the cluster.
    pub fn leave(self, force: bool) -> Result<(), ClusterError> {
        if self.role == Role::Manager && self.managers() <= 1 && !force {
            return Err(ClusterError::LastManager);
        }
        fs::remove_dir_all(&self.dir).map_err(|e| store_err(&self.dir, e))
    }

    fn save_all(&self) -> Result<(), ClusterError> {
        fs::create_dir_all(&self.dir).map_err(|e| store_err(&self.dir, e))?;
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| store_err(&self.dir, e))?;
        self.write(CA_CERT_FILE, &self.ca_pem)?;
        if let Some(ca) = &self.ca {
            self.write(CA_KEY_FILE, &ca.key_pem())?;
        }
        self.write(NODE_CERT_FILE, &self.certificate.cert_pem)?;
        self.write(NODE_KEY_FILE, &self.certificate.key_pem)?;
        self.save_state()
    }

    /// Replaces this node's certificate, on disk too.
    pub fn replace_certificate(
        &mut self,
        certificate: NodeCertificate,
    ) -> Result<(), ClusterError> {
        self.write(NODE_KEY_FILE, &certificate.key_pem)?;
        self.write(NODE_CERT_FILE, &certificate.cert_pem)?;
        self.certificate = certificate;
        Ok(())
    }

    pub fn save_state(&self) -> Result<(), ClusterError> {
        let text = serde_json::to_string_pretty(&self.state).expect("plain data serializes");
        self.write(STATE_FILE, &text)
    }

    fn write(&self, name: &str, text: &str) -> Result<(), ClusterError> {
        let path = self.dir.join(name);
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, text)
            .and_then(|()| fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)))
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(|e| store_err(&path, e))
    }
}

const STATE_FILE: &str = "state.json";
const CA_CERT_FILE: &str = "ca.pem";
const CA_KEY_FILE: &str = "ca-key.pem";
const NODE_CERT_FILE: &str = "node.pem";
const NODE_KEY_FILE: &str = "node-key.pem";

fn cluster_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("cluster")
}

fn store_err(path: &Path, err: impl std::fmt::Display) -> ClusterError {
    ClusterError::Store {
        path: path.to_owned(),
        message: err.to_string(),
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// 25 lowercase alphanumerics, like Docker's object IDs.
fn random_id() -> String {
    use rand::Rng as _;
    const CHARS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::thread_rng();
    (0..25)
        .map(|_| CHARS[rng.gen_range(0..CHARS.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> InitOptions {
        InitOptions {
            hostname: "h1".into(),
            advertise: "198.18.0.1:2377".parse().unwrap(),
            cert_expiry: pki::DEFAULT_CERT_EXPIRY,
            heartbeat: DEFAULT_HEARTBEAT,
        }
    }

    #[test]
    fn init_persists_and_a_restart_finds_the_same_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let mut cluster = Cluster::init(dir.path(), "n1", &options()).unwrap();
        assert!(matches!(
            Cluster::init(dir.path(), "n1", &options()),
            Err(ClusterError::AlreadyInSwarm)
        ));
        let worker = cluster.join_token(Role::Worker, false).unwrap();
        let loaded = Cluster::load(dir.path(), "n1").unwrap().unwrap();
        assert_eq!(loaded.state.cluster_id, cluster.state.cluster_id);
        assert_eq!(loaded.state.worker_token, worker);
        assert_eq!(loaded.ca_pem(), cluster.ca_pem());
        let mode = fs::metadata(dir.path().join("cluster/ca-key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn tokens_admit_their_role_until_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let mut cluster = Cluster::init(dir.path(), "n1", &options()).unwrap();
        let worker: JoinToken = cluster
            .join_token(Role::Worker, false)
            .unwrap()
            .parse()
            .unwrap();
        let manager: JoinToken = cluster
            .join_token(Role::Manager, false)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(cluster.admits(&worker), Some(Role::Worker));
        assert_eq!(cluster.admits(&manager), Some(Role::Manager));
        let rotated: JoinToken = cluster
            .join_token(Role::Worker, true)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(cluster.admits(&worker), None, "a rotated token is refused");
        assert_eq!(cluster.admits(&rotated), Some(Role::Worker));
        assert_eq!(cluster.admits(&manager), Some(Role::Manager));
        let foreign = JoinToken::generate([1; 32]);
        assert_eq!(cluster.admits(&foreign), None);
    }

    #[test]
    fn the_last_manager_leaves_only_with_force() {
        let dir = tempfile::tempdir().unwrap();
        Cluster::init(dir.path(), "n1", &options()).unwrap();
        let cluster = Cluster::load(dir.path(), "n1").unwrap().unwrap();
        assert!(matches!(
            cluster.leave(false),
            Err(ClusterError::LastManager)
        ));
        let cluster = Cluster::load(dir.path(), "n1").unwrap().unwrap();
        cluster.leave(true).unwrap();
        assert!(Cluster::load(dir.path(), "n1").unwrap().is_none());
    }
}
