//! Nudging clients of forgotten flows. When a backend goes, a client that is
//! only waiting to read would wait forever: nothing it sends reaches the
//! program that answers lost flows with a reset. So the node sends such a
//! client one TCP ACK from the address it dialled, with a sequence number
//! outside its window; its kernel answers with an ACK of its own (RFC 793),
//! that ACK finds no flow, and the program resets the connection with the
//! exact sequence number the client expects.

use std::{
    io,
    net::Ipv4Addr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

/// One out-of-window ACK to send: who to, from which address, out of which
/// interface, between which MACs.
#[derive(Clone, Debug)]
pub struct Nudge {
    pub ifindex: u32,
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub client: (Ipv4Addr, u16),
    pub dialled: (Ipv4Addr, u16),
}

/// Sends each nudge; failures are returned for the log (the client then
/// gets its reset at its own next packet instead).
pub fn send(nudges: &[Nudge]) -> io::Result<()> {
    if nudges.is_empty() {
        return Ok(());
    }
    // SAFETY: plain socket(2); the descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor this function owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut result = Ok(());
    for nudge in nudges {
        let frame = frame(nudge);
        // SAFETY: zeroed sockaddr_ll is valid; fields set below.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = nudge.ifindex as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&nudge.dst_mac);
        // SAFETY: `frame` and `addr` outlive the call; lengths are theirs.
        let sent = unsafe {
            libc::sendto(
                socket.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if sent < 0 {
            result = Err(io::Error::last_os_error());
        }
    }
    result
}

/// Ethernet, IPv4 and a bare TCP ACK with sequence and acknowledgement 0.
fn frame(nudge: &Nudge) -> Vec<u8> {
    let (src, sport) = nudge.dialled;
    let (dst, dport) = nudge.client;
    let mut frame = Vec::with_capacity(54);
    frame.extend_from_slice(&nudge.dst_mac);
    frame.extend_from_slice(&nudge.src_mac);
    frame.extend_from_slice(&0x0800u16.to_be_bytes());

    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&40u16.to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let check = checksum(&[&ip]);
    ip[10..12].copy_from_slice(&check.to_be_bytes());
    frame.extend_from_slice(&ip);

    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x10; // ACK
    tcp[14..16].copy_from_slice(&1024u16.to_be_bytes());
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&src.octets());
    pseudo[4..8].copy_from_slice(&dst.octets());
    pseudo[9] = 6;
    pseudo[10..12].copy_from_slice(&20u16.to_be_bytes());
    let check = checksum(&[&pseudo, &tcp]);
    tcp[16..18].copy_from_slice(&check.to_be_bytes());
    frame.extend_from_slice(&tcp);
    frame
}

/// RFC 1071 over the concatenation of `parts` (each of even length).
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = parts
        .iter()
        .flat_map(|part| part.chunks(2))
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], pair[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nudge_checksums_verify() {
        let nudge = Nudge {
            ifindex: 1,
            dst_mac: [2, 0, 0, 0, 0, 1],
            src_mac: [2, 0, 0, 0, 0, 2],
            client: (Ipv4Addr::new(10, 0, 1, 21), 40000),
            dialled: (Ipv4Addr::new(10, 0, 1, 100), 80),
        };
        let frame = frame(&nudge);
        assert_eq!(frame.len(), 54);
        assert_eq!(checksum(&[&frame[14..34]]), 0);
        let mut pseudo = [0u8; 12];
        pseudo[0..4].copy_from_slice(&frame[26..30]);
        pseudo[4..8].copy_from_slice(&frame[30..34]);
        pseudo[9] = 6;
        pseudo[10..12].copy_from_slice(&20u16.to_be_bytes());
        assert_eq!(checksum(&[&pseudo, &frame[34..54]]), 0);
    }
}
