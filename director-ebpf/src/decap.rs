//! Real-server side of the tunnels: strip the outer headers of IPIP, GRE and GUE (on the
//! configured UDP port) packets that a director sent to this host and hand the inner
//! packet (addressed to the VIP on our lo) to the kernel. For hosts whose kernel has no
//! ipip, gre or fou module, or that should not run them. Outer checksums (GRE's, GUE's
//! UDP one) are not verified: the inner packet's own checksums still are, by the kernel.
//!
//! Only what a director could have sent is unwrapped: an outer source in the configured
//! director list, an outer destination that is one of this host's addresses, no outer
//! fragment, lengths that agree with the frame and the inner header, a TTL above zero.
//! Anything else labelled a tunnel would let whoever reaches the host inject packets with
//! any inner source past its filters; it is dropped, counted by reason. A tunnel packet
//! for another host is not ours to unwrap and goes to the kernel untouched.

use aya_ebpf::{bindings::xdp_action, helpers::bpf_xdp_adjust_head, programs::XdpContext};
use director_common::{
    addr::{PROTO_GRE, PROTO_IPIP, PROTO_UDP},
    maps::{DECAP_F_FROM, DECAP_F_LOCAL},
    stats::Stat,
};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::{
    headers::{
        ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, IP_MF, IP_OFFSET_MASK, IPV4_VIHL_NO_OPTIONS,
        VLAN_ETHERTYPE, VLAN_HLEN, ip_hlen, ip_version,
    },
    maps::{DECAP_ADDRS, DECAP_GUE_PORT},
    packet,
};

/// UDP and GUE headers behind the outer IPv4 header.
const GUE_LEN: usize = 8 + 4;
/// GRE's protocol field for IPv4.
const GRE_PROTO_IPV4: [u8; 2] = [0x08, 0x00];
/// GRE's first flags byte with only the checksum flag set.
const GRE_F_CSUM: u8 = 0x80;

/// Unwrap a tunnel packet a director sent to this host, or say why not.
#[inline(always)]
pub fn process(ctx: &XdpContext) -> (u32, Stat) {
    let Ok(eth) = packet::header::<EthHdr>(ctx, 0) else {
        return (xdp_action::XDP_PASS, Stat::PassTruncated);
    };
    let ether_type = u16::from_be(eth.ether_type);
    let tagged = ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD;
    let res = if tagged {
        // The ethertype inside the tag must say IPv4 too.
        match packet::header::<[u8; 2]>(ctx, VLAN_ETHERTYPE) {
            Ok(inner) if u16::from_be_bytes(*inner) == ETH_P_IP => {
                strip::<{ EthHdr::LEN + VLAN_HLEN }>(ctx)
            }
            Ok(_) => Err((xdp_action::XDP_PASS, Stat::PassOtherProto)),
            Err(()) => Err((xdp_action::XDP_PASS, Stat::PassTruncated)),
        }
    } else if ether_type == ETH_P_IP {
        strip::<{ EthHdr::LEN }>(ctx)
    } else {
        Err((xdp_action::XDP_PASS, Stat::PassOtherProto))
    };
    match res {
        Ok(stat) => (xdp_action::XDP_PASS, stat),
        Err(verdict) => verdict,
    }
}

/// The verdict of every packet that looks like a director's and is not.
const DROP: u32 = xdp_action::XDP_DROP;

/// The configured flags of an address (`DECAP_F_*`), 0 for an unknown one.
#[inline(always)]
fn flags_of(addr: [u8; 4]) -> u32 {
    // SAFETY: the value is copied at once and a u32 has no invalid bit patterns: should
    // userspace replace the entry meanwhile, the flags read are stale or new, never
    // undefined.
    match unsafe { DECAP_ADDRS.get(u32::from_ne_bytes(addr)) } {
        Some(f) => *f,
        None => 0,
    }
}

/// Which tunnel an outer header announces, before anything else is looked at: IPIP,
/// GRE, and UDP to the configured GUE port. Anything else is not ours to unwrap.
#[inline(always)]
fn tunnel_of<const L2: usize>(ctx: &XdpContext, outer: &Ipv4Hdr) -> Option<Stat> {
    match outer.proto {
        PROTO_IPIP => Some(Stat::Decap),
        PROTO_GRE => Some(Stat::DecapGre),
        PROTO_UDP => {
            // The port sits behind an option-less header; a director sends no options.
            if outer.vihl != IPV4_VIHL_NO_OPTIONS {
                return None;
            }
            let port = *DECAP_GUE_PORT.get(0)?;
            let udp: &[u16; 2] = packet::header(ctx, L2 + Ipv4Hdr::LEN).ok()?;
            (port != 0 && udp[1] as u32 == port).then_some(Stat::DecapGue)
        }
        _ => None,
    }
}

/// The length of the tunnel headers behind the outer IPv4 header (0 for IPIP), if they
/// are what a director sends: GUE version 0 without flags or options around IPIP, in a
/// UDP datagram as long as the outer packet says; GRE version 0 for IPv4 with no flag
/// but the checksum's.
#[inline(always)]
fn tunnel_len<const L2: usize>(ctx: &XdpContext, kind: Stat, outer_len: usize) -> Option<usize> {
    const AT: usize = Ipv4Hdr::LEN;
    match kind {
        Stat::DecapGue => {
            let h: &[u8; GUE_LEN] = packet::header(ctx, L2 + AT).ok()?;
            let udp_len = u16::from_be_bytes([h[4], h[5]]) as usize;
            (udp_len + AT == outer_len && h[8..12] == [0, PROTO_IPIP, 0, 0]).then_some(GUE_LEN)
        }
        Stat::DecapGre => {
            let h: &[u8; 4] = packet::header(ctx, L2 + AT).ok()?;
            if h[2..4] != GRE_PROTO_IPV4 || h[1] != 0 {
                return None;
            }
            match h[0] {
                0 => Some(4),
                GRE_F_CSUM => Some(8),
                _ => None,
            }
        }
        _ => Some(0),
    }
}

/// Check the outer headers behind an L2 header of `L2` bytes and remove them, keeping
/// the L2 header in front. The counter of the tunnel type on success.
#[inline(always)]
fn strip<const L2: usize>(ctx: &XdpContext) -> Result<Stat, (u32, Stat)> {
    let truncated = (xdp_action::XDP_PASS, Stat::PassTruncated);
    let outer: &Ipv4Hdr = packet::header(ctx, L2).map_err(|_| truncated)?;
    let Some(kind) = tunnel_of::<L2>(ctx, outer) else {
        return Err((xdp_action::XDP_PASS, Stat::PassNotVip));
    };
    // Not for this host: the kernel forwards or drops it as it would any packet; it is
    // never unwrapped here.
    if flags_of(outer.dst_addr) & DECAP_F_LOCAL == 0 {
        return Err((xdp_action::XDP_PASS, Stat::DecapNotLocal));
    }
    let malformed = (DROP, Stat::DecapMalformed);
    // The director never adds options.
    if outer.vihl != IPV4_VIHL_NO_OPTIONS {
        return Err(malformed);
    }
    let outer_len = u16::from_be_bytes(outer.tot_len) as usize;
    let frags = u16::from_be_bytes(outer.frags);
    let (ttl, src) = (outer.ttl, outer.src_addr);
    let extra = tunnel_len::<L2>(ctx, kind, outer_len).ok_or(malformed)?;
    // One of four lengths; the mask tells the verifier the offset is bounded.
    let hdr_len = (Ipv4Hdr::LEN + extra) & 0x3f;
    let inner: &Ipv4Hdr = packet::header(ctx, L2 + hdr_len).map_err(|_| malformed)?;
    // The outer length covers exactly the tunnel headers and the inner packet, which
    // the frame holds (a short frame may carry Ethernet padding after it).
    let inner_len = u16::from_be_bytes(inner.tot_len) as usize;
    let frame_len = packet::len(ctx);
    if ip_version(inner.vihl) != 4
        || ip_hlen(inner.vihl) < Ipv4Hdr::LEN
        || inner_len < ip_hlen(inner.vihl)
        || outer_len != inner_len + hdr_len
        || outer_len + L2 > frame_len
    {
        return Err(malformed);
    }
    // Any fragment: a later one's payload is no packet, and the director never sends
    // fragments (it forwards a packet whole or not at all).
    if frags & (IP_MF | IP_OFFSET_MASK) != 0 {
        return Err((DROP, Stat::DecapFragment));
    }
    if ttl == 0 {
        return Err((DROP, Stat::DecapTtl));
    }
    if flags_of(src) & DECAP_F_FROM == 0 {
        return Err((DROP, Stat::DecapNotDirector));
    }
    let l2: [u8; L2] = *packet::header(ctx, 0).map_err(|_| truncated)?;
    // SAFETY: `ctx.ctx` is this run's `xdp_md`; the headers lent above are not used
    // after the call, and the pointer below is derived after it.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, hdr_len as i32) } != 0 {
        return Err((DROP, Stat::DropEncap));
    }
    let new_l2 = packet::ptr::<[u8; L2]>(ctx, 0).map_err(|_| truncated)?;
    // The L2 header already says IPv4, as the inner packet is.
    // SAFETY: `packet::ptr` checked the frame holds L2 bytes there (a byte array: no
    // alignment); nothing else refers to the frame now.
    unsafe { *new_l2 = l2 };
    Ok(kind)
}
