//! The connection table seen from userspace: a scan of the memory-mapped buckets
//! (listing, counting) and the removal of entries, which claims each bucket it writes
//! exactly as the data path does (see `director_common::conntable::ConnBucket`).

use std::sync::atomic::{AtomicU64, Ordering};

use aya::maps::{Array, MapData};
use director_common::conntable::{CONN_WAYS, Conn, ConnBucket, FlowKey};

use super::{ControlError, mmap::ArrayMapping};

const NAME: &str = director_common::maps::CONNS;

/// A mapping of the whole table.
pub struct ConnTable(ArrayMapping);

impl ConnTable {
    pub fn map(conns: &Array<MapData, ConnBucket>) -> Result<Self, ControlError> {
        Ok(Self(ArrayMapping::new(
            conns,
            NAME,
            size_of::<ConnBucket>(),
        )?))
    }

    /// Visit every occupied way, as a copy (a bucket the data path is writing may be
    /// read half old, half new: a listing is a snapshot of moving state in any case).
    pub fn for_each(&self, mut visit: impl FnMut(&FlowKey, &Conn)) -> Result<(), ControlError> {
        for b in 0..self.0.len() {
            let bucket: ConnBucket = self.0.read(b)?;
            for way in 0..CONN_WAYS {
                if !bucket.keys[way].is_empty() {
                    visit(&bucket.keys[way], &bucket.conns[way]);
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
            let p = self.0.element_ptr::<ConnBucket>(b)?;
            // SAFETY: as in `Claim::take`.
            let word = unsafe { AtomicU64::from_ptr(&raw mut (*p).claim) };
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
    pub fn remove_where(&mut self, doomed: impl Fn(&Conn) -> bool) -> Result<usize, ControlError> {
        let mut removed = 0;
        for b in 0..self.0.len() {
            let bucket: ConnBucket = self.0.read(b)?;
            let picked: Vec<usize> = (0..CONN_WAYS)
                .filter(|&w| !bucket.keys[w].is_empty() && doomed(&bucket.conns[w]))
                .collect();
            if picked.is_empty() {
                continue;
            }
            let p = self.0.element_ptr::<ConnBucket>(b)?;
            let _claim = Claim::take(p);
            for way in picked {
                // SAFETY: `p` points at a mapped bucket; under the claim no other writer
                // touches it, and the data path's readers only read.
                unsafe {
                    let key = &raw mut (*p).keys[way];
                    let conn = (&raw const (*p).conns[way]).read_volatile();
                    // Look again under the claim: the way may hold another flow by now.
                    if key.read_volatile() == bucket.keys[way] && doomed(&conn) {
                        key.write_volatile(FlowKey::default());
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
    fn take(bucket: *mut ConnBucket) -> Self {
        // SAFETY: the claim word of a mapped bucket: 8-byte aligned shared memory that
        // the data path only ever accesses atomically.
        let word = unsafe { AtomicU64::from_ptr(&raw mut (*bucket).claim) };
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
