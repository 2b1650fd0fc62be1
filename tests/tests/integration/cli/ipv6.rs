//! IPv6 through the ipvsadm command line: `[addr]:port` services and reals, the families
//! a tunnel may mix, `-M` as a prefix length, and every listing layout as ipvsadm 1.31
//! prints IPv6 (addresses in brackets, never cut to the column width as IPv4 ones are).
//! The expected text follows ipvsadm's format strings, not the director's output.

use std::{net::Ipv6Addr, time::Duration};

use director_common::conn_state::ConnState;
use director_control::{Protocol, ServiceAddr, state::StateOptions};
use director_tests::conns6::{Conns6, Flow6};

use super::ipvsadm::{Attached, configure};

/// Services of both families, with IPv6 reals, IPv4 reals of an IPv6 service (tunnel:
/// 4in6's opposite, 6in4) and IPv6 reals of an IPv4 service, in ipvsadm's input forms
/// (a bare IPv6 real takes the virtual port).
const CONFIG6: &[&str] = &[
    "-A -t [2001:db8::1]:80 -s wrr",
    "-a -t [2001:db8::1]:80 -r [2001:db8::11]:80 -g -w 3",
    "-a -t [2001:db8::1]:80 -r [2001:db8::12]:8080 -m -w 1",
    "-a -t [2001:db8::1]:80 -r 10.1.0.13 -i -w 2",
    "-A -u [2001:db8::1]:53 -s sh -p 600 -M 64",
    "-a -u [2001:db8::1]:53 -r 2001:db8::11 -i",
    "-A -t [2001:db8:1234:5678:9abc:def0:1234:5678]:65535 -s rr",
    "-a -t [2001:db8:1234:5678:9abc:def0:1234:5678]:65535 -r [2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff]:65535 -g",
    "-A -t 10.0.0.100:80 -s rr",
    "-a -t 10.0.0.100:80 -r 2001:db8::13 -i -w 1",
];

/// `-S -n` of [`CONFIG6`]: IPv4 services first, then by protocol, address and port, as
/// IPVS sorts them; an IPv6 persistence prefix other than 128 as `-M <length>`.
const SAVED6: &str = "\
-A -t 10.0.0.100:80 -s rr
-a -t 10.0.0.100:80 -r [2001:db8::13]:80 -i -w 1 --tun-type ipip
-A -t [2001:db8::1]:80 -s wrr
-a -t [2001:db8::1]:80 -r 10.1.0.13:80 -i -w 2 --tun-type ipip
-a -t [2001:db8::1]:80 -r [2001:db8::11]:80 -g -w 3
-a -t [2001:db8::1]:80 -r [2001:db8::12]:8080 -m -w 1
-A -t [2001:db8:1234:5678:9abc:def0:1234:5678]:65535 -s rr
-a -t [2001:db8:1234:5678:9abc:def0:1234:5678]:65535 -r [2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff]:65535 -g -w 1
-A -u [2001:db8::1]:53 -s sh -p 600 -M 64
-a -u [2001:db8::1]:53 -r [2001:db8::11]:53 -i -w 1 --tun-type ipip
";

#[test]
fn ipv6_services_list_and_save_as_ipvsadm_prints_them_and_restore_to_the_same_table() {
    director_tests::require_root();
    let a = Attached::minimal(&[]);
    configure(&a, CONFIG6);
    assert_eq!(a.save(), SAVED6);

    // "%-4s %s" and "  -> %-28s ...": an IPv6 name longer than its column pushes the
    // columns right instead of being cut.
    assert_eq!(
        a.ok(&["-L", "-n"]),
        "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.0.0.100:80 rr
  -> [2001:db8::13]:80            Tunnel  1      0          0         
TCP  [2001:db8::1]:80 wrr
  -> 10.1.0.13:80                 Tunnel  2      0          0         
  -> [2001:db8::11]:80            Route   3      0          0         
  -> [2001:db8::12]:8080          Masq    1      0          0         
TCP  [2001:db8:1234:5678:9abc:def0:1234:5678]:65535 rr
  -> [2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff]:65535 Route   1      0          0         
UDP  [2001:db8::1]:53 sh persistent 600 mask 64
  -> [2001:db8::11]:53            Tunnel  1      0          0         
"
    );
    let stats = "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes
  -> RemoteAddress:Port
TCP  10.0.0.100:80                       0        0        0        0        0
  -> [2001:db8::13]:80                   0        0        0        0        0
TCP  [2001:db8::1]:80                    0        0        0        0        0
  -> 10.1.0.13:80                        0        0        0        0        0
  -> [2001:db8::11]:80                   0        0        0        0        0
  -> [2001:db8::12]:8080                 0        0        0        0        0
TCP  [2001:db8:1234:5678:9abc:def0:1234:5678]:65535        0        0        0        0        0
  -> [2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff]:65535        0        0        0        0        0
UDP  [2001:db8::1]:53                    0        0        0        0        0
  -> [2001:db8::11]:53                   0        0        0        0        0
";
    assert_eq!(a.ok(&["-L", "-n", "--stats"]), stats);
    // Whole numbers: the same columns while every number has at most 8 digits.
    assert_eq!(a.ok(&["-L", "-n", "--stats", "--exact"]), stats);
    assert_eq!(
        a.ok(&["-L", "-n", "--rate"]),
        "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS
  -> RemoteAddress:Port
TCP  10.0.0.100:80                       0        0        0        0        0
  -> [2001:db8::13]:80                   0        0        0        0        0
TCP  [2001:db8::1]:80                    0        0        0        0        0
  -> 10.1.0.13:80                        0        0        0        0        0
  -> [2001:db8::11]:80                   0        0        0        0        0
  -> [2001:db8::12]:8080                 0        0        0        0        0
TCP  [2001:db8:1234:5678:9abc:def0:1234:5678]:65535        0        0        0        0        0
  -> [2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff]:65535        0        0        0        0        0
UDP  [2001:db8::1]:53                    0        0        0        0        0
  -> [2001:db8::11]:53                   0        0        0        0        0
"
    );
    assert_eq!(
        a.ok(&["-L", "-n", "--persistent-conn"]),
        "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn 
  -> RemoteAddress:Port
TCP  10.0.0.100:80 rr
  -> [2001:db8::13]:80            1         0           0          0         
TCP  [2001:db8::1]:80 wrr
  -> 10.1.0.13:80                 2         0           0          0         
  -> [2001:db8::11]:80            3         0           0          0         
  -> [2001:db8::12]:8080          1         0           0          0         
TCP  [2001:db8:1234:5678:9abc:def0:1234:5678]:65535 rr
  -> [2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff]:65535 1         0           0          0         
UDP  [2001:db8::1]:53 sh persistent 600 mask 64
  -> [2001:db8::11]:53            1         0           0          0         
"
    );

    // One service, named as it was given.
    let one = a.ok(&["-L", "-n", "-u", "[2001:db8::1]:53"]);
    assert!(
        one.ends_with("UDP  [2001:db8::1]:53 sh persistent 600 mask 64\n  -> [2001:db8::11]:53            Tunnel  1      0          0         \n"),
        "{one}"
    );

    // list --json carries the addresses as they are.
    let json: serde_json::Value = serde_json::from_str(&a.ok(&["list", "--json"])).unwrap();
    let text = json.to_string();
    for addr in ["2001:db8::1", "2001:db8::11", "2001:db8::12", "10.1.0.13"] {
        assert!(text.contains(addr), "{addr} in {text}");
    }

    // Edits and deletions address IPv6 services and reals the same ways.
    a.ok(&[
        "-e",
        "-t",
        "[2001:db8::1]:80",
        "-r",
        "[2001:db8::11]:80",
        "-g",
        "-w",
        "0",
    ]);
    a.ok(&["-d", "-t", "[2001:db8::1]:80", "-r", "[2001:db8::12]:8080"]);
    a.ok(&[
        "-E",
        "-u",
        "[2001:db8::1]:53",
        "-s",
        "sh",
        "-p",
        "60",
        "-M",
        "48",
    ]);
    a.ok(&["-D", "-t", "[2001:db8:1234:5678:9abc:def0:1234:5678]:65535"]);
    let edited = a.save();
    assert_eq!(
        edited,
        "\
-A -t 10.0.0.100:80 -s rr
-a -t 10.0.0.100:80 -r [2001:db8::13]:80 -i -w 1 --tun-type ipip
-A -t [2001:db8::1]:80 -s wrr
-a -t [2001:db8::1]:80 -r 10.1.0.13:80 -i -w 2 --tun-type ipip
-a -t [2001:db8::1]:80 -r [2001:db8::11]:80 -g -w 0
-A -u [2001:db8::1]:53 -s sh -p 60 -M 48
-a -u [2001:db8::1]:53 -r [2001:db8::11]:53 -i -w 1 --tun-type ipip
"
    );
    // The full prefix is ipvsadm's default and is not written.
    a.ok(&[
        "-E",
        "-u",
        "[2001:db8::1]:53",
        "-s",
        "sh",
        "-p",
        "60",
        "-M",
        "128",
    ]);
    assert!(
        a.save().contains("-A -u [2001:db8::1]:53 -s sh -p 60\n"),
        "{}",
        a.save()
    );

    // -S | -R gives back the same table.
    a.ok(&["-C"]);
    assert_eq!(a.save(), "");
    let r = a.run_stdin(&["-R"], SAVED6);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(a.save(), SAVED6);
}

/// IPv6 input ipvsadm refuses, with its message and exit code; none changes anything.
const BAD6: &[(&str, &str, i32)] = &[
    (
        "-a -t [2001:db8::1]:80 -r 10.1.0.14 -g",
        "Different address family is allowed only for tunneling servers",
        2,
    ),
    (
        "-a -t [2001:db8::1]:80 -r 10.1.0.14 -m",
        "Different address family is allowed only for tunneling servers",
        2,
    ),
    (
        "-a -t 10.0.0.100:80 -r 2001:db8::14 -g",
        "Different address family is allowed only for tunneling servers",
        2,
    ),
    (
        "-e -t [2001:db8::1]:80 -r 10.1.0.13 -g",
        "Different address family is allowed only for tunneling servers",
        2,
    ),
    (
        "-A -t [2001:db8::2]:80 -s rr -p 60 -M 129",
        "illegal ipv6 netmask specified",
        2,
    ),
    (
        "-A -t [2001:db8::2]:80 -s rr -p 60 -M 0",
        "illegal ipv6 netmask specified",
        2,
    ),
    (
        "-A -t [2001:db8::2]:80 -s rr -p 60 -M 255.255.255.0",
        "illegal ipv6 netmask specified",
        2,
    ),
    // A bracketed address needs its port.
    (
        "-a -t [2001:db8::1]:80 -r [2001:db8::14] -g",
        "illegal real server address[:port] specified",
        2,
    ),
    (
        "-A -t [2001:db8::2:80 -s rr",
        "illegal virtual server address[:port] specified",
        2,
    ),
    (
        "-A -t [2001:db8::zz]:80 -s rr",
        "illegal virtual server address[:port] specified",
        2,
    ),
    (
        "-A -t [2001:db8::1]:80 -s rr",
        "Service already exists",
        255,
    ),
    (
        "-a -t [2001:db8::1]:80 -r [2001:db8::11]:80 -g",
        "Destination already exists",
        255,
    ),
    (
        "-e -t [2001:db8::1]:80 -r [2001:db8::99]:80 -g",
        "No such destination",
        255,
    ),
    // 10.1.0.13 and a01:d:: have the same 16 bytes in the maps: still another real.
    (
        "-d -t [2001:db8::1]:80 -r [a01:d::]:80",
        "No such destination",
        255,
    ),
    ("-D -t [2001:db8::3]:80", "No such service", 255),
];

#[test]
fn bad_ipv6_input_gets_ipvsadms_message_and_exit_code_and_changes_nothing() {
    director_tests::require_root();
    let a = Attached::minimal(&[]);
    configure(&a, CONFIG6);
    let before = a.save();
    for (args, msg, code) in BAD6 {
        let argv: Vec<&str> = args.split_whitespace().collect();
        let r = a.run(&argv);
        assert_eq!(r.code, *code, "{args}: {}", r.stderr);
        assert!(r.stderr.starts_with(msg), "{args}: stderr {:?}", r.stderr);
        assert_eq!(r.stdout, "", "{args}");
        assert_eq!(a.save(), before, "{args} changed the table");
    }
}

/// The ids the maps gave a service and one of its reals.
fn ids(a: &Attached, svc: &ServiceAddr, real: Ipv6Addr) -> (u32, u32) {
    let view = a.control().service(svc).expect("the service");
    let r = view
        .reals
        .iter()
        .find(|r| r.spec.addr == real)
        .expect("the real");
    (view.id, r.id)
}

#[test]
fn ipv6_connections_are_listed_and_counted_as_ipvsadm_shows_them() {
    director_tests::require_root();
    let a = Attached::minimal(&[]);
    configure(&a, CONFIG6);
    let vip: Ipv6Addr = "2001:db8::1".parse().unwrap();
    let svc = ServiceAddr {
        proto: Protocol::Tcp,
        addr: vip.into(),
        port: 80,
    };
    let (service, real) = ids(&a, &svc, "2001:db8::11".parse().unwrap());
    let maps = StateOptions {
        bpffs: Some(a.state.clone()),
    }
    .maps_dir()
    .unwrap();
    let mut conns = Conns6::open(&maps).expect("the pinned IPv6 connection table");
    // An established flow whose last packet was 10.5 s ago: 889.5 s left of 900.
    conns
        .put(
            0,
            0,
            &Flow6 {
                proto: 6,
                client: ("2001:db8::99".parse().unwrap(), 40000),
                vip: (vip, 80),
                service,
                real,
                state: ConnState::Established,
                idle: Duration::from_millis(10_500),
            },
        )
        .unwrap();

    let listing = a.ok(&["-L", "-n", "-c"]);
    let header = "\
IPVS connection entries
pro expire state       source             virtual            destination
";
    let row = listing
        .strip_prefix(header)
        .unwrap_or_else(|| panic!("ipvsadm's -c header in\n{listing}"));
    // "%-3s %-6s %-11s %-18s %-18s %s": the expiry (mm:ss) counts down while the command
    // starts, so only its range is known.
    let (lead, rest) = row.split_at(4);
    let (expire, rest) = rest.split_at(7);
    assert_eq!(lead, "TCP ", "{listing}");
    let left = expire
        .trim_end()
        .split_once(':')
        .and_then(|(m, s)| Some(m.parse::<u64>().ok()? * 60 + s.parse::<u64>().ok()?));
    assert!(
        left.is_some_and(|s| (879..=889).contains(&s)) && expire.ends_with(' '),
        "expiry {expire:?} in\n{listing}"
    );
    assert_eq!(
        rest, "ESTABLISHED [2001:db8::99]:40000 [2001:db8::1]:80   [2001:db8::11]:80\n",
        "{listing}"
    );

    // The real's ActiveConn counts it.
    let list = a.ok(&["-L", "-n", "-t", "[2001:db8::1]:80"]);
    assert!(
        list.contains("  -> [2001:db8::11]:80            Route   3      1          0         \n"),
        "{list}"
    );
    let status = a.ok(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["tables"]["conn6_entries"], 1, "{status}");
    assert_eq!(status["tables"]["conn_entries"], 0, "{status}");
}
