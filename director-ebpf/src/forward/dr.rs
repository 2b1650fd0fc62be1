//! Direct routing: the L3 packet is untouched; it goes to the real's MAC.

use aya_ebpf::programs::XdpContext;
use director_common::{addr::v4_of_16, real::Real, stats::Stat};

use super::{fib_drop, hop_for, transmit};
use crate::parse::Packet;

/// Forward a client's packet to a direct-routing real: its MAC, the packet as it is.
#[inline(always)]
pub fn forward(ctx: &XdpContext, pkt: &Packet, real_id: u32, real: &Real, now: u64) -> (u32, Stat) {
    match hop_for(ctx, pkt, real_id, v4_of_16(&real.addr), now) {
        Ok(hop) => transmit(ctx, &hop),
        Err(e) => fib_drop(ctx, pkt, e, 0),
    }
}
