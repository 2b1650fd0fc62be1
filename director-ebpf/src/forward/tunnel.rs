//! GUE and GRE tunnels: an outer IPv4 header from this host to the real, then a UDP and
//! a GUE header (GUE) or a GRE header (GRE), in front of the client's packet. The real
//! decapsulates and answers the client directly, as with IPIP (`ipip`).
//!
//! Run by the balancer's main program for established flows and by the forwarding
//! program (`director_forward`) for a new flow's first packet.

use aya_ebpf::{bindings::xdp_action, helpers::bpf_xdp_adjust_head, programs::XdpContext};
use director_common::{
    addr::{FAMILY_V6, PROTO_GRE, PROTO_ICMP, PROTO_TCP, PROTO_UDP, v4_of_16},
    hash::hash_flow,
    real::{Real, TUN_F_CSUM, TunType},
    stats::Stat,
};
use network_types::ip::Ipv4Hdr;

use super::{NextHop, ipip, transmit};
use crate::{
    csum,
    headers::{ETH_HLEN, IP_CHECK, MACS_LEN, UDP_CHECK, VLAN_HLEN},
    packet,
    parse::Packet,
};

/// GUE: UDP header and the 4-byte GUE header (version 0, no options).
const GUE_LEN: usize = 8 + 4;
/// GRE without and with its checksum field (and the reserved half-word after it).
const GRE_LEN: usize = 4;
const GRE_CSUM_LEN: usize = 8;
/// GRE's protocol field: the payload is IPv4.
const GRE_PROTO_IPV4: [u8; 2] = [0x08, 0x00];
/// GRE's flags: a checksum is present (RFC 2784).
const GRE_F_CSUM: u8 = 0x80;
/// The GUE header (draft-ietf-intarea-gue): version 0, no flags or options, the
/// inner protocol IPIP, as the kernel's GUE receiver and IPVS use it.
const GUE_HDR: [u8; 4] = [0, director_common::addr::PROTO_IPIP, 0, 0];

/// Forward a client's packet to a tunnel real of any type.
#[inline(always)]
pub fn forward(ctx: &XdpContext, pkt: &Packet, real_id: u32, real: &Real, now: u64) -> (u32, Stat) {
    if real.family == FAMILY_V6 {
        // 4in6 is `director_forward6`'s: the balancer, the ICMP and the fragment
        // programs hand those flows over there, so this is never reached.
        return (xdp_action::XDP_DROP, Stat::DropBadReal);
    }
    let csum = real.tun_flags & TUN_F_CSUM != 0;
    match TunType::from_u8(real.tun_type) {
        Some(TunType::Gue) => gue(ctx, pkt, real_id, real, csum, now),
        Some(TunType::Gre) if csum => gre::<GRE_CSUM_LEN>(ctx, pkt, real_id, real, true, now),
        Some(TunType::Gre) => gre::<GRE_LEN>(ctx, pkt, real_id, real, false, now),
        _ => ipip::forward(ctx, pkt, real_id, real, now),
    }
}

/// The one's-complement sum of the client's packet as it stands (IP header, L4 header,
/// payload), known without reading the payload: a valid IPv4 header sums to zero (in
/// one's complement), and a TCP or UDP segment with a valid checksum to the complement
/// of its pseudo-header; an ICMP message to zero. The sum an outer checksum needs
/// follows from the inner checksums, as with the kernel's local checksum offload.
///
/// None where the inner checksum does not cover what follows: a fragment (the checksum
/// covers the whole datagram), a UDP datagram without checksum. Such packets leave
/// without an outer checksum (GUE: UDP checksum 0, which IPv4 allows; GRE: no checksum
/// field), both of which the receivers accept.
#[inline(always)]
pub(super) fn inner_sum(ctx: &XdpContext, pkt: &Packet) -> Option<u64> {
    if pkt.is_fragment {
        return None;
    }
    if pkt.proto == PROTO_ICMP {
        return Some(0);
    }
    if pkt.proto == PROTO_UDP {
        let check = packet::header::<[u8; 2]>(ctx, pkt.l4_off + UDP_CHECK).ok()?;
        if *check == [0, 0] {
            return None;
        }
    } else if pkt.proto != PROTO_TCP {
        return None;
    }
    let l4_len = (pkt.ip_len as usize).checked_sub(pkt.l4_off - pkt.l2_len)? as u16;
    let src = v4_of_16(&pkt.src);
    let dst = v4_of_16(&pkt.dst);
    let pseudo = csum::words(&src)
        + csum::words(&dst)
        + csum::word([0, pkt.proto])
        + csum::word(l4_len.to_be_bytes());
    Some(!csum::fold(pseudo) as u64)
}

/// GUE: outer IPv4, UDP to the real's tunnel port from a source port the flow's hash
/// picks (in 49152..=65535, the dynamic ports: a real's NIC hashes the outer UDP ports
/// to spread flows over its receive queues), the GUE header.
#[inline(always)]
fn gue(
    ctx: &XdpContext,
    pkt: &Packet,
    real_id: u32,
    real: &Real,
    with_csum: bool,
    now: u64,
) -> (u32, Stat) {
    const OVERHEAD: usize = Ipv4Hdr::LEN + GUE_LEN;
    let dst = v4_of_16(&real.addr);
    let (hop, outer_len) = match ipip::hop(ctx, pkt, real_id, dst, PROTO_UDP, OVERHEAD as u16, now)
    {
        Ok(h) => h,
        Err(verdict) => return verdict,
    };
    let sport =
        (0xc000 | (hash_flow(&pkt.src, pkt.sport_be, pkt.dport_be, pkt.proto) & 0x3fff)) as u16;
    let sport = sport.to_be_bytes();
    let dport = real.tun_port_be.to_ne_bytes();
    let udp_len = (outer_len - Ipv4Hdr::LEN as u16).to_be_bytes();
    let ip = ipip::outer_header(pkt, &hop, dst, PROTO_UDP, outer_len);
    let mut h: [u8; OVERHEAD] = [
        ip[0], ip[1], ip[2], ip[3], ip[4], ip[5], ip[6], ip[7], ip[8], ip[9], ip[10], ip[11],
        ip[12], ip[13], ip[14], ip[15], ip[16], ip[17], ip[18], ip[19], sport[0], sport[1],
        dport[0], dport[1], udp_len[0], udp_len[1], 0, 0, GUE_HDR[0], GUE_HDR[1], GUE_HDR[2],
        GUE_HDR[3],
    ];
    if with_csum && let Some(inner) = inner_sum(ctx, pkt) {
        // The UDP checksum over the pseudo-header, UDP, GUE and the inner packet.
        let s = csum::words(&[h[12], h[13], h[14], h[15]])
            + csum::words(&dst)
            + csum::word([0, PROTO_UDP])
            + csum::word(udp_len)
            + csum::word(sport)
            + csum::word(dport)
            + csum::word(udp_len)
            + csum::words(&GUE_HDR)
            + inner;
        let mut c = !csum::fold(s);
        // A computed zero is sent as all ones (zero means "no checksum", RFC 768).
        if c == 0 {
            c = 0xffff;
        }
        let c = c.to_ne_bytes();
        h[Ipv4Hdr::LEN + UDP_CHECK] = c[0];
        h[Ipv4Hdr::LEN + UDP_CHECK + 1] = c[1];
    }
    send(ctx, pkt, &hop, &h)
}

/// GRE: outer IPv4 (protocol 47), the GRE header (protocol IPv4), with a checksum over
/// the GRE header and the inner packet when `with_csum` (`HDR` is then 8).
#[inline(always)]
fn gre<const HDR: usize>(
    ctx: &XdpContext,
    pkt: &Packet,
    real_id: u32,
    real: &Real,
    with_csum: bool,
    now: u64,
) -> (u32, Stat) {
    let dst = v4_of_16(&real.addr);
    let overhead = (Ipv4Hdr::LEN + HDR) as u16;
    let (hop, outer_len) = match ipip::hop(ctx, pkt, real_id, dst, PROTO_GRE, overhead, now) {
        Ok(h) => h,
        Err(verdict) => return verdict,
    };
    let ip = ipip::outer_header(pkt, &hop, dst, PROTO_GRE, outer_len);
    // Without a sum of the inner packet, no checksum field: a GRE header saying it has
    // one must have the right one.
    let inner = if with_csum { inner_sum(ctx, pkt) } else { None };
    if HDR == GRE_CSUM_LEN {
        let (flags, c) = match inner {
            Some(inner) => {
                let s = csum::word([GRE_F_CSUM, 0]) + csum::word(GRE_PROTO_IPV4) + inner;
                (GRE_F_CSUM, (!csum::fold(s)).to_ne_bytes())
            }
            None => (0, [0, 0]),
        };
        if flags == 0 {
            return send::<{ Ipv4Hdr::LEN + GRE_LEN }>(
                ctx,
                pkt,
                &hop,
                &gre_plain(&ip, outer_len - 4),
            );
        }
        let h: [u8; Ipv4Hdr::LEN + GRE_CSUM_LEN] = [
            ip[0],
            ip[1],
            ip[2],
            ip[3],
            ip[4],
            ip[5],
            ip[6],
            ip[7],
            ip[8],
            ip[9],
            ip[10],
            ip[11],
            ip[12],
            ip[13],
            ip[14],
            ip[15],
            ip[16],
            ip[17],
            ip[18],
            ip[19],
            flags,
            0,
            GRE_PROTO_IPV4[0],
            GRE_PROTO_IPV4[1],
            c[0],
            c[1],
            0,
            0,
        ];
        send(ctx, pkt, &hop, &h)
    } else {
        send(ctx, pkt, &hop, &gre_plain(&ip, outer_len))
    }
}

/// The outer IPv4 header `ip` (re-summed for `tot_len`) and a GRE header without
/// checksum.
#[inline(always)]
fn gre_plain(ip: &[u8; 20], tot_len: u16) -> [u8; Ipv4Hdr::LEN + GRE_LEN] {
    let len = tot_len.to_be_bytes();
    let mut o = *ip;
    o[2] = len[0];
    o[3] = len[1];
    o[IP_CHECK] = 0;
    o[IP_CHECK + 1] = 0;
    let check = csum::ipv4_header(&o);
    [
        o[0],
        o[1],
        o[2],
        o[3],
        o[4],
        o[5],
        o[6],
        o[7],
        o[8],
        o[9],
        check[0],
        check[1],
        o[12],
        o[13],
        o[14],
        o[15],
        o[16],
        o[17],
        o[18],
        o[19],
        0,
        0,
        GRE_PROTO_IPV4[0],
        GRE_PROTO_IPV4[1],
    ]
}

/// Put `outer` in front of the packet (keeping its L2 header) and send it.
#[inline(always)]
fn send<const N: usize>(
    ctx: &XdpContext,
    pkt: &Packet,
    hop: &NextHop,
    outer: &[u8; N],
) -> (u32, Stat) {
    const TAGGED: usize = ETH_HLEN + VLAN_HLEN;
    let res = if pkt.l2_len == ETH_HLEN {
        encap::<N, ETH_HLEN, { ETH_HLEN - MACS_LEN }>(ctx, outer)
    } else {
        encap::<N, TAGGED, { TAGGED - MACS_LEN }>(ctx, outer)
    };
    match res {
        Ok(()) => transmit(ctx, hop),
        Err(()) => (xdp_action::XDP_DROP, Stat::DropEncap),
    }
}

/// Grow the packet by the `N` bytes of `outer`, keeping the L2 header (`L2` bytes) in
/// front; only the `TAIL` bytes after the MACs are carried over (transmit() writes the
/// MACs).
#[inline(always)]
fn encap<const N: usize, const L2: usize, const TAIL: usize>(
    ctx: &XdpContext,
    outer: &[u8; N],
) -> Result<(), ()> {
    const { assert!(MACS_LEN + TAIL == L2 && N.is_multiple_of(2)) };
    let tail: [u8; TAIL] = *packet::header(ctx, MACS_LEN)?;
    // SAFETY: `ctx.ctx` is this run's `xdp_md`; no pointer into the frame is held
    // across the call (the writes below derive theirs again).
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(N as i32)) } != 0 {
        return Err(());
    }
    let tail_at = packet::ptr::<[u8; TAIL]>(ctx, MACS_LEN)?;
    let outer_at = packet::ptr::<[u8; N]>(ctx, L2)?;
    // SAFETY: `packet::ptr` checked the frame holds both ranges; they do not overlap
    // (MACS_LEN + TAIL == L2), and no header lent from the frame is live. The outer
    // headers go in as half-words (as bytes: one store each): the frame starts even
    // (`packet::Header`), L2 is 14 or 18 and N even (asserted above).
    unsafe {
        *tail_at = tail;
        let words = outer_at.cast::<u16>();
        for i in 0..N / 2 {
            words
                .add(i)
                .write(u16::from_ne_bytes([outer[2 * i], outer[2 * i + 1]]));
        }
    }
    Ok(())
}
