//! NAT66: as IPv4's NAT (`nat`), over IPv6. The client's packets get the real's address
//! and port as destination, the real's replies the VIP and virtual port back as source.
//! IPv6 has no header checksum; the TCP/UDP checksum covers the addresses through the
//! pseudo-header and is updated incrementally, for UDP always (a zero UDP checksum is
//! invalid over IPv6).

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use director_common::{addr::PROTO_TCP, conntable::Conn6, real::Real, stats::Stat};

use super::{
    FibError,
    ip6::{NextHop6, client_hop6, real_hop6, too_big6},
    nat::Side,
    transmit,
};
use crate::{
    csum,
    headers::{IP6_DST, IP6_HOP_LIMIT, IP6_SRC, IPV6_HLEN, TCP_CHECK, UDP_CHECK},
    packet,
    parse::Packet,
    stats::{Dir, account},
};

/// Replace the source or destination address and port, fixing the L4 checksum. With
/// `hop`, spend one hop of the hop limit (a reply the director sends on itself).
#[inline(always)]
fn rewrite(
    ctx: &XdpContext,
    pkt: &Packet,
    side: Side,
    addr: &[u8; 16],
    port_be: u16,
    hop: bool,
) -> Result<(), ()> {
    if pkt.proto == PROTO_TCP {
        rewrite_with::<{ TCP_CHECK + 2 }, TCP_CHECK>(ctx, pkt, side, addr, port_be, hop)
    } else {
        rewrite_with::<{ UDP_CHECK + 2 }, UDP_CHECK>(ctx, pkt, side, addr, port_be, hop)
    }
}

/// [`rewrite`] for an L4 header whose checksum sits at `CHECK` (`L4` bytes cover it).
#[inline(always)]
fn rewrite_with<const L4: usize, const CHECK: usize>(
    ctx: &XdpContext,
    pkt: &Packet,
    side: Side,
    addr: &[u8; 16],
    port_be: u16,
    hop: bool,
) -> Result<(), ()> {
    let (addr_off, port_off, old_addr, old_port) = match side {
        Side::Source => (IP6_SRC, 0, &pkt.src, pkt.sport_be),
        Side::Destination => (IP6_DST, 2, &pkt.dst, pkt.dport_be),
    };
    let ip = packet::ptr::<[u8; IPV6_HLEN]>(ctx, pkt.l2_len)? as *mut u8;
    let l4 = packet::ptr::<[u8; L4]>(ctx, pkt.l4_off)? as *mut u8;
    // SAFETY: `packet::ptr` checked that the frame holds both headers; every offset
    // below plus its size is within the header it is taken from; byte arrays (no
    // alignment), and nothing else refers to these bytes meanwhile.
    unsafe {
        let l4_check = l4.add(CHECK) as *mut [u8; 2];
        let mut c = csum::replace16_2(
            u16::from_ne_bytes(*l4_check),
            old_addr,
            addr,
            old_port,
            port_be,
        );
        // Zero would say "no checksum", which IPv6 does not allow (RFC 8200, 8.1).
        if c == 0 && pkt.proto != PROTO_TCP {
            c = 0xffff;
        }
        *l4_check = c.to_ne_bytes();
        if hop {
            *ip.add(IP6_HOP_LIMIT) = pkt.ttl.wrapping_sub(1);
        }
        *(ip.add(addr_off) as *mut [u8; 16]) = *addr;
        *(l4.add(port_off) as *mut [u8; 2]) = port_be.to_ne_bytes();
    }
    Ok(())
}

/// Forward a client's packet to a NAT66 real: the real's address and port as
/// destination.
#[inline(always)]
pub fn forward(ctx: &XdpContext, pkt: &Packet, real_id: u32, real: &Real, now: u64) -> (u32, Stat) {
    let port = if real.port_be != 0 {
        real.port_be
    } else {
        pkt.dport_be
    };
    let hop = real_hop6(
        ctx,
        real_id,
        &real.addr,
        Some(&pkt.src),
        pkt.proto,
        pkt.ip_len,
        now,
    );
    // The client is told, quoting its packet as it sent it.
    if let Err(FibError::TooBig(mtu)) = hop {
        return too_big6(ctx, mtu);
    }
    if rewrite(ctx, pkt, Side::Destination, &real.addr, port, false).is_err() {
        return (xdp_action::XDP_DROP, Stat::DropMalformed);
    }
    send(ctx, hop)
}

/// The packet is already rewritten: send it on, or let the kernel forward it when the
/// next hop's neighbour is not resolved yet (the kernel resolves it) or it is too big
/// (the kernel answers the sender).
#[inline(always)]
fn send(ctx: &XdpContext, hop: Result<NextHop6, FibError>) -> (u32, Stat) {
    match hop {
        Ok(hop) => transmit(ctx, &hop.link),
        Err(FibError::NoNeigh) => (xdp_action::XDP_PASS, Stat::PassNoNeigh),
        Err(FibError::TooBig(_)) => (xdp_action::XDP_PASS, Stat::PassTooBig),
        Err(FibError::Failed) => (xdp_action::XDP_DROP, Stat::DropFib),
    }
}

/// Real -> client: a packet matching the reply entry of a NAT66 connection, which the
/// caller checked came from the real's side ([`from_real_side`]).
#[inline(always)]
pub fn reply(ctx: &XdpContext, pkt: &Packet, conn: &Conn6, now: u64) -> (u32, Stat) {
    // The kernel routes it as it came, finds the hop limit spent and answers the real
    // with "time exceeded"; nothing leaves with the real's address.
    if pkt.ttl <= 1 {
        return (xdp_action::XDP_PASS, Stat::PassTtlExceeded);
    }
    let vaddr = conn.vaddr;
    let (service, real) = (conn.service, conn.real);
    let hop = client_hop6(ctx, &vaddr, &pkt.dst, pkt.proto, pkt.ip_len, now);
    // Too big: untranslated, the kernel answers the real (the sender) itself.
    if let Err(FibError::TooBig(_)) = hop {
        return (xdp_action::XDP_PASS, Stat::PassTooBig);
    }
    if rewrite(ctx, pkt, Side::Source, &vaddr, conn.vport_be, hop.is_ok()).is_err() {
        return (xdp_action::XDP_DROP, Stat::DropMalformed);
    }
    account(service, real, Dir::Out, pkt.frame_len, false);
    send(ctx, hop)
}

/// The packet came in on the interface the route to its real leaves by (reverse-path
/// filtering of reply entries, as for IPv4); when the route cannot be looked up the
/// packet is given the benefit of the doubt.
#[inline(always)]
pub fn from_real_side(ctx: &XdpContext, pkt: &Packet, real_id: u32, now: u64) -> bool {
    match real_hop6(ctx, real_id, &pkt.src, Some(&pkt.dst), pkt.proto, 0, now) {
        Ok(hop) => hop.link.ifindex == packet::ingress_ifindex(ctx),
        Err(_) => true,
    }
}
