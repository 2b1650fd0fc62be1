//! Fixtures for forwarding: every method x {TCP, UDP} x {new flow, established flow,
//! NAT reply}, quiescent reals, removed reals, persistence and port-0 services.
//!
//! FIB lookups need routes and neighbours, so each test builds a small namespace lab:
//! client (10.0.0.2) -- eth0 [director] eth1 -- reals (10.1.0.11..13, static neighbours),
//! plus a one-arm real 10.0.0.21 on the client segment. Test runs execute inside the
//! director's namespace.

use std::net::{IpAddr, Ipv4Addr};

use director_common::{real::Method, service::Scheduler};
use director_control::{Protocol, RealSpec, ServiceSpec, control::Timeouts};
use director_tests::fixture::{
    ACK, Action, CLIENT, CLIENT_MAC, CLIENT2, DIRECTOR_MAC, DIRECTOR_MAC_OUT, DIRECTOR_OUT,
    FIN_ACK, FibLab as Fib, ONE_ARM_REAL, REAL_SIDE_MAC, RST, SYN, VIP, after_one_hop, ip, ipip,
    nat_reply_in, nat_reply_out, real_ip, real_mac, tcp4, udp4, with_macs,
};
use etherparse::Ipv4Header;

#[test]
fn dr_rewrites_only_macs() {
    let mut f = Fib::new();
    let _in = f.enter();
    let svc = f.service(Protocol::Tcp, 80);
    f.real(&svc, 1, 80, Method::Route, 1);
    let syn = tcp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, 40000),
        (VIP, 80),
        SYN,
        b"",
    );
    f.h.check(
        "DR: a new TCP flow goes to the real's MAC, out of the real-side interface",
        &syn,
        Action::Redirect,
        &with_macs(&syn, real_mac(1), DIRECTOR_MAC_OUT),
    );
    let ack = tcp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, 40000),
        (VIP, 80),
        ACK,
        b"GET / HTTP/1.0\r\n\r\n",
    );
    f.h.check(
        "DR: the established flow follows",
        &ack,
        Action::Redirect,
        &with_macs(&ack, real_mac(1), DIRECTOR_MAC_OUT),
    );
    let s = f.real_stats(&svc, 1);
    assert_eq!(
        (s.conns, s.pkts_in, s.bytes_in),
        (1, 2, (syn.len() + ack.len()) as u64)
    );
    let usvc = f.service(Protocol::Udp, 53);
    f.real(&usvc, 2, 53, Method::Route, 1);
    let dns = udp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, 5353),
        (VIP, 53),
        b"query",
    );
    for intent in ["DR: a new UDP flow", "DR: the same UDP flow again"] {
        f.h.check(
            intent,
            &dns,
            Action::Redirect,
            &with_macs(&dns, real_mac(2), DIRECTOR_MAC_OUT),
        );
    }
    assert_eq!(f.real_stats(&usvc, 2).conns, 1);
}

#[test]
fn dr_one_arm_goes_back_out_with_xdp_tx() {
    let mut f = Fib::new();
    let _in = f.enter();
    let svc = f.service(Protocol::Tcp, 80);
    f.h.control()
        .add_real(&svc, &RealSpec::new(ip(ONE_ARM_REAL), 80, Method::Route, 1))
        .unwrap();
    let syn = tcp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, 40000),
        (VIP, 80),
        SYN,
        b"",
    );
    f.h.check(
        "one-arm DR: the real is on the ingress link, so XDP_TX",
        &syn,
        Action::Tx,
        &with_macs(&syn, real_mac(9), DIRECTOR_MAC),
    );
    assert_eq!(f.h.stat("tx"), 1);
}

#[test]
fn ipip_prepends_an_outer_header_from_our_address() {
    let mut f = Fib::new();
    let _in = f.enter();
    let svc = f.service(Protocol::Tcp, 80);
    f.real(&svc, 1, 80, Method::Tunnel, 1);
    let syn = tcp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, 40000),
        (VIP, 80),
        SYN,
        b"",
    );
    f.h.check(
        "IPIP: a new TCP flow is encapsulated to the real",
        &syn,
        Action::Redirect,
        &ipip(
            &syn,
            real_mac(1),
            DIRECTOR_MAC_OUT,
            DIRECTOR_OUT,
            real_ip(1),
        ),
    );
    let ack = tcp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, 40000),
        (VIP, 80),
        ACK,
        b"payload",
    );
    f.h.check(
        "IPIP: the established flow too",
        &ack,
        Action::Redirect,
        &ipip(
            &ack,
            real_mac(1),
            DIRECTOR_MAC_OUT,
            DIRECTOR_OUT,
            real_ip(1),
        ),
    );
    let usvc = f.service(Protocol::Udp, 53);
    f.real(&usvc, 2, 53, Method::Tunnel, 1);
    let dns = udp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, 5353),
        (VIP, 53),
        b"query",
    );
    f.h.check(
        "IPIP: a new UDP flow",
        &dns,
        Action::Redirect,
        &ipip(
            &dns,
            real_mac(2),
            DIRECTOR_MAC_OUT,
            DIRECTOR_OUT,
            real_ip(2),
        ),
    );
    f.h.check(
        "IPIP: the established UDP flow",
        &dns,
        Action::Redirect,
        &ipip(
            &dns,
            real_mac(2),
            DIRECTOR_MAC_OUT,
            DIRECTOR_OUT,
            real_ip(2),
        ),
    );
    // Don't-fragment is copied from the inner header.
    let mut df = udp4(CLIENT_MAC, DIRECTOR_MAC, (CLIENT, 5354), (VIP, 53), b"df");
    df[14 + 6] |= 0x40;
    let mut hdr = Ipv4Header::from_slice(&df[14..]).unwrap().0;
    hdr.header_checksum = hdr.calc_header_checksum();
    df[14 + 10..14 + 12].copy_from_slice(&hdr.header_checksum.to_be_bytes());
    f.h.check(
        "IPIP: DF is copied to the outer header",
        &df,
        Action::Redirect,
        &ipip(&df, real_mac(2), DIRECTOR_MAC_OUT, DIRECTOR_OUT, real_ip(2)),
    );
}

/// What NAT must produce: the same segment with the real's address and port as
/// destination, checksums computed by etherparse.
fn nat_expected_tcp(
    src: ([u8; 4], u16),
    dst: ([u8; 4], u16),
    dmac: [u8; 6],
    smac: [u8; 6],
    flags: director_tests::fixture::Flags,
    payload: &[u8],
) -> Vec<u8> {
    tcp4(smac, dmac, src, dst, flags, payload)
}

#[test]
fn nat_rewrites_destination_and_un_nats_replies() {
    let mut f = Fib::new();
    let _in = f.enter();
    let svc = f.service(Protocol::Tcp, 80);
    f.real(&svc, 1, 8080, Method::Masq, 1);
    let syn = tcp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, 40000),
        (VIP, 80),
        SYN,
        b"",
    );
    f.h.check(
        "NAT: a new TCP flow gets the real's address and port",
        &syn,
        Action::Redirect,
        &nat_expected_tcp(
            (CLIENT, 40000),
            (real_ip(1), 8080),
            real_mac(1),
            DIRECTOR_MAC_OUT,
            SYN,
            b"",
        ),
    );
    let ack = tcp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, 40000),
        (VIP, 80),
        ACK,
        b"GET /",
    );
    f.h.check(
        "NAT: the established flow",
        &ack,
        Action::Redirect,
        &nat_expected_tcp(
            (CLIENT, 40000),
            (real_ip(1), 8080),
            real_mac(1),
            DIRECTOR_MAC_OUT,
            ACK,
            b"GET /",
        ),
    );
    // The reply comes in on the real-side interface.
    f.h.ingress_ifindex = f.eth1;
    let reply = nat_reply_in(ACK, b"200 OK");
    f.h.check(
        "NAT: the reply leaves with the VIP and virtual port as source",
        &reply,
        Action::Redirect,
        &nat_reply_out(ACK, b"200 OK"),
    );
    let fin = nat_reply_in(FIN_ACK, b"");
    f.h.check(
        "NAT: the real's FIN is un-NATed too",
        &fin,
        Action::Redirect,
        &nat_reply_out(FIN_ACK, b""),
    );
    let s = f.real_stats(&svc, 1);
    assert_eq!((s.conns, s.pkts_in, s.pkts_out), (1, 2, 2));
    // Traffic from the real that belongs to no connection is the host's business.
    let stray = tcp4(
        REAL_SIDE_MAC,
        DIRECTOR_MAC_OUT,
        (real_ip(1), 8080),
        (CLIENT, 40001),
        ACK,
        b"",
    );
    f.h.check(
        "NAT: a packet from a real outside any connection is passed",
        &stray,
        Action::Pass,
        &stray,
    );
    f.h.ingress_ifindex = f.eth0;
}

#[test]
fn nat_udp_keeps_port_when_real_port_is_zero_and_fixes_checksums() {
    let mut f = Fib::new();
    let _in = f.enter();
    let svc = f.service(Protocol::Udp, 53);
    f.real(&svc, 2, 0, Method::Masq, 1);
    let q = udp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, 5353),
        (VIP, 53),
        b"query",
    );
    f.h.check(
        "NAT UDP: destination address rewritten, port kept",
        &q,
        Action::Redirect,
        &udp4(
            DIRECTOR_MAC_OUT,
            real_mac(2),
            (CLIENT, 5353),
            (real_ip(2), 53),
            b"query",
        ),
    );
    f.h.check(
        "NAT UDP: the established flow",
        &q,
        Action::Redirect,
        &udp4(
            DIRECTOR_MAC_OUT,
            real_mac(2),
            (CLIENT, 5353),
            (real_ip(2), 53),
            b"query",
        ),
    );
    f.h.ingress_ifindex = f.eth1;
    let a = udp4(
        REAL_SIDE_MAC,
        DIRECTOR_MAC_OUT,
        (real_ip(2), 53),
        (CLIENT, 5353),
        b"answer",
    );
    f.h.check(
        "NAT UDP: the answer gets the VIP back",
        &a,
        Action::Redirect,
        &after_one_hop(&udp4(
            DIRECTOR_MAC,
            CLIENT_MAC,
            (VIP, 53),
            (CLIENT, 5353),
            b"answer",
        )),
    );
    // A UDP datagram without checksum keeps none.
    f.h.ingress_ifindex = f.eth0;
    let mut nock = udp4(CLIENT_MAC, DIRECTOR_MAC, (CLIENT, 5400), (VIP, 53), b"x");
    nock[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&[0, 0]);
    let mut want = udp4(
        DIRECTOR_MAC_OUT,
        real_mac(2),
        (CLIENT, 5400),
        (real_ip(2), 53),
        b"x",
    );
    want[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&[0, 0]);
    f.h.check(
        "NAT UDP: checksum 0 (none) stays 0",
        &nock,
        Action::Redirect,
        &want,
    );
}

/// NAT replies find their way back to the client through a per-CPU next-hop cache: each
/// client gets its own neighbour's MAC, and a neighbour change reaches the replies (the
/// cache lives at most a second).
#[test]
fn nat_replies_follow_each_clients_next_hop_and_its_changes() {
    const CLIENT3: [u8; 4] = [10, 0, 0, 4];
    const CLIENT3_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x04];
    const CLIENT_MAC_NEW: [u8; 6] = [0x02, 0, 0, 0, 0, 0x11];
    let mut f = Fib::new();
    let _in = f.enter();
    f.set_neighbour(CLIENT3, CLIENT3_MAC, "eth0");
    let svc = f.service(Protocol::Udp, 53);
    f.real(&svc, 1, 0, Method::Masq, 1);
    for client in [CLIENT, CLIENT3] {
        let q = udp4(CLIENT_MAC, DIRECTOR_MAC, (client, 5353), (VIP, 53), b"q");
        assert_eq!(
            f.h.run(&q).action,
            Action::Redirect,
            "query from {client:?}"
        );
    }
    f.h.ingress_ifindex = f.eth1;
    let answer = |client: [u8; 4]| {
        udp4(
            REAL_SIDE_MAC,
            DIRECTOR_MAC_OUT,
            (real_ip(1), 53),
            (client, 5353),
            b"a",
        )
    };
    for _ in 0..2 {
        // The second time round, both come from the cache.
        for (client, mac) in [(CLIENT, CLIENT_MAC), (CLIENT3, CLIENT3_MAC)] {
            f.h.check(
                "NAT: each client's reply goes to its own next hop",
                &answer(client),
                Action::Redirect,
                &after_one_hop(&udp4(DIRECTOR_MAC, mac, (VIP, 53), (client, 5353), b"a")),
            );
        }
    }
    f.set_neighbour(CLIENT, CLIENT_MAC_NEW, "eth0");
    director_tests::lab::wait_until(
        std::time::Duration::from_secs(5),
        "replies to follow the client's new neighbour entry",
        || f.h.run(&answer(CLIENT)).frame[..6] == CLIENT_MAC_NEW,
    )
    .unwrap();
    f.h.check(
        "NAT: the other client's cached hop is untouched",
        &answer(CLIENT3),
        Action::Redirect,
        &after_one_hop(&udp4(
            DIRECTOR_MAC,
            CLIENT3_MAC,
            (VIP, 53),
            (CLIENT3, 5353),
            b"a",
        )),
    );
    f.h.ingress_ifindex = f.eth0;
}

/// Which real (1..=3) a frame forwarded by DR went to.
fn dr_real(out: &[u8]) -> u8 {
    (1..=3)
        .find(|&n| out[..6] == real_mac(n))
        .expect("forwarded to a known real")
}

#[test]
fn weight_zero_keeps_established_flows_and_takes_no_new_ones() {
    let mut f = Fib::new();
    let _in = f.enter();
    let svc = f.service(Protocol::Tcp, 80);
    f.real(&svc, 1, 80, Method::Route, 1);
    f.real(&svc, 2, 80, Method::Route, 1);
    // Open 20 flows, remember where each went.
    let flows: Vec<(u16, u8)> = (0..20)
        .map(|i| {
            let port = 41000 + i;
            let out = f.h.run(&tcp4(
                CLIENT_MAC,
                DIRECTOR_MAC,
                (CLIENT, port),
                (VIP, 80),
                SYN,
                b"",
            ));
            assert_eq!(out.action, Action::Redirect);
            (port, dr_real(&out.frame))
        })
        .collect();
    assert!(
        flows.iter().any(|f| f.1 == 1) && flows.iter().any(|f| f.1 == 2),
        "both reals used: {flows:?}"
    );
    f.h.control()
        .edit_real(&svc, &RealSpec::new(ip(real_ip(1)), 80, Method::Route, 0))
        .unwrap();
    for (port, real) in &flows {
        let out = f.h.run(&tcp4(
            CLIENT_MAC,
            DIRECTOR_MAC,
            (CLIENT, *port),
            (VIP, 80),
            ACK,
            b"more",
        ));
        assert_eq!(
            dr_real(&out.frame),
            *real,
            "established flow from port {port} stays on its real"
        );
    }
    for i in 0..20 {
        let out = f.h.run(&tcp4(
            CLIENT_MAC,
            DIRECTOR_MAC,
            (CLIENT2, 42000 + i),
            (VIP, 80),
            SYN,
            b"",
        ));
        assert_eq!(
            dr_real(&out.frame),
            2,
            "a new flow avoids the quiescent real"
        );
    }
}

#[test]
fn removed_real_flows_are_rescheduled_to_remaining_reals() {
    let mut f = Fib::new();
    let _in = f.enter();
    let svc = f.service(Protocol::Tcp, 80);
    f.real(&svc, 1, 80, Method::Route, 1);
    f.real(&svc, 2, 80, Method::Route, 1);
    let flows: Vec<(u16, u8)> = (0..20)
        .map(|i| {
            let out = f.h.run(&tcp4(
                CLIENT_MAC,
                DIRECTOR_MAC,
                (CLIENT, 43000 + i),
                (VIP, 80),
                SYN,
                b"",
            ));
            (43000 + i, dr_real(&out.frame))
        })
        .collect();
    f.h.control().delete_real(&svc, ip(real_ip(1)), 80).unwrap();
    for (port, real) in &flows {
        let out = f.h.run(&tcp4(
            CLIENT_MAC,
            DIRECTOR_MAC,
            (CLIENT, *port),
            (VIP, 80),
            ACK,
            b"more",
        ));
        assert_eq!(out.action, Action::Redirect);
        // Flows of the remaining real stay; those of the removed one move to it.
        assert_eq!(
            dr_real(&out.frame),
            2,
            "flow from port {port} (was on real {real})"
        );
    }
}

#[test]
fn rst_never_creates_an_entry_and_syn_always_schedules() {
    let mut f = Fib::new();
    let _in = f.enter();
    let svc = f.service(Protocol::Tcp, 80);
    f.real(&svc, 1, 80, Method::Route, 1);
    let rst = tcp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, 44000),
        (VIP, 80),
        RST,
        b"",
    );
    f.h.check(
        "a RST without a connection is forwarded",
        &rst,
        Action::Redirect,
        &with_macs(&rst, real_mac(1), DIRECTOR_MAC_OUT),
    );
    assert!(
        f.h.dp.control.connections().unwrap().is_empty(),
        "no entry for a RST"
    );
    let syn = tcp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, 44000),
        (VIP, 80),
        SYN,
        b"",
    );
    f.h.run(&syn);
    // A new real; the SYN of a reused 5-tuple is scheduled again (Maglev may move it).
    f.real(&svc, 2, 80, Method::Route, 3);
    let before = f.real_stats(&svc, 1).conns + f.real_stats(&svc, 2).conns;
    f.h.run(&syn);
    let after = f.real_stats(&svc, 1).conns + f.real_stats(&svc, 2).conns;
    assert_eq!(
        after,
        before + 1,
        "a SYN counts as a new connection every time"
    );
}

#[test]
fn persistence_pins_a_client_to_one_real() {
    let mut f = Fib::new();
    let _in = f.enter();
    let spec = ServiceSpec::new(Protocol::Tcp, ip(VIP), 0)
        .persistent(300, IpAddr::V4(Ipv4Addr::new(255, 255, 255, 255)));
    f.h.control().add_service(&spec).unwrap();
    for n in 1..=3 {
        f.real(&spec.addr, n, 0, Method::Route, 1);
    }
    // Port 0: every port of the VIP; persistence: every connection of a client lands on
    // the same real, whatever its ports.
    let first = dr_real(
        &f.h.run(&tcp4(
            CLIENT_MAC,
            DIRECTOR_MAC,
            (CLIENT, 45000),
            (VIP, 443),
            SYN,
            b"",
        ))
        .frame,
    );
    for i in 1..30 {
        let out = f.h.run(&tcp4(
            CLIENT_MAC,
            DIRECTOR_MAC,
            (CLIENT, 45000 + i),
            (VIP, 8000 + i),
            SYN,
            b"",
        ));
        assert_eq!(out.action, Action::Redirect);
        assert_eq!(dr_real(&out.frame), first, "connection {i} of the client");
    }
    // Without persistence the same 30 connections spread.
    let plain = ServiceSpec::new(Protocol::Tcp, ip([10, 0, 0, 101]), 0);
    f.h.control().add_service(&plain).unwrap();
    for n in 1..=3 {
        f.h.control()
            .add_real(
                &plain.addr,
                &RealSpec::new(ip(real_ip(n)), 0, Method::Route, 1),
            )
            .unwrap();
    }
    let spread: std::collections::HashSet<u8> = (0..30)
        .map(|i| {
            dr_real(
                &f.h.run(&tcp4(
                    CLIENT_MAC,
                    DIRECTOR_MAC,
                    (CLIENT, 46000 + i),
                    ([10, 0, 0, 101], 8000 + i),
                    SYN,
                    b"",
                ))
                .frame,
            )
        })
        .collect();
    assert!(spread.len() > 1, "without persistence, connections spread");
}

#[test]
fn port_zero_service_matches_every_port_and_exact_port_wins() {
    let mut f = Fib::new();
    let _in = f.enter();
    let any = f.service(Protocol::Tcp, 0);
    f.real(&any, 1, 0, Method::Route, 1);
    let exact = f.service(Protocol::Tcp, 443);
    f.real(&exact, 2, 443, Method::Route, 1);
    let s = tcp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, 47000),
        (VIP, 8081),
        SYN,
        b"",
    );
    f.h.check(
        "a port-0 service takes any port",
        &s,
        Action::Redirect,
        &with_macs(&s, real_mac(1), DIRECTOR_MAC_OUT),
    );
    let s = tcp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, 47001),
        (VIP, 443),
        SYN,
        b"",
    );
    f.h.check(
        "an exact-port service wins over port 0",
        &s,
        Action::Redirect,
        &with_macs(&s, real_mac(2), DIRECTOR_MAC_OUT),
    );
}

#[test]
fn rr_and_wrr_follow_weights() {
    let mut f = Fib::new();
    let _in = f.enter();
    let spec =
        ServiceSpec::new(Protocol::Udp, ip(VIP), 53).scheduler(Scheduler::WeightedRoundRobin);
    f.h.control().add_service(&spec).unwrap();
    f.real(&spec.addr, 1, 53, Method::Route, 3);
    f.real(&spec.addr, 2, 53, Method::Route, 1);
    let mut count = [0u32; 4];
    for i in 0..40 {
        let out = f.h.run(&udp4(
            CLIENT_MAC,
            DIRECTOR_MAC,
            (CLIENT, 30000 + i),
            (VIP, 53),
            b"q",
        ));
        count[dr_real(&out.frame) as usize] += 1;
    }
    // Test runs may land on either CPU, each with its own cursor: allow one round of slack.
    assert!(
        (28..=32).contains(&count[1]) && (8..=12).contains(&count[2]),
        "wrr 3:1 gave {count:?}"
    );
}

#[test]
fn timeouts_are_settable_and_zero_keeps_a_value() {
    let mut f = Fib::new();
    let _in = f.enter();
    let t = Timeouts {
        tcp: 5,
        tcp_fin: 3,
        udp: 7,
    };
    f.h.control().set_timeouts(t).unwrap();
    assert_eq!(f.h.dp.control.timeouts().unwrap(), t);
    f.h.control()
        .set_timeouts(Timeouts {
            tcp: 0,
            tcp_fin: 0,
            udp: 9,
        })
        .unwrap();
    assert_eq!(
        f.h.dp.control.timeouts().unwrap(),
        Timeouts {
            tcp: 5,
            tcp_fin: 3,
            udp: 9
        }
    );
}
