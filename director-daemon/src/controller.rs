//! The controller: one task per real runs its checks on its own timer and reports state
//! changes; the controller keeps the health of every real, computes the weights every
//! declared service should have (DOWN reals quiescent or removed, slowstart ramps, the
//! fallback when fewer than the quorum are UP), compares them with the maps and writes
//! only the differences, in one locked batch per round.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    future::Future,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::Arc,
    time::Duration,
};

use tokio::{
    sync::{mpsc, oneshot, watch},
    time::Instant,
};

use super::{
    ConfigSource, Guard,
    bgp::{BgpStatus, Speaker, SystemBird},
    blocking,
    check::{self, Outcome, Subject},
    config::{
        CheckConfig, CheckKind, Config, ConfigError, InitState, NotApplicable, OnDown, RealConfig,
        ServiceConfig,
    },
    health::Health,
    maps::{MapStore, MapsError},
    metrics::{CheckMetrics, Metrics, real_labels, service_labels},
    notify::{EventKind, HookEvent, Notifier},
    runfiles::RunFiles,
};
use director_control::{
    ControlError,
    control::ServiceView,
    model::{RealSpec, ServiceAddr},
};

/// Runs one check (the network in production, a script in tests).
pub trait Prober: Send + Sync + 'static {
    fn probe<'a>(
        &'a self,
        check: &'a CheckConfig,
        subject: &'a Subject,
    ) -> Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;
}

/// The real checks.
pub struct NetProber;

impl Prober for NetProber {
    fn probe<'a>(
        &'a self,
        check: &'a CheckConfig,
        subject: &'a Subject,
    ) -> Pin<Box<dyn Future<Output = Outcome> + Send + 'a>> {
        Box::pin(check::run(check, subject))
    }
}

/// A real within a service: (address, port as in the maps).
pub type RealKey = (IpAddr, u16);

/// What a check task reports.
#[derive(Debug)]
pub struct Event {
    service: ServiceAddr,
    real: RealKey,
    generation: u64,
    /// The new state, when it changed.
    transition: Option<bool>,
    /// The real's first check since the task started.
    first: bool,
    /// The dynamic weight of an UP real (external checks).
    weight: Option<u32>,
    outcome: Outcome,
}

/// Requests to a running daemon.
pub enum Request {
    Reload(oneshot::Sender<Result<ReloadReport, ReloadError>>),
    Status(oneshot::Sender<Vec<ServiceStatus>>),
    /// The BGP speaker's state (None: no `[bgp]` section).
    Bgp(oneshot::Sender<Option<BgpStatus>>),
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file's problems.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The attached data path could not be read to compare the file with.
    #[error("{}", crate::with_causes(.0))]
    Maps(MapsError),
    /// The file is valid but does not fit the attached data path.
    #[error(transparent)]
    NotApplicable(#[from] NotApplicable),
    #[error("the daemon is not running")]
    NotRunning,
    #[error("the daemon stopped during the reload")]
    Stopped,
}

/// What a reload changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Each write to the maps ("tcp/10.0.0.100:80: real 10.1.0.12:80 weight 1 -> 2").
    pub changes: Vec<String>,
    /// Warnings about the file (ldirectord keys not supported...).
    pub warnings: Vec<String>,
}

/// A service as the daemon sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceStatus {
    pub service: ServiceAddr,
    pub label: String,
    pub name: Option<String>,
    pub reals_up: u32,
    pub fallback_active: bool,
    pub reals: Vec<RealStatus>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RealStatus {
    pub addr: IpAddr,
    pub port: u16,
    pub up: bool,
    /// The weight last written (None: not in the maps, or nothing written yet).
    pub weight: Option<u32>,
    /// Why it is in its state (the check's words at the last transition).
    pub reason: String,
    pub checks: u64,
    pub failures: u64,
}

/// What a check task is told (and told again on a reload).
#[derive(Clone)]
struct TaskConfig {
    check: Arc<CheckConfig>,
    subject: Subject,
    jitter: f64,
}

struct RealState {
    cfg: RealConfig,
    up: bool,
    dyn_weight: Option<u32>,
    /// Slowstart: when the ramp began.
    ramp_from: Option<Instant>,
    reason: String,
    applied: Option<u32>,
    generation: u64,
    metrics: CheckMetrics,
    task_cfg: watch::Sender<TaskConfig>,
    _task: Guard,
}

struct SvcState {
    cfg: ServiceConfig,
    label: String,
    reals: BTreeMap<RealKey, RealState>,
    fallback_active: bool,
    dirty: bool,
    last_error: Option<String>,
}

/// The weights a service should have now.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    pub reals: Vec<RealSpec>,
    /// The fallback and whether it must take the traffic now.
    pub fallback: Option<(RealSpec, bool)>,
    pub on_down: OnDown,
    pub up: u32,
}

fn real_key(r: &RealSpec) -> RealKey {
    (r.addr, r.port)
}

fn real_label(k: &RealKey) -> String {
    SocketAddr::new(k.0, k.1).to_string()
}

/// Slowstart: the weight `w` ramps linearly from ~0 over `period` (at least 1 while > 0).
pub fn ramped(w: u32, elapsed: Duration, period: Duration) -> u32 {
    if w == 0 || period.is_zero() || elapsed >= period {
        return w;
    }
    let f = elapsed.as_secs_f64() / period.as_secs_f64();
    ((w as f64 * f).ceil() as u32).clamp(1, w)
}

/// The pure decision: weights from health, configuration and time.
fn desired(svc: &SvcState, now: Instant) -> Desired {
    let cfg = &svc.cfg;
    let up = svc.reals.values().filter(|r| r.up).count() as u32;
    let fallback_needed = cfg.fallback.is_some() && up < cfg.quorum;
    let mut reals = Vec::new();
    for r in svc.reals.values() {
        let mut spec = r.cfg.spec;
        if r.up {
            let w = r.dyn_weight.unwrap_or(spec.weight);
            spec.weight = match r.ramp_from {
                Some(t) => ramped(w, now.saturating_duration_since(t), cfg.slowstart),
                None => w,
            };
            if fallback_needed {
                // Quorum lost: the fallback takes the traffic; flows of UP reals go on.
                spec.weight = 0;
            }
            reals.push(spec);
        } else if cfg.on_down == OnDown::Quiescent {
            spec.weight = 0;
            reals.push(spec);
        }
    }
    Desired {
        reals,
        fallback: cfg.fallback.map(|f| (f, fallback_needed)),
        on_down: cfg.on_down,
        up,
    }
}

/// The end of the change line that reports a service removed from the maps.
const SERVICE_REMOVED: &str = ": service removed";

/// One write to make.
enum Op {
    Add(RealSpec),
    Edit(RealSpec, u32),
    Delete(RealSpec),
}

/// Compare a service with the maps and write the differences. Returns what was done.
fn sync_service(
    w: &mut dyn super::maps::Writer,
    actual: Option<&ServiceView>,
    cfg: &ServiceConfig,
    d: &Desired,
    label: &str,
    changes: &mut Vec<String>,
) -> Result<(), ControlError> {
    let existing: Vec<RealSpec> = match actual {
        None => {
            w.add_service(&cfg.spec)?;
            changes.push(format!("{label}: service added"));
            Vec::new()
        }
        Some(v) => {
            if v.spec != cfg.spec {
                w.edit_service(&cfg.spec)?;
                changes.push(format!("{label}: service settings changed"));
            }
            v.reals.iter().map(|r| r.spec).collect()
        }
    };
    let mut want: Vec<RealSpec> = d.reals.clone();
    if let Some((f, needed)) = d.fallback {
        let present = existing.iter().any(|e| real_key(e) == real_key(&f));
        if needed {
            want.push(f);
        } else if present && d.on_down == OnDown::Quiescent {
            want.push(RealSpec { weight: 0, ..f });
        }
    }
    let mut ops = Vec::new();
    for r in &want {
        match existing.iter().find(|e| real_key(e) == real_key(r)) {
            None => ops.push(Op::Add(*r)),
            Some(e) if e.weight != r.weight || e.method != r.method || e.tunnel != r.tunnel => {
                ops.push(Op::Edit(*r, e.weight))
            }
            Some(_) => {}
        }
    }
    for e in &existing {
        if !want.iter().any(|r| real_key(r) == real_key(e)) {
            ops.push(Op::Delete(*e));
        }
    }
    // Traffic gains a place before it loses one: adds and raises, then lowers, then
    // removals.
    ops.sort_by_key(|op| match op {
        Op::Add(_) => 0,
        Op::Edit(r, old) if r.weight >= *old => 0,
        Op::Edit(..) => 1,
        Op::Delete(_) => 2,
    });
    for op in ops {
        match op {
            Op::Add(r) => {
                w.add_real(&cfg.spec.addr, &r)?;
                changes.push(format!(
                    "{label}: real {} added with weight {}",
                    real_label(&real_key(&r)),
                    r.weight
                ));
            }
            Op::Edit(r, old) => {
                w.edit_real(&cfg.spec.addr, &r)?;
                changes.push(format!(
                    "{label}: real {} weight {old} -> {}",
                    real_label(&real_key(&r)),
                    r.weight
                ));
            }
            Op::Delete(r) => {
                w.delete_real(&cfg.spec.addr, r.addr, r.port)?;
                changes.push(format!(
                    "{label}: real {} removed",
                    real_label(&real_key(&r))
                ));
            }
        }
    }
    Ok(())
}

/// The initial health of a real: from the maps when they know it (a restart must not
/// change anything), else the check's init_state.
fn initial_health(check: &CheckConfig, cfg: &RealConfig, actual: Option<&RealSpec>) -> Health {
    let init = match check.kind {
        CheckKind::On => InitState::FullyUp,
        CheckKind::Off => InitState::FullyDown,
        _ => match actual {
            Some(a) if a.weight > 0 => InitState::FullyUp,
            Some(_) if cfg.spec.weight > 0 => InitState::Down,
            _ => check.init_state,
        },
    };
    Health::new(check.rise, check.fall, init)
}

/// The per-real check loop. Reports only changes: a transition, or a new dynamic weight.
async fn check_task(
    prober: Arc<dyn Prober>,
    mut cfg_rx: watch::Receiver<TaskConfig>,
    mut health: Health,
    tx: mpsc::UnboundedSender<Event>,
    (service, real, generation): (ServiceAddr, RealKey, u64),
    metrics: CheckMetrics,
) {
    let mut cfg = cfg_rx.borrow_and_update().clone();
    // The first check of each real is spread over the first interval.
    let mut next = Instant::now()
        + if cfg.jitter > 0.0 {
            cfg.check.interval.mul_f64(fastrand::f64())
        } else {
            Duration::ZERO
        };
    let mut last_weight: Option<u32> = None;
    let mut first = true;
    loop {
        if matches!(cfg.check.kind, CheckKind::On | CheckKind::Off) {
            // Not checked: the state is the type.
            let up = matches!(cfg.check.kind, CheckKind::On);
            if let Some(t) = health.force(up) {
                let outcome = if up {
                    Outcome::up("check type \"on\"")
                } else {
                    Outcome::down("check type \"off\"")
                };
                let _ = tx.send(Event {
                    service,
                    real,
                    generation,
                    transition: Some(t),
                    first: false,
                    weight: None,
                    outcome,
                });
            }
            if cfg_rx.changed().await.is_err() {
                return;
            }
            cfg = cfg_rx.borrow_and_update().clone();
            health.reconfigure(cfg.check.rise, cfg.check.fall);
            next = Instant::now();
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            changed = cfg_rx.changed() => {
                if changed.is_err() {
                    return;
                }
                cfg = cfg_rx.borrow_and_update().clone();
                health.reconfigure(cfg.check.rise, cfg.check.fall);
                // A shorter interval takes effect now, a longer one after this wait.
                next = next.min(Instant::now() + cfg.check.interval);
                continue;
            }
        }
        let started = Instant::now();
        let outcome = prober.probe(&cfg.check, &cfg.subject).await;
        metrics.checks.inc();
        metrics.duration.set(outcome.latency.as_secs_f64());
        if !outcome.ok {
            metrics.failures.inc();
        }
        let transition = health.record(outcome.ok);
        let weight = if outcome.ok { outcome.weight } else { None };
        let weight_changed = health.is_up() && outcome.ok && weight != last_weight;
        if outcome.ok {
            last_weight = weight;
        }
        if transition.is_some() || weight_changed || first {
            let _ = tx.send(Event {
                service,
                real,
                generation,
                transition,
                first,
                weight,
                outcome,
            });
        }
        first = false;
        let mut wait = health.next_interval(&cfg.check);
        if cfg.jitter > 0.0 {
            wait = wait.mul_f64(1.0 - cfg.jitter * fastrand::f64());
        }
        next = started + wait;
    }
}

pub(crate) struct Controller {
    source: ConfigSource,
    config: Config,
    maps: Box<dyn MapStore>,
    prober: Arc<dyn Prober>,
    metrics: Arc<Metrics>,
    notifier: Notifier,
    run_files: Option<RunFiles>,
    services: BTreeMap<ServiceAddr, SvcState>,
    /// Services we declared (or declared before and still have to remove).
    owned: BTreeSet<ServiceAddr>,
    pending_deletes: BTreeSet<ServiceAddr>,
    events_tx: mpsc::UnboundedSender<Event>,
    events_rx: mpsc::UnboundedReceiver<Event>,
    generation: u64,
    /// Reals whose neighbour entry could not be resolved, and when we last tried.
    unresolved: HashMap<IpAddr, Instant>,
    batch_error: Option<String>,
    /// The next slowstart step.
    ramp_at: Option<Instant>,
    /// Announces the VIPs through BIRD (`[bgp]`).
    bgp: Option<Speaker>,
}

pub(crate) struct Parts {
    pub source: ConfigSource,
    pub config: Config,
    pub maps: Box<dyn MapStore>,
    pub prober: Arc<dyn Prober>,
    pub metrics: Arc<Metrics>,
    pub notifier: Notifier,
    pub run_files: Option<RunFiles>,
}

impl Controller {
    pub(crate) fn new(p: Parts) -> Self {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let report = p.run_files.as_ref().map(RunFiles::bgp_path);
        let bgp = p.config.bgp.clone().map(|b| {
            let mut s = Speaker::new(b, Box::new(SystemBird), Some(p.metrics.clone()));
            if let Some(r) = report {
                s.report_to(r);
            }
            s
        });
        Self {
            source: p.source,
            maps: p.maps,
            prober: p.prober,
            metrics: p.metrics,
            notifier: p.notifier,
            run_files: p.run_files,
            services: BTreeMap::new(),
            owned: BTreeSet::new(),
            pending_deletes: BTreeSet::new(),
            events_tx,
            events_rx,
            generation: 0,
            unresolved: HashMap::new(),
            batch_error: None,
            ramp_at: None,
            bgp,
            config: p.config,
        }
    }

    /// Each declared service's VIP and its real servers UP that take traffic (a real
    /// configured with weight 0 never does).
    fn vip_health(&self) -> Vec<(IpAddr, u32)> {
        self.services
            .values()
            .map(|s| {
                let up = s
                    .reals
                    .values()
                    .filter(|r| r.up && r.cfg.spec.weight > 0)
                    .count() as u32;
                (s.cfg.spec.addr.addr, up)
            })
            .collect()
    }

    /// Bring BIRD's announcements in line with the data path and the health; at a sync
    /// (`full`) also retry a failed configure or see that BIRD still answers.
    fn bgp_update(&mut self, full: bool) {
        if self.bgp.is_none() {
            return;
        }
        let health = self.vip_health();
        let maps = &mut self.maps;
        let attached = blocking(|| maps.attached());
        let Some(speaker) = self.bgp.as_mut() else {
            return;
        };
        let vips = crate::bgp::announced(speaker.config(), attached, &health);
        blocking(|| {
            if full {
                speaker.sync(vips)
            } else {
                speaker.update(vips)
            }
        });
    }

    pub(crate) fn bgp_status(&self) -> Option<BgpStatus> {
        self.bgp.as_ref().map(Speaker::status)
    }

    /// SIGTERM with `[bgp]`: withdraw every VIP first, then keep the process (and the
    /// maps, which forward anyway) for the drain time while the routers move the
    /// traffic to the other directors.
    pub(crate) async fn withdraw_and_drain(&mut self) {
        let Some(speaker) = self.bgp.as_mut() else {
            return;
        };
        blocking(|| speaker.update(BTreeSet::new()));
        let drain = speaker.config().drain;
        match speaker.status().error {
            None => log::info!(
                "bgp: every VIP withdrawn; draining for {}",
                super::config::fmt_duration(drain)
            ),
            Some(e) => log::error!("bgp: withdrawing on exit failed: {e}"),
        }
        tokio::time::sleep(drain).await;
    }

    /// Take over the declared services: initial health from the maps, checks started,
    /// the first round applied. Services a previous run declared and this file does not
    /// are removed.
    pub(crate) fn start(&mut self) -> Result<(), MapsError> {
        let maps = &mut self.maps;
        let actual = blocking(|| maps.read())?;
        let previously: BTreeSet<ServiceAddr> = self
            .run_files
            .as_ref()
            .map(|f| f.read_owned())
            .unwrap_or_default();
        for svc in self.config.services.clone() {
            let view = actual.iter().find(|v| v.spec.addr == svc.spec.addr);
            if view.is_some() && !previously.contains(&svc.spec.addr) {
                log::info!(
                    "{}: already in the maps; the daemon manages it from now on",
                    svc.label()
                );
            }
            self.add_service(svc, view);
        }
        for addr in previously {
            if !self.services.contains_key(&addr) {
                log::warn!(
                    "{}: declared by a previous run and not by {}; removing it",
                    super::config::service_label(&addr),
                    self.config.path.display()
                );
                self.pending_deletes.insert(addr);
            }
        }
        self.owned = self
            .services
            .keys()
            .chain(&self.pending_deletes)
            .copied()
            .collect();
        self.write_owned();
        let n_reals: usize = self.services.values().map(|s| s.reals.len()).sum();
        log::info!(
            "managing {} services with {n_reals} real servers from {}",
            self.services.len(),
            self.config.path.display()
        );
        self.apply(true);
        self.bgp_update(false);
        Ok(())
    }

    fn add_service(&mut self, cfg: ServiceConfig, view: Option<&ServiceView>) {
        let label = cfg.label();
        let mut svc = SvcState {
            label,
            reals: BTreeMap::new(),
            fallback_active: false,
            dirty: true,
            last_error: None,
            cfg,
        };
        for r in svc.cfg.reals.clone() {
            let actual = view.and_then(|v| {
                v.reals
                    .iter()
                    .find(|x| real_key(&x.spec) == real_key(&r.spec))
                    .map(|x| x.spec)
            });
            let state = self.new_real(&svc, r, actual.as_ref());
            svc.reals.insert(real_key(&state.cfg.spec), state);
        }
        let d = desired(&svc, Instant::now());
        svc.fallback_active = d.fallback.is_some_and(|(_, needed)| needed);
        self.metrics
            .service_reals_up
            .get_or_create(&service_labels(&svc.label))
            .set(d.up as i64);
        self.metrics
            .service_fallback
            .get_or_create(&service_labels(&svc.label))
            .set(svc.fallback_active as i64);
        self.services.insert(svc.cfg.spec.addr, svc);
    }

    fn task_config(&self, svc: &ServiceConfig, label: &str, r: &RealConfig) -> TaskConfig {
        TaskConfig {
            check: svc.check.clone(),
            subject: Subject {
                service: svc.spec.addr,
                service_label: label.to_owned(),
                real: r.spec,
                target: r.check_target(&svc.check),
            },
            jitter: self.config.daemon.jitter,
        }
    }

    fn new_real(&mut self, svc: &SvcState, r: RealConfig, actual: Option<&RealSpec>) -> RealState {
        let key = real_key(&r.spec);
        let health = initial_health(&svc.cfg.check, &r, actual);
        self.generation += 1;
        let generation = self.generation;
        let metrics = self.metrics.check_metrics(&svc.label, &real_label(&key));
        let (task_cfg, rx) = watch::channel(self.task_config(&svc.cfg, &svc.label, &r));
        let task = tokio::spawn(check_task(
            self.prober.clone(),
            rx,
            health,
            self.events_tx.clone(),
            (svc.cfg.spec.addr, key, generation),
            metrics.clone(),
        ));
        let labels = real_labels(&svc.label, &real_label(&key));
        self.metrics
            .real_up
            .get_or_create(&labels)
            .set(health.is_up() as i64);
        RealState {
            up: health.is_up(),
            dyn_weight: None,
            ramp_from: None,
            reason: match actual {
                Some(a) if a.weight > 0 => "serving at start".into(),
                Some(_) => "quiescent at start".into(),
                None => "new".into(),
            },
            applied: actual.map(|a| a.weight),
            generation,
            metrics,
            task_cfg,
            _task: Guard::new(task),
            cfg: r,
        }
    }

    fn on_event(&mut self, ev: Event) {
        let hooks = self.hooks_for(&ev.service);
        let Some(svc) = self.services.get_mut(&ev.service) else {
            return;
        };
        let Some(r) = svc.reals.get_mut(&ev.real) else {
            return;
        };
        if r.generation != ev.generation {
            return;
        }
        let labels = real_labels(&svc.label, &real_label(&ev.real));
        let o = &ev.outcome;
        if ev.transition.is_none() {
            if ev.first && !r.up {
                log::warn!(
                    "{} real {} is DOWN: {} ({} ms)",
                    svc.label,
                    real_label(&ev.real),
                    o.detail,
                    o.latency.as_millis()
                );
            }
            r.reason = o.detail.clone();
        }
        if let Some(up) = ev.transition {
            r.up = up;
            r.reason = o.detail.clone();
            self.metrics.real_up.get_or_create(&labels).set(up as i64);
            self.metrics.transitions.get_or_create(&labels).inc();
            let check = &svc.cfg.check;
            if up {
                log::info!(
                    "{} real {} is UP: {} ({} ms; {} good checks in a row)",
                    svc.label,
                    real_label(&ev.real),
                    o.detail,
                    o.latency.as_millis(),
                    check.rise
                );
                if !svc.cfg.slowstart.is_zero() {
                    r.ramp_from = Some(Instant::now());
                }
            } else {
                log::warn!(
                    "{} real {} is DOWN: {} ({} ms; {} failed checks in a row)",
                    svc.label,
                    real_label(&ev.real),
                    o.detail,
                    o.latency.as_millis(),
                    check.fall
                );
                r.ramp_from = None;
                r.dyn_weight = None;
            }
            let kind = if up { EventKind::Up } else { EventKind::Down };
            let mut env = hook_env(&svc.cfg, &svc.label);
            env.extend([
                ("DIRECTOR_REAL", real_label(&ev.real)),
                ("DIRECTOR_REAL_ADDR", ev.real.0.to_string()),
                ("DIRECTOR_REAL_PORT", ev.real.1.to_string()),
                ("DIRECTOR_REASON", o.detail.clone()),
                ("DIRECTOR_LATENCY_MS", o.latency.as_millis().to_string()),
                ("DIRECTOR_WEIGHT", r.cfg.spec.weight.to_string()),
            ]);
            self.notifier.notify(&hooks, HookEvent { kind, env });
        }
        if r.up && r.dyn_weight != ev.weight {
            if let Some(w) = ev.weight {
                log::info!(
                    "{} real {}: the check sets weight {w} ({})",
                    svc.label,
                    real_label(&ev.real),
                    o.detail
                );
            }
            r.dyn_weight = ev.weight;
        }
        if let Some(svc) = self.services.get_mut(&ev.service) {
            svc.dirty = true;
        }
    }

    fn hooks_for(&self, addr: &ServiceAddr) -> super::config::Hooks {
        match self.services.get(addr) {
            Some(s) if !s.cfg.hooks.is_empty() => s.cfg.hooks.clone(),
            _ => self.config.daemon.hooks.clone(),
        }
    }

    /// When the next slowstart step is due, if any real is ramping. Kept once set, so a
    /// stream of events does not postpone it.
    fn next_ramp(&mut self) -> Option<Instant> {
        if self.ramp_at.is_none() {
            self.ramp_at = self
                .services
                .values()
                .filter(|s| s.reals.values().any(|r| r.ramp_from.is_some()))
                .map(|s| {
                    let step = (s.cfg.slowstart / 20)
                        .max(Duration::from_secs(1))
                        .min(s.cfg.slowstart);
                    Instant::now() + step
                })
                .min();
        }
        self.ramp_at
    }

    fn ramp_tick(&mut self) {
        self.ramp_at = None;
        let now = Instant::now();
        for s in self.services.values_mut() {
            let period = s.cfg.slowstart;
            let mut any = false;
            for r in s.reals.values_mut() {
                if let Some(t) = r.ramp_from {
                    any = true;
                    if now.saturating_duration_since(t) >= period {
                        r.ramp_from = None;
                    }
                }
            }
            if any {
                s.dirty = true;
            }
        }
    }

    fn write_owned(&self) {
        if let Some(f) = &self.run_files
            && let Err(e) = f.write_owned(&self.owned)
        {
            log::warn!("{e}");
        }
    }

    /// Bring the maps in line for every dirty service (all of them with `all`).
    /// Returns the writes made.
    pub(crate) fn apply(&mut self, all: bool) -> Vec<String> {
        if all {
            for s in self.services.values_mut() {
                s.dirty = true;
            }
        }
        let dirty: Vec<ServiceAddr> = self
            .services
            .iter()
            .filter(|(_, s)| s.dirty)
            .map(|(a, _)| *a)
            .collect();
        if dirty.is_empty() && self.pending_deletes.is_empty() {
            return Vec::new();
        }
        let now = Instant::now();
        let plans: Vec<(ServiceAddr, Desired)> = dirty
            .iter()
            .map(|a| (*a, desired(&self.services[a], now)))
            .collect();

        // Reals about to carry traffic need their neighbour entries (the XDP path never
        // resolves them); unresolvable ones are retried once per sync interval.
        let retry = self.config.daemon.sync_interval;
        let addrs: Vec<IpAddr> = plans
            .iter()
            .flat_map(|(_, d)| d.reals.iter().chain(d.fallback.iter().map(|(f, _)| f)))
            .filter(|r| r.weight > 0)
            .map(|r| r.addr)
            .filter(|a| {
                self.unresolved
                    .get(a)
                    .is_none_or(|t| now.saturating_duration_since(*t) >= retry)
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if !addrs.is_empty() {
            let maps = &mut self.maps;
            let left = blocking(|| maps.resolve(&addrs));
            for a in &addrs {
                if left.contains(a) {
                    if !self.unresolved.contains_key(a) {
                        log::warn!(
                            "real {a}: no neighbour entry (ARP) yet; the data path drops its packets until there is one"
                        );
                    }
                    self.unresolved.insert(*a, now);
                } else {
                    self.unresolved.remove(a);
                }
            }
        }

        let deletes: Vec<ServiceAddr> = self.pending_deletes.iter().copied().collect();
        let mut changes = Vec::new();
        let mut results: Vec<(ServiceAddr, Result<(), ControlError>)> = Vec::new();
        let mut deleted: Vec<ServiceAddr> = Vec::new();
        let maps = &mut self.maps;
        let services = &self.services;
        let batch = blocking(|| {
            maps.batch(&mut |w| {
                let actual = w.services()?;
                for d in &deletes {
                    if actual.iter().any(|v| v.spec.addr == *d) {
                        match w.delete_service(d) {
                            Ok(()) => {
                                changes.push(format!(
                                    "{}{SERVICE_REMOVED}",
                                    super::config::service_label(d)
                                ));
                                deleted.push(*d);
                            }
                            Err(e) => {
                                log::error!("{}: removing: {e}", super::config::service_label(d))
                            }
                        }
                    } else {
                        deleted.push(*d);
                    }
                }
                for (addr, d) in &plans {
                    let svc = &services[addr];
                    let view = actual.iter().find(|v| v.spec.addr == *addr);
                    let r = sync_service(w, view, &svc.cfg, d, &svc.label, &mut changes);
                    results.push((*addr, r));
                }
                Ok(())
            })
        });
        for c in &changes {
            // Removing a service stops its traffic: worth more than a note.
            if c.ends_with(SERVICE_REMOVED) {
                log::warn!("{c}");
            } else {
                log::info!("{c}");
            }
        }
        match batch {
            Ok(()) => self.batch_error = None,
            Err(e) => {
                let msg = crate::with_causes(&e);
                if self.batch_error.as_ref() != Some(&msg) {
                    log::error!("writing the maps: {msg} (retrying at the next change or sync)");
                }
                self.batch_error = Some(msg);
            }
        }
        if !deleted.is_empty() {
            for d in &deleted {
                self.pending_deletes.remove(d);
                if !self.services.contains_key(d) {
                    self.owned.remove(d);
                }
            }
            self.write_owned();
        }
        let plans: HashMap<ServiceAddr, Desired> = plans.into_iter().collect();
        for (addr, r) in results {
            let Some(svc) = self.services.get_mut(&addr) else {
                continue;
            };
            match r {
                Ok(()) => {
                    svc.dirty = false;
                    svc.last_error = None;
                    let d = &plans[&addr];
                    for r in svc.reals.values_mut() {
                        let key = real_key(&r.cfg.spec);
                        r.applied = d
                            .reals
                            .iter()
                            .find(|x| real_key(x) == key)
                            .map(|x| x.weight);
                        let labels = real_labels(&svc.label, &real_label(&key));
                        self.metrics
                            .real_weight
                            .get_or_create(&labels)
                            .set(r.applied.unwrap_or(0) as i64);
                    }
                    self.metrics
                        .service_reals_up
                        .get_or_create(&service_labels(&svc.label))
                        .set(d.up as i64);
                    let active = d.fallback.is_some_and(|(_, needed)| needed);
                    if active != svc.fallback_active {
                        svc.fallback_active = active;
                        let (f, _) = d.fallback.expect("active implies a fallback");
                        let fl = real_label(&real_key(&f));
                        if active {
                            log::warn!(
                                "{}: {} of {} reals UP (quorum {}): fallback {fl} takes the traffic",
                                svc.label,
                                d.up,
                                svc.reals.len(),
                                svc.cfg.quorum
                            );
                        } else {
                            log::info!(
                                "{}: {} of {} reals UP (quorum {}): fallback {fl} hands back",
                                svc.label,
                                d.up,
                                svc.reals.len(),
                                svc.cfg.quorum
                            );
                        }
                        self.metrics
                            .service_fallback
                            .get_or_create(&service_labels(&svc.label))
                            .set(active as i64);
                        let mut env = hook_env(&svc.cfg, &svc.label);
                        env.extend([
                            ("DIRECTOR_REAL", fl),
                            ("DIRECTOR_REALS_UP", d.up.to_string()),
                        ]);
                        let kind = if active {
                            EventKind::FallbackOn
                        } else {
                            EventKind::FallbackOff
                        };
                        let hooks = if svc.cfg.hooks.is_empty() {
                            self.config.daemon.hooks.clone()
                        } else {
                            svc.cfg.hooks.clone()
                        };
                        self.notifier.notify(&hooks, HookEvent { kind, env });
                    }
                }
                Err(e) => {
                    let e = crate::with_causes(&e);
                    if svc.last_error.as_ref() != Some(&e) {
                        log::error!("{}: {e} (retrying at the next change or sync)", svc.label);
                    }
                    svc.last_error = Some(e);
                }
            }
        }
        changes
    }

    /// Read and apply the configuration again. A file with errors changes nothing.
    pub(crate) fn reload(&mut self) -> Result<ReloadReport, ReloadError> {
        let maps = &mut self.maps;
        let owned = &self.owned;
        let loaded = match self.source.load().map_err(ReloadError::from).and_then(|l| {
            let capacity = blocking(|| maps.capacity()).map_err(ReloadError::Maps)?;
            let actual = blocking(|| maps.read()).map_err(ReloadError::Maps)?;
            l.config.applicable(&super::config::Target {
                capacity,
                actual: &actual,
                owned,
            })?;
            Ok(l)
        }) {
            Ok(l) => l,
            Err(e) => {
                self.metrics
                    .reloads
                    .get_or_create(&vec![("result", "error".to_owned())])
                    .inc();
                self.metrics.last_reload_ok.set(0);
                log::error!("reload rejected, the running configuration stays:\n{e}");
                return Err(e);
            }
        };
        for w in &loaded.warnings {
            log::warn!("{w}");
        }
        let new = loaded.config;
        let maps = &mut self.maps;
        let actual = blocking(|| maps.read()).unwrap_or_default();

        let old_addrs: BTreeSet<ServiceAddr> = self.services.keys().copied().collect();
        let new_addrs: BTreeSet<ServiceAddr> = new.services.iter().map(|s| s.spec.addr).collect();
        for addr in old_addrs.difference(&new_addrs) {
            if let Some(s) = self.services.remove(addr) {
                log::warn!("{}: no longer declared; removing it", s.label);
                for k in s.reals.keys() {
                    self.metrics.remove_real(&s.label, &real_label(k));
                }
                self.metrics.remove_service(&s.label);
                self.pending_deletes.insert(*addr);
            }
        }
        let jitter_changed = new.daemon.jitter != self.config.daemon.jitter;
        if new.daemon.metrics != self.config.daemon.metrics {
            log::warn!(
                "daemon.metrics changed to {:?}: the endpoint moves at the next start of the daemon",
                new.daemon.metrics
            );
        }
        self.notifier.set_timeout(new.daemon.notify_timeout);
        let path = self.config.path.clone();
        self.config = Config {
            services: Vec::new(),
            ..new.clone()
        };
        match (self.bgp.as_mut(), new.bgp.clone()) {
            (Some(s), Some(b)) => s.set_config(b),
            (None, Some(b)) => {
                let mut s = Speaker::new(b, Box::new(SystemBird), Some(self.metrics.clone()));
                if let Some(f) = &self.run_files {
                    s.report_to(f.bgp_path());
                }
                self.bgp = Some(s);
            }
            (Some(s), None) => {
                // Without [bgp] nothing would ever withdraw what BIRD announces.
                log::warn!("bgp: the [bgp] section is gone: withdrawing every VIP");
                blocking(|| s.update(BTreeSet::new()));
                self.bgp = None;
            }
            (None, None) => {}
        }
        for cfg in new.services {
            let addr = cfg.spec.addr;
            let view = actual.iter().find(|v| v.spec.addr == addr);
            if !self.services.contains_key(&addr) {
                self.pending_deletes.remove(&addr);
                self.add_service(cfg, view);
                continue;
            }
            let mut svc = self.services.remove(&addr).expect("checked");
            let check_changed = svc.cfg.check != cfg.check;
            let keys: BTreeSet<RealKey> = cfg.reals.iter().map(|r| real_key(&r.spec)).collect();
            let gone: Vec<RealKey> = svc
                .reals
                .keys()
                .filter(|k| !keys.contains(k))
                .copied()
                .collect();
            for k in gone {
                svc.reals.remove(&k);
                self.metrics.remove_real(&svc.label, &real_label(&k));
            }
            svc.cfg = cfg.clone();
            for r in cfg.reals.clone() {
                let key = real_key(&r.spec);
                match svc.reals.get_mut(&key) {
                    Some(state) => {
                        let target_changed = state.cfg.check_target(&cfg.check)
                            != r.check_target(&cfg.check)
                            || state.cfg.spec != r.spec;
                        state.cfg = r.clone();
                        if check_changed || target_changed || jitter_changed {
                            let tc = self.task_config(&cfg, &svc.label, &r);
                            let _ = state.task_cfg.send(tc);
                        }
                    }
                    None => {
                        let actual_real = view.and_then(|v| {
                            v.reals
                                .iter()
                                .find(|x| real_key(&x.spec) == key)
                                .map(|x| x.spec)
                        });
                        let state = self.new_real(&svc, r, actual_real.as_ref());
                        svc.reals.insert(key, state);
                    }
                }
            }
            svc.dirty = true;
            self.services.insert(addr, svc);
        }
        self.config.services = self.services.values().map(|s| s.cfg.clone()).collect();
        if self.config.path != path {
            log::info!("configuration now from {}", self.config.path.display());
        }
        self.owned = self
            .services
            .keys()
            .chain(&self.pending_deletes)
            .copied()
            .collect();
        self.write_owned();
        let changes = self.apply(true);
        self.metrics
            .reloads
            .get_or_create(&vec![("result", "ok".to_owned())])
            .inc();
        self.metrics.last_reload_ok.set(1);
        log::info!(
            "reloaded {}: {} change(s) to the maps",
            self.config.path.display(),
            changes.len()
        );
        Ok(ReloadReport {
            changes,
            warnings: loaded.warnings,
        })
    }

    pub(crate) fn status(&self) -> Vec<ServiceStatus> {
        self.services
            .values()
            .map(|s| ServiceStatus {
                service: s.cfg.spec.addr,
                label: s.label.clone(),
                name: s.cfg.name.clone(),
                reals_up: s.reals.values().filter(|r| r.up).count() as u32,
                fallback_active: s.fallback_active,
                reals: s
                    .reals
                    .iter()
                    .map(|(k, r)| RealStatus {
                        addr: k.0,
                        port: k.1,
                        up: r.up,
                        weight: r.applied,
                        reason: r.reason.clone(),
                        checks: r.metrics.checks.get(),
                        failures: r.metrics.failures.get(),
                    })
                    .collect(),
            })
            .collect()
    }

    /// The main loop, until `shutdown` resolves.
    pub(crate) async fn run(
        &mut self,
        shutdown: impl Future,
        mut requests: Option<mpsc::Receiver<Request>>,
    ) {
        tokio::pin!(shutdown);
        let mut sync_every = self.config.daemon.sync_interval;
        let mut sync = tokio::time::interval_at(Instant::now() + sync_every, sync_every);
        sync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let ramp = self.next_ramp();
            let mut full = false;
            tokio::select! {
                _ = &mut shutdown => break,
                Some(ev) = self.events_rx.recv() => self.on_event(ev),
                Some(req) = async {
                    match requests.as_mut() {
                        Some(r) => r.recv().await,
                        None => std::future::pending().await,
                    }
                } => match req {
                    Request::Reload(reply) => {
                        let r = self.reload();
                        let _ = reply.send(r);
                        if self.config.daemon.sync_interval != sync_every {
                            sync_every = self.config.daemon.sync_interval;
                            sync = tokio::time::interval_at(Instant::now() + sync_every, sync_every);
                        }
                    }
                    Request::Status(reply) => {
                        let _ = reply.send(self.status());
                    }
                    Request::Bgp(reply) => {
                        let _ = reply.send(self.bgp_status());
                    }
                },
                _ = sync.tick() => full = true,
                _ = async { tokio::time::sleep_until(ramp.unwrap_or_else(Instant::now)).await }, if ramp.is_some() => {
                    self.ramp_tick();
                }
            }
            // Take every event already queued before writing: one batch for all.
            while let Ok(ev) = self.events_rx.try_recv() {
                self.on_event(ev);
            }
            self.apply(full);
            self.bgp_update(full);
        }
    }

    /// Stop every check; with `flush`, remove the services we declared.
    pub(crate) fn finish(&mut self, flush: bool) {
        // Dropping the states drops the check tasks' guards.
        let declared: Vec<ServiceAddr> = self.services.keys().copied().collect();
        self.services.clear();
        if flush {
            self.pending_deletes.extend(declared);
            let removed = self.apply(false);
            log::info!("flush on exit: {} service(s) removed", removed.len());
        } else if !declared.is_empty() {
            log::info!(
                "exiting; {} service(s) keep forwarding with their current weights",
                declared.len()
            );
        }
    }
}

fn hook_env(cfg: &ServiceConfig, label: &str) -> Vec<(&'static str, String)> {
    vec![
        ("DIRECTOR_SERVICE", label.to_owned()),
        (
            "DIRECTOR_SERVICE_NAME",
            cfg.name.clone().unwrap_or_default(),
        ),
        ("DIRECTOR_VIP", cfg.spec.addr.addr.to_string()),
        ("DIRECTOR_VPORT", cfg.spec.addr.port.to_string()),
        (
            "DIRECTOR_PROTOCOL",
            match cfg.spec.addr.proto {
                director_control::model::Protocol::Tcp => "tcp".into(),
                director_control::model::Protocol::Udp => "udp".into(),
            },
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slowstart_ramps_linearly_and_never_to_zero() {
        let p = Duration::from_secs(10);
        assert_eq!(ramped(100, Duration::ZERO, p), 1);
        assert_eq!(ramped(100, Duration::from_secs(1), p), 10);
        assert_eq!(ramped(100, Duration::from_secs(5), p), 50);
        assert_eq!(ramped(100, Duration::from_secs(10), p), 100);
        assert_eq!(ramped(3, Duration::from_millis(100), p), 1);
        assert_eq!(ramped(0, Duration::from_secs(5), p), 0);
        assert_eq!(ramped(7, Duration::from_secs(5), Duration::ZERO), 7);
    }
}
