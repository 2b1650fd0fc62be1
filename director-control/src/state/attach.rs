//! `director attach` and `director decap attach`: all or nothing.
//!
//! An attach either completes on every interface it concerns or leaves the system as it
//! found it: no map pins, no state directory, no links, and the programs it found still
//! running. Each change is recorded in a journal as it is made, in an order that puts the
//! likeliest failures first (new links, which a driver or another XDP program may
//! refuse, before in-place swaps), and a failure undoes the journal backwards.
//!
//! What an attach concerns (the semantics operators rely on):
//! - every named interface: a new link in the mode asked (native when not asked), or the
//!   pinned link swapped to the new program in place;
//! - every other interface the director is attached to: swapped in place as well, so one
//!   program runs everywhere after an upgrade;
//! - a mode is never changed implicitly: without `--mode` a pinned link keeps its mode;
//!   with a `--mode` that differs, the link is replaced by one in that mode (a moment
//!   without the program) and the command says so.

use std::{
    os::fd::{AsFd as _, BorrowedFd, OwnedFd},
    path::{Path, PathBuf},
};

use aya::programs::XdpMode;
use director_common::maps::{self as m, LAYOUT_VERSION};

use super::{StateError, StateOptions, io, pinned_interfaces};
use crate::{
    Datapath, LoadOptions,
    datapath::{
        ALL_MAPS, PROG_DECAP, PROG_DIRECTOR, accept_local_replies, keeps_store_order, pins_exist,
    },
    links,
};

/// How to attach.
#[derive(Clone, Debug)]
pub struct AttachOptions {
    /// The interfaces to attach to, by name; the interfaces attached before get the new
    /// program in place as well.
    pub interfaces: Vec<String>,
    /// None: native for a new link, and a pinned link keeps its mode.
    pub mode: Option<XdpMode>,
    /// None: keep what is pinned (or the default for a first attach).
    pub conn_table: Option<u32>,
    /// Entries of each service's Maglev table (a prime). None: keep what is pinned (or the
    /// default for a first attach).
    pub table_size: Option<u32>,
    /// None: keep what is pinned (or the default for a first attach).
    pub max_services: Option<u32>,
    /// None: keep what is pinned (or the default for a first attach).
    pub max_reals: Option<u32>,
    /// None: keep what is pinned (or the default for a first attach).
    pub persist_table: Option<u32>,
}

/// The mode's name on the command line.
pub fn mode_name(mode: XdpMode) -> &'static str {
    match mode {
        XdpMode::Skb => "generic",
        XdpMode::Driver => "native",
        XdpMode::Hardware => "offload",
        XdpMode::Default => "default",
    }
}

/// The likely cause of a refused attach, and what to do about it.
pub fn attach_hint(mode: XdpMode, ifname: &str, e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EOPNOTSUPP) if mode == XdpMode::Driver => format!(
            ": the driver of {ifname} has no native XDP; `--mode generic` works with every driver (slower)"
        ),
        Some(libc::EBUSY) | Some(libc::EEXIST) => format!(
            ": another XDP program is attached to {ifname} (`ip link show dev {ifname}` names it); \
             remove it (`ip link set dev {ifname} xdp off`, or with the tool that attached it) or use another interface"
        ),
        Some(libc::ERANGE) if mode == XdpMode::Driver => format!(
            ": the MTU of {ifname} is too large for native XDP; lower it or use `--mode generic`"
        ),
        _ => String::new(),
    }
}

fn attach_error(
    program: &'static str,
    interface: &str,
    mode: XdpMode,
    source: std::io::Error,
) -> StateError {
    StateError::Attach {
        program,
        interface: interface.to_owned(),
        mode,
        cause: source,
    }
}

/// Directories an attach may create, and which of them it did.
struct Dirs {
    /// Outermost first.
    created: Vec<PathBuf>,
}

impl Dirs {
    /// Create `dirs` (outermost first), noting which did not exist.
    fn create(dirs: &[PathBuf]) -> Result<Self, StateError> {
        let mut created = Vec::new();
        for d in dirs {
            if !d.exists() {
                std::fs::create_dir(d).map_err(io("creating", d))?;
                created.push(d.clone());
            }
        }
        Ok(Self { created })
    }

    /// Remove the directories this attach created, innermost first (they are empty again
    /// once the journal is undone).
    fn remove(&self) {
        for d in self.created.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// What to do on one interface.
enum Step {
    /// A new link: none is pinned, or the pinned one's interface has gone (`stale`).
    New {
        name: String,
        ifindex: u32,
        mode: XdpMode,
        stale: bool,
    },
    /// Swap the program of the pinned link in place (its mode stays).
    Swap {
        name: String,
        link: OwnedFd,
        program_id: u32,
        mode: Option<XdpMode>,
        named: bool,
    },
    /// Replace the pinned link by one of another mode.
    Remode {
        name: String,
        ifindex: u32,
        link: OwnedFd,
        program_id: u32,
        from: XdpMode,
        to: XdpMode,
    },
}

/// A change made, and how to take it back.
enum Done {
    /// A new link, pinned at `pinned` once committed.
    Linked {
        link: OwnedFd,
        pinned: Option<PathBuf>,
    },
    /// A link swapped to the new program; `old` ran before.
    Swapped { link: OwnedFd, old: OwnedFd },
    /// A link replaced by `new` (pinned at `path`) in another mode; `old` ran before in
    /// mode `from`.
    Remoded {
        path: PathBuf,
        ifindex: u32,
        old: OwnedFd,
        from: XdpMode,
        new: OwnedFd,
    },
}

impl Done {
    /// Links are detached explicitly: the last reference to a pinned link may be released
    /// after the call that drops it, and a link made next on the same interface must find
    /// it free.
    fn undo(self) -> Result<(), UndoError> {
        match self {
            Done::Linked { link, pinned } => {
                if let Some(p) = pinned {
                    let _ = std::fs::remove_file(&p);
                }
                links::detach(link.as_fd()).map_err(UndoError::Detach)
            }
            Done::Swapped { link, old } => {
                links::update(link.as_fd(), old.as_fd()).map_err(UndoError::PutBack)
            }
            Done::Remoded {
                path,
                ifindex,
                old,
                from,
                new,
            } => {
                let _ = std::fs::remove_file(&path);
                links::detach(new.as_fd()).map_err(UndoError::Detach)?;
                let back =
                    links::create(old.as_fd(), ifindex, from).map_err(UndoError::Reattach)?;
                links::pin(back.as_fd(), &path).map_err(|cause| UndoError::Pin { path, cause })
            }
        }
    }
}

/// A change of a failed attach that could not be undone.
#[derive(Debug, thiserror::Error)]
enum UndoError {
    #[error("detaching a new link: {0}")]
    Detach(std::io::Error),
    #[error("putting the previous program back: {0}")]
    PutBack(std::io::Error),
    #[error("re-attaching the previous program: {0}")]
    Reattach(std::io::Error),
    #[error("pinning {}: {cause}", path.display())]
    Pin {
        path: PathBuf,
        cause: std::io::Error,
    },
}

/// Changes made so far; undone backwards on failure.
#[derive(Default)]
struct Journal(Vec<Done>);

impl Journal {
    fn undo(self) -> Vec<String> {
        self.0
            .into_iter()
            .rev()
            .filter_map(|d| d.undo().err().map(|e| e.to_string()))
            .collect()
    }
}

/// Decide the steps for `named` interfaces (and, with `all`, every other pinned one).
fn plan(
    dir: &Path,
    named: &[(String, u32)],
    mode: Option<XdpMode>,
    all: bool,
    notes: &mut Vec<String>,
) -> Result<Vec<Step>, StateError> {
    let mut steps = Vec::new();
    let mut names: Vec<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
    let pinned = pinned_interfaces(dir);
    if all {
        names.extend(
            pinned
                .iter()
                .map(String::as_str)
                .filter(|p| !named.iter().any(|(n, _)| n == p)),
        );
    }
    for name in names {
        let is_named = named.iter().any(|(n, _)| n == name);
        let ifindex = match named.iter().find(|(n, _)| n == name) {
            Some((_, i)) => Some(*i),
            None => super::ifindex(name).ok(),
        };
        let path = dir.join(name);
        let pinned_link = if pinned.iter().any(|p| p == name) {
            let link = links::open_pinned(&path).map_err(io("opening the pinned link", &path))?;
            let st =
                links::link_state(link.as_fd()).map_err(io("reading the pinned link", &path))?;
            Some((link, st))
        } else {
            None
        };
        match (pinned_link, ifindex) {
            (Some((link, st)), Some(idx)) if st.ifindex == idx => {
                let current = links::attached_mode(idx).ok().flatten();
                match (mode, current) {
                    (Some(to), Some(from)) if is_named && to != from => steps.push(Step::Remode {
                        name: name.to_owned(),
                        ifindex: idx,
                        link,
                        program_id: st.program_id,
                        from,
                        to,
                    }),
                    _ => steps.push(Step::Swap {
                        name: name.to_owned(),
                        link,
                        program_id: st.program_id,
                        mode: current,
                        named: is_named,
                    }),
                }
            }
            (pinned_link, Some(idx)) if is_named => steps.push(Step::New {
                name: name.to_owned(),
                ifindex: idx,
                mode: mode.unwrap_or(XdpMode::Driver),
                stale: pinned_link.is_some(),
            }),
            _ => notes.push(format!(
                "{name}: the interface this link was made for has gone; the link is left as it is \
                 (`director detach {name}` removes it, `director attach {name}` attaches anew)"
            )),
        }
    }
    Ok(steps)
}

/// Carry out `steps` with `program`, recording each change in `journal`; the report's
/// lines on success.
fn execute(
    program_name: &'static str,
    program: BorrowedFd<'_>,
    dir: &Path,
    steps: Vec<Step>,
    journal: &mut Journal,
) -> Result<Vec<String>, StateError> {
    let mut report = Vec::new();
    let (mut new, mut remode, mut swap) = (Vec::new(), Vec::new(), Vec::new());
    for s in steps {
        match s {
            Step::New { .. } => new.push(s),
            Step::Remode { .. } => remode.push(s),
            Step::Swap { .. } => swap.push(s),
        }
    }
    // New links first, unpinned: the likeliest refusals (driver, another program) come
    // before anything that runs changes.
    let mut unpinned = Vec::new();
    for s in new {
        let Step::New {
            name,
            ifindex,
            mode,
            stale,
        } = s
        else {
            unreachable!()
        };
        let link = links::create(program, ifindex, mode)
            .map_err(|e| attach_error(program_name, &name, mode, e))?;
        let at = journal.0.len();
        journal.0.push(Done::Linked { link, pinned: None });
        unpinned.push((at, name.clone(), stale));
        report.push(format!("{name}: attached ({} mode)", mode_name(mode)));
    }
    for s in remode {
        let Step::Remode {
            name,
            ifindex,
            link,
            program_id,
            from,
            to,
        } = s
        else {
            unreachable!()
        };
        let path = dir.join(&name);
        let old = links::program_by_id(program_id).map_err(io("holding the program of", &path))?;
        // The kernel holds one mode at a time: the old link goes before the new one
        // comes. Unpinned first (the descriptor keeps it attached), so that a refused
        // detach can pin it back.
        std::fs::remove_file(&path).map_err(io("unpinning", &path))?;
        if let Err(e) = links::detach(link.as_fd()) {
            let _ = links::pin(link.as_fd(), &path);
            return Err(io("detaching", &path)(e));
        }
        drop(link);
        match links::create(program, ifindex, to) {
            Ok(new) => {
                let pinned = links::pin(new.as_fd(), &path);
                journal.0.push(Done::Remoded {
                    path: path.clone(),
                    ifindex,
                    old,
                    from,
                    new,
                });
                pinned.map_err(io("pinning", &path))?;
            }
            Err(e) => {
                // Put the previous link back before the journal undoes the rest.
                let back = links::create(old.as_fd(), ifindex, from)
                    .and_then(|l| links::pin(l.as_fd(), &path));
                let err = attach_error(program_name, &name, to, e);
                return Err(match back {
                    Ok(()) => err,
                    Err(b) => StateError::Invalid(format!(
                        "{err}; and re-attaching the previous program in {} mode failed: {b}",
                        mode_name(from)
                    )),
                });
            }
        }
        report.push(format!(
            "{name}: mode changed from {} to {} (the link was replaced: for a moment the interface passed every packet to the kernel)",
            mode_name(from),
            mode_name(to)
        ));
    }
    for s in swap {
        let Step::Swap {
            name,
            link,
            program_id,
            mode,
            named,
        } = s
        else {
            unreachable!()
        };
        let path = dir.join(&name);
        let old = links::program_by_id(program_id).map_err(io("holding the program of", &path))?;
        links::update(link.as_fd(), program)
            .map_err(|e| attach_error(program_name, &name, mode.unwrap_or_default(), e))?;
        journal.0.push(Done::Swapped { link, old });
        let kept = mode.map_or(String::new(), |m| format!(", {} mode kept", mode_name(m)));
        report.push(if named {
            format!("{name}: program replaced in place{kept}")
        } else {
            format!("{name}: program replaced in place as well (one program runs on every attached interface){kept}")
        });
    }
    // Commit: pin the new links (over stale pins).
    for (at, name, stale) in unpinned {
        let path = dir.join(&name);
        if stale {
            std::fs::remove_file(&path).map_err(io("removing the stale link", &path))?;
        }
        let Done::Linked { link, pinned } = &mut journal.0[at] else {
            unreachable!()
        };
        links::pin(link.as_fd(), &path).map_err(io("pinning", &path))?;
        *pinned = Some(path);
    }
    Ok(report)
}

/// Run `f` under the writers' lock with the state's directories created; when it fails,
/// undo its journal and remove what it created, map pins included (`maps`: the map pin
/// directory, when this attach may create the maps).
fn all_or_nothing(
    state: &StateOptions,
    dirs: &[PathBuf],
    maps: Option<&Path>,
    f: impl FnOnce(&mut Journal) -> Result<Vec<String>, StateError>,
) -> Result<Vec<String>, StateError> {
    let root = state.root()?;
    // The state directory and every missing directory above it, outermost first.
    let mut outer: Vec<PathBuf> = root
        .ancestors()
        .take_while(|a| !a.exists())
        .map(Path::to_owned)
        .collect();
    outer.reverse();
    let outer_dirs = Dirs::create(&outer)?;
    let result = (|| {
        let _lock = StateOptions::flock_dir(&root)?;
        let maps_existed = maps.is_some_and(pins_exist);
        let dirs = Dirs::create(dirs)?;
        let mut journal = Journal::default();
        let result = f(&mut journal);
        if let Err(e) = result {
            let failed = journal.undo();
            if let Some(maps) = maps
                && !maps_existed
            {
                for name in ALL_MAPS {
                    let _ = std::fs::remove_file(maps.join(name));
                }
            }
            dirs.remove();
            return Err(if failed.is_empty() {
                StateError::Undone(Box::new(e))
            } else {
                StateError::Invalid(format!(
                    "{e}; undoing the attach failed too: {}",
                    failed.join("; ")
                ))
            });
        }
        result
    })();
    if result.is_err() {
        outer_dirs.remove();
    }
    result
}

/// The interfaces named, each with its index: all must exist before anything is made.
fn resolve(names: &[String]) -> Result<Vec<(String, u32)>, StateError> {
    let mut out: Vec<(String, u32)> = Vec::new();
    for n in names {
        if !out.iter().any(|(o, _)| o == n) {
            out.push((n.clone(), super::ifindex(n)?));
        }
    }
    Ok(out)
}

fn map_capacity(path: &Path) -> Option<u32> {
    aya::maps::MapData::from_pin(path)
        .ok()
        .and_then(|m| m.info().ok())
        .map(|i| i.max_entries())
}

/// The map sizes to load with: the pinned ones, which the options must not contradict,
/// else the options', else the defaults.
fn sizes(maps: &Path, opts: &AttachOptions) -> Result<LoadOptions, StateError> {
    // The connection table is an array of buckets: its capacity in entries is buckets x
    // ways.
    let pinned_conns = map_capacity(&maps.join(m::CONNS))
        .map(|buckets| buckets.saturating_mul(director_common::conntable::CONN_WAYS as u32));
    let pinned_services = map_capacity(&maps.join(m::SERVICES));
    let pinned_table = map_capacity(&maps.join(m::TABLES))
        .zip(pinned_services)
        .map(|(rows, s)| (rows as u64 * m::TABLE_ROW as u64 / (s.max(1) as u64 * 2)) as u32);
    // Slot 0 is never a real.
    let pinned_reals = map_capacity(&maps.join(m::REALS)).map(|n| n.saturating_sub(1));
    let pinned_persist = map_capacity(&maps.join(m::PERSIST));
    for (what, asked, pinned) in [
        ("--conn-table", opts.conn_table, pinned_conns),
        ("--maglev-size", opts.table_size, pinned_table),
        ("--max-services", opts.max_services, pinned_services),
        ("--max-reals", opts.max_reals, pinned_reals),
        ("--persist-table", opts.persist_table, pinned_persist),
    ] {
        if let (Some(a), Some(p)) = (asked, pinned)
            && a != p
        {
            return Err(StateError::Invalid(format!(
                "{what} {a} differs from the attached director's {p}; sizes are fixed while attached (`director detach` first, which drops all connections)"
            )));
        }
    }
    let defaults = LoadOptions::default();
    Ok(LoadOptions {
        conn_table: pinned_conns
            .or(opts.conn_table)
            .unwrap_or(defaults.conn_table),
        table_size: pinned_table
            .or(opts.table_size)
            .unwrap_or(defaults.table_size),
        max_services: pinned_services
            .or(opts.max_services)
            .unwrap_or(defaults.max_services),
        max_reals: pinned_reals
            .or(opts.max_reals)
            .unwrap_or(defaults.max_reals),
        persist_table: pinned_persist
            .or(opts.persist_table)
            .unwrap_or(defaults.persist_table),
        pin_dir: Some(maps.to_owned()),
    })
}

/// `director attach`: load (or upgrade) the program, pin maps and links, and return what
/// was done on each interface. Established connections survive an upgrade: the maps are
/// reused and the program swapped in place.
pub fn attach(state: &StateOptions, opts: &AttachOptions) -> Result<Vec<String>, StateError> {
    let arch = std::env::consts::ARCH;
    if !keeps_store_order(arch) {
        return Err(crate::datapath::DatapathError::WeakOrdering(arch).into());
    }
    let named = resolve(&opts.interfaces)?;
    let root = state.root()?;
    let layout = root.join(format!("v{LAYOUT_VERSION}"));
    let (maps, links_dir) = (state.maps_dir()?, state.links_dir()?);
    let dirs = [layout, maps.clone(), links_dir.clone()];
    all_or_nothing(state, &dirs, Some(&maps), |journal| {
        let load = sizes(&maps, opts)?;
        let mut dp = Datapath::load_programs(&load, &[PROG_DIRECTOR])?;
        let mut notes = Vec::new();
        let steps = plan(&links_dir, &named, opts.mode, true, &mut notes)?;
        let program = dp.program(PROG_DIRECTOR).fd().map_err(|source| {
            crate::datapath::DatapathError::Program {
                name: PROG_DIRECTOR,
                source,
            }
        })?;
        let mut report = execute(PROG_DIRECTOR, program.as_fd(), &links_dir, steps, journal)?;
        report.extend(notes);
        for (name, idx) in &named {
            prepare_interface(&mut dp.control, name, *idx, &mut report)?;
        }
        Ok(report)
    })
}

/// What the balancer needs of an interface besides the program: `accept_local` (NAT
/// replies to a client without a neighbour entry are handed to the kernel translated)
/// and its own MAC in the data path's filter (only frames sent to it are balanced).
fn prepare_interface(
    control: &mut crate::Control,
    ifname: &str,
    ifindex: u32,
    report: &mut Vec<String>,
) -> Result<(), StateError> {
    accept_local_replies(ifindex)?;
    let Some(mac) = mac_of(ifname) else {
        // No link-layer address (a tunnel device): its frames are all ours.
        return Ok(());
    };
    if let Some(other) = control.register_interface(ifindex, mac)? {
        report.push(format!(
            "warning: {ifname} and the interface with index {other} share a slot of the MAC filter; frames on index {other} are no longer checked against its MAC (docs/datapath.md)"
        ));
    }
    Ok(())
}

/// The interface's link-layer (MAC) address, from the kernel's interface list.
fn mac_of(ifname: &str) -> Option<[u8; 6]> {
    nix::ifaddrs::getifaddrs().ok()?.find_map(|a| {
        if a.interface_name != ifname {
            return None;
        }
        a.address?.as_link_addr()?.addr()
    })
}

/// `director decap attach IFACE`: the decapsulation program on one interface (swapped
/// in place when it is there already), all or nothing like `attach`. It unwraps IP in IP
/// (either family outside and inside) and GRE from `directors`, and GUE on `gue_port`
/// when given.
pub fn decap_attach(
    state: &StateOptions,
    ifname: &str,
    mode: Option<XdpMode>,
    directors: &[std::net::IpAddr],
    gue_port: Option<u16>,
) -> Result<Vec<String>, StateError> {
    if directors.is_empty() {
        return Err(crate::datapath::DatapathError::DecapNoDirectors.into());
    }
    let local = super::local_addrs()?;
    let named = resolve(&[ifname.to_owned()])?;
    let dir = state.decap_dir()?;
    let dirs = [dir.parent().unwrap_or(&dir).to_owned(), dir.clone()];
    all_or_nothing(state, &dirs, None, |journal| {
        let mut dp = Datapath::load_helpers()?;
        dp.allow_decap(directors, &local)?;
        dp.decap_gue_port(gue_port)?;
        let steps = plan(&dir, &named, mode, false, &mut Vec::new())?;
        let program = dp.program(PROG_DECAP).fd().map_err(|source| {
            crate::datapath::DatapathError::Program {
                name: PROG_DECAP,
                source,
            }
        })?;
        execute(PROG_DECAP, program.as_fd(), &dir, steps, journal)
    })
}
