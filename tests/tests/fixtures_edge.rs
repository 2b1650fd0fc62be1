//! Fixtures for the edges of forwarding: VLAN tags, IPv4 options, unresolved and
//! unroutable next hops, and the real-server decapsulation program.

use director_common::real::Method;
use director_control::{Protocol, RealSpec, ServiceSpec};
use director_tests::fixture::{
    ACK, Action, CLIENT, CLIENT_MAC, DIRECTOR_MAC, DIRECTOR_MAC_OUT, DIRECTOR_OUT, FibLab, Harness,
    SYN, VIP, ip, real_ip, real_mac, tcp4, udp4, with_macs,
};
use etherparse::{
    EtherType, Ethernet2Header, IpFragOffset, IpNumber, Ipv4Header, Ipv4Options, PacketBuilder,
    SingleVlanHeader, VlanId,
};
use std::net::Ipv4Addr;

fn service(f: &mut FibLab, method: Method, real: [u8; 4]) {
    let spec = ServiceSpec::new(Protocol::Tcp, ip(VIP), 80);
    f.h.control().add_service(&spec).unwrap();
    f.h.control()
        .add_real(&spec.addr, &RealSpec::new(ip(real), 80, method, 1))
        .unwrap();
}

/// A TCP SYN with an 802.1Q tag (VLAN 42) after the MACs.
fn tagged_syn(dst_mac: [u8; 6], src_mac: [u8; 6]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src_mac, dst_mac)
        .single_vlan(VlanId::try_new(42).unwrap())
        .ipv4(CLIENT, VIP, 64)
        .tcp(40000, 80, 1000, 64240)
        .syn();
    let mut out = Vec::new();
    b.write(&mut out, b"").unwrap();
    out
}

#[test]
fn dr_keeps_a_vlan_tag() {
    let mut f = FibLab::new();
    let _in = f.enter();
    service(&mut f, Method::Route, real_ip(1));
    f.h.control().set_vlans(&[42]).unwrap();
    let syn = tagged_syn(DIRECTOR_MAC, CLIENT_MAC);
    let want = tagged_syn(real_mac(1), DIRECTOR_MAC_OUT);
    f.h.check(
        "DR: a tagged frame keeps its tag",
        &syn,
        Action::Redirect,
        &want,
    );
}

#[test]
fn ipip_keeps_a_vlan_tag_in_front_of_the_outer_header() {
    let mut f = FibLab::new();
    let _in = f.enter();
    service(&mut f, Method::Tunnel, real_ip(1));
    f.h.control().set_vlans(&[42]).unwrap();
    let syn = tagged_syn(DIRECTOR_MAC, CLIENT_MAC);
    let inner = &syn[18..];
    let mut outer = Ipv4Header::new(
        inner.len() as u16,
        64,
        IpNumber::IPV4,
        DIRECTOR_OUT,
        real_ip(1),
    )
    .unwrap();
    outer.identification = 0;
    outer.dont_fragment = Ipv4Header::from_slice(inner).unwrap().0.dont_fragment;
    outer.header_checksum = outer.calc_header_checksum();
    let mut want = Vec::new();
    Ethernet2Header {
        destination: real_mac(1),
        source: DIRECTOR_MAC_OUT,
        ether_type: EtherType::VLAN_TAGGED_FRAME,
    }
    .write(&mut want)
    .unwrap();
    SingleVlanHeader {
        vlan_id: VlanId::try_new(42).unwrap(),
        ether_type: EtherType::IPV4,
        ..Default::default()
    }
    .write(&mut want)
    .unwrap();
    outer.write(&mut want).unwrap();
    want.extend_from_slice(inner);
    f.h.check(
        "IPIP: VLAN tag, then outer header, then the client's packet",
        &syn,
        Action::Redirect,
        &want,
    );
}

/// A TCP segment whose IPv4 header carries 4 bytes of options (NOP NOP NOP EOL).
fn with_options(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: ([u8; 4], u16),
    dst: ([u8; 4], u16),
) -> Vec<u8> {
    let mut ipv4 = Ipv4Header::new(0, 64, IpNumber::TCP, src.0, dst.0).unwrap();
    ipv4.options = Ipv4Options::try_from(&[1u8, 1, 1, 0][..]).unwrap();
    let b = PacketBuilder::ethernet2(src_mac, dst_mac)
        .ip(etherparse::IpHeaders::Ipv4(ipv4, Default::default()))
        .tcp(src.1, dst.1, 1000, 64240)
        .ack(1);
    let mut out = Vec::new();
    b.write(&mut out, b"data").unwrap();
    out
}

#[test]
fn ipv4_options_are_kept_forwarded_and_counted() {
    let mut f = FibLab::new();
    let _in = f.enter();
    let spec = ServiceSpec::new(Protocol::Tcp, ip(VIP), 80);
    f.h.control().add_service(&spec).unwrap();
    f.h.control()
        .add_real(
            &spec.addr,
            &RealSpec::new(ip(real_ip(2)), 8080, Method::Masq, 1),
        )
        .unwrap();
    let input = with_options(CLIENT_MAC, DIRECTOR_MAC, (CLIENT, 40000), (VIP, 80));
    let want = with_options(
        DIRECTOR_MAC_OUT,
        real_mac(2),
        (CLIENT, 40000),
        (real_ip(2), 8080),
    );
    f.h.check(
        "NAT: a header with options is rewritten past the options",
        &input,
        Action::Redirect,
        &want,
    );
    assert_eq!(f.h.stat("ip_options"), 1);
}

#[test]
fn unresolved_next_hop_drops_dr_and_passes_nat() {
    let mut f = FibLab::new();
    let _in = f.enter();
    // 10.1.0.50 is on the real segment but has no neighbour entry.
    let unresolved = [10, 1, 0, 50];
    service(&mut f, Method::Route, unresolved);
    let syn = tcp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, 40000),
        (VIP, 80),
        SYN,
        b"",
    );
    f.h.check(
        "DR to an unresolved real is dropped, not delivered locally",
        &syn,
        Action::Drop,
        &syn,
    );
    assert_eq!(f.h.stat("drop_no_neigh"), 1);

    let nat = ServiceSpec::new(Protocol::Udp, ip(VIP), 53);
    f.h.control().add_service(&nat).unwrap();
    f.h.control()
        .add_real(
            &nat.addr,
            &RealSpec::new(ip(unresolved), 53, Method::Masq, 1),
        )
        .unwrap();
    let q = udp4(CLIENT_MAC, DIRECTOR_MAC, (CLIENT, 5353), (VIP, 53), b"q");
    let rewritten = udp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, 5353),
        (unresolved, 53),
        b"q",
    );
    f.h.check(
        "NAT to an unresolved real goes to the kernel already rewritten",
        &q,
        Action::Pass,
        &rewritten,
    );
    assert_eq!(f.h.stat("pass_no_neigh"), 1);
}

#[test]
fn unroutable_real_is_dropped_and_counted() {
    let mut f = FibLab::new();
    let _in = f.enter();
    service(&mut f, Method::Route, [192, 0, 2, 7]);
    let syn = tcp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, 40000),
        (VIP, 80),
        SYN,
        b"",
    );
    f.h.check(
        "DR to a real without a route is dropped",
        &syn,
        Action::Drop,
        &syn,
    );
    assert_eq!(f.h.stat("drop_fib"), 1);
}

/// A decap harness that accepts IPIP from the fixtures' director (`DIRECTOR_OUT`) to
/// real 1.
fn decap_harness() -> Harness {
    let mut h = Harness::new();
    h.dp.allow_decap(
        &[Ipv4Addr::from(DIRECTOR_OUT)],
        &[Ipv4Addr::from(real_ip(1))],
    )
    .unwrap();
    h
}

/// The client's packet as the director tunnels it to real 1, with the outer header
/// changed by `edit` (checksum recomputed).
fn tunnelled(edit: impl FnOnce(&mut Ipv4Header)) -> (Vec<u8>, Vec<u8>) {
    let inner = tcp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, 40000),
        (VIP, 80),
        ACK,
        b"hello",
    );
    let mut outer = Ipv4Header::new(
        (inner.len() - 14) as u16,
        64,
        IpNumber::IPV4,
        DIRECTOR_OUT,
        real_ip(1),
    )
    .unwrap();
    edit(&mut outer);
    outer.header_checksum = outer.calc_header_checksum();
    let mut encapsulated = Vec::new();
    Ethernet2Header {
        destination: real_mac(1),
        source: DIRECTOR_MAC_OUT,
        ether_type: EtherType::IPV4,
    }
    .write(&mut encapsulated)
    .unwrap();
    outer.write(&mut encapsulated).unwrap();
    encapsulated.extend_from_slice(&inner[14..]);
    (inner, encapsulated)
}

#[test]
fn decap_strips_the_outer_header_and_passes_the_inner_packet() {
    let h = decap_harness();
    let (inner, encapsulated) = tunnelled(|_| {});
    let out = h.run_program("decap", &encapsulated);
    assert_eq!(out.action, Action::Pass, "decap passes the inner packet up");
    let want = with_macs(&inner, real_mac(1), DIRECTOR_MAC_OUT);
    assert_eq!(out.frame, want, "the outer MACs, then the inner packet");
    assert_eq!(h.stat("decap"), 1);

    // Ethernet padding after a short IPIP packet is no reason to refuse it.
    let (_, mut padded) = tunnelled(|_| {});
    padded.extend_from_slice(&[0; 8]);
    assert_eq!(h.run_program("decap", &padded).action, Action::Pass);
    assert_eq!(h.stat("decap"), 2);

    let plain = tcp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, 40000),
        (VIP, 80),
        ACK,
        b"hello",
    );
    let out = h.run_program("decap", &plain);
    assert_eq!(
        (out.action, out.frame),
        (Action::Pass, plain),
        "non-IPIP is passed untouched"
    );
    assert_eq!(h.stat("decap"), 2);
}

/// Each kind of IPIP the director never sends is refused with its own counter and
/// never unwrapped: the frame leaves the program as it came (dropped, or for another
/// host's address passed to the kernel untouched).
#[test]
fn decap_refuses_ipip_a_director_did_not_send() {
    let h = decap_harness();
    type Edit = Box<dyn FnOnce(&mut Ipv4Header)>;
    let cases: Vec<(&str, Edit, Action, &str)> = vec![
        (
            "an outer source that is no director",
            Box::new(|o| o.source = [10, 1, 0, 99]),
            Action::Drop,
            "decap_not_director",
        ),
        (
            "the real's own address as outer source",
            Box::new(|o| o.source = real_ip(1)),
            Action::Drop,
            "decap_not_director",
        ),
        (
            "an outer destination elsewhere",
            Box::new(|o| o.destination = [8, 8, 8, 8]),
            Action::Pass,
            "decap_not_local",
        ),
        (
            "a broadcast outer destination",
            Box::new(|o| o.destination = [255, 255, 255, 255]),
            Action::Pass,
            "decap_not_local",
        ),
        (
            "a first outer fragment",
            Box::new(|o| o.more_fragments = true),
            Action::Drop,
            "decap_fragment",
        ),
        (
            "a later outer fragment",
            Box::new(|o| o.fragment_offset = IpFragOffset::try_new(185).unwrap()),
            Action::Drop,
            "decap_fragment",
        ),
        (
            "an outer length beyond the frame",
            Box::new(|o| o.total_len += 40),
            Action::Drop,
            "decap_malformed",
        ),
        (
            "an outer length short of the inner packet",
            Box::new(|o| o.total_len -= 5),
            Action::Drop,
            "decap_malformed",
        ),
        (
            "outer TTL 0",
            Box::new(|o| o.time_to_live = 0),
            Action::Drop,
            "decap_ttl",
        ),
    ];
    let mut expected: std::collections::BTreeMap<&str, u64> = Default::default();
    for (what, edit, action, counter) in cases {
        let (_, frame) = tunnelled(edit);
        let out = h.run_program("decap", &frame);
        assert_eq!(out.action, action, "{what}: verdict");
        assert_eq!(out.frame, frame, "{what}: not unwrapped");
        *expected.entry(counter).or_default() += 1;
        assert_eq!(
            h.stat(counter),
            expected[counter],
            "{what}: counted as {counter}"
        );
    }
    assert_eq!(h.stat("decap"), 0, "nothing was unwrapped");

    // An inner header whose length disagrees with the outer one (the outer length
    // taken from a lying inner header).
    let (_, mut lying) = tunnelled(|_| {});
    let inner_len_at = 14 + 20 + 2;
    let len = u16::from_be_bytes([lying[inner_len_at], lying[inner_len_at + 1]]);
    lying[inner_len_at..inner_len_at + 2].copy_from_slice(&(len + 100).to_be_bytes());
    assert_eq!(h.run_program("decap", &lying).action, Action::Drop);
    assert_eq!(h.stat("decap_malformed"), 3);
    assert_eq!(h.stat("decap"), 0);
}

/// Without a configured director, nothing is unwrapped: the program refuses by default.
#[test]
fn decap_with_no_directors_configured_unwraps_nothing() {
    let h = Harness::new();
    let (_, frame) = tunnelled(|_| {});
    let out = h.run_program("decap", &frame);
    assert_eq!(out.action, Action::Pass);
    assert_eq!(out.frame, frame);
    assert_eq!(h.stat("decap_not_local"), 1);
    assert_eq!(h.stat("decap"), 0);
}

#[test]
fn a_new_neighbour_mac_is_used_once_the_real_is_changed() {
    let mut f = FibLab::new();
    let _in = f.enter();
    service(&mut f, Method::Route, real_ip(1));
    let syn = tcp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, 40000),
        (VIP, 80),
        SYN,
        b"",
    );
    let want_old = with_macs(&syn, real_mac(1), DIRECTOR_MAC_OUT);
    f.h.check("DR before the change", &syn, Action::Redirect, &want_old);
    // The real moves to another MAC (e.g. a NIC swap); the operator or the daemon
    // touches the real (any edit clears its cached next hop).
    let new_mac = [0x02, 0, 0, 0, 9, 9];
    f.set_neighbour(real_ip(1), new_mac, "eth1");
    let svc = director_control::ServiceAddr {
        proto: Protocol::Tcp,
        addr: ip(VIP),
        port: 80,
    };
    f.h.control()
        .edit_real(&svc, &RealSpec::new(ip(real_ip(1)), 80, Method::Route, 1))
        .unwrap();
    let mut want_new = want_old.clone();
    want_new[..6].copy_from_slice(&new_mac);
    f.h.check(
        "DR after the change uses the new MAC",
        &syn,
        Action::Redirect,
        &want_new,
    );
}
