//! aya-log events. Only two kinds exist: a misconfiguration met by the data path (always
//! logged; it should never happen), and the opt-in debug trace of scheduling decisions,
//! switched at run time by `director debug on|off` (SETTINGS_F_DEBUG) and off by default.
//! Nothing else logs: an established flow's pass never reaches this module.

use aya_ebpf::programs::XdpContext;
use aya_log_ebpf::{info, warn};
use director_common::addr::v4_of_16;

use crate::parse::Packet;

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

/// Misconfiguration: a service's table names a real slot that is not in use by it.
#[inline(always)]
pub fn bad_table_entry(ctx: &XdpContext, service: u32) {
    warn!(
        ctx,
        "service slot {} has a table entry for an unused real slot: dropping (please report)",
        service
    );
}
