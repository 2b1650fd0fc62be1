//! Files that outlive nothing but the daemon's process:
//! - `/run/director/daemon<state>.lock`: flock'ed while the daemon runs, and holding its
//!   pid and run directory. It is the one daemon per state: always in /run/director,
//!   whatever `--run-dir` says, so a second daemon for the same state is refused however
//!   it is started, and `director daemon reload` finds the daemon from any run directory;
//! - `<run dir>/daemon<state>.pid`: the pid, for service managers (`PIDFile=`);
//! - `<run dir>/daemon<state>.owned`: the services the daemon declared, one per line, so
//!   that a daemon started with a file that no longer declares one removes it (services
//!   it never declared are never touched);
//! - `/run/director/daemon<state>.bgp`: with `[bgp]`, what the daemon announces and
//!   whether BIRD took it, for `director status` (next to the lock, so found from the
//!   state alone).
//!
//! `<state>` is the state directory in canonical form ([`StateOptions::root`]) made into
//! a file name, as for the writers' marker: every spelling of one state directory names
//! the same files.

use std::{
    collections::BTreeSet,
    fs::File,
    io::{Read as _, Write as _},
    net::SocketAddr,
    path::{Path, PathBuf},
};

use nix::fcntl::{Flock, FlockArg};

use super::config::service_label;
use director_control::{
    model::{Protocol, ServiceAddr},
    state::{StateError, StateOptions},
};

/// Why the run files could not be made, read or acted on.
#[derive(Debug, thiserror::Error)]
pub enum RunFilesError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{what} {}: {cause}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error(transparent)]
    Other(#[from] std::io::Error),
    #[error(
        "another director daemon (pid {pid}, run files in {dir}) is running for this state ({})",
        lock.display()
    )]
    Running {
        pid: String,
        dir: String,
        lock: PathBuf,
    },
    #[error("another director daemon (pid {pid}) holds {}", path.display())]
    PidFileHeld { pid: String, path: PathBuf },
    #[error("no director daemon is running for this state ({} is missing): {cause}", path.display())]
    NotRunning {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("no director daemon is running for this state ({} is stale)", .0.display())]
    Stale(PathBuf),
    #[error("locking {}: {cause}", path.display())]
    Lock {
        path: PathBuf,
        cause: nix::errno::Errno,
    },
    #[error("{} holds no pid: {text:?}: {cause}", path.display())]
    NoPid {
        path: PathBuf,
        text: String,
        cause: std::num::ParseIntError,
    },
    #[error("signalling the daemon (pid {pid}): {cause}")]
    Signal { pid: i32, cause: std::io::Error },
}

/// An I/O error with what was being done to which file.
fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> RunFilesError + 'a {
    move |cause| RunFilesError::Io {
        what,
        path: path.to_owned(),
        cause,
    }
}

/// Where the daemon keeps its run files by default.
pub const RUN_DIR: &str = "/run/director";

#[derive(Clone, Debug)]
pub struct RunFiles {
    dir: PathBuf,
    stem: String,
    /// The state's daemon lock, in [`RUN_DIR`] whatever `dir` is.
    lock_path: PathBuf,
}

/// Held while the daemon runs; removes the lock and pid files when dropped.
#[derive(Debug)]
pub struct PidLock {
    paths: Vec<PathBuf>,
    _locks: Vec<Flock<File>>,
}

impl Drop for PidLock {
    fn drop(&mut self) {
        // Unlink first: a daemon starting now makes a new file and locks that.
        for p in &self.paths {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// What [`lock_file`] found.
enum Locked {
    /// The lock is ours.
    Held(Flock<File>),
    /// Another process holds the file locked; it wrote this text in it.
    ByOther(String),
}

/// Create (or open) `path` and flock it exclusively without waiting, making sure the
/// lock is on the file that is at `path` (a daemon that stopped meanwhile unlinks its
/// file, and a lock on an unlinked file would exclude nobody).
fn lock_file(path: &Path) -> Result<Locked, RunFilesError> {
    use std::os::unix::fs::MetadataExt as _;
    loop {
        let file = File::options()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(io("opening", path))?;
        let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((mut f, _)) => {
                let mut s = String::new();
                let _ = f.read_to_string(&mut s);
                return Ok(Locked::ByOther(s));
            }
        };
        let held = lock.metadata()?;
        match std::fs::metadata(path) {
            Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {
                return Ok(Locked::Held(lock));
            }
            _ => continue,
        }
    }
}

impl RunFiles {
    /// The run files of `state`'s daemon in `dir`, its lock in [`RUN_DIR`].
    pub fn new(dir: &Path, state: &StateOptions) -> Result<Self, RunFilesError> {
        Self::with_lock_dir(dir, Path::new(RUN_DIR), state)
    }

    /// As [`RunFiles::new`] with the state's daemon lock in `lock_dir`: every daemon of
    /// one state must name the same one (a test names its own, away from the host's).
    pub fn with_lock_dir(
        dir: &Path,
        lock_dir: &Path,
        state: &StateOptions,
    ) -> Result<Self, RunFilesError> {
        let root = state.root()?;
        let stem: String = root
            .to_string_lossy()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let stem = format!("daemon{stem}");
        Ok(Self {
            dir: dir.to_owned(),
            lock_path: lock_dir.join(format!("{stem}.lock")),
            stem,
        })
    }

    /// The state's daemon lock (in /run/director whatever the run directory).
    pub fn lock_path(&self) -> &Path {
        &self.lock_path
    }

    pub fn pid_path(&self) -> PathBuf {
        self.dir.join(format!("{}.pid", self.stem))
    }

    pub fn owned_path(&self) -> PathBuf {
        self.dir.join(format!("{}.owned", self.stem))
    }

    /// The BGP report's file (see the module documentation).
    pub fn bgp_path(&self) -> PathBuf {
        self.lock_path.with_extension("bgp")
    }

    /// The running daemon's BGP report; None when no daemon runs for this state (a
    /// report left by a killed one says nothing true) or it has no `[bgp]`.
    pub fn bgp_report(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.bgp_path()).ok()?;
        let file = File::open(&self.lock_path).ok()?;
        match Flock::lock(file, FlockArg::LockSharedNonblock) {
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Some(text),
            _ => None,
        }
    }

    /// Become the daemon of this state, or say which process already is.
    pub fn acquire(&self) -> Result<PidLock, RunFilesError> {
        let lock_dir = self.lock_path.parent().unwrap_or(Path::new(RUN_DIR));
        std::fs::create_dir_all(lock_dir).map_err(io("creating", lock_dir))?;
        let mut lock = match lock_file(&self.lock_path)? {
            Locked::Held(l) => l,
            Locked::ByOther(text) => {
                let mut lines = text.lines();
                return Err(RunFilesError::Running {
                    pid: lines.next().unwrap_or_default().trim().to_owned(),
                    dir: lines.next().unwrap_or_default().trim().to_owned(),
                    lock: self.lock_path.clone(),
                });
            }
        };
        lock.set_len(0)?;
        writeln!(&mut *lock, "{}\n{}", std::process::id(), self.dir.display())
            .map_err(io("writing", &self.lock_path))?;
        let mut held = PidLock {
            paths: vec![self.lock_path.clone()],
            _locks: vec![lock],
        };
        std::fs::create_dir_all(&self.dir).map_err(io("creating", &self.dir))?;
        let path = self.pid_path();
        // Under the state's lock, nobody else holds a pid file of this state; one
        // that is locked belongs to a daemon of another director build or a test's
        // leftover: say so.
        let mut pid = match lock_file(&path)? {
            Locked::Held(l) => l,
            Locked::ByOther(text) => {
                return Err(RunFilesError::PidFileHeld {
                    pid: text.trim().to_owned(),
                    path,
                });
            }
        };
        pid.set_len(0)?;
        writeln!(&mut *pid, "{}", std::process::id()).map_err(io("writing", &path))?;
        held.paths.push(path);
        held._locks.push(pid);
        Ok(held)
    }

    /// Send SIGHUP to the running daemon of this state (found through its lock, whatever
    /// its run directory); returns its pid.
    pub fn signal_reload(&self) -> Result<u32, RunFilesError> {
        let path = &self.lock_path;
        let mut file = File::open(path).map_err(|cause| RunFilesError::NotRunning {
            path: path.clone(),
            cause,
        })?;
        let mut s = String::new();
        file.read_to_string(&mut s).map_err(io("reading", path))?;
        // A file nobody holds locked was left by a daemon that died.
        match Flock::lock(file, FlockArg::LockSharedNonblock) {
            Ok(_) => return Err(RunFilesError::Stale(path.clone())),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {}
            Err((_, cause)) => {
                return Err(RunFilesError::Lock {
                    path: path.clone(),
                    cause,
                });
            }
        }
        let first = s.lines().next().unwrap_or_default().trim();
        let pid: i32 = first.parse().map_err(|cause| RunFilesError::NoPid {
            path: path.clone(),
            text: first.to_owned(),
            cause,
        })?;
        // SAFETY: plain syscall.
        if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
            return Err(RunFilesError::Signal {
                pid,
                cause: std::io::Error::last_os_error(),
            });
        }
        Ok(pid as u32)
    }

    /// The services a previous run declared.
    pub fn read_owned(&self) -> BTreeSet<ServiceAddr> {
        let text = std::fs::read_to_string(self.owned_path()).unwrap_or_default();
        text.lines().filter_map(parse_label).collect()
    }

    pub fn write_owned(&self, owned: &BTreeSet<ServiceAddr>) -> Result<(), RunFilesError> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.owned_path();
        let tmp = path.with_extension("owned.tmp");
        let text: String = owned
            .iter()
            .map(|a| format!("{}\n", service_label(a)))
            .collect();
        std::fs::write(&tmp, text).map_err(io("writing", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io("renaming to", &path))
    }
}

/// `tcp/10.0.0.100:80` back into a service address.
pub fn parse_label(s: &str) -> Option<ServiceAddr> {
    let (proto, addr) = s.trim().split_once('/')?;
    let proto = match proto {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        _ => return None,
    };
    let a: SocketAddr = addr.parse().ok()?;
    Some(ServiceAddr {
        proto,
        addr: a.ip(),
        port: a.port(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run files of a state of this test alone (its lock is in /run/director).
    fn files(tag: &str) -> (RunFiles, PathBuf) {
        let dir = std::env::temp_dir().join(format!("director-run-{}-{tag}", std::process::id()));
        let state = StateOptions {
            bpffs: Some(PathBuf::from(format!(
                "/sys/fs/bpf/test-state-{}-{tag}",
                std::process::id()
            ))),
        };
        (
            RunFiles::with_lock_dir(&dir, &dir.join("locks"), &state).unwrap(),
            dir,
        )
    }

    /// Two spellings of one state directory, with two run directories, are one state:
    /// one daemon, found by `reload` from either.
    #[test]
    fn every_spelling_and_run_directory_of_a_state_is_one_daemon() {
        let tag = format!("test-spelling-{}", std::process::id());
        let spellings = [
            format!("/sys/fs/bpf/{tag}"),
            format!("/sys/fs/bpf/{tag}/"),
            format!("/sys/fs/bpf/./{tag}"),
            format!("/sys/fs/bpf/{tag}/x/.."),
            format!("//sys/fs/bpf/{tag}"),
        ];
        let dir_a = std::env::temp_dir().join(format!("director-run-{}-a", std::process::id()));
        let locks = dir_a.join("locks");
        let first = RunFiles::with_lock_dir(
            &dir_a,
            &locks,
            &StateOptions {
                bpffs: Some(spellings[0].clone().into()),
            },
        )
        .unwrap();
        let held = first.acquire().unwrap();
        for (i, spelling) in spellings.iter().enumerate() {
            let dir_b =
                std::env::temp_dir().join(format!("director-run-{}-b{i}", std::process::id()));
            let state = StateOptions {
                bpffs: Some(spelling.into()),
            };
            let other = RunFiles::with_lock_dir(&dir_b, &locks, &state).unwrap();
            let e = other.acquire().unwrap_err().to_string();
            assert!(
                e.starts_with(&format!(
                    "another director daemon (pid {}, run files in {}) is running",
                    std::process::id(),
                    dir_a.display()
                )),
                "{spelling}: {e}"
            );
            // The same writers' marker too (an interrupted writer is completed under
            // any spelling).
            assert_eq!(
                state.writer_marker().unwrap(),
                StateOptions {
                    bpffs: Some(spellings[0].clone().into())
                }
                .writer_marker()
                .unwrap(),
                "{spelling}"
            );
            assert_eq!(
                other.owned_path().file_name(),
                first.owned_path().file_name()
            );
            let _ = std::fs::remove_dir_all(&dir_b);
        }
        // `reload` from another run directory finds the daemon: SIGHUP to ourselves
        // would end the test process, so the pid it reads is checked instead.
        let lock = std::fs::read_to_string(first.lock_path()).unwrap();
        assert_eq!(
            lock.lines().next(),
            Some(std::process::id().to_string().as_str())
        );
        drop(held);
        assert!(!first.lock_path().exists(), "the lock goes with the daemon");
        let _ = std::fs::remove_dir_all(&dir_a);
    }

    #[test]
    fn a_second_daemon_for_the_same_state_is_refused() {
        let (f, dir) = files("pid");
        let held = f.acquire().unwrap();
        let pid = std::fs::read_to_string(f.pid_path()).unwrap();
        assert_eq!(pid.trim(), std::process::id().to_string());
        let e = f.acquire().unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "another director daemon (pid {}, run files in {}) is running",
                std::process::id(),
                dir.display()
            )),
            "{e}"
        );
        drop(held);
        assert!(!f.pid_path().exists(), "the pid file goes with the daemon");
        let e = f.signal_reload().unwrap_err().to_string();
        assert!(e.starts_with("no director daemon is running"), "{e}");
        let again = f.acquire().unwrap();
        drop(again);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_stale_pid_file_is_not_signalled() {
        let (f, dir) = files("stale");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(f.lock_path().parent().unwrap()).unwrap();
        std::fs::write(f.lock_path(), "1\n").unwrap();
        let e = f.signal_reload().unwrap_err().to_string();
        let _ = std::fs::remove_file(f.lock_path());
        assert!(e.contains("is stale"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn owned_services_round_trip() {
        let (f, dir) = files("owned");
        assert!(f.read_owned().is_empty());
        let set: BTreeSet<ServiceAddr> = ["tcp/10.0.0.100:80", "udp/10.0.0.100:53"]
            .iter()
            .map(|s| parse_label(s).unwrap())
            .collect();
        f.write_owned(&set).unwrap();
        assert_eq!(f.read_owned(), set);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
