//! The load balancer's maps and backend choice: VIPs and published ports
//! (frontends) point at backend sets, taken in turn.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap},
};
use swarm_common::service::{
    BackendKey, Frontend, MAX_BACKEND_SETS, MAX_BACKENDS, MAX_PUBLISHED, MAX_VIPS, PublishedKey,
    VipKey,
};

#[map(name = "sw_vips")]
static VIPS: HashMap<VipKey, Frontend> = HashMap::pinned(MAX_VIPS, 0);

#[map(name = "sw_published")]
static PUBLISHED: HashMap<PublishedKey, Frontend> = HashMap::pinned(MAX_PUBLISHED, 0);

#[map(name = "sw_backends")]
static BACKENDS: HashMap<BackendKey, u32> = HashMap::pinned(MAX_BACKENDS, 0);

#[map(name = "sw_rr")]
static ROUND_ROBIN: Array<u32> = Array::pinned(MAX_BACKEND_SETS, 0);

/// The service behind `vip` on network `vni`, if it is one.
#[inline(always)]
pub fn vip(vni: u32, vip: u32) -> Option<Frontend> {
    // SAFETY: copied out at once.
    unsafe { VIPS.get(&VipKey { vni, vip }) }.copied()
}

/// The service published on `port` (network order) for `protocol`.
#[inline(always)]
pub fn published(port: u16, protocol: u8) -> Option<Frontend> {
    let key = PublishedKey {
        port,
        protocol,
        _pad: 0,
    };
    // SAFETY: copied out at once.
    unsafe { PUBLISHED.get(&key) }.copied()
}

/// The next backend of `frontend`'s set (its overlay address), or `None`
/// when the set is empty.
#[inline(always)]
pub fn pick(frontend: &Frontend) -> Option<u32> {
    if frontend.backend_count == 0 {
        return None;
    }
    let turn = ROUND_ROBIN.get_ptr_mut(frontend.backend_set)?;
    // One turn for all CPUs, so shares stay even however flows spread over
    // them. The target has no atomic fetch-and-add; two CPUs opening flows
    // to one service in the same instant may pick the same backend, which
    // costs evenness, never correctness.
    // SAFETY: a valid map value pointer for the program's run.
    let slot = unsafe {
        let slot = *turn % frontend.backend_count;
        *turn = slot + 1;
        slot
    };
    let key = BackendKey {
        backend_set: frontend.backend_set,
        slot,
    };
    // SAFETY: copied out at once.
    unsafe { BACKENDS.get(&key) }.copied()
}
