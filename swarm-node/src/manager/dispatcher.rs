//! What a manager answers other nodes on the API (heartbeats, joins,
//! renewals), and this node's own certificate: kept when renewed, and
//! served.

use super::*;

impl Membership {
    /// A manager hearing from a node. The leader records it alive; any
    /// manager says how often to call again, who leads, where the managers
    /// are, and the role the cluster gives the caller.
    pub fn heartbeat(
        &self,
        subject: &CertificateSubject,
    ) -> Result<proto::HeartbeatResponse, ClusterError> {
        self.authorize_member(subject)?;
        let raft = self.require_raft()?;
        let (record, managers, period) = self.read_store(|s| {
            (
                s.nodes.get(&subject.node_id).cloned(),
                s.managers().map(|m| m.addr.to_string()).collect::<Vec<_>>(),
                s.heartbeat_millis,
            )
        })?;
        let record = record.ok_or_else(|| {
            ClusterError::Refused(format!(
                "node {} is not a member of this swarm (it was removed)",
                subject.node_id
            ))
        })?;
        let leading = raft.is_leader();
        if leading {
            self.liveness()
                .seen
                .insert(subject.node_id.clone(), Instant::now());
        }
        Ok(proto::HeartbeatResponse {
            period_millis: period.max(1),
            leader: if leading {
                String::new()
            } else {
                raft.leader().map(|l| l.addr).unwrap_or_default()
            },
            managers,
            role: record.role.to_string(),
        })
    }

    /// A manager's answer to a joining node: a certificate for the role its
    /// token admits; the node is recorded through the leader.
    pub fn admit(&self, request: &proto::JoinRequest) -> Result<proto::JoinResponse, ClusterError> {
        let addr: IpAddr = request.advertise_addr.parse().map_err(|_| {
            ClusterError::Join(format!(
                "invalid advertise address {:?}",
                request.advertise_addr
            ))
        })?;
        let token: JoinToken = request
            .token
            .parse()
            .map_err(|e: crate::cluster::pki::TokenError| ClusterError::Join(e.to_string()))?;
        let listen_port = match request.listen_port {
            0 => DEFAULT_LISTEN_PORT,
            port => u16::try_from(port)
                .map_err(|_| ClusterError::Join(format!("invalid listen port {port}")))?,
        };
        let node_id = &request.node_id;
        let valid_id = !node_id.is_empty()
            && node_id.len() <= 64
            && node_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !valid_id {
            return Err(ClusterError::Join(format!("invalid node ID {node_id:?}")));
        }
        let (role, cert_pem, cluster_id, ca_pem, managers) = self.read_store(|s| {
            let role = s.admits(&token).ok_or_else(|| {
                ClusterError::Join(
                    "invalid join token: it was rotated, or it belongs to another swarm; get the current one with `swarm join-token worker` (or manager) on a manager".into(),
                )
            })?;
            if s.nodes.get(node_id).is_some_and(|n| n.role == Role::Manager) {
                return Err(ClusterError::Join(format!(
                    "node {node_id} is still a manager of this swarm (it left with --force): demote it first with `swarm node demote {node_id}` on a manager, then join again"
                )));
            }
            let ca = RootCa::from_pem(&s.ca_cert_pem, &s.ca_key_pem)?;
            let cert = ca.sign_request(
                &request.csr_pem,
                &s.cluster_id,
                node_id,
                role,
                &[addr],
                Duration::from_secs(s.cert_expiry_secs),
            )?;
            let managers: Vec<String> = s.managers().map(|m| m.addr.to_string()).collect();
            Ok::<_, ClusterError>((role, cert, s.cluster_id.clone(), s.ca_cert_pem.clone(), managers))
        })??;
        self.write(Command::AddNode(NodeRecord {
            id: node_id.clone(),
            hostname: request.hostname.clone(),
            addr: SocketAddr::new(addr, listen_port),
            role,
            availability: Availability::Active,
            labels: BTreeMap::new(),
            resources: NodeResources {
                nano_cpus: request.nano_cpus,
                memory_bytes: request.memory_bytes,
            },
        }))?;
        Ok(proto::JoinResponse {
            cluster_id,
            role: role.to_string(),
            cert_pem,
            ca_pem,
            managers,
        })
    }

    /// A manager renewing a member's certificate: same node, in the role the
    /// cluster now gives it, for the key in `csr_pem`.
    pub fn renew(
        &self,
        subject: &CertificateSubject,
        csr_pem: &str,
    ) -> Result<String, ClusterError> {
        self.authorize_member(subject)?;
        self.read_store(|s| {
            let node = s
                .nodes
                .get(&subject.node_id)
                .ok_or_else(|| ClusterError::NoSuchNode(subject.node_id.clone()))?;
            let ca = RootCa::from_pem(&s.ca_cert_pem, &s.ca_key_pem)?;
            Ok(ca.sign_request(
                csr_pem,
                &s.cluster_id,
                &node.id,
                node.role,
                &[node.addr.ip()],
                Duration::from_secs(s.cert_expiry_secs),
            )?)
        })?
    }

    /// This node's current certificate.
    pub fn certificate(&self) -> Option<NodeCertificate> {
        self.lock().as_ref().map(|c| c.certificate.clone())
    }

    /// Keeps a renewed certificate (from a manager); its role may differ.
    pub fn store_certificate(&self, certificate: NodeCertificate) -> Result<(), ClusterError> {
        let mut slot = self.lock();
        let cluster = slot.as_mut().ok_or(ClusterError::NotInSwarm)?;
        cluster.replace_certificate(certificate)
    }

    /// Keeps what the agent heard of the managers.
    pub fn note_managers(&self, managers: Vec<SocketAddr>, period_millis: u64) {
        let mut slot = self.lock();
        let Some(cluster) = slot.as_mut() else {
            return;
        };
        if managers.is_empty()
            || (cluster.local.managers == managers
                && cluster.local.heartbeat_millis == period_millis)
        {
            return;
        }
        cluster.local.managers = managers;
        cluster.local.heartbeat_millis = period_millis;
        if let Err(err) = cluster.save_local() {
            tracing::warn!(error = %err, "saving the managers' addresses failed");
        }
    }

    /// Signs this manager's new certificate once half the old one's life
    /// has passed; says whether it did.
    pub(super) fn renew_own_certificate(&self) -> bool {
        let mut slot = self.lock();
        let Some(cluster) = slot.as_mut().filter(|c| c.raft.is_some()) else {
            return false;
        };
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let due = CertificateSubject::from_pem(&cluster.certificate.cert_pem)
            .map_or(true, |subject| subject.renewal_due(now));
        if !due {
            return false;
        }
        let node_id = cluster.node_id.clone();
        let issued = cluster.with_store(|s| {
            let me = s
                .nodes
                .get(&node_id)
                .ok_or_else(|| ClusterError::NoSuchNode(node_id.clone()))?;
            let ca = RootCa::from_pem(&s.ca_cert_pem, &s.ca_key_pem)?;
            Ok::<_, ClusterError>(ca.issue(
                &s.cluster_id,
                &node_id,
                me.role,
                &[me.addr.ip()],
                Duration::from_secs(s.cert_expiry_secs),
            )?)
        });
        match issued
            .and_then(|issued| issued)
            .and_then(|cert| cluster.replace_certificate(cert))
        {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(error = %err, "renewing this manager's certificate failed");
                false
            }
        }
    }

    /// A manager signs its own new certificate when half the old one's life
    /// has passed, then serves the API with it.
    pub(super) fn renew_own_if_due(self: &Arc<Self>) {
        let renewed = self.renew_own_certificate();
        if renewed {
            tracing::info!("manager certificate renewed");
        }
        // Renewed here, or by the agent through another manager: present it
        // from the next handshake on; open connections carry on.
        let Some((cert_pem, key_pem, ca_pem)) = self.lock().as_ref().map(|c| {
            (
                c.certificate.cert_pem.clone(),
                c.certificate.key_pem.clone(),
                c.ca_pem().to_owned(),
            )
        }) else {
            return;
        };
        if self
            .served_certificate
            .cert_pem()
            .is_some_and(|served| served != cert_pem)
        {
            match self.served_certificate.set(&cert_pem, &key_pem, &ca_pem) {
                Ok(()) => tracing::info!("serving the API with the renewed certificate"),
                Err(err) => {
                    tracing::error!(error = %err, "the renewed certificate cannot be served")
                }
            }
        }
    }
}
