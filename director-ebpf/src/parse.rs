//! Header parsing: the only code that reads headers. Every access is bounds-checked
//! against `data_end` right before it, in a form the verifier accepts.

use aya_ebpf::programs::XdpContext;
use director_common::{
    addr::{FAMILY_V4, PROTO_TCP, PROTO_UDP, v4_to_16},
    stats::Stat,
};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
pub const VLAN_HLEN: usize = 4;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// A pointer to a `T` at `off` bytes into the packet, if the packet is long enough.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, off: usize) -> Result<*mut T, ()> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + core::mem::size_of::<T>() > end {
        return Err(());
    }
    Ok((start + off) as *mut T)
}

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
    /// Frame length, for byte counters.
    pub frame_len: u64,
}

/// Outcome of parsing when there is nothing to balance.
pub enum NotParsed {
    /// Not IPv4 TCP/UDP: hand to the kernel untouched.
    Other,
    /// A later fragment (offset > 0, no L4 header) of TCP/UDP, its IPv4 header at
    /// `l2_len`: handled by `fragments`.
    LaterFragment { l2_len: usize },
    /// Too short for the headers it announces.
    Truncated,
}

impl NotParsed {
    pub fn stat(&self) -> Stat {
        match self {
            NotParsed::Other => Stat::PassOtherProto,
            NotParsed::LaterFragment { .. } => Stat::PassFragment,
            NotParsed::Truncated => Stat::PassTruncated,
        }
    }
}

#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Result<Packet, NotParsed> {
    let eth: *const EthHdr = ptr_at(ctx, 0).map_err(|_| NotParsed::Truncated)?;
    let mut ether_type = u16::from_be(unsafe { (*eth).ether_type });
    let mut l2_len = EthHdr::LEN;
    if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        // The inner ethertype sits in the last two bytes of the tag.
        let inner: *const [u8; 2] =
            ptr_at(ctx, EthHdr::LEN + 2).map_err(|_| NotParsed::Truncated)?;
        ether_type = u16::from_be_bytes(unsafe { *inner });
        l2_len += VLAN_HLEN;
    }
    if ether_type != ETH_P_IP {
        return Err(NotParsed::Other);
    }
    parse_ipv4(ctx, l2_len)
}

#[inline(always)]
fn parse_ipv4(ctx: &XdpContext, l2_len: usize) -> Result<Packet, NotParsed> {
    let ip: *const Ipv4Hdr = ptr_at(ctx, l2_len).map_err(|_| NotParsed::Truncated)?;
    let ip = unsafe { &*ip };
    let proto = ip.proto;
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return Err(NotParsed::Other);
    }
    let ihl = ((ip.vihl & 0x0f) as usize) * 4;
    if ip.vihl >> 4 != 4 || ihl < Ipv4Hdr::LEN {
        return Err(NotParsed::Truncated);
    }
    let frags = u16::from_be_bytes(ip.frags);
    let offset = frags & 0x1fff;
    let more_fragments = frags & 0x2000 != 0;
    if offset != 0 {
        return Err(NotParsed::LaterFragment { l2_len });
    }
    let l4_off = l2_len + (ihl & 0x3c);
    // Source and destination port are the first four bytes of both TCP and UDP.
    let ports: *const [u16; 2] = ptr_at(ctx, l4_off).map_err(|_| NotParsed::Truncated)?;
    let [sport_be, dport_be] = unsafe { *ports };
    let tcp_flags = if proto == PROTO_TCP {
        // TCP flags are byte 13; read bytes 12..14 (2-byte read, see xdp-facts).
        let f: *const [u8; 2] = ptr_at(ctx, l4_off + 12).map_err(|_| NotParsed::Truncated)?;
        unsafe { (*f)[1] }
    } else {
        // The whole UDP header (its checksum is rewritten by NAT).
        ptr_at::<[u8; 8]>(ctx, l4_off).map_err(|_| NotParsed::Truncated)?;
        0
    };
    Ok(Packet {
        l2_len,
        l4_off,
        family: FAMILY_V4,
        proto,
        src: v4_to_16(ip.src_addr),
        dst: v4_to_16(ip.dst_addr),
        sport_be,
        dport_be,
        tcp_flags,
        has_options: ihl > Ipv4Hdr::LEN,
        is_fragment: more_fragments,
        dont_fragment: frags & 0x4000 != 0,
        ip_len: u16::from_be_bytes(ip.tot_len),
        tos: ip.tos,
        frame_len: (ctx.data_end() - ctx.data()) as u64,
    })
}
