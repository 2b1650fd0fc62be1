//! Part 3 of the suite: end to end through a namespace lab. UDP packets per second
//! delivered to real servers, and TCP connections per second (a new connection per
//! request), for every variant on the same topology in the same run:
//!
//! | variant            | on the director's veths | what forwards          | its floor          |
//! |--------------------|-------------------------|------------------------|--------------------|
//! | routing            | nothing                 | the kernel (a router)  | -                  |
//! | nftables DNAT      | nothing                 | kernel + DNAT/conntrack| routing            |
//! | routing, XDP pass  | `pass` (XDP_PASS)       | the kernel             | -                  |
//! | director DR / IPIP / NAT | `director`        | XDP                    | routing, XDP pass  |
//!
//! The topology is the shortest LVS path: client -- veth -- director -- veth -- reals
//! (three real-server addresses on one host). Everything else is attached in every
//! variant alike (`pass` on the client's veth, `decap` on the reals'), so the only
//! difference between a variant and its floor is what forwards. An XDP program on a veth switches it to NAPI
//! mode without GSO/GRO coalescing, which is why the director's floor is routing with a
//! pass-through program on the same veths.
//!
//! On veths the whole path runs on the sending CPU. Every load thread and server thread
//! is pinned to one CPU ([`super::bench_cpu`]); UDP sinks run on the other. The cost of
//! a packet or connection is the CPU time those threads and that CPU's ksoftirqd spent,
//! read from their schedstat (nanoseconds, per thread): this kernel has no
//! IRQ_TIME_ACCOUNTING, so softirq work done in a thread's context is charged to it,
//! and the CPU time of other processes on the machine (parallel builds) is not counted,
//! as it would be by /proc/stat deltas. What a variant adds is its cost minus its
//! floor's, taken within one round; rounds interleave all variants.
//!
//! Every load is bounded in packets or connections and in time, and goes only to
//! addresses inside the lab's namespaces.

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::programs::{XdpMode, xdp::XdpLinkId};
use director_common::{real::Method, stats::Stat};
use director_control::{
    Datapath, LoadOptions, Protocol, RealSpec, ServiceSpec,
    datapath::{PROG_DECAP, PROG_DIRECTOR, PROG_PASS},
};

use super::{Dist, Options, bench_cpu, pin_thread};
use director_tests::{
    fixture::InNetns,
    lab::{Endpoint, Host, Lab, Topology},
    lvs::{
        DIRECTOR_BACK, DIRECTOR_FRONT, VIP_DR, VIP_NAT, VIP_TUN, director_host, real_addr,
        real_host,
    },
};

/// The client's source address for variant `k` (of [`Variant::ALL`]): each variant has
/// its own, so no 4-tuple of one variant meets a TIME_WAIT left by another at a real
/// (NAT and DNAT reach the reals' own addresses, as routing does).
fn client_addr(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, 2 + k as u8)
}
const REALS: u8 = 3;
const UDP_PORT: u16 = 9000;
const TCP_PORT: u16 = 8000;
/// UDP flows of the load (one socket each).
const UDP_FLOWS: usize = 16;
/// UDP payload bytes (64-byte... frames: 14 + 20 + 8 + 22 = 64).
const UDP_PAYLOAD: usize = 22;
const REQUEST: &[u8] = b"GET /bench\r\n\r\n..";
const RESPONSE: [u8; 64] = [b'x'; 64];

fn ip(a: Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

/// What runs on the director's two veths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DirectorXdp {
    None,
    Pass,
    Director,
}

/// The variants, in the order they run within a round (grouped by what is attached).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    Routing,
    Nftables,
    RoutingPass,
    Dr,
    Ipip,
    Nat,
}

impl Variant {
    pub const ALL: [Variant; 6] = [
        Variant::Routing,
        Variant::Nftables,
        Variant::RoutingPass,
        Variant::Dr,
        Variant::Ipip,
        Variant::Nat,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Variant::Routing => "routing (no XDP)",
            Variant::Nftables => "nftables DNAT + conntrack",
            Variant::RoutingPass => "routing, XDP pass on the veths",
            Variant::Dr => "director DR",
            Variant::Ipip => "director IPIP",
            Variant::Nat => "director NAT",
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Variant::Routing => "routing",
            Variant::Nftables => "nft DNAT",
            Variant::RoutingPass => "routing+pass",
            Variant::Dr => "DR",
            Variant::Ipip => "IPIP",
            Variant::Nat => "NAT",
        }
    }

    /// The variant whose cost this one's is measured against.
    pub fn floor(self) -> Option<Variant> {
        match self {
            Variant::Routing | Variant::RoutingPass => None,
            Variant::Nftables => Some(Variant::Routing),
            Variant::Dr | Variant::Ipip | Variant::Nat => Some(Variant::RoutingPass),
        }
    }

    fn xdp(self) -> DirectorXdp {
        match self {
            Variant::Routing | Variant::Nftables => DirectorXdp::None,
            Variant::RoutingPass => DirectorXdp::Pass,
            Variant::Dr | Variant::Ipip | Variant::Nat => DirectorXdp::Director,
        }
    }

    fn index(self) -> usize {
        Variant::ALL
            .iter()
            .position(|v| *v == self)
            .expect("every variant is in ALL")
    }

    /// The client's source address in this variant.
    fn source(self) -> Ipv4Addr {
        client_addr(self.index())
    }

    /// Destinations of flow `i`.
    fn target(self, i: usize, port: u16) -> SocketAddr {
        let a = match self {
            Variant::Routing | Variant::RoutingPass => real_addr((i % REALS as usize) as u8 + 1),
            Variant::Dr => VIP_DR,
            Variant::Ipip => VIP_TUN,
            Variant::Nftables | Variant::Nat => VIP_NAT,
        };
        SocketAddr::V4(SocketAddrV4::new(a, port))
    }
}

/// One UDP sample.
#[derive(Clone, Copy, Debug, Default)]
struct UdpSample {
    sent: u64,
    delivered: u64,
    wall: Duration,
    cpu_ns: u64,
}

/// One TCP sample.
#[derive(Clone, Copy, Debug, Default)]
struct TcpSample {
    conns: u64,
    failed: u64,
    wall: Duration,
    cpu_ns: u64,
}

/// A variant's results over all rounds.
#[derive(Clone, Debug)]
pub struct VariantResult {
    pub variant: Variant,
    /// UDP packets delivered to the reals per second (wall clock).
    pub udp_pps: Dist,
    /// CPU ns per UDP packet sent (the whole path).
    pub udp_ns: Dist,
    /// What this variant adds per packet over its floor (per round differences).
    pub udp_added: Option<Dist>,
    /// Delivered / sent, %.
    pub udp_delivered_pct: f64,
    /// TCP connections completed per second (wall clock).
    pub tcp_cps: Dist,
    /// CPU ns per connection (client, servers, softirq).
    pub tcp_ns: Dist,
    /// What this variant adds per connection over its floor.
    pub tcp_added: Option<Dist>,
    /// Connections per CPU-second (1e9 / tcp_ns median): the rate of one saturated core.
    pub tcp_cps_cpu: f64,
    pub tcp_failed: u64,
}

/// Part 3's results.
#[derive(Clone, Debug)]
pub struct E2e {
    pub variants: Vec<VariantResult>,
    pub rounds: usize,
    pub udp_bound: (u64, Duration),
    pub tcp_bound: (u64, Duration),
    /// Checks that failed (a variant that did not forward as it should).
    pub warnings: Vec<String>,
}

impl E2e {
    pub fn get(&self, v: Variant) -> Option<&VariantResult> {
        self.variants.iter().find(|r| r.variant == v)
    }
}

/// The lab, the loaded programs and the load threads' servers.
struct BenchLab {
    director: Datapath,
    helpers: Datapath,
    /// Links on the director's veths: (program, link), program "director" or "pass".
    links: Vec<(&'static str, XdpLinkId)>,
    state: DirectorXdp,
    nft: bool,
    sinks: Vec<Sink>,
    servers: Vec<Server>,
    // Dropped last: threads above stop and programs detach before namespaces go.
    lab: Lab,
}

/// The standard lab's addressing and hosts (`director_tests::lvs`) on veths:
/// client (eth0, one address per variant) -- veth -- director -- veth -- reals (the three
/// real servers' addresses on one host: what is measured is the path, and a host per
/// real would only add a bridge to every variant's path).
fn topology() -> Topology {
    let client = (0..Variant::ALL.len()).fold(Endpoint::new("client", "eth0"), |e, k| {
        e.addr(ip(client_addr(k)), 24)
    });
    let reals = (1..=REALS).fold(Endpoint::new("reals", "eth0"), |e, n| {
        e.addr(ip(real_addr(n)), 24)
    });
    Topology::new()
        .host(
            Host::new("client")
                .default_route(ip(DIRECTOR_FRONT))
                .sysctl("net.ipv4.tcp_tw_reuse", "1")
                .sysctl("net.ipv4.ip_local_port_range", "10000 65000"),
        )
        .host(director_host("director"))
        .host(real_host("reals", Some(DIRECTOR_BACK), &[VIP_DR, VIP_TUN]))
        .veth(
            client,
            Endpoint::new("director", "eth0")
                .addr(ip(DIRECTOR_FRONT), 24)
                .addr(ip(VIP_DR), 32)
                .addr(ip(VIP_TUN), 32)
                .addr(ip(VIP_NAT), 32),
        )
        .veth(
            Endpoint::new("director", "eth1").addr(ip(DIRECTOR_BACK), 24),
            reals,
        )
}

impl BenchLab {
    fn build() -> Result<Self> {
        let lab = Lab::build(&topology()).context("building the benchmark lab")?;
        let mut director = Datapath::load(&LoadOptions {
            conn_table: 1 << 18,
            ..LoadOptions::default()
        })?;
        for (proto, port) in [(Protocol::Udp, UDP_PORT), (Protocol::Tcp, TCP_PORT)] {
            for (method, vip) in [
                (Method::Route, VIP_DR),
                (Method::Tunnel, VIP_TUN),
                (Method::Masq, VIP_NAT),
            ] {
                let spec = ServiceSpec::new(proto, ip(vip), port);
                director.control.add_service(&spec)?;
                for n in 1..=REALS {
                    director.control.add_real(
                        &spec.addr,
                        &RealSpec::new(ip(real_addr(n)), port, method, 1),
                    )?;
                }
            }
        }
        // The peers of the director's veths need a native XDP program for XDP_REDIRECT
        // into them to be delivered (docs/datapath.md): pass on the client, decap (which
        // the IPIP reals need anyway) on the reals. In every variant alike.
        let mut helpers = Datapath::load_helpers()?;
        let locals: Vec<Ipv4Addr> = (1..=REALS).map(real_addr).collect();
        helpers.allow_decap(&[DIRECTOR_BACK], &locals)?;
        for (host, prog) in [("client", PROG_PASS), ("reals", PROG_DECAP)] {
            let _in = InNetns::enter(&lab.ns(host).path());
            helpers.attach(prog, lab.ifindex(host, "eth0"), XdpMode::Driver)?;
        }
        {
            // The director's neighbours (the data path never ARPs; see neighbours.rs).
            let _in = InNetns::enter(&lab.ns("director").path());
            let addrs: Vec<IpAddr> = (1..=REALS)
                .map(real_addr)
                .chain((0..Variant::ALL.len()).map(client_addr))
                .map(IpAddr::V4)
                .collect();
            let left = director_control::neighbours::resolve(&addrs, Duration::from_secs(5))?;
            if !left.is_empty() {
                bail!("the director could not resolve {left:?}");
            }
        }
        let mut me = BenchLab {
            director,
            helpers,
            links: Vec::new(),
            state: DirectorXdp::None,
            nft: false,
            sinks: Vec::new(),
            servers: Vec::new(),
            lab,
        };
        // UDP sinks read on another CPU than the load's, so the load CPU's time is the
        // path's up to the socket.
        let other_cpu = (bench_cpu() + 1) % super::online_cpus();
        let path = me.lab.ns("reals").path();
        me.sinks.push(Sink::start(path.clone(), other_cpu)?);
        me.servers.push(Server::start(path, bench_cpu())?);
        Ok(me)
    }

    fn set_xdp(&mut self, want: DirectorXdp) -> Result<()> {
        if self.state == want {
            return Ok(());
        }
        for (prog, link) in self.links.drain(..) {
            let owner = if prog == PROG_DIRECTOR {
                &mut self.director
            } else {
                &mut self.helpers
            };
            owner.program_mut(prog).detach(link)?;
        }
        self.state = DirectorXdp::None;
        let prog = match want {
            DirectorXdp::None => return Ok(()),
            DirectorXdp::Pass => PROG_PASS,
            DirectorXdp::Director => PROG_DIRECTOR,
        };
        let _in = InNetns::enter(&self.lab.ns("director").path());
        for ifname in ["eth0", "eth1"] {
            let idx = self.lab.ifindex("director", ifname);
            let owner = if prog == PROG_DIRECTOR {
                &mut self.director
            } else {
                &mut self.helpers
            };
            let link = owner.attach(prog, idx, XdpMode::Driver)?;
            self.links.push((prog, link));
        }
        self.state = want;
        Ok(())
    }

    fn set_nft(&mut self, on: bool) -> Result<()> {
        if self.nft == on {
            return Ok(());
        }
        let d = self.lab.ns("director");
        if on {
            let map = (1..=REALS)
                .map(|n| format!("{} : {}", n - 1, real_addr(n)))
                .collect::<Vec<_>>()
                .join(", ");
            let rules = format!(
                "table ip bench_dnat {{\n  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n    ip daddr {VIP_NAT} udp dport {UDP_PORT} dnat to numgen inc mod {REALS} map {{ {map} }}\n    ip daddr {VIP_NAT} tcp dport {TCP_PORT} dnat to numgen inc mod {REALS} map {{ {map} }}\n  }}\n}}\n"
            );
            let file = std::env::temp_dir().join(format!("bench-nft-{}.nft", std::process::id()));
            std::fs::write(&file, rules)?;
            let r = d.exec_ok(&["nft", "-f", file.to_str().context("temp path")?]);
            let _ = std::fs::remove_file(&file);
            r.context("loading the DNAT rules (is the Debian package nftables installed?)")?;
        } else {
            d.exec_ok(&["nft", "delete", "table", "ip", "bench_dnat"])?;
        }
        self.nft = on;
        Ok(())
    }

    fn set_variant(&mut self, v: Variant) -> Result<()> {
        self.set_nft(false)?;
        self.set_xdp(v.xdp())?;
        if v == Variant::Nftables {
            self.set_nft(true)?;
        }
        Ok(())
    }

    fn client(&self) -> PathBuf {
        self.lab.ns("client").path()
    }

    fn redirects(&self) -> Result<u64> {
        Ok(self
            .director
            .control
            .stats()?
            .into_iter()
            .filter(|(s, _)| matches!(s, Stat::Redirect | Stat::Tx))
            .map(|(_, n)| n)
            .sum())
    }

    fn delivered(&self) -> Result<u64> {
        let mut n: u64 = self
            .sinks
            .iter()
            .map(|s| s.count.load(Ordering::Relaxed))
            .sum();
        n += udp_rcvbuf_errors(&self.lab, "reals")?;
        Ok(n)
    }
}

impl Drop for BenchLab {
    fn drop(&mut self) {
        for s in &self.sinks {
            s.stop.store(true, Ordering::Relaxed);
        }
        for s in &self.servers {
            s.stop.store(true, Ordering::Relaxed);
        }
        for s in self.sinks.drain(..) {
            s.join();
        }
        for s in self.servers.drain(..) {
            s.join();
        }
    }
}

/// Datagrams that reached a real's UDP layer but found the socket's buffer full.
fn udp_rcvbuf_errors(lab: &Lab, host: &str) -> Result<u64> {
    let snmp = lab
        .ns(host)
        .try_run(|| std::fs::read_to_string("/proc/thread-self/net/snmp"))??;
    let mut lines = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let (names, values) = (
        lines.next().context("no Udp header")?,
        lines.next().context("no Udp values")?,
    );
    let i = names
        .split_whitespace()
        .position(|w| w == "RcvbufErrors")
        .context("no RcvbufErrors")?;
    values
        .split_whitespace()
        .nth(i)
        .context("short Udp line")?
        .parse()
        .context("RcvbufErrors")
}

/// The thread id of the calling thread.
fn gettid() -> i32 {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::gettid() }
}

/// Nanoseconds a thread (of this process) has run, from its schedstat.
fn thread_runtime(tid: i32) -> Result<u64> {
    read_schedstat(&format!("/proc/self/task/{tid}/schedstat"))
}

fn read_schedstat(path: &str) -> Result<u64> {
    let s = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    s.split_whitespace()
        .next()
        .context("empty schedstat")?
        .parse()
        .with_context(|| format!("parsing {path}"))
}

/// The pid of `ksoftirqd/<cpu>`.
fn ksoftirqd(cpu: usize) -> Result<u32> {
    let want = format!("ksoftirqd/{cpu}");
    for e in std::fs::read_dir("/proc")?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == want) {
            return Ok(pid);
        }
    }
    bail!("no {want} thread")
}

/// A UDP sink on a real: counts what arrives on UDP_PORT.
struct Sink {
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Sink {
    fn start(ns: PathBuf, cpu: usize) -> Result<Sink> {
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let (s, c) = (stop.clone(), count.clone());
        let thread = std::thread::Builder::new()
            .name("bench-sink".into())
            .spawn(move || {
                let _in = InNetns::enter(&ns);
                let setup = || -> Result<UdpSocket> {
                    pin_thread(cpu)?;
                    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, UDP_PORT))?;
                    set_rcvbuf(&sock, 32 << 20)?;
                    sock.set_nonblocking(true)?;
                    Ok(sock)
                };
                let sock = match setup() {
                    Ok(s) => {
                        let _ = ready_tx.send(Ok(()));
                        s
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                // Drain every few ms without ever sleeping in recv: a sleeping reader
                // would be woken (an IPI from the sending CPU) for every datagram, and
                // that cost would be in every variant's figures.
                let mut buf = [0u8; 2048];
                while !s.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(2));
                    while sock.recv(&mut buf).is_ok() {
                        c.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })?;
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| anyhow!("the UDP sink did not start"))??;
        Ok(Sink {
            stop,
            count,
            thread: Some(thread),
        })
    }

    fn join(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn set_rcvbuf(sock: &UdpSocket, bytes: libc::c_int) -> Result<()> {
    // SAFETY: setsockopt reads an int we own.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).context("SO_RCVBUFFORCE");
    }
    Ok(())
}

/// A TCP request/response server on a real: reads the request, writes 64 bytes,
/// closes (the server closes first, so TIME_WAIT stays on the server side).
struct Server {
    stop: Arc<AtomicBool>,
    tid: i32,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(ns: PathBuf, cpu: usize) -> Result<Server> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel::<Result<i32>>();
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("bench-server".into())
            .spawn(move || {
                let _in = InNetns::enter(&ns);
                let setup = || -> Result<TcpListener> {
                    pin_thread(cpu)?;
                    let l = TcpListener::bind((Ipv4Addr::UNSPECIFIED, TCP_PORT))?;
                    l.set_nonblocking(true)?;
                    Ok(l)
                };
                let l = match setup() {
                    Ok(l) => {
                        let _ = ready_tx.send(Ok(gettid()));
                        l
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let mut buf = [0u8; 256];
                while !s.load(Ordering::Relaxed) {
                    match l.accept() {
                        Ok((mut c, _)) => {
                            let _ = c.set_nonblocking(false);
                            let _ = c.set_read_timeout(Some(Duration::from_secs(1)));
                            let mut got = 0;
                            while got < REQUEST.len() {
                                match c.read(&mut buf) {
                                    Ok(0) | Err(_) => break,
                                    Ok(n) => got += n,
                                }
                            }
                            let _ = c.write_all(&RESPONSE);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            wait_readable(&l, 50);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })?;
        let tid = ready_rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| anyhow!("the TCP server did not start"))??;
        Ok(Server {
            stop,
            tid,
            thread: Some(thread),
        })
    }

    fn join(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A TCP connection from `source` (any port) to `target`, 1 s connect timeout.
fn connect_from(source: Ipv4Addr, target: &SocketAddr) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd as _;
    // SAFETY: a plain socket call; the descriptor is owned by the TcpStream below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new socket nobody else owns.
    let s = unsafe { TcpStream::from_raw_fd(fd) };
    let sa = |a: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(a.octets()),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let local = sa(source, 0);
    // SAFETY: a sockaddr_in we own, with its size.
    if unsafe { libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let SocketAddr::V4(t) = target else {
        return Err(std::io::Error::other("IPv4 only"));
    };
    let remote = sa(*t.ip(), t.port());
    let timeout = libc::timeval {
        tv_sec: 1,
        tv_usec: 0,
    };
    // SAFETY: setsockopt reads the timeval we own; connect reads the sockaddr we own.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
        if libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(s)
}

fn wait_readable(l: &TcpListener, ms: i32) {
    let mut p = libc::pollfd {
        fd: l.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd we own.
    unsafe { libc::poll(&mut p, 1, ms) };
}

/// Sends UDP from the client at full speed: `UDP_FLOWS` connected sockets, 32
/// datagrams per sendmmsg, until `max` packets or `time`. Runs on its own thread in the
/// client's namespace pinned to the bench CPU; returns packets sent, wall time, and CPU
/// ns of itself plus ksoftirqd.
fn udp_load(
    client: PathBuf,
    source: Ipv4Addr,
    targets: Vec<SocketAddr>,
    max: u64,
    time: Duration,
) -> Result<(u64, Duration, u64)> {
    let cpu = bench_cpu();
    let softirqd = ksoftirqd(cpu)?;
    std::thread::Builder::new()
        .name("bench-udp".into())
        .spawn(move || -> Result<(u64, Duration, u64)> {
            let _in = InNetns::enter(&client);
            pin_thread(cpu)?;
            let socks: Vec<UdpSocket> = targets
                .iter()
                .map(|t| {
                    let s = UdpSocket::bind((source, 0))?;
                    s.connect(t)?;
                    Ok(s)
                })
                .collect::<Result<_>>()?;
            let payload = [0u8; UDP_PAYLOAD];
            let send = |s: &UdpSocket, n: usize| -> u64 {
                let mut iov = libc::iovec {
                    iov_base: payload.as_ptr() as *mut libc::c_void,
                    iov_len: payload.len(),
                };
                // Each mmsghdr points at our iovec.
                let mut msgs: Vec<libc::mmsghdr> = (0..n)
                    .map(|_| {
                        // SAFETY: an all-zero mmsghdr is valid (null pointers, zero
                        // lengths).
                        let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                        m.msg_hdr.msg_iov = &mut iov;
                        m.msg_hdr.msg_iovlen = 1;
                        m
                    })
                    .collect();
                // SAFETY: `msgs` holds n initialised headers whose buffers outlive the call.
                let r = unsafe { libc::sendmmsg(s.as_raw_fd(), msgs.as_mut_ptr(), n as u32, 0) };
                r.max(0) as u64
            };
            let mut i = 0usize;
            let me = gettid();
            let cpu0 =
                thread_runtime(me)? + read_schedstat(&format!("/proc/{softirqd}/schedstat"))?;
            let start = Instant::now();
            let mut sent = 0u64;
            while sent < max && start.elapsed() < time {
                for _ in 0..8 {
                    sent += send(&socks[i % socks.len()], 32);
                    i += 1;
                }
            }
            let wall = start.elapsed();
            let cpu1 =
                thread_runtime(me)? + read_schedstat(&format!("/proc/{softirqd}/schedstat"))?;
            Ok((sent, wall, cpu1 - cpu0))
        })?
        .join()
        .map_err(|_| anyhow!("the UDP load thread panicked"))?
}

/// One request per new TCP connection, sequentially, until `max` connections or
/// `time`. Returns (completed, failed, wall, CPU ns of the client, the servers and
/// ksoftirqd).
fn tcp_load(
    client: PathBuf,
    source: Ipv4Addr,
    targets: Vec<SocketAddr>,
    servers: Vec<i32>,
    max: u64,
    time: Duration,
    warmup: u64,
) -> Result<(u64, u64, Duration, u64)> {
    let cpu = bench_cpu();
    let softirqd = ksoftirqd(cpu)?;
    std::thread::Builder::new()
        .name("bench-tcp".into())
        .spawn(move || -> Result<(u64, u64, Duration, u64)> {
            let _in = InNetns::enter(&client);
            pin_thread(cpu)?;
            let one = |t: &SocketAddr| -> std::io::Result<()> {
                let mut s = connect_from(source, t)?;
                s.set_read_timeout(Some(Duration::from_secs(1)))?;
                s.set_nodelay(true)?;
                s.write_all(REQUEST)?;
                let mut buf = [0u8; 128];
                let mut got = 0;
                loop {
                    match s.read(&mut buf)? {
                        0 => break,
                        n => got += n,
                    }
                }
                if got != RESPONSE.len() {
                    return Err(std::io::Error::other("short response"));
                }
                Ok(())
            };
            for i in 0..warmup as usize {
                let _ = one(&targets[i % targets.len()]);
            }
            let me = gettid();
            let cpu_now = || -> Result<u64> {
                let mut n =
                    thread_runtime(me)? + read_schedstat(&format!("/proc/{softirqd}/schedstat"))?;
                for t in &servers {
                    n += thread_runtime(*t)?;
                }
                Ok(n)
            };
            let cpu0 = cpu_now()?;
            let start = Instant::now();
            let (mut ok, mut failed) = (0u64, 0u64);
            let mut i = 0usize;
            while ok + failed < max && start.elapsed() < time {
                match one(&targets[i % targets.len()]) {
                    Ok(()) => ok += 1,
                    Err(_) => failed += 1,
                }
                i += 1;
            }
            let wall = start.elapsed();
            let cpu1 = cpu_now()?;
            Ok((ok, failed, wall, cpu1 - cpu0))
        })?
        .join()
        .map_err(|_| anyhow!("the TCP load thread panicked"))?
}

fn udp_sample(
    lab: &BenchLab,
    v: Variant,
    max: u64,
    time: Duration,
    warnings: &mut Vec<String>,
) -> Result<UdpSample> {
    let targets: Vec<SocketAddr> = (0..UDP_FLOWS).map(|i| v.target(i, UDP_PORT)).collect();
    // Warm-up (ARP, flows set up), then let it drain before counting.
    udp_load(lab.client(), v.source(), targets.clone(), 2_000, time)?;
    std::thread::sleep(Duration::from_millis(30));
    let d0 = lab.delivered()?;
    let r0 = lab.redirects()?;
    let (sent, wall, cpu_ns) = udp_load(lab.client(), v.source(), targets, max, time)?;
    // Let the sinks drain what is queued.
    let mut last = lab.delivered()?;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(20));
        let now = lab.delivered()?;
        if now == last {
            break;
        }
        last = now;
    }
    let delivered = last - d0;
    let redirected = lab.redirects()? - r0;
    if v.xdp() == DirectorXdp::Director && redirected < sent * 99 / 100 {
        warnings.push(format!(
            "{}: in one sample the director forwarded {redirected} of {sent} UDP packets sent with XDP, \
             and {delivered} arrived (packets dropped before the director, e.g. on a full veth ring, \
             count as sent: UDP ignores ENOBUFS)",
            v.label()
        ));
    }
    Ok(UdpSample {
        sent,
        delivered,
        wall,
        cpu_ns,
    })
}

fn tcp_sample(lab: &BenchLab, v: Variant, max: u64, time: Duration) -> Result<TcpSample> {
    let targets: Vec<SocketAddr> = (0..REALS as usize).map(|i| v.target(i, TCP_PORT)).collect();
    let servers = lab.servers.iter().map(|s| s.tid).collect();
    let (conns, failed, wall, cpu_ns) =
        tcp_load(lab.client(), v.source(), targets, servers, max, time, 30)?;
    Ok(TcpSample {
        conns,
        failed,
        wall,
        cpu_ns,
    })
}

/// Part 3.
pub fn run(opts: &Options) -> Result<E2e> {
    // Many short rounds rather than a few long ones: the noise here is other processes
    // coming and going, and the median of many paired differences resists it best.
    let rounds = if opts.quick { 2 } else { 14 };
    let udp_bound = (
        500_000u64,
        Duration::from_millis(if opts.quick { 200 } else { 250 }),
    );
    let tcp_bound = (
        5_000u64,
        Duration::from_millis(if opts.quick { 200 } else { 300 }),
    );
    let mut lab = BenchLab::build()?;
    let mut udp: Vec<Vec<UdpSample>> = vec![Vec::new(); Variant::ALL.len()];
    let mut tcp: Vec<Vec<TcpSample>> = vec![Vec::new(); Variant::ALL.len()];
    let mut warnings = Vec::new();
    // A warm-up round (ARP, caches), not recorded.
    for round in 0..=rounds {
        for (k, v) in Variant::ALL.iter().enumerate() {
            lab.set_variant(*v)?;
            let mut w = Vec::new();
            let u = udp_sample(&lab, *v, udp_bound.0, udp_bound.1, &mut w)
                .with_context(|| format!("{}: UDP", v.label()))?;
            if round > 0 {
                warnings.extend(w);
            }
            let t = tcp_sample(&lab, *v, tcp_bound.0, tcp_bound.1)
                .with_context(|| format!("{}: TCP", v.label()))?;
            if round > 0 {
                udp[k].push(u);
                tcp[k].push(t);
            }
        }
    }
    lab.set_variant(Variant::Routing)?;
    warnings.sort();
    warnings.dedup();

    let idx = |v: Variant| {
        Variant::ALL
            .iter()
            .position(|x| *x == v)
            .expect("known variant")
    };
    let udp_ns = |s: &UdpSample| s.cpu_ns as f64 / s.sent.max(1) as f64;
    let tcp_ns = |s: &TcpSample| s.cpu_ns as f64 / s.conns.max(1) as f64;
    let variants = Variant::ALL
        .iter()
        .map(|&v| {
            let (u, t) = (&udp[idx(v)], &tcp[idx(v)]);
            let added =
                |floor: Option<Variant>, f: &dyn Fn(usize) -> f64, g: &dyn Fn(usize) -> f64| {
                    floor.map(|_| Dist::of(&(0..u.len()).map(|r| f(r) - g(r)).collect::<Vec<_>>()))
                };
            let fl = v.floor();
            let fi = fl.map(idx).unwrap_or(0);
            let udp_added = added(fl, &|r| udp_ns(&u[r]), &|r| udp_ns(&udp[fi][r]));
            let tcp_added = added(fl, &|r| tcp_ns(&t[r]), &|r| tcp_ns(&tcp[fi][r]));
            let tcp_ns_d = Dist::of(&t.iter().map(tcp_ns).collect::<Vec<_>>());
            let sent: u64 = u.iter().map(|s| s.sent).sum();
            let delivered: u64 = u.iter().map(|s| s.delivered).sum();
            VariantResult {
                variant: v,
                udp_pps: Dist::of(
                    &u.iter()
                        .map(|s| s.delivered as f64 / s.wall.as_secs_f64())
                        .collect::<Vec<_>>(),
                ),
                udp_ns: Dist::of(&u.iter().map(udp_ns).collect::<Vec<_>>()),
                udp_added,
                udp_delivered_pct: delivered as f64 * 100.0 / sent.max(1) as f64,
                tcp_cps: Dist::of(
                    &t.iter()
                        .map(|s| s.conns as f64 / s.wall.as_secs_f64())
                        .collect::<Vec<_>>(),
                ),
                tcp_ns: tcp_ns_d,
                tcp_added,
                tcp_cps_cpu: 1e9 / tcp_ns_d.median.max(1.0),
                tcp_failed: t.iter().map(|s| s.failed).sum(),
            }
        })
        .collect();
    Ok(E2e {
        variants,
        rounds,
        udp_bound,
        tcp_bound,
        warnings,
    })
}
