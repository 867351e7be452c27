//! Overlay maps and the lookups the overlay programs share.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap},
    programs::TcContext,
};
use swarm_common::{
    overlay::{
        Endpoint, EndpointKey, MAX_ENDPOINTS, MAX_NETWORKS, MAX_PORTS, Network, NodeConfig, Port,
    },
    stats::DropReason,
};

use crate::{
    packet::{ptr_at, ptr_at_mut},
    parse::{ETH_HLEN, EthHdr, Ipv4Hdr},
};

#[map(name = "sw_endpoints")]
static ENDPOINTS: HashMap<EndpointKey, Endpoint> = HashMap::pinned(MAX_ENDPOINTS, 0);

#[map(name = "sw_ports")]
static PORTS: HashMap<u32, Port> = HashMap::pinned(MAX_PORTS, 0);

#[map(name = "sw_networks")]
static NETWORKS: HashMap<u32, Network> = HashMap::pinned(MAX_NETWORKS, 0);

#[map(name = "sw_node_config")]
static NODE_CONFIG: Array<NodeConfig> = Array::pinned(1, 0);

/// The endpoint with overlay address `ip` on network `vni`.
#[inline(always)]
pub fn endpoint(vni: u32, ip: u32) -> Option<Endpoint> {
    // SAFETY: copied out at once.
    unsafe { ENDPOINTS.get(&EndpointKey { vni, ip }) }.copied()
}

/// The network of the task behind host-side veth `ifindex`.
#[inline(always)]
pub fn port(ifindex: u32) -> Option<Port> {
    // SAFETY: copied out at once.
    unsafe { PORTS.get(&ifindex) }.copied()
}

/// Network `vni`, when this node serves it.
#[inline(always)]
pub fn network(vni: u32) -> Option<Network> {
    // SAFETY: copied out at once.
    unsafe { NETWORKS.get(&vni) }.copied()
}

/// This node's settings, once the daemon has written them.
#[inline(always)]
pub fn node_config() -> Option<NodeConfig> {
    NODE_CONFIG.get(0).copied()
}

/// The endpoint an IPv4 frame on network `vni` is for, with the frame's
/// destination MAC set to it; `None` when no endpoint has its address.
#[inline(always)]
pub fn ipv4_destination(ctx: &TcContext, vni: u32) -> Result<Option<Endpoint>, DropReason> {
    let ip: *const Ipv4Hdr = ptr_at(ctx, ETH_HLEN).ok_or(DropReason::Ipv4Truncated)?;
    // SAFETY: bounds-checked by ptr_at.
    let daddr = unsafe { (*ip).daddr };
    let Some(endpoint) = endpoint(vni, daddr) else {
        return Ok(None);
    };
    // Cannot fail once the IPv4 header was there; the verifier wants the check.
    let eth: *mut EthHdr = ptr_at_mut(ctx, 0).ok_or(DropReason::EthTruncated)?;
    // SAFETY: bounds-checked by ptr_at_mut.
    unsafe { (*eth).dst = endpoint.mac };
    Ok(Some(endpoint))
}
