//! IPv6 next hops and outer headers: the FIB lookup for IPv6 destinations, the per-real
//! and per-client caches of its answers, the outer IPv6 header of every tunnel that
//! leaves over IPv6, and putting an outer header (of either family) in front of a
//! packet whose L2 header then announces the outer family.

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS,
        BPF_FIB_LOOKUP_SRC, bpf_fib_lookup, xdp_action, xdp_md,
    },
    helpers::{bpf_fib_lookup, bpf_xdp_adjust_head},
    programs::XdpContext,
};
use director_common::{
    maps::{CLIENT_HOP_SLOTS, JUMP_TOO_BIG6},
    real::{HOP_TTL_NS, HopCache6},
    stats::Stat,
};

use super::{FIB_ARGS, FibError, NextHop, copy_mac, mac_bytes, transmit, zero_fib_args};
pub use crate::addr::addr_words;
use crate::{
    addr::{put_words, same_addr, set_addr},
    headers::{ETH_HLEN, MACS_LEN, VLAN_HLEN},
    maps::{CLIENT_HOPS6, HOPS6, JUMP, TOO_BIG_MTU},
    packet::{self, halves},
    parse::Packet,
};

/// `AF_INET6`, the family of the FIB lookups.
const AF_INET6: u8 = 10;
/// The outer IPv6 header: no extension headers.
pub const OUTER6_LEN: usize = 40;
/// Hop limit of an outer header (the kernel's default).
pub const OUTER_HOP_LIMIT: u8 = 64;

/// Where an IPv6 packet leaves: the link part (as for IPv4, its `src` unused) and the
/// address this host uses towards the destination.
#[repr(C)]
pub struct NextHop6 {
    pub link: NextHop,
    /// With `want_src`: our address towards the destination (a tunnel's outer source).
    pub src: [u8; 16],
}

/// What [`fib_call6`] looks up. The addresses by pointer (to 16 bytes, 4-aligned, see
/// [`addr_words`]): a copy of an address would be a `memcpy` call, sixteen zero bytes a
/// `memset` one.
#[repr(C)]
struct FibQuery6 {
    /// Null: this host's address towards `dst` is asked for (and reported).
    src: *const [u8; 16],
    dst: *const [u8; 16],
    tot_len: u16,
    proto: u8,
    _pad: u8,
    _pad1: u32,
}

/// Ask the kernel's routing and neighbour tables for the next hop towards `dst`
/// (`tot_len`: the whole IPv6 packet, checked against the egress MTU), for a packet
/// from `src` (None: from this host, whose address towards `dst` the answer tells).
#[inline(always)]
pub fn fib_v6(
    ctx: &XdpContext,
    src: Option<&[u8; 16]>,
    dst: &[u8; 16],
    proto: u8,
    tot_len: u16,
) -> Result<NextHop6, FibError> {
    let q = FibQuery6 {
        src: match src {
            Some(s) => s,
            None => core::ptr::null(),
        },
        dst,
        tot_len,
        proto,
        _pad: 0,
        _pad1: 0,
    };
    let mut hop = core::mem::MaybeUninit::<NextHop6>::uninit();
    let rc = fib_call6(ctx.ctx, &q, hop.as_mut_ptr());
    if rc == BPF_FIB_LKUP_RET_SUCCESS as i64 {
        // SAFETY: fib_call6 wrote the whole hop whenever it returned a helper result.
        Ok(unsafe { hop.assume_init() })
    } else if rc == BPF_FIB_LKUP_RET_NO_NEIGH as i64 {
        Err(FibError::NoNeigh)
    } else if rc == BPF_FIB_LKUP_RET_FRAG_NEEDED as i64 {
        // SAFETY: as above.
        Err(FibError::TooBig(unsafe { hop.assume_init() }.link.mtu))
    } else {
        Err(FibError::Failed)
    }
}

/// The helper call, in a BPF function of its own (as IPv4's `fib_call`). Writes every
/// field of `out`; returns the helper's result.
#[inline(never)]
fn fib_call6(ctx: *mut xdp_md, q: &FibQuery6, out: *mut NextHop6) -> i64 {
    let Some(args) = FIB_ARGS.get_ptr_mut(0) else {
        return -1;
    };
    // SAFETY: a per-CPU map value, valid while the program runs; only this CPU's
    // programs touch it, one at a time, and no other reference to it exists.
    let p = zero_fib_args(unsafe { &mut *args });
    p.family = AF_INET6;
    p.l4_protocol = q.proto;
    p.__bindgen_anon_1.tot_len = q.tot_len;
    // SAFETY: the query's pointers are the caller's references (or null), valid here;
    // the union fields are plain words in the map value.
    let flags = unsafe {
        put_words(
            (&raw mut p.__bindgen_anon_4.ipv6_dst).cast(),
            addr_words(&*q.dst),
        );
        if q.src.is_null() {
            BPF_FIB_LOOKUP_SRC
        } else {
            put_words(
                (&raw mut p.__bindgen_anon_3.ipv6_src).cast(),
                addr_words(&*q.src),
            );
            0
        }
    };
    // SAFETY: `ctx` is this run's `xdp_md`, valid for reads.
    p.ifindex = unsafe { (*ctx).ingress_ifindex };
    // SAFETY: `ctx` is this run's `xdp_md`; `p` points at a whole `bpf_fib_lookup`.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx as *mut core::ffi::c_void,
            p,
            core::mem::size_of::<bpf_fib_lookup>() as i32,
            flags,
        )
    };
    // SAFETY: `out` is the caller's `MaybeUninit<NextHop6>`, valid for writes of every
    // field (written through raw places, never read); `p` is the map value above.
    unsafe {
        (&raw mut (*out).link.ifindex).write(p.ifindex);
        copy_mac(&raw mut (*out).link.smac, &raw const p.smac);
        copy_mac(&raw mut (*out).link.dmac, &raw const p.dmac);
        (&raw mut (*out).link.src).write([0; 4]);
        (&raw mut (*out).link.mtu).write(p.__bindgen_anon_1.mtu_result);
        let w = addr_words(&*(&raw const p.__bindgen_anon_3.ipv6_src).cast::<[u8; 16]>());
        put_words((&raw mut (*out).src).cast(), w);
    }
    rc
}

/// The next hop towards IPv6 real `id` at `addr`, for a packet from `src` (None: from
/// this host, whose address the lookup tells), `ip_len` bytes long: from this CPU's
/// cache while fresh, else from the FIB (and cached).
#[inline(always)]
pub fn real_hop6(
    ctx: &XdpContext,
    id: u32,
    addr: &[u8; 16],
    src: Option<&[u8; 16]>,
    proto: u8,
    ip_len: u16,
    now: u64,
) -> Result<NextHop6, FibError> {
    let Some(c) = HOPS6.get_ptr_mut(id) else {
        return fib_v6(ctx, src, addr, proto, ip_len);
    };
    // SAFETY: a per-CPU map value, valid while the program runs; only this CPU's
    // programs touch it, one at a time.
    let c = unsafe { &mut *c };
    if c.at_ns != 0 && now.wrapping_sub(c.at_ns) < HOP_TTL_NS {
        return cached(c, ip_len);
    }
    let hop = fib_v6(ctx, src, addr, proto, ip_len)?;
    store(c, &hop, &hop.src, addr, now);
    Ok(hop)
}

/// The next hop towards an IPv6 client (NAT66 replies, sent from `vaddr`): from this
/// CPU's direct-mapped client cache when its slot holds this client and virtual address
/// and is fresh, else from the FIB (and cached in the slot).
#[inline(always)]
pub fn client_hop6(
    ctx: &XdpContext,
    vaddr: &[u8; 16],
    client: &[u8; 16],
    proto: u8,
    ip_len: u16,
    now: u64,
) -> Result<NextHop6, FibError> {
    let Some(c) = CLIENT_HOPS6.get_ptr_mut(client_slot(client)) else {
        return fib_v6(ctx, Some(vaddr), client, proto, ip_len);
    };
    // SAFETY: as in `real_hop6`.
    let c = unsafe { &mut *c };
    if c.at_ns != 0
        && now.wrapping_sub(c.at_ns) < HOP_TTL_NS
        && same_addr(&c.dst, client)
        && same_addr(&c.src, vaddr)
    {
        return cached(c, ip_len);
    }
    let hop = fib_v6(ctx, Some(vaddr), client, proto, ip_len)?;
    store(c, &hop, vaddr, client, now);
    Ok(hop)
}

/// Slot of a client in the client cache: the four words folded, then the top bits of a
/// multiplicative hash (the interface identifier alone tells most clients apart).
#[inline(always)]
fn client_slot(client: &[u8; 16]) -> u32 {
    const BITS: u32 = CLIENT_HOP_SLOTS.trailing_zeros();
    let w = addr_words(client);
    (w[0] ^ w[1] ^ w[2] ^ w[3]).wrapping_mul(0x9e37_79b1) >> (32 - BITS)
}

/// The cached hop `c`, if a packet of `ip_len` fits its MTU.
#[inline(always)]
fn cached(c: &HopCache6, ip_len: u16) -> Result<NextHop6, FibError> {
    if ip_len > c.mtu {
        return Err(FibError::TooBig(c.mtu));
    }
    // SAFETY: the MACs sit at even offsets of `HopCache6` (asserted below).
    let (smac, dmac) = unsafe { (halves::mac(&c.smac), halves::mac(&c.dmac)) };
    Ok(NextHop6 {
        link: NextHop {
            ifindex: c.ifindex,
            smac,
            dmac,
            src: [0; 4],
            mtu: c.mtu,
        },
        src: c.src,
    })
}

const _: () = assert!(
    core::mem::offset_of!(HopCache6, smac) % 2 == 0
        && core::mem::offset_of!(HopCache6, dmac) % 2 == 0
        && core::mem::align_of::<HopCache6>() >= 2
);

/// Cache `hop` (towards `dst`, for packets from `src`) in `c`.
#[inline(always)]
fn store(c: &mut HopCache6, hop: &NextHop6, src: &[u8; 16], dst: &[u8; 16], now: u64) {
    c.at_ns = now;
    c.ifindex = hop.link.ifindex;
    c.smac = mac_bytes(hop.link.smac);
    c.dmac = mac_bytes(hop.link.dmac);
    c.mtu = hop.link.mtu;
    set_addr(&mut c.src, src);
    set_addr(&mut c.dst, dst);
}

/// An IPv6 packet for a virtual service does not fit the egress MTU (`mtu`: what the
/// sender's packets may be, the method's overhead taken off). IPv6 routers never
/// fragment, so the sender is told with an ICMPv6 Packet Too Big, built by the program
/// in `JUMP_TOO_BIG6` (MTU handed over in `DIR_TOO_BIG_MTU`); without that program the
/// packet is dropped.
#[inline(always)]
pub fn too_big6(ctx: &XdpContext, mtu: u16) -> (u32, Stat) {
    if let Some(m) = TOO_BIG_MTU.get_ptr_mut(0) {
        // SAFETY: a per-CPU map value, valid while the program runs; only this CPU's
        // programs touch it, one at a time.
        unsafe { *m = mtu as u32 };
        // SAFETY: control does not come back when the call succeeds; no value with a
        // destructor is live here.
        unsafe { JUMP.tail_call(ctx, JUMP_TOO_BIG6) };
    }
    (xdp_action::XDP_DROP, Stat::DropTooBig)
}

/// The verdict for a failed lookup of the next hop of an IPv6 packet that still has
/// the VIP as destination (DR, tunnels). `overhead`: what the method adds.
#[inline(always)]
pub fn fib_drop6(ctx: &XdpContext, e: FibError, overhead: u16) -> (u32, Stat) {
    match e {
        FibError::NoNeigh => (xdp_action::XDP_DROP, Stat::DropNoNeigh),
        FibError::TooBig(mtu) => too_big6(ctx, mtu.saturating_sub(overhead)),
        FibError::Failed => (xdp_action::XDP_DROP, Stat::DropFib),
    }
}

/// An IPv6 header as the data path writes it into a frame: the addresses as half-words
/// (the header sits 2-aligned behind the L2 header, and half-word stores are half the
/// byte stores).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Ipv6Outer {
    /// Version, traffic class, flow label, payload length, next header, hop limit.
    pub head: [u8; 8],
    pub src: [u16; 8],
    pub dst: [u16; 8],
}

// SAFETY: `repr(C)` of bytes and half-words: 40 bytes, no padding, alignment 2; written
// at even offsets only (behind an L2 header of 14 or 18 bytes).
unsafe impl packet::Header for Ipv6Outer {}

/// An outer IPv6 header from `src` to `dst` carrying `next` (41: IPv6, 4: IPv4, 17:
/// UDP, 47: GRE) of `payload_len` bytes, with the inner packet's traffic class and a
/// flow label from the flow's hash (RFC 6438: a tunnel's flows stay apart on ECMP paths
/// that hash the outer header's label).
#[inline(always)]
pub fn outer_header6(
    src: &[u8; 16],
    dst: &[u8; 16],
    next: u8,
    payload_len: u16,
    tclass: u8,
    flow_hash: u32,
) -> Ipv6Outer {
    let label = flow_hash & 0x000f_ffff;
    let len = payload_len.to_be_bytes();
    let head = [
        0x60 | (tclass >> 4),
        (tclass << 4) | (label >> 16) as u8,
        (label >> 8) as u8,
        label as u8,
        len[0],
        len[1],
        next,
        OUTER_HOP_LIMIT,
    ];
    let (s, d) = (addr_words(src), addr_words(dst));
    // SAFETY: [u32; 4] and [u16; 8] have the same size; every bit pattern is valid.
    unsafe {
        Ipv6Outer {
            head,
            src: core::mem::transmute::<[u32; 4], [u16; 8]>(s),
            dst: core::mem::transmute::<[u32; 4], [u16; 8]>(d),
        }
    }
}

/// The longest shim after an outer IP header: UDP and GUE (GRE takes 4 or 8 bytes).
pub const SHIM_MAX: usize = 12;

/// Put the outer IP header `outer` and the last `shim_len` bytes of `shim` (what follows
/// the outer header: nothing, a GRE header, UDP and GUE; right-aligned in the window) in
/// front of the packet, keep its L2 header with the ethertype of the outer family, and
/// send it to `hop`.
///
/// One copy of the code for every tunnel type: the shim is written as a whole window
/// that ends where the shim ends, then the outer header over the window's start.
#[inline(always)]
pub fn encap_send<T: packet::Header>(
    ctx: &XdpContext,
    pkt: &Packet,
    hop: &NextHop,
    outer: &T,
    shim: &[u8; SHIM_MAX],
    shim_len: usize,
    ethertype: u16,
) -> (u32, Stat) {
    const TAGGED: usize = ETH_HLEN + VLAN_HLEN;
    let res = if pkt.l2_len == ETH_HLEN {
        push::<T, ETH_HLEN, { ETH_HLEN - MACS_LEN }>(ctx, outer, shim, shim_len, ethertype)
    } else {
        push::<T, TAGGED, { TAGGED - MACS_LEN }>(ctx, outer, shim, shim_len, ethertype)
    };
    match res {
        Ok(()) => transmit(ctx, hop),
        Err(()) => (xdp_action::XDP_DROP, Stat::DropEncap),
    }
}

/// Grow the packet by the outer header's size and `shim_len` bytes, keeping the L2 header (`L2` bytes: the MACs,
/// which transmit() writes, then the `TAIL` bytes carried over, VLAN tag and ethertype,
/// the latter set to `ethertype`).
#[inline(always)]
fn push<T: packet::Header, const L2: usize, const TAIL: usize>(
    ctx: &XdpContext,
    outer: &T,
    shim: &[u8; SHIM_MAX],
    shim_len: usize,
    ethertype: u16,
) -> Result<(), ()> {
    const { assert!(MACS_LEN + TAIL == L2 && TAIL >= 2 && size_of::<T>() >= SHIM_MAX) };
    let a = size_of::<T>();
    if shim_len > SHIM_MAX {
        return Err(());
    }
    // Masked, so the verifier sees the bound the test above gives.
    let shim_len = shim_len & 0xf;
    let mut tail: [u8; TAIL] = *packet::header(ctx, MACS_LEN)?;
    let et = ethertype.to_be_bytes();
    tail[TAIL - 2] = et[0];
    tail[TAIL - 1] = et[1];
    // SAFETY: `ctx.ctx` is this run's `xdp_md`; no pointer into the frame is held
    // across the call (the writes below derive theirs again).
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -((a + shim_len) as i32)) } != 0 {
        return Err(());
    }
    let tail_at = packet::ptr::<[u8; TAIL]>(ctx, MACS_LEN)?;
    // The window ends at the end of the shim and starts inside the outer header's place
    // (the header is longer than the window), which the outer header then covers.
    let window_at = packet::ptr::<[u8; SHIM_MAX]>(ctx, L2 + a + shim_len - SHIM_MAX)?;
    let outer_at = packet::ptr::<T>(ctx, L2)?;
    // SAFETY: `packet::ptr` checked the frame holds each range (byte arrays: no
    // alignment); the window is written before the outer header that overlaps it, and
    // no header lent from the frame is live.
    unsafe {
        *tail_at = tail;
        *window_at = *shim;
        *outer_at = *outer;
    }
    Ok(())
}
