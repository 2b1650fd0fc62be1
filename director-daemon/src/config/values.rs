//! Parsers of single values (addresses, ports, names, durations, commands, status
//! codes): each reports its own problem at the value's span and gives `None` for it.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use director_common::{real::Method, service::Scheduler};
use toml::Spanned;

use super::{
    diagnostics::Problems,
    model::{Command, OnDown, StatusSet},
};

/// An error message on one line (regex's span several).
pub(super) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `"10.0.0.1:80"`, or `"10.0.0.1"` when a default port is given; `[v6]:port` too.
pub(super) fn socket_addr(
    p: &mut Problems,
    v: &Spanned<String>,
    field: &str,
    default_port: Option<u16>,
) -> Option<SocketAddr> {
    let s = v.get_ref().trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a);
    }
    if let Some(port) = default_port
        && let Ok(ip) = s
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
    {
        return Some(SocketAddr::new(ip, port));
    }
    let expected = if default_port.is_some() {
        "an address with an optional port, like \"10.1.0.11\" or \"10.1.0.11:8080\""
    } else {
        "an address and port, like \"10.0.0.100:80\""
    };
    let hint = if s.chars().any(|c| c.is_ascii_alphabetic()) && !s.contains("::") {
        " (host names are not resolved)"
    } else {
        ""
    };
    p.at(
        v.span(),
        field,
        format!("expected {expected}, not {s:?}{hint}"),
    );
    None
}

pub(super) fn port(p: &mut Problems, v: &Spanned<i64>, field: &str) -> Option<u16> {
    let n = *v.get_ref();
    if (1..=65535).contains(&n) {
        Some(n as u16)
    } else {
        p.at(
            v.span(),
            field,
            format!("expected a port from 1 to 65535, not {n}"),
        );
        None
    }
}

pub(crate) fn scheduler_by_name(name: &str) -> Option<(Scheduler, bool)> {
    Some(match name {
        "maglev" => (Scheduler::Maglev, false),
        "mh" => (Scheduler::Maglev, true),
        "sh" => (Scheduler::SourceHash, false),
        "rr" => (Scheduler::RoundRobin, false),
        "wrr" => (Scheduler::WeightedRoundRobin, false),
        _ => return None,
    })
}

pub(super) fn scheduler(
    p: &mut Problems,
    v: &Spanned<String>,
    field: &str,
) -> Option<(Scheduler, bool)> {
    let name = v.get_ref().to_ascii_lowercase();
    let found = scheduler_by_name(&name);
    if found.is_none() {
        p.at(
            v.span(),
            field,
            format!(
                "expected one of maglev, mh, sh, rr, wrr, not {:?}{}",
                v.get_ref(),
                if [
                    "lc", "wlc", "sed", "nq", "lblc", "lblcr", "dh", "fo", "ovf", "twos"
                ]
                .contains(&name.as_str())
                {
                    " (the data path has no connection-counting schedulers)"
                } else {
                    ""
                }
            ),
        );
    }
    found
}

pub(crate) fn method_by_name(name: &str) -> Option<Method> {
    Some(match name {
        "dr" | "gate" | "route" | "direct" => Method::Route,
        "tun" | "tunnel" | "ipip" => Method::Tunnel,
        "nat" | "masq" | "masquerade" => Method::Masq,
        _ => return None,
    })
}

pub(super) fn method(p: &mut Problems, v: &Spanned<String>, field: &str) -> Option<Method> {
    let m = method_by_name(&v.get_ref().to_ascii_lowercase());
    if m.is_none() {
        p.at(
            v.span(),
            field,
            format!("expected \"dr\", \"tun\" or \"nat\", not {:?}", v.get_ref()),
        );
    }
    m
}

pub(super) fn on_down(p: &mut Problems, v: &Spanned<String>, field: &str) -> Option<OnDown> {
    match v.get_ref().as_str() {
        "quiescent" => Some(OnDown::Quiescent),
        "remove" => Some(OnDown::Remove),
        other => {
            p.at(
                v.span(),
                field,
                format!("expected \"quiescent\" or \"remove\", not {other:?}"),
            );
            None
        }
    }
}

/// Parse "1.5s", "500ms", "2m", "1h"; a bare integer is seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let scale = match unit.trim() {
        "ms" => 0.001,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return None,
    };
    let secs = n * scale;
    (secs.is_finite() && (0.0..1e9).contains(&secs)).then(|| Duration::from_secs_f64(secs))
}

pub(crate) fn duration(
    p: &mut Problems,
    v: &Spanned<toml::Value>,
    field: &str,
    min: Duration,
) -> Option<Duration> {
    let d = match v.get_ref() {
        toml::Value::Integer(n) if *n >= 0 => Some(Duration::from_secs(*n as u64)),
        toml::Value::String(s) => parse_duration(s),
        _ => None,
    };
    match d {
        Some(d) if d >= min => Some(d),
        Some(_) => {
            p.at(
                v.span(),
                field,
                format!("expected at least {}", fmt_duration(min)),
            );
            None
        }
        None => {
            p.at(
                v.span(),
                field,
                format!(
                    "expected a duration like \"2s\", \"500ms\" or \"1m\" (or whole seconds as a number), not {}",
                    describe(v.get_ref())
                ),
            );
            None
        }
    }
}

/// A TOML value as an operator wrote it, for messages.
fn describe(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("{s:?}"),
        toml::Value::Integer(n) => n.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(_) => "an array".into(),
        toml::Value::Table(_) => "a table".into(),
    }
}

pub fn fmt_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 && d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

pub(super) fn command(p: &mut Problems, v: &Spanned<toml::Value>, field: &str) -> Option<Command> {
    match v.get_ref() {
        toml::Value::String(s) if !s.trim().is_empty() => Some(Command::Shell(s.clone())),
        toml::Value::Array(a)
            if !a.is_empty() && a.iter().all(|x| x.as_str().is_some_and(|s| !s.is_empty())) =>
        {
            Some(Command::Argv(
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect(),
            ))
        }
        _ => {
            p.at(
                v.span(),
                field,
                "expected a command: a string (run by /bin/sh -c) or a non-empty array of strings (program and arguments)",
            );
            None
        }
    }
}

pub(super) fn status_set(
    p: &mut Problems,
    v: &Spanned<toml::Value>,
    field: &str,
) -> Option<StatusSet> {
    let items: Vec<&toml::Value> = match v.get_ref() {
        toml::Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    let mut out = Vec::new();
    let mut bad = false;
    for it in items {
        let range = match it {
            toml::Value::Integer(n) => u16::try_from(*n).ok().map(|c| (c, c)),
            toml::Value::String(s) => match s.split_once('-') {
                Some((a, b)) => a.trim().parse().ok().zip(b.trim().parse().ok()),
                None => s.trim().parse().ok().map(|c| (c, c)),
            },
            _ => None,
        };
        match range {
            Some((a, b)) if (100..=599).contains(&a) && (100..=599).contains(&b) && a <= b => {
                out.push((a, b))
            }
            _ => bad = true,
        }
    }
    if bad || out.is_empty() {
        p.at(
            v.span(),
            field,
            "expected HTTP status codes from 100 to 599: a code, a range \"200-299\", or an array of them",
        );
        return None;
    }
    Some(StatusSet(out))
}
