//! The control API as the leader answers it, one module per object kind.
//! The control socket (the `swarm` CLI) reaches it through `node`, other
//! managers through the leader's `Manager` service; both arrive here.

mod cluster;
mod networks;
mod nodes;
mod payloads;
mod services;

use crate::{
    api::{
        ClusterError, Role,
        control::{Request, Response},
    },
    clock::now_secs,
    manager::{Manager, store::Command},
};

impl Manager {
    /// Answers `request` from node `origin` (which `node ls` marks as
    /// self); this manager must lead.
    pub(super) fn serve_request(
        &self,
        request: &Request,
        origin: &str,
    ) -> Result<Response, ClusterError> {
        match request {
            Request::NodeList { filters } => self.nodes(origin, filters),
            Request::NodeInspect { node } => self.inspect(node, origin),
            Request::NodeUpdate(update) => self.update(update),
            Request::NodeRemove { node, force } => self.remove(node, *force),
            Request::NodePromote { nodes } => self.change_roles(nodes, Role::Manager),
            Request::NodeDemote { nodes } => self.change_roles(nodes, Role::Worker),
            Request::JoinToken { role, rotate } => self.join_token_here(*role, *rotate),
            Request::SwarmNetworkCreate(network) => self.create_network(network),
            Request::SwarmNetworkList { filters } => self.networks(filters),
            Request::SwarmNetworkInspect { network } => self.inspect_network(network),
            Request::SwarmNetworkRemove { networks } => self.remove_networks(networks),
            Request::SwarmServiceCreate {
                spec,
                resolve_image,
            } => self.create_service(spec, *resolve_image),
            Request::SwarmServiceList { filters } => self.list_services(filters),
            Request::SwarmServiceInspect { service } => self.inspect_service(service),
            Request::SwarmServiceTasks { services, filters } => {
                self.service_tasks(services, filters, origin)
            }
            Request::SwarmServiceScale { scales } => self.scale_services(scales),
            Request::SwarmServiceUpdate(update) => self.update_service(update),
            Request::SwarmServiceRollback { service } => self.rollback_service(service),
            Request::SwarmServiceRemove { services } => self.remove_services(services),
            Request::SwarmServiceLogs {
                reference,
                tail,
                since_nanos,
            } => self.service_logs(reference, *tail, *since_nanos),
            Request::SwarmRotateGossipKey => self
                .commit_here(Command::rotate_gossip_key(now_secs()))
                .map(|()| Response::Notes(vec!["Gossip key rotated.".into()])),
            Request::SwarmSetGossipKeyRotation { secs } => self
                .commit_here(Command::SetGossipKeyRotation { secs: *secs })
                .map(|()| {
                    Response::Notes(vec![format!(
                        "The gossip key now rotates every {}.",
                        whole_units(*secs)
                    )])
                }),
            Request::SwarmUpdateSettings {
                heartbeat_millis,
                cert_expiry_secs,
                task_history_limit,
                snapshot_interval,
                max_snapshots,
                autolock,
            } => {
                self.commit_here(Command::SetSwarmSettings {
                    heartbeat_millis: *heartbeat_millis,
                    cert_expiry_secs: *cert_expiry_secs,
                    task_history_limit: *task_history_limit,
                    snapshot_interval: *snapshot_interval,
                    max_snapshots: *max_snapshots,
                })?;
                if let Some(on) = autolock {
                    self.set_autolock(*on)?;
                }
                Ok(Response::Notes(vec!["Swarm updated.".into()]))
            }
            Request::SwarmUnlockKey { rotate } => self.unlock_key(*rotate),
            Request::SwarmServiceDeploy {
                spec,
                resolve_image,
            } => self.deploy_service(spec, *resolve_image),
            Request::PayloadCreate(request) => self.create_payload(request),
            Request::PayloadList { kind, filters } => self.list_payloads(*kind, filters),
            Request::PayloadInspect { kind, references } => {
                self.inspect_payloads(*kind, references)
            }
            Request::PayloadRemove { kind, references } => self.remove_payloads(*kind, references),
            Request::PayloadUpdate {
                kind,
                reference,
                version,
                labels,
                data,
            } => self.update_payload(*kind, reference, *version, labels, data.as_ref()),
            Request::SwarmServiceObjects => self.service_objects(),
            Request::SwarmTaskObjects => self.task_objects(),
            Request::NodeObjects => self.node_objects(),
            Request::SwarmInspect => self.swarm_inspect(),
            Request::SwarmServiceReplace(request) => self.replace_service(request),
            other => Err(ClusterError::Refused(format!(
                "{other:?} is not a request the leader runs"
            ))),
        }
    }
}

/// `secs` in the largest unit that divides it: 12h, 90m, 45s.
fn whole_units(secs: u64) -> String {
    match secs {
        0 => "0s".into(),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}
