//! Forwarding by the real server's method, and the FIB lookup that gives every method
//! its next hop.

pub mod dr;
pub mod ipip;
pub mod nat;

use aya_ebpf::{
    EbpfContext as _,
    bindings::{
        BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, BPF_FIB_LOOKUP_SRC, bpf_fib_lookup,
        xdp_action,
    },
    helpers::{bpf_fib_lookup, bpf_redirect},
    programs::XdpContext,
};
use director_common::{
    real::{HOP_TTL_NS, HopCache},
    stats::Stat,
};

use crate::{maps::HOPS, parse::ptr_at};

const AF_INET: u8 = 2;

/// Where a packet leaves: the egress interface and the MACs on that link.
pub struct NextHop {
    pub ifindex: u32,
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
    /// With `want_src`: the address this host uses towards the destination.
    pub src: [u8; 4],
    /// Egress MTU.
    pub mtu: u16,
}

pub enum FibError {
    /// The neighbour of the next hop is not resolved.
    NoNeigh,
    /// No route, unreachable, forwarding disabled, MTU exceeded...
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
    let mut p: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    p.family = AF_INET;
    p.l4_protocol = proto;
    p.__bindgen_anon_1.tot_len = tot_len;
    p.__bindgen_anon_2.tos = tos;
    p.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(src);
    p.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(dst);
    p.ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    let flags = if want_src { BPF_FIB_LOOKUP_SRC } else { 0 };
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.as_ptr(),
            &mut p,
            core::mem::size_of::<bpf_fib_lookup>() as i32,
            flags,
        )
    };
    if rc == BPF_FIB_LKUP_RET_SUCCESS as i64 {
        Ok(NextHop {
            ifindex: p.ifindex,
            smac: p.smac,
            dmac: p.dmac,
            src: unsafe { p.__bindgen_anon_3.ipv4_src }.to_ne_bytes(),
            mtu: unsafe { p.__bindgen_anon_1.mtu_result },
        })
    } else if rc == BPF_FIB_LKUP_RET_NO_NEIGH as i64 {
        Err(FibError::NoNeigh)
    } else {
        Err(FibError::Failed)
    }
}

/// The next hop towards a real: from this CPU's cache while it is fresh, else from the
/// FIB (and cached). `ip_len` is checked against the egress MTU either way.
#[inline(always)]
pub fn real_hop(
    ctx: &XdpContext,
    real_id: u32,
    real: [u8; 4],
    pkt_src: [u8; 4],
    proto: u8,
    tos: u8,
    ip_len: u16,
    want_src: bool,
    now: u64,
) -> Result<NextHop, FibError> {
    if let Some(c) = HOPS.get_ptr_mut(real_id) {
        let c = unsafe { &mut *c };
        if c.at_ns != 0 && now.wrapping_sub(c.at_ns) < HOP_TTL_NS {
            if ip_len > c.mtu {
                return Err(FibError::Failed);
            }
            return Ok(NextHop {
                ifindex: c.ifindex,
                smac: c.smac,
                dmac: c.dmac,
                src: c.src,
                mtu: c.mtu,
            });
        }
        let src = if want_src { [0; 4] } else { pkt_src };
        let hop = fib_v4(ctx, src, real, proto, tos, ip_len, want_src)?;
        *c = HopCache {
            at_ns: now,
            ifindex: hop.ifindex,
            src: hop.src,
            smac: hop.smac,
            dmac: hop.dmac,
            mtu: hop.mtu,
            _pad: [0; 2],
        };
        return Ok(hop);
    }
    fib_v4(ctx, pkt_src, real, proto, tos, ip_len, want_src)
}

/// Write the next hop's MACs and send: XDP_TX when it leaves where it came in,
/// XDP_REDIRECT otherwise.
#[inline(always)]
pub fn transmit(ctx: &XdpContext, hop: &NextHop) -> (u32, Stat) {
    let macs: *mut [u8; 12] = match ptr_at(ctx, 0) {
        Ok(p) => p,
        Err(()) => return (xdp_action::XDP_DROP, Stat::DropMalformed),
    };
    let d = hop.dmac;
    let s = hop.smac;
    unsafe {
        *macs = [
            d[0], d[1], d[2], d[3], d[4], d[5], s[0], s[1], s[2], s[3], s[4], s[5],
        ]
    };
    if hop.ifindex == unsafe { (*ctx.ctx).ingress_ifindex } {
        (xdp_action::XDP_TX, Stat::Tx)
    } else {
        let action = unsafe { bpf_redirect(hop.ifindex, 0) } as u32;
        (action, Stat::Redirect)
    }
}

/// The verdict for a failed lookup of a DR/TUN next hop (the packet still has the VIP as
/// destination, so the kernel would answer it itself).
#[inline(always)]
pub fn fib_drop(e: FibError) -> (u32, Stat) {
    match e {
        FibError::NoNeigh => (xdp_action::XDP_DROP, Stat::DropNoNeigh),
        FibError::Failed => (xdp_action::XDP_DROP, Stat::DropFib),
    }
}
