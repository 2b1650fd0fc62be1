//! Internet checksums: incremental updates (RFC 1624) and the full sum of a new IPv4
//! header. Values are the big-endian bytes read as u16, as they sit in the packet.

#[inline(always)]
fn fold(mut s: u64) -> u16 {
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

#[inline(always)]
fn word(b: [u8; 2]) -> u64 {
    u16::from_be_bytes(b) as u64
}

/// Checksum after a 16-bit field changed from `old` to `new` (both as in the packet).
#[inline(always)]
pub fn replace2(check: [u8; 2], old: [u8; 2], new: [u8; 2]) -> [u8; 2] {
    let s = (!u16::from_be_bytes(check)) as u64 + (!u16::from_be_bytes(old)) as u64 + word(new);
    (!fold(s)).to_be_bytes()
}

/// Checksum after a 32-bit field (an IPv4 address) changed.
#[inline(always)]
pub fn replace4(check: [u8; 2], old: [u8; 4], new: [u8; 4]) -> [u8; 2] {
    let s = (!u16::from_be_bytes(check)) as u64
        + (!u16::from_be_bytes([old[0], old[1]])) as u64
        + (!u16::from_be_bytes([old[2], old[3]])) as u64
        + word([new[0], new[1]])
        + word([new[2], new[3]]);
    (!fold(s)).to_be_bytes()
}

/// Checksum of a 20-byte IPv4 header (with its checksum field zero).
#[inline(always)]
pub fn ipv4_header(h: &[u8; 20]) -> [u8; 2] {
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
    (!fold(s)).to_be_bytes()
}
