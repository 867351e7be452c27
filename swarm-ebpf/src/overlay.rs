//! Overlay maps and the lookups both overlay hooks share.

use aya_ebpf::{
    bindings::{TC_ACT_SHOT, bpf_tunnel_key},
    helpers::{bpf_redirect, bpf_redirect_peer, bpf_skb_set_tunnel_key},
    macros::map,
    maps::{Array, HashMap},
    programs::TcContext,
};
use swarm_common::{
    overlay::{
        Endpoint, EndpointKey, LOCAL_DELIVERY_REDIRECT, MAX_ENDPOINTS, MAX_NETWORKS, MAX_PORTS,
        Network, NodeConfig, Port,
    },
    stats::{DropReason, PacketKind},
};

use crate::{
    arp,
    packet::{ptr_at, ptr_at_mut},
    parse::{self, ETH_HLEN, EthHdr, Frame, Ipv4Hdr},
    stats,
};

#[map(name = "sw_endpoints")]
pub static ENDPOINTS: HashMap<EndpointKey, Endpoint> = HashMap::pinned(MAX_ENDPOINTS, 0);

#[map(name = "sw_ports")]
pub static PORTS: HashMap<u32, Port> = HashMap::pinned(MAX_PORTS, 0);

#[map(name = "sw_networks")]
pub static NETWORKS: HashMap<u32, Network> = HashMap::pinned(MAX_NETWORKS, 0);

#[map(name = "sw_node_config")]
pub static NODE_CONFIG: Array<NodeConfig> = Array::pinned(1, 0);

/// Default TTL of the outer IPv4 header.
const TUNNEL_TTL: u8 = 64;

#[inline(always)]
pub fn endpoint(vni: u32, ip: u32) -> Option<&'static Endpoint> {
    // SAFETY: the value is copied out by the caller before any map update can race.
    unsafe { ENDPOINTS.get(&EndpointKey { vni, ip }) }
}

/// This node's settings, once the daemon has written them.
#[inline(always)]
pub fn node_config() -> Option<NodeConfig> {
    NODE_CONFIG.get(0).copied()
}

/// Counts an overlay drop and returns the verdict for it.
#[inline(always)]
pub fn drop(reason: DropReason, bytes: usize) -> i32 {
    stats::count_overlay_drop(reason, bytes);
    TC_ACT_SHOT
}

/// Hands the frame to the VXLAN device for `node_ip` (network byte order) on
/// `vni`: the kernel adds the outer headers, keeping GSO, and routes them.
#[inline(always)]
pub fn send_to_node(ctx: &TcContext, vni: u32, node_ip: u32, bytes: usize) -> i32 {
    let Some(config) = NODE_CONFIG.get(0) else {
        return drop(DropReason::NoTunnelDevice, bytes);
    };
    if config.vxlan_ifindex == 0 {
        return drop(DropReason::NoTunnelDevice, bytes);
    }
    // SAFETY: a zeroed bpf_tunnel_key is valid; fields set below.
    let mut key: bpf_tunnel_key = unsafe { core::mem::zeroed() };
    key.tunnel_id = vni;
    key.__bindgen_anon_1.remote_ipv4 = u32::from_be(node_ip);
    key.tunnel_ttl = TUNNEL_TTL;
    // SAFETY: the helper reads `size_of::<bpf_tunnel_key>()` bytes from `key`.
    let rc = unsafe {
        bpf_skb_set_tunnel_key(
            ctx.skb.skb,
            &mut key,
            core::mem::size_of::<bpf_tunnel_key>() as u32,
            0,
        )
    };
    if rc < 0 {
        return drop(DropReason::HelperFailed, bytes);
    }
    stats::count(PacketKind::OverlayEncap, bytes);
    // SAFETY: plain helper call.
    unsafe { bpf_redirect(config.vxlan_ifindex, 0) as i32 }
}

/// The endpoint an IPv4 frame on network `vni` is for, with the frame's
/// destination MAC set to it; `None` when no endpoint has its address. `Err`
/// holds the verdict for a frame to drop.
#[inline(always)]
pub fn ipv4_destination(ctx: &TcContext, vni: u32, bytes: usize) -> Result<Option<Endpoint>, i32> {
    let Some(ip) = ptr_at::<_, Ipv4Hdr>(ctx, ETH_HLEN) else {
        return Err(drop(DropReason::Ipv4Truncated, bytes));
    };
    // SAFETY: bounds-checked by ptr_at.
    let daddr = unsafe { (*ip).daddr };
    let Some(endpoint) = endpoint(vni, daddr).copied() else {
        return Ok(None);
    };
    let Some(eth) = ptr_at_mut::<_, EthHdr>(ctx, 0) else {
        return Err(TC_ACT_SHOT);
    };
    // SAFETY: bounds-checked by ptr_at_mut.
    unsafe { (*eth).dst = endpoint.mac };
    Ok(Some(endpoint))
}

/// Into the namespace of the task behind host-side veth `ifindex`, counted as
/// `kind`: by default straight there with `bpf_redirect_peer`; the node can be
/// told to use a plain egress redirect instead, to measure the difference.
#[inline(always)]
pub fn deliver_local(ifindex: u32, kind: PacketKind, bytes: usize) -> i32 {
    stats::count(kind, bytes);
    let by_redirect = NODE_CONFIG
        .get(0)
        .is_some_and(|config| config.local_delivery == LOCAL_DELIVERY_REDIRECT);
    if by_redirect {
        // SAFETY: plain helper call.
        return unsafe { bpf_redirect(ifindex, 0) as i32 };
    }
    // SAFETY: plain helper call.
    unsafe { bpf_redirect_peer(ifindex, 0) as i32 }
}

/// Answers the ARP request in `ctx` in place (see [`arp::answer_in_place`]);
/// `Err` holds the verdict for a request to drop.
#[inline(always)]
pub fn answer_arp(
    ctx: &TcContext,
    vni: u32,
    gateway_ip: u32,
    gateway_mac: [u8; 6],
    bytes: usize,
) -> Result<(), i32> {
    arp::answer_in_place(ctx, vni, gateway_ip, gateway_mac)
        .map_err(|reason| drop(reason, bytes))?;
    stats::count(PacketKind::OverlayArpReplied, bytes);
    Ok(())
}

/// The frame's headers, checked; a malformed frame is counted as an overlay
/// drop with its reason and `Err` holds the verdict.
#[inline(always)]
pub fn classify(ctx: &TcContext, bytes: usize) -> Result<Frame, i32> {
    parse::classify(ctx).map_err(|reason| drop(reason, bytes))
}
