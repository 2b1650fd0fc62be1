//! IPv4 fragments of datagrams for a virtual service (and of NAT replies).
//!
//! A datagram's first fragment carries the ports: it takes the normal path (connection
//! table, scheduling) and, on its way out, records in `DIR_FRAGS` what its followers
//! need, under the fields every fragment of the datagram shares. Later fragments carry
//! no ports: they are sent the same way from that record. Nothing here runs for a packet
//! that is not a fragment.
//!
//! A later fragment that overtakes its first one finds no record and goes to the kernel
//! (`pass_fragment`); that datagram is lost and the application's retransmission
//! carries it. The kernel's reassembly has the same outcome for a datagram missing a
//! fragment.

use aya_ebpf::{bindings::xdp_action, helpers::bpf_ktime_get_coarse_ns, programs::XdpContext};
use director_common::{
    addr::{FAMILY_V4, FAMILY_V6, v4_of_16, v4_to_16},
    conntable::Conn,
    fragments::{FRAG_DIR_IN, FRAG_DIR_REPLY, FRAG_TIMEOUT_NS, FragEntry, FragKey},
    real::{Method, Real},
    stats::Stat,
};
use network_types::ip::Ipv4Hdr;

use crate::{
    balancer6,
    forward::{
        client_hop, dr, hop_for,
        nat::{self, Side},
        tunnel,
    },
    headers::{IP_DF, IP_ID, IPV4_HLEN_MASK, ip_hlen},
    maps::FRAGS,
    packet,
    parse::Packet,
    scheduler::real_of,
    stats::{Dir, account, count},
};

/// A first fragment from a client, about to be sent to `real`: its followers go there
/// too. Called before the packet is rewritten (the record is keyed by what the
/// followers carry).
#[inline(always)]
pub fn first_in(ctx: &XdpContext, pkt: &Packet, real_id: u32, service: u32, real: &Real, now: u64) {
    remember(
        ctx,
        pkt,
        &FragEntry {
            first_ns: now,
            real: real_id,
            service,
            addr: v4_of_16(&real.addr),
            dir: FRAG_DIR_IN,
            _pad0: 0,
            _pad1: 0,
        },
    );
}

/// The first fragment of a NAT reply: its followers get the virtual address back too.
#[inline(always)]
pub fn first_reply(ctx: &XdpContext, pkt: &Packet, conn: &Conn, now: u64) {
    remember(
        ctx,
        pkt,
        &FragEntry {
            first_ns: now,
            real: conn.real,
            service: conn.service,
            addr: conn.vaddr,
            dir: FRAG_DIR_REPLY,
            _pad0: 0,
            _pad1: 0,
        },
    );
}

/// Record `entry` for the datagram whose first fragment `pkt` is.
#[inline(always)]
#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "a key passed by value gets a stack slot of its own"
)]
fn remember(ctx: &XdpContext, pkt: &Packet, entry: &FragEntry) {
    let Ok(id) = packet::header::<[u8; 2]>(ctx, pkt.l2_len + IP_ID) else {
        return;
    };
    let key = FragKey {
        src: v4_of_16(&pkt.src),
        dst: v4_of_16(&pkt.dst),
        id_be: u16::from_ne_bytes(*id),
        proto: pkt.proto,
        _pad: 0,
    };
    // A failed insert (no memory) leaves the followers to the kernel: the same outcome
    // as a follower that overtakes its first fragment, and counted the same way.
    let _ = FRAGS.insert(&key, entry, 0);
}

/// A later fragment (offset > 0) of a TCP/UDP datagram, IPv4 header at `l2_len`.
#[inline(always)]
#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "a key passed by value gets a stack slot of its own"
)]
pub fn later(ctx: &XdpContext, l2_len: usize) -> (u32, Stat) {
    let Ok(ip) = packet::ptr::<Ipv4Hdr>(ctx, l2_len) else {
        return (xdp_action::XDP_PASS, Stat::PassTruncated);
    };
    // SAFETY: `packet::ptr` checked the frame holds the header, a valid `Ipv4Hdr` for
    // any bytes; nothing writes the frame while `ip` is in use (up to the `Packet` built
    // from it below). Not `packet::header`: through it, LLVM loads every field before
    // the map lookup and keeps them across it, which costs this program 16 bytes of
    // stack.
    let ip = unsafe { &*ip };
    let key = FragKey {
        src: ip.src_addr,
        dst: ip.dst_addr,
        id_be: u16::from_ne_bytes(ip.id),
        proto: ip.proto,
        _pad: 0,
    };
    // By reference: another CPU's first fragment may rewrite the record meanwhile, but
    // only with the same datagram's (or a newer one's) fields.
    // SAFETY: the record holds integers only, so whatever another CPU writes over it
    // meanwhile reads as some valid record; an LRU element is never freed while a
    // program that looked it up runs (RCU).
    let Some(entry) = (unsafe { FRAGS.get(&key) }) else {
        return (xdp_action::XDP_PASS, Stat::PassFragment);
    };
    // SAFETY: the helper takes no arguments and only reads a clock.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    // Saturating: another CPU may have stamped the record with a tick this CPU's clock
    // has not reached yet.
    if now.saturating_sub(entry.first_ns) > FRAG_TIMEOUT_NS {
        return (xdp_action::XDP_PASS, Stat::PassFragment);
    }
    let ihl = ip_hlen(ip.vihl);
    let frags = u16::from_be_bytes(ip.frags);
    let pkt = Packet {
        src: v4_to_16(ip.src_addr),
        dst: v4_to_16(ip.dst_addr),
        l2_len,
        l4_off: l2_len + (ihl & IPV4_HLEN_MASK),
        family: FAMILY_V4,
        proto: ip.proto,
        sport_be: 0,
        dport_be: 0,
        tcp_flags: 0,
        has_options: ihl > Ipv4Hdr::LEN,
        is_fragment: true,
        dont_fragment: frags & IP_DF != 0,
        ip_len: u16::from_be_bytes(ip.tot_len),
        tos: ip.tos,
        ttl: ip.ttl,
        frame_len: packet::len(ctx) as u64,
    };
    let (action, stat) = if entry.dir == FRAG_DIR_REPLY {
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
fn to_real(ctx: &XdpContext, pkt: &Packet, entry: &FragEntry, now: u64) -> (u32, Stat) {
    let Some(real) = real_of(entry.real, entry.service) else {
        return (xdp_action::XDP_DROP, Stat::DropFragment);
    };
    account(entry.service, entry.real, Dir::In, pkt.frame_len, false);
    match Method::from_u8(real.method) {
        Some(Method::Route) => dr::forward(ctx, pkt, entry.real, real, now),
        // 4in6 lives in the IPv6 forwarding program, which tunnels the fragment as it
        // is.
        Some(Method::Tunnel) if real.family == FAMILY_V6 => {
            balancer6::hand_over(ctx, entry.real, entry.service)
        }
        Some(Method::Tunnel) => tunnel::forward(ctx, pkt, entry.real, real, now),
        Some(Method::Masq) => {
            let hop = hop_for(ctx, pkt, entry.real, entry.addr, now);
            // No L4 header here: the first fragment's checksum update covered the
            // address change for the whole datagram.
            if nat::rewrite_outer(ctx, pkt, Side::Destination, entry.addr, false).is_err() {
                return (xdp_action::XDP_DROP, Stat::DropMalformed);
            }
            nat::send(ctx, hop)
        }
        None => (xdp_action::XDP_DROP, Stat::DropBadReal),
    }
}

/// Real -> client, a NAT reply: the virtual address back as source, by the rules of
/// the reply's first fragment (`nat::reply`): from the real's side only, one hop of TTL
/// spent, handed to the kernel untranslated when the TTL is spent.
#[inline(always)]
fn nat_reply(ctx: &XdpContext, pkt: &Packet, entry: &FragEntry, now: u64) -> (u32, Stat) {
    if !nat::from_real_side(ctx, pkt, entry.real, v4_of_16(&pkt.src), now) {
        return (xdp_action::XDP_DROP, Stat::DropSpoofedReply);
    }
    if pkt.ttl <= 1 {
        return (xdp_action::XDP_PASS, Stat::PassTtlExceeded);
    }
    let hop = client_hop(
        ctx,
        entry.addr,
        v4_of_16(&pkt.dst),
        pkt.proto,
        pkt.tos,
        pkt.ip_len,
        now,
    );
    if nat::rewrite_outer(ctx, pkt, Side::Source, entry.addr, hop.is_ok()).is_err() {
        return (xdp_action::XDP_DROP, Stat::DropMalformed);
    }
    account(entry.service, entry.real, Dir::Out, pkt.frame_len, false);
    nat::send(ctx, hop)
}
