//! The `director` binary's ipvsadm command line, as an operator (or ldirectord) drives
//! it: attached and pinned in a lab namespace, configured with ipvsadm syntax, real
//! traffic through the VIP, listings checked against what happened.
//!
//! Every test builds its own lab (uniquely named namespaces, removed on drop) and keeps
//! the director's pinned state under the lab's bpffs directory; a guard runs
//! `director detach` before the lab goes, also when the test fails.

use std::{
    collections::BTreeMap,
    ffi::OsStr,
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    os::unix::process::ExitStatusExt as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use crate::support::director_bin;
use director_control::{Datapath, ServiceAddr, state::StateOptions};
use director_tests::{
    lab::{Endpoint, Host, Lab, Topology, http_get, tcp_stream, wait_until},
    lvs::{self, CLIENT, DIRECTOR_FRONT as FRONT, VIP_DR as VIP, real_addr},
};
use regex::Regex;

const TIMEOUT: Duration = Duration::from_secs(5);

fn ip(a: Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

fn nsenter() -> &'static str {
    ["/usr/bin/nsenter", "/bin/nsenter", "/usr/sbin/nsenter"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("nsenter (util-linux) is needed")
}

/// A lab with the director attached through the binary (pinned under the lab's bpffs
/// directory). Dropping it detaches, then removes the lab.
pub(super) struct Attached {
    /// `pass` on the bridge ports the director sends into; detached before the lab goes.
    _helpers: Option<Datapath>,
    lab: Lab,
    pub(super) state: PathBuf,
}

impl Drop for Attached {
    fn drop(&mut self) {
        // Never panic here (it may run while a failed test unwinds).
        match self.run_in(&["detach"], None, &[]) {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "director detach failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("director detach: {e}"),
        }
    }
}

/// What a command printed, and how it ended.
pub(super) struct Run {
    pub(super) code: i32,
    pub(super) stdout: String,
    pub(super) stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Self {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Attached {
    /// The standard director lab (`lvs::topology`) with 3 reals: the VIP is its DR VIP,
    /// the reals serve HTTP on 80 and TCP echo on 7.
    fn full() -> Self {
        let lab = Lab::build(&lvs::topology(3)).expect("lab");
        let mut helpers = Datapath::load_helpers().expect("helper programs");
        lvs::attach_bridge_pass(&lab, &mut helpers).expect("pass on the bridge ports");
        let a = Attached {
            state: lab.bpffs_dir().join("state"),
            _helpers: Some(helpers),
            lab,
        };
        a.ok(&[
            "attach",
            "eth0",
            "eth1",
            "--conn-table",
            "65536",
            "--maglev-size",
            "1021",
        ]);
        a
    }

    /// client ── eth0 director: enough for the command line alone. `attach_args` are
    /// extra `director attach` arguments.
    pub(super) fn minimal(attach_args: &[&str]) -> Self {
        let topo = Topology::new()
            .host(Host::new("client"))
            .host(Host::new("director"))
            .veth(
                Endpoint::new("client", "eth0").addr(ip(CLIENT), 24),
                Endpoint::new("director", "eth0")
                    .addr(ip(FRONT), 24)
                    .addr(ip(VIP), 32),
            );
        let lab = Lab::build(&topo).expect("lab");
        let a = Attached {
            state: lab.bpffs_dir().join("state"),
            _helpers: None,
            lab,
        };
        let mut args = vec!["attach", "eth0", "--conn-table", "4096"];
        args.extend_from_slice(attach_args);
        a.ok(&args);
        a
    }

    /// `director --bpffs STATE ARGS` in the director's namespace (nsenter --net keeps
    /// /sys/fs/bpf), stdin piped.
    fn command<S: AsRef<OsStr>>(&self, args: &[S], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(nsenter());
        cmd.arg(format!(
            "--net={}",
            self.lab.ns("director").path().display()
        ))
        .arg("--")
        .arg(director_bin())
        .arg("--bpffs")
        .arg(&self.state)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        cmd
    }

    /// [`Attached::command`] run to its end, with `input` on stdin.
    fn run_in<S: AsRef<OsStr>>(
        &self,
        args: &[S],
        input: Option<&[u8]>,
        env: &[(&str, &str)],
    ) -> std::io::Result<Output> {
        let mut child = self.command(args, env).spawn()?;
        let mut stdin = child.stdin.take().expect("piped");
        if let Some(bytes) = input {
            stdin.write_all(bytes)?;
        }
        drop(stdin);
        child.wait_with_output()
    }

    pub(super) fn run(&self, args: &[&str]) -> Run {
        self.run_in(args, None, &[])
            .expect("running director")
            .into()
    }

    pub(super) fn run_stdin(&self, args: &[&str], input: &str) -> Run {
        self.run_in(args, Some(input.as_bytes()), &[])
            .expect("running director")
            .into()
    }

    /// Run, expect exit 0, return stdout.
    pub(super) fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_eq!(
            r.code, 0,
            "director {args:?} failed: {}{}",
            r.stdout, r.stderr
        );
        r.stdout
    }

    pub(super) fn save(&self) -> String {
        self.ok(&["-S", "-n"])
    }

    pub(super) fn control(&self) -> director_control::Control {
        StateOptions {
            bpffs: Some(self.state.clone()),
        }
        .open_control()
        .expect("the pinned maps")
    }
}

/// ipvsadm's lines, split on white space (layout is checked separately).
fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// `-L -n` real-server lines of one service: address:port -> (forward, weight, active, inactive).
fn reals_of(listing: &str, service_line_start: &str) -> BTreeMap<String, (String, u32, u64, u64)> {
    let mut out = BTreeMap::new();
    let mut inside = false;
    for line in listing.lines() {
        if !line.starts_with("  ->") {
            inside = line.starts_with(service_line_start);
            continue;
        }
        if inside && !line.starts_with("  -> RemoteAddress") {
            let w = words(line);
            out.insert(
                w[1].to_owned(),
                (
                    w[2].to_owned(),
                    w[3].parse().unwrap(),
                    w[4].parse().unwrap(),
                    w[5].parse().unwrap(),
                ),
            );
        }
    }
    out
}

#[test]
fn a_dr_service_configured_with_ipvsadm_syntax_carries_traffic_and_lists_it() {
    director_tests::require_root();
    let a = Attached::full();
    let vip80 = format!("{VIP}:80");
    let vip7 = format!("{VIP}:7");
    a.ok(&["-A", "-t", &vip80, "-s", "wrr"]);
    a.ok(&["-A", "-t", &vip7, "-s", "rr"]);
    for n in 1..=3 {
        a.ok(&[
            "-a",
            "-t",
            &vip80,
            "-r",
            &format!("{}:80", real_addr(n)),
            "-g",
            "-w",
            "1",
        ]);
        a.ok(&["-a", "-t", &vip7, "-r", &real_addr(n).to_string(), "-g"]);
    }

    // Traffic through the VIP: every real answers.
    let client = a.lab.ns("client");
    let mut answered = std::collections::BTreeSet::new();
    for i in 0..9 {
        let body = http_get(client, &format!("http://{VIP}/"), TIMEOUT)
            .unwrap_or_else(|e| panic!("HTTP request {i} through the VIP: {e:#}"));
        answered.insert(body.trim().to_owned());
    }
    assert_eq!(
        answered.len(),
        3,
        "wrr with equal weights reaches every real: {answered:?}"
    );
    let mut stream = tcp_stream(client, SocketAddr::new(ip(VIP), 7)).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.write_all(b"ping\n").unwrap();
    let mut buf = [0u8; 5];
    stream.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping\n");
    let stream_port = stream.local_addr().unwrap().port();

    // -L -n: the layout, and ActiveConn / InActConn from the connection table: the
    // nine closed HTTP connections are inactive, the open echo stream is active.
    let mut listing = String::new();
    wait_until(
        TIMEOUT,
        "-L -n to count 9 inactive HTTP and 1 active echo connection",
        || {
            listing = a.ok(&["-L", "-n"]);
            let http = reals_of(&listing, &format!("TCP  {vip80} "));
            let echo = reals_of(&listing, &format!("TCP  {vip7} "));
            http.values().map(|r| r.3).sum::<u64>() == 9
                && http.values().map(|r| r.2).sum::<u64>() == 0
                && echo.values().map(|r| r.2).sum::<u64>() == 1
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{listing}"));
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines[0], "IP Virtual Server version 1.2.1 (size=65536)");
    assert_eq!(lines[1], "Prot LocalAddress:Port Scheduler Flags");
    assert_eq!(
        lines[2],
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn"
    );
    assert_eq!(lines[3], "TCP  10.0.0.100:7 rr");
    assert_eq!(lines[7], "TCP  10.0.0.100:80 wrr");
    // "  -> %-28s %-7s %-6d %-10u %-10u": single-digit counts here.
    let real_line =
        Regex::new(r"^  -> 10\.1\.0\.1[123]:(7 {18}|80 {17})Route   1      \d {10}\d {9}$")
            .unwrap();
    for l in [&lines[4..7], &lines[8..11]].concat() {
        assert!(real_line.is_match(l), "real line layout: {l:?}");
    }
    assert_eq!(lines.len(), 11, "{listing}");

    // `director list --json` reads the same counts.
    let json: serde_json::Value = serde_json::from_str(&a.ok(&["list", "--json"])).unwrap();
    assert_eq!(json["version"], 1);
    let http_json = &json["services"][1];
    assert_eq!(
        (http_json["port"].as_u64(), http_json["scheduler"].as_str()),
        (Some(80), Some("wrr"))
    );
    let inactive: u64 = http_json["reals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["inactive_conns"].as_u64().unwrap())
        .sum();
    assert_eq!(inactive, 9);
    assert!(
        a.ok(&["list"])
            .contains("  10.1.0.11:80  route   1       up")
    );

    // --stats: nine connections in, packets in; the reals add up to the service.
    let stats = a.ok(&["-L", "-n", "--stats"]);
    let svc = stats
        .lines()
        .find(|l| l.starts_with("TCP  10.0.0.100:80 "))
        .unwrap();
    let w = words(svc);
    assert_eq!(w[2], "9", "Conns: {svc}");
    assert!(w[3].parse::<u64>().unwrap() >= 9 * 3, "InPkts: {svc}");
    let reals = reals_of(
        &stats.replace("  -> RemoteAddress:Port\n", ""),
        "TCP  10.0.0.100:80 ",
    );
    assert_eq!(reals.len(), 3, "{stats}");
    assert!(stats.contains(
        "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n"
    ));

    // -c: the echo stream's entry, ESTABLISHED, with the client's port; the HTTP ones.
    let conns = a.ok(&["-L", "-n", "-c"]);
    assert!(conns.starts_with("IPVS connection entries\npro expire state       source             virtual            destination\n"), "{conns}");
    let echo_line = Regex::new(&format!(
        r"(?m)^TCP \d\d:\d\d  ESTABLISHED 10\.0\.0\.2:{stream_port} +10\.0\.0\.100:7 +10\.1\.0\.1[123]:7$"
    ))
    .unwrap();
    assert!(echo_line.is_match(&conns), "{conns}");
    let http_lines = conns
        .lines()
        .filter(|l| l.contains(" 10.0.0.100:80 "))
        .count();
    assert_eq!(http_lines, 9, "{conns}");

    // --timeout and --set.
    assert_eq!(
        a.ok(&["-L", "--timeout"]),
        "Timeout (tcp tcpfin udp): 900 120 300\n"
    );
    a.ok(&["--set", "1000", "0", "200"]);
    assert_eq!(
        a.ok(&["-L", "--timeout"]),
        "Timeout (tcp tcpfin udp): 1000 120 200\n"
    );

    // --rate prints its own columns (measured over a second by the CLI).
    let rate = a.ok(&["-L", "-n", "--rate"]);
    assert!(
        rate.contains(
            "Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS\n"
        ),
        "{rate}"
    );

    // -Z zeroes the counters, not the configuration.
    let before = a.save();
    a.ok(&["-Z"]);
    let stats = a.ok(&["-L", "-n", "--stats", "-t", &vip80]);
    assert_eq!(words(stats.lines().nth(2).unwrap())[2], "0", "{stats}");
    assert_eq!(a.save(), before);

    // status: both links pinned, the VIP is local; a service on a VIP no interface has
    // gets a warning.
    let status = a.ok(&["status"]);
    assert!(
        status.contains("state: ") && status.contains("(attached)"),
        "{status}"
    );
    for ifname in ["eth0", "eth1"] {
        assert!(
            Regex::new(&format!(
                r"(?m)^  {ifname}  link \d+  program \d+  tag [0-9a-f]{{16}}  native$"
            ))
            .unwrap()
            .is_match(&status),
            "{status}"
        );
    }
    assert!(
        Regex::new(
            r"of 65536 \(IPv6: 0 of 65536\)\nMaglev table: 1021 entries per service\nscheduling fingerprint: [0-9a-f]{16} \(equal on directors that send every flow to the same real\)\npersistence templates: at most 65536\nflood limit: 50000 new flows/s per CPU\nvirtual services: 2 of 256, real servers: 6 of 16384\n"
        )
        .unwrap()
        .is_match(&status),
        "{status}"
    );
    assert!(!status.contains("warning"), "{status}");
    a.ok(&["-A", "-t", "10.0.0.200:80"]);
    let status = a.ok(&["status"]);
    assert!(
        status.contains("warning: VIP 10.0.0.200 not configured on any interface: announce it (ip addr add 10.0.0.200/32 dev eth0) or let keepalived do so"),
        "{status}"
    );
    drop(stream);
}

/// Services of every shape the director supports.
const CONFIG: &[&str] = &[
    "-A -t 10.0.0.100:80 -s wrr",
    "-a -t 10.0.0.100:80 -r 10.1.0.11:80 -g -w 3",
    "-a -t 10.0.0.100:80 -r 10.1.0.12 -m -w 1",
    "-a -t 10.0.0.100:80 -r 10.1.0.13:8080 -m -w 0",
    "-A -u 10.0.0.100:53 -s rr",
    "-a -u 10.0.0.100:53 -r 10.1.0.11 -i -w 2",
    "-A -t 10.0.0.101:0 -s sh -b sh-port -p 600 -M 255.255.255.0",
    "-a -t 10.0.0.101:0 -r 10.1.0.12 -g",
    "-A -t 10.0.0.102:443 -s mh -p",
    "-a -t 10.0.0.102:443 -r 10.1.0.13:443 -g -w 65535",
    "-A -t 10.0.0.103:8443",
];

pub(super) fn configure(a: &Attached, lines: &[&str]) {
    for line in lines {
        let args: Vec<&str> = line.split_whitespace().collect();
        a.ok(&args);
    }
}

#[test]
fn save_then_clear_then_restore_gives_back_the_same_table() {
    director_tests::require_root();
    let a = Attached::minimal(&[]);
    configure(&a, CONFIG);
    let saved = a.save();
    assert_eq!(
        saved,
        "\
-A -t 10.0.0.100:80 -s wrr
-a -t 10.0.0.100:80 -r 10.1.0.11:80 -g -w 3
-a -t 10.0.0.100:80 -r 10.1.0.12:80 -m -w 1
-a -t 10.0.0.100:80 -r 10.1.0.13:8080 -m -w 0
-A -t 10.0.0.101:0 -s sh -p 600 -M 255.255.255.0 -b sh-port
-a -t 10.0.0.101:0 -r 10.1.0.12:0 -g -w 1
-A -t 10.0.0.102:443 -s mh -p 360
-a -t 10.0.0.102:443 -r 10.1.0.13:443 -g -w 65535
-A -t 10.0.0.103:8443 -s mh -b mh-port
-A -u 10.0.0.100:53 -s rr
-a -u 10.0.0.100:53 -r 10.1.0.11:53 -i -w 2 --tun-type ipip
"
    );
    let named = a.ok(&["-S"]);
    assert!(
        named.contains(
            "-A -t 10.0.0.100:http -s wrr\n-a -t 10.0.0.100:http -r 10.1.0.11:http -g -w 3\n"
        ),
        "{named}"
    );

    for input in [&saved, &named] {
        a.ok(&["-C"]);
        assert_eq!(a.save(), "");
        let listing = a.ok(&["-L", "-n"]);
        assert_eq!(
            listing.lines().count(),
            3,
            "header and titles only: {listing}"
        );
        let r = a.run_stdin(&["-R"], input);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert_eq!(a.save(), saved, "restored from:\n{input}");
    }
}

/// (arguments, first line of stderr, exit code)
const BAD: &[(&str, &str, i32)] = &[
    ("-A -t 10.0.0.100:80 -s rr", "Service already exists", 255),
    (
        "-a -t 10.0.0.100:80 -r 10.1.0.11",
        "Destination already exists",
        255,
    ),
    (
        "-a -t 10.0.0.99:80 -r 10.1.0.11",
        "Service not defined",
        255,
    ),
    (
        "-e -t 10.0.0.100:80 -r 10.1.0.99 -w 5",
        "No such destination",
        255,
    ),
    (
        "-d -t 10.0.0.100:80 -r 10.1.0.99",
        "No such destination",
        255,
    ),
    ("-D -t 10.0.0.99:80", "No such service", 255),
    ("-E -t 10.0.0.99:80 -s rr", "No such service", 255),
    ("-Z -t 10.0.0.99:80", "No such service", 255),
    ("-L -n -t 10.0.0.99:80", "No such service", 1),
    (
        "-A -t 10.0.0.300:80",
        "illegal virtual server address[:port] specified",
        2,
    ),
    (
        "-A -t 10.0.0.101:99999",
        "illegal virtual server address[:port] specified",
        2,
    ),
    (
        "-A -t lb.example.com:80",
        "illegal virtual server address[:port] specified (host names are not looked up: give an IP address)",
        2,
    ),
    (
        "-a -t 10.0.0.100:80 -r 10.1.0.12 -w -1",
        "illegal weight specified",
        2,
    ),
    (
        "-a -t 10.0.0.100:80 -r 10.1.0.12 -w 65536",
        "illegal weight specified",
        2,
    ),
    (
        "-A -t 10.0.0.101:80 -s wlc",
        "Scheduler or persistence engine not found",
        255,
    ),
    (
        "-A -t 10.0.0.101:80 -s roundrobin",
        "Scheduler or persistence engine not found",
        255,
    ),
    (
        "-A -t 10.0.0.101:80 -s rr -b sh-port",
        "incompatible scheduler flag `sh-port'",
        2,
    ),
    ("-A -t 10.0.0.101:80 -D", "multiple commands specified", 2),
    (
        "-a -t 10.0.0.100:80 -r 10.1.0.12 -g -m",
        "multiple 'forwarding-method' options specified",
        2,
    ),
    (
        "-A -t 10.0.0.101:80 -r 10.1.0.12",
        "Illegal 'real-server' option with the 'add-service' command",
        2,
    ),
    (
        "-a -t 10.0.0.100:80",
        "You need to supply the 'real-server' option for the 'add-server' command",
        2,
    ),
    (
        "-A -t 10.0.0.101:0",
        "Zero port specified for non-persistent service",
        2,
    ),
    (
        "-A -t 10.0.0.101:80 -p 0",
        "invalid timeout value `0' specified",
        2,
    ),
    (
        "-a -t 10.0.0.100:80 -r 10.1.0.12 -x 100 -y 10",
        "connection thresholds are not supported by the director: -x and -y accept only 0 (no threshold)",
        255,
    ),
    (
        "-A -f 1",
        "firewall-mark virtual services (-f) are not supported by the director",
        255,
    ),
    (
        "-A --sctp-service 10.0.0.101:80",
        "SCTP virtual services are not supported by the director",
        255,
    ),
    (
        "-A -u 10.0.0.101:53 -o",
        "one-packet scheduling (-o, --ops) is not supported by the director",
        255,
    ),
    (
        "-A -t 10.0.0.101:80 --bogus",
        "--bogus: unknown option",
        255,
    ),
    ("--bogus", "Try `", 255),
    (
        "--start-daemon master",
        "the connection synchronisation daemon is not supported by the director yet",
        255,
    ),
    ("--set 900 120", "--set option requires 3 timeout values", 2),
];

#[test]
fn bad_input_gets_ipvsadms_message_and_exit_code_and_changes_nothing() {
    director_tests::require_root();
    let a = Attached::minimal(&[]);
    configure(&a, &CONFIG[..4]);
    let before = a.save();
    let timeouts = a.ok(&["-L", "--timeout"]);
    for (args, msg, code) in BAD {
        let argv: Vec<&str> = args.split_whitespace().collect();
        let r = a.run(&argv);
        assert_eq!(r.code, *code, "{args}: {}", r.stderr);
        assert!(r.stderr.starts_with(msg), "{args}: stderr {:?}", r.stderr);
        assert_eq!(r.stdout, "", "{args}");
        assert_eq!(a.save(), before, "{args} changed the table");
        assert_eq!(a.ok(&["-L", "--timeout"]), timeouts, "{args}");
    }

    // -R applies line by line and stops at the first bad line, naming it.
    let r = a.run_stdin(
        &["-R"],
        "-A -t 10.0.0.110:80 -s rr\n\n-a -t 10.0.0.110:80 -r 10.1.0.11\n-A -t 10.0.0.110:80\n-A -t 10.0.0.111:80\n",
    );
    assert_eq!(r.code, 255);
    assert_eq!(
        r.stderr.lines().take(2).collect::<Vec<_>>(),
        [
            "Service already exists",
            "ipvsadm: -R stopped at line 4 (-A -t 10.0.0.110:80): the lines before it are applied, it and the lines after it are not"
        ]
        .map(|s| s.replace("ipvsadm", &director_bin().display().to_string())),
        "{}",
        r.stderr
    );
    let after = a.save();
    assert_eq!(
        after,
        format!("{before}-A -t 10.0.0.110:80 -s rr\n-a -t 10.0.0.110:80 -r 10.1.0.11:80 -g -w 1\n")
    );
}

/// ldirectord's regular expressions for `ipvsadm -L -n` (ld_read_ipvsadm), ported from
/// its Perl.
struct Ldirectord {
    service_persistent_mask: Regex,
    service_persistent: Regex,
    service: Regex,
    real: Regex,
}

impl Ldirectord {
    fn new() -> Self {
        let svc = r"^(\w+)\s+(\d+\.\d+\.\d+\.\d+:\d+|\[[0-9A-Fa-f:]+\]:\d+|\d+)( IPv6)?\s+(\w+)";
        Ldirectord {
            service_persistent_mask: Regex::new(&format!(
                r"{svc}\s+persistent\s+(\d+)\s+mask\s+(.*)"
            ))
            .unwrap(),
            service_persistent: Regex::new(&format!(r"{svc}\s+persistent\s+(\d+)")).unwrap(),
            service: Regex::new(svc).unwrap(),
            real: Regex::new(
                r"^  ->\s+(\d+\.\d+\.\d+\.\d+:\d+|\[[0-9A-Fa-f:]+\]:\d+)\s+(\w+)\s+(\d+)",
            )
            .unwrap(),
        }
    }

    /// "VIP:PORT proto" -> (scheduler, persistent, netmask, {real -> (forward, weight)}),
    /// skipping the first three lines as ldirectord does.
    #[allow(clippy::type_complexity)]
    fn read(
        &self,
        out: &str,
    ) -> BTreeMap<
        String,
        (
            String,
            Option<String>,
            Option<String>,
            BTreeMap<String, (String, u32)>,
        ),
    > {
        let mut table = BTreeMap::new();
        let mut current: Option<String> = None;
        for line in out.lines().skip(3) {
            if let Some(c) = self.service_persistent_mask.captures(line) {
                let key = format!("{} {}", &c[2], c[1].to_lowercase());
                table.insert(
                    key.clone(),
                    (
                        c[4].to_owned(),
                        Some(c[5].to_owned()),
                        Some(c[6].to_owned()),
                        BTreeMap::new(),
                    ),
                );
                current = Some(key);
            } else if let Some(c) = self.service_persistent.captures(line) {
                let key = format!("{} {}", &c[2], c[1].to_lowercase());
                table.insert(
                    key.clone(),
                    (
                        c[4].to_owned(),
                        Some(c[5].to_owned()),
                        None,
                        BTreeMap::new(),
                    ),
                );
                current = Some(key);
            } else if let Some(c) = self.service.captures(line) {
                let key = format!("{} {}", &c[2], c[1].to_lowercase());
                table.insert(key.clone(), (c[4].to_owned(), None, None, BTreeMap::new()));
                current = Some(key);
            } else if let Some(c) = self.real.captures(line) {
                let fwd = match &c[2] {
                    "Route" => "gate",
                    "Tunnel" => "ipip",
                    "Masq" => "masq",
                    other => panic!("unknown forward {other} in {line:?}"),
                };
                let svc = current
                    .as_ref()
                    .expect("a real server line inside a service");
                table
                    .get_mut(svc)
                    .unwrap()
                    .3
                    .insert(c[1].to_owned(), (fwd.to_owned(), c[3].parse().unwrap()));
            } else {
                panic!("ldirectord would not understand {line:?}");
            }
        }
        table
    }
}

/// A directory with a link named `ipvsadm` to the binary; removed on drop.
struct IpvsadmLink(PathBuf);

impl IpvsadmLink {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "director-cli-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink(director_bin(), dir.join("ipvsadm")).unwrap();
        IpvsadmLink(dir)
    }
}

impl Drop for IpvsadmLink {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn ldirectord_drives_the_ipvsadm_link_and_parses_its_listing() {
    director_tests::require_root();
    let a = Attached::minimal(&[]);
    let link = IpvsadmLink::new();
    let path = format!(
        "{}:{}",
        link.0.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let state = a.state.display().to_string();
    // As ldirectord runs it: `ipvsadm` found on PATH, state from the environment, in
    // the director's network namespace.
    let ipvsadm = |cmd: &str| -> String {
        let out = Command::new(nsenter())
            .arg(format!("--net={}", a.lab.ns("director").path().display()))
            .arg("--")
            .arg("ipvsadm")
            .args(cmd.split_whitespace())
            .env("PATH", &path)
            .env("DIRECTOR_BPFFS", &state)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ipvsadm {cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let ld = Ldirectord::new();
    let vip = format!("{VIP}:80");

    // ld_start: read the table, add the virtual service, bring the reals up.
    assert!(ld.read(&ipvsadm("-L -n")).is_empty());
    ipvsadm(&format!("-A -t {vip} -s wrr"));
    for n in 1..=2 {
        ipvsadm(&format!(
            "-a -t {vip} -r {}:80 -g -w 1 -x 0 -y 0",
            real_addr(n)
        ));
    }
    ipvsadm(&format!("-a -t {vip} -r {}:80 -g -w 2", real_addr(3)));
    let table = ld.read(&ipvsadm("-L -n"));
    let svc = &table[&format!("{vip} tcp")];
    assert_eq!((svc.0.as_str(), &svc.1, &svc.2), ("wrr", &None, &None));
    let want_reals: BTreeMap<String, (String, u32)> = [(1, 1), (2, 1), (3, 2)]
        .into_iter()
        .map(|(n, w)| (format!("{}:80", real_addr(n)), ("gate".to_owned(), w)))
        .collect();
    assert_eq!(svc.3, want_reals);

    // A check fails: quiescent (weight 0), then restored; both as ldirectord issues them.
    ipvsadm(&format!("-e -t {vip} -r {}:80 -g -w 0", real_addr(1)));
    assert_eq!(
        ld.read(&ipvsadm("-L -n"))[&format!("{vip} tcp")].3[&format!("{}:80", real_addr(1))],
        ("gate".to_owned(), 0)
    );
    let thresholds = ipvsadm("-L -n --thresholds");
    let real_line = Regex::new(r"^  -> (\S+):(\d+)\s+(\S+)\s+(\d+)").unwrap();
    let thr: Vec<_> = thresholds
        .lines()
        .filter_map(|l| real_line.captures(l))
        .collect();
    assert_eq!(thr.len(), 3, "{thresholds}");
    assert!(
        thr.iter().all(|c| &c[3] == "0" && &c[4] == "0"),
        "thresholds are 0: {thresholds}"
    );
    ipvsadm(&format!(
        "-e -t {vip} -r {}:80 -g -w 1 -x 0 -y 0",
        real_addr(1)
    ));
    assert_eq!(
        ld.read(&ipvsadm("-L -n"))[&format!("{vip} tcp")].3[&format!("{}:80", real_addr(1))],
        ("gate".to_owned(), 1)
    );

    // Not quiescent: the real is deleted.
    ipvsadm(&format!("-d -t {vip} -r {}:80", real_addr(2)));
    assert_eq!(ld.read(&ipvsadm("-L -n"))[&format!("{vip} tcp")].3.len(), 2);

    // A reload changes the service: persistence with a netmask.
    ipvsadm(&format!("-E -t {vip} -s rr -p 300 -M 255.255.255.0"));
    let table = ld.read(&ipvsadm("-L -n"));
    let svc = &table[&format!("{vip} tcp")];
    assert_eq!(
        (svc.0.as_str(), svc.1.as_deref(), svc.2.as_deref()),
        ("rr", Some("300"), Some("255.255.255.0"))
    );
    ipvsadm(&format!("-E -t {vip} -s wrr -p 300"));
    assert_eq!(
        ld.read(&ipvsadm("-L -n"))[&format!("{vip} tcp")]
            .1
            .as_deref(),
        Some("300")
    );
    // Without arguments, ipvsadm lists the table (names instead of numbers).
    assert!(ipvsadm("").contains(&format!("TCP  {VIP}:http wrr persistent 300\n")));

    // ld_stop: purge the virtual service.
    ipvsadm(&format!("-D -t {vip}"));
    assert!(ld.read(&ipvsadm("-L -n")).is_empty());
}

#[test]
fn attaching_again_upgrades_in_place_while_a_tcp_stream_flows() {
    director_tests::require_root();
    let a = Attached::full();
    let vip7 = format!("{VIP}:7");
    a.ok(&["-A", "-t", &vip7]);
    for n in 1..=3 {
        a.ok(&["-a", "-t", &vip7, "-r", &real_addr(n).to_string()]);
    }
    let program_ids = |status: &str| -> Vec<String> {
        Regex::new(r"(?m)^  eth[01]  link \d+  program (\d+)")
            .unwrap()
            .captures_iter(status)
            .map(|c| c[1].to_owned())
            .collect()
    };
    let before = program_ids(&a.ok(&["status"]));
    assert_eq!(before.len(), 2);

    let mut stream = tcp_stream(a.lab.ns("client"), SocketAddr::new(ip(VIP), 7)).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let rounds = Arc::new(AtomicU32::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let echo = {
        let (rounds, stop) = (rounds.clone(), stop.clone());
        std::thread::spawn(move || -> Result<(), String> {
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let msg = format!("round {i}\n");
                stream
                    .write_all(msg.as_bytes())
                    .map_err(|e| format!("round {i}: {e}"))?;
                let mut buf = vec![0u8; msg.len()];
                stream
                    .read_exact(&mut buf)
                    .map_err(|e| format!("round {i}: {e}"))?;
                if buf != msg.as_bytes() {
                    return Err(format!("round {i}: echoed {buf:?}"));
                }
                i += 1;
                rounds.store(i, Ordering::Relaxed);
            }
            Ok(())
        })
    };
    wait_until(TIMEOUT, "the stream to flow", || {
        rounds.load(Ordering::Relaxed) >= 20
    })
    .unwrap();
    a.ok(&["attach", "eth0", "eth1"]);
    let swapped_at = rounds.load(Ordering::Relaxed);
    let flowing = wait_until(
        TIMEOUT,
        "the stream to keep flowing after the upgrade",
        || rounds.load(Ordering::Relaxed) >= swapped_at + 50 || echo.is_finished(),
    );
    stop.store(true, Ordering::Relaxed);
    echo.join()
        .unwrap()
        .expect("the same connection echoes through the upgrade");
    flowing.unwrap();

    let after = program_ids(&a.ok(&["status"]));
    assert_eq!(after.len(), 2);
    assert!(
        before.iter().zip(&after).all(|(b, a)| b != a),
        "a new program is attached: {before:?} -> {after:?}"
    );
    // The configuration survived the swap too.
    assert!(
        a.save()
            .starts_with(&format!("-A -t {vip7} -s mh -b mh-port\n"))
    );
}

/// Services and reals in the table, as -S would count its lines.
fn saved_lines(c: &director_control::Control) -> usize {
    c.services()
        .unwrap()
        .iter()
        .map(|s| 1 + s.reals.len())
        .sum()
}

/// The newest service has a real in its slots but an empty active table: its first
/// `-a` has written the real and not yet switched the table (the middle of a line).
fn half_made(c: &director_control::Control) -> bool {
    let services = c.services().unwrap();
    services
        .last()
        .is_some_and(|s| s.reals.len() == 1 && c.active_table(&s.spec.addr).unwrap().is_empty())
}

/// Every real of every service is in its active table (weights here are all 1).
fn tables_complete(c: &director_control::Control) -> bool {
    c.services().unwrap().iter().all(|s| {
        let table = c.active_table(&s.spec.addr).unwrap();
        s.reals.iter().all(|r| table.contains(&r.id))
    })
}

#[test]
fn killing_a_restore_midway_leaves_each_line_applied_or_not() {
    director_tests::require_root();
    let a = Attached::minimal(&[]);
    let mut batch = Vec::new();
    for i in 0..60u16 {
        let svc = format!("{VIP}:{}", 1000 + i);
        batch.push(format!("-A -t {svc} -s mh -b mh-port"));
        for n in 1..=3 {
            batch.push(format!(
                "-a -t {svc} -r {}:{} -g -w 1",
                real_addr(n),
                1000 + i
            ));
        }
    }
    // The batch is written in the order -S prints, so the state after any prefix of it
    // saves as exactly that prefix.
    let lines = |from: usize| {
        batch[from..]
            .iter()
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    };
    let control = a.control();

    // Kill -R, resume it where it stopped, kill again..., until one kill has landed in
    // the middle of a line (a real written, its table not yet switched) and the next
    // writer has been seen completing that line. A line is in that state for a few
    // milliseconds, so it may take several tries; if the batch runs out first, it is
    // cleared and started again.
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut done = 0;
    let mut pending_repair = false;
    let mut repaired = false;
    while !repaired {
        assert!(
            Instant::now() < deadline,
            "no kill landed in the middle of a line in 240 s of tries; the checks held at every kill"
        );
        if done == batch.len() {
            a.ok(&["-C"]);
            done = 0;
        }
        let mut child = Command::new(nsenter())
            .arg(format!("--net={}", a.lab.ns("director").path().display()))
            .arg("--")
            .arg(director_bin())
            .arg("--bpffs")
            .arg(&a.state)
            .arg("-R")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(lines(done).as_bytes())
            .unwrap();
        let mut exited = false;
        if pending_repair {
            wait_until(
                Duration::from_secs(60),
                "the interrupted line to be completed",
                || {
                    exited = matches!(child.try_wait(), Ok(Some(_)));
                    exited || !half_made(&control)
                },
            )
            .unwrap();
        }
        wait_until(
            Duration::from_secs(60),
            "a line in progress, 4 more lines, or the end of the input",
            || {
                exited = exited || matches!(child.try_wait(), Ok(Some(_)));
                exited || half_made(&control) || saved_lines(&control) >= done + 4
            },
        )
        .unwrap();
        let _ = child.kill();
        let status = child.wait().unwrap();
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        if status.success() {
            // It got through the rest of the batch before the kill.
            assert_eq!(a.save(), lines(0));
        } else {
            assert_eq!(status.signal(), Some(9), "{stderr}");
        }
        if pending_repair {
            assert!(
                stderr.contains("the previous change was interrupted; completed it (0 orphaned real slots cleared, 1 service tables rebuilt)"),
                "the next writer completes the interrupted line: {stderr}"
            );
            repaired = true;
        }

        // -S shows a prefix of the batch: every line applied or not.
        let saved = a.save();
        let applied: Vec<&str> = saved.lines().collect();
        let m = applied.len();
        assert_eq!(
            applied,
            batch[..m].iter().map(String::as_str).collect::<Vec<_>>(),
            "not a prefix of the batch"
        );
        // Whatever the kill interrupted, no table points at a real not of its service.
        for svc in control.services().unwrap() {
            let ids: Vec<u32> = svc.reals.iter().map(|r| r.id).collect();
            for id in control.active_table(&svc.spec.addr).unwrap() {
                assert!(
                    ids.contains(&id),
                    "{:?}'s table points at real slot {id}, not one of {ids:?}",
                    svc.spec.addr
                );
            }
        }
        pending_repair = half_made(&control);
        done = m;
    }

    // Resuming once more completes the batch; every real is in its service's table.
    let r = a.run_stdin(&["-R"], &lines(done));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(a.save(), lines(0));
    assert!(tables_complete(&control));
    let marker = StateOptions {
        bpffs: Some(a.state.clone()),
    }
    .writer_marker()
    .unwrap();
    assert!(!marker.exists(), "{} left behind", marker.display());
}

#[test]
fn restoring_more_reals_than_the_old_limit_works_and_the_new_limit_is_named() {
    director_tests::require_root();
    // 450 services x 10 reals: 4,500 reals (the data path used to hold 4,095 in all).
    let a = Attached::minimal(&[
        "--max-services",
        "450",
        "--max-reals",
        "4500",
        // Room for an 11th real per service (100 entries per real).
        "--maglev-size",
        "2003",
    ]);
    let mut rules = String::new();
    for i in 0..450u32 {
        let svc = format!("10.100.{}.{}:80", i / 250, i % 250 + 1);
        rules.push_str(&format!("-A -t {svc} -s mh -b mh-port\n"));
        for n in 1..=10 {
            rules.push_str(&format!("-a -t {svc} -r {}:80 -g -w 1\n", real_addr(n)));
        }
    }
    let r = a.run_stdin(&["-R"], &rules);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(a.save(), rules);
    let status = a.ok(&["status"]);
    assert!(
        status.contains("virtual services: 450 of 450, real servers: 4500 of 4500\n"),
        "{status}"
    );
    let control = a.control();
    assert!(tables_complete(&control));

    // One more real is refused with the limit and how to raise it, and changes nothing.
    let r = a.run(&["-a", "-t", "10.100.0.1:80", "-r", "10.1.0.99:80"]);
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (
            255,
            "no free real slot: at most 4500 real servers in all (attach with a larger --max-reals)\n"
        )
    );
    assert_eq!(a.save(), rules);
    // The sizes are fixed while attached.
    let r = a.run(&["attach", "eth0", "--max-reals", "8000"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr
            .contains("--max-reals 8000 differs from the attached director's 4500"),
        "{}",
        r.stderr
    );
    // The connection table's size is read back from its buckets.
    let r = a.run(&["attach", "eth0", "--conn-table", "8192"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr
            .contains("--conn-table 8192 differs from the attached director's 4096"),
        "{}",
        r.stderr
    );
    a.ok(&["attach", "eth0", "--conn-table", "4096"]);

    // A removed real's slot goes to the next real (once its flows are purged).
    let first = ServiceAddr {
        proto: director_control::Protocol::Tcp,
        addr: "10.100.0.1".parse().unwrap(),
        port: 80,
    };
    let slot = control.service(&first).unwrap().reals[0].id;
    a.ok(&["-d", "-t", "10.100.0.1:80", "-r", &real_addr(1).to_string()]);
    a.ok(&["-a", "-t", "10.100.0.1:80", "-r", "10.1.0.99:80"]);
    let reals = control.service(&first).unwrap().reals;
    assert_eq!(reals.len(), 10);
    let added = reals
        .iter()
        .find(|r| r.spec.addr == IpAddr::V4(Ipv4Addr::new(10, 1, 0, 99)))
        .unwrap();
    assert_eq!(added.id, slot);
    assert!(tables_complete(&control));
}

/// A child process killed (and reaped) when the test ends, also when it fails.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Wait (bounded) for a child to exit.
fn exited(
    child: &mut std::process::Child,
    within: Duration,
    what: &str,
) -> std::process::ExitStatus {
    let mut status = None;
    wait_until(within, what, || {
        status = child.try_wait().expect("waiting for a child");
        status.is_some()
    })
    .unwrap();
    status.expect("set when the wait ended")
}

#[test]
fn arguments_and_restore_lines_that_are_not_utf8_are_refused_and_change_nothing() {
    director_tests::require_root();
    use std::os::unix::ffi::OsStrExt as _;
    let a = Attached::minimal(&[]);
    a.ok(&["-A", "-t", "10.0.0.100:80"]);
    let before = a.save();
    let bad = OsStr::from_bytes(b"10.1.0.11\xff");

    // ipvsadm syntax: a command-line error (exit 2) naming the argument.
    let args = [
        OsStr::new("-a"),
        OsStr::new("-t"),
        OsStr::new("10.0.0.100:80"),
        OsStr::new("-r"),
        bad,
    ];
    let r: Run = a.run_in(&args, None, &[]).unwrap().into();
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("argument 7 is not valid UTF-8: 10.1.0.11\u{fffd}"),
        "{}",
        r.stderr
    );
    // The director's own commands: clap's message, exit 2.
    let r: Run = a
        .run_in(&[OsStr::new("attach"), bad], None, &[])
        .unwrap()
        .into();
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("invalid UTF-8"), "{}", r.stderr);
    assert_eq!(a.save(), before);

    // -R: the line is named, the lines before it applied, it and those after it not.
    let input = b"-A -t 10.0.0.100:81\n-a -t 10.0.0.100:81 -r 10.1.0.1\xff\n-A -t 10.0.0.100:82\n";
    let r: Run = a.run_in(&["-R"], Some(input), &[]).unwrap().into();
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_eq!(
        r.stderr,
        format!(
            "the line is not valid UTF-8 (at byte 32)\n{}: -R stopped at line 2 (-a -t 10.0.0.100:81 -r 10.1.0.1\u{fffd}): the lines before it are applied, it and the lines after it are not\n",
            director_bin().display()
        )
    );
    assert_eq!(
        a.save(),
        format!("{before}-A -t 10.0.0.100:81 -s mh -b mh-port\n")
    );
}

#[test]
fn a_writer_is_not_held_up_by_another_resolving_an_unreachable_real() {
    director_tests::require_root();
    let a = Attached::minimal(&[]);
    a.ok(&["-A", "-t", "10.0.0.100:80"]);
    // On the director's own subnet, and nobody has it: ARP never answers. The first
    // writer waits for its entry for as long as it is allowed (far longer than the
    // test) unless the entry appears.
    let unreachable = "10.0.0.77";
    let mut first = Reaped(
        a.command(
            &["-a", "-t", "10.0.0.100:80", "-r", unreachable],
            &[("DIRECTOR_RESOLVE_WAIT", "600")],
        )
        .spawn()
        .unwrap(),
    );
    let control = a.control();
    let svc = ServiceAddr {
        proto: director_control::Protocol::Tcp,
        addr: ip(VIP),
        port: 80,
    };
    wait_until(
        Duration::from_secs(30),
        "the first writer's real in the maps",
        || {
            control.service(&svc).is_ok_and(|s| {
                s.reals
                    .iter()
                    .any(|r| r.spec.addr.to_string() == unreachable)
            })
        },
    )
    .unwrap();

    // The second writer completes while the first still waits for the neighbour entry.
    let mut second = Reaped(
        a.command(&["-A", "-t", "10.0.0.100:81"], &[])
            .spawn()
            .unwrap(),
    );
    let status = exited(&mut second.0, Duration::from_secs(60), "the second writer");
    assert!(status.success());
    assert!(
        first.0.try_wait().unwrap().is_none(),
        "the first writer ended before the second: it was not resolving any more"
    );
    assert!(a.save().contains("-A -t 10.0.0.100:81 "));

    // The entry appears: the first writer ends, without a warning.
    a.lab
        .ns("director")
        .exec_ok(&[
            "ip",
            "neigh",
            "replace",
            unreachable,
            "lladdr",
            "02:00:00:00:00:77",
            "dev",
            "eth0",
            "nud",
            "permanent",
        ])
        .unwrap();
    let status = exited(&mut first.0, Duration::from_secs(60), "the first writer");
    let mut stderr = String::new();
    first
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "{stderr}");
    assert_eq!(stderr, "");
}

#[test]
fn daemon_check_counts_the_slots_of_services_made_by_hand() {
    director_tests::require_root();
    let a = Attached::minimal(&["--max-services", "3", "--max-reals", "8"]);
    a.ok(&["-A", "-t", "10.0.0.100:80"]);
    a.ok(&["-a", "-t", "10.0.0.100:80", "-r", "10.0.0.11"]);
    a.ok(&["-A", "-t", "10.0.0.100:81"]);
    let dir = std::env::temp_dir().join(format!("director-check-{}", a.lab.id()));
    std::fs::create_dir_all(&dir).unwrap();
    struct Removed(PathBuf);
    impl Drop for Removed {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _removed = Removed(dir.clone());
    let file = dir.join("director.toml");
    let config = |ports: &[u16]| {
        let mut s = String::new();
        for p in ports {
            s.push_str(&format!(
                "[[service]]\naddress = \"10.0.0.100:{p}\"\n[[service.real]]\naddress = \"10.0.0.12\"\n"
            ));
        }
        std::fs::write(&file, s).unwrap();
    };
    let check = || {
        a.run(&[
            "daemon",
            "--check",
            file.to_str().unwrap(),
            "--run-dir",
            dir.join("run").to_str().unwrap(),
        ])
    };
    // Two services on their own fit 3 slots; with the two made by hand they do not.
    config(&[90, 91]);
    let r = check();
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains(
            "2 virtual services declared and 2 service slots held by services the daemon does not manage (made with the command line or another tool); the attached director holds at most 3 (director attach --max-services)"
        ) && r.stderr.contains("valid on its own, but the attached director would refuse it"),
        "{}",
        r.stderr
    );
    // A service made by hand that the file declares is the daemon's from then on: its
    // slot is not counted twice.
    config(&[80, 90]);
    let r = check();
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .ends_with("valid (2 services, 2 real servers); it fits the attached director\n"),
        "{}",
        r.stdout
    );
}

/// `director status`'s scheduling fingerprint.
fn fingerprint_of(a: &Attached) -> String {
    let status = a.ok(&["status"]);
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("scheduling fingerprint: "))
        .unwrap_or_else(|| panic!("no fingerprint in:\n{status}"));
    line.split_whitespace().next().unwrap().to_owned()
}

/// `director list --json`: the table size, the director's fingerprint, each service's.
fn listed_fingerprints(a: &Attached) -> (u64, String, Vec<String>) {
    let doc: serde_json::Value = serde_json::from_str(&a.ok(&["list", "--json"])).unwrap();
    (
        doc["maglev_size"].as_u64().unwrap(),
        doc["fingerprint"].as_str().unwrap().to_owned(),
        doc["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["fingerprint"].as_str().unwrap().to_owned())
            .collect(),
    )
}

#[test]
fn directors_that_schedule_alike_show_the_same_fingerprint() {
    director_tests::require_root();
    let a = Attached::minimal(&["--maglev-size", "16381", "--max-services", "4"]);
    let b = Attached::minimal(&["--maglev-size", "16381", "--max-services", "4"]);
    let c = Attached::minimal(&["--maglev-size", "65537", "--max-services", "4"]);
    let web = "10.0.0.100:80";
    let dns = "10.0.0.100:53";
    let r = |n: u8| real_addr(n).to_string();
    // The same services and reals, configured in other orders: other slot ids.
    for d in [&a, &c] {
        configure(
            d,
            &[
                &format!("-A -t {web}"),
                &format!("-a -t {web} -r {} -w 1", r(1)),
                &format!("-a -t {web} -r {} -w 2", r(2)),
                &format!("-a -t {web} -r {} -w 3", r(3)),
                &format!("-A -u {dns} -s sh"),
                &format!("-a -u {dns} -r {}", r(3)),
            ],
        );
    }
    configure(
        &b,
        &[
            &format!("-A -u {dns} -s sh"),
            &format!("-a -u {dns} -r {}", r(3)),
            &format!("-A -t {web}"),
            &format!("-a -t {web} -r {} -w 3", r(3)),
            &format!("-a -t {web} -r {} -w 1", r(1)),
            &format!("-a -t {web} -r {} -w 2", r(2)),
        ],
    );
    let (fa, fb, fc) = (fingerprint_of(&a), fingerprint_of(&b), fingerprint_of(&c));
    assert_eq!(fa, fb, "same reals, same weights, same table size");
    assert_ne!(fa, fc, "another table size sends most flows elsewhere");
    let (size_a, doc_a, services_a) = listed_fingerprints(&a);
    let (size_c, doc_c, services_c) = listed_fingerprints(&c);
    assert_eq!((size_a, size_c), (16381, 65537));
    assert_eq!(doc_a, fa);
    assert_eq!(listed_fingerprints(&b), (size_a, doc_a, services_a.clone()));
    assert_ne!(services_a, services_c);
    assert_ne!(doc_c, fa);

    // One weight differs: the fingerprint says so; set back, they agree again.
    a.ok(&["-e", "-t", web, "-r", &r(2), "-w", "5"]);
    assert_ne!(fingerprint_of(&a), fb);
    a.ok(&["-e", "-t", web, "-r", &r(2), "-w", "2"]);
    assert_eq!(fingerprint_of(&a), fb);
}

#[test]
fn restoring_more_reals_than_the_table_serves_names_the_size_for_all_of_them() {
    director_tests::require_root();
    let a = Attached::minimal(&["--maglev-size", "65537", "--max-services", "4"]);
    let svc = "10.0.0.100:80";
    let mut rules = format!("-A -t {svc}\n");
    for i in 0..1000u32 {
        rules.push_str(&format!(
            "-a -t {svc} -r 10.2.{}.{}:80 -g\n",
            i / 250,
            i % 250 + 1
        ));
    }
    let r: Run = a
        .run_in(
            &["-R"],
            Some(rules.as_bytes()),
            &[("DIRECTOR_RESOLVE_WAIT", "0")],
        )
        .unwrap()
        .into();
    assert_eq!(r.code, 255, "{}", r.stderr);
    // 655 reals fit (100 entries each); the 656th, on line 657, does not, and the
    // input asks for 1,000: the next prime of at least 100,000 fits them.
    let mut lines = r.stderr.lines();
    assert_eq!(
        lines.next(),
        Some(
            "a Maglev table of 65537 entries serves at most 655 reals per service (100 entries per real keep the imbalance near 1%); for 1000 reals attach with --maglev-size 100003 or larger"
        )
    );
    assert!(
        lines
            .next()
            .unwrap()
            .ends_with(": -R stopped at line 657 (-a -t 10.0.0.100:80 -r 10.2.2.156:80 -g): the lines before it are applied, it and the lines after it are not"),
        "{}",
        r.stderr
    );
    // One more real on its own: the size for that many.
    let r = a.run(&["-a", "-t", svc, "-r", "10.3.0.1:80"]);
    assert_eq!(r.code, 255);
    assert!(
        r.stderr
            .starts_with("a Maglev table of 65537 entries serves at most 655 reals per service (100 entries per real keep the imbalance near 1%); for 656 reals attach with --maglev-size 65609 or larger\n"),
        "{}",
        r.stderr
    );
}

#[test]
fn vlans_are_named_listed_and_refused_when_out_of_range() {
    director_tests::require_root();
    let a = Attached::minimal(&[]);
    assert_eq!(a.ok(&["vlan"]).trim(), "none", "none balanced by default");
    a.ok(&["vlan", "42,7"]);
    assert_eq!(a.ok(&["vlan"]).trim(), "7,42");
    for bad in ["4095", "0", "forty", "42,,7"] {
        let r = a.run(&["vlan", bad]);
        assert_eq!(r.code, 1, "vlan {bad}: {}", r.stderr);
        assert!(r.stderr.contains("invalid VLAN id"), "{}", r.stderr);
    }
    assert_eq!(
        a.ok(&["vlan"]).trim(),
        "7,42",
        "a refused set changes nothing"
    );
    a.ok(&["vlan", "none"]);
    assert_eq!(a.ok(&["vlan"]).trim(), "none");
}

#[test]
fn attach_prepares_the_interface_for_the_data_path_s_edge_cases() {
    director_tests::require_root();
    let a = Attached::minimal(&[]);
    let director = a.lab.ns("director");
    // NAT replies to a client without a neighbour entry are handed to the kernel
    // translated: it must accept their local source.
    assert_eq!(
        director
            .sysctl("net.ipv4.conf.eth0.accept_local")
            .unwrap()
            .trim(),
        "1"
    );
    // Only frames sent to the interface's own MAC are balanced: attach told the data
    // path which one that is (a frame to another MAC is checked in the fixtures).
    let mac = director.mac("eth0").unwrap();
    let ifindex = director.ifindex("eth0").unwrap();
    assert_eq!(a.control().interface_mac(ifindex).unwrap(), Some(mac));
    // Detaching the interface forgets it.
    a.ok(&["detach", "eth0"]);
    assert_eq!(a.control().interface_mac(ifindex).unwrap(), None);
}

#[test]
fn the_flood_limit_is_shown_set_at_run_time_and_bad_values_change_nothing() {
    director_tests::require_root();
    let a = Attached::minimal(&[]);
    assert_eq!(a.ok(&["flood-limit"]), "50000\n", "the default");
    a.ok(&["flood-limit", "1000"]);
    assert_eq!(a.ok(&["flood-limit"]), "1000\n");
    assert_eq!(
        a.control().flood_limit().unwrap(),
        1000,
        "in the data path's settings"
    );
    assert!(
        a.ok(&["status"])
            .contains("flood limit: 1000 new flows/s per CPU\n")
    );
    for bad in ["-5", "lots", "5000000000"] {
        let r = a.run(&["flood-limit", bad]);
        assert_ne!(r.code, 0, "flood-limit {bad} succeeded");
        assert!(
            r.stderr.contains(&format!("'{bad}'")),
            "{bad}: {}",
            r.stderr
        );
        assert_eq!(
            a.ok(&["flood-limit"]),
            "1000\n",
            "flood-limit {bad} changed it"
        );
    }
    a.ok(&["flood-limit", "0"]);
    assert!(a.ok(&["status"]).contains("flood limit: none\n"));
}

#[test]
fn gue_and_gre_reals_list_save_and_restore_as_ipvsadm_writes_them() {
    let a = Attached::minimal(&[]);
    configure(
        &a,
        &[
            "-A -u 10.0.0.100:53 -s rr",
            "-a -u 10.0.0.100:53 -r 10.1.0.11 -i --tun-type gue --tun-port 6080 --tun-csum",
            "-a -u 10.0.0.100:53 -r 10.1.0.12 -i -w 2 --tun-type gre",
            "-a -u 10.0.0.100:53 -r 10.1.0.13 -i -w 3",
        ],
    );
    let saved = a.save();
    assert_eq!(
        saved,
        "\
-A -u 10.0.0.100:53 -s rr
-a -u 10.0.0.100:53 -r 10.1.0.11:53 -i -w 1 --tun-type gue --tun-port 6080 --tun-csum
-a -u 10.0.0.100:53 -r 10.1.0.12:53 -i -w 2 --tun-type gre --tun-nocsum
-a -u 10.0.0.100:53 -r 10.1.0.13:53 -i -w 3 --tun-type ipip
"
    );
    let listing = a.ok(&["-L", "-n", "--tun-info"]);
    for line in [
        "  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n",
        "  -> 10.1.0.11:53                 Tunnel  gue:6080:+c   1      0          0         \n",
        "  -> 10.1.0.12:53                 Tunnel  gre:-c        2      0          0         \n",
        "  -> 10.1.0.13:53                 Tunnel  ipip          3      0          0         \n",
    ] {
        assert!(listing.contains(line), "{line:?} in\n{listing}");
    }
    let json: serde_json::Value = serde_json::from_str(&a.ok(&["list", "--json"])).unwrap();
    assert_eq!(
        json["services"][0]["reals"][0]["tunnel"],
        serde_json::json!({"type": "gue", "port": 6080, "checksum": "csum"})
    );

    // Refused as ipvsadm refuses them, exit 2, nothing changed.
    for (args, msg) in [
        (
            "-a -u 10.0.0.100:53 -r 10.1.0.14 -m --tun-type gue --tun-port 6080",
            "Tunnel options conflict with forward method",
        ),
        (
            "-a -u 10.0.0.100:53 -r 10.1.0.14 -i --tun-type gue",
            "You need to supply the 'tun-port' option for the 'gue' tunnel type",
        ),
        (
            "-e -u 10.0.0.100:53 -r 10.1.0.12 -i --tun-type gre --tun-port 6080",
            "Illegal 'tun-port' option with the 'gre' tunnel type",
        ),
    ] {
        let argv: Vec<&str> = args.split_whitespace().collect();
        let r = a.run(&argv);
        assert_eq!(r.code, 2, "{args}: {}", r.stderr);
        assert!(r.stderr.starts_with(msg), "{args}: stderr {:?}", r.stderr);
        assert_eq!(a.save(), saved, "{args} changed the table");
    }

    // -S | -R gives back the same table.
    a.ok(&["-C"]);
    let r = a.run_stdin(&["-R"], &saved);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(a.save(), saved);

    // An edit without tunnel options makes the real plain IPIP, as in ipvsadm.
    a.ok(&["-e", "-u", "10.0.0.100:53", "-r", "10.1.0.11", "-i"]);
    assert!(
        a.save()
            .contains("-a -u 10.0.0.100:53 -r 10.1.0.11:53 -i -w 1 --tun-type ipip\n"),
        "{}",
        a.save()
    );
}
