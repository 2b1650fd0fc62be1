//! aya-log events. Only two kinds exist: a misconfiguration met by the data path (always
//! logged, at most once a second per CPU; it should never happen), and the opt-in debug
//! trace of scheduling decisions, switched at run time by `director debug on|off`
//! (SETTINGS_F_DEBUG) and off by default. Nothing else logs: an established flow's pass
//! never reaches this module.

use aya_ebpf::programs::XdpContext;
use aya_log_ebpf::{info, warn};
use director_common::{addr::v4_of_16, config::NS_PER_S};

use crate::{maps::WARNED, parse::Packet};

/// Debug mode: a new flow was scheduled.
#[inline(always)]
pub fn new_flow(ctx: &XdpContext, pkt: &Packet, service: u32, real: u32) {
    info!(
        ctx,
        "new flow proto {} {:i}:{} -> {:i}:{} service {} real {}",
        pkt.proto,
        v4_of_16(&pkt.src),
        u16::from_be(pkt.sport_be),
        v4_of_16(&pkt.dst),
        u16::from_be(pkt.dport_be),
        service,
        real
    );
}

/// Debug mode: a new IPv6 flow was scheduled (from a program of its own, see
/// `balancer6::trace_new_flow`).
#[inline(always)]
pub fn new_flow6(ctx: &XdpContext, pkt: &Packet, service: u32, real: u32) {
    info!(
        ctx,
        "new flow proto {} [{:i}]:{} -> [{:i}]:{} service {} real {}",
        pkt.proto,
        pkt.src,
        u16::from_be(pkt.sport_be),
        pkt.dst,
        u16::from_be(pkt.dport_be),
        service,
        real
    );
}

/// Misconfiguration: a service's table names a real slot that is not in use by it. Every
/// packet of every new flow of the service meets it, so it is logged at most once a
/// second per CPU (`DIR_WARNED`), not per packet. A BPF function of its own: inlined,
/// the record's writes would add to the paths the verifier explores in the new-flow
/// programs, the IPv6 one nearest of all to its limit.
#[inline(never)]
pub fn bad_table_entry(service: u32, now: u64) {
    let Some(last) = WARNED.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a per-CPU map value, valid while the program runs; only this CPU's
    // programs touch it, one at a time.
    let last = unsafe { &mut *last };
    if *last != 0 && now.wrapping_sub(*last) < NS_PER_S {
        return;
    }
    *last = now;
    warn!(
        // The macro takes a program context but never reads it (the ring buffer needs
        // none), and a BPF function cannot be handed the packet's context.
        (),
        "service slot {} has a table entry for an unused real slot: dropping (please report; logged at most once a second per CPU)",
        service
    );
}
