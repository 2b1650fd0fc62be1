//! `[bgp]`: how the daemon drives the director's BGP speaker (BIRD 2). Read as written
//! (`Raw*`, every value with its span), then validated in full into [`BgpConfig`]; every
//! problem is reported with its line, column and field, like the rest of the file.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr},
    ops::Range,
    path::PathBuf,
    time::Duration,
};

use serde::Deserialize;
use toml::Spanned;

use crate::config::{Problems, ServiceConfig, duration};

/// The validated `[bgp]` section.
#[derive(Clone, Debug, PartialEq)]
pub struct BgpConfig {
    /// BIRD's control socket (`bird -s`).
    pub socket: PathBuf,
    /// The file the daemon writes and BIRD's own configuration includes.
    pub include: PathBuf,
    /// This director's AS number.
    pub asn: u32,
    /// BIRD's router id, when the daemon sets it (else BIRD's configuration does).
    pub router_id: Option<Ipv4Addr>,
    /// Source address of the sessions of its family, unless a neighbour says otherwise.
    pub local_address: Option<IpAddr>,
    /// The VIPs the daemon may announce, each only while [`Policy`] holds: IPv4 VIPs to
    /// the IPv4 neighbours, IPv6 VIPs to the IPv6 ones.
    pub vips: BTreeSet<IpAddr>,
    pub policy: Policy,
    /// Added to every announced route.
    pub communities: Vec<Community>,
    /// After SIGTERM has withdrawn every route: how long the daemon (and its data path)
    /// keeps serving what the routers still send while they converge.
    pub drain: Duration,
    pub neighbors: Vec<Neighbor>,
}

/// When a VIP is announced (and the data path is attached): enough of its services have
/// at least `min_reals` real servers UP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub services: Services,
    /// UP real servers a service needs to count as healthy (at least 1).
    pub min_reals: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Services {
    /// Every service of the VIP is healthy.
    All,
    /// At least one service of the VIP is healthy.
    Any,
}

/// A BGP community added to the announced routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Community {
    /// RFC 1997: `ASN:VALUE`, 16 bits each.
    Standard(u16, u16),
    /// RFC 8092: `ASN:DATA1:DATA2`, 32 bits each.
    Large(u32, u32, u32),
}

/// A BGP peer (the router in front of the director).
#[derive(Clone, Debug, PartialEq)]
pub struct Neighbor {
    /// IPv4 or IPv6: the session carries the VIPs of its family.
    pub address: IpAddr,
    pub asn: u32,
    /// Of the same family as `address`.
    pub local_address: Option<IpAddr>,
    /// BGP hold time; BIRD sends keepalives every third of it.
    pub hold_time: Duration,
    /// BFD on the session, with these timers: the session (and every route) goes down
    /// after `multiplier` missed packets, well before the hold time.
    pub bfd: Option<BfdTimers>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BfdTimers {
    /// Minimum transmit and receive interval.
    pub interval: Duration,
    pub multiplier: u32,
}

pub const DEFAULT_HOLD_TIME: Duration = Duration::from_secs(9);
pub const DEFAULT_BFD: BfdTimers = BfdTimers {
    interval: Duration::from_millis(100),
    multiplier: 3,
};
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(5);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBgp {
    socket: Option<Spanned<String>>,
    include: Option<Spanned<String>>,
    asn: Option<Spanned<i64>>,
    router_id: Option<Spanned<String>>,
    local_address: Option<Spanned<String>>,
    vips: Option<Spanned<Vec<Spanned<String>>>>,
    announce: Option<Spanned<String>>,
    min_reals: Option<Spanned<i64>>,
    communities: Option<Vec<Spanned<String>>>,
    drain: Option<Spanned<toml::Value>>,
    hold_time: Option<Spanned<toml::Value>>,
    bfd: Option<RawBfd>,
    #[serde(default, rename = "neighbor")]
    neighbors: Vec<Spanned<RawNeighbor>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBfd {
    interval: Option<Spanned<toml::Value>>,
    multiplier: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNeighbor {
    address: Option<Spanned<String>>,
    asn: Option<Spanned<i64>>,
    local_address: Option<Spanned<String>>,
    hold_time: Option<Spanned<toml::Value>>,
    bfd: Option<Spanned<bool>>,
    bfd_interval: Option<Spanned<toml::Value>>,
    bfd_multiplier: Option<Spanned<i64>>,
}

/// Validate `[bgp]` against the services the file declares.
pub(crate) fn validate(
    p: &mut Problems,
    raw: Spanned<RawBgp>,
    services: &[ServiceConfig],
) -> Option<BgpConfig> {
    let before = p.list.len();
    let span = raw.span();
    let raw = raw.into_inner();
    let socket = path(p, raw.socket, "bgp.socket", &span);
    let include = path(p, raw.include, "bgp.include", &span);
    let asn = match raw.asn {
        Some(v) => as_number(p, &v, "bgp.asn"),
        None => {
            p.at(
                span.clone(),
                "bgp.asn",
                "missing: this director's AS number is required",
            );
            None
        }
    };
    let router_id = raw
        .router_id
        .and_then(|v| ipv4(p, &v, "bgp.router_id", "a router id (an IPv4 address)"));
    let local_address = raw.local_address.and_then(|v| {
        ip(
            p,
            &v,
            "bgp.local_address",
            "an IPv4 or IPv6 address of this director",
        )
    });
    // The families some neighbour carries, read before the neighbours are validated:
    // a VIP of a family no session carries would be announced to no one.
    let carried: Vec<bool> = raw
        .neighbors
        .iter()
        .filter_map(|n| n.get_ref().address.as_ref())
        .filter_map(|a| a.get_ref().parse::<IpAddr>().ok())
        .map(|a| a.is_ipv6())
        .collect();

    let declared: BTreeSet<IpAddr> = services.iter().map(|s| s.spec.addr.addr).collect();
    let vips = match raw.vips {
        // Every declared VIP some session can carry.
        None => declared
            .iter()
            .copied()
            .filter(|a| carried.contains(&a.is_ipv6()))
            .collect(),
        Some(list) => {
            let mut vips = BTreeSet::new();
            for (i, v) in list.into_inner().into_iter().enumerate() {
                let field = format!("bgp.vips[{i}]");
                let Some(a) = ip(p, &v, &field, "a VIP (an IPv4 or IPv6 address)") else {
                    continue;
                };
                if !declared.contains(&a) {
                    p.at(
                        v.span(),
                        &field,
                        format!("{a} is the address of no declared service"),
                    );
                } else if !carried.is_empty() && !carried.contains(&a.is_ipv6()) {
                    p.at(
                        v.span(),
                        &field,
                        format!(
                            "{a} is an {} VIP and no neighbor is {}: no session would carry its route",
                            family(a),
                            family(a)
                        ),
                    );
                } else if !vips.insert(a) {
                    p.at(v.span(), &field, format!("{a} is listed twice"));
                }
            }
            vips
        }
    };
    let services_policy = match &raw.announce {
        None => Services::All,
        Some(v) => match v.get_ref().as_str() {
            "all" => Services::All,
            "any" => Services::Any,
            other => {
                p.at(
                    v.span(),
                    "bgp.announce",
                    format!(
                        "expected \"all\" (every service of the VIP healthy) or \"any\" (one is enough), not {other:?}"
                    ),
                );
                Services::All
            }
        },
    };
    let min_reals = match &raw.min_reals {
        None => 1,
        Some(v) => match u32::try_from(*v.get_ref()) {
            Ok(n) if n >= 1 => n,
            _ => {
                p.at(
                    v.span(),
                    "bgp.min_reals",
                    format!(
                        "expected at least 1 (UP real servers a service needs to count as healthy), not {}",
                        v.get_ref()
                    ),
                );
                1
            }
        },
    };
    let mut communities = Vec::new();
    for (i, v) in raw.communities.unwrap_or_default().iter().enumerate() {
        if let Some(c) = community(p, v, &format!("bgp.communities[{i}]")) {
            communities.push(c);
        }
    }
    let drain = raw
        .drain
        .and_then(|v| duration(p, &v, "bgp.drain", Duration::ZERO))
        .unwrap_or(DEFAULT_DRAIN);
    let hold_default = raw
        .hold_time
        .and_then(|v| hold_time(p, &v, "bgp.hold_time"))
        .unwrap_or(DEFAULT_HOLD_TIME);
    let bfd_default = match raw.bfd {
        None => DEFAULT_BFD,
        Some(b) => bfd_timers(p, b, "bgp.bfd.", DEFAULT_BFD),
    };

    let mut neighbors: Vec<Neighbor> = Vec::new();
    if raw.neighbors.is_empty() {
        p.at(
            span.clone(),
            "bgp.neighbor",
            "no neighbor: add at least one [[bgp.neighbor]] with an address and asn",
        );
    }
    for (i, n) in raw.neighbors.into_iter().enumerate() {
        let field = format!("bgp.neighbor[{i}]");
        let nspan = n.span();
        let n = n.into_inner();
        let address = match &n.address {
            Some(v) => ip(
                p,
                v,
                &format!("{field}.address"),
                "the neighbor's IPv4 or IPv6 address",
            ),
            None => {
                p.at(
                    nspan.clone(),
                    &format!("{field}.address"),
                    "missing: the neighbor's address is required",
                );
                None
            }
        };
        let asn = match &n.asn {
            Some(v) => as_number(p, v, &format!("{field}.asn")),
            None => {
                p.at(
                    nspan.clone(),
                    &format!("{field}.asn"),
                    "missing: the neighbor's AS number is required",
                );
                None
            }
        };
        let local = n.local_address.and_then(|v| {
            let l = ip(
                p,
                &v,
                &format!("{field}.local_address"),
                "an IPv4 or IPv6 address of this director",
            )?;
            match address {
                Some(a) if a.is_ipv6() != l.is_ipv6() => {
                    p.at(
                        v.span(),
                        &format!("{field}.local_address"),
                        format!(
                            "{l} is an {} address and the neighbor {a} is {}: a session has one family",
                            family(l),
                            family(a)
                        ),
                    );
                    None
                }
                _ => Some(l),
            }
        });
        let hold = n
            .hold_time
            .and_then(|v| hold_time(p, &v, &format!("{field}.hold_time")))
            .unwrap_or(hold_default);
        let bfd_on = n.bfd.as_ref().is_some_and(|v| *v.get_ref());
        let own = RawBfd {
            interval: n.bfd_interval,
            multiplier: n.bfd_multiplier,
        };
        let timers = bfd_timers(p, own, &format!("{field}.bfd_"), bfd_default);
        let bfd = bfd_on.then_some(timers);
        if let Some(a) = address {
            if neighbors.iter().any(|x| x.address == a) {
                p.at(
                    n.address.as_ref().map_or(nspan.clone(), |v| v.span()),
                    &format!("{field}.address"),
                    format!("{a} is already a neighbor"),
                );
            }
            if let (Some(asn), true) = (asn, p.list.len() == before) {
                neighbors.push(Neighbor {
                    address: a,
                    asn,
                    local_address: local.or(local_address.filter(|l| l.is_ipv6() == a.is_ipv6())),
                    hold_time: hold,
                    bfd,
                });
            }
        }
    }
    if p.list.len() != before {
        return None;
    }
    Some(BgpConfig {
        socket: socket?,
        include: include?,
        asn: asn?,
        router_id,
        local_address,
        vips,
        policy: Policy {
            services: services_policy,
            min_reals,
        },
        communities,
        drain,
        neighbors,
    })
}

/// `field` is the keys' prefix: `bgp.bfd.` for the table, `bgp.neighbor[0].bfd_` for a
/// neighbour's own.
fn bfd_timers(p: &mut Problems, b: RawBfd, field: &str, defaults: BfdTimers) -> BfdTimers {
    let mut t = defaults;
    if let Some(v) = b.interval
        && let Some(d) = duration(
            p,
            &v,
            &format!("{field}interval"),
            Duration::from_millis(10),
        )
    {
        t.interval = d;
    }
    if let Some(v) = b.multiplier {
        match u32::try_from(*v.get_ref()) {
            Ok(n) if (1..=255).contains(&n) => t.multiplier = n,
            _ => p.at(
                v.span(),
                &format!("{field}multiplier"),
                format!(
                    "expected 1 to 255 (missed packets before the session is down), not {}",
                    v.get_ref()
                ),
            ),
        }
    }
    t
}

fn path(
    p: &mut Problems,
    v: Option<Spanned<String>>,
    field: &str,
    table: &Range<usize>,
) -> Option<PathBuf> {
    match v {
        Some(v) if v.get_ref().starts_with('/') => Some(PathBuf::from(v.get_ref())),
        Some(v) => {
            p.at(
                v.span(),
                field,
                format!("expected an absolute path, not {:?}", v.get_ref()),
            );
            None
        }
        None => {
            p.at(
                table.clone(),
                field,
                "missing: an absolute path is required",
            );
            None
        }
    }
}

fn as_number(p: &mut Problems, v: &Spanned<i64>, field: &str) -> Option<u32> {
    match u32::try_from(*v.get_ref()) {
        Ok(n) if n >= 1 => Some(n),
        _ => {
            p.at(
                v.span(),
                field,
                format!(
                    "expected an AS number from 1 to 4294967295, not {}",
                    v.get_ref()
                ),
            );
            None
        }
    }
}

fn family(a: IpAddr) -> &'static str {
    if a.is_ipv6() { "IPv6" } else { "IPv4" }
}

fn ip(p: &mut Problems, v: &Spanned<String>, field: &str, what: &str) -> Option<IpAddr> {
    match v.get_ref().parse::<IpAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            p.at(
                v.span(),
                field,
                format!("expected {what}, not {:?}", v.get_ref()),
            );
            None
        }
    }
}

fn ipv4(p: &mut Problems, v: &Spanned<String>, field: &str, what: &str) -> Option<Ipv4Addr> {
    match v.get_ref().parse::<Ipv4Addr>() {
        Ok(a) => Some(a),
        Err(_) => {
            p.at(
                v.span(),
                field,
                format!("expected {what}, not {:?}", v.get_ref()),
            );
            None
        }
    }
}

fn community(p: &mut Problems, v: &Spanned<String>, field: &str) -> Option<Community> {
    let parts: Vec<Option<u32>> = v.get_ref().split(':').map(|s| s.parse().ok()).collect();
    let c = match parts.as_slice() {
        [Some(a), Some(b)] => u16::try_from(*a)
            .ok()
            .zip(u16::try_from(*b).ok())
            .map(|(a, b)| Community::Standard(a, b)),
        [Some(a), Some(b), Some(c)] => Some(Community::Large(*a, *b, *c)),
        _ => None,
    };
    if c.is_none() {
        p.at(
            v.span(),
            field,
            format!(
                "expected a community \"ASN:VALUE\" (0 to 65535 each) or a large community \"ASN:DATA1:DATA2\", not {:?}",
                v.get_ref()
            ),
        );
    }
    c
}

/// BGP counts hold times in whole seconds, 3 or more (RFC 4271).
fn hold_time(p: &mut Problems, v: &Spanned<toml::Value>, field: &str) -> Option<Duration> {
    let d = duration(p, v, field, Duration::from_secs(3))?;
    if d.subsec_nanos() != 0 || d.as_secs() > 65_535 {
        p.at(
            v.span(),
            field,
            "expected whole seconds from 3 to 65535 (BGP's hold time)",
        );
        return None;
    }
    Some(d)
}
