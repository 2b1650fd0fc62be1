//! The connection table seen from userspace: a scan of the memory-mapped buckets
//! (listing, counting) and the removal of entries, which claims each bucket it writes
//! exactly as the data path does (see `director_common::conntrack::ConnBucket`).

use std::sync::atomic::{AtomicU64, Ordering};

use aya::maps::{Array, MapData};
use director_common::conntrack::{CONN_WAYS, Conn, ConnBucket, FlowKey};

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

    /// Every occupied way, as a copy (a bucket the data path is writing may be read
    /// half old, half new: a listing is a snapshot of moving state in any case).
    pub fn entries(&self) -> Result<Vec<(FlowKey, Conn)>, ControlError> {
        let mut out = Vec::new();
        for b in 0..self.0.len() {
            let bucket: ConnBucket = self.0.read(b)?;
            for way in 0..CONN_WAYS {
                if !bucket.keys[way].is_empty() {
                    out.push((bucket.keys[way], bucket.conns[way]));
                }
            }
        }
        Ok(out)
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
                    let key = std::ptr::addr_of_mut!((*p).keys[way]);
                    let conn = std::ptr::addr_of!((*p).conns[way]).read_volatile();
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

/// A bucket's writer claim, held until dropped.
struct Claim<'a>(&'a AtomicU64);

impl Claim<'_> {
    fn take(bucket: *mut ConnBucket) -> Self {
        // SAFETY: the claim word of a mapped bucket: 8-byte aligned shared memory that
        // the data path only ever accesses atomically.
        let word = unsafe { AtomicU64::from_ptr(std::ptr::addr_of_mut!((*bucket).claim)) };
        // The data path holds a claim for a few dozen instructions and never sleeps. A
        // claim held for a whole millisecond was left by a userspace writer killed inside
        // its critical section (a few stores long): take it over rather than leave the
        // bucket closed to new entries for good.
        let start = std::time::Instant::now();
        while word
            .compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            if start.elapsed() > std::time::Duration::from_millis(1) {
                word.store(1, Ordering::SeqCst);
                break;
            }
            std::hint::spin_loop();
        }
        Claim(word)
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.0.store(0, Ordering::Release);
    }
}
