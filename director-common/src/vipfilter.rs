//! The VIP filter (`DIR_VIP_FILTER`): a bitmap of hashed addresses that tells the data
//! path, before it searches the connection table, whether a packet can be a virtual
//! service's at all. A director also carries its host's own traffic; such packets then
//! go to the kernel after one array read instead of a table search and the new-flow
//! program.
//!
//! Two halves of [`VIP_FILTER_BITS`] bits each: [`Role::Vip`] has a bit per virtual
//! address (every service of the address, every port and protocol: ports-0 services
//! included), [`Role::NatReal`] a bit per address of a NAT real (its replies come from
//! it, to the client). A packet is looked at further when its destination's bit is set
//! in the first half or its source's in the second. A set bit may be another
//! address's (one hash, no second check): such a packet only takes the long way, as
//! every packet did before the filter; a clear bit is certain. The control library
//! writes the bitmap whenever services or reals change, word by word: a word moves from
//! the old set of addresses to the new one in one 8-byte store, so an address in both
//! is never missing.
//!
//! One structure for both families: an IPv6 address hashes into the same halves.

/// Bits of each half (a power of two).
pub const VIP_FILTER_BITS: u32 = 1 << 16;
/// 64-bit words of each half.
pub const VIP_FILTER_HALF_WORDS: u32 = VIP_FILTER_BITS / 64;
/// Words of the whole map (`Array<u64>`).
pub const VIP_FILTER_WORDS: u32 = 2 * VIP_FILTER_HALF_WORDS;

/// Which half an address is looked up in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Role {
    /// A virtual service's address: matched against a packet's destination.
    Vip = 0,
    /// A NAT real's address: matched against a packet's source (its replies).
    NatReal = 1,
}

/// The word and the bit of an IPv4 address in `role`'s half.
#[inline(always)]
pub const fn slot_v4(addr: [u8; 4], role: Role) -> (u32, u64) {
    slot(u32::from_be_bytes(addr), role)
}

/// The word and the bit of an IPv6 address in `role`'s half.
#[inline(always)]
pub const fn slot_v6(addr: &[u8; 16], role: Role) -> (u32, u64) {
    let w0 = u32::from_be_bytes([addr[0], addr[1], addr[2], addr[3]]);
    let w1 = u32::from_be_bytes([addr[4], addr[5], addr[6], addr[7]]);
    let w2 = u32::from_be_bytes([addr[8], addr[9], addr[10], addr[11]]);
    let w3 = u32::from_be_bytes([addr[12], addr[13], addr[14], addr[15]]);
    slot(w0 ^ w1.rotate_left(8) ^ w2.rotate_left(16) ^ w3, role)
}

/// Fibonacci hashing: the top 16 bits of the product, which every bit of the address
/// moves (the address in host order, so neighbouring addresses differ in its low bits
/// and the product spreads them).
#[inline(always)]
const fn slot(x: u32, role: Role) -> (u32, u64) {
    let bit = x.wrapping_mul(0x9e37_79b1) >> 16;
    (
        role as u32 * VIP_FILTER_HALF_WORDS + bit / 64,
        1u64 << (bit % 64),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_halves_are_apart_and_inside_the_map() {
        for a in [[0u8; 4], [0, 0, 0, 1], [10, 0, 0, 1], [255; 4]] {
            let (v, _) = slot_v4(a, Role::Vip);
            let (n, _) = slot_v4(a, Role::NatReal);
            assert!(v < VIP_FILTER_HALF_WORDS);
            assert!((VIP_FILTER_HALF_WORDS..VIP_FILTER_WORDS).contains(&n));
        }
    }

    #[test]
    fn neighbouring_addresses_take_different_bits() {
        extern crate std;
        // A /22 of VIPs (as an operator numbers them) falls on distinct bits, and so do
        // addresses that differ only in their first octets.
        let bits: std::collections::BTreeSet<_> = (0..1024u32)
            .map(|i| slot_v4((0x0a64_0000 + i).to_be_bytes(), Role::Vip))
            .collect();
        assert!(bits.len() >= 1000, "{} distinct bits of 1024", bits.len());
        let firsts: std::collections::BTreeSet<_> = (0..=255u8)
            .map(|a| slot_v4([a, 168, 0, 1], Role::Vip))
            .collect();
        assert!(firsts.len() >= 250, "{} distinct bits of 256", firsts.len());
    }
}
