//! Where flows are kept: the connection table (`DIR_CONNS`, buckets of `CONN_WAYS`
//! entries; the layout and its reasons are on `ConnBucket`).
//!
//! Every key has two candidate buckets, from two halves of one seeded hash ("power of
//! two choices"): a lookup compares the keys of the first and, only if the flow is not
//! there, of the second; no helper call (the verifier inlines array lookups), no list
//! walk. A new flow goes to whichever candidate has room, which keeps a full bucket (and
//! an eviction) rare until the table is nearly full; with one candidate, buckets of
//! four overflow when the table is a quarter full.

use core::{
    intrinsics::{AtomicOrdering, atomic_cxchg, atomic_xchg},
    ptr::write_volatile,
};

use director_common::{
    config::Settings,
    conntrack::{CONN_WAYS, Conn, ConnBucket, FlowKey},
    hash::{conn_buckets, hash_conn},
    stats::Stat,
};

use crate::{
    conntrack::alive,
    maps::{CONNS, conn_bucket_mask},
    stats::count,
};

/// A flow's candidate buckets and, when the table holds the flow, where.
pub struct Slot {
    first: *mut ConnBucket,
    second: *mut ConnBucket,
    found: Option<(*mut ConnBucket, usize)>,
}

/// The buckets `key` may be in, and its entry if the table holds the flow. `None` only
/// if the table is smaller than its mask says (a loader bug; the flow is then not
/// recorded).
#[inline(always)]
pub fn find(key: &FlowKey, seed: u32) -> Option<Slot> {
    let (a, b) = conn_buckets(hash_conn(key.halves(), seed), conn_bucket_mask());
    let first = CONNS.get_ptr_mut(a)?;
    if let Some(way) = way_of(unsafe { &*first }, key) {
        return Some(Slot {
            first,
            second: first,
            found: Some((first, way)),
        });
    }
    let second = CONNS.get_ptr_mut(b)?;
    let found = way_of(unsafe { &*second }, key).map(|way| (second, way));
    Some(Slot {
        first,
        second,
        found,
    })
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
        let (bucket, way) = self.found?;
        unsafe { (*bucket).conns.get_mut(way) }
    }
}

/// Record `conn` for `key`, under the claim of the bucket it goes into: where the flow
/// already is (a SYN of a known 5-tuple, an expired entry, a flow whose real left), else
/// the candidate bucket with the most room. If another CPU holds the claim at this
/// instant the entry is not written (counted); the flow's next packet is scheduled to
/// the same real by the consistent hash and records it then.
///
/// Rewriting a found entry takes the claim too: without it, another CPU could give that
/// way to a new flow between our lookup and our write, and the way would end with one
/// flow's key and the other's entry.
#[inline(always)]
pub fn store(slot: &Slot, key: &FlowKey, conn: &Conn, now: u64, settings: &Settings) {
    let bucket = match slot.found {
        Some((bucket, _)) => unsafe { &mut *bucket },
        None => {
            let (first, second) = unsafe { (&mut *slot.first, &mut *slot.second) };
            let (_, room_first) = victim(first, now, settings);
            let (_, room_second) = victim(second, now, settings);
            // The emptier bucket; between two full ones, the one whose victim is older.
            if room_second > room_first {
                second
            } else {
                first
            }
        }
    };
    // BPF_CMPXCHG (the bpfel target offers no atomics with compare-and-swap in
    // core::sync, and 32-bit ones need ALU32).
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
    // Under the claim, look (again): the flow may have been stored here by another CPU
    // since our lookup, or its way given to another flow. (A flow stored into its other
    // candidate bucket at the same instant has two entries; the one found first is kept
    // up to date, the other times out.)
    let way = match way_of(bucket, key) {
        Some(way) => way,
        None => {
            let (way, room) = victim(bucket, now, settings);
            if let Room::Live(_) = room {
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

/// What a new entry would replace, from worst to best.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Room {
    /// A live entry, the least recently seen one (ns since it was seen): an eviction.
    Live(u64),
    /// An entry that timed out.
    Dead,
    Empty,
}

/// The way a new entry takes in `bucket`: the first empty one, else the first that timed
/// out, else the least recently seen.
#[inline(always)]
fn victim(bucket: &ConnBucket, now: u64, settings: &Settings) -> (usize, Room) {
    let mut best = 0;
    let mut best_room = Room::Live(0);
    for way in 0..CONN_WAYS {
        if bucket.keys[way].is_empty() {
            return (way, Room::Empty);
        }
        let c = &bucket.conns[way];
        let room = if alive(c.state, c.last_seen_ns, now, settings) {
            Room::Live(now.wrapping_sub(c.last_seen_ns))
        } else {
            Room::Dead
        };
        if room > best_room || way == 0 {
            best = way;
            best_room = room;
        }
    }
    (best, best_room)
}

/// Copy `src` over `dst` as 8-byte volatile stores, in order.
#[inline(always)]
fn write_words<T, S>(dst: &mut T, src: &S) {
    const { assert!(size_of::<T>() == size_of::<S>() && size_of::<T>().is_multiple_of(8)) };
    let d = (dst as *mut T).cast::<u64>();
    let s = (src as *const S).cast::<u64>();
    for i in 0..size_of::<T>() / 8 {
        unsafe { write_volatile(d.add(i), *s.add(i)) };
    }
}
