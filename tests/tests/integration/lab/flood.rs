//! Floods in the lab: 200,000 SYNs, or ACKs of connections that do not exist, from
//! random sources at a DR service, through a director whose connection table holds
//! 65,536 entries. An idle NAT connection (the real pushes data only after the flood)
//! and a DR stream running through it both come out with every byte delivered.

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use director_common::{real::Method, service::Scheduler};
use director_control::Protocol;
use director_tests::{
    lab::{Flood, flood, tcp_stream},
    lvs::{LvsLab, VIP_DR, VIP_NAT, real_addr},
};

const FLOOD: usize = 200_000;
const NAT_PORT: u16 = 7100;
const PUSH: usize = 256 * 1024;
const TIMEOUT: Duration = Duration::from_secs(10);

fn pattern(seed: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| (seed * 31 + i * 7) as u8).collect()
}

/// An echo conversation over the DR service until `stop`, checking every byte that
/// comes back. Returns the bytes echoed.
fn dr_stream(mut s: TcpStream, stop: Arc<AtomicBool>) -> JoinHandle<usize> {
    std::thread::spawn(move || {
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut echoed = 0;
        let mut buf = vec![0u8; 1024];
        for round in 0..1_000_000 {
            if (stop.load(Ordering::Relaxed) && round > 0) || Instant::now() > deadline {
                break;
            }
            let msg = pattern(round, buf.len());
            s.write_all(&msg).unwrap();
            s.read_exact(&mut buf)
                .unwrap_or_else(|e| panic!("DR stream, round {round}: {e}"));
            assert_eq!(buf, msg, "DR stream, round {round}: the echo differs");
            echoed += msg.len();
        }
        echoed
    })
}

fn run_flood(syn: bool, flood_limit: u32) {
    let what = if syn { "SYN" } else { "ACK" };
    let mut lvs = LvsLab::build(2).expect("lab");
    lvs.service(Method::Route, Protocol::Tcp, 7, Scheduler::Maglev, &[1, 1])
        .unwrap();
    lvs.service(Method::Route, Protocol::Tcp, 80, Scheduler::Maglev, &[1, 1])
        .unwrap();
    lvs.service(
        Method::Masq,
        Protocol::Tcp,
        NAT_PORT,
        Scheduler::Maglev,
        &[1],
    )
    .unwrap();
    lvs.control().set_flood_limit(flood_limit).unwrap();
    let lab = &lvs.lab;
    let client = lab.ns("client");

    // The NAT connection: open, then idle until the flood is over.
    let listener = lab
        .ns("real1")
        .run(|| TcpListener::bind(("0.0.0.0", NAT_PORT)))
        .unwrap();
    let mut nat_client =
        tcp_stream(client, SocketAddr::new(IpAddr::V4(VIP_NAT), NAT_PORT)).unwrap();
    nat_client.set_read_timeout(Some(TIMEOUT)).unwrap();
    let (mut nat_real, _) = listener.accept().unwrap();
    nat_real.set_read_timeout(Some(TIMEOUT)).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let stream = tcp_stream(client, SocketAddr::new(IpAddr::V4(VIP_DR), 7)).unwrap();
    let echo = dr_stream(stream, stop.clone());

    let sent = flood(
        client,
        Flood {
            ifname: "eth0",
            dst_mac: lab.mac("director", "eth0"),
            src_mac: lab.mac("client", "eth0"),
            sources: Ipv4Addr::new(10, 200, 0, 0),
            target: SocketAddrV4::new(VIP_DR, 80),
            syn,
            count: FLOOD,
            limit: Duration::from_secs(60),
        },
    )
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    let echoed = echo.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
    let stats = lvs.director.control.stats().unwrap();
    let stat = |name: &str| {
        stats
            .iter()
            .find(|(s, _)| s.name() == name)
            .map_or(0, |(_, v)| *v)
    };
    eprintln!(
        "{what} flood: {sent} frames sent; conn_evicted {}, conn_stateless {}, DR stream {echoed} bytes echoed",
        stat("conn_evicted"),
        stat("conn_stateless")
    );
    assert_eq!(sent, FLOOD, "the whole flood was sent");
    if flood_limit == 0 {
        assert!(
            stat("conn_evicted") > 0,
            "the flood never filled the table: the test proves nothing"
        );
    } else {
        assert!(
            stat("conn_stateless") > 0,
            "the flood never went past the flood limit"
        );
    }

    // The NAT connection's entries are still there, and it still works: the real
    // pushes first (its packets need the reply entry), then the client answers.
    let nat_entries = lvs
        .director
        .control
        .connection_entries()
        .unwrap()
        .into_iter()
        .filter(|e| {
            e.source == SocketAddr::from((real_addr(1), NAT_PORT)) || e.destination.ip() == VIP_NAT
        })
        .count();
    assert_eq!(
        nat_entries, 2,
        "the idle NAT connection lost entries to the flood"
    );
    let push = pattern(7, PUSH);
    nat_real.write_all(&push).unwrap();
    let mut got = vec![0u8; PUSH];
    nat_client
        .read_exact(&mut got)
        .unwrap_or_else(|e| panic!("the real's push after the {what} flood: {e}"));
    assert!(got == push, "the real's push arrived altered");
    nat_client.write_all(b"thanks").unwrap();
    let mut thanks = [0u8; 6];
    nat_real.read_exact(&mut thanks).unwrap();
    assert_eq!(&thanks, b"thanks");
}

#[test]
fn a_syn_flood_that_overflows_the_table_spares_established_connections() {
    director_tests::require_root();
    run_flood(true, 0);
}

#[test]
fn an_ack_flood_that_overflows_the_table_spares_established_connections() {
    director_tests::require_root();
    run_flood(false, 0);
}

#[test]
fn past_the_flood_limit_a_syn_flood_goes_without_entries() {
    director_tests::require_root();
    run_flood(true, 1_000);
}
