//! The connection tables seen from userspace: a scan of the memory-mapped buckets
//! (listing, counting) and the removal of entries, which claims each bucket it writes
//! exactly as the data path does (see `director_common::conntable::ConnBucket`).
//!
//! IPv4 flows and IPv6 flows live in two tables (`DIR_CONNS`, `DIR_CONNS6`) whose
//! buckets differ only in the size of their keys and entries; [`Bucket`] names what the
//! scans need of either, so each scan is written once.

use std::{
    marker::PhantomData,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::atomic::{AtomicU64, Ordering},
};

use aya::{
    Pod,
    maps::{Array, MapData},
};
use director_common::conntable::{
    CONN_WAYS, Conn, Conn6, ConnBucket, ConnBucket6, FlowKey, FlowKey6,
};

use super::{ControlError, mmap::ArrayMapping};

/// The fields every entry has, whatever its table: what the census, the purge of a
/// removed real and the expiry need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryMeta {
    pub last_seen_ns: u64,
    pub real: u32,
    pub service: u32,
    pub state: u8,
    pub flags: u8,
}

/// A flow's addresses as one entry holds them, in either family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowAddrs {
    pub proto: u8,
    pub source: SocketAddr,
    pub destination: SocketAddr,
    /// The virtual service the client used.
    pub vip: SocketAddr,
}

/// A bucket layout of a connection table: [`ConnBucket`] or [`ConnBucket6`].
pub trait Bucket: Pod {
    /// The key of one way.
    type Key: Copy + PartialEq + Default;
    /// The entry of one way.
    type Entry: Copy;
    /// The table's map name.
    const NAME: &'static str;
    /// The keys of the bucket's ways.
    fn keys(&self) -> &[Self::Key; CONN_WAYS];
    /// The entries of the bucket's ways.
    fn entries(&self) -> &[Self::Entry; CONN_WAYS];
    /// No flow is stored under this key.
    fn is_free(key: &Self::Key) -> bool;
    /// The family-independent fields of an entry.
    fn meta(entry: &Self::Entry) -> EntryMeta;
    /// The addresses of a way's flow.
    fn addrs(key: &Self::Key, entry: &Self::Entry) -> FlowAddrs;
    /// The claim word of the bucket at `p`.
    ///
    /// # Safety
    /// `p` points at a bucket (mapped memory is fine: only the address is taken).
    unsafe fn claim(p: *mut Self) -> *mut u64;
    /// The key of way `way` of the bucket at `p`.
    ///
    /// # Safety
    /// As [`Bucket::claim`]; `way < CONN_WAYS`.
    unsafe fn key_at(p: *mut Self, way: usize) -> *mut Self::Key;
    /// The entry of way `way` of the bucket at `p`.
    ///
    /// # Safety
    /// As [`Bucket::key_at`].
    unsafe fn entry_at(p: *mut Self, way: usize) -> *const Self::Entry;
}

macro_rules! bucket {
    ($bucket:ty, $key:ty, $entry:ty, $name:expr, $ip:expr) => {
        impl Bucket for $bucket {
            type Key = $key;
            type Entry = $entry;
            const NAME: &'static str = $name;
            fn keys(&self) -> &[$key; CONN_WAYS] {
                &self.keys
            }
            fn entries(&self) -> &[$entry; CONN_WAYS] {
                &self.conns
            }
            fn is_free(key: &$key) -> bool {
                key.is_empty()
            }
            fn meta(c: &$entry) -> EntryMeta {
                EntryMeta {
                    last_seen_ns: c.last_seen_ns,
                    real: c.real,
                    service: c.service,
                    state: c.state,
                    flags: c.flags,
                }
            }
            fn addrs(k: &$key, c: &$entry) -> FlowAddrs {
                let ip = $ip;
                FlowAddrs {
                    proto: k.proto,
                    source: SocketAddr::new(ip(k.src), u16::from_be(k.sport_be)),
                    destination: SocketAddr::new(ip(k.dst), u16::from_be(k.dport_be)),
                    vip: SocketAddr::new(ip(c.vaddr), u16::from_be(c.vport_be)),
                }
            }
            unsafe fn claim(p: *mut Self) -> *mut u64 {
                // SAFETY: the caller's pointer is a bucket's; no reference is made.
                unsafe { &raw mut (*p).claim }
            }
            unsafe fn key_at(p: *mut Self, way: usize) -> *mut $key {
                // SAFETY: as in `claim`.
                unsafe { &raw mut (*p).keys[way] }
            }
            unsafe fn entry_at(p: *mut Self, way: usize) -> *const $entry {
                // SAFETY: as in `claim`.
                unsafe { &raw const (*p).conns[way] }
            }
        }
    };
}

bucket!(
    ConnBucket,
    FlowKey,
    Conn,
    director_common::maps::CONNS,
    |a: [u8; 4]| IpAddr::V4(Ipv4Addr::from(a))
);
bucket!(
    ConnBucket6,
    FlowKey6,
    Conn6,
    director_common::maps::CONNS6,
    |a: [u8; 16]| IpAddr::V6(Ipv6Addr::from(a))
);

/// A mapping of a whole table.
pub struct ConnTable<B>(ArrayMapping, PhantomData<B>);

impl<B: Bucket> ConnTable<B> {
    pub fn map(conns: &Array<MapData, B>) -> Result<Self, ControlError> {
        Ok(Self(
            ArrayMapping::new(conns, B::NAME, size_of::<B>())?,
            PhantomData,
        ))
    }

    /// Visit every occupied way, as a copy (a bucket the data path is writing may be
    /// read half old, half new: a listing is a snapshot of moving state in any case).
    pub fn for_each(&self, mut visit: impl FnMut(&B::Key, &B::Entry)) -> Result<(), ControlError> {
        for b in 0..self.0.len() {
            let bucket: B = self.0.read(b)?;
            for way in 0..CONN_WAYS {
                if !B::is_free(&bucket.keys()[way]) {
                    visit(&bucket.keys()[way], &bucket.entries()[way]);
                }
            }
        }
        Ok(())
    }

    /// Open every bucket a killed userspace writer left claimed (see `USER_CLAIM`);
    /// returns how many. For a writer that found the previous one's marker.
    pub fn release_dead_claims(&mut self) -> Result<usize, ControlError> {
        let mut released = 0;
        for b in 0..self.0.len() {
            let p = self.0.element_ptr::<B>(b)?;
            // SAFETY: as in `Claim::take`.
            let word = unsafe { AtomicU64::from_ptr(B::claim(p)) };
            if word
                .compare_exchange(USER_CLAIM, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                released += 1;
            }
        }
        Ok(released)
    }

    /// Clear every entry `doomed` picks; returns how many were cleared.
    pub fn remove_where(
        &mut self,
        doomed: impl Fn(&EntryMeta) -> bool,
    ) -> Result<usize, ControlError> {
        let mut removed = 0;
        for b in 0..self.0.len() {
            let bucket: B = self.0.read(b)?;
            let picked: Vec<usize> = (0..CONN_WAYS)
                .filter(|&w| {
                    !B::is_free(&bucket.keys()[w]) && doomed(&B::meta(&bucket.entries()[w]))
                })
                .collect();
            if picked.is_empty() {
                continue;
            }
            let p = self.0.element_ptr::<B>(b)?;
            let _claim = Claim::take::<B>(p);
            for way in picked {
                // SAFETY: `p` points at a mapped bucket; under the claim no other writer
                // touches it, and the data path's readers only read.
                unsafe {
                    let key = B::key_at(p, way);
                    let conn = B::entry_at(p, way).read_volatile();
                    // Look again under the claim: the way may hold another flow by now.
                    if key.read_volatile() == bucket.keys()[way] && doomed(&B::meta(&conn)) {
                        key.write_volatile(B::Key::default());
                        removed += 1;
                    }
                }
            }
        }
        Ok(removed)
    }
}

/// The claim value of a userspace writer (the data path's is 1). Userspace writers
/// hold the writers' lock, so a 2 met by one of them was left by a userspace writer
/// killed inside its few stores: taken over at once. A 1 is always waited out: the data
/// path never sleeps holding a claim.
const USER_CLAIM: u64 = 2;

/// A bucket's writer claim, held until dropped.
struct Claim<'a>(&'a AtomicU64);

impl Claim<'_> {
    fn take<B: Bucket>(bucket: *mut B) -> Self {
        // SAFETY: the claim word of a mapped bucket: 8-byte aligned shared memory that
        // the data path only ever accesses atomically.
        let word = unsafe { AtomicU64::from_ptr(B::claim(bucket)) };
        loop {
            match word.compare_exchange_weak(0, USER_CLAIM, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => break,
                Err(USER_CLAIM) => {
                    // Ours to take: a dead writer's (see USER_CLAIM).
                    word.store(USER_CLAIM, Ordering::SeqCst);
                    break;
                }
                Err(_) => std::hint::spin_loop(),
            }
        }
        Claim(word)
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.0.store(0, Ordering::Release);
    }
}
