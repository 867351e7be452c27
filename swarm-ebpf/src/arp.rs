//! The ARP responder: tasks never see an ARP request leave their veth; the
//! data plane answers for the gateway, service VIPs and every endpoint it knows.

use swarm_common::stats::{DropReason, PacketKind};

use crate::{
    lb, overlay,
    packet::{Packet, ptr_at_mut},
    parse::{ETH_HLEN, ETH_P_IPV4, EthHdr},
    stats,
};

const ARPHRD_ETHER: u16 = 1;
const ARPOP_REQUEST: u16 = 1;
const ARPOP_REPLY: u16 = 2;

#[repr(C)]
pub struct ArpEthIpv4 {
    pub htype: u16,
    pub ptype: u16,
    pub hlen: u8,
    pub plen: u8,
    pub oper: u16,
    pub sha: [u8; 6],
    /// Unaligned in the packet: kept as bytes.
    pub spa: [u8; 4],
    pub tha: [u8; 6],
    pub tpa: [u8; 4],
}

/// Turns the ARP request in `packet` into the reply, in place, when the
/// target is `gateway_ip` or an endpoint on `vni`, and counts it. The frame
/// then goes back the way it came. Returns the drop reason otherwise.
#[inline(always)]
pub fn answer<P: Packet>(
    packet: &P,
    vni: u32,
    gateway_ip: u32,
    gateway_mac: [u8; 6],
    bytes: usize,
) -> Result<(), DropReason> {
    answer_in_place(packet, vni, gateway_ip, gateway_mac)?;
    stats::count(PacketKind::OverlayArpReplied, bytes);
    Ok(())
}

#[inline(always)]
fn answer_in_place<P: Packet>(
    packet: &P,
    vni: u32,
    gateway_ip: u32,
    gateway_mac: [u8; 6],
) -> Result<(), DropReason> {
    let eth: *mut EthHdr = ptr_at_mut(packet, 0).ok_or(DropReason::EthTruncated)?;
    let arp: *mut ArpEthIpv4 = ptr_at_mut(packet, ETH_HLEN).ok_or(DropReason::ArpTruncated)?;
    // SAFETY: both pointers were bounds-checked by ptr_at_mut.
    unsafe {
        if u16::from_be((*arp).htype) != ARPHRD_ETHER
            || u16::from_be((*arp).ptype) != ETH_P_IPV4
            || (*arp).hlen != 6
            || (*arp).plen != 4
            || u16::from_be((*arp).oper) != ARPOP_REQUEST
        {
            return Err(DropReason::ArpNotRequest);
        }
        let target = u32::from_ne_bytes((*arp).tpa);
        // A VIP is answered like the gateway: frames to it are steered by
        // the task-side program, whatever their MAC.
        let mac = if target == gateway_ip || lb::vip(vni, target).is_some() {
            gateway_mac
        } else {
            match overlay::endpoint(vni, target) {
                Some(endpoint) => endpoint.mac,
                None => return Err(DropReason::ArpUnknownTarget),
            }
        };
        let requester_mac = (*arp).sha;
        let requester_ip = (*arp).spa;
        (*arp).oper = ARPOP_REPLY.to_be();
        (*arp).tha = requester_mac;
        (*arp).tpa = requester_ip;
        (*arp).sha = mac;
        (*arp).spa = target.to_ne_bytes();
        (*eth).dst = requester_mac;
        (*eth).src = mac;
    }
    Ok(())
}
