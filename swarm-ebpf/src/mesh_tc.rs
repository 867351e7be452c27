//! `sw_mesh_tc`, TC ingress on the underlay interface beside the XDP hook:
//! the ingress routing mesh.

use aya_ebpf::{macros::classifier, programs::TcContext};

use crate::{mesh, packet, stats};

#[classifier]
pub fn sw_mesh_tc(ctx: TcContext) -> i32 {
    packet::pull_headers(&ctx);
    let bytes = ctx.len() as usize;
    match mesh::ingress(&ctx, packet::ingress_ifindex(&ctx), bytes) {
        Ok(verdict) => verdict,
        Err(dropped) => {
            stats::count_overlay_drop(dropped.reason, bytes);
            dropped.verdict
        }
    }
}
