//! Picking a real server for a new connection: persistence template first, then the
//! service's lookup table (Maglev / source hash / rr sequence) built by userspace.

use director_common::{
    conntrack::{PersistEntry, PersistKey},
    hash::{hash_flow, hash_source},
    maps::TABLE_ROW,
    real::{REAL_F_PRESENT, Real},
    service::{SVC_F_HASH_PORT, SVC_F_HASH_SRC_ONLY, SVC_F_PERSISTENT, Scheduler, Service},
    stats::Stat,
};

use crate::{
    maps::{PERSIST, REALS, RR_CURSORS, TABLES, table_size},
    parse::Packet,
};

const NS_PER_S: u64 = 1_000_000_000;

/// The real with this id, if it is in use by this service slot.
#[inline(always)]
pub fn real_of(id: u32, service: u32) -> Option<Real> {
    let r = REALS.get(id)?;
    if r.flags & REAL_F_PRESENT == 0 || r.service != service {
        return None;
    }
    Some(*r)
}

#[inline(always)]
fn table_index(svc: &Service, pkt: &Packet, len: u32) -> u32 {
    // Also proves to the compiler that no `% len` below can panic.
    if len == 0 {
        return 0;
    }
    let with_port = svc.flags & SVC_F_HASH_PORT != 0;
    match Scheduler::from_u8(svc.scheduler) {
        Some(Scheduler::SourceHash) => hash_source(&pkt.src, pkt.sport_be, with_port) % len,
        Some(Scheduler::RoundRobin) | Some(Scheduler::WeightedRoundRobin) => {
            match RR_CURSORS.get_ptr_mut(svc.id) {
                Some(c) => unsafe {
                    let pos = *c % len;
                    *c = pos + 1;
                    pos
                },
                None => 0,
            }
        }
        // Maglev, and anything unknown (userspace never writes that).
        _ => {
            if svc.flags & SVC_F_HASH_SRC_ONLY != 0 {
                hash_source(&pkt.src, pkt.sport_be, with_port) % len
            } else {
                hash_flow(&pkt.src, pkt.sport_be, pkt.dport_be, pkt.proto) % len
            }
        }
    }
}

/// The service's lookup table in its active half.
#[inline(always)]
fn from_table(svc: &Service, pkt: &Packet) -> Result<(u32, Real), Stat> {
    let half = (svc.active_half & 1) as u32;
    let len = if half == 0 {
        svc.table_len[0]
    } else {
        svc.table_len[1]
    };
    let size = table_size();
    if len == 0 || len > size {
        return Err(Stat::DropNoReal);
    }
    let idx = table_index(svc, pkt, len);
    let slot = (svc.id * 2 + half) * size + idx;
    // TABLE_ROW ids per map value (a power of two: a shift and a mask).
    let id = match TABLES.get(slot / TABLE_ROW) {
        Some(row) => row[(slot % TABLE_ROW) as usize],
        None => return Err(Stat::DropNoReal),
    };
    if id == 0 {
        return Err(Stat::DropNoReal);
    }
    match real_of(id, svc.id) {
        Some(r) => Ok((id, r)),
        None => Err(Stat::DropBadReal),
    }
}

#[inline(always)]
fn persist_key(svc: &Service, pkt: &Packet) -> PersistKey {
    let mut client = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        client[i] = pkt.src[i] & svc.persist_mask[i];
        i += 1;
    }
    PersistKey {
        service: svc.id,
        family: pkt.family,
        _pad: [0; 3],
        client,
    }
}

/// Schedule a new connection. Persistent services keep a client on its real while the
/// template lives and the real takes new connections (weight > 0).
#[inline(always)]
pub fn schedule(svc: &Service, pkt: &Packet, now: u64) -> Result<(u32, Real), Stat> {
    if svc.flags & SVC_F_PERSISTENT == 0 {
        return from_table(svc, pkt);
    }
    let key = persist_key(svc, pkt);
    let timeout_ns = svc.persist_timeout_s as u64 * NS_PER_S;
    if let Some(t) = PERSIST.get_ptr_mut(&key) {
        let t = unsafe { &mut *t };
        if now.wrapping_sub(t.last_seen_ns) <= timeout_ns
            && let Some(r) = real_of(t.real, svc.id)
            && r.weight > 0
        {
            t.last_seen_ns = now;
            return Ok((t.real, r));
        }
    }
    let (id, real) = from_table(svc, pkt)?;
    let entry = PersistEntry {
        last_seen_ns: now,
        real: id,
        _pad: 0,
    };
    let _ = PERSIST.insert(&key, &entry, 0);
    Ok((id, real))
}
