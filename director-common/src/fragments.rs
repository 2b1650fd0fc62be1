//! IPv4 and IPv6 fragments of datagrams for a virtual service.
//!
//! Only the first fragment of a datagram carries the ports, so only it can be matched
//! against the connection table and scheduled. What its followers need to reach the same
//! real (or, for a NAT reply, to get the virtual address back) is kept in `DIR_FRAGS`
//! under the fields every fragment of the datagram shares: source, destination, IP
//! identification and protocol (RFC 791).

use crate::config::NS_PER_S;

/// Key of `DIR_FRAGS`: what identifies one datagram's fragments.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    /// The IP identification field, network byte order.
    pub id_be: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// The datagram came from a client: later fragments go to `real`.
pub const FRAG_DIR_IN: u8 = 0;
/// The datagram is a NAT reply from `real`: later fragments get `addr` as source.
pub const FRAG_DIR_REPLY: u8 = 1;

/// Value of `DIR_FRAGS`, written by a datagram's first fragment.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragEntry {
    /// bpf_ktime_get_coarse_ns() when the first fragment passed. Later fragments ignore
    /// an entry older than [`FRAG_TIMEOUT_NS`].
    pub first_ns: u64,
    /// Real id and service slot of the datagram's flow.
    pub real: u32,
    pub service: u32,
    /// NAT: the address later fragments get (the real's as destination for
    /// [`FRAG_DIR_IN`], the virtual address as source for [`FRAG_DIR_REPLY`]).
    pub addr: [u8; 4],
    /// `FRAG_DIR_*`.
    pub dir: u8,
    pub _pad0: u8,
    pub _pad1: u16,
}

/// Key of `DIR_FRAGS6` (aligned to 8: copied as words): what identifies one IPv6 datagram's fragments (RFC 8200, 4.5:
/// source, destination and the 32-bit identification of the fragment header; with the
/// fragment header's next header, which every fragment of a datagram carries alike).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey6 {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// The fragment header's identification, network byte order.
    pub id_be: u32,
    /// The fragment header's next header.
    pub next: u8,
    pub _pad0: u8,
    pub _pad1: u16,
}

/// Value of `DIR_FRAGS6`: [`FragEntry`] with a 16-byte address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragEntry6 {
    /// As [`FragEntry::first_ns`].
    pub first_ns: u64,
    pub real: u32,
    pub service: u32,
    /// NAT66: the address later fragments get (the real's as destination for
    /// [`FRAG_DIR_IN`], the virtual address as source for [`FRAG_DIR_REPLY`]).
    pub addr: [u8; 16],
    /// `FRAG_DIR_*`, as a word: a byte beside seven zero bytes of padding would have
    /// the zeroes merged into a `memset` call in BPF.
    pub dir: u32,
    pub _pad: u32,
}

/// How long a datagram's fragments are followed after its first one: the reassembly
/// timeout of Linux (`net.ipv4.ipfrag_time` and `net.ipv6.ip6frag_time`, 30 s and 60
/// s; the shorter for both), after which the receiving kernel has given up on the
/// datagram anyway.
pub const FRAG_TIMEOUT_NS: u64 = 30 * NS_PER_S;

const _: () = {
    assert!(core::mem::size_of::<FragKey>() == 12);
    assert!(core::mem::size_of::<FragEntry>() == 24);
    assert!(core::mem::size_of::<FragKey6>() == 40);
    assert!(core::mem::size_of::<FragEntry6>() == 40);
};
