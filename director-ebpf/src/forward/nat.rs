//! NAT (masquerading): the client's packets get the real's address and port as
//! destination; the real's replies, which route back through us, get the VIP and virtual
//! port back as source. Checksums are updated incrementally (RFC 1624).

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use director_common::{
    addr::{PROTO_TCP, v4_of_16},
    conntable::Conn,
    real::Real,
    stats::Stat,
};

use network_types::ip::Ipv4Hdr;

use super::{FibError, NextHop, Source, ToReal, client_hop, hop_for, real_hop, transmit};
use crate::{
    csum,
    headers::{ICMP_CHECK, ICMP_HLEN, IP_CHECK, IP_DST, IP_SRC, IP_TTL, TCP_CHECK, UDP_CHECK},
    icmp, packet,
    parse::{IcmpError, Packet},
    stats::{Dir, account, count},
};

/// The fixed IPv4 header, which holds every field a rewrite changes (options, if any,
/// follow and are not touched).
type FixedIpv4 = [u8; Ipv4Hdr::LEN];

/// Which of a packet's two endpoints a rewrite replaces.
#[derive(Clone, Copy)]
pub enum Side {
    Source,
    Destination,
}

/// Replace the source or destination address and port, fixing both checksums. With
/// `hop`, spend one hop of the TTL, as a router does (a reply the director sends on
/// itself; one it passes to the kernel is routed, and decremented, there).
#[inline(always)]
fn rewrite(
    ctx: &XdpContext,
    pkt: &Packet,
    side: Side,
    addr: [u8; 4],
    port_be: u16,
    hop: bool,
) -> Result<(), ()> {
    if pkt.proto == PROTO_TCP {
        rewrite_with::<{ TCP_CHECK + 2 }, TCP_CHECK>(ctx, pkt, side, addr, port_be, true, hop)
    } else {
        rewrite_with::<{ UDP_CHECK + 2 }, UDP_CHECK>(ctx, pkt, side, addr, port_be, false, hop)
    }
}

/// The IPv4 header's TTL and protocol word, as it sits in the packet, after one hop.
#[inline(always)]
fn ttl_word(pkt: &Packet, ttl: u8) -> u16 {
    u16::from_ne_bytes([ttl, pkt.proto])
}

/// [`rewrite`] for an L4 header whose checksum sits at `CHECK` (`L4` bytes cover it):
/// one bounds check per header, every field at a constant offset inside it.
#[inline(always)]
fn rewrite_with<const L4: usize, const CHECK: usize>(
    ctx: &XdpContext,
    pkt: &Packet,
    side: Side,
    addr: [u8; 4],
    port_be: u16,
    is_tcp: bool,
    hop: bool,
) -> Result<(), ()> {
    // The old address and port are the parsed ones: no second read of the packet.
    let (addr_off, port_off, old_addr, old_port) = match side {
        Side::Source => (IP_SRC, 0, v4_of_16(&pkt.src), pkt.sport_be),
        Side::Destination => (IP_DST, 2, v4_of_16(&pkt.dst), pkt.dport_be),
    };
    let ip = packet::ptr::<FixedIpv4>(ctx, pkt.l2_len)? as *mut u8;
    let l4 = packet::ptr::<[u8; L4]>(ctx, pkt.l4_off)? as *mut u8;
    let (old, new) = (u32::from_ne_bytes(old_addr), u32::from_ne_bytes(addr));
    // SAFETY: `packet::ptr` checked that the frame holds both headers; every offset
    // below plus its size is within the header it is taken from (`CHECK + 2 <= L4`
    // bytes of the L4 header), and nothing else refers to these bytes meanwhile. Every
    // field but the TTL is read and written as half-words: both headers start at even
    // offsets of the frame (`packet::Header`), and the fields at even offsets in them
    // (as byte arrays they took a byte load or store each).
    unsafe {
        let ip_addr = ip.add(addr_off) as *mut [u16; 2];
        let ip_check = ip.add(IP_CHECK) as *mut u16;
        let l4_port = l4.add(port_off) as *mut u16;
        let l4_check = l4.add(CHECK) as *mut u16;
        let mut c = csum::replace4(*ip_check, old, new);
        if hop {
            let ttl = pkt.ttl.wrapping_sub(1);
            c = csum::replace2(c, ttl_word(pkt, pkt.ttl), ttl_word(pkt, ttl));
            *ip.add(IP_TTL) = ttl;
        }
        *ip_check = c;
        let c = *l4_check;
        // UDP: checksum 0 means "none" and stays so.
        if is_tcp || c != 0 {
            let mut c = csum::replace4_2(c, old, new, old_port, port_be);
            if !is_tcp && c == 0 {
                c = 0xffff;
            }
            *l4_check = c;
        }
        // The address's two half-words in packet order (`new` is its bytes as a
        // native word).
        *ip_addr = [new as u16, (new >> 16) as u16];
        *l4_port = port_be;
    }
    Ok(())
}

/// Forward a client's packet to a NAT real: the real's address and port as destination.
#[inline(always)]
pub fn forward(ctx: &XdpContext, pkt: &Packet, real_id: u32, real: &Real, now: u64) -> (u32, Stat) {
    let dst = v4_of_16(&real.addr);
    let port = if real.port_be != 0 {
        real.port_be
    } else {
        pkt.dport_be
    };
    let hop = hop_for(ctx, pkt, real_id, dst, now);
    // Too big with DF: the client is told, quoting its packet as it sent it.
    if let Err(FibError::TooBig(mtu)) = hop
        && pkt.dont_fragment
    {
        return icmp::too_big(ctx, pkt, mtu);
    }
    if rewrite(ctx, pkt, Side::Destination, dst, port, false).is_err() {
        return (xdp_action::XDP_DROP, Stat::DropMalformed);
    }
    send(ctx, hop)
}

/// The packet is already rewritten: send it on, or let the kernel forward it when the
/// next hop is not resolved yet (it is no longer addressed to us, so the kernel routes
/// it and resolves the neighbour), or when it is too big without DF (the kernel
/// fragments it).
#[inline(always)]
pub fn send(ctx: &XdpContext, hop: Result<NextHop, FibError>) -> (u32, Stat) {
    match hop {
        Ok(hop) => transmit(ctx, &hop),
        Err(FibError::NoNeigh) => (xdp_action::XDP_PASS, Stat::PassNoNeigh),
        Err(FibError::TooBig(_)) => (xdp_action::XDP_PASS, Stat::PassTooBig),
        Err(FibError::Failed) => (xdp_action::XDP_DROP, Stat::DropFib),
    }
}

/// Real -> client: a packet matching the reply entry of a NAT connection. It is routed
/// traffic: it spends one hop of its TTL, and it must arrive from the real's side, which
/// the caller checked ([`from_real_side`]) before it touched the entry.
#[inline(always)]
pub fn reply(ctx: &XdpContext, pkt: &Packet, conn: &Conn, now: u64) -> (u32, Stat) {
    // The kernel routes it as it came, finds the TTL spent and answers the real with
    // "time exceeded", as a router does; nothing leaves with the real's address.
    if pkt.ttl <= 1 {
        return (xdp_action::XDP_PASS, Stat::PassTtlExceeded);
    }
    let vaddr = conn.vaddr;
    let (service, real) = (conn.service, conn.real);
    let hop = client_hop(
        ctx,
        vaddr,
        v4_of_16(&pkt.dst),
        pkt.proto,
        pkt.tos,
        pkt.ip_len,
        now,
    );
    // Too big with DF: untranslated, the kernel answers the real with "fragmentation
    // needed" (the real is the sender); without DF it fragments the translated packet.
    if let Err(FibError::TooBig(_)) = hop
        && pkt.dont_fragment
    {
        return (xdp_action::XDP_PASS, Stat::PassTooBig);
    }
    if rewrite(ctx, pkt, Side::Source, vaddr, conn.vport_be, hop.is_ok()).is_err() {
        return (xdp_action::XDP_DROP, Stat::DropMalformed);
    }
    account(service, real, Dir::Out, pkt.frame_len, false);
    send(ctx, hop)
}

/// The packet came in on the interface the route to its real leaves by (reverse-path
/// filtering for reply entries: a forged "reply" sent from the client side would
/// otherwise be translated and reflected). The next hop towards the real is cached per
/// CPU, so this is one array lookup; when the route cannot be looked up the packet is
/// given the benefit of the doubt.
#[inline(always)]
pub fn from_real_side(
    ctx: &XdpContext,
    pkt: &Packet,
    real_id: u32,
    real_addr: [u8; 4],
    now: u64,
) -> bool {
    // The reverse path: from the client (the reply's destination) to the real, with no
    // MTU to check.
    let to = ToReal {
        id: real_id,
        addr: real_addr,
        src: Source::Packet(v4_of_16(&pkt.dst)),
        proto: pkt.proto,
        tos: pkt.tos,
        ip_len: 0,
    };
    match real_hop(ctx, &to, now) {
        Ok(hop) => hop.ifindex == packet::ingress_ifindex(ctx),
        Err(_) => true,
    }
}

/// Offsets into an ICMP error and the rewrite of its quoted packet's address and port,
/// with every checksum that covers them: the quoted IP header's, and the ICMP one (which
/// covers the quote). The quoted TCP/UDP checksum is left alone, as IPVS does: the
/// quote is usually cut short of the data it covers, and no receiver checks it.
#[inline(always)]
fn rewrite_quote(
    ctx: &XdpContext,
    e: &IcmpError,
    side: Side,
    addr: [u8; 4],
    port_be: u16,
) -> Result<(), ()> {
    let (addr_off, port_off, old_addr) = match side {
        Side::Source => (IP_SRC, 0, e.src),
        Side::Destination => (IP_DST, 2, e.dst),
    };
    let old_port = match side {
        Side::Source => e.sport_be,
        Side::Destination => e.dport_be,
    };
    let icmp = packet::ptr::<[u8; ICMP_HLEN]>(ctx, e.outer.l4_off)? as *mut u8;
    let q = packet::ptr::<FixedIpv4>(ctx, e.quoted_off)? as *mut u8;
    let ql4 = packet::ptr::<[u8; 4]>(ctx, e.quoted_l4_off)? as *mut u8;
    let (old, new) = (u32::from_ne_bytes(old_addr), u32::from_ne_bytes(addr));
    // SAFETY: `packet::ptr` checked that the frame holds the three headers; every
    // offset plus its size is inside the header it is taken from; the places are byte
    // arrays (no alignment), and nothing else refers to these bytes meanwhile.
    unsafe {
        let q_check = q.add(IP_CHECK) as *mut [u8; 2];
        let old_q_check = u16::from_ne_bytes(*q_check);
        let new_q_check = csum::replace4(old_q_check, old, new);
        let icmp_check = icmp.add(ICMP_CHECK) as *mut [u8; 2];
        let c = csum::replace4_2(u16::from_ne_bytes(*icmp_check), old, new, old_port, port_be);
        *icmp_check = csum::replace2(c, old_q_check, new_q_check).to_ne_bytes();
        *q_check = new_q_check.to_ne_bytes();
        *(q.add(addr_off) as *mut [u8; 4]) = addr;
        *(ql4.add(port_off) as *mut [u8; 2]) = port_be.to_ne_bytes();
    }
    Ok(())
}

/// Replace the outer header's source or destination address (IP checksum fixed), and
/// with `hop` spend one hop of TTL.
#[inline(always)]
pub fn rewrite_outer(
    ctx: &XdpContext,
    pkt: &Packet,
    side: Side,
    addr: [u8; 4],
    hop: bool,
) -> Result<(), ()> {
    let (off, old) = match side {
        Side::Source => (IP_SRC, v4_of_16(&pkt.src)),
        Side::Destination => (IP_DST, v4_of_16(&pkt.dst)),
    };
    let ip = packet::ptr::<FixedIpv4>(ctx, pkt.l2_len)? as *mut u8;
    // SAFETY: `packet::ptr` checked that the frame holds the fixed header; every offset
    // plus its size is inside it; byte arrays (no alignment), nothing else refers to
    // these bytes meanwhile.
    unsafe {
        let ip_check = ip.add(IP_CHECK) as *mut [u8; 2];
        let mut c = csum::replace4(
            u16::from_ne_bytes(*ip_check),
            u32::from_ne_bytes(old),
            u32::from_ne_bytes(addr),
        );
        if hop {
            let ttl = pkt.ttl.wrapping_sub(1);
            c = csum::replace2(c, ttl_word(pkt, pkt.ttl), ttl_word(pkt, ttl));
            *ip.add(IP_TTL) = ttl;
        }
        *ip_check = c.to_ne_bytes();
        *(ip.add(off) as *mut [u8; 4]) = addr;
    }
    Ok(())
}

/// An ICMP error from the client's side about a NAT flow (quoting the reply as the
/// client got it, from VIP:vport): it goes to the real with the real's address put
/// in, outside and in the quote, so the real's socket gets it.
#[inline(always)]
pub fn icmp_to_real(
    ctx: &XdpContext,
    e: &IcmpError,
    real_id: u32,
    real: &Real,
    now: u64,
) -> (u32, Stat) {
    let dst = v4_of_16(&real.addr);
    let port = if real.port_be != 0 {
        real.port_be
    } else {
        e.sport_be
    };
    let pkt = &e.outer;
    let hop = hop_for(ctx, pkt, real_id, dst, now);
    if rewrite_quote(ctx, e, Side::Source, dst, port).is_err()
        || rewrite_outer(ctx, pkt, Side::Destination, dst, false).is_err()
    {
        return (xdp_action::XDP_DROP, Stat::DropMalformed);
    }
    send(ctx, hop)
}

/// An ICMP error from a NAT real (or a router behind it) about a NAT flow, quoting the
/// packet as the real got it (to real:port): it goes to the client with the virtual
/// address and port put back in the quote, and as the source when the real itself sent
/// it, so the client's socket gets the error and the real's address never leaks.
#[inline(always)]
pub fn icmp_to_client(ctx: &XdpContext, e: &IcmpError, conn: &Conn, now: u64) -> (u32, Stat) {
    let pkt = &e.outer;
    // The real's address is the quoted packet's destination.
    if !from_real_side(ctx, pkt, conn.real, e.dst, now) {
        return (xdp_action::XDP_DROP, Stat::DropSpoofedReply);
    }
    if pkt.ttl <= 1 {
        return (xdp_action::XDP_PASS, Stat::PassTtlExceeded);
    }
    let vaddr = conn.vaddr;
    let hop = client_hop(
        ctx,
        vaddr,
        v4_of_16(&pkt.dst),
        pkt.proto,
        pkt.tos,
        pkt.ip_len,
        now,
    );
    // A router's own address stays: only the real's is private.
    let src = v4_of_16(&pkt.src);
    let src = if src == e.dst { vaddr } else { src };
    if rewrite_quote(ctx, e, Side::Destination, vaddr, conn.vport_be).is_err()
        || rewrite_outer(ctx, pkt, Side::Source, src, hop.is_ok()).is_err()
    {
        return (xdp_action::XDP_DROP, Stat::DropMalformed);
    }
    let sent = send(ctx, hop);
    if matches!(sent.1, Stat::Tx | Stat::Redirect) {
        count(Stat::IcmpFromReal);
    }
    sent
}
