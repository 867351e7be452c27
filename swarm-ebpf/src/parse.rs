//! Header layouts and the classifier shared by every hook that parses a frame.
//!
//! Multi-byte fields stay in network byte order; readers convert.

use swarm_common::stats::DropReason;

use crate::packet::{Packet, ptr_at};

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
pub const ETH_P_IPV6: u16 = 0x86dd;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;

const IPV4_MIN_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const TCP_MIN_HLEN: usize = 20;
const UDP_HLEN: usize = 8;
const ICMP_HLEN: usize = 8;
const ARP_HLEN: usize = 8;
const VLAN_HLEN: usize = 4;
/// IPv4 flags/fragment-offset field: the 13-bit offset.
const IPV4_FRAG_OFFSET_MASK: u16 = 0x1fff;

#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub ether_type: u16,
}

#[repr(C)]
pub struct VlanHdr {
    pub tci: u16,
    pub ether_type: u16,
}

#[repr(C)]
pub struct Ipv4Hdr {
    pub version_ihl: u8,
    pub tos: u8,
    pub tot_len: u16,
    pub id: u16,
    pub frag_off: u16,
    pub ttl: u8,
    pub protocol: u8,
    pub check: u16,
    pub saddr: u32,
    pub daddr: u32,
}

#[repr(C)]
pub struct Ipv6Hdr {
    pub version_tc_flow: u32,
    pub payload_len: u16,
    pub next_header: u8,
    pub hop_limit: u8,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

#[repr(C)]
pub struct TcpHdr {
    pub source: u16,
    pub dest: u16,
    pub seq: u32,
    pub ack_seq: u32,
    /// Data offset in the top four bits, then reserved bits and NS.
    pub doff_res: u8,
    pub flags: u8,
    pub window: u16,
    pub check: u16,
    pub urg_ptr: u16,
}

#[repr(C)]
pub struct UdpHdr {
    pub source: u16,
    pub dest: u16,
    pub len: u16,
    pub check: u16,
}

/// SCTP's common header (RFC 9260 3.1).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SctpHdr {
    pub source: u16,
    pub dest: u16,
    pub verification_tag: u32,
    /// CRC32c, stored little-endian.
    pub checksum: u32,
}

/// Network layer of a well-formed frame.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum L3 {
    Arp,
    Ipv4,
    Ipv6,
    Other,
}

/// Transport layer of a well-formed IP packet.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    None,
    Tcp,
    Udp {
        dest_port: u16,
    },
    Icmp,
    Icmpv6,
    /// A non-first IPv4 fragment: no transport header to look at.
    Fragment,
    Other,
}

/// What a frame holds, once its headers are known to be sane.
#[derive(Clone, Copy)]
pub struct Frame {
    pub l3: L3,
    pub l4: L4,
}

/// Parses the headers of an Ethernet frame and checks they are self-consistent.
/// A malformed frame yields the reason to drop it.
#[inline(always)]
pub fn classify<P: Packet>(packet: &P) -> Result<Frame, DropReason> {
    let eth: *const EthHdr = ptr_at(packet, 0).ok_or(DropReason::EthTruncated)?;
    let mut ether_type = u16::from_be(unsafe { (*eth).ether_type });
    let mut offset = ETH_HLEN;

    // At most two tags (802.1ad outer, 802.1Q inner); a bounded loop the verifier unrolls.
    for _ in 0..2 {
        if ether_type != ETH_P_8021Q && ether_type != ETH_P_8021AD {
            break;
        }
        let vlan: *const VlanHdr = ptr_at(packet, offset).ok_or(DropReason::VlanTruncated)?;
        ether_type = u16::from_be(unsafe { (*vlan).ether_type });
        offset += VLAN_HLEN;
    }

    match ether_type {
        ETH_P_IPV4 => classify_ipv4(packet, offset),
        ETH_P_IPV6 => classify_ipv6(packet, offset),
        ETH_P_ARP => {
            if packet.data() + offset + ARP_HLEN > packet.data_end() {
                return Err(DropReason::ArpTruncated);
            }
            Ok(Frame {
                l3: L3::Arp,
                l4: L4::None,
            })
        }
        _ => Ok(Frame {
            l3: L3::Other,
            l4: L4::None,
        }),
    }
}

#[inline(always)]
fn classify_ipv4<P: Packet>(packet: &P, offset: usize) -> Result<Frame, DropReason> {
    let ip: *const Ipv4Hdr = ptr_at(packet, offset).ok_or(DropReason::Ipv4Truncated)?;
    let version_ihl = unsafe { (*ip).version_ihl };
    if version_ihl >> 4 != 4 {
        return Err(DropReason::Ipv4BadVersion);
    }
    // Masked to four bits so the verifier knows the header length is at most 60.
    let header_len = ((version_ihl & 0x0f) as usize) * 4;
    if header_len < IPV4_MIN_HLEN || packet.data() + offset + header_len > packet.data_end() {
        return Err(DropReason::Ipv4BadHeaderLength);
    }
    let total_len = u16::from_be(unsafe { (*ip).tot_len }) as usize;
    // Against the whole packet, not the linear part: payload may sit in fragments.
    let available = packet.total_len().saturating_sub(offset);
    if total_len < header_len || total_len > available {
        return Err(DropReason::Ipv4BadTotalLength);
    }
    if u16::from_be(unsafe { (*ip).frag_off }) & IPV4_FRAG_OFFSET_MASK != 0 {
        return Ok(Frame {
            l3: L3::Ipv4,
            l4: L4::Fragment,
        });
    }
    let l4 = classify_l4(
        packet,
        unsafe { (*ip).protocol },
        offset + header_len,
        total_len - header_len,
    )?;
    Ok(Frame { l3: L3::Ipv4, l4 })
}

#[inline(always)]
fn classify_ipv6<P: Packet>(packet: &P, offset: usize) -> Result<Frame, DropReason> {
    let ip: *const Ipv6Hdr = ptr_at(packet, offset).ok_or(DropReason::Ipv6Truncated)?;
    if u32::from_be(unsafe { (*ip).version_tc_flow }) >> 28 != 6 {
        return Err(DropReason::Ipv6BadVersion);
    }
    let payload_len = u16::from_be(unsafe { (*ip).payload_len }) as usize;
    let l4 = classify_l4(
        packet,
        unsafe { (*ip).next_header },
        offset + IPV6_HLEN,
        payload_len,
    )?;
    Ok(Frame { l3: L3::Ipv6, l4 })
}

/// `payload_len` is what the IP header claims follows it; it bounds the UDP length.
#[inline(always)]
fn classify_l4<P: Packet>(
    packet: &P,
    protocol: u8,
    offset: usize,
    payload_len: usize,
) -> Result<L4, DropReason> {
    match protocol {
        IPPROTO_TCP => {
            let tcp: *const TcpHdr = ptr_at(packet, offset).ok_or(DropReason::TcpTruncated)?;
            let header_len = ((unsafe { (*tcp).doff_res } >> 4) as usize) * 4;
            if header_len < TCP_MIN_HLEN || packet.data() + offset + header_len > packet.data_end()
            {
                return Err(DropReason::TcpBadHeaderLength);
            }
            Ok(L4::Tcp)
        }
        IPPROTO_UDP => {
            let udp: *const UdpHdr = ptr_at(packet, offset).ok_or(DropReason::UdpTruncated)?;
            let udp_len = u16::from_be(unsafe { (*udp).len }) as usize;
            if udp_len < UDP_HLEN || udp_len > payload_len {
                return Err(DropReason::UdpBadLength);
            }
            Ok(L4::Udp {
                dest_port: u16::from_be(unsafe { (*udp).dest }),
            })
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            if packet.data() + offset + ICMP_HLEN > packet.data_end() {
                return Err(DropReason::IcmpTruncated);
            }
            Ok(if protocol == IPPROTO_ICMP {
                L4::Icmp
            } else {
                L4::Icmpv6
            })
        }
        _ => Ok(L4::Other),
    }
}
