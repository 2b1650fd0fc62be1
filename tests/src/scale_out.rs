//! The scale-out lab: directors behind an ECMP router, each announcing the VIPs by BGP
//! through BIRD (with BFD), as docs/scale-out.md deploys them. The `scale_out`
//! integration tests and `cargo xtask demo --scale-out` both build on it.
//!
//! ```text
//!  client 10.3.0.2 ── router 10.3.0.1 | 10.2.0.1 ──[dnet]── dir1..4 10.2.0.11-14 (XDP on eth0)
//!                                                      └─── real1..3 10.2.0.21-23 (VIPs on lo)
//! ```
//! The router's BIRD has `merge paths` and the kernel hashes the 5-tuple
//! (`fib_multipath_hash_policy=1`), so each new connection picks its director. The
//! reals are DR: they answer the client through the router, not through a director. The
//! fourth director has a session ready on the router but starts only when asked.
//!
//! BIRD runs from the configurations in `examples/`, rewritten to the lab's addresses.

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

use anyhow::{Context as _, Result, bail};
use aya::programs::XdpMode;
use director_control::{Datapath, datapath::PROG_PASS, state::StateOptions};

use crate::{
    fixture::InNetns,
    lab::{Endpoint, Host, Lab, Netns, Topology, http_get, tcp_stream, wait_until},
};

/// The router's AS.
pub const ROUTER_ASN: u32 = 65000;
/// The directors' AS.
pub const DIRECTOR_ASN: u32 = 65001;
/// The router on the directors' network (their BGP neighbour and the reals' gateway).
pub const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 1);
/// The client, behind the router.
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 3, 0, 2);
/// The router on the client's side.
pub const ROUTER_CLIENT_SIDE: Ipv4Addr = Ipv4Addr::new(10, 3, 0, 1);
/// Web: every real, HTTP checks; an HTTP service on port 80 and an echo service on 7.
pub const VIP_WEB: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
/// One real only, checked by a command that fails once the down flag exists.
pub const VIP_ONE: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 101);
/// The echo service's port on [`VIP_WEB`] (the streams' service).
pub const ECHO_PORT: u16 = 7;
/// The directors started at first.
pub const DIRECTORS: u8 = 3;
/// The director that joins later.
pub const JOINING: u8 = DIRECTORS + 1;
/// The real servers.
pub const REALS: u8 = 3;
/// BGP hold time: long on purpose, so a dead director routed around well before it is
/// BFD's doing.
pub const HOLD_TIME_S: u64 = 30;
/// Sessions up and routes in the router's kernel.
pub const CONVERGE: Duration = Duration::from_secs(60);
/// BFD's detection (3 x 100 ms) with ample margin, and far below the hold time.
pub const BFD_DEADLINE: Duration = Duration::from_secs(10);
/// One HTTP request.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// A stream silent this long is broken.
pub const STREAM_STALL: Duration = Duration::from_secs(20);
/// Upper bound of echo rounds per stream, whatever happens.
pub const MAX_ROUNDS: usize = 200_000;
/// The daemons' metrics endpoint, in each director's namespace.
const METRICS: &str = "127.0.0.1:9410";

fn v4(a: Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

/// Director `n`'s address (namespace `dir{n}`).
pub fn director_addr(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 2, 0, 10 + n)
}

/// Real `n`'s address (namespace `real{n}`).
pub fn real_addr(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 2, 0, 20 + n)
}

/// The lab's namespaces and links: client, router, `dir1..=JOINING`, `real1..=REALS`
/// (HTTP on 80 and echo on 7, both VIPs on lo, ARP kept quiet for them).
pub fn topology() -> Topology {
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
                    .echo(ECHO_PORT),
            )
            .bridged(
                Endpoint::new(&name, "eth0").addr(v4(real_addr(n)), 24),
                "dnet",
            );
    }
    t
}

/// Frames a director sends back out of eth0 (XDP_TX) reach the bridge only with a
/// program on the bridge's port (docs/datapath.md): attaches `helpers`' pass program
/// to every director's port. The programs stay while `helpers` lives.
pub fn attach_bridge_pass(lab: &Lab, helpers: &mut Datapath) -> Result<()> {
    for n in 1..=JOINING {
        let (sw, port) = lab.bridge_port(&format!("dir{n}"), "eth0");
        let _in = InNetns::enter(&sw.path());
        helpers
            .attach(PROG_PASS, sw.ifindex(&port)?, XdpMode::Driver)
            .with_context(|| format!("XDP pass program on dir{n}'s bridge port"))?;
    }
    Ok(())
}

/// The lab's files (BIRD's configurations, sockets and logs, the daemons' files) and
/// the daemons' lock files under /run/director, removed on drop.
#[derive(Debug)]
pub struct Scratch {
    dir: PathBuf,
    /// The lab whose daemons' lock files to remove.
    lab_id: Option<String>,
}

impl Scratch {
    /// Creates `dir`; on drop it goes, with the /run/director files of `lab_id`'s
    /// daemons (their names hold the lab's id).
    pub fn new(dir: PathBuf, lab_id: Option<&str>) -> Result<Self> {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self {
            dir,
            lab_id: lab_id.map(str::to_owned),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file whose existence makes [`VIP_ONE`]'s real fail its checks.
    pub fn down_flag(&self) -> PathBuf {
        self.dir.join("real1-down")
    }

    /// Removes what [`Scratch`]'s drop removes (for a teardown that cannot wait for the
    /// drop, e.g. on a signal); harmless to repeat.
    pub fn remove(&self) {
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

    /// The router BIRD's control socket.
    pub fn router_ctl(&self) -> PathBuf {
        self.dir.join("router").join("bird.ctl")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        self.remove();
    }
}

/// BIRD in `host`'s namespace with configuration `conf`, its files in `dir`, in the
/// foreground (the lab stops its process group). Returns its process id.
pub fn bird(lab: &Lab, host: &str, dir: &Path, conf: &str) -> Result<u32> {
    std::fs::create_dir_all(dir)?;
    let file = dir.join("bird.conf");
    std::fs::write(&file, conf)?;
    let log = std::fs::File::create(dir.join("bird.log"))?;
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
    lab.spawn_pid(host, &mut cmd)
}

/// The router's BIRD, its files in the scratch directory's `router/`.
pub fn start_router(lab: &Lab, scratch: &Scratch) -> Result<u32> {
    bird(lab, "router", &scratch.dir.join("router"), &router_conf()?)
}

/// A file of the repository's `examples/`.
pub fn example(name: &str) -> Result<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name);
    std::fs::read_to_string(&path).with_context(|| path.display().to_string())
}

/// examples/bird-router.conf in the lab's addresses (router 10.2.0.1, directors
/// 10.2.0.11-13), logging to stderr, with a hold time BFD must beat by far.
pub fn router_conf() -> Result<String> {
    let conf = example("bird-router.conf")?
        .replace("192.0.2.", "10.2.0.")
        .replace("log syslog all;", "log stderr all;")
        .replace("hold time 9;", &format!("hold time {HOLD_TIME_S};"));
    if !conf.contains(&format!("hold time {HOLD_TIME_S};")) {
        bail!("examples/bird-router.conf no longer sets `hold time 9;`");
    }
    // The director that joins later has its session ready.
    Ok(format!(
        "{conf}protocol bgp director{JOINING} from director {{ neighbor {} as {DIRECTOR_ASN}; }}\n",
        director_addr(JOINING)
    ))
}

/// examples/bird-director.conf for director `n`, including `include`.
pub fn director_bird_conf(n: u8, include: &Path) -> Result<String> {
    Ok(example("bird-director.conf")?
        .replace("192.0.2.11", &director_addr(n).to_string())
        .replace("log syslog all;", "log stderr all;")
        .replace("/etc/bird/director.conf", &include.to_string_lossy()))
}

/// Director `n`'s daemon configuration: the web VIP (HTTP checks on port 80, echo on 7,
/// every real), [`VIP_ONE`] (real1, an external check failing once `down_flag` exists)
/// and `[bgp]` to the router with BFD, BIRD's files in `dir`.
pub fn daemon_conf(n: u8, dir: &Path, down_flag: &Path) -> String {
    let mut s = format!(
        "[daemon]\nmetrics = \"{METRICS}\"\nsync_interval = \"1s\"\njitter = 0\n\
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
    s.push_str(&format!(
        "[[service]]\naddress = \"{VIP_WEB}:{ECHO_PORT}\"\n"
    ));
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

/// One running director: `director attach eth0`, BIRD (its configuration includes the
/// daemon's file) and `director daemon`.
#[derive(Debug)]
pub struct Director {
    /// Its number (namespace `dir{n}`).
    pub n: u8,
    /// Its pinned state (for its counters).
    pub state: StateOptions,
    /// BIRD's process id.
    pub bird: u32,
    /// The daemon's process id.
    pub daemon: u32,
}

/// Starts director `n` with the `director` binary `bin`: attach, BIRD with an empty
/// include (the daemon fills it and reconfigures BIRD), the daemon. Its files go to the
/// scratch directory's `dir{n}/` (`daemon.log`, `bird.log`, ...).
pub fn start_director(lab: &Lab, bin: &Path, scratch: &Scratch, n: u8) -> Result<Director> {
    let host = format!("dir{n}");
    let dir = scratch.dir.join(&host);
    std::fs::create_dir_all(&dir)?;
    let bpffs = lab.bpffs_dir().join(&host);
    let bin = bin.to_string_lossy();
    lab.ns(&host)
        .exec_ok(&[&bin, "--bpffs", &bpffs.to_string_lossy(), "attach", "eth0"])?;
    std::fs::write(dir.join("director.conf"), "")?;
    let bird = bird(
        lab,
        &host,
        &dir,
        &director_bird_conf(n, &dir.join("director.conf"))?,
    )?;
    let config = dir.join("director.toml");
    std::fs::write(&config, daemon_conf(n, &dir, &scratch.down_flag()))?;
    let log = std::fs::File::create(dir.join("daemon.log"))?;
    let mut cmd = Command::new(&*bin);
    cmd.arg("--bpffs")
        .arg(&bpffs)
        .args(["daemon", "--config"])
        .arg(&config)
        .arg("--run-dir")
        .arg(dir.join("run"))
        .stdout(Stdio::null())
        .stderr(log);
    let daemon = lab.spawn_pid(&host, &mut cmd)?;
    Ok(Director {
        n,
        state: StateOptions { bpffs: Some(bpffs) },
        bird,
        daemon,
    })
}

impl Director {
    /// New connections scheduled by the director, over its services (0 when its state
    /// cannot be read).
    pub fn connections(&self) -> u64 {
        self.state
            .open_control()
            .and_then(|c| Ok(c.services()?))
            .map(|v| v.iter().map(|s| s.stats.conns).sum())
            .unwrap_or(0)
    }

    /// New connections the director scheduled for the services on `port`.
    pub fn service_connections(&self, port: u16) -> u64 {
        self.state
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

    /// Kills it as a crash would: its link down first (so that no FIN or RST of the
    /// dying BGP session reaches the router: only BFD can tell), then SIGKILL to its
    /// daemon and its BIRD.
    pub fn kill(&self, lab: &Lab) -> Result<()> {
        lab.ns(&format!("dir{}", self.n))
            .exec_ok(&["ip", "link", "set", "eth0", "down"])?;
        signal(self.daemon, libc::SIGKILL);
        signal(self.bird, libc::SIGKILL);
        Ok(())
    }
}

/// `kill(pid, sig)` of a process the lab started.
pub fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: plain kill(2) of a process the caller started.
    unsafe { libc::kill(pid as i32, sig) };
}

/// The router's `ip route show VIP/32` (empty when it has none).
pub fn route(router: &Netns, vip: Ipv4Addr) -> String {
    router
        .exec_ok(&["ip", "-4", "route", "show", &format!("{vip}/32")])
        .unwrap_or_default()
}

/// The router's next hops for `vip`, sorted (none when it has no route).
pub fn nexthops(router: &Netns, vip: Ipv4Addr) -> Vec<Ipv4Addr> {
    let out = route(router, vip);
    let words: Vec<&str> = out.split_whitespace().collect();
    let mut hops: Vec<Ipv4Addr> = words
        .windows(2)
        .filter(|w| w[0] == "via")
        .filter_map(|w| w[1].parse().ok())
        .collect();
    hops.sort();
    hops
}

/// `director status` in director `n`'s namespace (the error's text if it fails).
pub fn director_status(lab: &Lab, bin: &Path, n: u8) -> String {
    let bpffs = lab.bpffs_dir().join(format!("dir{n}"));
    lab.ns(&format!("dir{n}"))
        .exec_ok(&[
            &bin.to_string_lossy(),
            "--bpffs",
            &bpffs.to_string_lossy(),
            "status",
        ])
        .unwrap_or_else(|e| format!("{e:#}"))
}

/// BFD sessions up in the BIRD of control socket `ctl` (`birdc show bfd sessions`).
pub fn bfd_sessions_up(ctl: &Path) -> usize {
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

/// Metric `name` of the daemon in `host`'s namespace, if served.
pub fn metric(lab: &Lab, host: &str, name: &str) -> Option<f64> {
    let text = http_get(
        lab.ns(host),
        &format!("http://{METRICS}/metrics"),
        HTTP_TIMEOUT,
    )
    .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

/// `count` new connections from the client to the web VIP; each must be answered by a
/// real. The error of a failed one carries the directors' outcome counters.
pub fn requests(lab: &Lab, count: usize) -> Result<()> {
    for i in 0..count {
        let body = http_get(
            lab.ns("client"),
            &format!("http://{VIP_WEB}/"),
            HTTP_TIMEOUT,
        )
        .map_err(|e| anyhow::anyhow!("request {i}: {e:#}\n{}", outcomes(lab)))?;
        if !body.starts_with("real") {
            bail!("request {i}: {body:?}");
        }
    }
    Ok(())
}

/// Each director's data-path outcome counters, for a failure's message.
pub fn outcomes(lab: &Lab) -> String {
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

/// Echo rounds on one established connection on its own thread until told to stop.
#[derive(Debug)]
pub struct Pump {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<Result<Echoed>>,
}

/// What one stream did: the longest an echo round took (the pause a change of route
/// causes) and the bytes sent and received back.
#[derive(Debug, Clone, Copy)]
pub struct Echoed {
    /// The longest echo round.
    pub longest_pause: Duration,
    /// Bytes written.
    pub sent: usize,
    /// Bytes read back, each checked.
    pub received: usize,
}

/// Starts echo rounds (`{tag} {round}\n`, each checked byte for byte) on `s`.
pub fn pump(tag: String, mut s: TcpStream) -> Pump {
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicUsize::new(0));
    let (flag, done) = (stop.clone(), rounds.clone());
    let thread = std::thread::spawn(move || {
        let mut e = Echoed {
            longest_pause: Duration::ZERO,
            sent: 0,
            received: 0,
        };
        for i in 0..MAX_ROUNDS {
            if flag.load(Ordering::Relaxed) {
                break;
            }
            let t = Instant::now();
            let msg = format!("{tag} {i:08}\n");
            s.write_all(msg.as_bytes())
                .with_context(|| format!("{tag}: sending after {} bytes", e.sent))?;
            e.sent += msg.len();
            let mut buf = vec![0u8; msg.len()];
            s.read_exact(&mut buf).with_context(|| {
                format!("{tag}: the connection broke after {} bytes", e.received)
            })?;
            if buf != msg.as_bytes() {
                bail!("{tag}: echoed bytes differ");
            }
            e.received += buf.len();
            e.longest_pause = e.longest_pause.max(t.elapsed());
            done.fetch_add(1, Ordering::Relaxed);
        }
        Ok(e)
    });
    Pump {
        stop,
        rounds,
        thread,
    }
}

impl Pump {
    /// Echo rounds done so far.
    pub fn rounds(&self) -> usize {
        self.rounds.load(Ordering::Relaxed)
    }

    /// Stops the rounds and returns what the stream did, or how it broke.
    pub fn finish(self) -> Result<Echoed> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }
}

/// A new echo stream from the client to the web VIP, pumping (stream `i`).
pub fn stream(lab: &Lab, i: usize) -> Result<Pump> {
    let s = tcp_stream(lab.ns("client"), SocketAddr::new(v4(VIP_WEB), ECHO_PORT))?;
    s.set_read_timeout(Some(STREAM_STALL))?;
    Ok(pump(format!("stream{i}"), s))
}

/// Waits until every stream has done a few rounds.
pub fn wait_flowing(streams: &[Pump]) -> Result<()> {
    wait_until(CONVERGE, "every stream to flow", || {
        streams.iter().all(|p| p.rounds() >= 5)
    })
}

/// `count` echo streams from the client to the web VIP, flowing.
pub fn start_streams(lab: &Lab, count: usize) -> Result<Vec<Pump>> {
    let streams = (0..count)
        .map(|i| stream(lab, i))
        .collect::<Result<Vec<_>>>()?;
    wait_flowing(&streams)?;
    Ok(streams)
}

/// Once every stream has made progress (after a change of route), stops them; every
/// byte sent must have come back. Returns what each stream did.
pub fn finish_streams(streams: Vec<Pump>) -> Result<Vec<Echoed>> {
    let now: Vec<usize> = streams.iter().map(Pump::rounds).collect();
    wait_until(
        STREAM_STALL,
        "every stream to flow after the change",
        || streams.iter().zip(&now).all(|(p, r)| p.rounds() >= r + 20),
    )?;
    let mut done = Vec::with_capacity(streams.len());
    for p in streams {
        let e = p.finish()?;
        if e.sent != e.received {
            bail!(
                "every byte sent came back: sent {}, received {}",
                e.sent,
                e.received
            );
        }
        done.push(e);
    }
    Ok(done)
}

/// The longest pause of any of the streams.
pub fn longest_pause(streams: &[Echoed]) -> Duration {
    streams
        .iter()
        .map(|e| e.longest_pause)
        .max()
        .unwrap_or_default()
}
