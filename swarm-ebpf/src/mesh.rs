//! The ingress routing mesh (DESIGN.md packet path 4): a connection to a
//! published port on this node's underlay address is given a backend
//! anywhere in the cluster, DNATed with the client's address kept, and sent
//! to the backend's veth or through the tunnel to its node.

use aya_ebpf::{bindings::TC_ACT_OK, programs::TcContext};
use swarm_common::stats::{DropReason, PacketKind};

use crate::{
    lb,
    nat::{self, IP_DADDR_OFF, L4_DPORT_OFF},
    overlay,
    packet::{ptr_at, ptr_at_mut},
    parse::EthHdr,
    redirect,
    service::{self, MeshOrigin, Origin},
    stats::{self, Dropped},
};

/// A packet that arrived on the underlay interface `ifindex`: taken by the
/// mesh when it is for a published port on this node, passed otherwise.
#[inline(always)]
pub fn ingress(ctx: &TcContext, ifindex: u32, bytes: usize) -> Result<i32, Dropped> {
    let Some(daddr) = nat::ipv4_daddr(ctx) else {
        return Ok(TC_ACT_OK);
    };
    let Some(config) = overlay::node_config() else {
        return Ok(TC_ACT_OK);
    };
    if daddr != config.node_ip {
        return Ok(TC_ACT_OK);
    }
    // Not TCP or UDP, or not rewritable: not for the mesh.
    let Ok(flow) = nat::flow(ctx) else {
        return Ok(TC_ACT_OK);
    };
    let Some(frontend) = lb::published(flow.dport, flow.protocol) else {
        return Ok(TC_ACT_OK);
    };
    let Some(eth) = ptr_at::<_, EthHdr>(ctx, 0) else {
        return Ok(TC_ACT_OK);
    };
    // SAFETY: bounds-checked by ptr_at.
    let origin = unsafe {
        MeshOrigin {
            ifindex,
            client_mac: (*eth).src,
            node_mac: (*eth).dst,
        }
    };
    let vni = frontend.vni;
    let backend = service::forward_entry(&flow, &frontend, vni, Origin::Mesh(origin))
        .map_err(|reason| service::refuse(ctx, &flow, reason, ifindex, bytes))?;
    let endpoint = overlay::endpoint(vni, backend).ok_or(DropReason::BackendUnknown)?;
    let network = overlay::network(vni).ok_or(DropReason::UnknownVni)?;
    nat::rewrite_addr(ctx, flow.protocol, IP_DADDR_OFF, daddr, backend)?;
    nat::rewrite_port(
        ctx,
        flow.protocol,
        L4_DPORT_OFF,
        flow.dport,
        frontend.target_port,
    )?;
    let eth: *mut EthHdr = ptr_at_mut(ctx, 0).ok_or(DropReason::EthTruncated)?;
    // SAFETY: bounds-checked by ptr_at_mut.
    unsafe {
        (*eth).dst = endpoint.mac;
        (*eth).src = network.gateway_mac;
    }
    stats::count(PacketKind::MeshIn, bytes);
    if endpoint.ifindex != 0 {
        Ok(redirect::to_task(
            endpoint.ifindex,
            PacketKind::OverlayLocal,
            bytes,
        ))
    } else {
        Ok(redirect::to_node(ctx, vni, endpoint.node_ip, bytes)?)
    }
}
