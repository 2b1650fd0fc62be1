//! `director decap attach IFACE --from DIRECTOR [--gue-port PORT]` and `decap detach
//! IFACE` on a real server: the pinned program stays attached after the command exits,
//! IPIP, GUE (with --gue-port) and GRE through the named director reach the real, and
//! IPIP from any other source does not.

use std::{net::IpAddr, process::Command, time::Duration};

use crate::support::director_bin;
use aya::programs::XdpMode;
use director_common::real::{Method, TunType};
use director_control::{
    Datapath, LoadOptions, Protocol, RealSpec, ServiceSpec,
    datapath::PROG_DIRECTOR,
    model::{TunCsum, Tunnel},
};
use director_tests::{
    fixture::InNetns,
    lab::{Endpoint, Host, Lab, Topology, http_get},
    lvs::{self, CLIENT, DIRECTOR_BACK, DIRECTOR_FRONT, VIP_DR, real_addr},
};

/// Run the director binary in a lab host's network namespace with the lab's bpffs dir.
fn director(lab: &Lab, host: &str, args: &[&str]) -> std::process::Output {
    let state = lab.bpffs_dir().join(host);
    Command::new("nsenter")
        .arg(format!("--net={}", lab.ns(host).path().display()))
        .arg(director_bin())
        .arg("--bpffs")
        .arg(&state)
        .args(args)
        .output()
        .expect("running director")
}

fn xdp_prog_on(lab: &Lab, host: &str, ifname: &str) -> Option<String> {
    let out = lab
        .ns(host)
        .exec_ok(&["ip", "link", "show", "dev", ifname])
        .unwrap();
    out.lines()
        .find_map(|l| l.trim().strip_prefix("prog/xdp "))
        .map(|rest| {
            rest.split_whitespace()
                .nth(3)
                .unwrap_or_default()
                .to_owned()
        })
}

/// The real's `decap counters` from `director status`.
/// A request through `vip` from the client: the real's answer, or why none came.
fn request(lab: &Lab, vip: impl std::fmt::Display, wait: Duration) -> anyhow::Result<String> {
    http_get(lab.ns("client"), &format!("http://{vip}/"), wait)
}

/// The real answers through `vip`, and the decap program counted it as `counter`.
fn answered_and_counted(lab: &Lab, vip: impl std::fmt::Display, counter: &str) {
    let body = request(lab, vip, Duration::from_secs(5)).unwrap();
    assert_eq!(body, "real\n");
    let counters = decap_counters(lab);
    assert!(
        counters.get(counter).is_some_and(|n| *n > 0),
        "{counter}: {counters:?}"
    );
}

fn decap_counters(lab: &Lab) -> std::collections::BTreeMap<String, u64> {
    let out = director(lab, "real", &["status"]);
    let status = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("decap counters: "))
        .unwrap_or_else(|| panic!("no decap counters in status:\n{status}"));
    line.split(", ")
        .filter_map(|c| {
            let (name, n) = c.rsplit_once(' ')?;
            Some((name.to_owned(), n.parse().ok()?))
        })
        .collect()
}

#[test]
fn decap_attach_pins_the_program_and_ipip_reaches_the_real() {
    director_tests::require_root();
    // The standard lab's addressing with one real on a veth of its own (no bridge: the
    // real's decap program is what is tested, not the director's XDP_REDIRECT).
    let vip = VIP_DR;
    let topo = Topology::new()
        .host(Host::new("client").default_route(IpAddr::V4(DIRECTOR_FRONT)))
        .host(lvs::director_host("director"))
        .host(lvs::real_host("real", Some(DIRECTOR_BACK), &[vip]).http(80))
        .veth(
            Endpoint::new("client", "eth0").addr(IpAddr::V4(CLIENT), 24),
            Endpoint::new("director", "eth0")
                .addr(IpAddr::V4(DIRECTOR_FRONT), 24)
                .addr(IpAddr::V4(vip), 32),
        )
        .veth(
            Endpoint::new("director", "eth1").addr(IpAddr::V4(DIRECTOR_BACK), 24),
            Endpoint::new("real", "eth0").addr(IpAddr::V4(real_addr(1)), 24),
        );
    let lab = Lab::build(&topo).unwrap();

    // Without the directors' addresses there is nothing it could safely unwrap.
    for bad in [
        &["decap", "attach", "eth0"][..],
        &["decap", "attach", "eth0", "--from", "director.example"],
        &["decap", "attach", "eth0", "--from", ""],
    ] {
        let out = director(&lab, "real", bad);
        assert!(!out.status.success(), "{bad:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--from"), "{bad:?}: {err}");
        assert_eq!(xdp_prog_on(&lab, "real", "eth0"), None, "{bad:?} attached");
    }

    // Another director's address first: this director's IPIP is not unwrapped.
    let out = director(
        &lab,
        "real",
        &["decap", "attach", "eth0", "--from", "10.1.0.99"],
    );
    assert!(
        out.status.success(),
        "decap attach: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        xdp_prog_on(&lab, "real", "eth0").as_deref(),
        Some("decap"),
        "pinned after the command exited"
    );

    // The director (in-process) tunnels to the real. Frames it redirects out of eth1
    // reach the real because the real's eth0 runs a native program (decap); the real
    // answers the client directly through the director's kernel, and frames the
    // director's XDP sends to the client side need `pass` on the client's eth0.
    let mut dp = Datapath::load(&LoadOptions {
        conn_table: 1024,
        table_size: 1021,
        max_services: 4,
        pin_dir: None,
        ..LoadOptions::default()
    })
    .unwrap();
    let mut helpers = Datapath::load_helpers().unwrap();
    {
        let _in = InNetns::enter(&lab.ns("director").path());
        dp.attach(
            PROG_DIRECTOR,
            lab.ifindex("director", "eth0"),
            XdpMode::Driver,
        )
        .unwrap();
        let left = director_control::neighbours::resolve(
            &[IpAddr::V4(real_addr(1))],
            Duration::from_secs(5),
        )
        .unwrap();
        assert!(left.is_empty(), "the real's neighbour entry");
    }
    {
        let _in = InNetns::enter(&lab.ns("client").path());
        helpers
            .attach("pass", lab.ifindex("client", "eth0"), XdpMode::Driver)
            .unwrap();
    }
    let spec = ServiceSpec::new(Protocol::Tcp, IpAddr::V4(vip), 80);
    dp.control.add_service(&spec).unwrap();
    dp.control
        .add_real(
            &spec.addr,
            &RealSpec::new(IpAddr::V4(real_addr(1)), 80, Method::Tunnel, 1),
        )
        .unwrap();
    let refused = request(&lab, vip, Duration::from_secs(2));
    assert!(
        refused.is_err(),
        "IPIP from a director not in --from was unwrapped: {refused:?}"
    );
    let counters = decap_counters(&lab);
    assert!(
        counters.contains_key("decap_not_director") && !counters.contains_key("decap"),
        "{counters:?}"
    );

    // Attaching again replaces the lists in place (IPv6 directors may be listed beside
    // IPv4 ones).
    let out = director(
        &lab,
        "real",
        &[
            "decap",
            "attach",
            "eth0",
            "--from",
            "10.1.0.99,2001:db8:1::99,10.1.0.1",
        ],
    );
    assert!(
        out.status.success(),
        "decap attach: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    answered_and_counted(&lab, vip, "decap");

    // The real switched to GUE: without --gue-port the program leaves GUE to the kernel
    // (which has no receiver for it); with it, GUE is unwrapped and counted.
    let gue = Tunnel {
        kind: TunType::Gue,
        port: 6080,
        csum: TunCsum::Csum,
    };
    let real = RealSpec::new(IpAddr::V4(real_addr(1)), 80, Method::Tunnel, 1);
    dp.control
        .edit_real(&spec.addr, &real.with_tunnel(gue))
        .unwrap();
    let refused = request(&lab, vip, Duration::from_secs(2));
    assert!(
        refused.is_err(),
        "GUE unwrapped without --gue-port: {refused:?}"
    );
    let out = director(
        &lab,
        "real",
        &[
            "decap",
            "attach",
            "eth0",
            "--from",
            "10.1.0.1",
            "--gue-port",
            "0",
        ],
    );
    assert!(!out.status.success(), "--gue-port 0 accepted");
    let out = director(
        &lab,
        "real",
        &[
            "decap",
            "attach",
            "eth0",
            "--from",
            "10.1.0.1",
            "--gue-port",
            "6080",
        ],
    );
    assert!(
        out.status.success(),
        "decap attach --gue-port: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    answered_and_counted(&lab, vip, "decap_gue");
    // And GRE, which needs no option.
    let gre = Tunnel {
        kind: TunType::Gre,
        port: 0,
        csum: TunCsum::NoCsum,
    };
    dp.control
        .edit_real(&spec.addr, &real.with_tunnel(gre))
        .unwrap();
    answered_and_counted(&lab, vip, "decap_gre");

    let out = director(&lab, "real", &["decap", "detach", "eth0"]);
    assert!(
        out.status.success(),
        "decap detach: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The kernel releases an unpinned link from a work queue: wait for it.
    director_tests::lab::wait_until(
        Duration::from_secs(5),
        "the decap program to leave eth0",
        || xdp_prog_on(&lab, "real", "eth0").is_none(),
    )
    .unwrap();
    let out = director(&lab, "real", &["decap", "detach", "eth0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not attached to eth0"));
}
