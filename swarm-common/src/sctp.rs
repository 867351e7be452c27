//! SCTP's checksum (CRC32c, RFC 9260 appendix A) updated in place when the
//! NAT rewrites a port. Unlike TCP's and UDP's, it covers no IP
//! pseudo-header, so rewriting addresses leaves it alone; a port change
//! would otherwise mean reading the whole packet again. A CRC is linear:
//! the new checksum is the old one XOR the CRC of the change alone, a
//! two-byte difference followed by the rest of the packet's length in
//! zeros, which is the difference's CRC multiplied by x^(8 * zeros) modulo
//! the polynomial (as zlib's `crc32_combine`). Shared so user space tests
//! the very code the programs run.

/// CRC32c's polynomial, bit-reflected.
const POLY: u32 = 0x82f6_3b78;

/// x^(2^k) modulo the polynomial, k = 0.., reflected (zlib's `x2n_table`
/// for CRC32c); [`x2n_table`] checks them.
const X2N: [u32; 20] = [
    0x4000_0000,
    0x2000_0000,
    0x0800_0000,
    0x0080_0000,
    0x0000_8000,
    0x82f6_3b78,
    0x6ea2_d55c,
    0x18b8_ea18,
    0x510a_c59a,
    0xb82b_e955,
    0xb8fd_b1e7,
    0x88e5_6f72,
    0x74c3_60a4,
    0xe417_2b16,
    0x0d65_762a,
    0x35d7_3a62,
    0x2846_1564,
    0xbf45_5269,
    0xe2ea_32dc,
    0xfe77_40e6,
];

/// XORed in when a bit shifts out of the register: none, or the polynomial.
/// A table rather than a branch, so the verifier walks one path only.
const SHIFT_OUT: [u32; 2] = [0, POLY];
/// A bit of 0 or 1 widened to a mask.
const MASK: [u32; 2] = [0, u32::MAX];

/// One bit shifted out of `register`.
#[inline(always)]
fn shift(register: u32) -> u32 {
    (register >> 1) ^ SHIFT_OUT[(register & 1) as usize]
}

/// `a * b` modulo the polynomial (reflected), in a fixed 32 steps and no
/// branches.
#[inline(always)]
fn multiply(a: u32, mut b: u32) -> u32 {
    let mut product = 0;
    let mut k = 0;
    while k < 32 {
        product ^= b & MASK[((a >> (31 - k)) & 1) as usize];
        b = shift(b);
        k += 1;
    }
    product
}

/// x^(8 * bytes) modulo the polynomial: the effect of `bytes` zero bytes.
#[inline(always)]
fn zeros(bytes: u32) -> u32 {
    let mut power = 1u32 << 31; // x^0
    // Bit i of `bytes` is 2^(i + 3) bits of zeros: X2N[i + 3].
    let mut i = 0;
    while i + 3 < X2N.len() {
        let taken = MASK[((bytes >> i) & 1) as usize];
        power = (multiply(X2N[i + 3], power) & taken) | (power & !taken);
        i += 1;
    }
    power
}

/// The CRC register (no initial value, no final XOR) after `bytes`.
#[inline(always)]
fn register(bytes: [u8; 2]) -> u32 {
    let mut crc = 0u32;
    for byte in bytes {
        crc ^= byte as u32;
        let mut k = 0;
        while k < 8 {
            crc = shift(crc);
            k += 1;
        }
    }
    crc
}

/// The checksum of an SCTP packet `packet_len` bytes long (common header
/// included) whose two bytes at `offset` changed from `old` to `new`
/// (wire order), given its checksum before (as SCTP stores it:
/// little-endian). `None` when the bytes do not lie in the packet or the
/// packet is longer than an IPv4 packet can be.
#[inline(always)]
pub fn checksum_after(
    checksum: u32,
    packet_len: u32,
    offset: u32,
    old: [u8; 2],
    new: [u8; 2],
) -> Option<u32> {
    if packet_len > 0xffff || offset + 2 > packet_len {
        return None;
    }
    let change = register([old[0] ^ new[0], old[1] ^ new[1]]);
    let after = packet_len - offset - 2;
    // Stored little-endian: as a u32 read from the wire in host order on
    // a little-endian host, it is the CRC itself; swap on a big-endian one.
    let crc = u32::from_le(checksum) ^ multiply(zeros(after), change);
    Some(crc.to_le())
}

/// Where the checksum is in SCTP's common header.
pub const CHECKSUM_OFFSET: usize = 8;
/// The common header: ports, verification tag, checksum.
pub const COMMON_HEADER_LEN: usize = 12;

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole checksum, as RFC 9260 computes it (bit by bit).
    fn crc32c(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &byte in bytes {
            crc ^= byte as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ POLY
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn x2n_table() {
        let mut power = 1u32 << 30; // x^1
        for (k, &expected) in X2N.iter().enumerate() {
            assert_eq!(power, expected, "x^(2^{k})");
            power = multiply(power, power);
        }
    }

    #[test]
    fn known_answer() {
        // RFC 3720's CRC32c test vector: 32 bytes of zeros.
        assert_eq!(crc32c(&[0; 32]), 0x8a91_36aa);
    }

    /// A packet with its checksum field zero, checksummed, then one port
    /// rewritten: the updated checksum equals the one computed afresh.
    #[test]
    fn updated_checksum_matches_a_full_one() {
        let mut seed = 0x1234_5678u32;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for len in [12usize, 13, 16, 64, 100, 1480, 9000, 65_515] {
            for port_offset in [0usize, 2] {
                let mut packet: std::vec::Vec<u8> = (0..len).map(|_| next() as u8).collect();
                packet[CHECKSUM_OFFSET..CHECKSUM_OFFSET + 4].fill(0);
                let before = crc32c(&packet);
                let old = [packet[port_offset], packet[port_offset + 1]];
                let new = (next() as u16).to_be_bytes();
                packet[port_offset..port_offset + 2].copy_from_slice(&new);
                let updated =
                    checksum_after(before.to_le(), len as u32, port_offset as u32, old, new);
                assert_eq!(
                    updated.map(u32::from_le),
                    Some(crc32c(&packet)),
                    "{len} bytes, port at {port_offset}"
                );
            }
        }
        assert_eq!(checksum_after(0, 12, 11, [0, 0], [1, 1]), None);
        assert_eq!(checksum_after(0, 70_000, 0, [0, 0], [1, 1]), None);
    }
}
