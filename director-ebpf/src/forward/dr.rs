//! Direct routing: the L3 packet is untouched; it goes to the real's MAC (IPv4 and
//! IPv6).

use aya_ebpf::programs::XdpContext;
use director_common::{addr::v4_of_16, real::Real, stats::Stat};

use super::{
    fib_drop, hop_for,
    ip6::{fib_drop6, real_hop6},
    transmit,
};
use crate::parse::Packet;

/// Forward a client's packet to a direct-routing real: its MAC, the packet as it is.
#[inline(always)]
pub fn forward(ctx: &XdpContext, pkt: &Packet, real_id: u32, real: &Real, now: u64) -> (u32, Stat) {
    match hop_for(ctx, pkt, real_id, v4_of_16(&real.addr), now) {
        Ok(hop) => transmit(ctx, &hop),
        Err(e) => fib_drop(ctx, pkt, e, 0),
    }
}

/// Forward an IPv6 client's packet to a direct-routing IPv6 real.
#[inline(always)]
pub fn forward6(
    ctx: &XdpContext,
    pkt: &Packet,
    real_id: u32,
    real: &Real,
    now: u64,
) -> (u32, Stat) {
    match real_hop6(
        ctx,
        real_id,
        &real.addr,
        Some(&pkt.src),
        pkt.proto,
        pkt.ip_len,
        now,
    ) {
        Ok(hop) => transmit(ctx, &hop.link),
        Err(e) => fib_drop6(ctx, e, 0),
    }
}
