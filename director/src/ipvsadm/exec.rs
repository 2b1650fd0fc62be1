//! Applying a [`Command`] to the state.
//!
//! Readers (`-L`, `-S`) open the pinned maps without the lock. Writers work in one
//! writer's session (`StateOptions::begin_write`) for the whole command (`-R`: for the
//! whole batch): the writers' lock, the maps, the repair of a previous writer that was
//! killed mid-operation, and this writer's marker until it is done. What the director
//! cannot do is refused before anything is written.

use std::{
    io::{BufReader, Read, Write},
    net::IpAddr,
    time::{Duration, Instant},
};

use director_common::{real::Method, service::Scheduler};
use director_control::{
    Control, ControlError, Protocol, RealSpec, ServiceAddr, ServiceSpec,
    control::Timeouts,
    model::{Persistence, Tunnel},
    state::{BeginWriteError, StateOptions, WriteSession},
};

use super::{
    error::{IpvsadmError, cmdline, io, table},
    format,
    hiargs::{
        self, Command, Format, ListWhat, PersistMask, SCHED_FLAG_2, SCHED_FLAG_3, ServerArgs,
        ServiceArgs, VProto, VirtualService,
    },
    lowargs,
    portnames::PortNames,
    snapshot, usage,
};

/// How long a command waits for the kernel to resolve the reals it added (the data path
/// needs their neighbour entries; see `director_control::neighbours`), unless
/// [`RESOLVE_WAIT_ENV`] says otherwise.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(1);
/// Seconds to wait for new reals' neighbour entries instead (0: do not wait).
pub const RESOLVE_WAIT_ENV: &str = "DIRECTOR_RESOLVE_WAIT";

fn resolve_timeout() -> Duration {
    std::env::var(RESOLVE_WAIT_ENV)
        .ok()
        .and_then(|v| Duration::try_from_secs_f64(v.trim().parse().ok()?).ok())
        .unwrap_or(RESOLVE_TIMEOUT)
}
/// `--rate` compares two readings this far apart (IPVS has a kernel estimator instead).
const RATE_INTERVAL: Duration = Duration::from_secs(1);

/// IPVS scheduler names the director does not implement (for a hint after IPVS's
/// "not found" message).
const IPVS_ONLY_SCHEDULERS: [&str; 10] = [
    "lc", "wlc", "lblc", "lblcr", "dh", "sed", "nq", "fo", "ovf", "twos",
];

/// One ipvsadm invocation (or one `-R` batch): the state, opened on first use.
pub struct Session<'a> {
    pub prog: String,
    /// Invoked as `director`: the help also lists the director's own commands.
    pub director_mode: bool,
    state: &'a StateOptions,
    /// Why the state cannot be reached (no bpffs), if so.
    mounts: Option<String>,
    names: PortNames,
    out: &'a mut dyn Write,
    /// The maps opened for reading, until the first write.
    reading: Option<Control>,
    writing: Option<WriteSession>,
    resolve: Vec<IpAddr>,
    /// The reals' addresses when the writer's session began: those gone by its end lose
    /// the neighbour entries made for them.
    reals_before: Vec<IpAddr>,
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

fn init_error(e: &dyn std::error::Error) -> IpvsadmError {
    if !nix::unistd::geteuid().is_root() {
        return IpvsadmError::Init("Permission denied (you must be root)".into());
    }
    IpvsadmError::Init(chain(e))
}

impl<'a> Session<'a> {
    pub fn new(
        prog: &str,
        state: &'a StateOptions,
        mounts: Option<String>,
        out: &'a mut dyn Write,
    ) -> Self {
        Session {
            prog: prog.to_owned(),
            director_mode: false,
            state,
            mounts,
            names: PortNames::system(),
            out,
            reading: None,
            writing: None,
            resolve: Vec::new(),
            reals_before: Vec::new(),
        }
    }

    pub fn names(&self) -> &PortNames {
        &self.names
    }

    fn reachable(&self) -> Result<(), IpvsadmError> {
        match &self.mounts {
            Some(m) => Err(IpvsadmError::Init(m.clone())),
            None => Ok(()),
        }
    }

    fn reader(&mut self) -> Result<&Control, IpvsadmError> {
        if let Some(w) = &self.writing {
            return Ok(w);
        }
        if self.reading.is_none() {
            self.reachable()?;
            self.reading = Some(self.state.open_control().map_err(|e| init_error(&e))?);
        }
        Ok(self.reading.as_ref().expect("opened above"))
    }

    /// The maps for writing, in a writer's session (opened on the first write).
    fn writer(&mut self) -> Result<&mut WriteSession, IpvsadmError> {
        if self.writing.is_none() {
            self.reachable()?;
            let session = self.state.begin_write().map_err(|e| match e {
                BeginWriteError::Repair(_) => table(chain(&e)),
                BeginWriteError::Marker(..) => IpvsadmError::Init(chain(&e)),
                BeginWriteError::State(e) => init_error(&e),
            })?;
            if let Some(r) = session.repaired() {
                eprintln!(
                    "{}: the previous change was interrupted; completed it ({} orphaned real slots cleared, {} service tables rebuilt)",
                    self.prog, r.slots_cleared, r.tables_rebuilt
                );
            }
            // Unreadable reals are a map error the first write reports.
            self.reals_before = session.real_addresses().unwrap_or_default();
            self.reading = None;
            self.writing = Some(session);
        }
        Ok(self.writing.as_mut().expect("opened above"))
    }

    /// Apply a Control write, mapping its errors to ipvsadm's messages.
    fn write(
        &mut self,
        for_server: bool,
        op: impl FnOnce(&mut Control) -> Result<(), ControlError>,
    ) -> Result<(), IpvsadmError> {
        let session = self.writer()?;
        op(session).map_err(|e| {
            // Validation errors come before any write; a map error may come midway.
            if matches!(
                e,
                ControlError::Map { .. } | ControlError::MissingMap(_) | ControlError::System(_)
            ) {
                session.left_undone();
            }
            match e {
                ControlError::NoSuchService if for_server => table("Service not defined"),
                e @ ControlError::TableTooSmall { .. } => IpvsadmError::TableTooSmall(e),
                e => table(chain(&e)),
            }
        })
    }

    /// End of the invocation: drop the marker if every change completed, release the
    /// lock, remove the neighbour entries made for reals that are gone, then resolve the
    /// reals it added. Resolving waits on the network (a second per unreachable real):
    /// under the lock it would stall every other writer, and the data path needs no lock
    /// to wait (it drops, and counts, packets for a real without a neighbour entry until
    /// the kernel has one).
    pub fn finish(&mut self) {
        let mut reals_after = None;
        if let Some(session) = self.writing.take() {
            reals_after = session.real_addresses().ok();
            if let Err(e) = session.finish() {
                // The lines were applied; a table left for the end could not be written.
                // The marker stays: the next writer rebuilds it.
                eprintln!("{}: {}", self.prog, chain(&e));
            }
        }
        if let Some(after) = reals_after {
            let gone: Vec<IpAddr> = std::mem::take(&mut self.reals_before)
                .into_iter()
                .filter(|a| after.binary_search(a).is_err())
                .collect();
            if let Err(e) = director_control::neighbours::release(&gone, &after) {
                eprintln!(
                    "{}: warning: removing the neighbour entries of removed real servers: {e}",
                    self.prog
                );
            }
        }
        if !self.resolve.is_empty() {
            let mut addrs = std::mem::take(&mut self.resolve);
            addrs.sort();
            addrs.dedup();
            match director_control::neighbours::resolve(&addrs, resolve_timeout()) {
                Ok(left) if left.is_empty() => {}
                Ok(left) => {
                    for a in left {
                        eprintln!(
                            "{}: warning: no neighbour entry for real server {a} yet (the data path drops its packets until the kernel has one; if it is behind a router, the router's entry is what counts)",
                            self.prog
                        );
                    }
                }
                Err(e) => eprintln!("{}: warning: resolving real servers: {e}", self.prog),
            }
        }
    }

    fn print(&mut self, s: &str) -> Result<(), IpvsadmError> {
        self.out
            .write_all(s.as_bytes())
            .map_err(io("writing the output"))
    }

    /// Run one command.
    pub fn execute(&mut self, cmd: Command, stdin: &mut dyn Input) -> Result<(), IpvsadmError> {
        match cmd {
            Command::Help => {
                let text = usage::help(&self.prog, self.director_mode);
                self.print(&text)
            }
            Command::Version => self.print(&usage::version()),
            Command::AddService(args) => {
                let spec = service_spec(&args, true)?;
                self.write(false, |c| c.add_service(&spec))
            }
            Command::EditService(args) => {
                let spec = service_spec(&args, false)?;
                self.write(false, |c| c.edit_service(&spec))
            }
            Command::DeleteService(s) => {
                let addr = existing(&s).ok_or_else(|| table("No such service"))?;
                self.write(false, |c| c.delete_service(&addr))
            }
            Command::Clear => self.write(false, |c| c.clear()),
            Command::Zero(s) => {
                let addr = match &s {
                    Some(s) => Some(existing(s).ok_or_else(|| table("No such service"))?),
                    None => None,
                };
                self.write(false, |c| c.zero(addr.as_ref()))
            }
            Command::AddServer(args) => {
                let (svc, real) = server_spec(&args)?;
                self.write(true, |c| c.add_real(&svc, &real))?;
                self.queue_resolve(real.addr);
                Ok(())
            }
            Command::EditServer(args) => {
                let (svc, real) = server_spec(&args)?;
                self.write(true, |c| c.edit_real(&svc, &real))?;
                self.queue_resolve(real.addr);
                Ok(())
            }
            Command::DeleteServer(args) => {
                let svc = existing(&args.service).ok_or_else(|| table("Service not defined"))?;
                self.write(true, |c| c.delete_real(&svc, args.addr, args.port))
            }
            Command::SetTimeouts { tcp, tcp_fin, udp } => {
                self.write(false, |c| c.set_timeouts(Timeouts { tcp, tcp_fin, udp }))
            }
            Command::StartDaemon(_) => Err(table(
                "the connection synchronisation daemon is not supported by the director yet",
            )),
            Command::StopDaemon(_) => Err(table("No daemon is running")),
            Command::Restore => {
                // Consecutive lines on one service write its table once (see
                // `restore`).
                self.writer()?
                    .defer_tables(true)
                    .map_err(|e| table(chain(&e)))?;
                let result = self.restore(stdin);
                // The lines before an error are applied before it is reported.
                let flushed = self.write(false, |c| c.defer_tables(false));
                match (result, flushed) {
                    (Err(e), Err(f)) => {
                        eprintln!(
                            "{}: writing the tables of the lines applied: {f}",
                            self.prog
                        );
                        Err(e)
                    }
                    (result, flushed) => result.and(flushed),
                }
            }
            Command::Save { numeric } => {
                let snap = snapshot::read(self.reader()?).map_err(|e| table(chain(&e)))?;
                let fmt = Format {
                    numeric,
                    rule: true,
                    ..Format::default()
                };
                let text = format::list_all(&snap, &fmt, &self.names);
                self.print(&text)
            }
            Command::List { what, format: fmt } => self.list(what, &fmt),
        }
    }

    fn queue_resolve(&mut self, addr: IpAddr) {
        self.resolve.push(addr);
    }

    fn list(&mut self, what: ListWhat, fmt: &Format) -> Result<(), IpvsadmError> {
        let text = match what {
            ListWhat::Daemon => String::new(),
            ListWhat::Timeouts => {
                let t = self.reader()?.timeouts().map_err(|e| table(chain(&e)))?;
                format::timeouts(t.tcp, t.tcp_fin, t.udp)
            }
            ListWhat::Connections => {
                let rows = snapshot::connections(self.reader()?).map_err(|e| table(chain(&e)))?;
                format::connections(&rows, fmt, &self.names)
            }
            ListWhat::All | ListWhat::Service(_) => {
                let mut snap = self.snap()?;
                if fmt.rate && !fmt.stats {
                    let start = Instant::now();
                    std::thread::sleep(RATE_INTERVAL);
                    let after = self.snap()?;
                    snap = snapshot::rates(&snap, &after, start.elapsed().as_secs_f64());
                }
                match what {
                    ListWhat::Service(s) => {
                        let addr = existing(&s).ok_or(IpvsadmError::ListNoSuchService)?;
                        let svc = snap
                            .services
                            .iter()
                            .find(|v| v.spec.addr == addr)
                            .ok_or(IpvsadmError::ListNoSuchService)?;
                        format!(
                            "{}{}",
                            format::title(fmt),
                            format::service_entry(svc, fmt, &self.names)
                        )
                    }
                    _ => format::list_all(&snap, fmt, &self.names),
                }
            }
        };
        self.print(&text)
    }

    fn snap(&mut self) -> Result<format::Snapshot, IpvsadmError> {
        snapshot::read(self.reader()?).map_err(|e| table(chain(&e)))
    }

    /// `-R`: one command per line, in order; stops at the first line that fails.
    ///
    /// The control library defers the table of a service while consecutive lines
    /// change its reals (their slots are written at once), and writes it when a line
    /// is about another service or anything else. Before a read that may wait for the
    /// writer (no whole line buffered), the table that waits is written too: every
    /// line read is in effect before the command waits for the next, as if applied
    /// one by one. The caller writes the last one, also after an error.
    fn restore(&mut self, input: &mut dyn Input) -> Result<(), IpvsadmError> {
        let mut bytes = Vec::new();
        let mut n = 0;
        loop {
            bytes.clear();
            if !input.line_ready() && self.writing.as_deref().is_some_and(Control::has_pending) {
                self.write(false, Control::flush)?;
            }
            if input
                .read_line(&mut bytes)
                .map_err(io("reading the rules from stdin"))?
                == 0
            {
                return Ok(());
            }
            n += 1;
            // A line that is not text is a bad line like any other: named, and the end
            // of the restore.
            let line = match std::str::from_utf8(&bytes) {
                Ok(l) => l,
                Err(e) => {
                    return Err(IpvsadmError::AtLine {
                        prog: self.prog.clone(),
                        line: n,
                        text: String::from_utf8_lossy(&bytes).trim().to_owned(),
                        source: Box::new(cmdline(format!(
                            "the line is not valid UTF-8 (at byte {})",
                            e.valid_up_to() + 1
                        ))),
                    });
                }
            };
            let args = restore_tokens(line);
            if args.is_empty() {
                continue;
            }
            let mut adds_to = None;
            let result =
                hiargs::parse(&self.prog, &lowargs::split(&args), &self.names).and_then(|cmd| {
                    if cmd == Command::Restore {
                        // ipvsadm refuses -R inside -R (it would read its own input).
                        return Err(IpvsadmError::TryHelp(self.prog.clone()));
                    }
                    if let Command::AddServer(a) = &cmd {
                        adds_to = existing(&a.service);
                    }
                    self.execute(cmd, &mut BufReader::new(std::io::empty()))
                });
            if let Err(mut e) = result {
                // The table is too small for this line's real: say what fits all the
                // reals the input asks this service to have, not just one more.
                if let (
                    IpvsadmError::TableTooSmall(ControlError::TableTooSmall {
                        table_size,
                        requested,
                    }),
                    Some(svc),
                ) = (&e, adds_to)
                {
                    let more = self.reals_asked_further(input, &svc);
                    e = IpvsadmError::TableTooSmall(ControlError::TableTooSmall {
                        table_size: *table_size,
                        requested: requested.saturating_add(more),
                    });
                }
                return Err(IpvsadmError::AtLine {
                    prog: self.prog.clone(),
                    line: n,
                    text: line.trim().to_owned(),
                    source: Box::new(e),
                });
            }
        }
    }
}

impl Session<'_> {
    /// `-R` stops here: the `-a` lines for `svc` in the rest of its input. Read only
    /// from a pipe or a file: a terminal has no rest to read.
    fn reals_asked_further(&self, input: &mut dyn Input, svc: &ServiceAddr) -> u32 {
        use std::io::IsTerminal as _;
        if std::io::stdin().is_terminal() {
            return 0;
        }
        let mut n = 0u32;
        let mut bytes = Vec::new();
        loop {
            bytes.clear();
            match input.read_line(&mut bytes) {
                Ok(0) | Err(_) => return n,
                Ok(_) => {}
            }
            let args = restore_tokens(&String::from_utf8_lossy(&bytes));
            if let Ok(Command::AddServer(a)) =
                hiargs::parse(&self.prog, &lowargs::split(&args), &self.names)
                && existing(&a.service) == Some(*svc)
            {
                n = n.saturating_add(1);
            }
        }
    }
}

/// What `-R` reads: lines (as bytes: one that is not UTF-8 is reported with its
/// number), and whether the next one is already at hand.
pub trait Input {
    fn read_line(&mut self, line: &mut Vec<u8>) -> std::io::Result<usize>;
    /// A whole line is buffered: reading it cannot wait for the writer.
    fn line_ready(&self) -> bool;
}

impl<R: Read> Input for BufReader<R> {
    fn read_line(&mut self, line: &mut Vec<u8>) -> std::io::Result<usize> {
        std::io::BufRead::read_until(self, b'\n', line)
    }

    fn line_ready(&self) -> bool {
        self.buffer().contains(&b'\n')
    }
}

/// The words of one `-R` line: white-space separated, a word `ipvsadm` dropped (as
/// ipvsadm does, so `ipvsadm -A ...` lines work), and from a word starting with `#` on
/// a comment (ipvsadm means to ignore comments; its reader does not manage to).
pub fn restore_tokens(line: &str) -> Vec<String> {
    line.split([' ', '\t', '\r', '\n'])
        .filter(|w| !w.is_empty())
        .take_while(|w| !w.starts_with('#'))
        .filter(|w| *w != "ipvsadm")
        .map(str::to_owned)
        .collect()
}

/// The service of a command that needs an existing one: SCTP and fwmark services cannot
/// exist here, so they are simply not found.
fn existing(s: &VirtualService) -> Option<ServiceAddr> {
    match *s {
        VirtualService::Addr {
            proto: VProto::Tcp,
            addr,
            port,
        } => Some(ServiceAddr {
            proto: Protocol::Tcp,
            addr,
            port,
        }),
        VirtualService::Addr {
            proto: VProto::Udp,
            addr,
            port,
        } => Some(ServiceAddr {
            proto: Protocol::Udp,
            addr,
            port,
        }),
        _ => None,
    }
}

fn not_found() -> IpvsadmError {
    table("Scheduler or persistence engine not found")
}

fn unsupported_flag(bit: u8, sched: &str) -> IpvsadmError {
    let name = match bit {
        SCHED_FLAG_3 => "flag-3",
        SCHED_FLAG_2 => "flag-2",
        _ => "flag-1",
    };
    table(format!(
        "scheduler flag {name} has no meaning for {sched} in the director (its flags: sh-port and sh-fallback for sh, mh-port and mh-fallback for mh)"
    ))
}

/// The service spec of `-A` / `-E`, or why the director cannot have it.
///
/// Schedulers: `mh` hashes the client address (IPVS's mh), `mh -b mh-port` the whole
/// connection, which is also the default when `-s` is not given; `sh` hashes the client
/// address (and port with `sh-port`); `rr`, `wrr`. The fallback flags are accepted: a
/// real of weight 0 never gets a new connection here, which is what they ask for.
pub fn service_spec(args: &ServiceArgs, add: bool) -> Result<ServiceSpec, IpvsadmError> {
    let addr = match args.service {
        VirtualService::Addr {
            proto: VProto::Sctp,
            ..
        } if add => {
            return Err(table(
                "SCTP virtual services are not supported by the director",
            ));
        }
        VirtualService::Fwmark { .. } if add => {
            return Err(table(
                "firewall-mark virtual services (-f) are not supported by the director",
            ));
        }
        s => existing(&s).ok_or_else(|| table("No such service"))?,
    };
    let flags = args.sched_flags;
    let (scheduler, hash_port, hash_source_only) = match args.scheduler.as_deref() {
        None if flags.is_none() => (Scheduler::Maglev, false, false),
        None | Some("mh") => {
            let f = flags.unwrap_or(0);
            if f & SCHED_FLAG_3 != 0 {
                return Err(unsupported_flag(SCHED_FLAG_3, "mh"));
            }
            // mh-port: the connection's hash (source address and port, destination
            // port, protocol); without it, the source address alone.
            (Scheduler::Maglev, false, f & SCHED_FLAG_2 == 0)
        }
        Some("sh") => {
            let f = flags.unwrap_or(0);
            if f & SCHED_FLAG_3 != 0 {
                return Err(unsupported_flag(SCHED_FLAG_3, "sh"));
            }
            (Scheduler::SourceHash, f & SCHED_FLAG_2 != 0, false)
        }
        Some(s @ ("rr" | "wrr")) => {
            if let Some(f) = flags.filter(|f| *f != 0) {
                return Err(unsupported_flag(f & f.wrapping_neg(), s));
            }
            let sched = if s == "rr" {
                Scheduler::RoundRobin
            } else {
                Scheduler::WeightedRoundRobin
            };
            (sched, false, false)
        }
        Some(other) if IPVS_ONLY_SCHEDULERS.contains(&other) => {
            return Err(table(format!(
                "Scheduler or persistence engine not found\n({other} is an IPVS scheduler the director does not have; it has rr, wrr, sh and mh)"
            )));
        }
        Some(_) => return Err(not_found()),
    };
    if args.pe.is_some() {
        return Err(not_found());
    }
    if args.ops {
        return Err(table(
            "one-packet scheduling (-o, --ops) is not supported by the director",
        ));
    }
    let persistence = args.persistent.map(|timeout_s| Persistence {
        timeout_s,
        netmask: match (args.netmask, addr.addr) {
            (Some(PersistMask::V4(m)), _) => IpAddr::V4(m),
            (Some(PersistMask::V6(n)), _) => Persistence::v6_prefix_mask(n.into()),
            (None, a) => Persistence::host_mask(a.is_ipv6()),
        },
    });
    Ok(ServiceSpec {
        addr,
        scheduler,
        hash_port,
        hash_source_only,
        persistence,
    })
}

/// The real server spec of `-a` / `-e`, or why the director cannot have it.
pub fn server_spec(args: &ServerArgs) -> Result<(ServiceAddr, RealSpec), IpvsadmError> {
    let svc = existing(&args.service).ok_or_else(|| table("Service not defined"))?;
    if args.u_threshold != 0 || args.l_threshold != 0 {
        return Err(table(
            "connection thresholds are not supported by the director: -x and -y accept only 0 (no threshold)",
        ));
    }
    Ok((svc, real_spec_of(args)))
}

/// The real of `-a` / `-e`'s arguments. The command line checked the combinations
/// (tunnel options with -i only, a GUE port, one checksum option), as ipvsadm does.
pub fn real_spec_of(args: &ServerArgs) -> RealSpec {
    let tunnel = if args.method == Method::Tunnel {
        Tunnel {
            kind: args.tun_type,
            port: args.tun_port,
            csum: args.tun_csum,
        }
    } else {
        Tunnel::default()
    };
    RealSpec::new(args.addr, args.port, args.method, args.weight).with_tunnel(tunnel)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::super::parse_line;
    use super::*;

    fn spec(line: &str) -> Result<ServiceSpec, IpvsadmError> {
        match parse_line(line)? {
            Command::AddService(a) => service_spec(&a, true),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn scheduler_names_map_to_the_data_path_schedulers() {
        let s = spec("-A -t 10.0.0.1:80").unwrap();
        assert_eq!(
            (s.scheduler, s.hash_port, s.hash_source_only),
            (Scheduler::Maglev, false, false)
        );
        let s = spec("-A -t 10.0.0.1:80 -s mh").unwrap();
        assert_eq!((s.scheduler, s.hash_source_only), (Scheduler::Maglev, true));
        let s = spec("-A -t 10.0.0.1:80 -s mh -b mh-port").unwrap();
        assert_eq!(
            (s.scheduler, s.hash_source_only),
            (Scheduler::Maglev, false)
        );
        let s = spec("-A -t 10.0.0.1:80 -b mh-port,mh-fallback").unwrap();
        assert_eq!(
            (s.scheduler, s.hash_source_only),
            (Scheduler::Maglev, false)
        );
        let s = spec("-A -t 10.0.0.1:80 -b mh-fallback").unwrap();
        assert_eq!((s.scheduler, s.hash_source_only), (Scheduler::Maglev, true));
        let s = spec("-A -t 10.0.0.1:80 -s sh -b sh-port").unwrap();
        assert_eq!((s.scheduler, s.hash_port), (Scheduler::SourceHash, true));
        let s = spec("-A -t 10.0.0.1:80 -s sh -b flag-2").unwrap();
        assert_eq!((s.scheduler, s.hash_port), (Scheduler::SourceHash, true));
        let s = spec("-A -t 10.0.0.1:80 -s sh").unwrap();
        assert_eq!((s.scheduler, s.hash_port), (Scheduler::SourceHash, false));
        assert_eq!(
            spec("-A -t 10.0.0.1:80 -s rr").unwrap().scheduler,
            Scheduler::RoundRobin
        );
        assert_eq!(
            spec("-A -t 10.0.0.1:80 -s wrr").unwrap().scheduler,
            Scheduler::WeightedRoundRobin
        );
    }

    #[test]
    fn what_the_director_lacks_is_refused_with_ipvsadm_words() {
        for (line, want) in [
            (
                "-A -t 10.0.0.1:80 -s wlc",
                "Scheduler or persistence engine not found\n(wlc is an IPVS scheduler",
            ),
            (
                "-A -t 10.0.0.1:80 -s lc",
                "Scheduler or persistence engine not found\n",
            ),
            (
                "-A -t 10.0.0.1:80 -s bogus",
                "Scheduler or persistence engine not found",
            ),
            (
                "-A -t 10.0.0.1:80 --pe sip",
                "Scheduler or persistence engine not found",
            ),
            ("-A -u 10.0.0.1:53 -o", "one-packet scheduling"),
            (
                "-A --sctp-service 10.0.0.1:80",
                "SCTP virtual services are not supported",
            ),
            (
                "-A -f 1",
                "firewall-mark virtual services (-f) are not supported",
            ),
            (
                "-A -t 10.0.0.1:80 -s rr -b flag-1",
                "scheduler flag flag-1 has no meaning for rr",
            ),
            (
                "-A -t 10.0.0.1:80 -s mh -b flag-3",
                "scheduler flag flag-3 has no meaning for mh",
            ),
        ] {
            let got = spec(line).unwrap_err().to_string();
            assert!(got.starts_with(want), "{line}: {got}");
        }
    }

    #[test]
    fn persistence_defaults_to_a_full_mask() {
        let s = spec("-A -t 10.0.0.1:80 -p").unwrap();
        let p = s.persistence.unwrap();
        assert_eq!(
            (p.timeout_s, p.netmask),
            (360, IpAddr::V4(Ipv4Addr::BROADCAST))
        );
        let s = spec("-A -t 10.0.0.1:0 -p 60 -M 255.255.0.0").unwrap();
        let p = s.persistence.unwrap();
        assert_eq!(
            (p.timeout_s, p.netmask.to_string().as_str()),
            (60, "255.255.0.0")
        );
        assert_eq!(s.addr.port, 0);
    }

    #[test]
    fn real_servers_refuse_thresholds_and_carry_tunnel_options() {
        use super::super::hiargs::{TunCsum, TunType};
        let server = |line: &str| match parse_line(line).unwrap() {
            Command::AddServer(a) | Command::EditServer(a) => {
                server_spec(&a).map_err(|e| e.to_string())
            }
            other => panic!("{other:?}"),
        };
        let (svc, real) = server("-a -t 10.0.0.1:80 -r 10.1.0.11 -x 0 -y 0").unwrap();
        assert_eq!(svc.port, 80);
        assert_eq!(
            (real.port, real.method, real.weight),
            (80, Method::Route, 1)
        );
        let (_, real) = server("-a -t 10.0.0.1:80 -r 10.1.0.11:8080 -m -w 3").unwrap();
        assert_eq!(
            (real.port, real.method, real.weight),
            (8080, Method::Masq, 3)
        );
        let (_, real) = server("-a -t 10.0.0.1:80 -r 10.1.0.11:8080 -g").unwrap();
        assert_eq!(real.port, 80, "DR keeps the virtual port");
        let (_, real) = server("-e -t 10.0.0.1:80 -r 10.1.0.11 -i --tun-type ipip -w 0").unwrap();
        assert_eq!((real.method, real.weight), (Method::Tunnel, 0));
        assert!(
            server("-a -t 10.0.0.1:80 -r 10.1.0.11 -x 100")
                .unwrap_err()
                .contains("thresholds are not supported")
        );
        assert!(
            server("-a -t 10.0.0.1:80 -r 10.1.0.11 -y 1")
                .unwrap_err()
                .contains("thresholds are not supported")
        );
        let (_, real) =
            server("-a -t 10.0.0.1:80 -r 10.1.0.11 -i --tun-type gre --tun-csum").unwrap();
        assert_eq!(
            (real.method, real.tunnel.kind, real.tunnel.csum),
            (Method::Tunnel, TunType::Gre, TunCsum::Csum)
        );
        let (_, real) =
            server("-a -t 10.0.0.1:80 -r 10.1.0.11 -i --tun-type gue --tun-port 6080").unwrap();
        assert_eq!(
            (real.tunnel.kind, real.tunnel.port, real.tunnel.csum),
            (TunType::Gue, 6080, TunCsum::NoCsum)
        );
        // An edit without tunnel options is back to plain IPIP, as in ipvsadm (the edit
        // sets every attribute of the real).
        let (_, real) = server("-e -t 10.0.0.1:80 -r 10.1.0.11 -i").unwrap();
        assert_eq!(real.tunnel, Tunnel::default());
        assert_eq!(
            server("-a -f 1 -r 10.1.0.11").unwrap_err(),
            "Service not defined"
        );
    }

    #[test]
    fn restore_lines_split_on_white_space_and_drop_ipvsadm_and_comments() {
        assert_eq!(
            restore_tokens("-A -t 10.0.0.1:80 -s rr\n"),
            ["-A", "-t", "10.0.0.1:80", "-s", "rr"]
        );
        assert_eq!(restore_tokens("ipvsadm\t-C\r\n"), ["-C"]);
        assert_eq!(restore_tokens("  # a comment\n"), Vec::<String>::new());
        assert_eq!(restore_tokens("-C # flush\n"), ["-C"]);
        assert_eq!(restore_tokens("\n"), Vec::<String>::new());
    }
}
