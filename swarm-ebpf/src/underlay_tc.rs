//! `sw_underlay_tc`, TC ingress on the underlay interface: the underlay hook
//! on TC instead of XDP, for interfaces where XDP costs more than it saves
//! (a veth, where native XDP strips the peer's segmentation offload and
//! generic XDP copies every aggregated packet). It runs after GRO, so a
//! packet here may be an aggregate of several frames. It also runs the
//! ingress routing mesh, as `sw_mesh_tc` does beside the XDP hook.

use aya_ebpf::{bindings::TC_ACT_SHOT, macros::classifier, programs::TcContext};

use crate::{mesh, packet, stats, underlay};

#[classifier]
pub fn sw_underlay_tc(ctx: TcContext) -> i32 {
    packet::pull_headers(&ctx);
    let bytes = ctx.len() as usize;
    // A malformed frame is an underlay drop; what the mesh drops is the overlay's.
    if let Err(reason) = underlay::inspect(&ctx, bytes) {
        stats::count_drop(reason, bytes);
        return TC_ACT_SHOT;
    }
    match mesh::ingress(&ctx, packet::ingress_ifindex(&ctx), bytes) {
        Ok(verdict) => verdict,
        Err(dropped) => {
            stats::count_overlay_drop(dropped.reason, bytes);
            dropped.verdict
        }
    }
}
