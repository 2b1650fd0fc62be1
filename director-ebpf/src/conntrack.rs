//! Connection table semantics: IPVS's states and timeouts, seen from one direction.

use director_common::{
    addr::{PROTO_UDP, v4_of_16},
    config::{CLOSE_TIMEOUT_S, NS_PER_S, SYN_TIMEOUT_S, Settings},
    conntrack::{ConnState, FlowKey},
};

use crate::parse::{Packet, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};

#[inline(always)]
pub fn flow_key(pkt: &Packet) -> FlowKey {
    FlowKey {
        src: v4_of_16(&pkt.src),
        dst: v4_of_16(&pkt.dst),
        sport_be: pkt.sport_be,
        dport_be: pkt.dport_be,
        proto: pkt.proto,
        _pad0: 0,
        _pad1: 0,
    }
}

/// A pure SYN (no ACK): always scheduled anew, like IPVS.
#[inline(always)]
pub fn is_syn(pkt: &Packet) -> bool {
    pkt.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
}

#[inline(always)]
pub fn is_rst(pkt: &Packet) -> bool {
    pkt.tcp_flags & TCP_RST != 0
}

#[inline(always)]
fn timeout_s(state: u8, settings: &Settings) -> u32 {
    if state == ConnState::Established as u8 {
        settings.tcp_timeout_s
    } else if state == ConnState::Udp as u8 {
        settings.udp_timeout_s
    } else if state == ConnState::FinWait as u8 {
        settings.tcp_fin_timeout_s
    } else if state == ConnState::SynRecv as u8 {
        SYN_TIMEOUT_S
    } else {
        CLOSE_TIMEOUT_S
    }
}

/// The entry has not timed out in its state.
#[inline(always)]
pub fn alive(state: u8, last_seen_ns: u64, now: u64, settings: &Settings) -> bool {
    // Saturating: another CPU may have stamped the entry with a tick this CPU's `now`
    // has not reached yet; that entry is young, not ancient.
    now.saturating_sub(last_seen_ns) <= timeout_s(state, settings) as u64 * NS_PER_S
}

/// State after this packet, given the state before it (`None`: new entry).
#[inline(always)]
pub fn next_state(prev: Option<u8>, pkt: &Packet) -> u8 {
    if pkt.proto == PROTO_UDP {
        return ConnState::Udp as u8;
    }
    let f = pkt.tcp_flags;
    if f & TCP_RST != 0 {
        ConnState::Close as u8
    } else if f & TCP_FIN != 0 {
        ConnState::FinWait as u8
    } else if f & TCP_SYN != 0 {
        ConnState::SynRecv as u8
    } else {
        match prev {
            // A flow met mid-connection (after a director failover, or a forged packet of
            // an ACK flood) is unconfirmed until its next packet: SYN_RECV's short
            // timeout, and the first to go when the table is full.
            None => ConnState::SynRecv as u8,
            Some(s) if s == ConnState::SynRecv as u8 => ConnState::Established as u8,
            Some(s) => s,
        }
    }
}
