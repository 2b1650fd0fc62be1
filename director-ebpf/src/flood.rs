//! Flood protection: each CPU counts the new flows it records per second. Past the
//! limit (`Settings::flood_limit`), the rest of that second's new flows are not worth a
//! connection entry each: a flood of SYNs or of packets of unknown flows from random
//! sources would otherwise fill the table with entries that never see a second packet.
//! Only the new-flow path asks; established flows never do.

use director_common::config::{NS_PER_S, Settings};

use crate::maps::FLOOD;

/// The window the limit counts new flows in: a second.
const WINDOW_NS: u64 = NS_PER_S;

/// Count one new flow on this CPU; true if it is over the limit of the current second.
#[inline(always)]
pub fn over_limit(now: u64, settings: &Settings) -> bool {
    if settings.flood_limit == 0 {
        return false;
    }
    let Some(m) = FLOOD.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: a per-CPU map value, valid while the program runs; only this CPU's
    // programs touch it, one at a time.
    let m = unsafe { &mut *m };
    if now.saturating_sub(m.window_ns) >= WINDOW_NS {
        m.window_ns = now;
        m.flows = 0;
    }
    m.flows += 1;
    m.flows > settings.flood_limit as u64
}
