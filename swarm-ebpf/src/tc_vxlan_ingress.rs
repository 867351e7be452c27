//! TC ingress on the node's collect-metadata VXLAN device: frames other nodes
//! sent, already decapsulated by the kernel (with GRO). Delivered straight
//! into the destination task's namespace; ARP from foreign VTEPs answered
//! back through the tunnel.

use aya_ebpf::{
    bindings::bpf_tunnel_key, helpers::bpf_skb_get_tunnel_key, macros::classifier,
    programs::TcContext,
};
use swarm_common::stats::{DropReason, PacketKind};

use crate::{nat, overlay, packet, parse::L3, service};

#[classifier]
pub fn sw_from_tunnel(ctx: TcContext) -> i32 {
    try_vxlan_ingress(&ctx)
}

#[inline(always)]
fn try_vxlan_ingress(ctx: &TcContext) -> i32 {
    let bytes = ctx.len() as usize;
    packet::pull_headers(ctx);
    // SAFETY: zeroed is a valid bpf_tunnel_key; the helper fills it.
    let mut key: bpf_tunnel_key = unsafe { core::mem::zeroed() };
    // SAFETY: the helper writes at most `size` bytes into `key`.
    let rc = unsafe {
        bpf_skb_get_tunnel_key(
            ctx.skb.skb,
            &mut key,
            core::mem::size_of::<bpf_tunnel_key>() as u32,
            0,
        )
    };
    if rc < 0 {
        return overlay::drop(DropReason::NoTunnelKey, bytes);
    }
    let vni = key.tunnel_id;
    // SAFETY: copied out at once.
    let Some(network) = (unsafe { overlay::NETWORKS.get(&vni) }).copied() else {
        return overlay::drop(DropReason::UnknownVni, bytes);
    };

    let frame = match overlay::classify(ctx, bytes) {
        Ok(frame) => frame,
        Err(verdict) => return verdict,
    };
    match frame.l3 {
        L3::Arp => {
            // A VTEP that resolves addresses itself (a kernel VXLAN device) asks
            // over the tunnel: answer it the same way.
            if let Err(verdict) =
                overlay::answer_arp(ctx, vni, network.gateway_ip, network.gateway_mac, bytes)
            {
                return verdict;
            }
            // SAFETY: union read of the IPv4 member the kernel filled for an IPv4 tunnel.
            let remote = unsafe { key.__bindgen_anon_1.remote_ipv4 };
            overlay::send_to_node(ctx, vni, remote.to_be(), bytes)
        }
        L3::Ipv4 => match overlay::ipv4_destination(ctx, vni, bytes) {
            Err(verdict) => verdict,
            Ok(Some(endpoint)) if endpoint.ifindex == 0 => {
                overlay::drop(DropReason::NotLocal, bytes)
            }
            Ok(Some(endpoint)) => {
                // TCP and UDP only; parsed once for both service steps.
                let flow = nat::flow(ctx).ok();
                if let Some(flow) = &flow {
                    // SAFETY: union read of the IPv4 member the kernel filled for an IPv4 tunnel.
                    let remote = unsafe { key.__bindgen_anon_1.remote_ipv4 };
                    service::remember_return(flow, &network, vni, remote.to_be());
                }
                service::deliver_to_task(
                    ctx,
                    flow.as_ref(),
                    endpoint.ifindex,
                    PacketKind::OverlayDecap,
                    bytes,
                )
            }
            Ok(None) => service::to_outside(ctx, bytes),
        },
        L3::Ipv6 | L3::Other => overlay::drop(DropReason::UnsupportedL3, bytes),
    }
}
