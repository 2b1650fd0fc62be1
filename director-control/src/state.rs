//! Where the director's state lives, and attaching, upgrading and detaching it.
//!
//! Everything is pinned in bpffs, so forwarding goes on with no process running:
//!
//! ```text
//! <root>/v<LAYOUT>/maps/DIR_*        the maps (the single source of truth)
//! <root>/v<LAYOUT>/links/<ifname>    one pinned XDP link per interface
//! <root>/decap/links/<ifname>        real-server decapsulation links
//! ```
//!
//! `<root>` is `--bpffs DIR`, else `$DIRECTOR_BPFFS`, else
//! `/sys/fs/bpf/director/netns-<cookie of our network namespace>`: distinct per network
//! namespace, so directors and decaps of several namespaces on one host never share pins.
//! The layout version in the path keeps a build with another map layout away from them.
//!
//! Writers serialise on an exclusive flock of the state directory (bpffs holds no regular
//! files, but a directory can be locked).

use std::{
    fs::File,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use aya::programs::{
    XdpMode,
    links::{FdLink, LinkInfo, PinnedLink},
};
use director_common::{maps::LAYOUT_VERSION, stats::Stat};

use crate::{Control, control::ControlError, datapath::DatapathError};

mod attach;
mod writer;
pub use attach::{AttachOptions, attach, attach_hint, decap_attach, mode_name};
pub use writer::{BeginWriteError, Repaired, WriteSession};

/// Environment variable naming the state directory.
pub const ENV_BPFFS: &str = "DIRECTOR_BPFFS";
const BPFFS: &str = "/sys/fs/bpf";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const LOCK_DIR: &str = "/run/director";

/// Why finding, attaching, detaching or opening the director's pinned state failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// /sys/fs/bpf is no bpffs here, and no ancestor process's mount namespace has one
    /// ([`prepare_mounts`]).
    #[error(
        "{0} is not a BPF filesystem here, and no parent process's mount namespace has one, so pins made here \
         would vanish with this command. Mount it in the host's mount namespace (`mount -t bpf bpf /sys/fs/bpf`) \
         and run the director there or with `nsenter --net=/run/netns/NAME director ...`"
    )]
    NoBpffs(PathBuf),
    /// The directory given (`--bpffs`, `$DIRECTOR_BPFFS`) is not on a bpffs.
    #[error(
        "{} is not on a BPF filesystem: the director pins its state in bpffs. Name a directory under \
         /sys/fs/bpf, or mount a bpffs first (`mount -t bpf bpf DIR`)",
        .0.display()
    )]
    NotBpffs(PathBuf),
    /// Nothing is attached in this state directory (the value): no maps to open, no lock
    /// to take.
    #[error(
        "the director is not attached in this network namespace (no state in {0}); run `director attach IFACE` first"
    )]
    NotAttached(PathBuf),
    /// No interface of this name in the current network namespace.
    #[error("interface {0} does not exist in this network namespace")]
    NoSuchInterface(String),
    /// The kernel refused an attachment: the message says why, likely, and what to do.
    #[error(
        "attaching {program} to {interface} in {} mode failed: {cause}{}",
        mode_name(*mode),
        attach_hint(*mode, interface, cause)
    )]
    Attach {
        /// The program's name in the object.
        program: &'static str,
        /// The interface's name.
        interface: String,
        /// The XDP mode asked for.
        mode: XdpMode,
        /// The kernel's error.
        cause: std::io::Error,
    },
    /// An attach failed and was undone entirely.
    #[error("{0} (nothing was changed)")]
    Undone(Box<StateError>),
    /// A file-system operation on the state failed.
    #[error("{what} {path}")]
    Io {
        /// What was being done (`creating`, `locking`, `unpinning`...): the message's first
        /// word.
        what: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Loading the object, or attaching one of its programs, failed.
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    /// Opening, initialising or writing the maps failed.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// A request that cannot be carried out as asked (an interface the director is not
    /// attached to, a size that contradicts the attached one...); the message says what.
    #[error("{0}")]
    Invalid(String),
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// How the caller chose the state directory.
#[derive(Clone, Debug, Default)]
pub struct StateOptions {
    /// `--bpffs DIR`.
    pub bpffs: Option<PathBuf>,
}

fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 == BPF_FS_MAGIC)
}

/// Make /sys/fs/bpf usable. Under `ip netns exec` it is not mounted (the command runs in
/// a private mount namespace with /sys remounted); we then join the mount namespace of
/// the nearest ancestor process that sees a bpffs there (the shell that ran `ip netns
/// exec`), which keeps our network namespace. Must run while the process has a single
/// thread (joining a mount namespace requires it): call it first thing in main.
pub fn prepare_mounts() -> Result<(), StateError> {
    if is_bpffs(Path::new(BPFFS)) {
        return Ok(());
    }
    let ours = std::fs::metadata("/proc/self/ns/mnt").map(|m| m.ino()).ok();
    let home = File::open("/proc/self/ns/mnt").ok();
    let mut pid = std::os::unix::process::parent_id();
    for _ in 0..16 {
        if pid <= 1 {
            break;
        }
        let ns = format!("/proc/{pid}/ns/mnt");
        let differs = std::fs::metadata(&ns)
            .map(|m| Some(m.ino()) != ours)
            .unwrap_or(false);
        if differs && let Ok(f) = File::open(&ns) {
            use nix::sched::{CloneFlags, setns};
            if setns(&f, CloneFlags::CLONE_NEWNS).is_ok() {
                if is_bpffs(Path::new(BPFFS)) {
                    return Ok(());
                }
                if let Some(h) = &home {
                    let _ = setns(h, CloneFlags::CLONE_NEWNS);
                }
            }
        }
        pid = parent_of(pid).unwrap_or(0);
    }
    Err(StateError::NoBpffs(PathBuf::from(BPFFS)))
}

/// `dir` in canonical form, checked to be on a bpffs. The part that exists is resolved
/// by the kernel; the rest (what `attach` will create) is appended without its `.` and
/// `..` (none of it exists, so none of it can be a symbolic link).
fn canonical_bpffs_dir(dir: &Path) -> Result<PathBuf, StateError> {
    use std::path::Component;
    let absolute = if dir.is_absolute() {
        dir.to_owned()
    } else {
        std::env::current_dir()
            .map_err(io("reading the current directory for", dir))?
            .join(dir)
    };
    let parts: Vec<Component> = absolute.components().collect();
    // The longest leading part that exists (the root always does).
    let known = (1..=parts.len())
        .rev()
        .find(|&n| std::fs::symlink_metadata(parts[..n].iter().collect::<PathBuf>()).is_ok())
        .unwrap_or(1);
    let existing: PathBuf = parts[..known].iter().collect();
    let mut path = std::fs::canonicalize(&existing).map_err(io("resolving", &existing))?;
    if !is_bpffs(&path) {
        return Err(StateError::NotBpffs(dir.to_owned()));
    }
    for part in &parts[known..] {
        match part {
            Component::ParentDir => {
                path.pop();
            }
            Component::Normal(n) => path.push(n),
            _ => {}
        }
    }
    // `..` may have climbed out of the bpffs.
    if !path.ancestors().find(|a| a.exists()).is_some_and(is_bpffs) {
        return Err(StateError::NotBpffs(dir.to_owned()));
    }
    Ok(path)
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

impl StateOptions {
    /// The state directory as a command line chooses it: `flag` (`--bpffs`), else
    /// `$DIRECTOR_BPFFS`, else (neither set) this network namespace's default.
    pub fn from_env(flag: Option<PathBuf>) -> Self {
        Self {
            bpffs: flag.or_else(|| std::env::var_os(ENV_BPFFS).map(PathBuf::from)),
        }
    }

    /// The state directory of this network namespace. A given directory is returned in
    /// canonical form (absolute, symbolic links resolved, no `.`, `..` or trailing `/`):
    /// it is the state's identity, which names its writers' marker and the daemon's run
    /// files, so every spelling of one directory must give the same one.
    pub fn root(&self) -> Result<PathBuf, StateError> {
        if let Some(dir) = &self.bpffs {
            return canonical_bpffs_dir(dir);
        }
        if !is_bpffs(Path::new(BPFFS)) {
            return Err(StateError::NoBpffs(PathBuf::from(BPFFS)));
        }
        Ok(Path::new(BPFFS)
            .join("director")
            .join(format!("netns-{}", netns_cookie()?)))
    }

    fn layout(&self) -> Result<PathBuf, StateError> {
        Ok(self.root()?.join(format!("v{LAYOUT_VERSION}")))
    }

    /// Where the maps are pinned (`<root>/v<LAYOUT>/maps`), whether or not anything is.
    pub fn maps_dir(&self) -> Result<PathBuf, StateError> {
        Ok(self.layout()?.join("maps"))
    }

    /// Where the balancer's links are pinned, one file per interface
    /// (`<root>/v<LAYOUT>/links`).
    pub fn links_dir(&self) -> Result<PathBuf, StateError> {
        Ok(self.layout()?.join("links"))
    }

    /// Where the decapsulation links are pinned, one file per interface
    /// (`<root>/decap/links`).
    pub fn decap_dir(&self) -> Result<PathBuf, StateError> {
        Ok(self.root()?.join("decap").join("links"))
    }

    /// Take the writers' lock (released on drop): an exclusive flock on the state
    /// directory itself, so there is no lock file to leave behind. Fails when nothing is
    /// attached here (there is nothing to write to).
    pub fn lock(&self) -> Result<Lock, StateError> {
        let root = self.root()?;
        if !root.is_dir() {
            return Err(StateError::NotAttached(root));
        }
        Self::flock_dir(&root).map_err(|e| {
            // Removed by the writer we waited for (a detach of everything).
            if root.is_dir() {
                e
            } else {
                StateError::NotAttached(root.clone())
            }
        })
    }

    /// Lock the directory that is at `dir` when the lock is granted: a writer that held
    /// it may have removed it (a failed first attach, `detach`) while this one waited, and
    /// a lock on a removed directory would exclude nobody.
    fn flock_dir(dir: &Path) -> Result<Lock, StateError> {
        loop {
            let file = File::open(dir).map_err(io("opening", dir))?;
            let file = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(
                |(_, e)| StateError::Io {
                    what: "locking",
                    path: dir.to_owned(),
                    source: e.into(),
                },
            )?;
            let held = file.metadata().map_err(io("reading", dir))?;
            match std::fs::metadata(dir) {
                Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {
                    return Ok(Lock { _file: file });
                }
                Ok(_) => continue,
                Err(e) => return Err(io("opening", dir)(e)),
            }
        }
    }

    /// The writers' marker: a writer creates it (under the lock) before changing the maps
    /// and removes it when done, so a writer that finds it knows the previous one was
    /// killed mid-operation and completes its change first
    /// (`Control::repair_interrupted`). It lives beside
    /// the other run files under /run/director (cleared at boot, like the pins), which
    /// this creates when missing.
    pub fn writer_marker(&self) -> Result<PathBuf, StateError> {
        std::fs::create_dir_all(LOCK_DIR).map_err(io("creating", Path::new(LOCK_DIR)))?;
        let name: String = self
            .root()?
            .to_string_lossy()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        Ok(Path::new(LOCK_DIR).join(format!("{name}.writing")))
    }

    /// The control library over the pinned maps.
    pub fn open_control(&self) -> Result<Control, StateError> {
        let maps = self.maps_dir()?;
        if !crate::datapath::pins_exist(&maps) {
            return Err(StateError::NotAttached(self.root()?));
        }
        Ok(Control::from_pins(&maps)?)
    }
}

/// The network namespace's cookie: unique for the life of the system, unlike its inode
/// number, which a later namespace may reuse (and so inherit stale pins).
pub fn netns_cookie() -> Result<u64, StateError> {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0")
        .or_else(|_| std::net::UdpSocket::bind("[::1]:0"))
        .map_err(io("opening a socket for", Path::new("SO_NETNS_COOKIE")))?;
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cookie`.
    let rc = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(StateError::Io {
            what: "reading",
            path: PathBuf::from("SO_NETNS_COOKIE"),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(cookie)
}

/// The writers' lock; held while alive.
pub struct Lock {
    _file: nix::fcntl::Flock<File>,
}

/// The index of interface `name` in the current network namespace.
pub fn ifindex(name: &str) -> Result<u32, StateError> {
    nix::net::if_::if_nametoindex(name).map_err(|_| StateError::NoSuchInterface(name.to_owned()))
}

/// Interfaces with a pinned link in `dir`.
pub fn pinned_interfaces(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// `director detach [IFACE...]`: unpin the links (the program leaves those interfaces);
/// with no interface, every link and the maps (all connections are forgotten).
pub fn detach(state: &StateOptions, interfaces: &[String]) -> Result<(), StateError> {
    let _lock = state.lock()?;
    let links = state.links_dir()?;
    let all = interfaces.is_empty();
    let names = if all {
        pinned_interfaces(&links)
    } else {
        interfaces.to_vec()
    };
    for name in &names {
        let p = links.join(name);
        if !p.exists() {
            return Err(StateError::Invalid(format!(
                "the director is not attached to {name}"
            )));
        }
        std::fs::remove_file(&p).map_err(io("unpinning", &p))?;
        if !all
            && let Ok(idx) = ifindex(name)
            && let Ok(mut control) = state.open_control()
        {
            control.unregister_interface(idx)?;
        }
    }
    if all {
        // The reals go with the maps, and so do the neighbour entries made for them.
        let reals = state
            .open_control()
            .and_then(|c| Ok(c.real_addresses()?))
            .unwrap_or_default();
        let layout = state.layout()?;
        if layout.exists() {
            std::fs::remove_dir_all(&layout).map_err(io("removing", &layout))?;
        }
        remove_if_empty(&state.root()?);
        // Best effort: an entry left behind only keeps being probed by the kernel.
        let _ = crate::neighbours::release(&reals, &[]);
    }
    Ok(())
}

fn remove_if_empty(dir: &Path) {
    let _ = std::fs::remove_dir(dir);
    if let Some(parent) = dir.parent()
        && parent.file_name().is_some_and(|n| n == "director")
    {
        let _ = std::fs::remove_dir(parent);
    }
}

/// Every IPv4 and IPv6 address of this network namespace's interfaces.
pub(crate) fn local_addrs() -> Result<Vec<std::net::IpAddr>, StateError> {
    let addrs = nix::ifaddrs::getifaddrs()
        .map_err(|e| StateError::Invalid(format!("listing this host's addresses: {e}")))?;
    let mut v: Vec<std::net::IpAddr> = addrs
        .filter_map(|a| {
            let a = a.address?;
            match (a.as_sockaddr_in(), a.as_sockaddr_in6()) {
                (Some(v4), _) => Some(v4.ip().into()),
                (None, Some(v6)) => Some(v6.ip().into()),
                (None, None) => None,
            }
        })
        .collect();
    v.sort();
    v.dedup();
    Ok(v)
}

/// `director decap detach IFACE`.
pub fn decap_detach(state: &StateOptions, ifname: &str) -> Result<(), StateError> {
    let dir = state.decap_dir()?;
    let p = dir.join(ifname);
    let not_attached = || StateError::Invalid(format!("decapsulation is not attached to {ifname}"));
    if !p.exists() {
        return Err(not_attached());
    }
    let _lock = state.lock().map_err(|_| not_attached())?;
    if !p.exists() {
        return Err(not_attached());
    }
    std::fs::remove_file(&p).map_err(io("unpinning", &p))?;
    let _ = std::fs::remove_dir(&dir);
    let _ = std::fs::remove_dir(dir.parent().unwrap_or(&dir));
    remove_if_empty(&state.root()?);
    Ok(())
}

/// One pinned attachment, for `director status`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LinkStatus {
    /// The interface's name (the pin's file name).
    pub interface: String,
    /// Whether an interface of that name exists in this network namespace now.
    pub present: bool,
    /// The kernel's id of the link; 0 when the pin could not be read.
    pub link_id: u32,
    /// The id of the program the link runs; 0 when the pin could not be read.
    pub program_id: u32,
    /// The program's tag (16 hex digits, a hash of its instructions); empty when unknown.
    pub program_tag: String,
    /// `native` or `generic`; empty when the interface has gone.
    pub mode: String,
}

/// What the kernel says of every link pinned in `dir` ([`StateOptions::links_dir`] or
/// [`StateOptions::decap_dir`]), sorted by interface name.
pub fn link_status(dir: &Path) -> Vec<LinkStatus> {
    pinned_interfaces(dir)
        .into_iter()
        .map(|name| {
            let info: Option<LinkInfo> = PinnedLink::from_pin(dir.join(&name))
                .ok()
                .and_then(|p| FdLink::from(p).info().ok());
            let (link_id, program_id) = info.map_or((0, 0), |i| (i.id(), i.program_id()));
            let tag = aya::programs::loaded_programs()
                .filter_map(|p| p.ok())
                .find(|p| p.id() == program_id)
                .map(|p| format!("{:016x}", p.tag()))
                .unwrap_or_default();
            let index = ifindex(&name).ok();
            let mode = index
                .and_then(|i| crate::links::attached_mode(i).ok().flatten())
                .map_or("", mode_name);
            LinkStatus {
                present: index.is_some(),
                mode: mode.to_owned(),
                interface: name,
                link_id,
                program_id,
                program_tag: tag,
            }
        })
        .collect()
}

/// The non-zero outcome counters (`DIR_STATS`) of the loaded programs `program_ids`,
/// summed: a decap program's are its own, unpinned, found through the program.
pub fn program_counters(program_ids: &[u32]) -> Vec<(Stat, u64)> {
    let mut sums = vec![0u64; Stat::COUNT as usize];
    let mut seen = std::collections::BTreeSet::new();
    for info in aya::programs::loaded_programs().filter_map(|p| p.ok()) {
        if !program_ids.contains(&info.id()) {
            continue;
        }
        for map_id in info.map_ids().ok().flatten().unwrap_or_default() {
            let Ok(data) = aya::maps::MapData::from_id(map_id) else {
                continue;
            };
            let is_stats = data
                .info()
                .ok()
                .is_some_and(|i| i.name_as_str() == Some(director_common::maps::STATS));
            if !is_stats || !seen.insert(map_id) {
                continue;
            }
            let Ok(stats) =
                aya::maps::PerCpuArray::<_, u64>::try_from(aya::maps::Map::PerCpuArray(data))
            else {
                continue;
            };
            for (i, sum) in sums.iter_mut().enumerate() {
                if let Ok(v) = stats.get(&(i as u32), 0) {
                    *sum += v.iter().sum::<u64>();
                }
            }
        }
    }
    Stat::ALL
        .into_iter()
        .zip(sums)
        .filter(|(_, v)| *v != 0)
        .collect()
}

/// `director log`: print the data path's aya-log records (misconfiguration warnings, and
/// with `director debug on` one line per scheduled flow) until `stop` returns true.
pub fn follow_log(state: &StateOptions, mut stop: impl FnMut() -> bool) -> Result<(), StateError> {
    let links = state.links_dir()?;
    let program_id = link_status(&links)
        .into_iter()
        .map(|l| l.program_id)
        .find(|id| *id != 0)
        .ok_or_else(|| StateError::NotAttached(state.root().unwrap_or_default()))?;
    let mut logger = open_log(program_id, log::logger())?;
    use std::os::fd::AsFd as _;
    while !stop() {
        let mut fds = [nix::poll::PollFd::new(
            logger.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        // Wake up now and then to check `stop`.
        let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(200u16));
        logger.flush();
    }
    Ok(())
}

/// The data path's log buffer of the load the attached program `program_id` belongs to,
/// its records handed to `logger` at each `flush`.
pub fn open_log<T: log::Log>(
    program_id: u32,
    logger: T,
) -> Result<aya_log::EbpfLogger<T>, StateError> {
    aya_log::EbpfLogger::init_from_id_with_logger(log_writer(program_id)?, logger)
        .map_err(|e| StateError::Invalid(format!("opening the program's log buffer: {e}")))
}

/// A program that writes the log buffer of the attached program `attached`'s load. The
/// attached program never logs (only its tail calls do: the new-flow programs, the
/// IPv6 trace), so its own maps do not include the buffer; a program of the same load
/// is one that shares its read-only data (`.rodata`, never pinned, one per load).
fn log_writer(attached: u32) -> Result<u32, StateError> {
    const LOG_MAP: &str = "AYA_LOGS";
    let name_of = |id: u32| {
        aya::maps::MapInfo::from_id(id)
            .ok()
            .and_then(|m| m.name_as_str().map(str::to_owned))
    };
    let maps_of = |info: &aya::programs::ProgramInfo| -> Vec<(u32, String)> {
        info.map_ids()
            .ok()
            .flatten()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|id| Some((id, name_of(id)?)))
            .collect()
    };
    let programs: Vec<_> = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .collect();
    let missing = || StateError::Invalid("the attached program's log buffer was not found".into());
    let ours = programs
        .iter()
        .find(|p| p.id() == attached)
        .ok_or_else(missing)?;
    let maps = maps_of(ours);
    if maps.iter().any(|(_, n)| n == LOG_MAP) {
        return Ok(attached);
    }
    let rodata = maps
        .iter()
        .find(|(_, n)| n == ".rodata")
        .map(|(id, _)| *id)
        .ok_or_else(missing)?;
    programs
        .iter()
        .find(|p| {
            let m = maps_of(p);
            m.iter().any(|(id, _)| *id == rodata) && m.iter().any(|(_, n)| n == LOG_MAP)
        })
        .map(|p| p.id())
        .ok_or_else(missing)
}
