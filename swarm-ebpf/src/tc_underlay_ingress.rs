//! The underlay hook on TC ingress instead of XDP: for interfaces where XDP
//! costs more than it saves (a veth, where native XDP strips the peer's
//! segmentation offload and generic XDP copies every aggregated packet).
//! Runs after GRO, so a packet here may be an aggregate of several frames.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};

use crate::{packet, underlay};

#[classifier]
pub fn sw_underlay_tc(ctx: TcContext) -> i32 {
    packet::pull_headers(&ctx);
    if underlay::inspect(&ctx, ctx.len() as usize) {
        TC_ACT_OK
    } else {
        TC_ACT_SHOT
    }
}
