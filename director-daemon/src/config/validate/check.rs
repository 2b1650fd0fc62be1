//! A service's `check`: its type and the keys that type takes, over the timing of the
//! file's `[check]` defaults.

use std::{ops::Range, path::PathBuf, time::Duration};

use director_control::model::Protocol;
use toml::Spanned;

use super::super::{
    diagnostics::Problems,
    model::{
        BytesPattern, CheckConfig, CheckKind, DnsCheck, DnsType, ExternalCheck, HttpCheck,
        InitState, Pattern, TlsCheck, UdpCheck,
    },
    raw::{RawCheck, RawTiming},
    tls,
    values::{command, duration, one_line, port, status_set},
};

/// A key only some check types take: (name, where it was written, the types).
type TypedKey<'a> = (&'a str, Option<Range<usize>>, &'a [&'a str]);

/// One service's check; `None` when anything in it is wrong (all of it reported).
pub(super) fn check(
    p: &mut Problems,
    c: Spanned<RawCheck>,
    field: &str,
    defaults: &CheckConfig,
    proto: Protocol,
) -> Option<CheckConfig> {
    let before = p.list.len();
    let span = c.span();
    let c = c.into_inner();
    let mut cfg = timing(
        p,
        RawTiming {
            interval: c.interval.clone(),
            timeout: c.timeout.clone(),
            rise: c.rise.clone(),
            fall: c.fall.clone(),
            fastinter: c.fastinter.clone(),
            downinter: c.downinter.clone(),
            init_state: c.init_state.clone(),
        },
        field,
        defaults,
    );
    if let Some(v) = &c.port {
        cfg.port = port(p, v, &format!("{field}.port"));
    }
    let kind_name = match &c.kind {
        Some(k) => k.get_ref().to_ascii_lowercase(),
        None if proto == Protocol::Udp => {
            p.at(
                span.clone(),
                &format!("{field}.type"),
                "a UDP service needs an explicit check type (udp, dns, external, on or off)",
            );
            return None;
        }
        None => "tcp".to_owned(),
    };
    let kind_span = c.kind.as_ref().map_or(span.clone(), |k| k.span());
    keys_of_other_types(p, &c, field, &kind_name);
    let kind = match kind_name.as_str() {
        "tcp" | "connect" => CheckKind::Tcp,
        "http" | "https" => http(p, &c, field, &kind_name, &kind_span),
        "udp" => udp(p, &c, field),
        "dns" => dns(p, &c, field, &kind_span),
        "external" => external(p, &c, field, kind_span)?,
        "on" => CheckKind::On,
        "off" => CheckKind::Off,
        other => {
            p.at(
                kind_span,
                &format!("{field}.type"),
                format!(
                    "expected one of tcp, http, https, udp, dns, external, on, off; not {other:?}"
                ),
            );
            return None;
        }
    };
    if proto == Protocol::Udp
        && matches!(kind, CheckKind::Tcp | CheckKind::Http(_))
        && cfg.port.is_none()
    {
        p.at(
            c.kind.as_ref().map_or(span, |k| k.span()),
            &format!("{field}.type"),
            format!(
                "a {} check of a UDP service needs check.port (the service's port is UDP)",
                kind.name()
            ),
        );
    }
    cfg.kind = kind;
    (p.list.len() == before).then_some(cfg)
}

/// Keys written for a check type other than this one are mistakes, not ignored.
fn keys_of_other_types(p: &mut Problems, c: &RawCheck, field: &str, kind_name: &str) {
    let typed: [TypedKey; 12] = [
        (
            "path",
            c.path.as_ref().map(|v| v.span()),
            &["http", "https"],
        ),
        (
            "host",
            c.host.as_ref().map(|v| v.span()),
            &["http", "https"],
        ),
        (
            "status",
            c.status.as_ref().map(|v| v.span()),
            &["http", "https"],
        ),
        (
            "body",
            c.body.as_ref().map(|v| v.span()),
            &["http", "https"],
        ),
        ("verify", c.verify.as_ref().map(|v| v.span()), &["https"]),
        ("ca_file", c.ca_file.as_ref().map(|v| v.span()), &["https"]),
        ("payload", c.payload.as_ref().map(|v| v.span()), &["udp"]),
        ("expect", c.expect.as_ref().map(|v| v.span()), &["udp"]),
        (
            "require_reply",
            c.require_reply.as_ref().map(|v| v.span()),
            &["udp"],
        ),
        ("name", c.name.as_ref().map(|v| v.span()), &["dns"]),
        (
            "query_type",
            c.query_type.as_ref().map(|v| v.span()),
            &["dns"],
        ),
        (
            "command",
            c.command.as_ref().map(|v| v.span()),
            &["external"],
        ),
    ];
    for (key, sp, types) in typed.iter() {
        if let Some(sp) = sp
            && !types.contains(&kind_name)
        {
            p.at(
                sp.clone(),
                &format!("{field}.{key}"),
                format!(
                    "{key} does not apply to a {kind_name} check (only to {})",
                    types.join(", ")
                ),
            );
        }
    }
    if let Some(d) = &c.dynamic
        && kind_name != "external"
    {
        p.at(
            d.span(),
            &format!("{field}.dynamic"),
            format!("dynamic does not apply to a {kind_name} check (only to external)"),
        );
    }
}

/// `http` and `https`: path, Host, accepted statuses, body pattern, TLS.
fn http(
    p: &mut Problems,
    c: &RawCheck,
    field: &str,
    kind_name: &str,
    kind_span: &Range<usize>,
) -> CheckKind {
    let path = match &c.path {
        None => "/".to_owned(),
        Some(v) => {
            let s = v.get_ref();
            if !s.starts_with('/') || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
                p.at(
                    v.span(),
                    &format!("{field}.path"),
                    format!("expected a request path starting with '/' and without spaces, like \"/health\", not {s:?}"),
                );
            }
            s.clone()
        }
    };
    let host = c.host.as_ref().map(|h| {
        let s = h.get_ref();
        if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            p.at(
                h.span(),
                &format!("{field}.host"),
                format!(
                    "expected a host name for the Host header, like \"www.example.com\", not {s:?}"
                ),
            );
        }
        s.clone()
    });
    let status = c
        .status
        .as_ref()
        .and_then(|v| status_set(p, v, &format!("{field}.status")))
        .unwrap_or_default();
    let body = c
        .body
        .as_ref()
        .and_then(|b| match regex::Regex::new(b.get_ref()) {
            Ok(r) => Some(Pattern(r)),
            Err(e) => {
                p.at(
                    b.span(),
                    &format!("{field}.body"),
                    format!(
                        "expected a regular expression: {}",
                        one_line(&e.to_string())
                    ),
                );
                None
            }
        });
    let tls = if kind_name == "https" {
        let verify = c.verify.as_ref().is_none_or(|v| *v.get_ref());
        let ca_file = c.ca_file.as_ref().map(|v| PathBuf::from(v.get_ref()));
        if !verify && let Some(v) = &c.ca_file {
            p.at(
                v.span(),
                &format!("{field}.ca_file"),
                "ca_file has no use with verify = false",
            );
        }
        match tls::client_config(verify, ca_file.as_deref()) {
            Ok(client) => Some(TlsCheck {
                verify,
                ca_file,
                client,
            }),
            Err(e) => {
                let sp = c.ca_file.as_ref().map_or(kind_span.clone(), |v| v.span());
                p.at(sp, &format!("{field}.ca_file"), e.to_string());
                None
            }
        }
    } else {
        None
    };
    CheckKind::Http(HttpCheck {
        path,
        host,
        status,
        body,
        tls,
    })
}

/// `udp`: the datagram sent and the reply expected.
fn udp(p: &mut Problems, c: &RawCheck, field: &str) -> CheckKind {
    let expect = c
        .expect
        .as_ref()
        .and_then(|b| match regex::bytes::Regex::new(b.get_ref()) {
            Ok(r) => Some(BytesPattern(r)),
            Err(e) => {
                p.at(
                    b.span(),
                    &format!("{field}.expect"),
                    format!(
                        "expected a regular expression: {}",
                        one_line(&e.to_string())
                    ),
                );
                None
            }
        });
    let require_reply = match &c.require_reply {
        Some(v) => {
            if !*v.get_ref() && c.expect.is_some() {
                p.at(
                    v.span(),
                    &format!("{field}.require_reply"),
                    "require_reply = false contradicts expect (a pattern needs a reply)",
                );
            }
            *v.get_ref()
        }
        None => true,
    };
    CheckKind::Udp(UdpCheck {
        payload: c
            .payload
            .as_ref()
            .map(|s| s.get_ref().as_bytes().to_vec())
            .unwrap_or_default(),
        expect,
        require_reply,
    })
}

/// `dns`: the name and type to query.
fn dns(p: &mut Problems, c: &RawCheck, field: &str, kind_span: &Range<usize>) -> CheckKind {
    let name = match &c.name {
        Some(n) => {
            let s = n.get_ref();
            if s.is_empty()
                || s.len() > 253
                || s.trim_end_matches('.')
                    .split('.')
                    .any(|l| l.is_empty() || l.len() > 63)
                || !s.is_ascii()
            {
                p.at(
                    n.span(),
                    &format!("{field}.name"),
                    format!("expected a domain name to query, like \"www.example.com\", not {s:?}"),
                );
            }
            s.clone()
        }
        None => {
            p.at(
                kind_span.clone(),
                &format!("{field}.name"),
                "a dns check needs the name to query (name = \"...\")",
            );
            String::new()
        }
    };
    let qtype = match &c.query_type {
        None => DnsType::A,
        Some(t) => {
            let up = t.get_ref().to_ascii_uppercase();
            match DnsType::ALL.iter().find(|(n, _)| *n == up) {
                Some((_, q)) => *q,
                None => {
                    p.at(
                        t.span(),
                        &format!("{field}.query_type"),
                        format!(
                            "expected one of {}, not {:?}",
                            DnsType::ALL
                                .iter()
                                .map(|(n, _)| *n)
                                .collect::<Vec<_>>()
                                .join(", "),
                            t.get_ref()
                        ),
                    );
                    DnsType::A
                }
            }
        }
    };
    CheckKind::Dns(DnsCheck { name, qtype })
}

/// `external`: the command to run; `None` without a usable one.
fn external(
    p: &mut Problems,
    c: &RawCheck,
    field: &str,
    kind_span: Range<usize>,
) -> Option<CheckKind> {
    match &c.command {
        Some(v) => command(p, v, &format!("{field}.command")).map(|command| {
            CheckKind::External(ExternalCheck {
                command,
                dynamic: c.dynamic.as_ref().is_none_or(|d| *d.get_ref()),
            })
        }),
        None => {
            p.at(
                kind_span,
                &format!("{field}.command"),
                "an external check needs a command (a string for /bin/sh -c, or an array)",
            );
            None
        }
    }
}

/// Interval, timeout, rise, fall and initial state, over `defaults`.
pub(super) fn timing(
    p: &mut Problems,
    t: RawTiming,
    field: &str,
    defaults: &CheckConfig,
) -> CheckConfig {
    let mut c = defaults.clone();
    let min = Duration::from_millis(10);
    if let Some(v) = &t.interval
        && let Some(d) = duration(p, v, &format!("{field}.interval"), min)
    {
        c.interval = d;
    }
    if let Some(v) = &t.timeout
        && let Some(d) = duration(p, v, &format!("{field}.timeout"), min)
    {
        c.timeout = d;
    }
    if let Some(v) = &t.fastinter {
        c.fastinter = duration(p, v, &format!("{field}.fastinter"), min);
    }
    if let Some(v) = &t.downinter {
        c.downinter = duration(p, v, &format!("{field}.downinter"), min);
    }
    for (v, name, slot) in [
        (&t.rise, "rise", &mut c.rise),
        (&t.fall, "fall", &mut c.fall),
    ] {
        if let Some(v) = v {
            let n = *v.get_ref();
            if (1..=1000).contains(&n) {
                *slot = n as u32;
            } else {
                p.at(
                    v.span(),
                    &format!("{field}.{name}"),
                    format!("expected a number of consecutive checks from 1 to 1000, not {n}"),
                );
            }
        }
    }
    if let Some(v) = &t.init_state {
        c.init_state = match v.get_ref().as_str() {
            "up" => InitState::Up,
            "fully-up" => InitState::FullyUp,
            "down" => InitState::Down,
            "fully-down" => InitState::FullyDown,
            other => {
                p.at(
                    v.span(),
                    &format!("{field}.init_state"),
                    format!(
                        "expected \"up\", \"fully-up\", \"down\" or \"fully-down\", not {other:?}"
                    ),
                );
                c.init_state
            }
        };
    }
    c
}
