//! The health-check daemon in the lab (root): it runs in-process on a thread inside the
//! director's namespace, against the lab director's pinned maps, exactly as
//! `director daemon` runs after `director attach`; clients send real traffic through
//! the VIPs. Health endpoints that a test stops and starts are small servers the test
//! runs inside the reals' namespaces.
//!
//! Waits are bounded waits on conditions (`wait_until`), never sleeps; the exact
//! rise/fall/interval timing is proven on paused time in director's unit tests, so the
//! bounds here are the configured worst case plus a margin for a loaded machine.

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream},
    path::PathBuf,
    sync::mpsc,
    thread::JoinHandle,
    time::Duration,
};

use director_control::{Protocol, ServiceAddr};
use director_daemon::{self as daemon, ConfigSource, DaemonHandle, DaemonOptions, ReloadReport};
use director_tests::{
    lab::{Netns, http_get, http_url, tcp_stream, udp_request, wait_until},
    lvs::{CLIENT, CLIENT6, LvsLab, VIP_DR, VIP_NAT, VIP6_DR, VIP6_NAT, real_addr},
};

const TIMEOUT: Duration = Duration::from_secs(5);
/// Slack on top of a configured worst case, for a loaded 2-core machine.
const MARGIN: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------
// Helpers

/// A private directory for a test's config and run files, removed on drop.
struct TestDir(PathBuf);

impl TestDir {
    fn new(name: &str) -> Self {
        let d =
            std::env::temp_dir().join(format!("director-daemon-lab-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Self(d)
    }
    fn config(&self) -> PathBuf {
        self.0.join("director.toml")
    }
    fn write(&self, text: &str) {
        std::fs::write(self.config(), text).unwrap();
    }
    fn run_dir(&self) -> PathBuf {
        self.0.join("run")
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Removes the writers' lock and marker files the lab's state made under /run/director
/// (named after the state directory, which holds the lab's unique id).
struct LockFiles(String);

impl LockFiles {
    fn of(lvs: &LvsLab) -> Self {
        Self(lvs.lab.id().replace('-', "_"))
    }
}

impl Drop for LockFiles {
    fn drop(&mut self) {
        let Ok(dir) = std::fs::read_dir("/run/director") else {
            return;
        };
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.contains(&format!("_{}_director", self.0))
                && (name.ends_with(".lock") || name.ends_with(".writing"))
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// The daemon on its own thread and runtime inside the director's namespace.
struct Running {
    handle: DaemonHandle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    fn start(lvs: &LvsLab, dir: &TestDir) -> Self {
        let ns_path = lvs.lab.ns("director").path();
        let (handle, requests) = daemon::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let mut opts = DaemonOptions::new(ConfigSource::Native(dir.config()), lvs.state());
        opts.requests = Some(requests);
        opts.run_dir = Some(dir.run_dir());
        let thread = std::thread::Builder::new()
            .name("daemon".into())
            .spawn(move || -> anyhow::Result<()> {
                let f = std::fs::File::open(&ns_path)?;
                nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)?;
                // Built here, so its threads (and the checks' sockets) are in the namespace.
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()?;
                rt.block_on(daemon::run(opts, async move {
                    let _ = stopped.await;
                }))
            })
            .unwrap();
        let mut r = Self {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        };
        if r.handle.blocking_status().is_none() {
            let e = r.thread.take().unwrap().join();
            panic!("the daemon did not start: {e:?}");
        }
        r
    }

    fn reload(&self) -> Result<ReloadReport, String> {
        self.handle.blocking_reload().map_err(|e| e.to_string())
    }

    fn reason(&self, svc: &ServiceAddr, real: u8) -> String {
        let st = self.handle.blocking_status().unwrap();
        let s = st.iter().find(|s| s.service == *svc).unwrap();
        let r = s
            .reals
            .iter()
            .find(|r| r.addr == IpAddr::V4(real_addr(real)))
            .unwrap();
        r.reason.clone()
    }

    fn stop(mut self) {
        self.finish().expect("the daemon stopped cleanly");
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.thread.take() {
            Some(t) => t.join().expect("the daemon thread panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = self.finish();
        } else if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// A server the test starts and stops inside a real's namespace.
struct NsServer {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

enum Kind {
    /// Answers every request with this status and body.
    Http(u16, &'static str),
    /// Answers every request with 200 and `host=` and the request's Host header.
    HttpHost,
    /// Answers A queries for this name (with the real's address); NXDOMAIN otherwise.
    Dns(&'static str, Ipv4Addr),
}

impl NsServer {
    fn start(ns: &Netns, port: u16, kind: Kind) -> Self {
        Self::start_at(ns, SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)), kind)
    }

    /// A server bound to `addr` (an IPv6 one serves IPv6 clients).
    fn start_at(ns: &Netns, addr: SocketAddr, kind: Kind) -> Self {
        let path = ns.path();
        let (ready_tx, ready) = mpsc::channel::<Result<(), String>>();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let setup = || -> anyhow::Result<tokio::runtime::Runtime> {
                let f = std::fs::File::open(&path)?;
                nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)?;
                Ok(tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?)
            };
            let rt = match setup() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("{e:#}")));
                    return;
                }
            };
            rt.block_on(async move {
                let served = match kind {
                    Kind::Http(..) | Kind::HttpHost => {
                        match tokio::net::TcpListener::bind(addr).await {
                            Ok(l) => {
                                let _ = ready_tx.send(Ok(()));
                                let answer = match kind {
                                    Kind::Http(status, body) => Answer::Fixed(status, body),
                                    _ => Answer::Host,
                                };
                                tokio::spawn(serve_http(l, answer))
                            }
                            Err(e) => {
                                let _ = ready_tx.send(Err(e.to_string()));
                                return;
                            }
                        }
                    }
                    Kind::Dns(name, a) => match tokio::net::UdpSocket::bind(addr).await {
                        Ok(s) => {
                            let _ = ready_tx.send(Ok(()));
                            tokio::spawn(serve_dns(s, name, a))
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e.to_string()));
                            return;
                        }
                    },
                };
                let _ = stopped.await;
                served.abort();
            });
            // The runtime goes, and with it the socket: new connections are refused.
        });
        ready
            .recv_timeout(TIMEOUT)
            .expect("the test server started")
            .expect("the test server bound its port");
        Self {
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for NsServer {
    fn drop(&mut self) {
        self.halt();
    }
}

/// What a test HTTP server answers.
#[derive(Clone, Copy)]
enum Answer {
    Fixed(u16, &'static str),
    /// 200, body `host=<the request's Host header>`.
    Host,
}

async fn serve_http(l: tokio::net::TcpListener, answer: Answer) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    loop {
        let Ok((mut s, _)) = l.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            let mut got = 0;
            while got < buf.len() && !buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf[got..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got += n,
                }
            }
            let (status, body) = match answer {
                Answer::Fixed(status, body) => (status, body.to_owned()),
                Answer::Host => {
                    let head = String::from_utf8_lossy(&buf[..got]).into_owned();
                    let host = head
                        .lines()
                        .find_map(|l| {
                            l.split_once(':')
                                .filter(|(k, _)| k.eq_ignore_ascii_case("host"))
                                .map(|(_, v)| v.trim().to_owned())
                        })
                        .unwrap_or_default();
                    (200, format!("host={host}"))
                }
            };
            let resp = format!(
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
            let _ = s.shutdown().await;
        });
    }
}

/// A DNS responder written from RFC 1035 directly (independent of the daemon's DNS
/// library): the query echoed back with the answer or NXDOMAIN.
fn dns_reply(q: &[u8], known: &str, a: Ipv4Addr) -> Option<Vec<u8>> {
    let mut off = 12;
    let mut labels = Vec::new();
    loop {
        let len = *q.get(off)? as usize;
        off += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(q.get(off..off + len)?).into_owned());
        off += len;
    }
    let qend = off + 4;
    let qtype = u16::from_be_bytes([*q.get(off)?, *q.get(off + 1)?]);
    let mut r = q.get(..qend)?.to_vec();
    let hit = labels.join(".") == known && qtype == 1;
    r[2] = 0x84 | (q[2] & 0x01); // QR, AA, RD as asked
    r[3] = 0x80 | if labels.join(".") == known { 0 } else { 3 }; // RA, NOERROR/NXDOMAIN
    r[6..8].copy_from_slice(&(hit as u16).to_be_bytes());
    r[8..12].fill(0);
    if hit {
        r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        r.extend_from_slice(&a.octets());
    }
    Some(r)
}

async fn serve_dns(s: tokio::net::UdpSocket, known: &'static str, a: Ipv4Addr) {
    let mut buf = vec![0u8; 1500];
    while let Ok((n, from)) = s.recv_from(&mut buf).await {
        if let Some(r) = dns_reply(&buf[..n], known, a) {
            let _ = s.send_to(&r, from).await;
        }
    }
}

fn svc(proto: Protocol, port: u16) -> ServiceAddr {
    ServiceAddr {
        proto,
        addr: IpAddr::V4(VIP_DR),
        port,
    }
}

/// Weight of real `n` in a service, None when absent (read from the maps).
fn weight(lvs: &LvsLab, s: &ServiceAddr, n: u8) -> Option<u32> {
    let v = lvs.director.control.service(s).ok()?;
    v.reals
        .iter()
        .find(|r| r.spec.addr == IpAddr::V4(real_addr(n)))
        .map(|r| r.spec.weight)
}

fn wait_weight(lvs: &LvsLab, s: &ServiceAddr, n: u8, want: Option<u32>, within: Duration) {
    wait_until(
        within,
        &format!("real{n} of {s:?} at weight {want:?}"),
        || weight(lvs, s, n) == want,
    )
    .unwrap_or_else(|e| panic!("{e:#}; it is {:?}", weight(lvs, s, n)));
}

fn echo_round(s: &mut TcpStream, i: u32) {
    let msg = format!("ping {i}\n");
    s.write_all(msg.as_bytes()).unwrap();
    let mut buf = vec![0u8; msg.len()];
    s.read_exact(&mut buf)
        .unwrap_or_else(|e| panic!("echo round {i} on the long-lived connection: {e}"));
    assert_eq!(buf, msg.as_bytes());
}

fn answer_of(lvs: &LvsLab, port: u16) -> u8 {
    let body = http_get(
        lvs.lab.ns("client"),
        &format!("http://{VIP_DR}:{port}/"),
        TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("HTTP through the VIP: {e:#}"));
    LvsLab::real_of_answer(&body).unwrap()
}

// ---------------------------------------------------------------------------------------
// Tests

/// The first scenario: a real's HTTP health endpoint stops; within fall x
/// interval (+ timeout) the real is DOWN: weight 0 in the maps, no new connection
/// reaches it, while a long-lived connection it holds keeps flowing. The endpoint comes
/// back: UP after rise checks, new connections reach it again.
#[test]
fn a_real_whose_http_check_fails_is_quiesced_and_comes_back() {
    director_tests::require_root();
    let lvs = LvsLab::build_pinned(3).expect("lab");
    let _locks = LockFiles::of(&lvs);
    let dir = TestDir::new("quiesce");
    let mut health: Vec<Option<NsServer>> = (1..=3)
        .map(|n| {
            Some(NsServer::start(
                lvs.lab.ns(&format!("real{n}")),
                8081,
                Kind::Http(200, "ok\n"),
            ))
        })
        .collect();
    // Both services check the same health endpoint (as ldirectord's checkport does).
    let check = "check = { type = \"http\", port = 8081, path = \"/health\", body = \"^ok\", interval = \"300ms\", timeout = \"500ms\", rise = 2, fall = 3 }";
    let reals = "[[service.real]]\naddress = \"10.1.0.11\"\n[[service.real]]\naddress = \"10.1.0.12\"\n[[service.real]]\naddress = \"10.1.0.13\"\n";
    dir.write(&format!(
        "[[service]]\naddress = \"10.0.0.100:80\"\nscheduler = \"wrr\"\n{check}\n{reals}\
         [[service]]\naddress = \"10.0.0.100:7\"\nscheduler = \"wrr\"\n{check}\n{reals}"
    ));
    let d = Running::start(&lvs, &dir);
    let (web, echo) = (svc(Protocol::Tcp, 80), svc(Protocol::Tcp, 7));
    for n in 1..=3 {
        wait_weight(&lvs, &web, n, Some(1), MARGIN);
        wait_weight(&lvs, &echo, n, Some(1), MARGIN);
    }
    let mut stream =
        tcp_stream(lvs.lab.ns("client"), SocketAddr::new(IpAddr::V4(VIP_DR), 7)).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    echo_round(&mut stream, 0);
    let n = lvs.real_holding(&echo);

    health[n as usize - 1].take().unwrap().stop();
    // fall (3) x interval (300 ms) + timeout (500 ms), plus the margin.
    let bound = Duration::from_millis(3 * 300 + 500) + MARGIN;
    wait_weight(&lvs, &web, n, Some(0), bound);
    wait_weight(&lvs, &echo, n, Some(0), bound);
    assert!(
        d.reason(&web, n).starts_with("connect: connection refused"),
        "{}",
        d.reason(&web, n)
    );
    for i in 1..=20 {
        echo_round(&mut stream, i);
        assert_ne!(
            answer_of(&lvs, 80),
            n,
            "a new connection reached the DOWN real{n}"
        );
    }
    for m in (1..=3).filter(|m| *m != n) {
        assert_eq!(weight(&lvs, &web, m), Some(1), "real{m} untouched");
    }

    health[n as usize - 1] = Some(NsServer::start(
        lvs.lab.ns(&format!("real{n}")),
        8081,
        Kind::Http(200, "ok\n"),
    ));
    let bound = Duration::from_millis(2 * 300 + 500) + MARGIN;
    wait_weight(&lvs, &web, n, Some(1), bound);
    wait_weight(&lvs, &echo, n, Some(1), bound);
    let mut back = false;
    for _ in 0..30 {
        back |= answer_of(&lvs, 80) == n;
        if back {
            break;
        }
    }
    assert!(back, "no new connection reached real{n} after it came back");
    echo_round(&mut stream, 99);
    d.stop();
}

/// Each check type against a real that passes and one that fails: HTTP body not
/// matching, HTTP wrong status, UDP no reply, DNS NXDOMAIN, external exit codes with
/// weights.
#[test]
fn each_check_type_passes_and_fails() {
    director_tests::require_root();
    let lvs = LvsLab::build_pinned(3).expect("lab");
    let _locks = LockFiles::of(&lvs);
    let dir = TestDir::new("types");
    let _bad_status = NsServer::start(lvs.lab.ns("real2"), 8082, Kind::Http(503, "busy\n"));
    let _dns1 = NsServer::start(lvs.lab.ns("real1"), 5353, Kind::Dns("ok.lab", real_addr(1)));
    let _dns2 = NsServer::start(
        lvs.lab.ns("real2"),
        5353,
        Kind::Dns("other.lab", real_addr(2)),
    );
    let timing = "interval = \"300ms\", timeout = \"500ms\", rise = 1, fall = 1";
    dir.write(&format!(
        "[check]\ninit_state = \"fully-down\"\n\
         [[service]]\naddress = \"10.0.0.100:80\"\ncheck = {{ type = \"http\", body = \"^real1\", {timing} }}\n\
         [[service.real]]\naddress = \"10.1.0.11\"\n[[service.real]]\naddress = \"10.1.0.12\"\n\
         [[service]]\naddress = \"10.0.0.100:8080\"\ncheck = {{ type = \"http\", status = 200, {timing} }}\n\
         [[service.real]]\naddress = \"10.1.0.11\"\n[[service.real]]\naddress = \"10.1.0.12\"\ncheck_port = 8082\n\
         [[service]]\naddress = \"10.0.0.100:53\"\nprotocol = \"udp\"\ncheck = {{ type = \"udp\", payload = \"who\", expect = \"^real\", {timing} }}\n\
         [[service.real]]\naddress = \"10.1.0.11\"\n[[service.real]]\naddress = \"10.1.0.12\"\ncheck_port = 54\n\
         [[service]]\naddress = \"10.0.0.100:5353\"\nprotocol = \"udp\"\ncheck = {{ type = \"dns\", name = \"ok.lab\", {timing} }}\n\
         [[service.real]]\naddress = \"10.1.0.11\"\n[[service.real]]\naddress = \"10.1.0.12\"\n\
         [[service]]\naddress = \"10.0.0.100:7\"\n\
         check = {{ type = \"external\", command = \"case $DIRECTOR_REAL_ADDR in 10.1.0.11) exit 7;; 10.1.0.12) echo no >&2; exit 1;; *) exit 0;; esac\", {timing} }}\n\
         [[service.real]]\naddress = \"10.1.0.11\"\n[[service.real]]\naddress = \"10.1.0.12\"\n[[service.real]]\naddress = \"10.1.0.13\"\nweight = 4\n"
    ));
    let d = Running::start(&lvs, &dir);
    let within = Duration::from_millis(300 + 500) + MARGIN;
    let cases: [(ServiceAddr, &str); 4] = [
        (
            svc(Protocol::Tcp, 80),
            "HTTP 200, body \"real2\\n\" does not match /^real1/",
        ),
        (svc(Protocol::Tcp, 8080), "HTTP 503 (expected 200)"),
        (svc(Protocol::Udp, 53), "connection refused"),
        (svc(Protocol::Udp, 5353), "NXDOMAIN for ok.lab"),
    ];
    // Real 2 starts at weight 0 (fully down), so its weight says nothing about whether
    // its first check has reported yet: wait for the reason.
    let wait_reason = |s: &ServiceAddr, n: u8, why: &str| {
        wait_until(
            within,
            &format!("real{n} of {s:?} down with {why:?}"),
            || d.reason(s, n) == why,
        )
        .unwrap_or_else(|e| panic!("{e:#}; it is {:?}", d.reason(s, n)));
    };
    for (s, why) in &cases {
        wait_weight(&lvs, s, 1, Some(1), within);
        wait_reason(s, 2, why);
        assert_eq!(weight(&lvs, s, 2), Some(0), "{s:?}");
    }
    let ext = svc(Protocol::Tcp, 7);
    wait_weight(&lvs, &ext, 1, Some(5), within);
    wait_weight(&lvs, &ext, 3, Some(4), within);
    wait_reason(&ext, 2, "exit 1: no");
    assert_eq!(weight(&lvs, &ext, 2), Some(0));
    assert_eq!(d.reason(&ext, 1), "exit 7, weight 5");
    // What a client sees: every UDP answer through the VIP comes from real1.
    for i in 0..10 {
        let answer = udp_request(
            lvs.lab.ns("client"),
            SocketAddr::new(IpAddr::V4(VIP_DR), 53),
            b"who",
            TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("UDP request {i}: {e:#}"));
        assert_eq!(answer, b"real1");
    }
    d.stop();
}

/// No real UP: the fallback server gets the traffic; one real back: it hands back.
#[test]
fn the_fallback_takes_over_when_all_reals_are_down_and_hands_back() {
    director_tests::require_root();
    let lvs = LvsLab::build_pinned(3).expect("lab");
    let _locks = LockFiles::of(&lvs);
    let dir = TestDir::new("fallback");
    let mut h1 = Some(NsServer::start(
        lvs.lab.ns("real1"),
        8081,
        Kind::Http(200, "ok\n"),
    ));
    let h2 = NsServer::start(lvs.lab.ns("real2"), 8081, Kind::Http(200, "ok\n"));
    dir.write(
        "[[service]]\naddress = \"10.0.0.100:80\"\nfallback = { address = \"10.1.0.13\" }\n\
         check = { type = \"http\", port = 8081, interval = \"300ms\", timeout = \"500ms\", rise = 2, fall = 2 }\n\
         [[service.real]]\naddress = \"10.1.0.11\"\n[[service.real]]\naddress = \"10.1.0.12\"\n",
    );
    let d = Running::start(&lvs, &dir);
    let web = svc(Protocol::Tcp, 80);
    wait_weight(&lvs, &web, 1, Some(1), MARGIN);
    assert_eq!(
        weight(&lvs, &web, 3),
        None,
        "no fallback while reals are up"
    );
    h1.take().unwrap().stop();
    h2.stop();
    let bound = Duration::from_millis(2 * 300 + 500) + MARGIN;
    wait_weight(&lvs, &web, 1, Some(0), bound);
    wait_weight(&lvs, &web, 2, Some(0), bound);
    wait_weight(&lvs, &web, 3, Some(1), bound);
    for _ in 0..10 {
        assert_eq!(answer_of(&lvs, 80), 3, "the fallback answers");
    }
    h1 = Some(NsServer::start(
        lvs.lab.ns("real1"),
        8081,
        Kind::Http(200, "ok\n"),
    ));
    wait_weight(&lvs, &web, 1, Some(1), bound);
    wait_weight(&lvs, &web, 3, Some(0), bound);
    for _ in 0..10 {
        assert_eq!(
            answer_of(&lvs, 80),
            1,
            "real1 is back; the fallback handed back"
        );
    }
    drop(h1);
    d.stop();
}

/// Reload with a changed weight, an added real and a removed service changes only
/// those; a long-lived connection through another service flows on, its table not
/// rewritten. A broken file is rejected with its line and changes nothing. Then the
/// daemon stops, forwarding goes on, and a new daemon changes nothing.
#[test]
fn reload_changes_only_what_changed_and_restarts_disturb_nothing() {
    director_tests::require_root();
    let lvs = LvsLab::build_pinned(3).expect("lab");
    let _locks = LockFiles::of(&lvs);
    let dir = TestDir::new("reload");
    let head = "[check]\ninterval = \"300ms\"\ntimeout = \"500ms\"\n";
    let echo_svc = "[[service]]\naddress = \"10.0.0.100:7\"\n[[service.real]]\naddress = \"10.1.0.11\"\n[[service.real]]\naddress = \"10.1.0.12\"\n[[service.real]]\naddress = \"10.1.0.13\"\n";
    dir.write(&format!(
        "{head}{echo_svc}\
         [[service]]\naddress = \"10.0.0.100:80\"\nscheduler = \"wrr\"\n[[service.real]]\naddress = \"10.1.0.11\"\n[[service.real]]\naddress = \"10.1.0.12\"\n\
         [[service]]\naddress = \"10.0.0.100:8080\"\n[[service.real]]\naddress = \"10.1.0.11\"\n"
    ));
    // A writer was killed midway before the daemon starts: its marker is there. The
    // daemon's first batch completes that change (here there is nothing left to do) and
    // clears the marker once its own batch is done.
    let marker = lvs.state().writer_marker().unwrap();
    std::fs::write(&marker, "1\n").unwrap();
    let d = Running::start(&lvs, &dir);
    let (echo, web, alt) = (
        svc(Protocol::Tcp, 7),
        svc(Protocol::Tcp, 80),
        svc(Protocol::Tcp, 8080),
    );
    for n in 1..=3 {
        wait_weight(&lvs, &echo, n, Some(1), MARGIN);
    }
    wait_weight(&lvs, &web, 2, Some(1), MARGIN);
    wait_weight(&lvs, &alt, 1, Some(1), MARGIN);
    wait_until(
        MARGIN,
        "the daemon's batch clears the writer marker",
        || !marker.exists(),
    )
    .unwrap();
    let mut stream =
        tcp_stream(lvs.lab.ns("client"), SocketAddr::new(IpAddr::V4(VIP_DR), 7)).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    echo_round(&mut stream, 0);
    let c = &lvs.director.control;
    let echo_table = c.active_table(&echo).unwrap();
    let echo_ids: Vec<u32> = c
        .service(&echo)
        .unwrap()
        .reals
        .iter()
        .map(|r| r.id)
        .collect();
    let echo_conns = c.service(&echo).unwrap().stats.conns;

    dir.write(&format!(
        "{head}{echo_svc}\
         [[service]]\naddress = \"10.0.0.100:80\"\nscheduler = \"wrr\"\n[[service.real]]\naddress = \"10.1.0.11\"\n[[service.real]]\naddress = \"10.1.0.12\"\nweight = 2\n\
         [[service.real]]\naddress = \"10.1.0.13\"\n"
    ));
    let report = d.reload().expect("the reload applies");
    let mut changes = report.changes.clone();
    changes.sort();
    assert_eq!(
        changes,
        [
            "tcp/10.0.0.100:8080: service removed",
            "tcp/10.0.0.100:80: real 10.1.0.12:80 weight 1 -> 2",
            "tcp/10.0.0.100:80: real 10.1.0.13:80 added with weight 1",
        ]
    );
    assert_eq!(weight(&lvs, &web, 2), Some(2));
    assert_eq!(weight(&lvs, &web, 3), Some(1));
    assert!(
        c.service(&alt).is_err(),
        "the removed service is gone from the maps"
    );
    assert_eq!(
        c.active_table(&echo).unwrap(),
        echo_table,
        "the echo service's table was not rewritten"
    );
    let v = c.service(&echo).unwrap();
    assert_eq!(v.reals.iter().map(|r| r.id).collect::<Vec<_>>(), echo_ids);
    assert_eq!(v.stats.conns, echo_conns, "its counters were not reset");
    for i in 1..=10 {
        echo_round(&mut stream, i);
    }
    assert!((1..=3).contains(&answer_of(&lvs, 80)));

    // A broken file: rejected, with file, line and field; the maps stay as they are.
    let before: Vec<_> = c
        .services()
        .unwrap()
        .into_iter()
        .map(|v| (v.spec, v.reals.iter().map(|r| r.spec).collect::<Vec<_>>()))
        .collect();
    dir.write(&format!(
        "{head}[[service]]\naddress = \"10.0.0.100:80\"\nmethod = \"bridge\"\n"
    ));
    let e = d.reload().unwrap_err();
    assert!(
        e.contains("director.toml:6:10: service[0].method: expected \"dr\", \"tun\" or \"nat\", not \"bridge\""),
        "{e}"
    );
    let after: Vec<_> = c
        .services()
        .unwrap()
        .into_iter()
        .map(|v| (v.spec, v.reals.iter().map(|r| r.spec).collect::<Vec<_>>()))
        .collect();
    assert_eq!(before, after);
    echo_round(&mut stream, 50);

    // Stop (SIGTERM's path): forwarding goes on with the last weights.
    d.stop();
    echo_round(&mut stream, 51);
    assert_eq!(weight(&lvs, &web, 2), Some(2));
    assert!((1..=3).contains(&answer_of(&lvs, 80)));
    // A new daemon with the last good file: nothing to change, nothing rewritten.
    dir.write(&format!(
        "{head}{echo_svc}\
         [[service]]\naddress = \"10.0.0.100:80\"\nscheduler = \"wrr\"\n[[service.real]]\naddress = \"10.1.0.11\"\n[[service.real]]\naddress = \"10.1.0.12\"\nweight = 2\n\
         [[service.real]]\naddress = \"10.1.0.13\"\n"
    ));
    let web_table = c.active_table(&web).unwrap();
    let d = Running::start(&lvs, &dir);
    assert_eq!(c.active_table(&echo).unwrap(), echo_table);
    assert_eq!(c.active_table(&web).unwrap(), web_table);
    assert_eq!(d.reload().unwrap().changes, Vec::<String>::new());
    echo_round(&mut stream, 52);
    d.stop();
    assert_eq!(c.active_table(&web).unwrap(), web_table);
}

fn real6(n: u8) -> Ipv6Addr {
    format!("fd00:1::1{n}").parse().unwrap()
}

/// Weight of the IPv6 real `n` in a service, None when absent (read from the maps).
fn weight6(lvs: &LvsLab, s: &ServiceAddr, n: u8) -> Option<u32> {
    let v = lvs.director.control.service(s).ok()?;
    v.reals
        .iter()
        .find(|r| r.spec.addr == IpAddr::V6(real6(n)))
        .map(|r| r.spec.weight)
}

/// Every check type the daemon has, against IPv6 reals: each real's weight in the maps
/// follows its check, HTTP's Host header carries the address in brackets, an external
/// check gets the IPv6 address, and an IPv4 service's IPv6 tunnel real is checked alike.
#[test]
fn ipv6_reals_are_checked_by_every_check_type_and_weighted() {
    director_tests::require_root();
    let lvs = LvsLab::build_pinned(3).expect("lab");
    let _locks = LockFiles::of(&lvs);
    let dir = TestDir::new("ipv6");
    let any6 = |port: u16| SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
    let _host1 = NsServer::start_at(lvs.lab.ns("real1"), any6(8081), Kind::HttpHost);
    let _busy2 = NsServer::start_at(lvs.lab.ns("real2"), any6(8081), Kind::Http(503, "busy\n"));
    let _dns1 = NsServer::start_at(
        lvs.lab.ns("real1"),
        any6(5353),
        Kind::Dns("ok.lab", real_addr(1)),
    );
    let _dns2 = NsServer::start_at(
        lvs.lab.ns("real2"),
        any6(5353),
        Kind::Dns("other.lab", real_addr(2)),
    );
    let timing = "interval = \"300ms\", timeout = \"500ms\", rise = 1, fall = 1";
    let reals = "[[service.real]]\naddress = \"fd00:1::11\"\n[[service.real]]\naddress = \"[fd00:1::12]\"\n[[service.real]]\naddress = \"fd00:1::13\"\n";
    dir.write(&format!(
        "[check]\ninit_state = \"fully-down\"\n\
         [[service]]\naddress = \"[2001:db8::100]:80\"\n\
         check = {{ type = \"http\", port = 8081, status = 200, body = \"^host=\\\\[fd00:1::11\\\\]:8081$\", {timing} }}\n{reals}\
         [[service]]\naddress = \"[2001:db8::100]:7\"\ncheck = {{ type = \"tcp\", port = 8081, {timing} }}\n{reals}\
         [[service]]\naddress = \"[2001:db8::100]:5353\"\nprotocol = \"udp\"\ncheck = {{ type = \"dns\", name = \"ok.lab\", {timing} }}\n{reals}\
         [[service]]\naddress = \"[2001:db8::100]:53\"\nprotocol = \"udp\"\ncheck = {{ type = \"udp\", port = 5353, payload = \"x\", require_reply = false, {timing} }}\n{reals}\
         [[service]]\naddress = \"[2001:db8::100]:25\"\n\
         check = {{ type = \"external\", command = \"case $DIRECTOR_REAL_ADDR in fd00:1::11) exit 0;; *) exit 1;; esac\", {timing} }}\n{reals}\
         [[service]]\naddress = \"10.0.0.100:80\"\nmethod = \"tunnel\"\n\
         check = {{ type = \"http\", port = 8081, body = \"^host=\", {timing} }}\n{reals}"
    ));
    let d = Running::start(&lvs, &dir);
    let within = Duration::from_millis(300 + 500) + MARGIN;
    let v6 = |proto, port| ServiceAddr {
        proto,
        addr: "2001:db8::100".parse().unwrap(),
        port,
    };
    let reason = |s: &ServiceAddr, n: u8| -> String {
        let st = d.handle.blocking_status().unwrap();
        let s = st.iter().find(|x| x.service == *s).unwrap();
        let r = s
            .reals
            .iter()
            .find(|r| r.addr == IpAddr::V6(real6(n)))
            .unwrap();
        r.reason.clone()
    };
    // (service, which reals are up) from the servers above: real1 answers everything;
    // real2 has a busy HTTP server (TCP accepts) and a DNS server for another name;
    // real3 runs nothing.
    let cases = [
        (v6(Protocol::Tcp, 80), [true, false, false]),
        (v6(Protocol::Tcp, 7), [true, true, false]),
        (v6(Protocol::Udp, 5353), [true, false, false]),
        (v6(Protocol::Udp, 53), [true, true, false]),
        (v6(Protocol::Tcp, 25), [true, false, false]),
        (svc(Protocol::Tcp, 80), [true, false, false]),
    ];
    // Every real starts at weight 0 (fully down): wait for each check's verdict.
    for (s, up) in &cases {
        for n in 1..=3u8 {
            let want = if up[n as usize - 1] { 1 } else { 0 };
            wait_until(
                within,
                &format!("[fd00:1::1{n}] of {s:?} checked to weight {want}"),
                || weight6(&lvs, s, n) == Some(want) && !reason(s, n).is_empty(),
            )
            .unwrap_or_else(|e| {
                panic!("{e:#}; it is {:?} ({})", weight6(&lvs, s, n), reason(s, n))
            });
        }
    }
    assert_eq!(reason(&v6(Protocol::Tcp, 80), 2), "HTTP 503 (expected 200)");
    assert!(
        reason(&v6(Protocol::Tcp, 7), 3).starts_with("connect: connection refused"),
        "{}",
        reason(&v6(Protocol::Tcp, 7), 3)
    );
    assert_eq!(reason(&v6(Protocol::Udp, 5353), 2), "NXDOMAIN for ok.lab");
    d.stop();
}

/// The first scenario over IPv6: the daemon checks the IPv6 reals of an IPv6 DR
/// service over IPv6; a real whose endpoint stops goes to weight 0, new IPv6
/// connections avoid it while its long-lived IPv6 stream keeps flowing, and it takes
/// new connections again once its endpoint is back.
#[test]
fn an_ipv6_real_whose_check_fails_is_quiesced_under_ipv6_traffic() {
    director_tests::require_root();
    let lvs = LvsLab::build_pinned(3).expect("lab");
    let _locks = LockFiles::of(&lvs);
    let dir = TestDir::new("ipv6-traffic");
    let any6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, 8081));
    let ok = || Kind::Http(200, "ok\n");
    let mut health: Vec<Option<NsServer>> = (1..=3)
        .map(|n| {
            Some(NsServer::start_at(
                lvs.lab.ns(&format!("real{n}")),
                any6,
                ok(),
            ))
        })
        .collect();
    let check = "check = { type = \"http\", port = 8081, path = \"/health\", body = \"^ok\", interval = \"300ms\", timeout = \"500ms\", rise = 2, fall = 3 }";
    let reals = "[[service.real]]\naddress = \"fd00:1::11\"\n[[service.real]]\naddress = \"fd00:1::12\"\n[[service.real]]\naddress = \"fd00:1::13\"\n";
    dir.write(&format!(
        "[[service]]\naddress = \"[fd00::100]:80\"\nscheduler = \"wrr\"\n{check}\n{reals}\
         [[service]]\naddress = \"[fd00::100]:7\"\nscheduler = \"wrr\"\n{check}\n{reals}"
    ));
    let d = Running::start(&lvs, &dir);
    let svc6 = |port| ServiceAddr {
        proto: Protocol::Tcp,
        addr: IpAddr::V6(VIP6_DR),
        port,
    };
    let (web, echo) = (svc6(80), svc6(7));
    let wait6 = |s: &ServiceAddr, n: u8, want: Option<u32>, within: Duration| {
        wait_until(
            within,
            &format!("[fd00:1::1{n}] of {s:?} at {want:?}"),
            || weight6(&lvs, s, n) == want,
        )
        .unwrap_or_else(|e| panic!("{e:#}; it is {:?}", weight6(&lvs, s, n)));
    };
    for n in 1..=3 {
        wait6(&web, n, Some(1), MARGIN);
        wait6(&echo, n, Some(1), MARGIN);
    }
    let client = lvs.lab.ns("client");
    let answer = || {
        let body = http_get(client, &http_url(IpAddr::V6(VIP6_DR), 80), TIMEOUT)
            .unwrap_or_else(|e| panic!("HTTP through the IPv6 VIP: {e:#}"));
        LvsLab::real_of_answer(&body).unwrap()
    };
    let mut stream = tcp_stream(client, SocketAddr::new(IpAddr::V6(VIP6_DR), 7)).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    echo_round(&mut stream, 0);
    let n = lvs.real_holding(&echo);

    health[n as usize - 1].take().unwrap().stop();
    let bound = Duration::from_millis(3 * 300 + 500) + MARGIN;
    wait6(&web, n, Some(0), bound);
    wait6(&echo, n, Some(0), bound);
    for i in 1..=20 {
        echo_round(&mut stream, i);
        assert_ne!(answer(), n, "a new connection reached the DOWN real{n}");
    }
    for m in (1..=3).filter(|m| *m != n) {
        assert_eq!(weight6(&lvs, &web, m), Some(1), "real{m} untouched");
    }

    health[n as usize - 1] = Some(NsServer::start_at(
        lvs.lab.ns(&format!("real{n}")),
        any6,
        ok(),
    ));
    let bound = Duration::from_millis(2 * 300 + 500) + MARGIN;
    wait6(&web, n, Some(1), bound);
    wait6(&echo, n, Some(1), bound);
    assert!(
        (0..30).any(|_| answer() == n),
        "no new connection reached real{n} after it came back"
    );
    echo_round(&mut stream, 99);
    d.stop();
}

/// Every CPU's cached next hop of real `n` of `s` (empty entries left out).
fn cached_hops(lvs: &LvsLab, s: &ServiceAddr, n: u8) -> Vec<[u8; 6]> {
    let c = &lvs.director.control;
    let id = c
        .service(s)
        .unwrap()
        .reals
        .iter()
        .find(|r| r.spec.addr == IpAddr::V4(real_addr(n)))
        .unwrap()
        .id;
    c.cached_next_hop(id)
        .unwrap()
        .into_iter()
        .filter(|h| h.at_ns != 0)
        .map(|h| h.dmac)
        .collect()
}

/// A real's MAC address changes (its NIC replaced, announced by gratuitous ARP): the
/// daemon sees the director's neighbour entry change and clears the data path's cached
/// next hop of that real at once, so the next packet asks the FIB and goes to the new
/// MAC; without it the old MAC stays cached until the cache's TTL.
#[test]
fn a_real_s_new_mac_reaches_the_data_path_at_once() {
    director_tests::require_root();
    let lvs = LvsLab::build_pinned(1).expect("lab");
    let _locks = LockFiles::of(&lvs);
    let dir = TestDir::new("newmac");
    dir.write(
        "[[service]]\naddress = \"10.0.0.100:80\"\n[[service.real]]\naddress = \"10.1.0.11\"\n",
    );
    let d = Running::start(&lvs, &dir);
    let web = svc(Protocol::Tcp, 80);
    wait_weight(&lvs, &web, 1, Some(1), MARGIN);

    let old = lvs.lab.mac("real1", "eth0");
    assert_eq!(answer_of(&lvs, 80), 1);
    let cached = cached_hops(&lvs, &web, 1);
    assert!(
        !cached.is_empty() && cached.iter().all(|m| *m == old),
        "{cached:?}"
    );

    // The new MAC, announced as a replaced NIC announces it (arp_notify).
    let new = [0x02, 0, 0, 0, 0x0b, 0x11];
    let real1 = lvs.lab.ns("real1");
    real1
        .set_sysctl("net.ipv4.conf.eth0.arp_notify", "1")
        .unwrap();
    real1
        .exec_ok(&["ip", "link", "set", "eth0", "address", "02:00:00:00:0b:11"])
        .unwrap();
    let director = lvs.lab.ns("director");
    wait_until(
        TIMEOUT,
        "the director's neighbour entry to hold the new MAC",
        || {
            director.run(move || {
                director_control::neighbours::neighbours()
                    .unwrap()
                    .iter()
                    .any(|n| n.addr == IpAddr::V4(real_addr(1)) && n.mac == Some(new))
            })
        },
    )
    .unwrap();
    // No traffic meanwhile: only the daemon can have cleared the cache.
    wait_until(TIMEOUT, "the real's cached next hop to be cleared", || {
        cached_hops(&lvs, &web, 1).is_empty()
    })
    .unwrap_or_else(|e| panic!("{e:#}: still {:?}", cached_hops(&lvs, &web, 1)));

    assert_eq!(
        answer_of(&lvs, 80),
        1,
        "traffic reaches the real at its new MAC"
    );
    let cached = cached_hops(&lvs, &web, 1);
    assert!(
        !cached.is_empty() && cached.iter().all(|m| *m == new),
        "{cached:?}"
    );
    d.stop();
}

/// A real's route changes (a host route through another neighbour): the daemon clears
/// the real's cached next hop at once, and the next packet follows the new route. Here
/// the new gateway is real2, which has the VIP too, so it is real2 that answers.
#[test]
fn a_real_s_new_route_reaches_the_data_path_at_once() {
    director_tests::require_root();
    let lvs = LvsLab::build_pinned(2).expect("lab");
    let _locks = LockFiles::of(&lvs);
    let dir = TestDir::new("newroute");
    // The new route leads the director's own packets for real1 to real2, which drops
    // them: a check of real1 would fail and quiesce it (which clears its cached hop too).
    // A check that always passes leaves the weight, and the cache, to the test.
    dir.write(
        "[[service]]\naddress = \"10.0.0.100:80\"\ncheck = { type = \"external\", command = \"true\" }\n\
         [[service.real]]\naddress = \"10.1.0.11\"\n",
    );
    let d = Running::start(&lvs, &dir);
    let web = svc(Protocol::Tcp, 80);
    wait_weight(&lvs, &web, 1, Some(1), MARGIN);

    assert_eq!(answer_of(&lvs, 80), 1);
    let cached = cached_hops(&lvs, &web, 1);
    let mac1 = lvs.lab.mac("real1", "eth0");
    assert!(
        !cached.is_empty() && cached.iter().all(|m| *m == mac1),
        "{cached:?}"
    );

    let via = real_addr(2).to_string();
    lvs.lab
        .ns("director")
        .exec_ok(&[
            "ip",
            "route",
            "add",
            "10.1.0.11/32",
            "via",
            &via,
            "dev",
            "eth1",
        ])
        .unwrap();
    // No traffic meanwhile: only the daemon can have cleared the cache.
    wait_until(TIMEOUT, "the real's cached next hop to be cleared", || {
        cached_hops(&lvs, &web, 1).is_empty()
    })
    .unwrap_or_else(|e| panic!("{e:#}: still {:?}", cached_hops(&lvs, &web, 1)));
    assert_eq!(answer_of(&lvs, 80), 2, "the next packet took the new route");
    let cached = cached_hops(&lvs, &web, 1);
    let mac2 = lvs.lab.mac("real2", "eth0");
    assert!(
        !cached.is_empty() && cached.iter().all(|m| *m == mac2),
        "{cached:?}"
    );
    d.stop();
}

/// Every CPU's cached next hop towards `client` (NAT replies): the MACs.
fn client_hops(lvs: &LvsLab, client: IpAddr) -> Vec<[u8; 6]> {
    lvs.director
        .control
        .client_next_hops()
        .unwrap()
        .into_iter()
        .filter(|h| h.client == client)
        .map(|h| h.mac)
        .collect()
}

/// The MAC of the neighbour NAT replies go to changes (a client's router replaced,
/// announced by gratuitous ARP and an unsolicited neighbour advertisement; in the lab
/// the client itself is that neighbour): the daemon clears the data path's cached next
/// hops towards the clients behind it at once, in both families, so the next reply
/// asks the FIB and goes to the new MAC; without it the old MAC stays cached until the
/// cache's TTL.
#[test]
fn a_client_s_new_mac_reaches_nat_replies_at_once() {
    director_tests::require_root();
    let lvs = LvsLab::build_pinned(1).expect("lab");
    let _locks = LockFiles::of(&lvs);
    let dir = TestDir::new("clientmac");
    dir.write(
        "[[service]]\naddress = \"10.0.0.102:80\"\nmethod = \"nat\"\n[[service.real]]\naddress = \"10.1.0.11\"\n\
         [[service]]\naddress = \"[fd00::102]:80\"\nmethod = \"nat\"\n[[service.real]]\naddress = \"fd00:1::11\"\n",
    );
    let d = Running::start(&lvs, &dir);
    let web = ServiceAddr {
        proto: Protocol::Tcp,
        addr: IpAddr::V4(VIP_NAT),
        port: 80,
    };
    let web6 = ServiceAddr {
        addr: IpAddr::V6(VIP6_NAT),
        ..web
    };
    wait_weight(&lvs, &web, 1, Some(1), MARGIN);
    wait_until(MARGIN, "the IPv6 real to be up", || {
        weight6(&lvs, &web6, 1) == Some(1)
    })
    .unwrap();

    let client = lvs.lab.ns("client");
    let answer = |vip: IpAddr| {
        let body = http_get(client, &http_url(vip, 80), TIMEOUT)
            .unwrap_or_else(|e| panic!("HTTP through {vip}: {e:#}"));
        LvsLab::real_of_answer(&body).unwrap()
    };
    let clients = [IpAddr::V4(CLIENT), IpAddr::V6(CLIENT6)];
    let old = lvs.lab.mac("client", "eth0");
    for (vip, c) in [IpAddr::V4(VIP_NAT), IpAddr::V6(VIP6_NAT)]
        .into_iter()
        .zip(clients)
    {
        assert_eq!(answer(vip), 1);
        let cached = client_hops(&lvs, c);
        assert!(
            !cached.is_empty() && cached.iter().all(|m| *m == old),
            "{c}: {cached:?}"
        );
    }

    // The new MAC, announced as a replaced NIC announces it.
    let new = [0x02, 0, 0, 0, 0x0c, 0x02];
    client
        .set_sysctl("net.ipv4.conf.eth0.arp_notify", "1")
        .unwrap();
    client
        .set_sysctl("net.ipv6.conf.eth0.ndisc_notify", "1")
        .unwrap();
    client
        .exec_ok(&["ip", "link", "set", "eth0", "address", "02:00:00:00:0c:02"])
        .unwrap();
    let director = lvs.lab.ns("director");
    wait_until(
        TIMEOUT,
        "the director's neighbour entries to hold the client's new MAC",
        || {
            director.run(move || {
                let n = director_control::neighbours::neighbours().unwrap();
                clients
                    .iter()
                    .all(|c| n.iter().any(|n| n.addr == *c && n.mac == Some(new)))
            })
        },
    )
    .unwrap();
    // No client traffic meanwhile: only the daemon can have cleared the caches.
    for c in clients {
        wait_until(
            TIMEOUT,
            "the client's cached next hops to be cleared",
            || client_hops(&lvs, c).is_empty(),
        )
        .unwrap_or_else(|e| panic!("{e:#}: {c} still {:?}", client_hops(&lvs, c)));
    }

    for (vip, c) in [IpAddr::V4(VIP_NAT), IpAddr::V6(VIP6_NAT)]
        .into_iter()
        .zip(clients)
    {
        assert_eq!(
            answer(vip),
            1,
            "NAT replies reach the client at its new MAC"
        );
        let cached = client_hops(&lvs, c);
        assert!(
            !cached.is_empty() && cached.iter().all(|m| *m == new),
            "{c}: {cached:?}"
        );
    }
    d.stop();
}
