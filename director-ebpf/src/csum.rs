//! Internet checksums: incremental updates (RFC 1624, IPv4 and IPv6 addresses) and the
//! full sum of a new IPv4 header.
//!
//! The one's-complement sum does not depend on byte order (RFC 1071, 2.(B)): every
//! 16-bit word is taken in the machine's order as it sits in the packet and the result
//! is stored back the same way, with no byte swaps.

use network_types::ip::Ipv4Hdr;

/// The one's-complement sum `s` folded to 16 bits.
#[inline(always)]
pub fn fold(mut s: u64) -> u16 {
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

#[inline(always)]
pub fn word(b: [u8; 2]) -> u64 {
    u16::from_ne_bytes(b) as u64
}

/// The two words of four bytes (an IPv4 address), summed.
#[inline(always)]
pub fn words(b: &[u8; 4]) -> u64 {
    word([b[0], b[1]]) + word([b[2], b[3]])
}

/// The two 16-bit words of a 32-bit field, summed (both halves in packet order).
#[inline(always)]
fn halves(v: u32) -> u64 {
    (v & 0xffff) as u64 + (v >> 16) as u64
}

/// Checksum after a 32-bit field (an IPv4 address) changed from `old` to `new`, values
/// as they sit in the packet (`u32::from_ne_bytes` of the bytes).
#[inline(always)]
pub fn replace4(check: u16, old: u32, new: u32) -> u16 {
    !fold((!check) as u64 + halves(!old) + halves(new))
}

/// Checksum after an address and a port changed (the TCP/UDP checksum covers both).
#[inline(always)]
pub fn replace4_2(check: u16, old: u32, new: u32, old_port: u16, new_port: u16) -> u16 {
    !fold((!check) as u64 + halves(!old) + halves(new) + (!old_port) as u64 + new_port as u64)
}

/// Checksum of an IPv4 header without options (with its checksum field zero).
#[inline(always)]
pub fn ipv4_header(h: &[u8; Ipv4Hdr::LEN]) -> [u8; 2] {
    // Unrolled with constant indices: the verifier rejects any reachable bounds panic.
    let s = word([h[0], h[1]])
        + word([h[2], h[3]])
        + word([h[4], h[5]])
        + word([h[6], h[7]])
        + word([h[8], h[9]])
        + word([h[10], h[11]])
        + word([h[12], h[13]])
        + word([h[14], h[15]])
        + word([h[16], h[17]])
        + word([h[18], h[19]]);
    (!fold(s)).to_ne_bytes()
}

/// Checksum of an IPv4 header without options given as its ten 16-bit words (with its
/// checksum word zero).
#[inline(always)]
pub fn ipv4_header_words(h: &[u16; Ipv4Hdr::LEN / 2]) -> u16 {
    let mut s = 0u64;
    // A constant trip count and constant indices: no bounds panic reachable.
    for w in h {
        s += *w as u64;
    }
    !fold(s)
}

/// Checksum after a 16-bit field changed from `old` to `new` (values as they sit in the
/// packet).
#[inline(always)]
pub fn replace2(check: u16, old: u16, new: u16) -> u16 {
    !fold((!check) as u64 + (!old) as u64 + new as u64)
}

/// The checksum field for a sum returned by `bpf_csum_diff` over data whose checksum
/// field was zero (the helper's 32-bit sum is in the machine's order, like the words).
#[inline(always)]
pub fn of_csum_diff(sum: i64) -> [u8; 2] {
    (!fold(sum as u32 as u64)).to_ne_bytes()
}

/// The four 32-bit words of a 16-byte (IPv6) address, as they sit in memory (read as
/// words: see `addr::addr_words` for why every address is 4-aligned).
#[inline(always)]
fn quads(a: &[u8; 16]) -> [u32; 4] {
    crate::addr::addr_words(a)
}

/// The eight words of an IPv6 address, summed.
#[inline(always)]
pub fn words16(a: &[u8; 16]) -> u64 {
    let q = quads(a);
    halves(q[0]) + halves(q[1]) + halves(q[2]) + halves(q[3])
}

/// Checksum after an IPv6 address and a port changed (the TCP/UDP checksum covers both
/// through the pseudo-header).
#[inline(always)]
pub fn replace16_2(
    check: u16,
    old: &[u8; 16],
    new: &[u8; 16],
    old_port: u16,
    new_port: u16,
) -> u16 {
    let o = quads(old);
    let s = (!check) as u64
        + halves(!o[0])
        + halves(!o[1])
        + halves(!o[2])
        + halves(!o[3])
        + words16(new)
        + (!old_port) as u64
        + new_port as u64;
    !fold(s)
}
