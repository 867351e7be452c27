//! Types shared by the eBPF programs (`swarm-ebpf`) and user space (`swarm-node`).
//!
//! Everything here is `#[repr(C)]` with explicit padding so both sides agree on
//! the layout byte for byte; sizes are asserted at compile time.
#![no_std]

#[cfg(test)]
extern crate std;

pub mod overlay;
pub mod sctp;
pub mod service;
pub mod stats;

/// Map names as the kernel sees them (at most 15 bytes) and as they are pinned.
pub mod map_names {
    /// Per-CPU array of [`crate::stats::Counter`] indexed by [`crate::stats::PacketKind`].
    pub const PACKET_COUNTERS: &str = "sw_pkt_count";
    /// Per-CPU array of [`crate::stats::Counter`] indexed by [`crate::stats::DropReason`].
    pub const DROP_COUNTERS: &str = "sw_drop_count";
    /// Hash of [`crate::overlay::EndpointKey`] to [`crate::overlay::Endpoint`].
    pub const ENDPOINTS: &str = "sw_endpoints";
    /// Hash of host-side veth ifindex to [`crate::overlay::Port`].
    pub const PORTS: &str = "sw_ports";
    /// Hash of VNI to [`crate::overlay::Network`].
    pub const NETWORKS: &str = "sw_networks";
    /// One-slot array of [`crate::overlay::NodeConfig`].
    pub const NODE_CONFIG: &str = "sw_node_config";
    /// Hash of [`crate::service::VipKey`] to [`crate::service::Frontend`].
    pub const VIPS: &str = "sw_vips";
    /// Hash of [`crate::service::PublishedKey`] to [`crate::service::Frontend`].
    pub const PUBLISHED: &str = "sw_published";
    /// Hash of [`crate::service::BackendKey`] to a backend's overlay IPv4
    /// address (network byte order).
    pub const BACKENDS: &str = "sw_backends";
    /// Array, by backend set: the round-robin turn (its next slot modulo the set's size).
    pub const ROUND_ROBIN: &str = "sw_rr";
    /// LRU hash of [`crate::service::CtKey`] to [`crate::service::CtEntry`].
    pub const CONNTRACK: &str = "sw_conntrack";
}

/// Program names as the kernel sees them (at most 15 bytes).
pub mod program_names {
    /// XDP program on the node's underlay interface.
    pub const UNDERLAY_XDP: &str = "sw_underlay_xdp";
    /// The same on TC ingress, for interfaces where XDP costs more than it saves.
    pub const UNDERLAY_TC: &str = "sw_underlay_tc";
    /// TC ingress on a task's host-side veth: what the task sends.
    pub const TASK_INGRESS: &str = "sw_from_task";
    /// TC ingress on the VXLAN device: what arrives decapsulated from other nodes.
    pub const VXLAN_INGRESS: &str = "sw_from_tunnel";
    /// TC ingress on the underlay beside the XDP hook: the routing mesh.
    pub const MESH_TC: &str = "sw_mesh_tc";
}

/// Load-time globals the eBPF programs read (`EbpfLoader::set_global`).
pub mod globals {
    /// UDP destination port of the VXLAN data path (default 4789), in host byte order.
    pub const DATA_PATH_PORT: &str = "DATA_PATH_PORT";
}

/// Docker's (and IANA's) VXLAN port.
pub const DEFAULT_DATA_PATH_PORT: u16 = 4789;

const _: () = {
    assert!(map_names::PACKET_COUNTERS.len() <= 15);
    assert!(map_names::DROP_COUNTERS.len() <= 15);
    assert!(program_names::UNDERLAY_XDP.len() <= 15);
    assert!(program_names::UNDERLAY_TC.len() <= 15);
    assert!(program_names::TASK_INGRESS.len() <= 15);
    assert!(program_names::VXLAN_INGRESS.len() <= 15);
    assert!(program_names::MESH_TC.len() <= 15);
    assert!(map_names::ENDPOINTS.len() <= 15);
    assert!(map_names::PORTS.len() <= 15);
    assert!(map_names::NETWORKS.len() <= 15);
    assert!(map_names::NODE_CONFIG.len() <= 15);
    assert!(map_names::VIPS.len() <= 15);
    assert!(map_names::PUBLISHED.len() <= 15);
    assert!(map_names::BACKENDS.len() <= 15);
    assert!(map_names::ROUND_ROBIN.len() <= 15);
    assert!(map_names::CONNTRACK.len() <= 15);
};
