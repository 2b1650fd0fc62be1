//! The frame's bytes: the only code that turns an offset into the frame into a pointer.
//! Every access is bounds-checked against `data_end` right before it, in the form the
//! verifier accepts.
//!
//! Reading is safe: [`header`] lends a header in place (no copy: the verifier tracks
//! the packet pointer, and a copy would cost stack and instructions); a caller that
//! needs a copy dereferences it. Writing stays unsafe at its site ([`ptr`]): a write must not touch
//! bytes a lent header still refers to, and nothing may refer to the frame across a
//! helper that moves its start (`bpf_xdp_adjust_head`/`_tail`), which every such site
//! says in its `SAFETY` note.

use aya_ebpf::programs::XdpContext;
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
};

/// A type the frame may hold at the offsets the data path reads it at.
///
/// # Safety
///
/// Every bit pattern is a valid value (integers and byte arrays only, no padding), and
/// the alignment is at most 2. Frames start at even addresses (the kernel's headroom is
/// even, and the programs move the start by even amounts only), and a type of alignment
/// 2 is only read at an even offset.
pub unsafe trait Header: Copy {}

// SAFETY: bytes: any value is valid, alignment 1.
unsafe impl<const N: usize> Header for [u8; N] {}
// SAFETY: two u16s, no padding; read only at even offsets (ports behind an IPv4 header,
// whose length is a multiple of 4, behind an even L2 header).
unsafe impl Header for [u16; 2] {}
// SAFETY: six u16s, no padding; read only at offset 0 (the two MACs).
unsafe impl Header for [u16; 6] {}
// SAFETY: eight u16s, no padding; read only at even offsets (the addresses of an IPv6
// header, 8 and 24 bytes into it, behind an even L2 header).
unsafe impl Header for [u16; 8] {}
// SAFETY: `repr(C)` of two [u8; 6] and a u16: 14 bytes, no padding; read at offset 0.
unsafe impl Header for EthHdr {}
// SAFETY: `repr(C)` of u8s and byte arrays: alignment 1, no padding.
unsafe impl Header for Ipv4Hdr {}
// SAFETY: `repr(C)` of u8s and byte arrays: alignment 1, no padding.
unsafe impl Header for Ipv6Hdr {}

/// A pointer to the `T` at `off` bytes into the frame, if the frame holds all of it. For
/// rewrites that change several fields of one header under one bounds check; the caller
/// dereferences it before anything moves the frame's start.
#[inline(always)]
pub fn ptr<T: Header>(ctx: &XdpContext, off: usize) -> Result<*mut T, ()> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + core::mem::size_of::<T>() > end {
        return Err(());
    }
    Ok((start + off) as *mut T)
}

/// The `T` at `off` bytes into the frame, in place, if the frame holds all of it.
#[inline(always)]
pub fn header<T: Header>(ctx: &XdpContext, off: usize) -> Result<&T, ()> {
    let p = ptr::<T>(ctx, off)?;
    // SAFETY: the frame's address is never null (it is the kernel's packet memory).
    // Said here so that the test of the returned reference's niche (a null `&T` is the
    // `Err`) compiles away: without it, a bounds check costs a null test more, and the
    // register pressure of the longer paths costs stack.
    unsafe { core::hint::assert_unchecked(!p.is_null()) };
    // SAFETY: `ptr` checked that the frame holds `size_of::<T>()` bytes at `p`, which
    // are a valid and suitably aligned `T` (`Header`). The frame lives as long as the
    // program run that `ctx` belongs to; writes to it are unsafe and each one states
    // that no lent header covers its bytes (module documentation).
    Ok(unsafe { &*p })
}

/// The frame's length, from the first byte of its L2 header.
#[inline(always)]
pub fn len(ctx: &XdpContext) -> usize {
    ctx.data_end() - ctx.data()
}

/// The interface the frame came in on.
#[inline(always)]
pub fn ingress_ifindex(ctx: &XdpContext) -> u32 {
    // SAFETY: `ctx.ctx` is the kernel's `xdp_md` for this program run, valid for reads
    // for as long as the program runs.
    unsafe { (*ctx.ctx).ingress_ifindex }
}

/// Bytes read as half-words: the BPF back end splits a read of a byte array into byte
/// loads (one per byte, then shifts and ors to put them together), as it cannot know
/// the bytes' alignment; every field read here sits at an even offset (of the frame,
/// which starts even, or of a map value), where half-word loads are exact.
pub mod halves {
    /// A MAC address as three half-words.
    pub type Mac = [u16; 3];

    /// The MAC at `m`.
    ///
    /// # Safety
    ///
    /// `m` is 2-aligned (an even offset of the frame, of a map value or of a `repr(C)`
    /// struct of alignment 2 or more).
    #[inline(always)]
    pub unsafe fn mac(m: &[u8; 6]) -> Mac {
        // SAFETY: six readable bytes, 2-aligned (the caller's promise).
        unsafe { *(m as *const [u8; 6]).cast::<Mac>() }
    }

    /// The IPv4 address at `a`, as two half-word loads.
    ///
    /// # Safety
    ///
    /// As for [`mac`].
    #[inline(always)]
    pub unsafe fn addr4(a: &[u8; 4]) -> [u8; 4] {
        // SAFETY: four readable bytes, 2-aligned (the caller's promise).
        let [lo, hi] = unsafe { *(a as *const [u8; 4]).cast::<[u16; 2]>() };
        // Native order: the first half-word holds the first two bytes.
        let [a0, a1] = lo.to_ne_bytes();
        let [a2, a3] = hi.to_ne_bytes();
        [a0, a1, a2, a3]
    }

    /// The first two half-words of `h` (a TCP or UDP header's ports, in network order).
    ///
    /// # Safety
    ///
    /// As for [`mac`].
    #[inline(always)]
    pub unsafe fn ports<const N: usize>(h: &[u8; N]) -> [u16; 2] {
        const { assert!(N >= 4) };
        // SAFETY: at least four readable bytes, 2-aligned (the caller's promise).
        unsafe { *(h as *const [u8; N]).cast::<[u16; 2]>() }
    }

    /// The big-endian 16-bit field at `f`, as one half-word load.
    ///
    /// # Safety
    ///
    /// As for [`mac`].
    #[inline(always)]
    pub unsafe fn be16(f: &[u8; 2]) -> u16 {
        // SAFETY: two readable bytes, 2-aligned (the caller's promise).
        u16::from_be(unsafe { *(f as *const [u8; 2]).cast::<u16>() })
    }
}
