//! Tunnels where IPv6 is involved: an IPv6 client packet to a real of either family
//! (6in6, 6in4, each as plain IP-in-IP, GUE or GRE), and an IPv4 client packet to an
//! IPv6 real (4in6, likewise). The outer header's family is the real's; its payload
//! type says the inner family (IP protocol 41 or 4, GUE's protocol field the same, GRE
//! 0x86DD or 0x0800), and the L2 header takes the outer family's ethertype.
//!
//! Kept in the forwarding programs (`director_forward6`, and `director_forward` for
//! 4in6), out of the balancers' main paths.

use aya_ebpf::programs::XdpContext;
use director_common::{
    addr::{FAMILY_V6, PROTO_GRE, PROTO_IPIP, PROTO_IPV6, PROTO_TCP, PROTO_UDP, v4_of_16},
    hash::hash_flow_words,
    real::{Real, TUN_F_CSUM, TunType},
    stats::Stat,
};
use network_types::ip::Ipv4Hdr;

use super::{
    FibError, NextHop, Source, ToReal, fib_drop,
    ip6::{
        NextHop6, OUTER6_LEN, SHIM_MAX, addr_words, encap_send, fib_drop6, outer_header6, real_hop6,
    },
    ipip, real_hop, tunnel,
};
use crate::{
    csum,
    headers::{ETH_P_IP, ETH_P_IPV6, IPV6_HLEN, UDP_CHECK},
    packet,
    parse::Packet,
};

/// UDP and the 4-byte GUE header.
const GUE_LEN: usize = 12;
/// GRE without and with its checksum field.
const GRE_LEN: usize = 4;
const GRE_CSUM_LEN: usize = 8;
/// GRE's flags: a checksum is present.
const GRE_F_CSUM: u8 = 0x80;

/// What the outer headers announce about the client's packet.
#[derive(Clone, Copy)]
struct Inner {
    /// IP protocol (and GUE protocol): 41 for IPv6, 4 for IPv4.
    proto: u8,
    /// GRE protocol type: 0x86DD or 0x0800.
    gre: [u8; 2],
}

#[inline(always)]
fn inner_of(pkt: &Packet) -> Inner {
    if pkt.family == FAMILY_V6 {
        Inner {
            proto: PROTO_IPV6,
            gre: ETH_P_IPV6.to_be_bytes(),
        }
    } else {
        Inner {
            proto: PROTO_IPIP,
            gre: ETH_P_IP.to_be_bytes(),
        }
    }
}

/// Forward a client's packet to a tunnel real of any type: to an IPv6 real whatever
/// the client's family (6in6, 4in6), to an IPv4 real an IPv6 client's (6in4; IPv4 in
/// IPv4 is `tunnel`'s).
#[inline(always)]
pub fn forward(ctx: &XdpContext, pkt: &Packet, real_id: u32, real: &Real, now: u64) -> (u32, Stat) {
    if real.family == FAMILY_V6 {
        return over6(ctx, pkt, real_id, real, now);
    }
    if pkt.family != FAMILY_V6 {
        return (aya_ebpf::bindings::xdp_action::XDP_DROP, Stat::DropBadReal);
    }
    over4(ctx, pkt, real_id, real, now)
}

/// What follows the outer IP header: its IP protocol, and the header bytes of the
/// tunnel type (none for IP-in-IP; UDP and GUE; GRE with or without its checksum) in
/// the last `len` bytes of `bytes` (see `ip6::encap_send`).
struct Shim {
    proto: u8,
    len: usize,
    bytes: [u8; SHIM_MAX],
}

/// The tunnel real's shim for this packet, its lengths and checksum to be filled in by
/// [`finish_shim`] once the outer addresses are known.
#[inline(always)]
fn shim(pkt: &Packet, real: &Real, hash: u32) -> Shim {
    let inner = inner_of(pkt);
    let csum = real.tun_flags & TUN_F_CSUM != 0;
    match TunType::from_u8(real.tun_type) {
        Some(TunType::Gue) => {
            let sport = gue_sport(hash);
            let dport = real.tun_port_be.to_ne_bytes();
            Shim {
                proto: PROTO_UDP,
                len: GUE_LEN,
                bytes: [
                    sport[0],
                    sport[1],
                    dport[0],
                    dport[1],
                    0,
                    0,
                    0,
                    0,
                    0,
                    inner.proto,
                    0,
                    0,
                ],
            }
        }
        Some(TunType::Gre) if csum => Shim {
            proto: PROTO_GRE,
            len: GRE_CSUM_LEN,
            bytes: [
                0,
                0,
                0,
                0,
                GRE_F_CSUM,
                0,
                inner.gre[0],
                inner.gre[1],
                0,
                0,
                0,
                0,
            ],
        },
        Some(TunType::Gre) => Shim {
            proto: PROTO_GRE,
            len: GRE_LEN,
            bytes: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, inner.gre[0], inner.gre[1]],
        },
        _ => Shim {
            proto: inner.proto,
            len: 0,
            bytes: [0; SHIM_MAX],
        },
    }
}

/// Fill in the shim's lengths and checksum: GUE's UDP length and checksum (`pseudo`:
/// the outer pseudo-header's addresses, summed; with `want`), GRE's checksum (dropped,
/// with its field, when the inner sum is not known: a GRE header that says it has a
/// checksum must have the right one).
#[inline(always)]
fn finish_shim(ctx: &XdpContext, pkt: &Packet, sh: &mut Shim, pseudo: u64, want: bool) {
    if sh.proto == PROTO_UDP {
        let len = ((pkt.ip_len as usize + GUE_LEN) as u16).to_be_bytes();
        sh.bytes[4] = len[0];
        sh.bytes[5] = len[1];
        if want && let Some(sum) = inner_sum_any(ctx, pkt) {
            let b = &sh.bytes;
            let s = pseudo
                + csum::word([0, PROTO_UDP])
                + csum::word(len)
                + csum::word([b[0], b[1]])
                + csum::word([b[2], b[3]])
                + csum::word(len)
                + csum::word([b[8], b[9]])
                + sum;
            let mut c = !csum::fold(s);
            // Zero means "no checksum" (RFC 768).
            if c == 0 {
                c = 0xffff;
            }
            let c = c.to_ne_bytes();
            sh.bytes[UDP_CHECK] = c[0];
            sh.bytes[UDP_CHECK + 1] = c[1];
        }
    } else if sh.proto == PROTO_GRE && sh.len == GRE_CSUM_LEN {
        let proto = [sh.bytes[6], sh.bytes[7]];
        match inner_sum_any(ctx, pkt) {
            Some(sum) => {
                let s = csum::word([GRE_F_CSUM, 0]) + csum::word(proto) + sum;
                let c = (!csum::fold(s)).to_ne_bytes();
                sh.bytes[8] = c[0];
                sh.bytes[9] = c[1];
            }
            None => {
                sh.bytes[8] = 0;
                sh.bytes[9] = 0;
                sh.bytes[10] = proto[0];
                sh.bytes[11] = proto[1];
                sh.len = GRE_LEN;
            }
        }
    }
}

/// Forward a client's packet (of either family) to an IPv6 tunnel real: 6in6 or 4in6
/// as IP-in-IPv6 (next header 41 or 4), GUE or GRE over IPv6. A GUE datagram's UDP
/// checksum is computed whenever the inner packet's sum is known (IPv6 wants one, RFC
/// 8200); otherwise it is zero, which RFC 6935 allows tunnels whose receivers accept
/// it.
#[inline(always)]
pub fn over6(ctx: &XdpContext, pkt: &Packet, real_id: u32, real: &Real, now: u64) -> (u32, Stat) {
    let hash = flow_hash(pkt);
    let mut sh = shim(pkt, real, hash);
    // The largest the shim may be: a GRE checksum found missing later only shrinks it.
    let overhead = (OUTER6_LEN + sh.len) as u16;
    let (hop, _) = match hop6(ctx, pkt, real_id, real, sh.proto, overhead, now) {
        Ok(h) => h,
        Err(verdict) => return verdict,
    };
    let pseudo = csum::words16(&hop.src) + csum::words16(&real.addr);
    finish_shim(ctx, pkt, &mut sh, pseudo, true);
    let plen = pkt.ip_len + sh.len as u16;
    let ip = outer_header6(&hop.src, &real.addr, sh.proto, plen, pkt.tos, hash);
    encap_send(ctx, pkt, &hop.link, &ip, &sh.bytes, sh.len, ETH_P_IPV6)
}

/// Forward an IPv6 client's packet to an IPv4 tunnel real (6in4): an outer IPv4 header
/// with protocol 41 (DF set: an IPv6 packet is never fragmented on its way), or GUE or
/// GRE over IPv4.
#[inline(always)]
fn over4(ctx: &XdpContext, pkt: &Packet, real_id: u32, real: &Real, now: u64) -> (u32, Stat) {
    let mut sh = shim(pkt, real, flow_hash(pkt));
    let dst = v4_of_16(&real.addr);
    let overhead = (Ipv4Hdr::LEN + sh.len) as u16;
    let (hop, _) = match hop4(ctx, pkt, real_id, dst, sh.proto, overhead, now) {
        Ok(h) => h,
        Err(verdict) => return verdict,
    };
    let pseudo = csum::words(&hop.src) + csum::words(&dst);
    finish_shim(ctx, pkt, &mut sh, pseudo, real.tun_flags & TUN_F_CSUM != 0);
    let tot_len = pkt.ip_len + (Ipv4Hdr::LEN + sh.len) as u16;
    let ip = ipip::outer_header(pkt, &hop, dst, sh.proto, tot_len);
    encap_send(ctx, pkt, &hop, &ip, &sh.bytes, sh.len, ETH_P_IP)
}

/// The verdict for a failed next-hop lookup, by the client packet's family (its sender
/// is told of a too-big packet in its own protocol).
#[inline(always)]
fn fib_fail(ctx: &XdpContext, pkt: &Packet, e: FibError, overhead: u16) -> (u32, Stat) {
    if pkt.family == FAMILY_V6 {
        fib_drop6(ctx, e, overhead)
    } else {
        fib_drop(ctx, pkt, e, overhead)
    }
}

/// The next hop towards an IPv6 tunnel real for a packet that grows by `overhead`
/// (outer IPv6 header included), and the outer header's payload length.
#[inline(always)]
fn hop6(
    ctx: &XdpContext,
    pkt: &Packet,
    real_id: u32,
    real: &Real,
    proto: u8,
    overhead: u16,
    now: u64,
) -> Result<(NextHop6, u16), (u32, Stat)> {
    let Some(outer_len) = pkt.ip_len.checked_add(overhead) else {
        return Err((aya_ebpf::bindings::xdp_action::XDP_DROP, Stat::DropEncap));
    };
    match real_hop6(ctx, real_id, &real.addr, None, proto, outer_len, now) {
        Ok(hop) => Ok((hop, outer_len - IPV6_HLEN as u16)),
        Err(e) => Err(fib_fail(ctx, pkt, e, overhead)),
    }
}

/// The next hop towards an IPv4 tunnel real (6in4), and the outer IPv4 length.
#[inline(always)]
fn hop4(
    ctx: &XdpContext,
    pkt: &Packet,
    real_id: u32,
    dst: [u8; 4],
    proto: u8,
    overhead: u16,
    now: u64,
) -> Result<(NextHop, u16), (u32, Stat)> {
    let Some(outer_len) = pkt.ip_len.checked_add(overhead) else {
        return Err((aya_ebpf::bindings::xdp_action::XDP_DROP, Stat::DropEncap));
    };
    let to = ToReal {
        id: real_id,
        addr: dst,
        src: Source::Ours,
        proto,
        tos: pkt.tos,
        ip_len: outer_len,
    };
    match real_hop(ctx, &to, now) {
        Ok(hop) => Ok((hop, outer_len)),
        Err(e) => Err(fib_fail(ctx, pkt, e, overhead)),
    }
}

/// The flow's hash (the scheduler's, `hash_flow`): the outer flow label, GUE's source
/// port.
#[inline(always)]
fn flow_hash(pkt: &Packet) -> u32 {
    hash_flow_words(addr_words(&pkt.src), pkt.sport_be, pkt.dport_be, pkt.proto)
}

/// GUE's UDP source port: in 49152..=65535 (the dynamic ports) from the flow's hash, so
/// a real's NIC spreads the flows over its receive queues.
#[inline(always)]
fn gue_sport(hash: u32) -> [u8; 2] {
    ((0xc000 | (hash & 0x3fff)) as u16).to_be_bytes()
}

/// The one's-complement sum of the client's packet as it stands, when its checksums
/// tell it without reading the payload (see `tunnel::inner_sum`). For IPv6: the fixed
/// header's words (no checksum of its own) and a TCP/UDP segment right behind it (with
/// extension headers in between, or a fragment, the sum is not known).
#[inline(always)]
fn inner_sum_any(ctx: &XdpContext, pkt: &Packet) -> Option<u64> {
    if pkt.family != FAMILY_V6 {
        return tunnel::inner_sum(ctx, pkt);
    }
    if pkt.is_fragment || pkt.l4_off != pkt.l2_len + IPV6_HLEN {
        return None;
    }
    if pkt.proto != PROTO_TCP && pkt.proto != PROTO_UDP {
        return None;
    }
    let head = packet::header::<[u8; 8]>(ctx, pkt.l2_len).ok()?;
    let l4_len = pkt.ip_len - IPV6_HLEN as u16;
    let fixed = csum::words(&[head[0], head[1], head[2], head[3]])
        + csum::words(&[head[4], head[5], head[6], head[7]])
        + csum::words16(&pkt.src)
        + csum::words16(&pkt.dst);
    // A valid segment sums to the complement of its pseudo-header.
    let pseudo = csum::words16(&pkt.src)
        + csum::words16(&pkt.dst)
        + csum::word(l4_len.to_be_bytes())
        + csum::word([0, pkt.proto]);
    Some(fixed + (!csum::fold(pseudo)) as u64)
}
