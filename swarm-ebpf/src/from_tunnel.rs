//! `sw_from_tunnel`, TC ingress on the node's collect-metadata VXLAN device:
//! frames other nodes sent, already decapsulated by the kernel (with GRO).
//! Delivered straight into the destination task's namespace; ARP from
//! foreign VTEPs answered back through the tunnel.

use aya_ebpf::{
    bindings::{TC_ACT_SHOT, bpf_tunnel_key},
    helpers::bpf_skb_get_tunnel_key,
    macros::classifier,
    programs::TcContext,
};
use swarm_common::stats::{DropReason, PacketKind};

use crate::{
    arp, nat, overlay, packet,
    parse::{self, L3},
    redirect, service, stats,
};

#[classifier]
pub fn sw_from_tunnel(ctx: TcContext) -> i32 {
    let bytes = ctx.len() as usize;
    match try_from_tunnel(&ctx, bytes) {
        Ok(verdict) => verdict,
        Err(reason) => {
            stats::count_overlay_drop(reason, bytes);
            TC_ACT_SHOT
        }
    }
}

#[inline(always)]
fn try_from_tunnel(ctx: &TcContext, bytes: usize) -> Result<i32, DropReason> {
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
        return Err(DropReason::NoTunnelKey);
    }
    let vni = key.tunnel_id;
    // SAFETY: union read of the IPv4 member the kernel filled for an IPv4 tunnel.
    let remote = unsafe { key.__bindgen_anon_1.remote_ipv4 }.to_be();
    let network = overlay::network(vni).ok_or(DropReason::UnknownVni)?;

    match parse::classify(ctx)?.l3 {
        L3::Arp => {
            // A VTEP that resolves addresses itself (a kernel VXLAN device) asks
            // over the tunnel: answer it the same way.
            arp::answer(ctx, vni, network.gateway_ip, network.gateway_mac, bytes)?;
            redirect::to_node(ctx, vni, remote, bytes)
        }
        L3::Ipv4 => match overlay::ipv4_destination(ctx, vni)? {
            Some(endpoint) if endpoint.ifindex == 0 => Err(DropReason::NotLocal),
            Some(endpoint) => {
                // TCP and UDP only; parsed once for both service steps.
                let flow = nat::flow(ctx).ok();
                if let Some(flow) = &flow {
                    service::remember_return(flow, &network, vni, remote);
                }
                service::deliver_to_task(
                    ctx,
                    flow.as_ref(),
                    endpoint.ifindex,
                    PacketKind::OverlayDecap,
                    bytes,
                )
            }
            None => service::to_outside(ctx, bytes),
        },
        L3::Ipv6 | L3::Other => Err(DropReason::UnsupportedL3),
    }
}
