//! `director daemon`: the health-check controller (ldirectord/keepalived-like).
//!
//! It declares the virtual services of a configuration file (native TOML, or an
//! existing ldirectord.cf), checks every real server on its own jittered timer, and sets
//! weights in the data path's maps through the control library: DOWN reals quiescent
//! (weight 0) or removed, UP reals at their weight (optionally ramped), a fallback server
//! when fewer than the quorum are UP. Reloads (SIGHUP, `director daemon reload`) apply
//! only the differences. See docs/daemon.md.
//!
//! Layout: [`config`] and [`ldirectord`] read files into a validated [`config::Config`];
//! [`check`] runs one check; [`health`] is the rise/fall counter; [`controller`] owns the
//! per-real tasks and decides and writes weights into a [`maps::MapStore`];
//! [`metrics`], [`notify`] and [`runfiles`] are the daemon's edges; [`command`] is the
//! `director daemon` command line; [`bgp`] announces the
//! healthy VIPs through BIRD (scale-out, docs/scale-out.md).

pub mod bgp;
pub mod check;
pub mod command;
pub mod config;
pub mod controller;
pub mod health;
pub mod ldirectord;
pub mod maps;
pub mod metrics;
mod neighwatch;
pub mod notify;
pub mod runfiles;
#[cfg(test)]
mod tests;

use std::{
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

pub use command::{DaemonAction, DaemonArgs, main};
pub use config::{Config, ConfigError};
pub use controller::{RealStatus, ReloadError, ReloadReport, Request, ServiceStatus};
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

use director_control::state::StateOptions;

/// A background task that is aborted when this guard is dropped (mini-redis's pattern:
/// every task the daemon starts is owned by something that ends it).
pub struct Guard(JoinHandle<()>);

impl Guard {
    pub fn new(task: JoinHandle<()>) -> Self {
        Self(task)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An error followed by each of its causes, `: `-separated: what an operator reads in
/// the log.
pub(crate) fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}

/// Run blocking map work: off the async workers on a multi-threaded runtime, inline on a
/// current-thread runtime (tests with paused time, where it is instant).
pub(crate) fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Where the configuration comes from (read again at each reload).
#[derive(Clone, Debug)]
pub enum ConfigSource {
    /// The native TOML file.
    Native(PathBuf),
    /// An ldirectord.cf, mapped to the native model.
    Ldirectord(PathBuf),
    /// A configuration made in code (benchmarks); a reload applies it again.
    Fixed(Box<Config>),
}

/// A configuration and what was said about it.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub config: Config,
    /// Keys that were ignored (ldirectord), with file and line.
    pub warnings: Vec<String>,
}

impl ConfigSource {
    pub fn load(&self) -> Result<Loaded, ConfigError> {
        match self {
            ConfigSource::Native(p) => Ok(Loaded {
                config: config::load(p)?,
                warnings: Vec::new(),
            }),
            ConfigSource::Ldirectord(p) => ldirectord::load(p),
            ConfigSource::Fixed(c) => Ok(Loaded {
                config: (**c).clone(),
                warnings: Vec::new(),
            }),
        }
    }

    pub fn path(&self) -> Option<&Path> {
        match self {
            ConfigSource::Native(p) | ConfigSource::Ldirectord(p) => Some(p),
            ConfigSource::Fixed(_) => None,
        }
    }
}

/// Validate a native configuration file (what `director daemon --check` does).
pub fn check_config(path: &Path) -> Result<Config, ConfigError> {
    config::load(path)
}

/// How to run the daemon.
pub struct DaemonOptions {
    pub source: ConfigSource,
    /// Whose maps (this network namespace's by default).
    pub state: StateOptions,
    /// Serve metrics here, whatever the file says.
    pub metrics: Option<SocketAddr>,
    /// On exit remove the services the daemon declared (keepalived's lvs_flush_on_stop);
    /// by default they keep forwarding with their last weights.
    pub flush_on_exit: bool,
    /// Pid file and the record of declared services go here (None: neither).
    pub run_dir: Option<PathBuf>,
    /// Where the state's daemon lock lives (None: [`runfiles::RUN_DIR`], whatever the run
    /// directory, so that two daemons of one state exclude each other).
    pub lock_dir: Option<PathBuf>,
    /// Reload and status requests (see [`channel`]).
    pub requests: Option<mpsc::Receiver<Request>>,
}

impl DaemonOptions {
    pub fn new(source: ConfigSource, state: StateOptions) -> Self {
        Self {
            source,
            state,
            metrics: None,
            flush_on_exit: false,
            run_dir: None,
            lock_dir: None,
            requests: None,
        }
    }
}

/// Talks to a running daemon.
#[derive(Clone)]
pub struct DaemonHandle {
    tx: mpsc::Sender<Request>,
}

/// A handle and the receiving end to put in [`DaemonOptions::requests`].
pub fn channel() -> (DaemonHandle, mpsc::Receiver<Request>) {
    let (tx, rx) = mpsc::channel(8);
    (DaemonHandle { tx }, rx)
}

impl DaemonHandle {
    /// Re-read the configuration and apply the differences; `Err` carries the file's
    /// problems (nothing was changed then).
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Request::Reload(tx))
            .await
            .map_err(|_| ReloadError::NotRunning)?;
        rx.await.map_err(|_| ReloadError::Stopped)?
    }

    /// The BGP speaker's state; `None` when the daemon is not running or has no
    /// `[bgp]` section.
    pub async fn bgp_status(&self) -> Option<bgp::BgpStatus> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Request::Bgp(tx)).await.ok()?;
        rx.await.ok()?
    }

    /// [`DaemonHandle::bgp_status`] from a thread outside the daemon's runtime.
    pub fn blocking_bgp_status(&self) -> Option<bgp::BgpStatus> {
        let (tx, rx) = oneshot::channel();
        self.tx.blocking_send(Request::Bgp(tx)).ok()?;
        rx.blocking_recv().ok()?
    }

    pub async fn status(&self) -> Option<Vec<ServiceStatus>> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Request::Status(tx)).await.ok()?;
        rx.await.ok()
    }

    /// [`DaemonHandle::reload`] from a thread outside the daemon's runtime.
    pub fn blocking_reload(&self) -> Result<ReloadReport, ReloadError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .blocking_send(Request::Reload(tx))
            .map_err(|_| ReloadError::NotRunning)?;
        rx.blocking_recv().map_err(|_| ReloadError::Stopped)?
    }

    /// [`DaemonHandle::status`] from a thread outside the daemon's runtime.
    pub fn blocking_status(&self) -> Option<Vec<ServiceStatus>> {
        let (tx, rx) = oneshot::channel();
        self.tx.blocking_send(Request::Status(tx)).ok()?;
        rx.blocking_recv().ok()
    }
}

/// Run the daemon against this network namespace's pinned maps until `shutdown`
/// resolves. Fails clearly when the director is not attached (`director attach`) or the
/// configuration is invalid. Sockets for checks are made in the calling thread's network
/// namespace (build the runtime on a thread that is where the checks must come from).
pub async fn run(opts: DaemonOptions, shutdown: impl Future) -> anyhow::Result<()> {
    // A broken file is the first thing to say, before anything about the maps.
    opts.source.load()?;
    let maps = maps::PinnedMaps::open(opts.state.clone())?;
    // A real's new MAC address or a new route reaches the data path's next-hop cache
    // at once.
    let _watcher = neighwatch::start(opts.state.clone())
        .map_err(|e| anyhow::anyhow!("watching neighbour and route changes: {e}"))?;
    serve(opts, Box::new(maps), shutdown).await
}

/// Like [`run`], with another map store (tests, benchmarks: [`maps::MemoryMaps`]).
pub async fn serve(
    opts: DaemonOptions,
    maps: Box<dyn maps::MapStore>,
    shutdown: impl Future,
) -> anyhow::Result<()> {
    serve_with(opts, maps, Arc::new(controller::NetProber), shutdown).await
}

pub(crate) async fn serve_with(
    opts: DaemonOptions,
    maps: Box<dyn maps::MapStore>,
    prober: Arc<dyn controller::Prober>,
    shutdown: impl Future,
) -> anyhow::Result<()> {
    let mut maps = maps;
    let loaded = opts.source.load()?;
    for w in &loaded.warnings {
        log::warn!("{w}");
    }
    let run_files = match &opts.run_dir {
        Some(dir) => Some(runfiles::RunFiles::with_lock_dir(
            dir,
            opts.lock_dir
                .as_deref()
                .unwrap_or(Path::new(runfiles::RUN_DIR)),
            &opts.state,
        )?),
        None => None,
    };
    // What a previous run declared is the daemon's to change; the rest keeps its slots.
    let owned = run_files
        .as_ref()
        .map(runfiles::RunFiles::read_owned)
        .unwrap_or_default();
    loaded.config.applicable(&config::Target {
        capacity: maps.capacity()?,
        actual: &maps.read()?,
        owned: &owned,
    })?;
    let _pid = match &run_files {
        Some(f) => Some(f.acquire()?),
        None => None,
    };
    let metrics_addr = opts.metrics.or(loaded.config.daemon.metrics);
    let mut metrics = metrics::Metrics::new(Some(maps.reader()));
    if loaded.config.bgp.is_some() {
        metrics.register_bgp();
    }
    let metrics = Arc::new(metrics);
    let mut metrics_server = None;
    if let Some(addr) = metrics_addr {
        let (local, guard) = metrics::serve(addr, metrics.clone()).await?;
        log::info!("metrics on http://{local}/metrics");
        metrics_server = Some((local, guard));
    }
    let (notifier, _notifier_guard) = notify::Notifier::start(loaded.config.daemon.notify_timeout);
    let mut c = controller::Controller::new(controller::Parts {
        source: opts.source,
        config: loaded.config,
        maps,
        prober,
        metrics: metrics.clone(),
        notifier,
        run_files,
    });
    c.start()?;
    c.run(shutdown, opts.requests).await;
    c.withdraw_and_drain().await;
    c.finish(opts.flush_on_exit);
    drop(metrics_server);
    Ok(())
}
