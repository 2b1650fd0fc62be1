//! Fixtures for IPv4 fragments: a datagram's later fragments (no ports) go wherever its
//! first fragment went, in every forwarding method; fragments of NAT replies are
//! un-NATed; a later fragment of no known datagram is left to the kernel.
//!
//! Frames are whole UDP datagrams built by etherparse and cut into fragments by
//! [`fragment`]; expected outputs are the expected datagram cut the same way, so every
//! checksum of an output (the IP header's, and the UDP checksum the first fragment
//! carries for the whole datagram) is etherparse's, not the program's.

use director_common::real::Method;
use director_control::Protocol;
use director_tests::fixture::{
    Action, CLIENT, CLIENT_MAC, DIRECTOR_MAC, DIRECTOR_MAC_OUT, DIRECTOR_OUT, FibLab as Fib,
    REAL_SIDE_MAC, VIP, after_one_hop, fragment, ip, ipip, real_ip, real_mac, udp4, with_macs,
};

/// A 3,000-byte datagram: three fragments of a 1,500-byte link (1,480 + 1,480 + 48
/// bytes of UDP header and payload).
const CUTS: [usize; 2] = [1480, 1480];

fn payload(seed: u8) -> Vec<u8> {
    (0..3000u32)
        .map(|i| (i as u8).wrapping_mul(7) ^ seed)
        .collect()
}

/// The client's datagram to VIP:53 from `sport`, in fragments.
fn query(sport: u16, id: u16) -> Vec<Vec<u8>> {
    let d = udp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, sport),
        (VIP, 53),
        &payload(sport as u8),
    );
    fragment(&d, id, &CUTS)
}

/// The real whose MAC a DR frame was sent to.
fn real_of_mac(frame: &[u8]) -> u8 {
    (1..=3)
        .find(|&n| frame[..6] == real_mac(n))
        .unwrap_or_else(|| panic!("not sent to a real: {:02x?}", &frame[..6]))
}

#[test]
fn dr_sends_every_fragment_to_the_real_of_the_first() {
    let mut f = Fib::new();
    let _in = f.enter();
    let svc = f.service(Protocol::Udp, 53);
    for n in 1..=3 {
        f.real(&svc, n, 53, Method::Route, 1);
    }
    let mut reals = std::collections::HashSet::new();
    for (i, sport) in (40000..40008).enumerate() {
        let frags = query(sport, 0x100 + i as u16);
        let first = f.h.run(&frags[0]);
        assert_eq!(
            first.action,
            Action::Redirect,
            "DR: first fragment of {sport}"
        );
        let n = real_of_mac(&first.frame);
        reals.insert(n);
        assert_eq!(
            first.frame,
            with_macs(&frags[0], real_mac(n), DIRECTOR_MAC_OUT)
        );
        for later in &frags[1..] {
            f.h.check(
                "DR: a later fragment goes to the real of its first, only its MACs changed",
                later,
                Action::Redirect,
                &with_macs(later, real_mac(n), DIRECTOR_MAC_OUT),
            );
        }
    }
    // The flows were spread, so "the same real" was not a matter of there being one.
    assert!(reals.len() > 1, "8 flows all went to one real: {reals:?}");
    assert_eq!(f.h.stat("fragment_forwarded"), 16);
    assert_eq!(f.h.stat("pass_fragment") + f.h.stat("drop_fragment"), 0);
    assert_eq!(
        f.real_stats(&svc, 1).conns + f.real_stats(&svc, 2).conns + f.real_stats(&svc, 3).conns,
        8
    );
}

#[test]
fn ipip_encapsulates_every_fragment_to_the_real_of_the_first() {
    let mut f = Fib::new();
    let _in = f.enter();
    let svc = f.service(Protocol::Udp, 53);
    f.real(&svc, 2, 53, Method::Tunnel, 1);
    // Fragments that still fit the real-side link once encapsulated.
    let d = udp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, 40000),
        (VIP, 53),
        &payload(1),
    );
    let frags = fragment(&d, 0x4242, &[1400, 1400]);
    for (i, frag) in frags.iter().enumerate() {
        f.h.check(
            &format!("IPIP: fragment {i} is encapsulated, untouched, to the real"),
            frag,
            Action::Redirect,
            &ipip(
                frag,
                real_mac(2),
                DIRECTOR_MAC_OUT,
                DIRECTOR_OUT,
                real_ip(2),
            ),
        );
    }
    let s = f.real_stats(&svc, 2);
    assert_eq!((s.conns, s.pkts_in), (1, 3));
    assert_eq!(f.h.stat("fragment_forwarded"), 2);
}

#[test]
fn nat_rewrites_the_first_fragment_fully_and_later_ones_address_only() {
    let mut f = Fib::new();
    let _in = f.enter();
    let svc = f.service(Protocol::Udp, 53);
    f.real(&svc, 1, 5353, Method::Masq, 1);
    let id = 0x0abc;
    let frags = query(40000, id);
    // What the real must receive: the datagram to its address and port, in the same
    // fragments (the first carries the UDP checksum of the whole rewritten datagram).
    let want = fragment(
        &udp4(
            DIRECTOR_MAC_OUT,
            real_mac(1),
            (CLIENT, 40000),
            (real_ip(1), 5353),
            &payload(40000u16 as u8),
        ),
        id,
        &CUTS,
    );
    for (i, (frag, want)) in frags.iter().zip(&want).enumerate() {
        f.h.check(
            &format!("NAT: fragment {i} reaches the real's address"),
            frag,
            Action::Redirect,
            want,
        );
    }
    // A second datagram of the same flow: the first fragment now takes the
    // established path, and its followers still follow it.
    let frags = query(40000, id + 1);
    let want = fragment(
        &udp4(
            DIRECTOR_MAC_OUT,
            real_mac(1),
            (CLIENT, 40000),
            (real_ip(1), 5353),
            &payload(40000u16 as u8),
        ),
        id + 1,
        &CUTS,
    );
    for (i, (frag, want)) in frags.iter().zip(&want).enumerate() {
        f.h.check(
            &format!("NAT, established flow: fragment {i}"),
            frag,
            Action::Redirect,
            want,
        );
    }
    let s = f.real_stats(&svc, 1);
    assert_eq!((s.conns, s.pkts_in), (1, 6));
}

#[test]
fn nat_reply_fragments_all_leave_from_the_vip() {
    let mut f = Fib::new();
    let _in = f.enter();
    let svc = f.service(Protocol::Udp, 53);
    f.real(&svc, 1, 5353, Method::Masq, 1);
    let q = udp4(CLIENT_MAC, DIRECTOR_MAC, (CLIENT, 40000), (VIP, 53), b"q");
    assert_eq!(f.h.run(&q).action, Action::Redirect, "the query");
    // The real answers with a datagram its kernel fragments.
    f.h.ingress_ifindex = f.eth1;
    let id = 0x7777;
    let answer = |src: ([u8; 4], u16), smac, dmac| {
        fragment(
            &udp4(smac, dmac, src, (CLIENT, 40000), &payload(9)),
            id,
            &CUTS,
        )
    };
    let frags = answer((real_ip(1), 5353), REAL_SIDE_MAC, DIRECTOR_MAC_OUT);
    // Routed: each fragment one hop further.
    let want: Vec<Vec<u8>> = answer((VIP, 53), DIRECTOR_MAC, CLIENT_MAC)
        .iter()
        .map(|f| after_one_hop(f))
        .collect();
    for (i, (frag, want)) in frags.iter().zip(&want).enumerate() {
        f.h.check(
            &format!(
                "NAT reply: fragment {i} leaves from the VIP, one hop further, IP checksum fixed"
            ),
            frag,
            Action::Redirect,
            want,
        );
    }
    assert_eq!(f.real_stats(&svc, 1).pkts_out, 3);
    assert_eq!(f.h.stat("fragment_forwarded"), 2);
}

#[test]
fn a_later_fragment_of_no_known_datagram_is_left_to_the_kernel_and_counted() {
    let mut f = Fib::new();
    let _in = f.enter();
    let svc = f.service(Protocol::Udp, 53);
    f.real(&svc, 1, 53, Method::Route, 1);
    let frags = query(40000, 0x1234);
    // It overtook its first fragment: nothing says where the datagram goes.
    f.h.check(
        "a later fragment before its first is passed untouched",
        &frags[2],
        Action::Pass,
        &frags[2],
    );
    assert_eq!(f.h.stat("pass_fragment"), 1);
    assert_eq!(f.h.stat("pass_not_vip"), 0);
    // Another datagram of the same flow (another IP id) does not lend it its real.
    let other = query(40000, 0x1235);
    assert_eq!(f.h.run(&other[0]).action, Action::Redirect);
    f.h.check(
        "a later fragment whose IP id matches no first fragment is passed",
        &frags[1],
        Action::Pass,
        &frags[1],
    );
    assert_eq!(f.h.stat("pass_fragment"), 2);
    // Fragments of a datagram for no virtual service (a DR real's reply routed through
    // the director) are the kernel's: the first as not for a VIP, the rest as fragments.
    let stray = fragment(
        &udp4(
            REAL_SIDE_MAC,
            DIRECTOR_MAC_OUT,
            (VIP, 53),
            (CLIENT, 40000),
            &payload(3),
        ),
        0x99,
        &CUTS,
    );
    f.h.ingress_ifindex = f.eth1;
    for frag in &stray {
        f.h.check("a fragment for no VIP is passed", frag, Action::Pass, frag);
    }
    assert_eq!(f.h.stat("pass_not_vip"), 1);
    assert_eq!(f.h.stat("pass_fragment"), 4);
    assert_eq!(f.h.stat("fragment_forwarded"), 0);
}

#[test]
fn later_fragments_whose_real_left_the_service_are_dropped() {
    let mut f = Fib::new();
    let _in = f.enter();
    let svc = f.service(Protocol::Udp, 53);
    f.real(&svc, 1, 53, Method::Route, 1);
    f.real(&svc, 2, 53, Method::Route, 1);
    let frags = query(40000, 0x2222);
    let first = f.h.run(&frags[0]);
    assert_eq!(first.action, Action::Redirect);
    let n = real_of_mac(&first.frame);
    f.h.control().delete_real(&svc, ip(real_ip(n)), 53).unwrap();
    f.h.check(
        "the rest of a datagram whose real is gone cannot be completed elsewhere",
        &frags[1],
        Action::Drop,
        &frags[1],
    );
    assert_eq!(f.h.stat("drop_fragment"), 1);
}
