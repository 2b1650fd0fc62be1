//! Fixtures for ICMP: the "fragmentation needed" the director answers packets with when
//! they do not fit the path to their real, and ICMP errors routed to the owner of the
//! flow they quote. Expected frames are built with etherparse (checksums included),
//! never by the code under test.

use director_common::real::Method;
use director_control::{Protocol, RealSpec, ServiceSpec};
use director_tests::fixture::{
    ACK, Action, CLIENT, CLIENT_MAC, DIRECTOR_MAC, DIRECTOR_MAC_OUT, DIRECTOR_OUT, FibLab, SYN,
    VIP, after_one_hop, ip, ipip, real_ip, real_mac, tcp4, udp4, with_macs,
};
use etherparse::{
    EtherType, Ethernet2Header, Icmpv4Header, Icmpv4Type, IpDscp, IpNumber, Ipv4Header,
    PacketBuilder, icmpv4::DestUnreachableHeader,
};

/// A router on the client's side of the director.
const ROUTER: [u8; 4] = [10, 0, 0, 254];
/// What the director quotes of an offending packet.
const QUOTE: usize = 68;

fn service(f: &mut FibLab, proto: Protocol, port: u16, method: Method, real_port: u16) {
    let spec = ServiceSpec::new(proto, ip(VIP), port);
    f.h.control().add_service(&spec).unwrap();
    f.h.control()
        .add_real(
            &spec.addr,
            &RealSpec::new(ip(real_ip(1)), real_port, method, 1),
        )
        .unwrap();
}

fn set_mtu(f: &FibLab, dev: &str, mtu: u32) {
    f.lab
        .ns("director")
        .exec_ok(&["ip", "link", "set", dev, "mtu", &mtu.to_string()])
        .unwrap();
}

/// A full-size TCP segment (1500 bytes of IP) of the fixtures' flow, DF set.
fn full_segment() -> Vec<u8> {
    tcp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, 40000),
        (VIP, 80),
        ACK,
        &[0x5a; 1460],
    )
}

/// The frame with DF cleared (IP checksum recomputed by etherparse).
fn without_df(frame: &[u8]) -> Vec<u8> {
    let (mut h, rest) = Ipv4Header::from_slice(&frame[14..]).unwrap();
    h.dont_fragment = false;
    h.header_checksum = h.calc_header_checksum();
    let mut out = frame[..14].to_vec();
    h.write(&mut out).unwrap();
    out.extend_from_slice(rest);
    out
}

/// An Ethernet frame carrying an ICMP message (`payload` follows its header).
fn icmp_frame(
    macs: ([u8; 6], [u8; 6]),
    mut ip_header: Ipv4Header,
    icmp_type: Icmpv4Type,
    payload: &[u8],
) -> Vec<u8> {
    let icmp = Icmpv4Header::with_checksum(icmp_type, payload);
    ip_header.total_len = (20 + icmp.header_len() + payload.len()) as u16;
    ip_header.header_checksum = ip_header.calc_header_checksum();
    let mut out = Vec::new();
    Ethernet2Header {
        destination: macs.0,
        source: macs.1,
        ether_type: EtherType::IPV4,
    }
    .write(&mut out)
    .unwrap();
    ip_header.write(&mut out).unwrap();
    icmp.write(&mut out).unwrap();
    out.extend_from_slice(payload);
    out
}

fn frag_needed_type(mtu: u16) -> Icmpv4Type {
    Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
        next_hop_mtu: mtu,
    })
}

/// What the director must send back for `offending`: ICMP "fragmentation needed" with
/// `mtu`, from the address the packet was sent to, to its sender, back out to the MAC
/// it came from, quoting its first 68 bytes.
fn frag_needed_answer(offending: &[u8], mtu: u16) -> Vec<u8> {
    let (orig, _) = Ipv4Header::from_slice(&offending[14..]).unwrap();
    let mut h = Ipv4Header::new(0, 64, IpNumber::ICMP, orig.destination, orig.source).unwrap();
    h.dont_fragment = false;
    h.dscp = IpDscp::try_new(0xc0 >> 2).unwrap();
    let src_mac: [u8; 6] = offending[6..12].try_into().unwrap();
    let dst_mac: [u8; 6] = offending[..6].try_into().unwrap();
    icmp_frame(
        (src_mac, dst_mac),
        h,
        frag_needed_type(mtu),
        &offending[14..14 + QUOTE],
    )
}

#[test]
fn dr_answers_a_df_packet_over_the_egress_mtu_with_fragmentation_needed() {
    let mut f = FibLab::new();
    let _in = f.enter();
    service(&mut f, Protocol::Tcp, 80, Method::Route, 80);
    set_mtu(&f, "eth1", 1400);
    let big = full_segment();
    f.h.check(
        "DR: a 1500-byte DF segment towards a 1400-byte link is answered from the VIP",
        &big,
        Action::Tx,
        &frag_needed_answer(&big, 1400),
    );
    assert_eq!(f.h.stat("icmp_too_big"), 1);
    assert_eq!(f.h.stat("drop_fib"), 0);
    // Without DF nothing can be done in XDP: dropped and counted, never an ICMP.
    let nodf = without_df(&big);
    let out = f.h.run(&nodf);
    assert_eq!(out.action, Action::Drop);
    assert_eq!(f.h.stat("drop_too_big"), 1);
    // A packet that fits still goes through.
    let small = tcp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, 40000),
        (VIP, 80),
        ACK,
        b"x",
    );
    f.h.check(
        "DR: a small packet of the same flow is forwarded",
        &small,
        Action::Redirect,
        &with_macs(&small, real_mac(1), DIRECTOR_MAC_OUT),
    );
}

#[test]
fn ipip_tells_the_client_the_mtu_less_the_tunnel_header() {
    let mut f = FibLab::new();
    let _in = f.enter();
    service(&mut f, Protocol::Tcp, 80, Method::Tunnel, 80);
    // 1500-byte links everywhere: a full-size segment no longer fits once encapsulated.
    let big = full_segment();
    f.h.check(
        "IPIP: a 1500-byte DF segment is answered with MTU 1480",
        &big,
        Action::Tx,
        &frag_needed_answer(&big, 1480),
    );
    // The second time the next hop comes from the cache: the same answer.
    f.h.check(
        "IPIP: the same from the cached next hop",
        &big,
        Action::Tx,
        &frag_needed_answer(&big, 1480),
    );
    assert_eq!(f.h.stat("icmp_too_big"), 2);
    // A segment that fits the tunnel is encapsulated.
    let fits = tcp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, 40000),
        (VIP, 80),
        ACK,
        &[0x5a; 1440],
    );
    let out = f.h.run(&fits);
    assert_eq!(out.action, Action::Redirect);
    assert_eq!(out.frame.len(), fits.len() + 20);
}

#[test]
fn nat_answers_df_and_lets_the_kernel_fragment_the_rest() {
    let mut f = FibLab::new();
    let _in = f.enter();
    service(&mut f, Protocol::Tcp, 80, Method::Masq, 8080);
    set_mtu(&f, "eth1", 1400);
    let big = full_segment();
    // The quote is of the packet as the client sent it (to the VIP), not rewritten.
    f.h.check(
        "NAT: a DF packet over the MTU is answered, quoting the client's own header",
        &big,
        Action::Tx,
        &frag_needed_answer(&big, 1400),
    );
    let out = f.h.run(&without_df(&big));
    assert_eq!(
        out.action,
        Action::Pass,
        "NAT without DF: the kernel fragments"
    );
    let (h, _) = Ipv4Header::from_slice(&out.frame[14..]).unwrap();
    assert_eq!(
        h.destination,
        real_ip(1),
        "passed already rewritten to the real"
    );
    assert_eq!(f.h.stat("pass_too_big"), 1);
}

#[test]
fn fragmentation_needed_answers_are_rate_limited_per_cpu() {
    let mut f = FibLab::new();
    let _in = f.enter();
    service(&mut f, Protocol::Tcp, 80, Method::Tunnel, 80);
    let big = full_segment();
    const N: u64 = 400;
    for _ in 0..N {
        let out = f.h.run(&big);
        assert!(matches!(out.action, Action::Tx | Action::Drop));
    }
    let (sent, limited) = (f.h.stat("icmp_too_big"), f.h.stat("icmp_too_big_limited"));
    assert_eq!(sent + limited, N);
    // The burst is 50; a test run takes microseconds, so far fewer than N can have
    // been earned back (one per millisecond) while the loop ran.
    assert!(sent >= 50, "at least the burst is answered: {sent}");
    assert!(
        limited > 0,
        "the rest is limited: sent {sent}, limited {limited}"
    );
}

/// A router's ICMP "fragmentation needed" (MTU 1300) about the reply VIP:80 -> CLIENT:40000.
fn router_frag_needed(proto: IpNumber) -> Vec<u8> {
    // The reply as the real sent it: from the VIP, to the client.
    let mut quoted = Vec::new();
    if proto == IpNumber::TCP {
        PacketBuilder::ipv4(VIP, CLIENT, 63)
            .tcp(80, 40000, 7777, 64240)
            .ack(1)
            .write(&mut quoted, &[0x42; 1400])
            .unwrap();
    } else {
        PacketBuilder::ipv4(VIP, CLIENT, 63)
            .udp(53, 40000)
            .write(&mut quoted, &[0x42; 1400])
            .unwrap();
    }
    let h = Ipv4Header::new(0, 64, IpNumber::ICMP, ROUTER, VIP).unwrap();
    icmp_frame(
        (DIRECTOR_MAC, CLIENT_MAC),
        h,
        frag_needed_type(1300),
        &quoted[..20 + 8],
    )
}

fn open_flow(f: &FibLab) {
    let syn = tcp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, 40000),
        (VIP, 80),
        SYN,
        b"",
    );
    assert_eq!(f.h.run(&syn).action, Action::Redirect);
}

#[test]
fn an_icmp_error_about_a_dr_flow_goes_to_its_real() {
    let mut f = FibLab::new();
    let _in = f.enter();
    service(&mut f, Protocol::Tcp, 80, Method::Route, 80);
    let icmp = router_frag_needed(IpNumber::TCP);
    // No flow yet: the kernel's.
    f.h.check("DR: no flow, no forwarding", &icmp, Action::Pass, &icmp);
    open_flow(&f);
    f.h.check(
        "DR: the error reaches the flow's real, unchanged but for the MACs",
        &icmp,
        Action::Redirect,
        &with_macs(&icmp, real_mac(1), DIRECTOR_MAC_OUT),
    );
    assert_eq!(f.h.stat("icmp_to_real"), 1);
}

#[test]
fn an_icmp_error_about_a_tunnel_flow_goes_to_its_real_encapsulated() {
    let mut f = FibLab::new();
    let _in = f.enter();
    service(&mut f, Protocol::Tcp, 80, Method::Tunnel, 80);
    open_flow(&f);
    let icmp = router_frag_needed(IpNumber::TCP);
    f.h.check(
        "TUN: the error reaches the flow's real inside an outer header",
        &icmp,
        Action::Redirect,
        &ipip(
            &icmp,
            real_mac(1),
            DIRECTOR_MAC_OUT,
            DIRECTOR_OUT,
            real_ip(1),
        ),
    );
}

#[test]
fn an_icmp_error_about_a_nat_flow_reaches_the_real_with_its_address() {
    let mut f = FibLab::new();
    let _in = f.enter();
    service(&mut f, Protocol::Tcp, 80, Method::Masq, 8080);
    open_flow(&f);
    let icmp = router_frag_needed(IpNumber::TCP);
    // What the real must get: to its own address, quoting its own reply
    // (real:8080 -> client).
    let mut quoted = Vec::new();
    PacketBuilder::ipv4(real_ip(1), CLIENT, 63)
        .tcp(8080, 40000, 7777, 64240)
        .ack(1)
        .write(&mut quoted, &[0x42; 1400])
        .unwrap();
    // The quoted TCP checksum is left as it was (only the first 8 bytes are quoted
    // here, so it is not even in the quote).
    let h = Ipv4Header::new(0, 64, IpNumber::ICMP, ROUTER, real_ip(1)).unwrap();
    let want = icmp_frame(
        (real_mac(1), DIRECTOR_MAC_OUT),
        h,
        frag_needed_type(1300),
        &quoted[..28],
    );
    f.h.check(
        "NAT: outer destination and quoted source become the real's",
        &icmp,
        Action::Redirect,
        &want,
    );
}

#[test]
fn a_nat_real_s_port_unreachable_reaches_the_client_from_the_vip() {
    let mut f = FibLab::new();
    let _in = f.enter();
    service(&mut f, Protocol::Udp, 53, Method::Masq, 5353);
    let q = udp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, 40000),
        (VIP, 53),
        b"query",
    );
    assert_eq!(f.h.run(&q).action, Action::Redirect);
    // The real answers "port unreachable", quoting the query as it got it.
    let mut got = Vec::new();
    PacketBuilder::ipv4(CLIENT, real_ip(1), 63)
        .udp(40000, 5353)
        .write(&mut got, b"query")
        .unwrap();
    let unreach = Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Port);
    let h = Ipv4Header::new(0, 64, IpNumber::ICMP, real_ip(1), CLIENT).unwrap();
    let from_real = icmp_frame(
        (DIRECTOR_MAC_OUT, real_mac(1)),
        h,
        unreach.clone(),
        &got[..28],
    );
    // What the client must get: from the VIP, one hop further, quoting its own query.
    let mut sent = Vec::new();
    PacketBuilder::ipv4(CLIENT, VIP, 63)
        .udp(40000, 53)
        .write(&mut sent, b"query")
        .unwrap();
    // The quoted UDP checksum is the real's copy's, as IPVS leaves it too.
    sent[26..28].copy_from_slice(&got[26..28]);
    let h = Ipv4Header::new(0, 64, IpNumber::ICMP, VIP, CLIENT).unwrap();
    let want = after_one_hop(&icmp_frame(
        (CLIENT_MAC, DIRECTOR_MAC),
        h,
        unreach,
        &sent[..28],
    ));
    f.h.ingress_ifindex = f.eth1;
    f.h.check(
        "NAT: the real's error leaves translated: the real's address never leaks",
        &from_real,
        Action::Redirect,
        &want,
    );
    assert_eq!(f.h.stat("icmp_from_real"), 1);
    // The same error arriving on the client's side is a forgery.
    f.h.ingress_ifindex = f.eth0;
    assert_eq!(f.h.run(&from_real).action, Action::Drop);
    assert_eq!(f.h.stat("drop_spoofed_reply"), 1);
}

#[test]
fn icmp_that_is_not_about_a_flow_stays_with_the_kernel() {
    let mut f = FibLab::new();
    let _in = f.enter();
    service(&mut f, Protocol::Tcp, 80, Method::Route, 80);
    open_flow(&f);
    // An echo request to the VIP.
    let mut ping = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
        .ipv4(CLIENT, VIP, 64)
        .icmpv4_echo_request(1, 1)
        .write(&mut ping, b"ping")
        .unwrap();
    f.h.check("an echo request to the VIP", &ping, Action::Pass, &ping);
    // An error about a flow the director does not have (another client port).
    let mut quoted = Vec::new();
    PacketBuilder::ipv4(VIP, CLIENT, 63)
        .tcp(80, 40001, 1, 64240)
        .write(&mut quoted, b"")
        .unwrap();
    let h = Ipv4Header::new(0, 64, IpNumber::ICMP, ROUTER, VIP).unwrap();
    let stray = icmp_frame(
        (DIRECTOR_MAC, CLIENT_MAC),
        h,
        frag_needed_type(1300),
        &quoted[..28],
    );
    f.h.check(
        "an error about no flow of ours",
        &stray,
        Action::Pass,
        &stray,
    );
    assert_eq!(f.h.stat("icmp_to_real"), 0);
}
