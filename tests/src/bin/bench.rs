//! `cargo xtask bench`: the data path's cost per packet through BPF_PROG_TEST_RUN, for
//! each forwarding method, established and new flows, next to a floor program (parse
//! Ethernet, swap MACs, XDP_TX) measured in the same run. Reports; never fails on a
//! number.
//!
//! Each measurement is one test run per call (repeat = 1: the kernel does not restore
//! the packet between repetitions, so a rewriting program would see its own output), the
//! median of many calls, with the spread (p10..p90). The verdict of every run is checked.

use std::net::IpAddr;

use aya::programs::{TestRun as _, TestRunOptions};
use director::{LoadOptions, Protocol, RealSpec, ServiceSpec};
use director_common::real::Method;
use director_tests::fixture::{
    ACK, Action, CLIENT_MAC, DIRECTOR_MAC, DIRECTOR_MAC_OUT, FibLab, Harness, REAL_SIDE_MAC, SYN,
    VIP, ip, real_ip, tcp4,
};

const CALLS: usize = 20_000;

struct Sample {
    median: f64,
    p10: f64,
    p90: f64,
}

fn run_once(h: &Harness, program: &str, frame: &[u8], ifindex: u32) -> (Action, u64) {
    run_repeated(h, program, frame, ifindex, 1)
}

/// Mean ns per run over `repeat` runs in one call (only for programs whose output frame
/// is a valid input with the same path: the floor, not-a-VIP, and DR's MAC rewrite).
fn run_repeated(
    h: &Harness,
    program: &str,
    frame: &[u8],
    ifindex: u32,
    repeat: u32,
) -> (Action, u64) {
    let mut out = vec![0u8; frame.len() + 64];
    let ctx: [u32; 6] = [0, frame.len() as u32, 0, ifindex, 0, 0];
    let ctx_bytes: Vec<u8> = ctx.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let opts = TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ctx_in: Some(&ctx_bytes),
        repeat,
        ..TestRunOptions::new()
    };
    let r = h.dp.program(program).test_run(opts).expect("test run");
    (
        Action::from_code(r.return_value),
        r.duration.as_nanos() as u64,
    )
}

fn measure(
    h: &Harness,
    program: &str,
    ifindex: u32,
    want: Action,
    mut frame: impl FnMut(usize) -> Vec<u8>,
) -> Sample {
    let frames: Vec<Vec<u8>> = (0..CALLS).map(&mut frame).collect();
    let mut ns: Vec<u64> = frames
        .iter()
        .map(|f| {
            let (action, d) = run_once(h, program, f, ifindex);
            assert_eq!(action, want, "{program}: unexpected verdict");
            d
        })
        .collect();
    ns.sort_unstable();
    let at = |q: f64| ns[((ns.len() - 1) as f64 * q) as usize] as f64;
    Sample {
        median: at(0.5),
        p10: at(0.1),
        p90: at(0.9),
    }
}

fn client(i: usize) -> [u8; 4] {
    [10, 0, 1 + (i >> 16) as u8, (i >> 8) as u8]
}

fn main() {
    let h = Harness::with_options(&LoadOptions {
        conn_table: 1 << 20,
        ..LoadOptions::default()
    });
    let mut f = FibLab::with_harness(h);
    let _in = f.enter();
    let (eth0, eth1) = (f.eth0, f.eth1);
    let methods = [
        (Method::Route, "DR", 80u16),
        (Method::Tunnel, "IPIP", 81),
        (Method::Masq, "NAT", 82),
    ];
    for (method, _, port) in methods {
        let spec = ServiceSpec::new(Protocol::Tcp, ip(VIP), port);
        f.h.control().add_service(&spec).unwrap();
        for n in 1..=3 {
            let real_port = if method == Method::Masq { 8080 } else { port };
            f.h.control()
                .add_real(
                    &spec.addr,
                    &RealSpec::new(ip(real_ip(n)), real_port, method, 1),
                )
                .unwrap();
        }
    }
    let h = &f.h;
    let floor = measure(h, "floor", eth0, Action::Tx, |i| {
        tcp4(
            CLIENT_MAC,
            DIRECTOR_MAC,
            (client(i), 40000),
            (VIP, 80),
            ACK,
            b"",
        )
    });
    println!(
        "BPF_PROG_TEST_RUN, {CALLS} single runs each; ns per packet: median (p10..p90), ratio to the floor\n"
    );
    println!(
        "{:<34} {:>8} {:>16} {:>7}",
        "program", "median", "p10..p90", "ratio"
    );
    let row = |name: &str, s: &Sample| {
        println!(
            "{:<34} {:>8.0} {:>7.0}..{:<8.0} {:>6.2}x",
            name,
            s.median,
            s.p10,
            s.p90,
            s.median / floor.median
        );
    };
    row("floor (swap MACs, XDP_TX)", &floor);
    let not_vip = measure(h, "director", eth0, Action::Pass, |i| {
        tcp4(
            CLIENT_MAC,
            DIRECTOR_MAC,
            (client(i), 40000),
            ([10, 0, 0, 1], 22),
            ACK,
            b"",
        )
    });
    row("not for a VIP (XDP_PASS)", &not_vip);
    let dr_est = tcp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        ([10, 0, 0, 9], 40000),
        (VIP, 80),
        ACK,
        b"",
    );
    run_once(h, "director", &dr_est, eth0);
    println!();
    println!(
        "Same, but 1,000,000 runs inside one call (mean; possible where the output is a valid input):"
    );
    for (name, prog, frame, want) in [
        (
            "floor",
            "floor",
            tcp4(
                CLIENT_MAC,
                DIRECTOR_MAC,
                ([10, 0, 0, 9], 40000),
                (VIP, 80),
                ACK,
                b"",
            ),
            Action::Tx,
        ),
        (
            "not for a VIP",
            "director",
            tcp4(
                CLIENT_MAC,
                DIRECTOR_MAC,
                ([10, 0, 0, 9], 40000),
                ([10, 0, 0, 1], 22),
                ACK,
                b"",
            ),
            Action::Pass,
        ),
        (
            "DR established flow",
            "director",
            dr_est.clone(),
            Action::Redirect,
        ),
    ] {
        let (action, ns) = run_repeated(h, prog, &frame, eth0, 1_000_000);
        assert_eq!(action, want);
        println!("{name:<34} {ns:>8}");
    }
    println!();
    for (method, name, port) in methods {
        // New flows: a SYN from a new client each time.
        let new = measure(h, "director", eth0, Action::Redirect, |i| {
            tcp4(
                CLIENT_MAC,
                DIRECTOR_MAC,
                (client(i), 10000 + (i & 0xff) as u16),
                (VIP, port),
                SYN,
                b"",
            )
        });
        // Established: the ACKs of one open flow.
        let syn = tcp4(
            CLIENT_MAC,
            DIRECTOR_MAC,
            ([10, 0, 0, 2], 40000),
            (VIP, port),
            SYN,
            b"",
        );
        run_once(h, "director", &syn, eth0);
        let est = measure(h, "director", eth0, Action::Redirect, |_| {
            tcp4(
                CLIENT_MAC,
                DIRECTOR_MAC,
                ([10, 0, 0, 2], 40000),
                (VIP, port),
                ACK,
                b"",
            )
        });
        row(&format!("{name} new flow (SYN)"), &new);
        row(&format!("{name} established flow"), &est);
        if method == Method::Masq {
            let conns = h.dp.control.connections().unwrap();
            let (_, c) = conns
                .iter()
                .find(|(k, _)| {
                    k.src == director_common::addr::v4_to_16([10, 0, 0, 2])
                        && u16::from_be(k.dport_be) == port
                })
                .expect("the NAT flow");
            let real =
                h.dp.control
                    .services()
                    .unwrap()
                    .into_iter()
                    .flat_map(|s| s.reals)
                    .find(|r| r.id == c.real)
                    .unwrap();
            let IpAddr::V4(real_addr) = real.spec.addr else {
                unreachable!()
            };
            let reply = measure(h, "director", eth1, Action::Redirect, |_| {
                tcp4(
                    REAL_SIDE_MAC,
                    DIRECTOR_MAC_OUT,
                    (real_addr.octets(), 8080),
                    ([10, 0, 0, 2], 40000),
                    ACK,
                    b"",
                )
            });
            row("NAT reply (un-NAT)", &reply);
        }
    }
}
