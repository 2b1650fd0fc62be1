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

use super::{NextHop, fib_drop, real_hop, transmit};
use crate::{
    csum,
    parse::{Packet, ptr_at},
};

const OUTER_LEN: usize = Ipv4Hdr::LEN;
const OUTER_TTL: u8 = 64;
const IP_DF: u8 = 0x40;

#[inline(always)]
pub fn forward(ctx: &XdpContext, pkt: &Packet, real_id: u32, real: &Real, now: u64) -> (u32, Stat) {
    let dst = v4_of_16(&real.addr);
    let Some(outer_len) = pkt.ip_len.checked_add(OUTER_LEN as u16) else {
        return (xdp_action::XDP_DROP, Stat::DropEncap);
    };
    // The outer source is the address the kernel would use towards the real.
    let hop = match real_hop(
        ctx, real_id, dst, [0; 4], PROTO_IPIP, pkt.tos, outer_len, true, now,
    ) {
        Ok(hop) => hop,
        Err(e) => return fib_drop(ctx, pkt, e, OUTER_LEN as u16),
    };
    let res = if pkt.l2_len == 14 {
        encap::<14, 2, { 14 + OUTER_LEN }>(ctx, pkt, &hop, dst, outer_len)
    } else {
        encap::<18, 6, { 18 + OUTER_LEN }>(ctx, pkt, &hop, dst, outer_len)
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
    const MACS: usize = 12;
    const { assert!(MACS + TAIL == L2 && L2 + OUTER_LEN == FRONT) };
    let tail: [u8; TAIL] = unsafe { *ptr_at::<[u8; TAIL]>(ctx, MACS)? };
    let inner_df = if pkt.dont_fragment { IP_DF } else { 0 };
    // RFC 6864: an ID only matters to a packet that may be fragmented, and then it must
    // not repeat soon between this host and the real (a constant would make fragments
    // of different packets reassemble into one).
    let id = if pkt.dont_fragment {
        [0, 0]
    } else {
        (unsafe { bpf_get_prandom_u32() } as u16).to_ne_bytes()
    };
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(OUTER_LEN as i32)) } != 0 {
        return Err(());
    }
    // Every pointer is derived again: the old ones are invalid after adjust_head.
    let front = ptr_at::<[u8; FRONT]>(ctx, 0)? as *mut u8;
    // SAFETY: MACS + TAIL == L2 and L2 + OUTER_LEN == FRONT, checked above.
    unsafe { *(front.add(MACS) as *mut [u8; TAIL]) = tail };
    let len = outer_len.to_be_bytes();
    let mut h: [u8; OUTER_LEN] = [
        0x45, pkt.tos, len[0], len[1], id[0], id[1], inner_df, 0, OUTER_TTL, PROTO_IPIP, 0, 0,
        hop.src[0], hop.src[1], hop.src[2], hop.src[3], dst[0], dst[1], dst[2], dst[3],
    ];
    let check = csum::ipv4_header(&h);
    h[10] = check[0];
    h[11] = check[1];
    unsafe { *(front.add(L2) as *mut [u8; OUTER_LEN]) = h };
    Ok(())
}
