//! The director's journey for one packet: parse -> connection table -> (on a miss)
//! service -> schedule -> forward -> account. Each step returns early with a verdict and the
//! counter it belongs to.

use aya_ebpf::{bindings::xdp_action, helpers::bpf_ktime_get_coarse_ns, programs::XdpContext};
use director_common::{
    addr::{FAMILY_V4, v4_of_16},
    config::{SETTINGS_F_DEBUG, Settings},
    conn_state::{ConnState, alive},
    conntable::{CONN_F_REPLY, Conn, FlowKey},
    maps::{JUMP_FORWARD, JUMP_FORWARD6, JUMP_FRAGMENT, JUMP_ICMP, JUMP_NEW_FLOW, JUMP_V6},
    real::{Method, Real},
    service::Scheduler,
    stats::Stat,
};

use crate::{
    conn_state::{is_rst, is_syn, next_state},
    conntable::{self, flow_key},
    debug, flood,
    forward::{dr, ipip, nat, tunnel},
    fragments, icmp,
    maps::{HANDOVER, JUMP, SETTINGS},
    parse::{NotParsed, Packet, parse, parse_l2},
    scheduler::{real_of, schedule},
    service,
    stats::{Dir, account, count},
    vipfilter,
};

/// The balancer's main path: an established flow's packet is forwarded here; anything
/// that needs scheduling goes on to the new-flow program (tail call `JUMP_NEW_FLOW`).
/// Two programs, because the verifier explores every path of one program together and
/// gives up past a million instructions explored.
#[inline(always)]
pub fn process(ctx: &XdpContext) -> (u32, Stat) {
    let pkt = match parse(ctx) {
        Ok(pkt) => pkt,
        // Rare paths, each a program of its own (see `JUMP`); should the jump fail (a
        // loader that did not fill the slot), the packet is the kernel's.
        Err(not @ (NotParsed::Icmp | NotParsed::LaterFragment | NotParsed::Ipv6)) => {
            let slot = match not {
                NotParsed::Icmp => JUMP_ICMP,
                NotParsed::LaterFragment => JUMP_FRAGMENT,
                _ => JUMP_V6,
            };
            // SAFETY: control does not come back when the call succeeds, so nothing
            // after it runs; no value with a destructor is live here.
            unsafe { JUMP.tail_call(ctx, slot) };
            return (xdp_action::XDP_PASS, not.stat());
        }
        Err(not @ NotParsed::Malformed) => return (xdp_action::XDP_DROP, not.stat()),
        Err(not) => return (xdp_action::XDP_PASS, not.stat()),
    };
    // The host's own traffic (no virtual address, no NAT real's reply) goes to the
    // kernel before anything else is read.
    if !vipfilter::may_be_ours(&pkt) {
        return (xdp_action::XDP_PASS, Stat::PassNotVip);
    }
    // A pure SYN always schedules anew: straight to the new-flow program, which finds
    // its entry (if any) to rewrite it in place. Neither the clock nor the table is
    // needed here for it.
    if is_syn(&pkt) {
        // SAFETY: as above.
        unsafe { JUMP.tail_call(ctx, JUMP_NEW_FLOW) };
        return (xdp_action::XDP_DROP, Stat::DropBadReal);
    }
    let Some(settings) = SETTINGS.get(0) else {
        return (xdp_action::XDP_PASS, Stat::PassNotVip);
    };
    let now = now();
    let key = flow_key(&pkt);

    // The connection table first: an established flow needs no other hash lookup. Its
    // entry must be alive and its real still in the service (weight 0 does not matter
    // here: quiescent reals keep their flows).
    let found = conntable::find(&key, settings.conn_seed);
    if let Some(conn) = found.entry(&key)
        && alive(conn.state, conn.last_seen_ns, now, settings)
    {
        if conn.flags & CONN_F_REPLY != 0 {
            // A forged "reply" from the client side must not move the entry's state
            // (a RST would close it) nor record a datagram: checked first.
            if !nat::from_real_side(ctx, &pkt, conn.real, v4_of_16(&pkt.src), now) {
                return (xdp_action::XDP_DROP, Stat::DropSpoofedReply);
            }
            found.touch(&key, &conn, next_state(Some(conn.state), &pkt), now);
            if pkt.is_fragment {
                fragments::first_reply(ctx, &pkt, &conn, now);
            }
            return nat::reply(ctx, &pkt, &conn, now);
        }
        if let Some(real) = real_of(conn.real, conn.service) {
            if pkt.has_options {
                count(Stat::IpOptions);
            }
            let state = next_state(Some(conn.state), &pkt);
            let ticked = found.touch(&key, &conn, state, now);
            if ticked && real.method == Method::Masq as u8 {
                record_nat_reply(
                    &pkt,
                    &Conn { state, ..conn },
                    real,
                    now,
                    settings,
                    true,
                    false,
                );
            }
            account(conn.service, conn.real, Dir::In, pkt.frame_len, false);
            if pkt.is_fragment {
                fragments::first_in(ctx, &pkt, conn.real, conn.service, real, now);
            }
            if real.method == Method::Tunnel as u8 {
                if real.family != FAMILY_V4 {
                    // Tunnels to IPv6 reals (4in6) live in the IPv6 forwarding
                    // program, out of this one's verifier budget.
                    return hand_over(ctx, conn.real, conn.service, real.family);
                }
                // IPIP, GUE and GRE here: a hand-over to the forwarding program (a tail
                // call and a second parse) cost about as much as the rest of the path.
                return tunnel::forward(ctx, &pkt, conn.real, real, now);
            }
            return forward(ctx, &pkt, conn.real, real, now);
        }
    }
    // SAFETY: as above.
    unsafe { JUMP.tail_call(ctx, JUMP_NEW_FLOW) };
    // Only if the loader left the slot empty.
    (xdp_action::XDP_DROP, Stat::DropBadReal)
}

/// A packet the connection table has no live entry for (or a SYN): the service, the
/// real it is scheduled to, the entry recorded, then forwarded (tail call
/// `JUMP_NEW_FLOW`, from [`process`]).
#[inline(always)]
pub fn new_flow(ctx: &XdpContext) -> (u32, Stat) {
    let pkt = match parse(ctx) {
        Ok(pkt) => pkt,
        Err(not @ NotParsed::Malformed) => return (xdp_action::XDP_DROP, not.stat()),
        Err(not) => return (xdp_action::XDP_PASS, not.stat()),
    };
    let Some(settings) = SETTINGS.get(0) else {
        return (xdp_action::XDP_PASS, Stat::PassNotVip);
    };
    let now = now();
    let key = flow_key(&pkt);
    // Found again (the lines are in cache now): a SYN of a known 5-tuple, or an expired
    // entry, is rewritten where it is.
    let found = conntable::find(&key, settings.conn_seed);
    let Some(svc) = service::lookup(&pkt) else {
        return (xdp_action::XDP_PASS, Stat::PassNotVip);
    };
    if pkt.has_options {
        count(Stat::IpOptions);
    }
    if martian_source(&pkt) {
        return (xdp_action::XDP_DROP, Stat::DropMartian);
    }

    // New flow, a SYN, or a flow whose entry expired or whose real was removed.
    let (real_id, real) = match schedule(&svc, &pkt, now) {
        Ok(r) => r,
        Err(Stat::DropBadReal) => {
            debug::bad_table_entry(svc.id, now);
            return (xdp_action::XDP_DROP, Stat::DropBadReal);
        }
        Err(stat) => return (xdp_action::XDP_DROP, stat),
    };
    if settings.flags & SETTINGS_F_DEBUG != 0 {
        debug::new_flow(ctx, &pkt, svc.id, real_id);
    }
    if pkt.is_fragment {
        fragments::first_in(ctx, &pkt, real_id, svc.id, real, now);
    }
    if !is_rst(&pkt) {
        let conn = Conn {
            last_seen_ns: now,
            real: real_id,
            service: svc.id,
            state: next_state(None, &pkt),
            flags: 0,
            // The virtual address and port, so every entry carries them (and no field
            // needs a zero fill, which would become a memset call).
            vport_be: pkt.dport_be,
            vaddr: v4_of_16(&pkt.dst),
        };
        let masq = real.method == Method::Masq as u8;
        let flood = flood::over_limit(now, settings);
        if flood
            && !masq
            && (svc.scheduler == Scheduler::Maglev as u8
                || svc.scheduler == Scheduler::SourceHash as u8)
        {
            // A consistent hash sends the flow's next packets to the same real without
            // an entry (as long as the reals do not change).
            count(Stat::ConnStateless);
        } else {
            // During a flood, a flow that needs its entry (NAT, or a round-robin
            // scheduler) gets one only where no established connection loses its own;
            // a NAT flow without its reply entry would have its replies leave
            // un-NATed, so it is dropped too (a TCP client entry left behind times out
            // as SYN_RECV; a UDP one ranks as established). One store call per entry,
            // the flood a run-time argument: every inlined copy of a store multiplies
            // what the verifier explores.
            //
            // Both entries are always written: a NAT reply entry must not depend on the
            // client entry's luck (a store that finds its bucket claimed by another CPU
            // is retried by the flow's next packet). The client entry goes first: when
            // the two share a bucket, the later write may take the earlier one's way,
            // and a missing client entry is put back by the client's next packet, a
            // missing reply entry only by the client's traffic a tick later.
            let stored = conntable::store(&found, &key, &conn, now, settings, flood);
            let reply_stored =
                !masq || record_nat_reply(&pkt, &conn, real, now, settings, false, flood);
            if flood && !(stored && reply_stored) {
                return (xdp_action::XDP_DROP, Stat::DropConnTableFull);
            }
        }
    }
    account(svc.id, real_id, Dir::In, pkt.frame_len, true);
    // Forwarding is a program of its own (tail call `JUMP_FORWARD`): after the stores,
    // every branch the forwarding takes would be explored once per way the stores
    // went, past what the verifier accepts.
    hand_over(ctx, real_id, svc.id, real.family)
}

/// Leave the real and the service in `DIR_HANDOVER` and go on to the forwarding
/// program (tail call `JUMP_FORWARD`; for an IPv6 real, a 4in6 tunnel, the IPv6
/// forwarding program, `JUMP_FORWARD6`).
#[inline(always)]
pub fn hand_over(ctx: &XdpContext, real_id: u32, service: u32, family: u8) -> (u32, Stat) {
    let slot = if family == FAMILY_V4 {
        JUMP_FORWARD
    } else {
        JUMP_FORWARD6
    };
    hand_over_to(ctx, real_id, service, slot)
}

/// Leave the real and the service in `DIR_HANDOVER` and go on to the program in `slot`.
#[inline(always)]
pub fn hand_over_to(ctx: &XdpContext, real_id: u32, service: u32, slot: u32) -> (u32, Stat) {
    if let Some(h) = HANDOVER.get_ptr_mut(0) {
        // SAFETY: a per-CPU map value, valid while the program runs; only this CPU's
        // programs touch it, one at a time.
        unsafe { *h = [real_id, service] };
        // SAFETY: control does not come back when the call succeeds, so nothing after
        // it runs; no value with a destructor is live here.
        unsafe { JUMP.tail_call(ctx, slot) };
    }
    (xdp_action::XDP_DROP, Stat::DropBadReal)
}

/// A new flow's forwarding (tail call `JUMP_FORWARD`, from [`new_flow`], which left the
/// real and the service in `DIR_HANDOVER`); the packet is as [`new_flow`] got it.
#[inline(always)]
pub fn forward_new_flow(ctx: &XdpContext) -> (u32, Stat) {
    let Ok(pkt) = parse(ctx) else {
        return (xdp_action::XDP_DROP, Stat::DropBadReal);
    };
    let Some(&[real_id, service]) = HANDOVER.get(0) else {
        return (xdp_action::XDP_DROP, Stat::DropBadReal);
    };
    let Some(real) = real_of(real_id, service) else {
        return (xdp_action::XDP_DROP, Stat::DropBadReal);
    };
    if real.method == Method::Tunnel as u8 {
        return tunnel::forward(ctx, &pkt, real_id, real, now());
    }
    forward(ctx, &pkt, real_id, real, now())
}

/// The coarse clock (CLOCK_MONOTONIC_COARSE, a few ms of resolution) is plenty for
/// timeouts in seconds, and costs a fraction of bpf_ktime_get_ns (which measured about
/// 60 ns, a third of an established flow's whole pass).
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: the helper takes no arguments and only reads a clock.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// A source no client can have (RFC 1122, 3.2.1.3; RFC 5735): "this network"
/// (0.0.0.0/8), loopback, multicast, the reserved 240.0.0.0/4 with the limited
/// broadcast, or the destination itself (a VIP talking to itself). Checked before a
/// new flow is recorded, so such packets never hold a table entry.
#[inline(always)]
fn martian_source(pkt: &Packet) -> bool {
    let first = pkt.src[0];
    first == 0 || first == 127 || first >= 224 || v4_of_16(&pkt.src) == v4_of_16(&pkt.dst)
}

/// NAT: the reply direction (real -> client) gets its own entry so replies are found by
/// their own 5-tuple and get the VIP back. A new flow writes it (`refresh` false). A
/// client packet whose entry's time just moved on (`refresh`: once per tick of the
/// coarse clock, not per packet) keeps the reply entry's time with it, and writes the
/// entry again if it was evicted on its own (its pair of buckets was full), which would
/// otherwise leave the real's replies without the VIP for as long as the client keeps
/// the connection alive. `spare_established`: see `conntable::store`. False when the
/// entry could not be written.
#[inline(always)]
fn record_nat_reply(
    pkt: &Packet,
    conn: &Conn,
    real: &Real,
    now: u64,
    settings: &Settings,
    refresh: bool,
    spare_established: bool,
) -> bool {
    let key = nat_reply_key(pkt, real);
    let found = conntable::find(&key, settings.conn_seed);
    if refresh && let Some(reply) = found.entry(&key) {
        // The client's ACK confirms the connection for both directions: a reply entry
        // left in SYN_RECV (the real has sent nothing but its SYN-ACK) would time out,
        // and be the first to go in a full table, while the connection idles.
        let state = if reply.state == ConnState::SynRecv as u8 {
            conn.state
        } else {
            reply.state
        };
        found.touch(&key, &reply, state, now);
        return true;
    }
    let reply = Conn {
        flags: CONN_F_REPLY,
        last_seen_ns: now,
        ..*conn
    };
    conntable::store(&found, &key, &reply, now, settings, spare_established)
}

/// The reply direction's key of a NAT flow: from the real (its port, or the virtual
/// port when the real has none) to the client.
#[inline(always)]
fn nat_reply_key(pkt: &Packet, real: &Real) -> FlowKey {
    FlowKey {
        src: v4_of_16(&real.addr),
        dst: v4_of_16(&pkt.src),
        sport_be: if real.port_be != 0 {
            real.port_be
        } else {
            pkt.dport_be
        },
        dport_be: pkt.sport_be,
        proto: pkt.proto,
        _pad0: 0,
        _pad1: 0,
    }
}

#[inline(always)]
fn forward(ctx: &XdpContext, pkt: &Packet, real_id: u32, real: &Real, now: u64) -> (u32, Stat) {
    match Method::from_u8(real.method) {
        Some(Method::Route) => dr::forward(ctx, pkt, real_id, real, now),
        Some(Method::Tunnel) => ipip::forward(ctx, pkt, real_id, real, now),
        Some(Method::Masq) => nat::forward(ctx, pkt, real_id, real, now),
        None => (xdp_action::XDP_DROP, Stat::DropBadReal),
    }
}

/// The ICMP error path (tail call `JUMP_ICMP`): see `icmp::route_error`.
#[inline(always)]
pub fn icmp_error(ctx: &XdpContext) -> (u32, Stat) {
    icmp::route_error(ctx, now())
}

/// The later-fragment path (tail call `JUMP_FRAGMENT`): see `fragments::later`.
#[inline(always)]
pub fn later_fragment(ctx: &XdpContext) -> (u32, Stat) {
    match parse_l2(ctx) {
        Ok(l2_len) => fragments::later(ctx, l2_len),
        Err(not) => (xdp_action::XDP_PASS, not.stat()),
    }
}

/// The "fragmentation needed" answer (tail call `JUMP_TOO_BIG`): see
/// `icmp::answer_too_big`.
#[inline(always)]
pub fn too_big(ctx: &XdpContext) -> (u32, Stat) {
    icmp::answer_too_big(ctx, now())
}
