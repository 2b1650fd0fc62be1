//! Reading the state for listings: services with their counters and connection counts,
//! connection entries with their time left, and rates from two readings.

use std::{collections::HashMap, net::IpAddr};

use director::{
    Control, ControlError, Protocol,
    control::{ServiceView, monotonic_ns},
    model::addr_from_16,
};
use director_common::{
    config::NS_PER_S,
    conn_state::{self, ConnState},
    stats::Counters,
};

use super::format::{ConnRow, RealRow, Snapshot, SvcRow};

/// Live persistence templates per real id.
fn persistent_counts(
    c: &Control,
    views: &[ServiceView],
    now: u64,
) -> Result<HashMap<u32, u64>, ControlError> {
    let mut out: HashMap<u32, u64> = HashMap::new();
    for (k, e) in c.persistence_templates()? {
        let Some(p) = views
            .iter()
            .find(|v| v.id == k.service)
            .and_then(|v| v.spec.persistence)
        else {
            continue;
        };
        if now.saturating_sub(e.last_seen_ns) <= p.timeout_s as u64 * NS_PER_S {
            *out.entry(e.real).or_default() += 1;
        }
    }
    Ok(out)
}

/// Everything `-L` shows, read once.
pub fn read(c: &Control) -> Result<Snapshot, ControlError> {
    let views = c.services()?;
    let counts = c.conn_counts()?;
    let persistent = persistent_counts(c, &views, monotonic_ns())?;
    let services = views
        .iter()
        .map(|v| SvcRow {
            spec: v.spec.clone(),
            stats: v.stats,
            reals: v
                .reals
                .iter()
                .map(|r| {
                    let n = counts.get(&r.id).copied().unwrap_or_default();
                    RealRow {
                        spec: r.spec,
                        stats: r.stats,
                        active: n.active,
                        inactive: n.inactive,
                        persistent: persistent.get(&r.id).copied().unwrap_or(0),
                    }
                })
                .collect(),
        })
        .collect();
    Ok(Snapshot {
        conn_table_size: c.conn_table_size(),
        services,
    })
}

fn rate(before: &Counters, after: &Counters, secs: f64) -> Counters {
    let r = |b: u64, a: u64| (a.saturating_sub(b) as f64 / secs).round() as u64;
    Counters {
        conns: r(before.conns, after.conns),
        pkts_in: r(before.pkts_in, after.pkts_in),
        bytes_in: r(before.bytes_in, after.bytes_in),
        pkts_out: r(before.pkts_out, after.pkts_out),
        bytes_out: r(before.bytes_out, after.bytes_out),
    }
}

/// `after` with per-second rates over `secs` in place of its counters. A service or real
/// that did not exist in `before` counts from zero.
pub fn rates(before: &Snapshot, after: &Snapshot, secs: f64) -> Snapshot {
    let mut out = after.clone();
    for svc in &mut out.services {
        let b = before
            .services
            .iter()
            .find(|s| s.spec.addr == svc.spec.addr);
        svc.stats = rate(&b.map(|s| s.stats).unwrap_or_default(), &svc.stats, secs);
        for r in &mut svc.reals {
            let rb = b.and_then(|s| {
                s.reals
                    .iter()
                    .find(|x| x.spec.addr == r.spec.addr && x.spec.port == r.spec.port)
            });
            r.stats = rate(&rb.map(|x| x.stats).unwrap_or_default(), &r.stats, secs);
        }
    }
    out
}

fn state_name(state: Option<ConnState>) -> &'static str {
    match state {
        Some(ConnState::SynRecv) => "SYN_RECV",
        Some(ConnState::Established) => "ESTABLISHED",
        Some(ConnState::FinWait) => "FIN_WAIT",
        Some(ConnState::Close) => "CLOSE",
        Some(ConnState::Udp) => "UDP",
        None => "NONE",
    }
}

/// `-c`: live connection entries (client direction), then live persistence templates
/// (state NONE, client port 0, as IPVS lists them), sorted.
pub fn connections(c: &Control) -> Result<Vec<ConnRow>, ControlError> {
    let views = c.services()?;
    let settings = c.settings()?;
    let now = monotonic_ns();
    let mut rows = Vec::new();
    for (k, v) in c.connections()? {
        let state = ConnState::from_u8(v.state);
        let timeout = conn_state::timeout_ns(v.state, &settings);
        let elapsed = now.saturating_sub(v.last_seen_ns);
        let (Some(proto), true) = (Protocol::from_number(k.proto), elapsed <= timeout) else {
            continue;
        };
        let Some(real) = views
            .iter()
            .find(|s| s.id == v.service)
            .and_then(|s| s.reals.iter().find(|r| r.id == v.real))
        else {
            continue;
        };
        let dport = u16::from_be(k.dport_be);
        rows.push(ConnRow {
            proto,
            client: (IpAddr::from(k.src), u16::from_be(k.sport_be)),
            virt: (IpAddr::from(k.dst), dport),
            dest: (
                real.spec.addr,
                if real.spec.port == 0 {
                    dport
                } else {
                    real.spec.port
                },
            ),
            state: state_name(state),
            expire_s: (timeout - elapsed) / NS_PER_S,
        });
    }
    for (k, e) in c.persistence_templates()? {
        let Some(svc) = views.iter().find(|s| s.id == k.service) else {
            continue;
        };
        let (Some(p), Some(real)) = (
            svc.spec.persistence,
            svc.reals.iter().find(|r| r.id == e.real),
        ) else {
            continue;
        };
        let timeout = p.timeout_s as u64 * NS_PER_S;
        let elapsed = now.saturating_sub(e.last_seen_ns);
        if elapsed > timeout {
            continue;
        }
        let client: IpAddr = addr_from_16(&k.client, k.family);
        rows.push(ConnRow {
            proto: svc.spec.addr.proto,
            client: (client, 0),
            virt: (svc.spec.addr.addr, svc.spec.addr.port),
            dest: (real.spec.addr, real.spec.port),
            state: "NONE",
            expire_s: (timeout - elapsed) / NS_PER_S,
        });
    }
    rows.sort_by_key(|r| (r.proto, r.client, r.virt, r.state));
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use director::{RealSpec, ServiceSpec};
    use director_common::real::Method;

    use super::*;

    fn counters(n: u64) -> Counters {
        Counters {
            conns: n,
            pkts_in: 10 * n,
            bytes_in: 1000 * n,
            pkts_out: 0,
            bytes_out: 0,
        }
    }

    fn snap(n: u64) -> Snapshot {
        let addr = IpAddr::V4("10.0.0.1".parse().unwrap());
        Snapshot {
            conn_table_size: 16,
            services: vec![SvcRow {
                spec: ServiceSpec::new(Protocol::Tcp, addr, 80),
                stats: counters(n),
                reals: vec![RealRow {
                    spec: RealSpec::new(addr, 80, Method::Route, 1),
                    stats: counters(n),
                    active: 0,
                    inactive: 0,
                    persistent: 0,
                }],
            }],
        }
    }

    #[test]
    fn rates_are_differences_per_second() {
        let r = rates(&snap(10), &snap(30), 2.0);
        assert_eq!(r.services[0].stats, counters(10));
        assert_eq!(r.services[0].reals[0].stats, counters(10));
    }

    #[test]
    fn counters_zeroed_between_readings_give_zero_rates() {
        let r = rates(&snap(30), &snap(10), 1.0);
        assert_eq!(r.services[0].stats, Counters::default());
    }

    #[test]
    fn a_service_new_since_the_first_reading_counts_from_zero() {
        let r = rates(&Snapshot::default(), &snap(5), 1.0);
        assert_eq!(r.services[0].stats, counters(5));
    }
}
