//! Accounting: one global outcome counter per packet, per-service and per-real counters.

use director_common::stats::{Counters, Stat};

use crate::maps::{REAL_STATS, SERVICE_STATS, STATS};

/// Count one packet (or event) under `stat`.
#[inline(always)]
pub fn count(stat: Stat) {
    if let Some(c) = STATS.get_ptr_mut(stat as u32) {
        // SAFETY: a per-CPU map value, valid while the program runs; only this CPU's
        // programs touch it, one at a time.
        unsafe { *c += 1 };
    }
}

/// Direction of a packet relative to the client.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Client -> real.
    In,
    /// Real -> client (NAT replies).
    Out,
}

/// Add a packet of `bytes` (and a connection, if `new_conn`) to the counters at `c`, a
/// per-CPU map value.
#[inline(always)]
fn add(c: *mut Counters, dir: Dir, bytes: u64, new_conn: bool) {
    // SAFETY: `c` comes from a per-CPU map lookup (both callers): valid while the
    // program runs, touched only by this CPU's programs, one at a time.
    let c = unsafe { &mut *c };
    if new_conn {
        c.conns += 1;
    }
    match dir {
        Dir::In => {
            c.pkts_in += 1;
            c.bytes_in += bytes;
        }
        Dir::Out => {
            c.pkts_out += 1;
            c.bytes_out += bytes;
        }
    }
}

/// Add a packet to its service's and its real's counters.
#[inline(always)]
pub fn account(service: u32, real: u32, dir: Dir, bytes: u64, new_conn: bool) {
    if let Some(c) = SERVICE_STATS.get_ptr_mut(service) {
        add(c, dir, bytes, new_conn);
    }
    if let Some(c) = REAL_STATS.get_ptr_mut(real) {
        add(c, dir, bytes, new_conn);
    }
}
