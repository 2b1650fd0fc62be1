//! The lab is dual-stack: IPv6 addresses usable at once, servers and clients of both
//! families, and the standard director lab's IPv6 addressing plan.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use director_tests::lab::{
    Endpoint, Host, Lab, Topology, cidr, http_get, http_url, tcp_stream, udp_exchange, udp_request,
};
use director_tests::lvs::{self, LvsLab, echo_round};

const T: Duration = Duration::from_secs(5);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// client fd00:11:1::2 -- fd00:11:1::1 router fd00:11:2::1 -- fd00:11:2::2 server
/// (fd00:11:100::1 on lo), IPv6 only.
fn routed6() -> Topology {
    Topology::new()
        .host(Host::new("client").default_route(ip("fd00:11:1::1")))
        .host(
            Host::new("router")
                .ipv6_forward()
                .route(cidr("fd00:11:100::/64"), ip("fd00:11:2::2")),
        )
        .host(
            Host::new("server")
                .default_route(ip("fd00:11:2::1"))
                .lo_addr(ip("fd00:11:100::1"), 128)
                .http(80)
                .udp(5353)
                .echo(7)
                .udp_echo(7),
        )
        .veth(
            Endpoint::new("client", "eth0").addr(ip("fd00:11:1::2"), 64),
            Endpoint::new("router", "eth0").addr(ip("fd00:11:1::1"), 64),
        )
        .veth(
            Endpoint::new("router", "eth1").addr(ip("fd00:11:2::1"), 64),
            Endpoint::new("server", "eth0").addr(ip("fd00:11:2::2"), 64),
        )
}

#[test]
fn ipv6_servers_and_clients_work_as_soon_as_the_lab_is_built() {
    director_tests::require_root();
    let lab = Lab::build(&routed6()).expect("build");
    let client = lab.ns("client");

    // No address waits for duplicate address detection (link-local ones included).
    for host in ["client", "router", "server"] {
        let tentative = lab
            .ns(host)
            .exec_ok(&["ip", "-6", "addr", "show", "tentative"])
            .unwrap();
        assert_eq!(tentative.trim(), "", "{host} has tentative addresses");
    }

    // HTTP over IPv6 through the router, to the link address and to the one on lo.
    let body = http_get(client, &http_url(ip("fd00:11:2::2"), 80), T).unwrap();
    assert_eq!(body, "server\n");
    let body = http_get(client, &http_url(ip("fd00:11:100::1"), 80), T).unwrap();
    assert_eq!(body, "server\n");

    // UDP answers come from the address asked (what a VIP on lo needs).
    let vip = SocketAddr::new(ip("fd00:11:100::1"), 5353);
    let (reply, from) = udp_exchange(client, vip, b"who", T).unwrap();
    assert_eq!(reply, b"server");
    assert_eq!(from, vip);
    let (reply, from) = udp_exchange(client, SocketAddr::new(vip.ip(), 7), b"x", T).unwrap();
    assert_eq!(
        (reply.as_slice(), from),
        (&b"x"[..], SocketAddr::new(vip.ip(), 7))
    );

    // A long-lived TCP stream over IPv6.
    let mut s = tcp_stream(client, SocketAddr::new(vip.ip(), 7)).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    for i in 0..20 {
        echo_round(&mut s, i);
    }
}

#[test]
fn the_director_lab_is_dual_stack() {
    director_tests::require_root();
    let lvs = LvsLab::build(2).expect("lab");
    let client = lvs.lab.ns("client");

    for n in 1..=2u8 {
        let want = format!("real{n}");
        for addr in [
            IpAddr::V4(lvs::real_addr(n)),
            IpAddr::V6(lvs::real_addr6(n)),
        ] {
            // Routed by the director's kernel (the XDP program passes what is not for a
            // service), both ways: the reals' default routes of both families.
            let body = http_get(client, &http_url(addr, 80), T)
                .unwrap_or_else(|e| panic!("HTTP to {addr}: {e:#}"));
            assert_eq!(body.trim(), want);
            let reply = udp_request(client, SocketAddr::new(addr, 53), b"who", T).unwrap();
            assert_eq!(String::from_utf8_lossy(&reply), want);
            let mut s = tcp_stream(client, SocketAddr::new(addr, 7)).unwrap();
            s.set_read_timeout(Some(T)).unwrap();
            echo_round(&mut s, 0);
        }
    }

    // The plan's IPv6 VIPs are where the IPv4 ones are: on the director's front
    // interface and on the reals' lo.
    let director = lvs
        .lab
        .ns("director")
        .exec_ok(&["ip", "-6", "addr", "show", "dev", "eth0"]);
    let director = director.unwrap();
    let real = lvs
        .lab
        .ns("real1")
        .exec_ok(&["ip", "-6", "addr", "show", "dev", "lo"]);
    let real = real.unwrap();
    for vip in [lvs::VIP6_DR, lvs::VIP6_TUN, lvs::VIP6_NAT] {
        assert!(
            director.contains(&format!("{vip}/128")),
            "{vip}: {director}"
        );
    }
    for vip in [lvs::VIP6_DR, lvs::VIP6_TUN] {
        assert!(real.contains(&format!("{vip}/128")), "{vip}: {real}");
    }
}
