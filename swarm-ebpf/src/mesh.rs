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
    service::{self, MeshOrigin, Origin},
    stats,
};

/// A packet that arrived on the underlay interface `ifindex`: taken by the
/// mesh when it is for a published port on this node, passed otherwise.
#[inline(always)]
pub fn ingress(ctx: &TcContext, ifindex: u32, bytes: usize) -> i32 {
    let Some(daddr) = nat::ipv4_daddr(ctx) else {
        return TC_ACT_OK;
    };
    let Some(config) = overlay::node_config() else {
        return TC_ACT_OK;
    };
    if daddr != config.node_ip {
        return TC_ACT_OK;
    }
    // Not TCP or UDP, or not rewritable: not for the mesh.
    let Ok(flow) = nat::flow(ctx) else {
        return TC_ACT_OK;
    };
    let Some(frontend) = lb::published(flow.dport, flow.protocol) else {
        return TC_ACT_OK;
    };
    let Some(eth) = ptr_at::<_, EthHdr>(ctx, 0) else {
        return TC_ACT_OK;
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
    let backend = match service::forward_entry(&flow, &frontend, vni, Origin::Mesh(origin)) {
        Ok(backend) => backend,
        Err(reason) => return service::refuse(ctx, &flow, reason, ifindex, bytes),
    };
    let Some(endpoint) = overlay::endpoint(vni, backend).copied() else {
        return overlay::drop(DropReason::BackendUnknown, bytes);
    };
    // SAFETY: copied out at once.
    let Some(network) = (unsafe { overlay::NETWORKS.get(&vni) }).copied() else {
        return overlay::drop(DropReason::UnknownVni, bytes);
    };
    let rewritten =
        nat::rewrite_addr(ctx, flow.protocol, IP_DADDR_OFF, daddr, backend).and_then(|()| {
            nat::rewrite_port(
                ctx,
                flow.protocol,
                L4_DPORT_OFF,
                flow.dport,
                frontend.target_port,
            )
        });
    if let Err(reason) = rewritten {
        return overlay::drop(reason, bytes);
    }
    let Some(eth) = ptr_at_mut::<_, EthHdr>(ctx, 0) else {
        return overlay::drop(DropReason::EthTruncated, bytes);
    };
    // SAFETY: bounds-checked by ptr_at_mut.
    unsafe {
        (*eth).dst = endpoint.mac;
        (*eth).src = network.gateway_mac;
    }
    stats::count(PacketKind::MeshIn, bytes);
    if endpoint.ifindex != 0 {
        overlay::deliver_local(endpoint.ifindex, PacketKind::OverlayLocal, bytes)
    } else {
        overlay::send_to_node(ctx, vni, endpoint.node_ip, bytes)
    }
}
