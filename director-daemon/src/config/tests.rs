//! Each broken file and the exact message an operator gets, and the annotated example.

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    time::Duration,
};

use director_common::{real::Method, service::Scheduler};

use super::*;

fn errors(src: &str) -> String {
    parse(Path::new("d.toml"), src).unwrap_err().to_string()
}

/// A service's reals as (address:port, method, weight) rows, in order: what an
/// operator reads off the file.
pub(crate) fn real_rows(service: &ServiceConfig) -> Vec<(String, Method, u32)> {
    service
        .reals
        .iter()
        .map(|r| {
            (
                SocketAddr::new(r.spec.addr, r.spec.port).to_string(),
                r.spec.method,
                r.spec.weight,
            )
        })
        .collect()
}

const SVC: &str = "[[service]]\naddress = \"10.0.0.100:80\"\n";
const REAL: &str = "[[service.real]]\naddress = \"10.1.0.11\"\n";

/// Each broken file and the exact message an operator gets.
#[test]
fn broken_files_name_file_line_field_and_what_is_expected() {
    let with_check = |c: &str| format!("{SVC}check = {{ {c} }}\n{REAL}");
    let with_real = |r: &str| format!("{SVC}[[service.real]]\n{r}\n");
    let cases: Vec<(String, &str)> = vec![
        (
            "[[service]\n".into(),
            "d.toml:1:11: unclosed array table, expected `]`",
        ),
        (
            format!("{SVC}weight = 3\n{REAL}"),
            "d.toml:3:1: service[0].weight: unknown field `weight`, expected one of `name`, `address`, `protocol`, `scheduler`, `hash_port`, `method`, `persistent`, `persistent_netmask`, `on_down`, `slowstart`, `quorum`, `fallback`, `check`, `notify`, `notify_up`, `notify_down`, `real`",
        ),
        (
            "[[service]]\nname = \"web\"\n".into(),
            "d.toml:1:1: service[0].address: missing field `address`",
        ),
        (
            "[[service]]\naddress = 80\n".into(),
            "d.toml:2:11: service[0].address: wrong type: integer `80`, expected a string",
        ),
        (
            "[[service]]\naddress = \"10.0.0.100\"\n".into(),
            "d.toml:2:11: service[0].address: expected an address and port, like \"10.0.0.100:80\", not \"10.0.0.100\"",
        ),
        (
            "[[service]]\naddress = \"www.example.com:80\"\n".into(),
            "d.toml:2:11: service[0].address: expected an address and port, like \"10.0.0.100:80\", not \"www.example.com:80\" (host names are not resolved)",
        ),
        (
            "[[service]]\naddress = \"[fd00::1]:80\"\n[[service.real]]\naddress = \"10.1.0.11\"\n"
                .into(),
            "d.toml:4:11: service[0].real[0].address: the real server's address family differs from the virtual service's: only method = \"tunnel\" allows that",
        ),
        (
            format!("{SVC}method = \"nat\"\n[[service.real]]\naddress = \"[fd00::11]:8080\"\n"),
            "d.toml:5:11: service[0].real[0].address: the real server's address family differs from the virtual service's: only method = \"tunnel\" allows that",
        ),
        (
            format!("{SVC}fallback = {{ address = \"fd00::99\" }}\n{REAL}"),
            "d.toml:3:24: service[0].fallback.address: the real server's address family differs from the virtual service's: only method = \"tunnel\" allows that",
        ),
        (
            "[[service]]\naddress = \"[fd00::1]:80\"\npersistent = 300\npersistent_netmask = \"255.255.255.0\"\n[[service.real]]\naddress = \"fd00::11\"\n"
                .into(),
            "d.toml:4:22: service[0].persistent_netmask: expected an IPv6 prefix length from 1 to 128 like \"64\", not \"255.255.255.0\"",
        ),
        (
            "[[service]]\naddress = \"[fd00::1]:80\"\npersistent = 300\npersistent_netmask = \"129\"\n[[service.real]]\naddress = \"fd00::11\"\n"
                .into(),
            "d.toml:4:22: service[0].persistent_netmask: expected an IPv6 prefix length from 1 to 128 like \"64\", not \"129\"",
        ),
        (
            "[[service]]\naddress = \"[fd00::1]:80\"\n[[service.real]]\naddress = \"[fd00::11]:81\"\n"
                .into(),
            "d.toml:4:11: service[0].real[0].address: direct routing and tunnelling cannot change the port: expected port 80 (the virtual port) or none, or method = \"nat\"",
        ),
        (
            SVC.into(),
            "d.toml:1:1: service[0].real: a service needs at least one [[service.real]]",
        ),
        (
            format!("{SVC}protocol = \"sctp\"\n{REAL}"),
            "d.toml:3:12: service[0].protocol: expected \"tcp\" or \"udp\", not \"sctp\"",
        ),
        (
            format!("{SVC}scheduler = \"wlc\"\n{REAL}"),
            "d.toml:3:13: service[0].scheduler: expected one of maglev, mh, sh, rr, wrr, not \"wlc\" (the data path has no connection-counting schedulers)",
        ),
        (
            format!("{SVC}hash_port = true\n{REAL}"),
            "d.toml:3:13: service[0].hash_port: hash_port only applies to the \"sh\" and \"mh\" schedulers",
        ),
        (
            format!("{SVC}method = \"bridge\"\n{REAL}"),
            "d.toml:3:10: service[0].method: expected \"dr\", \"tun\" or \"nat\", not \"bridge\"",
        ),
        (
            format!("{SVC}persistent = \"1.5s\"\n{REAL}"),
            "d.toml:3:14: service[0].persistent: expected whole seconds (the data path counts persistence in seconds)",
        ),
        (
            format!("{SVC}persistent = 300\npersistent_netmask = \"255.0.255.0\"\n{REAL}"),
            "d.toml:4:22: service[0].persistent_netmask: expected an IPv4 netmask like \"255.255.255.0\", not \"255.0.255.0\"",
        ),
        (
            format!("{SVC}persistent_netmask = \"255.255.255.0\"\n{REAL}"),
            "d.toml:3:22: service[0].persistent_netmask: persistent_netmask needs persistent (a timeout)",
        ),
        (
            format!("{SVC}on_down = \"drain\"\n{REAL}"),
            "d.toml:3:11: service[0].on_down: expected \"quiescent\" or \"remove\", not \"drain\"",
        ),
        (
            format!("{SVC}slowstart = \"fast\"\n{REAL}"),
            "d.toml:3:13: service[0].slowstart: expected a duration like \"2s\", \"500ms\" or \"1m\" (or whole seconds as a number), not \"fast\"",
        ),
        (
            format!("{SVC}quorum = 2\n{REAL}"),
            "d.toml:3:10: service[0].quorum: expected the number of UP reals the service needs, from 1 to its 1 reals",
        ),
        (
            format!("{SVC}fallback = {{ address = \"10.1.0.11\" }}\n{REAL}"),
            "d.toml:3:24: service[0].fallback.address: the fallback server is also a real server of this service",
        ),
        (
            format!("{SVC}fallback = {{ address = \"10.1.0.99\", weight = 0 }}\n{REAL}"),
            "d.toml:3:12: service[0].fallback.weight: a fallback with weight 0 would never get traffic; expected 1 to 65535",
        ),
        (
            with_real("address = \"10.1.0.11\"\nweight = \"heavy\""),
            "d.toml:5:10: service[0].real[0].weight: wrong type: string \"heavy\", expected an integer",
        ),
        (
            with_real("address = \"10.1.0.11\"\nweight = 70000"),
            "d.toml:5:10: service[0].real[0].weight: expected a weight from 0 to 65535, not 70000",
        ),
        (
            with_real("address = \"10.1.0.11:8080\""),
            "d.toml:4:11: service[0].real[0].address: direct routing and tunnelling cannot change the port: expected port 80 (the virtual port) or none, or method = \"nat\"",
        ),
        (
            with_real("address = \"10.1.0.11\"\ncheck_port = 0"),
            "d.toml:5:14: service[0].real[0].check_port: expected a port from 1 to 65535, not 0",
        ),
        (
            with_real("address = \"10.1.0.11\"\ncheck_address = \"real1\""),
            "d.toml:5:17: service[0].real[0].check_address: expected an IP address, not \"real1\"",
        ),
        (
            with_real("address = \"10.1.0.11\"\ntun_type = \"gue\""),
            "d.toml:5:12: service[0].real[0]: tunnel options (tun_type, tun_port, tun_csum) need method = \"tun\"",
        ),
        (
            with_real("address = \"10.1.0.11\"\nmethod = \"tun\"\ntun_type = \"vxlan\""),
            "d.toml:6:12: service[0].real[0].tun_type: expected \"ipip\", \"gue\" or \"gre\", not \"vxlan\"",
        ),
        (
            with_real("address = \"10.1.0.11\"\nmethod = \"tun\"\ntun_type = \"gue\""),
            "d.toml:6:12: service[0].real[0]: a GUE tunnel needs its UDP port (--tun-port)",
        ),
        (
            with_real(
                "address = \"10.1.0.11\"\nmethod = \"tun\"\ntun_type = \"gre\"\ntun_port = 6080",
            ),
            "d.toml:6:12: service[0].real[0]: only a GUE tunnel has a port (--tun-port)",
        ),
        (
            with_real("address = \"10.1.0.11\"\nmethod = \"tun\"\ntun_csum = \"csum\""),
            "d.toml:6:12: service[0].real[0]: an IPIP tunnel has no checksum options",
        ),
        (
            with_real(
                "address = \"10.1.0.11\"\nmethod = \"tun\"\ntun_type = \"gue\"\ntun_port = 70000",
            ),
            "d.toml:7:12: service[0].real[0].tun_port: expected a UDP port from 1 to 65535, not 70000",
        ),
        (
            format!("{SVC}{REAL}{REAL}"),
            "d.toml:6:11: service[0].real[1].address: 10.1.0.11:80 is already real[0] of this service",
        ),
        (
            format!("{SVC}{REAL}{SVC}{REAL}"),
            "d.toml:5:1: service[1].address: tcp/10.0.0.100:80 is already declared by service[0]",
        ),
        (
            with_check("type = \"ping\""),
            "d.toml:3:18: service[0].check.type: expected one of tcp, http, https, udp, dns, external, on, off; not \"ping\"",
        ),
        (
            with_check("type = \"tcp\", path = \"/\""),
            "d.toml:3:32: service[0].check.path: path does not apply to a tcp check (only to http, https)",
        ),
        (
            with_check("type = \"http\", path = \"health\""),
            "d.toml:3:33: service[0].check.path: expected a request path starting with '/' and without spaces, like \"/health\", not \"health\"",
        ),
        (
            with_check("type = \"http\", status = [200, 700]"),
            "d.toml:3:35: service[0].check.status: expected HTTP status codes from 100 to 599: a code, a range \"200-299\", or an array of them",
        ),
        (
            with_check("type = \"http\", body = \"(unclosed\""),
            "d.toml:3:33: service[0].check.body: expected a regular expression: regex parse error: (unclosed ^ error: unclosed group",
        ),
        (
            with_check("type = \"https\", ca_file = \"/nonexistent/ca.pem\""),
            "d.toml:3:37: service[0].check.ca_file: cannot read CA certificates from /nonexistent/ca.pem: I/O error: No such file or directory (os error 2)",
        ),
        (
            with_check("type = \"dns\""),
            "d.toml:3:18: service[0].check.name: a dns check needs the name to query (name = \"...\")",
        ),
        (
            with_check("type = \"dns\", name = \"a..b\""),
            "d.toml:3:32: service[0].check.name: expected a domain name to query, like \"www.example.com\", not \"a..b\"",
        ),
        (
            with_check("type = \"dns\", name = \"x.lab\", query_type = \"AXFR\""),
            "d.toml:3:54: service[0].check.query_type: expected one of A, AAAA, CNAME, MX, NS, PTR, SOA, SRV, TXT, not \"AXFR\"",
        ),
        (
            with_check("type = \"external\""),
            "d.toml:3:18: service[0].check.command: an external check needs a command (a string for /bin/sh -c, or an array)",
        ),
        (
            with_check("type = \"external\", command = []"),
            "d.toml:3:40: service[0].check.command: expected a command: a string (run by /bin/sh -c) or a non-empty array of strings (program and arguments)",
        ),
        (
            with_check("type = \"udp\", expect = \"(\""),
            "d.toml:3:34: service[0].check.expect: expected a regular expression: regex parse error: ( ^ error: unclosed group",
        ),
        (
            with_check("interval = \"1ms\""),
            "d.toml:3:22: service[0].check.interval: expected at least 10ms",
        ),
        (
            with_check("rise = 0"),
            "d.toml:3:18: service[0].check.rise: expected a number of consecutive checks from 1 to 1000, not 0",
        ),
        (
            with_check("init_state = \"maybe\""),
            "d.toml:3:24: service[0].check.init_state: expected \"up\", \"fully-up\", \"down\" or \"fully-down\", not \"maybe\"",
        ),
        (
            format!("[[service]]\naddress = \"10.0.0.100:53\"\nprotocol = \"udp\"\n{REAL}"),
            "d.toml:1:1: service[0].check: a UDP service needs a check with an explicit type (udp, dns, external, on or off); a TCP connect cannot test it",
        ),
        (
            "[daemon]\nmetrics = \"localhost:9410\"\n".into(),
            "d.toml:2:11: daemon.metrics: expected an address and port to serve metrics on, like \"127.0.0.1:9410\", not \"localhost:9410\"",
        ),
        (
            "[daemon]\njitter = 0.9\n".into(),
            "d.toml:2:10: daemon.jitter: expected a fraction from 0.0 to 0.5",
        ),
        (
            "[daemon]\nnotify = 5\n".into(),
            "d.toml:2:10: daemon.notify: expected a command: a string (run by /bin/sh -c) or a non-empty array of strings (program and arguments)",
        ),
        (
            "[check]\ntype = \"http\"\n".into(),
            "d.toml:2:1: check.type: unknown field `type`, expected one of `interval`, `timeout`, `rise`, `fall`, `fastinter`, `downinter`, `init_state`",
        ),
        (
            "[[service]]\naddress = \"10.0.0.100:0\"\n[[service.real]]\naddress = \"10.1.0.11\"\n"
                .into(),
            "d.toml:1:1: service[0].real[0].check_port: the service covers every port (port 0): a check needs check.port or the real's check_port",
        ),
    ];
    let mut failed = Vec::new();
    for (src, want) in &cases {
        let got = errors(src);
        if got != *want {
            failed.push(format!("file:\n{src}\nwant: {want}\n got: {got}\n"));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} cases:\n{}",
        failed.len(),
        cases.len(),
        failed.join("\n")
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let e = parse(
        Path::new("d.toml"),
        "[[service]]\naddress = \"10.0.0.100:80\"\nscheduler = \"lc\"\non_down = \"x\"\n[[service.real]]\naddress = \"nowhere\"\n",
    )
    .unwrap_err();
    let lines: Vec<usize> = e.problems.iter().map(|p| p.line).collect();
    assert_eq!(lines, [3, 4, 6], "{e}");
}

#[test]
fn the_annotated_example_is_valid() {
    let path = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/director.toml"
    ));
    let c = load(path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.services.len(), 6);
    let web6 = &c.services[5];
    assert_eq!(web6.label(), "tcp/[2001:db8::100]:80");
    assert_eq!(web6.reals[2].spec.method, Method::Tunnel);
    assert_eq!(
        web6.spec.persistence.unwrap().netmask,
        "ffff:ffff:ffff:ffff::".parse::<IpAddr>().unwrap()
    );
    assert_eq!(c.daemon.metrics, Some("127.0.0.1:9410".parse().unwrap()));
    let web = &c.services[0];
    assert_eq!(web.name.as_deref(), Some("web"));
    assert_eq!(web.spec.scheduler, Scheduler::WeightedRoundRobin);
    assert_eq!(web.slowstart, Duration::from_secs(30));
    assert_eq!(
        web.reals[2].check_target(&web.check),
        "10.1.0.13:8080".parse().unwrap()
    );
    assert_eq!(web.fallback.unwrap().port, 80);
    match &web.check.kind {
        CheckKind::Http(h) => {
            assert_eq!(h.status, StatusSet(vec![(200, 299)]));
            assert_eq!(h.host.as_deref(), Some("www.example.com"));
        }
        k => panic!("{k:?}"),
    }
    assert_eq!(web.check.interval, Duration::from_secs(2), "from [check]");
    let shop = &c.services[1];
    assert_eq!(shop.reals[0].spec.port, 8443);
    assert_eq!(shop.on_down, OnDown::Remove);
    assert_eq!(shop.spec.persistence.unwrap().timeout_s, 300);
    assert_eq!(shop.check.interval, Duration::from_secs(5));
    assert_eq!(shop.check.rise, 2, "from [check]");
    assert!(matches!(&c.services[4].check.kind, CheckKind::External(e) if e.dynamic));
}

#[test]
fn tunnel_reals_carry_their_encapsulation() {
    let src = format!(
        "{SVC}method = \"tun\"\n[[service.real]]\naddress = \"10.1.0.11\"\ntun_type = \"gue\"\ntun_port = 6080\ntun_csum = \"csum\"\n[[service.real]]\naddress = \"10.1.0.12\"\ntun_type = \"gre\"\n[[service.real]]\naddress = \"10.1.0.13\"\n"
    );
    let c = parse(Path::new("d.toml"), &src).unwrap_or_else(|e| panic!("{e}"));
    let t: Vec<_> = c.services[0].reals.iter().map(|r| r.spec.tunnel).collect();
    use director_common::real::TunType;
    use director_control::model::{TunCsum, Tunnel};
    assert_eq!(
        t,
        [
            Tunnel {
                kind: TunType::Gue,
                port: 6080,
                csum: TunCsum::Csum
            },
            Tunnel {
                kind: TunType::Gre,
                port: 0,
                csum: TunCsum::NoCsum
            },
            Tunnel::default(),
        ]
    );
}

#[test]
fn durations() {
    assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
    assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
    assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
    assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
    assert_eq!(parse_duration("10"), None, "a string needs a unit");
    assert_eq!(parse_duration("-1s"), None);
    assert_eq!(parse_duration("s"), None);
}

/// IPv6 services with IPv6 reals in every form, reals of the other family by tunnel (both
/// ways), a fallback of the other family by tunnel, and a persistence prefix.
#[test]
fn ipv6_services_and_mixed_family_tunnel_reals_parse() {
    let c = parse(
        Path::new("d.toml"),
        r#"
[[service]]
address = "[2001:db8::100]:80"
persistent = 300
persistent_netmask = "64"
check = { type = "http", path = "/health" }
fallback = { address = "10.9.0.1", method = "tunnel" }
[[service.real]]
address = "2001:db8::11"
[[service.real]]
address = "[2001:db8::12]:80"
weight = 2
[[service.real]]
address = "10.1.0.13"
method = "tunnel"
[[service.real]]
address = "[2001:db8::14]:8080"
method = "nat"
check_address = "2001:db8::99"

[[service]]
address = "10.0.0.100:53"
protocol = "udp"
method = "tunnel"
persistent = 60
check = { type = "dns", name = "example.com" }
fallback = { address = "[2001:db8::fb]:53" }
[[service.real]]
address = "2001:db8::21"
"#,
    )
    .unwrap();
    let web = &c.services[0];
    assert_eq!(web.label(), "tcp/[2001:db8::100]:80");
    let pers = web.spec.persistence.unwrap();
    assert_eq!(pers.timeout_s, 300);
    assert_eq!(
        pers.netmask,
        "ffff:ffff:ffff:ffff::".parse::<IpAddr>().unwrap()
    );
    let reals = real_rows(web);
    assert_eq!(
        reals,
        [
            ("[2001:db8::11]:80".into(), Method::Route, 1),
            ("[2001:db8::12]:80".into(), Method::Route, 2),
            ("10.1.0.13:80".into(), Method::Tunnel, 1),
            ("[2001:db8::14]:8080".into(), Method::Masq, 1),
        ]
    );
    assert_eq!(
        web.reals[3].check_addr,
        Some("2001:db8::99".parse::<IpAddr>().unwrap())
    );
    let fb = web.fallback.unwrap();
    assert_eq!(
        (fb.addr, fb.port, fb.method),
        ("10.9.0.1".parse().unwrap(), 80, Method::Tunnel)
    );

    let dns = &c.services[1];
    assert_eq!(dns.label(), "udp/10.0.0.100:53");
    // An IPv4 service's persistence keeps the whole address by default.
    assert_eq!(
        dns.spec.persistence.unwrap().netmask,
        "255.255.255.255".parse::<IpAddr>().unwrap()
    );
    assert_eq!(
        dns.reals[0].spec.addr,
        "2001:db8::21".parse::<IpAddr>().unwrap()
    );
    assert_eq!(
        dns.fallback.unwrap().addr,
        "2001:db8::fb".parse::<IpAddr>().unwrap()
    );

    // The full prefix and the "/64" spelling.
    for (mask, bits) in [("128", 128), ("/64", 64), ("1", 1)] {
        let c = parse(
            Path::new("d.toml"),
            &format!(
                "[[service]]\naddress = \"[fd00::1]:80\"\npersistent = 60\npersistent_netmask = \"{mask}\"\n[[service.real]]\naddress = \"fd00::11\"\n"
            ),
        )
        .unwrap();
        let IpAddr::V6(m) = c.services[0].spec.persistence.unwrap().netmask else {
            panic!("an IPv6 mask for an IPv6 service");
        };
        assert_eq!(m.to_bits().leading_ones(), bits, "{mask}");
        assert_eq!(m.to_bits().count_ones(), bits, "{mask}");
    }
}
