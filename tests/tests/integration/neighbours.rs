//! The director's neighbour handling over rtnetlink (root): managed entries for each
//! real's next hop, made without sending the real anything, both families; entries
//! removed with the last real that needed them; the kernel's states as the control
//! library reports them.
//!
//! ```text
//!  director eth1 10.1.0.1 ──[back]── real1 10.1.0.11
//!           fd00:1::1        │       fd00:1::11
//!                            └── router 10.1.0.254 ── real2 10.2.0.12
//!                                fd00:1::254           fd00:2::12
//! ```

use std::net::IpAddr;
use std::time::Duration;

use director_control::neighbours::{self, Neighbour, Path, State};
use director_tests::lab::{Endpoint, Host, Lab, Netns, Topology, cidr};

const T: Duration = Duration::from_secs(5);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const REAL1: &str = "10.1.0.11";
const REAL1_6: &str = "fd00:1::11";
const ROUTER: &str = "10.1.0.254";
const ROUTER_6: &str = "fd00:1::254";
const REAL2: &str = "10.2.0.12";
const REAL2_6: &str = "fd00:2::12";

fn topology() -> Topology {
    Topology::new()
        .bridge("back")
        .host(
            Host::new("director")
                .route(cidr("10.2.0.0/24"), ip(ROUTER))
                .route(cidr("fd00:2::/64"), ip(ROUTER_6)),
        )
        .host(Host::new("real1"))
        .host(Host::new("router").ip_forward().ipv6_forward())
        .host(
            Host::new("real2")
                .default_route(ip("10.2.0.1"))
                .default_route(ip("fd00:2::1")),
        )
        .bridged(
            Endpoint::new("director", "eth1")
                .addr(ip("10.1.0.1"), 24)
                .addr(ip("fd00:1::1"), 64),
            "back",
        )
        .bridged(
            Endpoint::new("real1", "eth0")
                .addr(ip(REAL1), 24)
                .addr(ip(REAL1_6), 64),
            "back",
        )
        .bridged(
            Endpoint::new("router", "eth0")
                .addr(ip(ROUTER), 24)
                .addr(ip(ROUTER_6), 64),
            "back",
        )
        .veth(
            Endpoint::new("router", "eth1")
                .addr(ip("10.2.0.1"), 24)
                .addr(ip("fd00:2::1"), 64),
            Endpoint::new("real2", "eth0")
                .addr(ip(REAL2), 24)
                .addr(ip(REAL2_6), 64),
        )
}

/// IP packets and UDP datagrams a host's kernel received, both families (ARP is no IP
/// packet; neighbour discovery is ICMPv6, so only IPv6's UDP counts are used).
fn received(ns: &Netns) -> [u64; 3] {
    ns.run(|| {
        let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap();
        let snmp6 = std::fs::read_to_string("/proc/thread-self/net/snmp6").unwrap();
        let v4 = |proto: &str, field: &str| -> u64 {
            let mut lines = snmp.lines().filter(|l| l.starts_with(&format!("{proto}:")));
            let (names, values) = (lines.next().unwrap(), lines.next().unwrap());
            let i = names.split_whitespace().position(|n| n == field).unwrap();
            values.split_whitespace().nth(i).unwrap().parse().unwrap()
        };
        let v6 = |field: &str| -> u64 {
            snmp6
                .lines()
                .find_map(|l| {
                    let mut w = l.split_whitespace();
                    (w.next() == Some(field)).then(|| w.next().unwrap().parse().unwrap())
                })
                .unwrap()
        };
        [
            v4("Ip", "InReceives"),
            v4("Udp", "InDatagrams") + v4("Udp", "NoPorts"),
            v6("Udp6InDatagrams") + v6("Udp6NoPorts"),
        ]
    })
}

/// The director's neighbour table, read through the control library.
fn table(lab: &Lab) -> Vec<Neighbour> {
    lab.ns("director").run(|| neighbours::neighbours().unwrap())
}

fn entry(lab: &Lab, addr: &str) -> Option<Neighbour> {
    table(lab).into_iter().find(|n| n.addr == ip(addr))
}

/// What `ip -d neigh` says of an address in the director's namespace (independently of
/// the control library).
fn ip_neigh(lab: &Lab, addr: &str) -> String {
    lab.ns("director")
        .exec_ok(&["ip", "-d", "neigh", "show", "to", addr])
        .unwrap()
        .trim()
        .to_owned()
}

fn resolve(lab: &Lab, addrs: &[&str]) -> Vec<IpAddr> {
    let addrs: Vec<IpAddr> = addrs.iter().map(|a| ip(a)).collect();
    lab.ns("director")
        .run(move || neighbours::resolve(&addrs, T).unwrap())
}

#[test]
fn reals_are_resolved_by_managed_entries_without_a_packet_sent_to_them() {
    director_tests::require_root();
    let lab = Lab::build(&topology()).expect("lab");
    let before: Vec<[u64; 3]> = ["real1", "real2", "router"]
        .iter()
        .map(|h| received(lab.ns(h)))
        .collect();

    let left = resolve(&lab, &[REAL1, REAL1_6, REAL2, REAL2_6]);
    assert!(left.is_empty(), "unresolved: {left:?}");

    // Directly connected reals: their own entries; a real behind a router: the router's.
    let mac1 = lab.mac("real1", "eth0");
    let mac_router = lab.mac("router", "eth0");
    for (addr, mac) in [
        (REAL1, mac1),
        (REAL1_6, mac1),
        (ROUTER, mac_router),
        (ROUTER_6, mac_router),
    ] {
        let n = entry(&lab, addr).unwrap_or_else(|| panic!("no entry for {addr}"));
        assert!(n.managed && n.ours, "{addr}: {n:?}");
        assert!(n.is_resolved(), "{addr}: {n:?}");
        assert_eq!(n.mac, Some(mac), "{addr}");
        assert_eq!(n.ifindex, lab.ifindex("director", "eth1"));
        let shown = ip_neigh(&lab, addr);
        assert!(
            shown.contains("managed") && shown.contains("proto 211"),
            "{addr}: ip neigh says {shown:?}"
        );
    }
    for far in [REAL2, REAL2_6] {
        assert_eq!(entry(&lab, far), None, "{far} is no neighbour");
    }

    // Not a single IP packet or UDP datagram reached the reals or the router.
    let after: Vec<[u64; 3]> = ["real1", "real2", "router"]
        .iter()
        .map(|h| received(lab.ns(h)))
        .collect();
    assert_eq!(after, before, "packets received by real1, real2, router");

    // The status view: each real's next hop and its entry.
    let reals = vec![ip(REAL1), ip(REAL2_6)];
    let view = lab
        .ns("director")
        .run(move || neighbours::of_reals(&reals).unwrap());
    assert_eq!(
        view[0]
            .path
            .as_ref()
            .map(|p| matches!(p, Path::Hop(h) if !h.gateway)),
        Ok(true)
    );
    match &view[1].path {
        Ok(Path::Hop(h)) => assert!(h.gateway && h.neighbour == ip(ROUTER_6), "{h:?}"),
        p => panic!("real2's path: {p:?}"),
    }
    for v in &view {
        let e = v.entry.as_ref().expect("an entry");
        assert!(e.state.is_valid() && e.managed, "{v:?}");
    }
}

#[test]
fn ipv6_and_ipv4_neighbours_show_their_states() {
    director_tests::require_root();
    let lab = Lab::build(&topology()).expect("lab");
    // Nobody has these addresses: resolution fails, and says so.
    let left = resolve(&lab, &[REAL1_6, "fd00:1::99", "10.1.0.99", REAL1]);
    assert_eq!(left, vec![ip("fd00:1::99"), ip("10.1.0.99")]);
    for ghost in ["fd00:1::99", "10.1.0.99"] {
        let n = entry(&lab, ghost).unwrap();
        assert!(
            matches!(n.state, State::Incomplete | State::Failed) && n.managed && n.mac.is_none(),
            "{ghost}: {n:?}"
        );
    }
    let n = entry(&lab, REAL1_6).unwrap();
    assert!(n.is_resolved() && n.addr.is_ipv6(), "{n:?}");

    // A static entry is reported as such, and left alone by resolve.
    lab.ns("director")
        .exec_ok(&[
            "ip",
            "neigh",
            "add",
            "fd00:1::77",
            "lladdr",
            "02:00:00:00:00:77",
            "dev",
            "eth1",
            "nud",
            "permanent",
        ])
        .unwrap();
    assert!(resolve(&lab, &["fd00:1::77"]).is_empty());
    let n = entry(&lab, "fd00:1::77").unwrap();
    assert_eq!(
        (n.state, n.mac, n.managed, n.ours),
        (State::Permanent, Some([2, 0, 0, 0, 0, 0x77]), false, false)
    );
    // No route at all: unresolved, and no entry made anywhere.
    let left = resolve(&lab, &["fd00:99::1"]);
    assert_eq!(left, vec![ip("fd00:99::1")]);
    assert_eq!(entry(&lab, "fd00:99::1"), None);
}

#[test]
fn a_removed_real_takes_only_the_entries_made_for_it() {
    director_tests::require_root();
    let lab = Lab::build(&topology()).expect("lab");
    // Someone else's managed entry for an address that is also a real's.
    lab.ns("director")
        .exec_ok(&["ip", "neigh", "add", "10.1.0.13", "dev", "eth1", "managed"])
        .unwrap();
    let _ = resolve(&lab, &[REAL1, REAL2, REAL2_6, "10.1.0.13"]);
    assert!(entry(&lab, REAL1).is_some());

    // real1 goes, real2 stays: real1's entry goes, the router's stays.
    let release = |gone: &[&str], kept: &[&str]| -> usize {
        let gone: Vec<IpAddr> = gone.iter().map(|a| ip(a)).collect();
        let kept: Vec<IpAddr> = kept.iter().map(|a| ip(a)).collect();
        lab.ns("director")
            .run(move || neighbours::release(&gone, &kept).unwrap())
    };
    assert_eq!(release(&[REAL1], &[REAL2, REAL2_6]), 1);
    assert_eq!(entry(&lab, REAL1), None);
    assert!(entry(&lab, ROUTER).is_some_and(|n| n.managed));

    // A second real behind the same router going leaves the router's entry to the other.
    assert_eq!(release(&["10.2.0.99"], &[REAL2]), 0);
    assert!(entry(&lab, ROUTER).is_some_and(|n| n.managed));

    // The last ones go: the router's entries (both families) go; the entry the director
    // did not make stays.
    assert_eq!(release(&[REAL2, REAL2_6, "10.1.0.13"], &[]), 2);
    assert_eq!(entry(&lab, ROUTER), None);
    assert_eq!(entry(&lab, ROUTER_6), None);
    let other = entry(&lab, "10.1.0.13").expect("someone else's entry stays");
    assert!(other.managed && !other.ours);
}
