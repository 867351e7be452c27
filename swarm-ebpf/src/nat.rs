//! Address and port rewriting with incremental checksum updates, for the
//! load balancer's DNAT and reverse NAT. Only option-free IPv4 headers right
//! after an untagged Ethernet header are rewritten; the caller drops others.

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    helpers::{bpf_l3_csum_replace, bpf_l4_csum_replace, bpf_skb_store_bytes},
    programs::TcContext,
};
use swarm_common::{
    sctp,
    service::{IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP},
    stats::DropReason,
};

use crate::{
    packet::ptr_at,
    parse::{ETH_HLEN, ETH_P_IPV4, EthHdr, Ipv4Hdr, SctpHdr, TcpHdr, UdpHdr},
};

const IP_CHECK_OFF: usize = ETH_HLEN + 10;
pub const IP_SADDR_OFF: usize = ETH_HLEN + 12;
pub const IP_DADDR_OFF: usize = ETH_HLEN + 16;
/// Transport header: right after an option-free IPv4 header.
pub const L4_OFF: usize = ETH_HLEN + 20;
pub const L4_SPORT_OFF: usize = L4_OFF;
pub const L4_DPORT_OFF: usize = L4_OFF + 2;
const TCP_CHECK_OFF: usize = L4_OFF + 16;
const UDP_CHECK_OFF: usize = L4_OFF + 6;
const SCTP_CHECK_OFF: usize = L4_OFF + sctp::CHECKSUM_OFFSET;
const IP_TOT_LEN_OFF: usize = ETH_HLEN + 2;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// The 5-tuple of a TCP, UDP or SCTP packet, as it is on the wire (network order).
#[derive(Clone, Copy)]
pub struct Flow {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub protocol: u8,
    /// TCP flags; 0 for UDP and SCTP.
    pub tcp_flags: u8,
}

impl Flow {
    #[inline(always)]
    pub fn is_tcp(&self) -> bool {
        self.protocol == IPPROTO_TCP
    }

    /// A TCP segment that opens a connection (SYN without ACK).
    #[inline(always)]
    pub fn opens(&self) -> bool {
        !self.is_tcp() || self.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
    }

    /// A TCP segment that closes or aborts its connection.
    #[inline(always)]
    pub fn closes(&self) -> bool {
        self.tcp_flags & (TCP_FIN | TCP_RST) != 0
    }
}

/// The IPv4 destination of an untagged IPv4 frame, if it is one.
#[inline(always)]
pub fn ipv4_daddr(ctx: &TcContext) -> Option<u32> {
    let eth: *const EthHdr = ptr_at(ctx, 0)?;
    // SAFETY: bounds-checked by ptr_at.
    if u16::from_be(unsafe { (*eth).ether_type }) != ETH_P_IPV4 {
        return None;
    }
    let ip: *const Ipv4Hdr = ptr_at(ctx, ETH_HLEN)?;
    // SAFETY: bounds-checked by ptr_at.
    Some(unsafe { (*ip).daddr })
}

/// The flow of an untagged IPv4 TCP, UDP or SCTP packet the parser already checked.
/// `Err` for what the NAT cannot rewrite: other protocols, IP options,
/// fragments.
#[inline(always)]
pub fn flow(ctx: &TcContext) -> Result<Flow, DropReason> {
    let ip: *const Ipv4Hdr = ptr_at(ctx, ETH_HLEN).ok_or(DropReason::Ipv4Truncated)?;
    // SAFETY: bounds-checked by ptr_at.
    let (version_ihl, protocol, frag_off, saddr, daddr) = unsafe {
        (
            (*ip).version_ihl,
            (*ip).protocol,
            u16::from_be((*ip).frag_off),
            (*ip).saddr,
            (*ip).daddr,
        )
    };
    if protocol != IPPROTO_TCP && protocol != IPPROTO_UDP && protocol != IPPROTO_SCTP {
        return Err(DropReason::ServiceProtocol);
    }
    // More-fragments set or an offset: the ports are not in every fragment.
    if version_ihl != 0x45 || frag_off & 0x3fff != 0 {
        return Err(DropReason::ServiceIpOptions);
    }
    let (sport, dport, tcp_flags) = if protocol == IPPROTO_TCP {
        let tcp: *const TcpHdr = ptr_at(ctx, L4_OFF).ok_or(DropReason::TcpTruncated)?;
        // SAFETY: bounds-checked by ptr_at.
        unsafe { ((*tcp).source, (*tcp).dest, (*tcp).flags) }
    } else if protocol == IPPROTO_UDP {
        let udp: *const UdpHdr = ptr_at(ctx, L4_OFF).ok_or(DropReason::UdpTruncated)?;
        // SAFETY: bounds-checked by ptr_at.
        unsafe { ((*udp).source, (*udp).dest, 0) }
    } else {
        let sctp: *const SctpHdr = ptr_at(ctx, L4_OFF).ok_or(DropReason::SctpTruncated)?;
        // SAFETY: bounds-checked by ptr_at.
        unsafe { ((*sctp).source, (*sctp).dest, 0) }
    };
    Ok(Flow {
        saddr,
        daddr,
        sport,
        dport,
        protocol,
        tcp_flags,
    })
}

#[inline(always)]
fn l4_check(protocol: u8) -> (usize, u64) {
    if protocol == IPPROTO_TCP {
        (TCP_CHECK_OFF, 0)
    } else {
        // A zero UDP checksum means "none": keep it zero.
        (UDP_CHECK_OFF, BPF_F_MARK_MANGLED_0 as u64)
    }
}

/// Replaces the IPv4 address at `field` (source or destination offset),
/// fixing the IP checksum and the TCP/UDP pseudo-header checksum (SCTP's
/// covers no addresses).
#[inline(always)]
pub fn rewrite_addr(
    ctx: &TcContext,
    protocol: u8,
    field: usize,
    old: u32,
    new: u32,
) -> Result<(), DropReason> {
    let (check_off, flags) = l4_check(protocol);
    let skb = ctx.skb.skb;
    // SAFETY: helper calls on the program's own skb; `new` outlives the call.
    unsafe {
        if (protocol != IPPROTO_SCTP
            && bpf_l4_csum_replace(
                skb,
                check_off as u32,
                old as u64,
                new as u64,
                flags | BPF_F_PSEUDO_HDR as u64 | 4,
            ) < 0)
            || bpf_l3_csum_replace(skb, IP_CHECK_OFF as u32, old as u64, new as u64, 4) < 0
            || bpf_skb_store_bytes(skb, field as u32, &new as *const u32 as *const _, 4, 0) < 0
        {
            return Err(DropReason::HelperFailed);
        }
    }
    Ok(())
}

/// Replaces the TCP/UDP port at `field`, fixing the transport checksum.
#[inline(always)]
pub fn rewrite_port(
    ctx: &TcContext,
    protocol: u8,
    field: usize,
    old: u16,
    new: u16,
) -> Result<(), DropReason> {
    if old == new {
        return Ok(());
    }
    if protocol == IPPROTO_SCTP {
        return rewrite_sctp_port(ctx, field, old, new);
    }
    let (check_off, flags) = l4_check(protocol);
    let skb = ctx.skb.skb;
    // SAFETY: helper calls on the program's own skb; `new` outlives the call.
    unsafe {
        if bpf_l4_csum_replace(skb, check_off as u32, old as u64, new as u64, flags | 2) < 0
            || bpf_skb_store_bytes(skb, field as u32, &new as *const u16 as *const _, 2, 0) < 0
        {
            return Err(DropReason::HelperFailed);
        }
    }
    Ok(())
}

/// Replaces an SCTP port, updating the packet's CRC32c for the change
/// (see `swarm_common::sctp`).
#[inline(always)]
fn rewrite_sctp_port(ctx: &TcContext, field: usize, old: u16, new: u16) -> Result<(), DropReason> {
    let total: *const u16 = ptr_at(ctx, IP_TOT_LEN_OFF).ok_or(DropReason::Ipv4Truncated)?;
    let checksum: *const u32 = ptr_at(ctx, SCTP_CHECK_OFF).ok_or(DropReason::SctpTruncated)?;
    // SAFETY: bounds-checked by ptr_at.
    let (total, checksum) = unsafe { (u16::from_be(*total) as u32, *checksum) };
    // `flow` accepted only option-free headers: 20 bytes of IP.
    let packet_len = total.checked_sub(20).ok_or(DropReason::SctpTruncated)?;
    let updated = sctp::checksum_after(
        checksum,
        packet_len,
        (field - L4_OFF) as u32,
        old.to_ne_bytes(),
        new.to_ne_bytes(),
    )
    .ok_or(DropReason::SctpTruncated)?;
    let skb = ctx.skb.skb;
    // SAFETY: helper calls on the program's own skb; the values outlive them.
    unsafe {
        if bpf_skb_store_bytes(skb, field as u32, &new as *const u16 as *const _, 2, 0) < 0
            || bpf_skb_store_bytes(
                skb,
                SCTP_CHECK_OFF as u32,
                &updated as *const u32 as *const _,
                4,
                0,
            ) < 0
        {
            return Err(DropReason::HelperFailed);
        }
    }
    Ok(())
}
