//! Connection tracking for balanced flows: which backend a flow was given
//! and how to rewrite its replies. Entries are refreshed as packets pass;
//! user space removes idle ones (never established TCP flows) and those of
//! removed backends.

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::map, maps::LruHashMap};
use swarm_common::service::{
    CT_FLAG_CLOSING, CT_FLAG_ESTABLISHED, CtEntry, CtKey, IPPROTO_TCP, MAX_CONNTRACK,
};

use crate::nat::{Flow, TCP_ACK};

#[map(name = "sw_conntrack")]
static CONNTRACK: LruHashMap<CtKey, CtEntry> = LruHashMap::pinned(MAX_CONNTRACK, 0);

/// Refreshing the timestamp at most this often keeps writes off the fast path.
const REFRESH_NS: u64 = 1_000_000_000;

/// The key of `flow` as it travels, under `kind`.
#[inline(always)]
pub fn key(flow: &Flow, kind: u8) -> CtKey {
    CtKey {
        saddr: flow.saddr,
        daddr: flow.daddr,
        sport: flow.sport,
        dport: flow.dport,
        protocol: flow.protocol,
        kind,
        _pad: [0; 2],
    }
}

/// The key of the reverse direction of `flow` after its destination became
/// `daddr:dport`: what the other end's replies carry.
#[inline(always)]
pub fn reply_key(flow: &Flow, daddr: u32, dport: u16, kind: u8) -> CtKey {
    CtKey {
        saddr: daddr,
        daddr: flow.saddr,
        sport: dport,
        dport: flow.sport,
        protocol: flow.protocol,
        kind,
        _pad: [0; 2],
    }
}

/// The entry for `key`, refreshed by `flow`'s packet; a copy.
#[inline(always)]
pub fn lookup(key: &CtKey, flow: &Flow) -> Option<CtEntry> {
    let entry = CONNTRACK.get_ptr_mut(key)?;
    // SAFETY: a valid map value pointer; racing writers only store the same kinds of values.
    unsafe {
        let now = bpf_ktime_get_ns();
        let flags = next_flags((*entry).flags, flow);
        if flags != (*entry).flags || now.wrapping_sub((*entry).last_seen_ns) > REFRESH_NS {
            (*entry).last_seen_ns = now;
            (*entry).flags = flags;
        }
        Some(*entry)
    }
}

/// Stores a new entry stamped now; `Err` when the map refuses it.
#[inline(always)]
pub fn insert(key: &CtKey, mut entry: CtEntry) -> Result<(), ()> {
    // SAFETY: plain helper call.
    entry.last_seen_ns = unsafe { bpf_ktime_get_ns() };
    CONNTRACK.insert(key, &entry, 0).map_err(|_| ())
}

/// Forgets `key`'s entry, if there is one.
#[inline(always)]
pub fn remove(key: &CtKey) {
    let _ = CONNTRACK.remove(key);
}

/// Flag transitions: an ACK without FIN/RST establishes a TCP flow (the
/// SYN-ACK does for the reply direction), FIN or RST starts its close.
#[inline(always)]
pub fn next_flags(flags: u8, flow: &Flow) -> u8 {
    if flow.protocol != IPPROTO_TCP {
        return flags;
    }
    if flow.closes() {
        flags | CT_FLAG_CLOSING
    } else if flow.tcp_flags & TCP_ACK != 0 {
        flags | CT_FLAG_ESTABLISHED
    } else {
        flags
    }
}
