//! Service maps: virtual IPs, published ports, backend sets and connection
//! tracking for the load balancer and the ingress routing mesh.
//!
//! Addresses and ports are in network byte order, as they appear in packets.

/// Key of [`crate::map_names::VIPS`]: a service's virtual IP on a network. Any
/// port and protocol sent to it is balanced, as Docker's VIPs are.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VipKey {
    pub vni: u32,
    pub vip: u32,
}

/// Key of [`crate::map_names::PUBLISHED`]: a port published on every node
/// (or, in host mode, on nodes running a task).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PublishedKey {
    pub port: u16,
    pub protocol: u8,
    pub _pad: u8,
}

/// Where new connections to a VIP or a published port go: one of the
/// `backend_count` backends of set `backend_set`, in turn.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Frontend {
    pub backend_set: u32,
    pub backend_count: u32,
    /// The network the backends' addresses are on.
    pub vni: u32,
    /// Published ports: the backends' port; 0 for a VIP (the port is kept).
    pub target_port: u16,
    pub flags: u8,
    pub _pad: u8,
}

/// [`Frontend::flags`]: a host-mode published port, served by local tasks only.
pub const FRONTEND_HOST_MODE: u8 = 1;

/// Key of [`crate::map_names::BACKENDS`]: slot `slot` of a backend set.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BackendKey {
    pub backend_set: u32,
    pub slot: u32,
}

/// Key of [`crate::map_names::CONNTRACK`]: a flow as seen in one direction.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub protocol: u8,
    /// [`CT_FORWARD`], [`CT_REPLY`] or [`CT_RETURN`].
    pub kind: u8,
    pub _pad: [u8; 2],
}

/// Client to frontend, on the node that picked the backend: which backend.
pub const CT_FORWARD: u8 = 0;
/// Backend to client, on the node that picked the backend: what to rewrite
/// the source back to (the VIP or this node's published port).
pub const CT_REPLY: u8 = 1;
/// Backend to an outside client, on the backend's node when another node took
/// the connection: which node to send the reply back through.
pub const CT_RETURN: u8 = 2;

/// Value of [`crate::map_names::CONNTRACK`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtEntry {
    /// `bpf_ktime_get_ns` when the flow last carried a packet (refreshed at
    /// most once a second).
    pub last_seen_ns: u64,
    /// Forward: the backend; reply: the address the client dialled; return:
    /// the underlay address of the node that took the connection.
    pub nat_ip: u32,
    /// Forward: the backend's port; reply: the port the client dialled.
    pub nat_port: u16,
    /// `CT_FLAG_*`.
    pub flags: u8,
    pub _pad0: u8,
    /// Forward: the backend set the backend came from.
    pub backend_set: u32,
    /// Forward and return: the network to reach the backend or the node on.
    pub vni: u32,
    /// Reply for a routing-mesh flow: the underlay interface to answer on,
    /// with the MACs the request came with (swapped).
    pub ifindex: u32,
    pub client_mac: [u8; 6],
    pub node_mac: [u8; 6],
}

/// The flow's TCP handshake completed (or it is UDP and saw a reply): kept
/// however long it idles.
pub const CT_FLAG_ESTABLISHED: u8 = 1;
/// A FIN or RST was seen: removed after a short idle time.
pub const CT_FLAG_CLOSING: u8 = 2;
/// Reply entry of a routing-mesh flow: the client is outside the overlay.
pub const CT_FLAG_MESH: u8 = 4;
/// Reply entry of a task's flow to a VIP that picked the task itself: its
/// source was rewritten to the gateway, and replies go back to the task.
pub const CT_FLAG_HAIRPIN: u8 = 8;

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_SCTP: u8 = 132;

/// Most VIP frontends one node holds (every network's services).
pub const MAX_VIPS: u32 = 65_536;
/// Most published ports.
pub const MAX_PUBLISHED: u32 = 8_192;
/// Most backend slots over all sets.
pub const MAX_BACKENDS: u32 = 262_144;
/// Backend set IDs run from 0 to this (exclusive): the round-robin array's size.
pub const MAX_BACKEND_SETS: u32 = 131_072;
/// Tracked flows (each balanced connection takes two or three entries).
pub const MAX_CONNTRACK: u32 = 262_144;

const _: () = {
    assert!(core::mem::size_of::<VipKey>() == 8);
    assert!(core::mem::size_of::<PublishedKey>() == 4);
    assert!(core::mem::size_of::<Frontend>() == 16);
    assert!(core::mem::size_of::<BackendKey>() == 8);
    assert!(core::mem::size_of::<CtKey>() == 16);
    assert!(core::mem::size_of::<CtEntry>() == 40);
};

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all are repr(C) integers and byte arrays with explicit padding.
    unsafe impl aya::Pod for super::VipKey {}
    unsafe impl aya::Pod for super::PublishedKey {}
    unsafe impl aya::Pod for super::Frontend {}
    unsafe impl aya::Pod for super::BackendKey {}
    unsafe impl aya::Pod for super::CtKey {}
    unsafe impl aya::Pod for super::CtEntry {}
}
