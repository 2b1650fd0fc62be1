//! Named network namespaces (`/run/netns/NAME`), entering them from a thread, running
//! commands in them, and the housekeeping shared by all labs of all processes.

use std::ffi::OsString;
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow, bail};
use nix::sched::{CloneFlags, setns};

use super::netlink;
use super::topology::sysctl_path;

/// Where `ip netns` keeps its namespace handles.
pub(crate) const NETNS_DIR: &str = "/run/netns";
/// Where the BPF filesystem is (or gets) mounted.
pub(crate) const BPFFS_ROOT: &str = "/sys/fs/bpf";
/// Every lab namespace and bpffs directory name starts with this, then the owner's pid.
pub(crate) const PREFIX: &str = "dlab";

/// A network namespace made by a lab, reachable as `/run/netns/NAME`.
///
/// The [`Lab`](super::Lab) that made it deletes it when dropped.
#[derive(Debug)]
pub struct Netns {
    name: String,
    label: String,
}

impl Netns {
    /// The real namespace name (as in `ip netns list`), unique per lab and process.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The lab name of the host living here (or `"switch"` for the lab's bridge namespace).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// `/run/netns/NAME`.
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    /// Run a closure on a fresh thread that has setns(CLONE_NEWNET)'d into this namespace;
    /// sockets created inside belong to it. Returns the closure's value; propagates a panic.
    ///
    /// The calling thread blocks until the closure returns. Panics if the thread cannot be
    /// started or cannot enter the namespace; see
    /// [`Netns::try_run`] for the fallible form.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.try_run(f)
            .unwrap_or_else(|e| panic!("running in netns {}: {e:#}", self.name))
    }

    /// Like [`Netns::run`], but a failure to start the thread or to enter the namespace
    /// is an error instead of a panic. A panic of the closure is still propagated.
    pub fn try_run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let path = self.path();
        let handle = std::thread::Builder::new()
            .name(format!("netns-{}", self.label))
            .spawn(move || -> Result<T> {
                enter(&path)?;
                Ok(f())
            })
            .context("spawning a thread")?;
        match handle.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Run a command inside the namespace (nsenter --net=PATH, which keeps /sys/fs/bpf
    /// visible; NOT `ip netns exec`), returning its Output; error if it cannot start.
    /// `args[0]` is the program.
    pub fn exec(&self, args: &[&str]) -> Result<Output> {
        if args.is_empty() {
            bail!("Netns::exec needs a program to run");
        }
        let tools = tools()?;
        Command::new(&tools.nsenter)
            .arg(format!("--net={}", self.path().display()))
            .arg("--")
            .args(args)
            .output()
            .with_context(|| format!("running {args:?} in netns {}", self.name))
    }

    /// Like [`Netns::exec`], but a non-zero exit status is an error (carrying stderr);
    /// returns stdout as text.
    pub fn exec_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.exec(args)?;
        if !out.status.success() {
            bail!(
                "{args:?} in netns {} failed ({}): {}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The index of interface `ifname` in this namespace (asked over rtnetlink).
    pub fn ifindex(&self, ifname: &str) -> Result<u32> {
        Ok(netlink::link_info(self, ifname)?.0)
    }

    /// The MAC address of interface `ifname` in this namespace (asked over rtnetlink).
    pub fn mac(&self, ifname: &str) -> Result<[u8; 6]> {
        Ok(netlink::link_info(self, ifname)?.1)
    }

    /// Reads a `net.` sysctl as this namespace sees it (trimmed).
    pub fn sysctl(&self, key: &str) -> Result<String> {
        let path = sysctl_path(key)?;
        self.try_run(move || {
            std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))
        })?
        .map(|s| s.trim().to_owned())
    }

    /// Writes a `net.` sysctl inside this namespace (the /proc/sys/net view follows the
    /// netns of the thread that opens the file).
    pub fn set_sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = sysctl_path(key)?;
        let value = value.to_owned();
        self.try_run(move || {
            std::fs::write(&path, value.as_bytes())
                .with_context(|| format!("writing {value:?} to {path}"))
        })?
        .with_context(|| format!("netns {}", self.name))
    }

    /// Makes a new named namespace with `ip netns add`.
    pub(crate) fn create(name: String, label: &str) -> Result<Netns> {
        let tools = tools()?;
        let out = Command::new(&tools.ip)
            .args(["netns", "add", &name])
            .output()
            .context("running ip netns add")?;
        if !out.status.success() {
            bail!(
                "ip netns add {name} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(Netns {
            name,
            label: label.to_owned(),
        })
    }

    /// Deletes the namespace with `ip netns del`.
    pub(crate) fn delete(&self) -> Result<()> {
        delete_netns(&self.name)
    }
}

/// Moves the calling thread into the network namespace at `path`.
pub(crate) fn enter(path: &Path) -> Result<()> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    setns(&f, CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("setns(CLONE_NEWNET) into {}", path.display()))
}

fn delete_netns(name: &str) -> Result<()> {
    let tools = tools()?;
    let out = Command::new(&tools.ip)
        .args(["netns", "del", name])
        .output()
        .context("running ip netns del")?;
    if !out.status.success() {
        bail!(
            "ip netns del {name} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The programs a lab shells out to, found once.
pub(crate) struct Tools {
    pub ip: PathBuf,
    pub nsenter: PathBuf,
    pub ethtool: PathBuf,
}

/// Finds `ip`, `nsenter` and `ethtool`, or says which Debian package is missing.
pub(crate) fn tools() -> Result<&'static Tools> {
    static TOOLS: OnceLock<Tools> = OnceLock::new();
    if let Some(t) = TOOLS.get() {
        return Ok(t);
    }
    let found = Tools {
        ip: find_tool("ip", "iproute2")?,
        nsenter: find_tool("nsenter", "util-linux")?,
        ethtool: find_tool("ethtool", "ethtool")?,
    };
    Ok(TOOLS.get_or_init(|| found))
}

fn find_tool(name: &str, package: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra: OsString = "/usr/sbin:/sbin:/usr/bin:/bin".into();
    std::env::split_paths(&path)
        .chain(std::env::split_paths(&extra))
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
        .ok_or_else(|| anyhow!("`{name}` not found: install the Debian package `{package}`"))
}

/// The pid encoded in a lab name `dlab<pid>-...`, if it is one.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, _) = rest.split_once('-')?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

fn is_stale(name: &str) -> bool {
    match owner_pid(name) {
        Some(pid) => pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists(),
        None => false,
    }
}

/// Under a machine-wide lock: removes namespaces and bpffs directories left by lab
/// processes that no longer exist, and makes sure /sys/fs/bpf is a BPF filesystem
/// (mounting one there if nothing is; it is left mounted, as systemd would have it).
pub(crate) fn housekeeping() -> Result<()> {
    use nix::fcntl::{Flock, FlockArg};
    let lock = File::create("/run/director-lab.lock").context("creating /run/director-lab.lock")?;
    let _lock = Flock::lock(lock, FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .context("locking /run/director-lab.lock")?;

    if let Ok(entries) = std::fs::read_dir(NETNS_DIR) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if is_stale(&name) {
                match delete_netns(&name) {
                    Ok(()) => log::info!("lab: removed stale namespace {name}"),
                    Err(e) => log::warn!("lab: could not remove stale namespace {name}: {e:#}"),
                }
            }
        }
    }

    ensure_bpffs()?;
    if let Ok(entries) = std::fs::read_dir(BPFFS_ROOT) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if is_stale(&name) {
                match std::fs::remove_dir_all(e.path()) {
                    Ok(()) => log::info!("lab: removed stale bpffs dir {name}"),
                    Err(err) => log::warn!("lab: could not remove stale bpffs dir {name}: {err}"),
                }
            }
        }
    }
    Ok(())
}

fn ensure_bpffs() -> Result<()> {
    use nix::sys::statfs::{BPF_FS_MAGIC, statfs};
    let st = statfs(BPFFS_ROOT).with_context(|| format!("statfs {BPFFS_ROOT}"))?;
    if st.filesystem_type() == BPF_FS_MAGIC {
        return Ok(());
    }
    nix::mount::mount(
        Some("bpf"),
        BPFFS_ROOT,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .with_context(|| {
        format!("{BPFFS_ROOT} is not a BPF filesystem and mounting one there failed")
    })?;
    log::info!("lab: mounted a BPF filesystem on {BPFFS_ROOT}");
    Ok(())
}
