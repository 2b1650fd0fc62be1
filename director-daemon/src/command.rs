//! `director daemon`'s command line and process: arguments, logging to stderr, the
//! tokio runtime, signals (SIGTERM/SIGINT stop, SIGHUP reloads), exit codes.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Args, Subcommand};

use super::{ConfigSource, DaemonOptions, runfiles::RUN_DIR};
use director_control::state::StateOptions;

/// The default configuration file.
pub const DEFAULT_CONFIG: &str = "/etc/director/director.toml";

/// `director daemon [OPTIONS] [reload]`.
#[derive(Args, Clone, Debug, Default)]
#[command(
    about = "Run the health-check daemon: declare the services of a configuration file, check every real server, set weights",
    long_about = "Run the health-check daemon in the foreground (for systemd): declare the virtual services of a \
        configuration file, check every real server on its own timer and set weights in the data path's maps. \
        SIGHUP (or `director daemon reload`) re-reads the file and applies only the differences; SIGTERM exits \
        and leaves forwarding as it is. Needs `director attach` first. See docs/daemon.md."
)]
pub struct DaemonArgs {
    #[command(subcommand)]
    pub action: Option<DaemonAction>,
    // The options `reload` also uses are global: `daemon reload --config F` and `daemon
    // --config F reload` are the same command.
    /// Configuration file (TOML) [default: /etc/director/director.toml].
    #[arg(
        long,
        short = 'c',
        value_name = "FILE",
        conflicts_with = "ldirectord",
        global = true
    )]
    pub config: Option<PathBuf>,
    /// Read an ldirectord.cf instead (mapped to the native model; unsupported keys warn).
    #[arg(long, value_name = "FILE", global = true)]
    pub ldirectord: Option<PathBuf>,
    /// Validate the configuration (this FILE, or the one --config/--ldirectord names) and
    /// exit: 0 when it is valid, 1 when not.
    #[arg(long, value_name = "FILE", num_args = 0..=1)]
    #[allow(clippy::option_option)]
    pub check: Option<Option<PathBuf>>,
    /// On exit remove the services the daemon declared (default: they keep forwarding).
    #[arg(long)]
    pub flush_on_exit: bool,
    /// Serve Prometheus metrics on ADDR (e.g. 127.0.0.1:9410), whatever the file says.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Where the pid file and the record of declared services live.
    #[arg(long, value_name = "DIR", default_value = RUN_DIR, global = true)]
    pub run_dir: PathBuf,
}

#[derive(Subcommand, Clone, Debug)]
pub enum DaemonAction {
    /// Make the running daemon re-read its configuration (SIGHUP through its pid file).
    /// With --config/--ldirectord the file is validated first and a broken one is not
    /// signalled.
    Reload,
}

impl DaemonArgs {
    fn source(&self) -> ConfigSource {
        match (&self.check, &self.ldirectord, &self.config) {
            (Some(Some(f)), None, _) => ConfigSource::Native(f.clone()),
            (Some(Some(f)), Some(_), _) => ConfigSource::Ldirectord(f.clone()),
            (_, Some(l), _) => ConfigSource::Ldirectord(l.clone()),
            (_, None, Some(c)) => ConfigSource::Native(c.clone()),
            _ => ConfigSource::Native(PathBuf::from(DEFAULT_CONFIG)),
        }
    }
}

fn init_logging() {
    // Foreground service: stderr (journald adds the time); RUST_LOG overrides.
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp(None)
        .format_target(false)
        .try_init();
}

/// `director daemon`: returns the process's exit code.
pub fn main(args: DaemonArgs, state: StateOptions) -> ExitCode {
    init_logging();
    let source = args.source();
    if args.check.is_some() {
        return check(&source, Some((&state, &args.run_dir)));
    }
    if let Some(DaemonAction::Reload) = args.action {
        if (args.config.is_some() || args.ldirectord.is_some())
            && check(&source, Some((&state, &args.run_dir))) != ExitCode::SUCCESS
        {
            eprintln!("director daemon: not signalling the daemon: the file is invalid");
            return ExitCode::FAILURE;
        }
        // Through anyhow, so that the message carries the causes too.
        let signalled = super::runfiles::RunFiles::new(&args.run_dir, &state)
            .and_then(|f| f.signal_reload())
            .map_err(anyhow::Error::from);
        return match signalled {
            Ok(pid) => {
                eprintln!(
                    "director daemon: reload signalled to pid {pid} (the result is in its log)"
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("director daemon: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("director-daemon")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("director daemon: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        let (handle, requests) = super::channel();
        let _reloader = super::Guard::new(tokio::spawn(async move {
            while hup.recv().await.is_some() {
                log::info!("SIGHUP: reloading");
                // The daemon logs the outcome.
                let _ = handle.reload().await;
            }
        }));
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => log::info!("SIGTERM: stopping"),
                _ = int.recv() => log::info!("SIGINT: stopping"),
            }
        };
        let opts = DaemonOptions {
            source,
            state,
            metrics: args.metrics,
            flush_on_exit: args.flush_on_exit,
            run_dir: Some(args.run_dir.clone()),
            lock_dir: None,
            requests: Some(requests),
        };
        super::run(opts, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("director daemon: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What `--check` says of a valid file.
pub(crate) fn summary(c: &super::Config) -> String {
    let reals: usize = c.services.iter().map(|s| s.reals.len()).sum();
    let mut s = format!("{} services, {reals} real servers", c.services.len());
    if let Some(b) = &c.bgp {
        let neighbors: Vec<String> = b.neighbors.iter().map(|n| n.address.to_string()).collect();
        s.push_str(&format!(
            "; BGP AS {}: {} VIPs to {} neighbors ({})",
            b.asn,
            b.vips.len(),
            neighbors.len(),
            neighbors.join(", ")
        ));
    }
    s
}

/// `--check`: the file on its own, then, when a director is attached here, whether a
/// running daemon would apply it (the slots left by services it does not manage, and no
/// removal of every service unless the file says so).
fn check(source: &ConfigSource, attached: Option<(&StateOptions, &PathBuf)>) -> ExitCode {
    let l = match source.load() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    for w in &l.warnings {
        eprintln!("warning: {w}");
    }
    let name = source
        .path()
        .map_or("configuration".into(), |p| p.display().to_string());
    let against = match attached {
        Some((state, run_dir)) => against_attached(&l.config, state, run_dir),
        None => Ok(String::new()),
    };
    match against {
        Ok(note) => {
            println!("{name}: valid ({}){note}", summary(&l.config));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e:#}");
            eprintln!("{name}: valid on its own, but the attached director would refuse it");
            ExitCode::FAILURE
        }
    }
}

/// Compare a configuration with the director attached here, as a reload would: a note
/// for the `valid` line, or why the daemon would refuse it.
fn against_attached(
    config: &super::Config,
    state: &StateOptions,
    run_dir: &std::path::Path,
) -> anyhow::Result<String> {
    use super::maps::MapStore as _;
    let Ok(mut maps) = super::maps::PinnedMaps::open(state.clone()) else {
        return Ok("; no director attached here to compare it with".into());
    };
    let capacity = maps.capacity()?;
    let actual = maps.read()?;
    let owned = super::runfiles::RunFiles::new(run_dir, state)
        .map(|f| f.read_owned())
        .unwrap_or_default();
    config.applicable(&super::config::Target {
        capacity,
        actual: &actual,
        owned: &owned,
    })?;
    Ok("; it fits the attached director".into())
}

#[cfg(test)]
mod tests {
    use clap::{Parser, Subcommand};

    use super::*;

    /// The CLI's wiring, as the director binary does it.
    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    #[derive(Subcommand)]
    enum Command {
        Daemon(DaemonArgs),
    }

    fn src(a: &DaemonArgs) -> String {
        match a.source() {
            ConfigSource::Native(p) => format!("native {}", p.display()),
            ConfigSource::Ldirectord(p) => format!("ldirectord {}", p.display()),
            ConfigSource::Fixed(_) => "fixed".into(),
        }
    }

    fn parse(args: &[&str]) -> DaemonArgs {
        let Command::Daemon(a) = Cli::try_parse_from(args).unwrap().command;
        a
    }

    #[test]
    fn every_spelling() {
        let a = parse(&[
            "director",
            "daemon",
            "--config",
            "/etc/d.toml",
            "--metrics",
            "127.0.0.1:9410",
        ]);
        assert_eq!(src(&a), format!("native {}", "/etc/d.toml"));
        assert_eq!(a.metrics, Some("127.0.0.1:9410".parse().unwrap()));
        assert!(!a.flush_on_exit);
        assert_eq!(a.run_dir, PathBuf::from(RUN_DIR));
        let a = parse(&["director", "daemon", "-c", "x.toml", "--flush-on-exit"]);
        assert!(a.flush_on_exit);
        assert_eq!(src(&a), format!("native {}", "x.toml"));
        let a = parse(&["director", "daemon", "--check", "x.toml"]);
        assert_eq!(src(&a), format!("native {}", "x.toml"));
        let a = parse(&["director", "daemon", "--ldirectord", "l.cf", "--check"]);
        assert!(a.check.is_some());
        assert_eq!(src(&a), format!("ldirectord {}", "l.cf"));
        let a = parse(&["director", "daemon", "--config=y.toml", "--check"]);
        assert_eq!(src(&a), format!("native {}", "y.toml"));
        let a = parse(&["director", "daemon"]);
        assert_eq!(src(&a), format!("native {}", DEFAULT_CONFIG));
        let a = parse(&["director", "daemon", "reload"]);
        assert!(matches!(a.action, Some(DaemonAction::Reload)));
        let a = parse(&["director", "daemon", "--run-dir", "/tmp/r", "reload"]);
        assert_eq!(a.run_dir, PathBuf::from("/tmp/r"));
        // The options of `reload` are accepted after it too, as clap users expect.
        for args in [
            [
                "director",
                "daemon",
                "reload",
                "--config",
                "x.toml",
                "--run-dir",
                "/tmp/r",
            ],
            [
                "director",
                "daemon",
                "--config",
                "x.toml",
                "reload",
                "--run-dir",
                "/tmp/r",
            ],
            [
                "director",
                "daemon",
                "--config",
                "x.toml",
                "--run-dir",
                "/tmp/r",
                "reload",
            ],
        ] {
            let a = parse(&args);
            assert!(matches!(a.action, Some(DaemonAction::Reload)), "{args:?}");
            assert_eq!(src(&a), "native x.toml", "{args:?}");
            assert_eq!(a.run_dir, PathBuf::from("/tmp/r"), "{args:?}");
        }
        let a = parse(&["director", "daemon", "reload", "--ldirectord", "l.cf"]);
        assert_eq!(src(&a), "ldirectord l.cf");
        assert!(
            Cli::try_parse_from([
                "director",
                "daemon",
                "reload",
                "-c",
                "a",
                "--ldirectord",
                "b"
            ])
            .is_err()
        );
        assert!(
            Cli::try_parse_from(["director", "daemon", "--config", "a", "--ldirectord", "b"])
                .is_err()
        );
        assert!(Cli::try_parse_from(["director", "daemon", "--metrics", "localhost"]).is_err());
    }
}
