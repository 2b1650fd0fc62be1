//! Reading an existing ldirectord.cf into the native model (`--ldirectord FILE`), so a
//! site can move over without rewriting its configuration first.
//!
//! Global `key=value` lines, then `virtual=VIP:PORT` blocks whose lines are indented.
//! Keys that map: checktimeout, connecttimeout, negotiatetimeout, checkinterval,
//! failurecount (fall; rise is 1, as ldirectord puts a real back at its first good
//! check), quiescent, fallback, real (with ranges like `10.0.0.[2-4]:80`), checktype
//! (connect, negotiate, external, on, off; ping is not checked), service (http, https,
//! dns negotiate; others fall back to a connect check), request, receive, virtualhost,
//! checkport, checkcommand, scheduler, persistent, netmask, protocol. Keys ldirectord
//! knows that have no equivalent here (email alerts, logfile, autoreload, ...) give a
//! warning; unknown keys are errors, as in ldirectord.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
    sync::Arc,
    time::Duration,
};

use director_common::{real::Method, service::Scheduler};

use super::{
    Loaded,
    config::{
        CheckConfig, CheckKind, Command, Config, ConfigError, DaemonSettings, DnsCheck, DnsType,
        ExternalCheck, HttpCheck, InitState, OnDown, Pattern, Problems, RealConfig, ServiceConfig,
        StatusSet, TlsCheck, UdpCheck, method_by_name, parse_duration, scheduler_by_name,
    },
};
use director_control::model::{Persistence, Protocol, RealSpec, ServiceAddr, ServiceSpec};

/// Keys ldirectord knows that the daemon ignores (with a warning).
const IGNORED: &[&str] = &[
    "autoreload",
    "callback",
    "cleanstop",
    "database",
    "emailalert",
    "emailalertfreq",
    "emailalertfrom",
    "emailalertstatus",
    "execute",
    "fork",
    "httpmethod",
    "logfile",
    "login",
    "maintenancedir",
    "monitorfile",
    "passwd",
    "readdquiescent",
    "secret",
    "smtp",
    "supervised",
];

#[derive(Default, Clone)]
struct Timing {
    checktimeout: Option<Duration>,
    connecttimeout: Option<Duration>,
    negotiatetimeout: Option<Duration>,
    checkinterval: Option<Duration>,
    failurecount: Option<u32>,
    quiescent: Option<bool>,
}

struct Virtual {
    line: usize,
    addr: ServiceAddr,
    protocol_line: Option<usize>,
    timing: Timing,
    reals: Vec<(usize, RealSpec)>,
    fallback: Option<(usize, RealSpec)>,
    checktype: Option<(usize, String)>,
    checkcommand: Option<(usize, String)>,
    service: Option<(usize, String)>,
    request: Option<(usize, String)>,
    receive: Option<(usize, String)>,
    virtualhost: Option<String>,
    checkport: Option<u16>,
    scheduler: (Scheduler, bool),
    persistent: Option<u32>,
    /// Of the virtual's family: a dotted netmask, or an IPv6 prefix as a mask.
    netmask: Option<IpAddr>,
}

pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let src = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::whole_file(path, format!("cannot read the file: {e}")))?;
    parse(path, &src)
}

fn unquote(v: &str) -> String {
    let v = v.trim();
    if v.len() >= 2
        && (v.starts_with('"') && v.ends_with('"') || v.starts_with('\'') && v.ends_with('\''))
    {
        v[1..v.len() - 1].to_owned()
    } else {
        v.to_owned()
    }
}

/// Split a `real=` value into words, keeping quoted strings together.
fn words(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    for c in v.chars() {
        match quote {
            Some(q) if c == q => {
                quote = None;
                out.push(std::mem::take(&mut cur));
            }
            Some(_) => cur.push(c),
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c.is_whitespace() => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            None => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn port_number(s: &str, proto: &str) -> Option<u16> {
    if let Ok(n) = s.parse::<u16>() {
        return Some(n);
    }
    // A service name, as ldirectord resolves it through /etc/services.
    let services = std::fs::read_to_string("/etc/services").unwrap_or_default();
    services.lines().find_map(|l| {
        let l = l.split('#').next()?;
        let mut it = l.split_whitespace();
        let name = it.next()?;
        let (port, p) = it.next()?.split_once('/')?;
        let aliases: Vec<&str> = it.collect();
        ((name == s || aliases.contains(&s)) && p == proto)
            .then(|| port.parse().ok())
            .flatten()
    })
}

/// An address ldirectord would take that the daemon cannot use.
#[derive(Debug, thiserror::Error)]
enum AddressError {
    #[error("expected an IP address, not {0:?} (host names are not resolved)")]
    NotAnIp(String),
    #[error("unknown port {0:?}")]
    UnknownPort(String),
    #[error("expected a range like [2-4] in {0:?}")]
    NoRange(String),
    #[error("bad range in {0:?}")]
    BadRange(String),
    #[error("empty range in {0:?}")]
    EmptyRange(String),
}

/// `ip:port` (port as number or service name) or `ip` alone (port 0).
fn host_port(s: &str, proto: &str) -> Result<(IpAddr, u16), AddressError> {
    let s = s.trim();
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.ends_with(']') => {
            (h.trim_start_matches('[').trim_end_matches(']'), Some(p))
        }
        _ => (s, None),
    };
    let ip: IpAddr = host
        .parse()
        .map_err(|_| AddressError::NotAnIp(host.to_owned()))?;
    let port = match port {
        None => 0,
        Some(p) => port_number(p, proto).ok_or_else(|| AddressError::UnknownPort(p.to_owned()))?,
    };
    Ok((ip, port))
}

/// `10.0.0.[2-4]` ranges in the last octet, as ldirectord allows. Brackets around an
/// IPv6 address (`[2001:db8::11]:80`) are no range.
fn expand(addr: &str) -> Result<Vec<String>, AddressError> {
    let (Some(open), Some(close)) = (addr.find('['), addr.find(']')) else {
        return Ok(vec![addr.to_owned()]);
    };
    if addr[open..close].contains(':') {
        return Ok(vec![addr.to_owned()]);
    }
    let (a, b) = addr[open + 1..close]
        .split_once('-')
        .ok_or_else(|| AddressError::NoRange(addr.to_owned()))?;
    let (a, b): (u8, u8) = (
        a.trim()
            .parse()
            .map_err(|_| AddressError::BadRange(addr.to_owned()))?,
        b.trim()
            .parse()
            .map_err(|_| AddressError::BadRange(addr.to_owned()))?,
    );
    if a > b {
        return Err(AddressError::EmptyRange(addr.to_owned()));
    }
    Ok((a..=b)
        .map(|n| format!("{}{n}{}", &addr[..open], &addr[close + 1..]))
        .collect())
}

fn method_word(w: &str) -> Option<Method> {
    method_by_name(&w.to_ascii_lowercase())
}

fn secs(v: &str) -> Option<Duration> {
    let v = v.trim();
    if v.chars().all(|c| c.is_ascii_digit() || c == '.') {
        v.parse::<f64>()
            .ok()
            .filter(|s| *s > 0.0 && *s < 1e9)
            .map(Duration::from_secs_f64)
    } else {
        parse_duration(v)
    }
}

fn yes_no(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "yes" => Some(true),
        "no" => Some(false),
        _ => None,
    }
}

pub fn parse(path: &Path, src: &str) -> Result<Loaded, ConfigError> {
    let mut p = Problems::new(path, src);
    let mut warnings = Vec::new();
    let mut warn =
        |line: usize, msg: String| warnings.push(format!("{}:{line}: {msg}", path.display()));
    let mut global = Timing::default();
    let mut global_fallback: Option<(usize, RealSpec)> = None;
    let mut virtuals: Vec<Virtual> = Vec::new();

    for (i, raw) in src.lines().enumerate() {
        let line = i + 1;
        let text = raw.split_once('#').map_or(raw, |(a, _)| a);
        if text.trim().is_empty() {
            continue;
        }
        let indented = raw.starts_with(' ') || raw.starts_with('\t');
        let Some((key, value)) = text.trim().split_once('=') else {
            p.at_line(line, text.trim(), "expected key=value");
            continue;
        };
        let key = key.trim().to_ascii_lowercase();
        let value = value.trim();
        let in_virtual = indented && !virtuals.is_empty();
        if indented && virtuals.is_empty() {
            p.at_line(
                line,
                &key,
                "an indented line must belong to a virtual= block",
            );
            continue;
        }
        if key == "virtual" {
            if indented {
                p.at_line(
                    line,
                    &key,
                    "virtual= starts a block and must not be indented",
                );
                continue;
            }
            if value.parse::<u32>().is_ok() {
                p.at_line(
                    line,
                    &key,
                    "firewall-mark virtual services are not supported; expected VIP:PORT",
                );
                continue;
            }
            match host_port(value, "tcp") {
                Ok((ip, port)) if port != 0 => virtuals.push(Virtual {
                    line,
                    addr: ServiceAddr {
                        proto: Protocol::Tcp,
                        addr: ip,
                        port,
                    },
                    protocol_line: None,
                    timing: Timing::default(),
                    reals: Vec::new(),
                    fallback: None,
                    checktype: None,
                    checkcommand: None,
                    service: None,
                    request: None,
                    receive: None,
                    virtualhost: None,
                    checkport: None,
                    scheduler: (Scheduler::WeightedRoundRobin, false),
                    persistent: None,
                    netmask: None,
                }),
                Ok(_) => p.at_line(line, &key, "expected VIP:PORT (a port is needed)"),
                Err(e) => p.at_line(line, &key, e.to_string()),
            }
            continue;
        }
        let timing = if in_virtual {
            &mut virtuals.last_mut().expect("checked").timing
        } else {
            &mut global
        };
        match key.as_str() {
            "checktimeout" | "connecttimeout" | "negotiatetimeout" | "checkinterval" => {
                match secs(value) {
                    Some(d) => match key.as_str() {
                        "checktimeout" => timing.checktimeout = Some(d),
                        "connecttimeout" => timing.connecttimeout = Some(d),
                        "negotiatetimeout" => timing.negotiatetimeout = Some(d),
                        _ => timing.checkinterval = Some(d),
                    },
                    None => p.at_line(
                        line,
                        &key,
                        format!("expected a number of seconds, not {value:?}"),
                    ),
                }
            }
            "failurecount" => match value.parse::<u32>() {
                Ok(n) if (1..=1000).contains(&n) => timing.failurecount = Some(n),
                _ => p.at_line(
                    line,
                    &key,
                    format!("expected a count from 1 to 1000, not {value:?}"),
                ),
            },
            "quiescent" => match yes_no(value) {
                Some(b) => timing.quiescent = Some(b),
                None => p.at_line(line, &key, format!("expected yes or no, not {value:?}")),
            },
            "fallback" => {
                let w = words(value);
                let method = w.get(1).map(|m| method_word(m));
                match (w.first().map(|a| host_port(a, "tcp")), method) {
                    (Some(Ok((ip, port))), None | Some(Some(_))) => {
                        if ip.is_loopback() {
                            warn(line, "fallback on a loopback address: the XDP data path cannot forward to this host itself; use a real server address".into());
                        }
                        let spec =
                            RealSpec::new(ip, port, method.flatten().unwrap_or(Method::Route), 1);
                        if in_virtual {
                            virtuals.last_mut().expect("checked").fallback = Some((line, spec));
                        } else {
                            global_fallback = Some((line, spec));
                        }
                    }
                    (Some(Err(e)), _) => p.at_line(line, &key, e.to_string()),
                    _ => p.at_line(line, &key, "expected fallback=IP:PORT [gate|masq|ipip]"),
                }
            }
            k if IGNORED.contains(&k) => warn(
                line,
                format!("{k} is not supported by director daemon; ignored"),
            ),
            _ if !in_virtual => p.at_line(
                line,
                &key,
                "unknown global key (per-service keys go in an indented virtual= block)",
            ),
            _ => {
                let v = virtuals.last_mut().expect("checked");
                virtual_key(&mut p, &mut warn, v, line, &key, value);
            }
        }
    }

    let mut services = Vec::new();
    for v in virtuals {
        if let Some(s) = service(&mut p, &mut warn, v, &global, global_fallback.as_ref()) {
            if services
                .iter()
                .any(|x: &ServiceConfig| x.spec.addr == s.spec.addr)
            {
                p.at_line(0, "virtual", format!("{} is declared twice", s.label()));
            }
            services.push(s);
        }
    }
    let config = Config {
        path: path.to_owned(),
        // ldirectord.cf has no way to say it: a file without a virtual service is
        // refused when it would remove every service (docs/daemon.md).
        allow_empty: false,
        daemon: DaemonSettings::default(),
        services,
        bgp: None,
    };
    p.finish(Loaded { config, warnings })
}

fn virtual_key(
    p: &mut Problems,
    warn: &mut impl FnMut(usize, String),
    v: &mut Virtual,
    line: usize,
    key: &str,
    value: &str,
) {
    let proto = match v.addr.proto {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    };
    match key {
        "real" => {
            let w = words(value);
            let Some(addr) = w.first() else {
                p.at_line(line, key, "expected real=IP:PORT gate|masq|ipip [weight]");
                return;
            };
            let method = match w.get(1) {
                None => Method::Route,
                Some(m) => match method_word(m) {
                    Some(m) => m,
                    None => {
                        p.at_line(line, key, format!("expected gate, masq or ipip, not {m:?}"));
                        return;
                    }
                },
            };
            let weight = match w.get(2) {
                None => 1,
                Some(n) => match n.parse::<u32>() {
                    Ok(n) if n <= super::config::MAX_WEIGHT => n,
                    _ => {
                        p.at_line(
                            line,
                            key,
                            format!("expected a weight from 0 to 65535, not {n:?}"),
                        );
                        return;
                    }
                },
            };
            if w.len() > 3 {
                warn(
                    line,
                    "a real's own request/receive strings are not supported; the service's check is used".into(),
                );
            }
            match expand(addr) {
                Ok(list) => {
                    for a in list {
                        match host_port(&a, proto) {
                            Ok((ip, port)) => v
                                .reals
                                .push((line, RealSpec::new(ip, port, method, weight))),
                            Err(e) => p.at_line(line, key, e.to_string()),
                        }
                    }
                }
                Err(e) => p.at_line(line, key, e.to_string()),
            }
        }
        "checktype" => v.checktype = Some((line, value.to_ascii_lowercase())),
        "checkcommand" => v.checkcommand = Some((line, unquote(value))),
        "service" => v.service = Some((line, value.to_ascii_lowercase())),
        "request" => v.request = Some((line, unquote(value))),
        "receive" => v.receive = Some((line, unquote(value))),
        "virtualhost" => v.virtualhost = Some(unquote(value)),
        "checkport" => match value.parse::<u16>() {
            Ok(n) if n > 0 => v.checkport = Some(n),
            _ => p.at_line(
                line,
                key,
                format!("expected a port from 1 to 65535, not {value:?}"),
            ),
        },
        "scheduler" => {
            let s = value.to_ascii_lowercase();
            match scheduler_by_name(&s) {
                Some(x) => v.scheduler = x,
                None => warn(
                    line,
                    format!("scheduler {s} is not available in the data path; using wrr"),
                ),
            }
        }
        "persistent" => match value.parse::<u32>() {
            Ok(n) if n > 0 => v.persistent = Some(n),
            _ => p.at_line(
                line,
                key,
                format!("expected a timeout in seconds, not {value:?}"),
            ),
        },
        // IPv6 persistence takes a prefix length, as ipvsadm's -M does.
        "netmask" if v.addr.addr.is_ipv6() => match value.trim_start_matches('/').parse::<u32>() {
            Ok(n) if (1..=128).contains(&n) => v.netmask = Some(Persistence::v6_prefix_mask(n)),
            _ => p.at_line(
                line,
                key,
                format!("expected an IPv6 prefix length from 1 to 128 like 64, not {value:?}"),
            ),
        },
        "netmask" => match value.parse::<Ipv4Addr>() {
            Ok(m) => v.netmask = Some(IpAddr::V4(m)),
            Err(_) => p.at_line(
                line,
                key,
                format!("expected a netmask like 255.255.255.0, not {value:?}"),
            ),
        },
        "protocol" => {
            v.protocol_line = Some(line);
            match value.to_ascii_lowercase().as_str() {
                "tcp" => v.addr.proto = Protocol::Tcp,
                "udp" => v.addr.proto = Protocol::Udp,
                "fwm" => p.at_line(line, key, "firewall-mark services are not supported"),
                other => p.at_line(line, key, format!("expected tcp or udp, not {other:?}")),
            }
        }
        _ => p.at_line(line, key, "unknown key in a virtual= block"),
    }
}

/// IPVS's rule: only an encapsulation carries a packet to a real of the other family.
const FAMILY_MIX: &str =
    "the real's address family differs from the virtual's: only ipip (a tunnel) allows that";

fn service(
    p: &mut Problems,
    warn: &mut impl FnMut(usize, String),
    v: Virtual,
    global: &Timing,
    global_fallback: Option<&(usize, RealSpec)>,
) -> Option<ServiceConfig> {
    let before = p.list.len();
    let t = |f: fn(&Timing) -> Option<Duration>| f(&v.timing).or(f(global));
    let interval = t(|x| x.checkinterval).unwrap_or(Duration::from_secs(10));
    let checktimeout = t(|x| x.checktimeout);
    let fall = v.timing.failurecount.or(global.failurecount).unwrap_or(1);
    let quiescent = v.timing.quiescent.or(global.quiescent).unwrap_or(true);
    let proto = v.addr.proto;

    let service_name = v
        .service
        .as_ref()
        .map(|(_, s)| s.clone())
        .unwrap_or_else(|| {
            match v.checkport.unwrap_or(v.addr.port) {
                80 => "http",
                443 => "https",
                53 => "dns",
                _ => "none",
            }
            .to_owned()
        });
    let checktype = v
        .checktype
        .as_ref()
        .map_or("negotiate", |(_, c)| c.as_str());
    let ct_line = v.checktype.as_ref().map_or(v.line, |(l, _)| *l);
    let connect = || {
        if proto == Protocol::Udp {
            CheckKind::Udp(UdpCheck {
                payload: Vec::new(),
                expect: None,
                require_reply: false,
            })
        } else {
            CheckKind::Tcp
        }
    };
    let (kind, negotiate) = match checktype {
        "connect" => (connect(), false),
        "negotiate" => (negotiate_kind(p, warn, &v, &service_name, connect()), true),
        n if n.parse::<u32>().is_ok() => {
            warn(
                ct_line,
                format!("checktype={n} (connect checks, then one negotiate) is run as negotiate"),
            );
            (negotiate_kind(p, warn, &v, &service_name, connect()), true)
        }
        "external" => match &v.checkcommand {
            Some((_, cmd)) => (
                CheckKind::External(ExternalCheck {
                    // ldirectord passes VIP, VPORT, RIP and RPORT as arguments.
                    command: Command::Shell(format!(
                        "exec {cmd} \"$DIRECTOR_VIP\" \"$DIRECTOR_VPORT\" \"$DIRECTOR_CHECK_ADDR\" \"$DIRECTOR_CHECK_PORT\""
                    )),
                    dynamic: false,
                }),
                false,
            ),
            None => {
                p.at_line(
                    ct_line,
                    "checkcommand",
                    "checktype=external needs checkcommand=",
                );
                return None;
            }
        },
        "external-perl" => {
            p.at_line(
                ct_line,
                "checktype",
                "external-perl is not supported; use external with a program",
            );
            return None;
        }
        "ping" => {
            warn(
                ct_line,
                "ping checks are not supported; the reals are not checked (always up)".into(),
            );
            (CheckKind::On, false)
        }
        "on" => (CheckKind::On, false),
        "off" => (CheckKind::Off, false),
        other => {
            p.at_line(
                ct_line,
                "checktype",
                format!("expected connect, negotiate, external, ping, on or off, not {other:?}"),
            );
            return None;
        }
    };
    let specific = if negotiate {
        t(|x| x.negotiatetimeout)
    } else if matches!(kind, CheckKind::Tcp | CheckKind::Udp(_)) {
        t(|x| x.connecttimeout)
    } else {
        None
    };
    let timeout = specific
        .or(checktimeout)
        .unwrap_or(Duration::from_secs(if negotiate { 30 } else { 5 }));
    let mut check = CheckConfig::new(kind);
    check.interval = interval;
    check.timeout = timeout;
    check.rise = 1;
    check.fall = fall;
    check.init_state = InitState::Down;
    check.port = v.checkport;

    let mut reals: Vec<RealConfig> = Vec::new();
    for (line, r) in &v.reals {
        let mut r = *r;
        if r.method != Method::Masq {
            if r.port != 0 && r.port != v.addr.port {
                p.at_line(
                    *line,
                    "real",
                    format!(
                        "gate and ipip cannot change the port: expected port {} or masq",
                        v.addr.port
                    ),
                );
                continue;
            }
            r.port = v.addr.port;
        } else if r.port == 0 {
            r.port = v.addr.port;
        }
        if r.addr.is_ipv4() != v.addr.addr.is_ipv4() && r.method != Method::Tunnel {
            p.at_line(*line, "real", FAMILY_MIX);
            continue;
        }
        if reals
            .iter()
            .any(|x| x.spec.addr == r.addr && x.spec.port == r.port)
        {
            p.at_line(
                *line,
                "real",
                format!("{} is listed twice", SocketAddr::new(r.addr, r.port)),
            );
            continue;
        }
        reals.push(RealConfig::new(r));
    }
    if v.reals.is_empty() {
        p.at_line(v.line, "real", "a virtual service needs at least one real=");
    }
    let mixes =
        |f: &RealSpec| f.addr.is_ipv6() != v.addr.addr.is_ipv6() && f.method != Method::Tunnel;
    let fallback = match (&v.fallback, global_fallback) {
        (Some((line, f)), _) if mixes(f) => {
            p.at_line(*line, "fallback", FAMILY_MIX);
            None
        }
        (Some((_, f)), _) => Some(*f),
        // The global fallback serves the virtuals it can: one of the other family cannot
        // reach a DR or NAT fallback.
        (None, Some((line, f))) if mixes(f) => {
            warn(
                *line,
                format!(
                    "the global fallback's address family differs from virtual={}'s: no fallback for it",
                    SocketAddr::new(v.addr.addr, v.addr.port)
                ),
            );
            None
        }
        (None, Some((_, f))) => Some(*f),
        (None, None) => None,
    }
    .map(|mut f| {
        if f.method != Method::Masq || f.port == 0 {
            f.port = v.addr.port;
        }
        f
    });
    let persistence = v.persistent.map(|s| Persistence {
        timeout_s: s,
        netmask: v
            .netmask
            .unwrap_or_else(|| Persistence::host_mask(v.addr.addr.is_ipv6())),
    });
    if p.list.len() > before {
        return None;
    }
    let _ = v.protocol_line;
    Some(ServiceConfig {
        name: None,
        spec: ServiceSpec {
            addr: v.addr,
            scheduler: v.scheduler.0,
            hash_port: false,
            hash_source_only: v.scheduler.1,
            persistence,
        },
        reals,
        check: Arc::new(check),
        on_down: if quiescent {
            OnDown::Quiescent
        } else {
            OnDown::Remove
        },
        slowstart: Duration::ZERO,
        quorum: 1,
        fallback,
        hooks: Default::default(),
    })
}

fn negotiate_kind(
    p: &mut Problems,
    warn: &mut impl FnMut(usize, String),
    v: &Virtual,
    service: &str,
    connect: CheckKind,
) -> CheckKind {
    let line = v.service.as_ref().map_or(v.line, |(l, _)| *l);
    let body = v
        .receive
        .as_ref()
        .and_then(|(l, r)| match regex::Regex::new(r) {
            Ok(re) => Some(Pattern(re)),
            Err(e) => {
                p.at_line(*l, "receive", format!("expected a regular expression: {e}"));
                None
            }
        });
    match service {
        "http" | "https" => {
            let path = v.request.as_ref().map_or("/".to_owned(), |(_, r)| {
                if r.starts_with('/') {
                    r.clone()
                } else {
                    format!("/{r}")
                }
            });
            let tls = (service == "https").then(|| TlsCheck {
                // ldirectord does not verify certificates either.
                verify: false,
                ca_file: None,
                client: super::config::tls::client_config(false, None)
                    .expect("an unverified TLS configuration always builds"),
            });
            CheckKind::Http(HttpCheck {
                path,
                host: v.virtualhost.clone(),
                status: StatusSet::default(),
                body,
                tls,
            })
        }
        "dns" => match &v.request {
            Some((_, name)) => {
                if v.receive.is_some() {
                    warn(
                        line,
                        "receive= for dns checks is not supported; any answer of type A counts"
                            .into(),
                    );
                }
                CheckKind::Dns(DnsCheck {
                    name: name.trim_end_matches('.').to_owned(),
                    qtype: DnsType::A,
                })
            }
            None => {
                p.at_line(
                    line,
                    "request",
                    "a dns negotiate check needs request= (the name to query)",
                );
                connect
            }
        },
        "none" => connect,
        other => {
            warn(
                line,
                format!(
                    "negotiate checks of service={other} are not supported; using a connect check"
                ),
            );
            connect
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "\
# the example of docs/healthchecks.md
checktimeout=3
checkinterval=1
quiescent=yes
emailalert=ops@example.com
virtual=192.168.6.240:80
\treal=192.168.6.2:80 gate
\treal=192.168.6.3:80 gate 2
\tfallback=192.168.6.9:80 gate
\tservice=http
\tscheduler=wrr
\tprotocol=tcp
\tchecktype=negotiate
\trequest=\"health\"
\treceive=\"OK\"
virtual=192.168.6.240:53
\treal=192.168.6.[2-3]:53 gate
\tprotocol=udp
\tservice=dns
\trequest=\"www.example.com\"
\tfailurecount=3
\tquiescent=no
";

    #[test]
    fn the_reference_example_maps_to_the_native_model() {
        let l = parse(Path::new("ldirectord.cf"), EXAMPLE).unwrap();
        assert_eq!(
            l.warnings,
            ["ldirectord.cf:5: emailalert is not supported by director daemon; ignored"]
        );
        let c = &l.config;
        assert_eq!(c.services.len(), 2);
        let web = &c.services[0];
        assert_eq!(web.label(), "tcp/192.168.6.240:80");
        assert_eq!(web.spec.scheduler, Scheduler::WeightedRoundRobin);
        assert_eq!(web.on_down, OnDown::Quiescent);
        let reals: Vec<(String, u32)> = web
            .reals
            .iter()
            .map(|r| (format!("{}:{}", r.spec.addr, r.spec.port), r.spec.weight))
            .collect();
        assert_eq!(
            reals,
            [("192.168.6.2:80".into(), 1), ("192.168.6.3:80".into(), 2)]
        );
        assert_eq!(
            web.fallback.unwrap().addr,
            "192.168.6.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(web.check.interval, Duration::from_secs(1));
        assert_eq!(web.check.timeout, Duration::from_secs(3));
        assert_eq!((web.check.rise, web.check.fall), (1, 1));
        match &web.check.kind {
            CheckKind::Http(h) => {
                assert_eq!(h.path, "/health");
                assert_eq!(h.body.as_ref().unwrap().0.as_str(), "OK");
                assert!(h.tls.is_none());
            }
            k => panic!("{k:?}"),
        }
        let dns = &c.services[1];
        assert_eq!(dns.label(), "udp/192.168.6.240:53");
        assert_eq!(dns.reals.len(), 2, "the range expands");
        assert_eq!(dns.on_down, OnDown::Remove);
        assert_eq!(dns.check.fall, 3);
        assert_eq!(
            dns.check.kind,
            CheckKind::Dns(DnsCheck {
                name: "www.example.com".into(),
                qtype: DnsType::A
            })
        );
    }

    #[test]
    fn external_checks_get_ldirectord_arguments() {
        let l = parse(
            Path::new("x.cf"),
            "virtual=10.0.0.100:25\n  real=10.1.0.11:25 gate\n  checktype=external\n  checkcommand=\"/usr/local/bin/check smtp\"\n",
        )
        .unwrap();
        match &l.config.services[0].check.kind {
            CheckKind::External(e) => {
                assert!(!e.dynamic);
                assert_eq!(
                    e.command,
                    Command::Shell(
                        "exec /usr/local/bin/check smtp \"$DIRECTOR_VIP\" \"$DIRECTOR_VPORT\" \"$DIRECTOR_CHECK_ADDR\" \"$DIRECTOR_CHECK_PORT\""
                            .into()
                    )
                );
            }
            k => panic!("{k:?}"),
        }
    }

    #[test]
    fn unsupported_values_warn_and_unknown_keys_fail() {
        let l = parse(
            Path::new("x.cf"),
            "virtual=10.0.0.100:25\n  real=10.1.0.11:25 gate\n  service=smtp\n  scheduler=wlc\n",
        )
        .unwrap();
        assert_eq!(
            l.warnings,
            [
                "x.cf:4: scheduler wlc is not available in the data path; using wrr",
                "x.cf:3: negotiate checks of service=smtp are not supported; using a connect check"
            ]
        );
        assert_eq!(l.config.services[0].check.kind, CheckKind::Tcp);
        let e = parse(
            Path::new("x.cf"),
            "virtual=10.0.0.100:80\n  real=10.1.0.11:80 gate\n  colour=blue\n",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "x.cf:3:1: colour: unknown key in a virtual= block"
        );
        let e = parse(
            Path::new("x.cf"),
            "virtual=www.example.com:80\n  real=10.1.0.11:80\n",
        )
        .unwrap_err();
        assert_eq!(
            e.problems[0].to_string(),
            "x.cf:1:1: virtual: expected an IP address, not \"www.example.com\" (host names are not resolved)"
        );
        let e = parse(
            Path::new("x.cf"),
            "virtual=10.0.0.100:80\n  real=10.1.0.11:8080 gate\n",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "x.cf:2:1: real: gate and ipip cannot change the port: expected port 80 or masq"
        );
    }

    #[test]
    fn ipv6_virtuals_and_reals_parse_and_families_mix_only_by_tunnel() {
        let l = parse(
            Path::new("x.cf"),
            "\
fallback=10.9.0.1:80 gate
virtual=[2001:db8::100]:80
\treal=[2001:db8::11]:80 gate
\treal=[2001:db8::12]:8080 masq 2
\treal=10.1.0.13:80 ipip
\treal=2001:db8::14 gate
\tchecktype=negotiate
\tservice=http
\trequest=\"/health\"
\treceive=\"ok\"
\tpersistent=300
\tnetmask=64
virtual=10.0.0.100:80
\treal=[2001:db8::21]:80 ipip
\tfallback=[2001:db8::fb]:80 ipip
",
        )
        .unwrap();
        let c = &l.config;
        let web = &c.services[0];
        assert_eq!(web.label(), "tcp/[2001:db8::100]:80");
        let reals = crate::config::tests::real_rows(web);
        assert_eq!(
            reals,
            [
                ("[2001:db8::11]:80".into(), Method::Route, 1),
                ("[2001:db8::12]:8080".into(), Method::Masq, 2),
                ("10.1.0.13:80".into(), Method::Tunnel, 1),
                ("[2001:db8::14]:80".into(), Method::Route, 1),
            ]
        );
        assert!(matches!(web.check.kind, CheckKind::Http(_)));
        assert_eq!(
            web.spec.persistence.unwrap().netmask,
            "ffff:ffff:ffff:ffff::".parse::<IpAddr>().unwrap()
        );
        // The global gate fallback cannot serve the IPv6 virtual: said, and left out.
        assert_eq!(web.fallback, None);
        assert_eq!(
            l.warnings,
            [
                "x.cf:1: the global fallback's address family differs from virtual=[2001:db8::100]:80's: no fallback for it"
            ]
        );
        let v4 = &c.services[1];
        assert_eq!(
            v4.reals[0].spec.addr,
            "2001:db8::21".parse::<IpAddr>().unwrap()
        );
        let fb = v4.fallback.unwrap();
        assert_eq!(
            (fb.addr, fb.port, fb.method),
            ("2001:db8::fb".parse().unwrap(), 80, Method::Tunnel)
        );

        for (src, msg) in [
            (
                "virtual=[2001:db8::100]:80\n  real=10.1.0.11:80 gate\n",
                "x.cf:2:1: real: the real's address family differs from the virtual's: only ipip (a tunnel) allows that",
            ),
            (
                "virtual=10.0.0.100:80\n  real=[2001:db8::11]:80 masq\n",
                "x.cf:2:1: real: the real's address family differs from the virtual's: only ipip (a tunnel) allows that",
            ),
            (
                "virtual=10.0.0.100:80\n  real=10.1.0.11:80 gate\n  fallback=[2001:db8::fb]:80 gate\n",
                "x.cf:3:1: fallback: the real's address family differs from the virtual's: only ipip (a tunnel) allows that",
            ),
            (
                "virtual=[2001:db8::100]:80\n  real=[2001:db8::11]:80 gate\n  persistent=60\n  netmask=255.255.255.0\n",
                "x.cf:4:1: netmask: expected an IPv6 prefix length from 1 to 128 like 64, not \"255.255.255.0\"",
            ),
            (
                "virtual=[2001:db8::100]:80\n  real=[2001:db8::11]:8080 gate\n",
                "x.cf:2:1: real: gate and ipip cannot change the port: expected port 80 or masq",
            ),
        ] {
            let e = parse(Path::new("x.cf"), src).unwrap_err();
            assert_eq!(e.to_string(), msg, "{src}");
        }
    }
}
