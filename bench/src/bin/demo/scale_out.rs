//! `cargo xtask demo --scale-out`: three directors behind an ECMP router, each running
//! `director attach`, BIRD and `director daemon` with `[bgp]`, announcing the VIP; the
//! router's multipath route, which director carried how many new connections,
//! established streams, one director killed and routed around by BFD, the streams going
//! on through the others, and a teardown that also runs on Ctrl-C. The lab is
//! `director_tests::scale_out`, the one the scale-out integration test runs.

use std::{
    io::BufRead as _,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, Mutex},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};
use director_control::Datapath;
use director_tests::{
    lab::{Lab, wait_until},
    scale_out::{
        self as so, BFD_DEADLINE, CONVERGE, DIRECTORS, Director, ECHO_PORT, Pump, Scratch, VIP_WEB,
        director_addr,
    },
};

use crate::{indent, section};

/// New connections of the first burst (after the failure, half as many).
const NEW_CONNECTIONS: usize = 60;
/// Established streams kept flowing while a director dies.
const STREAMS: usize = 9;
/// The director killed (dir2).
const KILLED: usize = 1;

/// What a Ctrl-C (or SIGTERM, SIGHUP) must remove when the demo cannot unwind to its
/// drops: the processes the lab started (their own process groups, so the terminal's
/// signal does not reach them), the namespaces, the pins and the scratch files.
struct Emergency {
    pids: Vec<u32>,
    netns: Vec<String>,
    bpffs: PathBuf,
    scratch: Arc<Scratch>,
}

static EMERGENCY: Mutex<Option<Emergency>> = Mutex::new(None);

fn emergency() -> std::sync::MutexGuard<'static, Option<Emergency>> {
    EMERGENCY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread and every thread it starts later
/// (call it first), and waits for them on a thread of their own: the first one tears
/// down what [`EMERGENCY`] holds and exits 130. Child processes start with the signals
/// unblocked (the standard library resets the mask).
fn catch_signals() -> Result<()> {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before any use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: sigemptyset/sigaddset on a set we own; pthread_sigmask on this thread.
    let r = unsafe {
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut())
    };
    if r != 0 {
        bail!("blocking SIGINT: {}", std::io::Error::from_raw_os_error(r));
    }
    std::thread::spawn(move || {
        loop {
            let mut sig = 0;
            // SAFETY: sigwait on a set the thread owns (a copy), writing into a local.
            if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                continue;
            }
            let Some(e) = emergency().take() else {
                // Before the lab exists, or while the normal teardown runs: let it end.
                continue;
            };
            eprintln!("\ndemo: interrupted; removing the lab");
            for pid in &e.pids {
                // SAFETY: kill(2) of a process group the lab made for its child.
                unsafe { libc::kill(-(*pid as i32), libc::SIGKILL) };
            }
            for ns in &e.netns {
                let _ = Command::new("ip").args(["netns", "del", ns]).output();
            }
            let _ = std::fs::remove_dir_all(&e.bpffs);
            e.scratch.remove();
            std::process::exit(130);
        }
    });
    Ok(())
}

/// Records a process the lab started, for the teardown on a signal.
fn started(pid: u32) -> u32 {
    if let Some(e) = emergency().as_mut() {
        e.pids.push(pid);
    }
    pid
}

fn start_director(lab: &Lab, bin: &Path, scratch: &Scratch, n: u8) -> Result<Director> {
    let d = so::start_director(lab, bin, scratch, n)
        .with_context(|| format!("starting director dir{n}"))?;
    started(d.bird);
    started(d.daemon);
    Ok(d)
}

fn director_name(d: &Director) -> String {
    format!("dir{} {}", d.n, director_addr(d.n))
}

/// New connections per director since `before`, as a table.
fn connection_table(directors: &[Director], before: &[u64], dead: Option<usize>) {
    println!("   {:<18} {:>15}", "director", "new connections");
    for (i, d) in directors.iter().enumerate() {
        let note = if dead == Some(i) { "   (dead)" } else { "" };
        println!(
            "   {:<18} {:>15}{note}",
            director_name(d),
            d.connections() - before[i]
        );
    }
}

fn counters(directors: &[Director]) -> Vec<u64> {
    directors.iter().map(Director::connections).collect()
}

pub fn run(keep: bool, bin: PathBuf) -> Result<()> {
    catch_signals()?;
    let result = demo(keep, bin);
    // The lab is gone by now (or was never made); the last handle on the scratch
    // directory goes with the signal teardown's, also after an error.
    drop(emergency().take());
    result
}

fn demo(keep: bool, bin: PathBuf) -> Result<()> {
    let t0 = Instant::now();
    section("Lab: a router with BIRD (ECMP), three directors with BIRD and the daemon");
    let lab = Lab::build(&so::topology()).context("building the lab")?;
    let scratch = Arc::new(Scratch::new(
        std::env::temp_dir().join(format!("{}-demo-scale-out", lab.id())),
        Some(lab.id()),
    )?);
    *emergency() = Some(Emergency {
        pids: Vec::new(),
        netns: lab.netns_names(),
        bpffs: lab.bpffs_dir().to_owned(),
        scratch: scratch.clone(),
    });
    println!(
        "   client 10.3.0.2 ── router 10.3.0.1 | 10.2.0.1 ──[dnet]── dir1..3 10.2.0.11-13 (XDP on eth0)"
    );
    println!(
        "                                                 └─── real1..3 10.2.0.21-23 (DR, VIP {VIP_WEB} on lo)"
    );
    println!(
        "   router: BIRD from examples/bird-router.conf (merge paths, BFD), L4 multipath hash"
    );
    println!(
        "   each director: director attach eth0, BIRD from examples/bird-director.conf, \
         director daemon with [bgp]"
    );
    // Frames a director sends back out of eth0 reach the bridge only with a program on
    // the bridge's port (docs/datapath.md); a real network does not need it.
    let mut helpers = Datapath::load_helpers()?;
    so::attach_bridge_pass(&lab, &mut helpers)?;
    started(so::start_router(&lab, &scratch).context("starting the router's BIRD")?);
    let directors: Vec<Director> = (1..=DIRECTORS)
        .map(|n| start_director(&lab, &bin, &scratch, n))
        .collect::<Result<_>>()?;
    let router = lab.ns("router");
    let all: Vec<Ipv4Addr> = (1..=DIRECTORS).map(director_addr).collect();
    let t = Instant::now();
    wait_until(CONVERGE, "the router's route over every director", || {
        so::nexthops(router, VIP_WEB) == all
    })?;
    wait_until(CONVERGE, "a BFD session up with every director", || {
        so::bfd_sessions_up(&scratch.router_ctl()) == DIRECTORS as usize
    })?;

    section(&format!(
        "The router's route to {VIP_WEB} (ip route, {:.1} s after start), BFD sessions",
        t.elapsed().as_secs_f64()
    ));
    indent(&so::route(router, VIP_WEB));
    // The router also has a session ready for a fourth director, which this demo does
    // not start; BIRD's banner says nothing either.
    let spare = director_addr(so::JOINING).to_string();
    let bfd = birdc(&scratch.router_ctl(), &["show", "bfd", "sessions"]);
    for l in bfd
        .lines()
        .filter(|l| !l.starts_with("BIRD ") && !l.starts_with(&spare))
    {
        println!("   {l}");
    }

    section(&format!(
        "{NEW_CONNECTIONS} new HTTP connections from the client (each director's counters)"
    ));
    let before = counters(&directors);
    so::requests(&lab, NEW_CONNECTIONS)?;
    connection_table(&directors, &before, None);

    section(&format!("{STREAMS} established TCP echo streams"));
    let mut streams: Vec<Pump> = Vec::new();
    let mut carrier = Vec::new();
    for i in 0..STREAMS {
        let before: Vec<u64> = directors
            .iter()
            .map(|d| d.service_connections(ECHO_PORT))
            .collect();
        streams.push(so::stream(&lab, i)?);
        carrier.push(
            directors
                .iter()
                .zip(&before)
                .position(|(d, b)| d.service_connections(ECHO_PORT) > *b),
        );
    }
    so::wait_flowing(&streams)?;
    let via = |c: &Option<usize>| c.map_or("?".to_owned(), |i| format!("dir{}", i + 1));
    println!(
        "   {}",
        carrier
            .iter()
            .enumerate()
            .map(|(i, c)| format!("stream{i}: {}", via(c)))
            .collect::<Vec<_>>()
            .join("  ")
    );

    let dead = &directors[KILLED];
    section(&format!(
        "dir{} dies: link down, its daemon and BIRD SIGKILLed (BGP hold time {} s)",
        dead.n,
        so::HOLD_TIME_S
    ));
    let t = Instant::now();
    dead.kill(&lab)?;
    let alive: Vec<Ipv4Addr> = all
        .iter()
        .copied()
        .filter(|a| *a != director_addr(dead.n))
        .collect();
    wait_until(BFD_DEADLINE, "the router to drop the dead director", || {
        so::nexthops(router, VIP_WEB) == alive
    })?;
    println!(
        "   the router dropped dir{}'s path after {:.0} ms (BFD):",
        dead.n,
        t.elapsed().as_secs_f64() * 1000.0
    );
    indent(&so::route(router, VIP_WEB));

    section("The established streams");
    let echoed = so::finish_streams(streams)?;
    println!(
        "   {:<9} {:<5} {:>14} {:>14}",
        "stream", "via", "bytes echoed", "longest pause"
    );
    for (i, (e, c)) in echoed.iter().zip(&carrier).enumerate() {
        let moved = if *c == Some(KILLED) {
            "   moved to a live director"
        } else {
            ""
        };
        println!(
            "   {:<9} {:<5} {:>14} {:>11} ms{moved}",
            format!("stream{i}"),
            via(c),
            e.received,
            e.longest_pause.as_millis()
        );
    }
    println!(
        "   every stream went on, every byte came back; longest pause {} ms",
        so::longest_pause(&echoed).as_millis()
    );

    section(&format!(
        "{} new connections after the failure: all answered",
        NEW_CONNECTIONS / 2
    ));
    let before = counters(&directors);
    so::requests(&lab, NEW_CONNECTIONS / 2)?;
    connection_table(&directors, &before, Some(KILLED));

    if keep {
        section("The lab stays up (--keep). Try, in another shell:");
        let ns = |h: &str| lab.ns(h).path().display().to_string();
        println!(
            "   nsenter --net={} curl -s http://{VIP_WEB}/",
            ns("client")
        );
        println!(
            "   nsenter --net={} ip route show {VIP_WEB}/32",
            ns("router")
        );
        println!(
            "   birdc -s {} show protocols",
            scratch.router_ctl().display()
        );
        println!(
            "   nsenter --net={} {} --bpffs {} status",
            ns("dir1"),
            bin.display(),
            lab.bpffs_dir().join("dir1").display()
        );
        println!(
            "   logs: {}/dir*/daemon.log, {0}/*/bird.log",
            scratch.dir().display()
        );
        println!("\n   Press Enter here to tear it all down.");
        let _ = std::io::stdin().lock().read_line(&mut String::new());
    }
    // From here the normal teardown runs; a signal no longer cuts it short.
    drop(emergency().take());
    drop(directors);
    drop(helpers);
    drop(lab);
    drop(scratch);
    section(&format!(
        "Done in {:.1} s; everything is gone (namespaces, BIRD, daemons, programs, pins, \
         /run/director files).",
        t0.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// `birdc -s CTL ARGS`' output (its error's text if it fails).
fn birdc(ctl: &Path, args: &[&str]) -> String {
    Command::new("birdc")
        .arg("-s")
        .arg(ctl)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_else(|e| format!("birdc: {e}"))
}
