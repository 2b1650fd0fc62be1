//! ICMP: the "fragmentation needed" the director sends for packets that do not fit the
//! path to their real, and the ICMP errors it routes to the owner of the flow they are
//! about.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_csum_diff, bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use director_common::{
    addr::{FAMILY_V6, PROTO_ICMP, v4_of_16},
    config::NS_PER_S,
    conn_state::alive,
    conntable::{CONN_F_REPLY, FlowKey},
    iface::{ICMP_TOO_BIG_BURST, ICMP_TOO_BIG_PER_S},
    maps::JUMP_TOO_BIG,
    real::Method,
    stats::Stat,
};
use network_types::ip::Ipv4Hdr;

use crate::{
    balancer6, conntable, csum,
    forward::{dr, nat, tunnel},
    headers::{
        ETH_HLEN, ICMP_CHECK, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, ICMP_HLEN, IP_CHECK,
        IPV4_MAX_HLEN, IPV4_VIHL_NO_OPTIONS, MACS_LEN, VLAN_HLEN,
    },
    maps::{ICMP_RATE, JUMP, SETTINGS, TOO_BIG_MTU},
    packet,
    parse::{Packet, icmp_error, parse},
    scheduler::real_of,
    stats::count,
};

/// Bytes of the offending packet quoted: the longest IPv4 header and the 8 bytes of its
/// transport header that RFC 792 asks for (the ports and, for TCP, the sequence number
/// the sender checks the error against).
const QUOTE: usize = IPV4_MAX_HLEN + 8;
/// What goes in front of the quote.
const HEADERS: usize = Ipv4Hdr::LEN + ICMP_HLEN;
/// TOS of an ICMP error, as the kernel sends them (precedence "internetwork control").
const TOS_INTERNETCONTROL: u8 = 0xc0;
/// TTL of an ICMP error (the kernel's default TTL).
const TTL: u8 = 64;

/// A packet for a virtual service does not fit the egress MTU (`mtu`: what the sender's
/// packets may be, the method's own overhead already taken off). With DF set, answer
/// the sender with ICMP "fragmentation needed" from the address it sent to (the VIP),
/// so its path-MTU discovery shrinks its packets; without DF, drop it: XDP cannot
/// fragment.
///
/// The answer is built by a program of its own (tail call `JUMP_TOO_BIG`, see
/// [`answer_too_big`]), so its code is not inlined at every place a packet can turn out
/// too big.
#[inline(always)]
pub fn too_big(ctx: &XdpContext, pkt: &Packet, mtu: u16) -> (u32, Stat) {
    // Never an ICMP error about an ICMP message (RFC 1122, 3.2.2); the quote needs
    // the packet to be at least as long as the quote.
    if !pkt.dont_fragment || pkt.proto == PROTO_ICMP || (pkt.ip_len as usize) < QUOTE {
        return (xdp_action::XDP_DROP, Stat::DropTooBig);
    }
    if let Some(m) = TOO_BIG_MTU.get_ptr_mut(0) {
        // SAFETY: a per-CPU map value, valid while the program runs; only this CPU's
        // programs touch it, one at a time.
        unsafe { *m = mtu as u32 };
        // SAFETY: control does not come back when the call succeeds; no value with a
        // destructor is live here.
        unsafe { JUMP.tail_call(ctx, JUMP_TOO_BIG) };
    }
    (xdp_action::XDP_DROP, Stat::DropTooBig)
}

/// The `JUMP_TOO_BIG` program: answer the packet (unchanged since the balancer parsed
/// it) with "fragmentation needed" for the MTU in `DIR_TOO_BIG_MTU`, within this CPU's
/// rate.
#[inline(always)]
pub fn answer_too_big(ctx: &XdpContext, now: u64) -> (u32, Stat) {
    let Ok(pkt) = parse(ctx) else {
        return (xdp_action::XDP_DROP, Stat::DropTooBig);
    };
    let pkt = &pkt;
    let Some(mtu) = TOO_BIG_MTU.get(0) else {
        return (xdp_action::XDP_DROP, Stat::DropTooBig);
    };
    let mtu = *mtu as u16;
    if !take_token(now) {
        return (xdp_action::XDP_DROP, Stat::IcmpTooBigLimited);
    }
    const TAGGED: usize = ETH_HLEN + VLAN_HLEN;
    let built = if pkt.l2_len == ETH_HLEN {
        frag_needed::<ETH_HLEN, { ETH_HLEN + HEADERS + QUOTE }>(ctx, pkt, mtu)
    } else {
        frag_needed::<TAGGED, { TAGGED + HEADERS + QUOTE }>(ctx, pkt, mtu)
    };
    match built {
        Ok(()) => (xdp_action::XDP_TX, Stat::IcmpTooBig),
        Err(()) => (xdp_action::XDP_DROP, Stat::DropTooBig),
    }
}

/// This CPU's token bucket (`DIR_ICMP_RATE`), shared by ICMP and ICMPv6: credit in nanoseconds accrues with time,
/// up to a burst's worth, and each message spends its share of a second.
#[inline(always)]
pub fn take_token(now: u64) -> bool {
    const COST: u64 = NS_PER_S / ICMP_TOO_BIG_PER_S;
    const CAP: u64 = COST * ICMP_TOO_BIG_BURST;
    let Some(b) = ICMP_RATE.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: a per-CPU map value, valid while the program runs; only this CPU's
    // programs touch it, one at a time.
    let b = unsafe { &mut *b };
    let credit = b.credit_ns.saturating_add(now.saturating_sub(b.last_ns));
    let credit = if credit > CAP { CAP } else { credit };
    b.last_ns = now;
    if credit < COST {
        b.credit_ns = credit;
        return false;
    }
    b.credit_ns = credit - COST;
    true
}

/// Turn the frame into the ICMP error in place: keep its L2 header (`L2` bytes, with a
/// VLAN tag if any) with the MACs swapped, cut the packet to its first `QUOTE` bytes,
/// and put an IPv4 and an ICMP header between. `FRAME` is the whole result, so one
/// bounds check covers every write.
#[inline(always)]
fn frag_needed<const L2: usize, const FRAME: usize>(
    ctx: &XdpContext,
    pkt: &Packet,
    mtu: u16,
) -> Result<(), ()> {
    const { assert!(FRAME == L2 + HEADERS + QUOTE) };
    let l2: [u8; L2] = *packet::header(ctx, 0)?;
    let len = packet::len(ctx);
    // parse() checked that the frame holds the whole IP packet, and too_big() that the
    // packet is longer than the quote.
    let cut = len.checked_sub(L2 + QUOTE).ok_or(())?;
    // SAFETY: `ctx.ctx` is this run's `xdp_md`; no pointer into the frame is held
    // across the call (pointers are derived again below).
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, -(cut as i32)) } != 0 {
        return Err(());
    }
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
    let (src, dst) = (v4_of_16(&pkt.dst), v4_of_16(&pkt.src));
    let total = ((HEADERS + QUOTE) as u16).to_be_bytes();
    let mut ip: [u8; Ipv4Hdr::LEN] = [
        IPV4_VIHL_NO_OPTIONS,
        TOS_INTERNETCONTROL,
        total[0],
        total[1],
        0,
        0,
        0,
        0,
        TTL,
        PROTO_ICMP,
        0,
        0,
        src[0],
        src[1],
        src[2],
        src[3],
        dst[0],
        dst[1],
        dst[2],
        dst[3],
    ];
    let check = csum::ipv4_header(&ip);
    ip[IP_CHECK] = check[0];
    ip[IP_CHECK + 1] = check[1];
    let mtu = mtu.to_be_bytes();
    let icmp: [u8; ICMP_HLEN] = [
        ICMP_DEST_UNREACH,
        ICMP_FRAG_NEEDED,
        0,
        0,
        0,
        0,
        mtu[0],
        mtu[1],
    ];
    // SAFETY: `packet::ptr` checked the frame holds FRAME == L2 + HEADERS + QUOTE
    // bytes at `f`, and every write below stays inside them (byte arrays: no
    // alignment). bpf_csum_diff reads ICMP_HLEN + QUOTE bytes from `msg`, inside them
    // too (the verifier checks that as well).
    unsafe {
        *(f as *mut [u8; L2]) = eth;
        *(f.add(L2) as *mut [u8; Ipv4Hdr::LEN]) = ip;
        *(f.add(L2 + Ipv4Hdr::LEN) as *mut [u8; ICMP_HLEN]) = icmp;
        let msg = f.add(L2 + Ipv4Hdr::LEN);
        let sum = bpf_csum_diff(
            core::ptr::null_mut(),
            0,
            msg as *mut u32,
            (ICMP_HLEN + QUOTE) as u32,
            0,
        );
        *(msg.add(ICMP_CHECK) as *mut [u8; 2]) = csum::of_csum_diff(sum);
    }
    Ok(())
}

/// An ICMP error about a packet of a virtual service's flow goes where the flow goes:
/// the quoted packet is a reply the flow's real sent (source VIP:port) and the error
/// goes to that real, by its method; or, for NAT, the quoted packet is one the real
/// received, and the error goes to the client with the virtual address put back.
/// Anything else is the kernel's.
#[inline(always)]
pub fn route_error(ctx: &XdpContext, now: u64) -> (u32, Stat) {
    let pass = (xdp_action::XDP_PASS, Stat::PassOtherProto);
    let Some(e) = icmp_error(ctx) else {
        return pass;
    };
    let e = &e;
    let Some(settings) = SETTINGS.get(0) else {
        return pass;
    };
    // An error goes to the source of the packet it quotes: anything else is not about
    // a flow of ours.
    if v4_of_16(&e.outer.dst) != e.src {
        return pass;
    }
    // The flow's own direction is the quoted packet's reverse.
    let key = FlowKey {
        src: e.dst,
        dst: e.src,
        sport_be: e.dport_be,
        dport_be: e.sport_be,
        proto: e.proto,
        _pad0: 0,
        _pad1: 0,
    };
    let found = conntable::find(&key, settings.conn_seed);
    let Some(conn) = found.entry(&key) else {
        return pass;
    };
    if !alive(conn.state, conn.last_seen_ns, now, settings) {
        return pass;
    }
    if conn.flags & CONN_F_REPLY != 0 {
        return nat::icmp_to_client(ctx, e, &conn, now);
    }
    let Some(real) = real_of(conn.real, conn.service) else {
        return pass;
    };
    let sent = match Method::from_u8(real.method) {
        Some(Method::Route) => dr::forward(ctx, &e.outer, conn.real, real, now),
        // 4in6 lives in the IPv6 forwarding program, which tunnels the error as it is
        // (and counts it).
        Some(Method::Tunnel) if real.family == FAMILY_V6 => {
            return balancer6::hand_over(ctx, conn.real, conn.service);
        }
        Some(Method::Tunnel) => tunnel::forward(ctx, &e.outer, conn.real, real, now),
        Some(Method::Masq) => nat::icmp_to_real(ctx, e, conn.real, real, now),
        None => (xdp_action::XDP_DROP, Stat::DropBadReal),
    };
    if matches!(sent.1, Stat::Tx | Stat::Redirect) {
        count(Stat::IcmpToReal);
    }
    sent
}
