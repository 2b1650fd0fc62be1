//! Where flows are kept: the connection tables (`DIR_CONNS` for IPv4, `DIR_CONNS6` for
//! IPv6; buckets of `CONN_WAYS` entries, the layout and its reasons are on
//! `ConnBucket`). One implementation serves both: the functions are generic over the
//! key type ([`Flow`]), and each table gets its own copy of the code, compiled for its
//! key, so IPv4's is what it was before IPv6 existed.
//!
//! Every key has two candidate buckets, from two halves of one seeded hash ("power of
//! two choices"): a lookup compares the keys of the first and, only if the flow is not
//! there, of the second; no helper call (the verifier inlines array lookups), no list
//! walk. A new flow goes to whichever candidate has room, which keeps a full bucket (and
//! an eviction) rare until the table is nearly full; with one candidate, buckets of
//! four overflow when the table is a quarter full.

use core::{
    intrinsics::{AtomicOrdering, atomic_cxchg, atomic_xchg},
    ptr::{null_mut, read_volatile, write_volatile},
};

use director_common::{
    addr::v4_of_16,
    config::Settings,
    conn_state::{ConnState, alive},
    conntable::{CONN_WAYS, Conn, Conn6, ConnBucket, ConnBucket6, FlowKey, FlowKey6},
    hash::{conn_buckets, hash_conn, hash_conn6},
    stats::Stat,
};

use crate::{
    maps::{CONNS, CONNS6, conn_bucket_mask},
    parse::Packet,
    stats::count,
};

/// The table's key of a packet's flow: its 5-tuple as it arrived.
#[inline(always)]
pub fn flow_key(pkt: &Packet) -> FlowKey {
    FlowKey {
        src: v4_of_16(&pkt.src),
        dst: v4_of_16(&pkt.dst),
        sport_be: pkt.sport_be,
        dport_be: pkt.dport_be,
        proto: pkt.proto,
        _pad0: 0,
        _pad1: 0,
    }
}

/// The IPv6 table's key of a packet's flow.
#[inline(always)]
pub fn flow_key6(pkt: &Packet) -> FlowKey6 {
    FlowKey6 {
        src: pkt.src,
        dst: pkt.dst,
        sport_be: pkt.sport_be,
        dport_be: pkt.dport_be,
        proto: pkt.proto,
        _pad0: 0,
        _pad1: 0,
    }
}

/// A connection table's key, and through it the table: its bucket and entry types, the
/// map, how keys are hashed and compared.
pub trait Flow: Copy + 'static {
    /// The entry a way holds.
    type Entry: Entry;
    /// The bucket type, an element of the table's array map.
    type Bucket: Bucket<Self> + 'static;
    /// The key as the words a bucket scan compares.
    type Words: Words;
    fn words(&self) -> Self::Words;
    /// The key's bucket hash under the table's seed.
    fn hash(&self, seed: u32) -> u32;
    fn is_empty(&self) -> bool;
    /// The bucket at `index` of the table, if the table has it.
    fn bucket(index: u32) -> Option<*mut Self::Bucket>;
}

/// A key's words, compared without a `memcmp` call (which `==` on an array of more
/// than two words becomes).
pub trait Words: Copy {
    fn same(&self, other: &Self) -> bool;
}

impl Words for [u64; 2] {
    #[inline(always)]
    fn same(&self, other: &Self) -> bool {
        self == other
    }
}

impl Words for [u64; 5] {
    #[inline(always)]
    fn same(&self, other: &Self) -> bool {
        same5(self, other)
    }
}

/// Five words compared, in a BPF function of its own: inlined at each of the ways an
/// IPv6 lookup compares, the comparisons multiply the paths the verifier explores in
/// the new-flow program past its limit.
#[inline(never)]
fn same5(a: &[u64; 5], b: &[u64; 5]) -> bool {
    let mut diff = 0;
    for i in 0..5 {
        diff |= a[i] ^ b[i];
    }
    diff == 0
}

/// An entry's fields that the table itself reads and writes.
pub trait Entry: Copy {
    fn state(&self) -> u8;
    fn last_seen_ns(&self) -> u64;
    /// Record a packet: its state and time.
    fn seen(&mut self, state: u8, now: u64);
}

/// A bucket of `CONN_WAYS` keys and entries and its claim word.
pub trait Bucket<K: Flow> {
    fn keys(&self) -> &[K; CONN_WAYS];
    fn keys_mut(&mut self) -> &mut [K; CONN_WAYS];
    fn conns(&self) -> &[K::Entry; CONN_WAYS];
    fn conns_mut(&mut self) -> &mut [K::Entry; CONN_WAYS];
    fn claim(&mut self) -> &mut u64;
}

impl Flow for FlowKey {
    type Entry = Conn;
    type Bucket = ConnBucket;
    type Words = [u64; 2];
    #[inline(always)]
    fn words(&self) -> [u64; 2] {
        FlowKey::words(self)
    }
    #[inline(always)]
    fn hash(&self, seed: u32) -> u32 {
        hash_conn(self.halves(), seed)
    }
    #[inline(always)]
    fn is_empty(&self) -> bool {
        FlowKey::is_empty(self)
    }
    #[inline(always)]
    fn bucket(index: u32) -> Option<*mut ConnBucket> {
        CONNS.get_ptr_mut(index)
    }
}

impl Flow for FlowKey6 {
    type Entry = Conn6;
    type Bucket = ConnBucket6;
    type Words = [u64; 5];
    #[inline(always)]
    fn words(&self) -> [u64; 5] {
        FlowKey6::words(self)
    }
    #[inline(always)]
    fn hash(&self, seed: u32) -> u32 {
        hash_conn6(self.halves(), seed)
    }
    #[inline(always)]
    fn is_empty(&self) -> bool {
        FlowKey6::is_empty(self)
    }
    #[inline(always)]
    fn bucket(index: u32) -> Option<*mut ConnBucket6> {
        CONNS6.get_ptr_mut(index)
    }
}

macro_rules! entry_and_bucket {
    ($entry:ty, $bucket:ty, $key:ty) => {
        impl Entry for $entry {
            #[inline(always)]
            fn state(&self) -> u8 {
                self.state
            }
            #[inline(always)]
            fn last_seen_ns(&self) -> u64 {
                self.last_seen_ns
            }
            #[inline(always)]
            fn seen(&mut self, state: u8, now: u64) {
                self.state = state;
                self.last_seen_ns = now;
            }
        }

        impl Bucket<$key> for $bucket {
            #[inline(always)]
            fn keys(&self) -> &[$key; CONN_WAYS] {
                &self.keys
            }
            #[inline(always)]
            fn keys_mut(&mut self) -> &mut [$key; CONN_WAYS] {
                &mut self.keys
            }
            #[inline(always)]
            fn conns(&self) -> &[$entry; CONN_WAYS] {
                &self.conns
            }
            #[inline(always)]
            fn conns_mut(&mut self) -> &mut [$entry; CONN_WAYS] {
                &mut self.conns
            }
            #[inline(always)]
            fn claim(&mut self) -> &mut u64 {
                &mut self.claim
            }
        }
    };
}

entry_and_bucket!(Conn, ConnBucket, FlowKey);
entry_and_bucket!(Conn6, ConnBucket6, FlowKey6);

/// What [`find`] learnt about a flow: its candidate buckets and, when the table holds
/// the flow, where.
///
/// Plain pointers and a way number, null and 0 when absent, rather than `Option`s: an
/// `Option`'s payload is undefined when it is `None`, LLVM may then spill a register it
/// never wrote, and the verifier refuses to read one.
pub struct Lookup<K: Flow> {
    /// Null only if the table is smaller than its mask says (a loader bug; flows are
    /// then forwarded without being recorded).
    first: *mut K::Bucket,
    second: *mut K::Bucket,
    /// The bucket holding the flow, or null.
    found: *mut K::Bucket,
    way: usize,
}

/// The buckets `key` may be in, and where its entry is if the table holds the flow.
#[inline(always)]
pub fn find<K: Flow>(key: &K, seed: u32) -> Lookup<K> {
    let (a, b) = conn_buckets(key.hash(seed), conn_bucket_mask());
    let none = null_mut();
    let Some(first) = K::bucket(a) else {
        return Lookup {
            first: none,
            second: none,
            found: none,
            way: 0,
        };
    };
    // SAFETY: a pointer from a map lookup is valid for as long as the program runs;
    // the bucket is only read here (another CPU may write it meanwhile: a torn key
    // reads as no match).
    let way = way_of(unsafe { &*first }, key);
    if way < CONN_WAYS {
        return Lookup {
            first,
            second: first,
            found: first,
            way,
        };
    }
    let second = K::bucket(b).unwrap_or(first);
    // SAFETY: as for `first`.
    let way = way_of(unsafe { &*second }, key);
    Lookup {
        first,
        second,
        found: if way < CONN_WAYS { second } else { none },
        way: if way < CONN_WAYS { way } else { 0 },
    }
}

/// The way holding `key`, or `CONN_WAYS`.
#[inline(always)]
fn way_of<K: Flow>(bucket: &K::Bucket, key: &K) -> usize {
    let want = key.words();
    let mut way = CONN_WAYS;
    for i in (0..CONN_WAYS).rev() {
        if bucket.keys()[i].words().same(&want) {
            way = i;
        }
    }
    way
}

impl<K: Flow> Lookup<K> {
    /// A copy of the flow's entry, if the table holds the flow. Readers take no claim:
    /// the entry is read word by word (the real and the service share a word, so they
    /// always come from one write), then the key again, so a way another CPU gave to a
    /// new flow meanwhile reads as a miss rather than as the new flow's entry. (A writer
    /// clears the key before it writes the entry, and x86 keeps both stores and loads in
    /// order: a reader that saw any of the new entry sees the cleared key.)
    #[inline(always)]
    pub fn entry(&self, key: &K) -> Option<K::Entry> {
        if self.found.is_null() {
            return None;
        }
        // SAFETY: not null, so from a map lookup: valid while the program runs.
        let bucket = unsafe { &*self.found };
        let conn: K::Entry = read_words(bucket.conns().get(self.way)?);
        self.holds(key).then_some(conn)
    }

    /// The flow's way still holds its key (read now, not from the lookup).
    #[inline(always)]
    fn holds(&self, key: &K) -> bool {
        // SAFETY: callers check `found` is not null; a map value pointer is valid while
        // the program runs.
        match unsafe { (*self.found).keys().get(self.way) } {
            Some(k) => read_words::<K::Words, _>(k).same(&key.words()),
            None => false,
        }
    }

    /// Record a packet of the flow whose entry `conn` is (a copy from [`Lookup::entry`]):
    /// its new state and time, written only when they changed (the coarse clock ticks
    /// every few ms), so a line every CPU reads stays clean for most packets. Returns
    /// whether anything was written. No claim: the way is checked to hold the flow just
    /// before; should another CPU give it to a new flow in the instructions between,
    /// the time or state lands on that flow's entry (its timeout counted from now),
    /// never its real.
    #[inline(always)]
    pub fn touch(&self, key: &K, conn: &K::Entry, state: u8, now: u64) -> bool {
        if conn.state() == state && conn.last_seen_ns() == now {
            return false;
        }
        if self.found.is_null() || !self.holds(key) {
            return false;
        }
        // SAFETY: `found` is not null (checked above), so a map value pointer, valid
        // while the program runs; the write races only with the cases the comment above
        // accepts.
        let Some(entry) = (unsafe { (*self.found).conns_mut().get_mut(self.way) }) else {
            return false;
        };
        entry.seen(state, now);
        true
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
///
/// With `spare_established` (during a flood), a live established connection is never
/// replaced: nothing is written when both candidate buckets hold only those. Returns
/// whether the entry was written.
#[inline(always)]
pub fn store<K: Flow>(
    lookup: &Lookup<K>,
    key: &K,
    conn: &K::Entry,
    now: u64,
    settings: &Settings,
    spare_established: bool,
) -> bool {
    let bucket = if !lookup.found.is_null() {
        // SAFETY: a non-null pointer from a map lookup, valid while the program runs.
        // Other CPUs may write the bucket meanwhile: ways are only written under the
        // claim taken below, and readers tolerate the races described on
        // `Lookup::entry`.
        unsafe { &mut *lookup.found }
    } else if lookup.first.is_null() {
        return false;
    } else {
        // SAFETY: as above; `second` is `first` or another bucket, never null when
        // `first` is not.
        let (first, second) = unsafe { (&mut *lookup.first, &mut *lookup.second) };
        let (_, room_first) = victim::<K>(first, now, settings);
        let (_, room_second) = victim::<K>(second, now, settings);
        // The emptier bucket; between two full ones, the one whose victim is older.
        if room_second > room_first {
            second
        } else {
            first
        }
    };
    // BPF_CMPXCHG (the bpfel target offers no atomics with compare-and-swap in
    // core::sync, and 32-bit ones need ALU32).
    // SAFETY: `claim` is an aligned u64 inside a map value, valid while the program
    // runs; every access to it from other CPUs is atomic too.
    let (_, claimed) = unsafe {
        atomic_cxchg::<u64, { AtomicOrdering::Acquire }, { AtomicOrdering::Relaxed }>(
            bucket.claim(),
            0,
            1,
        )
    };
    if !claimed {
        count(Stat::ConnInsertFailed);
        return false;
    }
    // Under the claim, look (again): the flow may have been stored here by another CPU
    // since our lookup, or its way given to another flow. (A flow stored into its other
    // candidate bucket at the same instant has two entries; the one found first is kept
    // up to date, the other times out.)
    let mut way = way_of(bucket, key);
    if way == CONN_WAYS {
        // The way is chosen here, under the claim, again: the scan before it only picked
        // the bucket, and other writers may have filled ways since.
        let (victim_way, room) = victim::<K>(bucket, now, settings);
        if spare_established && room < Room::Live(Rank::Closing, 0) {
            // SAFETY: as for the compare-and-swap above; this releases our claim.
            unsafe { atomic_xchg::<u64, { AtomicOrdering::Release }>(bucket.claim(), 0) };
            return false;
        }
        if matches!(room, Room::Live(..)) {
            count(Stat::ConnEvicted);
        }
        way = victim_way;
        // Clear the old key first and write the new one last, so a lock-free reader
        // matches either the old flow with its old entry or the new flow with its new
        // one (see `Lookup::entry`; volatile stores keep the compiler from reordering
        // them, as the BPF back end has no fence to select).
        write_zero(&mut bucket.keys_mut()[way]);
    }
    // A rewrite in place keeps the key: a reader may then copy words of both the old
    // and the new entry of the same flow, and the real and the service share a word.
    write_words(&mut bucket.conns_mut()[way], conn);
    write_words(&mut bucket.keys_mut()[way], &key.words());
    // SAFETY: as for the compare-and-swap above; this releases our claim.
    unsafe { atomic_xchg::<u64, { AtomicOrdering::Release }>(bucket.claim(), 0) };
    true
}

/// How much a live entry is worth keeping, from most to least: a new entry replaces
/// the lowest rank there is, and the least recently seen entry of that rank. A flood of
/// new flows (SYNs, or packets of unknown flows) then displaces its own kind, never a
/// connection that has proven itself.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Rank {
    /// Established TCP, UDP.
    Established,
    /// FIN seen: closing anyway.
    Closing,
    /// SYN_RECV (a SYN, or one packet of a flow met mid-connection, not confirmed by a
    /// second) and CLOSE.
    Unconfirmed,
}

#[inline(always)]
fn rank(state: u8) -> Rank {
    if state == ConnState::SynRecv as u8 || state == ConnState::Close as u8 {
        Rank::Unconfirmed
    } else if state == ConnState::FinWait as u8 {
        Rank::Closing
    } else {
        Rank::Established
    }
}

/// What a new entry would replace, from worst to best.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Room {
    /// A live entry (its rank, and ns since it was seen): an eviction.
    Live(Rank, u64),
    /// An entry that timed out.
    Dead,
    /// An empty way, and how many the bucket has: a new flow goes to the emptier of
    /// its two buckets ("power of two choices" balances by occupancy).
    Empty(usize),
}

/// The way a new entry takes in `bucket`: the first empty one (the keys' line alone
/// tells), else the first that timed out, else the least recently seen of the lowest
/// [`Rank`].
#[inline(always)]
fn victim<K: Flow>(bucket: &K::Bucket, now: u64, settings: &Settings) -> (usize, Room) {
    let mut empty = None;
    let mut empties = 0;
    for way in 0..CONN_WAYS {
        if bucket.keys()[way].is_empty() {
            empties += 1;
            if empty.is_none() {
                empty = Some(way);
            }
        }
    }
    if let Some(way) = empty {
        return (way, Room::Empty(empties));
    }
    let mut best = 0;
    let mut best_room = Room::Live(Rank::Established, 0);
    for way in 0..CONN_WAYS {
        let c = &bucket.conns()[way];
        let room = if alive(c.state(), c.last_seen_ns(), now, settings) {
            Room::Live(rank(c.state()), now.saturating_sub(c.last_seen_ns()))
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

/// `src` read as 8-byte volatile loads, in order.
#[inline(always)]
fn read_words<T, S>(src: &S) -> T {
    const { assert!(size_of::<T>() == size_of::<S>() && size_of::<T>().is_multiple_of(8)) };
    let mut out = core::mem::MaybeUninit::<T>::uninit();
    let d = out.as_mut_ptr().cast::<u64>();
    let s = (src as *const S).cast::<u64>();
    for i in 0..size_of::<T>() / 8 {
        // SAFETY: `i` words stay inside both values (same size, a multiple of 8); `src`
        // is a reference into a map value (8-aligned: `ConnBucket` is) and `out` is
        // ours; the values are plain integers.
        unsafe { d.add(i).write(read_volatile(s.add(i))) };
    }
    // SAFETY: the loop wrote every word of `out`, and any bits are a valid `T` (a
    // `Conn` or a key: plain integers).
    unsafe { out.assume_init() }
}

/// Copy `src` over `dst` as 8-byte volatile stores, in order.
#[inline(always)]
fn write_words<T, S>(dst: &mut T, src: &S) {
    const { assert!(size_of::<T>() == size_of::<S>() && size_of::<T>().is_multiple_of(8)) };
    let d = (dst as *mut T).cast::<u64>();
    let s = (src as *const S).cast::<u64>();
    for i in 0..size_of::<T>() / 8 {
        // SAFETY: `i` words stay inside both values (same size, a multiple of 8); `dst`
        // is a mutable reference into a map value and `src` a reference, both 8-aligned;
        // the values are plain integers.
        unsafe { write_volatile(d.add(i), *s.add(i)) };
    }
}

/// Zero `dst` with 8-byte volatile stores, in order (a key being given up).
#[inline(always)]
fn write_zero<T>(dst: &mut T) {
    const { assert!(size_of::<T>().is_multiple_of(8)) };
    let d = (dst as *mut T).cast::<u64>();
    for i in 0..size_of::<T>() / 8 {
        // SAFETY: `i` words stay inside `dst`, a mutable reference into a map value,
        // 8-aligned; zero is a valid key (an empty way).
        unsafe { write_volatile(d.add(i), 0) };
    }
}
