//! IPIP tunnel: an outer IPv4 header from this host to the real, in front of the
//! client's packet. The real decapsulates and answers the client directly.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_get_prandom_u32, bpf_xdp_adjust_head},
    programs::XdpContext,
};
use director_common::{
    addr::{PROTO_IPIP, v4_of_16},
    real::Real,
    stats::Stat,
};
use network_types::ip::Ipv4Hdr;

use super::{NextHop, Source, ToReal, fib_drop, real_hop, transmit};
use crate::{
    csum,
    headers::{ETH_HLEN, IP_CHECK, IP_DF_BYTE, IPV4_VIHL_NO_OPTIONS, MACS_LEN, VLAN_HLEN},
    packet,
    parse::Packet,
};

/// The outer header: IPv4 without options.
const OUTER_LEN: usize = Ipv4Hdr::LEN;
/// TTL of the outer header (the kernel's default TTL).
const OUTER_TTL: u8 = 64;

/// Forward a client's packet to a tunnel real, inside an outer header from this host.
#[inline(always)]
pub fn forward(ctx: &XdpContext, pkt: &Packet, real_id: u32, real: &Real, now: u64) -> (u32, Stat) {
    let dst = v4_of_16(&real.addr);
    // The outer source is the address the kernel would use towards the real.
    let (hop, outer_len) = match hop(ctx, pkt, real_id, dst, PROTO_IPIP, OUTER_LEN as u16, now) {
        Ok(h) => h,
        Err(verdict) => return verdict,
    };
    const TAGGED: usize = ETH_HLEN + VLAN_HLEN;
    let res = if pkt.l2_len == ETH_HLEN {
        encap::<ETH_HLEN, { ETH_HLEN - MACS_LEN }, { ETH_HLEN + OUTER_LEN }>(
            ctx, pkt, &hop, dst, outer_len,
        )
    } else {
        encap::<TAGGED, { TAGGED - MACS_LEN }, { TAGGED + OUTER_LEN }>(
            ctx, pkt, &hop, dst, outer_len,
        )
    };
    match res {
        Ok(()) => transmit(ctx, &hop),
        Err(()) => (xdp_action::XDP_DROP, Stat::DropEncap),
    }
}

/// Grow the packet by an outer header, keeping the L2 header (`L2` bytes, with a VLAN
/// tag if there was one) in front. Only the `TAIL` bytes after the two MACs (VLAN tag,
/// ethertype) are carried over: transmit() writes both MACs for the next hop anyway.
/// `FRONT` is `L2` plus the outer header: one bounds check covers both writes.
#[inline(always)]
fn encap<const L2: usize, const TAIL: usize, const FRONT: usize>(
    ctx: &XdpContext,
    pkt: &Packet,
    hop: &NextHop,
    dst: [u8; 4],
    outer_len: u16,
) -> Result<(), ()> {
    const { assert!(MACS_LEN + TAIL == L2 && L2 + OUTER_LEN == FRONT) };
    let tail: [u8; TAIL] = *packet::header(ctx, MACS_LEN)?;
    // SAFETY: `ctx.ctx` is this run's `xdp_md`; no pointer into the frame is held
    // across the call (the writes below derive theirs again).
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(OUTER_LEN as i32)) } != 0 {
        return Err(());
    }
    let front = packet::ptr::<[u8; FRONT]>(ctx, 0)? as *mut u8;
    let h = outer_words(pkt, hop, dst, PROTO_IPIP, outer_len);
    // SAFETY: `packet::ptr` checked the frame holds FRONT bytes at `front`, and
    // MACS_LEN + TAIL == L2, L2 + OUTER_LEN == FRONT (asserted above): both writes stay
    // inside them. The outer header goes in as ten half-word stores (as bytes: twenty):
    // the frame starts even (`packet::Header`), and L2 is 14 or 18.
    unsafe {
        *(front.add(MACS_LEN) as *mut [u8; TAIL]) = tail;
        *(front.add(L2) as *mut [u16; OUTER_LEN / 2]) = h;
    }
    Ok(())
}

/// [`outer_words`] as the bytes they are in the packet.
#[inline(always)]
pub(super) fn outer_header(
    pkt: &Packet,
    hop: &NextHop,
    dst: [u8; 4],
    proto: u8,
    tot_len: u16,
) -> [u8; OUTER_LEN] {
    let h = outer_words(pkt, hop, dst, proto, tot_len);
    // SAFETY: [u16; 10] and [u8; 20] have the same size and every bit pattern is valid.
    unsafe { core::mem::transmute::<[u16; OUTER_LEN / 2], [u8; OUTER_LEN]>(h) }
}

/// The outer IPv4 header of `tot_len` bytes in all, carrying protocol `proto`, with its
/// checksum: its ten 16-bit words, each as the packet holds it (in the machine's order,
/// as the checksum takes them).
#[inline(always)]
fn outer_words(
    pkt: &Packet,
    hop: &NextHop,
    dst: [u8; 4],
    proto: u8,
    tot_len: u16,
) -> [u16; OUTER_LEN / 2] {
    // The outer header takes the inner DF. RFC 6864: an ID only matters to a packet that
    // may be fragmented, and then it must not repeat soon between this host and the real
    // (a constant would make fragments of different packets reassemble into one).
    let inner_df = if pkt.dont_fragment { IP_DF_BYTE } else { 0 };
    let id = if pkt.dont_fragment {
        0
    } else {
        // SAFETY: the helper takes no arguments and returns a number.
        (unsafe { bpf_get_prandom_u32() }) as u16
    };
    let (s, d) = (hop.src, dst);
    let mut h = [
        u16::from_ne_bytes([IPV4_VIHL_NO_OPTIONS, pkt.tos]),
        tot_len.to_be(),
        id,
        u16::from_ne_bytes([inner_df, 0]),
        u16::from_ne_bytes([OUTER_TTL, proto]),
        0,
        u16::from_ne_bytes([s[0], s[1]]),
        u16::from_ne_bytes([s[2], s[3]]),
        u16::from_ne_bytes([d[0], d[1]]),
        u16::from_ne_bytes([d[2], d[3]]),
    ];
    h[IP_CHECK / 2] = csum::ipv4_header_words(&h);
    h
}

/// The next hop towards a tunnel real for a packet that grows by `overhead` bytes (the
/// MTU a too-big packet's sender is told is short of it), or the verdict.
#[inline(always)]
pub(super) fn hop(
    ctx: &XdpContext,
    pkt: &Packet,
    real_id: u32,
    dst: [u8; 4],
    proto: u8,
    overhead: u16,
    now: u64,
) -> Result<(NextHop, u16), (u32, Stat)> {
    let Some(outer_len) = pkt.ip_len.checked_add(overhead) else {
        return Err((xdp_action::XDP_DROP, Stat::DropEncap));
    };
    let to = ToReal {
        id: real_id,
        addr: dst,
        src: Source::Ours,
        proto,
        tos: pkt.tos,
        ip_len: outer_len,
    };
    match real_hop(ctx, &to, now) {
        Ok(hop) => Ok((hop, outer_len)),
        Err(e) => Err(fib_drop(ctx, pkt, e, overhead)),
    }
}
