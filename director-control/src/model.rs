//! The operator's vocabulary: virtual services and real servers as typed values,
//! converted to and from the map layouts of director-common.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use director_common::{
    addr::{FAMILY_V4, FAMILY_V6, PROTO_TCP, PROTO_UDP},
    real::{Method, TUN_F_CSUM, TUN_F_REMCSUM, TunType},
    service::{Scheduler, ServiceKey},
};

/// A virtual service's transport protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP (ipvsadm `-t`).
    Tcp,
    /// UDP (ipvsadm `-u`).
    Udp,
}

impl Protocol {
    /// The IP protocol number (6 or 17), as map keys hold it.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => PROTO_TCP,
            Protocol::Udp => PROTO_UDP,
        }
    }
    /// The protocol of an IP protocol number; `None` for any but TCP and UDP.
    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            PROTO_TCP => Some(Protocol::Tcp),
            PROTO_UDP => Some(Protocol::Udp),
            _ => None,
        }
    }
}

/// A virtual service's identity: (VIP, port, protocol); port 0 = every port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceAddr {
    /// The transport protocol.
    pub proto: Protocol,
    /// The virtual IP address (the data path takes IPv4 services only, for now).
    pub addr: IpAddr,
    /// The virtual port; 0 matches every port of the address.
    pub port: u16,
}

/// An address as the maps store it: 16 bytes (IPv4 in the first 4, the rest zero) and
/// its family (`FAMILY_V4` or `FAMILY_V6`).
pub fn addr_to_16(addr: IpAddr) -> ([u8; 16], u8) {
    match addr {
        IpAddr::V4(a) => (director_common::addr::v4_to_16(a.octets()), FAMILY_V4),
        IpAddr::V6(a) => (a.octets(), FAMILY_V6),
    }
}

/// The inverse of [`addr_to_16`]: a family other than `FAMILY_V6` reads IPv4 from the
/// first 4 bytes.
pub fn addr_from_16(bytes: &[u8; 16], family: u8) -> IpAddr {
    if family == FAMILY_V6 {
        IpAddr::V6(Ipv6Addr::from(*bytes))
    } else {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    }
}

impl ServiceAddr {
    /// The service map's key for this service (address in map layout, port in network
    /// byte order).
    pub fn key(&self) -> ServiceKey {
        let (addr, family) = addr_to_16(self.addr);
        ServiceKey {
            addr,
            port_be: self.port.to_be(),
            proto: self.proto.number(),
            family,
        }
    }

    /// The service a map key names; `None` for a protocol other than TCP and UDP.
    pub fn from_key(k: &ServiceKey) -> Option<Self> {
        Some(Self {
            proto: Protocol::from_number(k.proto)?,
            addr: addr_from_16(&k.addr, k.family),
            port: u16::from_be(k.port_be),
        })
    }
}

/// Persistence (ipvsadm -p / -M).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Persistence {
    /// Seconds a client's template lives after its last new connection (ipvsadm `-p`);
    /// at least 1.
    pub timeout_s: u32,
    /// Netmask applied to the client address (IPv4: a dotted mask, e.g. 255.255.255.0).
    pub netmask: IpAddr,
}

impl Persistence {
    /// The netmask that keeps every client address apart (a /32, or a /128 for an IPv6
    /// service): the netmask when none is given.
    pub fn host_mask(v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(Ipv6Addr::from_bits(u128::MAX))
        } else {
            IpAddr::V4(Ipv4Addr::BROADCAST)
        }
    }

    /// The IPv6 netmask of prefix length `len` (1 to 128), the form IPv6 persistence
    /// masks are given in.
    pub fn v6_prefix_mask(len: u32) -> IpAddr {
        IpAddr::V6(Ipv6Addr::from_bits(u128::MAX << (128 - len.clamp(1, 128))))
    }
}

/// Everything about a virtual service except its reals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    /// The service's identity: protocol, virtual address and port.
    pub addr: ServiceAddr,
    /// How a new flow picks its real (ipvsadm `-s`).
    pub scheduler: Scheduler,
    /// sh-port / mh-port: the source port takes part in the hash.
    pub hash_port: bool,
    /// mh: hash the source (address, and port with `hash_port`) instead of the 5-tuple,
    /// as IPVS's mh does.
    pub hash_source_only: bool,
    /// `Some`: each client (masked by the netmask) sticks to one real while its template
    /// lives; `None`: each new flow is scheduled on its own.
    pub persistence: Option<Persistence>,
}

impl ServiceSpec {
    /// A service with the default scheduler (weighted Maglev over the 5-tuple).
    pub fn new(proto: Protocol, addr: IpAddr, port: u16) -> Self {
        Self {
            addr: ServiceAddr { proto, addr, port },
            scheduler: Scheduler::Maglev,
            hash_port: false,
            hash_source_only: false,
            persistence: None,
        }
    }
    /// This spec with scheduler `s`.
    pub fn scheduler(mut self, s: Scheduler) -> Self {
        self.scheduler = s;
        self
    }
    /// This spec made persistent: `timeout_s` seconds per client network of `netmask`
    /// (of the service's address family).
    pub fn persistent(mut self, timeout_s: u32, netmask: IpAddr) -> Self {
        self.persistence = Some(Persistence { timeout_s, netmask });
        self
    }
}

/// A real server of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RealSpec {
    /// The real server's address, of the service's address family.
    pub addr: IpAddr,
    /// Port on the real; for DR and TUN it must equal the virtual port (or be 0).
    pub port: u16,
    /// How packets reach the real: direct routing, IPIP tunnel, or NAT.
    pub method: Method,
    /// The real's share of new flows, relative to the others'; 0 quiesces it (its
    /// established flows stay, no new flow lands on it).
    pub weight: u32,
    /// The tunnel method's encapsulation; [`Tunnel::default`] (IPIP, no options) for
    /// every real, and the only value allowed with the other methods.
    pub tunnel: Tunnel,
}

/// The checksum option of a GUE or GRE tunnel (ipvsadm `--tun-nocsum`, `--tun-csum`,
/// `--tun-remcsum`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TunCsum {
    /// No outer checksum (the default).
    #[default]
    NoCsum,
    /// The outer header carries a checksum (GUE: UDP's, GRE: GRE's).
    Csum,
    /// Remote checksum offload, which only concerns packets whose checksum this host
    /// has yet to compute: forwarded packets leave without an outer checksum.
    RemCsum,
}

impl TunCsum {
    /// The flags the data path reads (`TUN_F_*`).
    pub fn flags(self) -> u8 {
        match self {
            TunCsum::NoCsum => 0,
            TunCsum::Csum => TUN_F_CSUM,
            TunCsum::RemCsum => TUN_F_REMCSUM,
        }
    }

    /// The option from the stored flags (`TUN_F_*`).
    pub fn from_flags(flags: u8) -> Self {
        if flags & TUN_F_CSUM != 0 {
            TunCsum::Csum
        } else if flags & TUN_F_REMCSUM != 0 {
            TunCsum::RemCsum
        } else {
            TunCsum::NoCsum
        }
    }
}

/// How a tunnel real's packets are wrapped (ipvsadm `--tun-type`, `--tun-port` and the
/// checksum options).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tunnel {
    /// The encapsulation.
    pub kind: TunType,
    /// GUE: the UDP port the real decapsulates on (required, 1..=65535); 0 otherwise.
    pub port: u16,
    /// GUE and GRE only; IPIP has no checksum of its own.
    pub csum: TunCsum,
}

impl Default for Tunnel {
    fn default() -> Self {
        Self {
            kind: TunType::Ipip,
            port: 0,
            csum: TunCsum::NoCsum,
        }
    }
}

impl Tunnel {
    /// Why these options make no tunnel, if they do not: a GUE tunnel needs its port,
    /// IPIP and GRE take none, IPIP has no checksum options.
    pub fn problem(&self) -> Option<&'static str> {
        match self.kind {
            TunType::Gue if self.port == 0 => Some("a GUE tunnel needs its UDP port (--tun-port)"),
            TunType::Ipip | TunType::Gre if self.port != 0 => {
                Some("only a GUE tunnel has a port (--tun-port)")
            }
            TunType::Ipip if self.csum != TunCsum::NoCsum => {
                Some("an IPIP tunnel has no checksum options")
            }
            _ => None,
        }
    }
}

impl RealSpec {
    /// The real as the maps hold it under `svc`: DR and TUN reals (and a NAT real
    /// without a port of its own) take the virtual service's port, as IPVS stores them.
    pub fn stored_under(&self, svc: &ServiceAddr) -> RealSpec {
        let mut r = *self;
        if r.method != Method::Masq || r.port == 0 {
            r.port = svc.port;
        }
        r
    }

    /// A real with these fields as given; the port the maps keep is
    /// [`RealSpec::stored_under`]'s.
    pub fn new(addr: IpAddr, port: u16, method: Method, weight: u32) -> Self {
        Self {
            addr,
            port,
            method,
            weight,
            tunnel: Tunnel::default(),
        }
    }

    /// The same real with these tunnel options (tunnel method only).
    pub fn with_tunnel(mut self, tunnel: Tunnel) -> Self {
        self.tunnel = tunnel;
        self
    }
}
