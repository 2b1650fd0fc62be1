//! Forwarding by the real server's method, and the FIB lookup that gives every method
//! its next hop.

pub mod dr;
pub mod ip6;
pub mod ipip;
pub mod nat;
pub mod nat6;
pub mod tunnel;
pub mod tunnel6;

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS,
        BPF_FIB_LOOKUP_SRC, bpf_fib_lookup, xdp_action, xdp_md,
    },
    helpers::{bpf_fib_lookup, bpf_redirect},
    macros::map,
    maps::PerCpuArray,
    programs::XdpContext,
};
use director_common::{
    addr::v4_of_16,
    maps::CLIENT_HOP_SLOTS,
    real::{HOP_TTL_NS, HopCache},
    stats::Stat,
};

use crate::{
    headers::MACS_LEN,
    icmp,
    maps::{CLIENT_HOPS, HOPS},
    packet::{
        self,
        halves::{self, Mac},
    },
    parse::Packet,
};

/// `AF_INET`, the family of the FIB lookups.
const AF_INET: u8 = 2;

/// Where a packet leaves: the egress interface and the MACs on that link, as
/// half-words (loaded, kept and stored into the frame as three 16-bit moves each; as
/// byte arrays they took twelve byte loads, spills and byte stores per packet).
#[repr(C)]
pub struct NextHop {
    pub ifindex: u32,
    pub smac: Mac,
    pub dmac: Mac,
    /// With `want_src`: the address this host uses towards the destination.
    pub src: [u8; 4],
    /// Egress MTU.
    pub mtu: u16,
}

/// Why there is no next hop to send a packet to.
pub enum FibError {
    /// The neighbour of the next hop is not resolved.
    NoNeigh,
    /// The packet is larger than the egress MTU (this MTU).
    TooBig(u16),
    /// No route, unreachable, forwarding disabled...
    Failed,
}

/// Ask the kernel's routing and neighbour tables for the next hop towards `dst`.
#[inline(always)]
pub fn fib_v4(
    ctx: &XdpContext,
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    tos: u8,
    tot_len: u16,
    want_src: bool,
) -> Result<NextHop, FibError> {
    let q = FibQuery {
        src,
        dst,
        tot_len,
        proto,
        tos,
        want_src: want_src as u32,
    };
    let mut hop = core::mem::MaybeUninit::<NextHop>::uninit();
    let rc = fib_call(ctx.ctx, &q, hop.as_mut_ptr());
    if rc == BPF_FIB_LKUP_RET_SUCCESS as i64 {
        // SAFETY: fib_call wrote the whole hop (it writes every field whenever its map
        // lookup succeeds, which it did: it returned a helper result).
        Ok(unsafe { hop.assume_init() })
    } else if rc == BPF_FIB_LKUP_RET_NO_NEIGH as i64 {
        Err(FibError::NoNeigh)
    } else if rc == BPF_FIB_LKUP_RET_FRAG_NEEDED as i64 {
        // SAFETY: as above.
        Err(FibError::TooBig(unsafe { hop.assume_init() }.mtu))
    } else {
        Err(FibError::Failed)
    }
}

/// What [`fib_call`] looks up.
#[repr(C)]
struct FibQuery {
    src: [u8; 4],
    dst: [u8; 4],
    tot_len: u16,
    proto: u8,
    tos: u8,
    /// A whole word: no padding bytes, which would be zeroed with a `memset` call.
    want_src: u32,
}

/// The helper call, in a BPF function of its own: one copy of the call and its
/// argument's setup instead of one per place a lookup is inlined. Writes every field of
/// `out`; returns the helper's result.
#[inline(never)]
fn fib_call(ctx: *mut xdp_md, q: &FibQuery, out: *mut NextHop) -> i64 {
    let Some(args) = FIB_ARGS.get_ptr_mut(0) else {
        // A one-entry per-CPU array always has its entry; never taken.
        return -1;
    };
    // SAFETY: a per-CPU map value, valid while the program runs; only this CPU's
    // programs touch it, one at a time, and no other reference to it exists.
    let p = zero_fib_args(unsafe { &mut *args });
    p.family = AF_INET;
    p.l4_protocol = q.proto;
    p.__bindgen_anon_1.tot_len = q.tot_len;
    p.__bindgen_anon_2.tos = q.tos;
    p.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(q.src);
    p.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(q.dst);
    // SAFETY: `ctx` is this run's `xdp_md` (from `XdpContext`), valid for reads.
    p.ifindex = unsafe { (*ctx).ingress_ifindex };
    let flags = if q.want_src != 0 {
        BPF_FIB_LOOKUP_SRC
    } else {
        0
    };
    // SAFETY: `ctx` is this run's `xdp_md`; `p` points at a whole `bpf_fib_lookup`, and
    // its size is the one passed.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx as *mut core::ffi::c_void,
            p,
            core::mem::size_of::<bpf_fib_lookup>() as i32,
            flags,
        )
    };
    // The MTU comes back in place of the length, on success and when too big. Field by
    // field, the MACs as half-words: a byte-array copy out of map memory becomes a
    // `memmove` call, and a whole-struct copy spills bytes to the stack.
    // SAFETY: `out` is the caller's `MaybeUninit<NextHop>`, valid for writes of every
    // field (written through raw places, never read); `p` is the map value above.
    unsafe {
        (&raw mut (*out).ifindex).write(p.ifindex);
        copy_mac(&raw mut (*out).smac, &raw const p.smac);
        copy_mac(&raw mut (*out).dmac, &raw const p.dmac);
        (&raw mut (*out).src).write(p.__bindgen_anon_3.ipv4_src.to_ne_bytes());
        (&raw mut (*out).mtu).write(p.__bindgen_anon_1.mtu_result);
    }
    rc
}

/// Copy a MAC from a 2-byte aligned place as three half-words.
///
/// # Safety
///
/// `dst` is valid for writes and `src` for reads of six bytes, both 2-byte aligned.
#[inline(always)]
pub(super) unsafe fn copy_mac(dst: *mut Mac, src: *const [u8; 6]) {
    let (d, s) = (dst.cast::<u16>(), src.cast::<u16>());
    for i in 0..3 {
        // SAFETY: the three half-words are the six bytes the caller vouches for.
        unsafe { core::ptr::write_volatile(d.add(i), core::ptr::read_volatile(s.add(i))) };
    }
}

/// The helper's 64-byte argument, one per CPU: in a map rather than on the stack, where
/// it would count against the 512 bytes the balancer and this function share.
#[map(name = "DIR_FIB_ARGS")]
pub(super) static FIB_ARGS: PerCpuArray<FibArgs> = PerCpuArray::with_max_entries(1, 0);

/// bpf_fib_lookup is 4-byte aligned; zeroing it with word stores needs 8.
#[repr(C, align(8))]
pub(super) struct FibArgs(bpf_fib_lookup);

/// Zero the helper's 64-byte argument in place with eight word stores. `mem::zeroed()`
/// (or any zero fill LLVM can see through, including a copy of one) becomes a `memset`
/// call, which the BPF back end emits as a byte-at-a-time subprogram: 64 iterations per
/// lookup. Volatile stores can be neither merged nor forwarded into a copy.
#[inline(always)]
pub(super) fn zero_fib_args(args: &mut FibArgs) -> &mut bpf_fib_lookup {
    const WORDS: usize = core::mem::size_of::<FibArgs>() / 8;
    let w = (args as *mut FibArgs).cast::<u64>();
    let mut i = 0;
    while i < WORDS {
        // SAFETY: `i < WORDS` keeps every store inside `args`, which is 8-byte aligned.
        unsafe { core::ptr::write_volatile(w.add(i), 0) };
        i += 1;
    }
    &mut args.0
}

/// A packet's way to a real, as the next-hop lookup needs it.
pub struct ToReal {
    /// The real's id: its entry in the next-hop cache.
    pub id: u32,
    /// The real's address.
    pub addr: [u8; 4],
    /// The source the packet leaves with.
    pub src: Source,
    pub proto: u8,
    pub tos: u8,
    /// The IP length the packet leaves with, checked against the egress MTU.
    pub ip_len: u16,
}

/// The source address of a packet towards a real.
pub enum Source {
    /// The packet keeps its own (DR, NAT).
    Packet([u8; 4]),
    /// The address this host uses towards the real, which the lookup tells (the IPIP
    /// outer header's source, [`NextHop::src`]).
    Ours,
}

/// The next hop towards a real: from this CPU's cache while it is fresh, else from the
/// FIB (and cached). `to.ip_len` is checked against the egress MTU either way.
#[inline(always)]
pub fn real_hop(ctx: &XdpContext, to: &ToReal, now: u64) -> Result<NextHop, FibError> {
    let (src, want_src) = match to.src {
        Source::Packet(src) => (src, false),
        Source::Ours => ([0; 4], true),
    };
    let Some(c) = HOPS.get_ptr_mut(to.id) else {
        return fib_v4(ctx, src, to.addr, to.proto, to.tos, to.ip_len, want_src);
    };
    // SAFETY: a per-CPU map value, valid while the program runs; only this CPU's
    // programs touch it, one at a time.
    let c = unsafe { &mut *c };
    if c.at_ns != 0 && now.wrapping_sub(c.at_ns) < HOP_TTL_NS {
        return cached(c, to.ip_len);
    }
    let hop = fib_v4(ctx, src, to.addr, to.proto, to.tos, to.ip_len, want_src)?;
    store(c, &hop, hop.src, to.addr, now);
    Ok(hop)
}

/// The next hop towards real `real_id` at `real` for `pkt` as it stands (its source,
/// protocol, TOS and length, the last checked against the egress MTU): what DR and NAT
/// forwarding ask, for client packets, fragments and ICMP errors alike.
#[inline(always)]
pub fn hop_for(
    ctx: &XdpContext,
    pkt: &Packet,
    real_id: u32,
    real: [u8; 4],
    now: u64,
) -> Result<NextHop, FibError> {
    let to = ToReal {
        id: real_id,
        addr: real,
        src: Source::Packet(v4_of_16(&pkt.src)),
        proto: pkt.proto,
        tos: pkt.tos,
        ip_len: pkt.ip_len,
    };
    real_hop(ctx, &to, now)
}

/// The next hop towards a client (NAT replies, sent from `vaddr`): from this CPU's
/// direct-mapped client cache when the slot holds this client and virtual address and is
/// fresh, else from the FIB (and cached in the slot, replacing whoever held it).
#[inline(always)]
pub fn client_hop(
    ctx: &XdpContext,
    vaddr: [u8; 4],
    client: [u8; 4],
    proto: u8,
    tos: u8,
    ip_len: u16,
    now: u64,
) -> Result<NextHop, FibError> {
    let Some(c) = CLIENT_HOPS.get_ptr_mut(client_slot(client)) else {
        return fib_v4(ctx, vaddr, client, proto, tos, ip_len, false);
    };
    // SAFETY: a per-CPU map value, valid while the program runs; only this CPU's
    // programs touch it, one at a time.
    let c = unsafe { &mut *c };
    if c.at_ns != 0 && now.wrapping_sub(c.at_ns) < HOP_TTL_NS && c.dst == client && c.src == vaddr {
        return cached(c, ip_len);
    }
    let hop = fib_v4(ctx, vaddr, client, proto, tos, ip_len, false)?;
    store(c, &hop, vaddr, client, now);
    Ok(hop)
}

/// Slot of a client address in the client cache: the top bits of a multiplicative
/// (Fibonacci) hash, so neighbouring addresses spread over the whole cache.
#[inline(always)]
fn client_slot(client: [u8; 4]) -> u32 {
    const BITS: u32 = CLIENT_HOP_SLOTS.trailing_zeros();
    u32::from_ne_bytes(client).wrapping_mul(0x9e37_79b1) >> (32 - BITS)
}

/// The cached hop `c`, if a packet of `ip_len` fits its MTU.
#[inline(always)]
fn cached(c: &HopCache, ip_len: u16) -> Result<NextHop, FibError> {
    if ip_len > c.mtu {
        return Err(FibError::TooBig(c.mtu));
    }
    // SAFETY: the MACs sit at even offsets of `HopCache` (asserted below).
    let (smac, dmac) = unsafe { (halves::mac(&c.smac), halves::mac(&c.dmac)) };
    Ok(NextHop {
        ifindex: c.ifindex,
        smac,
        dmac,
        src: c.src,
        mtu: c.mtu,
    })
}

const _: () = assert!(
    core::mem::offset_of!(HopCache, smac) % 2 == 0
        && core::mem::offset_of!(HopCache, dmac) % 2 == 0
        && core::mem::align_of::<HopCache>() >= 2
);

/// Cache `hop` (towards `dst`, for packets from `src`) in `c`.
#[inline(always)]
fn store(c: &mut HopCache, hop: &NextHop, src: [u8; 4], dst: [u8; 4], now: u64) {
    *c = HopCache {
        at_ns: now,
        ifindex: hop.ifindex,
        src,
        dst,
        smac: mac_bytes(hop.smac),
        dmac: mac_bytes(hop.dmac),
        mtu: hop.mtu,
        _pad0: 0,
        _pad1: 0,
    };
}

/// A MAC's half-words as its six bytes (in the order the frame holds them).
#[inline(always)]
pub(super) fn mac_bytes(m: Mac) -> [u8; 6] {
    // SAFETY: [u16; 3] and [u8; 6] have the same size and every bit pattern is valid.
    unsafe { core::mem::transmute::<Mac, [u8; 6]>(m) }
}

/// Write the next hop's MACs and send: XDP_TX when it leaves where it came in,
/// XDP_REDIRECT otherwise.
#[inline(always)]
pub fn transmit(ctx: &XdpContext, hop: &NextHop) -> (u32, Stat) {
    let macs = match packet::ptr::<[u16; MACS_LEN / 2]>(ctx, 0) {
        Ok(p) => p,
        Err(()) => return (xdp_action::XDP_DROP, Stat::DropMalformed),
    };
    let (d, s) = (hop.dmac, hop.smac);
    // SAFETY: `packet::ptr` checked the frame holds the two MACs, at its start (even:
    // `packet::Header`); no header lent from the frame is live while a packet is sent.
    unsafe { *macs = [d[0], d[1], d[2], s[0], s[1], s[2]] };
    if hop.ifindex == packet::ingress_ifindex(ctx) {
        (xdp_action::XDP_TX, Stat::Tx)
    } else {
        // SAFETY: the helper only records the interface to redirect to; it touches no
        // memory of ours.
        let action = unsafe { bpf_redirect(hop.ifindex, 0) } as u32;
        (action, Stat::Redirect)
    }
}

/// The verdict for a failed lookup of a DR/TUN next hop (the packet still has the VIP as
/// destination, so the kernel would answer it itself). `overhead`: what the method adds
/// to the packet, taken off the MTU a too-big packet's sender is told.
#[inline(always)]
pub fn fib_drop(ctx: &XdpContext, pkt: &Packet, e: FibError, overhead: u16) -> (u32, Stat) {
    match e {
        FibError::NoNeigh => (xdp_action::XDP_DROP, Stat::DropNoNeigh),
        FibError::TooBig(mtu) => icmp::too_big(ctx, pkt, mtu.saturating_sub(overhead)),
        FibError::Failed => (xdp_action::XDP_DROP, Stat::DropFib),
    }
}
