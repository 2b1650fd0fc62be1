//! Picking a real server for a new connection: persistence template first, then the
//! service's lookup table (Maglev / source hash / rr sequence) built by userspace.

use director_common::{
    config::NS_PER_S,
    hash::{hash_flow_words, hash_source_words},
    maps::TABLE_ROW,
    persist::{PersistEntry, PersistKey},
    real::{REAL_F_PRESENT, Real},
    service::{SVC_F_HASH_PORT, SVC_F_HASH_SRC_ONLY, SVC_F_PERSISTENT, Scheduler, Service},
    stats::Stat,
};

use crate::{
    addr::addr_words,
    maps::{PERSIST, REALS, RR_CURSORS, TABLES, table_size},
    parse::Packet,
};

/// The real with this id, if it is in use by this service slot: a reference into the
/// map, so that only the fields a method needs are read.
#[inline(always)]
pub fn real_of(id: u32, service: u32) -> Option<&'static Real> {
    let r = REALS.get(id)?;
    if r.flags & REAL_F_PRESENT == 0 || r.service != service {
        return None;
    }
    Some(r)
}

/// The position in the service's lookup table (of `len` entries) of this packet's
/// real, by the service's scheduler.
#[inline(always)]
fn table_index(svc: &Service, pkt: &Packet, len: u32) -> u32 {
    // Also proves to the compiler that no `% len` below can panic.
    if len == 0 {
        return 0;
    }
    let with_port = svc.flags & SVC_F_HASH_PORT != 0;
    // The source as words: the hashes of `director_common::hash`, four loads instead of
    // sixteen.
    let src = addr_words(&pkt.src);
    match Scheduler::from_u8(svc.scheduler) {
        Some(Scheduler::SourceHash) => hash_source_words(src, pkt.sport_be, with_port) % len,
        Some(Scheduler::RoundRobin) | Some(Scheduler::WeightedRoundRobin) => {
            match RR_CURSORS.get_ptr_mut(svc.id) {
                // SAFETY: a per-CPU map value, valid while the program runs; only this
                // CPU's programs touch it, one at a time.
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
                hash_source_words(src, pkt.sport_be, with_port) % len
            } else {
                hash_flow_words(src, pkt.sport_be, pkt.dport_be, pkt.proto) % len
            }
        }
    }
}

/// The service's lookup table in its active half.
#[inline(always)]
fn from_table(svc: &Service, pkt: &Packet) -> Result<(u32, &'static Real), Stat> {
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

/// The template key: (service, client address & netmask). Built from words: byte-wise
/// masking and the zero padding would be merged by LLVM into `memset` calls, which the
/// BPF back end emits as a byte-at-a-time subprogram.
#[inline(always)]
fn persist_key(svc: &Service, pkt: &Packet) -> PersistKey {
    #[inline(always)]
    fn word(b: &[u8; 16], i: usize) -> u32 {
        u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
    }
    let (a, m) = (&pkt.src, &svc.persist_mask);
    let words: [u32; 6] = [
        svc.id,
        u32::from_ne_bytes([pkt.family, 0, 0, 0]),
        word(a, 0) & word(m, 0),
        word(a, 4) & word(m, 4),
        word(a, 8) & word(m, 8),
        word(a, 12) & word(m, 12),
    ];
    // SAFETY: PersistKey is repr(C): service (u32), family (u8), _pad ([u8; 3]),
    // client ([u8; 16]) = 24 bytes without padding, the layout of these six words.
    unsafe { core::mem::transmute::<[u32; 6], PersistKey>(words) }
}

/// Schedule a new connection. Persistent services keep a client on its real while the
/// template lives and the real takes new connections (weight > 0).
#[inline(always)]
#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "a key passed by value gets a stack slot of its own"
)]
pub fn schedule(svc: &Service, pkt: &Packet, now: u64) -> Result<(u32, &'static Real), Stat> {
    if svc.flags & SVC_F_PERSISTENT == 0 {
        return from_table(svc, pkt);
    }
    let key = persist_key(svc, pkt);
    let timeout_ns = svc.persist_timeout_s as u64 * NS_PER_S;
    if let Some(t) = PERSIST.get_ptr_mut(&key) {
        // SAFETY: a map value, valid while the program runs (an LRU element is never
        // freed under a running program); its fields are integers, so a concurrent
        // write from another CPU makes them stale, never invalid.
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
