//! Scale-out behind an ECMP router: three directors, each with BIRD and `director
//! daemon`, announce the VIPs by BGP (with BFD) to a router running BIRD with `merge
//! paths` and the kernel's L4 multipath hash. New connections spread over every
//! director; a director that dies is routed around before the BGP hold time (BFD); a VIP
//! whose last real fails its checks is withdrawn by every director. The lab itself
//! (topology, BIRD, directors, streams, counters) is `director_tests::scale_out`.
//!
//! ```text
//!  client 10.3.0.2 ── router 10.3.0.1 | 10.2.0.1 ──[dnet]── dir1..3 10.2.0.11-13 (XDP on eth0)
//!                                                      └─── real1..3 10.2.0.21-23 (VIPs on lo)
//! ```
//! DR: the reals answer the client through the router, not through a director.

use std::{net::Ipv4Addr, path::Path, process::Command, time::Duration, time::Instant};

use crate::support::director_bin;
use director_control::Datapath;
use director_tests::{
    lab::{Lab, wait_until},
    scale_out::{
        BFD_DEADLINE, CONVERGE, DIRECTOR_ASN, DIRECTORS, Director, JOINING, Scratch, VIP_ONE,
        VIP_WEB, attach_bridge_pass, bfd_sessions_up, director_addr, example, finish_streams,
        longest_pause, metric, nexthops, signal, start_router, start_streams, topology,
    },
};

/// A failed check seen by the daemons (interval 200 ms, fall 2), withdrawn, propagated.
const WITHDRAW: Duration = Duration::from_secs(20);
/// Established streams kept flowing while a director dies: with 24, all of them
/// avoiding one director of three has odds (2/3)^24, about 6 in 100,000.
const STREAMS: usize = 24;

fn start_director(lab: &Lab, scratch: &Scratch, n: u8) -> Director {
    director_tests::scale_out::start_director(lab, director_bin(), scratch, n).unwrap()
}

fn director_status(lab: &Lab, n: u8) -> String {
    director_tests::scale_out::director_status(lab, director_bin(), n)
}

fn connections(d: &Director) -> u64 {
    d.connections()
}

fn service_connections(d: &Director, port: u16) -> u64 {
    d.service_connections(port)
}

fn requests(lab: &Lab, count: usize) {
    director_tests::scale_out::requests(lab, count).unwrap_or_else(|e| panic!("{e:#}"));
}

#[test]
fn directors_announce_share_fail_over_by_bfd_and_withdraw_a_dead_vip() {
    director_tests::require_root();
    let lab = Lab::build(&topology()).unwrap();
    let scratch = Scratch::new(
        std::env::temp_dir().join(format!("{}-scale-out", lab.id())),
        Some(lab.id()),
    )
    .unwrap();
    let down_flag = scratch.down_flag();
    let mut helpers = Datapath::load_helpers().unwrap();
    attach_bridge_pass(&lab, &mut helpers).unwrap();
    start_router(&lab, &scratch).unwrap();
    let directors: Vec<Director> = (1..=DIRECTORS)
        .map(|n| start_director(&lab, &scratch, n))
        .collect();
    let router = lab.ns("router");
    let all: Vec<Ipv4Addr> = (1..=DIRECTORS).map(director_addr).collect();

    // Every director announces both VIPs; the router installs one route over all three.
    for vip in [VIP_WEB, VIP_ONE] {
        wait_until(
            CONVERGE,
            &format!("a route to {vip} over every director"),
            || nexthops(router, vip) == all,
        )
        .unwrap_or_else(|e| panic!("{e:#}; route: {:?}", nexthops(router, vip)));
    }
    let router_ctl = scratch.router_ctl();
    wait_until(CONVERGE, "a BFD session up with every director", || {
        bfd_sessions_up(&router_ctl) == DIRECTORS as usize
    })
    .unwrap();
    for n in 1..=DIRECTORS {
        let host = format!("dir{n}");
        assert_eq!(metric(&lab, &host, "director_bgp_up"), Some(1.0), "{host}");
        assert_eq!(
            metric(&lab, &host, "director_bgp_announced_vips"),
            Some(2.0),
            "{host}"
        );
        let status = director_status(&lab, n);
        assert!(
            status.contains(&format!(
                "announced (AS {DIRECTOR_ASN}): {VIP_WEB}/32, {VIP_ONE}/32\n"
            )) && status.contains("up, configuration taken")
                && !status.contains("warning: VIP"),
            "{host}: {status}"
        );
    }

    // New connections spread over every director.
    let before: Vec<u64> = directors.iter().map(connections).collect();
    requests(&lab, 60);
    let after: Vec<u64> = directors.iter().map(connections).collect();
    let carried: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    eprintln!("new connections per director: {carried:?}");
    assert!(
        carried.iter().all(|c| *c > 0),
        "every director carries new connections: {carried:?}"
    );
    assert!(carried.iter().sum::<u64>() >= 60, "{carried:?}");

    // dir2 dies: its daemon and BIRD killed, its link down. BFD takes it out of the
    // router's route long before the 30 s hold time would.
    // Established streams, some through dir2 (each director's new connections say
    // which), flowing while it dies.
    let through_dir2 = service_connections(&directors[1], 7);
    let streams = start_streams(&lab, STREAMS).unwrap();
    let through_dir2 = service_connections(&directors[1], 7) - through_dir2;
    eprintln!("{through_dir2} of {STREAMS} streams go through dir2");
    assert!(through_dir2 > 0, "some streams go through dir2");

    let dead = &directors[1];
    // Its link goes first, so that no FIN or RST of the dying BGP session reaches the
    // router: only BFD can tell it before the hold time.
    let t = Instant::now();
    dead.kill(&lab).unwrap();
    let alive: Vec<Ipv4Addr> = vec![director_addr(1), director_addr(3)];
    wait_until(BFD_DEADLINE, "the router to drop dir2's path", || {
        nexthops(router, VIP_WEB) == alive
    })
    .unwrap_or_else(|e| panic!("{e:#}; route: {:?}", nexthops(router, VIP_WEB)));
    eprintln!("dir2's path dropped after {:?}", t.elapsed());

    // Every stream goes on, those of dir2 through the others to the same real, with no
    // byte lost.
    let worst = longest_pause(&finish_streams(streams).unwrap());
    eprintln!("longest pause of an established stream over the failover: {worst:?}");

    // New connections all succeed, through the two others.
    let before: Vec<u64> = directors.iter().map(connections).collect();
    requests(&lab, 30);
    let after: Vec<u64> = directors.iter().map(connections).collect();
    assert_eq!(after[1], before[1], "nothing reaches the dead director");
    assert_eq!(
        (after[0] - before[0]) + (after[2] - before[2]),
        30,
        "the others carry every new connection"
    );

    // VIP_ONE's only real fails its checks: every live director withdraws it and the
    // router has no route left to it; the web VIP stays.
    std::fs::write(&down_flag, "").unwrap();
    wait_until(WITHDRAW, &format!("the router to lose {VIP_ONE}"), || {
        nexthops(router, VIP_ONE).is_empty()
    })
    .unwrap_or_else(|e| panic!("{e:#}; route: {:?}", nexthops(router, VIP_ONE)));
    for host in ["dir1", "dir3"] {
        assert_eq!(
            metric(&lab, host, "director_bgp_announced_vips"),
            Some(1.0),
            "{host}"
        );
    }
    let status = director_status(&lab, 1);
    assert!(
        status.contains(&format!("announced (AS {DIRECTOR_ASN}): {VIP_WEB}/32\n")),
        "{status}"
    );
    assert_eq!(nexthops(router, VIP_WEB), alive);
    requests(&lab, 5);

    // A graceful stop: SIGTERM to dir3's daemon withdraws its routes through BGP (its
    // BIRD keeps running, so BFD has nothing to do with it) before the daemon exits. No
    // connection is reset by it: the streams that went through dir3 go on through dir1
    // (the same Maglev table picks the same real), and dir3's program still forwards
    // what the router sends it while the withdrawal spreads.
    let streams = start_streams(&lab, STREAMS).unwrap();
    signal(directors[2].daemon, libc::SIGTERM);
    wait_until(WITHDRAW, "dir3's daemon to withdraw on SIGTERM", || {
        nexthops(router, VIP_WEB) == [director_addr(1)]
    })
    .unwrap_or_else(|e| panic!("{e:#}; route: {:?}", nexthops(router, VIP_WEB)));
    // SAFETY: signal 0 only checks that the process exists.
    let bird_alive = unsafe { libc::kill(directors[2].bird as i32, 0) } == 0;
    assert!(
        bird_alive,
        "dir3's BIRD still runs: the withdrawal was the daemon's"
    );
    let worst = longest_pause(&finish_streams(streams).unwrap());
    eprintln!("graceful stop of dir3: every stream went on; longest pause: {worst:?}");
    requests(&lab, 10);

    // A fourth director joins while streams flow through dir1: it announces, the router
    // moves part of the flows to it, and they keep their real (no byte lost); it takes
    // a share of the new connections.
    let streams = start_streams(&lab, STREAMS).unwrap();
    let dir4 = start_director(&lab, &scratch, JOINING);
    wait_until(CONVERGE, "the router to add dir4's path", || {
        nexthops(router, VIP_WEB) == [director_addr(1), director_addr(JOINING)]
    })
    .unwrap_or_else(|e| panic!("{e:#}; route: {:?}", nexthops(router, VIP_WEB)));
    let worst = longest_pause(&finish_streams(streams).unwrap());
    let moved = service_connections(&dir4, 7);
    eprintln!("{moved} of {STREAMS} streams moved to dir4; longest pause: {worst:?}");
    // Going from one next hop to two moves about half the flows: none moving has odds
    // of (1/2)^24.
    assert!(moved > 0, "some established streams moved to dir4");
    let before = connections(&dir4);
    requests(&lab, 30);
    let share = connections(&dir4) - before;
    eprintln!("dir4 carried {share} of 30 new connections");
    assert!(share > 0, "dir4 takes a share of the new connections");
}

/// The examples of docs/scale-out.md as BIRD reads them: the router's configuration,
/// and a director's with the file the daemon generates from examples/scale-out.toml,
/// as it is and with an IPv6 service and neighbor added.
#[test]
fn the_example_bird_configurations_parse() {
    director_tests::require_root();
    let dir = std::env::temp_dir().join(format!("scale-out-examples-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let scratch = Scratch::new(dir.clone(), None).unwrap();
    let toml = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/scale-out.toml");
    // The example as it is, and made dual-stack: an IPv6 service and an IPv6 neighbor,
    // whose file has the IPv6 static protocol and session.
    let dual = dir.join("dual-stack.toml");
    std::fs::write(
        &dual,
        std::fs::read_to_string(&toml).unwrap().replace(
            r#"vips = ["10.0.0.100", "10.0.0.101"]"#,
            r#"vips = ["10.0.0.100", "10.0.0.101", "2001:db8::100"]"#,
        ) + "\n[[service]]\nname = \"web6\"\naddress = \"[2001:db8::100]:80\"\nprotocol = \"tcp\"\n\
               method = \"dr\"\n[[service.real]]\naddress = \"[2001:db8:1::11]\"\n\
               \n[[bgp.neighbor]]\naddress = \"2001:db8:ff::1\"\nasn = 65000\nbfd = true\n",
    )
    .unwrap();
    let mut confs = Vec::new();
    for (name, source) in [("director", &toml), ("director-dual-stack", &dual)] {
        let config = director_daemon::config::load(source).unwrap_or_else(|e| panic!("{e}"));
        let bgp = config.bgp.expect("[bgp]");
        let include = dir.join(format!("{name}-include.conf"));
        let vips = bgp.vips.clone();
        let text = director_daemon::bgp::bird::render(&bgp, &vips);
        assert_eq!(
            text.contains("route 2001:db8::100/128 blackhole;"),
            name == "director-dual-stack",
            "{text}"
        );
        std::fs::write(&include, text).unwrap();
        let conf = dir.join(format!("bird-{name}.conf"));
        std::fs::write(
            &conf,
            example("bird-director.conf")
                .unwrap()
                .replace("/etc/bird/director.conf", include.to_str().unwrap()),
        )
        .unwrap();
        confs.push(conf);
    }
    let router = dir.join("bird-router.conf");
    std::fs::write(&router, example("bird-router.conf").unwrap()).unwrap();
    confs.push(router);
    for conf in &confs {
        let out = Command::new("bird")
            .arg("-p")
            .arg("-c")
            .arg(conf)
            .output()
            .expect("bird (Debian's bird2; cargo xtask setup installs it)");
        assert!(
            out.status.success(),
            "{}: {}",
            conf.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    drop(scratch);
}
