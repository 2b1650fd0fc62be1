//! Writable mappings of the memory-mappable array maps (created with BPF_F_MMAPABLE):
//! the lookup tables (a table of 16,381 entries is one memcpy, not 16,381 map-update
//! syscalls) and the reals (every slot read without a syscall each).

use std::{os::fd::AsRawFd as _, ptr::NonNull};

use aya::{
    Pod,
    maps::{Array, IterableMap as _, MapData},
};

use super::ControlError;

/// A shared, writable mapping of an array map, or of a window of it, seen as elements
/// of `stride` bytes. The kernel lays an array's values out back to back, each in a slot
/// rounded up to 8 bytes; an element may also be a part of a value (the tables are rows
/// of [`director_common::maps::TABLE_ROW`] ids, mapped as a flat array of u32).
///
/// The kernel maps every page of a BPF array at mmap time (no faulting in), so mapping
/// costs about a quarter of a microsecond per 4 KiB page, and as much again to unmap:
/// map what is used (see [`ArrayMapping::window`]).
pub struct ArrayMapping {
    base: NonNull<u8>,
    len: usize,
    /// Element `first` (the window may start inside its first page).
    data: *mut u8,
    first: u32,
    /// Elements in the window.
    entries: u32,
    stride: usize,
    name: &'static str,
}

// SAFETY: the mapping is plain shared memory owned by this value; nothing about it is
// tied to the thread that made it.
unsafe impl Send for ArrayMapping {}
// SAFETY: through a shared reference the mapping is only read (volatile copies of Pod
// values, which the data path may change at any time anyway) or its addresses handed
// out as raw pointers; writes take `&mut self`.
unsafe impl Sync for ArrayMapping {}

const PAGE: usize = 4096;

impl ArrayMapping {
    /// Map all of `map` (an array of `V`) as elements of `stride` bytes: `V`'s size
    /// rounded up to 8 (one element per value), or a divisor of it.
    pub fn new<V: Pod>(
        map: &Array<MapData, V>,
        name: &'static str,
        stride: usize,
    ) -> Result<Self, ControlError> {
        let all = Self::elements(map, name, stride)?;
        Self::window(map, name, stride, 0, all)
    }

    /// Elements of `stride` bytes in `map`.
    pub fn elements<V: Pod>(
        map: &Array<MapData, V>,
        name: &'static str,
        stride: usize,
    ) -> Result<u32, ControlError> {
        let value = size_of::<V>().next_multiple_of(8);
        assert!(
            stride > 0 && value.is_multiple_of(stride),
            "{name}: an element of {stride} bytes does not divide a value of {value}"
        );
        let bytes = map.len() as usize * value;
        u32::try_from(bytes / stride)
            .map_err(|_| ControlError::System(format!("{name}: {bytes} bytes is too large to map")))
    }

    /// Map elements `first..first + count` of `map` (and the rest of their pages).
    pub fn window<V: Pod>(
        map: &Array<MapData, V>,
        name: &'static str,
        stride: usize,
        first: u32,
        count: u32,
    ) -> Result<Self, ControlError> {
        let all = Self::elements(map, name, stride)?;
        if first as u64 + count as u64 > all as u64 {
            return Err(ControlError::System(format!(
                "mapping past the end of {name}: {} > {all}",
                first as u64 + count as u64
            )));
        }
        let start = first as usize * stride;
        let end = start + count as usize * stride;
        let offset = start / PAGE * PAGE;
        let len = (end - offset).div_ceil(PAGE).max(1) * PAGE;
        let fd = map.map().fd().as_fd_raw();
        // SAFETY: mapping a BPF array map fd, shared and writable, inside its own size
        // (the kernel checks offset + len against it); the result is checked and unmapped
        // on drop.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(ControlError::System(format!(
                "mapping {name} into memory: {} (the map must be created with BPF_F_MMAPABLE; a director attached by an older build needs `director detach` first)",
                std::io::Error::last_os_error()
            )));
        }
        let base = NonNull::new(p.cast::<u8>()).expect("mmap returned a non-null pointer");
        Ok(Self {
            base,
            len,
            // SAFETY: start - offset < PAGE <= len: inside the mapping.
            data: unsafe { base.as_ptr().add(start - offset) },
            first,
            entries: count,
            stride,
            name,
        })
    }

    /// Number of elements in the window.
    pub fn len(&self) -> u32 {
        self.entries
    }

    /// The address of element `start` (an index into the whole map), if elements
    /// `start..start + count` are in the window and a `size`-byte value fits one.
    fn check(&self, start: u32, count: usize, size: usize) -> Result<*mut u8, ControlError> {
        let end = start as u64 + count as u64;
        if start < self.first || end > self.first as u64 + self.entries as u64 || size > self.stride
        {
            return Err(ControlError::System(format!(
                "access outside the mapped part of {}: {start}..{end} not in {}..{}",
                self.name,
                self.first,
                self.first as u64 + self.entries as u64
            )));
        }
        // SAFETY: first <= start < first + entries: inside the mapping.
        Ok(unsafe { self.data.add((start - self.first) as usize * self.stride) })
    }

    /// Element `index` (of the whole map), read as a `T` (at most `stride` bytes).
    pub fn read<T: Pod>(&self, index: u32) -> Result<T, ControlError> {
        let p = self.check(index, 1, size_of::<T>())?;
        // SAFETY: in bounds (checked); mappings are page aligned and elements aligned to
        // their stride, a multiple of T's alignment for every T used here (u32, u64,
        // Real, ConnBucket); any bit pattern is a valid Pod.
        Ok(unsafe { p.cast::<T>().read_volatile() })
    }

    /// The address of element `index`, for the shared-memory protocols that need more
    /// than a copy in or out (the connection table's bucket claim).
    pub fn element_ptr<T: Pod>(&self, index: u32) -> Result<*mut T, ControlError> {
        Ok(self.check(index, 1, size_of::<T>())?.cast::<T>())
    }

    /// Elements `start..start + count`, each read as a `T`.
    pub fn read_many<T: Pod>(&self, start: u32, count: usize) -> Result<Vec<T>, ControlError> {
        self.check(start, count, size_of::<T>())?;
        (0..count)
            .map(|i| self.read(start + i as u32))
            .collect::<Result<Vec<T>, _>>()
    }

    /// Write `values` from element `start` on. A data path reading these elements sees
    /// them once the caller publishes them with a map update (a syscall, which orders
    /// these stores before it).
    pub fn write<T: Pod>(&mut self, start: u32, values: &[T]) -> Result<(), ControlError> {
        let p = self.check(start, values.len(), size_of::<T>())?;
        for (i, v) in values.iter().enumerate() {
            // SAFETY: in bounds and aligned (see `read`).
            unsafe { p.add(i * self.stride).cast::<T>().write_volatile(*v) };
        }
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

impl Drop for ArrayMapping {
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
