//! A director pair with keepalived (VRRP) owning the VIPs: when the master stops, the
//! backup takes over established DR and IPIP connections without any shared state,
//! because both build identical Maglev tables and schedule a mid-connection packet
//! instead of dropping it. When the old master returns (preemption), they move back.
//!
//! ```text
//!  client 10.0.0.2, dirA 10.0.0.3 (priority 150), dirB 10.0.0.4 (100),
//!  real1..3 10.0.0.11-13 (VIPs on lo, decap on eth0) — all on one bridge
//! ```

use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream},
    os::fd::{FromRawFd, IntoRawFd},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use aya::programs::XdpMode;
use director_common::real::Method;
use director_control::{
    Datapath, LoadOptions, Protocol, RealSpec, ServiceSpec,
    datapath::{PROG_DECAP, PROG_DIRECTOR, PROG_PASS},
};
use director_tests::{
    fixture::InNetns,
    lab::{Endpoint, Host, Lab, Netns, Topology, wait_until},
    lvs::{self, VIP_DR, VIP_TUN},
};

const REALS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(10, 0, 0, 11),
    Ipv4Addr::new(10, 0, 0, 12),
    Ipv4Addr::new(10, 0, 0, 13),
];
const TAKEOVER: Duration = Duration::from_secs(20);

fn v4(a: Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

fn topology() -> Topology {
    let mut t = Topology::new()
        .bridge("lan")
        .host(Host::new("client"))
        .bridged(
            Endpoint::new("client", "eth0").addr(v4(Ipv4Addr::new(10, 0, 0, 2)), 24),
            "lan",
        );
    for (name, addr) in [("dira", 3), ("dirb", 4)] {
        t = t.host(Host::new(name).ip_forward()).bridged(
            Endpoint::new(name, "eth0").addr(v4(Ipv4Addr::new(10, 0, 0, addr)), 24),
            "lan",
        );
    }
    for (i, addr) in REALS.iter().enumerate() {
        let name = format!("real{}", i + 1);
        t = t
            .host(lvs::real_host(&name, None, &[VIP_DR, VIP_TUN]).echo(7))
            .bridged(Endpoint::new(&name, "eth0").addr(v4(*addr), 24), "lan");
    }
    t
}

/// One director: the program on eth0 and the same configuration on both.
fn start_director(lab: &Lab, host: &str) -> Datapath {
    let mut dp = Datapath::load(&LoadOptions {
        conn_table: 65_536,
        ..LoadOptions::default()
    })
    .unwrap();
    let _in = InNetns::enter(&lab.ns(host).path());
    dp.attach(PROG_DIRECTOR, lab.ifindex(host, "eth0"), XdpMode::Driver)
        .unwrap();
    let reals: Vec<IpAddr> = REALS.iter().map(|r| v4(*r)).collect();
    let left = director_control::neighbours::resolve(&reals, Duration::from_secs(5)).unwrap();
    assert!(left.is_empty(), "{host} resolves the reals");
    for (vip, method) in [(VIP_DR, Method::Route), (VIP_TUN, Method::Tunnel)] {
        let spec = ServiceSpec::new(Protocol::Tcp, v4(vip), 7);
        dp.control.add_service(&spec).unwrap();
        for r in REALS {
            dp.control
                .add_real(&spec.addr, &RealSpec::new(v4(r), 7, method, 1))
                .unwrap();
        }
    }
    dp
}

/// A scratch directory removed on drop (keepalived's config and pid files).
struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn keepalived(lab: &Lab, scratch: &Scratch, host: &str, priority: u32) -> u32 {
    let dir = scratch.0.join(host);
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("keepalived.conf");
    std::fs::write(
        &conf,
        format!(
            "global_defs {{\n  router_id {host}\n}}\n\
             vrrp_instance VI_1 {{\n  state BACKUP\n  interface eth0\n  virtual_router_id 51\n  \
             priority {priority}\n  advert_int 1\n  virtual_ipaddress {{\n    {VIP_DR}/32 dev eth0\n    {VIP_TUN}/32 dev eth0\n  }}\n}}\n"
        ),
    )
    .unwrap();
    let mut cmd = Command::new("keepalived");
    cmd.args(["--dont-fork", "--log-console", "--vrrp", "--use-file"])
        .arg(&conf)
        .arg("--pid")
        .arg(dir.join("keepalived.pid"))
        .arg("--vrrp_pid")
        .arg(dir.join("vrrp.pid"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    lab.spawn_pid(host, &mut cmd).unwrap()
}

fn has_vip(ns: &Netns) -> bool {
    ns.exec_ok(&["ip", "-4", "addr", "show", "dev", "eth0"])
        .is_ok_and(|o| o.contains(&format!("{VIP_DR}/32")))
}

/// A TCP connection from the client with a fixed source port, so where Maglev puts it
/// is reproducible.
fn connect_from(ns: &Netns, sport: u16, to: SocketAddr) -> TcpStream {
    ns.run(move || {
        use nix::sys::socket::{
            AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, socket,
        };
        let fd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::empty(),
            None,
        )
        .unwrap();
        bind(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            &SockaddrIn::new(10, 0, 0, 2, sport),
        )
        .unwrap();
        let SocketAddr::V4(to) = to else {
            unreachable!()
        };
        connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(to)).unwrap();
        // SAFETY: the fd is a connected TCP socket we own.
        unsafe { TcpStream::from_raw_fd(fd.into_raw_fd()) }
    })
}

/// Echo rounds on one connection on its own thread until told to stop, keeping the
/// longest time a round took (the pause a failover causes) and the byte counts.
struct Pump {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(Duration, usize, usize)>,
}

/// Upper bound of rounds per connection, whatever happens.
const MAX_ROUNDS: usize = 200_000;

fn pump(tag: String, mut s: TcpStream) -> Pump {
    use std::sync::atomic::Ordering;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
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
        }
        (worst, sent, received)
    });
    Pump { stop, thread }
}

impl Pump {
    fn finish(self) -> (Duration, usize, usize) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }
}

#[test]
fn backup_takes_over_established_dr_and_ipip_connections_and_hands_back() {
    director_tests::require_root();
    let lab = Lab::build(&topology()).unwrap();
    let scratch = Scratch(std::env::temp_dir().join(format!("{}-keepalived", lab.id())));
    let mut helpers = Datapath::load_helpers().unwrap();
    // The reals unwrap IPIP from either director (the backup's after a takeover).
    helpers
        .allow_decap(
            &[Ipv4Addr::new(10, 0, 0, 3), Ipv4Addr::new(10, 0, 0, 4)],
            &REALS,
        )
        .unwrap();
    for host in ["dira", "dirb"] {
        let (sw, port) = lab.bridge_port(host, "eth0");
        let _in = InNetns::enter(&sw.path());
        helpers
            .attach(PROG_PASS, sw.ifindex(&port).unwrap(), XdpMode::Driver)
            .unwrap();
    }
    for i in 1..=3 {
        let host = format!("real{i}");
        let _in = InNetns::enter(&lab.ns(&host).path());
        helpers
            .attach(PROG_DECAP, lab.ifindex(&host, "eth0"), XdpMode::Driver)
            .unwrap();
    }
    let dir_a = start_director(&lab, "dira");
    let _dir_b = start_director(&lab, "dirb");
    let ka = keepalived(&lab, &scratch, "dira", 150);
    keepalived(&lab, &scratch, "dirb", 100);
    wait_until(TAKEOVER, "dirA to own the VIPs", || has_vip(lab.ns("dira"))).unwrap();

    let client = lab.ns("client");
    let mut conns = Vec::new();
    for (vip, mode, base) in [(VIP_DR, "DR", 41000), (VIP_TUN, "IPIP", 42000)] {
        for k in 0..4u16 {
            let s = connect_from(client, base + k, SocketAddr::new(v4(vip), 7));
            s.set_read_timeout(Some(TAKEOVER)).unwrap();
            conns.push((format!("{mode}#{k}"), s));
        }
    }
    let pumps: Vec<Pump> = conns
        .iter()
        .map(|(tag, s)| pump(tag.clone(), s.try_clone().unwrap()))
        .collect();
    wait_until(TAKEOVER, "traffic on every connection through dirA", || {
        dir_a
            .control
            .connections()
            .map(|c| c.len() >= 8)
            .unwrap_or(false)
    })
    .unwrap();
    // The connections are spread over the reals (per dirA's connection table).
    let reals: std::collections::HashSet<u32> = dir_a
        .control
        .connections()
        .unwrap()
        .iter()
        .map(|c| c.real_id)
        .collect();
    assert!(
        reals.len() >= 2,
        "connections on {} real(s) only",
        reals.len()
    );

    // The master stops while traffic flows: keepalived goes (removing its VIPs), then
    // its program.
    // SAFETY: plain kill(2) of the keepalived we started.
    unsafe { libc::kill(ka as i32, libc::SIGTERM) };
    wait_until(TAKEOVER, "dirA to give up the VIPs", || {
        !has_vip(lab.ns("dira"))
    })
    .unwrap();
    drop(dir_a);
    wait_until(TAKEOVER, "dirB to own the VIPs", || has_vip(lab.ns("dirb"))).unwrap();
    let served_by_b = |dp: &Datapath| {
        dp.control
            .connections()
            .map(|c| c.len() >= 8)
            .unwrap_or(false)
    };
    wait_until(TAKEOVER, "every connection to reach dirB", || {
        served_by_b(&_dir_b)
    })
    .unwrap();

    // The old master returns with the same configuration and preempts.
    let dir_a = start_director(&lab, "dira");
    keepalived(&lab, &scratch, "dira", 150);
    wait_until(TAKEOVER, "dirA to take the VIPs back", || {
        has_vip(lab.ns("dira"))
    })
    .unwrap();
    wait_until(TAKEOVER, "every connection to come back to dirA", || {
        served_by_b(&dir_a)
    })
    .unwrap();

    let mut worst = Duration::ZERO;
    for ((tag, _), p) in conns.iter().zip(pumps) {
        let (w, sent, received) = p.finish();
        assert_eq!(sent, received, "{tag}: every byte sent came back");
        assert!(received > 0);
        worst = worst.max(w);
    }
    eprintln!("longest pause of an established connection over takeover and hand-back: {worst:?}");
}
