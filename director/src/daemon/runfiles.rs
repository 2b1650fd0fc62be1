//! Files under /run/director that outlive nothing but the daemon's process:
//! - `daemon-<state>.pid`: the running daemon's pid, flock'ed while it runs (a second
//!   daemon for the same state refuses to start; `director daemon reload` signals it);
//! - `daemon-<state>.owned`: the services the daemon declared, one per line, so that a
//!   daemon started with a file that no longer declares one removes it (services it
//!   never declared are never touched).
//!
//! `<state>` is the state directory (one per network namespace) made into a file name,
//! as for the writers' lock.

use std::{
    collections::BTreeSet,
    fs::File,
    io::{Read as _, Write as _},
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use nix::fcntl::{Flock, FlockArg};

use super::config::service_label;
use crate::{
    model::{Protocol, ServiceAddr},
    state::StateOptions,
};

/// Where the daemon keeps its run files by default.
pub const RUN_DIR: &str = "/run/director";

#[derive(Clone, Debug)]
pub struct RunFiles {
    dir: PathBuf,
    stem: String,
}

/// Held while the daemon runs; removes the pid file when dropped.
#[derive(Debug)]
pub struct PidLock {
    path: PathBuf,
    _lock: Flock<File>,
}

impl Drop for PidLock {
    fn drop(&mut self) {
        // Unlink first: a daemon starting now makes a new file and locks that.
        let _ = std::fs::remove_file(&self.path);
    }
}

impl RunFiles {
    pub fn new(dir: &Path, state: &StateOptions) -> anyhow::Result<Self> {
        let root = state.root()?;
        let stem: String = root
            .to_string_lossy()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        Ok(Self {
            dir: dir.to_owned(),
            stem: format!("daemon{stem}"),
        })
    }

    pub fn pid_path(&self) -> PathBuf {
        self.dir.join(format!("{}.pid", self.stem))
    }

    pub fn owned_path(&self) -> PathBuf {
        self.dir.join(format!("{}.owned", self.stem))
    }

    /// Become the daemon of this state, or say which process already is.
    pub fn acquire(&self) -> anyhow::Result<PidLock> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let path = self.pid_path();
        let file = File::options()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((mut f, _)) => {
                let mut s = String::new();
                let _ = f.read_to_string(&mut s);
                bail!(
                    "another director daemon (pid {}) is running for this network namespace ({})",
                    s.trim(),
                    path.display()
                );
            }
        };
        lock.set_len(0)?;
        writeln!(&mut *lock, "{}", std::process::id())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(PidLock { path, _lock: lock })
    }

    /// Send SIGHUP to the running daemon; returns its pid.
    pub fn signal_reload(&self) -> anyhow::Result<u32> {
        let path = self.pid_path();
        let mut file = File::open(&path).with_context(|| {
            format!(
                "no director daemon is running for this network namespace ({} is missing)",
                path.display()
            )
        })?;
        let mut s = String::new();
        file.read_to_string(&mut s)
            .with_context(|| format!("reading {}", path.display()))?;
        // A file nobody holds locked was left by a daemon that died.
        match Flock::lock(file, FlockArg::LockSharedNonblock) {
            Ok(_) => bail!(
                "no director daemon is running for this network namespace ({} is stale)",
                path.display()
            ),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {}
            Err((_, e)) => bail!("locking {}: {e}", path.display()),
        }
        let pid: i32 = s
            .trim()
            .parse()
            .with_context(|| format!("{} holds no pid: {:?}", path.display(), s.trim()))?;
        // SAFETY: plain syscall.
        if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
            bail!(
                "signalling the daemon (pid {pid}): {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(pid as u32)
    }

    /// The services a previous run declared.
    pub fn read_owned(&self) -> BTreeSet<ServiceAddr> {
        let text = std::fs::read_to_string(self.owned_path()).unwrap_or_default();
        text.lines().filter_map(parse_label).collect()
    }

    pub fn write_owned(&self, owned: &BTreeSet<ServiceAddr>) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.owned_path();
        let tmp = path.with_extension("owned.tmp");
        let text: String = owned
            .iter()
            .map(|a| format!("{}\n", service_label(a)))
            .collect();
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))
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

    fn files(tag: &str) -> (RunFiles, PathBuf) {
        let dir = std::env::temp_dir().join(format!("director-run-{}-{tag}", std::process::id()));
        let state = StateOptions {
            bpffs: Some(PathBuf::from("/sys/fs/bpf/test-state")),
        };
        (RunFiles::new(&dir, &state).unwrap(), dir)
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
                "another director daemon (pid {}) is running",
                std::process::id()
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
        std::fs::write(f.pid_path(), "1\n").unwrap();
        let e = f.signal_reload().unwrap_err().to_string();
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
