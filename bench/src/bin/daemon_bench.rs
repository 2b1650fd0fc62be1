//! How many real servers can the health-check daemon check at a 1 s interval on one
//! core? Reports; never fails on a number.
//!
//! ```text
//! cargo run --release -p director-bench --bin daemon_bench -- [--seconds 10] [--check tcp|http] [N...]
//! ```
//! (default N: 1000 10000). Not root: everything is on 127.0.0.1. For each N the daemon
//! (the real controller, check tasks and TCP or HTTP checks; the in-memory maps
//! instead of the maps, which hold at most 4095 reals) runs on one thread with a
//! current-thread runtime: one core. The reals are 100 loopback listeners served by a
//! second thread, each appearing in N/100 services (a real is an (address, port) within
//! a service, so every check is its own connection). After a warm-up the run counts the
//! checks completed per second, the failures, the lateness against the target (N per
//! second), and the checker thread's CPU time; the CPU share gives the extrapolated
//! number of reals one core could keep at 1 s.

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::{Arc, mpsc},
    time::{Duration, Instant},
};

use director_common::real::Method;
use director_control::{Protocol, RealSpec, ServiceSpec, state::StateOptions};
use director_daemon::{
    self as daemon, ConfigSource, DaemonOptions,
    config::{
        CheckConfig, CheckKind, Config, DaemonSettings, HttpCheck, InitState, OnDown, RealConfig,
        ServiceConfig, StatusSet,
    },
    maps::MemoryMaps,
};

const LISTENERS: usize = 100;
const WARMUP: Duration = Duration::from_secs(3);

fn raise_nofile() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
    r.rlim_cur
}

/// utime + stime of a thread, in seconds, read from its stat file (opened once, before
/// the run, so a run short of descriptors can still read it).
fn thread_cpu(f: &mut std::fs::File) -> f64 {
    use std::io::{Read as _, Seek as _};
    let mut stat = String::new();
    let _ = f.rewind();
    let _ = f.read_to_string(&mut stat);
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the comm: state is field 3, utime 14, stime 15 (1-based) -> 11 and 12 here.
    let ticks: u64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / hz
}

/// The loopback reals: accept, answer HTTP if asked, close.
fn start_servers(
    http: bool,
) -> (
    Vec<u16>,
    std::thread::JoinHandle<()>,
    tokio::sync::oneshot::Sender<()>,
) {
    let (ports_tx, ports_rx) = mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let t = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut ports = Vec::new();
            let mut tasks = Vec::new();
            for _ in 0..LISTENERS {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                ports.push(l.local_addr().unwrap().port());
                tasks.push(tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                    loop {
                        let Ok((mut s, _)) = l.accept().await else {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                            continue;
                        };
                        if !http {
                            continue; // dropped: closed
                        }
                        tokio::spawn(async move {
                            let mut buf = [0u8; 2048];
                            let mut got = 0;
                            while got < buf.len() && !buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                                match s.read(&mut buf[got..]).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => got += n,
                                }
                            }
                            let _ = s
                                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
                                .await;
                        });
                    }
                }));
            }
            ports_tx.send(ports).unwrap();
            let _ = stopped.await;
            for t in tasks {
                t.abort();
            }
        });
    });
    (ports_rx.recv().unwrap(), t, stop)
}

fn config(n: usize, ports: &[u16], http: bool) -> Config {
    let mut check = CheckConfig::new(if http {
        CheckKind::Http(HttpCheck {
            path: "/".into(),
            host: None,
            status: StatusSet::default(),
            body: None,
            tls: None,
        })
    } else {
        CheckKind::Tcp
    });
    check.interval = Duration::from_secs(1);
    check.timeout = Duration::from_secs(1);
    check.init_state = InitState::FullyUp;
    let check = Arc::new(check);
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let services = (0..n.div_ceil(LISTENERS))
        .map(|s| {
            let spec = ServiceSpec::new(
                Protocol::Tcp,
                IpAddr::V4(Ipv4Addr::new(10, 0, (s / 250) as u8, (s % 250) as u8 + 1)),
                80,
            );
            let reals = ports
                .iter()
                .take((n - s * LISTENERS).min(LISTENERS))
                .map(|p| RealConfig::new(RealSpec::new(lo, *p, Method::Masq, 1)))
                .collect();
            ServiceConfig {
                name: None,
                spec,
                reals,
                check: check.clone(),
                on_down: OnDown::Quiescent,
                slowstart: Duration::ZERO,
                quorum: 1,
                fallback: None,
                hooks: Default::default(),
            }
        })
        .collect();
    Config {
        path: "bench".into(),
        allow_empty: false,
        daemon: DaemonSettings {
            jitter: 0.1,
            ..DaemonSettings::default()
        },
        services,
        bgp: None,
    }
}

struct Result_ {
    rate: f64,
    failures: u64,
    cpu: f64,
}

fn run(n: usize, seconds: u64, http: bool, ports: &[u16]) -> Result_ {
    let cfg = config(n, ports, http);
    let (handle, requests) = daemon::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (tid_tx, tid_rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        // SAFETY: gettid has no preconditions.
        tid_tx.send(unsafe { libc::gettid() }).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut opts = DaemonOptions::new(
            ConfigSource::Fixed(Box::new(cfg)),
            StateOptions {
                bpffs: Some("/nonexistent/bench".into()),
            },
        );
        opts.requests = Some(requests);
        rt.block_on(daemon::serve(
            opts,
            Box::new(MemoryMaps::new()),
            async move {
                let _ = stopped.await;
            },
        ))
        .unwrap();
    });
    let tid = tid_rx.recv().unwrap();
    let mut stat = std::fs::File::open(format!("/proc/self/task/{tid}/stat")).unwrap();
    let totals = || {
        let st = handle.blocking_status().expect("daemon running");
        st.iter()
            .flat_map(|s| s.reals.iter())
            .fold((0u64, 0u64), |(c, f), r| (c + r.checks, f + r.failures))
    };
    // Bounded waits: a fixed warm-up, then the measured window.
    std::thread::sleep(WARMUP);
    let (c0, f0) = totals();
    let cpu0 = thread_cpu(&mut stat);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let (c1, f1) = totals();
    let cpu1 = thread_cpu(&mut stat);
    let dt = t0.elapsed().as_secs_f64();
    let _ = stop.send(());
    t.join().unwrap();
    Result_ {
        rate: (c1 - c0) as f64 / dt,
        failures: f1 - f0,
        cpu: (cpu1 - cpu0) / dt,
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut seconds = 10u64;
    let mut http = false;
    let mut sizes = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .expect("--seconds N")
            }
            "--check" => http = args.next().as_deref() == Some("http"),
            "--bench" => {}
            n => sizes.push(n.parse::<usize>().expect("a number of reals")),
        }
    }
    if sizes.is_empty() {
        sizes = vec![1000, 10_000];
    }
    let nofile = raise_nofile();
    let (ports, servers, stop) = start_servers(http);
    println!(
        "daemon check throughput: {} checks, 1 s interval, jitter 0.1, checker on one thread (current-thread runtime), {seconds} s window after {WARMUP:?} warm-up, {nofile} descriptors",
        if http { "HTTP GET" } else { "TCP connect" }
    );
    println!(
        "{:>8} {:>14} {:>10} {:>9} {:>10} {:>22}",
        "reals", "checks/s", "of target", "failures", "cpu (1 core)", "reals/core at 1 s (est.)"
    );
    for n in sizes {
        let r = run(n, seconds, http, &ports);
        let est = if r.cpu > 0.0 {
            (r.rate / r.cpu) as u64
        } else {
            0
        };
        println!(
            "{n:>8} {:>14.0} {:>9.1}% {:>9} {:>11.0}% {:>22}",
            r.rate,
            100.0 * r.rate / n as f64,
            r.failures,
            100.0 * r.cpu,
            est
        );
    }
    let _ = stop.send(());
    servers.join().unwrap();
}
