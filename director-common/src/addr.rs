//! Address families and the 16-byte address representation shared by every map.

/// `AF_INET`, as stored in the `family` byte of keys and values.
pub const FAMILY_V4: u8 = 2;
/// `AF_INET6`.
pub const FAMILY_V6: u8 = 10;

/// IP protocol numbers used in keys.
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_IPIP: u8 = 4;

/// An IPv4 address in the 16-byte form used by every key: the four bytes first, the rest
/// zero (the family byte beside it says which family it is).
#[inline(always)]
pub const fn v4_to_16(a: [u8; 4]) -> [u8; 16] {
    [a[0], a[1], a[2], a[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
}

/// The IPv4 address held in the first four bytes of a 16-byte address.
#[inline(always)]
pub const fn v4_of_16(a: &[u8; 16]) -> [u8; 4] {
    [a[0], a[1], a[2], a[3]]
}
