//! Real traffic through GUE and GRE tunnels: for each encapsulation, HTTP and UDP through
//! the VIP spread 1:2:3 over reals that unwrap it with the decap program, and an upload
//! of full-size segments that completes once the client has learnt the tunnel's path
//! MTU.

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use director_common::{real::TunType, service::Scheduler};
use director_control::{
    Protocol,
    model::{TunCsum, Tunnel},
};
use director_tests::{
    lab::tcp_stream,
    lvs::{LvsLab, VIP_TUN},
};

const TIMEOUT: Duration = Duration::from_secs(10);
const WEIGHTS: [u32; 3] = [1, 2, 3];
const GUE_PORT: u16 = 6080;

fn run_tunnel(name: &str, tunnel: Tunnel, decap_counter: &str) {
    let mut lvs = LvsLab::build(3).expect("lab");
    lvs.decap_gue_port(GUE_PORT).unwrap();
    let wrr = Scheduler::WeightedRoundRobin;
    lvs.tunnel_service(Protocol::Tcp, 80, wrr, &WEIGHTS, tunnel)
        .unwrap();
    lvs.tunnel_service(Protocol::Udp, 53, wrr, &WEIGHTS, tunnel)
        .unwrap();
    lvs.tunnel_service(Protocol::Tcp, 7, Scheduler::Maglev, &[1], tunnel)
        .unwrap();
    let client = lvs.lab.ns("client");
    let n = 60;
    lvs.assert_weighted_spread(VIP_TUN, n, &WEIGHTS, TIMEOUT, name);

    // 16 KiB writes on 1500-byte links: full-size segments that no longer fit once
    // wrapped. The client learns the path MTU less this tunnel's overhead and every
    // byte comes back from the echo server.
    let mut s = tcp_stream(client, SocketAddr::new(IpAddr::V4(VIP_TUN), 7)).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    for round in 0..4u8 {
        let chunk: Vec<u8> = (0..16 * 1024).map(|i| (i as u8) ^ round).collect();
        s.write_all(&chunk).unwrap();
        let mut back = vec![0u8; chunk.len()];
        s.read_exact(&mut back)
            .unwrap_or_else(|e| panic!("{name}: round {round}: the echo of 16 KiB: {e}"));
        assert!(back == chunk, "{name}: round {round}: echoed bytes differ");
    }
    assert!(lvs.stat("icmp_too_big") >= 1, "{name}: the client was told");
    let mtu = 1500 - tunnel.kind.overhead(tunnel.csum.flags());
    let route = client
        .exec_ok(&["ip", "route", "get", &VIP_TUN.to_string()])
        .unwrap();
    assert!(
        route.contains(&format!("mtu {mtu}")),
        "{name}: the client's route cache holds the tunnel's MTU {mtu}: {route}"
    );

    // Every request went through the reals' decap program as this encapsulation.
    assert!(
        lvs.decap_stat(decap_counter) >= 2 * n as u64,
        "{name}: {decap_counter} = {}",
        lvs.decap_stat(decap_counter)
    );
    assert_eq!(lvs.decap_stat("decap"), 0, "{name}: no IPIP was sent");
    for refused in ["decap_malformed", "decap_not_director", "decap_fragment"] {
        assert_eq!(lvs.decap_stat(refused), 0, "{name}: {refused}");
    }
    assert_eq!(
        lvs.stat("drop_no_neigh") + lvs.stat("drop_fib") + lvs.stat("drop_encap"),
        0,
        "{name}"
    );
}

#[test]
fn gue_answers_http_udp_and_full_size_segments_spread_by_weight() {
    director_tests::require_root();
    let tunnel = Tunnel {
        kind: TunType::Gue,
        port: GUE_PORT,
        csum: TunCsum::NoCsum,
    };
    run_tunnel("GUE", tunnel, "decap_gue");
}

#[test]
fn gue_with_checksums_answers_http_udp_and_full_size_segments() {
    director_tests::require_root();
    let tunnel = Tunnel {
        kind: TunType::Gue,
        port: GUE_PORT,
        csum: TunCsum::Csum,
    };
    run_tunnel("GUE with checksums", tunnel, "decap_gue");
}

#[test]
fn gre_answers_http_udp_and_full_size_segments_spread_by_weight() {
    director_tests::require_root();
    let tunnel = Tunnel {
        kind: TunType::Gre,
        port: 0,
        csum: TunCsum::NoCsum,
    };
    run_tunnel("GRE", tunnel, "decap_gre");
}

#[test]
fn gre_with_checksums_answers_http_udp_and_full_size_segments() {
    director_tests::require_root();
    let tunnel = Tunnel {
        kind: TunType::Gre,
        port: 0,
        csum: TunCsum::Csum,
    };
    run_tunnel("GRE with checksums", tunnel, "decap_gre");
}
