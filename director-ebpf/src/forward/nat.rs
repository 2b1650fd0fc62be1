//! NAT (masquerading): the client's packets get the real's address and port as
//! destination; the real's replies, which route back through us, get the VIP and virtual
//! port back as source. Checksums are updated incrementally (RFC 1624).

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use director_common::{
    addr::{PROTO_TCP, v4_of_16},
    conntrack::Conn,
    real::Real,
    stats::Stat,
};

use super::{FibError, NextHop, client_hop, real_hop, transmit};
use crate::{
    csum,
    parse::{Packet, ptr_at},
    stats::{Dir, account},
};

/// Offsets of the source and destination address inside the IPv4 header.
/// The fixed IPv4 header (options, if any, follow and are not touched).
const IP_HLEN: usize = 20;
const IP_SRC: usize = 12;
const IP_DST: usize = 16;
const IP_CHECK: usize = 10;
const TCP_CHECK: usize = 16;
const UDP_CHECK: usize = 6;

#[derive(Clone, Copy)]
enum Side {
    Source,
    Destination,
}

/// Replace the source or destination address and port, fixing both checksums.
#[inline(always)]
fn rewrite(
    ctx: &XdpContext,
    pkt: &Packet,
    side: Side,
    addr: [u8; 4],
    port_be: u16,
) -> Result<(), ()> {
    if pkt.proto == PROTO_TCP {
        rewrite_with::<{ TCP_CHECK + 2 }, TCP_CHECK>(ctx, pkt, side, addr, port_be, true)
    } else {
        rewrite_with::<{ UDP_CHECK + 2 }, UDP_CHECK>(ctx, pkt, side, addr, port_be, false)
    }
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
) -> Result<(), ()> {
    // The old address and port are the parsed ones: no second read of the packet.
    let (addr_off, port_off, old_addr, old_port) = match side {
        Side::Source => (IP_SRC, 0, v4_of_16(&pkt.src), pkt.sport_be),
        Side::Destination => (IP_DST, 2, v4_of_16(&pkt.dst), pkt.dport_be),
    };
    let ip = ptr_at::<[u8; IP_HLEN]>(ctx, pkt.l2_len)? as *mut u8;
    let l4 = ptr_at::<[u8; L4]>(ctx, pkt.l4_off)? as *mut u8;
    let (old, new) = (u32::from_ne_bytes(old_addr), u32::from_ne_bytes(addr));
    // SAFETY: every offset below plus its size is within the header checked above.
    unsafe {
        let ip_addr = ip.add(addr_off) as *mut [u8; 4];
        let ip_check = ip.add(IP_CHECK) as *mut [u8; 2];
        let l4_port = l4.add(port_off) as *mut [u8; 2];
        let l4_check = l4.add(CHECK) as *mut [u8; 2];
        let c = u16::from_ne_bytes(*ip_check);
        *ip_check = csum::replace4(c, old, new).to_ne_bytes();
        let c = u16::from_ne_bytes(*l4_check);
        // UDP: checksum 0 means "none" and stays so.
        if is_tcp || c != 0 {
            let mut c = csum::replace4_2(c, old, new, old_port, port_be);
            if !is_tcp && c == 0 {
                c = 0xffff;
            }
            *l4_check = c.to_ne_bytes();
        }
        *ip_addr = addr;
        *l4_port = port_be.to_ne_bytes();
    }
    Ok(())
}

#[inline(always)]
pub fn forward(ctx: &XdpContext, pkt: &Packet, real_id: u32, real: &Real, now: u64) -> (u32, Stat) {
    let dst = v4_of_16(&real.addr);
    let port = if real.port_be != 0 {
        real.port_be
    } else {
        pkt.dport_be
    };
    let hop = real_hop(
        ctx,
        real_id,
        dst,
        v4_of_16(&pkt.src),
        pkt.proto,
        pkt.tos,
        pkt.ip_len,
        false,
        now,
    );
    if rewrite(ctx, pkt, Side::Destination, dst, port).is_err() {
        return (xdp_action::XDP_DROP, Stat::DropMalformed);
    }
    send(ctx, hop)
}

/// The packet is already rewritten: send it on, or let the kernel forward it when the
/// next hop is not resolved yet (it is no longer addressed to us, so the kernel routes
/// it and resolves the neighbour).
#[inline(always)]
pub fn send(ctx: &XdpContext, hop: Result<NextHop, FibError>) -> (u32, Stat) {
    match hop {
        Ok(hop) => transmit(ctx, &hop),
        Err(FibError::NoNeigh) => (xdp_action::XDP_PASS, Stat::PassNoNeigh),
        Err(FibError::Failed) => (xdp_action::XDP_DROP, Stat::DropFib),
    }
}

/// Real -> client: a packet matching the reply entry of a NAT connection.
#[inline(always)]
pub fn reply(ctx: &XdpContext, pkt: &Packet, conn: &Conn, now: u64) -> (u32, Stat) {
    let vaddr = conn.vaddr;
    let (service, real) = (conn.service, conn.real);
    if rewrite(ctx, pkt, Side::Source, vaddr, conn.vport_be).is_err() {
        return (xdp_action::XDP_DROP, Stat::DropMalformed);
    }
    account(service, real, Dir::Out, pkt.frame_len, false);
    send(
        ctx,
        client_hop(
            ctx,
            vaddr,
            v4_of_16(&pkt.dst),
            pkt.proto,
            pkt.tos,
            pkt.ip_len,
            now,
        ),
    )
}
