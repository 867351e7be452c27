//! Gossip between all nodes on UDP 7946 (chitchat: scuttlebutt
//! reconciliation and a phi-accrual failure detector), sealed with a key
//! the managers hand out. Each node publishes the overlay endpoints of the
//! tasks it runs, with the names each answers to; every node programs the
//! other nodes' endpoints and names from it, so the overlay and the
//! resolver keep learning new tasks while the managers are out of reach,
//! and withdraw a dead node's.

pub mod simulate;
pub mod transport;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{Arc, RwLock},
    time::Duration,
};

use chitchat::{ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, spawn_chitchat};
use serde::{Deserialize, Serialize};

use self::transport::{DatagramCounters, GossipKey, Keys, SealedTransport};
use crate::api::{
    assignments::{EndpointNames, GossipConfig, RemoteEndpoint},
    control::GossipStats,
};
use crate::lock::ReadWriteLocked as _;

/// Docker's gossip port.
pub const DEFAULT_GOSSIP_PORT: u16 = 7946;
/// How often a node gossips with a few others (chitchat picks 3).
const GOSSIP_INTERVAL: Duration = Duration::from_millis(100);
/// Key prefix of a published endpoint: `ep/<vni>/<ip>`; its value is the
/// JSON of its names, or empty for an endpoint that answers to none (yet).
const ENDPOINT_PREFIX: &str = "ep/";

/// One node's endpoints: (VNI, task address) and the names each answers to.
pub type PublishedEndpoints = BTreeMap<(u32, Ipv4Addr), Option<EndpointNames>>;

/// A peer as this node sees it, for `network inspect`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub node_id: String,
    pub addr: Ipv4Addr,
    pub live: bool,
    /// The endpoints it publishes: (VNI, task address), and their names.
    pub endpoints: Vec<(u32, Ipv4Addr, Option<EndpointNames>)>,
}

/// What gossip says about the other nodes' endpoints.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GossipedEndpoints {
    /// Published by live nodes.
    pub endpoints: BTreeSet<RemoteEndpoint>,
    /// The names of those that answer to some.
    pub names: BTreeMap<(u32, Ipv4Addr), EndpointNames>,
    /// Nodes the failure detector holds dead: what the managers still say
    /// is there is not programmed.
    pub dead_nodes: BTreeSet<Ipv4Addr>,
}

pub struct Gossip {
    handle: ChitchatHandle,
    keys: Arc<RwLock<Keys>>,
    counters: Arc<DatagramCounters>,
    advertise: Ipv4Addr,
}

impl Gossip {
    /// Starts gossiping as `node_id` on `advertise:port`.
    pub async fn start(
        node_id: &str,
        advertise: Ipv4Addr,
        port: u16,
        config: &GossipConfig,
    ) -> anyhow::Result<Self> {
        let keys = Arc::new(RwLock::new(keys_of(config)?));
        let counters = Arc::new(DatagramCounters::default());
        let addr = SocketAddr::new(advertise.into(), port);
        let generation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let chitchat_config = ChitchatConfig {
            chitchat_id: ChitchatId::new(node_id.to_owned(), generation, addr),
            cluster_id: config.cluster_id.clone(),
            gossip_interval: GOSSIP_INTERVAL,
            listen_addr: addr,
            seed_nodes: seeds(config, advertise, port),
            failure_detector_config: FailureDetectorConfig {
                // Heartbeats every 100 ms: a node silent for about a second
                // is dead.
                phi_threshold: 8.0,
                sampling_window_size: 1000,
                max_interval: Duration::from_secs(2),
                initial_interval: GOSSIP_INTERVAL,
                dead_node_grace_period: Duration::from_secs(3600),
            },
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
        };
        let transport = SealedTransport {
            keys: keys.clone(),
            counters: counters.clone(),
        };
        let handle = spawn_chitchat(chitchat_config, Vec::new(), &transport).await?;
        Ok(Self {
            handle,
            keys,
            counters,
            advertise,
        })
    }

    /// Takes the managers' latest word: keys (a rotation) and seeds.
    pub fn update(&self, config: &GossipConfig) {
        if let Ok(keys) = keys_of(config) {
            *self.keys.write_locked() = keys;
        }
    }

    /// Publishes this node's endpoints and their names; withdraws the ones
    /// no longer there.
    pub async fn publish(&self, endpoints: &PublishedEndpoints) {
        let wanted: BTreeMap<String, String> = endpoints
            .iter()
            .map(|((vni, ip), names)| {
                let value = names
                    .as_ref()
                    .and_then(|names| serde_json::to_string(names).ok())
                    .unwrap_or_default();
                (format!("{ENDPOINT_PREFIX}{vni}/{ip}"), value)
            })
            .collect();
        self.handle
            .with_chitchat(|chitchat| {
                let state = chitchat.self_node_state();
                let held: BTreeMap<String, String> = state
                    .key_values()
                    .filter(|(key, _)| key.starts_with(ENDPOINT_PREFIX))
                    .map(|(key, value)| (key.to_owned(), value.to_owned()))
                    .collect();
                for key in held.keys().filter(|key| !wanted.contains_key(*key)) {
                    state.delete(key);
                }
                for (key, value) in &wanted {
                    if held.get(key) != Some(value) {
                        state.set(key, value);
                    }
                }
            })
            .await;
    }

    /// The other nodes' endpoints, and which nodes are dead.
    pub async fn endpoints(&self) -> GossipedEndpoints {
        let me = self.advertise;
        self.handle
            .with_chitchat(|chitchat| {
                let mut seen = GossipedEndpoints::default();
                let live: Vec<ChitchatId> = chitchat.live_nodes().cloned().collect();
                for id in &live {
                    let Some(node) = ipv4(id.gossip_advertise_addr) else {
                        continue;
                    };
                    if node == me {
                        continue;
                    }
                    let Some(state) = chitchat.node_state(id) else {
                        continue;
                    };
                    for (key, value) in state.key_values() {
                        if let Some((vni, ip)) = parse_endpoint(key) {
                            seen.endpoints.insert(RemoteEndpoint { vni, ip, node });
                            if let Some(names) = parse_names(value) {
                                seen.names.insert((vni, ip), names);
                            }
                        }
                    }
                }
                let live_addrs: BTreeSet<Ipv4Addr> = live
                    .iter()
                    .filter_map(|id| ipv4(id.gossip_advertise_addr))
                    .collect();
                seen.dead_nodes = chitchat
                    .dead_nodes()
                    .filter_map(|id| ipv4(id.gossip_advertise_addr))
                    .filter(|addr| !live_addrs.contains(addr))
                    .collect();
                seen
            })
            .await
    }

    /// Every node this one has heard of.
    pub async fn peers(&self) -> Vec<Peer> {
        self.handle
            .with_chitchat(|chitchat| {
                let live: BTreeSet<ChitchatId> = chitchat.live_nodes().cloned().collect();
                let mut peers: Vec<Peer> = chitchat
                    .node_states()
                    .iter()
                    .filter_map(|(id, state)| {
                        Some(Peer {
                            node_id: id.node_id.clone(),
                            addr: ipv4(id.gossip_advertise_addr)?,
                            live: live.contains(id),
                            endpoints: state
                                .key_values()
                                .filter_map(|(key, value)| {
                                    let (vni, ip) = parse_endpoint(key)?;
                                    Some((vni, ip, parse_names(value)))
                                })
                                .collect(),
                        })
                    })
                    .collect();
                peers.sort_by_key(|peer| peer.addr);
                peers.dedup_by(|a, b| a.addr == b.addr && a.node_id == b.node_id);
                peers
            })
            .await
    }

    pub fn stats(&self) -> GossipStats {
        GossipStats {
            key_id: self.keys.read_locked().current.id(),
            ..self.counters.stats()
        }
    }
}

impl Drop for Gossip {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

fn keys_of(config: &GossipConfig) -> anyhow::Result<Keys> {
    let current = GossipKey::from_hex(&config.key)
        .ok_or_else(|| anyhow::anyhow!("the managers sent a malformed gossip key"))?;
    Ok(Keys {
        current,
        previous: config.previous_key.as_deref().and_then(GossipKey::from_hex),
    })
}

fn seeds(config: &GossipConfig, me: Ipv4Addr, port: u16) -> Vec<String> {
    config
        .peers
        .iter()
        .filter(|peer| **peer != me)
        .map(|peer| SocketAddr::new((*peer).into(), port).to_string())
        .collect()
}

fn ipv4(addr: SocketAddr) -> Option<Ipv4Addr> {
    match addr.ip() {
        IpAddr::V4(ip) => Some(ip),
        IpAddr::V6(_) => None,
    }
}

fn parse_endpoint(key: &str) -> Option<(u32, Ipv4Addr)> {
    let (vni, ip) = key.strip_prefix(ENDPOINT_PREFIX)?.split_once('/')?;
    Some((vni.parse().ok()?, ip.parse().ok()?))
}

/// An endpoint's names; none for an empty or unreadable value (a node of
/// another version publishes what this one may not read: its endpoint still
/// counts).
fn parse_names(value: &str) -> Option<EndpointNames> {
    if value.is_empty() {
        return None;
    }
    serde_json::from_str(value).ok()
}
