//! Scale-out: the daemon drives the director's BGP speaker (BIRD 2) so that routers in
//! front of several directors spread each VIP's traffic over those that announce it
//! (ECMP). A VIP is announced while the data path is attached and its services are
//! healthy enough ([`config::Policy`]); the daemon writes the routes and sessions into
//! a file BIRD includes and has BIRD reconfigure, only when something changed. See
//! docs/scale-out.md.

pub mod bird;
pub mod config;

use std::{collections::BTreeSet, net::IpAddr, path::PathBuf};

pub use config::{BgpConfig, Policy, Services};

/// The VIPs to announce now: none while the data path is not attached; otherwise each
/// listed VIP whose services satisfy the policy. `services`: each declared service's
/// VIP and its real servers UP (and meant to take traffic).
pub fn announced(cfg: &BgpConfig, attached: bool, services: &[(IpAddr, u32)]) -> BTreeSet<IpAddr> {
    if !attached {
        return BTreeSet::new();
    }
    cfg.vips
        .iter()
        .copied()
        .filter(|vip| {
            let mut of_vip = services
                .iter()
                .filter(|(addr, _)| addr == vip)
                .map(|(_, up)| *up >= cfg.policy.min_reals)
                .peekable();
            of_vip.peek().is_some()
                && match cfg.policy.services {
                    Services::All => of_vip.all(|healthy| healthy),
                    Services::Any => of_vip.any(|healthy| healthy),
                }
        })
        .collect()
}

/// A VIP as the host route announced for it: /32 for IPv4, /128 for IPv6.
pub fn host_route(vip: IpAddr) -> String {
    match vip {
        IpAddr::V4(_) => format!("{vip}/32"),
        IpAddr::V6(_) => format!("{vip}/128"),
    }
}

/// What the daemon says about BGP (status requests and logs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BgpStatus {
    /// The neighbors' addresses (for the status output).
    pub neighbors: Vec<IpAddr>,
    /// The VIPs in the include file now.
    pub announced: BTreeSet<IpAddr>,
    /// BIRD answered and took the last configuration.
    pub bird_up: bool,
    /// Why not, when it did not.
    pub error: Option<String>,
    /// The include file changed and BIRD has not taken it yet (retried at each sync).
    pub pending: bool,
}

impl BgpStatus {
    /// The report `director status` shows.
    pub fn text(&self, cfg: &BgpConfig) -> String {
        let list = |v: Vec<String>| {
            if v.is_empty() {
                "none".to_owned()
            } else {
                v.join(", ")
            }
        };
        let bird = match (&self.error, self.bird_up) {
            (Some(e), _) => format!("NOT TAKEN: {e}"),
            (None, true) => "up, configuration taken".to_owned(),
            (None, false) => "not asked yet".to_owned(),
        };
        format!(
            "BIRD {}: {bird}\nannounced (AS {}): {}{}\nneighbors: {}\n",
            cfg.socket.display(),
            cfg.asn,
            list(self.announced.iter().map(|v| host_route(*v)).collect()),
            if self.pending {
                " (BIRD has not taken it yet)"
            } else {
                ""
            },
            list(self.neighbors.iter().map(|n| n.to_string()).collect())
        )
    }
}

/// Where the speaker's effects go: the include file and BIRD's socket (a fake in
/// tests).
pub trait Bird: Send {
    fn write(&mut self, cfg: &BgpConfig, text: &str) -> Result<(), String>;
    fn configure(&mut self, cfg: &BgpConfig) -> Result<(), String>;
    fn ping(&mut self, cfg: &BgpConfig) -> Result<(), String>;
}

/// The real BIRD of this machine.
pub struct SystemBird;

impl Bird for SystemBird {
    fn write(&mut self, cfg: &BgpConfig, text: &str) -> Result<(), String> {
        bird::write_atomic(&cfg.include, text)
            .map_err(|e| format!("writing {}: {e}", cfg.include.display()))
    }
    fn configure(&mut self, cfg: &BgpConfig) -> Result<(), String> {
        bird::configure(&cfg.socket)
    }
    fn ping(&mut self, cfg: &BgpConfig) -> Result<(), String> {
        bird::ping(&cfg.socket)
    }
}

/// Keeps BIRD's routes in line with the announce set: the file rewritten and BIRD
/// reconfigured only on a change; a failure is logged once, counted, shown in the
/// status, and retried at each sync until BIRD takes the file.
pub struct Speaker {
    cfg: BgpConfig,
    bird: Box<dyn Bird>,
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
    /// The text last written (None: nothing written yet).
    written: Option<String>,
    status: BgpStatus,
    /// Where the status goes for `director status` (the run files' BGP report).
    report: Option<PathBuf>,
}

impl Drop for Speaker {
    fn drop(&mut self) {
        if let Some(p) = &self.report {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Speaker {
    pub fn new(
        cfg: BgpConfig,
        bird: Box<dyn Bird>,
        metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
    ) -> Self {
        let neighbors = cfg.neighbors.iter().map(|n| n.address).collect();
        Self {
            cfg,
            bird,
            metrics,
            written: None,
            report: None,
            status: BgpStatus {
                neighbors,
                announced: BTreeSet::new(),
                bird_up: false,
                error: None,
                pending: false,
            },
        }
    }

    /// Keep `path` up to date with the status, for `director status`.
    pub fn report_to(&mut self, path: PathBuf) {
        self.report = Some(path);
        self.write_report();
    }

    fn write_report(&self) {
        let Some(path) = &self.report else {
            return;
        };
        if let Err(e) = bird::write_atomic(path, &self.status.text(&self.cfg)) {
            log::warn!("bgp: writing the status to {}: {e}", path.display());
        }
    }

    pub fn config(&self) -> &BgpConfig {
        &self.cfg
    }

    /// A reload's `[bgp]` (sessions and policy may have changed).
    pub fn set_config(&mut self, cfg: BgpConfig) {
        self.status.neighbors = cfg.neighbors.iter().map(|n| n.address).collect();
        self.cfg = cfg;
    }

    pub fn status(&self) -> BgpStatus {
        self.status.clone()
    }

    /// Announce exactly `vips`: write and reconfigure when the file's text changes, or
    /// when BIRD has not taken the last one yet.
    pub fn update(&mut self, vips: BTreeSet<IpAddr>) {
        let before = self.status.clone();
        self.reconcile(vips);
        if self.status != before {
            self.write_report();
        }
    }

    fn reconcile(&mut self, vips: BTreeSet<IpAddr>) {
        let text = bird::render(&self.cfg, &vips);
        if self.written.as_deref() != Some(text.as_str()) {
            for v in vips.difference(&self.status.announced) {
                log::info!("bgp: announcing {}", host_route(*v));
            }
            for v in self.status.announced.difference(&vips) {
                log::warn!("bgp: withdrawing {}", host_route(*v));
            }
            if let Err(e) = self.bird.write(&self.cfg, &text) {
                self.failed(e);
                return;
            }
            self.written = Some(text);
            self.status.announced = vips;
            self.status.pending = true;
            if let Some(m) = &self.metrics {
                m.bgp_announced.set(self.status.announced.len() as i64);
            }
        }
        if self.status.pending {
            match self.bird.configure(&self.cfg) {
                Ok(()) => {
                    self.status.pending = false;
                    self.succeeded();
                }
                Err(e) => self.failed(e),
            }
        }
    }

    /// At each sync: retry a configuration BIRD has not taken, or see that BIRD still
    /// answers.
    pub fn sync(&mut self, vips: BTreeSet<IpAddr>) {
        let before = self.status.clone();
        if !self.status.pending && self.written.is_some() {
            match self.bird.ping(&self.cfg) {
                Ok(()) => self.succeeded(),
                Err(e) => self.failed(e),
            }
        }
        self.reconcile(vips);
        if self.status != before {
            self.write_report();
        }
    }

    fn succeeded(&mut self) {
        if !self.status.bird_up {
            log::info!(
                "bgp: BIRD ({}) took the configuration: {} VIP(s) announced",
                self.cfg.socket.display(),
                self.status.announced.len()
            );
        }
        self.status.bird_up = true;
        self.status.error = None;
        if let Some(m) = &self.metrics {
            m.bgp_up.set(1);
        }
    }

    fn failed(&mut self, e: String) {
        if self.status.error.as_deref() != Some(e.as_str()) {
            log::error!(
                "bgp: {e}; the routers do not see the announcements (retried at each sync)"
            );
        }
        self.status.bird_up = false;
        self.status.error = Some(e);
        if let Some(m) = &self.metrics {
            m.bgp_up.set(0);
            m.bgp_errors.inc();
        }
    }
}

#[cfg(test)]
mod tests;
