//! Where flows are kept: the set-associative connection table (`DIR_CONNS`, buckets of
//! `CONN_WAYS` entries; the layout and its reasons are on `ConnBucket`).
//!
//! A lookup hashes the key with the table's seed, reads the bucket's line of keys and
//! compares them: no helper call (the verifier inlines array lookups), no list walk.
//! A store either rewrites the flow's entry in place or, for a flow the table does not
//! hold, claims the bucket and fills an empty, dead or least recently seen way.

use core::{
    intrinsics::{AtomicOrdering, atomic_cxchg, atomic_xchg},
    ptr::write_volatile,
};

use director_common::{
    config::Settings,
    conntrack::{CONN_WAYS, Conn, ConnBucket, FlowKey},
    hash::hash_conn,
    stats::Stat,
};

use crate::{
    conntrack::alive,
    maps::{CONNS, conn_bucket_mask},
    stats::count,
};

/// A flow's bucket and, when the table holds the flow, its way.
pub struct Slot {
    bucket: *mut ConnBucket,
    way: Option<usize>,
}

/// The bucket `key` belongs to, and its way if the flow is there. `None` only if the
/// table is smaller than its mask says (a loader bug; the flow is then not recorded).
#[inline(always)]
pub fn find(key: &FlowKey, seed: u32) -> Option<Slot> {
    let index = hash_conn(key.halves(), seed) & conn_bucket_mask();
    let bucket = CONNS.get_ptr_mut(index)?;
    let way = way_of(unsafe { &*bucket }, key);
    Some(Slot { bucket, way })
}

#[inline(always)]
fn way_of(bucket: &ConnBucket, key: &FlowKey) -> Option<usize> {
    let want = key.words();
    (0..CONN_WAYS).find(|&i| bucket.keys[i].words() == want)
}

impl Slot {
    /// The flow's entry, if the table holds it.
    #[inline(always)]
    pub fn conn(&self) -> Option<&'static mut Conn> {
        let way = self.way?;
        unsafe { (*self.bucket).conns.get_mut(way) }
    }
}

/// Record `conn` for `key`: in place where the flow already is (a SYN of a known
/// 5-tuple, an expired entry, a flow whose real left: no claim needed, the flow owns its
/// way), else in a way chosen under the bucket's claim. If another CPU holds the claim
/// at this instant the entry is not written (counted); the flow's next packet is
/// scheduled to the same real by the consistent hash and records it then.
#[inline(always)]
pub fn store(slot: &Slot, key: &FlowKey, conn: &Conn, now: u64, settings: &Settings) {
    if let Some(entry) = slot.conn() {
        *entry = *conn;
        return;
    }
    let bucket = unsafe { &mut *slot.bucket };
    // BPF_CMPXCHG (the bpfel target offers no AtomicU32 with compare-and-swap).
    let (_, claimed) = unsafe {
        atomic_cxchg::<u64, { AtomicOrdering::Acquire }, { AtomicOrdering::Relaxed }>(
            &mut bucket.claim,
            0,
            1,
        )
    };
    if !claimed {
        count(Stat::ConnInsertFailed);
        return;
    }
    // Under the claim, look again: another CPU may have stored this flow since our
    // lookup, and a flow must never hold two ways.
    let way = match way_of(bucket, key) {
        Some(way) => way,
        None => {
            let way = victim(bucket, now, settings);
            let old = &bucket.keys[way];
            if !old.is_empty()
                && alive(
                    bucket.conns[way].state,
                    bucket.conns[way].last_seen_ns,
                    now,
                    settings,
                )
            {
                count(Stat::ConnEvicted);
            }
            // Clear the old key first and write the new one last, so a lock-free reader
            // matches either the old flow with its old entry or the new flow with its
            // new one (x86 keeps stores in order; volatile stores keep the compiler
            // from reordering them, as the BPF back end has no fence to select).
            write_words(&mut bucket.keys[way], &[0u64; 2]);
            way
        }
    };
    write_words(&mut bucket.conns[way], conn);
    write_words(&mut bucket.keys[way], &key.words());
    unsafe { atomic_xchg::<u64, { AtomicOrdering::Release }>(&mut bucket.claim, 0) };
}

/// The way a new entry takes: the first empty one, else the first that timed out,
/// else the least recently seen.
#[inline(always)]
fn victim(bucket: &ConnBucket, now: u64, settings: &Settings) -> usize {
    let mut best = 0;
    let mut best_age = 0u64;
    for way in 0..CONN_WAYS {
        let age = if bucket.keys[way].is_empty() {
            return way;
        } else {
            let c = &bucket.conns[way];
            if alive(c.state, c.last_seen_ns, now, settings) {
                now.wrapping_sub(c.last_seen_ns)
            } else {
                u64::MAX
            }
        };
        if age > best_age || way == 0 {
            best = way;
            best_age = age;
        }
    }
    best
}

/// Copy `src` over `dst` as 8-byte volatile stores, in order.
#[inline(always)]
fn write_words<T, S>(dst: &mut T, src: &S) {
    const { assert!(size_of::<T>() == size_of::<S>() && size_of::<T>() % 8 == 0) };
    let d = (dst as *mut T).cast::<u64>();
    let s = (src as *const S).cast::<u64>();
    for i in 0..size_of::<T>() / 8 {
        unsafe { write_volatile(d.add(i), *s.add(i)) };
    }
}
