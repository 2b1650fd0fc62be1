//! ICMPv6 errors about a flow of ours go where the flow goes, as IPv4's ICMP errors do
//! (`icmp::route_error`): the quoted packet is a reply the flow's real sent (source
//! VIP:port) and the error goes to that real by its method; or, for NAT66, the quoted
//! packet is one the real received, and the error goes to the client with the virtual
//! address put back. The ICMPv6 checksum covers the pseudo-header, so a rewritten outer
//! address is folded into it as well as the quote's.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use director_common::{
    addr::{FAMILY_V6, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP},
    conn_state::alive,
    conntable::{CONN_F_REPLY, Conn6, FlowKey6},
    real::{Method, Real},
    stats::Stat,
};
use network_types::ip::Ipv6Hdr;

use crate::{
    addr::{addr_words, opaque_zero, put_halves},
    balancer6::hand_over,
    conntable, csum,
    forward::{
        FibError,
        dr::forward6 as dr_forward6,
        ip6::{NextHop6, client_hop6, real_hop6},
        transmit,
    },
    headers::{
        ICMP_CHECK, ICMP_HLEN, IP6_DST, IP6_DSTOPTS, IP6_HOP_LIMIT, IP6_HOPOPTS, IP6_ROUTING,
        IP6_SRC,
    },
    maps::SETTINGS,
    packet,
    parse::{IPV6_MAX_EXT_HEADERS, IPV6_OFF_MASK, Packet, parse_l2_v6},
    scheduler::real_of,
    stats::count,
};

/// ICMPv6 error types (RFC 4443): destination unreachable, packet too big, time
/// exceeded, parameter problem. Informational messages are 128 and above.
const ICMP6_ERROR_LAST: u8 = 4;

/// An ICMPv6 error that quotes the start of a TCP or UDP packet.
struct Icmp6Error {
    /// The ICMPv6 packet's own IPv6 header (`proto` 58, no ports).
    outer: Packet,
    /// Offset of the ICMPv6 header.
    icmp_off: usize,
    /// Offset of the quoted IPv6 header.
    quoted_off: usize,
    /// The quoted packet's destination, as words (its source is the outer
    /// destination, or this is no error about a flow of ours).
    q_dst: [u32; 4],
    /// The quoted packet's ports and protocol, as its sender sent them.
    sport_be: u16,
    dport_be: u16,
    proto: u8,
}

/// An address as four words (by value: no alignment needed).
#[inline(always)]
fn words_of(a: [u8; 16]) -> [u32; 4] {
    // SAFETY: [u8; 16] and [u32; 4] have the same size and every bit pattern is valid.
    unsafe { core::mem::transmute::<[u8; 16], [u32; 4]>(a) }
}

/// The ICMPv6 error in the frame, if it is one quoting a TCP/UDP packet (its IPv6
/// header directly followed by TCP or UDP, as the director's flows are).
#[inline(always)]
fn icmp6_error(ctx: &XdpContext) -> Option<Icmp6Error> {
    let l2_len = parse_l2_v6(ctx).ok()?;
    let ip: &Ipv6Hdr = packet::header(ctx, l2_len).ok()?;
    let ip_len = Ipv6Hdr::LEN + u16::from_be_bytes(ip.payload_len) as usize;
    let frame_len = packet::len(ctx);
    if ip.version() != 6 || l2_len + ip_len > frame_len {
        return None;
    }
    let (ttl, tclass) = (ip.hop_limit, (ip.vcf[0] << 4) | (ip.vcf[1] >> 4));
    let mut next = ip.next_hdr;
    let mut off = l2_len + Ipv6Hdr::LEN;
    // A constant trip count: the verifier walks each step once.
    for _ in 0..IPV6_MAX_EXT_HEADERS {
        if next != IP6_HOPOPTS && next != IP6_ROUTING && next != IP6_DSTOPTS {
            break;
        }
        let h: &[u8; 2] = packet::header(ctx, off & IPV6_OFF_MASK).ok()?;
        next = h[0];
        off = (off & IPV6_OFF_MASK) + (h[1] as usize + 1) * 8;
    }
    if next != PROTO_ICMPV6 {
        return None;
    }
    let icmp_off = off & IPV6_OFF_MASK;
    let [icmp_type, _code] = *packet::header::<[u8; 2]>(ctx, icmp_off).ok()?;
    if icmp_type == 0 || icmp_type > ICMP6_ERROR_LAST {
        return None;
    }
    let quoted_off = icmp_off + ICMP_HLEN;
    let q: &Ipv6Hdr = packet::header(ctx, quoted_off).ok()?;
    let proto = q.next_hdr;
    if q.version() != 6 || (proto != PROTO_TCP && proto != PROTO_UDP) {
        return None;
    }
    // Read through the headers already checked: a new bounds check at an offset LLVM
    // can prove covered is dropped, and the verifier would not see it.
    let (q_src, q_dst) = (words_of(q.src_addr), words_of(q.dst_addr));
    let [sport_be, dport_be] = *packet::header::<[u16; 2]>(ctx, quoted_off + Ipv6Hdr::LEN).ok()?;
    let (src, dst) = (ip.src_addr, ip.dst_addr);
    // An error goes to the source of the packet it quotes: anything else is not about
    // a flow of ours.
    let d = words_of(dst);
    if (d[0] ^ q_src[0]) | (d[1] ^ q_src[1]) | (d[2] ^ q_src[2]) | (d[3] ^ q_src[3]) != 0 {
        return None;
    }
    let zero = opaque_zero();
    Some(Icmp6Error {
        q_dst,
        outer: Packet {
            src,
            dst,
            l2_len,
            l4_off: icmp_off,
            family: FAMILY_V6,
            proto: PROTO_ICMPV6,
            // No ports here: zeros the compiler cannot merge into a memset call.
            sport_be: zero,
            dport_be: zero,
            tcp_flags: zero as u8,
            has_options: false,
            is_fragment: false,
            dont_fragment: true,
            ip_len: ip_len as u16,
            tos: tclass,
            ttl,
            frame_len: frame_len as u64,
        },
        icmp_off,
        quoted_off,
        sport_be,
        dport_be,
        proto,
    })
}

/// The `JUMP_ICMP6` program: an ICMPv6 message the IPv6 balancer handed over. An error
/// about a flow of ours goes where the flow goes; every other message (neighbour
/// discovery, echo, MLD, errors about anything else) goes to the kernel untouched.
#[inline(always)]
pub fn route_error(ctx: &XdpContext, now: u64) -> (u32, Stat) {
    let pass = (xdp_action::XDP_PASS, Stat::PassOtherProto);
    let Some(e) = icmp6_error(ctx) else {
        return pass;
    };
    let e = &e;
    let Some(settings) = SETTINGS.get(0) else {
        return pass;
    };
    // The flow's own direction is the quoted packet's reverse.
    let key = FlowKey6 {
        // SAFETY: [u32; 4] and [u8; 16] have the same size and every bit pattern is
        // valid.
        src: unsafe { core::mem::transmute::<[u32; 4], [u8; 16]>(e.q_dst) },
        dst: e.outer.dst,
        sport_be: e.dport_be,
        dport_be: e.sport_be,
        proto: e.proto,
        _pad0: 0,
        _pad1: 0,
    };
    let found = conntable::find(&key, settings.conn_seed);
    let Some(conn) = found.entry(&key) else {
        return pass;
    };
    if !alive(conn.state, conn.last_seen_ns, now, settings) {
        return pass;
    }
    let Some(real) = real_of(conn.real, conn.service) else {
        return pass;
    };
    if conn.flags & CONN_F_REPLY != 0 {
        return to_client(ctx, e, &conn, real, now);
    }
    let sent = match Method::from_u8(real.method) {
        Some(Method::Route) => dr_forward6(ctx, &e.outer, conn.real, real, now),
        // A tunnel's encapsulation with the lookup above needs more stack than one
        // program has: the forwarding program tunnels the error as it is (and counts
        // it).
        Some(Method::Tunnel) => return hand_over(ctx, conn.real, conn.service),
        Some(Method::Masq) => to_real(ctx, e, conn.real, real, now),
        None => (xdp_action::XDP_DROP, Stat::DropBadReal),
    };
    if matches!(sent.1, Stat::Tx | Stat::Redirect) {
        count(Stat::IcmpToReal);
    }
    sent
}

/// NAT66: an error about a reply as the client got it (from VIP:vport) goes to the real
/// with the real's address as outer destination and as the quote's source, and its port
/// as the quote's source port.
#[inline(always)]
fn to_real(ctx: &XdpContext, e: &Icmp6Error, real_id: u32, real: &Real, now: u64) -> (u32, Stat) {
    let pkt = &e.outer;
    let port = if real.port_be != 0 {
        real.port_be
    } else {
        e.sport_be
    };
    // SAFETY: [u32; 4] and [u8; 16] have the same size and every bit pattern is valid.
    let addr = unsafe { core::mem::transmute::<[u32; 4], [u8; 16]>(addr_words(&real.addr)) };
    let hop = real_hop6(
        ctx,
        real_id,
        &addr,
        Some(&pkt.src),
        PROTO_ICMPV6,
        pkt.ip_len,
        now,
    );
    // The quote's source and the outer destination were both the VIP.
    if rewrite(ctx, e, Quoted::Source, &pkt.dst, &addr, port, Some(&addr)).is_err() {
        return (xdp_action::XDP_DROP, Stat::DropMalformed);
    }
    send(ctx, hop, None)
}

/// NAT66: an error about a packet the real received (quoting real:port), from the real
/// or a router behind it, goes to the client with VIP:vport put back in the quote, and
/// the VIP as outer source when the real sent it itself (a router's own address
/// stays); one hop spent.
#[inline(always)]
fn to_client(ctx: &XdpContext, e: &Icmp6Error, conn: &Conn6, real: &Real, now: u64) -> (u32, Stat) {
    let pkt = &e.outer;
    // Reverse-path check as for every reply entry: it came in where the route to the
    // real (the quote's destination, as the reply entry's key says) leaves.
    if let Ok(hop) = real_hop6(
        ctx,
        conn.real,
        &real.addr,
        Some(&pkt.dst),
        PROTO_ICMPV6,
        0,
        now,
    ) && hop.link.ifindex != packet::ingress_ifindex(ctx)
    {
        return (xdp_action::XDP_DROP, Stat::DropSpoofedReply);
    }
    if pkt.ttl <= 1 {
        return (xdp_action::XDP_PASS, Stat::PassTtlExceeded);
    }
    let vaddr = conn.vaddr;
    let hop = client_hop6(ctx, &vaddr, &pkt.dst, PROTO_ICMPV6, pkt.ip_len, now);
    let from_real = addr_words(&pkt.src) == addr_words(&real.addr);
    let outer_src = if from_real { Some(&vaddr) } else { None };
    if rewrite(
        ctx,
        e,
        Quoted::Destination,
        &real.addr,
        &vaddr,
        conn.vport_be,
        outer_src,
    )
    .is_err()
    {
        return (xdp_action::XDP_DROP, Stat::DropMalformed);
    }
    let sent = send(ctx, hop, Some((pkt.l2_len, pkt.ttl - 1)));
    if matches!(sent.1, Stat::Tx | Stat::Redirect) {
        count(Stat::IcmpFromReal);
    }
    sent
}

/// Which end of the quoted packet is rewritten.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Quoted {
    Source,
    Destination,
}

/// Rewrite the quote's source or destination address (`old`) and port to `addr`/`port_be`, and
/// with `outer` the outer address of the same side's counterpart (the outer destination
/// when the quote's source changes, the outer source when its destination does), with
/// the ICMPv6 checksum updated for all of it (the quote is covered as data, the outer
/// addresses through the pseudo-header). The quoted TCP/UDP checksum is left as it is,
/// as for IPv4.
#[inline(always)]
fn rewrite(
    ctx: &XdpContext,
    e: &Icmp6Error,
    side: Quoted,
    old: &[u8; 16],
    addr: &[u8; 16],
    port_be: u16,
    outer: Option<&[u8; 16]>,
) -> Result<(), ()> {
    let (q_at, port_at, old_port, outer_at, old_outer) = match side {
        Quoted::Source => (IP6_SRC, 0, e.sport_be, IP6_DST, &e.outer.dst),
        Quoted::Destination => (IP6_DST, 2, e.dport_be, IP6_SRC, &e.outer.src),
    };
    let check = packet::ptr::<[u8; 2]>(ctx, e.icmp_off + ICMP_CHECK)?;
    // SAFETY: `packet::ptr` checked the frame holds the two bytes; no lent header
    // covers them.
    let mut c = u16::from_ne_bytes(unsafe { *check });
    c = csum::replace16_2(c, old, addr, old_port, port_be);
    if let Some(new_outer) = outer {
        c = csum::replace16_2(c, old_outer, new_outer, 0, 0);
        set_addr_at(ctx, e.outer.l2_len + outer_at, new_outer)?;
    }
    set_addr_at(ctx, e.quoted_off + q_at, addr)?;
    let port = packet::ptr::<[u8; 2]>(ctx, e.quoted_off + Ipv6Hdr::LEN + port_at)?;
    let check = packet::ptr::<[u8; 2]>(ctx, e.icmp_off + ICMP_CHECK)?;
    // SAFETY: as above, for the port and the checksum.
    unsafe {
        *port = port_be.to_ne_bytes();
        *check = c.to_ne_bytes();
    }
    Ok(())
}

/// Write `addr` at the even offset `off` of the frame.
#[inline(always)]
fn set_addr_at(ctx: &XdpContext, off: usize, addr: &[u8; 16]) -> Result<(), ()> {
    let p = packet::ptr::<[u16; 8]>(ctx, off)?;
    // SAFETY: `packet::ptr` checked the frame holds the 16 bytes (half-word aligned at
    // an even offset); nothing else refers to them.
    unsafe { put_halves(p.cast(), addr) };
    Ok(())
}

/// Send the rewritten error on (with `hop_limit`, the IPv6 header at its L2 length gets
/// that hop limit when it leaves from here), or let the kernel have it when the next hop's neighbour is not
/// resolved; an error too big for the next hop is dropped (never an error about an
/// error).
#[inline(always)]
fn send(
    ctx: &XdpContext,
    hop: Result<NextHop6, FibError>,
    hop_limit: Option<(usize, u8)>,
) -> (u32, Stat) {
    match hop {
        Ok(hop) => {
            if let Some((l2_len, h)) = hop_limit {
                let Ok(ip) = packet::ptr::<[u8; Ipv6Hdr::LEN]>(ctx, l2_len) else {
                    return (xdp_action::XDP_DROP, Stat::DropMalformed);
                };
                // SAFETY: `packet::ptr` checked the frame holds the IPv6 header (a byte
                // array: no alignment).
                unsafe { (*ip)[IP6_HOP_LIMIT] = h };
            }
            transmit(ctx, &hop.link)
        }
        Err(FibError::NoNeigh) => (xdp_action::XDP_PASS, Stat::PassNoNeigh),
        Err(FibError::TooBig(_)) => (xdp_action::XDP_DROP, Stat::DropTooBig),
        Err(FibError::Failed) => (xdp_action::XDP_DROP, Stat::DropFib),
    }
}
