//! Gossip among many simulated nodes in one process, for the bench: each
//! on its own loopback address (run it in a namespace of its own). How long
//! until an endpoint one node publishes is known to every other.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use super::{Gossip, transport::new_key_hex};
use crate::api::assignments::GossipConfig;

const PATIENCE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(5);
/// How many nodes each one is told of at start.
const SEEDS: usize = 3;

/// Starts `nodes` nodes on 127.0.1.1.. (port `port`), waits until each
/// sees all the others live, then has the first publish one endpoint and
/// returns how long until every other node holds it.
pub async fn endpoint_convergence(nodes: usize, port: u16) -> anyhow::Result<Duration> {
    anyhow::ensure!((2..=250).contains(&nodes), "between 2 and 250 nodes");
    let addr = |i: usize| Ipv4Addr::new(127, 0, 1, i as u8 + 1);
    let config = GossipConfig {
        cluster_id: "simulated".into(),
        key: new_key_hex(),
        previous_key: None,
        peers: (0..SEEDS.min(nodes)).map(addr).collect(),
        data_paths: Default::default(),
    };
    let mut all = Vec::with_capacity(nodes);
    for i in 0..nodes {
        all.push(Gossip::start(&format!("node{i}"), addr(i), port, &config).await?);
    }
    let started = Instant::now();
    loop {
        let mut converged = true;
        for gossip in &all {
            let live = gossip.peers().await.iter().filter(|p| p.live).count();
            if live < nodes {
                converged = false;
                break;
            }
        }
        if converged {
            break;
        }
        anyhow::ensure!(started.elapsed() < PATIENCE, "membership did not converge");
        tokio::time::sleep(POLL).await;
    }
    let endpoint = (4096, Ipv4Addr::new(10, 0, 0, 2));
    all[0].publish(&BTreeMap::from([(endpoint, None)])).await;
    let published = Instant::now();
    let mut waiting: Vec<&Gossip> = all[1..].iter().collect();
    while !waiting.is_empty() {
        anyhow::ensure!(
            published.elapsed() < PATIENCE,
            "the endpoint did not spread"
        );
        let mut still = Vec::new();
        for gossip in waiting {
            let known = gossip.endpoints().await.endpoints;
            if !known.iter().any(|e| (e.vni, e.ip) == endpoint) {
                still.push(gossip);
            }
        }
        waiting = still;
        if !waiting.is_empty() {
            tokio::time::sleep(POLL).await;
        }
    }
    Ok(published.elapsed())
}
