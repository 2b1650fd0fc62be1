//! From the file as written to a [`Config`]: every value checked, every problem reported
//! at once. The `[daemon]` table is here; services and their reals are in [`service`],
//! checks and their timing in [`check`].

mod check;
mod service;

use std::{
    collections::{BTreeMap, HashSet},
    net::SocketAddr,
    path::Path,
    time::Duration,
};

use director_common::maps::MAX_REALS_LIMIT;
use director_control::model::ServiceAddr;

use super::{
    diagnostics::Problems,
    model::{CheckConfig, CheckKind, Config, DaemonSettings, OnDown, ServiceConfig, real_slots},
    raw::{RawDaemon, RawFile},
    values::{command, duration, on_down},
};

/// Validate the whole file; what is wrong is in `p`, and the result means nothing then.
pub(super) fn validate(p: &mut Problems, path: &Path, raw: RawFile) -> Config {
    let (daemon, default_on_down) = match raw.daemon {
        Some(d) => daemon_settings(p, d),
        None => (DaemonSettings::default(), OnDown::Quiescent),
    };
    let defaults = raw
        .check
        .map(|t| check::timing(p, t, "check", &CheckConfig::new(CheckKind::Tcp)))
        .unwrap_or_else(|| CheckConfig::new(CheckKind::Tcp));
    let services = services(p, raw.services, &defaults, default_on_down);
    let bgp = raw
        .bgp
        .and_then(|b| crate::bgp::config::validate(p, b, &services));
    Config {
        path: path.to_owned(),
        allow_empty: raw.allow_empty.unwrap_or(false),
        daemon,
        services,
        bgp,
    }
}

/// `[daemon]`, and the `on_down` it sets for every service that has none.
fn daemon_settings(p: &mut Problems, d: RawDaemon) -> (DaemonSettings, OnDown) {
    let mut daemon = DaemonSettings::default();
    let mut default_on_down = OnDown::Quiescent;
    if let Some(m) = d.metrics {
        match m.get_ref().parse::<SocketAddr>() {
            Ok(a) => daemon.metrics = Some(a),
            Err(_) => p.at(
                m.span(),
                "daemon.metrics",
                format!(
                    "expected an address and port to serve metrics on, like \"127.0.0.1:9410\", not {:?}",
                    m.get_ref()
                ),
            ),
        }
    }
    if let Some(v) = d.sync_interval
        && let Some(t) = duration(p, &v, "daemon.sync_interval", Duration::from_secs(1))
    {
        daemon.sync_interval = t;
    }
    if let Some(v) = d.jitter {
        match v.get_ref() {
            toml::Value::Float(f) if (0.0..=0.5).contains(f) => daemon.jitter = *f,
            toml::Value::Integer(0) => daemon.jitter = 0.0,
            _ => p.at(
                v.span(),
                "daemon.jitter",
                "expected a fraction from 0.0 to 0.5",
            ),
        }
    }
    daemon.hooks.any = d.notify.and_then(|v| command(p, &v, "daemon.notify"));
    daemon.hooks.up = d.notify_up.and_then(|v| command(p, &v, "daemon.notify_up"));
    daemon.hooks.down = d
        .notify_down
        .and_then(|v| command(p, &v, "daemon.notify_down"));
    if let Some(v) = d.notify_timeout
        && let Some(t) = duration(p, &v, "daemon.notify_timeout", Duration::from_millis(100))
    {
        daemon.notify_timeout = t;
    }
    if let Some(v) = d.on_down
        && let Some(m) = on_down(p, &v, "daemon.on_down")
    {
        default_on_down = m;
    }
    (daemon, default_on_down)
}

/// Every `[[service]]`, then what only the services together can break: an address or
/// name used twice, more reals than the data path can ever hold.
fn services(
    p: &mut Problems,
    raw: Vec<toml::Spanned<super::raw::RawService>>,
    defaults: &CheckConfig,
    default_on_down: OnDown,
) -> Vec<ServiceConfig> {
    let mut services = Vec::new();
    let mut seen: BTreeMap<ServiceAddr, usize> = BTreeMap::new();
    let mut names: HashSet<String> = HashSet::new();
    for (i, s) in raw.into_iter().enumerate() {
        let field = format!("service[{i}]");
        let span = s.span();
        if let Some(svc) = service::service(
            p,
            s.into_inner(),
            &field,
            defaults,
            default_on_down,
            span.clone(),
        ) {
            if let Some(prev) = seen.insert(svc.spec.addr, i) {
                p.at(
                    span.clone(),
                    &format!("{field}.address"),
                    format!("{} is already declared by service[{prev}]", svc.label()),
                );
            }
            if let Some(n) = &svc.name
                && !names.insert(n.clone())
            {
                p.at(
                    span,
                    &format!("{field}.name"),
                    format!("the name {n:?} is used twice"),
                );
            }
            services.push(svc);
        }
    }
    // The attached data path's own capacity (`director attach --max-services`,
    // `--max-reals`) is checked when the daemon loads the file (`Config::applicable`).
    let total_reals = real_slots(&services);
    if total_reals > MAX_REALS_LIMIT as usize {
        p.at(
            0..0,
            "service",
            format!(
                "{total_reals} real servers (with fallbacks) declared; the data path holds at most {MAX_REALS_LIMIT} in all"
            ),
        );
    }
    services
}
