//! The states of a connection entry and how long an entry lives in each: the rule the
//! data path applies to decide whether an entry is alive, and the one userspace applies
//! when it counts and lists connections.

use crate::config::{NS_PER_S, Settings};

/// TCP state as the director sees it (one direction only in DR/TUN, like IPVS).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnState {
    /// SYN seen, no ACK yet (IPVS SYN_RECV): counted as inactive.
    SynRecv = 0,
    /// ACK seen: established, counted as active.
    Established = 1,
    /// FIN seen: short timeout, inactive.
    FinWait = 2,
    /// RST seen: shortest timeout, inactive.
    Close = 3,
    /// UDP: no states.
    Udp = 4,
}

impl ConnState {
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::SynRecv),
            1 => Some(Self::Established),
            2 => Some(Self::FinWait),
            3 => Some(Self::Close),
            4 => Some(Self::Udp),
            _ => None,
        }
    }
}

/// Timeout of SYN_RECV (IPVS default; not settable with ipvsadm either).
pub const SYN_TIMEOUT_S: u32 = 60;
/// Timeout of CLOSE (IPVS default; not settable with ipvsadm either).
pub const CLOSE_TIMEOUT_S: u32 = 10;

/// How long an entry in `state` (a [`ConnState`] as stored) lives after its last packet,
/// in seconds. An unknown state gets CLOSE's timeout, the shortest.
#[inline(always)]
pub const fn timeout_s(state: u8, settings: &Settings) -> u32 {
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

/// [`timeout_s`] in nanoseconds, the unit of the data path's clock.
#[inline(always)]
pub const fn timeout_ns(state: u8, settings: &Settings) -> u64 {
    timeout_s(state, settings) as u64 * NS_PER_S
}

/// An entry in `state` last seen at `last_seen_ns` has not timed out at `now` (both
/// CLOCK_MONOTONIC_COARSE nanoseconds).
#[inline(always)]
pub const fn alive(state: u8, last_seen_ns: u64, now: u64, settings: &Settings) -> bool {
    // Saturating: another CPU may have stamped the entry with a tick this CPU's `now`
    // has not reached yet; that entry is young, not ancient.
    now.saturating_sub(last_seen_ns) <= timeout_ns(state, settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = NS_PER_S;

    fn settings() -> Settings {
        Settings {
            tcp_timeout_s: 900,
            tcp_fin_timeout_s: 120,
            udp_timeout_s: 300,
            ..Settings::default()
        }
    }

    #[test]
    fn each_state_lives_for_its_own_timeout() {
        let s = settings();
        for (state, secs) in [
            (ConnState::Established, 900),
            (ConnState::FinWait, 120),
            (ConnState::Udp, 300),
            (ConnState::SynRecv, SYN_TIMEOUT_S as u64),
            (ConnState::Close, CLOSE_TIMEOUT_S as u64),
        ] {
            let st = state as u8;
            assert_eq!(timeout_s(st, &s) as u64, secs, "{state:?}");
            let seen = 1_000 * S;
            assert!(
                alive(st, seen, seen + secs * S, &s),
                "{state:?} at its timeout"
            );
            assert!(
                !alive(st, seen, seen + secs * S + 1, &s),
                "{state:?} past it"
            );
        }
    }

    #[test]
    fn an_unknown_state_gets_the_shortest_timeout() {
        assert_eq!(timeout_s(200, &settings()), CLOSE_TIMEOUT_S);
    }

    #[test]
    fn an_entry_stamped_ahead_of_now_is_alive() {
        // Another CPU's clock tick may be ahead of this one's.
        assert!(alive(ConnState::Close as u8, 50 * S, 49 * S, &settings()));
    }

    #[test]
    fn the_configured_timeouts_are_the_ones_applied() {
        let s = Settings {
            tcp_timeout_s: 5,
            ..settings()
        };
        let st = ConnState::Established as u8;
        assert!(alive(st, 0, 5 * S, &s));
        assert!(!alive(st, 0, 6 * S, &s));
    }
}
