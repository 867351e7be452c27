//! What the underlay hook does, whichever hook it runs in (XDP or TC): count
//! every frame per protocol and reject malformed ones with a reason.

use swarm_common::stats::{DropReason, PacketKind};

use crate::{
    packet::Packet,
    parse::{self, L3, L4},
    stats,
};

/// UDP port of the VXLAN data path; set by the loader (`--data-path-port`).
#[unsafe(no_mangle)]
static DATA_PATH_PORT: u16 = swarm_common::DEFAULT_DATA_PATH_PORT;

/// Counts the frame per protocol and lets it pass, or returns why a
/// malformed one is dropped.
#[inline(always)]
pub fn inspect<P: Packet>(packet: &P, bytes: usize) -> Result<(), DropReason> {
    stats::count(PacketKind::Received, bytes);
    let frame = parse::classify(packet)?;

    let l3 = match frame.l3 {
        L3::Arp => PacketKind::Arp,
        L3::Ipv4 => PacketKind::Ipv4,
        L3::Ipv6 => PacketKind::Ipv6,
        L3::Other => PacketKind::OtherL3,
    };
    stats::count(l3, bytes);

    let l4 = match frame.l4 {
        L4::None => None,
        L4::Tcp => Some(PacketKind::Tcp),
        L4::Udp { dest_port } => {
            // Volatile: the loader rewrites the value in .rodata after compilation.
            let data_path_port = unsafe { core::ptr::read_volatile(&DATA_PATH_PORT) };
            if dest_port == data_path_port {
                stats::count(PacketKind::Vxlan, bytes);
            }
            Some(PacketKind::Udp)
        }
        L4::Icmp => Some(PacketKind::Icmp),
        L4::Icmpv6 => Some(PacketKind::Icmpv6),
        L4::Fragment => Some(PacketKind::Ipv4Fragment),
        L4::Other => Some(PacketKind::OtherL4),
    };
    if let Some(kind) = l4 {
        stats::count(kind, bytes);
    }

    stats::count(PacketKind::Passed, bytes);
    Ok(())
}
