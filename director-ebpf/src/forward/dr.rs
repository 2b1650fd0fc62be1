//! Direct routing: the L3 packet is untouched; it goes to the real's MAC.

use aya_ebpf::programs::XdpContext;
use director_common::{addr::v4_of_16, real::Real, stats::Stat};

use super::{fib_drop, fib_v4, transmit};
use crate::parse::Packet;

#[inline(always)]
pub fn forward(ctx: &XdpContext, pkt: &Packet, real: &Real) -> (u32, Stat) {
    match fib_v4(
        ctx,
        v4_of_16(&pkt.src),
        v4_of_16(&real.addr),
        pkt.proto,
        pkt.tos,
        pkt.ip_len,
        false,
    ) {
        Ok(hop) => transmit(ctx, &hop),
        Err(e) => fib_drop(e),
    }
}
