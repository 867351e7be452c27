//! Hand-built frames for feeding the data plane: well-formed ones with valid
//! checksums, which tests then damage in precise ways.

use std::net::Ipv4Addr;

pub const ETH_HLEN: usize = 14;
/// Offset of the IPv4 (or IPv6) header in an untagged frame.
pub const L3_OFFSET: usize = ETH_HLEN;
/// Offset of the transport header after a 20-byte IPv4 header.
pub const L4_OFFSET: usize = ETH_HLEN + 20;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const ETHERTYPE_VLAN: u16 = 0x8100;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

pub const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

pub fn ethernet(dst: [u8; 6], src: [u8; 6], ether_type: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(ETH_HLEN + payload.len());
    frame.extend_from_slice(&dst);
    frame.extend_from_slice(&src);
    frame.extend_from_slice(&ether_type.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// An IPv4 packet (20-byte header, DF, TTL 64) with a valid header checksum.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, payload: &[u8]) -> Vec<u8> {
    let total = (20 + payload.len()) as u16;
    let mut header = [0u8; 20];
    header[0] = 0x45;
    header[2..4].copy_from_slice(&total.to_be_bytes());
    header[6] = 0x40; // DF
    header[8] = 64;
    header[9] = protocol;
    header[12..16].copy_from_slice(&src.octets());
    header[16..20].copy_from_slice(&dst.octets());
    let checksum = internet_checksum(&header);
    header[10..12].copy_from_slice(&checksum.to_be_bytes());
    let mut packet = header.to_vec();
    packet.extend_from_slice(payload);
    packet
}

/// A TCP segment with a 20-byte header and the SYN flag (checksum left zero:
/// the programs under test do not verify it).
pub fn tcp(source: u16, dest: u16, payload: &[u8]) -> Vec<u8> {
    let mut segment = vec![0u8; 20];
    segment[0..2].copy_from_slice(&source.to_be_bytes());
    segment[2..4].copy_from_slice(&dest.to_be_bytes());
    segment[12] = 5 << 4;
    segment[13] = 0x02;
    segment[14..16].copy_from_slice(&64240u16.to_be_bytes());
    segment.extend_from_slice(payload);
    segment
}

pub fn udp(source: u16, dest: u16, payload: &[u8]) -> Vec<u8> {
    let mut datagram = vec![0u8; 8];
    datagram[0..2].copy_from_slice(&source.to_be_bytes());
    datagram[2..4].copy_from_slice(&dest.to_be_bytes());
    datagram[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    datagram.extend_from_slice(payload);
    datagram
}

pub fn icmp_echo(id: u16, seq: u16) -> Vec<u8> {
    let mut message = vec![8, 0, 0, 0];
    message.extend_from_slice(&id.to_be_bytes());
    message.extend_from_slice(&seq.to_be_bytes());
    message.extend_from_slice(b"swarm-ping");
    let checksum = internet_checksum(&message);
    message[2..4].copy_from_slice(&checksum.to_be_bytes());
    message
}

/// An IPv6 header (no extension headers) followed by `payload`.
pub fn ipv6(next_header: u8, payload: &[u8]) -> Vec<u8> {
    let mut packet = vec![0u8; 40];
    packet[0] = 0x60;
    packet[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    packet[6] = next_header;
    packet[7] = 64;
    packet[8..24].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    packet[24..40].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    packet.extend_from_slice(payload);
    packet
}

/// An ARP request (Ethernet/IPv4) asking who has `target`.
pub fn arp_request(sender_mac: [u8; 6], sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut arp = vec![0, 1, 0x08, 0x00, 6, 4, 0, 1];
    arp.extend_from_slice(&sender_mac);
    arp.extend_from_slice(&sender.octets());
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&target.octets());
    arp
}

/// The same frame with an 802.1Q tag (VLAN `vid`) inserted after the MACs.
pub fn vlan_tagged(frame: &[u8], vid: u16) -> Vec<u8> {
    let mut tagged = frame[..12].to_vec();
    tagged.extend_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
    tagged.extend_from_slice(&vid.to_be_bytes());
    tagged.extend_from_slice(&frame[12..]);
    tagged
}

/// A well-formed Ethernet/IPv4/`protocol` frame between two fixed hosts.
pub fn ipv4_frame(protocol: u8, l4: &[u8]) -> Vec<u8> {
    ethernet(
        DST_MAC,
        SRC_MAC,
        ETHERTYPE_IPV4,
        &ipv4(
            Ipv4Addr::new(198, 18, 0, 100),
            Ipv4Addr::new(198, 18, 0, 1),
            protocol,
            l4,
        ),
    )
}

/// RFC 1071 one's-complement sum.
pub fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Rewrites the IPv4 header checksum after a test changed header bytes, so
/// only the intended damage is present.
pub fn fix_ipv4_checksum(frame: &mut [u8], l3_offset: usize) {
    let header_len = usize::from(frame[l3_offset] & 0x0f) * 4;
    let end = (l3_offset + header_len.max(20)).min(frame.len());
    frame[l3_offset + 10..l3_offset + 12].copy_from_slice(&[0, 0]);
    let checksum = internet_checksum(&frame[l3_offset..end]);
    frame[l3_offset + 10..l3_offset + 12].copy_from_slice(&checksum.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_checksum_verifies_to_zero() {
        let packet = ipv4(
            Ipv4Addr::LOCALHOST,
            Ipv4Addr::BROADCAST,
            PROTO_UDP,
            &udp(1, 2, b"x"),
        );
        assert_eq!(internet_checksum(&packet[..20]), 0);
    }
}
