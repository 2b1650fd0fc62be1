//! A `[[service]]`: its address and scheduling, its reals and fallback, its hooks.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    ops::Range,
    sync::Arc,
    time::Duration,
};

use director_common::{
    real::{Method, TunType},
    service::Scheduler,
};
use director_control::model::{
    Persistence, Protocol, RealSpec, ServiceAddr, ServiceSpec, TunCsum, Tunnel,
};
use toml::Spanned;

use super::{
    super::{
        diagnostics::Problems,
        model::{CheckConfig, CheckKind, Hooks, MAX_WEIGHT, OnDown, RealConfig, ServiceConfig},
        raw::{RawFallback, RawReal, RawService},
        values::{command, duration, method, on_down, port, scheduler, socket_addr},
    },
    check::check,
};

/// One service, its check merged over the `[check]` defaults; `None` when anything in it
/// is wrong (all of it reported).
pub(super) fn service(
    p: &mut Problems,
    s: RawService,
    field: &str,
    defaults: &CheckConfig,
    default_on_down: OnDown,
    span: Range<usize>,
) -> Option<ServiceConfig> {
    let before = p.list.len();
    let proto = protocol(p, s.protocol.as_ref(), field);
    let addr = socket_addr(p, &s.address, &format!("{field}.address"), None);
    let (scheduler, hash_port, hash_source_only) = scheduling(p, &s, field);
    let method = match &s.method {
        None => Method::Route,
        Some(v) => method(p, v, &format!("{field}.method")).unwrap_or(Method::Route),
    };
    let on_down = match &s.on_down {
        None => default_on_down,
        Some(v) => on_down(p, v, &format!("{field}.on_down")).unwrap_or(OnDown::Quiescent),
    };
    let slowstart = s
        .slowstart
        .as_ref()
        .and_then(|v| duration(p, v, &format!("{field}.slowstart"), Duration::ZERO))
        .unwrap_or(Duration::ZERO);
    let v6 = addr.is_some_and(|a| a.is_ipv6());
    let persistence = persistence(p, &s, field, v6);
    let hooks = hooks(p, &s, field);
    let name = name(p, s.name.as_ref(), field);

    let vaddr = addr?;
    let svc_addr = ServiceAddr {
        proto,
        addr: vaddr.ip(),
        port: vaddr.port(),
    };

    // The check, merged over the [check] defaults.
    let check = match s.check {
        Some(c) => check(p, c, &format!("{field}.check"), defaults, proto),
        None => {
            if proto == Protocol::Udp {
                p.at(
                    span.clone(),
                    &format!("{field}.check"),
                    "a UDP service needs a check with an explicit type (udp, dns, external, on or off); a TCP connect cannot test it",
                );
            }
            Some(defaults.clone())
        }
    };
    let reals = reals(p, &s.reals, field, &svc_addr, method, &span);
    let fallback = s
        .fallback
        .as_ref()
        .and_then(|f| fallback(p, f, field, &svc_addr, method, &reals));
    let quorum = quorum(p, s.quorum.as_ref(), field, reals.len());
    if let Some(c) = &check {
        check_ports(p, c, &reals, field, &span);
    }

    if p.list.len() > before {
        return None;
    }
    Some(ServiceConfig {
        name,
        spec: ServiceSpec {
            addr: svc_addr,
            scheduler,
            hash_port,
            hash_source_only,
            persistence,
        },
        reals,
        check: Arc::new(check?),
        on_down,
        slowstart,
        quorum,
        fallback,
        hooks,
    })
}

fn protocol(p: &mut Problems, v: Option<&Spanned<String>>, field: &str) -> Protocol {
    let Some(v) = v else {
        return Protocol::Tcp;
    };
    match v.get_ref().to_ascii_lowercase().as_str() {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        "fwm" => {
            p.at(
                v.span(),
                &format!("{field}.protocol"),
                "firewall-mark services are not supported; expected \"tcp\" or \"udp\"",
            );
            Protocol::Tcp
        }
        other => {
            p.at(
                v.span(),
                &format!("{field}.protocol"),
                format!("expected \"tcp\" or \"udp\", not {other:?}"),
            );
            Protocol::Tcp
        }
    }
}

/// The scheduler, and whether the hash takes the port (`hash_port`) or the source
/// address only (`mh` without it).
fn scheduling(p: &mut Problems, s: &RawService, field: &str) -> (Scheduler, bool, bool) {
    let (scheduler, hash_source_only) = match &s.scheduler {
        None => (Scheduler::Maglev, false),
        Some(v) => {
            scheduler(p, v, &format!("{field}.scheduler")).unwrap_or((Scheduler::Maglev, false))
        }
    };
    let hash_port = match &s.hash_port {
        Some(v) if *v.get_ref() => {
            if !matches!(scheduler, Scheduler::SourceHash) && !hash_source_only {
                p.at(
                    v.span(),
                    &format!("{field}.hash_port"),
                    "hash_port only applies to the \"sh\" and \"mh\" schedulers",
                );
            }
            true
        }
        _ => false,
    };
    (scheduler, hash_port, hash_source_only)
}

/// `persistent` (a timeout in whole seconds) and its `persistent_netmask`: a dotted
/// netmask for an IPv4 service, a prefix length (`"64"` or `"/64"`) for an IPv6 one, as
/// ipvsadm's `-M` takes them.
fn persistence(p: &mut Problems, s: &RawService, field: &str, v6: bool) -> Option<Persistence> {
    let mut persistence = None;
    if let Some(v) = &s.persistent
        && let Some(d) = duration(p, v, &format!("{field}.persistent"), Duration::from_secs(1))
    {
        if d.subsec_nanos() != 0 {
            p.at(
                v.span(),
                &format!("{field}.persistent"),
                "expected whole seconds (the data path counts persistence in seconds)",
            );
        }
        persistence = Some(Persistence {
            timeout_s: d.as_secs().min(u32::MAX as u64) as u32,
            netmask: Persistence::host_mask(v6),
        });
    }
    if let Some(m) = &s.persistent_netmask {
        let f = format!("{field}.persistent_netmask");
        let text = m.get_ref().trim();
        let mask = if v6 {
            match text.strip_prefix('/').unwrap_or(text).parse::<u32>() {
                Ok(n) if (1..=128).contains(&n) => Some(Persistence::v6_prefix_mask(n)),
                _ => {
                    p.at(
                        m.span(),
                        &f,
                        format!(
                            "expected an IPv6 prefix length from 1 to 128 like \"64\", not {:?}",
                            m.get_ref()
                        ),
                    );
                    None
                }
            }
        } else {
            match text.parse::<Ipv4Addr>() {
                Ok(mask)
                    if u32::from(mask).leading_ones() + u32::from(mask).trailing_zeros() == 32 =>
                {
                    Some(IpAddr::V4(mask))
                }
                _ => {
                    p.at(
                        m.span(),
                        &f,
                        format!(
                            "expected an IPv4 netmask like \"255.255.255.0\", not {:?}",
                            m.get_ref()
                        ),
                    );
                    None
                }
            }
        };
        if let Some(mask) = mask {
            match &mut persistence {
                Some(pers) => pers.netmask = mask,
                None => p.at(
                    m.span(),
                    &f,
                    "persistent_netmask needs persistent (a timeout)",
                ),
            }
        }
    }
    persistence
}

fn hooks(p: &mut Problems, s: &RawService, field: &str) -> Hooks {
    Hooks {
        any: s
            .notify
            .as_ref()
            .and_then(|v| command(p, v, &format!("{field}.notify"))),
        up: s
            .notify_up
            .as_ref()
            .and_then(|v| command(p, v, &format!("{field}.notify_up"))),
        down: s
            .notify_down
            .as_ref()
            .and_then(|v| command(p, v, &format!("{field}.notify_down"))),
    }
}

fn name(p: &mut Problems, n: Option<&Spanned<String>>, field: &str) -> Option<String> {
    let n = n?;
    if n.get_ref().is_empty() || n.get_ref().chars().any(|c| c.is_control()) {
        p.at(
            n.span(),
            &format!("{field}.name"),
            "expected a non-empty name without control characters",
        );
    }
    Some(n.get_ref().clone())
}

/// The `[[service.real]]`s: at least one, none twice.
fn reals(
    p: &mut Problems,
    raw: &[Spanned<RawReal>],
    field: &str,
    svc_addr: &ServiceAddr,
    method: Method,
    span: &Range<usize>,
) -> Vec<RealConfig> {
    let mut reals: Vec<RealConfig> = Vec::new();
    if raw.is_empty() {
        p.at(
            span.clone(),
            &format!("{field}.real"),
            "a service needs at least one [[service.real]]",
        );
    }
    for (j, r) in raw.iter().enumerate() {
        let rf = format!("{field}.real[{j}]");
        let r = r.get_ref();
        let Some(real) = real_spec(
            p,
            &r.address,
            r.method.as_ref(),
            r.weight.as_ref(),
            &rf,
            svc_addr,
            method,
        ) else {
            continue;
        };
        let Some(real) = tunnel(p, r, &rf, real) else {
            continue;
        };
        if let Some(prev) = reals
            .iter()
            .position(|x| x.spec.addr == real.addr && x.spec.port == real.port)
        {
            p.at(
                r.address.span(),
                &format!("{rf}.address"),
                format!(
                    "{} is already real[{prev}] of this service",
                    SocketAddr::new(real.addr, real.port)
                ),
            );
            continue;
        }
        let mut rc = RealConfig::new(real);
        if let Some(a) = &r.check_address {
            match a.get_ref().parse::<IpAddr>() {
                Ok(ip) => rc.check_addr = Some(ip),
                Err(_) => p.at(
                    a.span(),
                    &format!("{rf}.check_address"),
                    format!("expected an IP address, not {:?}", a.get_ref()),
                ),
            }
        }
        if let Some(v) = &r.check_port {
            rc.check_port = port(p, v, &format!("{rf}.check_port"));
        }
        reals.push(rc);
    }
    reals
}

/// The fallback server: not one of the reals, and with a weight that gets it traffic.
fn fallback(
    p: &mut Problems,
    f: &Spanned<RawFallback>,
    field: &str,
    svc_addr: &ServiceAddr,
    method: Method,
    reals: &[RealConfig],
) -> Option<RealSpec> {
    let ff = format!("{field}.fallback");
    let fr = f.get_ref();
    let spec = real_spec(
        p,
        &fr.address,
        fr.method.as_ref(),
        fr.weight.as_ref(),
        &ff,
        svc_addr,
        method,
    )?;
    if reals
        .iter()
        .any(|r| r.spec.addr == spec.addr && r.spec.port == spec.port)
    {
        p.at(
            fr.address.span(),
            &format!("{ff}.address"),
            "the fallback server is also a real server of this service",
        );
    }
    if spec.weight == 0 {
        p.at(
            f.span(),
            &format!("{ff}.weight"),
            "a fallback with weight 0 would never get traffic; expected 1 to 65535",
        );
    }
    Some(spec)
}

fn quorum(p: &mut Problems, q: Option<&Spanned<i64>>, field: &str, reals: usize) -> u32 {
    let Some(q) = q else {
        return 1;
    };
    let n = *q.get_ref();
    if n < 1 || n as usize > reals.max(1) {
        p.at(
            q.span(),
            &format!("{field}.quorum"),
            format!(
                "expected the number of UP reals the service needs, from 1 to its {reals} reals"
            ),
        );
        1
    } else {
        n as u32
    }
}

/// A check that needs a port has one for every real: a service on every port (port 0)
/// gives it none.
fn check_ports(
    p: &mut Problems,
    c: &CheckConfig,
    reals: &[RealConfig],
    field: &str,
    span: &Range<usize>,
) {
    let needs_port = matches!(
        c.kind,
        CheckKind::Tcp | CheckKind::Http(_) | CheckKind::Udp(_) | CheckKind::Dns(_)
    );
    if !needs_port || c.port.is_some() {
        return;
    }
    for (j, r) in reals.iter().enumerate() {
        if r.check_port.is_none() && r.spec.port == 0 {
            p.at(
                span.clone(),
                &format!("{field}.real[{j}].check_port"),
                "the service covers every port (port 0): a check needs check.port or the real's check_port",
            );
        }
    }
}

/// A real's tunnel options (`tun_type`, `tun_port`, `tun_csum`, as ipvsadm names them):
/// only with the tunnel method, a port for GUE only (and required there), a checksum
/// option for GUE and GRE only.
fn tunnel(p: &mut Problems, r: &RawReal, field: &str, real: RealSpec) -> Option<RealSpec> {
    let given = [
        r.tun_type.as_ref().map(|v| v.span()),
        r.tun_port.as_ref().map(|v| v.span()),
        r.tun_csum.as_ref().map(|v| v.span()),
    ];
    let Some(first) = given.iter().flatten().next().cloned() else {
        return Some(real);
    };
    if real.method != Method::Tunnel {
        p.at(
            first,
            field,
            "tunnel options (tun_type, tun_port, tun_csum) need method = \"tun\"",
        );
        return None;
    }
    let before = p.list.len();
    let kind = match r.tun_type.as_ref().map(|v| (v, v.get_ref().as_str())) {
        None | Some((_, "ipip")) => TunType::Ipip,
        Some((_, "gue")) => TunType::Gue,
        Some((_, "gre")) => TunType::Gre,
        Some((v, other)) => {
            p.at(
                v.span(),
                &format!("{field}.tun_type"),
                format!("expected \"ipip\", \"gue\" or \"gre\", not \"{other}\""),
            );
            TunType::Ipip
        }
    };
    let port = match &r.tun_port {
        None => 0,
        Some(v) => match u16::try_from(*v.get_ref()) {
            Ok(n) if n > 0 => n,
            _ => {
                p.at(
                    v.span(),
                    &format!("{field}.tun_port"),
                    format!("expected a UDP port from 1 to 65535, not {}", v.get_ref()),
                );
                0
            }
        },
    };
    let csum = match r.tun_csum.as_ref().map(|v| (v, v.get_ref().as_str())) {
        None | Some((_, "nocsum")) => TunCsum::NoCsum,
        Some((_, "csum")) => TunCsum::Csum,
        Some((_, "remcsum")) => TunCsum::RemCsum,
        Some((v, other)) => {
            p.at(
                v.span(),
                &format!("{field}.tun_csum"),
                format!("expected \"nocsum\", \"csum\" or \"remcsum\", not \"{other}\""),
            );
            TunCsum::NoCsum
        }
    };
    if p.list.len() > before {
        return None;
    }
    let t = Tunnel { kind, port, csum };
    if let Some(problem) = t.problem() {
        p.at(first, field, problem);
        return None;
    }
    Some(real.with_tunnel(t))
}

/// A real or fallback server: its address (the port as the method allows), method and
/// weight.
fn real_spec(
    p: &mut Problems,
    address: &Spanned<String>,
    method_v: Option<&Spanned<String>>,
    weight_v: Option<&Spanned<i64>>,
    field: &str,
    svc: &ServiceAddr,
    default_method: Method,
) -> Option<RealSpec> {
    let before = p.list.len();
    let sa = socket_addr(p, address, &format!("{field}.address"), Some(svc.port));
    let m = match method_v {
        None => default_method,
        Some(v) => method(p, v, &format!("{field}.method")).unwrap_or(default_method),
    };
    let weight = match weight_v {
        None => 1,
        Some(w) => {
            let n = *w.get_ref();
            if !(0..=MAX_WEIGHT as i64).contains(&n) {
                p.at(
                    w.span(),
                    &format!("{field}.weight"),
                    format!("expected a weight from 0 to {MAX_WEIGHT}, not {n}"),
                );
            }
            n.clamp(0, MAX_WEIGHT as i64) as u32
        }
    };
    let sa = sa?;
    // Only an encapsulation carries a packet to a real of the other family (IPVS's rule).
    if sa.is_ipv4() != svc.addr.is_ipv4() && m != Method::Tunnel {
        p.at(
            address.span(),
            &format!("{field}.address"),
            "the real server's address family differs from the virtual service's: only method = \"tunnel\" allows that",
        );
    }
    let mut port = sa.port();
    if m != Method::Masq {
        if port != 0 && port != svc.port {
            p.at(
                address.span(),
                &format!("{field}.address"),
                format!(
                    "direct routing and tunnelling cannot change the port: expected port {} (the virtual port) or none, or method = \"nat\"",
                    svc.port
                ),
            );
        }
        port = svc.port;
    } else if port == 0 {
        port = svc.port;
    }
    if p.list.len() > before {
        return None;
    }
    Some(RealSpec::new(sa.ip(), port, m, weight))
}
