//! Network-namespace labs with real traffic.
//!
//! [`Lab::build`] turns a declarative [`Topology`] into network namespaces joined by veth
//! pairs and bridges, with addresses, routes, sysctls and small in-process servers, and
//! [`Lab`]'s `Drop` removes all of it again (also during a panic unwind).
//!
//! ```no_run
//! use std::time::Duration;
//! use director_tests::lab::{Endpoint, Host, Lab, Topology, cidr, http_get};
//!
//! let (c, s) = (cidr("10.1.0.1/24"), cidr("10.1.0.2/24"));
//! let topo = Topology::new()
//!     .host(Host::new("client"))
//!     .host(Host::new("server").http(80))
//!     .veth(
//!         Endpoint::new("client", "eth0").addr(c.0, c.1),
//!         Endpoint::new("server", "eth0").addr(s.0, s.1),
//!     );
//! let lab = Lab::build(&topo)?;
//! let body = http_get(lab.ns("client"), "http://10.1.0.2/", Duration::from_secs(5))?;
//! assert_eq!(body, "server\n");
//! # anyhow::Ok(())
//! ```
//!
//! How it is made:
//! - Namespaces are named `dlab<pid>-<n>-<host>` (and `dlab<pid>-<n>.switch` for the
//!   bridges), made with `ip netns add` and removed with `ip netns del`. Each build first
//!   removes namespaces and bpffs directories left by lab processes that no longer exist.
//! - Links, addresses and routes are made over rtnetlink from threads that entered the
//!   namespace. A veth pair is created inside the lab namespace of one end (never in the
//!   root namespace) with a temporary, counter-based name for the other end, which is
//!   then moved (by namespace fd) into its own namespace and renamed there.
//! - TX checksum offload is turned off (`ethtool -K IF tx off`) on every veth end: with
//!   native XDP on a veth the checksum-offload state is lost and receivers would drop
//!   the packets.
//! - Every namespace is dual-stack: IPv6 duplicate address detection is off in all of
//!   them (`accept_dad=0`, and addresses are added with `nodad`), so IPv6 addresses work
//!   as soon as `build` returns; every server listens on IPv4 and on IPv6.
//! - Nothing is ever sent outside the lab's namespaces: clients and servers run on
//!   threads inside them, and [`http_get`] refuses host names (no DNS).

#![warn(missing_docs)]

mod client;
mod flood;
mod netlink;
mod netns;
mod servers;
mod topology;

use std::collections::HashSet;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

pub use client::{TCP_CONNECT_TIMEOUT, http_get, http_url, tcp_stream, udp_exchange, udp_request};
pub use flood::{Flood, flood};
pub use netns::Netns;
pub use topology::{Endpoint, Host, Link, Route, ServerSpec, Topology, cidr};

use netlink::IfaceSetup;
use servers::ServerSet;

/// Lab number within this process (part of every name the lab makes).
static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);
/// Temporary interface names (for a veth end on its way to its own namespace).
static TMP_COUNTER: AtomicU32 = AtomicU32::new(0);

/// How long `build` waits for every link to be operationally up.
const LINK_UP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the teardown waits for server threads to end.
const SERVER_STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the teardown lets a spawned process exit after SIGTERM before SIGKILL.
const CHILD_TERM_TIMEOUT: Duration = Duration::from_secs(3);

/// A running lab: the namespaces, links, servers and processes of one [`Topology`].
/// Dropping it removes everything it made; the drop never panics.
pub struct Lab {
    id: String,
    hosts: Vec<Netns>,
    switch: Option<Netns>,
    /// (host, host-side ifname, switch-side port name).
    bridge_ports: Vec<(String, String, String)>,
    bpffs: PathBuf,
    bpffs_created: bool,
    servers: Vec<ServerSet>,
    children: Mutex<Vec<Child>>,
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab")
            .field("id", &self.id)
            .field("namespaces", &self.netns_names())
            .field("bpffs", &self.bpffs)
            .finish_non_exhaustive()
    }
}

/// Things to do to each link end once every link exists.
struct End {
    /// Index into `hosts`, or `None` for the switch namespace.
    host: Option<usize>,
    setup: IfaceSetup,
}

impl Lab {
    /// Builds the topology: everything or nothing (on error, what was created is removed).
    ///
    /// When it returns, every link is operationally up, no IPv6 address is tentative and
    /// every server is bound.
    pub fn build(topo: &Topology) -> Result<Lab> {
        topo.validate().context("invalid lab topology")?;
        netns::tools()?;
        netns::housekeeping()?;
        let id = format!(
            "{}{}-{}",
            netns::PREFIX,
            std::process::id(),
            LAB_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut lab = Lab {
            bpffs: Path::new(netns::BPFFS_ROOT).join(&id),
            id,
            hosts: Vec::new(),
            switch: None,
            bridge_ports: Vec::new(),
            bpffs_created: false,
            servers: Vec::new(),
            children: Mutex::new(Vec::new()),
        };
        // On error (or panic) `lab` is dropped, which removes whatever was made so far.
        lab.populate(topo)
            .with_context(|| format!("building lab {}", lab.id))?;
        Ok(lab)
    }

    fn populate(&mut self, topo: &Topology) -> Result<()> {
        std::fs::create_dir(&self.bpffs)
            .with_context(|| format!("creating {}", self.bpffs.display()))?;
        self.bpffs_created = true;

        for h in &topo.hosts {
            let ns = Netns::create(format!("{}-{}", self.id, h.name), &h.name)?;
            self.hosts.push(ns);
        }
        if !topo.bridges.is_empty() {
            self.switch = Some(Netns::create(format!("{}.switch", self.id), "switch")?);
        }

        // Before any interface exists (interfaces copy the `default` settings when made or
        // moved in): no duplicate address detection, so IPv6 addresses, link-local ones
        // included, are usable at once instead of "tentative" for a second or more.
        for ns in self.namespaces() {
            for key in [
                "net.ipv6.conf.all.accept_dad",
                "net.ipv6.conf.default.accept_dad",
            ] {
                ns.set_sysctl(key, "0")?;
            }
        }

        for (h, ns) in topo.hosts.iter().zip(&self.hosts) {
            netlink::setup_lo(ns, h.lo_addrs.clone())?;
        }
        if let Some(sw) = &self.switch {
            netlink::setup_lo(sw, Vec::new())?;
            netlink::add_bridges(sw, topo.bridges.clone())?;
        }

        // Names that temporary and switch-port names must avoid.
        let mut taken: HashSet<String> = topo.bridges.iter().cloned().collect();
        taken.insert("lo".into());
        for l in &topo.links {
            match l {
                Link::Veth { a, b } => {
                    taken.insert(a.ifname.clone());
                    taken.insert(b.ifname.clone());
                }
                Link::Bridged { host, .. } => {
                    taken.insert(host.ifname.clone());
                }
            }
        }

        let mut ends: Vec<End> = Vec::new();
        for (i, link) in topo.links.iter().enumerate() {
            match link {
                Link::Veth { a, b } => {
                    let (ia, ib) = (self.host_index(&a.host)?, self.host_index(&b.host)?);
                    let (nsa, nsb) = (&self.hosts[ia], &self.hosts[ib]);
                    if ia == ib {
                        netlink::create_veth(nsa, &a.ifname, a.mac, &b.ifname, None)?;
                        if b.mac.is_some() {
                            netlink::rename(nsb, &b.ifname, &b.ifname, b.mac)?;
                        }
                    } else {
                        let tmp = tmp_name(&taken);
                        netlink::create_veth(nsa, &a.ifname, a.mac, &tmp, Some(nsb.path()))?;
                        netlink::rename(nsb, &tmp, &b.ifname, b.mac)?;
                    }
                    for (idx, e) in [(ia, a), (ib, b)] {
                        ends.push(End {
                            host: Some(idx),
                            setup: IfaceSetup {
                                name: e.ifname.clone(),
                                addrs: e.addrs.clone(),
                                controller: None,
                            },
                        });
                    }
                }
                Link::Bridged { host, bridge } => {
                    let ih = self.host_index(&host.host)?;
                    let sw = self
                        .switch
                        .as_ref()
                        .ok_or_else(|| anyhow!("no switch namespace"))?;
                    let mut port = format!("{}_{}", host.host, host.ifname);
                    if port.len() > topology::MAX_IFNAME || taken.contains(&port) {
                        port = format!("swp{i}");
                    }
                    taken.insert(port.clone());
                    let tmp = tmp_name(&taken);
                    netlink::create_veth(sw, &port, None, &tmp, Some(self.hosts[ih].path()))?;
                    netlink::rename(&self.hosts[ih], &tmp, &host.ifname, host.mac)?;
                    self.bridge_ports
                        .push((host.host.clone(), host.ifname.clone(), port.clone()));
                    ends.push(End {
                        host: Some(ih),
                        setup: IfaceSetup {
                            name: host.ifname.clone(),
                            addrs: host.addrs.clone(),
                            controller: None,
                        },
                    });
                    ends.push(End {
                        host: None,
                        setup: IfaceSetup {
                            name: port,
                            addrs: Vec::new(),
                            controller: Some(bridge.clone()),
                        },
                    });
                }
            }
        }

        // TX checksum offload off on every veth end (see the module docs).
        for e in &ends {
            let ns = self.end_ns(e.host);
            ns.exec_ok(&[
                netns::tools()?.ethtool.to_str().unwrap_or("ethtool"),
                "-K",
                &e.setup.name,
                "tx",
                "off",
            ])
            .with_context(|| format!("turning TX checksum offload off on {}", e.setup.name))?;
        }

        for (h, ns) in topo.hosts.iter().zip(&self.hosts) {
            for (k, v) in &h.sysctls {
                ns.set_sysctl(k, v)
                    .with_context(|| format!("host {}: sysctl {k}={v}", h.name))?;
            }
        }

        // Addresses, bridge ports and link up, one namespace at a time.
        let mut per_ns: Vec<(Option<usize>, Vec<IfaceSetup>)> = Vec::new();
        let mut wait: Vec<(Option<usize>, Vec<String>)> = Vec::new();
        for e in ends {
            match per_ns.iter_mut().find(|(h, _)| *h == e.host) {
                Some((_, v)) => v.push(e.setup),
                None => per_ns.push((e.host, vec![e.setup])),
            }
        }
        for (host, setups) in per_ns {
            wait.push((host, setups.iter().map(|s| s.name.clone()).collect()));
            netlink::setup_ifaces(self.end_ns(host), setups)?;
        }

        for (h, ns) in topo.hosts.iter().zip(&self.hosts) {
            if !h.routes.is_empty() {
                netlink::add_routes(ns, h.routes.clone())
                    .with_context(|| format!("host {}", h.name))?;
            }
        }

        for (host, names) in wait {
            netlink::wait_oper_up(self.end_ns(host), names, LINK_UP_TIMEOUT)?;
        }
        for ns in self.namespaces() {
            netlink::wait_no_tentative(ns, LINK_UP_TIMEOUT)?;
        }

        for (h, ns) in topo.hosts.iter().zip(&self.hosts) {
            if !h.servers.is_empty() {
                self.servers
                    .push(ServerSet::start(ns, &h.name, &h.servers)?);
            }
        }
        Ok(())
    }

    fn host_index(&self, host: &str) -> Result<usize> {
        self.hosts
            .iter()
            .position(|n| n.label() == host)
            .ok_or_else(|| {
                let known: Vec<&str> = self.hosts.iter().map(|n| n.label()).collect();
                anyhow!("this lab has no host named {host:?} (hosts: {known:?})")
            })
    }

    fn end_ns(&self, host: Option<usize>) -> &Netns {
        match host {
            Some(i) => &self.hosts[i],
            None => self
                .switch
                .as_ref()
                .expect("bridged links have a switch namespace"),
        }
    }

    /// The lab's id (`dlab<pid>-<n>`): the prefix of its namespace names and the name of
    /// its bpffs directory.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The namespace of a host. Panics with a clear message for an unknown host.
    pub fn ns(&self, host: &str) -> &Netns {
        self.try_ns(host).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The namespace of a host, or an error naming the known hosts.
    pub fn try_ns(&self, host: &str) -> Result<&Netns> {
        Ok(&self.hosts[self.host_index(host)?])
    }

    /// The namespace holding the bridges, if the topology has any.
    pub fn switch(&self) -> Option<&Netns> {
        self.switch.as_ref()
    }

    /// Every namespace the lab made (hosts first, then the switch).
    pub fn namespaces(&self) -> impl Iterator<Item = &Netns> {
        self.hosts.iter().chain(self.switch.as_ref())
    }

    /// The real names of every namespace the lab made (as in `ip netns list`).
    pub fn netns_names(&self) -> Vec<String> {
        self.namespaces().map(|n| n.name().to_owned()).collect()
    }

    /// The interface index of `ifname` in `host`. Panics if either is unknown.
    pub fn ifindex(&self, host: &str, ifname: &str) -> u32 {
        self.ns(host)
            .ifindex(ifname)
            .unwrap_or_else(|e| panic!("ifindex of {ifname} on {host}: {e:#}"))
    }

    /// The MAC address of `ifname` in `host`. Panics if either is unknown.
    pub fn mac(&self, host: &str, ifname: &str) -> [u8; 6] {
        self.ns(host)
            .mac(ifname)
            .unwrap_or_else(|e| panic!("MAC of {ifname} on {host}: {e:#}"))
    }

    /// A unique directory under /sys/fs/bpf (empty at build, BPF filesystem mounted there
    /// if it was not), removed recursively on drop: pin maps and links of the lab here.
    pub fn bpffs_dir(&self) -> &Path {
        &self.bpffs
    }

    /// The switch-side veth name and its namespace for a Bridged link (callers attach XDP
    /// programs there). Panics if `host`/`ifname` is not a bridged endpoint of this lab.
    pub fn bridge_port(&self, host: &str, ifname: &str) -> (&Netns, String) {
        let port = self
            .bridge_ports
            .iter()
            .find(|(h, i, _)| h == host && i == ifname)
            .map(|(_, _, p)| p.clone())
            .unwrap_or_else(|| {
                panic!(
                    "{host}/{ifname} is not plugged into a bridge of lab {}",
                    self.id
                )
            });
        let sw = self
            .switch
            .as_ref()
            .expect("bridged links have a switch namespace");
        (sw, port)
    }

    /// Starts a process inside the host's network namespace (only the network namespace
    /// changes, so /sys/fs/bpf stays visible, as with `nsenter --net`). The process gets
    /// its own process group; on drop the group gets SIGTERM, then SIGKILL after 3 s, and
    /// the process is reaped. The rest of `cmd` (stdio, env, ...) is used as given.
    pub fn spawn(&self, host: &str, cmd: &mut Command) -> Result<()> {
        self.spawn_pid(host, cmd).map(drop)
    }

    /// Like [`Lab::spawn`], returning the process id.
    pub fn spawn_pid(&self, host: &str, cmd: &mut Command) -> Result<u32> {
        let ns = self.try_ns(host)?;
        let path = CString::new(ns.path().as_os_str().as_bytes())?;
        // SAFETY: the hook runs in the forked child before exec and only makes
        // async-signal-safe system calls (open, setns, close) on memory it owns.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let r = libc::setns(fd, libc::CLONE_NEWNET);
                let err = std::io::Error::last_os_error();
                libc::close(fd);
                if r != 0 {
                    return Err(err);
                }
                Ok(())
            });
        }
        cmd.process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {:?} in {}", cmd.get_program(), ns.name()))?;
        let pid = child.id();
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(child);
        Ok(pid)
    }

    fn teardown(&mut self) {
        // Servers first: signal all, then join with one shared deadline.
        for s in &mut self.servers {
            s.signal();
        }
        let deadline = Instant::now() + SERVER_STOP_TIMEOUT;
        for mut s in self.servers.drain(..) {
            s.finish(deadline);
        }

        let mut children =
            std::mem::take(self.children.get_mut().unwrap_or_else(|e| e.into_inner()));
        stop_children(&mut children);

        for ns in self.hosts.drain(..).chain(self.switch.take()) {
            if let Err(e) = ns.delete() {
                log::warn!("lab {}: {e:#}", self.id);
            }
        }

        if self.bpffs_created {
            self.bpffs_created = false;
            if let Err(e) = std::fs::remove_dir_all(&self.bpffs) {
                log::warn!("lab {}: removing {}: {e}", self.id, self.bpffs.display());
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Never panic in drop (it may run during an unwind, where a panic aborts).
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.teardown())).is_err() {
            log::error!(
                "lab {}: teardown panicked; something may be left behind",
                self.id
            );
        }
    }
}

fn tmp_name(taken: &HashSet<String>) -> String {
    loop {
        let name = format!("dlabtmp{}", TMP_COUNTER.fetch_add(1, Ordering::Relaxed));
        if !taken.contains(&name) {
            return name;
        }
    }
}

fn kill_group(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: plain syscall; the group is the one made for this child (process_group(0)).
        unsafe {
            libc::kill(-pid, sig);
        }
    }
}

fn stop_children(children: &mut [Child]) {
    for c in children.iter() {
        kill_group(c.id(), libc::SIGTERM);
    }
    let deadline = Instant::now() + CHILD_TERM_TIMEOUT;
    for c in children.iter_mut() {
        loop {
            match c.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                _ => {
                    kill_group(c.id(), libc::SIGKILL);
                    let _ = c.wait();
                    break;
                }
            }
        }
        // Whatever else is left in its process group.
        kill_group(c.id(), libc::SIGKILL);
    }
}

/// Fails unless `cond` becomes true before `timeout`, polling every few milliseconds.
/// For tests that must wait on a condition (never a plain sleep).
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
