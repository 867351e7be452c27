//! Where a frame leaves for: a local task's namespace, or the VXLAN tunnel
//! towards another node.

use aya_ebpf::{
    bindings::bpf_tunnel_key,
    helpers::{bpf_redirect, bpf_redirect_peer, bpf_skb_set_tunnel_key},
    programs::TcContext,
};
use swarm_common::{
    overlay::LOCAL_DELIVERY_REDIRECT,
    stats::{DropReason, PacketKind},
};

use crate::{overlay, stats};

/// Default TTL of the outer IPv4 header.
const TUNNEL_TTL: u8 = 64;

/// Hands the frame to the VXLAN device for `node_ip` (network byte order) on
/// `vni`: the kernel adds the outer headers, keeping GSO, and routes them.
#[inline(always)]
pub fn to_node(ctx: &TcContext, vni: u32, node_ip: u32, bytes: usize) -> Result<i32, DropReason> {
    let config = overlay::node_config().ok_or(DropReason::NoTunnelDevice)?;
    if config.vxlan_ifindex == 0 {
        return Err(DropReason::NoTunnelDevice);
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
        return Err(DropReason::HelperFailed);
    }
    stats::count(PacketKind::OverlayEncap, bytes);
    // SAFETY: plain helper call.
    Ok(unsafe { bpf_redirect(config.vxlan_ifindex, 0) as i32 })
}

/// Into the namespace of the task behind host-side veth `ifindex`, counted as
/// `kind`: by default straight there with `bpf_redirect_peer`; the node can be
/// told to use a plain egress redirect instead, to measure the difference.
#[inline(always)]
pub fn to_task(ifindex: u32, kind: PacketKind, bytes: usize) -> i32 {
    stats::count(kind, bytes);
    let by_redirect = overlay::node_config()
        .is_some_and(|config| config.local_delivery == LOCAL_DELIVERY_REDIRECT);
    if by_redirect {
        // SAFETY: plain helper call.
        return unsafe { bpf_redirect(ifindex, 0) as i32 };
    }
    // SAFETY: plain helper call.
    unsafe { bpf_redirect_peer(ifindex, 0) as i32 }
}
