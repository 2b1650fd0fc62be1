//! Integration tests of `director_tests::lab` (need root: they make network namespaces).

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use director_tests::lab::{Endpoint, Host, Lab, Topology, cidr, http_get, tcp_stream, udp_request};

const T: Duration = Duration::from_secs(5);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// client 10.11.1.2 -- 10.11.1.1 router 10.11.2.1 -- 10.11.2.2 server (10.11.100.1 on lo)
fn routed() -> Topology {
    Topology::new()
        .host(Host::new("client").default_route(ip("10.11.1.1")))
        .host(
            Host::new("router")
                .ip_forward()
                .sysctl("net.ipv4.conf.all.rp_filter", "0")
                .route(cidr("10.11.100.0/24"), ip("10.11.2.2")),
        )
        .host(
            Host::new("server")
                .route(cidr("10.11.1.0/24"), ip("10.11.2.1"))
                .lo_addr(ip("10.11.100.1"), 32)
                .http(80)
                .udp(5353)
                .echo(7),
        )
        .veth(
            Endpoint::new("client", "eth0")
                .addr(ip("10.11.1.2"), 24)
                .mac([0x02, 0, 0, 0, 0x01, 0x02]),
            Endpoint::new("router", "eth0")
                .addr(ip("10.11.1.1"), 24)
                .mac([0x02, 0, 0, 0, 0x01, 0x01]),
        )
        .veth(
            Endpoint::new("router", "eth1").addr(ip("10.11.2.1"), 24),
            Endpoint::new("server", "eth0").addr(ip("10.11.2.2"), 24),
        )
}

fn netns_list() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_gone(names: &[String], bpffs: &Path) {
    assert!(!names.is_empty());
    let list = netns_list();
    for n in names {
        assert!(
            !list.lines().any(|l| l.split_whitespace().next() == Some(n)),
            "{n} still listed:\n{list}"
        );
        assert!(!Path::new("/run/netns").join(n).exists());
    }
    assert!(!bpffs.exists(), "{} still exists", bpffs.display());
}

#[test]
fn routed_http_udp_and_cleanup() {
    director_tests::require_root();
    let lab = Lab::build(&routed()).expect("build");
    let client = lab.ns("client");

    // (a) HTTP through the router.
    let body = http_get(client, "http://10.11.2.2/", T).unwrap();
    assert_eq!(body, "server\n");
    // The server binds 0.0.0.0, so an address on lo is served as well.
    let body = http_get(client, "http://10.11.100.1:80/x", T).unwrap();
    assert_eq!(body, "server\n");

    // (b) UDP.
    let reply = udp_request(client, "10.11.2.2:5353".parse().unwrap(), b"hi", T).unwrap();
    assert_eq!(reply, b"server");

    // A long-lived TCP stream keeps flowing.
    let mut s = tcp_stream(client, "10.11.2.2:7".parse().unwrap()).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    for i in 0..20u32 {
        let msg = format!("ping {i}\n");
        s.write_all(msg.as_bytes()).unwrap();
        let mut buf = vec![0; msg.len()];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(buf, msg.as_bytes());
    }
    drop(s);

    // Sysctls really land in the namespace (read back with nsenter + sysctl).
    let fwd = |host: &str| {
        lab.ns(host)
            .exec_ok(&["sysctl", "-n", "net.ipv4.ip_forward"])
            .unwrap()
            .trim()
            .to_owned()
    };
    assert_eq!(fwd("router"), "1");
    assert_eq!(fwd("client"), "0");
    assert_eq!(lab.ns("router").sysctl("net.ipv4.ip_forward").unwrap(), "1");

    // Addresses, MAC and ifindex as declared / reported.
    assert_eq!(lab.mac("client", "eth0"), [0x02, 0, 0, 0, 0x01, 0x02]);
    assert_eq!(lab.mac("router", "eth0"), [0x02, 0, 0, 0, 0x01, 0x01]);
    assert_eq!(lab.ifindex("server", "lo"), 1);
    let idx = lab.ifindex("router", "eth1");
    let out = lab
        .ns("router")
        .exec_ok(&["ip", "-o", "link", "show", "eth1"])
        .unwrap();
    assert!(out.starts_with(&format!("{idx}: eth1")), "{out}");
    // TX checksum offload is off on the veth ends.
    let feat = lab
        .ns("server")
        .exec_ok(&["ethtool", "-k", "eth0"])
        .unwrap();
    assert!(feat.contains("tx-checksumming: off"), "{feat}");

    // Namespaces are unique and real.
    let names = lab.netns_names();
    assert_eq!(names.len(), 3);
    let list = netns_list();
    for n in &names {
        assert!(n.starts_with(&format!("dlab{}-", std::process::id())));
        assert!(list.contains(n.as_str()), "{n} not in\n{list}");
    }
    let bpffs = lab.bpffs_dir().to_owned();
    assert!(bpffs.starts_with("/sys/fs/bpf"));
    assert_eq!(std::fs::read_dir(&bpffs).unwrap().count(), 0);
    std::fs::create_dir(bpffs.join("sub")).unwrap();

    // The namespaces' identities, to check no thread of ours stays in them.
    let inodes: Vec<PathBuf> = lab
        .namespaces()
        .map(|n| n.run(|| std::fs::read_link("/proc/thread-self/ns/net").unwrap()))
        .collect();

    // (c) After drop: no namespace, no bpffs dir, no (server) thread left inside.
    drop(lab);
    assert_gone(&names, &bpffs);
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        if let Ok(ns) = std::fs::read_link(task.path().join("ns/net")) {
            assert!(
                !inodes.contains(&ns),
                "thread {:?} is still in {ns:?}",
                task.file_name()
            );
        }
    }
}

#[test]
fn build_sweeps_leftovers_of_dead_processes() {
    director_tests::require_root();
    // A pid that no longer exists.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    assert!(!Path::new(&format!("/proc/{dead}")).exists());

    let stale = format!("dlab{dead}-0-leftover");
    let st = Command::new("ip")
        .args(["netns", "add", &stale])
        .status()
        .unwrap();
    assert!(st.success());
    // One lab first, so /sys/fs/bpf is surely a BPF filesystem.
    drop(Lab::build(&Topology::new().host(Host::new("one"))).unwrap());
    let stale_dir = Path::new("/sys/fs/bpf").join(format!("dlab{dead}-0"));
    std::fs::create_dir(&stale_dir).unwrap();
    std::fs::create_dir(stale_dir.join("inner")).unwrap();

    let lab = Lab::build(&Topology::new().host(Host::new("two"))).unwrap();
    assert!(!Path::new("/run/netns").join(&stale).exists());
    assert!(!stale_dir.exists());
    // A live process's labs are left alone: this one's own lab is still there.
    assert!(lab.ns("two").path().exists());
}

#[test]
fn panic_during_use_leaves_nothing() {
    director_tests::require_root();
    type Seen = Option<(Vec<String>, PathBuf)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let s = seen.clone();
    let r = std::panic::catch_unwind(move || {
        let lab = Lab::build(&routed()).unwrap();
        *s.lock().unwrap() = Some((lab.netns_names(), lab.bpffs_dir().to_owned()));
        panic!("on purpose, with lab {} alive", lab.id());
    });
    assert!(r.is_err());
    let (names, bpffs) = seen.lock().unwrap().take().expect("lab was built");
    assert_gone(&names, &bpffs);
}

#[test]
fn failed_build_leaves_nothing() {
    director_tests::require_root();
    // The route's gateway is unreachable, so the build fails late, after namespaces,
    // links and addresses exist: all of it must be removed.
    let topo = Topology::new()
        .host(Host::new("a").route(cidr("10.12.9.0/24"), ip("10.99.99.99")))
        .host(Host::new("b").http(80))
        .veth(
            Endpoint::new("a", "eth0").addr(ip("10.12.0.1"), 24),
            Endpoint::new("b", "eth0").addr(ip("10.12.0.2"), 24),
        );
    let before = netns_list();
    let mine = |l: &str| {
        l.lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with(&format!("dlab{}-", std::process::id())) && n.ends_with("-a"))
            .count()
    };
    let err = Lab::build(&topo).unwrap_err();
    assert!(format!("{err:#}").contains("route"), "{err:#}");
    // Other tests of this process may have labs of their own; none is named "...-a".
    assert_eq!(mine(&netns_list()), mine(&before));

    // Invalid descriptions are refused before anything is made.
    let bad = Topology::new().host(Host::new("x").sysctl("kernel.panic", "1"));
    assert!(Lab::build(&bad).is_err());
    let bad = Topology::new()
        .host(Host::new("x"))
        .veth(Endpoint::new("x", "eth0"), Endpoint::new("nope", "eth0"));
    assert!(Lab::build(&bad).is_err());
}

#[test]
fn bridged_hosts_talk() {
    director_tests::require_root();
    // (e) two hosts plugged into one bridge.
    let topo = Topology::new()
        .bridge("br0")
        .host(Host::new("h1").udp(9000))
        .host(Host::new("h2").http(8080))
        .bridged(
            Endpoint::new("h1", "eth0")
                .addr(ip("10.13.0.1"), 24)
                .addr(ip("fd00:13::1"), 64),
            "br0",
        )
        .bridged(
            Endpoint::new("h2", "eth0")
                .addr(ip("10.13.0.2"), 24)
                .addr(ip("fd00:13::2"), 64),
            "br0",
        );
    let lab = Lab::build(&topo).unwrap();
    assert_eq!(
        http_get(lab.ns("h1"), "http://10.13.0.2:8080/", T).unwrap(),
        "h2\n"
    );
    let to: SocketAddr = "10.13.0.1:9000".parse().unwrap();
    assert_eq!(udp_request(lab.ns("h2"), to, b"x", T).unwrap(), b"h1");
    // IPv6 addresses are usable at once (no DAD).
    lab.ns("h1")
        .exec_ok(&["ping", "-6", "-c", "1", "-W", "5", "fd00:13::2"])
        .unwrap();

    let (sw, port) = lab.bridge_port("h1", "eth0");
    assert_eq!(Some(sw.name()), lab.switch().map(|s| s.name()));
    let out = sw.exec_ok(&["ip", "-o", "link", "show", &port]).unwrap();
    assert!(out.contains("master br0"), "{out}");
    assert!(sw.ifindex(&port).unwrap() > 1);
    assert_eq!(lab.netns_names().len(), 3);

    let names = lab.netns_names();
    let bpffs = lab.bpffs_dir().to_owned();
    drop(lab);
    assert_gone(&names, &bpffs);
}

#[test]
fn lab_is_shareable_and_run_propagates_panics() {
    director_tests::require_root();
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Lab>();
    send_sync::<director_tests::lab::Netns>();

    let lab = Lab::build(&Topology::new().host(Host::new("p"))).unwrap();
    assert_eq!(lab.ns("p").run(|| 40 + 2), 42);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        lab.ns("p").run(|| panic!("inside the namespace"))
    }));
    assert!(r.is_err());
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| lab.ns("nope")));
    let msg = r.unwrap_err();
    let msg = msg.downcast_ref::<String>().unwrap();
    assert!(msg.contains("no host named \"nope\""), "{msg}");
}

#[test]
fn spawned_process_runs_in_the_namespace_and_is_reaped() {
    director_tests::require_root();
    let topo = Topology::new().host(Host::new("solo"));
    let lab = Lab::build(&topo).unwrap();
    let pid = lab
        .spawn_pid(
            "solo",
            Command::new("sleep").arg("1000").stdout(Stdio::null()),
        )
        .unwrap();
    let ns_of = |p: &str| std::fs::read_link(p).unwrap();
    let inside = lab
        .ns("solo")
        .run(|| std::fs::read_link("/proc/thread-self/ns/net").unwrap());
    assert_eq!(ns_of(&format!("/proc/{pid}/ns/net")), inside);
    assert_ne!(ns_of("/proc/self/ns/net"), inside);
    // Same mount namespace: /sys/fs/bpf (and the lab's dir) is visible to the process.
    assert_eq!(
        ns_of(&format!("/proc/{pid}/ns/mnt")),
        ns_of("/proc/self/ns/mnt")
    );
    drop(lab);
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
}
