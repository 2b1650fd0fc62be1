//! Header layouts the data path reads and writes: ethertypes, offsets inside the IPv4,
//! TCP, UDP and ICMP headers, and the masks of their bit fields.

use network_types::{eth::EthHdr, ip::Ipv4Hdr};

/// Ethertype of IPv4.
pub const ETH_P_IP: u16 = 0x0800;
/// Ethertype of IPv6.
pub const ETH_P_IPV6: u16 = 0x86dd;
/// Ethertype of an 802.1Q VLAN tag.
pub const ETH_P_8021Q: u16 = 0x8100;
/// Ethertype of an 802.1ad (QinQ) service tag.
pub const ETH_P_8021AD: u16 = 0x88a8;
/// A VLAN tag: the tag control field and the inner ethertype.
pub const VLAN_HLEN: usize = 4;
/// Offset of the inner ethertype in a tagged frame.
pub const VLAN_ETHERTYPE: usize = EthHdr::LEN + 2;
/// The two MAC addresses at the start of every frame.
pub const MACS_LEN: usize = 12;
/// Length of an untagged Ethernet header; a tagged one is [`VLAN_HLEN`] longer.
pub const ETH_HLEN: usize = EthHdr::LEN;

/// The first byte of an IPv4 header without options: version 4, five 32-bit words.
pub const IPV4_VIHL_NO_OPTIONS: u8 = 0x45;
/// The largest IPv4 header (15 words, options included).
pub const IPV4_MAX_HLEN: usize = 60;
/// A header length in bytes (four times IHL) masked with this is provably at most
/// [`IPV4_MAX_HLEN`] and a multiple of 4, which the verifier needs to bound an offset.
pub const IPV4_HLEN_MASK: usize = 0x3c;
// Offsets inside the IPv4 header.
/// The identification field.
pub const IP_ID: usize = 4;
/// The time to live.
pub const IP_TTL: usize = 8;
/// The header checksum.
pub const IP_CHECK: usize = 10;
/// The source address.
pub const IP_SRC: usize = 12;
/// The destination address.
pub const IP_DST: usize = 16;
// Bits of the flags-and-fragment-offset field, in host order.
/// The fragment offset (non-zero in a later fragment).
pub const IP_OFFSET_MASK: u16 = 0x1fff;
/// More fragments follow.
pub const IP_MF: u16 = 0x2000;
/// Don't fragment.
pub const IP_DF: u16 = 0x4000;
/// [`IP_DF`] as the first byte of the field holds it.
pub const IP_DF_BYTE: u8 = (IP_DF >> 8) as u8;

/// The IPv4 header's version (4).
#[inline(always)]
pub fn ip_version(vihl: u8) -> u8 {
    vihl >> 4
}

/// The IPv4 header's length in bytes (IHL, in 32-bit words, times 4).
#[inline(always)]
pub fn ip_hlen(vihl: u8) -> usize {
    ((vihl & 0x0f) as usize) * 4
}

/// Length of the IPv6 header (extension headers follow it).
pub const IPV6_HLEN: usize = 40;
// Offsets inside the IPv6 header.
/// The payload length (everything after the 40-byte header).
pub const IP6_PAYLOAD_LEN: usize = 4;
/// The next header.
pub const IP6_NEXT: usize = 6;
/// The hop limit.
pub const IP6_HOP_LIMIT: usize = 7;
/// The source address.
pub const IP6_SRC: usize = 8;
/// The destination address.
pub const IP6_DST: usize = 24;
// IPv6 extension headers (next-header values).
/// Hop-by-hop options.
pub const IP6_HOPOPTS: u8 = 0;
/// Routing header.
pub const IP6_ROUTING: u8 = 43;
/// Fragment header (8 bytes).
pub const IP6_FRAGMENT: u8 = 44;
/// Destination options.
pub const IP6_DSTOPTS: u8 = 60;
/// The fragment header's offset bits (host order, in units of 8 bytes, shifted by 3).
pub const IP6_FRAG_OFFSET: u16 = 0xfff8;
/// The fragment header's "more fragments" bit.
pub const IP6_FRAG_MORE: u16 = 0x0001;
/// Length of the IPv6 fragment extension header.
pub const FRAG6_HLEN: usize = 8;

/// Length of a TCP header without options.
pub const TCP_HLEN: usize = 20;
// Offsets inside the TCP header.
/// The data offset (header length in words, high nibble).
pub const TCP_DOFF: usize = 12;
/// The flags.
pub const TCP_FLAGS: usize = 13;
/// The checksum.
pub const TCP_CHECK: usize = 16;
// TCP flag bits.
/// FIN: the sender is done.
pub const TCP_FIN: u8 = 0x01;
/// SYN: a connection starts.
pub const TCP_SYN: u8 = 0x02;
/// RST: the connection is reset.
pub const TCP_RST: u8 = 0x04;
/// ACK: the acknowledgement number is valid.
pub const TCP_ACK: u8 = 0x10;

/// Length of the UDP header.
pub const UDP_HLEN: usize = 8;
/// Offset of the length inside the UDP header.
pub const UDP_LEN: usize = 4;
/// Offset of the checksum inside the UDP header.
pub const UDP_CHECK: usize = 6;

/// Length of an ICMP error's header: type, code, checksum, four bytes that depend on
/// the type; the quoted packet follows.
pub const ICMP_HLEN: usize = 8;
/// Offset of the checksum inside the ICMP header.
pub const ICMP_CHECK: usize = 2;
// ICMP types the director routes to the owner of the flow they quote.
/// Destination unreachable.
pub const ICMP_DEST_UNREACH: u8 = 3;
/// Time exceeded.
pub const ICMP_TIME_EXCEEDED: u8 = 11;
/// Destination unreachable, fragmentation needed and DF set (RFC 1191).
pub const ICMP_FRAG_NEEDED: u8 = 4;

const _: () = assert!(Ipv4Hdr::LEN == 20 && ETH_HLEN == 14);
