//! Real IPv6 traffic through the director: HTTP and UDP to an IPv6 VIP by DR and by
//! NAT66, answered by both reals, in the dual-stack director lab.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use director_common::{real::Method, service::Scheduler};
use director_control::{Protocol, RealSpec, ServiceSpec};
use director_tests::{
    lab::{http_get, http_url, udp_request},
    lvs::{LvsLab, real_addr6, vip6_for},
};

const TIMEOUT: Duration = Duration::from_secs(5);
const REQUESTS: u32 = 20;

fn run_mode6(method: Method) {
    let mut lvs = LvsLab::build(2).expect("lab");
    let vip = IpAddr::V6(vip6_for(method));
    for (proto, port) in [(Protocol::Tcp, 80), (Protocol::Udp, 53)] {
        let spec = ServiceSpec::new(proto, vip, port).scheduler(Scheduler::RoundRobin);
        lvs.director.control.add_service(&spec).unwrap();
        let real_port = if method == Method::Masq && port == 80 {
            8080
        } else {
            port
        };
        for n in 1..=2 {
            let real = RealSpec::new(IpAddr::V6(real_addr6(n)), real_port, method, 1);
            lvs.director.control.add_real(&spec.addr, &real).unwrap();
        }
    }
    let client = lvs.lab.ns("client");
    let mut http = [0u32; 3];
    let mut udp = [0u32; 3];
    for i in 0..REQUESTS {
        let body = http_get(client, &http_url(vip, 80), TIMEOUT)
            .unwrap_or_else(|e| panic!("{method:?}: HTTP request {i} to [{vip}]:80: {e:#}"));
        http[LvsLab::real_of_answer(&body).unwrap() as usize] += 1;
        let answer = udp_request(client, SocketAddr::new(vip, 53), b"who", TIMEOUT)
            .unwrap_or_else(|e| panic!("{method:?}: UDP request {i} to [{vip}]:53: {e:#}"));
        udp[LvsLab::real_of_answer(&String::from_utf8_lossy(&answer)).unwrap() as usize] += 1;
    }
    // Round robin (a cursor per CPU) over two reals: each CPU alternates, so both
    // reals answer.
    for (what, counts) in [("HTTP", http), ("UDP", udp)] {
        assert!(
            counts[1] > 0 && counts[2] > 0,
            "{method:?}: {what} answers per real: {counts:?}"
        );
    }
    let stats = lvs.director.control.stats().unwrap();
    let get = |name: &str| {
        stats
            .iter()
            .find(|(s, _)| s.name() == name)
            .map(|(_, v)| *v)
            .unwrap()
    };
    assert!(get("tx") + get("redirect") > 0, "{stats:?}");
    assert_eq!(
        get("drop_no_neigh") + get("drop_fib") + get("drop_no_real") + get("drop_malformed"),
        0,
        "{stats:?}"
    );
}

#[test]
fn dr6_answers_http_and_udp_through_an_ipv6_vip() {
    director_tests::require_root();
    run_mode6(Method::Route);
}

#[test]
fn nat66_answers_http_and_udp_through_an_ipv6_vip() {
    director_tests::require_root();
    run_mode6(Method::Masq);
}
