//! IPv6 fragments of datagrams for a virtual service (and of NAT66 replies), as
//! `fragments` does for IPv4: the first fragment (offset 0) carries the ports, takes the
//! normal path and records in `DIR_FRAGS6` what its followers need, under what every
//! fragment of the datagram shares (source, destination, the fragment header's
//! identification and next header); later fragments are sent the same way from that
//! record. A later fragment that overtakes its first goes to the kernel
//! (`pass_fragment`).

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use director_common::{
    addr::{FAMILY_V6, PROTO_FRAGMENT6},
    conntable::Conn6,
    fragments::{FRAG_DIR_IN, FRAG_DIR_REPLY, FRAG_TIMEOUT_NS, FragEntry6, FragKey6},
    real::{Method, Real},
    stats::Stat,
};
use network_types::ip::Ipv6Hdr;

use crate::{
    addr::{addr_words, opaque_zero, put_halves},
    balancer6::hand_over,
    forward::{
        FibError,
        dr::forward6 as dr_forward6,
        ip6::{NextHop6, client_hop6, real_hop6, too_big6},
        nat6, transmit,
    },
    headers::{FRAG6_HLEN, IP6_DST, IP6_DSTOPTS, IP6_HOP_LIMIT, IP6_HOPOPTS, IP6_ROUTING, IP6_SRC},
    maps::FRAGS6,
    packet,
    parse::{IPV6_MAX_EXT_HEADERS, IPV6_OFF_MASK, Packet, addr6, parse_l2_v6},
    scheduler::real_of,
    stats::{Dir, account, count},
};

/// The fragment header of the IPv6 packet at `l2_len` (whose first next header is
/// `next`): its offset in the frame and its eight bytes (next header, reserved, offset
/// and flags, identification), behind at most as many extension headers as the parser
/// skips ([`IPV6_MAX_EXT_HEADERS`]).
#[inline(always)]
fn fragment_header(
    ctx: &XdpContext,
    l2_len: usize,
    mut next: u8,
) -> Option<(usize, [u8; FRAG6_HLEN])> {
    let mut off = l2_len + Ipv6Hdr::LEN;
    // A constant trip count: the verifier walks each step once.
    for _ in 0..IPV6_MAX_EXT_HEADERS {
        let at = off & IPV6_OFF_MASK;
        if next == PROTO_FRAGMENT6 {
            return Some((at, *packet::header::<[u8; FRAG6_HLEN]>(ctx, at).ok()?));
        }
        if next != IP6_HOPOPTS && next != IP6_ROUTING && next != IP6_DSTOPTS {
            return None;
        }
        // Next header, and the length in 8-byte units after the first eight.
        let h: &[u8; 2] = packet::header(ctx, at).ok()?;
        next = h[0];
        off = at + (h[1] as usize + 1) * 8;
    }
    None
}

/// A first fragment from a client, about to be sent to `real`: its followers go there
/// too. Called before the packet is rewritten (the record is keyed by what the
/// followers carry).
#[inline(always)]
pub fn first_in(ctx: &XdpContext, pkt: &Packet, real_id: u32, service: u32, real: &Real, now: u64) {
    remember(ctx, pkt, real_id, service, &real.addr, FRAG_DIR_IN, now);
}

/// The first fragment of a NAT66 reply: its followers get the virtual address back too.
#[inline(always)]
pub fn first_reply(ctx: &XdpContext, pkt: &Packet, conn: &Conn6, now: u64) {
    remember(
        ctx,
        pkt,
        conn.real,
        conn.service,
        &conn.vaddr,
        FRAG_DIR_REPLY,
        now,
    );
}

/// Record where the datagram whose first fragment `pkt` is goes.
#[inline(always)]
fn remember(
    ctx: &XdpContext,
    pkt: &Packet,
    real: u32,
    service: u32,
    addr: &[u8; 16],
    dir: u8,
    now: u64,
) {
    let Ok(ip) = packet::header::<Ipv6Hdr>(ctx, pkt.l2_len) else {
        return;
    };
    let Some((_, f)) = fragment_header(ctx, pkt.l2_len, ip.next_hdr) else {
        return;
    };
    let key = FragKey6 {
        src: pkt.src,
        dst: pkt.dst,
        id_be: u32::from_ne_bytes([f[4], f[5], f[6], f[7]]),
        next: f[0],
        _pad0: 0,
        _pad1: 0,
    };
    let entry = FragEntry6 {
        first_ns: now,
        real,
        service,
        addr: copy_addr(addr),
        dir: dir as u32,
        _pad: 0,
    };
    // A failed insert (no memory) leaves the followers to the kernel: the same outcome
    // as a follower that overtakes its first fragment, and counted the same way.
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "a key or value passed by value gets a stack slot of its own"
    )]
    let _ = FRAGS6.insert(&key, &entry, 0);
}

/// A copy of a 4-aligned address as four word loads and stores: a plain copy out of map
/// memory becomes a `memmove` call.
#[inline(always)]
fn copy_addr(a: &[u8; 16]) -> [u8; 16] {
    // SAFETY: [u32; 4] and [u8; 16] have the same size and every bit pattern is valid.
    unsafe { core::mem::transmute::<[u32; 4], [u8; 16]>(addr_words(a)) }
}

/// The `JUMP_FRAGMENT6` program: a later fragment (offset > 0) of an IPv6 datagram.
#[inline(always)]
pub fn later(ctx: &XdpContext, now: u64) -> (u32, Stat) {
    let pass = (xdp_action::XDP_PASS, Stat::PassFragment);
    let l2_len = match parse_l2_v6(ctx) {
        Ok(l2_len) => l2_len,
        Err(not) => return (xdp_action::XDP_PASS, not.stat()),
    };
    let Ok(ip) = packet::header::<Ipv6Hdr>(ctx, l2_len) else {
        return (xdp_action::XDP_PASS, Stat::PassTruncated);
    };
    let (next, payload_len, hop_limit) = (ip.next_hdr, ip.payload_len, ip.hop_limit);
    let tclass = (ip.vcf[0] << 4) | (ip.vcf[1] >> 4);
    let Some((at, f)) = fragment_header(ctx, l2_len, next) else {
        return pass;
    };
    let (Ok(src), Ok(dst)) = (addr6(ctx, l2_len + IP6_SRC), addr6(ctx, l2_len + IP6_DST)) else {
        return (xdp_action::XDP_PASS, Stat::PassTruncated);
    };
    let key = FragKey6 {
        src,
        dst,
        id_be: u32::from_ne_bytes([f[4], f[5], f[6], f[7]]),
        next: f[0],
        _pad0: 0,
        _pad1: 0,
    };
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "a key passed by value gets a stack slot of its own"
    )]
    // SAFETY: the record holds integers only, so whatever another CPU writes over it
    // meanwhile reads as some valid record; an LRU element is never freed while a
    // program that looked it up runs (RCU).
    let Some(entry) = (unsafe { FRAGS6.get(&key) }) else {
        return pass;
    };
    // Saturating: another CPU may have stamped the record with a tick this CPU's clock
    // has not reached yet.
    if now.saturating_sub(entry.first_ns) > FRAG_TIMEOUT_NS {
        return pass;
    }
    let ip_len = Ipv6Hdr::LEN + u16::from_be_bytes(payload_len) as usize;
    if l2_len + ip_len > packet::len(ctx) {
        return (xdp_action::XDP_DROP, Stat::DropMalformed);
    }
    let zero = opaque_zero();
    let pkt = Packet {
        src,
        dst,
        l2_len,
        l4_off: (at + FRAG6_HLEN) & IPV6_OFF_MASK,
        family: FAMILY_V6,
        proto: f[0],
        // No ports here: zeros the compiler cannot merge into a memset call.
        sport_be: zero,
        dport_be: zero,
        tcp_flags: zero as u8,
        has_options: false,
        is_fragment: true,
        dont_fragment: true,
        ip_len: ip_len as u16,
        tos: tclass,
        ttl: hop_limit,
        frame_len: packet::len(ctx) as u64,
    };
    let (action, stat) = if entry.dir == FRAG_DIR_REPLY as u32 {
        nat_reply(ctx, &pkt, entry, now)
    } else {
        to_real(ctx, &pkt, entry, now)
    };
    if stat == Stat::Tx || stat == Stat::Redirect {
        count(Stat::FragmentForwarded);
    }
    (action, stat)
}

/// Client -> real, by the real's method. A real that left its service since the first
/// fragment went to it cannot complete the datagram, and no other real has its start.
#[inline(always)]
fn to_real(ctx: &XdpContext, pkt: &Packet, entry: &FragEntry6, now: u64) -> (u32, Stat) {
    let Some(real) = real_of(entry.real, entry.service) else {
        return (xdp_action::XDP_DROP, Stat::DropFragment);
    };
    account(entry.service, entry.real, Dir::In, pkt.frame_len, false);
    match Method::from_u8(real.method) {
        Some(Method::Route) => dr_forward6(ctx, pkt, entry.real, real, now),
        // The tunnel (and its lookup) takes more stack than this program has left: the
        // forwarding program tunnels the fragment as it is.
        Some(Method::Tunnel) => hand_over(ctx, entry.real, entry.service),
        Some(Method::Masq) => {
            let addr = copy_addr(&entry.addr);
            let hop = real_hop6(
                ctx,
                entry.real,
                &addr,
                Some(&pkt.src),
                pkt.proto,
                pkt.ip_len,
                now,
            );
            if let Err(FibError::TooBig(mtu)) = hop {
                return too_big6(ctx, mtu);
            }
            // No L4 header here, and IPv6 has no header checksum: the first
            // fragment's checksum update covered the address for the whole datagram.
            if rewrite_addr(ctx, pkt.l2_len, IP6_DST, &addr, None).is_err() {
                return (xdp_action::XDP_DROP, Stat::DropMalformed);
            }
            send(ctx, hop)
        }
        None => (xdp_action::XDP_DROP, Stat::DropBadReal),
    }
}

/// Real -> client, a NAT66 reply: the virtual address back as source, by the rules of
/// the reply's first fragment (`nat6::reply`): from the real's side only, one hop
/// spent, handed to the kernel untranslated when the hop limit is spent or it is too
/// big.
#[inline(always)]
fn nat_reply(ctx: &XdpContext, pkt: &Packet, entry: &FragEntry6, now: u64) -> (u32, Stat) {
    if !nat6::from_real_side(ctx, pkt, entry.real, now) {
        return (xdp_action::XDP_DROP, Stat::DropSpoofedReply);
    }
    if pkt.ttl <= 1 {
        return (xdp_action::XDP_PASS, Stat::PassTtlExceeded);
    }
    let vaddr = copy_addr(&entry.addr);
    let hop = client_hop6(ctx, &vaddr, &pkt.dst, pkt.proto, pkt.ip_len, now);
    if let Err(FibError::TooBig(_)) = hop {
        return (xdp_action::XDP_PASS, Stat::PassTooBig);
    }
    let spend = hop.is_ok().then_some(pkt.ttl - 1);
    if rewrite_addr(ctx, pkt.l2_len, IP6_SRC, &vaddr, spend).is_err() {
        return (xdp_action::XDP_DROP, Stat::DropMalformed);
    }
    account(entry.service, entry.real, Dir::Out, pkt.frame_len, false);
    send(ctx, hop)
}

/// Write `addr` over the source or destination address (`at`: `IP6_SRC` or `IP6_DST`)
/// of the IPv6 header at `l2_len`, and with `hop_limit` its hop limit too.
#[inline(always)]
fn rewrite_addr(
    ctx: &XdpContext,
    l2_len: usize,
    at: usize,
    addr: &[u8; 16],
    hop_limit: Option<u8>,
) -> Result<(), ()> {
    let ip = packet::ptr::<[u8; Ipv6Hdr::LEN]>(ctx, l2_len)? as *mut u8;
    // SAFETY: `packet::ptr` checked the frame holds the IPv6 header; both addresses lie
    // inside it at even offsets from an even L2 length (half-word stores are aligned);
    // nothing else refers to these bytes.
    unsafe {
        put_halves(ip.add(at & 0x1f) as *mut u16, addr);
        if let Some(h) = hop_limit {
            *ip.add(IP6_HOP_LIMIT) = h;
        }
    }
    Ok(())
}

/// The packet is rewritten: send it on, or let the kernel have it when the next hop's
/// neighbour is not resolved yet (the kernel resolves it).
#[inline(always)]
fn send(ctx: &XdpContext, hop: Result<NextHop6, FibError>) -> (u32, Stat) {
    match hop {
        Ok(hop) => transmit(ctx, &hop.link),
        Err(FibError::NoNeigh) => (xdp_action::XDP_PASS, Stat::PassNoNeigh),
        Err(FibError::TooBig(_)) => (xdp_action::XDP_PASS, Stat::PassTooBig),
        Err(FibError::Failed) => (xdp_action::XDP_DROP, Stat::DropFib),
    }
}
