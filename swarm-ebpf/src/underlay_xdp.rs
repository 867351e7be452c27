//! XDP on the node's underlay interface: counts what arrives per protocol and
//! drops malformed frames before the kernel stack spends time on them.

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

use crate::{packet::Packet, underlay};

#[xdp]
pub fn sw_underlay_xdp(ctx: XdpContext) -> u32 {
    if underlay::inspect(&ctx, ctx.linear_len()) {
        xdp_action::XDP_PASS
    } else {
        xdp_action::XDP_DROP
    }
}
