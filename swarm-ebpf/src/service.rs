//! Service VIPs (DESIGN.md packet path 3) and the way back for balanced
//! flows: a task's connection to a VIP gets a backend in turn, is DNATed and
//! tracked; replies are rewritten back to the VIP (or, for the routing mesh,
//! to the published port) before they are delivered.

use aya_ebpf::{helpers::bpf_redirect, programs::TcContext};
use swarm_common::{
    overlay::Network,
    service::{
        CT_FLAG_CLOSING, CT_FLAG_HAIRPIN, CT_FLAG_MESH, CT_FORWARD, CT_REPLY, CT_RETURN, CtEntry,
        Frontend,
    },
    stats::{DropReason, PacketKind},
};

use crate::{
    conntrack, lb,
    nat::{self, Flow, IP_DADDR_OFF, IP_SADDR_OFF, L4_SPORT_OFF},
    overlay,
    packet::ptr_at_mut,
    parse::EthHdr,
    redirect, reset,
    stats::{self, Dropped},
};

/// A packet from the task behind `ifindex` on network `vni`: if it is for a
/// VIP, it gets its flow's backend as destination (a new flow its backend
/// first). TCP that cannot be served is answered with a reset into the task.
/// A task given itself as backend (hairpin) also gets `gateway_ip` as source,
/// or its own kernel would take the packet for a martian and its replies
/// would never pass through here to be rewritten back. `Ok` means: forward
/// the packet as usual.
#[inline(always)]
pub fn from_task_to_vip(
    ctx: &TcContext,
    vni: u32,
    gateway_ip: u32,
    ifindex: u32,
    bytes: usize,
) -> Result<(), Dropped> {
    let Some(daddr) = nat::ipv4_daddr(ctx) else {
        return Ok(());
    };
    let Some(frontend) = lb::vip(vni, daddr) else {
        return Ok(());
    };
    let flow = nat::flow(ctx)?;
    let origin = Origin::Task { gateway_ip };
    let backend = forward_entry(&flow, &frontend, vni, origin)
        .map_err(|reason| refuse(ctx, &flow, reason, ifindex, bytes))?;
    nat::rewrite_addr(ctx, flow.protocol, IP_DADDR_OFF, daddr, backend)?;
    if backend == flow.saddr {
        nat::rewrite_addr(ctx, flow.protocol, IP_SADDR_OFF, flow.saddr, gateway_ip)?;
    }
    stats::count(PacketKind::ServiceDnat, bytes);
    Ok(())
}

/// Where a new flow came from, for its reply entry.
pub enum Origin {
    /// A task on network `vni`; `gateway_ip` stands in for it as source when
    /// it is its own backend.
    Task { gateway_ip: u32 },
    /// An outside client through the routing mesh.
    Mesh(MeshOrigin),
}

/// Routing-mesh specifics of a new flow's reply entry: the client is
/// outside, answered on interface `ifindex` with these MACs.
pub struct MeshOrigin {
    pub ifindex: u32,
    pub client_mac: [u8; 6],
    pub node_mac: [u8; 6],
}

/// The backend of `flow` through `frontend`: its tracked one, or for a new
/// flow the next in turn, tracked in both directions. The destination port
/// becomes the frontend's target port when it has one.
#[inline(always)]
pub fn forward_entry(
    flow: &Flow,
    frontend: &Frontend,
    vni: u32,
    origin: Origin,
) -> Result<u32, DropReason> {
    let key = conntrack::key(flow, CT_FORWARD);
    if let Some(entry) = conntrack::lookup(&key, flow) {
        // A SYN on a closing flow is a new connection from a reused port:
        // it gets a backend (and reply entries) of its own.
        if !(flow.opens() && flow.is_tcp() && entry.flags & CT_FLAG_CLOSING != 0) {
            return Ok(entry.nat_ip);
        }
    }
    if !flow.opens() {
        // Mid-flow with no state: its backend was removed (or the entry
        // evicted). A new backend would not know the connection either.
        return Err(DropReason::FlowLost);
    }
    let backend = lb::pick(frontend).ok_or(DropReason::NoBackend)?;
    let target_port = if frontend.target_port != 0 {
        frontend.target_port
    } else {
        flow.dport
    };
    let forward = CtEntry {
        nat_ip: backend,
        nat_port: target_port,
        flags: conntrack::next_flags(0, flow),
        backend_set: frontend.backend_set,
        vni,
        ..CtEntry::default()
    };
    let mut reply = CtEntry {
        nat_ip: flow.daddr,
        nat_port: flow.dport,
        backend_set: frontend.backend_set,
        vni,
        ..CtEntry::default()
    };
    let mut reply_key = conntrack::reply_key(flow, backend, target_port, CT_REPLY);
    match origin {
        Origin::Mesh(origin) => {
            reply.flags = CT_FLAG_MESH;
            reply.ifindex = origin.ifindex;
            reply.client_mac = origin.client_mac;
            reply.node_mac = origin.node_mac;
        }
        Origin::Task { gateway_ip } if backend == flow.saddr => {
            reply.flags = CT_FLAG_HAIRPIN;
            reply_key.daddr = gateway_ip;
        }
        Origin::Task { .. } => {}
    }
    conntrack::insert(&key, forward).map_err(|_| DropReason::ConntrackFull)?;
    conntrack::insert(&reply_key, reply).map_err(|_| DropReason::ConntrackFull)?;
    stats::count(
        if frontend.target_port != 0 {
            PacketKind::MeshNewFlow
        } else {
            PacketKind::ServiceNewFlow
        },
        0,
    );
    Ok(backend)
}

/// A packet that cannot be served, dropped with `reason`; TCP is answered
/// with a reset sent back out of `ifindex`, the interface it came from (a
/// task's veth: into the task; the underlay: to the client).
#[inline(always)]
pub fn refuse(
    ctx: &TcContext,
    flow: &Flow,
    reason: DropReason,
    ifindex: u32,
    bytes: usize,
) -> Dropped {
    if !flow.is_tcp() || reset::reply_in_place(ctx).is_err() {
        return reason.into();
    }
    stats::count(PacketKind::ResetSent, bytes);
    Dropped {
        reason,
        // SAFETY: plain helper call.
        verdict: unsafe { bpf_redirect(ifindex, 0) as i32 },
    }
}

/// Into the local task behind `ifindex`, a backend's reply first rewritten
/// back to the VIP it answers for; counted as `kind`.
#[inline(always)]
pub fn deliver_to_task(
    ctx: &TcContext,
    flow: Option<&Flow>,
    ifindex: u32,
    kind: PacketKind,
    bytes: usize,
) -> Result<i32, DropReason> {
    if let Some(flow) = flow {
        reverse_nat_to_task(ctx, flow, bytes)?;
    }
    Ok(redirect::to_task(ifindex, kind, bytes))
}

/// A backend's reply (`flow`, the packet's own) about to be delivered to a
/// local task: its source goes back to the VIP the task dialled. Other
/// packets pass unchanged.
#[inline(always)]
fn reverse_nat_to_task(ctx: &TcContext, flow: &Flow, bytes: usize) -> Result<(), DropReason> {
    let Some(entry) = conntrack::lookup(&conntrack::key(flow, CT_REPLY), flow) else {
        return Ok(());
    };
    if entry.flags & CT_FLAG_MESH != 0 {
        return Ok(());
    }
    unreverse(ctx, flow, &entry)?;
    stats::count(PacketKind::ServiceReverseNat, bytes);
    Ok(())
}

#[inline(always)]
fn unreverse(ctx: &TcContext, flow: &Flow, entry: &CtEntry) -> Result<(), DropReason> {
    nat::rewrite_addr(ctx, flow.protocol, IP_SADDR_OFF, flow.saddr, entry.nat_ip)?;
    nat::rewrite_port(ctx, flow.protocol, L4_SPORT_OFF, flow.sport, entry.nat_port)
}

/// A packet for an address that is no endpoint on its network: a backend's
/// reply to a routing-mesh client (or a task's hairpin reply to itself),
/// sent out to the client when this node took the connection, or back
/// through the tunnel to the node that did. Anything else is dropped as an
/// unknown destination.
#[inline(always)]
pub fn to_outside(ctx: &TcContext, bytes: usize) -> Result<i32, DropReason> {
    // Whatever is no reply this node knows.
    const UNKNOWN: DropReason = DropReason::UnknownDestination;
    let flow = nat::flow(ctx).map_err(|_| UNKNOWN)?;
    if let Some(entry) = conntrack::lookup(&conntrack::key(&flow, CT_REPLY), &flow) {
        if entry.flags & CT_FLAG_HAIRPIN != 0 {
            return hairpin_reply(ctx, &flow, &entry, bytes);
        }
        if entry.flags & CT_FLAG_MESH == 0 {
            return Err(UNKNOWN);
        }
        unreverse(ctx, &flow, &entry)?;
        let eth: *mut EthHdr = ptr_at_mut(ctx, 0).ok_or(UNKNOWN)?;
        // SAFETY: bounds-checked by ptr_at_mut.
        unsafe {
            (*eth).dst = entry.client_mac;
            (*eth).src = entry.node_mac;
        }
        stats::count(PacketKind::MeshOut, bytes);
        // SAFETY: plain helper call.
        return Ok(unsafe { bpf_redirect(entry.ifindex, 0) as i32 });
    }
    let entry = conntrack::lookup(&conntrack::key(&flow, CT_RETURN), &flow).ok_or(UNKNOWN)?;
    stats::count(PacketKind::MeshReturn, bytes);
    redirect::to_node(ctx, entry.vni, entry.nat_ip, bytes)
}

/// A task's reply to itself through a VIP: from the VIP, back to the task.
#[inline(always)]
fn hairpin_reply(
    ctx: &TcContext,
    flow: &Flow,
    entry: &CtEntry,
    bytes: usize,
) -> Result<i32, DropReason> {
    let task = flow.saddr;
    unreverse(ctx, flow, entry)?;
    nat::rewrite_addr(ctx, flow.protocol, IP_DADDR_OFF, flow.daddr, task)?;
    let endpoint = overlay::endpoint(entry.vni, task).ok_or(DropReason::UnknownDestination)?;
    let eth: *mut EthHdr = ptr_at_mut(ctx, 0).ok_or(DropReason::EthTruncated)?;
    // SAFETY: bounds-checked by ptr_at_mut.
    unsafe { (*eth).dst = endpoint.mac };
    stats::count(PacketKind::ServiceReverseNat, bytes);
    Ok(redirect::to_task(
        endpoint.ifindex,
        PacketKind::OverlayLocal,
        bytes,
    ))
}

/// A decapsulated request from an outside client to a local backend on an
/// ingress network: remember which node took it, for the reply. The flow
/// belongs to that node from now on, even if this node answered an earlier
/// flow with the same addresses and ports itself (a reused client port).
#[inline(always)]
pub fn remember_return(flow: &Flow, network: &Network, vni: u32, node_ip: u32) {
    if network.flags & swarm_common::overlay::NETWORK_INGRESS == 0 {
        return;
    }
    if overlay::endpoint(vni, flow.saddr).is_some() {
        return;
    }
    let key = conntrack::reply_key(flow, flow.daddr, flow.dport, CT_RETURN);
    if conntrack::lookup(&key, flow).is_some_and(|entry| entry.nat_ip == node_ip) {
        return;
    }
    conntrack::remove(&conntrack::reply_key(
        flow, flow.daddr, flow.dport, CT_REPLY,
    ));
    let entry = CtEntry {
        nat_ip: node_ip,
        vni,
        ..CtEntry::default()
    };
    // A full table only costs this flow its replies.
    let _ = conntrack::insert(&key, entry);
}
