//! Real traffic with fragments: 4,000-byte UDP requests and answers (every datagram
//! fragmented on the lab's 1,500-byte links) through a DR, a TUN and a NAT service.
//! Every answer must come back whole, from the VIP.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use director_common::{real::Method, service::Scheduler};
use director_control::Protocol;
use director_tests::{
    lab::udp_exchange,
    lvs::{LvsLab, vip_for},
};

const TIMEOUT: Duration = Duration::from_secs(5);
/// Datagrams per service.
const REQUESTS: u32 = 12;
/// Bytes of UDP payload per request: three fragments on a 1,500-byte link.
const SIZE: usize = 4000;
/// The reals' UDP echo port.
const ECHO: u16 = 7;

/// The director's real-side link (its interface, the bridge and every real's) carries
/// `mtu`-byte packets.
fn real_side_mtu(lvs: &LvsLab, mtu: u16) {
    let mtu = mtu.to_string();
    let mut ends = vec![("director".to_string(), "eth1")];
    ends.extend((1..=lvs.reals).map(|n| (format!("real{n}"), "eth0")));
    for (host, ifname) in &ends {
        let (sw, port) = lvs.lab.bridge_port(host, ifname);
        for (ns, dev) in [(sw, port.as_str()), (lvs.lab.ns(host), *ifname)] {
            ns.exec_ok(&["ip", "link", "set", dev, "mtu", &mtu])
                .unwrap_or_else(|e| panic!("MTU {mtu} on {host}'s {dev}: {e:#}"));
        }
    }
}

fn run(method: Method, lvs: &mut LvsLab) {
    lvs.service(method, Protocol::Udp, ECHO, Scheduler::Maglev, &[1, 1, 1])
        .unwrap();
    let vip = SocketAddr::new(IpAddr::V4(vip_for(method)), ECHO);
    let client = lvs.lab.ns("client");
    for i in 0..REQUESTS {
        let request: Vec<u8> = (0..SIZE).map(|b| (b as u32 * 31 + i) as u8).collect();
        let (answer, from) = udp_exchange(client, vip, &request, TIMEOUT)
            .unwrap_or_else(|e| panic!("{method:?}: request {i} of {SIZE} bytes: {e:#}"));
        assert_eq!(
            from, vip,
            "{method:?}: answer {i} came from another address"
        );
        assert_eq!(answer.len(), SIZE, "{method:?}: answer {i} is not whole");
        assert!(
            answer == request,
            "{method:?}: answer {i} differs from the request"
        );
    }
    let stats = lvs.director.control.stats().unwrap();
    let drops: u64 = stats
        .iter()
        .filter(|(s, _)| s.name().starts_with("drop_"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(drops, 0, "{method:?}: {stats:?}");
    // Two later fragments per request, and for NAT per answer too (DR and TUN answers
    // are routed by the kernel: their later fragments are `pass_fragment`).
    let per_exchange = if method == Method::Masq { 4 } else { 2 };
    assert_eq!(
        lvs.stat("fragment_forwarded"),
        per_exchange * REQUESTS as u64,
        "{method:?}: {stats:?}"
    );
    if method == Method::Masq {
        assert_eq!(lvs.stat("pass_fragment"), 0, "{method:?}: {stats:?}");
    }
}

#[test]
fn dr_carries_fragmented_udp_both_ways() {
    director_tests::require_root();
    let mut lvs = LvsLab::build(3).expect("lab");
    run(Method::Route, &mut lvs);
}

/// IPIP adds 20 bytes that the director cannot fragment (XDP has no fragmentation):
/// full-size client fragments need a real-side link with room for the outer header,
/// as docs/datapath.md tells operators.
#[test]
fn ipip_carries_fragmented_udp_both_ways() {
    director_tests::require_root();
    let mut lvs = LvsLab::build(3).expect("lab");
    real_side_mtu(&lvs, 1600);
    run(Method::Tunnel, &mut lvs);
}

#[test]
fn nat_carries_fragmented_udp_both_ways_and_answers_from_the_vip() {
    director_tests::require_root();
    let mut lvs = LvsLab::build(3).expect("lab");
    run(Method::Masq, &mut lvs);
}
