//! Turning a TCP segment into the reset that answers it, in place: for
//! connections to a service with no backend (refused at once, not
//! black-holed) and for flows whose backend is gone.

use aya_ebpf::{
    helpers::{bpf_csum_diff, bpf_skb_change_tail},
    programs::TcContext,
};
use swarm_common::stats::DropReason;

use crate::{
    nat::{L4_OFF, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    packet::ptr_at_mut,
    parse::{ETH_HLEN, EthHdr, Ipv4Hdr, TcpHdr},
};

const RESET_LEN: u32 = (ETH_HLEN + 20 + 20) as u32;
const IPPROTO_TCP: u8 = 6;

/// The TCP pseudo-header, for the checksum.
#[repr(C)]
struct PseudoHeader {
    saddr: u32,
    daddr: u32,
    zero: u8,
    protocol: u8,
    tcp_len: u16,
}

/// Rewrites the option-free IPv4 TCP segment in `ctx` into the RST its
/// sender accepts (RFC 793: seq from its ACK, or an ACK of what it sent),
/// addressed back to it; the caller sends it back the way it came.
#[inline(always)]
pub fn reply_in_place(ctx: &TcContext) -> Result<(), DropReason> {
    let (seq, ack, flags) = {
        let ip: *mut Ipv4Hdr = ptr_at_mut(ctx, ETH_HLEN).ok_or(DropReason::Ipv4Truncated)?;
        let tcp: *mut TcpHdr = ptr_at_mut(ctx, L4_OFF).ok_or(DropReason::TcpTruncated)?;
        // SAFETY: bounds-checked by ptr_at_mut.
        unsafe {
            let flags = (*tcp).flags;
            if flags & TCP_RST != 0 {
                // Never answer a reset with a reset.
                return Err(DropReason::FlowLost);
            }
            if flags & TCP_ACK != 0 {
                ((*tcp).ack_seq, 0u32, TCP_RST)
            } else {
                let header_len = (((*tcp).doff_res >> 4) as u32) * 4;
                let payload = (u16::from_be((*ip).tot_len) as u32).saturating_sub(20 + header_len);
                let mut consumed = payload;
                if flags & TCP_SYN != 0 {
                    consumed += 1;
                }
                if flags & TCP_FIN != 0 {
                    consumed += 1;
                }
                let ack = u32::from_be((*tcp).seq).wrapping_add(consumed);
                (0u32, ack.to_be(), TCP_RST | TCP_ACK)
            }
        }
    };
    // SAFETY: plain helper call; packet pointers are taken again below.
    if unsafe { bpf_skb_change_tail(ctx.skb.skb, RESET_LEN, 0) } < 0 {
        return Err(DropReason::HelperFailed);
    }
    let eth: *mut EthHdr = ptr_at_mut(ctx, 0).ok_or(DropReason::EthTruncated)?;
    let ip: *mut Ipv4Hdr = ptr_at_mut(ctx, ETH_HLEN).ok_or(DropReason::Ipv4Truncated)?;
    let tcp: *mut TcpHdr = ptr_at_mut(ctx, L4_OFF).ok_or(DropReason::TcpTruncated)?;
    // SAFETY: all three bounds-checked by ptr_at_mut after the resize.
    unsafe {
        core::mem::swap(&mut (*eth).dst, &mut (*eth).src);

        let (saddr, daddr) = ((*ip).daddr, (*ip).saddr);
        (*ip).version_ihl = 0x45;
        (*ip).tos = 0;
        (*ip).tot_len = 40u16.to_be();
        (*ip).id = 0;
        (*ip).frag_off = 0x4000u16.to_be();
        (*ip).ttl = 64;
        (*ip).protocol = IPPROTO_TCP;
        (*ip).check = 0;
        (*ip).saddr = saddr;
        (*ip).daddr = daddr;

        let (sport, dport) = ((*tcp).dest, (*tcp).source);
        (*tcp).source = sport;
        (*tcp).dest = dport;
        (*tcp).seq = seq;
        (*tcp).ack_seq = ack;
        (*tcp).doff_res = 5 << 4;
        (*tcp).flags = flags;
        (*tcp).window = 0;
        (*tcp).check = 0;
        (*tcp).urg_ptr = 0;

        (*ip).check = fold(bpf_csum_diff(
            core::ptr::null_mut(),
            0,
            ip as *mut u32,
            20,
            0,
        ));
        let mut pseudo = PseudoHeader {
            saddr,
            daddr,
            zero: 0,
            protocol: IPPROTO_TCP,
            tcp_len: 20u16.to_be(),
        };
        let partial = bpf_csum_diff(
            core::ptr::null_mut(),
            0,
            &mut pseudo as *mut PseudoHeader as *mut u32,
            12,
            0,
        );
        (*tcp).check = fold(bpf_csum_diff(
            core::ptr::null_mut(),
            0,
            tcp as *mut u32,
            20,
            partial as u32,
        ));
    }
    Ok(())
}

/// Folds a 32-bit one's-complement sum into the 16-bit checksum field value.
#[inline(always)]
fn fold(sum: i64) -> u16 {
    let mut sum = sum as u64 & 0xffff_ffff;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}
