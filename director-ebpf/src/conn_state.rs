//! The state machine of a connection entry: IPVS's states, seen from one direction.
//! How long an entry lives in each state is `director_common::conn_state`'s rule.

use director_common::{addr::PROTO_UDP, conn_state::ConnState};

use crate::{
    headers::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    parse::Packet,
};

/// A pure SYN (no ACK): always scheduled anew, like IPVS.
#[inline(always)]
pub fn is_syn(pkt: &Packet) -> bool {
    pkt.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
}

/// A reset: it closes an entry, and never opens one.
#[inline(always)]
pub fn is_rst(pkt: &Packet) -> bool {
    pkt.tcp_flags & TCP_RST != 0
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
