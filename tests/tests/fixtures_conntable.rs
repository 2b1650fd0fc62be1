//! Fixtures for the connection table itself: a flow holds one way of its bucket, a full
//! bucket gives its least recently seen way to a new flow, counted as an eviction, and
//! two CPUs writing one bucket at once never leave one flow's key with another's entry.
//! Floods: new flows displace unconfirmed entries before established ones, and past the
//! flood limit DR flows go without entries and NAT flows never displace established ones.

use std::time::{Duration, Instant};

use director_common::{conn_state::ConnState, real::Method, service::Scheduler};
use director_control::{LoadOptions, Protocol, RealSpec, ServiceSpec, datapath::PROG_DIRECTOR};
use director_tests::{
    bench::{
        bpf::{Replay, Stamp},
        online_cpus, pin_thread,
    },
    fixture::{
        ACK, Action, CLIENT, CLIENT_MAC, DIRECTOR_MAC, FibLab, Harness, SYN, VIP, ip, nat_reply_in,
        nat_reply_out, real_ip, tcp4, udp4,
    },
};

/// CLOCK_MONOTONIC_COARSE, the clock the data path stamps entries with.
fn coarse_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec, ours.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    assert_eq!(rc, 0);
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

/// The fixture lab around a connection table of `entries` (4: one bucket of four ways).
fn small_table_lab(entries: u32) -> FibLab {
    FibLab::with_harness(Harness::with_options(&LoadOptions {
        conn_table: entries,
        table_size: 1021,
        max_services: 4,
        pin_dir: None,
        ..LoadOptions::default()
    }))
}

#[test]
fn a_full_bucket_gives_its_least_recently_seen_way_to_a_new_flow() {
    let mut f = small_table_lab(4);
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
                .map(|c| c.source.port())
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

#[test]
fn two_cpus_writing_one_bucket_never_mix_two_flows_entries() {
    // One bucket of four ways. One CPU sends six UDP flows to port 80 (one real) in
    // turn, the other six to port 81 (another real), as fast as they can: twelve flows
    // over four ways, so both CPUs keep claiming the bucket, evicting each other's
    // entries and finding their own. A way left with one flow's key and another's
    // entry would send a packet to the other service's real. (The bucket claim is what
    // rules that out; without it the window is a few stores wide, and a run like this
    // one rarely hits it: the test holds the behaviour, it cannot prove the protocol.)
    let mut f = small_table_lab(4);
    let _in = f.enter();
    let a = f.service(Protocol::Udp, 80);
    f.real(&a, 1, 80, Method::Route, 1);
    let b = f.service(Protocol::Udp, 81);
    f.real(&b, 2, 81, Method::Route, 1);
    let director = f.h.dp.program(PROG_DIRECTOR).fd().unwrap();
    let replays: Vec<Replay> = [([10, 4, 0, 0], 80), ([10, 5, 0, 0], 81)]
        .into_iter()
        .map(|(src, port)| {
            let frame = udp4(CLIENT_MAC, DIRECTOR_MAC, (src, 0), (VIP, port), &[0; 22]);
            Replay::new(director, &frame, f.eth0, Stamp::Counter { cycle: Some(6) }).unwrap()
        })
        .collect();
    // Few calls of many runs: each BPF_PROG_TEST_RUN call spends milliseconds setting
    // up before its runs, and the runs of the two CPUs must overlap.
    const CALLS: usize = 4;
    const RUNS: u32 = 40_000;
    assert!(
        online_cpus() >= 2,
        "two CPUs are needed to write one bucket at once"
    );
    std::thread::scope(|s| {
        for (i, r) in replays.iter().enumerate() {
            s.spawn(move || {
                pin_thread(i).unwrap();
                let mut out = Vec::new();
                for _ in 0..CALLS {
                    let t = r.run(RUNS, &mut out).unwrap();
                    assert_eq!(t.retval, 4, "XDP_REDIRECT");
                }
            });
        }
    });
    let sent = CALLS as u64 * RUNS as u64;
    assert_eq!(f.h.stat("redirect"), 2 * sent);
    eprintln!(
        "{} of {} stores found the bucket claimed by the other CPU; {} evictions",
        f.h.stat("conn_insert_failed"),
        2 * sent,
        f.h.stat("conn_evicted")
    );
    for (svc, n) in [(&a, 1), (&b, 2)] {
        assert_eq!(
            f.real_stats(svc, n).pkts_in,
            sent,
            "every packet to port {} went to its own service's real",
            svc.port
        );
    }
}

#[test]
fn a_nat_reply_entry_evicted_on_its_own_is_written_again_by_the_client_s_traffic() {
    // Two buckets (eight entries) and a churn of new UDP flows through another service:
    // the NAT connection's two entries are evicted again and again, sometimes the reply
    // direction alone. The client's next packet (a tick later) puts back whatever is
    // missing, so every reply from the real still leaves with the VIP.
    let mut f = small_table_lab(8);
    let _in = f.enter();
    let web = f.service(Protocol::Tcp, 80);
    f.real(&web, 1, 8080, Method::Masq, 1);
    let churn = f.service(Protocol::Udp, 53);
    f.real(&churn, 2, 53, Method::Route, 1);
    let client = |flags, body: &[u8]| {
        tcp4(
            CLIENT_MAC,
            DIRECTOR_MAC,
            (CLIENT, 40000),
            (VIP, 80),
            flags,
            body,
        )
    };
    let reply = nat_reply_in(ACK, b"200 OK");
    let unnatted = nat_reply_out(ACK, b"200 OK");
    f.h.run(&client(SYN, b""));
    let mut reply_alone = 0;
    let mut port = 1000u16;
    const ROUNDS: u32 = 100;
    for round in 0..ROUNDS {
        // A tick later the client sends (its entry's time moves on: the reply entry is
        // checked), then the real replies.
        next_tick();
        f.h.ingress_ifindex = f.eth0;
        assert_eq!(f.h.run(&client(ACK, b"GET /")).action, Action::Redirect);
        f.h.ingress_ifindex = f.eth1;
        let out = f.h.run(&reply);
        assert_eq!(
            (out.action, out.frame),
            (Action::Redirect, unnatted.clone()),
            "round {round}: the reply is un-NATed"
        );
        // In the same tick, six new flows: eight entries for eight ways, equally old, so
        // which ones give way depends on where they sit.
        f.h.ingress_ifindex = f.eth0;
        for _ in 0..6 {
            port += 1;
            let udp = udp4(
                CLIENT_MAC,
                DIRECTOR_MAC,
                ([10, 9, 0, 1], port),
                (VIP, 53),
                &[0; 22],
            );
            assert_eq!(f.h.run(&udp).action, Action::Redirect);
        }
        let held: Vec<u16> =
            f.h.dp
                .control
                .connection_entries()
                .unwrap()
                .iter()
                .map(|e| e.source.port())
                .collect();
        // The client's entry (from port 40000) is there, the real's (from 8080) is not.
        if held.contains(&40000) && !held.contains(&8080) {
            reply_alone += 1;
        }
    }
    // How often the case under test came up depends on where the random seed puts the
    // two keys (most runs: a few times; the round after each had to restore it).
    eprintln!("the reply entry was evicted on its own in {reply_alone} of {ROUNDS} rounds");
}

// ---- floods ----

/// The table's (source port, state) pairs, sorted.
fn held(f: &FibLab) -> Vec<(u16, ConnState)> {
    let mut v: Vec<(u16, ConnState)> =
        f.h.dp
            .control
            .connection_entries()
            .unwrap()
            .iter()
            .map(|e| (e.source.port(), e.state.unwrap()))
            .collect();
    v.sort_by_key(|(p, _)| *p);
    v
}

fn client_packet(port: u16, flags: director_tests::fixture::Flags) -> Vec<u8> {
    tcp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, port),
        (VIP, 80),
        flags,
        b"",
    )
}

/// One bucket holding one established DR flow, seen a tick before the flood starts (so
/// it is the least recently seen entry, which is all the table used to go by), and no
/// flood limit: only the table's choice of victim protects it.
fn one_established_flow() -> (FibLab, director_control::ServiceAddr) {
    let mut f = small_table_lab(4);
    let svc = {
        let _in = f.enter();
        let svc = f.service(Protocol::Tcp, 80);
        f.real(&svc, 1, 80, Method::Route, 1);
        f.h.control().set_flood_limit(0).unwrap();
        assert_eq!(f.h.run(&client_packet(2000, SYN)).action, Action::Redirect);
        next_tick();
        assert_eq!(f.h.run(&client_packet(2000, ACK)).action, Action::Redirect);
        svc
    };
    assert_eq!(held(&f), [(2000, ConnState::Established)]);
    next_tick();
    (f, svc)
}

#[test]
fn a_syn_flood_takes_the_ways_of_its_own_kind_never_an_established_flow() {
    let (f, svc) = one_established_flow();
    let _in = f.enter();
    for port in 3000..3050 {
        assert_eq!(f.h.run(&client_packet(port, SYN)).action, Action::Redirect);
    }
    let now = held(&f);
    assert!(
        now.contains(&(2000, ConnState::Established)),
        "the established flow lost its entry to the flood: {now:?}"
    );
    assert_eq!(now.len(), 4);
    assert_eq!(
        f.h.stat("conn_evicted"),
        47,
        "the SYNs displaced each other"
    );
    let conns = f.real_stats(&svc, 1).conns;
    assert_eq!(f.h.run(&client_packet(2000, ACK)).action, Action::Redirect);
    assert_eq!(
        f.real_stats(&svc, 1).conns,
        conns,
        "the established flow's packet is not a new connection"
    );
}

#[test]
fn an_ack_flood_of_unknown_flows_stays_unconfirmed_and_gives_way_first() {
    let (f, _svc) = one_established_flow();
    let _in = f.enter();
    for port in 3000..3050 {
        assert_eq!(f.h.run(&client_packet(port, ACK)).action, Action::Redirect);
    }
    let now = held(&f);
    assert!(
        now.contains(&(2000, ConnState::Established)),
        "the established flow lost its entry to the flood: {now:?}"
    );
    // Met mid-connection, seen once: not (yet) an established connection.
    assert!(
        now.iter()
            .filter(|(p, _)| *p != 2000)
            .all(|(_, s)| *s == ConnState::SynRecv),
        "{now:?}"
    );
    // A flow met mid-connection (say, after a director failover) is confirmed by its
    // next packet.
    let (survivor, _) = *now.iter().find(|(p, _)| *p != 2000).unwrap();
    next_tick();
    f.h.run(&client_packet(survivor, ACK));
    assert!(
        held(&f).contains(&(survivor, ConnState::Established)),
        "{:?}",
        held(&f)
    );
}

/// The flood limit counts new flows per CPU per second. A test cannot pin what second
/// a packet lands in; with a limit of one, every new flow but the first of a second is
/// over it, so the checks below hold unless seconds pass between two packets.
#[test]
fn past_the_flood_limit_dr_flows_are_forwarded_by_the_hash_without_an_entry() {
    let mut f = FibLab::new();
    let _in = f.enter();
    let svc = f.service(Protocol::Tcp, 80);
    for n in 1..=3 {
        f.real(&svc, n, 80, Method::Route, 1);
    }
    f.h.control().set_flood_limit(1).unwrap();
    let flows = 40u16;
    let mut macs = Vec::new();
    for i in 0..flows {
        let out = f.h.run(&client_packet(5000 + i, SYN));
        assert_eq!(out.action, Action::Redirect);
        macs.push(out.frame[..6].to_vec());
    }
    let stored = held(&f).len() as u64;
    let stateless = f.h.stat("conn_stateless");
    assert_eq!(
        stored + stateless,
        flows as u64,
        "every new flow is one or the other"
    );
    assert!(
        stateless >= flows as u64 - 2,
        "stored {stored}, stateless {stateless}"
    );
    // Without entries, the flows' next packets still reach their reals (Maglev on the
    // 5-tuple), and more than one real is in use.
    for i in 0..flows {
        let out = f.h.run(&client_packet(5000 + i, ACK));
        assert_eq!(out.action, Action::Redirect);
        assert_eq!(out.frame[..6], macs[i as usize], "flow {i} changed real");
    }
    macs.sort();
    macs.dedup();
    assert!(macs.len() > 1, "all flows went to one real");

    // Round robin cannot find a flow's real again: its flows are recorded regardless.
    let rr = ServiceSpec::new(Protocol::Tcp, ip(VIP), 81).scheduler(Scheduler::RoundRobin);
    f.h.control().add_service(&rr).unwrap();
    f.h.control()
        .add_real(
            &rr.addr,
            &RealSpec::new(ip(real_ip(1)), 81, Method::Route, 1),
        )
        .unwrap();
    let before = f.h.stat("conn_stateless");
    let syn = tcp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, 6000),
        (VIP, 81),
        SYN,
        b"",
    );
    assert_eq!(f.h.run(&syn).action, Action::Redirect);
    assert_eq!(f.h.stat("conn_stateless"), before);
    assert!(
        f.h.dp
            .control
            .connection_entries()
            .unwrap()
            .iter()
            .any(|e| e.destination.port() == 81)
    );

    // No limit: every flow is recorded.
    f.h.control().set_flood_limit(0).unwrap();
    let before = f.h.stat("conn_stateless");
    for i in 0..flows {
        f.h.run(&client_packet(7000 + i, SYN));
    }
    assert_eq!(f.h.stat("conn_stateless"), before);
}

#[test]
fn past_the_flood_limit_nat_never_displaces_an_established_connection() {
    // One bucket: two established NAT connections fill its four ways (an entry per
    // direction each).
    let mut f = small_table_lab(4);
    let _in = f.enter();
    let svc = f.service(Protocol::Tcp, 80);
    f.real(&svc, 1, 8080, Method::Masq, 1);
    for port in [40000, 40001] {
        f.h.run(&client_packet(port, SYN));
    }
    next_tick();
    for port in [40000, 40001] {
        assert_eq!(f.h.run(&client_packet(port, ACK)).action, Action::Redirect);
    }
    let established = held(&f);
    assert_eq!(
        established,
        [
            (8080, ConnState::Established),
            (8080, ConnState::Established),
            (40000, ConnState::Established),
            (40001, ConnState::Established),
        ]
    );
    f.h.control().set_flood_limit(1).unwrap();
    let out = f.h.run(&client_packet(40002, SYN));
    assert_eq!(
        out.action,
        Action::Drop,
        "no room but an established connection's"
    );
    assert_eq!(f.h.stat("drop_conn_table_full"), 1);
    assert_eq!(held(&f), established);
    // The established connection's replies still leave from the VIP.
    f.h.ingress_ifindex = f.eth1;
    let out = f.h.run(&nat_reply_in(ACK, b"data"));
    assert_eq!(
        (out.action, out.frame),
        (Action::Redirect, nat_reply_out(ACK, b"data"))
    );
}
