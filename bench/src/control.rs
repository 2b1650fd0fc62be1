//! Part 4 of the suite: the control plane. Maglev table builds, applying 1,000 services
//! x 10 reals through the CLI restore path (`director -R`), and the memory of the pinned
//! maps at the default and at large sizes.

use std::{
    io::Read as _,
    net::{IpAddr, Ipv4Addr},
    os::fd::{AsFd as _, AsRawFd as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use aya::maps::MapData;
use director_common::{maps::LAYOUT_VERSION, real::Method};
use director_control::{
    Control, Datapath, LoadOptions, Protocol, RealSpec, ServiceSpec,
    datapath::{ALL_MAPS, PROG_DIRECTOR},
    tables::{self, Backend},
};

use super::{BpffsDir, Dist, Options};
use director_tests::lab::{Endpoint, Host, Lab, Topology};

/// One Maglev timing.
#[derive(Clone, Debug)]
pub struct MaglevTiming {
    pub reals: u32,
    pub size: u32,
    /// Milliseconds per build.
    pub ms: Dist,
}

/// How the restore was applied.
#[derive(Clone, Debug)]
pub struct Restore {
    /// "CLI (target/release/director -R)" or "control library (the CLI was not available: ...)".
    pub path: String,
    pub services: u32,
    pub reals_per_service: u32,
    /// Lines in the input.
    pub lines: u32,
    pub seconds: f64,
    /// Whether every line applied.
    pub completed: bool,
    /// Services and reals present afterwards.
    pub services_applied: u32,
    pub reals_applied: u32,
    /// The error, when it stopped early (exit status and last stderr line).
    pub error: Option<String>,
    /// Time for the first 10 % of the services and for the last 10 % applied (seconds per
    /// service, from a control-library replay), to show how the cost grows.
    pub note: String,
}

/// Memory of the pinned maps in one configuration.
#[derive(Clone, Debug)]
pub struct MapMemory {
    pub label: String,
    pub opts: String,
    /// (map name, entries, bytes as the kernel reports them: fdinfo memlock).
    pub maps: Vec<(String, u64, u64)>,
    pub total: u64,
    /// Measured, or computed from measured bytes per entry.
    pub measured: bool,
}

/// One listing command timed on a full connection table.
#[derive(Clone, Debug)]
pub struct Scan {
    /// The command line after `director --bpffs DIR`.
    pub command: String,
    /// Wall-clock seconds per run (output to /dev/null).
    pub seconds: Dist,
    /// Every run exited with success.
    pub ok: bool,
}

/// The listings on a full connection table.
#[derive(Clone, Debug)]
pub struct Scans {
    /// Entries written into the table (every way of every bucket).
    pub entries: u64,
    pub services: u32,
    pub reals: u32,
    pub runs: Vec<Scan>,
}

#[derive(Clone, Debug)]
pub struct ControlPlane {
    /// ns per bpf(2) map lookup from userspace (the unit of control-plane work).
    pub syscall_ns: f64,
    pub maglev: Vec<MaglevTiming>,
    pub restore: Option<Restore>,
    pub memory: Vec<MapMemory>,
    /// `-L -n`, `status` and `-L -c` on a full default-size connection table.
    pub scans: Option<Scans>,
    pub notes: Vec<String>,
}

/// Part 4.
pub fn run(opts: &Options) -> Result<ControlPlane> {
    let mut notes = Vec::new();
    let syscall_ns = Dist::of(&super::bpf::map_lookup_cost()?).median;
    let t = Instant::now();
    let maglev = maglev_timings(opts);
    eprintln!(
        "bench: control: Maglev builds took {:.0} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let restore = match restore(opts) {
        Ok(r) => Some(r),
        Err(e) => {
            notes.push(format!("the restore could not be timed: {e:#}"));
            None
        }
    };
    eprintln!(
        "bench: control: the restore took {:.0} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let scans = match scans(opts) {
        Ok(s) => Some(s),
        Err(e) => {
            notes.push(format!("the listings could not be timed: {e:#}"));
            None
        }
    };
    eprintln!(
        "bench: control: the listings took {:.0} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let memory = memory().context("pinned-map memory")?;
    eprintln!(
        "bench: control: map memory took {:.0} s",
        t.elapsed().as_secs_f64()
    );
    Ok(ControlPlane {
        syscall_ns,
        maglev,
        restore,
        memory,
        scans,
        notes,
    })
}

// ---- listings on a full table ----

/// `director -L -n`, `status` and `-L -c -n` (output to /dev/null) against a director
/// attached by the CLI with the default sizes, 10 services x 10 reals, and every way of
/// its connection table holding a live connection of one of them (written straight
/// into the pinned table: 2 Mi flows through the data path would take longer than the
/// listings).
pub fn scans(opts: &Options) -> Result<Scans> {
    const SERVICES: u32 = 10;
    const REALS: u32 = 10;
    let bin = director_binary()?;
    let lab = restore_lab()?;
    let state = lab.bpffs_dir().join("director");
    let maps = state.join(format!("v{LAYOUT_VERSION}")).join("maps");
    let st = state.to_str().context("path")?.to_owned();
    let rules_file = std::env::temp_dir().join(format!("bench-scans-{}.rules", std::process::id()));
    std::fs::write(&rules_file, restore_rules(SERVICES, REALS))?;
    let result = (|| -> Result<Scans> {
        let (_, ok, err) = run_bounded(
            &lab,
            &bin,
            &["--bpffs", &st, "attach", "eth0"],
            None,
            Duration::from_secs(60),
        )?;
        ensure_ok(ok, "director attach", &err)?;
        let (_, ok, err) = run_bounded(
            &lab,
            &bin,
            &["--bpffs", &st, "-R"],
            Some(&rules_file),
            Duration::from_secs(60),
        )?;
        ensure_ok(ok, "director -R", &err)?;
        let entries = fill_conns(&maps)?;
        let repeat = if opts.quick { 1 } else { 5 };
        let mut runs = Vec::new();
        for cmd in [&["-L", "-n"][..], &["status"], &["-L", "-c", "-n"]] {
            let mut secs = Vec::new();
            let mut all_ok = true;
            for _ in 0..repeat {
                let mut args = vec!["--bpffs", st.as_str()];
                args.extend_from_slice(cmd);
                let (t, ok, _) = run_bounded(&lab, &bin, &args, None, Duration::from_secs(120))?;
                secs.push(t);
                all_ok &= ok;
            }
            runs.push(Scan {
                command: format!("director {}", cmd.join(" ")),
                seconds: Dist::of(&secs),
                ok: all_ok,
            });
        }
        Ok(Scans {
            entries,
            services: SERVICES,
            reals: SERVICES * REALS,
            runs,
        })
    })();
    cleanup_run_files(&state);
    let _ = std::fs::remove_file(&rules_file);
    result
}

fn ensure_ok(ok: bool, what: &str, err: &str) -> Result<()> {
    if !ok {
        bail!("{what} failed: {err}");
    }
    Ok(())
}

/// Every way of every bucket of the pinned connection table: a live TCP connection
/// (half established, half opening) of one of the services, to one of its reals.
fn fill_conns(maps: &Path) -> Result<u64> {
    use director_common::{
        conn_state::ConnState,
        conntable::{CONN_WAYS, Conn, ConnBucket, FlowKey},
    };
    let c = Control::from_pins(maps)?;
    let targets: Vec<([u8; 4], u16, u32, u32)> = c
        .services()?
        .iter()
        .flat_map(|s| {
            let IpAddr::V4(vip) = s.spec.addr.addr else {
                return Vec::new();
            };
            s.reals
                .iter()
                .map(|r| (vip.octets(), s.spec.addr.port, s.id, r.id))
                .collect()
        })
        .collect();
    if targets.is_empty() {
        bail!("no real to fill the connection table with");
    }
    let now = director_control::control::monotonic_ns();
    let data = MapData::from_pin(maps.join(director_common::maps::CONNS))?;
    let buckets = data.info()?.max_entries() as usize;
    let len = buckets * size_of::<ConnBucket>();
    let fd = data.fd().as_fd().as_raw_fd();
    // SAFETY: a shared mapping of an mmapable array map of `buckets` values of
    // ConnBucket's size (192, a multiple of 8: laid out back to back), unmapped below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        bail!(
            "mmap of the connection table: {}",
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: the mapping holds `buckets` ConnBuckets (plain integers), ours alone here:
    // nothing else writes the table of this idle lab.
    let table = unsafe { std::slice::from_raw_parts_mut(p.cast::<ConnBucket>(), buckets) };
    let mut n = 0u64;
    for bucket in table.iter_mut() {
        for w in 0..CONN_WAYS {
            let (vip, port, service, real) = targets[n as usize % targets.len()];
            let i = n as u32;
            bucket.keys[w] = FlowKey {
                src: [11, (i >> 16) as u8, (i >> 8) as u8, i as u8],
                dst: vip,
                sport_be: (1024 + (n / 16_777_216) as u16).to_be(),
                dport_be: port.to_be(),
                proto: 6,
                _pad0: 0,
                _pad1: 0,
            };
            bucket.conns[w] = Conn {
                last_seen_ns: now,
                real,
                service,
                state: if n.is_multiple_of(2) {
                    ConnState::Established as u8
                } else {
                    ConnState::SynRecv as u8
                },
                flags: 0,
                vport_be: port.to_be(),
                vaddr: vip,
            };
            n += 1;
        }
    }
    // SAFETY: the mapping made above.
    unsafe { libc::munmap(p, len) };
    Ok(n)
}

fn backends(n: u32) -> Vec<Backend> {
    (0..n)
        .map(|i| Backend {
            id: i + 1,
            addr: IpAddr::V4(Ipv4Addr::new(10, 1, (i / 250) as u8, (i % 250 + 1) as u8)),
            port: 80,
            weight: 1,
        })
        .collect()
}

fn maglev_timings(opts: &Options) -> Vec<MaglevTiming> {
    let mut out = Vec::new();
    for size in [16_381u32, 65_537] {
        for reals in [10u32, 100, 1000] {
            let b = backends(reals);
            let runs = if opts.quick { 5 } else { 31 };
            // One untimed build first (allocations, caches).
            std::hint::black_box(tables::maglev(&b, size));
            let ms: Vec<f64> = (0..runs)
                .map(|_| {
                    let t = Instant::now();
                    std::hint::black_box(tables::maglev(std::hint::black_box(&b), size));
                    t.elapsed().as_secs_f64() * 1e3
                })
                .collect();
            out.push(MaglevTiming {
                reals,
                size,
                ms: Dist::of(&ms),
            });
        }
    }
    out
}

// ---- the restore path ----

/// The rules: `services` services x `reals` reals each (ipvsadm -R syntax).
fn restore_rules(services: u32, reals: u32) -> String {
    let mut s = String::new();
    for i in 0..services {
        let vip = Ipv4Addr::new(10, 100, (i / 250) as u8, (i % 250 + 1) as u8);
        s.push_str(&format!("-A -t {vip}:80 -s mh\n"));
        for r in 0..reals {
            s.push_str(&format!(
                "-a -t {vip}:80 -r {}:80 -g -w 1\n",
                restore_real(r)
            ));
        }
    }
    s
}

fn restore_real(r: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 1, 0, 11 + r as u8)
}

/// The director binary beside this one (target/release/director), built first when
/// running under cargo.
fn director_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("no directory")?;
    if let Some(cargo) = std::env::var_os("CARGO") {
        let profile = if dir.ends_with("release") {
            vec!["--release"]
        } else {
            vec![]
        };
        let out = Command::new(cargo)
            .args(["build", "-q", "-p", "director", "--bin", "director"])
            .args(profile)
            .output()
            .context("running cargo build for the director binary")?;
        if !out.status.success() {
            bail!(
                "cargo build -p director failed: {}",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .find(|l| l.starts_with("error"))
                    .unwrap_or("(no error line)")
            );
        }
    }
    let bin = dir.join("director");
    if !bin.exists() {
        bail!("{} does not exist", bin.display());
    }
    Ok(bin)
}

fn restore_lab() -> Result<Lab> {
    let topo = Topology::new()
        .host(Host::new("director").ip_forward())
        .host(Host::new("reals"))
        .host(Host::new("client"))
        .veth(
            Endpoint::new("client", "eth0").addr("10.0.0.2".parse()?, 24),
            Endpoint::new("director", "eth0").addr("10.0.0.1".parse()?, 24),
        )
        .veth(
            Endpoint::new("director", "eth1").addr("10.1.0.1".parse()?, 24),
            Endpoint::new("reals", "eth0").addr("10.1.0.2".parse()?, 24),
        );
    let lab = Lab::build(&topo)?;
    // Static neighbours: the restore resolves every real it adds; these are known, so
    // nothing is sent.
    let d = lab.ns("director");
    for r in 0..10 {
        d.exec_ok(&[
            "ip",
            "neigh",
            "replace",
            &restore_real(r).to_string(),
            "lladdr",
            &format!("02:00:00:00:01:{:02x}", 11 + r),
            "dev",
            "eth1",
            "nud",
            "permanent",
        ])?;
    }
    Ok(lab)
}

/// Runs `bin args` in the lab's director namespace with `input` on stdin, killed after
/// `limit`. Returns (seconds, success, last stderr line).
fn run_bounded(
    lab: &Lab,
    bin: &Path,
    args: &[&str],
    input: Option<&Path>,
    limit: Duration,
) -> Result<(f64, bool, String)> {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", lab.ns("director").path().display()))
        .arg("--")
        .arg(bin)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    match input {
        Some(p) => cmd.stdin(std::fs::File::open(p)?),
        None => cmd.stdin(Stdio::null()),
    };
    let start = Instant::now();
    let mut child = cmd.spawn().context("starting the director binary")?;
    let mut stderr = child.stderr.take().context("stderr")?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break Some(st);
        }
        if start.elapsed() > limit {
            // Our own child, by its pid.
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let secs = start.elapsed().as_secs_f64();
    let err = reader.join().unwrap_or_default();
    // The last two lines: the error and what it stopped.
    let tail: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    let last = tail[tail.len().saturating_sub(2)..].join(" / ");
    Ok(match status {
        Some(st) => (
            secs,
            st.success(),
            if st.success() {
                last
            } else {
                format!("{st}: {last}")
            },
        ),
        None => (
            secs,
            false,
            format!("killed after {limit:?} (bound of the benchmark)"),
        ),
    })
}

fn restore(opts: &Options) -> Result<Restore> {
    let (services, reals) = if opts.quick { (100, 10) } else { (1000, 10) };
    let limit = Duration::from_secs(if opts.quick { 60 } else { 120 });
    let rules = restore_rules(services, reals);
    let lines = rules.lines().count() as u32;
    let lab = restore_lab()?;
    let state = lab.bpffs_dir().join("director");
    let maps = state.join(format!("v{LAYOUT_VERSION}")).join("maps");
    let rules_file =
        std::env::temp_dir().join(format!("bench-restore-{}.rules", std::process::id()));
    std::fs::write(&rules_file, &rules)?;
    let result = (|| -> Result<Restore> {
        match director_binary() {
            Ok(bin) => {
                let st = state.to_str().context("path")?;
                let (_, ok, err) = run_bounded(
                    &lab,
                    &bin,
                    &[
                        "--bpffs",
                        st,
                        "attach",
                        "eth0",
                        "--max-services",
                        &services.max(256).to_string(),
                    ],
                    None,
                    Duration::from_secs(60),
                )?;
                if !ok {
                    bail!("director attach failed: {err}");
                }
                let (secs, ok, err) =
                    run_bounded(&lab, &bin, &["--bpffs", st, "-R"], Some(&rules_file), limit)?;
                let (s, r) = count_applied(&maps)?;
                cleanup_run_files(&state);
                Ok(Restore {
                    path: format!("CLI ({} -R)", short_path(&bin)),
                    services,
                    reals_per_service: reals,
                    lines,
                    seconds: secs,
                    completed: ok && s == services && r == services * reals,
                    services_applied: s,
                    reals_applied: r,
                    error: (!ok).then_some(err),
                    note: String::new(),
                })
            }
            Err(e) => {
                // The same operations through the control library.
                let pins = BpffsDir::new("restore")?;
                let mut dp = Datapath::load_programs(
                    &LoadOptions {
                        max_services: services.max(256),
                        pin_dir: Some(pins.path().to_owned()),
                        ..LoadOptions::default()
                    },
                    &[PROG_DIRECTOR],
                )?;
                let start = Instant::now();
                let mut error = None;
                'all: for i in 0..services {
                    let vip = Ipv4Addr::new(10, 100, (i / 250) as u8, (i % 250 + 1) as u8);
                    let spec = ServiceSpec::new(Protocol::Tcp, IpAddr::V4(vip), 80);
                    if let Err(e) = dp.control.add_service(&spec) {
                        error = Some(e.to_string());
                        break;
                    }
                    for r in 0..reals {
                        let real = RealSpec::new(IpAddr::V4(restore_real(r)), 80, Method::Route, 1);
                        if let Err(e) = dp.control.add_real(&spec.addr, &real) {
                            error = Some(e.to_string());
                            break 'all;
                        }
                        if start.elapsed() > limit {
                            error =
                                Some(format!("stopped after {limit:?} (bound of the benchmark)"));
                            break 'all;
                        }
                    }
                }
                let seconds = start.elapsed().as_secs_f64();
                let (s, r) = count(&dp.control)?;
                Ok(Restore {
                    path: format!("control library (the CLI was not available: {e:#})"),
                    services,
                    reals_per_service: reals,
                    lines,
                    seconds,
                    completed: error.is_none(),
                    services_applied: s,
                    reals_applied: r,
                    error,
                    note: String::new(),
                })
            }
        }
    })();
    let _ = std::fs::remove_file(&rules_file);
    result
}

fn short_path(p: &Path) -> String {
    let s = p.display().to_string();
    match s.find("/target/") {
        Some(i) => s[i + 1..].to_owned(),
        None => s,
    }
}

/// The CLI's lock and marker files for a state directory (under /run/director).
fn cleanup_run_files(state: &Path) {
    let name: String = state
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    for ext in ["lock", "writing"] {
        let _ = std::fs::remove_file(format!("/run/director/{name}.{ext}"));
    }
}

fn count_applied(maps: &Path) -> Result<(u32, u32)> {
    count(&Control::from_pins(maps)?)
}

fn count(c: &Control) -> Result<(u32, u32)> {
    let v = c.services()?;
    Ok((v.len() as u32, v.iter().map(|s| s.reals.len() as u32).sum()))
}

// ---- memory ----

/// (entries, memlock bytes) of a map, from /proc/self/fdinfo.
fn map_info(path: &Path) -> Result<(u64, u64)> {
    let m = MapData::from_pin(path).with_context(|| format!("opening {}", path.display()))?;
    let fd = m.fd().as_fd().as_raw_fd();
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))?;
    let field = |name: &str| -> Result<u64> {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .with_context(|| format!("no {name} in fdinfo"))?
            .trim()
            .parse()
            .with_context(|| format!("parsing {name}"))
    };
    Ok((field("max_entries:")?, field("memlock:")?))
}

fn measure_memory(label: &str, opts: &LoadOptions) -> Result<MapMemory> {
    let pins = BpffsDir::new("memory")?;
    let load = LoadOptions {
        pin_dir: Some(pins.path().to_owned()),
        ..opts.clone()
    };
    let dp = Datapath::load_programs(&load, &[PROG_DIRECTOR])?;
    let mut maps = Vec::new();
    for name in ALL_MAPS {
        let (entries, bytes) = map_info(&pins.path().join(name))?;
        maps.push((name.to_owned(), entries, bytes));
    }
    drop(dp);
    let total = maps.iter().map(|m| m.2).sum();
    Ok(MapMemory {
        label: label.into(),
        opts: describe(opts),
        maps,
        total,
        measured: true,
    })
}

fn describe(o: &LoadOptions) -> String {
    format!(
        "{} services x {}-entry tables, {} reals, {} connections, {} persistence templates",
        super::thousands(o.max_services as f64),
        super::thousands(o.table_size as f64),
        super::thousands(o.max_reals as f64),
        super::thousands(o.conn_table as f64),
        super::thousands(o.persist_table as f64)
    )
}

fn memory() -> Result<Vec<MapMemory>> {
    let default = LoadOptions::default();
    let large = LoadOptions {
        conn_table: 1 << 20,
        persist_table: 1 << 20,
        table_size: 16_381,
        max_services: 10_000,
        max_reals: 100_000,
        pin_dir: None,
    };
    let d = measure_memory("default", &default)?;
    let l = measure_memory("large (measured)", &large)?;
    // The largest the loader accepts: tables of 2^32 entries at most; with the
    // recommended 65,537-entry tables that is 32,767 services. Computed from the
    // measured bytes per entry of the large configuration (16 M connections and
    // templates, the most real slots the loader accepts).
    let max = LoadOptions {
        conn_table: 1 << 24,
        persist_table: 1 << 24,
        table_size: 65_537,
        max_services: 32_767,
        max_reals: director_common::maps::MAX_REALS_LIMIT,
        pin_dir: None,
    };
    let per_entry = |name: &str| -> f64 {
        let (_, e, b) = l
            .maps
            .iter()
            .find(|m| m.0 == name)
            .expect("every map measured");
        *b as f64 / (*e).max(1) as f64
    };
    let mut maps = Vec::new();
    for (name, entries, bytes) in &l.maps {
        let n = match name.as_str() {
            director_common::maps::CONNS => max.conn_buckets() as u64,
            director_common::maps::PERSIST => max.persist_table as u64,
            director_common::maps::TABLES => max.table_rows() as u64,
            director_common::maps::SERVICES
            | director_common::maps::RR_CURSORS
            | director_common::maps::SERVICE_STATS => max.max_services as u64,
            director_common::maps::REALS
            | director_common::maps::HOPS
            | director_common::maps::REAL_STATS => max.max_reals as u64 + 1,
            _ => *entries,
        };
        let b = if n == *entries {
            *bytes
        } else {
            (per_entry(name) * n as f64) as u64
        };
        maps.push((name.clone(), n, b));
    }
    let total = maps.iter().map(|m| m.2).sum();
    let m = MapMemory {
        label: "maximum (computed)".into(),
        opts: describe(&max),
        maps,
        total,
        measured: false,
    };
    Ok(vec![d, l, m])
}
