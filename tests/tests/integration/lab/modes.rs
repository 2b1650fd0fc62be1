//! Real traffic through the director in network namespaces: HTTP and UDP through the VIP
//! in each forwarding method, spread by weight, and a long-lived stream that survives its
//! real being drained.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use director_common::{real::Method, service::Scheduler};
use director_control::{Protocol, RealSpec};
use director_tests::{
    lab::{http_get, tcp_stream},
    lvs::{LvsLab, echo_round, real_addr, vip_for},
};

const TIMEOUT: Duration = Duration::from_secs(5);
const WEIGHTS: [u32; 3] = [1, 2, 3];

fn run_mode(method: Method) {
    let mut lvs = LvsLab::build(3).expect("lab");
    lvs.service(
        method,
        Protocol::Tcp,
        80,
        Scheduler::WeightedRoundRobin,
        &WEIGHTS,
    )
    .unwrap();
    lvs.service(
        method,
        Protocol::Udp,
        53,
        Scheduler::WeightedRoundRobin,
        &WEIGHTS,
    )
    .unwrap();
    let vip = vip_for(method);
    lvs.assert_weighted_spread(vip, 60, &WEIGHTS, TIMEOUT, &format!("{method:?}"));
    let stats = lvs.director.control.stats().unwrap();
    let get = |name: &str| {
        stats
            .iter()
            .find(|(s, _)| s.name() == name)
            .map(|(_, v)| *v)
            .unwrap()
    };
    assert_eq!(
        get("drop_no_neigh") + get("drop_fib") + get("drop_no_real"),
        0,
        "{stats:?}"
    );
}

#[test]
fn dr_answers_http_and_udp_through_the_vip_spread_by_weight() {
    director_tests::require_root();
    run_mode(Method::Route);
}

#[test]
fn ipip_answers_http_and_udp_through_the_vip_spread_by_weight() {
    director_tests::require_root();
    run_mode(Method::Tunnel);
}

#[test]
fn nat_answers_http_and_udp_through_the_vip_spread_by_weight() {
    director_tests::require_root();
    run_mode(Method::Masq);
}

#[test]
fn long_lived_stream_survives_its_real_draining_to_weight_zero_and_back() {
    director_tests::require_root();
    let mut lvs = LvsLab::build(3).expect("lab");
    let method = Method::Route;
    let echo = lvs
        .service(method, Protocol::Tcp, 7, Scheduler::Maglev, &[1, 1, 1])
        .unwrap();
    let http = lvs
        .service(method, Protocol::Tcp, 80, Scheduler::Maglev, &[1, 1, 1])
        .unwrap();
    let vip = vip_for(method);
    let client = lvs.lab.ns("client");
    let mut stream = tcp_stream(client, SocketAddr::new(IpAddr::V4(vip), 7)).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    for i in 0..10 {
        echo_round(&mut stream, i);
    }
    // The real holding the stream, from the connection table.
    let n = lvs.real_holding(&echo);
    let real = IpAddr::V4(real_addr(n));
    // Drain that real in both services.
    for svc in [&echo, &http] {
        lvs.director
            .control
            .edit_real(svc, &RealSpec::new(real, svc.port, method, 0))
            .unwrap();
    }
    for i in 10..30 {
        echo_round(&mut stream, i);
    }
    for i in 0..20 {
        let body = http_get(client, &format!("http://{vip}/"), TIMEOUT)
            .unwrap_or_else(|e| panic!("new connection {i}: {e:#}"));
        assert_ne!(
            LvsLab::real_of_answer(&body).unwrap(),
            n,
            "a new connection reached the drained real{n}"
        );
    }
    // Back to its weight: it takes new connections again; the stream never noticed.
    for svc in [&echo, &http] {
        lvs.director
            .control
            .edit_real(svc, &RealSpec::new(real, svc.port, method, 1))
            .unwrap();
    }
    let back = (0..60).any(|_| {
        let body = http_get(client, &format!("http://{vip}/"), TIMEOUT).unwrap();
        LvsLab::real_of_answer(&body).unwrap() == n
    });
    assert!(
        back,
        "real{n} gets new connections again after its weight is restored"
    );
    for i in 30..40 {
        echo_round(&mut stream, i);
    }
}
