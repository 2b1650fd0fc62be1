//! The declarative description of a lab: hosts, bridges and the links between them.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Context, Result, bail};

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub(crate) const MAX_IFNAME: usize = 15;

/// A whole lab: the hosts (one network namespace each), the bridges (all in one extra
/// "switch" namespace) and the links that join them.
#[derive(Debug, Clone, Default)]
pub struct Topology {
    /// The hosts; each becomes its own network namespace.
    pub hosts: Vec<Host>,
    /// Names of the bridges to create in the lab's switch namespace (at most 15 characters).
    pub bridges: Vec<String>,
    /// Veth pairs between hosts, and host interfaces plugged into bridges.
    pub links: Vec<Link>,
}

impl Topology {
    /// An empty topology; add to it with the builder methods.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a host.
    pub fn host(mut self, host: Host) -> Self {
        self.hosts.push(host);
        self
    }

    /// Adds a bridge (it lives in the lab's switch namespace).
    pub fn bridge(mut self, name: impl Into<String>) -> Self {
        self.bridges.push(name.into());
        self
    }

    /// Adds a link.
    pub fn link(mut self, link: Link) -> Self {
        self.links.push(link);
        self
    }

    /// Adds a veth pair between two hosts (shorthand for [`Link::Veth`]).
    pub fn veth(self, a: Endpoint, b: Endpoint) -> Self {
        self.link(Link::Veth { a, b })
    }

    /// Plugs a host interface into a bridge (shorthand for [`Link::Bridged`]).
    pub fn bridged(self, host: Endpoint, bridge: impl Into<String>) -> Self {
        self.link(Link::Bridged {
            host,
            bridge: bridge.into(),
        })
    }

    /// Checks the description without touching the system: unique, well-formed host,
    /// bridge and interface names, links that name known hosts and bridges, address
    /// prefixes in range, namespaced (`net.`) sysctls only, and no port served twice.
    pub fn validate(&self) -> Result<()> {
        let mut hosts = HashSet::new();
        for h in &self.hosts {
            check_host_name(&h.name)?;
            if !hosts.insert(h.name.as_str()) {
                bail!("host {:?} is declared twice", h.name);
            }
            for (k, _) in &h.sysctls {
                sysctl_path(k).with_context(|| format!("host {:?}", h.name))?;
            }
            for (ip, len) in &h.lo_addrs {
                check_prefix(*ip, *len).with_context(|| format!("host {:?} lo", h.name))?;
            }
            for r in &h.routes {
                check_prefix(r.dst.0, r.dst.1)
                    .with_context(|| format!("host {:?} route", h.name))?;
                if r.dst.0.is_ipv4() != r.via.is_ipv4() {
                    bail!(
                        "host {:?}: route to {}/{} via {} mixes address families",
                        h.name,
                        r.dst.0,
                        r.dst.1,
                        r.via
                    );
                }
            }
            let mut tcp = HashSet::new();
            let mut udp = HashSet::new();
            for s in &h.servers {
                let fresh = match *s {
                    ServerSpec::Http { port } | ServerSpec::Echo { port } => tcp.insert(port),
                    ServerSpec::Udp { port } | ServerSpec::UdpEcho { port } => udp.insert(port),
                };
                if !fresh {
                    bail!("host {:?}: two servers on the same port ({s:?})", h.name);
                }
            }
        }
        let mut bridges = HashSet::new();
        for b in &self.bridges {
            check_ifname(b).context("bridge name")?;
            if !bridges.insert(b.as_str()) {
                bail!("bridge {b:?} is declared twice");
            }
        }
        let mut ifaces = HashSet::new();
        let mut check_end = |e: &Endpoint| -> Result<()> {
            if !hosts.contains(e.host.as_str()) {
                bail!("link endpoint names unknown host {:?}", e.host);
            }
            check_ifname(&e.ifname).with_context(|| format!("host {:?}", e.host))?;
            if e.ifname == "lo" {
                bail!("host {:?}: a link endpoint cannot be named \"lo\"", e.host);
            }
            if !ifaces.insert((e.host.clone(), e.ifname.clone())) {
                bail!("host {:?}: interface {:?} is used twice", e.host, e.ifname);
            }
            for (ip, len) in &e.addrs {
                check_prefix(*ip, *len)
                    .with_context(|| format!("host {:?} interface {:?}", e.host, e.ifname))?;
            }
            Ok(())
        };
        for l in &self.links {
            match l {
                Link::Veth { a, b } => {
                    check_end(a)?;
                    check_end(b)?;
                }
                Link::Bridged { host, bridge } => {
                    check_end(host)?;
                    if !bridges.contains(bridge.as_str()) {
                        bail!(
                            "host {:?} interface {:?} is plugged into undeclared bridge {bridge:?}",
                            host.host,
                            host.ifname
                        );
                    }
                }
            }
        }
        Ok(())
    }
}

/// One host of the lab: a network namespace with its sysctls, addresses on `lo`
/// (e.g. a VIP), static routes and in-process servers.
#[derive(Debug, Clone)]
pub struct Host {
    /// The host's lab name (letters, digits, `-` and `_`); servers answer with it.
    pub name: String,
    /// Sysctls written inside the namespace, e.g. `("net.ipv4.ip_forward", "1")`. Only
    /// `net.` keys are accepted: others are not per-namespace and would change the machine.
    pub sysctls: Vec<(String, String)>,
    /// Addresses put on `lo` (address, prefix length), e.g. a VIP as `/32`.
    pub lo_addrs: Vec<(IpAddr, u8)>,
    /// Static routes, added once the links are up.
    pub routes: Vec<Route>,
    /// Servers run in-process inside the namespace, bound before `Lab::build` returns.
    pub servers: Vec<ServerSpec>,
}

impl Host {
    /// A host with nothing configured yet.
    pub fn new(name: impl Into<String>) -> Self {
        Host {
            name: name.into(),
            sysctls: Vec::new(),
            lo_addrs: Vec::new(),
            routes: Vec::new(),
            servers: Vec::new(),
        }
    }

    /// Adds a sysctl (`net.` keys only), e.g. `.sysctl("net.ipv4.conf.all.rp_filter", "0")`.
    pub fn sysctl(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.sysctls.push((key.into(), value.into()));
        self
    }

    /// Shorthand for `.sysctl("net.ipv4.ip_forward", "1")`.
    pub fn ip_forward(self) -> Self {
        self.sysctl("net.ipv4.ip_forward", "1")
    }

    /// Shorthand for `.sysctl("net.ipv6.conf.all.forwarding", "1")`: the host routes
    /// IPv6 (and answers neighbour solicitations as a router).
    pub fn ipv6_forward(self) -> Self {
        self.sysctl("net.ipv6.conf.all.forwarding", "1")
    }

    /// Adds an address on `lo`.
    pub fn lo_addr(mut self, ip: IpAddr, prefix_len: u8) -> Self {
        self.lo_addrs.push((ip, prefix_len));
        self
    }

    /// Adds a static route to `dst` (address, prefix length) via a gateway.
    pub fn route(mut self, dst: (IpAddr, u8), via: IpAddr) -> Self {
        self.routes.push(Route { dst, via });
        self
    }

    /// Adds a default route (`0.0.0.0/0` or `::/0`, after the gateway's family).
    pub fn default_route(mut self, via: IpAddr) -> Self {
        self.routes.push(Route::default_via(via));
        self
    }

    /// Adds a server.
    pub fn server(mut self, spec: ServerSpec) -> Self {
        self.servers.push(spec);
        self
    }

    /// Adds an HTTP server on `port` (answers every GET with 200 and `"<name>\n"`).
    pub fn http(self, port: u16) -> Self {
        self.server(ServerSpec::Http { port })
    }

    /// Adds a UDP server on `port` (answers every datagram with the host name).
    pub fn udp(self, port: u16) -> Self {
        self.server(ServerSpec::Udp { port })
    }

    /// Adds a TCP echo server on `port`.
    pub fn echo(self, port: u16) -> Self {
        self.server(ServerSpec::Echo { port })
    }

    /// Adds a UDP echo server on `port` (every datagram comes back as it was sent).
    pub fn udp_echo(self, port: u16) -> Self {
        self.server(ServerSpec::UdpEcho { port })
    }
}

/// A static route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Destination prefix (address, prefix length); `0.0.0.0/0` (or `::/0`) is the default.
    pub dst: (IpAddr, u8),
    /// Gateway; it must be reachable through one of the host's links.
    pub via: IpAddr,
}

impl Route {
    /// A route to `dst` via `via`.
    pub fn new(dst: (IpAddr, u8), via: IpAddr) -> Self {
        Route { dst, via }
    }

    /// The default route via `via` (`0.0.0.0/0` or `::/0`, after the gateway's family).
    pub fn default_via(via: IpAddr) -> Self {
        let any = match via {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        Route { dst: (any, 0), via }
    }
}

/// A link of the lab.
#[derive(Debug, Clone)]
pub enum Link {
    /// veth pair between two hosts
    Veth {
        /// One end.
        a: Endpoint,
        /// The other end.
        b: Endpoint,
    },
    /// host interface plugged into a named bridge (the bridge lives in its own "switch" namespace of the lab)
    Bridged {
        /// The host's end; the other end is a port of the bridge (see `Lab::bridge_port`).
        host: Endpoint,
        /// A bridge named in [`Topology::bridges`].
        bridge: String,
    },
}

/// One host-side end of a link.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The host's lab name.
    pub host: String,
    /// Interface name inside the host (at most 15 characters, unique within the host).
    pub ifname: String,
    /// Addresses (address, prefix length).
    pub addrs: Vec<(IpAddr, u8)>,
    /// MAC address; the kernel picks a random one when `None`.
    pub mac: Option<[u8; 6]>,
}

impl Endpoint {
    /// An endpoint with no address and a random MAC.
    pub fn new(host: impl Into<String>, ifname: impl Into<String>) -> Self {
        Endpoint {
            host: host.into(),
            ifname: ifname.into(),
            addrs: Vec::new(),
            mac: None,
        }
    }

    /// Adds an address.
    pub fn addr(mut self, ip: IpAddr, prefix_len: u8) -> Self {
        self.addrs.push((ip, prefix_len));
        self
    }

    /// Sets the MAC address.
    pub fn mac(mut self, mac: [u8; 6]) -> Self {
        self.mac = Some(mac);
        self
    }
}

/// A server run in-process inside a host's namespace, bound to all addresses of both
/// families (`0.0.0.0` and `[::]`, the latter IPv6-only), so a VIP on `lo` is served
/// too, over IPv4 and over IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerSpec {
    /// HTTP/1.1: every request gets 200 with the body `"<host name>\n"`.
    Http {
        /// TCP port.
        port: u16,
    },
    /// UDP: every datagram gets one datagram back holding the host name.
    Udp {
        /// UDP port.
        port: u16,
    },
    /// TCP echo: every byte received on a connection is sent back on it.
    Echo {
        /// TCP port.
        port: u16,
    },
    /// UDP echo: every datagram is sent back as it came, whatever its size (up to
    /// 65,507 bytes), from the address it was sent to.
    UdpEcho {
        /// UDP port.
        port: u16,
    },
}

/// Parses `"10.0.0.1/24"` (or an IPv6 prefix) into `(address, prefix length)`; a bare
/// address gets the full-length prefix. Panics on malformed input: meant for literals.
pub fn cidr(s: &str) -> (IpAddr, u8) {
    let (ip, len) = match s.split_once('/') {
        Some((ip, len)) => (ip, Some(len)),
        None => (s, None),
    };
    let ip: IpAddr = ip
        .parse()
        .unwrap_or_else(|e| panic!("bad address in {s:?}: {e}"));
    let len = match len {
        Some(len) => len
            .parse()
            .unwrap_or_else(|e| panic!("bad prefix length in {s:?}: {e}")),
        None if ip.is_ipv4() => 32,
        None => 128,
    };
    check_prefix(ip, len).unwrap_or_else(|e| panic!("{e}"));
    (ip, len)
}

fn check_prefix(ip: IpAddr, len: u8) -> Result<()> {
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if len > max {
        bail!("prefix length {len} is out of range for {ip}");
    }
    Ok(())
}

fn check_host_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!("bad host name {name:?}: use 1 to 64 letters, digits, '-' or '_'");
    }
    Ok(())
}

pub(crate) fn check_ifname(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > MAX_IFNAME
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        bail!("bad interface name {name:?}: 1 to {MAX_IFNAME} characters, no '/', ':' or blanks");
    }
    Ok(())
}

/// Turns a sysctl key into its path under /proc/sys, refusing anything that is not a
/// per-namespace `net.` key.
pub(crate) fn sysctl_path(key: &str) -> Result<String> {
    // `net.ipv4.ip_forward` and `net/ipv4/ip_forward` are both accepted; the slash form is
    // the only way to name an interface that has a dot in its name.
    let rel = if key.contains('/') {
        key.to_owned()
    } else {
        key.replace('.', "/")
    };
    if !rel.starts_with("net/")
        || rel
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
    {
        bail!("sysctl {key:?} refused: only per-namespace net.* keys can be set in a lab");
    }
    Ok(format!("/proc/sys/{rel}"))
}
