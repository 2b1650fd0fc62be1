//! Fixtures for the GUE and GRE tunnels: the exact frame each encapsulation sends (outer
//! headers and checksums built by etherparse and an independent RFC 1071 sum, never by
//! the code under test), for new and established flows, and the MTU a too-big packet's
//! sender is told for each; the decap program unwrapping them on a real, and refusing
//! what a director never sends.

use director_common::{
    addr::v4_to_16,
    hash::hash_flow,
    real::{Method, TunType},
};
use director_control::{
    Protocol, RealSpec, ServiceAddr, ServiceSpec,
    model::{TunCsum, Tunnel},
};
use std::net::Ipv4Addr;

use director_tests::fixture::{
    ACK, Action, CLIENT, CLIENT_MAC, DIRECTOR_MAC, DIRECTOR_MAC_OUT, DIRECTOR_OUT, FibLab, Harness,
    SYN, VIP, fragment, gre, gue, ip, real_ip, real_mac, tcp4, udp4,
};
use etherparse::{
    EtherType, Ethernet2Header, Icmpv4Header, Icmpv4Type, IpDscp, IpNumber, Ipv4Header,
    icmpv4::DestUnreachableHeader,
};

const GUE_PORT: u16 = 6080;

fn tunnel_service(
    f: &mut FibLab,
    proto: Protocol,
    port: u16,
    n: u8,
    tunnel: Tunnel,
) -> ServiceAddr {
    let spec = ServiceSpec::new(proto, ip(VIP), port);
    f.h.control().add_service(&spec).unwrap();
    f.h.control()
        .add_real(
            &spec.addr,
            &RealSpec::new(ip(real_ip(n)), port, Method::Tunnel, 1).with_tunnel(tunnel),
        )
        .unwrap();
    spec.addr
}

fn gue_tunnel(csum: TunCsum) -> Tunnel {
    Tunnel {
        kind: TunType::Gue,
        port: GUE_PORT,
        csum,
    }
}

fn gre_tunnel(csum: TunCsum) -> Tunnel {
    Tunnel {
        kind: TunType::Gre,
        port: 0,
        csum,
    }
}

/// The GUE source port of a client flow: from the flow's hash, in the dynamic range.
fn gue_sport(src: ([u8; 4], u16), dport: u16, proto: u8) -> u16 {
    0xc000 | (hash_flow(&v4_to_16(src.0), src.1.to_be(), dport.to_be(), proto) & 0x3fff) as u16
}

fn syn(sport: u16) -> Vec<u8> {
    tcp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, sport),
        (VIP, 80),
        SYN,
        b"",
    )
}

fn ack(sport: u16, payload: &[u8]) -> Vec<u8> {
    tcp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, sport),
        (VIP, 80),
        ACK,
        payload,
    )
}

#[test]
fn gue_wraps_tcp_and_udp_in_udp_to_the_tunnel_port() {
    let mut f = FibLab::new();
    let _in = f.enter();
    tunnel_service(&mut f, Protocol::Tcp, 80, 1, gue_tunnel(TunCsum::NoCsum));
    let expect = |frame: &[u8], sport: u16| {
        gue(
            frame,
            real_mac(1),
            DIRECTOR_MAC_OUT,
            DIRECTOR_OUT,
            real_ip(1),
            gue_sport((CLIENT, sport), 80, 6),
            GUE_PORT,
            false,
        )
    };
    let s = syn(40000);
    f.h.check(
        "GUE: a new TCP flow",
        &s,
        Action::Redirect,
        &expect(&s, 40000),
    );
    let a = ack(40000, b"payload");
    f.h.check(
        "GUE: the established flow (through the forwarding program)",
        &a,
        Action::Redirect,
        &expect(&a, 40000),
    );
    // Flows differ in their outer source port (entropy for the real's receive queues).
    let ports: std::collections::BTreeSet<u16> = (40001..40009)
        .map(|sport| {
            let out = f.h.run(&syn(sport));
            assert_eq!(out.action, Action::Redirect);
            assert_eq!(out.frame, expect(&syn(sport), sport));
            u16::from_be_bytes([out.frame[34], out.frame[35]])
        })
        .collect();
    assert!(
        ports.len() > 1,
        "eight flows, one outer source port: {ports:?}"
    );
    assert!(ports.iter().all(|p| *p >= 49152));

    tunnel_service(&mut f, Protocol::Udp, 53, 2, gue_tunnel(TunCsum::RemCsum));
    let dns = udp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, 5353),
        (VIP, 53),
        b"query",
    );
    let want = gue(
        &dns,
        real_mac(2),
        DIRECTOR_MAC_OUT,
        DIRECTOR_OUT,
        real_ip(2),
        gue_sport((CLIENT, 5353), 53, 17),
        GUE_PORT,
        false,
    );
    f.h.check(
        "GUE with remote checksum offload: a forwarded packet has no checksum to offload",
        &dns,
        Action::Redirect,
        &want,
    );
    f.h.check(
        "GUE: the established UDP flow",
        &dns,
        Action::Redirect,
        &want,
    );
    assert_eq!(f.h.stat("redirect"), 12);
}

#[test]
fn gue_with_csum_carries_a_valid_udp_checksum() {
    let mut f = FibLab::new();
    let _in = f.enter();
    tunnel_service(&mut f, Protocol::Tcp, 80, 1, gue_tunnel(TunCsum::Csum));
    for (intent, frame) in [
        ("GUE csum: a SYN", syn(40000)),
        (
            "GUE csum: a segment with an odd payload",
            ack(40000, b"odd payload"),
        ),
        ("GUE csum: a full segment", ack(40000, &[0xa5; 1400])),
    ] {
        let want = gue(
            &frame,
            real_mac(1),
            DIRECTOR_MAC_OUT,
            DIRECTOR_OUT,
            real_ip(1),
            gue_sport((CLIENT, 40000), 80, 6),
            GUE_PORT,
            true,
        );
        f.h.check(intent, &frame, Action::Redirect, &want);
    }
    tunnel_service(&mut f, Protocol::Udp, 53, 2, gue_tunnel(TunCsum::Csum));
    let dns = udp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, 5353),
        (VIP, 53),
        b"query",
    );
    let sport = gue_sport((CLIENT, 5353), 53, 17);
    f.h.check(
        "GUE csum: UDP",
        &dns,
        Action::Redirect,
        &gue(
            &dns,
            real_mac(2),
            DIRECTOR_MAC_OUT,
            DIRECTOR_OUT,
            real_ip(2),
            sport,
            GUE_PORT,
            true,
        ),
    );
    // A datagram without a UDP checksum gives no sum of the inner packet: the outer UDP
    // checksum is 0 ("none", which IPv4 allows).
    let mut bare = udp4(CLIENT_MAC, DIRECTOR_MAC, (CLIENT, 5353), (VIP, 53), b"bare");
    bare[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&[0, 0]);
    f.h.check(
        "GUE csum: inner UDP without checksum",
        &bare,
        Action::Redirect,
        &gue(
            &bare,
            real_mac(2),
            DIRECTOR_MAC_OUT,
            DIRECTOR_OUT,
            real_ip(2),
            sport,
            GUE_PORT,
            false,
        ),
    );
}

#[test]
fn gre_wraps_packets_with_and_without_checksum() {
    let mut f = FibLab::new();
    let _in = f.enter();
    tunnel_service(&mut f, Protocol::Tcp, 80, 1, gre_tunnel(TunCsum::NoCsum));
    let expect = |frame: &[u8]| {
        gre(
            frame,
            real_mac(1),
            DIRECTOR_MAC_OUT,
            DIRECTOR_OUT,
            real_ip(1),
            false,
        )
    };
    let s = syn(40000);
    f.h.check("GRE: a new TCP flow", &s, Action::Redirect, &expect(&s));
    let a = ack(40000, b"payload");
    f.h.check(
        "GRE: the established flow",
        &a,
        Action::Redirect,
        &expect(&a),
    );

    tunnel_service(&mut f, Protocol::Udp, 53, 2, gre_tunnel(TunCsum::Csum));
    let csum = |frame: &[u8], with: bool| {
        gre(
            frame,
            real_mac(2),
            DIRECTOR_MAC_OUT,
            DIRECTOR_OUT,
            real_ip(2),
            with,
        )
    };
    let dns = udp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, 5353),
        (VIP, 53),
        b"query!",
    );
    f.h.check(
        "GRE csum: a new UDP flow",
        &dns,
        Action::Redirect,
        &csum(&dns, true),
    );
    f.h.check(
        "GRE csum: the established UDP flow",
        &dns,
        Action::Redirect,
        &csum(&dns, true),
    );
    let odd = udp4(CLIENT_MAC, DIRECTOR_MAC, (CLIENT, 5353), (VIP, 53), b"odd");
    f.h.check(
        "GRE csum: an odd-sized payload",
        &odd,
        Action::Redirect,
        &csum(&odd, true),
    );
    // Without a UDP checksum inside, no GRE checksum field.
    let mut bare = udp4(CLIENT_MAC, DIRECTOR_MAC, (CLIENT, 5353), (VIP, 53), b"bare");
    bare[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&[0, 0]);
    f.h.check(
        "GRE csum: inner UDP without checksum",
        &bare,
        Action::Redirect,
        &csum(&bare, false),
    );

    tunnel_service(&mut f, Protocol::Tcp, 443, 3, gre_tunnel(TunCsum::Csum));
    let big = tcp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, 40000),
        (VIP, 443),
        ACK,
        &[0x3c; 1200],
    );
    f.h.check(
        "GRE csum: a large TCP segment",
        &big,
        Action::Redirect,
        &gre(
            &big,
            real_mac(3),
            DIRECTOR_MAC_OUT,
            DIRECTOR_OUT,
            real_ip(3),
            true,
        ),
    );
}

/// What the director answers a DF packet that does not fit once wrapped: ICMP
/// "fragmentation needed" with `mtu`, from the VIP, quoting 68 bytes.
fn frag_needed_answer(offending: &[u8], mtu: u16) -> Vec<u8> {
    let (orig, _) = Ipv4Header::from_slice(&offending[14..]).unwrap();
    let mut h = Ipv4Header::new(0, 64, IpNumber::ICMP, orig.destination, orig.source).unwrap();
    h.dont_fragment = false;
    h.dscp = IpDscp::try_new(0xc0 >> 2).unwrap();
    let quote = &offending[14..14 + 68];
    let icmp = Icmpv4Header::with_checksum(
        Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
            next_hop_mtu: mtu,
        }),
        quote,
    );
    h.total_len = (20 + icmp.header_len() + quote.len()) as u16;
    h.header_checksum = h.calc_header_checksum();
    let mut out = Vec::new();
    Ethernet2Header {
        destination: offending[6..12].try_into().unwrap(),
        source: offending[..6].try_into().unwrap(),
        ether_type: EtherType::IPV4,
    }
    .write(&mut out)
    .unwrap();
    h.write(&mut out).unwrap();
    icmp.write(&mut out).unwrap();
    out.extend_from_slice(quote);
    out
}

#[test]
fn each_tunnel_tells_the_client_the_mtu_less_its_own_overhead() {
    for (name, tunnel, mtu) in [
        ("GUE", gue_tunnel(TunCsum::NoCsum), 1500 - 32),
        ("GRE", gre_tunnel(TunCsum::NoCsum), 1500 - 24),
        ("GRE with checksum", gre_tunnel(TunCsum::Csum), 1500 - 28),
    ] {
        let mut f = FibLab::new();
        let _in = f.enter();
        tunnel_service(&mut f, Protocol::Tcp, 80, 1, tunnel);
        // A full-size DF segment on 1500-byte links.
        let big = ack(40000, &[0x5a; 1460]);
        assert!(Ipv4Header::from_slice(&big[14..]).unwrap().0.dont_fragment);
        f.h.check(
            &format!("{name}: a 1500-byte DF segment is answered with MTU {mtu}"),
            &big,
            Action::Tx,
            &frag_needed_answer(&big, mtu),
        );
        assert_eq!(f.h.stat("icmp_too_big"), 1, "{name}");
        // The largest segment that fits is wrapped.
        let fits = ack(40000, &vec![0x5a; mtu as usize - 40]);
        let out = f.h.run(&fits);
        assert_eq!(out.action, Action::Redirect, "{name}");
        assert_eq!(out.frame.len(), 14 + 1500, "{name}");
    }
}

// ---- the decap program ----

/// A decap harness that accepts tunnels from the fixtures' director (`DIRECTOR_OUT`) to
/// real 1, GUE on `gue_port`.
fn decap_harness(gue_port: Option<u16>) -> Harness {
    let mut h = Harness::new();
    h.dp.allow_decap(
        &[Ipv4Addr::from(DIRECTOR_OUT)],
        &[Ipv4Addr::from(real_ip(1))],
    )
    .unwrap();
    h.dp.decap_gue_port(gue_port).unwrap();
    h
}

fn client_packet() -> Vec<u8> {
    tcp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, 40000),
        (VIP, 80),
        ACK,
        b"hello",
    )
}

/// A frame with its outer IPv4 header changed by `edit` (header checksum recomputed).
fn edit_outer(frame: &[u8], edit: impl FnOnce(&mut Ipv4Header)) -> Vec<u8> {
    let (mut h, rest) = Ipv4Header::from_slice(&frame[14..]).unwrap();
    edit(&mut h);
    h.header_checksum = h.calc_header_checksum();
    let mut out = frame[..14].to_vec();
    h.write(&mut out).unwrap();
    out.extend_from_slice(rest);
    out
}

#[test]
fn decap_unwraps_gre_and_gue_from_a_director_and_counts_each() {
    let h = decap_harness(Some(GUE_PORT));
    let inner = client_packet();
    let want = director_tests::fixture::with_macs(&inner, real_mac(1), DIRECTOR_MAC_OUT);
    for (intent, frame, stat) in [
        (
            "GRE",
            gre(
                &inner,
                real_mac(1),
                DIRECTOR_MAC_OUT,
                DIRECTOR_OUT,
                real_ip(1),
                false,
            ),
            "decap_gre",
        ),
        (
            "GRE with checksum",
            gre(
                &inner,
                real_mac(1),
                DIRECTOR_MAC_OUT,
                DIRECTOR_OUT,
                real_ip(1),
                true,
            ),
            "decap_gre",
        ),
        (
            "GUE",
            gue(
                &inner,
                real_mac(1),
                DIRECTOR_MAC_OUT,
                DIRECTOR_OUT,
                real_ip(1),
                50000,
                GUE_PORT,
                false,
            ),
            "decap_gue",
        ),
        (
            "GUE with checksum",
            gue(
                &inner,
                real_mac(1),
                DIRECTOR_MAC_OUT,
                DIRECTOR_OUT,
                real_ip(1),
                50001,
                GUE_PORT,
                true,
            ),
            "decap_gue",
        ),
    ] {
        let before = h.stat(stat);
        let out = h.run_program("decap", &frame);
        assert_eq!(out.action, Action::Pass, "{intent}: passed up");
        assert_eq!(
            out.frame, want,
            "{intent}: the outer MACs, then the inner packet"
        );
        assert_eq!(h.stat(stat), before + 1, "{intent}: counted as {stat}");
    }
    assert_eq!(h.stat("decap"), 0, "no IPIP was seen");
    // UDP to another port is the kernel's, untouched (even from a director).
    let other = gue(
        &inner,
        real_mac(1),
        DIRECTOR_MAC_OUT,
        DIRECTOR_OUT,
        real_ip(1),
        50000,
        4789,
        false,
    );
    let out = h.run_program("decap", &other);
    assert_eq!((out.action, &out.frame), (Action::Pass, &other));
    assert_eq!(h.stat("decap_gue"), 2);
}

#[test]
fn decap_without_a_gue_port_leaves_gue_to_the_kernel() {
    let h = decap_harness(None);
    let frame = gue(
        &client_packet(),
        real_mac(1),
        DIRECTOR_MAC_OUT,
        DIRECTOR_OUT,
        real_ip(1),
        50000,
        GUE_PORT,
        false,
    );
    let out = h.run_program("decap", &frame);
    assert_eq!((out.action, &out.frame), (Action::Pass, &frame));
    assert_eq!(h.stat("decap_gue"), 0);
}

/// GRE and GUE a director never sends are refused like such IPIP, each with its
/// counter, and never unwrapped.
#[test]
fn decap_refuses_gre_and_gue_a_director_did_not_send() {
    let h = decap_harness(Some(GUE_PORT));
    let inner = client_packet();
    let gre_ok = gre(
        &inner,
        real_mac(1),
        DIRECTOR_MAC_OUT,
        DIRECTOR_OUT,
        real_ip(1),
        false,
    );
    let gue_ok = gue(
        &inner,
        real_mac(1),
        DIRECTOR_MAC_OUT,
        DIRECTOR_OUT,
        real_ip(1),
        50000,
        GUE_PORT,
        false,
    );
    let with_byte = |frame: &[u8], at: usize, v: u8| {
        let mut f = frame.to_vec();
        f[at] = v;
        f
    };
    const TUN: usize = 14 + 20;
    let cases: Vec<(&str, Vec<u8>, Action, &str)> = vec![
        (
            "GRE from an outer source that is no director",
            edit_outer(&gre_ok, |o| o.source = [10, 1, 0, 99]),
            Action::Drop,
            "decap_not_director",
        ),
        (
            "GUE from an outer source that is no director",
            edit_outer(&gue_ok, |o| o.source = [10, 1, 0, 99]),
            Action::Drop,
            "decap_not_director",
        ),
        (
            "GRE for another host",
            edit_outer(&gre_ok, |o| o.destination = [10, 1, 0, 50]),
            Action::Pass,
            "decap_not_local",
        ),
        (
            "GUE for another host",
            edit_outer(&gue_ok, |o| o.destination = [10, 1, 0, 50]),
            Action::Pass,
            "decap_not_local",
        ),
        (
            "an outer GRE fragment",
            edit_outer(&gre_ok, |o| o.more_fragments = true),
            Action::Drop,
            "decap_fragment",
        ),
        (
            "an outer GUE fragment",
            edit_outer(&gue_ok, |o| o.more_fragments = true),
            Action::Drop,
            "decap_fragment",
        ),
        (
            "GRE with a key (a flag the director never sets)",
            with_byte(&gre_ok, TUN, 0x20),
            Action::Drop,
            "decap_malformed",
        ),
        (
            "GRE of another protocol (IPv6)",
            with_byte(&with_byte(&gre_ok, TUN + 2, 0x86), TUN + 3, 0xdd),
            Action::Drop,
            "decap_malformed",
        ),
        (
            "GUE of another version",
            with_byte(&gue_ok, TUN + 8, 0x40),
            Action::Drop,
            "decap_malformed",
        ),
        (
            "GUE with another inner protocol",
            with_byte(&gue_ok, TUN + 9, 41),
            Action::Drop,
            "decap_malformed",
        ),
        (
            "GUE whose UDP length disagrees with the outer one",
            with_byte(&gue_ok, TUN + 5, gue_ok[TUN + 5].wrapping_add(4)),
            Action::Drop,
            "decap_malformed",
        ),
        (
            "GRE whose outer length disagrees with the inner one",
            edit_outer(&gre_ok, |o| o.total_len -= 4),
            Action::Drop,
            "decap_malformed",
        ),
        (
            "GUE with outer TTL 0",
            edit_outer(&gue_ok, |o| o.time_to_live = 0),
            Action::Drop,
            "decap_ttl",
        ),
    ];
    for (intent, frame, action, stat) in cases {
        let before = h.stat(stat);
        let out = h.run_program("decap", &frame);
        assert_eq!(out.action, action, "{intent}");
        assert_eq!(out.frame, frame, "{intent}: never unwrapped");
        assert_eq!(h.stat(stat), before + 1, "{intent}: counted as {stat}");
    }
    assert_eq!(h.stat("decap_gre") + h.stat("decap_gue"), 0);
}

/// Tunnel options that make no tunnel are refused by the control library itself, and
/// nothing is written.
#[test]
fn the_control_library_refuses_tunnel_options_that_make_no_tunnel() {
    let mut h = Harness::new();
    let spec = ServiceSpec::new(Protocol::Tcp, ip(VIP), 80);
    h.control().add_service(&spec).unwrap();
    let real = |method, tunnel| RealSpec::new(ip(real_ip(1)), 80, method, 1).with_tunnel(tunnel);
    for (intent, r, message) in [
        (
            "a GUE tunnel on a DR real",
            real(Method::Route, gue_tunnel(TunCsum::NoCsum)),
            "tunnel options conflict with the forwarding method",
        ),
        (
            "GUE without a port",
            real(
                Method::Tunnel,
                Tunnel {
                    kind: TunType::Gue,
                    port: 0,
                    csum: TunCsum::Csum,
                },
            ),
            "a GUE tunnel needs its UDP port",
        ),
        (
            "GRE with a port",
            real(
                Method::Tunnel,
                Tunnel {
                    kind: TunType::Gre,
                    port: 6080,
                    csum: TunCsum::NoCsum,
                },
            ),
            "only a GUE tunnel has a port",
        ),
        (
            "IPIP with a checksum",
            real(
                Method::Tunnel,
                Tunnel {
                    kind: TunType::Ipip,
                    port: 0,
                    csum: TunCsum::Csum,
                },
            ),
            "an IPIP tunnel has no checksum options",
        ),
    ] {
        let e = h
            .control()
            .add_real(&spec.addr, &r)
            .unwrap_err()
            .to_string();
        assert!(e.contains(message), "{intent}: {e}");
        assert!(
            h.control().service(&spec.addr).unwrap().reals.is_empty(),
            "{intent}: nothing written"
        );
    }
    // A valid GUE real reads back as written, and an edit to GRE replaces it.
    let gue_real = real(Method::Tunnel, gue_tunnel(TunCsum::Csum));
    h.control().add_real(&spec.addr, &gue_real).unwrap();
    let view = h.control().service(&spec.addr).unwrap();
    assert_eq!(view.reals[0].spec, gue_real);
    let gre_real = real(Method::Tunnel, gre_tunnel(TunCsum::RemCsum));
    h.control().edit_real(&spec.addr, &gre_real).unwrap();
    assert_eq!(
        h.control().service(&spec.addr).unwrap().reals[0].spec,
        gre_real
    );
    // A weight change (the health checker's) keeps the tunnel.
    h.control()
        .set_weight(&spec.addr, ip(real_ip(1)), 80, 7)
        .unwrap();
    let after = h.control().service(&spec.addr).unwrap().reals[0].spec;
    assert_eq!((after.weight, after.tunnel), (7, gre_real.tunnel));
}

#[test]
fn fragments_follow_their_first_into_the_tunnel_without_an_outer_checksum() {
    let mut f = FibLab::new();
    let _in = f.enter();
    tunnel_service(&mut f, Protocol::Udp, 53, 2, gue_tunnel(TunCsum::Csum));
    let payload: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
    let d = udp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, 40000),
        (VIP, 53),
        &payload,
    );
    let frags = fragment(&d, 0x4242, &[1400, 1400]);
    for (i, frag) in frags.iter().enumerate() {
        // A fragment's checksum covers the whole datagram: no outer sum can be derived,
        // so the outer UDP checksum is 0. Only the first fragment has the ports the
        // outer source port is hashed from.
        let sport = if i == 0 {
            gue_sport((CLIENT, 40000), 53, 17)
        } else {
            gue_sport((CLIENT, 0), 0, 17)
        };
        f.h.check(
            &format!("GUE: fragment {i} is wrapped, untouched, to the first one's real"),
            frag,
            Action::Redirect,
            &gue(
                frag,
                real_mac(2),
                DIRECTOR_MAC_OUT,
                DIRECTOR_OUT,
                real_ip(2),
                sport,
                GUE_PORT,
                false,
            ),
        );
    }
    assert_eq!(f.h.stat("fragment_forwarded"), 2);

    tunnel_service(&mut f, Protocol::Udp, 54, 3, gre_tunnel(TunCsum::Csum));
    let d = udp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, 40000),
        (VIP, 54),
        &payload,
    );
    for (i, frag) in fragment(&d, 0x4343, &[1400, 1400]).iter().enumerate() {
        f.h.check(
            &format!("GRE: fragment {i} is wrapped without a checksum field"),
            frag,
            Action::Redirect,
            &gre(
                frag,
                real_mac(3),
                DIRECTOR_MAC_OUT,
                DIRECTOR_OUT,
                real_ip(3),
                false,
            ),
        );
    }
    assert_eq!(f.h.stat("fragment_forwarded"), 4);
}

#[test]
fn a_vlan_tag_stays_in_front_of_the_gue_and_gre_headers() {
    let mut f = FibLab::new();
    let _in = f.enter();
    tunnel_service(&mut f, Protocol::Tcp, 80, 1, gue_tunnel(TunCsum::Csum));
    tunnel_service(&mut f, Protocol::Tcp, 81, 2, gre_tunnel(TunCsum::Csum));
    f.h.control().set_vlans(&[42]).unwrap();
    let tag = |frame: Vec<u8>| {
        // The untagged frame with an 802.1Q tag (VLAN 42) after the MACs.
        let mut out = frame[..12].to_vec();
        out.extend_from_slice(&[0x81, 0x00, 0x00, 42]);
        out.extend_from_slice(&frame[12..]);
        out
    };
    let syn80 = syn(40000);
    let want = gue(
        &syn80,
        real_mac(1),
        DIRECTOR_MAC_OUT,
        DIRECTOR_OUT,
        real_ip(1),
        gue_sport((CLIENT, 40000), 80, 6),
        GUE_PORT,
        true,
    );
    f.h.check(
        "GUE: VLAN tag, then the outer headers, then the client's packet",
        &tag(syn80),
        Action::Redirect,
        &tag(want),
    );
    let syn81 = tcp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, 40000),
        (VIP, 81),
        SYN,
        b"",
    );
    let want = gre(
        &syn81,
        real_mac(2),
        DIRECTOR_MAC_OUT,
        DIRECTOR_OUT,
        real_ip(2),
        true,
    );
    f.h.check(
        "GRE: VLAN tag, then the outer headers, then the client's packet",
        &tag(syn81),
        Action::Redirect,
        &tag(want),
    );
}

#[test]
fn an_icmp_error_about_a_gue_flow_goes_to_its_real_wrapped_with_a_checksum() {
    let mut f = FibLab::new();
    let _in = f.enter();
    tunnel_service(&mut f, Protocol::Tcp, 80, 1, gue_tunnel(TunCsum::Csum));
    assert_eq!(f.h.run(&syn(40000)).action, Action::Redirect);
    // A router on the client's side about the real's reply (from the VIP, to the
    // client): "fragmentation needed", quoting the reply's headers.
    const ROUTER: [u8; 4] = [10, 0, 0, 254];
    let mut quoted = Vec::new();
    etherparse::PacketBuilder::ipv4(VIP, CLIENT, 63)
        .tcp(80, 40000, 7777, 64240)
        .ack(1)
        .write(&mut quoted, &[0x42; 100])
        .unwrap();
    let quote = &quoted[..28];
    let icmp_hdr = Icmpv4Header::with_checksum(
        Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
            next_hop_mtu: 1300,
        }),
        quote,
    );
    let mut ip_hdr = Ipv4Header::new(0, 64, IpNumber::ICMP, ROUTER, VIP).unwrap();
    ip_hdr.total_len = (20 + icmp_hdr.header_len() + quote.len()) as u16;
    ip_hdr.header_checksum = ip_hdr.calc_header_checksum();
    let mut icmp = Vec::new();
    Ethernet2Header {
        destination: DIRECTOR_MAC,
        source: CLIENT_MAC,
        ether_type: EtherType::IPV4,
    }
    .write(&mut icmp)
    .unwrap();
    ip_hdr.write(&mut icmp).unwrap();
    icmp_hdr.write(&mut icmp).unwrap();
    icmp.extend_from_slice(quote);
    // The ICMP message's own checksum gives the inner sum: the outer UDP checksum is set.
    f.h.check(
        "GUE: the error reaches the flow's real inside the tunnel, with a UDP checksum",
        &icmp,
        Action::Redirect,
        &gue(
            &icmp,
            real_mac(1),
            DIRECTOR_MAC_OUT,
            DIRECTOR_OUT,
            real_ip(1),
            gue_sport((ROUTER, 0), 0, 1),
            GUE_PORT,
            true,
        ),
    );
    assert_eq!(f.h.stat("icmp_to_real"), 1);
}
