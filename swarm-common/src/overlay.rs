//! Overlay maps: which endpoint an overlay address is, which network a task's
//! veth is on, which VNIs this node serves.
//!
//! Addresses are stored in network byte order, as they appear in packets.

/// Key of [`crate::map_names::ENDPOINTS`]: an overlay IPv4 address on a network.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EndpointKey {
    pub vni: u32,
    /// Network byte order.
    pub ip: u32,
}

/// Where an overlay address lives: on this node behind a veth, or on another
/// node behind the tunnel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Endpoint {
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
    /// Host-side veth of a local endpoint; 0 for a remote one.
    pub ifindex: u32,
    /// Underlay address of the remote node (network byte order); 0 when local.
    pub node_ip: u32,
}

/// Value of [`crate::map_names::PORTS`], keyed by the ifindex of a task's
/// host-side veth: the network the task on the other end belongs to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Port {
    pub vni: u32,
    /// The network's gateway (network byte order), answered by the ARP responder.
    pub gateway_ip: u32,
    pub gateway_mac: [u8; 6],
    pub _pad: [u8; 2],
}

/// Value of [`crate::map_names::NETWORKS`], keyed by VNI: networks with at
/// least one endpoint on this node. Traffic for any other VNI is dropped.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Network {
    /// Network byte order.
    pub gateway_ip: u32,
    pub gateway_mac: [u8; 6],
    /// `NETWORK_*` flags.
    pub flags: u8,
    pub _pad: u8,
}

/// [`Network::flags`]: a network published ports reach backends on (Docker's
/// `ingress`): decapsulated requests from outside clients are remembered so
/// replies go back through the node that took them.
pub const NETWORK_INGRESS: u8 = 1;

/// Value of the one-slot [`crate::map_names::NODE_CONFIG`] array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeConfig {
    /// The collect-metadata VXLAN device the programs hand remote traffic to.
    pub vxlan_ifindex: u32,
    /// How frames reach a local task: [`LOCAL_DELIVERY_PEER`] or
    /// [`LOCAL_DELIVERY_REDIRECT`].
    pub local_delivery: u32,
    /// This node's underlay address (network byte order): published ports
    /// answer on it.
    pub node_ip: u32,
    /// The underlay interface: routing-mesh replies leave through it.
    pub underlay_ifindex: u32,
}

/// `bpf_redirect_peer`: straight into the task's namespace, no second pass
/// through the host side of the veth.
pub const LOCAL_DELIVERY_PEER: u32 = 0;
/// `bpf_redirect` to the host-side veth's egress: the veth hands the frame
/// to its peer through the per-CPU backlog, as a bridge port would.
pub const LOCAL_DELIVERY_REDIRECT: u32 = 1;

const _: () = {
    assert!(core::mem::size_of::<EndpointKey>() == 8);
    assert!(core::mem::size_of::<Endpoint>() == 16);
    assert!(core::mem::size_of::<Port>() == 16);
    assert!(core::mem::size_of::<Network>() == 12);
    assert!(core::mem::size_of::<NodeConfig>() == 16);
};

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all are repr(C) integers and byte arrays with explicit padding.
    unsafe impl aya::Pod for super::EndpointKey {}
    unsafe impl aya::Pod for super::Endpoint {}
    unsafe impl aya::Pod for super::Port {}
    unsafe impl aya::Pod for super::Network {}
    unsafe impl aya::Pod for super::NodeConfig {}
}

/// Most endpoints (local and remote, all networks) one node tracks.
pub const MAX_ENDPOINTS: u32 = 65_536;
/// Most task veths on one node.
pub const MAX_PORTS: u32 = 4_096;
/// Most overlay networks one node serves.
pub const MAX_NETWORKS: u32 = 4_096;
