//! `sw_underlay_xdp`, XDP on the node's underlay interface: counts what
//! arrives per protocol and drops malformed frames before the kernel stack
//! spends time on them.

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

use crate::{packet::Packet, stats, underlay};

#[xdp]
pub fn sw_underlay_xdp(ctx: XdpContext) -> u32 {
    let bytes = ctx.linear_len();
    match underlay::inspect(&ctx, bytes) {
        Ok(()) => xdp_action::XDP_PASS,
        Err(reason) => {
            stats::count_drop(reason, bytes);
            xdp_action::XDP_DROP
        }
    }
}
