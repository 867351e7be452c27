//! `sw_from_task`, TC ingress on a task's host-side veth: everything the
//! task sends. ARP is answered here; IPv4 to a VIP gets its backend; IPv4
//! goes straight into a local task's namespace (replies from a backend
//! rewritten back to the VIP) or into the VXLAN tunnel towards the node that
//! has the destination; a backend's reply to a routing-mesh client goes back
//! the way it came.

use aya_ebpf::{helpers::bpf_redirect, macros::classifier, programs::TcContext};
use swarm_common::stats::{DropReason, PacketKind};

use crate::{
    arp, nat, overlay, packet,
    parse::{self, L3},
    redirect, service,
    stats::{self, Dropped},
};

#[classifier]
pub fn sw_from_task(ctx: TcContext) -> i32 {
    let bytes = ctx.len() as usize;
    match try_from_task(&ctx, bytes) {
        Ok(verdict) => verdict,
        Err(dropped) => {
            stats::count_overlay_drop(dropped.reason, bytes);
            dropped.verdict
        }
    }
}

#[inline(always)]
fn try_from_task(ctx: &TcContext, bytes: usize) -> Result<i32, Dropped> {
    packet::pull_headers(ctx);
    stats::count(PacketKind::OverlayFromTask, bytes);
    let ifindex = packet::ingress_ifindex(ctx);
    let port = overlay::port(ifindex).ok_or(DropReason::UnknownPort)?;

    match parse::classify(ctx)?.l3 {
        L3::Arp => {
            arp::answer(ctx, port.vni, port.gateway_ip, port.gateway_mac, bytes)?;
            // Back out of the same veth, into the task.
            // SAFETY: plain helper call.
            Ok(unsafe { bpf_redirect(ifindex, 0) as i32 })
        }
        L3::Ipv4 => {
            service::from_task_to_vip(ctx, port.vni, port.gateway_ip, ifindex, bytes)?;
            let verdict = match overlay::ipv4_destination(ctx, port.vni)? {
                Some(endpoint) if endpoint.ifindex != 0 => service::deliver_to_task(
                    ctx,
                    nat::flow(ctx).ok().as_ref(),
                    endpoint.ifindex,
                    PacketKind::OverlayLocal,
                    bytes,
                )?,
                Some(endpoint) => redirect::to_node(ctx, port.vni, endpoint.node_ip, bytes)?,
                None => service::to_outside(ctx, bytes)?,
            };
            Ok(verdict)
        }
        L3::Ipv6 | L3::Other => Err(DropReason::UnsupportedL3.into()),
    }
}
