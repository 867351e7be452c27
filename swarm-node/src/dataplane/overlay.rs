//! The overlay's user-space half: the VXLAN device, task veths, and the maps
//! that tell the programs where every overlay address lives.

use std::{
    fs::File,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

/// VXLAN overhead: outer Ethernet, IPv4, UDP and VXLAN headers.
pub const VXLAN_OVERHEAD: u32 = 50;
/// The interface name a task sees, like Docker's.
pub const TASK_IFACE: &str = "eth0";
/// The node's collect-metadata VXLAN device.
pub const TUNNEL_IFACE: &str = "swarm-vxlan";

/// An overlay network as the data plane needs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayNetwork {
    pub vni: u32,
    pub subnet: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    /// MTU inside tasks: the underlay's minus [`VXLAN_OVERHEAD`].
    pub mtu: u32,
}

impl OverlayNetwork {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix_len))
            .unwrap_or(0);
        u32::from(ip) & mask == u32::from(self.subnet) & mask
    }
}

/// A task's attachment on this node: its network namespace and address.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LocalEndpointSpec {
    /// Unique on this node (the task ID later); names the host-side veth.
    pub id: String,
    pub vni: u32,
    /// The task's network namespace, e.g. /run/netns/swarm-<task id>.
    pub netns: PathBuf,
    pub ip: Ipv4Addr,
}

/// An endpoint on another node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RemoteEndpointSpec {
    pub vni: u32,
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
    /// The other node's underlay address.
    pub node: Ipv4Addr,
}

/// One row of `swarm dataplane endpoints`: what the endpoint map holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRow {
    pub vni: u32,
    pub ip: Ipv4Addr,
    pub mac: String,
    /// `local` or `remote`.
    pub location: String,
    /// The host-side veth (local) or the node's underlay address (remote).
    pub via: String,
}

/// The gateway's MAC on network `vni`: locally administered, fixed per VNI,
/// so every node answers ARP for the gateway alike.
pub fn gateway_mac(vni: u32) -> [u8; 6] {
    let [_, a, b, c] = vni.to_be_bytes();
    [0x02, 0x73, 0x77, a, b, c]
}

/// A task's MAC from its address, as Docker does (02:42 + the IPv4 address).
pub fn task_mac(ip: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = ip.octets();
    [0x02, 0x42, a, b, c, d]
}

pub fn format_mac(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Host-side and temporary peer names for endpoint `id`: short, stable, unique.
pub fn veth_names(id: &str) -> (String, String) {
    // FNV-1a: stable across runs, unlike std's hasher.
    let hash = id.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    (format!("swh{hash:08x}"), format!("swp{hash:08x}"))
}

pub fn open_netns(path: &Path) -> std::io::Result<File> {
    File::open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_and_names() {
        assert_eq!(format_mac(gateway_mac(4096)), "02:73:77:00:10:00");
        assert_eq!(
            format_mac(task_mac(Ipv4Addr::new(10, 0, 1, 2))),
            "02:42:0a:00:01:02"
        );
        assert_eq!(
            parse_mac("02:42:0a:00:01:02"),
            Some(task_mac(Ipv4Addr::new(10, 0, 1, 2)))
        );
        assert_eq!(parse_mac("02:42:0a:00:01"), None);
        assert_eq!(parse_mac("02:42:0a:00:01:02:03"), None);
        let (host, peer) = veth_names("task-1");
        assert!(host.len() <= 15 && peer.len() <= 15 && host != peer);
        assert_eq!(veth_names("task-1"), (host, peer));
    }

    #[test]
    fn subnet_membership() {
        let net = OverlayNetwork {
            vni: 4096,
            subnet: Ipv4Addr::new(10, 0, 1, 0),
            prefix_len: 24,
            gateway: Ipv4Addr::new(10, 0, 1, 1),
            mtu: 1450,
        };
        assert!(net.contains(Ipv4Addr::new(10, 0, 1, 200)));
        assert!(!net.contains(Ipv4Addr::new(10, 0, 2, 1)));
    }
}
