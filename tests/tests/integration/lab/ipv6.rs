//! Real IPv6 traffic through the director: an IPv6 client reaches IPv6 services by DR,
//! IPv6-in-IPv6 tunnel and NAT66 (HTTP and UDP spread by weight, 16 KiB echoes of
//! full-size segments), persistence, a drained real keeping its established stream, the
//! ipvsadm listing of what went through, the mixed-family tunnels (an IPv4 VIP over
//! IPv6 reals, an IPv6 VIP over IPv4 reals) and GUE and GRE over IPv6, unwrapped by the
//! reals' decap program.

use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv6Addr, SocketAddr},
    process::Command,
    time::Duration,
};

use director_common::{
    addr::{FAMILY_V4, FAMILY_V6},
    real::{Method, TunType},
    service::Scheduler,
};
use director_control::{
    Protocol, RealSpec, ServiceSpec,
    model::{TunCsum, Tunnel},
};
use director_tests::{
    lab::{http_get, http_url, tcp_stream, udp_request},
    lvs::{LvsLab, VIP_TUN, VIP6_TUN, echo_round, real_ip, vip6_for},
};

use crate::support::director_bin;

const TIMEOUT: Duration = Duration::from_secs(10);
const WEIGHTS: [u32; 3] = [1, 2, 3];
const GUE_PORT: u16 = 6080;

/// The director's counters that say a packet for a service was lost on its way.
fn assert_no_drops(lvs: &LvsLab, what: &str) {
    for name in ["drop_no_neigh", "drop_fib", "drop_no_real", "drop_encap"] {
        assert_eq!(lvs.stat(name), 0, "{what}: {name}");
    }
}

/// Four 16 KiB writes on one connection to `target` (the reals' echo on 7), each echoed
/// whole: full-size segments both ways. Through a tunnel (`overhead` > 0) they no longer
/// fit on the 1,500-byte links once wrapped: the director tells the client (ICMP
/// "fragmentation needed" or ICMPv6 Packet Too Big) and its route learns the MTU.
fn echo_16k(lvs: &LvsLab, target: SocketAddr, overhead: u32, what: &str) {
    let mut s = tcp_stream(lvs.lab.ns("client"), target).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    for round in 0..4u8 {
        let chunk: Vec<u8> = (0..16 * 1024).map(|i| (i as u8) ^ round).collect();
        s.write_all(&chunk).unwrap();
        let mut back = vec![0u8; chunk.len()];
        s.read_exact(&mut back)
            .unwrap_or_else(|e| panic!("{what}: round {round}: the echo of 16 KiB: {e}"));
        assert!(back == chunk, "{what}: round {round}: echoed bytes differ");
    }
    if overhead > 0 {
        assert!(lvs.stat("icmp_too_big") >= 1, "{what}: the client was told");
        let route = lvs
            .lab
            .ns("client")
            .exec_ok(&["ip", "route", "get", &target.ip().to_string()])
            .unwrap();
        let mtu = 1500 - overhead;
        assert!(
            route.contains(&format!("mtu {mtu}")),
            "{what}: the client's route holds the tunnel's MTU {mtu}: {route}"
        );
    }
}

/// HTTP on 80 and UDP on 53 of the method's IPv6 VIP over IPv6 reals weighted 1:2:3,
/// and 16 KiB echoes on 7.
fn run_mode6(method: Method) {
    let what = format!("{method:?} over IPv6");
    let mut lvs = LvsLab::build(3).expect("lab");
    let wrr = Scheduler::WeightedRoundRobin;
    lvs.service6(method, Protocol::Tcp, 80, wrr, &WEIGHTS)
        .unwrap();
    lvs.service6(method, Protocol::Udp, 53, wrr, &WEIGHTS)
        .unwrap();
    lvs.service6(method, Protocol::Tcp, 7, Scheduler::Maglev, &[1, 1, 1])
        .unwrap();
    let vip = IpAddr::V6(vip6_for(method));
    lvs.assert_weighted_spread(vip, 60, &WEIGHTS, TIMEOUT, &what);
    // IPv6-in-IPv6 adds a 40-byte header.
    let overhead = if method == Method::Tunnel { 40 } else { 0 };
    echo_16k(&lvs, SocketAddr::new(vip, 7), overhead, &what);
    if method == Method::Tunnel {
        // Every request went through the reals' decap program.
        assert!(lvs.decap_stat("decap") >= 120, "{what}: decap");
    }
    assert_no_drops(&lvs, &what);
}

#[test]
fn dr6_answers_http_udp_and_full_size_segments_spread_by_weight() {
    director_tests::require_root();
    run_mode6(Method::Route);
}

#[test]
fn ipv6_in_ipv6_answers_http_udp_and_full_size_segments_spread_by_weight() {
    director_tests::require_root();
    run_mode6(Method::Tunnel);
}

#[test]
fn nat66_answers_http_udp_and_full_size_segments_spread_by_weight() {
    director_tests::require_root();
    run_mode6(Method::Masq);
}

/// With persistence (`-p`), every new connection of the client goes to the real its
/// first one went to, though round robin alone would spread them.
fn run_persistence6(method: Method) {
    let mut lvs = LvsLab::build(3).expect("lab");
    let vip = IpAddr::V6(vip6_for(method));
    let spec = ServiceSpec::new(Protocol::Tcp, vip, 80)
        .scheduler(Scheduler::RoundRobin)
        .persistent(300, IpAddr::V6(Ipv6Addr::from(u128::MAX)));
    lvs.service_at(&spec, method, true, &[1, 1, 1]).unwrap();
    let client = lvs.lab.ns("client");
    let answers: Vec<u8> = (0..12)
        .map(|i| {
            let body = http_get(client, &http_url(vip, 80), TIMEOUT)
                .unwrap_or_else(|e| panic!("{method:?}: request {i}: {e:#}"));
            LvsLab::real_of_answer(&body).unwrap()
        })
        .collect();
    assert!(
        answers.iter().all(|n| *n == answers[0]),
        "{method:?}: one client, one real: {answers:?}"
    );
    let templates = lvs.director.control.persistence_templates().unwrap();
    assert_eq!(templates.len(), 1, "{method:?}: {templates:?}");
}

#[test]
fn persistence6_keeps_the_client_on_one_real_by_dr_and_nat66() {
    director_tests::require_root();
    run_persistence6(Method::Route);
    run_persistence6(Method::Masq);
}

/// A long-lived IPv6 stream keeps flowing while its real is drained (weight 0), new
/// connections go to the others, and the real takes new ones again once weighted.
fn run_drain6(method: Method) {
    let mut lvs = LvsLab::build(3).expect("lab");
    let echo = lvs
        .service6(method, Protocol::Tcp, 7, Scheduler::Maglev, &[1, 1, 1])
        .unwrap();
    let http = lvs
        .service6(method, Protocol::Tcp, 80, Scheduler::Maglev, &[1, 1, 1])
        .unwrap();
    let vip = IpAddr::V6(vip6_for(method));
    let client = lvs.lab.ns("client");
    let mut stream = tcp_stream(client, SocketAddr::new(vip, 7)).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    for i in 0..10 {
        echo_round(&mut stream, i);
    }
    let n = lvs.real_holding(&echo);
    let set_weight = |control: &mut director_control::Control, w: u32| {
        for svc in [&echo, &http] {
            let port = if method == Method::Masq && svc.port == 80 {
                8080
            } else {
                svc.port
            };
            control
                .edit_real(svc, &RealSpec::new(real_ip(n, true), port, method, w))
                .unwrap();
        }
    };
    set_weight(&mut lvs.director.control, 0);
    for i in 10..30 {
        echo_round(&mut stream, i);
    }
    for i in 0..20 {
        let body = http_get(client, &http_url(vip, 80), TIMEOUT)
            .unwrap_or_else(|e| panic!("{method:?}: new connection {i}: {e:#}"));
        assert_ne!(
            LvsLab::real_of_answer(&body).unwrap(),
            n,
            "{method:?}: a new connection reached the drained real{n}"
        );
    }
    set_weight(&mut lvs.director.control, 1);
    let back = (0..60).any(|_| {
        let body = http_get(client, &http_url(vip, 80), TIMEOUT).unwrap();
        LvsLab::real_of_answer(&body).unwrap() == n
    });
    assert!(back, "{method:?}: real{n} gets new connections again");
    for i in 30..40 {
        echo_round(&mut stream, i);
    }
}

#[test]
fn long_lived_ipv6_stream_survives_its_real_draining_by_dr_and_nat66() {
    director_tests::require_root();
    run_drain6(Method::Route);
    run_drain6(Method::Masq);
}

/// `director -L -n` and `--stats` in the director's namespace (nsenter keeps bpffs).
fn director_list(lvs: &LvsLab, args: &[&str]) -> String {
    let state = lvs.state().bpffs.unwrap();
    let out = Command::new("nsenter")
        .arg(format!("--net={}", lvs.lab.ns("director").path().display()))
        .arg("--")
        .arg(director_bin())
        .arg("--bpffs")
        .arg(&state)
        .args(args)
        .output()
        .expect("running director");
    assert!(
        out.status.success(),
        "director {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The numbers after the address of the line starting with `prefix`.
fn numbers_of(listing: &str, prefix: &str) -> Vec<String> {
    let line = listing
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line {prefix:?} in\n{listing}"));
    line[prefix.len()..]
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn ipvsadm_listing_shows_the_ipv6_service_and_what_went_through_it() {
    director_tests::require_root();
    let mut lvs = LvsLab::build_pinned(3).expect("lab");
    let wrr = Scheduler::WeightedRoundRobin;
    lvs.service6(Method::Route, Protocol::Tcp, 80, wrr, &WEIGHTS)
        .unwrap();
    lvs.service6(Method::Masq, Protocol::Udp, 53, wrr, &[1])
        .unwrap();
    let vip = IpAddr::V6(vip6_for(Method::Route));
    let nat = SocketAddr::new(IpAddr::V6(vip6_for(Method::Masq)), 53);
    let client = lvs.lab.ns("client");
    for i in 0..12 {
        http_get(client, &http_url(vip, 80), TIMEOUT)
            .unwrap_or_else(|e| panic!("request {i}: {e:#}"));
    }
    for i in 0..5 {
        udp_request(client, nat, b"who", TIMEOUT)
            .unwrap_or_else(|e| panic!("UDP request {i}: {e:#}"));
    }

    // ipvsadm's layout: "%-4s %-...s %s" for the service, "  -> %-28s %-7s %-6d ..."
    // for its reals, IPv6 addresses in brackets.
    let list = director_list(&lvs, &["-L", "-n"]);
    assert!(list.contains("\nTCP  [fd00::100]:80 wrr\n"), "{list}");
    assert!(list.contains("\nUDP  [fd00::102]:53 wrr\n"), "{list}");
    for (n, w) in [(1, 1), (2, 2), (3, 3)] {
        let want = format!("  -> {:<28} Route   {w:<6} ", format!("[fd00:1::1{n}]:80"));
        assert!(list.contains(&want), "{want:?} in\n{list}");
    }
    let want = format!("  -> {:<28} Masq    1      ", "[fd00:1::11]:53");
    assert!(list.contains(&want), "{want:?} in\n{list}");

    // --stats: every connection counted for the service and split over its reals; DR
    // sees only the client's packets, NAT66 both ways.
    let stats = director_list(&lvs, &["-L", "-n", "--stats"]);
    let conns = |prefix: &str| -> u64 { numbers_of(&stats, prefix)[0].parse().unwrap() };
    assert_eq!(conns("TCP  [fd00::100]:80"), 12, "{stats}");
    let per_real: Vec<u64> = (1..=3)
        .map(|n| conns(&format!("  -> [fd00:1::1{n}]:80")))
        .collect();
    assert_eq!(per_real.iter().sum::<u64>(), 12, "{stats}");
    assert!(per_real.iter().all(|c| *c > 0), "{stats}");
    let dr = numbers_of(&stats, "TCP  [fd00::100]:80");
    assert!(dr[1].parse::<u64>().unwrap() >= 12 * 3, "InPkts: {stats}");
    assert_eq!(dr[2], "0", "DR sees no reply: {stats}");
    let nat = numbers_of(&stats, "UDP  [fd00::102]:53");
    assert_eq!(nat[0], "5", "{stats}");
    assert_eq!((nat[1].as_str(), nat[2].as_str()), ("5", "5"), "{stats}");
}

/// A tunnel service on `vip` over the reals' IPv6 addresses (`reals_v6`) or IPv4 ones,
/// through `tunnel`: HTTP and UDP spread by weight, 16 KiB echoes (the client learns the
/// MTU less the tunnel's overhead over the reals' family), every request unwrapped by
/// the reals' decap program as `decap_counter` counts.
fn run_tunnel(what: &str, vip: IpAddr, reals_v6: bool, tunnel: Tunnel, decap_counter: &str) {
    let mut lvs = LvsLab::build(3).expect("lab");
    lvs.decap_gue_port(GUE_PORT).unwrap();
    let wrr = Scheduler::WeightedRoundRobin;
    for (proto, port, sched, weights) in [
        (Protocol::Tcp, 80, wrr, &WEIGHTS[..]),
        (Protocol::Udp, 53, wrr, &WEIGHTS[..]),
        (Protocol::Tcp, 7, Scheduler::Maglev, &[1, 1, 1][..]),
    ] {
        let spec = ServiceSpec::new(proto, vip, port).scheduler(sched);
        lvs.tunnel_service_at(&spec, reals_v6, weights, tunnel)
            .unwrap();
    }
    lvs.assert_weighted_spread(vip, 60, &WEIGHTS, TIMEOUT, what);
    let family = if reals_v6 { FAMILY_V6 } else { FAMILY_V4 };
    let overhead = tunnel.kind.overhead_over(tunnel.csum.flags(), family);
    echo_16k(&lvs, SocketAddr::new(vip, 7), overhead.into(), what);
    assert!(
        lvs.decap_stat(decap_counter) >= 120,
        "{what}: {decap_counter} = {}",
        lvs.decap_stat(decap_counter)
    );
    for refused in ["decap_malformed", "decap_not_director", "decap_fragment"] {
        assert_eq!(lvs.decap_stat(refused), 0, "{what}: {refused}");
    }
    assert_no_drops(&lvs, what);
}

#[test]
fn ipv4_vip_over_ipv6_tunnel_reals_4in6() {
    director_tests::require_root();
    run_tunnel(
        "4in6",
        IpAddr::V4(VIP_TUN),
        true,
        Tunnel::default(),
        "decap",
    );
}

#[test]
fn ipv6_vip_over_ipv4_tunnel_reals_6in4() {
    director_tests::require_root();
    run_tunnel(
        "6in4",
        IpAddr::V6(VIP6_TUN),
        false,
        Tunnel::default(),
        "decap",
    );
}

#[test]
fn gue_and_gre_over_ipv6_answer_http_udp_and_full_size_segments() {
    director_tests::require_root();
    let vip = IpAddr::V6(VIP6_TUN);
    let gue = Tunnel {
        kind: TunType::Gue,
        port: GUE_PORT,
        csum: TunCsum::Csum,
    };
    run_tunnel("GUE over IPv6", vip, true, gue, "decap_gue");
    let gre = Tunnel {
        kind: TunType::Gre,
        port: 0,
        csum: TunCsum::NoCsum,
    };
    run_tunnel("GRE over IPv6", vip, true, gre, "decap_gre");
}
