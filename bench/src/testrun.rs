//! Parts 1 and 2 of the suite: the data path's cost per packet through
//! BPF_PROG_TEST_RUN, next to the floor program (parse Ethernet, swap MACs, XDP_TX).
//!
//! Method (see [`super::bpf`]): every sample is one test-run call of `batch` iterations
//! of the replay program, which restores the original frame before each iteration and
//! tail-calls the program under test. The replay costs the same whatever it calls, so
//! the cost above the floor of a case is `replay(case) - replay(floor)`, taken within
//! one round (a round measures the floor, every case, the floor again). The reported
//! ns/packet is that difference plus the floor's own cost (the floor needs no restore,
//! so it runs with a plain `repeat`). Every iteration's verdict is checked through the
//! director's per-outcome counters, and every new-flow iteration through the service's
//! connection counter.
//!
//! A second, independent method is reported next to it: one run per call (repeat of
//! one) with a fresh frame each call, the median of many calls. It includes what a call
//! costs around the program (timer reads) and runs the program with cold branch
//! predictors and caches each time, so its figures are higher; the difference to the
//! floor measured the same way is what compares.

use std::{collections::HashMap, net::IpAddr};

use anyhow::{Context as _, Result, bail, ensure};
use aya::maps::{HashMap as BpfHashMap, Map, MapData};
use director_common::{
    addr::PROTO_IPV6,
    maps::SERVICES,
    real::{Method, TunType},
    service::{Service, ServiceKey},
    stats::Stat,
};
use director_control::{
    LoadOptions, Protocol, RealSpec, ServiceAddr, ServiceSpec,
    datapath::{PROG_DIRECTOR, PROG_FLOOR},
    model::{TunCsum, Tunnel},
};

use super::{
    BpffsDir, Dist, Options, bench_cpu,
    bpf::{Replay, Stamp, TableKind, insert_cost, test_run},
    pin_thread, unpin_thread,
};
use director_tests::fixture::{
    ACK, CLIENT_MAC, DIRECTOR_MAC, DIRECTOR_MAC_OUT, FibLab, Harness, REAL_SIDE_MAC, SYN, VIP,
    assert_checksums_valid, ip, real_ip, tcp4, udp4,
};
use director_tests::fixture6::{CLIENT6, VIP6, assert_l4_checksum6, dual_stack, real6, tcp6, udp6};

const XDP_TX: u32 = 3;

/// What kind of packet a case sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// A packet of an open flow (client to VIP).
    Established,
    /// The first packet of a new flow (a SYN for TCP); a different, never-seen flow every
    /// iteration: its table bucket and entry are cold memory.
    New,
    /// A TCP SYN of the same 5-tuple every iteration (a reconnect from a recent client
    /// port): scheduled anew each time (a SYN always is), with the table's memory for it
    /// warm. The scheduling work of a new flow without the cache misses of a never-seen
    /// key - and how a replayed SYN measures any balancer.
    NewSame,
    /// A NAT reply (real to client), un-NATed back to the VIP.
    Reply,
    /// A packet for no virtual service (passed to the kernel).
    NotVip,
    /// A packet of one of many open flows, in turn (`n` flows).
    EstablishedMany(u32),
}

impl Flow {
    pub fn label(self) -> String {
        match self {
            Flow::Established => "established".into(),
            Flow::New => "new flow".into(),
            Flow::NewSame => "new flow, same 5-tuple (SYN again)".into(),
            Flow::Reply => "reply (un-NAT)".into(),
            Flow::NotVip => "not a VIP".into(),
            Flow::EstablishedMany(n) => {
                format!("established, {} flows in turn", super::thousands(n as f64))
            }
        }
    }
}

pub fn proto_label(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
    }
}

/// One measured case.
#[derive(Clone, Debug)]
pub struct CaseResult {
    /// "DR", "IPIP", "GUE", "GRE", "NAT", one of [`MODES6`]' names, or "-" (not a
    /// VIP).
    pub mode: String,
    pub proto: Protocol,
    pub flow: Flow,
    /// Cost above the floor, ns per packet (replay method), over rounds.
    pub above: Dist,
    /// The case's own cost: floor + above (median).
    pub ns: f64,
    /// `ns` / floor.
    pub ratio: f64,
    /// One run per call: ns per call over calls.
    pub single: Dist,
    /// `single.median` minus the floor's single-run median.
    pub single_above: f64,
}

impl CaseResult {
    pub fn label(&self) -> String {
        if self.flow == Flow::NotVip {
            return format!("{} not a VIP", proto_label(self.proto));
        }
        format!(
            "{} {} {}",
            self.mode,
            proto_label(self.proto),
            self.flow.label()
        )
    }
}

/// Part 1's results.
#[derive(Clone, Debug)]
pub struct Matrix {
    /// The floor program itself (plain repeat), ns per packet over rounds.
    pub floor: Dist,
    /// The floor, one run per call.
    pub floor_single: Dist,
    /// What the replay adds around any program (replay(floor) - floor).
    pub replay_overhead: Dist,
    pub cases: Vec<CaseResult>,
    /// What inserting one new flow costs in each kind of kernel hash table, at two
    /// sizes: (kind, entries, ns per insert above the measuring program alone).
    pub inserts: Vec<(String, u32, Dist)>,
    /// The director program's size: BPF instructions after the verifier, and how many
    /// instructions the verifier processed.
    pub program: String,
    pub rounds: usize,
    pub batch_est: u32,
    pub batch_new: u32,
    pub single_calls: usize,
}

/// Sizes of one measurement.
#[derive(Clone, Copy, Debug)]
struct Plan {
    rounds: usize,
    batch_est: u32,
    batch_new: u32,
    single_calls: usize,
}

impl Plan {
    fn new(opts: &Options) -> Self {
        if opts.quick {
            Plan {
                rounds: 20,
                batch_est: 500,
                batch_new: 100,
                single_calls: 200,
            }
        } else {
            Plan {
                rounds: 80,
                batch_est: 2000,
                batch_new: 200,
                single_calls: 2000,
            }
        }
    }
}

/// A case ready to run.
struct Prepared {
    mode: String,
    proto: Protocol,
    flow: Flow,
    replay: Replay,
    batch: u32,
    /// The outcome counter every iteration must land in.
    expect: Stat,
    /// The service whose connection counter new flows increment.
    service: Option<ServiceAddr>,
    /// Frames for the one-run-per-call method (frame i of call i).
    single: Box<dyn Fn(usize) -> Vec<u8>>,
    ifindex: u32,
}

/// Global outcome counters, indexed by `Stat as usize`.
fn outcome_counters(h: &Harness) -> Result<Vec<u64>> {
    let mut v = vec![0u64; Stat::COUNT as usize];
    for (s, n) in h.dp.control.stats()? {
        v[s as usize] = n;
    }
    Ok(v)
}

/// Every iteration between two readings landed in `expect`, and nothing else happened
/// but evictions: an event besides the outcome (a new flow whose two buckets are full
/// takes the way of a live entry), which the fill scaling reports.
fn check_outcomes(
    before: &[u64],
    after: &[u64],
    expect: Stat,
    runs: u64,
    what: &str,
) -> Result<()> {
    for s in Stat::ALL {
        if s == Stat::ConnEvicted {
            continue;
        }
        let d = after[s as usize] - before[s as usize];
        let want = if s == expect { runs } else { 0 };
        if d != want {
            bail!(
                "{what}: counter {} moved by {d}, expected {want} ({runs} runs, each should count as {})",
                s.name(),
                expect.name()
            );
        }
    }
    Ok(())
}

fn service_conns(h: &Harness, svc: &ServiceAddr) -> Result<u64> {
    Ok(h.dp.control.service(svc)?.stats.conns)
}

/// Measures `cases` against the floor in interleaved rounds. Returns, per case, the
/// per-round costs above the floor; and the per-round floor and replay(floor) figures.
struct Rounds {
    above: Vec<Vec<f64>>,
    floor: Vec<f64>,
    replay_floor: Vec<f64>,
}

/// Runs rounds over one configuration, one round at a time (so that rounds of several
/// configurations can be interleaved).
struct Runner<'a> {
    h: &'a Harness,
    cases: &'a [Prepared],
    floor_frame: Vec<u8>,
    ifindex: u32,
    floor_replay: Replay,
    floor_batch: u32,
    out: Vec<u8>,
    buf: Vec<u8>,
    res: Rounds,
}

impl<'a> Runner<'a> {
    fn new(
        h: &'a Harness,
        floor_frame: &[u8],
        ifindex: u32,
        cases: &'a [Prepared],
    ) -> Result<Self> {
        let floor_prog = h.dp.program(PROG_FLOOR).fd()?;
        Ok(Runner {
            h,
            cases,
            floor_frame: floor_frame.to_vec(),
            ifindex,
            floor_replay: Replay::new(floor_prog, floor_frame, ifindex, Stamp::Fixed)?,
            floor_batch: cases.iter().map(|c| c.batch).max().unwrap_or(1000),
            out: Vec::new(),
            buf: vec![0u8; floor_frame.len() + 64],
            res: Rounds {
                above: vec![Vec::new(); cases.len()],
                floor: Vec::new(),
                replay_floor: Vec::new(),
            },
        })
    }

    /// One round: the floor, every case, the floor again; recorded unless a warm-up.
    fn round(&mut self, record: bool) -> Result<()> {
        let floor_prog = self.h.dp.program(PROG_FLOOR).fd()?;
        let (rv, direct, _) = test_run(
            floor_prog,
            &self.floor_frame,
            self.ifindex,
            self.floor_batch,
            &mut self.buf,
        )?;
        ensure!(rv == XDP_TX, "floor: verdict {rv}, expected XDP_TX");
        let f1 = self.floor_replay.run(self.floor_batch, &mut self.out)?;
        ensure!(
            f1.retval == XDP_TX,
            "replay(floor): verdict {}, expected XDP_TX",
            f1.retval
        );
        let mut this = Vec::with_capacity(self.cases.len());
        for c in self.cases {
            let before = outcome_counters(self.h)?;
            let t = c.replay.run(c.batch, &mut self.out)?;
            let after = outcome_counters(self.h)?;
            check_outcomes(
                &before,
                &after,
                c.expect,
                c.batch as u64,
                &format!("{} {:?} {:?}", c.mode, c.proto, c.flow),
            )?;
            this.push(t.ns);
        }
        let f2 = self.floor_replay.run(self.floor_batch, &mut self.out)?;
        let rf = (f1.ns + f2.ns) / 2.0;
        if record {
            self.res.floor.push(direct as f64);
            self.res.replay_floor.push(rf);
            for (i, ns) in this.into_iter().enumerate() {
                self.res.above[i].push(ns - rf);
            }
        }
        Ok(())
    }

    /// The frame the last iteration of a fixed case produced is a real output: check it.
    fn finish(mut self) -> Result<Rounds> {
        for c in self.cases {
            if matches!(c.flow, Flow::Established | Flow::Reply | Flow::NewSame) {
                c.replay.run(1, &mut self.out)?;
                assert_output_checksums(
                    &self.out,
                    &format!("{} {:?} {:?} output", c.mode, c.proto, c.flow),
                );
            }
        }
        Ok(self.res)
    }
}

fn run_rounds(
    h: &Harness,
    floor_frame: &[u8],
    ifindex: u32,
    cases: &[Prepared],
    rounds: usize,
) -> Result<Rounds> {
    let mut r = Runner::new(h, floor_frame, ifindex, cases)?;
    // One warm-up round, not recorded.
    for round in 0..=rounds {
        r.round(round > 0)?;
    }
    r.finish()
}

/// One run per call, in rounds over the floor and every case. Returns per-case ns and
/// the floor's.
fn run_single(
    h: &Harness,
    floor_frame: &[u8],
    ifindex: u32,
    cases: &[Prepared],
    calls: usize,
) -> Result<(Dist, Vec<Dist>)> {
    let floor_prog = h.dp.program(PROG_FLOOR).fd()?;
    let director = h.dp.program(PROG_DIRECTOR).fd()?;
    let mut buf = vec![0u8; 512];
    let mut floor = Vec::with_capacity(calls);
    let mut per: Vec<Vec<f64>> = vec![Vec::with_capacity(calls); cases.len()];
    for i in 0..calls {
        let (rv, ns, _) = test_run(floor_prog, floor_frame, ifindex, 1, &mut buf)?;
        ensure!(rv == XDP_TX, "floor: verdict {rv}");
        floor.push(ns as f64);
        for (k, c) in cases.iter().enumerate() {
            let frame = (c.single)(i);
            let (rv, ns, _) = test_run(director, &frame, c.ifindex, 1, &mut buf)?;
            ensure!(
                rv == expected_action(c.expect),
                "{} {:?} {:?}: single run {i} returned verdict {rv}",
                c.mode,
                c.proto,
                c.flow
            );
            per[k].push(ns as f64);
        }
    }
    Ok((Dist::of(&floor), per.iter().map(|v| Dist::of(v)).collect()))
}

fn expected_action(s: Stat) -> u32 {
    match s {
        Stat::Redirect => 4,
        Stat::Tx => 3,
        Stat::PassNotVip => 2,
        _ => u32::MAX,
    }
}

const MODES: [(Method, &str, u16); 5] = [
    (Method::Route, "DR", 80),
    (Method::Tunnel, "IPIP", 81),
    (Method::Masq, "NAT", 82),
    (Method::Tunnel, "GUE", 83),
    (Method::Tunnel, "GRE", 84),
];

/// The encapsulation of a mode's reals (GUE and GRE beside IPIP, without checksums).
fn tunnel_of(mode: &str) -> Option<Tunnel> {
    let kind = match mode {
        "GUE" => TunType::Gue,
        "GRE" => TunType::Gre,
        _ => return None,
    };
    Some(Tunnel {
        kind,
        port: if kind == TunType::Gue { 6080 } else { 0 },
        csum: TunCsum::NoCsum,
    })
}
/// Whether a case is one of the IPv6 ones ([`MODES6`]).
pub fn is_ipv6_mode(mode: &str) -> bool {
    MODES6.iter().any(|(_, name, _)| *name == mode)
}

/// The IPv6 cases' methods, beside the IPv4 ones on the IPv6 VIP: DR, IPv6-in-IPv6 and
/// NAT66, over IPv6 reals.
pub const MODES6: [(Method, &str, u16); 3] = [
    (Method::Route, "DR6", 80),
    (Method::Tunnel, "6in6", 81),
    (Method::Masq, "NAT66", 82),
];

/// An IPv6 client to VIP6 frame: a TCP segment (a SYN or an ACK) or a 64-byte UDP
/// datagram.
fn frame6(proto: Protocol, src: ([u8; 16], u16), port: u16, syn: bool) -> Vec<u8> {
    let macs = (CLIENT_MAC, DIRECTOR_MAC);
    let dst = (VIP6, port);
    match proto {
        Protocol::Tcp => tcp6(macs, src, dst, 64, if syn { SYN } else { ACK }, b""),
        Protocol::Udp => udp6(macs, src, dst, 64, &[0u8; 2]),
    }
}

/// An IPv6 client for single-run frame `i`: disjoint from the replay's stamped ones,
/// which stamp bytes 6-7 and 12-13 of the source address and leave byte 10 zero.
fn single_client6(i: usize) -> ([u8; 16], u16) {
    let mut a = CLIENT6;
    a[10] = 3;
    a[12] = (i >> 8) as u8;
    a[13] = i as u8;
    (a, 10_000 + (i % 50_000) as u16)
}

/// Check the TCP/UDP (and IPv4) checksums of an output frame of either family; for
/// IPv6-in-IPv6 those of the inner packet.
fn assert_output_checksums(out: &[u8], intent: &str) {
    const NEXT_HEADER: usize = 14 + 6;
    if out.get(12..14) != Some(&[0x86, 0xdd]) {
        return assert_checksums_valid(out, intent);
    }
    if out.get(NEXT_HEADER) == Some(&PROTO_IPV6) {
        let mut inner = out[..14].to_vec();
        inner.extend_from_slice(&out[14 + 40..]);
        return assert_l4_checksum6(&inner, intent);
    }
    assert_l4_checksum6(out, intent)
}

const NAT_REAL_PORT: u16 = 8080;
const CLIENT_PORT: u16 = 40000;

fn frame(proto: Protocol, src: ([u8; 4], u16), dst: ([u8; 4], u16), syn: bool) -> Vec<u8> {
    frame_macs(proto, CLIENT_MAC, DIRECTOR_MAC, src, dst, syn)
}

fn frame_macs(
    proto: Protocol,
    smac: [u8; 6],
    dmac: [u8; 6],
    src: ([u8; 4], u16),
    dst: ([u8; 4], u16),
    syn: bool,
) -> Vec<u8> {
    match proto {
        Protocol::Tcp => tcp4(smac, dmac, src, dst, if syn { SYN } else { ACK }, b""),
        // 64-byte frames, the minimum Ethernet size (without FCS: 60).
        Protocol::Udp => udp4(smac, dmac, src, dst, &[0u8; 22]),
    }
}

/// A client address for single-run frame `i` (disjoint from the replay's stamped ones,
/// which are 10.0.x.y).
fn single_client(i: usize) -> ([u8; 4], u16) {
    (
        [10, 3, (i >> 8) as u8, i as u8],
        10_000 + (i % 50_000) as u16,
    )
}

/// Runs the cases whose label contains `name` in a loop for a few seconds (for
/// `perf record -g -- bench --profile NAME`: the data path's hot spots per case).
fn profile(cases: &[Prepared], name: &str) -> Result<()> {
    let picked: Vec<&Prepared> = cases
        .iter()
        .filter(|c| {
            format!("{} {} {}", c.mode, proto_label(c.proto), c.flow.label()).contains(name)
        })
        .collect();
    if picked.is_empty() {
        bail!("no case matches {name:?}");
    }
    // Long calls: every test-run call of an XDP program swaps the kernel's XDP
    // dispatcher in and out (a text patch and an RCU grace period, milliseconds of wall
    // clock), which short calls would make nearly all of the profile.
    const PROFILE_BATCH: u32 = 100_000;
    let mut out = Vec::new();
    for c in picked {
        let start = std::time::Instant::now();
        let mut runs = 0u64;
        let mut ns = Vec::new();
        while start.elapsed() < std::time::Duration::from_secs(4) {
            let t = c.replay.run(PROFILE_BATCH, &mut out)?;
            ns.push(t.ns);
            runs += PROFILE_BATCH as u64;
        }
        eprintln!(
            "profile: {} {} {}: {runs} runs, replay {} ns/run",
            c.mode,
            proto_label(c.proto),
            c.flow.label(),
            Dist::of(&ns).show(0)
        );
    }
    Ok(())
}

/// The fixture lab around `h`, with no flood limit: the replay sends new flows far
/// faster than the default limit, past which DR and TUN new flows would be forwarded
/// without an entry, and the new-flow cases measure recording a flow.
fn stateful_lab(h: Harness) -> Result<FibLab> {
    let mut f = FibLab::with_harness(h);
    f.h.control().set_flood_limit(0)?;
    Ok(f)
}

/// Part 1: the mode x flow x protocol matrix, NAT replies and the floor (None when
/// `opts.profile` asked for a profiling loop instead).
pub fn matrix(opts: &Options) -> Result<Option<Matrix>> {
    let plan = Plan::new(opts);
    // The default sizes (a 2 Mi-entry connection table): what the targets are set for.
    let h = Harness::with_options(&LoadOptions::default());
    let mut f = stateful_lab(h)?;
    let _in = f.enter();
    pin_thread(bench_cpu())?;
    let (eth0, eth1) = (f.eth0, f.eth1);
    for proto in [Protocol::Tcp, Protocol::Udp] {
        for (method, mode, port) in MODES {
            let spec = ServiceSpec::new(proto, ip(VIP), port);
            f.h.control().add_service(&spec)?;
            for n in 1..=3 {
                let real_port = if method == Method::Masq {
                    NAT_REAL_PORT
                } else {
                    port
                };
                let mut real = RealSpec::new(ip(real_ip(n)), real_port, method, 1);
                if let Some(t) = tunnel_of(mode) {
                    real = real.with_tunnel(t);
                }
                f.h.control().add_real(&spec.addr, &real)?;
            }
        }
    }
    // The IPv6 services, on the IPv6 side of the same lab.
    dual_stack(&f);
    for proto in [Protocol::Tcp, Protocol::Udp] {
        for (method, _, port) in MODES6 {
            let spec = ServiceSpec::new(proto, IpAddr::V6(VIP6.into()), port);
            f.h.control().add_service(&spec)?;
            for n in 1..=3 {
                let real_port = if method == Method::Masq {
                    NAT_REAL_PORT
                } else {
                    port
                };
                let real = RealSpec::new(IpAddr::V6(real6(n).into()), real_port, method, 1);
                f.h.control().add_real(&spec.addr, &real)?;
            }
        }
    }
    let h = &f.h;
    let director = h.dp.program(PROG_DIRECTOR).fd()?;
    // A case that replays one fixed frame (also the frame of every single-run call).
    let fixed = |mode: &str,
                 proto: Protocol,
                 flow: Flow,
                 frame: Vec<u8>,
                 ifindex: u32,
                 batch: u32,
                 expect: Stat,
                 service: Option<ServiceAddr>|
     -> Result<Prepared> {
        Ok(Prepared {
            mode: mode.into(),
            proto,
            flow,
            replay: Replay::new(director, &frame, ifindex, Stamp::Fixed)?,
            batch,
            expect,
            service,
            single: Box::new(move |_| frame.clone()),
            ifindex,
        })
    };
    let mut cases: Vec<Prepared> = Vec::new();
    for proto in [Protocol::Tcp, Protocol::Udp] {
        for (method, mode, port) in MODES {
            let svc = ServiceAddr {
                proto,
                addr: ip(VIP),
                port,
            };
            // Established: prime the flow with its first packet.
            let client = ([10, 0, 0, 2], CLIENT_PORT);
            let first = frame(proto, client, (VIP, port), true);
            h.run(&first);
            let est = frame(proto, client, (VIP, port), false);
            let (batch_est, batch_new) = (plan.batch_est, plan.batch_new);
            let ok = Stat::Redirect;
            cases.push(fixed(
                mode,
                proto,
                Flow::Established,
                est,
                eth0,
                batch_est,
                ok,
                Some(svc),
            )?);
            let new = frame(proto, ([10, 0, 0, 0], 0), (VIP, port), true);
            cases.push(Prepared {
                mode: mode.into(),
                proto,
                flow: Flow::New,
                replay: Replay::new(director, &new, eth0, Stamp::Counter { cycle: None })?,
                batch: batch_new,
                expect: ok,
                service: Some(svc),
                single: Box::new(move |i| frame(proto, single_client(i), (VIP, port), true)),
                ifindex: eth0,
            });
            if proto == Protocol::Tcp {
                // For UDP a repeated first packet is an established flow: no such case.
                let syn = frame(proto, ([10, 0, 0, 3], CLIENT_PORT), (VIP, port), true);
                cases.push(fixed(
                    mode,
                    proto,
                    Flow::NewSame,
                    syn,
                    eth0,
                    batch_new,
                    ok,
                    Some(svc),
                )?);
            }
            if method == Method::Masq {
                let real = nat_real_of(h, proto, client, port)?;
                let reply = frame_macs(
                    proto,
                    REAL_SIDE_MAC,
                    DIRECTOR_MAC_OUT,
                    (real, NAT_REAL_PORT),
                    client,
                    false,
                );
                cases.push(fixed(
                    mode,
                    proto,
                    Flow::Reply,
                    reply,
                    eth1,
                    batch_est,
                    ok,
                    Some(svc),
                )?);
            }
        }
    }
    for proto in [Protocol::Tcp, Protocol::Udp] {
        for (_, mode, port) in MODES6 {
            let svc = ServiceAddr {
                proto,
                addr: IpAddr::V6(VIP6.into()),
                port,
            };
            let ok = Stat::Redirect;
            let client = (CLIENT6, CLIENT_PORT);
            h.run(&frame6(proto, client, port, true));
            let est = frame6(proto, client, port, false);
            cases.push(fixed(
                mode,
                proto,
                Flow::Established,
                est,
                eth0,
                plan.batch_est,
                ok,
                Some(svc),
            )?);
            // The replay's stamps land in the source address of an IPv6 frame: a
            // different client every iteration.
            let mut base = CLIENT6;
            base[15] = 0;
            let new = frame6(proto, (base, CLIENT_PORT), port, true);
            cases.push(Prepared {
                mode: mode.into(),
                proto,
                flow: Flow::New,
                replay: Replay::new(director, &new, eth0, Stamp::Counter { cycle: None })?,
                batch: plan.batch_new,
                expect: ok,
                service: Some(svc),
                single: Box::new(move |i| frame6(proto, single_client6(i), port, true)),
                ifindex: eth0,
            });
            if proto == Protocol::Tcp {
                let mut again = CLIENT6;
                again[15] = 3;
                let syn = frame6(proto, (again, CLIENT_PORT), port, true);
                cases.push(fixed(
                    mode,
                    proto,
                    Flow::NewSame,
                    syn,
                    eth0,
                    plan.batch_new,
                    ok,
                    Some(svc),
                )?);
            }
        }
    }
    let not_vip = frame(
        Protocol::Tcp,
        ([10, 0, 0, 2], CLIENT_PORT),
        ([10, 0, 0, 1], 22),
        false,
    );
    cases.push(fixed(
        "-",
        Protocol::Tcp,
        Flow::NotVip,
        not_vip,
        eth0,
        plan.batch_est,
        Stat::PassNotVip,
        None,
    )?);

    if let Some(name) = &opts.profile {
        return profile(&cases, name).map(|()| None);
    }
    let floor_frame = frame(
        Protocol::Tcp,
        ([10, 0, 0, 2], CLIENT_PORT),
        (VIP, 80),
        false,
    );
    let conns_before = conns_by_service(h, &cases)?;
    let rounds = run_rounds(h, &floor_frame, eth0, &cases, plan.rounds)?;
    let (floor_single, singles) = run_single(h, &floor_frame, eth0, &cases, plan.single_calls)?;
    check_new_flows(
        h,
        &cases,
        &conns_before,
        plan.rounds as u64 + 1,
        plan.single_calls as u64,
    )?;
    unpin_thread()?;

    let floor = Dist::of(&rounds.floor);
    let overhead: Vec<f64> = rounds
        .replay_floor
        .iter()
        .zip(&rounds.floor)
        .map(|(r, f)| r - f)
        .collect();
    let results = cases
        .iter()
        .zip(&rounds.above)
        .zip(singles)
        .map(|((c, above), single)| {
            let above = Dist::of(above);
            let ns = floor.median + above.median;
            CaseResult {
                mode: c.mode.clone(),
                proto: c.proto,
                flow: c.flow,
                above,
                ns,
                ratio: ns / floor.median,
                single,
                single_above: single.median - floor_single.median,
            }
        })
        .collect();
    // Diagnostics for the new-flow cost: an insert into each kind of table, alone.
    pin_thread(bench_cpu())?;
    let mut inserts = Vec::new();
    let samples = if opts.quick { 10 } else { 60 };
    let base = Dist::of(&insert_cost(TableKind::None, 1, 1000, samples)?).median;
    for kind in [
        TableKind::Hash,
        TableKind::LruCommon,
        TableKind::LruPerCpu,
        TableKind::ArrayBucket,
    ] {
        for entries in [1u32 << 16, 1 << 20] {
            let ns: Vec<f64> = insert_cost(kind, entries, 1000, samples)?
                .into_iter()
                .map(|x| x - base)
                .collect();
            inserts.push((kind.label().to_owned(), entries, Dist::of(&ns)));
        }
    }
    unpin_thread()?;
    let info = h.dp.program(PROG_DIRECTOR).info()?;
    let program = format!(
        "the director program has {} BPF instructions after verification (the verifier processed {})",
        info.size_translated()
            .map_or("?".into(), |b| super::thousands(b as f64 / 8.0)),
        info.verified_instruction_count()
            .map_or("?".into(), |n| super::thousands(n as f64))
    );
    Ok(Some(Matrix {
        inserts,
        program,
        floor,
        floor_single,
        replay_overhead: Dist::of(&overhead),
        cases: results,
        rounds: plan.rounds,
        batch_est: plan.batch_est,
        batch_new: plan.batch_new,
        single_calls: plan.single_calls,
    }))
}

fn conns_by_service(h: &Harness, cases: &[Prepared]) -> Result<HashMap<ServiceAddr, u64>> {
    let mut m = HashMap::new();
    for c in cases {
        if let Some(s) = c.service {
            m.insert(s, service_conns(h, &s)?);
        }
    }
    Ok(m)
}

/// Every new-flow iteration was scheduled as a new connection (a stamped flow that
/// repeated would have hit the connection table instead), and no other iteration was.
fn check_new_flows(
    h: &Harness,
    cases: &[Prepared],
    before: &HashMap<ServiceAddr, u64>,
    rounds: u64,
    single_calls: u64,
) -> Result<()> {
    let mut want: HashMap<ServiceAddr, u64> = HashMap::new();
    for c in cases {
        if let Some(s) = c.service {
            let n = want.entry(s).or_default();
            match c.flow {
                Flow::New => *n += c.batch as u64 * rounds + single_calls,
                // Plus the run whose output frame the matrix checks at the end.
                Flow::NewSame => *n += c.batch as u64 * rounds + single_calls + 1,
                _ => {}
            }
        }
    }
    for (svc, n) in want {
        let got = service_conns(h, &svc)? - before[&svc];
        ensure!(
            got == n,
            "{svc:?}: {got} new connections scheduled, expected {n} (one per new-flow run)"
        );
    }
    Ok(())
}

/// The real a NAT flow was scheduled to.
fn nat_real_of(h: &Harness, proto: Protocol, client: ([u8; 4], u16), port: u16) -> Result<[u8; 4]> {
    let conns = h.dp.control.connections()?;
    let c = conns
        .iter()
        .find(|c| {
            c.source == std::net::SocketAddr::from((client.0, client.1))
                && c.destination.port() == port
                && c.protocol == proto
        })
        .context("the NAT flow is not in the connection table")?;
    let real =
        h.dp.control
            .services()?
            .into_iter()
            .flat_map(|s| s.reals)
            .find(|r| r.id == c.real_id)
            .context("the NAT flow's real")?;
    let IpAddr::V4(a) = real.spec.addr else {
        bail!("an IPv6 real")
    };
    Ok(a.octets())
}

// ---- part 2: scaling ----

/// One configuration of the scaling part and its cases.
#[derive(Clone, Debug)]
pub struct ScalePoint {
    /// "services", "reals" or "conn table fill".
    pub dimension: &'static str,
    /// The value, as shown ("1", "10,000", "90 %").
    pub value: String,
    /// x for plots.
    pub x: f64,
    /// (case label, cost above the floor).
    pub cases: Vec<(String, Dist)>,
    /// Facts about the configuration (table size, measured fill...).
    pub note: String,
}

/// Part 2's results, with the time the setup took (control-plane facts found on the way).
#[derive(Clone, Debug, Default)]
pub struct Scaling {
    pub points: Vec<ScalePoint>,
    /// What setting the configurations up took (control library timings).
    pub setup_notes: Vec<String>,
}

const SCALE_PORT: u16 = 80;
const FILL_PORT: u16 = 90;

/// The standard scaling cases on the DR TCP service at VIP:80 (and, with `fill`, UDP
/// established flows in turn over the first `n` fill flows).
fn scaling_cases(
    h: &Harness,
    eth0: u32,
    plan: Plan,
    fill_cycle: Option<u32>,
) -> Result<Vec<Prepared>> {
    let director = h.dp.program(PROG_DIRECTOR).fd()?;
    let svc = ServiceAddr {
        proto: Protocol::Tcp,
        addr: ip(VIP),
        port: SCALE_PORT,
    };
    let client = ([10, 0, 0, 2], CLIENT_PORT);
    h.run(&frame(Protocol::Tcp, client, (VIP, SCALE_PORT), true));
    let est = frame(Protocol::Tcp, client, (VIP, SCALE_PORT), false);
    let est2 = est.clone();
    let mut v = vec![
        Prepared {
            mode: "DR".into(),
            proto: Protocol::Tcp,
            flow: Flow::Established,
            replay: Replay::new(director, &est, eth0, Stamp::Fixed)?,
            batch: plan.batch_est,
            expect: Stat::Redirect,
            service: Some(svc),
            single: Box::new(move |_| est2.clone()),
            ifindex: eth0,
        },
        Prepared {
            mode: "DR".into(),
            proto: Protocol::Tcp,
            flow: Flow::New,
            replay: Replay::new(
                director,
                &frame(Protocol::Tcp, ([10, 0, 0, 0], 0), (VIP, SCALE_PORT), true),
                eth0,
                Stamp::Counter { cycle: None },
            )?,
            batch: plan.batch_new,
            expect: Stat::Redirect,
            service: Some(svc),
            single: Box::new(move |i| {
                frame(Protocol::Tcp, single_client(i), (VIP, SCALE_PORT), true)
            }),
            ifindex: eth0,
        },
    ];
    if let Some(n) = fill_cycle {
        let base = frame(Protocol::Udp, ([10, 4, 0, 0], 0), (VIP, FILL_PORT), false);
        let base2 = base.clone();
        v.push(Prepared {
            mode: "DR".into(),
            proto: Protocol::Udp,
            flow: Flow::EstablishedMany(n),
            replay: Replay::new(director, &base, eth0, Stamp::Counter { cycle: Some(n) })?,
            batch: plan.batch_est,
            expect: Stat::Redirect,
            service: Some(ServiceAddr {
                proto: Protocol::Udp,
                addr: ip(VIP),
                port: FILL_PORT,
            }),
            single: Box::new(move |_| base2.clone()),
            ifindex: eth0,
        });
    }
    Ok(v)
}

fn measure_point(
    h: &Harness,
    eth0: u32,
    cases: &[Prepared],
    plan: Plan,
) -> Result<Vec<(String, Dist)>> {
    let floor_frame = frame(
        Protocol::Tcp,
        ([10, 0, 0, 2], CLIENT_PORT),
        (VIP, SCALE_PORT),
        false,
    );
    let before = conns_by_service(h, cases)?;
    let r = run_rounds(h, &floor_frame, eth0, cases, plan.rounds)?;
    check_new_flows(h, cases, &before, plan.rounds as u64 + 1, 0)?;
    Ok(cases
        .iter()
        .zip(&r.above)
        .map(|(c, a)| {
            (
                format!("{} {} {}", c.mode, proto_label(c.proto), c.flow.label()),
                Dist::of(a),
            )
        })
        .collect())
}

/// Like [`measure_point`] for several configurations at once, their rounds interleaved
/// (a round of each in turn), so that a slow period of the machine hits them alike.
fn measure_interleaved(
    points: &[(&FibLab, &[Prepared])],
    plan: Plan,
) -> Result<Vec<Vec<(String, Dist)>>> {
    let floor_frame = frame(
        Protocol::Tcp,
        ([10, 0, 0, 2], CLIENT_PORT),
        (VIP, SCALE_PORT),
        false,
    );
    let mut before = Vec::new();
    let mut runners = Vec::new();
    for (f, cases) in points {
        before.push(conns_by_service(&f.h, cases)?);
        runners.push(Runner::new(&f.h, &floor_frame, f.eth0, cases)?);
    }
    for round in 0..=plan.rounds {
        for (k, r) in runners.iter_mut().enumerate() {
            let _in = points[k].0.enter();
            r.round(round > 0)?;
        }
    }
    let mut out = Vec::new();
    for (k, r) in runners.into_iter().enumerate() {
        let (f, cases) = points[k];
        let _in = f.enter();
        let res = r.finish()?;
        check_new_flows(&f.h, cases, &before[k], plan.rounds as u64 + 1, 0)?;
        out.push(
            cases
                .iter()
                .zip(&res.above)
                .map(|(c, a)| {
                    (
                        format!("{} {} {}", c.mode, proto_label(c.proto), c.flow.label()),
                        Dist::of(a),
                    )
                })
                .collect(),
        );
    }
    Ok(out)
}

/// Part 2: cost with 1 / 100 / 10,000 services, 3 / 100 / 1,000 reals, and the
/// connection table 1 % and 90 % full.
pub fn scaling(opts: &Options) -> Result<Scaling> {
    let mut plan = Plan::new(opts);
    plan.rounds = if opts.quick { 15 } else { 80 };
    let mut out = Scaling::default();
    scale_services(plan, &mut out).context("scaling with services")?;
    scale_reals(plan, &mut out).context("scaling with reals")?;
    scale_fill(plan, opts, &mut out).context("scaling with connection-table fill")?;
    scale_size(plan, opts, &mut out).context("scaling with connection-table size")?;
    Ok(out)
}

fn dr_service(
    f: &mut FibLab,
    proto: Protocol,
    port: u16,
    reals: &[[u8; 4]],
) -> Result<ServiceAddr> {
    let spec = ServiceSpec::new(proto, ip(VIP), port);
    f.h.control().add_service(&spec)?;
    for r in reals {
        f.h.control()
            .add_real(&spec.addr, &RealSpec::new(ip(*r), port, Method::Route, 1))?;
    }
    Ok(spec.addr)
}

fn scale_services(plan: Plan, out: &mut Scaling) -> Result<()> {
    const TABLE: u32 = 1021;
    const MAX: u32 = 10_000;
    let pins = BpffsDir::new("services")?;
    let h = Harness::with_options(&LoadOptions {
        conn_table: 1 << 20,
        table_size: TABLE,
        max_services: MAX,
        pin_dir: Some(pins.path().to_owned()),
        ..LoadOptions::default()
    });
    let mut f = stateful_lab(h)?;
    let _in = f.enter();
    pin_thread(bench_cpu())?;
    dr_service(
        &mut f,
        Protocol::Tcp,
        SCALE_PORT,
        &[real_ip(1), real_ip(2), real_ip(3)],
    )?;
    // Filler services have no reals and are never hit; what they change is the size of
    // the hash table the lookup searches.
    let services: BpfHashMap<MapData, ServiceKey, Service> =
        BpfHashMap::try_from(Map::HashMap(MapData::from_pin(pins.path().join(SERVICES))?))?;
    let mut filled = 1u32;
    let cases = scaling_cases(&f.h, f.eth0, plan, None)?;
    for target in [1u32, 100, MAX] {
        while filled < target {
            let filler = ServiceSpec::new(
                Protocol::Tcp,
                IpAddr::from([10, 200, (filled >> 8) as u8, filled as u8]),
                SCALE_PORT,
            );
            f.h.control().add_service(&filler)?;
            filled += 1;
        }
        let got = services.keys().count() as u32;
        ensure!(
            got == target,
            "{got} services in the map, expected {target}"
        );
        let res = measure_point(&f.h, f.eth0, &cases, plan)?;
        out.points.push(ScalePoint {
            dimension: "services",
            value: super::thousands(target as f64),
            x: target as f64,
            cases: res,
            note: format!("{MAX} service slots, Maglev tables of {TABLE} entries, 3 reals on the measured service"),
        });
    }
    unpin_thread()?;
    Ok(())
}

/// The address of scaling real `i` (0-based): 10.2.0.0/16 behind the director's eth1.
fn scale_real(i: u32) -> [u8; 4] {
    [10, 2, (i / 250) as u8, (i % 250 + 1) as u8]
}

fn scale_reals(plan: Plan, out: &mut Scaling) -> Result<()> {
    // 100 table entries per real (the control library's rule for Maglev's balance).
    const TABLE: u32 = 100_003;
    const COUNTS: [u32; 3] = [3, 100, 1000];
    // A data path per point, its reals added while its connection table is empty; the
    // points are then measured in interleaved rounds.
    let mut labs = Vec::new();
    for target in COUNTS {
        let h = Harness::with_options(&LoadOptions {
            conn_table: 1 << 20,
            table_size: TABLE,
            max_services: 4,
            pin_dir: None,
            ..LoadOptions::default()
        });
        let mut f = stateful_lab(h)?;
        let d = f.lab.ns("director");
        d.exec_ok(&["ip", "addr", "add", "10.2.255.254/16", "dev", "eth1"])?;
        let batch: String = (0..target)
            .map(|i| {
                let a = scale_real(i);
                format!(
                    "neigh replace {}.{}.{}.{} lladdr 02:00:00:02:{:02x}:{:02x} dev eth1 nud permanent\n",
                    a[0],
                    a[1],
                    a[2],
                    a[3],
                    i >> 8,
                    i & 0xff
                )
            })
            .collect();
        let file = std::env::temp_dir().join(format!("bench-neigh-{}.batch", std::process::id()));
        std::fs::write(&file, batch)?;
        let added = d.exec_ok(&["ip", "-batch", file.to_str().context("temp path")?]);
        let _ = std::fs::remove_file(&file);
        added?;
        let svc = {
            let _in = f.enter();
            pin_thread(bench_cpu())?;
            dr_service(&mut f, Protocol::Tcp, SCALE_PORT, &[])?
        };
        let start = std::time::Instant::now();
        for i in 0..target {
            f.h.control().add_real(
                &svc,
                &RealSpec::new(ip(scale_real(i)), SCALE_PORT, Method::Route, 1),
            )?;
        }
        out.setup_notes.push(format!(
            "add_real (control library), {target} reals into one service with {}-entry Maglev tables, empty connection table: {:.1} ms per real",
            super::thousands(TABLE as f64),
            start.elapsed().as_secs_f64() * 1e3 / target as f64
        ));
        let cases = {
            let _in = f.enter();
            scaling_cases(&f.h, f.eth0, plan, None)?
        };
        labs.push((f, cases, svc));
    }
    let points: Vec<(&FibLab, &[Prepared])> =
        labs.iter().map(|(f, c, _)| (f, c.as_slice())).collect();
    let results = measure_interleaved(&points, plan)?;
    for (k, res) in results.into_iter().enumerate() {
        out.points.push(ScalePoint {
            dimension: "reals",
            value: super::thousands(COUNTS[k] as f64),
            x: COUNTS[k] as f64,
            cases: res,
            note: format!(
                "one service, Maglev tables of {} entries",
                super::thousands(TABLE as f64)
            ),
        });
    }
    // add_real with the measurement's flows in the connection table (it walks the table
    // only when it must reuse a removed real's slot).
    let (f, _, svc) = &mut labs[1];
    let flows = f.h.dp.control.connection_census()?.entries;
    let t = std::time::Instant::now();
    f.h.control().add_real(
        svc,
        &RealSpec::new(ip(scale_real(COUNTS[1])), SCALE_PORT, Method::Route, 1),
    )?;
    out.setup_notes.push(format!(
        "add_real (control library) of one more real with {} flows in the connection table: {:.1} ms",
        super::thousands(flows as f64),
        t.elapsed().as_secs_f64() * 1e3
    ));
    unpin_thread()?;
    Ok(())
}

fn scale_fill(plan: Plan, opts: &Options, out: &mut Scaling) -> Result<()> {
    let conn_table: u32 = if opts.quick {
        1 << 18
    } else {
        director_common::maps::DEFAULT_CONN_TABLE
    };
    // Established flows in turn: as many as the 1 % fill holds (10,000 at most).
    let cycle = (conn_table / 100).min(10_000);
    let h = Harness::with_options(&LoadOptions {
        conn_table,
        max_services: 16,
        ..LoadOptions::default()
    });
    let mut f = stateful_lab(h)?;
    let _in = f.enter();
    dr_service(
        &mut f,
        Protocol::Tcp,
        SCALE_PORT,
        &[real_ip(1), real_ip(2), real_ip(3)],
    )?;
    let fill_svc = dr_service(
        &mut f,
        Protocol::Udp,
        FILL_PORT,
        &[real_ip(1), real_ip(2), real_ip(3)],
    )?;
    let director = f.h.dp.program(PROG_DIRECTOR).fd()?;
    // Fill flows: UDP from 10.4.x.y:p, stamped 1, 2, 3... (the "in turn" case replays
    // the first CYCLE of them).
    let fill = Replay::new(
        director,
        &frame(Protocol::Udp, ([10, 4, 0, 0], 0), (VIP, FILL_PORT), false),
        f.eth0,
        Stamp::Counter { cycle: None },
    )?;
    let cpus = super::online_cpus();
    let mut inserted = 0u64;
    let mut scratch = Vec::new();
    for pct in [1u32, 90] {
        // Fill from every CPU alike, as traffic spread by RSS would.
        let target = conn_table as u64 * pct as u64 / 100;
        let conns0 = service_conns(&f.h, &fill_svc)?;
        let evicted0 = outcome_counters(&f.h)?[Stat::ConnEvicted as usize];
        let start = inserted;
        let mut cpu = 0;
        while inserted < target {
            pin_thread(cpu % cpus)?;
            let n = (target - inserted).min(10_000) as u32;
            let before = outcome_counters(&f.h)?;
            let t = fill.run(n, &mut scratch)?;
            let after = outcome_counters(&f.h)?;
            ensure!(t.retval == 4, "filling: verdict {}", t.retval);
            check_outcomes(
                &before,
                &after,
                Stat::Redirect,
                n as u64,
                "filling the connection table",
            )?;
            inserted += n as u64;
            cpu += 1;
        }
        let new = service_conns(&f.h, &fill_svc)? - conns0;
        ensure!(
            new == inserted - start,
            "filling: {new} new flows, expected {}",
            inserted - start
        );
        let entries = f.h.dp.control.connection_census()?.entries as f64;
        let evicted = outcome_counters(&f.h)?[Stat::ConnEvicted as usize] - evicted0;
        // The flows replayed "in turn" are the first ones filled; the fill was idle
        // traffic, and a full pair of buckets gives way to its least recently seen
        // entry, so some of them were evicted on the way to 90 %. Live flows send
        // packets: replay them once (scheduling the evicted ones again) before measuring.
        let next = fill.counter()?;
        fill.set_counter(0)?;
        let conns1 = service_conns(&f.h, &fill_svc)?;
        let t = fill.run(cycle, &mut scratch)?;
        ensure!(
            t.retval == 4,
            "replaying the flows in turn: verdict {}",
            t.retval
        );
        let rescheduled = service_conns(&f.h, &fill_svc)? - conns1;
        fill.set_counter(next)?;
        pin_thread(bench_cpu())?;
        let cases = scaling_cases(&f.h, f.eth0, plan, Some(cycle))?;
        let res = measure_point(&f.h, f.eth0, &cases, plan)?;
        out.points.push(ScalePoint {
            dimension: "conn table fill",
            value: format!("{pct} %"),
            x: pct as f64,
            cases: res,
            note: format!(
                "{} of {} entries in use ({:.1} %), filled from {cpus} CPUs alike; {} of the {} flows added evicted a live entry, and {} of the {} flows replayed in turn had been evicted (scheduled again before measuring)",
                super::thousands(entries),
                super::thousands(conn_table as f64),
                entries * 100.0 / conn_table as f64,
                super::thousands(evicted as f64),
                super::thousands((inserted - start) as f64),
                super::thousands(rescheduled as f64),
                super::thousands(cycle as f64),
            ),
        });
    }
    unpin_thread()?;
    Ok(())
}

/// Not among the targets' cases, but it explains the new-flow cost: the same cases with
/// connection tables of different sizes (each nearly empty). A new flow touches its two
/// candidate buckets; the bigger the table, the likelier they miss the CPU caches and
/// the TLB.
fn scale_size(plan: Plan, opts: &Options, out: &mut Scaling) -> Result<()> {
    let sizes: &[u32] = if opts.quick {
        &[1 << 16, 1 << 18]
    } else {
        &[1 << 16, 1 << 20, 1 << 22]
    };
    pin_thread(bench_cpu())?;
    let mut labs = Vec::new();
    for &size in sizes {
        let h = Harness::with_options(&LoadOptions {
            conn_table: size,
            max_services: 16,
            ..LoadOptions::default()
        });
        let mut f = stateful_lab(h)?;
        let cases = {
            let _in = f.enter();
            dr_service(
                &mut f,
                Protocol::Tcp,
                SCALE_PORT,
                &[real_ip(1), real_ip(2), real_ip(3)],
            )?;
            scaling_cases(&f.h, f.eth0, plan, None)?
        };
        labs.push((f, cases));
    }
    let points: Vec<(&FibLab, &[Prepared])> = labs.iter().map(|(f, c)| (f, c.as_slice())).collect();
    let results = measure_interleaved(&points, plan)?;
    for (&size, res) in sizes.iter().zip(results) {
        out.points.push(ScalePoint {
            dimension: "conn table size",
            value: super::thousands(size as f64),
            x: size as f64,
            cases: res,
            note: format!(
                "a {}-entry connection table holding only the measured flows",
                super::thousands(size as f64)
            ),
        });
    }
    unpin_thread()?;
    Ok(())
}
