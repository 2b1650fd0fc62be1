//! The IPv6 balancer: the journey of `balancer` for IPv6 packets, reached from the
//! main program by tail call (`JUMP_V6`), so IPv4's path carries none of it. Three
//! programs, as for IPv4: the established path (`director_v6`), new flows
//! (`director_new_flow6`), a new flow's forwarding (`director_forward6`). Flows live in
//! their own table (`DIR_CONNS6`); services, reals, lookup tables, persistence and the
//! counters are shared with IPv4 (their keys carry the family).

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use director_common::{
    addr::FAMILY_V6,
    config::{SETTINGS_F_DEBUG, Settings},
    conn_state::{ConnState, alive},
    conntable::{CONN_F_REPLY, Conn6, FlowKey6},
    maps::{JUMP_FORWARD6, JUMP_FRAGMENT6, JUMP_ICMP6, JUMP_NEW_FLOW6, JUMP_TRACE6},
    real::{Method, Real, TunType},
    service::Scheduler,
    stats::Stat,
};

use crate::{
    balancer::{self, now},
    conn_state::{is_rst, is_syn, next_state},
    conntable::{self, flow_key6},
    debug, flood,
    forward::{dr::forward6 as dr_forward6, nat6, tunnel6},
    fragments6,
    maps::{HANDOVER, JUMP, SETTINGS},
    parse::{self, NotParsed, Packet, parse_any, parse6},
    scheduler::{real_of, schedule},
    service,
    stats::{Dir, account, count},
    vipfilter,
};

/// The IPv6 balancer's main path (tail call `JUMP_V6`): an established flow's packet
/// is forwarded here; anything that needs scheduling goes on to `JUMP_NEW_FLOW6`.
#[inline(always)]
pub fn process(ctx: &XdpContext) -> (u32, Stat) {
    let pkt = match parse6(ctx) {
        Ok(pkt) => pkt,
        // ICMPv6 (neighbour discovery, echo, errors) and later fragments have programs
        // of their own; without them, or when those programs pass a packet, the kernel
        // gets it untouched.
        Err(not @ (NotParsed::Icmp | NotParsed::LaterFragment)) => {
            let slot = if matches!(not, NotParsed::Icmp) {
                JUMP_ICMP6
            } else {
                JUMP_FRAGMENT6
            };
            // SAFETY: control does not come back when the call succeeds; no value with
            // a destructor is live here.
            unsafe { JUMP.tail_call(ctx, slot) };
            return (xdp_action::XDP_PASS, not.stat());
        }
        Err(not @ NotParsed::Malformed) => return (xdp_action::XDP_DROP, not.stat()),
        Err(not) => return (xdp_action::XDP_PASS, not.stat()),
    };
    // The host's own IPv6 traffic goes to the kernel before the table is searched.
    if !vipfilter::may_be_ours6(&pkt) {
        return (xdp_action::XDP_PASS, Stat::PassNotVip);
    }
    // A pure SYN always schedules anew: the new-flow program looks its 5-tuple up
    // itself, so the key is not hashed twice.
    if is_syn(&pkt) {
        // SAFETY: as above.
        unsafe { JUMP.tail_call(ctx, JUMP_NEW_FLOW6) };
        return (xdp_action::XDP_DROP, Stat::DropBadReal);
    }
    let Some(settings) = SETTINGS.get(0) else {
        return (xdp_action::XDP_PASS, Stat::PassNotVip);
    };
    let now = now();
    let key = flow_key6(&pkt);
    let found = conntable::find(&key, settings.conn_seed);
    if let Some(conn) = found.entry(&key)
        && alive(conn.state, conn.last_seen_ns, now, settings)
    {
        if conn.flags & CONN_F_REPLY != 0 {
            if !nat6::from_real_side(ctx, &pkt, conn.real, now) {
                return (xdp_action::XDP_DROP, Stat::DropSpoofedReply);
            }
            found.touch(&key, &conn, next_state(Some(conn.state), &pkt), now);
            if pkt.is_fragment {
                fragments6::first_reply(ctx, &pkt, &conn, now);
            }
            return nat6::reply(ctx, &pkt, &conn, now);
        }
        if let Some(real) = real_of(conn.real, conn.service) {
            let state = next_state(Some(conn.state), &pkt);
            let ticked = found.touch(&key, &conn, state, now);
            if ticked && real.method == Method::Masq as u8 {
                record_nat_reply(
                    &pkt,
                    &Conn6 { state, ..conn },
                    real,
                    now,
                    settings,
                    true,
                    false,
                );
            }
            account(conn.service, conn.real, Dir::In, pkt.frame_len, false);
            let ipip6 = real.method == Method::Tunnel as u8
                && real.tun_type == TunType::Ipip as u8
                && real.family == FAMILY_V6;
            if real.method == Method::Tunnel as u8 && !ipip6 {
                // GUE, GRE and 6in4 live in the forwarding program (which records a
                // first fragment too), out of this one's verifier budget.
                return hand_over(ctx, conn.real, conn.service);
            }
            if pkt.is_fragment {
                fragments6::first_in(ctx, &pkt, conn.real, conn.service, real, now);
            }
            if ipip6 {
                // The common tunnel here, as IPv4's IPIP in the main program: no tail
                // call, no second parse.
                return tunnel6::forward(ctx, &pkt, conn.real, real, now);
            }
            return forward(ctx, &pkt, conn.real, real, now);
        }
    }
    // SAFETY: as above.
    unsafe { JUMP.tail_call(ctx, JUMP_NEW_FLOW6) };
    (xdp_action::XDP_DROP, Stat::DropBadReal)
}

/// An IPv6 packet the table has no live entry for (or a SYN): service, real, entry,
/// then the forwarding program (tail call `JUMP_NEW_FLOW6`, from [`process`]).
#[inline(always)]
pub fn new_flow(ctx: &XdpContext) -> (u32, Stat) {
    let pkt = match parse6(ctx) {
        Ok(pkt) => pkt,
        Err(not @ NotParsed::Malformed) => return (xdp_action::XDP_DROP, not.stat()),
        Err(not) => return (xdp_action::XDP_PASS, not.stat()),
    };
    let Some(settings) = SETTINGS.get(0) else {
        return (xdp_action::XDP_PASS, Stat::PassNotVip);
    };
    let now = now();
    let key = flow_key6(&pkt);
    let found = conntable::find(&key, settings.conn_seed);
    let Some(svc) = service::lookup(&pkt) else {
        return (xdp_action::XDP_PASS, Stat::PassNotVip);
    };
    if martian_source(&pkt) {
        return (xdp_action::XDP_DROP, Stat::DropMartian);
    }
    let (real_id, real) = match schedule(&svc, &pkt, now) {
        Ok(r) => r,
        Err(Stat::DropBadReal) => {
            debug::bad_table_entry(svc.id, now);
            return (xdp_action::XDP_DROP, Stat::DropBadReal);
        }
        Err(stat) => return (xdp_action::XDP_DROP, stat),
    };
    if !is_rst(&pkt) {
        let conn = Conn6 {
            last_seen_ns: now,
            real: real_id,
            service: svc.id,
            state: next_state(None, &pkt),
            flags: 0,
            vport_be: pkt.dport_be,
            _pad: 0,
            vaddr: pkt.dst,
        };
        let masq = real.method == Method::Masq as u8;
        let flood = flood::over_limit(now, settings);
        if flood
            && !masq
            && (svc.scheduler == Scheduler::Maglev as u8
                || svc.scheduler == Scheduler::SourceHash as u8)
        {
            count(Stat::ConnStateless);
        } else {
            // As for IPv4 (see `balancer::new_flow`): both entries, the client's first.
            let stored = conntable::store(&found, &key, &conn, now, settings, flood);
            let reply_stored =
                !masq || record_nat_reply(&pkt, &conn, real, now, settings, false, flood);
            if flood && !(stored && reply_stored) {
                return (xdp_action::XDP_DROP, Stat::DropConnTableFull);
            }
        }
    }
    account(svc.id, real_id, Dir::In, pkt.frame_len, true);
    if settings.flags & SETTINGS_F_DEBUG != 0 {
        // The trace's record takes more stack than this program has left: a program of
        // its own, on the way to the forwarding program.
        return balancer::hand_over_to(ctx, real_id, svc.id, JUMP_TRACE6);
    }
    hand_over(ctx, real_id, svc.id)
}

/// Debug mode (tail call `JUMP_TRACE6`, from [`new_flow`]): the new flow's record, then
/// its forwarding, with the real and service left in `DIR_HANDOVER`.
#[inline(always)]
pub fn trace_new_flow(ctx: &XdpContext) -> (u32, Stat) {
    if let Ok(pkt) = parse6(ctx)
        && let Some(&[real_id, service]) = HANDOVER.get(0)
    {
        debug::new_flow6(ctx, &pkt, service, real_id);
    }
    // SAFETY: control does not come back when the call succeeds; no value with a
    // destructor is live here.
    unsafe { JUMP.tail_call(ctx, JUMP_FORWARD6) };
    (xdp_action::XDP_DROP, Stat::DropBadReal)
}

/// Leave the real and the service in `DIR_HANDOVER` and go on to `JUMP_FORWARD6`
/// (also for the ICMP and later-fragment programs of both families, whose packets it
/// tunnels whole): `balancer::hand_over` with the IPv6 forwarding program's slot.
#[inline(always)]
pub fn hand_over(ctx: &XdpContext, real_id: u32, service: u32) -> (u32, Stat) {
    balancer::hand_over(ctx, real_id, service, FAMILY_V6)
}

/// The forwarding program (tail call `JUMP_FORWARD6`): a new flow's packet, or an
/// established flow's to a GUE, GRE or 6in4 tunnel real, with the real and service in
/// `DIR_HANDOVER`.
/// An ICMP error or a later fragment (which the parser does not take for a flow's
/// packet) comes from the ICMP and fragment programs of either family, which found its
/// flow's tunnel real: it is tunnelled as it is, as IPv4 tunnels them.
#[inline(always)]
pub fn forward_handed_over(ctx: &XdpContext) -> (u32, Stat) {
    let drop = (xdp_action::XDP_DROP, Stat::DropBadReal);
    // An IPv4 packet here is for an IPv6 tunnel real (4in6).
    let (pkt, whole) = match parse_any(ctx) {
        Ok(pkt) => (pkt, None),
        Err(not @ (NotParsed::Icmp | NotParsed::LaterFragment)) => match parse::whole(ctx) {
            Some(pkt) => (pkt, Some(not)),
            None => return drop,
        },
        Err(_) => return drop,
    };
    let Some(&[real_id, service]) = HANDOVER.get(0) else {
        return drop;
    };
    let Some(real) = real_of(real_id, service) else {
        return drop;
    };
    let now = now();
    // A first fragment is recorded here rather than in the new-flow program, whose
    // verifier budget its stores take (an established flow's was recorded before it
    // was handed over).
    if pkt.is_fragment && pkt.family == FAMILY_V6 && whole.is_none() {
        fragments6::first_in(ctx, &pkt, real_id, service, real, now);
    }
    if real.method == Method::Tunnel as u8 {
        let sent = tunnel6::forward(ctx, &pkt, real_id, real, now);
        if let Some(not) = whole
            && matches!(sent.1, Stat::Tx | Stat::Redirect)
        {
            count(if matches!(not, NotParsed::Icmp) {
                Stat::IcmpToReal
            } else {
                Stat::FragmentForwarded
            });
        }
        return sent;
    }
    if pkt.family != FAMILY_V6 || whole.is_some() {
        return drop;
    }
    forward(ctx, &pkt, real_id, real, now)
}

/// DR and NAT66: the real must be IPv6 (only tunnels cross families).
#[inline(always)]
fn forward(ctx: &XdpContext, pkt: &Packet, real_id: u32, real: &Real, now: u64) -> (u32, Stat) {
    if real.family != FAMILY_V6 {
        return (xdp_action::XDP_DROP, Stat::DropBadReal);
    }
    if real.method == Method::Route as u8 {
        dr_forward6(ctx, pkt, real_id, real, now)
    } else if real.method == Method::Masq as u8 {
        nat6::forward(ctx, pkt, real_id, real, now)
    } else {
        (xdp_action::XDP_DROP, Stat::DropBadReal)
    }
}

/// A source no client can have: unspecified (::), loopback (::1), multicast
/// (ff00::/8), or the destination itself. Checked before a new flow is recorded.
#[inline(always)]
fn martian_source(pkt: &Packet) -> bool {
    // SAFETY: [u8; 16] and [u64; 2] have the same size; every bit pattern is valid.
    let [hi, lo] = unsafe { core::mem::transmute::<[u8; 16], [u64; 2]>(pkt.src) };
    // SAFETY: as above.
    let [dhi, dlo] = unsafe { core::mem::transmute::<[u8; 16], [u64; 2]>(pkt.dst) };
    let loopback = u64::from_ne_bytes([0, 0, 0, 0, 0, 0, 0, 1]);
    pkt.src[0] == 0xff || (hi == 0 && (lo == 0 || lo == loopback)) || (hi == dhi && lo == dlo)
}

/// NAT66's reply direction gets its own entry, as for IPv4 (`balancer`'s
/// `record_nat_reply`, whose comment says when and why).
#[inline(always)]
fn record_nat_reply(
    pkt: &Packet,
    conn: &Conn6,
    real: &Real,
    now: u64,
    settings: &Settings,
    refresh: bool,
    spare_established: bool,
) -> bool {
    let key = FlowKey6 {
        src: real.addr,
        dst: pkt.src,
        sport_be: if real.port_be != 0 {
            real.port_be
        } else {
            pkt.dport_be
        },
        dport_be: pkt.sport_be,
        proto: pkt.proto,
        _pad0: 0,
        _pad1: 0,
    };
    let found = conntable::find(&key, settings.conn_seed);
    if refresh && let Some(reply) = found.entry(&key) {
        let state = if reply.state == ConnState::SynRecv as u8 {
            conn.state
        } else {
            reply.state
        };
        found.touch(&key, &reply, state, now);
        return true;
    }
    let reply = Conn6 {
        flags: CONN_F_REPLY,
        last_seen_ns: now,
        ..*conn
    };
    conntable::store(&found, &key, &reply, now, settings, spare_established)
}
