//! TC ingress on a task's host-side veth: everything the task sends. ARP is
//! answered here; IPv4 goes straight into a local task's namespace or into the
//! VXLAN tunnel towards the node that has the destination.

use aya_ebpf::{
    bindings::TC_ACT_SHOT,
    helpers::{bpf_redirect, bpf_redirect_peer},
    macros::classifier,
    programs::TcContext,
};
use swarm_common::stats::{DropReason, PacketKind};

use crate::{
    arp, overlay,
    packet::{self, ptr_at, ptr_at_mut},
    parse::{self, ETH_HLEN, EthHdr, Ipv4Hdr, L3},
    stats,
};

#[classifier]
pub fn sw_from_task(ctx: TcContext) -> i32 {
    try_task_ingress(&ctx)
}

#[inline(always)]
fn try_task_ingress(ctx: &TcContext) -> i32 {
    let bytes = ctx.len() as usize;
    packet::pull_headers(ctx);
    stats::count(PacketKind::OverlayFromTask, bytes);
    // SAFETY: the context's skb pointer is valid for the program's run.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: copied out at once.
    let Some(port) = (unsafe { overlay::PORTS.get(&ifindex) }).copied() else {
        return overlay::drop(DropReason::UnknownPort, bytes);
    };

    let frame = match parse::classify(ctx) {
        Ok(frame) => frame,
        Err(reason) => return overlay::drop(reason, bytes),
    };
    match frame.l3 {
        L3::Arp => {
            if let Err(reason) =
                arp::answer_in_place(ctx, port.vni, port.gateway_ip, port.gateway_mac)
            {
                return overlay::drop(reason, bytes);
            }
            stats::count(PacketKind::OverlayArpReplied, bytes);
            // Back out of the same veth, into the task.
            // SAFETY: plain helper call.
            unsafe { bpf_redirect(ifindex, 0) as i32 }
        }
        L3::Ipv4 => forward_ipv4(ctx, port.vni, bytes),
        L3::Ipv6 | L3::Other => overlay::drop(DropReason::UnsupportedL3, bytes),
    }
}

#[inline(always)]
fn forward_ipv4(ctx: &TcContext, vni: u32, bytes: usize) -> i32 {
    let Some(ip) = ptr_at::<_, Ipv4Hdr>(ctx, ETH_HLEN) else {
        return overlay::drop(DropReason::Ipv4Truncated, bytes);
    };
    // SAFETY: bounds-checked by ptr_at.
    let daddr = unsafe { (*ip).daddr };
    let Some(endpoint) = overlay::endpoint(vni, daddr).copied() else {
        return overlay::drop(DropReason::UnknownDestination, bytes);
    };
    let Some(eth) = ptr_at_mut::<_, EthHdr>(ctx, 0) else {
        return TC_ACT_SHOT;
    };
    // SAFETY: bounds-checked by ptr_at_mut.
    unsafe { (*eth).dst = endpoint.mac };

    if endpoint.ifindex != 0 {
        stats::count(PacketKind::OverlayLocal, bytes);
        // Into the destination task's namespace without a trip through the host stack.
        // SAFETY: plain helper call.
        return unsafe { bpf_redirect_peer(endpoint.ifindex, 0) as i32 };
    }
    overlay::send_to_node(ctx, vni, endpoint.node_ip, bytes)
}
