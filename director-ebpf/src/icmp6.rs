//! ICMPv6: the Packet Too Big the director sends for IPv6 packets that do not fit the
//! path to their real (the ICMPv6 messages the IPv6 balancer hands over are
//! `icmp6_errors`').

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_csum_diff, bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use director_common::{addr::PROTO_ICMPV6, stats::Stat};
use network_types::{eth::EthHdr, ip::Ipv6Hdr};

use crate::{
    csum,
    headers::{
        ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IPV6, ICMP_CHECK, ICMP_HLEN, MACS_LEN,
        VLAN_ETHERTYPE, VLAN_HLEN,
    },
    icmp::take_token,
    maps::TOO_BIG_MTU,
    packet,
};

/// The IPv6 minimum MTU (RFC 8200, 5): every IPv6 link carries packets this long, so
/// no Packet Too Big announces less, and an ICMPv6 error is never longer (RFC 4443,
/// 2.4 (c)).
pub const IPV6_MIN_MTU: u16 = 1280;
/// Bytes of the offending packet a Packet Too Big quotes: as much as fits in the
/// minimum MTU behind the IPv6 and ICMPv6 headers.
const QUOTE: usize = IPV6_MIN_MTU as usize - Ipv6Hdr::LEN - ICMP_HLEN;
/// The ICMPv6 message: its header and the quote.
const MSG: usize = ICMP_HLEN + QUOTE;
/// bpf_csum_diff sums at most 512 bytes per call: the message is summed in three.
const CSUM_CHUNK: usize = 512;
/// ICMPv6 type Packet Too Big (RFC 4443, 3.2).
const ICMP6_PACKET_TOO_BIG: u8 = 2;
/// Hop limit of an ICMPv6 error (the kernel's default hop limit).
const HOP_LIMIT: u8 = 64;

const _: () = assert!(QUOTE == 1232 && MSG > 2 * CSUM_CHUNK && MSG.is_multiple_of(4));

/// The length of the L2 header of an IPv6 frame (untagged or with one tag), if it is
/// one.
#[inline(always)]
fn l2_len_v6(ctx: &XdpContext) -> Option<usize> {
    let eth: &EthHdr = packet::header(ctx, 0).ok()?;
    let ether_type = u16::from_be(eth.ether_type);
    if ether_type == ETH_P_IPV6 {
        return Some(ETH_HLEN);
    }
    if ether_type != ETH_P_8021Q && ether_type != ETH_P_8021AD {
        return None;
    }
    let inner: &[u8; 2] = packet::header(ctx, VLAN_ETHERTYPE).ok()?;
    (u16::from_be_bytes(*inner) == ETH_P_IPV6).then_some(ETH_HLEN + VLAN_HLEN)
}

/// The `JUMP_TOO_BIG6` program: answer the IPv6 packet (unchanged since the balancer
/// parsed it) with a Packet Too Big announcing the MTU in `DIR_TOO_BIG_MTU` (what the
/// sender's packets may be, the method's overhead already taken off; never less than
/// the IPv6 minimum), within this CPU's rate. IPv6 routers never fragment, so without
/// the answer the sender's path-MTU discovery would never learn and the connection
/// would stall.
#[inline(always)]
pub fn answer_too_big(ctx: &XdpContext, now: u64) -> (u32, Stat) {
    let drop = (xdp_action::XDP_DROP, Stat::DropTooBig);
    let Some(l2_len) = l2_len_v6(ctx) else {
        return drop;
    };
    let Ok(ip) = packet::header::<Ipv6Hdr>(ctx, l2_len) else {
        return drop;
    };
    let ip_len = Ipv6Hdr::LEN + u16::from_be_bytes(ip.payload_len) as usize;
    // Never an error about an ICMPv6 message (the balancer hands over TCP and UDP only,
    // and an error about an error could loop); never to a source that is no single
    // host (RFC 4443, 2.4 (e)); the quote needs the packet to be at least as long.
    let src = ip.src_addr;
    // As two words: comparing the byte arrays would become a `bcmp` call.
    // SAFETY: [u8; 16] and [u64; 2] have the same size and every bit pattern is valid.
    let words = unsafe { core::mem::transmute::<[u8; 16], [u64; 2]>(src) };
    if ip.next_hdr == PROTO_ICMPV6
        || src[0] == 0xff
        || words[0] | words[1] == 0
        || ip_len < QUOTE
        || l2_len + ip_len > packet::len(ctx)
    {
        return drop;
    }
    let dst = ip.dst_addr;
    let Some(mtu) = TOO_BIG_MTU.get(0) else {
        return drop;
    };
    let mtu = if *mtu < IPV6_MIN_MTU as u32 {
        IPV6_MIN_MTU as u32
    } else {
        *mtu
    };
    if !take_token(now) {
        return (xdp_action::XDP_DROP, Stat::IcmpTooBigLimited);
    }
    const TAGGED: usize = ETH_HLEN + VLAN_HLEN;
    let built = if l2_len == ETH_HLEN {
        packet_too_big::<ETH_HLEN, { ETH_HLEN + IPV6_MIN_MTU as usize }>(ctx, &src, &dst, mtu)
    } else {
        packet_too_big::<TAGGED, { TAGGED + IPV6_MIN_MTU as usize }>(ctx, &src, &dst, mtu)
    };
    match built {
        Ok(()) => (xdp_action::XDP_TX, Stat::IcmpTooBig),
        Err(()) => drop,
    }
}

/// Turn the frame into the Packet Too Big in place: keep its L2 header (`L2` bytes,
/// with a VLAN tag if any) with the MACs swapped, cut the packet to its first `QUOTE`
/// bytes, and put an IPv6 header (from the packet's destination `dst` to its source
/// `src`) and an ICMPv6 header between. `FRAME` is the whole result, so one bounds check
/// covers every write.
#[inline(always)]
fn packet_too_big<const L2: usize, const FRAME: usize>(
    ctx: &XdpContext,
    src: &[u8; 16],
    dst: &[u8; 16],
    mtu: u32,
) -> Result<(), ()> {
    const { assert!(FRAME == L2 + Ipv6Hdr::LEN + MSG) };
    let l2: [u8; L2] = *packet::header(ctx, 0)?;
    // The caller checked that the frame holds the packet, at least QUOTE bytes long.
    let cut = packet::len(ctx).checked_sub(L2 + QUOTE).ok_or(())?;
    // SAFETY: `ctx.ctx` is this run's `xdp_md`; no pointer into the frame is held
    // across the call (pointers are derived again below).
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, -(cut as i32)) } != 0 {
        return Err(());
    }
    const HEADERS: usize = Ipv6Hdr::LEN + ICMP_HLEN;
    // SAFETY: as for the tail.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(HEADERS as i32)) } != 0 {
        return Err(());
    }
    let f = packet::ptr::<[u8; FRAME]>(ctx, 0)? as *mut u8;
    let mut eth = l2;
    const MAC: usize = MACS_LEN / 2;
    let mut i = 0;
    while i < MAC {
        eth[i] = l2[i + MAC];
        eth[i + MAC] = l2[i];
        i += 1;
    }
    let payload_len = (MSG as u16).to_be_bytes();
    let ip = Ipv6Hdr {
        vcf: [0x60, 0, 0, 0],
        payload_len,
        next_hdr: PROTO_ICMPV6,
        hop_limit: HOP_LIMIT,
        // From the address the packet was sent to (the VIP), to its sender.
        src_addr: *dst,
        dst_addr: *src,
    };
    let mtu = mtu.to_be_bytes();
    let icmp: [u8; ICMP_HLEN] = [
        ICMP6_PACKET_TOO_BIG,
        0,
        0,
        0,
        mtu[0],
        mtu[1],
        mtu[2],
        mtu[3],
    ];
    // The pseudo-header's upper-layer length and next header, as 32-bit words in
    // network order: only their low half-words are not zero.
    let pseudo = csum::word(payload_len) + csum::word([0, PROTO_ICMPV6]);
    // SAFETY: `packet::ptr` checked the frame holds FRAME == L2 + 40 + MSG bytes at `f`,
    // and every write below stays inside them (byte arrays and a `repr(C)` struct of
    // bytes: no alignment). bpf_csum_diff reads the addresses (32 bytes from offset 8 of
    // the IPv6 header) and the MSG bytes of the message, inside them too (the verifier
    // checks that as well).
    unsafe {
        *(f as *mut [u8; L2]) = eth;
        *(f.add(L2) as *mut Ipv6Hdr) = ip;
        let msg = f.add(L2 + Ipv6Hdr::LEN);
        *(msg as *mut [u8; ICMP_HLEN]) = icmp;
        let addrs = f.add(L2 + 8);
        let mut sum = bpf_csum_diff(core::ptr::null_mut(), 0, addrs as *mut u32, 32, 0);
        sum = bpf_csum_diff(
            core::ptr::null_mut(),
            0,
            msg as *mut u32,
            CSUM_CHUNK as u32,
            sum as u32,
        );
        sum = bpf_csum_diff(
            core::ptr::null_mut(),
            0,
            msg.add(CSUM_CHUNK) as *mut u32,
            CSUM_CHUNK as u32,
            sum as u32,
        );
        sum = bpf_csum_diff(
            core::ptr::null_mut(),
            0,
            msg.add(2 * CSUM_CHUNK) as *mut u32,
            (MSG - 2 * CSUM_CHUNK) as u32,
            sum as u32,
        );
        let total = csum::fold(sum as u32 as u64 + pseudo);
        *(msg.add(ICMP_CHECK) as *mut [u8; 2]) = (!total).to_ne_bytes();
    }
    Ok(())
}
