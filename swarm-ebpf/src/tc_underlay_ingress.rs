//! TC ingress on the underlay interface. `sw_underlay_tc` is the underlay
//! hook on TC instead of XDP, for interfaces where XDP costs more than it
//! saves (a veth, where native XDP strips the peer's segmentation offload and
//! generic XDP copies every aggregated packet); it runs after GRO, so a packet
//! here may be an aggregate of several frames. Both it and `sw_mesh_tc` (used
//! beside the XDP hook) run the ingress routing mesh.

use aya_ebpf::{bindings::TC_ACT_SHOT, macros::classifier, programs::TcContext};

use crate::{mesh, packet, underlay};

#[classifier]
pub fn sw_underlay_tc(ctx: TcContext) -> i32 {
    packet::pull_headers(&ctx);
    let bytes = ctx.len() as usize;
    if !underlay::inspect(&ctx, bytes) {
        return TC_ACT_SHOT;
    }
    mesh::ingress(&ctx, ingress_ifindex(&ctx), bytes)
}

#[classifier]
pub fn sw_mesh_tc(ctx: TcContext) -> i32 {
    packet::pull_headers(&ctx);
    mesh::ingress(&ctx, ingress_ifindex(&ctx), ctx.len() as usize)
}

#[inline(always)]
fn ingress_ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: the context's skb pointer is valid for the program's run.
    unsafe { (*ctx.skb.skb).ifindex }
}
