//! The command line against ipvsadm 1.31: every spelling of each option, and every
//! error with its message and exit code. Output layouts are tested in `format`.

use std::net::IpAddr;

use director_common::real::Method;

use super::{
    exec::restore_tokens,
    format::{self, RealRow, Snapshot, SvcRow},
    hiargs::{
        Command, DaemonState, Format, ListWhat, PersistMask, SCHED_FLAG_1, SCHED_FLAG_2,
        ServerArgs, ServiceArgs, TunCsum, TunType, VProto, VirtualService,
    },
    parse_line,
    portnames::PortNames,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn tcp(addr: &str, port: u16) -> VirtualService {
    VirtualService::Addr {
        proto: VProto::Tcp,
        addr: ip(addr),
        port,
    }
}

fn ok(line: &str) -> Command {
    parse_line(line).unwrap_or_else(|e| panic!("{line}: {e}"))
}

fn err(line: &str) -> (String, u8) {
    match parse_line(line) {
        Ok(c) => panic!("{line}: accepted as {c:?}"),
        Err(e) => (e.to_string(), e.exit_code()),
    }
}

fn service(line: &str) -> ServiceArgs {
    match ok(line) {
        Command::AddService(a) | Command::EditService(a) => a,
        c => panic!("{line}: {c:?}"),
    }
}

fn server(line: &str) -> ServerArgs {
    match ok(line) {
        Command::AddServer(a) | Command::EditServer(a) | Command::DeleteServer(a) => a,
        c => panic!("{line}: {c:?}"),
    }
}

#[test]
fn every_spelling_of_add_service() {
    let want = ServiceArgs {
        service: tcp("10.0.0.1", 80),
        scheduler: Some("wrr".into()),
        persistent: None,
        netmask: None,
        sched_flags: None,
        ops: false,
        pe: None,
    };
    for line in [
        "-A -t 10.0.0.1:80 -s wrr",
        "--add-service --tcp-service 10.0.0.1:80 --scheduler wrr",
        "--add-service --tcp-service=10.0.0.1:80 --scheduler=wrr",
        "-A -t10.0.0.1:80 -swrr",
        "-At 10.0.0.1:80 -s wrr",
        "-A -s wrr -t 10.0.0.1:80",
        "-A -t 10.0.0.1:http -s wrr",
        "-A -t 10.0.0.1:www -s wrr",
        "-A -t 10.1:80 -s wrr",
    ] {
        assert_eq!(ok(line), Command::AddService(want.clone()), "{line}");
    }
    assert_eq!(
        service("-E -u 10.0.0.1:53").service,
        VirtualService::Addr {
            proto: VProto::Udp,
            addr: ip("10.0.0.1"),
            port: 53
        }
    );
    assert_eq!(
        service("--edit-service --udp-service 10.0.0.1:domain").service,
        service("-E -u 10.0.0.1:53").service
    );
    assert_eq!(
        service("-A -t [2001:db8::1]:80").service,
        tcp("2001:db8::1", 80)
    );
    assert_eq!(
        service("-A --sctp-service 10.0.0.1:80").service,
        VirtualService::Addr {
            proto: VProto::Sctp,
            addr: ip("10.0.0.1"),
            port: 80
        }
    );
    assert_eq!(
        service("-A -f 7").service,
        VirtualService::Fwmark {
            mark: 7,
            ipv6: false
        }
    );
    assert_eq!(
        service("-A --fwmark-service 7 -6").service,
        VirtualService::Fwmark {
            mark: 7,
            ipv6: true
        }
    );
}

#[test]
fn persistent_takes_an_optional_timeout() {
    for (line, want) in [
        ("-A -t 10.0.0.1:80 -p", 360),
        ("-A -t 10.0.0.1:80 -p 300", 300),
        ("-A -t 10.0.0.1:80 -p300", 300),
        ("-A -t 10.0.0.1:80 --persistent", 360),
        ("-A -t 10.0.0.1:80 --persistent 300", 300),
        ("-A -t 10.0.0.1:80 --persistent=300", 300),
        ("-A -t 10.0.0.1:80 -p -s rr", 360),
        ("-A -t 10.0.0.1:80 -p 2678400", 2_678_400),
        ("-A -t 10.0.0.1:0 -p", 360),
    ] {
        assert_eq!(service(line).persistent, Some(want), "{line}");
    }
    assert_eq!(
        service("-A -t 10.0.0.1:80 -p -M 255.255.255.0").netmask,
        Some(PersistMask::V4("255.255.255.0".parse().unwrap()))
    );
    assert_eq!(
        service("-A -t 10.0.0.1:80 -p --netmask=255.255.0.0").netmask,
        Some(PersistMask::V4("255.255.0.0".parse().unwrap()))
    );
    assert_eq!(
        service("-A -t [2001:db8::1]:80 -p -M 64").netmask,
        Some(PersistMask::V6(64))
    );
}

#[test]
fn scheduler_flags_accept_comma_lists_and_depend_on_the_scheduler() {
    assert_eq!(
        service("-A -t 10.0.0.1:80 -s sh -b sh-port").sched_flags,
        Some(SCHED_FLAG_2)
    );
    assert_eq!(
        service("-A -t 10.0.0.1:80 -s sh --sched-flags sh-fallback,sh-port").sched_flags,
        Some(SCHED_FLAG_1 | SCHED_FLAG_2)
    );
    assert_eq!(
        service("-A -t 10.0.0.1:80 -b sh-port -s sh").sched_flags,
        Some(SCHED_FLAG_2),
        "-s may follow -b"
    );
    assert_eq!(
        service("-A -t 10.0.0.1:80 -s mh -b mh-port").sched_flags,
        Some(SCHED_FLAG_2)
    );
    assert_eq!(
        service("-A -t 10.0.0.1:80 -b mh-port").sched_flags,
        Some(SCHED_FLAG_2),
        "mh is the default scheduler here"
    );
    assert_eq!(
        service("-A -t 10.0.0.1:80 -s rr -b flag-1").sched_flags,
        Some(SCHED_FLAG_1)
    );
}

#[test]
fn every_spelling_of_add_server() {
    let want = ServerArgs {
        service: tcp("10.0.0.1", 80),
        addr: ip("10.1.0.11"),
        port: 80,
        method: Method::Route,
        weight: 1,
        u_threshold: 0,
        l_threshold: 0,
        tun_type: TunType::Ipip,
        tun_port: 0,
        tun_csum: TunCsum::NoCsum,
    };
    for line in [
        "-a -t 10.0.0.1:80 -r 10.1.0.11",
        "-a -t 10.0.0.1:80 -r 10.1.0.11:80",
        "-a -t 10.0.0.1:80 -r 10.1.0.11:80 -g -w 1",
        "-a -t 10.0.0.1:80 -r 10.1.0.11:80 -g -w 1 -x 0 -y 0",
        "--add-server --tcp-service 10.0.0.1:80 --real-server 10.1.0.11 --gatewaying --weight 1",
        "--add-server --tcp-service=10.0.0.1:80 --real-server=10.1.0.11:80 --weight=1 --u-threshold=0 --l-threshold=0",
        "-a -t 10.0.0.1:80 -r 10.1.0.11:8080 -g",
        "-a -t 10.0.0.1:80 -r10.1.0.11 -gw1",
    ] {
        assert_eq!(ok(line), Command::AddServer(want.clone()), "{line}");
    }
    let s = server("-a -t 10.0.0.1:80 -r 10.1.0.11:8080 -m -w 5");
    assert_eq!((s.port, s.method, s.weight), (8080, Method::Masq, 5));
    let s = server("-a -t 10.0.0.1:80 -r 10.1.0.11 --masquerading");
    assert_eq!((s.port, s.method), (80, Method::Masq));
    let s = server("-e -t 10.0.0.1:80 -r 10.1.0.11 -i -w 0");
    assert_eq!((s.port, s.method, s.weight), (80, Method::Tunnel, 0));
    let s =
        server("--edit-server -t 10.0.0.1:80 -r 10.1.0.11 --ipip --tun-type ipip --weight 65535");
    assert_eq!(
        (s.method, s.weight, s.tun_type),
        (Method::Tunnel, 65535, TunType::Ipip)
    );
    let s = server(
        "-a -t 10.0.0.1:80 -r 10.1.0.11 --ipip --tun-type gue --tun-port 6080 --tun-remcsum",
    );
    assert_eq!(
        (s.method, s.tun_type, s.tun_port, s.tun_csum),
        (Method::Tunnel, TunType::Gue, 6080, TunCsum::RemCsum)
    );
    let s = server("-e -t 10.0.0.1:80 -r 10.1.0.11 -i --tun-type=gre --tun-csum");
    assert_eq!(
        (s.tun_type, s.tun_port, s.tun_csum),
        (TunType::Gre, 0, TunCsum::Csum)
    );
    let s = server("-a -t 10.0.0.1:80 -r 10.1.0.11 -i --tun-type gre --tun-nocsum");
    assert_eq!((s.tun_type, s.tun_csum), (TunType::Gre, TunCsum::NoCsum));
    let s = server("-d -t 10.0.0.1:80 -r 10.1.0.11");
    assert_eq!((s.addr, s.port), (ip("10.1.0.11"), 80));
    let s = server("--delete-server -t 10.0.0.1:80 -r 10.1.0.11:8080");
    assert_eq!(s.port, 8080, "-d matches the port as given");
    let s = server("-a -t 10.0.0.1:80 -r 10.1.0.11 -x 100 -y 5");
    assert_eq!(
        (s.u_threshold, s.l_threshold),
        (100, 5),
        "parsed here, refused when applied"
    );
}

#[test]
fn every_spelling_of_the_other_commands() {
    for line in [
        "-D -t 10.0.0.1:80",
        "--delete-service --tcp-service 10.0.0.1:80",
    ] {
        assert_eq!(
            ok(line),
            Command::DeleteService(tcp("10.0.0.1", 80)),
            "{line}"
        );
    }
    for line in ["-C", "--clear"] {
        assert_eq!(ok(line), Command::Clear);
    }
    for line in ["-Z", "--zero"] {
        assert_eq!(ok(line), Command::Zero(None));
    }
    assert_eq!(
        ok("-Z -t 10.0.0.1:80"),
        Command::Zero(Some(tcp("10.0.0.1", 80)))
    );
    for line in ["-S", "--save"] {
        assert_eq!(ok(line), Command::Save { numeric: false });
    }
    for line in ["-S -n", "-Sn", "--save --numeric"] {
        assert_eq!(ok(line), Command::Save { numeric: true });
    }
    for line in ["-R", "--restore"] {
        assert_eq!(ok(line), Command::Restore);
    }
    for line in [
        "--set 900 120 300",
        "--set 900 120 300 --",
        "--set -- 900 120 300",
    ] {
        assert_eq!(
            ok(line),
            Command::SetTimeouts {
                tcp: 900,
                tcp_fin: 120,
                udp: 300
            },
            "{line}"
        );
    }
    assert_eq!(
        ok("--set 0 0 60"),
        Command::SetTimeouts {
            tcp: 0,
            tcp_fin: 0,
            udp: 60
        }
    );
    for line in ["-h", "--help", "-h -bogus", "-h -A"] {
        assert_eq!(ok(line), Command::Help, "{line}");
    }
    for line in ["-v", "--version"] {
        assert_eq!(ok(line), Command::Version);
    }
    assert_eq!(
        ok("--start-daemon master"),
        Command::StartDaemon(DaemonState::Master)
    );
    assert_eq!(
        ok(
            "--start-daemon backup --mcast-interface eth1 --syncid 5 --mcast-group 224.0.0.81 --mcast-port 8848 --mcast-ttl 1 --sync-maxlen 1472"
        ),
        Command::StartDaemon(DaemonState::Backup)
    );
    assert_eq!(
        ok("--stop-daemon backup --syncid 5"),
        Command::StopDaemon(DaemonState::Backup)
    );
}

fn list(line: &str) -> (ListWhat, Format) {
    match ok(line) {
        Command::List { what, format } => (what, format),
        c => panic!("{line}: {c:?}"),
    }
}

#[test]
fn every_spelling_of_list() {
    for line in [
        "-L -n",
        "-l -n",
        "-Ln",
        "-ln",
        "--list --numeric",
        "-L --numeric",
    ] {
        let (what, fmt) = list(line);
        assert_eq!(what, ListWhat::All, "{line}");
        assert!(fmt.numeric, "{line}");
    }
    let (_, fmt) = list("-L -n --stats --exact");
    assert!(fmt.stats && fmt.exact);
    let (_, fmt) = list("-L -n --stats -X");
    assert!(fmt.stats && fmt.exact);
    let (_, fmt) = list("-L --rate");
    assert!(fmt.rate && !fmt.numeric);
    let (_, fmt) = list("-L -n --thresholds");
    assert!(fmt.thresholds);
    let (_, fmt) = list("-L -n --persistent-conn --nosort --sort");
    assert!(fmt.persistent_conn && fmt.nosort);
    let (_, fmt) = list("-L -n --tun-info");
    assert!(fmt.tun_info);
    assert_eq!(
        list("-L -n -t 10.0.0.1:80").0,
        ListWhat::Service(tcp("10.0.0.1", 80))
    );
    assert_eq!(list("-L -n -c").0, ListWhat::Connections);
    assert_eq!(list("-Lnc").0, ListWhat::Connections);
    assert_eq!(list("-L --timeout").0, ListWhat::Timeouts);
    assert_eq!(list("-L --daemon").0, ListWhat::Daemon);
    assert_eq!(list("-L -c --persistent-conn").0, ListWhat::Connections);
}

/// Every ipvsadm error: (arguments, message, exit code).
const ERRORS: &[(&str, &str, u8)] = &[
    // No command first.
    (
        "",
        "Try `ipvsadm -h' or 'ipvsadm --help' for more information.",
        255,
    ),
    (
        "-t 10.0.0.1:80 -A",
        "Try `ipvsadm -h' or 'ipvsadm --help' for more information.",
        255,
    ),
    (
        "--bogus",
        "Try `ipvsadm -h' or 'ipvsadm --help' for more information.",
        255,
    ),
    (
        "foo",
        "Try `ipvsadm -h' or 'ipvsadm --help' for more information.",
        255,
    ),
    (
        "-nL",
        "Try `ipvsadm -h' or 'ipvsadm --help' for more information.",
        255,
    ),
    // popt.
    ("-A -t 10.0.0.1:80 --bogus", "--bogus: unknown option", 255),
    ("-A -t 10.0.0.1:80 -q", "-q: unknown option", 255),
    ("-A -t", "-t: missing argument", 255),
    ("-a -t 10.0.0.1:80 -r", "-r: missing argument", 255),
    (
        "-L --numeric=yes",
        "--numeric=yes: option does not take an argument",
        255,
    ),
    ("-A --tcp 10.0.0.1:80", "--tcp: unknown option", 255),
    // Repeats and a second command.
    ("-A -t 10.0.0.1:80 -D", "multiple commands specified", 2),
    (
        "-A -t 10.0.0.1:80 -a -r 10.1.0.11",
        "multiple commands specified",
        2,
    ),
    ("-L -C", "multiple commands specified", 2),
    (
        "-A -t 10.0.0.1:80 -u 10.0.0.1:53",
        "multiple 'service-address' options specified",
        2,
    ),
    (
        "-A -t 10.0.0.1:80 -s rr -s wrr",
        "multiple 'scheduler' options specified",
        2,
    ),
    (
        "-a -t 10.0.0.1:80 -r 10.1.0.11 -g -m",
        "multiple 'forwarding-method' options specified",
        2,
    ),
    (
        "-a -t 10.0.0.1:80 -r 10.1.0.11 -w 1 -w 2",
        "multiple 'weight' options specified",
        2,
    ),
    ("-L -n -n", "multiple 'numeric' options specified", 2),
    // Bad values.
    (
        "-A -t 10.0.0.1:99999",
        "illegal virtual server address[:port] specified",
        2,
    ),
    (
        "-A -t 10.0.0.256:80",
        "illegal virtual server address[:port] specified",
        2,
    ),
    (
        "-A -t 10.0.0.1:",
        "illegal virtual server address[:port] specified",
        2,
    ),
    (
        "-A -t 10.0.0.1:nosuchport",
        "illegal virtual server address[:port] specified",
        2,
    ),
    (
        "-A -t 80",
        "illegal virtual server address[:port] specified",
        2,
    ),
    (
        "-A -t [2001:db8::1]",
        "illegal virtual server address[:port] specified",
        2,
    ),
    (
        "-A -t -s",
        "illegal virtual server address[:port] specified",
        2,
    ),
    (
        "-A -t www.example.com:80",
        "illegal virtual server address[:port] specified (host names are not looked up: give an IP address)",
        2,
    ),
    (
        "-a -t 10.0.0.1:80 -r 10.1.0.300",
        "illegal real server address[:port] specified",
        2,
    ),
    (
        "-a -t 10.0.0.1:80 -r 10.1.0.11:65536",
        "illegal real server address[:port] specified",
        2,
    ),
    (
        "-a -t 10.0.0.1:80 -r realserver1",
        "illegal real server address[:port] specified (host names are not looked up: give an IP address)",
        2,
    ),
    (
        "-a -t 10.0.0.1:80 -r 10.1.0.11 -w -1",
        "illegal weight specified",
        2,
    ),
    (
        "-a -t 10.0.0.1:80 -r 10.1.0.11 -w 65536",
        "illegal weight specified",
        2,
    ),
    (
        "-a -t 10.0.0.1:80 -r 10.1.0.11 -w one",
        "illegal weight specified",
        2,
    ),
    (
        "-a -t 10.0.0.1:80 -r 10.1.0.11 -w 1.5",
        "illegal weight specified",
        2,
    ),
    (
        "-a -t 10.0.0.1:80 -r 10.1.0.11 -x -1",
        "illegal u_threshold specified",
        2,
    ),
    (
        "-a -t 10.0.0.1:80 -r 10.1.0.11 -y 2147483648",
        "illegal l_threshold specified",
        2,
    ),
    (
        "-A -t 10.0.0.1:80 -p 0",
        "invalid timeout value `0' specified",
        2,
    ),
    (
        "-A -t 10.0.0.1:80 -p 2678401",
        "invalid timeout value `2678401' specified",
        2,
    ),
    (
        "-A -t 10.0.0.1:80 -p300s",
        "invalid timeout value `300s' specified",
        2,
    ),
    (
        "-A -t 10.0.0.1:80 -p abc",
        "invalid timeout value `abc' specified",
        2,
    ),
    (
        "-A -t 10.0.0.1:80 -p -M 255.255.255.300",
        "illegal virtual server persistent mask specified",
        2,
    ),
    (
        "-A -t [2001:db8::1]:80 -p -M 129",
        "illegal ipv6 netmask specified",
        2,
    ),
    ("-A -f 0", "invalid fwmark value `0' specified", 2),
    ("-A -f x", "invalid fwmark value `x' specified", 2),
    ("-A -t 10.0.0.1:80 -6", "-6 used before -f\n", 2),
    (
        "-A -t 10.0.0.1:80 -s sh -b bogus",
        "invalid scheduler flag `bogus'",
        2,
    ),
    (
        "-A -t 10.0.0.1:80 -s rr -b sh-port",
        "incompatible scheduler flag `sh-port'",
        2,
    ),
    (
        "-A -t 10.0.0.1:80 -s sh -b mh-port",
        "incompatible scheduler flag `mh-port'",
        2,
    ),
    (
        "-A -t 10.0.0.1:80 -b sh-port",
        "incompatible scheduler flag `sh-port'",
        2,
    ),
    (
        "-A -t 10.0.0.1:80 -s sh -b ,",
        "invalid scheduler flag `,'",
        2,
    ),
    ("--set 900 120", "--set option requires 3 timeout values", 2),
    ("--set 900 120 x", "invalid timeout value `x' specified", 2),
    ("--set 900 120 300 5", "unexpected argument 5", 2),
    ("-L foo", "unexpected argument foo", 2),
    (
        "--start-daemon primary",
        "illegal start-daemon parameter specified",
        2,
    ),
    ("--stop-daemon primary", "illegal start_daemon specified", 2),
    (
        "--start-daemon master --syncid 256",
        "illegal syncid specified",
        2,
    ),
    (
        "--start-daemon master --mcast-group 10.0.0.1",
        "invalid IPv4 mcast-group `10.0.0.1'",
        2,
    ),
    (
        "--start-daemon master --mcast-group ff00::x",
        "invalid IPv6 mcast-group `ff00::x'",
        2,
    ),
    (
        "--start-daemon master --mcast-port 0",
        "illegal mcast-port specified",
        2,
    ),
    (
        "--start-daemon master --mcast-ttl 256",
        "illegal mcast-ttl specified",
        2,
    ),
    (
        "--start-daemon master --sync-maxlen 65508",
        "illegal sync-maxlen specified",
        2,
    ),
    (
        "-a -t 10.0.0.1:80 -r 10.1.0.11 -i --tun-type vxlan",
        "illegal tunnel type specified",
        2,
    ),
    (
        "-a -t 10.0.0.1:80 -r 10.1.0.11 -i --tun-type gue --tun-port 0",
        "illegal tunnel port specified",
        2,
    ),
    // The command/option table.
    (
        "-A",
        "You need to supply the 'service-address' option for the 'add-service' command",
        2,
    ),
    (
        "-E -s rr",
        "You need to supply the 'service-address' option for the 'edit-service' command",
        2,
    ),
    (
        "-a -t 10.0.0.1:80",
        "You need to supply the 'real-server' option for the 'add-server' command",
        2,
    ),
    (
        "-d -t 10.0.0.1:80",
        "You need to supply the 'real-server' option for the 'delete-server' command",
        2,
    ),
    (
        "-D",
        "You need to supply the 'service-address' option for the 'delete-service' command",
        2,
    ),
    (
        "-A -t 10.0.0.1:80 -r 10.1.0.11",
        "Illegal 'real-server' option with the 'add-service' command",
        2,
    ),
    (
        "-A -t 10.0.0.1:80 -w 1",
        "Illegal 'weight' option with the 'add-service' command",
        2,
    ),
    (
        "-A -t 10.0.0.1:80 -n",
        "Illegal 'numeric' option with the 'add-service' command",
        2,
    ),
    (
        "-a -t 10.0.0.1:80 -r 10.1.0.11 -s rr",
        "Illegal 'scheduler' option with the 'add-server' command",
        2,
    ),
    (
        "-a -t 10.0.0.1:80 -r 10.1.0.11 -p",
        "Illegal 'persistent' option with the 'add-server' command",
        2,
    ),
    (
        "-d -t 10.0.0.1:80 -r 10.1.0.11 -w 1",
        "Illegal 'weight' option with the 'delete-server' command",
        2,
    ),
    (
        "-d -t 10.0.0.1:80 -r 10.1.0.11 -g",
        "Illegal 'forwarding-method' option with the 'delete-server' command",
        2,
    ),
    (
        "-D -t 10.0.0.1:80 -s rr",
        "Illegal 'scheduler' option with the 'delete-service' command",
        2,
    ),
    (
        "-C -t 10.0.0.1:80",
        "Illegal 'service-address' option with the 'flush' command",
        2,
    ),
    (
        "-C -n",
        "Illegal 'numeric' option with the 'flush' command",
        2,
    ),
    (
        "-S -t 10.0.0.1:80",
        "Illegal 'service-address' option with the 'save' command",
        2,
    ),
    (
        "-R -n",
        "Illegal 'numeric' option with the 'restore' command",
        2,
    ),
    (
        "-Z -n",
        "Illegal 'numeric' option with the 'zero' command",
        2,
    ),
    (
        "--set 1 2 3 -n",
        "Illegal 'numeric' option with the 'set' command",
        2,
    ),
    (
        "-L -s rr",
        "Illegal 'scheduler' option with the 'list' command",
        2,
    ),
    (
        "-L -t 10.0.0.1:80 -c",
        "The option 'service-address' conflicts with the 'connection' option in the 'list' command",
        2,
    ),
    (
        "-L -c --timeout",
        "The option 'timeout' conflicts with the 'connection' option in the 'list' command",
        2,
    ),
    (
        "-L --timeout --daemon",
        "The option 'daemon' conflicts with the 'timeout' option in the 'list' command",
        2,
    ),
    (
        "--stop-daemon master --mcast-interface eth0",
        "Illegal 'mcast-interface' option with the 'stop-daemon' command",
        2,
    ),
    (
        "-L --tun-type ipip",
        "Illegal 'tun-type' option with the 'list' command",
        2,
    ),
    (
        "-A -t 10.0.0.1:80 --tun-info",
        "Illegal 'tun-info' option with the 'add-service' command",
        2,
    ),
    // Per command.
    (
        "-A -t 10.0.0.1:0",
        "Zero port specified for non-persistent service",
        2,
    ),
    (
        "-A -t 10.0.0.1",
        "Zero port specified for non-persistent service",
        2,
    ),
    (
        "-E -t 10.0.0.1:0 -s rr",
        "Zero port specified for non-persistent service",
        2,
    ),
    (
        "-A -t 10.0.0.1:80 -o",
        "One-Packet Scheduling is only for UDP virtual services",
        2,
    ),
    (
        "-a -t 10.0.0.1:80 -r [2001:db8::1]:80",
        "Different address family is allowed only for tunneling servers",
        2,
    ),
    (
        "-a -t 10.0.0.1:80 -r 10.1.0.11 --tun-type ipip",
        "Tunnel options conflict with forward method",
        2,
    ),
    (
        "-a -t 10.0.0.1:80 -r 10.1.0.11 -m --tun-csum",
        "Tunnel options conflict with forward method",
        2,
    ),
    (
        "-a -t 10.0.0.1:80 -r 10.1.0.11 -i --tun-port 6080",
        "Illegal 'tun-port' option with the 'ipip' tunnel type",
        2,
    ),
    (
        "-a -t 10.0.0.1:80 -r 10.1.0.11 -i --tun-type gre --tun-port 6080",
        "Illegal 'tun-port' option with the 'gre' tunnel type",
        2,
    ),
    (
        "-e -t 10.0.0.1:80 -r 10.1.0.11 -i --tun-csum",
        "Illegal 'tun-csum' option with the 'ipip' tunnel type",
        2,
    ),
    (
        "-a -t 10.0.0.1:80 -r 10.1.0.11 -i --tun-type gre --tun-remcsum --tun-csum",
        "The option 'tun-remcsum' conflicts with the 'tun-csum' option in the 'gre' tunnel type",
        2,
    ),
    (
        "-a -t 10.0.0.1:80 -r 10.1.0.11 -i --tun-type gue",
        "You need to supply the 'tun-port' option for the 'gue' tunnel type",
        2,
    ),
    (
        "-a -t 10.0.0.1:80 -r 10.1.0.11 -i --tun-type gue --tun-port 6080 --tun-csum --tun-nocsum",
        "The option 'tun-csum' conflicts with the 'tun-nocsum' option in the 'gue' tunnel type",
        2,
    ),
    ("-L -c --stats", "options conflicts in the list command", 2),
    (
        "-L --timeout --rate",
        "options conflicts in the list command",
        2,
    ),
    (
        "-L --daemon --persistent-conn",
        "options conflicts in the list command",
        2,
    ),
];

#[test]
fn every_command_line_error_has_ipvsadms_message_and_exit_code() {
    for (line, msg, code) in ERRORS {
        assert_eq!(err(line), ((*msg).to_owned(), *code), "{line}");
    }
}

#[test]
fn the_first_error_reported_is_the_one_ipvsadm_reports() {
    // Option values are checked in order, before popt's error and the table.
    assert_eq!(
        err("-A -t 10.0.0.1:99999 --bogus").0,
        "illegal virtual server address[:port] specified"
    );
    assert_eq!(
        err("-A -t 10.0.0.1:80 --bogus -w x").0,
        "--bogus: unknown option"
    );
    assert_eq!(err("-A -w x -t 10.0.0.1:80").0, "illegal weight specified");
    // Positional arguments before the table.
    assert_eq!(
        err("-A -t 10.0.0.1:80 -r 10.1.0.11 extra").0,
        "unexpected argument extra"
    );
    // The table before per-command checks.
    assert_eq!(
        err("-A -t 10.0.0.1:0 -w 1").0,
        "Illegal 'weight' option with the 'add-service' command"
    );
}

/// A snapshot with one of everything -S can print.
fn snapshot() -> Snapshot {
    use director_common::{service::Scheduler, stats::Counters};
    use director_control::{Protocol, RealSpec, ServiceSpec};
    let row = |addr: &str, port, method, weight| RealRow {
        spec: RealSpec::new(ip(addr), port, method, weight),
        stats: Counters::default(),
        active: 0,
        inactive: 0,
        persistent: 0,
    };
    let mut sh = ServiceSpec::new(Protocol::Tcp, ip("10.0.0.2"), 0)
        .scheduler(Scheduler::SourceHash)
        .persistent(600, ip("255.255.255.0"));
    sh.hash_port = true;
    let mut mh = ServiceSpec::new(Protocol::Tcp, ip("10.0.0.3"), 443);
    mh.hash_source_only = true;
    let svc = |spec, reals| SvcRow {
        spec,
        stats: Counters::default(),
        reals,
    };
    Snapshot {
        conn_table_size: 1024,
        services: vec![
            svc(
                ServiceSpec::new(Protocol::Tcp, ip("10.0.0.1"), 80)
                    .scheduler(Scheduler::WeightedRoundRobin),
                vec![
                    row("10.1.0.11", 80, Method::Route, 1),
                    row("10.1.0.12", 8080, Method::Masq, 0),
                    row("10.1.0.13", 80, Method::Tunnel, 65535),
                ],
            ),
            svc(sh, vec![row("10.1.0.11", 0, Method::Route, 2)]),
            svc(mh, vec![]),
            svc(
                ServiceSpec::new(Protocol::Udp, ip("10.0.0.1"), 53)
                    .scheduler(Scheduler::RoundRobin),
                vec![row("10.1.0.11", 53, Method::Route, 1)],
            ),
            svc(
                ServiceSpec::new(Protocol::Udp, ip("10.0.0.4"), 5353),
                vec![],
            ),
        ],
    }
}

#[test]
fn save_output_parses_back_to_the_same_services_and_reals() {
    for numeric in [true, false] {
        let fmt = Format {
            numeric,
            rule: true,
            ..Format::default()
        };
        let names =
            PortNames::parse("http 80/tcp www\nhttps 443/tcp\ndomain 53/udp\ndomain 53/tcp\n");
        let saved = format::list_all(&snapshot(), &fmt, &names);
        let mut services = Vec::new();
        for line in saved.lines() {
            let args = restore_tokens(line);
            let cmd = parse_line(&args.join(" ")).unwrap_or_else(|e| panic!("{line}: {e}"));
            match cmd {
                Command::AddService(a) => {
                    let spec = super::exec::service_spec(&a, true).unwrap();
                    services.push(SvcRow {
                        spec,
                        stats: Default::default(),
                        reals: Vec::new(),
                    });
                }
                Command::AddServer(a) => {
                    let (svc, real) = super::exec::server_spec(&a).unwrap();
                    let s = services
                        .iter_mut()
                        .find(|s| s.spec.addr == svc)
                        .expect("-A before -a");
                    s.reals.push(RealRow {
                        spec: real,
                        stats: Default::default(),
                        active: 0,
                        inactive: 0,
                        persistent: 0,
                    });
                }
                other => panic!("{line}: {other:?}"),
            }
        }
        let mut want = snapshot();
        // Ports of DR reals follow the service's (a port-0 service keeps 0).
        for s in &mut want.services {
            for r in &mut s.reals {
                if r.spec.method != Method::Masq {
                    r.spec.port = s.spec.addr.port;
                }
            }
        }
        let got: Vec<_> = services
            .iter()
            .map(|s| {
                (
                    s.spec.clone(),
                    s.reals.iter().map(|r| r.spec).collect::<Vec<_>>(),
                )
            })
            .collect();
        let want: Vec<_> = want
            .services
            .iter()
            .map(|s| {
                (
                    s.spec.clone(),
                    s.reals.iter().map(|r| r.spec).collect::<Vec<_>>(),
                )
            })
            .collect();
        assert_eq!(got, want, "numeric: {numeric}\n{saved}");
    }
}
