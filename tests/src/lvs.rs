//! The standard director lab, shared by the lab tests, the demo and the benchmarks, and
//! the addressing plan and host recipes every director lab (the fixtures' too) builds on.
//! It is dual-stack: every link has an IPv4 /24 and an IPv6 /64, and every VIP has an
//! IPv6 twin.
//!
//! ```text
//!  client 10.0.0.2  ──[front]── eth0 10.0.0.1  (+ VIPs .100 DR, .101 TUN, .102 NAT)
//!         fd00::2                    fd00::1   (+ VIPs ::100 DR, ::101 TUN, ::102 NAT)
//!                                director (XDP on eth0 and eth1)
//!  realN 10.1.0.1N  ──[back]─── eth1 10.1.0.1
//!        fd00:1::1N                  fd00:1::1
//! ```
//! Reals have the DR and TUN VIPs of both families on lo (arp_ignore=1, arp_announce=2;
//! IPv6 needs nothing alike: the kernel answers a neighbour solicitation only for an
//! address of the interface it came in on), the decap program on eth0 for IPIP, GRE and
//! GUE (this kernel has no ipip, gre or fou module) and the director as default gateway
//! of both families (NAT replies must come back through it). Each real serves HTTP on 80
//! and 8080 and UDP on 53, answering with its name ("real1"...), and echoes TCP and UDP
//! on 7, over IPv4 and IPv6. The bridge ports facing the director run a pass program so
//! frames the director sends with XDP_TX/XDP_REDIRECT are delivered (docs/datapath.md).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use aya::programs::XdpMode;
use director_common::{real::Method, service::Scheduler};
use director_control::{
    Control, Datapath, LoadOptions, Protocol, RealSpec, ServiceAddr, ServiceSpec,
    datapath::{PROG_DECAP, PROG_DIRECTOR, PROG_PASS},
    model::Tunnel,
};

use crate::{
    fixture::InNetns,
    lab::{Endpoint, Host, Lab, Topology, http_get, http_url, udp_request},
};

pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
pub const DIRECTOR_FRONT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const DIRECTOR_BACK: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
pub const VIP_DR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
pub const VIP_TUN: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 101);
pub const VIP_NAT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 102);

/// Address of real `n` (1-based).
pub fn real_addr(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 1, 0, 10 + n)
}

// The IPv6 plan: the front link is fd00::/64, the back link fd00:1::/64, and each host's
// interface identifier reads like its IPv4 address's last byte (10.1.0.11 is fd00:1::11).
/// Prefix length of every IPv6 lab link.
pub const LINK6_PREFIX: u8 = 64;
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x2);
pub const DIRECTOR_FRONT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x1);
pub const DIRECTOR_BACK6: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 0x1);
pub const VIP6_DR: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x100);
pub const VIP6_TUN: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x101);
pub const VIP6_NAT: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x102);

/// IPv6 address of real `n` (1-based): `fd00:1::1n` for n < 10.
pub fn real_addr6(n: u8) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 0x10 + u16::from(n))
}

/// Address of real `n` (1-based) of the given family.
pub fn real_ip(n: u8, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(real_addr6(n))
    } else {
        IpAddr::V4(real_addr(n))
    }
}

/// The IPv6 VIP the lab uses for a forwarding method.
pub fn vip6_for(method: Method) -> Ipv6Addr {
    match method {
        Method::Route => VIP6_DR,
        Method::Tunnel => VIP6_TUN,
        Method::Masq => VIP6_NAT,
    }
}

/// The VIP the lab uses for a forwarding method.
pub fn vip_for(method: Method) -> Ipv4Addr {
    match method {
        Method::Route => VIP_DR,
        Method::Tunnel => VIP_TUN,
        Method::Masq => VIP_NAT,
    }
}

pub struct LvsLab {
    pub director: Datapath,
    /// Programs on the bridge ports and the reals; attached while this lives.
    _helpers: Datapath,
    pub reals: u8,
    // Dropped last: programs detach before their namespaces go.
    pub lab: Lab,
}

fn ip(a: Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

fn ip6(a: Ipv6Addr) -> IpAddr {
    IpAddr::V6(a)
}

impl LvsLab {
    /// Build the lab with `reals` real servers and attach everything.
    pub fn build(reals: u8) -> Result<Self> {
        Self::build_inner(reals, false)
    }

    /// Like [`LvsLab::build`], with the director's maps pinned where
    /// [`LvsLab::state`] says (inside the lab's bpffs directory), so that a second
    /// user of the control library, e.g. the health-check daemon, can open them as it
    /// would after `director attach`.
    pub fn build_pinned(reals: u8) -> Result<Self> {
        Self::build_inner(reals, true)
    }

    /// The state directory of a lab built with [`LvsLab::build_pinned`].
    pub fn state(&self) -> director_control::state::StateOptions {
        director_control::state::StateOptions {
            bpffs: Some(self.lab.bpffs_dir().join("director")),
        }
    }

    fn build_inner(reals: u8, pinned: bool) -> Result<Self> {
        let lab = Lab::build(&topology(reals)).context("building the director lab")?;

        let pin_dir = if pinned {
            let state = director_control::state::StateOptions {
                bpffs: Some(lab.bpffs_dir().join("director")),
            };
            let dir = state.maps_dir()?;
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            Some(dir)
        } else {
            None
        };
        let mut director = Datapath::load(&LoadOptions {
            conn_table: 65_536,
            pin_dir,
            ..LoadOptions::default()
        })?;
        {
            let _in = InNetns::enter(&lab.ns("director").path());
            for ifname in ["eth0", "eth1"] {
                let idx = lab.ifindex("director", ifname);
                director.attach(PROG_DIRECTOR, idx, XdpMode::Driver)?;
            }
            let addrs: Vec<IpAddr> = (1..=reals)
                .flat_map(|n| [ip(real_addr(n)), ip6(real_addr6(n))])
                .chain([ip(CLIENT), ip6(CLIENT6)])
                .collect();
            let left = director_control::neighbours::resolve(&addrs, Duration::from_secs(5))?;
            if !left.is_empty() {
                bail!("the director could not resolve {left:?}");
            }
        }
        let mut helpers = Datapath::load_helpers()?;
        // One loaded decap program serves every real: each real's address is local.
        let locals: Vec<IpAddr> = (1..=reals)
            .flat_map(|n| [real_ip(n, false), real_ip(n, true)])
            .collect();
        helpers.allow_decap(&[ip(DIRECTOR_BACK), ip6(DIRECTOR_BACK6)], &locals)?;
        attach_bridge_pass(&lab, &mut helpers)?;
        for n in 1..=reals {
            let host = format!("real{n}");
            let _in = InNetns::enter(&lab.ns(&host).path());
            let idx = lab.ifindex(&host, "eth0");
            helpers.attach(PROG_DECAP, idx, XdpMode::Driver)?;
        }
        Ok(Self {
            director,
            _helpers: helpers,
            reals,
            lab,
        })
    }

    pub fn control(&mut self) -> &mut Control {
        &mut self.director.control
    }

    /// A service on the method's VIP with one real per weight (real1 gets weights[0]...).
    /// NAT reals listen on 8080, so NAT also rewrites the port.
    pub fn service(
        &mut self,
        method: Method,
        proto: Protocol,
        port: u16,
        scheduler: Scheduler,
        weights: &[u32],
    ) -> Result<ServiceAddr> {
        let spec = ServiceSpec::new(proto, ip(vip_for(method)), port).scheduler(scheduler);
        self.service_at(&spec, method, false, weights)
    }

    /// [`LvsLab::service`] over IPv6: the method's IPv6 VIP, the reals' IPv6 addresses.
    pub fn service6(
        &mut self,
        method: Method,
        proto: Protocol,
        port: u16,
        scheduler: Scheduler,
        weights: &[u32],
    ) -> Result<ServiceAddr> {
        let spec = ServiceSpec::new(proto, ip6(vip6_for(method)), port).scheduler(scheduler);
        self.service_at(&spec, method, true, weights)
    }

    /// The service `spec` (any VIP, persistence...) with one real per weight, reached by
    /// `method` at the reals' IPv6 addresses when `reals_v6`, else at their IPv4 ones
    /// (the families may differ for tunnels only). NAT reals of port 80 listen on 8080.
    pub fn service_at(
        &mut self,
        spec: &ServiceSpec,
        method: Method,
        reals_v6: bool,
        weights: &[u32],
    ) -> Result<ServiceAddr> {
        self.control().add_service(spec)?;
        for (i, w) in weights.iter().enumerate() {
            let port = spec.addr.port;
            let real_port = if method == Method::Masq && port == 80 {
                8080
            } else {
                port
            };
            let addr = real_ip(i as u8 + 1, reals_v6);
            self.control()
                .add_real(&spec.addr, &RealSpec::new(addr, real_port, method, *w))?;
        }
        Ok(spec.addr)
    }

    /// A TUN service on the TUN VIP with one real per weight, each reached through
    /// `tunnel`.
    pub fn tunnel_service(
        &mut self,
        proto: Protocol,
        port: u16,
        scheduler: Scheduler,
        weights: &[u32],
        tunnel: Tunnel,
    ) -> Result<ServiceAddr> {
        let spec = ServiceSpec::new(proto, ip(VIP_TUN), port).scheduler(scheduler);
        self.tunnel_service_at(&spec, false, weights, tunnel)
    }

    /// A TUN service `spec` with one real per weight, each reached through `tunnel` at
    /// its IPv6 address when `reals_v6`, else at its IPv4 one.
    pub fn tunnel_service_at(
        &mut self,
        spec: &ServiceSpec,
        reals_v6: bool,
        weights: &[u32],
        tunnel: Tunnel,
    ) -> Result<ServiceAddr> {
        self.control().add_service(spec)?;
        for (i, w) in weights.iter().enumerate() {
            let addr = real_ip(i as u8 + 1, reals_v6);
            let real = RealSpec::new(addr, spec.addr.port, Method::Tunnel, *w);
            self.control()
                .add_real(&spec.addr, &real.with_tunnel(tunnel))?;
        }
        Ok(spec.addr)
    }

    /// The reals' decap program also unwraps GUE on `port`.
    pub fn decap_gue_port(&mut self, port: u16) -> Result<()> {
        Ok(self._helpers.decap_gue_port(Some(port))?)
    }

    /// The reals' decap counter `name` (e.g. "decap_gre"), summed over the reals (one
    /// loaded decap program serves them all).
    pub fn decap_stat(&self, name: &str) -> u64 {
        self._helpers
            .control
            .stats()
            .expect("reading the decap counters")
            .into_iter()
            .find(|(s, _)| s.name() == name)
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no counter {name}"))
    }

    /// The director's global outcome counter `name` (e.g. "icmp_too_big").
    pub fn stat(&self, name: &str) -> u64 {
        self.director
            .control
            .stats()
            .expect("reading the counters")
            .into_iter()
            .find(|(s, _)| s.name() == name)
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no counter {name}"))
    }

    /// The lab real (1..) holding the only live connection to `svc`'s port, from the
    /// director's connection table.
    pub fn real_holding(&self, svc: &ServiceAddr) -> u8 {
        let control = &self.director.control;
        let view = control.service(svc).unwrap();
        let conns = control.connections().unwrap();
        let held: Vec<u32> = conns
            .iter()
            .filter(|c| c.destination.port() == svc.port)
            .map(|c| c.real_id)
            .collect();
        assert_eq!(
            held.len(),
            1,
            "one connection to port {}: {conns:?}",
            svc.port
        );
        let addr = view
            .reals
            .iter()
            .find(|r| r.id == held[0])
            .unwrap()
            .spec
            .addr;
        (1..=self.reals)
            .find(|&n| real_ip(n, false) == addr || real_ip(n, true) == addr)
            .unwrap()
    }

    /// `n` HTTP requests to `vip`:80 and `n` UDP requests to `vip`:53 (either family) from
    /// the client, each spread over reals 1..=3 as `weights` say (wrr). `what` names the
    /// case in messages.
    pub fn assert_weighted_spread(
        &self,
        vip: impl Into<IpAddr>,
        n: u32,
        weights: &[u32; 3],
        timeout: std::time::Duration,
        what: &str,
    ) {
        let vip = vip.into();
        let client = self.lab.ns("client");
        let mut counts = [0u32; 4];
        for i in 0..n {
            let body = http_get(client, &http_url(vip, 80), timeout)
                .unwrap_or_else(|e| panic!("{what}: HTTP request {i} through the VIP: {e:#}"));
            counts[Self::real_of_answer(&body).unwrap() as usize] += 1;
        }
        assert_spread(&counts, n, weights, &format!("{what} HTTP"));
        let mut counts = [0u32; 4];
        for i in 0..n {
            let answer = udp_request(client, SocketAddr::new(vip, 53), b"who", timeout)
                .unwrap_or_else(|e| panic!("{what}: UDP request {i} through the VIP: {e:#}"));
            counts[Self::real_of_answer(&String::from_utf8_lossy(&answer)).unwrap() as usize] += 1;
        }
        assert_spread(&counts, n, weights, &format!("{what} UDP"));
    }

    /// Which real answered ("real3\n" -> 3).
    pub fn real_of_answer(answer: &str) -> Result<u8> {
        answer
            .trim()
            .strip_prefix("real")
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("answer {answer:?} is not from a real"))
    }
}

/// The director host every director lab uses: it forwards (both families), and accepts packets with one
/// of its own addresses (a VIP) as source, which DR and TUN replies routed through it
/// have; reverse-path filtering is off for the same reason.
pub fn director_host(name: &str) -> Host {
    Host::new(name)
        .ip_forward()
        .ipv6_forward()
        .sysctl("net.ipv4.conf.all.accept_local", "1")
        .sysctl("net.ipv4.conf.all.rp_filter", "0")
        .sysctl("net.ipv4.conf.default.rp_filter", "0")
}

/// A real server as DR and TUN need it: the `vips` on `lo` (/32), never answering ARP for
/// them (arp_ignore=1, arp_announce=2), reverse-path filtering off (packets to a VIP
/// arrive on eth0, or decapsulated), and a default route via `gateway` when given (NAT
/// replies must go back through the director).
pub fn real_host(name: &str, gateway: Option<Ipv4Addr>, vips: &[Ipv4Addr]) -> Host {
    let mut h = vips
        .iter()
        .fold(Host::new(name), |h, v| h.lo_addr(ip(*v), 32));
    if let Some(gw) = gateway {
        h = h.default_route(ip(gw));
    }
    h.sysctl("net.ipv4.conf.all.arp_ignore", "1")
        .sysctl("net.ipv4.conf.all.arp_announce", "2")
        .sysctl("net.ipv4.conf.all.rp_filter", "0")
        .sysctl("net.ipv4.conf.default.rp_filter", "0")
}

/// The IPv6 side of a real server (add it to a [`real_host`]): the IPv6 `vips` on `lo`
/// (/128) and a default route via `gateway` when given.
pub fn real_host_v6(host: Host, gateway: Option<Ipv6Addr>, vips: &[Ipv6Addr]) -> Host {
    let h = vips.iter().fold(host, |h, v| h.lo_addr(ip6(*v), 128));
    match gateway {
        Some(gw) => h.default_route(ip6(gw)),
        None => h,
    }
}

/// Requests per real (`counts[1..=3]`) for `n` requests spread by `weights` with wrr.
/// The rr/wrr cursor is per CPU (no lock on the fast path): each CPU runs its own
/// sequence, so a count may be off by up to one partial round per CPU.
fn assert_spread(counts: &[u32; 4], n: u32, weights: &[u32; 3], what: &str) {
    let total: u32 = weights.iter().sum();
    for (i, w) in weights.iter().enumerate() {
        let want = n * w / total;
        let got = counts[i + 1];
        let slack = 2 * w;
        assert!(
            got + slack >= want && got <= want + slack,
            "{what}: real{} answered {got} of {n}, weight says {want} (+-{slack}); all: {counts:?}",
            i + 1
        );
    }
}

/// The lab's topology (see the module documentation), with `reals` real servers.
pub fn topology(reals: u8) -> Topology {
    let mut topo = Topology::new()
        .bridge("front")
        .bridge("back")
        .host(
            Host::new("client")
                .default_route(ip(DIRECTOR_FRONT))
                .default_route(ip6(DIRECTOR_FRONT6)),
        )
        .host(director_host("director"))
        .bridged(
            Endpoint::new("client", "eth0")
                .addr(ip(CLIENT), 24)
                .addr(ip6(CLIENT6), LINK6_PREFIX),
            "front",
        )
        .bridged(
            Endpoint::new("director", "eth0")
                .addr(ip(DIRECTOR_FRONT), 24)
                .addr(ip(VIP_DR), 32)
                .addr(ip(VIP_TUN), 32)
                .addr(ip(VIP_NAT), 32)
                .addr(ip6(DIRECTOR_FRONT6), LINK6_PREFIX)
                .addr(ip6(VIP6_DR), 128)
                .addr(ip6(VIP6_TUN), 128)
                .addr(ip6(VIP6_NAT), 128),
            "front",
        )
        .bridged(
            Endpoint::new("director", "eth1")
                .addr(ip(DIRECTOR_BACK), 24)
                .addr(ip6(DIRECTOR_BACK6), LINK6_PREFIX),
            "back",
        );
    for n in 1..=reals {
        let name = format!("real{n}");
        let host = real_host(&name, Some(DIRECTOR_BACK), &[VIP_DR, VIP_TUN]);
        topo = topo
            .host(
                real_host_v6(host, Some(DIRECTOR_BACK6), &[VIP6_DR, VIP6_TUN])
                    .http(80)
                    .http(8080)
                    .udp(53)
                    .echo(7)
                    .udp_echo(7),
            )
            .bridged(
                Endpoint::new(&name, "eth0")
                    .addr(ip(real_addr(n)), 24)
                    .addr(ip6(real_addr6(n)), LINK6_PREFIX),
                "back",
            );
    }
    topo
}

/// The `pass` program on the bridge ports facing the director, so frames it sends with
/// XDP_TX or XDP_REDIRECT are delivered (docs/datapath.md). Attached while `helpers`
/// lives.
pub fn attach_bridge_pass(lab: &Lab, helpers: &mut Datapath) -> Result<()> {
    for ifname in ["eth0", "eth1"] {
        let (sw, port) = lab.bridge_port("director", ifname);
        let _in = InNetns::enter(&sw.path());
        let idx = sw.ifindex(&port)?;
        helpers.attach(PROG_PASS, idx, XdpMode::Driver)?;
    }
    Ok(())
}

/// One round on a TCP echo connection: a line out, the same line back.
pub fn echo_round(s: &mut std::net::TcpStream, i: u32) {
    use std::io::{Read as _, Write as _};
    let msg = format!("ping {i}\n");
    s.write_all(msg.as_bytes()).unwrap();
    let mut buf = vec![0u8; msg.len()];
    s.read_exact(&mut buf)
        .unwrap_or_else(|e| panic!("echo round {i}: {e}"));
    assert_eq!(buf, msg.as_bytes());
}
