//! Real-server side of the tunnels: strip the outer headers of IP-in-IP (IPIP, 6in4,
//! 4in6, IPv6-in-IPv6), GRE and GUE (on the configured UDP port) packets that a
//! director sent to this host and hand the inner packet (addressed to the VIP on our
//! lo) to the kernel. Outer and inner headers are IPv4 or IPv6, in any mix. For hosts
//! whose kernel has no ipip, sit, ip6_tunnel, gre or fou module, or that should not run
//! them. Outer checksums (GRE's, GUE's UDP one) are not verified: the inner packet's own
//! checksums still are, by the kernel.
//!
//! Only what a director could have sent is unwrapped: an outer source in the configured
//! director list, an outer destination that is one of this host's addresses, no outer
//! fragment, no IPv4 options or IPv6 extension headers, lengths that agree with the
//! frame and the inner header, a TTL (hop limit) above zero. Anything else labelled a
//! tunnel would let whoever reaches the host inject packets with any inner source past
//! its filters; it is dropped, counted by reason. A tunnel packet for another host is
//! not ours to unwrap and goes to the kernel untouched.

use aya_ebpf::{bindings::xdp_action, helpers::bpf_xdp_adjust_head, programs::XdpContext};
use director_common::{
    addr::{PROTO_FRAGMENT6, PROTO_GRE, PROTO_IPIP, PROTO_IPV6, PROTO_UDP},
    maps::{DECAP_F_FROM, DECAP_F_LOCAL},
    stats::Stat,
};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
};

use crate::{
    headers::{
        ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, FRAG6_HLEN, IP_MF, IP_OFFSET_MASK,
        IPV4_VIHL_NO_OPTIONS, VLAN_ETHERTYPE, VLAN_HLEN, ip_hlen, ip_version,
    },
    maps::{DECAP_ADDRS, DECAP_ADDRS6, DECAP_GUE_PORT},
    packet,
};

/// UDP and GUE headers behind the outer IP header.
const GUE_LEN: usize = 8 + 4;
/// GRE's protocol field for IPv4.
const GRE_PROTO_IPV4: [u8; 2] = ETH_P_IP.to_be_bytes();
/// GRE's protocol field for IPv6.
const GRE_PROTO_IPV6: [u8; 2] = ETH_P_IPV6.to_be_bytes();
/// GRE's first flags byte with only the checksum flag set.
const GRE_F_CSUM: u8 = 0x80;
/// Length of each outer IP header.
const OUTER_V4: usize = Ipv4Hdr::LEN;
const OUTER_V6: usize = Ipv6Hdr::LEN;

/// Unwrap a tunnel packet a director sent to this host, or say why not.
#[inline(always)]
pub fn process(ctx: &XdpContext) -> (u32, Stat) {
    let Ok(eth) = packet::header::<EthHdr>(ctx, 0) else {
        return (xdp_action::XDP_PASS, Stat::PassTruncated);
    };
    const TAGGED: usize = EthHdr::LEN + VLAN_HLEN;
    let ether_type = u16::from_be(eth.ether_type);
    let tagged = ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD;
    let res = if tagged {
        // The ethertype inside the tag says which IP header follows.
        match packet::header::<[u8; 2]>(ctx, VLAN_ETHERTYPE) {
            Ok(inner) if u16::from_be_bytes(*inner) == ETH_P_IP => strip::<TAGGED, OUTER_V4>(ctx),
            Ok(inner) if u16::from_be_bytes(*inner) == ETH_P_IPV6 => strip::<TAGGED, OUTER_V6>(ctx),
            Ok(_) => Err((xdp_action::XDP_PASS, Stat::PassOtherProto)),
            Err(()) => Err((xdp_action::XDP_PASS, Stat::PassTruncated)),
        }
    } else if ether_type == ETH_P_IP {
        strip::<{ EthHdr::LEN }, OUTER_V4>(ctx)
    } else if ether_type == ETH_P_IPV6 {
        strip::<{ EthHdr::LEN }, OUTER_V6>(ctx)
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

/// The configured flags of an IPv4 address (`DECAP_F_*`), 0 for an unknown one.
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

/// The configured flags of an IPv6 address, as [`flags_of`].
#[inline(always)]
fn flags_of6(addr: &[u8; 16]) -> u32 {
    // SAFETY: as in `flags_of`.
    match unsafe { DECAP_ADDRS6.get(addr) } {
        Some(f) => *f,
        None => 0,
    }
}

/// The tunnel an outer header announces.
#[derive(Clone, Copy)]
enum Tunnel {
    /// IP in IP: IPv4 (protocol 4) or IPv6 (41) right behind the outer header.
    Ip {
        inner_v6: bool,
    },
    Gre,
    Gue,
}

impl Tunnel {
    /// The counter of a packet unwrapped from this tunnel.
    #[inline(always)]
    fn stat(self) -> Stat {
        match self {
            Tunnel::Ip { .. } => Stat::Decap,
            Tunnel::Gre => Stat::DecapGre,
            Tunnel::Gue => Stat::DecapGue,
        }
    }
}

/// Which tunnel an outer header's protocol (next header) announces, before anything
/// else is looked at: IP in IP, GRE, and UDP to the configured GUE port (whose UDP
/// header is at `udp_at`, if anywhere). Anything else is not ours to unwrap.
#[inline(always)]
fn tunnel_of(ctx: &XdpContext, proto: u8, udp_at: Option<usize>) -> Option<Tunnel> {
    match proto {
        PROTO_IPIP => Some(Tunnel::Ip { inner_v6: false }),
        PROTO_IPV6 => Some(Tunnel::Ip { inner_v6: true }),
        PROTO_GRE => Some(Tunnel::Gre),
        PROTO_UDP => {
            let port = *DECAP_GUE_PORT.get(0)?;
            let udp: &[u16; 2] = packet::header(ctx, udp_at?).ok()?;
            (port != 0 && udp[1] as u32 == port).then_some(Tunnel::Gue)
        }
        _ => None,
    }
}

/// What the outer IP header says, once it announced a tunnel to this host.
struct Outer {
    tunnel: Tunnel,
    /// The whole outer packet's length, its own header included.
    len: usize,
    /// The outer packet is a fragment (of either kind).
    fragment: bool,
    ttl: u8,
    /// The outer source is a configured director.
    from_director: bool,
}

/// The outer IPv4 header behind `L2` bytes of L2 header.
#[inline(always)]
fn outer_v4<const L2: usize>(ctx: &XdpContext) -> Result<Outer, (u32, Stat)> {
    let truncated = (xdp_action::XDP_PASS, Stat::PassTruncated);
    let outer: &Ipv4Hdr = packet::header(ctx, L2).map_err(|_| truncated)?;
    // The port sits behind an option-less header; a director sends no options (a
    // header with options is refused below, once the packet is known to be for us).
    let udp_at = (outer.vihl == IPV4_VIHL_NO_OPTIONS).then_some(L2 + OUTER_V4);
    let Some(tunnel) = tunnel_of(ctx, outer.proto, udp_at) else {
        return Err((xdp_action::XDP_PASS, Stat::PassNotVip));
    };
    // Not for this host: the kernel forwards or drops it as it would any packet; it is
    // never unwrapped here.
    if flags_of(outer.dst_addr) & DECAP_F_LOCAL == 0 {
        return Err((xdp_action::XDP_PASS, Stat::DecapNotLocal));
    }
    if outer.vihl != IPV4_VIHL_NO_OPTIONS {
        return Err((DROP, Stat::DecapMalformed));
    }
    Ok(Outer {
        tunnel,
        len: u16::from_be_bytes(outer.tot_len) as usize,
        fragment: u16::from_be_bytes(outer.frags) & (IP_MF | IP_OFFSET_MASK) != 0,
        ttl: outer.ttl,
        from_director: flags_of(outer.src_addr) & DECAP_F_FROM != 0,
    })
}

/// The outer IPv6 header behind `L2` bytes of L2 header.
#[inline(always)]
fn outer_v6<const L2: usize>(ctx: &XdpContext) -> Result<Outer, (u32, Stat)> {
    let truncated = (xdp_action::XDP_PASS, Stat::PassTruncated);
    let outer: &Ipv6Hdr = packet::header(ctx, L2).map_err(|_| truncated)?;
    let mut proto = outer.next_hdr;
    let fragment = proto == PROTO_FRAGMENT6;
    if fragment {
        // The fragmented protocol is the fragment header's next header. A fragment is
        // refused whatever it carries, so GUE is not looked for behind it.
        let frag: &[u8; FRAG6_HLEN] = packet::header(ctx, L2 + OUTER_V6).map_err(|_| truncated)?;
        proto = if frag[0] == PROTO_UDP { 0 } else { frag[0] };
    }
    let Some(tunnel) = tunnel_of(ctx, proto, Some(L2 + OUTER_V6)) else {
        return Err((xdp_action::XDP_PASS, Stat::PassNotVip));
    };
    let dst = outer.dst_addr;
    if flags_of6(&dst) & DECAP_F_LOCAL == 0 {
        return Err((xdp_action::XDP_PASS, Stat::DecapNotLocal));
    }
    // Behind a fragment header nothing is where the checks below look: refused as the
    // fragment it is.
    if fragment {
        return Err((DROP, Stat::DecapFragment));
    }
    if outer.version() != 6 {
        return Err((DROP, Stat::DecapMalformed));
    }
    let src = outer.src_addr;
    Ok(Outer {
        tunnel,
        len: Ipv6Hdr::LEN + u16::from_be_bytes(outer.payload_len) as usize,
        fragment: false,
        ttl: outer.hop_limit,
        from_director: flags_of6(&src) & DECAP_F_FROM != 0,
    })
}

/// The length of the tunnel headers behind the outer IP header of `OUTER` bytes (0 for
/// IP in IP), and whether the inner packet is IPv6, if they are what a director sends:
/// GUE version 0 without flags or options around IPv4 or IPv6, in a UDP datagram as
/// long as the outer packet says; GRE version 0 for IPv4 or IPv6 with no flag but the
/// checksum's.
#[inline(always)]
fn tunnel_len<const L2: usize, const OUTER: usize>(
    ctx: &XdpContext,
    tunnel: Tunnel,
    outer_len: usize,
) -> Option<(usize, bool)> {
    match tunnel {
        Tunnel::Gue => {
            let h: &[u8; GUE_LEN] = packet::header(ctx, L2 + OUTER).ok()?;
            let udp_len = u16::from_be_bytes([h[4], h[5]]) as usize;
            let inner = h[9];
            (udp_len + OUTER == outer_len
                && h[8] == 0
                && h[10..12] == [0, 0]
                && (inner == PROTO_IPIP || inner == PROTO_IPV6))
                .then_some((GUE_LEN, inner == PROTO_IPV6))
        }
        Tunnel::Gre => {
            let h: &[u8; 4] = packet::header(ctx, L2 + OUTER).ok()?;
            let inner_v6 = h[2..4] == GRE_PROTO_IPV6;
            if (h[2..4] != GRE_PROTO_IPV4 && !inner_v6) || h[1] != 0 {
                return None;
            }
            match h[0] {
                0 => Some((4, inner_v6)),
                GRE_F_CSUM => Some((8, inner_v6)),
                _ => None,
            }
        }
        Tunnel::Ip { inner_v6 } => Some((0, inner_v6)),
    }
}

/// The length the inner IP header at `at` announces for its packet, if it is a header
/// of the family the tunnel said.
#[inline(always)]
fn inner_len(ctx: &XdpContext, at: usize, v6: bool) -> Option<usize> {
    if v6 {
        let inner: &Ipv6Hdr = packet::header(ctx, at).ok()?;
        (inner.version() == 6)
            .then_some(Ipv6Hdr::LEN + u16::from_be_bytes(inner.payload_len) as usize)
    } else {
        let inner: &Ipv4Hdr = packet::header(ctx, at).ok()?;
        let len = u16::from_be_bytes(inner.tot_len) as usize;
        (ip_version(inner.vihl) == 4
            && ip_hlen(inner.vihl) >= Ipv4Hdr::LEN
            && len >= ip_hlen(inner.vihl))
        .then_some(len)
    }
}

/// Check the outer headers (an IP header of `OUTER` bytes, IPv4's or IPv6's) behind an
/// L2 header of `L2` bytes and remove them, keeping the L2 header in front with the
/// inner packet's ethertype. The counter of the tunnel type on success.
#[inline(always)]
fn strip<const L2: usize, const OUTER: usize>(ctx: &XdpContext) -> Result<Stat, (u32, Stat)> {
    let truncated = (xdp_action::XDP_PASS, Stat::PassTruncated);
    let outer = if OUTER == OUTER_V6 {
        outer_v6::<L2>(ctx)?
    } else {
        outer_v4::<L2>(ctx)?
    };
    let malformed = (DROP, Stat::DecapMalformed);
    let (extra, inner_v6) =
        tunnel_len::<L2, OUTER>(ctx, outer.tunnel, outer.len).ok_or(malformed)?;
    // One of eight lengths; the mask tells the verifier the offset is bounded.
    let hdr_len = (OUTER + extra) & 0x3f;
    let inner_len = inner_len(ctx, L2 + hdr_len, inner_v6).ok_or(malformed)?;
    // The outer length covers exactly the tunnel headers and the inner packet, which
    // the frame holds (a short frame may carry Ethernet padding after it).
    if outer.len != inner_len + hdr_len || outer.len + L2 > packet::len(ctx) {
        return Err(malformed);
    }
    // Any fragment: a later one's payload is no packet, and the director never sends
    // fragments (it forwards a packet whole or not at all).
    if outer.fragment {
        return Err((DROP, Stat::DecapFragment));
    }
    if outer.ttl == 0 {
        return Err((DROP, Stat::DecapTtl));
    }
    if !outer.from_director {
        return Err((DROP, Stat::DecapNotDirector));
    }
    let mut l2: [u8; L2] = *packet::header(ctx, 0).map_err(|_| truncated)?;
    // The L2 header's (innermost) ethertype becomes the inner packet's: 6in4 and 4in6
    // change the family.
    let ether_type = if inner_v6 { ETH_P_IPV6 } else { ETH_P_IP }.to_be_bytes();
    l2[L2 - 2] = ether_type[0];
    l2[L2 - 1] = ether_type[1];
    // SAFETY: `ctx.ctx` is this run's `xdp_md`; the headers lent above are not used
    // after the call, and the pointer below is derived after it.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, hdr_len as i32) } != 0 {
        return Err((DROP, Stat::DropEncap));
    }
    let new_l2 = packet::ptr::<[u8; L2]>(ctx, 0).map_err(|_| truncated)?;
    // SAFETY: `packet::ptr` checked the frame holds L2 bytes there (a byte array: no
    // alignment); nothing else refers to the frame now.
    unsafe { *new_l2 = l2 };
    Ok(outer.tunnel.stat())
}
