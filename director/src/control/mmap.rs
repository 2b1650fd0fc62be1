//! A writable mapping of the lookup-table map (created with BPF_F_MMAPABLE): a table of
//! 16,381 entries is one memcpy, not 16,381 map-update syscalls.

use std::{os::fd::AsRawFd as _, ptr::NonNull};

use aya::maps::{Array, IterableMap as _, MapData};

use super::ControlError;

/// Array maps store each value in a slot rounded up to 8 bytes.
const SLOT: usize = 8;

pub struct TableMapping {
    base: NonNull<u8>,
    len: usize,
    entries: u32,
}

// The mapping is plain shared memory owned by this value.
unsafe impl Send for TableMapping {}
unsafe impl Sync for TableMapping {}

impl TableMapping {
    pub fn new(tables: &Array<MapData, u32>) -> Result<Self, ControlError> {
        let entries = tables.len();
        let page = 4096usize;
        let len = (entries as usize * SLOT).div_ceil(page) * page;
        let fd = tables.map().fd().as_fd_raw();
        // SAFETY: mapping a BPF array map fd, shared and writable, of its own size; the
        // result is checked and unmapped on drop.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(ControlError::Invalid(format!(
                "mapping {} into memory: {} (the map must be created with BPF_F_MMAPABLE; a director attached by an older build needs `director detach` first)",
                director_common::maps::TABLES,
                std::io::Error::last_os_error()
            )));
        }
        Ok(Self {
            base: NonNull::new(p.cast()).expect("mmap returned a non-null pointer"),
            len,
            entries,
        })
    }

    /// Write `values` from entry `start` on. The caller makes them visible to the data
    /// path afterwards with a map update (a syscall, which orders these stores before it).
    pub fn write(&mut self, start: u32, values: &[u32]) -> Result<(), ControlError> {
        let end = start as u64 + values.len() as u64;
        if end > self.entries as u64 {
            return Err(ControlError::Invalid(format!(
                "table write past the end of {}: {end} > {}",
                director_common::maps::TABLES,
                self.entries
            )));
        }
        for (i, v) in values.iter().enumerate() {
            let off = (start as usize + i) * SLOT;
            // SAFETY: off + 4 <= entries * SLOT <= len, inside our mapping.
            unsafe { self.base.as_ptr().add(off).cast::<u32>().write_volatile(*v) };
        }
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

impl Drop for TableMapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

trait AsFdRaw {
    fn as_fd_raw(&self) -> i32;
}

impl AsFdRaw for aya::maps::MapFd {
    fn as_fd_raw(&self) -> i32 {
        use std::os::fd::AsFd as _;
        self.as_fd().as_raw_fd()
    }
}
