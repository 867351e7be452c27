//! Bounds-checked access to packet bytes, for every program type.

use core::mem;

use aya_ebpf::programs::{TcContext, XdpContext};

/// A packet buffer the verifier can reason about: `[data, data_end)`.
pub trait Packet {
    fn data(&self) -> usize;
    fn data_end(&self) -> usize;

    /// Length of the linear packet data: what `ptr_at` can reach.
    #[inline(always)]
    fn linear_len(&self) -> usize {
        self.data_end() - self.data()
    }

    /// Length of the whole packet. Larger than [`Packet::linear_len`] for an
    /// skb whose payload sits in page fragments (TCP from a local socket, GSO).
    fn total_len(&self) -> usize;
}

impl Packet for XdpContext {
    #[inline(always)]
    fn data(&self) -> usize {
        XdpContext::data(self)
    }

    #[inline(always)]
    fn data_end(&self) -> usize {
        XdpContext::data_end(self)
    }

    /// XDP here runs without multi-buffer support: the frame is all linear.
    #[inline(always)]
    fn total_len(&self) -> usize {
        self.linear_len()
    }
}

impl Packet for TcContext {
    #[inline(always)]
    fn data(&self) -> usize {
        TcContext::data(self)
    }

    #[inline(always)]
    fn data_end(&self) -> usize {
        TcContext::data_end(self)
    }

    #[inline(always)]
    fn total_len(&self) -> usize {
        TcContext::len(self) as usize
    }
}

/// Longest header stack the parser reads: Ethernet, two VLAN tags, IPv4 and
/// TCP with full options.
const MAX_HEADERS: usize = 14 + 8 + 60 + 60;

/// Makes sure the headers are in the linear area so `ptr_at` can reach them;
/// an skb from a local socket may hold only part of them there.
#[inline(always)]
pub fn pull_headers(ctx: &TcContext) {
    let total = ctx.total_len();
    if ctx.linear_len() < MAX_HEADERS && total > ctx.linear_len() {
        let want = if total < MAX_HEADERS {
            total
        } else {
            MAX_HEADERS
        };
        // A failure leaves the packet as it was; the parser then reports truncation.
        let _ = ctx.pull_data(want as u32);
    }
}

/// A pointer to a `T` at `offset`, or `None` when the packet is too short for it.
/// Every packet access goes through here so the verifier sees the bounds check.
#[inline(always)]
pub fn ptr_at<P: Packet, T>(packet: &P, offset: usize) -> Option<*const T> {
    let start = packet.data();
    let end = packet.data_end();
    if start + offset + mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *const T)
}

/// Like [`ptr_at`], for writing (TC programs may rewrite linear packet data).
#[inline(always)]
pub fn ptr_at_mut<P: Packet, T>(packet: &P, offset: usize) -> Option<*mut T> {
    ptr_at::<P, T>(packet, offset).map(|p| p as *mut T)
}

/// The interface the skb arrived on.
#[inline(always)]
pub fn ingress_ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: the context's skb pointer is valid for the program's run.
    unsafe { (*ctx.skb.skb).ifindex }
}
