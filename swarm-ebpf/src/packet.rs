//! Bounds-checked access to packet bytes, for every program type.

use core::mem;

use aya_ebpf::programs::XdpContext;

/// A packet buffer the verifier can reason about: `[data, data_end)`.
pub trait Packet {
    fn data(&self) -> usize;
    fn data_end(&self) -> usize;

    /// Length of the linear packet data.
    #[inline(always)]
    fn len(&self) -> usize {
        self.data_end() - self.data()
    }
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
