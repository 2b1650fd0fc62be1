//! Scale-out behind an ECMP router: three directors, each with BIRD and `director
//! daemon`, announce the VIPs by BGP (with BFD) to a router running BIRD with `merge
//! paths` and the kernel's L4 multipath hash. New connections spread over every
//! director; a director that dies is routed around before the BGP hold time (BFD); a VIP
//! whose last real fails its checks is withdrawn by every director.
//!
//! ```text
//!  client 10.3.0.2 ── router 10.3.0.1 | 10.2.0.1 ──[dnet]── dir1..3 10.2.0.11-13 (XDP on eth0)
//!                                                      └─── real1..3 10.2.0.21-23 (VIPs on lo)
//! ```
//! DR: the reals answer the client through the router, not through a director.

use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use crate::support::director_bin;
use aya::programs::XdpMode;
use director_control::{Datapath, datapath::PROG_PASS, state::StateOptions};
use director_tests::{
    fixture::InNetns,
    lab::{Endpoint, Host, Lab, Netns, Topology, http_get, tcp_stream, wait_until},
};

const ROUTER_ASN: u32 = 65000;
const DIRECTOR_ASN: u32 = 65001;
const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 3, 0, 2);
const ROUTER_CLIENT_SIDE: Ipv4Addr = Ipv4Addr::new(10, 3, 0, 1);
/// Web: every real, HTTP checks.
const VIP_WEB: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
/// One real only, checked by a command the test makes fail.
const VIP_ONE: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 101);
const DIRECTORS: u8 = 3;
/// The director that joins later.
const JOINING: u8 = DIRECTORS + 1;
const REALS: u8 = 3;
/// Long on purpose: a dead director routed around well before it is BFD's doing.
const HOLD_TIME_S: u64 = 30;
/// Sessions up and routes in the router's kernel.
const CONVERGE: Duration = Duration::from_secs(60);
/// BFD's detection (3 x 100 ms) with ample margin, and far below the hold time.
const BFD_DEADLINE: Duration = Duration::from_secs(10);
/// A failed check seen by the daemons (interval 200 ms, fall 2), withdrawn, propagated.
const WITHDRAW: Duration = Duration::from_secs(20);
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// Established streams kept flowing while a director dies: with 24, all of them
/// avoiding one director of three has odds (2/3)^24, about 6 in 100,000.
const STREAMS: usize = 24;
/// A stream silent this long is broken.
const STREAM_STALL: Duration = Duration::from_secs(20);

fn v4(a: Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

fn director_addr(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 2, 0, 10 + n)
}

fn real_addr(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 2, 0, 20 + n)
}

fn topology() -> Topology {
    let mut t = Topology::new()
        .bridge("dnet")
        .host(Host::new("client").default_route(v4(ROUTER_CLIENT_SIDE)))
        .host(
            Host::new("router")
                .ip_forward()
                // ECMP over the 5-tuple: each new connection picks its director.
                .sysctl("net.ipv4.fib_multipath_hash_policy", "1"),
        )
        .veth(
            Endpoint::new("client", "eth0").addr(v4(CLIENT), 24),
            Endpoint::new("router", "eth0").addr(v4(ROUTER_CLIENT_SIDE), 24),
        )
        .bridged(Endpoint::new("router", "eth1").addr(v4(ROUTER), 24), "dnet");
    for n in 1..=JOINING {
        let name = format!("dir{n}");
        t = t
            // The data path's FIB lookups need forwarding on.
            .host(Host::new(&name).ip_forward())
            .bridged(
                Endpoint::new(&name, "eth0").addr(v4(director_addr(n)), 24),
                "dnet",
            );
    }
    for n in 1..=REALS {
        let name = format!("real{n}");
        t = t
            .host(
                Host::new(&name)
                    .default_route(v4(ROUTER))
                    .lo_addr(v4(VIP_WEB), 32)
                    .lo_addr(v4(VIP_ONE), 32)
                    .sysctl("net.ipv4.conf.all.arp_ignore", "1")
                    .sysctl("net.ipv4.conf.all.arp_announce", "2")
                    .sysctl("net.ipv4.conf.all.rp_filter", "0")
                    .sysctl("net.ipv4.conf.default.rp_filter", "0")
                    .http(80)
                    .echo(7),
            )
            .bridged(
                Endpoint::new(&name, "eth0").addr(v4(real_addr(n)), 24),
                "dnet",
            );
    }
    t
}

/// The test's files (BIRD's configurations, sockets and logs, the daemons' files) and
/// the daemons' lock files under /run/director, removed on drop.
struct Scratch {
    dir: PathBuf,
    /// The lab whose daemons' lock files to remove.
    lab_id: Option<String>,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let (Some(id), Ok(run)) = (&self.lab_id, std::fs::read_dir("/run/director")) else {
            return;
        };
        let id = id.replace('-', "_");
        for e in run.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.contains(&id) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// BIRD in `host`'s namespace, in the foreground (the lab stops its process group).
fn bird(lab: &Lab, host: &str, dir: &Path, conf: &str) -> u32 {
    std::fs::create_dir_all(dir).unwrap();
    let file = dir.join("bird.conf");
    std::fs::write(&file, conf).unwrap();
    let log = std::fs::File::create(dir.join("bird.log")).unwrap();
    let mut cmd = Command::new("bird");
    cmd.arg("-f")
        .arg("-c")
        .arg(&file)
        .arg("-s")
        .arg(dir.join("bird.ctl"))
        .arg("-P")
        .arg(dir.join("bird.pid"))
        .stdout(Stdio::null())
        .stderr(log);
    lab.spawn_pid(host, &mut cmd).unwrap()
}

fn example(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// examples/bird-router.conf in the lab's addresses (router 10.2.0.1, directors
/// 10.2.0.11-13), logging to stderr, with a hold time BFD must beat by far.
fn router_conf() -> String {
    let conf = example("bird-router.conf")
        .replace("192.0.2.", "10.2.0.")
        .replace("log syslog all;", "log stderr all;")
        .replace("hold time 9;", &format!("hold time {HOLD_TIME_S};"));
    assert!(conf.contains(&format!("hold time {HOLD_TIME_S};")));
    // The director that joins later has its session ready.
    format!(
        "{conf}protocol bgp director{JOINING} from director {{ neighbor {} as {DIRECTOR_ASN}; }}\n",
        director_addr(JOINING)
    )
}

/// examples/bird-director.conf for director `n`, including `include`.
fn director_bird_conf(n: u8, include: &Path) -> String {
    example("bird-director.conf")
        .replace("192.0.2.11", &director_addr(n).to_string())
        .replace("log syslog all;", "log stderr all;")
        .replace("/etc/bird/director.conf", include.to_str().unwrap())
}

fn daemon_conf(n: u8, dir: &Path, down_flag: &Path) -> String {
    let mut s = String::from(
        "[daemon]\nmetrics = \"127.0.0.1:9410\"\nsync_interval = \"1s\"\njitter = 0\n\
         [check]\ninterval = \"200ms\"\ntimeout = \"500ms\"\nrise = 1\nfall = 2\n",
    );
    s.push_str(&format!(
        "[[service]]\naddress = \"{VIP_WEB}:80\"\ncheck = {{ type = \"http\", path = \"/\" }}\n"
    ));
    for r in 1..=REALS {
        s.push_str(&format!(
            "[[service.real]]\naddress = \"{}\"\n",
            real_addr(r)
        ));
    }
    s.push_str(&format!("[[service]]\naddress = \"{VIP_WEB}:7\"\n"));
    for r in 1..=REALS {
        s.push_str(&format!(
            "[[service.real]]\naddress = \"{}\"\n",
            real_addr(r)
        ));
    }
    s.push_str(&format!(
        "[[service]]\naddress = \"{VIP_ONE}:80\"\n\
         check = {{ type = \"external\", command = [\"/bin/sh\", \"-c\", \"test ! -e {}\"], dynamic = false }}\n\
         [[service.real]]\naddress = \"{}\"\n",
        down_flag.display(),
        real_addr(1)
    ));
    s.push_str(&format!(
        "[bgp]\nsocket = \"{}\"\ninclude = \"{}\"\nasn = {DIRECTOR_ASN}\nrouter_id = \"{}\"\n\
         hold_time = {HOLD_TIME_S}\ndrain = \"0s\"\nbfd = {{ interval = \"100ms\", multiplier = 3 }}\n\
         [[bgp.neighbor]]\naddress = \"{ROUTER}\"\nasn = {ROUTER_ASN}\nbfd = true\n",
        dir.join("bird.ctl").display(),
        dir.join("director.conf").display(),
        director_addr(n)
    ));
    s
}

/// One director: `director attach eth0`, BIRD (its configuration includes the daemon's
/// file) and `director daemon`.
struct Director {
    state: StateOptions,
    bird: u32,
    daemon: u32,
}

fn start_director(lab: &Lab, scratch: &Path, n: u8, down_flag: &Path) -> Director {
    let host = format!("dir{n}");
    let dir = scratch.join(&host);
    std::fs::create_dir_all(&dir).unwrap();
    let state = StateOptions {
        bpffs: Some(lab.bpffs_dir().join(&host)),
    };
    let bpffs = state.bpffs.clone().unwrap();
    let bin = director_bin().to_str().unwrap();
    lab.ns(&host)
        .exec_ok(&[bin, "--bpffs", bpffs.to_str().unwrap(), "attach", "eth0"])
        .unwrap();
    // BIRD starts with an empty include; the daemon fills it and reconfigures BIRD.
    std::fs::write(dir.join("director.conf"), "").unwrap();
    let bird = bird(
        lab,
        &host,
        &dir,
        &director_bird_conf(n, &dir.join("director.conf")),
    );
    let config = dir.join("director.toml");
    std::fs::write(&config, daemon_conf(n, &dir, down_flag)).unwrap();
    let log = std::fs::File::create(dir.join("daemon.log")).unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg("--bpffs")
        .arg(&bpffs)
        .args(["daemon", "--config"])
        .arg(&config)
        .arg("--run-dir")
        .arg(dir.join("run"))
        .stdout(Stdio::null())
        .stderr(log);
    let daemon = lab.spawn_pid(&host, &mut cmd).unwrap();
    Director {
        state,
        bird,
        daemon,
    }
}

/// The router's next hops for `vip` (none when it has no route).
fn nexthops(router: &Netns, vip: Ipv4Addr) -> Vec<Ipv4Addr> {
    let out = router
        .exec_ok(&["ip", "-4", "route", "show", &format!("{vip}/32")])
        .unwrap_or_default();
    let words: Vec<&str> = out.split_whitespace().collect();
    let mut hops: Vec<Ipv4Addr> = words
        .windows(2)
        .filter(|w| w[0] == "via")
        .filter_map(|w| w[1].parse().ok())
        .collect();
    hops.sort();
    hops
}

/// `director status` in director `n`'s namespace.
fn director_status(lab: &Lab, n: u8) -> String {
    let bpffs = lab.bpffs_dir().join(format!("dir{n}"));
    lab.ns(&format!("dir{n}"))
        .exec_ok(&[
            director_bin().to_str().unwrap(),
            "--bpffs",
            bpffs.to_str().unwrap(),
            "status",
        ])
        .unwrap_or_else(|e| format!("{e:#}"))
}

/// BFD sessions the router's BIRD has up (`birdc show bfd sessions`).
fn bfd_sessions_up(ctl: &Path) -> usize {
    Command::new("birdc")
        .arg("-s")
        .arg(ctl)
        .args(["show", "bfd", "sessions"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| l.split_whitespace().nth(2) == Some("Up"))
                .count()
        })
        .unwrap_or(0)
}

/// New connections scheduled by the director, over its services.
fn connections(d: &Director) -> u64 {
    d.state
        .open_control()
        .and_then(|c| Ok(c.services()?))
        .map(|v| v.iter().map(|s| s.stats.conns).sum())
        .unwrap_or(0)
}

fn metric(lab: &Lab, host: &str, name: &str) -> Option<f64> {
    let text = http_get(lab.ns(host), "http://127.0.0.1:9410/metrics", HTTP_TIMEOUT).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

/// `count` new connections from the client to the web VIP; each must be answered by a
/// real.
fn requests(lab: &Lab, count: usize) {
    for i in 0..count {
        let body = http_get(
            lab.ns("client"),
            &format!("http://{VIP_WEB}/"),
            HTTP_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("request {i}: {e:#}\n{}", outcomes(lab)));
        assert!(body.starts_with("real"), "request {i}: {body:?}");
    }
}

/// Each director's data-path outcome counters, for a failure's message.
fn outcomes(lab: &Lab) -> String {
    (1..=DIRECTORS)
        .map(|n| {
            let state = StateOptions {
                bpffs: Some(lab.bpffs_dir().join(format!("dir{n}"))),
            };
            let stats = state
                .open_control()
                .and_then(|c| Ok(c.stats()?))
                .map(|v| {
                    v.iter()
                        .filter(|(_, n)| *n > 0)
                        .map(|(s, n)| format!("{}={n}", s.name()))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_else(|e| e.to_string());
            format!("dir{n}: {stats}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Echo rounds on one established connection on its own thread until told to stop:
/// the rounds done (for progress), the longest a round took (the pause a failover
/// causes) and the bytes sent and received.
struct Pump {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<(Duration, usize, usize)>,
}

/// Upper bound of rounds per connection, whatever happens.
const MAX_ROUNDS: usize = 200_000;

fn pump(tag: String, mut s: TcpStream) -> Pump {
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicUsize::new(0));
    let (flag, done) = (stop.clone(), rounds.clone());
    let thread = std::thread::spawn(move || {
        let (mut worst, mut sent, mut received) = (Duration::ZERO, 0usize, 0usize);
        for i in 0..MAX_ROUNDS {
            if flag.load(Ordering::Relaxed) {
                break;
            }
            let t = Instant::now();
            let msg = format!("{tag} {i:08}\n");
            s.write_all(msg.as_bytes()).unwrap();
            sent += msg.len();
            let mut buf = vec![0u8; msg.len()];
            s.read_exact(&mut buf).unwrap_or_else(|e| {
                panic!("{tag}: the connection broke after {received} bytes: {e}")
            });
            assert_eq!(buf, msg.as_bytes(), "{tag}: echoed bytes differ");
            received += buf.len();
            worst = worst.max(t.elapsed());
            done.fetch_add(1, Ordering::Relaxed);
        }
        (worst, sent, received)
    });
    Pump {
        stop,
        rounds,
        thread,
    }
}

impl Pump {
    fn rounds(&self) -> usize {
        self.rounds.load(Ordering::Relaxed)
    }

    fn finish(self) -> (Duration, usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }
}

/// `STREAMS` echo streams from the client to the web VIP, flowing.
fn start_streams(lab: &Lab) -> Vec<Pump> {
    let streams: Vec<Pump> = (0..STREAMS)
        .map(|i| {
            let s = tcp_stream(lab.ns("client"), SocketAddr::new(v4(VIP_WEB), 7)).unwrap();
            s.set_read_timeout(Some(STREAM_STALL)).unwrap();
            pump(format!("stream{i}"), s)
        })
        .collect();
    wait_until(CONVERGE, "every stream to flow", || {
        streams.iter().all(|p| p.rounds() >= 5)
    })
    .unwrap();
    streams
}

/// Once every stream has made progress (after a change of route), stop them; every
/// byte sent must have come back. Returns the longest pause.
fn finish_streams(streams: Vec<Pump>) -> Duration {
    let now: Vec<usize> = streams.iter().map(Pump::rounds).collect();
    wait_until(
        STREAM_STALL,
        "every stream to flow after the change",
        || streams.iter().zip(&now).all(|(p, r)| p.rounds() >= r + 20),
    )
    .unwrap();
    let mut worst = Duration::ZERO;
    for p in streams {
        let (w, sent, received) = p.finish();
        assert_eq!(sent, received, "every byte sent came back");
        worst = worst.max(w);
    }
    worst
}

/// New connections the director scheduled for one service.
fn service_connections(d: &Director, port: u16) -> u64 {
    d.state
        .open_control()
        .and_then(|c| Ok(c.services()?))
        .map(|v| {
            v.iter()
                .filter(|s| s.spec.addr.port == port)
                .map(|s| s.stats.conns)
                .sum()
        })
        .unwrap_or(0)
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: plain kill(2) of a process this test started.
    unsafe { libc::kill(pid as i32, sig) };
}

#[test]
fn directors_announce_share_fail_over_by_bfd_and_withdraw_a_dead_vip() {
    director_tests::require_root();
    let lab = Lab::build(&topology()).unwrap();
    let scratch = Scratch {
        dir: std::env::temp_dir().join(format!("{}-scale-out", lab.id())),
        lab_id: Some(lab.id().to_owned()),
    };
    std::fs::create_dir_all(&scratch.dir).unwrap();
    let down_flag = scratch.dir.join("real1-down");
    // Frames a director sends back out of eth0 (XDP_TX) reach the bridge only with a
    // program on the bridge's port (docs/datapath.md).
    let mut helpers = Datapath::load_helpers().unwrap();
    for n in 1..=JOINING {
        let (sw, port) = lab.bridge_port(&format!("dir{n}"), "eth0");
        let _in = InNetns::enter(&sw.path());
        helpers
            .attach(PROG_PASS, sw.ifindex(&port).unwrap(), XdpMode::Driver)
            .unwrap();
    }
    bird(&lab, "router", &scratch.dir.join("router"), &router_conf());
    let directors: Vec<Director> = (1..=DIRECTORS)
        .map(|n| start_director(&lab, &scratch.dir, n, &down_flag))
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
    let router_ctl = scratch.dir.join("router").join("bird.ctl");
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
    let streams = start_streams(&lab);
    let through_dir2 = service_connections(&directors[1], 7) - through_dir2;
    eprintln!("{through_dir2} of {STREAMS} streams go through dir2");
    assert!(through_dir2 > 0, "some streams go through dir2");

    let dead = &directors[1];
    // Its link goes first, so that no FIN or RST of the dying BGP session reaches the
    // router: only BFD can tell it before the hold time.
    let t = Instant::now();
    lab.ns("dir2")
        .exec_ok(&["ip", "link", "set", "eth0", "down"])
        .unwrap();
    signal(dead.daemon, libc::SIGKILL);
    signal(dead.bird, libc::SIGKILL);
    let alive: Vec<Ipv4Addr> = vec![director_addr(1), director_addr(3)];
    wait_until(BFD_DEADLINE, "the router to drop dir2's path", || {
        nexthops(router, VIP_WEB) == alive
    })
    .unwrap_or_else(|e| panic!("{e:#}; route: {:?}", nexthops(router, VIP_WEB)));
    eprintln!("dir2's path dropped after {:?}", t.elapsed());

    // Every stream goes on, those of dir2 through the others to the same real, with no
    // byte lost.
    let worst = finish_streams(streams);
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
    // BIRD keeps running, so BFD has nothing to do with it) before the daemon exits.
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
    requests(&lab, 10);

    // A fourth director joins while streams flow through dir1: it announces, the router
    // moves part of the flows to it, and they keep their real (no byte lost); it takes
    // a share of the new connections.
    let streams = start_streams(&lab);
    let dir4 = start_director(&lab, &scratch.dir, JOINING, &down_flag);
    wait_until(CONVERGE, "the router to add dir4's path", || {
        nexthops(router, VIP_WEB) == [director_addr(1), director_addr(JOINING)]
    })
    .unwrap_or_else(|e| panic!("{e:#}; route: {:?}", nexthops(router, VIP_WEB)));
    let worst = finish_streams(streams);
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
/// and a director's with the file the daemon generates from examples/scale-out.toml.
#[test]
fn the_example_bird_configurations_parse() {
    director_tests::require_root();
    let dir = std::env::temp_dir().join(format!("scale-out-examples-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let scratch = Scratch {
        dir: dir.clone(),
        lab_id: None,
    };
    let toml = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/scale-out.toml");
    let config = director_daemon::config::load(&toml).unwrap_or_else(|e| panic!("{e}"));
    let bgp = config.bgp.expect("[bgp]");
    let include = dir.join("director.conf");
    let vips = bgp.vips.clone();
    std::fs::write(&include, director_daemon::bgp::bird::render(&bgp, &vips)).unwrap();
    let director = dir.join("bird-director.conf");
    std::fs::write(
        &director,
        example("bird-director.conf").replace("/etc/bird/director.conf", include.to_str().unwrap()),
    )
    .unwrap();
    let router = dir.join("bird-router.conf");
    std::fs::write(&router, example("bird-router.conf")).unwrap();
    for conf in [&director, &router] {
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
