//! IPv6 addresses held in the data path's structs, read and written as words.

/// The four words of an IPv6 address, read as words.
///
/// Every 16-byte address the data path holds sits 4-aligned (at a multiple of 4 in
/// `Packet`, `Real`, `Conn6`, `HopCache6`, `NextHop6`, all at least 4-aligned), and
/// word loads are a quarter of byte loads; the BPF back end would split a read it
/// cannot prove aligned into bytes.
#[inline(always)]
pub fn addr_words(a: &[u8; 16]) -> [u32; 4] {
    // SAFETY: 16 readable bytes; 4-aligned as said above.
    unsafe { *(a as *const [u8; 16]).cast::<[u32; 4]>() }
}

/// Write four words with volatile stores: a plain copy of an address is merged into a
/// `memmove` call.
///
/// # Safety
///
/// `dst` is valid for writes of four 4-aligned words.
#[inline(always)]
pub unsafe fn put_words(dst: *mut u32, w: [u32; 4]) {
    for (i, word) in w.iter().enumerate() {
        // SAFETY: inside the four words the caller vouches for.
        unsafe { core::ptr::write_volatile(dst.add(i), *word) };
    }
}

/// Write an address into the frame at an even offset as eight volatile half-word
/// stores: a plain store of the array is merged into a `memmove` call.
///
/// # Safety
///
/// `dst` is valid for writes of eight 2-aligned half-words.
#[inline(always)]
pub unsafe fn put_halves(dst: *mut u16, a: &[u8; 16]) {
    // SAFETY: [u32; 4] and [u16; 8] have the same size and every bit pattern is valid.
    let h = unsafe { core::mem::transmute::<[u32; 4], [u16; 8]>(addr_words(a)) };
    for (i, half) in h.iter().enumerate() {
        // SAFETY: inside the eight half-words the caller vouches for.
        unsafe { core::ptr::write_volatile(dst.add(i), *half) };
    }
}

/// A zero the compiler cannot see: for fields a header does not have (the ports of a
/// later fragment, of an ICMP message). Constant zero fields side by side are merged
/// into a `memset` call, which the BPF back end emits as a byte-at-a-time subprogram.
#[inline(always)]
pub fn opaque_zero() -> u16 {
    // SAFETY: a volatile read of a local, initialised value.
    unsafe { core::ptr::read_volatile(&0u16) }
}

/// Copy an address as four words (both places 4-aligned, see [`addr_words`]).
#[inline(always)]
pub fn set_addr(dst: &mut [u8; 16], src: &[u8; 16]) {
    // SAFETY: 16 writable bytes, 4-aligned as `addr_words` says.
    unsafe { put_words((dst as *mut [u8; 16]).cast(), addr_words(src)) };
}

/// The two addresses are equal (four word comparisons; `==` on arrays becomes a
/// `memcmp` call).
#[inline(always)]
pub fn same_addr(a: &[u8; 16], b: &[u8; 16]) -> bool {
    let (x, y) = (addr_words(a), addr_words(b));
    ((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3])) == 0
}
