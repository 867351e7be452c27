//! TC ingress on a task's host-side veth: everything the task sends. ARP is
//! answered here; IPv4 to a VIP gets its backend; IPv4 goes straight into a
//! local task's namespace (replies from a backend rewritten back to the VIP)
//! or into the VXLAN tunnel towards the node that has the destination; a
//! backend's reply to a routing-mesh client goes back the way it came.

use aya_ebpf::{helpers::bpf_redirect, macros::classifier, programs::TcContext};
use swarm_common::stats::{DropReason, PacketKind};

use crate::{
    nat, overlay, packet,
    parse::L3,
    service::{self, Outcome},
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

    let frame = match overlay::classify(ctx, bytes) {
        Ok(frame) => frame,
        Err(verdict) => return verdict,
    };
    match frame.l3 {
        L3::Arp => {
            if let Err(verdict) =
                overlay::answer_arp(ctx, port.vni, port.gateway_ip, port.gateway_mac, bytes)
            {
                return verdict;
            }
            // Back out of the same veth, into the task.
            // SAFETY: plain helper call.
            unsafe { bpf_redirect(ifindex, 0) as i32 }
        }
        L3::Ipv4 => {
            if let Outcome::Done(verdict) =
                service::from_task_to_vip(ctx, port.vni, port.gateway_ip, ifindex, bytes)
            {
                return verdict;
            }
            match overlay::ipv4_destination(ctx, port.vni, bytes) {
                Err(verdict) => verdict,
                Ok(Some(endpoint)) if endpoint.ifindex != 0 => service::deliver_to_task(
                    ctx,
                    nat::flow(ctx).ok().as_ref(),
                    endpoint.ifindex,
                    PacketKind::OverlayLocal,
                    bytes,
                ),
                Ok(Some(endpoint)) => overlay::send_to_node(ctx, port.vni, endpoint.node_ip, bytes),
                Ok(None) => service::to_outside(ctx, bytes),
            }
        }
        L3::Ipv6 | L3::Other => overlay::drop(DropReason::UnsupportedL3, bytes),
    }
}
