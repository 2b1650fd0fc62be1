//! The director's XDP programs. Each `#[xdp]` function is a thin adapter: run the body,
//! count its outcome once, return its verdict.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// The connection table claims a bucket with BPF_CMPXCHG: the bpfel target has no
// compare-and-swap atomics in core::sync, only the intrinsics.
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

#[cfg(target_arch = "bpf")]
mod addr;
#[cfg(target_arch = "bpf")]
mod balancer;
#[cfg(target_arch = "bpf")]
mod balancer6;
#[cfg(target_arch = "bpf")]
mod conn_state;
#[cfg(target_arch = "bpf")]
mod conntable;
#[cfg(target_arch = "bpf")]
mod csum;
#[cfg(target_arch = "bpf")]
mod debug;
#[cfg(target_arch = "bpf")]
mod decap;
#[cfg(target_arch = "bpf")]
mod flood;
#[cfg(target_arch = "bpf")]
mod forward;
#[cfg(target_arch = "bpf")]
mod fragments;
#[cfg(target_arch = "bpf")]
mod fragments6;
#[cfg(target_arch = "bpf")]
mod headers;
#[cfg(target_arch = "bpf")]
mod icmp;
#[cfg(target_arch = "bpf")]
mod icmp6;
#[cfg(target_arch = "bpf")]
mod icmp6_errors;
#[cfg(target_arch = "bpf")]
mod ingress;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod packet;
#[cfg(target_arch = "bpf")]
mod parse;
#[cfg(target_arch = "bpf")]
mod scheduler;
#[cfg(target_arch = "bpf")]
mod service;
#[cfg(target_arch = "bpf")]
mod stats;
#[cfg(target_arch = "bpf")]
mod vipfilter;

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

    use crate::{
        balancer, balancer6, decap, fragments6, headers::MACS_LEN, icmp6, icmp6_errors, packet,
        stats::count,
    };

    /// The load balancer, attached to the director's interfaces.
    // inline(always): the body is one function, not a BPF-to-BPF call (a stack frame and
    // a call per packet).
    #[xdp]
    #[inline(always)]
    pub fn director(ctx: XdpContext) -> u32 {
        let (action, stat) = balancer::process(&ctx);
        count(stat);
        action
    }

    /// The balancer's ICMP error path, reached by tail call only.
    #[xdp]
    pub fn director_icmp(ctx: XdpContext) -> u32 {
        let (action, stat) = balancer::icmp_error(&ctx);
        count(stat);
        action
    }

    /// The balancer's new-flow path, reached by tail call only.
    #[xdp]
    pub fn director_new_flow(ctx: XdpContext) -> u32 {
        let (action, stat) = balancer::new_flow(&ctx);
        count(stat);
        action
    }

    /// The forwarding of a new flow, reached by tail call only.
    #[xdp]
    pub fn director_forward(ctx: XdpContext) -> u32 {
        let (action, stat) = balancer::forward_new_flow(&ctx);
        count(stat);
        action
    }

    /// The balancer's "fragmentation needed" answer, reached by tail call only.
    #[xdp]
    pub fn director_too_big(ctx: XdpContext) -> u32 {
        let (action, stat) = balancer::too_big(&ctx);
        count(stat);
        action
    }

    /// The balancer's later-fragment path, reached by tail call only.
    #[xdp]
    pub fn director_fragment(ctx: XdpContext) -> u32 {
        let (action, stat) = balancer::later_fragment(&ctx);
        count(stat);
        action
    }

    /// The IPv6 balancer, reached by tail call only (every IPv6 frame the main program
    /// would balance).
    #[xdp]
    pub fn director_v6(ctx: XdpContext) -> u32 {
        let (action, stat) = balancer6::process(&ctx);
        count(stat);
        action
    }

    /// The IPv6 new-flow path, reached by tail call only.
    #[xdp]
    pub fn director_new_flow6(ctx: XdpContext) -> u32 {
        let (action, stat) = balancer6::new_flow(&ctx);
        count(stat);
        action
    }

    /// The forwarding of an IPv6 flow handed over by the two above, by tail call only.
    #[xdp]
    pub fn director_forward6(ctx: XdpContext) -> u32 {
        let (action, stat) = balancer6::forward_handed_over(&ctx);
        count(stat);
        action
    }

    /// The debug trace of an IPv6 new flow, on its way to `director_forward6`, reached by
    /// tail call only.
    #[xdp]
    pub fn director_trace6(ctx: XdpContext) -> u32 {
        let (action, stat) = balancer6::trace_new_flow(&ctx);
        count(stat);
        action
    }

    /// The IPv6 balancer's ICMPv6 path, reached by tail call only.
    #[xdp]
    pub fn director_icmp6(ctx: XdpContext) -> u32 {
        let (action, stat) = icmp6_errors::route_error(&ctx, balancer::now());
        count(stat);
        action
    }

    /// The IPv6 balancer's later-fragment path, reached by tail call only.
    #[xdp]
    pub fn director_fragment6(ctx: XdpContext) -> u32 {
        let (action, stat) = fragments6::later(&ctx, balancer::now());
        count(stat);
        action
    }

    /// The IPv6 balancer's "packet too big" answer, reached by tail call only.
    #[xdp]
    pub fn director_too_big6(ctx: XdpContext) -> u32 {
        let (action, stat) = icmp6::answer_too_big(&ctx, balancer::now());
        count(stat);
        action
    }

    /// Tunnel decapsulation (IPv4 and IPv6), attached to a real server's interface.
    #[xdp]
    pub fn decap(ctx: XdpContext) -> u32 {
        let (action, stat) = decap::process(&ctx);
        count(stat);
        action
    }

    /// Does nothing. Attached to the peer of a veth that receives XDP_TX or
    /// XDP_REDIRECT frames, so the kernel delivers them (see docs/datapath.md).
    #[xdp]
    pub fn pass(_ctx: XdpContext) -> u32 {
        xdp_action::XDP_PASS
    }

    /// The benchmark floor: parse Ethernet, swap MACs, XDP_TX.
    #[xdp]
    pub fn floor(ctx: XdpContext) -> u32 {
        let Ok(macs) = packet::ptr::<[u8; MACS_LEN]>(&ctx, 0) else {
            return xdp_action::XDP_PASS;
        };
        // SAFETY: `packet::ptr` checked the frame holds the two MACs (a byte array: no
        // alignment); nothing else refers to the frame.
        unsafe {
            let m = *macs;
            *macs = [
                m[6], m[7], m[8], m[9], m[10], m[11], m[0], m[1], m[2], m[3], m[4], m[5],
            ];
        }
        xdp_action::XDP_TX
    }
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
