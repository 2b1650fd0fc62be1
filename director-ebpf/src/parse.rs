//! Header parsing: what a frame is, read once into a [`Packet`] (or an [`IcmpError`])
//! that the rest of the data path works from. Every read goes through
//! [`crate::packet`].

use aya_ebpf::programs::XdpContext;
use director_common::{
    addr::{FAMILY_V4, FAMILY_V6, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, v4_to_16},
    stats::Stat,
};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::{
    addr::opaque_zero,
    headers::{
        ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, ICMP_DEST_UNREACH, ICMP_HLEN,
        ICMP_TIME_EXCEEDED, IP_DF, IP_MF, IP_OFFSET_MASK, IP6_DST, IP6_DSTOPTS, IP6_FRAG_MORE,
        IP6_FRAG_OFFSET, IP6_FRAGMENT, IP6_HOP_LIMIT, IP6_HOPOPTS, IP6_NEXT, IP6_PAYLOAD_LEN,
        IP6_ROUTING, IP6_SRC, IPV4_HLEN_MASK, IPV6_HLEN, TCP_DOFF, TCP_FLAGS, TCP_HLEN, UDP_HLEN,
        UDP_LEN, VLAN_HLEN, ip_hlen, ip_version,
    },
    ingress,
    maps::PARSE6,
    packet::{self, halves},
};

/// What the data path needs to know about a TCP/UDP packet.
///
/// `repr(C, align(8))` with the addresses first: keys are built from them with word
/// copies (an unaligned 16-byte field is copied byte by byte on BPF).
#[repr(C, align(8))]
pub struct Packet {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Length of the L2 header (14, or 18 with a VLAN tag).
    pub l2_len: usize,
    /// Offset of the L4 header.
    pub l4_off: usize,
    pub family: u8,
    pub proto: u8,
    pub sport_be: u16,
    pub dport_be: u16,
    /// TCP flags byte (0 for UDP).
    pub tcp_flags: u8,
    /// The IPv4 header has options (counted, forwarded as usual).
    pub has_options: bool,
    /// The first fragment of a datagram (MF set, offset 0): it carries the ports, its
    /// followers do not (see `fragments`).
    pub is_fragment: bool,
    /// DF is set (IPIP copies it to the outer header).
    pub dont_fragment: bool,
    /// IP total length (host order), for FIB MTU checks.
    pub ip_len: u16,
    pub tos: u8,
    pub ttl: u8,
    /// Frame length, for byte counters.
    pub frame_len: u64,
}

/// An ICMP error (destination unreachable, time exceeded) that quotes the start of a
/// TCP or UDP packet: enough to find the flow it is about.
pub struct IcmpError {
    /// The ICMP packet's own IP header (`proto` ICMP, no ports).
    pub outer: Packet,
    /// Offset of the quoted IP header (the ICMP header is the 8 bytes before it).
    pub quoted_off: usize,
    /// Offset of the quoted TCP/UDP header.
    pub quoted_l4_off: usize,
    /// The quoted packet as its sender sent it.
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub sport_be: u16,
    pub dport_be: u16,
    pub proto: u8,
}

/// Outcome of parsing when there is nothing to balance.
pub enum NotParsed {
    /// Not IPv4 TCP/UDP: hand to the kernel untouched.
    Other,
    /// A later fragment (offset > 0, no L4 header): handled by `fragments`.
    LaterFragment,
    /// Shorter than an Ethernet and an IPv4 header.
    Truncated,
    /// An IPv4 TCP/UDP packet whose headers contradict each other or the frame.
    Malformed,
    /// Not sent to this interface's own unicast MAC.
    OtherMac,
    /// Tagged with a VLAN the director does not balance.
    Vlan,
    /// ICMP: possibly an error about a flow of ours ([`icmp_error`] reads it; kept
    /// out of this enum, so the TCP/UDP path's result stays small). ICMPv6 for IPv6.
    Icmp,
    /// IPv6, sent to this interface (and its VLAN balanced): the IPv6 balancer's
    /// (`director_v6`).
    Ipv6,
    /// IPv6 with more extension headers before TCP/UDP than the data path skips.
    ExtHeaders,
}

impl NotParsed {
    /// The counter of a frame that is not balanced for this reason.
    pub fn stat(&self) -> Stat {
        match self {
            NotParsed::Other | NotParsed::Icmp => Stat::PassOtherProto,
            NotParsed::LaterFragment => Stat::PassFragment,
            NotParsed::Truncated => Stat::PassTruncated,
            NotParsed::Malformed => Stat::DropMalformed,
            NotParsed::OtherMac => Stat::PassOtherMac,
            NotParsed::Vlan => Stat::PassVlan,
            NotParsed::Ipv6 => Stat::PassIpv6Unloaded,
            NotParsed::ExtHeaders => Stat::PassIpv6ExtHeaders,
        }
    }
}

/// A TCP or UDP packet over IPv4 sent to this interface, or why the frame is not one.
#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Result<Packet, NotParsed> {
    let l2_len = parse_l2(ctx)?;
    let mut pkt = parse_ipv4(ctx, l2_len)?;
    if pkt.proto == PROTO_ICMP {
        return Err(NotParsed::Icmp);
    }
    parse_l4(ctx, &mut pkt)?;
    Ok(pkt)
}

/// An ICMP error quoting a TCP/UDP packet, for a frame [`parse`] called `Icmp`.
#[inline(always)]
pub fn icmp_error(ctx: &XdpContext) -> Option<IcmpError> {
    let l2_len = parse_l2(ctx).ok()?;
    let outer = parse_ipv4(ctx, l2_len).ok()?;
    if outer.proto != PROTO_ICMP || outer.is_fragment {
        return None;
    }
    parse_icmp_error(ctx, outer)
}

/// The length of the L2 header of an IPv4 frame the director balances; an IPv6 one it
/// would balance is `Ipv6`.
#[inline(always)]
pub fn parse_l2(ctx: &XdpContext) -> Result<usize, NotParsed> {
    let (l2_len, ether_type) = parse_l2_any(ctx)?;
    if ether_type != ETH_P_IP {
        return Err(NotParsed::Ipv6);
    }
    Ok(l2_len)
}

/// The length of the L2 header of an IPv6 frame the director balances.
#[inline(always)]
pub fn parse_l2_v6(ctx: &XdpContext) -> Result<usize, NotParsed> {
    let (l2_len, ether_type) = parse_l2_any(ctx)?;
    if ether_type != ETH_P_IPV6 {
        return Err(NotParsed::Other);
    }
    Ok(l2_len)
}

/// The L2 header's length and the ethertype (IPv4 or IPv6) of a frame the director
/// balances: sent to this interface's own MAC, untagged or in a balanced VLAN.
#[inline(always)]
fn parse_l2_any(ctx: &XdpContext) -> Result<(usize, u16), NotParsed> {
    let eth: &EthHdr = packet::header(ctx, 0).map_err(|_| NotParsed::Truncated)?;
    let mut ether_type = u16::from_be(eth.ether_type);
    let mut l2_len = EthHdr::LEN;
    if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        // The tag control (priority and VLAN id) and the inner ethertype.
        let tag: [u8; VLAN_HLEN] =
            *packet::header(ctx, EthHdr::LEN).map_err(|_| NotParsed::Truncated)?;
        ether_type = u16::from_be_bytes([tag[2], tag[3]]);
        if (ether_type == ETH_P_IP || ether_type == ETH_P_IPV6)
            && !ingress::vlan_balanced(u16::from_be_bytes([tag[0], tag[1]]))
        {
            return Err(NotParsed::Vlan);
        }
        l2_len += VLAN_HLEN;
    }
    if ether_type != ETH_P_IP && ether_type != ETH_P_IPV6 {
        return Err(NotParsed::Other);
    }
    // SAFETY: the destination MAC is the frame's first bytes (an even offset).
    if !ingress::sent_to_us(ctx, unsafe { halves::mac(&eth.dst_addr) }) {
        return Err(NotParsed::OtherMac);
    }
    Ok((l2_len, ether_type))
}

/// Extension headers skipped on the way to TCP/UDP; a packet with more is the kernel's.
pub const IPV6_MAX_EXT_HEADERS: usize = 4;
/// Offsets into an IPv6 packet are masked with this: the verifier needs a bound, and
/// four extension headers of at most 2 KiB each behind the headers stay below it.
pub const IPV6_OFF_MASK: usize = 0x3fff;

/// `v` as the verifier cannot know it: stored into a per-CPU map value and read back.
/// The offsets of the chains of extension headers differ (none, one of 8 bytes, one of
/// any length...); each would have the programs behind the parser explored once more,
/// past the verifier's limit. Read back, all of them are one unknown number, bounded
/// by the caller's mask.
#[inline(always)]
fn opaque(v: usize) -> usize {
    match PARSE6.get_ptr_mut(0) {
        Some(p) => {
            // SAFETY: a per-CPU map value, valid while the program runs; only this
            // CPU's programs touch it, one at a time. Volatile: the compiler must not
            // forward the stored value to the load.
            unsafe {
                core::ptr::write_volatile(p, v as u32);
                core::ptr::read_volatile(p) as usize
            }
        }
        None => v,
    }
}

/// A TCP or UDP packet over IPv6 sent to this interface, or why the frame is not one.
#[inline(always)]
pub fn parse6(ctx: &XdpContext) -> Result<Packet, NotParsed> {
    let l2_len = parse_l2_v6(ctx)?;
    let mut pkt = parse_ipv6(ctx, l2_len)?;
    parse_l4(ctx, &mut pkt)?;
    Ok(pkt)
}

/// A TCP or UDP packet over IPv4 or IPv6 sent to this interface (the forwarding
/// program of IPv6 reals serves IPv4 clients of 4in6 tunnels too).
#[inline(always)]
pub fn parse_any(ctx: &XdpContext) -> Result<Packet, NotParsed> {
    let (l2_len, ether_type) = parse_l2_any(ctx)?;
    let mut pkt = if ether_type == ETH_P_IP {
        let pkt = parse_ipv4(ctx, l2_len)?;
        if pkt.proto == PROTO_ICMP {
            return Err(NotParsed::Icmp);
        }
        pkt
    } else {
        parse_ipv6(ctx, l2_len)?
    };
    parse_l4(ctx, &mut pkt)?;
    Ok(pkt)
}

/// The IP header (either family) of a packet another program handed over to be
/// tunnelled as it is: an ICMP error or a later fragment, which has no ports of its own
/// (they stay zero, as for IPv4's tunnels of such packets). `proto` and `is_fragment`
/// are what the header says, so the tunnel never takes an inner checksum from an L4
/// header the packet may not start with.
#[inline(always)]
pub fn whole(ctx: &XdpContext) -> Option<Packet> {
    let (l2_len, ether_type) = parse_l2_any(ctx).ok()?;
    let frame_len = packet::len(ctx);
    // No ports here: zeros the compiler cannot merge into a memset call.
    let zero = opaque_zero();
    if ether_type == ETH_P_IP {
        let ip: &Ipv4Hdr = packet::header(ctx, l2_len).ok()?;
        let ihl = ip_hlen(ip.vihl);
        let ip_len = u16::from_be_bytes(ip.tot_len);
        if ip_version(ip.vihl) != 4
            || ihl < Ipv4Hdr::LEN
            || (ip_len as usize) < ihl
            || l2_len + ip_len as usize > frame_len
        {
            return None;
        }
        let frags = u16::from_be_bytes(ip.frags);
        return Some(Packet {
            l2_len,
            l4_off: l2_len + (ihl & IPV4_HLEN_MASK),
            family: FAMILY_V4,
            proto: ip.proto,
            src: v4_to_16(ip.src_addr),
            dst: v4_to_16(ip.dst_addr),
            sport_be: zero,
            dport_be: zero,
            tcp_flags: zero as u8,
            has_options: ihl > Ipv4Hdr::LEN,
            is_fragment: frags & (IP_MF | IP_OFFSET_MASK) != 0,
            dont_fragment: frags & IP_DF != 0,
            ip_len,
            tos: ip.tos,
            ttl: ip.ttl,
            frame_len: frame_len as u64,
        });
    }
    let ip: &[u8; IPV6_HLEN] = packet::header(ctx, l2_len).ok()?;
    let end = l2_len
        + IPV6_HLEN
        + u16::from_be_bytes([ip[IP6_PAYLOAD_LEN], ip[IP6_PAYLOAD_LEN + 1]]) as usize;
    if ip[0] >> 4 != 6 || end > frame_len {
        return None;
    }
    let (tclass, hop_limit, next) = ((ip[0] << 4) | (ip[1] >> 4), ip[IP6_HOP_LIMIT], ip[IP6_NEXT]);
    let src = addr6(ctx, l2_len + IP6_SRC).ok()?;
    let dst = addr6(ctx, l2_len + IP6_DST).ok()?;
    Some(Packet {
        l2_len,
        l4_off: l2_len + IPV6_HLEN,
        family: FAMILY_V6,
        // The first next header: never TCP or UDP for what is handed over whole.
        proto: next,
        src,
        dst,
        sport_be: zero,
        dport_be: zero,
        tcp_flags: zero as u8,
        has_options: false,
        is_fragment: next == IP6_FRAGMENT,
        dont_fragment: true,
        ip_len: (end - l2_len) as u16,
        tos: tclass,
        ttl: hop_limit,
        frame_len: frame_len as u64,
    })
}

/// The IPv6 address at `off` in the frame, built in two registers from eight 16-bit
/// loads (an address in the packet is only 2-aligned): copied as an array, it went
/// through the stack byte by byte, several times over, on every IPv6 packet.
#[inline(always)]
pub fn addr6(ctx: &XdpContext, off: usize) -> Result<[u8; 16], NotParsed> {
    let a: &[u16; 8] = packet::header(ctx, off).map_err(|_| NotParsed::Truncated)?;
    // SAFETY: `packet::header` checked the frame holds the eight halfwords, 2-aligned
    // as a [u16; 8] needs. Volatile: each stays one load, not merged into a byte copy.
    let h = |i: usize| unsafe { core::ptr::read_volatile(&a[i]) } as u64;
    let words = [
        h(0) | h(1) << 16 | h(2) << 32 | h(3) << 48,
        h(4) | h(5) << 16 | h(6) << 32 | h(7) << 48,
    ];
    // SAFETY: [u64; 2] and [u8; 16] have the same size and every bit pattern is valid;
    // on little-endian BPF the words hold the bytes in the packet's order.
    Ok(unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>(words) })
}

/// The IPv6 header and the extension headers before TCP/UDP, checked against the
/// frame.
#[inline(always)]
fn parse_ipv6(ctx: &XdpContext, l2_len: usize) -> Result<Packet, NotParsed> {
    let ip: &[u8; IPV6_HLEN] = packet::header(ctx, l2_len).map_err(|_| NotParsed::Truncated)?;
    let payload_len = u16::from_be_bytes([ip[IP6_PAYLOAD_LEN], ip[IP6_PAYLOAD_LEN + 1]]);
    let frame_len = packet::len(ctx);
    let end = l2_len + IPV6_HLEN + payload_len as usize;
    // A jumbogram (payload length 0, RFC 2675) does not fit an Ethernet frame: it falls
    // under "shorter than the headers say" with the rest.
    if ip[0] >> 4 != 6 || end > frame_len {
        return Err(NotParsed::Malformed);
    }
    let tclass = (ip[0] << 4) | (ip[1] >> 4);
    let hop_limit = ip[IP6_HOP_LIMIT];
    let mut next = ip[IP6_NEXT];
    let src = addr6(ctx, l2_len + IP6_SRC)?;
    let dst = addr6(ctx, l2_len + IP6_DST)?;
    let mut off = l2_len + IPV6_HLEN;
    let mut first_fragment = false;
    // A constant trip count: the verifier walks each header's step once.
    for _ in 0..IPV6_MAX_EXT_HEADERS {
        if next == PROTO_TCP || next == PROTO_UDP || next == PROTO_ICMPV6 {
            break;
        }
        let at = off & IPV6_OFF_MASK;
        if next == IP6_FRAGMENT {
            // Next header, reserved, offset and flags; the identification follows.
            let h: &[u8; 4] = packet::header(ctx, at).map_err(|_| NotParsed::Malformed)?;
            let frag = u16::from_be_bytes([h[2], h[3]]);
            if frag & IP6_FRAG_OFFSET != 0 {
                return Err(NotParsed::LaterFragment);
            }
            first_fragment = frag & IP6_FRAG_MORE != 0;
            next = h[0];
            off = at + 8;
        } else if next == IP6_HOPOPTS || next == IP6_ROUTING || next == IP6_DSTOPTS {
            // Next header, and the length in 8-byte units after the first eight.
            let h: &[u8; 2] = packet::header(ctx, at).map_err(|_| NotParsed::Malformed)?;
            next = h[0];
            off = at + (h[1] as usize + 1) * 8;
        } else {
            return Err(NotParsed::Other);
        }
        if off > end {
            return Err(NotParsed::Malformed);
        }
    }
    if next == PROTO_ICMPV6 {
        return Err(NotParsed::Icmp);
    }
    if next != PROTO_TCP && next != PROTO_UDP {
        return Err(
            if next == IP6_HOPOPTS
                || next == IP6_ROUTING
                || next == IP6_DSTOPTS
                || next == IP6_FRAGMENT
            {
                NotParsed::ExtHeaders
            } else {
                NotParsed::Other
            },
        );
    }
    let l4_off = opaque(off) & IPV6_OFF_MASK;
    Ok(Packet {
        l2_len,
        l4_off,
        family: FAMILY_V6,
        proto: next,
        src,
        dst,
        sport_be: 0,
        dport_be: 0,
        tcp_flags: 0,
        has_options: false,
        is_fragment: first_fragment,
        // IPv6 routers never fragment: a packet that does not fit is refused with a
        // Packet Too Big, as IPv4's DF asks.
        dont_fragment: true,
        ip_len: (end - l2_len) as u16,
        tos: tclass,
        ttl: hop_limit,
        frame_len: frame_len as u64,
    })
}

/// The IPv4 header of a TCP, UDP or ICMP packet, checked against the frame.
#[inline(always)]
fn parse_ipv4(ctx: &XdpContext, l2_len: usize) -> Result<Packet, NotParsed> {
    let ip: &Ipv4Hdr = packet::header(ctx, l2_len).map_err(|_| NotParsed::Truncated)?;
    let proto = ip.proto;
    if proto != PROTO_TCP && proto != PROTO_UDP && proto != PROTO_ICMP {
        return Err(NotParsed::Other);
    }
    let ihl = ip_hlen(ip.vihl);
    // SAFETY: the IP header starts at an even offset (behind 14 or 18 bytes of L2
    // header), and its length field at an even offset in it (so do the fields below).
    let ip_len = unsafe { halves::be16(&ip.tot_len) };
    let frame_len = packet::len(ctx);
    // What the kernel's own input checks refuse; the frame may be longer (Ethernet
    // padding of short packets), never shorter.
    if ip_version(ip.vihl) != 4
        || ihl < Ipv4Hdr::LEN
        || (ip_len as usize) < ihl
        || l2_len + ip_len as usize > frame_len
    {
        return Err(NotParsed::Malformed);
    }
    // SAFETY: as above.
    let frags = unsafe { halves::be16(&ip.frags) };
    if frags & IP_OFFSET_MASK != 0 {
        return Err(NotParsed::LaterFragment);
    }
    // SAFETY: as above.
    let (src, dst) = unsafe { (halves::addr4(&ip.src_addr), halves::addr4(&ip.dst_addr)) };
    Ok(Packet {
        l2_len,
        l4_off: l2_len + (ihl & IPV4_HLEN_MASK),
        family: FAMILY_V4,
        proto,
        src: v4_to_16(src),
        dst: v4_to_16(dst),
        sport_be: 0,
        dport_be: 0,
        tcp_flags: 0,
        has_options: ihl > Ipv4Hdr::LEN,
        is_fragment: frags & IP_MF != 0,
        dont_fragment: frags & IP_DF != 0,
        ip_len,
        tos: ip.tos,
        ttl: ip.ttl,
        frame_len: frame_len as u64,
    })
}

/// Ports and flags of a TCP or UDP header, checked against the IP packet.
#[inline(always)]
fn parse_l4(ctx: &XdpContext, pkt: &mut Packet) -> Result<(), NotParsed> {
    let l4_off = pkt.l4_off;
    // The segment as this packet carries it (of a first fragment: its share).
    let seg_len = (pkt.ip_len as usize + pkt.l2_len).saturating_sub(l4_off);
    if pkt.proto == PROTO_TCP {
        let tcp: &[u8; TCP_HLEN] = packet::header(ctx, l4_off).map_err(|_| NotParsed::Malformed)?;
        let data_off = (tcp[TCP_DOFF] >> 4) as usize * 4;
        if data_off < TCP_HLEN || data_off > seg_len {
            return Err(NotParsed::Malformed);
        }
        // SAFETY: the L4 header starts at an even offset (an even L2 header and an IP
        // header of whole words).
        [pkt.sport_be, pkt.dport_be] = unsafe { halves::ports(tcp) };
        pkt.tcp_flags = tcp[TCP_FLAGS];
    } else {
        // The whole UDP header (its checksum is rewritten by NAT).
        let udp: &[u8; UDP_HLEN] = packet::header(ctx, l4_off).map_err(|_| NotParsed::Malformed)?;
        let udp_len = u16::from_be_bytes([udp[UDP_LEN], udp[UDP_LEN + 1]]) as usize;
        // A first fragment's UDP length is the whole datagram's.
        if udp_len < UDP_HLEN || seg_len < UDP_HLEN || (udp_len > seg_len && !pkt.is_fragment) {
            return Err(NotParsed::Malformed);
        }
        // SAFETY: as for TCP.
        [pkt.sport_be, pkt.dport_be] = unsafe { halves::ports(udp) };
    }
    Ok(())
}

/// The quoted packet of an ICMP destination unreachable or time exceeded, if it is the
/// start of an unfragmented (or first-fragment) TCP/UDP packet.
#[inline(always)]
fn parse_icmp_error(ctx: &XdpContext, outer: Packet) -> Option<IcmpError> {
    let icmp_off = outer.l4_off;
    let [icmp_type, _code] = *packet::header::<[u8; 2]>(ctx, icmp_off).ok()?;
    if icmp_type != ICMP_DEST_UNREACH && icmp_type != ICMP_TIME_EXCEEDED {
        return None;
    }
    let quoted_off = icmp_off + ICMP_HLEN;
    let q: &Ipv4Hdr = packet::header(ctx, quoted_off).ok()?;
    let qihl = ip_hlen(q.vihl);
    if ip_version(q.vihl) != 4 || qihl < Ipv4Hdr::LEN {
        return None;
    }
    if q.proto != PROTO_TCP && q.proto != PROTO_UDP {
        return None;
    }
    if u16::from_be_bytes(q.frags) & IP_OFFSET_MASK != 0 {
        return None;
    }
    let quoted_l4_off = quoted_off + (qihl & IPV4_HLEN_MASK);
    // RFC 792: the quote holds at least the first 8 bytes of the L4 header.
    let [sport_be, dport_be] = *packet::header::<[u16; 2]>(ctx, quoted_l4_off).ok()?;
    Some(IcmpError {
        outer,
        quoted_off,
        quoted_l4_off,
        src: q.src_addr,
        dst: q.dst_addr,
        sport_be,
        dport_be,
        proto: q.proto,
    })
}
