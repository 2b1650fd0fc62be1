//! ipvsadm 1.31's output, byte for byte, from a [`Snapshot`] of the state: `-L` in
//! every variant, `-S`, `-c`, `--timeout`. Pure functions of their input, so every
//! layout is unit-tested against literal text.
//!
//! Two choices where ipvsadm depends on its host: `size=` in the header is the
//! connection table's capacity (IPVS prints its connection hash table size; tools skip
//! the first three lines), and without `-n` ports are named from /etc/services as ipvsadm
//! does but addresses stay numeric (ipvsadm would ask DNS; the director never does).

use std::{fmt::Write as _, net::IpAddr};

use director_common::{
    real::{Method, TunType},
    service::Scheduler,
    stats::Counters,
};
use director_control::{
    Protocol, RealSpec, ServiceSpec,
    model::{TunCsum, Tunnel},
};

use super::{hiargs::Format, portnames::PortNames};

/// A service with everything the listings show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SvcRow {
    pub spec: ServiceSpec,
    /// Counters; for `--rate`, per-second rates in the same fields.
    pub stats: Counters,
    pub reals: Vec<RealRow>,
}

/// A real server with everything the listings show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealRow {
    pub spec: RealSpec,
    pub stats: Counters,
    /// ActiveConn: live ESTABLISHED entries.
    pub active: u64,
    /// InActConn: the other live entries.
    pub inactive: u64,
    /// PersistConn: live persistence templates pointing at it.
    pub persistent: u64,
}

/// The state as the listings see it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Shown as `size=` in the header.
    pub conn_table_size: u32,
    /// Sorted by (protocol, address, port); reals by (address, port).
    pub services: Vec<SvcRow>,
}

/// One line of `-c`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnRow {
    pub proto: Protocol,
    pub client: (IpAddr, u16),
    pub virt: (IpAddr, u16),
    pub dest: (IpAddr, u16),
    /// IPVS state name: ESTABLISHED, SYN_RECV, FIN_WAIT, CLOSE, UDP, NONE (templates).
    pub state: &'static str,
    pub expire_s: u64,
}

fn proto_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
    }
}

fn proto_services(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

/// ipvsadm's name of a scheduler, and its flags as `-b` spells them.
///
/// `mh` follows IPVS: without flags it hashes the client address only; `mh-port` adds
/// the connection's ports, which is the director's default per-connection Maglev.
pub fn scheduler_name(spec: &ServiceSpec) -> (&'static str, Option<&'static str>) {
    match spec.scheduler {
        Scheduler::Maglev => (
            "mh",
            (!spec.hash_source_only || spec.hash_port).then_some("mh-port"),
        ),
        Scheduler::SourceHash => ("sh", spec.hash_port.then_some("sh-port")),
        Scheduler::RoundRobin => ("rr", None),
        Scheduler::WeightedRoundRobin => ("wrr", None),
    }
}

fn fwd_name(m: Method) -> &'static str {
    match m {
        Method::Masq => "Masq",
        Method::Tunnel => "Tunnel",
        Method::Route => "Route",
    }
}

fn fwd_switch(m: Method) -> &'static str {
    match m {
        Method::Masq => "-m",
        Method::Tunnel => "-i",
        Method::Route => "-g",
    }
}

/// ipvsadm's `addrport_to_anyname`.
pub fn addrport(
    addr: IpAddr,
    port: u16,
    proto: Protocol,
    fmt: &Format,
    names: &PortNames,
) -> String {
    let port = match (fmt.numeric, names.name(port, proto_services(proto))) {
        (false, Some(name)) => name.to_owned(),
        _ => port.to_string(),
    };
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

fn truncate(mut s: String, len: usize, addr: IpAddr) -> String {
    if addr.is_ipv4() && s.len() > len {
        s.truncate(len);
    }
    s
}

/// ipvsadm's `print_largenum`: K/M/G/T above 10^8, or every digit with `--exact`.
pub fn largenum(i: u64, exact: bool) -> String {
    if exact {
        let len = i.to_string().len();
        let width = if len <= 8 { 9 } else { len + 1 };
        return format!("{i:>width$}");
    }
    match i {
        0..100_000_000 => format!("{i:>9}"),
        100_000_000..1_000_000_000 => format!("{:>8}K", i / 1_000),
        1_000_000_000..100_000_000_000 => format!("{:>8}M", i / 1_000_000),
        100_000_000_000..100_000_000_000_000 => format!("{:>8}G", i / 1_000_000_000),
        _ => format!("{:>8}T", i / 1_000_000_000_000),
    }
}

/// The column titles (`print_title`).
pub fn title(fmt: &Format) -> String {
    const PROT: &str = "Prot LocalAddress:Port";
    const REMOTE: &str = "  -> RemoteAddress:Port\n";
    if fmt.stats {
        format!(
            "{PROT:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n{REMOTE}",
            "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"
        )
    } else if fmt.rate {
        format!(
            "{PROT:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n{REMOTE}",
            "CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"
        )
    } else if fmt.thresholds {
        format!(
            "{PROT:<33} {:<10} {:<10} {:<10} {:<10}\n{REMOTE}",
            "Uthreshold", "Lthreshold", "ActiveConn", "InActConn"
        )
    } else if fmt.persistent_conn {
        format!(
            "{PROT:<33} {:<9} {:<11} {:<10} {:<10}\n{REMOTE}",
            "Weight", "PersistConn", "ActiveConn", "InActConn"
        )
    } else if fmt.tun_info {
        "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n".to_owned()
    } else if fmt.rule {
        String::new()
    } else {
        "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n".to_owned()
    }
}

/// The header line of a full listing.
pub fn header(snap: &Snapshot) -> String {
    format!(
        "IP Virtual Server version 1.2.1 (size={})\n",
        snap.conn_table_size
    )
}

fn mask_suffix(spec: &ServiceSpec, word: &str) -> String {
    let Some(p) = spec.persistence else {
        return String::new();
    };
    match p.netmask {
        IpAddr::V4(m) if m.octets() != [255; 4] => format!(" {word} {m}"),
        IpAddr::V6(m) if m.to_bits().leading_ones() != 128 => {
            format!(" {word} {}", m.to_bits().leading_ones())
        }
        _ => String::new(),
    }
}

/// One service and its reals (`print_service_entry`).
pub fn service_entry(svc: &SvcRow, fmt: &Format, names: &PortNames) -> String {
    let spec = &svc.spec;
    let proto = spec.addr.proto;
    let vname = addrport(spec.addr.addr, spec.addr.port, proto, fmt, names);
    let svc_name = if fmt.rule {
        format!(
            "{} {vname}",
            if proto == Protocol::Tcp { "-t" } else { "-u" }
        )
    } else {
        truncate(
            format!("{:<4} {vname}", proto_name(proto)),
            33,
            spec.addr.addr,
        )
    };
    let (sched, flags) = scheduler_name(spec);
    let mut out = String::new();
    if fmt.rule {
        let _ = write!(out, "-A {svc_name} -s {sched}");
        if let Some(p) = spec.persistence {
            let _ = write!(out, " -p {}{}", p.timeout_s, mask_suffix(spec, "-M"));
        }
        if let Some(f) = flags {
            let _ = write!(out, " -b {f}");
        }
    } else if fmt.stats || fmt.rate {
        let s = &svc.stats;
        let _ = write!(out, "{svc_name:<33}");
        for n in [s.conns, s.pkts_in, s.pkts_out, s.bytes_in, s.bytes_out] {
            out.push_str(&largenum(n, fmt.exact));
        }
    } else {
        let _ = write!(out, "{svc_name} {sched}");
        if let Some(f) = flags {
            let _ = write!(out, " ({f})");
        }
        if let Some(p) = spec.persistence {
            let _ = write!(
                out,
                " persistent {}{}",
                p.timeout_s,
                mask_suffix(spec, "mask")
            );
        }
    }
    out.push('\n');
    for r in &svc.reals {
        out.push_str(&real_entry(&svc_name, proto, r, fmt, names));
    }
    out
}

/// ipvsadm's names of the checksum options in `--tun-info` (`-c`, `+c`, `r+c`).
fn csum_info(c: TunCsum) -> &'static str {
    match c {
        TunCsum::NoCsum => "-c",
        TunCsum::Csum => "+c",
        TunCsum::RemCsum => "r+c",
    }
}

/// The checksum option as `-S` writes it.
fn csum_opt(c: TunCsum) -> &'static str {
    match c {
        TunCsum::NoCsum => "--tun-nocsum",
        TunCsum::Csum => "--tun-csum",
        TunCsum::RemCsum => "--tun-remcsum",
    }
}

/// A tunnel real's column of `-L --tun-info`: `ipip`, `gue:PORT:CSUM`, `gre:CSUM`.
fn tunnel_info(t: &Tunnel) -> String {
    match t.kind {
        TunType::Ipip => "ipip".to_owned(),
        TunType::Gue => format!("gue:{}:{}", t.port, csum_info(t.csum)),
        TunType::Gre => format!("gre:{}", csum_info(t.csum)),
    }
}

/// The tunnel options at the end of a tunnel real's `-S` line (every option, defaults
/// included, as ipvsadm writes them).
fn tunnel_rule(t: &Tunnel) -> String {
    match t.kind {
        TunType::Ipip => " --tun-type ipip".to_owned(),
        TunType::Gue => format!(" --tun-type gue --tun-port {} {}", t.port, csum_opt(t.csum)),
        TunType::Gre => format!(" --tun-type gre {}", csum_opt(t.csum)),
    }
}

fn real_entry(
    svc_name: &str,
    proto: Protocol,
    r: &RealRow,
    fmt: &Format,
    names: &PortNames,
) -> String {
    let spec = &r.spec;
    let dname = addrport(spec.addr, spec.port, proto, fmt, names);
    if fmt.rule {
        let tun = if spec.method == Method::Tunnel {
            tunnel_rule(&spec.tunnel)
        } else {
            String::new()
        };
        return format!(
            "-a {svc_name} -r {dname} {} -w {}{tun}\n",
            fwd_switch(spec.method),
            spec.weight
        );
    }
    let dname = truncate(dname, 28, spec.addr);
    let s = &r.stats;
    if fmt.stats {
        let mut line = format!("  -> {dname:<28}");
        for n in [s.conns, s.pkts_in, s.pkts_out, s.bytes_in, s.bytes_out] {
            line.push_str(&largenum(n, fmt.exact));
        }
        line.push('\n');
        line
    } else if fmt.rate {
        format!(
            "  -> {dname:<28} {:>8} {:>8} {:>8}{}{}\n",
            s.conns,
            s.pkts_in,
            s.pkts_out,
            largenum(s.bytes_in, fmt.exact),
            largenum(s.bytes_out, fmt.exact)
        )
    } else if fmt.thresholds {
        format!(
            "  -> {dname:<28} {:<10} {:<10} {:<10} {:<10}\n",
            0, 0, r.active, r.inactive
        )
    } else if fmt.persistent_conn {
        format!(
            "  -> {dname:<28} {:<9} {:<11} {:<10} {:<10}\n",
            spec.weight, r.persistent, r.active, r.inactive
        )
    } else if fmt.tun_info {
        let info = if spec.method == Method::Tunnel {
            tunnel_info(&spec.tunnel)
        } else {
            "n/a".to_owned()
        };
        format!(
            "  -> {dname:<28} {:<7} {info:<13} {:<6} {:<10} {:<10}\n",
            fwd_name(spec.method),
            spec.weight,
            r.active,
            r.inactive
        )
    } else {
        format!(
            "  -> {dname:<28} {:<7} {:<6} {:<10} {:<10}\n",
            fwd_name(spec.method),
            spec.weight,
            r.active,
            r.inactive
        )
    }
}

/// `-L` of everything (`list_all`); with `fmt.rule`, `-S`.
pub fn list_all(snap: &Snapshot, fmt: &Format, names: &PortNames) -> String {
    let mut out = if fmt.rule {
        String::new()
    } else {
        header(snap)
    };
    out.push_str(&title(fmt));
    for svc in &snap.services {
        out.push_str(&service_entry(svc, fmt, names));
    }
    out
}

/// `--timeout`.
pub fn timeouts(tcp: u32, tcp_fin: u32, udp: u32) -> String {
    format!("Timeout (tcp tcpfin udp): {tcp} {tcp_fin} {udp}\n")
}

/// `-c` (`list_conn`).
pub fn connections(rows: &[ConnRow], fmt: &Format, names: &PortNames) -> String {
    let mut out = String::from("IPVS connection entries\n");
    if fmt.persistent_conn {
        let _ = writeln!(
            out,
            "pro expire {:<11} {:<18} {:<18} {:<18} {:<16} pe_data",
            "state", "source", "virtual", "destination", "pe name"
        );
    } else {
        let _ = writeln!(
            out,
            "pro expire {:<11} {:<18} {:<18} destination",
            "state", "source", "virtual"
        );
    }
    for c in rows {
        let name = |(a, p): (IpAddr, u16)| addrport(a, p, c.proto, fmt, names);
        let expire = format!("{:02}:{:02}", c.expire_s / 60, c.expire_s % 60);
        let _ = writeln!(
            out,
            "{:<3} {expire:<6} {:<11} {:<18} {:<18} {}",
            proto_name(c.proto),
            c.state,
            name(c.client),
            name(c.virt),
            name(c.dest)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use director_control::model::Persistence;

    use super::*;

    fn v4(s: &str) -> IpAddr {
        IpAddr::V4(s.parse().unwrap())
    }

    fn names() -> PortNames {
        PortNames::parse("http 80/tcp www\ndomain 53/udp\ndomain 53/tcp\n")
    }

    fn real(
        addr: &str,
        port: u16,
        method: Method,
        weight: u32,
        active: u64,
        inactive: u64,
    ) -> RealRow {
        RealRow {
            spec: RealSpec::new(v4(addr), port, method, weight),
            stats: Counters::default(),
            active,
            inactive,
            persistent: 0,
        }
    }

    fn snap() -> Snapshot {
        let mut web = ServiceSpec::new(Protocol::Tcp, v4("10.0.0.1"), 80)
            .scheduler(Scheduler::WeightedRoundRobin)
            .persistent(360, v4("255.255.255.0"));
        web.hash_port = false;
        let dns = ServiceSpec::new(Protocol::Udp, v4("10.0.0.1"), 53);
        let mut sticky = ServiceSpec::new(Protocol::Tcp, v4("10.0.0.2"), 443);
        sticky.hash_source_only = true;
        Snapshot {
            conn_table_size: 1_048_576,
            services: vec![
                SvcRow {
                    spec: web,
                    stats: Counters {
                        conns: 12,
                        pkts_in: 345,
                        bytes_in: 99_999_999,
                        pkts_out: 0,
                        bytes_out: 100_000_000,
                    },
                    reals: vec![
                        real("192.168.10.1", 80, Method::Masq, 1, 3, 7),
                        real("192.168.10.2", 8080, Method::Masq, 0, 0, 1),
                    ],
                },
                SvcRow {
                    spec: sticky,
                    stats: Counters::default(),
                    reals: vec![real("10.1.0.11", 443, Method::Tunnel, 65535, 0, 0)],
                },
                SvcRow {
                    spec: dns,
                    stats: Counters::default(),
                    reals: vec![real("10.1.0.11", 53, Method::Route, 2, 0, 4)],
                },
            ],
        }
    }

    fn numeric() -> Format {
        Format {
            numeric: true,
            ..Format::default()
        }
    }

    #[test]
    fn list_numeric_matches_ipvsadm_byte_for_byte() {
        let want = "\
IP Virtual Server version 1.2.1 (size=1048576)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.0.0.1:80 wrr persistent 360 mask 255.255.255.0
  -> 192.168.10.1:80              Masq    1      3          7         
  -> 192.168.10.2:8080            Masq    0      0          1         
TCP  10.0.0.2:443 mh
  -> 10.1.0.11:443                Tunnel  65535  0          0         
UDP  10.0.0.1:53 mh (mh-port)
  -> 10.1.0.11:53                 Route   2      0          4         
";
        assert_eq!(list_all(&snap(), &numeric(), &names()), want);
    }

    #[test]
    fn list_without_numeric_names_ports_from_etc_services() {
        let out = list_all(&snap(), &Format::default(), &names());
        assert!(
            out.contains("\nTCP  10.0.0.1:http wrr persistent 360 mask 255.255.255.0\n"),
            "{out}"
        );
        assert!(
            out.contains("\n  -> 192.168.10.1:http            Masq    1 "),
            "{out}"
        );
        assert!(
            out.contains("\n  -> 192.168.10.2:8080            Masq"),
            "{out}"
        );
        assert!(
            out.contains("\nUDP  10.0.0.1:domain mh (mh-port)\n"),
            "{out}"
        );
    }

    #[test]
    fn save_prints_one_command_per_object() {
        let fmt = Format {
            numeric: true,
            rule: true,
            ..Format::default()
        };
        let want = "\
-A -t 10.0.0.1:80 -s wrr -p 360 -M 255.255.255.0
-a -t 10.0.0.1:80 -r 192.168.10.1:80 -m -w 1
-a -t 10.0.0.1:80 -r 192.168.10.2:8080 -m -w 0
-A -t 10.0.0.2:443 -s mh
-a -t 10.0.0.2:443 -r 10.1.0.11:443 -i -w 65535 --tun-type ipip
-A -u 10.0.0.1:53 -s mh -b mh-port
-a -u 10.0.0.1:53 -r 10.1.0.11:53 -g -w 2
";
        assert_eq!(list_all(&snap(), &fmt, &names()), want);
    }

    #[test]
    fn a_full_netmask_and_sh_port_print_as_ipvsadm_prints_them() {
        let mut spec = ServiceSpec::new(Protocol::Tcp, v4("10.0.0.3"), 0)
            .scheduler(Scheduler::SourceHash)
            .persistent(3600, v4("255.255.255.255"));
        spec.hash_port = true;
        let svc = SvcRow {
            spec,
            stats: Counters::default(),
            reals: vec![],
        };
        assert_eq!(
            service_entry(&svc, &numeric(), &names()),
            "TCP  10.0.0.3:0 sh (sh-port) persistent 3600\n"
        );
        let rule = Format {
            numeric: true,
            rule: true,
            ..Format::default()
        };
        assert_eq!(
            service_entry(&svc, &rule, &names()),
            "-A -t 10.0.0.3:0 -s sh -p 3600 -b sh-port\n"
        );
        let plain = SvcRow {
            spec: ServiceSpec::new(Protocol::Tcp, v4("10.0.0.3"), 80)
                .scheduler(Scheduler::RoundRobin),
            stats: Counters::default(),
            reals: vec![],
        };
        assert_eq!(
            service_entry(&plain, &numeric(), &names()),
            "TCP  10.0.0.3:80 rr\n"
        );
        assert_eq!(
            service_entry(&plain, &rule, &names()),
            "-A -t 10.0.0.3:80 -s rr\n"
        );
    }

    #[test]
    fn numbers_switch_to_k_m_g_t_at_ipvsadm_boundaries() {
        let cases: [(u64, &str); 12] = [
            (0, "        0"),
            (99_999_999, " 99999999"),
            (100_000_000, "  100000K"),
            (999_999_999, "  999999K"),
            (1_000_000_000, "    1000M"),
            (99_999_999_999, "   99999M"),
            (100_000_000_000, "     100G"),
            (99_999_999_999_999, "   99999G"),
            (100_000_000_000_000, "     100T"),
            (u64::MAX, "18446744T"),
            (12_345, "    12345"),
            (123_456_789, "  123456K"),
        ];
        for (n, want) in cases {
            assert_eq!(largenum(n, false), want, "{n}");
        }
        assert_eq!(largenum(0, true), "        0");
        assert_eq!(largenum(12_345_678, true), " 12345678");
        assert_eq!(largenum(123_456_789, true), " 123456789");
        assert_eq!(largenum(u64::MAX, true), " 18446744073709551615");
    }

    #[test]
    fn stats_list_uses_large_number_columns() {
        let fmt = Format {
            numeric: true,
            stats: true,
            ..Format::default()
        };
        let mut s = snap();
        s.services.truncate(1);
        s.services[0].reals[0].stats = Counters {
            conns: 1,
            pkts_in: 2,
            bytes_in: 3,
            pkts_out: 4,
            bytes_out: 5,
        };
        s.services[0].reals.truncate(1);
        let want = "\
IP Virtual Server version 1.2.1 (size=1048576)
Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes
  -> RemoteAddress:Port
TCP  10.0.0.1:80                        12      345        0 99999999  100000K
  -> 192.168.10.1:80                     1        2        4        3        5
";
        assert_eq!(list_all(&s, &fmt, &names()), want);
        let exact = Format { exact: true, ..fmt };
        let out = list_all(&s, &exact, &names());
        assert!(
            out.contains(
                "TCP  10.0.0.1:80                        12      345        0 99999999 100000000\n"
            ),
            "{out}"
        );
    }

    #[test]
    fn rate_list_prints_packet_rates_plainly_and_byte_rates_large() {
        let fmt = Format {
            numeric: true,
            rate: true,
            ..Format::default()
        };
        let mut s = snap();
        s.services.truncate(1);
        s.services[0].reals.truncate(1);
        s.services[0].stats = Counters {
            conns: 5,
            pkts_in: 50,
            bytes_in: 5000,
            pkts_out: 0,
            bytes_out: 0,
        };
        s.services[0].reals[0].stats = s.services[0].stats;
        let want = "\
IP Virtual Server version 1.2.1 (size=1048576)
Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS
  -> RemoteAddress:Port
TCP  10.0.0.1:80                         5       50        0     5000        0
  -> 192.168.10.1:80                     5       50        0     5000        0
";
        assert_eq!(list_all(&s, &fmt, &names()), want);
    }

    #[test]
    fn thresholds_list_keeps_the_service_line_and_shows_zero_thresholds() {
        let fmt = Format {
            numeric: true,
            thresholds: true,
            ..Format::default()
        };
        let mut s = snap();
        s.services.truncate(1);
        let want = "\
IP Virtual Server version 1.2.1 (size=1048576)
Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn 
  -> RemoteAddress:Port
TCP  10.0.0.1:80 wrr persistent 360 mask 255.255.255.0
  -> 192.168.10.1:80              0          0          3          7         
  -> 192.168.10.2:8080            0          0          0          1         
";
        assert_eq!(list_all(&s, &fmt, &names()), want);
    }

    #[test]
    fn persistent_conn_and_tun_info_lists() {
        let mut s = snap();
        s.services.remove(0);
        s.services[0].reals[0].persistent = 4;
        let pc = Format {
            numeric: true,
            persistent_conn: true,
            ..Format::default()
        };
        let out = list_all(&s, &pc, &names());
        assert!(
            out.contains(
                "Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn \n"
            ),
            "{out}"
        );
        assert!(
            out.contains(
                "\n  -> 10.1.0.11:443                65535     4           0          0         \n"
            ),
            "{out}"
        );
        let ti = Format {
            numeric: true,
            tun_info: true,
            ..Format::default()
        };
        let out = list_all(&s, &ti, &names());
        assert!(out.contains("  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n"), "{out}");
        assert!(out.contains("\n  -> 10.1.0.11:443                Tunnel  ipip          65535  0          0         \n"), "{out}");
        assert!(out.contains("\n  -> 10.1.0.11:53                 Route   n/a           2      0          4         \n"), "{out}");
    }

    fn tunnel_snap() -> Snapshot {
        let mut gue = real("10.1.0.12", 443, Method::Tunnel, 2, 0, 0);
        gue.spec.tunnel = Tunnel {
            kind: TunType::Gue,
            port: 6080,
            csum: TunCsum::Csum,
        };
        let mut gre = real("10.1.0.13", 443, Method::Tunnel, 3, 0, 0);
        gre.spec.tunnel = Tunnel {
            kind: TunType::Gre,
            port: 0,
            csum: TunCsum::NoCsum,
        };
        let mut gue_rem = real("10.1.0.14", 443, Method::Tunnel, 1, 0, 0);
        gue_rem.spec.tunnel = Tunnel {
            kind: TunType::Gue,
            port: 7000,
            csum: TunCsum::RemCsum,
        };
        Snapshot {
            services: vec![SvcRow {
                spec: ServiceSpec::new(Protocol::Tcp, v4("10.0.0.2"), 443)
                    .scheduler(Scheduler::WeightedRoundRobin),
                stats: Counters::default(),
                reals: vec![
                    real("10.1.0.11", 443, Method::Tunnel, 1, 0, 0),
                    gue,
                    gre,
                    gue_rem,
                ],
            }],
            ..Snapshot::default()
        }
    }

    #[test]
    fn tunnel_types_list_and_save_as_ipvsadm_writes_them() {
        let s = tunnel_snap();
        let ti = Format {
            numeric: true,
            tun_info: true,
            ..Format::default()
        };
        let out = list_all(&s, &ti, &names());
        for line in [
            "\n  -> 10.1.0.11:443                Tunnel  ipip          1      0          0         \n",
            "\n  -> 10.1.0.12:443                Tunnel  gue:6080:+c   2      0          0         \n",
            "\n  -> 10.1.0.13:443                Tunnel  gre:-c        3      0          0         \n",
            "\n  -> 10.1.0.14:443                Tunnel  gue:7000:r+c  1      0          0         \n",
        ] {
            assert!(out.contains(line), "{line:?} in\n{out}");
        }
        // The plain list has no tunnel column, as in ipvsadm.
        let out = list_all(&s, &numeric(), &names());
        assert!(
            out.contains(
                "\n  -> 10.1.0.12:443                Tunnel  2      0          0         \n"
            ),
            "{out}"
        );
        let rule = Format {
            numeric: true,
            rule: true,
            ..Format::default()
        };
        let out = list_all(&s, &rule, &names());
        assert_eq!(
            out,
            "\
-A -t 10.0.0.2:443 -s wrr
-a -t 10.0.0.2:443 -r 10.1.0.11:443 -i -w 1 --tun-type ipip
-a -t 10.0.0.2:443 -r 10.1.0.12:443 -i -w 2 --tun-type gue --tun-port 6080 --tun-csum
-a -t 10.0.0.2:443 -r 10.1.0.13:443 -i -w 3 --tun-type gre --tun-nocsum
-a -t 10.0.0.2:443 -r 10.1.0.14:443 -i -w 1 --tun-type gue --tun-port 7000 --tun-remcsum
"
        );
    }

    #[test]
    fn saved_tunnel_reals_restore_to_the_same_reals() {
        let s = tunnel_snap();
        let rule = Format {
            numeric: true,
            rule: true,
            ..Format::default()
        };
        let saved = list_all(&s, &rule, &names());
        let restored: Vec<RealSpec> = saved
            .lines()
            .filter(|l| l.starts_with("-a "))
            .map(|l| match super::super::parse_line(l).unwrap() {
                super::super::hiargs::Command::AddServer(a) => super::super::exec::real_spec_of(&a),
                c => panic!("{c:?}"),
            })
            .collect();
        let want: Vec<RealSpec> = s.services[0].reals.iter().map(|r| r.spec).collect();
        assert_eq!(restored, want);
    }

    #[test]
    fn long_addresses_are_cut_as_ipvsadm_cuts_them() {
        let spec = ServiceSpec::new(Protocol::Tcp, v4("255.255.255.255"), 65535);
        let svc = SvcRow {
            spec,
            stats: Counters::default(),
            reals: vec![real("255.255.255.254", 65535, Method::Masq, 1, 0, 0)],
        };
        // 22 characters of address:port: nothing to cut at 33 (service) or 28 (real).
        let out = service_entry(&svc, &numeric(), &names());
        assert_eq!(
            out,
            "TCP  255.255.255.255:65535 mh (mh-port)\n  -> 255.255.255.254:65535        Masq    1      0          0         \n"
        );
        assert_eq!(truncate("x".repeat(40), 28, v4("1.2.3.4")).len(), 28);
        assert_eq!(
            truncate("x".repeat(40), 28, IpAddr::V6("::1".parse().unwrap())).len(),
            40
        );
    }

    #[test]
    fn connection_entries_show_expiry_as_minutes_and_seconds() {
        let rows = vec![
            ConnRow {
                proto: Protocol::Tcp,
                client: (v4("10.0.0.2"), 40000),
                virt: (v4("10.0.0.100"), 80),
                dest: (v4("10.1.0.11"), 80),
                state: "ESTABLISHED",
                expire_s: 899,
            },
            ConnRow {
                proto: Protocol::Udp,
                client: (v4("10.0.0.2"), 5353),
                virt: (v4("10.0.0.100"), 53),
                dest: (v4("10.1.0.12"), 53),
                state: "UDP",
                expire_s: 5,
            },
        ];
        let want = "\
IPVS connection entries
pro expire state       source             virtual            destination
TCP 14:59  ESTABLISHED 10.0.0.2:40000     10.0.0.100:80      10.1.0.11:80
UDP 00:05  UDP         10.0.0.2:5353      10.0.0.100:53      10.1.0.12:53
";
        assert_eq!(connections(&rows, &numeric(), &names()), want);
        let named = connections(&rows, &Format::default(), &names());
        assert!(
            named.contains(
                "TCP 14:59  ESTABLISHED 10.0.0.2:40000     10.0.0.100:http    10.1.0.11:http\n"
            ),
            "{named}"
        );
    }

    #[test]
    fn timeout_line() {
        assert_eq!(
            timeouts(900, 120, 300),
            "Timeout (tcp tcpfin udp): 900 120 300\n"
        );
    }

    #[test]
    fn a_v6_persistence_mask_prints_as_a_prefix() {
        let addr = IpAddr::V6("2001:db8::1".parse().unwrap());
        let mut spec = ServiceSpec::new(Protocol::Tcp, addr, 80);
        spec.persistence = Some(Persistence {
            timeout_s: 60,
            netmask: IpAddr::V6(std::net::Ipv6Addr::from_bits(!0u128 << 64)),
        });
        assert_eq!(mask_suffix(&spec, "mask"), " mask 64");
    }
}
