//! IPv6 packet fixtures: the FIB fixture lab ([`FibLab`]) made dual-stack, IPv6 frames
//! built with etherparse, and IPv6 services written into the data path's maps.
//!

use std::{
    net::{IpAddr, Ipv6Addr},
    sync::atomic::{AtomicU32, Ordering},
};

use aya::maps::{Map, MapData, PerCpuArray};
use director_common::maps as names;
use director_common::real::{Method, TunType};
use director_control::{
    LoadOptions, Protocol, RealSpec, ServiceAddr, ServiceSpec,
    model::{TunCsum, Tunnel},
};
use etherparse::{
    EtherType, Ethernet2Header, Icmpv6Type, IpNumber, Ipv4Header, Ipv6FlowLabel, Ipv6Header,
    NetSlice, PacketBuilder, SlicedPacket, TransportSlice,
};

use crate::{
    fixture::{
        CLIENT_MAC, DIRECTOR_MAC, DIRECTOR_MAC_OUT, FIXTURE_TABLE_SIZE, FibLab, Flags, Harness,
        internet_checksum, real_ip, real_mac,
    },
    host::BpffsDir,
};

/// The client, on the director's client-side segment (2001:db8::/64).
pub const CLIENT6: [u8; 16] = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2).octets();
/// The director's client-side address.
pub const DIRECTOR6_IN: [u8; 16] = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).octets();
/// The director's real-side address (2001:db8:1::/64): a tunnel's outer source.
pub const DIRECTOR6_OUT: [u8; 16] = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1).octets();
/// The IPv6 virtual address.
pub const VIP6: [u8; 16] = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1).octets();

/// IPv6 real `n`: 2001:db8:1::1n (its MAC is [`real_mac`]`(n)`, as for IPv4).
pub fn real6(n: u8) -> [u8; 16] {
    let mut a = DIRECTOR6_OUT;
    a[15] = 0x10 + n;
    a
}

fn text6(a: [u8; 16]) -> String {
    Ipv6Addr::from(a).to_string()
}

/// The FIB fixture lab with IPv6 addresses, forwarding and static neighbours beside the
/// IPv4 ones, and the data path's maps pinned in a bpffs directory of the test's own.
pub struct Fib6 {
    pub f: FibLab,
    pins: BpffsDir,
}

static LABS: AtomicU32 = AtomicU32::new(0);

impl Default for Fib6 {
    fn default() -> Self {
        Self::new()
    }
}

impl Fib6 {
    pub fn new() -> Self {
        let n = LABS.fetch_add(1, Ordering::Relaxed);
        let pins = BpffsDir::new(&format!("v6fix{n}")).expect("a bpffs directory");
        let h = Harness::with_options(&LoadOptions {
            conn_table: 4096,
            table_size: FIXTURE_TABLE_SIZE,
            max_services: 16,
            pin_dir: Some(pins.path().to_path_buf()),
            ..LoadOptions::default()
        });
        let f = FibLab::with_harness(h);
        dual_stack(&f);
        Self { f, pins }
    }

    /// A permanent IPv6 neighbour entry in the director's namespace.
    pub fn set_neighbour6(&self, addr: [u8; 16], mac: [u8; 6], dev: &str) {
        neighbour6(&self.f, addr, mac, dev);
    }

    fn map(&self, name: &str) -> Map {
        let data = MapData::from_pin(self.pins.path().join(name)).expect("a pinned map");
        Map::from_map_data(data).expect("a map of a known type")
    }

    /// The MTU each CPU last handed to the Packet Too Big program (`DIR_TOO_BIG_MTU`).
    pub fn too_big_mtus(&self) -> Vec<u32> {
        let m: PerCpuArray<MapData, u32> = self.map(names::TOO_BIG_MTU).try_into().unwrap();
        m.get(&0, 0).unwrap().iter().copied().collect()
    }

    /// A service on VIP6 (`vip6`) or the IPv4 VIP and `port`, with real 1 behind it as
    /// `spec` says (its address aside) at `real` (an IPv6 address; None: the IPv4 real
    /// 1), both added through the control library as an operator adds them.
    pub fn service(
        &mut self,
        proto: Protocol,
        vip6: bool,
        port: u16,
        spec: RealSpec,
        real: Option<[u8; 16]>,
    ) -> ServiceAddr {
        let svc = if vip6 {
            let spec = ServiceSpec::new(proto, IpAddr::V6(Ipv6Addr::from(VIP6)), port);
            self.f.h.control().add_service(&spec).unwrap();
            spec.addr
        } else {
            self.f.service(proto, port)
        };
        let mut spec = spec;
        spec.addr = match real {
            Some(a) => IpAddr::V6(Ipv6Addr::from(a)),
            None => crate::fixture::ip(real_ip(1)),
        };
        self.f.h.control().add_real(&svc, &spec).unwrap();
        svc
    }

    /// [`Fib6::service`] on VIP6 with real 1 at its IPv6 address, as most IPv6 tests
    /// want it.
    pub fn service6(&mut self, proto: Protocol, port: u16, spec: RealSpec) -> ServiceAddr {
        self.service(proto, true, port, spec, Some(real6(1)))
    }
}

/// Real 1 by `method` on `port`, weight 1; [`Fib6::service`] sets its address.
pub fn real_spec(method: Method, port: u16) -> RealSpec {
    RealSpec::new(crate::fixture::ip(real_ip(1)), port, method, 1)
}

/// Real 1 as a tunnel real on port 80 of `kind` (GUE to port 6080) with `csum`.
pub fn tunnel_spec(kind: TunType, csum: TunCsum) -> RealSpec {
    real_spec(Method::Tunnel, 80).with_tunnel(Tunnel {
        kind,
        port: if kind == TunType::Gue { 6080 } else { 0 },
        csum,
    })
}

/// The IPv6 side of a FIB fixture lab (also the benchmarks'): the addresses, IPv6
/// forwarding in the director, and static neighbours for the client and reals 1 to 3.
pub fn dual_stack(f: &FibLab) {
    let ns = |host: &str, args: &[&str]| {
        f.lab.ns(host).exec_ok(args).unwrap_or_else(|e| {
            panic!("{host}: {}: {e:#}", args.join(" "));
        });
    };
    for (host, dev, addr) in [
        ("client", "eth0", CLIENT6),
        ("director", "eth0", DIRECTOR6_IN),
        ("director", "eth1", DIRECTOR6_OUT),
        ("reals", "eth0", real6(1)),
    ] {
        let a = format!("{}/64", text6(addr));
        ns(host, &["ip", "-6", "addr", "add", &a, "dev", dev, "nodad"]);
    }
    f.lab
        .ns("director")
        .set_sysctl("net.ipv6.conf.all.forwarding", "1")
        .expect("IPv6 forwarding");
    for n in 1..=3 {
        neighbour6(f, real6(n), real_mac(n), "eth1");
    }
    neighbour6(f, CLIENT6, CLIENT_MAC, "eth0");
}

/// A permanent IPv6 neighbour entry in the director's namespace of `f`.
pub fn neighbour6(f: &FibLab, addr: [u8; 16], mac: [u8; 6], dev: &str) {
    let m: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
    let a = text6(addr);
    let args = [
        "ip",
        "-6",
        "neigh",
        "replace",
        &a,
        "lladdr",
        &m.join(":"),
        "dev",
        dev,
        "nud",
        "permanent",
    ];
    f.lab
        .ns("director")
        .exec_ok(&args)
        .expect("static IPv6 neighbour");
}

/// An Ethernet/IPv6/ICMPv6 frame carrying `payload` (checksum by etherparse); `macs`
/// are (source, destination).
pub fn icmp6(
    macs: ([u8; 6], [u8; 6]),
    src: [u8; 16],
    dst: [u8; 16],
    hop_limit: u8,
    icmp: Icmpv6Type,
    payload: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(macs.0, macs.1)
        .ipv6(src, dst, hop_limit)
        .icmpv6(icmp)
        .write(&mut out, payload)
        .unwrap();
    out
}

/// An Ethernet/IPv6 frame with a fragment header: `data` at `offset` bytes (a multiple
/// of 8) of a datagram of protocol `next` with identification `id`, `more` fragments
/// following or not; `macs` are (source, destination).
#[allow(clippy::too_many_arguments)]
pub fn fragment6(
    macs: ([u8; 6], [u8; 6]),
    src: [u8; 16],
    dst: [u8; 16],
    hop_limit: u8,
    next: u8,
    id: u32,
    offset: usize,
    more: bool,
    data: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    Ethernet2Header {
        source: macs.0,
        destination: macs.1,
        ether_type: EtherType::IPV6,
    }
    .write(&mut out)
    .unwrap();
    Ipv6Header {
        traffic_class: 0,
        flow_label: Ipv6FlowLabel::ZERO,
        payload_length: (8 + data.len()) as u16,
        next_header: IpNumber::IPV6_FRAGMENTATION_HEADER,
        hop_limit,
        source: src,
        destination: dst,
    }
    .write(&mut out)
    .unwrap();
    // The fragment header by hand: etherparse 0.18's `Ipv6FragmentHeader` places the
    // offset and M bits elsewhere than RFC 8200's layout (offset << 3 | M).
    let off = ((offset / 8) as u16) << 3 | more as u16;
    out.extend_from_slice(&[next, 0]);
    out.extend_from_slice(&off.to_be_bytes());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// A UDP datagram's IPv6 payload (header and 120 bytes of data, checksum by
/// etherparse), for splitting into fragments.
pub fn udp_payload6(src: ([u8; 16], u16), dst: ([u8; 16], u16)) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv6(src.0, dst.0, 64)
        .udp(src.1, dst.1)
        .write(&mut out, &[0x17; 120])
        .unwrap();
    out[40..].to_vec()
}

/// An Ethernet/IPv6/TCP frame; `macs` are (source, destination).
pub fn tcp6(
    macs: ([u8; 6], [u8; 6]),
    src: ([u8; 16], u16),
    dst: ([u8; 16], u16),
    hop_limit: u8,
    flags: Flags,
    payload: &[u8],
) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(macs.0, macs.1)
        .ipv6(src.0, dst.0, hop_limit)
        .tcp(src.1, dst.1, 1000, 64240);
    if flags.syn {
        b = b.syn();
    }
    if flags.ack {
        b = b.ack(1);
    }
    if flags.fin {
        b = b.fin();
    }
    if flags.rst {
        b = b.rst();
    }
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).expect("building a TCP frame");
    out
}

/// An Ethernet/IPv6/UDP frame; `macs` are (source, destination).
pub fn udp6(
    macs: ([u8; 6], [u8; 6]),
    src: ([u8; 16], u16),
    dst: ([u8; 16], u16),
    hop_limit: u8,
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(macs.0, macs.1)
        .ipv6(src.0, dst.0, hop_limit)
        .udp(src.1, dst.1);
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).expect("building a UDP frame");
    out
}

/// The client's TCP packet to VIP6 as it reaches the director.
pub fn client_tcp6(sport: u16, vport: u16, flags: Flags, payload: &[u8]) -> Vec<u8> {
    tcp6(
        (CLIENT_MAC, DIRECTOR_MAC),
        (CLIENT6, sport),
        (VIP6, vport),
        64,
        flags,
        payload,
    )
}

/// The client's UDP datagram to VIP6 as it reaches the director.
pub fn client_udp6(sport: u16, vport: u16, payload: &[u8]) -> Vec<u8> {
    udp6(
        (CLIENT_MAC, DIRECTOR_MAC),
        (CLIENT6, sport),
        (VIP6, vport),
        64,
        payload,
    )
}

/// `frame` with its MAC addresses replaced.
pub fn macs(frame: &[u8], dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    let mut out = frame.to_vec();
    out[0..6].copy_from_slice(&dst);
    out[6..12].copy_from_slice(&src);
    out
}

/// Insert IPv6 extension headers (each `(kind, body)`; a body of 6 + 8k bytes follows
/// the next-header and length bytes) between the IPv6 header and the payload of an
/// Ethernet/IPv6 frame, fixing the chain of next-header fields and the payload length.
pub fn with_ext_headers(frame: &[u8], headers: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let ip = &frame[14..54];
    let mut next = ip[6];
    let mut ext = Vec::new();
    for (kind, body) in headers.iter().rev() {
        assert_eq!(
            (body.len() + 2) % 8,
            0,
            "extension headers are multiples of 8"
        );
        let mut h = vec![next, ((body.len() + 2) / 8 - 1) as u8];
        h.extend_from_slice(body);
        h.extend_from_slice(&ext);
        ext = h;
        next = *kind;
    }
    let mut out = frame[..54].to_vec();
    out[14 + 6] = next;
    let plen = u16::from_be_bytes([ip[4], ip[5]]) as usize + ext.len();
    out[14 + 4..14 + 6].copy_from_slice(&(plen as u16).to_be_bytes());
    out.extend_from_slice(&ext);
    out.extend_from_slice(&frame[54..]);
    out
}

/// Hop-by-hop options, destination options: one PadN option filling six bytes.
pub fn padn6() -> Vec<u8> {
    vec![1, 4, 0, 0, 0, 0]
}

/// An IPv6 frame as a router forwards it: the hop limit one lower.
pub fn after_one_hop6(frame: &[u8]) -> Vec<u8> {
    let mut out = frame.to_vec();
    out[14 + 7] -= 1;
    out
}

/// The flow label and GUE source port a director derives from a client's flow (its
/// hash, as `director_common::hash::hash_flow` computes it).
pub fn flow_hash(src: [u8; 16], sport: u16, dport: u16, proto: u8) -> u32 {
    director_common::hash::hash_flow(&src, sport.to_be(), dport.to_be(), proto)
}

/// The frame a director sends to an IPv6 tunnel real: Ethernet (IPv6), an outer IPv6
/// header from `src` to `dst` carrying `next` (traffic class the inner one's, flow
/// label from `hash`, hop limit 64), then `payload` (the shim and the client's packet).
pub fn over_ipv6(
    payload: &[u8],
    macs: ([u8; 6], [u8; 6]),
    src: [u8; 16],
    dst: [u8; 16],
    next: IpNumber,
    tclass: u8,
    hash: u32,
) -> Vec<u8> {
    let mut out = Vec::new();
    Ethernet2Header {
        destination: macs.0,
        source: macs.1,
        ether_type: EtherType::IPV6,
    }
    .write(&mut out)
    .unwrap();
    Ipv6Header {
        traffic_class: tclass,
        flow_label: Ipv6FlowLabel::try_new(hash & 0xf_ffff).unwrap(),
        payload_length: payload.len() as u16,
        next_header: next,
        hop_limit: 64,
        source: src,
        destination: dst,
    }
    .write(&mut out)
    .unwrap();
    out.extend_from_slice(payload);
    out
}

/// The frame a director sends to an IPv4 tunnel real with an IPv6 packet inside
/// (6in4): Ethernet (IPv4), an outer IPv4 header (protocol `proto`, TTL 64, id 0, DF,
/// TOS the inner traffic class), then `payload`.
pub fn over_ipv4(
    payload: &[u8],
    macs: ([u8; 6], [u8; 6]),
    src: [u8; 4],
    dst: [u8; 4],
    proto: IpNumber,
    tos: u8,
) -> Vec<u8> {
    let mut out = Vec::new();
    Ethernet2Header {
        destination: macs.0,
        source: macs.1,
        ether_type: EtherType::IPV4,
    }
    .write(&mut out)
    .unwrap();
    let mut ip = Ipv4Header::new(payload.len() as u16, 64, proto, src, dst).unwrap();
    ip.identification = 0;
    ip.dont_fragment = true;
    ip.dscp = etherparse::IpDscp::try_new(tos >> 2).unwrap();
    ip.ecn = etherparse::IpEcn::try_new(tos & 3).unwrap();
    ip.header_checksum = ip.calc_header_checksum();
    ip.write(&mut out).unwrap();
    out.extend_from_slice(payload);
    out
}

/// The UDP and GUE headers in front of `inner` (an IP packet of protocol `inner_proto`),
/// with the UDP checksum over the outer pseudo-header (`src`, `dst`: IPv6 addresses, or
/// IPv4 ones in the first four bytes with `v4`) when `csum`.
pub fn gue_shim(
    inner: &[u8],
    inner_proto: u8,
    sport: u16,
    dport: u16,
    pseudo: Option<(&[u8], &[u8])>,
) -> Vec<u8> {
    let len = (8 + 4 + inner.len()) as u16;
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&len.to_be_bytes());
    u.extend_from_slice(&[0, 0, 0, inner_proto, 0, 0]);
    u.extend_from_slice(inner);
    if let Some((src, dst)) = pseudo {
        let mut p = Vec::new();
        p.extend_from_slice(src);
        p.extend_from_slice(dst);
        if src.len() == 16 {
            p.extend_from_slice(&(len as u32).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, 17]);
        } else {
            p.extend_from_slice(&[0, 17]);
            p.extend_from_slice(&len.to_be_bytes());
        }
        p.extend_from_slice(&u);
        let mut c = internet_checksum(&p);
        if c == 0 {
            c = 0xffff;
        }
        u[6..8].copy_from_slice(&c.to_be_bytes());
    }
    u
}

/// The GRE header in front of `inner` (protocol `ethertype`), with its checksum when
/// `csum`.
pub fn gre_shim(inner: &[u8], ethertype: u16, csum: bool) -> Vec<u8> {
    let et = ethertype.to_be_bytes();
    let mut g = if csum {
        vec![0x80, 0, et[0], et[1], 0, 0, 0, 0]
    } else {
        vec![0, 0, et[0], et[1]]
    };
    g.extend_from_slice(inner);
    if csum {
        let c = internet_checksum(&g).to_be_bytes();
        g[4..6].copy_from_slice(&c);
    }
    g
}

/// Check the TCP/UDP checksum of an Ethernet/IPv6 frame (or of the IPv6 or IPv4 packet
/// inside a tunnel frame, whose outer checksums are compared byte for byte by the
/// fixtures) with etherparse's own computation.
#[track_caller]
pub fn assert_l4_checksum6(packet: &[u8], intent: &str) {
    let p = SlicedPacket::from_ethernet(packet)
        .unwrap_or_else(|e| panic!("{intent}: output does not parse: {e}"));
    let Some(NetSlice::Ipv6(ip)) = &p.net else {
        panic!("{intent}: output is not IPv6");
    };
    let h = ip.header().to_header();
    match &p.transport {
        Some(TransportSlice::Tcp(t)) => {
            let want = t
                .to_header()
                .calc_checksum_ipv6(&h, t.payload())
                .expect("tcp checksum");
            assert_eq!(t.checksum(), want, "{intent}: TCP checksum");
        }
        Some(TransportSlice::Udp(u)) => {
            let want = u
                .to_header()
                .calc_checksum_ipv6(&h, u.payload())
                .expect("udp checksum");
            assert_ne!(u.checksum(), 0, "{intent}: a UDP checksum over IPv6");
            assert_eq!(u.checksum(), want, "{intent}: UDP checksum");
        }
        _ => panic!("{intent}: no TCP/UDP in the output"),
    }
}

/// The IPv6 protocol numbers etherparse names.
pub const IPV6_IN: IpNumber = IpNumber::IPV6;
/// IPv4 inside a tunnel.
pub const IPV4_IN: IpNumber = IpNumber::IPV4;

/// The real-side MACs of real `n`'s frames: the real's, then the director's.
pub fn to_real(n: u8) -> ([u8; 6], [u8; 6]) {
    (real_mac(n), DIRECTOR_MAC_OUT)
}
