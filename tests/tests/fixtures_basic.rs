//! Fixtures for what the director must leave alone or refuse: traffic that is not for a
//! virtual service, frames too short to parse and services without reals (fragments:
//! fixtures_fragments.rs).

use std::net::{IpAddr, Ipv4Addr};

use director_common::real::Method;
use director_control::{Protocol, RealSpec, ServiceSpec};
use director_tests::fixture::{Action, CLIENT_MAC, DIRECTOR_MAC, Harness, SYN, tcp4, udp4};

const CLIENT: [u8; 4] = [10, 0, 0, 2];
const VIP: [u8; 4] = [10, 0, 0, 100];
const OTHER: [u8; 4] = [10, 0, 0, 1];

fn vip_service(h: &mut Harness) {
    h.control()
        .add_service(&ServiceSpec::new(
            Protocol::Tcp,
            IpAddr::V4(Ipv4Addr::from(VIP)),
            80,
        ))
        .unwrap();
}

#[test]
fn unknown_vip_is_passed_untouched() {
    let mut h = Harness::new();
    vip_service(&mut h);
    let frame = tcp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, 40000),
        (OTHER, 80),
        SYN,
        b"",
    );
    h.check(
        "TCP to an address without a service is passed untouched",
        &frame,
        Action::Pass,
        &frame,
    );
    let frame = tcp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, 40000),
        (VIP, 81),
        SYN,
        b"",
    );
    h.check(
        "TCP to the VIP on a port without a service is passed untouched",
        &frame,
        Action::Pass,
        &frame,
    );
    let frame = udp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, 40000),
        (VIP, 80),
        b"hello",
    );
    h.check(
        "UDP to a TCP-only VIP port is passed untouched",
        &frame,
        Action::Pass,
        &frame,
    );
    assert_eq!(h.stat("pass_not_vip"), 3);
}

#[test]
fn non_ip_traffic_is_passed_untouched() {
    let h = Harness::new();
    // An ARP request: ethertype 0x0806.
    let mut arp = Vec::new();
    arp.extend_from_slice(&[0xff; 6]);
    arp.extend_from_slice(&CLIENT_MAC);
    arp.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&CLIENT_MAC);
    arp.extend_from_slice(&CLIENT);
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&VIP);
    h.check("ARP is passed untouched", &arp, Action::Pass, &arp);
    assert_eq!(h.stat("pass_other_proto"), 1);
}

#[test]
fn frames_shorter_than_the_ip_header_are_passed_untouched() {
    let mut h = Harness::new();
    vip_service(&mut h);
    let full = tcp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, 40000),
        (VIP, 80),
        SYN,
        b"",
    );
    // Cut right after the Ethernet header (test runs need at least 14 bytes) and inside
    // the IPv4 header: nothing to judge, the kernel's to discard.
    for cut in [14usize, 14 + 12] {
        let frame = &full[..cut];
        h.check(
            &format!("a frame cut at {cut} bytes is passed untouched"),
            frame,
            Action::Pass,
            frame,
        );
    }
    assert_eq!(h.stat("pass_truncated"), 2);
    assert_eq!(h.stat("tx") + h.stat("redirect"), 0);
}

#[test]
fn service_without_reals_drops_and_counts() {
    let mut h = Harness::new();
    vip_service(&mut h);
    let frame = tcp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, 40000),
        (VIP, 80),
        SYN,
        b"",
    );
    h.check("a VIP without reals drops", &frame, Action::Drop, &frame);
    assert_eq!(h.stat("drop_no_real"), 1);
    // A real with weight 0 is no real for new connections either.
    let vip = director_control::ServiceAddr {
        proto: Protocol::Tcp,
        addr: IpAddr::V4(Ipv4Addr::from(VIP)),
        port: 80,
    };
    h.control()
        .add_real(
            &vip,
            &RealSpec::new(
                IpAddr::V4(Ipv4Addr::new(10, 1, 0, 11)),
                80,
                Method::Route,
                0,
            ),
        )
        .unwrap();
    h.check(
        "a VIP whose only real has weight 0 drops new flows",
        &frame,
        Action::Drop,
        &frame,
    );
    assert_eq!(h.stat("drop_no_real"), 2);
}

#[test]
fn maglev_refuses_more_reals_than_its_table_serves_and_changes_nothing() {
    let mut h = Harness::new();
    vip_service(&mut h);
    let vip = director_control::ServiceAddr {
        proto: Protocol::Tcp,
        addr: IpAddr::V4(Ipv4Addr::from(VIP)),
        port: 80,
    };
    // 1021 entries: 10 reals at 100 entries each.
    for n in 1..=10 {
        h.control()
            .add_real(
                &vip,
                &RealSpec::new(IpAddr::V4(Ipv4Addr::new(10, 1, 0, n)), 80, Method::Route, 1),
            )
            .unwrap();
    }
    let before = h.control().active_table(&vip).unwrap();
    let err = h
        .control()
        .add_real(
            &vip,
            &RealSpec::new(
                IpAddr::V4(Ipv4Addr::new(10, 1, 0, 11)),
                80,
                Method::Route,
                1,
            ),
        )
        .unwrap_err();
    assert!(err.to_string().contains("at most 10 reals"), "{err}");
    assert_eq!(h.control().service(&vip).unwrap().reals.len(), 10);
    assert_eq!(h.control().active_table(&vip).unwrap(), before);
}
