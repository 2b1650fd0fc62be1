//! Packet fixtures: run the director's XDP program on one frame through
//! BPF_PROG_TEST_RUN and check the verdict and the exact output frame.
//!
//! Frames are built and checked with etherparse, never with the code under test: an
//! output frame's checksums are recomputed independently.

use std::sync::Mutex;

use aya::programs::{TestRun as _, TestRunOptions};
use director_control::{Control, Datapath, LoadOptions, datapath::PROG_DIRECTOR};
use std::net::{IpAddr, Ipv4Addr};

use director_common::real::Method;
use director_control::{Protocol, RealSpec, ServiceAddr, ServiceSpec};
use etherparse::{
    EtherType, Ethernet2Header, IpNumber, Ipv4Header, PacketBuilder, SingleVlanHeader,
    SlicedPacket, TransportSlice, VlanId,
};

use crate::{
    lab::{Endpoint, Host, Lab, Topology},
    lvs,
};

/// XDP verdicts, as the program returns them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Aborted,
    Drop,
    Pass,
    Tx,
    Redirect,
}

impl Action {
    pub fn from_code(c: u32) -> Self {
        match c {
            0 => Action::Aborted,
            1 => Action::Drop,
            2 => Action::Pass,
            3 => Action::Tx,
            4 => Action::Redirect,
            other => panic!("unknown XDP verdict {other}"),
        }
    }
}

/// What one run of the program produced.
#[derive(Debug)]
pub struct Outcome {
    pub action: Action,
    pub frame: Vec<u8>,
}

/// A loaded director program with its own (unpinned) maps.
pub struct Harness {
    pub dp: Datapath,
    /// Ingress ifindex handed to the program (0: none; FIB lookups then fail).
    pub ingress_ifindex: u32,
}

/// Small tables keep fixture loads fast; 1021 is prime (room for 10 reals per service).
pub const FIXTURE_TABLE_SIZE: u32 = 1021;

// Loads are serialised: verifying many programs at once on a few cores only slows every
// test down.
static LOAD: Mutex<()> = Mutex::new(());

impl Harness {
    pub fn new() -> Self {
        Self::with_options(&LoadOptions {
            conn_table: 4096,
            table_size: FIXTURE_TABLE_SIZE,
            max_services: 16,
            pin_dir: None,
            ..LoadOptions::default()
        })
    }

    pub fn with_options(opts: &LoadOptions) -> Self {
        let _serial = LOAD.lock().unwrap_or_else(|e| e.into_inner());
        let dp = Datapath::load(opts)
            .unwrap_or_else(|e| panic!("loading the XDP object: {:#}", anyhow::Error::from(e)));
        Self {
            dp,
            ingress_ifindex: 0,
        }
    }

    pub fn control(&mut self) -> &mut Control {
        &mut self.dp.control
    }

    /// Run the director program once on `frame`.
    pub fn run(&self, frame: &[u8]) -> Outcome {
        self.run_program(PROG_DIRECTOR, frame)
    }

    /// Run one of the object's programs once on `frame`.
    pub fn run_program(&self, program: &str, frame: &[u8]) -> Outcome {
        // Room for an outer header (IPIP) on top of the input.
        let mut out = vec![0u8; frame.len() + 64];
        // xdp_md as the kernel accepts it for test runs: data, data_end, data_meta,
        // ingress_ifindex, rx_queue_index, egress_ifindex.
        let ctx: [u32; 6] = [0, frame.len() as u32, 0, self.ingress_ifindex, 0, 0];
        let ctx_bytes: Vec<u8> = ctx.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let prog = self.dp.program(program);
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: if self.ingress_ifindex != 0 {
                Some(&ctx_bytes)
            } else {
                None
            },
            repeat: 1,
            ..TestRunOptions::new()
        };
        let res = prog.test_run(opts).expect("BPF_PROG_TEST_RUN");
        out.truncate(res.data_size_out as usize);
        Outcome {
            action: Action::from_code(res.return_value),
            frame: out,
        }
    }

    /// One fixture: what it proves, the input, the expected verdict and output frame.
    #[track_caller]
    pub fn check(&self, intent: &str, input: &[u8], action: Action, expected: &[u8]) -> Outcome {
        let got = self.run(input);
        assert_eq!(got.action, action, "{intent}: verdict");
        assert_eq!(
            hex(&got.frame),
            hex(expected),
            "{intent}: output frame differs"
        );
        if action == Action::Tx || action == Action::Redirect {
            assert_checksums_valid(&got.frame, intent);
        }
        got
    }

    /// A global outcome counter (e.g. "pass_not_vip").
    pub fn stat(&self, name: &str) -> u64 {
        self.dp
            .control
            .stats()
            .expect("reading stats")
            .into_iter()
            .find(|(s, _)| s.name() == name)
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no counter {name}"))
    }
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// MAC addresses used by fixtures.
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const DIRECTOR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xd1];

/// TCP flags for [`tcp4`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Flags {
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
}
pub const SYN: Flags = Flags {
    syn: true,
    ack: false,
    fin: false,
    rst: false,
};
pub const ACK: Flags = Flags {
    syn: false,
    ack: true,
    fin: false,
    rst: false,
};
pub const FIN_ACK: Flags = Flags {
    syn: false,
    ack: true,
    fin: true,
    rst: false,
};
pub const RST: Flags = Flags {
    syn: false,
    ack: false,
    fin: false,
    rst: true,
};

/// An Ethernet/IPv4/TCP frame.
pub fn tcp4(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: ([u8; 4], u16),
    dst: ([u8; 4], u16),
    flags: Flags,
    payload: &[u8],
) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src.0, dst.0, 64)
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

/// An Ethernet/IPv4/UDP frame.
pub fn udp4(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: ([u8; 4], u16),
    dst: ([u8; 4], u16),
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src.0, dst.0, 64)
        .udp(src.1, dst.1);
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).expect("building a UDP frame");
    out
}

/// Split an Ethernet/IPv4 frame's datagram into fragments (RFC 791) with IP
/// identification `id`: the IP payload is cut after each length in `cuts` (multiples of
/// 8), the rest goes into the last fragment. Headers and checksums are etherparse's.
pub fn fragment(frame: &[u8], id: u16, cuts: &[usize]) -> Vec<Vec<u8>> {
    let eth = Ethernet2Header::from_slice(frame)
        .expect("an Ethernet frame")
        .0;
    let (mut ip, payload) =
        Ipv4Header::from_slice(&frame[Ethernet2Header::LEN..]).expect("an IPv4 header");
    let payload = &payload[..ip.payload_len().expect("payload length") as usize];
    let mut out = Vec::new();
    let mut at = 0;
    for (i, &cut) in cuts
        .iter()
        .chain([&(payload.len() - cuts.iter().sum::<usize>())])
        .enumerate()
    {
        assert!(
            i == cuts.len() || cut % 8 == 0,
            "fragment sizes are multiples of 8"
        );
        ip.identification = id;
        ip.more_fragments = i < cuts.len();
        ip.fragment_offset = etherparse::IpFragOffset::try_new((at / 8) as u16).unwrap();
        ip.set_payload_len(cut).unwrap();
        ip.header_checksum = ip.calc_header_checksum();
        let mut f = Vec::new();
        eth.write(&mut f).unwrap();
        ip.write(&mut f).unwrap();
        f.extend_from_slice(&payload[at..at + cut]);
        out.push(f);
        at += cut;
    }
    out
}

/// Check every checksum of an Ethernet frame carrying IPv4 (and IPIP inside it) with
/// etherparse's own computation.
#[track_caller]
pub fn assert_checksums_valid(frame: &[u8], intent: &str) {
    let p = SlicedPacket::from_ethernet(frame)
        .unwrap_or_else(|e| panic!("{intent}: output does not parse: {e}"));
    check_ip_and_l4(&p, intent);
}

#[track_caller]
fn check_ip_and_l4(p: &SlicedPacket<'_>, intent: &str) {
    use etherparse::{InternetSlice, NetSlice};
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        panic!("{intent}: output is not IPv4");
    };
    let h = ip.header().to_header();
    assert_eq!(
        h.header_checksum,
        h.calc_header_checksum(),
        "{intent}: IPv4 header checksum"
    );
    if ip.is_payload_fragmented() {
        // A fragment's L4 checksum covers the whole datagram: callers compare the
        // frames, and the reassembled datagram's checksum is checked there.
        return;
    }
    if h.protocol == etherparse::IpNumber::IPV4 {
        // IPIP: check the inner packet too.
        let inner = SlicedPacket::from_ip(ip.payload().payload)
            .unwrap_or_else(|e| panic!("{intent}: inner packet: {e}"));
        return check_ip_and_l4(&inner, intent);
    }
    if h.protocol == etherparse::IpNumber::GRE {
        // GRE: its checksum when it has one, then the inner packet.
        let g = ip.payload().payload;
        let (hdr_len, has_csum) = if g[0] & 0x80 != 0 {
            (8, true)
        } else {
            (4, false)
        };
        if has_csum {
            assert_eq!(internet_checksum(g), 0, "{intent}: GRE checksum");
        }
        let inner = SlicedPacket::from_ip(&g[hdr_len..])
            .unwrap_or_else(|e| panic!("{intent}: inner packet: {e}"));
        return check_ip_and_l4(&inner, intent);
    }
    let _ = InternetSlice::Ipv4;
    let payload = ip.payload().payload;
    match &p.transport {
        Some(TransportSlice::Tcp(t)) => {
            let want = t
                .to_header()
                .calc_checksum_ipv4(&h, t.payload())
                .expect("tcp checksum");
            assert_eq!(t.checksum(), want, "{intent}: TCP checksum");
        }
        Some(TransportSlice::Udp(u)) => {
            if u.checksum() != 0 {
                let want = u
                    .to_header()
                    .calc_checksum_ipv4(&h, u.payload())
                    .expect("udp checksum");
                assert_eq!(u.checksum(), want, "{intent}: UDP checksum");
            }
        }
        Some(TransportSlice::Icmpv4(i)) => {
            let want = i.header().icmp_type.calc_checksum(i.payload());
            assert_eq!(i.checksum(), want, "{intent}: ICMP checksum");
            // The quoted IPv4 header's own checksum.
            if let Ok((q, _)) = Ipv4Header::from_slice(i.payload()) {
                assert_eq!(
                    q.header_checksum,
                    q.calc_header_checksum(),
                    "{intent}: the quoted IPv4 header's checksum"
                );
            }
        }
        _ => panic!(
            "{intent}: no TCP/UDP in the output ({} payload bytes)",
            payload.len()
        ),
    }
}

/// While alive, the current thread is inside another network namespace (FIB lookups of
/// test runs use the caller's namespace); the old one is restored on drop.
pub struct InNetns {
    home: std::fs::File,
}

impl InNetns {
    pub fn enter(path: &std::path::Path) -> Self {
        use nix::sched::{CloneFlags, setns};
        let home = std::fs::File::open("/proc/thread-self/ns/net").expect("opening our own netns");
        let target =
            std::fs::File::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
        setns(&target, CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("entering {}: {e}", path.display()));
        Self { home }
    }
}

impl Drop for InNetns {
    fn drop(&mut self) {
        use nix::sched::{CloneFlags, setns};
        if let Err(e) = setns(&self.home, CloneFlags::CLONE_NEWNET)
            && !std::thread::panicking()
        {
            panic!("returning to our netns: {e}");
        }
    }
}

/// The input with new MAC addresses (what DR does).
pub fn with_macs(frame: &[u8], dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f
}

/// The frame with an 802.1Q tag for `vlan` between the MACs and its EtherType (headers
/// written by etherparse, priority 0).
pub fn with_vlan(frame: &[u8], vlan: u16) -> Vec<u8> {
    let (eth, rest) = Ethernet2Header::from_slice(frame).expect("an Ethernet frame");
    let mut out = Vec::with_capacity(frame.len() + SingleVlanHeader::LEN);
    Ethernet2Header {
        ether_type: EtherType::VLAN_TAGGED_FRAME,
        ..eth
    }
    .write(&mut out)
    .unwrap();
    SingleVlanHeader {
        vlan_id: VlanId::try_new(vlan).expect("a VLAN id"),
        ether_type: eth.ether_type,
        ..Default::default()
    }
    .write(&mut out)
    .unwrap();
    out.extend_from_slice(rest);
    out
}

/// The frame an IPIP director sends (built with etherparse, not by the code under
/// test): Ethernet, an outer IPv4 header from `src` to `dst` (protocol 4, TTL 64, id 0,
/// DF and TOS copied), then the client's packet.
pub fn ipip(
    inner_frame: &[u8],
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
) -> Vec<u8> {
    let inner = &inner_frame[14..];
    let outer = tunnel_outer(inner, inner.len(), IpNumber::IPV4, src, dst);
    let mut out = ethernet(dst_mac, src_mac);
    outer.write(&mut out).unwrap();
    out.extend_from_slice(inner);
    out
}

/// One direction of a flow as a frame on the wire carries it: MAC addresses, then IPv4
/// address and port of each end. The constructors name the legs of the fixture lab
/// ([`FibLab`]), the `with_*` methods change what a fixture needs changed, and
/// [`Leg::tcp`] / [`Leg::udp`] build the frame with etherparse ([`tcp4`], [`udp4`]), so a
/// fixture states only what differs from the usual.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leg {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: ([u8; 4], u16),
    pub dst: ([u8; 4], u16),
}

impl Leg {
    /// The client's packet to the VIP as it reaches the director's client-side interface.
    pub fn client(sport: u16, vport: u16) -> Self {
        Leg {
            src_mac: CLIENT_MAC,
            dst_mac: DIRECTOR_MAC,
            src: (CLIENT, sport),
            dst: (VIP, vport),
        }
    }

    /// What NAT sends to real `n`: the client's packet with the real's address and port
    /// as destination, out of the real-side interface (checksums are etherparse's).
    pub fn nat_to_real(n: u8, sport: u16, rport: u16) -> Self {
        Leg {
            src_mac: DIRECTOR_MAC_OUT,
            dst_mac: real_mac(n),
            src: (CLIENT, sport),
            dst: (real_ip(n), rport),
        }
    }

    /// Real `n`'s packet to the client as it reaches the director's real-side interface
    /// (a NAT reply before the director un-NATs it).
    pub fn from_real(n: u8, rport: u16, cport: u16) -> Self {
        Leg {
            src_mac: REAL_SIDE_MAC,
            dst_mac: DIRECTOR_MAC_OUT,
            src: (real_ip(n), rport),
            dst: (CLIENT, cport),
        }
    }

    /// A packet from the VIP to the client leaving the director's client-side interface
    /// (an un-NATed reply, before [`after_one_hop`]).
    pub fn to_client(vport: u16, cport: u16) -> Self {
        Leg {
            src_mac: DIRECTOR_MAC,
            dst_mac: CLIENT_MAC,
            src: (VIP, vport),
            dst: (CLIENT, cport),
        }
    }

    /// The same leg from another source address (port kept).
    pub fn with_src_ip(mut self, addr: [u8; 4]) -> Self {
        self.src.0 = addr;
        self
    }

    /// The same leg to another destination address (port kept).
    pub fn with_dst_ip(mut self, addr: [u8; 4]) -> Self {
        self.dst.0 = addr;
        self
    }

    /// The same leg to another destination MAC.
    pub fn with_dst_mac(mut self, mac: [u8; 6]) -> Self {
        self.dst_mac = mac;
        self
    }

    /// The leg's Ethernet/IPv4/TCP frame.
    pub fn tcp(&self, flags: Flags, payload: &[u8]) -> Vec<u8> {
        tcp4(
            self.src_mac,
            self.dst_mac,
            self.src,
            self.dst,
            flags,
            payload,
        )
    }

    /// The leg's Ethernet/IPv4/UDP frame.
    pub fn udp(&self, payload: &[u8]) -> Vec<u8> {
        udp4(self.src_mac, self.dst_mac, self.src, self.dst, payload)
    }
}

/// What DR sends to real `n`: the client's frame unchanged but for the MACs (the real's,
/// and the director's real-side interface's).
pub fn dr_to(frame: &[u8], n: u8) -> Vec<u8> {
    with_macs(frame, real_mac(n), DIRECTOR_MAC_OUT)
}

/// What IPIP sends to real `n`: the client's packet inside an outer header from the
/// director's real-side address ([`ipip`]).
pub fn ipip_to(frame: &[u8], n: u8) -> Vec<u8> {
    ipip(
        frame,
        real_mac(n),
        DIRECTOR_MAC_OUT,
        DIRECTOR_OUT,
        real_ip(n),
    )
}

/// The RFC 1071 checksum of `data` (big-endian words, an odd byte padded): 0 over data
/// that carries its own valid checksum.
pub fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32)
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The outer IPv4 header of a tunnel (built with etherparse): from `src` to `dst`,
/// protocol `proto`, TTL 64, id 0, DF and TOS copied from the inner packet.
fn tunnel_outer(
    inner: &[u8],
    payload_len: usize,
    proto: IpNumber,
    src: [u8; 4],
    dst: [u8; 4],
) -> Ipv4Header {
    let inner_ip = Ipv4Header::from_slice(inner).unwrap().0;
    let mut outer = Ipv4Header::new(payload_len as u16, 64, proto, src, dst).unwrap();
    outer.identification = 0;
    outer.dont_fragment = inner_ip.dont_fragment;
    outer.dscp = inner_ip.dscp;
    outer.ecn = inner_ip.ecn;
    outer.header_checksum = outer.calc_header_checksum();
    outer
}

fn ethernet(dst_mac: [u8; 6], src_mac: [u8; 6]) -> Vec<u8> {
    let mut out = Vec::new();
    Ethernet2Header {
        destination: dst_mac,
        source: src_mac,
        ether_type: EtherType::IPV4,
    }
    .write(&mut out)
    .unwrap();
    out
}

/// The frame a GUE director sends: Ethernet, outer IPv4 (as [`ipip`]'s, protocol UDP),
/// UDP from `sport` to the real's tunnel port `dport` (with its checksum, computed by
/// etherparse, when `csum`, else 0), the GUE header (version 0, inner protocol IPIP),
/// then the client's packet.
#[allow(clippy::too_many_arguments)]
pub fn gue(
    inner_frame: &[u8],
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    csum: bool,
) -> Vec<u8> {
    let inner = &inner_frame[14..];
    let mut payload = vec![0, 4, 0, 0];
    payload.extend_from_slice(inner);
    let outer = tunnel_outer(inner, 8 + payload.len(), IpNumber::UDP, src, dst);
    let udp = if csum {
        etherparse::UdpHeader::with_ipv4_checksum(sport, dport, &outer, &payload).unwrap()
    } else {
        etherparse::UdpHeader {
            source_port: sport,
            destination_port: dport,
            length: (8 + payload.len()) as u16,
            checksum: 0,
        }
    };
    let mut out = ethernet(dst_mac, src_mac);
    outer.write(&mut out).unwrap();
    udp.write(&mut out).unwrap();
    out.extend_from_slice(&payload);
    out
}

/// The frame a GRE director sends: Ethernet, outer IPv4 (as [`ipip`]'s, protocol 47),
/// the GRE header (protocol 0x0800; with `csum`, the checksum flag and an RFC 1071
/// checksum over GRE header and payload), then the client's packet.
pub fn gre(
    inner_frame: &[u8],
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    csum: bool,
) -> Vec<u8> {
    let inner = &inner_frame[14..];
    let mut g = if csum {
        vec![0x80, 0, 0x08, 0x00, 0, 0, 0, 0]
    } else {
        vec![0, 0, 0x08, 0x00]
    };
    g.extend_from_slice(inner);
    if csum {
        let c = internet_checksum(&g).to_be_bytes();
        g[4..6].copy_from_slice(&c);
    }
    let outer = tunnel_outer(inner, g.len(), IpNumber::GRE, src, dst);
    let mut out = ethernet(dst_mac, src_mac);
    outer.write(&mut out).unwrap();
    out.extend_from_slice(&g);
    out
}

// ---- the FIB fixture lab ----

// The addressing plan is the standard lab's ([`crate::lvs`]); frames want octets.
pub const CLIENT: [u8; 4] = lvs::CLIENT.octets();
pub const CLIENT2: [u8; 4] = [10, 0, 0, 3];
pub const VIP: [u8; 4] = lvs::VIP_DR.octets();
pub const DIRECTOR_IN: [u8; 4] = lvs::DIRECTOR_FRONT.octets();
pub const DIRECTOR_OUT: [u8; 4] = lvs::DIRECTOR_BACK.octets();
pub const DIRECTOR_MAC_OUT: [u8; 6] = [0x02, 0, 0, 0, 0, 0xd2];
pub const REAL_SIDE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xee];
pub const ONE_ARM_REAL: [u8; 4] = [10, 0, 0, 21];

/// The NAT fixtures' TCP connection (CLIENT:40000 -> VIP:80, served by real 1 on port
/// 8080): a packet from the real as it reaches the director's real-side interface.
pub fn nat_reply_in(flags: Flags, payload: &[u8]) -> Vec<u8> {
    Leg::from_real(1, 8080, 40000).tcp(flags, payload)
}

/// [`nat_reply_in`] as it must leave towards the client: from the VIP and virtual port,
/// one hop further (a NAT reply is routed).
pub fn nat_reply_out(flags: Flags, payload: &[u8]) -> Vec<u8> {
    after_one_hop(&Leg::to_client(80, 40000).tcp(flags, payload))
}

/// An Ethernet/IPv4 frame as a router forwards it: TTL one lower, the header checksum
/// recomputed (by etherparse).
pub fn after_one_hop(frame: &[u8]) -> Vec<u8> {
    let (mut ip, _) = Ipv4Header::from_slice(&frame[14..]).expect("an IPv4 frame");
    ip.time_to_live -= 1;
    ip.header_checksum = ip.calc_header_checksum();
    let mut out = frame[..14].to_vec();
    ip.write(&mut out).unwrap();
    out.extend_from_slice(&frame[14 + ip.header_len()..]);
    out
}

pub fn real_ip(n: u8) -> [u8; 4] {
    lvs::real_addr(n).octets()
}
pub fn real_mac(n: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 1, 10 + n]
}
pub fn ip(a: [u8; 4]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(a))
}

/// The fixture lab for FIB lookups: client (10.0.0.2) -- eth0 [director] eth1 -- reals
/// (10.1.0.11..13 with static neighbours), plus a one-arm real 10.0.0.21 on the client
/// segment. Test runs must execute inside the director's namespace (`enter`).
pub struct FibLab {
    pub lab: Lab,
    pub h: Harness,
    pub eth0: u32,
    pub eth1: u32,
}

impl Default for FibLab {
    fn default() -> Self {
        Self::new()
    }
}

impl FibLab {
    pub fn new() -> Self {
        Self::with_harness(Harness::new())
    }

    /// The lab around a given harness (e.g. one with bigger maps for benchmarks).
    pub fn with_harness(mut h: Harness) -> Self {
        let topo = Topology::new()
            .host(Host::new("client"))
            .host(Host::new("director").ip_forward())
            .host(Host::new("reals"))
            .veth(
                Endpoint::new("client", "eth0")
                    .addr(ip(CLIENT), 24)
                    .mac(CLIENT_MAC),
                Endpoint::new("director", "eth0")
                    .addr(ip(DIRECTOR_IN), 24)
                    .mac(DIRECTOR_MAC),
            )
            .veth(
                Endpoint::new("director", "eth1")
                    .addr(ip(DIRECTOR_OUT), 24)
                    .mac(DIRECTOR_MAC_OUT),
                Endpoint::new("reals", "eth0")
                    .addr(ip(real_ip(1)), 24)
                    .mac(REAL_SIDE_MAC),
            );
        let lab = Lab::build(&topo).expect("building the fixture lab");
        let eth0 = lab.ifindex("director", "eth0");
        let eth1 = lab.ifindex("director", "eth1");
        h.ingress_ifindex = eth0;
        let f = FibLab { lab, h, eth0, eth1 };
        for n in 1..=3 {
            f.set_neighbour(real_ip(n), real_mac(n), "eth1");
        }
        f.set_neighbour(CLIENT, CLIENT_MAC, "eth0");
        f.set_neighbour(CLIENT2, CLIENT_MAC, "eth0");
        f.set_neighbour(ONE_ARM_REAL, real_mac(9), "eth0");
        f
    }

    /// A permanent neighbour entry in the director's namespace (replacing any entry).
    pub fn set_neighbour(&self, addr: [u8; 4], mac: [u8; 6], dev: &str) {
        let m: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
        self.lab
            .ns("director")
            .exec_ok(&[
                "ip",
                "neigh",
                "replace",
                &Ipv4Addr::from(addr).to_string(),
                "lladdr",
                &m.join(":"),
                "dev",
                dev,
                "nud",
                "permanent",
            ])
            .expect("static neighbour");
    }

    pub fn enter(&self) -> InNetns {
        InNetns::enter(&self.lab.ns("director").path())
    }

    pub fn service(&mut self, proto: Protocol, port: u16) -> ServiceAddr {
        let spec = ServiceSpec::new(proto, ip(VIP), port);
        self.h.control().add_service(&spec).unwrap();
        spec.addr
    }

    /// A service on the VIP with real 1 behind it (weight 1) on `real_port`: the setup
    /// of most single-flow fixtures.
    pub fn service_with_real1(
        &mut self,
        proto: Protocol,
        port: u16,
        method: Method,
        real_port: u16,
    ) -> ServiceAddr {
        let svc = self.service(proto, port);
        self.real(&svc, 1, real_port, method, 1);
        svc
    }

    pub fn real(&mut self, svc: &ServiceAddr, n: u8, port: u16, method: Method, weight: u32) {
        self.h
            .control()
            .add_real(svc, &RealSpec::new(ip(real_ip(n)), port, method, weight))
            .unwrap();
    }

    pub fn real_stats(&self, svc: &ServiceAddr, n: u8) -> director_common::stats::Counters {
        let v = self.h.dp.control.service(svc).unwrap();
        v.reals
            .iter()
            .find(|r| r.spec.addr == ip(real_ip(n)))
            .map(|r| r.stats)
            .expect("real present")
    }
}
