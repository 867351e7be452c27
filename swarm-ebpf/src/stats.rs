//! Per-CPU packet and drop counters, pinned so they outlive a daemon restart.
//!
//! A drop is counted in one place: a program's `try_*` returns its reason
//! (a `DropReason`, or a `Dropped` where the packet may be answered with a
//! reset), and the entry point counts it.

use aya_ebpf::{bindings::TC_ACT_SHOT, macros::map, maps::PerCpuArray};
use swarm_common::stats::{Counter, DropReason, PacketKind};

#[map(name = "sw_pkt_count")]
static PACKET_COUNTERS: PerCpuArray<Counter> = PerCpuArray::pinned(PacketKind::COUNT, 0);

#[map(name = "sw_drop_count")]
static DROP_COUNTERS: PerCpuArray<Counter> = PerCpuArray::pinned(DropReason::COUNT, 0);

#[inline(always)]
fn bump(map: &PerCpuArray<Counter>, index: u32, bytes: usize) {
    if let Some(counter) = map.get_ptr_mut(index) {
        // Per-CPU slot: no other writer, no atomics needed.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += bytes as u64;
        }
    }
}

#[inline(always)]
pub fn count(kind: PacketKind, bytes: usize) {
    bump(&PACKET_COUNTERS, kind as u32, bytes);
}

/// Counts an underlay drop under its reason and under the `dropped` total.
#[inline(always)]
pub fn count_drop(reason: DropReason, bytes: usize) {
    bump(&DROP_COUNTERS, reason as u32, bytes);
    count(PacketKind::Dropped, bytes);
}

/// Counts an overlay drop under its reason and under the `overlay-dropped` total.
#[inline(always)]
pub fn count_overlay_drop(reason: DropReason, bytes: usize) {
    bump(&DROP_COUNTERS, reason as u32, bytes);
    count(PacketKind::OverlayDropped, bytes);
}

/// A packet a TC program does not forward, on its way to the entry point to
/// be counted under `reason`.
pub struct Dropped {
    pub reason: DropReason,
    /// `TC_ACT_SHOT`, or the redirect of the answer the packet was turned
    /// into (a TCP reset): a refused packet still counts as dropped.
    pub verdict: i32,
}

impl From<DropReason> for Dropped {
    #[inline(always)]
    fn from(reason: DropReason) -> Self {
        Dropped {
            reason,
            verdict: TC_ACT_SHOT,
        }
    }
}
