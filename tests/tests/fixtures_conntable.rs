//! Fixtures for the connection table itself: a flow holds one way of its bucket, and a
//! full bucket gives its least recently seen way to a new flow, counted as an eviction.

use std::time::{Duration, Instant};

use director::{LoadOptions, Protocol};
use director_common::{conntrack::FlowKey, real::Method};
use director_tests::fixture::{
    ACK, Action, CLIENT, CLIENT_MAC, DIRECTOR_MAC, FibLab, Harness, SYN, VIP, tcp4,
};

/// CLOCK_MONOTONIC_COARSE, the clock the data path stamps entries with.
fn coarse_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) },
        0
    );
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Wait until the coarse clock has ticked, so the next packet's stamp is later than the
/// last one's.
fn next_tick() {
    let start = coarse_now();
    let deadline = Instant::now() + Duration::from_secs(1);
    while coarse_now() == start {
        assert!(Instant::now() < deadline, "the coarse clock did not tick");
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn sport_of(k: &FlowKey) -> u16 {
    u16::from_be(k.sport_be)
}

#[test]
fn a_full_bucket_gives_its_least_recently_seen_way_to_a_new_flow() {
    // Four entries: one bucket of four ways.
    let mut f = FibLab::with_harness(Harness::with_options(&LoadOptions {
        conn_table: 4,
        table_size: 1021,
        max_services: 4,
        pin_dir: None,
        ..LoadOptions::default()
    }));
    let _in = f.enter();
    let svc = f.service(Protocol::Tcp, 80);
    f.real(&svc, 1, 80, Method::Route, 1);
    let packet = |port: u16, flags| {
        tcp4(
            CLIENT_MAC,
            DIRECTOR_MAC,
            (CLIENT, port),
            (VIP, 80),
            flags,
            b"",
        )
    };
    let ports = |f: &FibLab| {
        let mut p: Vec<u16> =
            f.h.dp
                .control
                .connections()
                .unwrap()
                .iter()
                .map(|(k, _)| sport_of(k))
                .collect();
        p.sort();
        p
    };

    for port in [1001, 1002, 1003, 1004] {
        assert_eq!(f.h.run(&packet(port, SYN)).action, Action::Redirect);
        next_tick();
    }
    // A SYN of a 5-tuple the table holds takes its own way again, not a second one.
    f.h.run(&packet(1001, SYN));
    assert_eq!(ports(&f), [1001, 1002, 1003, 1004]);
    assert_eq!(f.h.stat("conn_evicted"), 0);
    // 1001 was just seen again: 1002 is now the least recently seen.
    next_tick();
    f.h.run(&packet(1005, SYN));
    assert_eq!(ports(&f), [1001, 1003, 1004, 1005]);
    assert_eq!(
        f.h.stat("conn_evicted"),
        1,
        "a live entry gave way and was counted"
    );
    // The evicted flow is scheduled again on its next packet and takes the way of the
    // least recently seen flow, 1003; the flows that kept their ways are still found.
    next_tick();
    f.h.run(&packet(1002, ACK));
    assert_eq!(ports(&f), [1001, 1002, 1004, 1005]);
    let conns_before = f.real_stats(&svc, 1).conns;
    for port in [1001, 1002, 1004, 1005] {
        assert_eq!(f.h.run(&packet(port, ACK)).action, Action::Redirect);
    }
    assert_eq!(
        f.real_stats(&svc, 1).conns,
        conns_before,
        "packets of flows in the table are not new connections"
    );
    assert_eq!(f.h.stat("conn_evicted"), 2);
    assert_eq!(f.h.stat("conn_insert_failed"), 0);
}
