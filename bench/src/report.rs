//! The report: `target/bench/report.md` (also printed), the PNG plots beside it, and the
//! comparison with the performance targets, each labelled met / not met.

use std::{fmt::Write as _, path::Path};

use anyhow::{Context as _, Result};

use super::{
    Dist, Options,
    control::ControlPlane,
    e2e::{E2e, Variant},
    plot::{self, Bar, Mark},
    testrun::{Flow, Matrix, Scaling, is_ipv6_mode},
    thousands,
};

/// Everything one run measured.
#[derive(Clone, Debug)]
pub struct Results {
    pub opts: Options,
    /// When the run started (UTC, as `date` prints it).
    pub started: String,
    pub seconds: f64,
    /// Kernel, CPUs, load at the start.
    pub machine: String,
    /// `git describe` of the tree measured.
    pub commit: String,
    pub matrix: Option<Matrix>,
    pub scaling: Option<Scaling>,
    pub e2e: Option<E2e>,
    pub control: Option<ControlPlane>,
    /// Parts that failed: (part, error chain).
    pub errors: Vec<(String, String)>,
}

/// Established flows (and NAT replies), every method: at most this many ns above the
/// floor (a target).
pub const TARGET_EST_NS: f64 = 40.0;
/// A SYN of a 5-tuple the table holds (scheduled anew), every method.
pub const TARGET_SYN_AGAIN_NS: f64 = 100.0;
/// A never-seen flow, DR and tunnels.
pub const TARGET_NEW_NS: f64 = 300.0;
/// A never-seen flow, NAT.
pub const TARGET_NEW_NAT_NS: f64 = 400.0;
/// A packet for no virtual service (the host's own traffic, passed to the kernel).
pub const TARGET_NOT_VIP_NS: f64 = 15.0;
/// A never-seen flow with the connection table 90 % full: at most this many times its
/// cost with the table (nearly) empty.
pub const TARGET_FILL_RATIO: f64 = 1.2;
/// The director adds at most this share of what nftables DNAT adds per UDP packet.
pub const TARGET_UDP_SHARE: f64 = 0.25;
/// ... and at most this share of DNAT's added cost per TCP connection.
pub const TARGET_TCP_SHARE: f64 = 1.0 / 3.0;
/// Maglev table for 1,000 reals at 65,537 entries in under this many ms.
pub const TARGET_MAGLEV_MS: f64 = 5.0;
/// What "flat" allows between the configurations of the scaling part: more than the
/// noise between configurations that cannot differ. The established case reads neither
/// the service map nor the reals, yet its 10th percentiles differ by up to ~30 ns
/// between configurations here (other processes, and each configuration's maps sitting
/// elsewhere in memory).
pub const FLAT_NS: f64 = 30.0;
pub const FLAT_SHARE: f64 = 0.15;

/// One performance target and how the run did against it.
#[derive(Clone, Debug)]
pub struct Target {
    pub what: String,
    pub limit: String,
    pub measured: String,
    /// None: not measured in this run.
    pub met: Option<bool>,
    /// The p10..p90 spread crosses the limit: the verdict on the median is within the
    /// noise of this run.
    pub inconclusive: bool,
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "**met**",
        Some(false) => "**NOT MET**",
        None => "not measured",
    }
}

/// Every target, in a fixed order.
pub fn targets(r: &Results) -> Vec<Target> {
    let mut t = Vec::new();
    match &r.matrix {
        Some(m) => {
            // The targets are the IPv4 data path's; the IPv6 cases are reported beside
            // them in the per-packet table, without a verdict.
            for c in m.cases.iter().filter(|c| !is_ipv6_mode(&c.mode)) {
                let (limit, kind) = match c.flow {
                    Flow::Established | Flow::Reply => (TARGET_EST_NS, "established"),
                    Flow::NewSame => (TARGET_SYN_AGAIN_NS, "SYN again"),
                    Flow::New if c.mode == "NAT" => (TARGET_NEW_NAT_NS, "never-seen flow"),
                    Flow::New => (TARGET_NEW_NS, "never-seen flow"),
                    Flow::NotVip => (TARGET_NOT_VIP_NS, "no VIP, to the kernel"),
                    _ => continue,
                };
                t.push(Target {
                    what: format!("{}: cost above the floor ({kind})", c.label()),
                    limit: format!("<= {limit:.0} ns"),
                    measured: format!("{} ns", c.above.show(0)),
                    met: Some(c.above.median <= limit),
                    inconclusive: c.above.p10 <= limit && limit <= c.above.p90,
                });
            }
        }
        None => t.push(Target {
            what: "per-packet cost above the floor".into(),
            limit: format!(
                "<= {TARGET_EST_NS:.0} ns established, <= {TARGET_SYN_AGAIN_NS:.0} SYN again, \
                 <= {TARGET_NEW_NS:.0} / {TARGET_NEW_NAT_NS:.0} never-seen (DR, tunnels / NAT), \
                 <= {TARGET_NOT_VIP_NS:.0} no VIP"
            ),
            measured: "-".into(),
            met: None,
            inconclusive: false,
        }),
    }
    if let Some(s) = &r.scaling {
        t.extend(fill_target(s));
        for dim in ["services", "reals", "conn table fill", "conn table size"] {
            let pts: Vec<_> = s.points.iter().filter(|p| p.dimension == dim).collect();
            let Some(first) = pts.first() else { continue };
            for (k, (case, _)) in first.cases.iter().enumerate() {
                let ds: Vec<Dist> = pts
                    .iter()
                    .filter_map(|p| p.cases.get(k))
                    .map(|c| c.1)
                    .collect();
                // Interference from other processes only ever adds time, so the verdict
                // uses the 10th percentile (the least disturbed samples); medians shown.
                let lows: Vec<f64> = ds.iter().map(|d| d.p10).collect();
                let (lo, hi) = lows
                    .iter()
                    .fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(*v), b.max(*v)));
                let spread = hi - lo;
                let values: Vec<String> = pts.iter().map(|p| p.value.clone()).collect();
                let join = |v: &mut dyn Iterator<Item = f64>| {
                    v.map(|m| format!("{m:.0}")).collect::<Vec<_>>().join(" / ")
                };
                t.push(Target {
                    what: format!("flat with {dim} ({}): {case}", values.join(" / ")),
                    limit: format!(
                        "p10 spread <= {FLAT_NS:.0} ns or {:.0} %",
                        FLAT_SHARE * 100.0
                    ),
                    measured: format!(
                        "p10 {} ns (spread {spread:.0} ns); medians {} ns",
                        join(&mut lows.iter().copied()),
                        join(&mut ds.iter().map(|d| d.median))
                    ),
                    met: Some(spread <= FLAT_NS || spread <= FLAT_SHARE * lo.abs().max(1.0)),
                    inconclusive: false,
                });
            }
        }
    }
    if let Some(e) = &r.e2e {
        let dnat = e.get(Variant::Nftables);
        for v in [Variant::Dr, Variant::Ipip, Variant::Nat] {
            let (Some(d), Some(x)) = (dnat, e.get(v)) else {
                continue;
            };
            if let (Some(xa), Some(da)) = (&x.udp_added, &d.udp_added) {
                let limit = da.median * TARGET_UDP_SHARE;
                t.push(Target {
                    what: format!(
                        "{}: CPU added per UDP packet over its routing floor",
                        v.label()
                    ),
                    limit: format!("<= 1/4 of DNAT's {:.0} ns = {limit:.0} ns", da.median),
                    measured: format!("{} ns", xa.show(0)),
                    met: Some(xa.median <= limit),
                    inconclusive: xa.p10 <= limit && limit <= xa.p90,
                });
            }
            // Connections per CPU-second over the rounds: 1e9 / (ns per connection).
            let (lo, hi) = (1e9 / x.tcp_ns.p90.max(1.0), 1e9 / x.tcp_ns.p10.max(1.0));
            let (dlo, dhi) = (1e9 / d.tcp_ns.p90.max(1.0), 1e9 / d.tcp_ns.p10.max(1.0));
            t.push(Target {
                what: format!(
                    "{}: TCP connections/s at least DNAT's (per CPU-second)",
                    v.label()
                ),
                limit: format!(">= {}", thousands(d.tcp_cps_cpu)),
                measured: format!(
                    "{} ({}..{}; DNAT {}..{}; wall clock: {} vs DNAT {})",
                    thousands(x.tcp_cps_cpu),
                    thousands(lo),
                    thousands(hi),
                    thousands(dlo),
                    thousands(dhi),
                    thousands(x.tcp_cps.median),
                    thousands(d.tcp_cps.median)
                ),
                met: Some(x.tcp_cps_cpu >= d.tcp_cps_cpu),
                inconclusive: lo <= dhi && dlo <= hi,
            });
            if let (Some(xa), Some(da)) = (&x.tcp_added, &d.tcp_added) {
                let limit = da.median * TARGET_TCP_SHARE;
                t.push(Target {
                    what: format!(
                        "{}: CPU added per TCP connection over its routing floor",
                        v.label()
                    ),
                    limit: format!(
                        "<= 1/3 of DNAT's {:.1} us = {:.1} us",
                        da.median / 1e3,
                        limit / 1e3
                    ),
                    measured: format!(
                        "{:.1} us ({:.1}..{:.1})",
                        xa.median / 1e3,
                        xa.p10 / 1e3,
                        xa.p90 / 1e3
                    ),
                    met: Some(xa.median <= limit),
                    inconclusive: xa.p10 <= limit && limit <= xa.p90,
                });
            }
        }
    }
    if let Some(c) = &r.control
        && let Some(m) = c
            .maglev
            .iter()
            .find(|m| m.reals == 1000 && m.size == 65_537)
    {
        t.push(Target {
            what: "Maglev table for 1,000 reals at 65,537 entries".into(),
            limit: format!("< {TARGET_MAGLEV_MS:.0} ms"),
            measured: format!("{} ms", m.ms.show(2)),
            met: Some(m.ms.median < TARGET_MAGLEV_MS),
            inconclusive: false,
        });
    }
    t
}

/// A never-seen flow at 90 % fill against the same at 1 % (the scaling part's fill
/// points, measured in one configuration one after the other).
fn fill_target(s: &Scaling) -> Option<Target> {
    let case = "DR TCP new flow";
    let at = |v: &str| {
        s.points
            .iter()
            .find(|p| p.dimension == "conn table fill" && p.value == v)?
            .cases
            .iter()
            .find(|c| c.0 == case)
            .map(|c| c.1)
    };
    let (empty, full) = (at("1 %")?, at("90 %")?);
    let ratio = full.median / empty.median.max(1.0);
    let limit = TARGET_FILL_RATIO * empty.median;
    Some(Target {
        what: format!("{case} (never-seen) at 90 % table fill against 1 %"),
        limit: format!("<= {TARGET_FILL_RATIO:.1}x"),
        measured: format!(
            "{ratio:.2}x ({} ns against {} ns)",
            full.show(0),
            empty.show(0)
        ),
        met: Some(full.median <= limit),
        inconclusive: full.p10 <= limit && limit <= full.p90,
    })
}

fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let _ = writeln!(out, "|{}|", vec!["---"; header.len()].join("|"));
    for r in rows {
        let _ = writeln!(out, "| {} |", r.join(" | "));
    }
    out.push('\n');
}

fn bytes(n: u64) -> String {
    let n = n as f64;
    if n >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", n / (1024.0 * 1024.0 * 1024.0))
    } else if n >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", n / (1024.0 * 1024.0))
    } else {
        format!("{:.0} KiB", n / 1024.0)
    }
}

/// The whole report as markdown.
pub fn markdown(r: &Results) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# Director benchmark report\n");
    let _ = writeln!(
        o,
        "Run {} on {}; tree {}; {} mode; took {:.0} s. Produced by `cargo xtask bench` \
         (method and how to read it: docs/benchmarks.md).\n",
        r.started,
        r.machine,
        r.commit,
        if r.opts.quick { "quick" } else { "full" },
        r.seconds
    );
    let _ = writeln!(
        o,
        "Noise: other work (builds, tests) may run on the machine during the benchmark. \
         Every figure is a median over many samples taken in interleaved rounds, costs are \
         differences against a baseline measured in the same round, and CPU is counted per \
         thread, so other processes' work is not in the figures; spreads (p10..p90) are \
         shown so that a noisy figure is visible as one.\n"
    );
    for (part, e) in &r.errors {
        let _ = writeln!(o, "> **{part} failed:** {e}\n");
    }

    let _ = writeln!(o, "## Targets\n");
    let rows: Vec<Vec<String>> = targets(r)
        .into_iter()
        .map(|t| {
            let mut v = verdict(t.met).to_owned();
            if t.inconclusive {
                v.push_str(" (p10..p90 crosses the limit: within this run's noise)");
            }
            vec![t.what, t.limit, t.measured, v]
        })
        .collect();
    table(
        &mut o,
        &["target", "limit", "measured (median, p10..p90)", "result"],
        &rows,
    );

    if let Some(m) = &r.matrix {
        let _ = writeln!(o, "## 1. Cost per packet (BPF_PROG_TEST_RUN)\n");
        let _ = writeln!(
            o,
            "Replay method: {} rounds; a sample is one call of {} iterations (established, \
             replies, SYN again, no VIP) or {} iterations (never-seen flows, a different flow \
             each iteration), the frame \
             restored before every iteration. One run per call: {} calls per case. \
             Floor: {} ns/packet (one run per call: {}); the replay adds {} ns around any program \
             (subtracted); {}.\n",
            m.rounds,
            m.batch_est,
            m.batch_new,
            m.single_calls,
            m.floor.show(1),
            m.floor_single.show(0),
            m.replay_overhead.show(1),
            m.program
        );
        let mut rows = vec![vec![
            "floor (swap MACs, XDP_TX)".to_owned(),
            format!("{:.1}", m.floor.median),
            "-".into(),
            "1.00x".into(),
            format!("{:.0}", m.floor_single.median),
            "-".into(),
        ]];
        for c in &m.cases {
            rows.push(vec![
                c.label(),
                format!("{:.0}", c.ns),
                c.above.show(0),
                format!("{:.2}x", c.ratio),
                c.single.show(0),
                format!("{:.0}", c.single_above),
            ]);
        }
        table(
            &mut o,
            &[
                "case",
                "ns/packet",
                "above floor, ns (p10..p90)",
                "ratio to floor",
                "one run per call, ns (p10..p90)",
                "one run per call, above floor",
            ],
            &rows,
        );
        let _ = writeln!(o, "![cost per packet](testrun.png)\n");
        let _ = writeln!(
            o,
            "Diagnostics: one insert of a new {}-byte key with a {}-byte value (the connection \
             table's sizes) into an empty table, alone in a minimal XDP program (ns per \
             insert, the program's own cost subtracted): the kernel's hash tables, and a \
             bucket of the director's own table (one candidate bucket read and written, \
             without atomics):\n",
            std::mem::size_of::<director_common::conntable::FlowKey>(),
            std::mem::size_of::<director_common::conntable::Conn>(),
        );
        let mut kinds: Vec<String> = Vec::new();
        let mut sizes: Vec<u32> = Vec::new();
        for (k, n, _) in &m.inserts {
            if !kinds.contains(k) {
                kinds.push(k.clone());
            }
            if !sizes.contains(n) {
                sizes.push(*n);
            }
        }
        let header: Vec<String> = std::iter::once("table".to_owned())
            .chain(
                sizes
                    .iter()
                    .map(|n| format!("{} entries", thousands(*n as f64))),
            )
            .collect();
        let rows: Vec<Vec<String>> = kinds
            .iter()
            .map(|k| {
                std::iter::once(k.clone())
                    .chain(sizes.iter().map(|n| {
                        m.inserts
                            .iter()
                            .find(|x| &x.0 == k && x.1 == *n)
                            .map_or("-".into(), |x| x.2.show(0))
                    }))
                    .collect()
            })
            .collect();
        let h: Vec<&str> = header.iter().map(String::as_str).collect();
        table(&mut o, &h, &rows);
    }

    if let Some(s) = &r.scaling {
        let _ = writeln!(o, "## 2. Scaling\n");
        let _ = writeln!(
            o,
            "Cost above the floor (replay method), ns per packet, median (p10..p90).\n"
        );
        let names: Vec<String> = {
            let mut v: Vec<String> = Vec::new();
            for p in &s.points {
                for (n, _) in &p.cases {
                    if !v.contains(n) {
                        v.push(n.clone());
                    }
                }
            }
            v
        };
        let mut header: Vec<&str> = vec!["dimension", "value"];
        header.extend(names.iter().map(String::as_str));
        header.push("configuration");
        let rows: Vec<Vec<String>> = s
            .points
            .iter()
            .map(|p| {
                let mut row = vec![p.dimension.to_owned(), p.value.clone()];
                for n in &names {
                    row.push(
                        p.cases
                            .iter()
                            .find(|c| &c.0 == n)
                            .map_or("-".into(), |c| c.1.show(0)),
                    );
                }
                row.push(p.note.clone());
                row
            })
            .collect();
        table(&mut o, &header, &rows);
        for n in &s.setup_notes {
            let _ = writeln!(o, "- {n}");
        }
        let _ = writeln!(o, "\n![scaling](scaling.png)\n");
    }

    if let Some(e) = &r.e2e {
        let _ = writeln!(o, "## 3. End to end (namespace lab)\n");
        let _ = writeln!(
            o,
            "client -- veth -- director -- veth -- reals (3 real addresses on one host). {} rounds; each \
             sample: UDP, {} flows of 64-byte frames at full speed, at most {} packets or {:?}; \
             TCP, one request per new connection, sequential, at most {} connections or {:?}. \
             CPU = schedstat of the load thread, the servers (TCP) and ksoftirqd, all pinned to \
             one CPU. Added = variant minus its floor in the same round.\n",
            e.rounds,
            16,
            thousands(e.udp_bound.0 as f64),
            e.udp_bound.1,
            thousands(e.tcp_bound.0 as f64),
            e.tcp_bound.1
        );
        let rows: Vec<Vec<String>> = e
            .variants
            .iter()
            .map(|v| {
                vec![
                    v.variant.label().to_owned(),
                    v.variant
                        .floor()
                        .map_or("-".into(), |f| f.short().to_owned()),
                    thousands(v.udp_pps.median),
                    format!("{:.0}", v.udp_ns.median),
                    v.udp_added.map_or("-".into(), |d| d.show(0)),
                    format!("{:.1}", v.udp_delivered_pct),
                    thousands(v.tcp_cps.median),
                    thousands(v.tcp_cps_cpu),
                    format!("{:.1}", v.tcp_ns.median / 1e3),
                    v.tcp_added.map_or("-".into(), |d| {
                        format!(
                            "{:.1} ({:.1}..{:.1})",
                            d.median / 1e3,
                            d.p10 / 1e3,
                            d.p90 / 1e3
                        )
                    }),
                    v.tcp_failed.to_string(),
                ]
            })
            .collect();
        table(
            &mut o,
            &[
                "variant",
                "floor",
                "UDP delivered pkt/s",
                "UDP CPU ns/packet",
                "UDP added ns/packet",
                "UDP delivered %",
                "TCP conn/s (wall)",
                "TCP conn/s per CPU-second",
                "TCP CPU us/conn",
                "TCP added us/conn",
                "TCP failed",
            ],
            &rows,
        );
        for w in &e.warnings {
            let _ = writeln!(o, "> warning: {w}\n");
        }
        let _ = writeln!(o, "![end to end](e2e.png)\n");
    }

    if let Some(c) = &r.control {
        let _ = writeln!(o, "## 4. Control plane\n");
        let _ = writeln!(
            o,
            "Maglev table build (`director_control::tables::maglev`), ms per build:\n"
        );
        let rows: Vec<Vec<String>> = c
            .maglev
            .iter()
            .map(|m| {
                vec![
                    thousands(m.size as f64),
                    thousands(m.reals as f64),
                    m.ms.show(3),
                ]
            })
            .collect();
        table(&mut o, &["table size", "reals", "ms (p10..p90)"], &rows);
        let _ = writeln!(o, "![maglev](maglev.png)\n");
        match &c.restore {
            Some(rs) => {
                let _ = writeln!(
                    o,
                    "Restore of {} services x {} reals ({} lines) through the {}: {:.2} s, {} \
                     ({} services and {} reals present afterwards; {:.3} ms per line){}.\n",
                    thousands(rs.services as f64),
                    rs.reals_per_service,
                    thousands(rs.lines as f64),
                    rs.path,
                    rs.seconds,
                    if rs.completed {
                        "completed"
                    } else {
                        "**did not complete**"
                    },
                    thousands(rs.services_applied as f64),
                    thousands(rs.reals_applied as f64),
                    rs.seconds * 1e3 / (rs.services_applied + rs.reals_applied).max(1) as f64,
                    rs.error
                        .as_ref()
                        .map_or(String::new(), |e| format!("; stopped with: `{e}`"))
                );
            }
            None => {
                let _ = writeln!(o, "Restore: not measured.\n");
            }
        }
        let _ = writeln!(
            o,
            "For scale: one bpf(2) map lookup from userspace costs {:.2} us on the machine measured; the \
             control library reads the maps once per process into an index (the reals and the \
             tables through memory mappings) and writes one map entry per call.\n",
            c.syscall_ns / 1e3
        );
        if let Some(sc) = &c.scans {
            let _ = writeln!(
                o,
                "Listings on a full connection table ({} entries, every way of the default \
                 table; {} services, {} reals), wall-clock seconds per run of the CLI, output \
                 to /dev/null:\n",
                thousands(sc.entries as f64),
                sc.services,
                sc.reals
            );
            let rows: Vec<Vec<String>> = sc
                .runs
                .iter()
                .map(|s| {
                    vec![
                        format!("`{}`", s.command),
                        s.seconds.show(3),
                        if s.ok { "ok" } else { "**failed**" }.to_owned(),
                    ]
                })
                .collect();
            table(&mut o, &["command", "s (p10..p90)", "exit"], &rows);
        }
        for n in &c.notes {
            let _ = writeln!(o, "- {n}");
        }
        let _ = writeln!(
            o,
            "Memory of the pinned maps (fdinfo `memlock`, what the kernel charges for each map):\n"
        );
        let mut header = vec!["map".to_owned()];
        header.extend(c.memory.iter().map(|m| format!("{}: {}", m.label, m.opts)));
        let names: Vec<String> = c
            .memory
            .first()
            .map(|m| m.maps.iter().map(|x| x.0.clone()).collect())
            .unwrap_or_default();
        let mut rows: Vec<Vec<String>> = names
            .iter()
            .map(|n| {
                let mut row = vec![n.clone()];
                for m in &c.memory {
                    row.push(m.maps.iter().find(|x| &x.0 == n).map_or("-".into(), |x| {
                        // The connection table's values are buckets of several entries.
                        if x.0 == director_common::maps::CONNS {
                            let ways = director_common::conntable::CONN_WAYS as f64;
                            format!(
                                "{} ({} entries in buckets of {ways})",
                                bytes(x.2),
                                thousands(x.1 as f64 * ways)
                            )
                        } else {
                            format!("{} ({} entries)", bytes(x.2), thousands(x.1 as f64))
                        }
                    }));
                }
                row
            })
            .collect();
        let mut total = vec!["**total**".to_owned()];
        total.extend(c.memory.iter().map(|m| format!("**{}**", bytes(m.total))));
        rows.push(total);
        let h: Vec<&str> = header.iter().map(String::as_str).collect();
        table(&mut o, &h, &rows);
    }
    o
}

/// The plots of the report (beside report.md).
pub fn plots(r: &Results, dir: &Path) -> Result<Vec<String>> {
    let mut made = Vec::new();
    if let Some(m) = &r.matrix {
        let bars: Vec<Bar> = m
            .cases
            .iter()
            .map(|c| Bar {
                label: c.label(),
                value: c.above,
                color: match c.flow {
                    Flow::New => 1,
                    Flow::NewSame => 3,
                    Flow::Reply => 2,
                    Flow::NotVip => 4,
                    _ => 0,
                },
            })
            .collect();
        let h = 120 + 34 * bars.len() as u32;
        plot::png(&dir.join("testrun.png"), (1100, h), |a| {
            plot::hbars(
                a,
                &format!(
                    "Cost above the floor ({:.0} ns/packet), BPF_PROG_TEST_RUN",
                    m.floor.median
                ),
                "ns per packet above the floor (bar: median; line: p10..p90)",
                &bars,
                &[
                    Mark {
                        x: TARGET_EST_NS,
                        label: "target, established (100 ns)".into(),
                    },
                    Mark {
                        x: TARGET_NEW_NS,
                        label: "target, new flow (250 ns)".into(),
                    },
                ],
            )
        })?;
        made.push("testrun.png".into());
    }
    if let Some(s) = &r.scaling {
        plot::png(&dir.join("scaling.png"), (1400, 1000), |a| {
            let panels = a.split_evenly((2, 2));
            for (p, dim) in
                panels
                    .iter()
                    .zip(["services", "reals", "conn table fill", "conn table size"])
            {
                let pts: Vec<_> = s.points.iter().filter(|x| x.dimension == dim).collect();
                let xl: Vec<String> = pts.iter().map(|x| x.value.clone()).collect();
                let mut series: Vec<(String, Vec<f64>)> = Vec::new();
                if let Some(first) = pts.first() {
                    for (k, (name, _)) in first.cases.iter().enumerate() {
                        series.push((
                            name.clone(),
                            pts.iter()
                                .filter_map(|x| x.cases.get(k))
                                .map(|c| c.1.median)
                                .collect(),
                        ));
                    }
                }
                plot::lines(
                    p,
                    &format!("cost above the floor vs {dim}"),
                    dim,
                    "ns per packet",
                    &xl,
                    &series,
                    &[],
                )?;
            }
            Ok(())
        })?;
        made.push("scaling.png".into());
    }
    if let Some(e) = &r.e2e {
        plot::png(&dir.join("e2e.png"), (1500, 900), |a| {
            let panels = a.split_evenly((2, 2));
            let all = |f: &dyn Fn(&super::e2e::VariantResult) -> Dist, scale: f64| -> Vec<Bar> {
                e.variants
                    .iter()
                    .map(|v| {
                        let d = f(v);
                        Bar {
                            label: v.variant.short().into(),
                            value: Dist {
                                median: d.median / scale,
                                p10: d.p10 / scale,
                                p90: d.p90 / scale,
                                n: d.n,
                            },
                            color: color_of(v.variant),
                        }
                    })
                    .collect()
            };
            let added =
                |f: &dyn Fn(&super::e2e::VariantResult) -> Option<Dist>, scale: f64| -> Vec<Bar> {
                    e.variants
                        .iter()
                        .filter_map(|v| {
                            f(v).map(|d| Bar {
                                label: format!(
                                    "{} (over {})",
                                    v.variant.short(),
                                    v.variant.floor().map_or("", |x| x.short())
                                ),
                                value: Dist {
                                    median: d.median / scale,
                                    p10: d.p10 / scale,
                                    p90: d.p90 / scale,
                                    n: d.n,
                                },
                                color: color_of(v.variant),
                            })
                        })
                        .collect()
                };
            plot::hbars(
                &panels[0],
                "UDP: CPU per packet, whole path",
                "ns per packet",
                &all(&|v| v.udp_ns, 1.0),
                &[],
            )?;
            plot::hbars(
                &panels[1],
                "UDP: CPU added over the floor",
                "ns per packet",
                &added(&|v| v.udp_added, 1.0),
                &[],
            )?;
            plot::hbars(
                &panels[2],
                "TCP: CPU per connection, whole path",
                "us per connection",
                &all(&|v| v.tcp_ns, 1e3),
                &[],
            )?;
            plot::hbars(
                &panels[3],
                "TCP: CPU added over the floor",
                "us per connection",
                &added(&|v| v.tcp_added, 1e3),
                &[],
            )?;
            Ok(())
        })?;
        made.push("e2e.png".into());
    }
    if let Some(c) = &r.control {
        plot::png(&dir.join("maglev.png"), (800, 500), |a| {
            let reals = [10u32, 100, 1000];
            let xl: Vec<String> = reals.iter().map(|r| thousands(*r as f64)).collect();
            let series: Vec<(String, Vec<f64>)> = [16_381u32, 65_537]
                .iter()
                .map(|size| {
                    (
                        format!("{} entries", thousands(*size as f64)),
                        reals
                            .iter()
                            .filter_map(|n| {
                                c.maglev.iter().find(|m| m.reals == *n && m.size == *size)
                            })
                            .map(|m| m.ms.median)
                            .collect(),
                    )
                })
                .collect();
            plot::lines(
                a,
                "Maglev table build time",
                "reals",
                "ms per build",
                &xl,
                &series,
                &[(
                    TARGET_MAGLEV_MS,
                    "target for 1,000 reals at 65,537 (5 ms)".into(),
                )],
            )
        })?;
        made.push("maglev.png".into());
    }
    Ok(made)
}

fn color_of(v: Variant) -> usize {
    match v {
        Variant::Routing | Variant::RoutingPass => 2,
        Variant::Nftables => 3,
        _ => 0,
    }
}

/// Writes report.md and the plots into `dir`; returns the markdown.
pub fn write(r: &Results, dir: &Path) -> Result<String> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut md = markdown(r);
    match plots(r, dir) {
        Ok(_) => {}
        Err(e) => {
            md.push_str(&format!("\n> The plots could not be drawn: {e:#}\n"));
        }
    }
    std::fs::write(dir.join("report.md"), &md)
        .with_context(|| format!("writing {}", dir.join("report.md").display()))?;
    Ok(md)
}
