//! This node's own certificate: kept when the agent renews it through a
//! manager, signed by this node itself on a manager, and served by the API.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use super::Membership;
use crate::{
    api::ClusterError,
    ca::pki::{CertificateSubject, NodeCertificate, RootCa},
};

impl Membership {
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
    fn renew_own_certificate(&self) -> bool {
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
