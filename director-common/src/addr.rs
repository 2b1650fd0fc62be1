//! Address families and the 16-byte address representation shared by every map.

/// `AF_INET`, as stored in the `family` byte of keys and values.
pub const FAMILY_V4: u8 = 2;
/// `AF_INET6`.
pub const FAMILY_V6: u8 = 10;

// IP protocol numbers, as in keys and in the IPv4 header.
/// TCP.
pub const PROTO_TCP: u8 = 6;
/// UDP.
pub const PROTO_UDP: u8 = 17;
/// IPv4 in IPv4 (the tunnel method's outer header).
pub const PROTO_IPIP: u8 = 4;
/// GRE (the GRE tunnel's outer header).
pub const PROTO_GRE: u8 = 47;
/// ICMP.
pub const PROTO_ICMP: u8 = 1;
/// IPv6 in IPv4 or IPv6 (the tunnel method's outer header around an IPv6 packet; GUE's
/// inner protocol for one).
pub const PROTO_IPV6: u8 = 41;
/// The IPv6 fragment extension header.
pub const PROTO_FRAGMENT6: u8 = 44;
/// ICMPv6.
pub const PROTO_ICMPV6: u8 = 58;

/// An IPv4 address in the 16-byte form used by every key: the four bytes first, the rest
/// zero (the family byte beside it says which family it is).
///
/// Built from words rather than bytes: twelve zero bytes stored one by one are merged by
/// LLVM into a `memset` call, which the BPF back end emits as a call to a byte-at-a-time
/// subprogram (tens of ns per packet on the data path). Three word stores stay inline.
#[inline(always)]
pub const fn v4_to_16(a: [u8; 4]) -> [u8; 16] {
    // SAFETY: [u32; 4] and [u8; 16] have the same size and every bit pattern is valid.
    unsafe { core::mem::transmute::<[u32; 4], [u8; 16]>([u32::from_ne_bytes(a), 0, 0, 0]) }
}

/// The IPv4 address held in the first four bytes of a 16-byte address.
#[inline(always)]
pub const fn v4_of_16(a: &[u8; 16]) -> [u8; 4] {
    [a[0], a[1], a[2], a[3]]
}
