//! The second pass: from what was typed ([`LowArgs`]) to one validated [`Command`],
//! with ipvsadm 1.31's checks in ipvsadm's order, so the first error reported is the
//! one ipvsadm would report:
//!
//! 1. the first option must be a command (`-h` and `--version` answer at once);
//! 2. each further option in turn: its value, and "multiple '...' options specified";
//! 3. popt's error, if splitting stopped early;
//! 4. `--set`'s three values, then any other positional argument;
//! 5. `-b` against the scheduler;
//! 6. the command/option table ("You need to supply...", "Illegal ... option");
//! 7. per command: zero port, one-packet, real-server family, tunnel options, listing
//!    options.
//!
//! Nothing here touches the state: what the director cannot do (a scheduler it lacks,
//! fwmark services...) is refused when the command is applied.

use std::net::{IpAddr, Ipv4Addr};

use director_common::real::Method;

use super::{
    error::{IpvsadmError, cmdline},
    lowargs::{Flag, LowArgs, Opt},
    portnames::PortNames,
    values::{self, AddrError},
};

/// ipvsadm's `MAX_TIMEOUT`: 31 days.
pub const MAX_TIMEOUT: i64 = 86400 * 31;
/// ipvsadm's default persistence timeout (`-p` without a value).
pub const DEFAULT_PERSISTENT_TIMEOUT: u32 = 360;

/// The protocol of an address-based virtual service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VProto {
    Tcp,
    Udp,
    Sctp,
}

impl VProto {
    /// The protocol name /etc/services uses.
    pub fn services_name(self) -> &'static str {
        match self {
            VProto::Tcp => "tcp",
            VProto::Udp => "udp",
            VProto::Sctp => "sctp",
        }
    }
}

/// A virtual service as given on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VirtualService {
    Addr {
        proto: VProto,
        addr: IpAddr,
        port: u16,
    },
    Fwmark {
        mark: u32,
        ipv6: bool,
    },
}

/// The persistence granularity (`-M`): a dotted mask for IPv4, a prefix for IPv6.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PersistMask {
    V4(Ipv4Addr),
    V6(u8),
}

/// IPVS's three scheduler flag bits (`-b`); what they mean depends on the scheduler.
pub const SCHED_FLAG_1: u8 = 1;
pub const SCHED_FLAG_2: u8 = 2;
pub const SCHED_FLAG_3: u8 = 4;

/// `-A` / `-E`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceArgs {
    pub service: VirtualService,
    /// `-s`; None: the default.
    pub scheduler: Option<String>,
    /// `-p`, with its timeout.
    pub persistent: Option<u32>,
    pub netmask: Option<PersistMask>,
    /// `-b`, as IPVS's flag bits; None when not given.
    pub sched_flags: Option<u8>,
    /// `-o`.
    pub ops: bool,
    /// `--pe`.
    pub pe: Option<String>,
}

/// IPVS tunnel types (`--tun-type`), as the maps store them.
pub use director_common::real::TunType;
/// The checksum option of a tunnel (`--tun-nocsum`, `--tun-csum`, `--tun-remcsum`).
pub use director_control::model::TunCsum;

/// `-a` / `-e` / `-d`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerArgs {
    pub service: VirtualService,
    pub addr: IpAddr,
    /// The real port: as given, else the virtual port; DR and TUN force the virtual port
    /// (for `-a` and `-e`).
    pub port: u16,
    pub method: Method,
    pub weight: u32,
    pub u_threshold: u32,
    pub l_threshold: u32,
    pub tun_type: TunType,
    /// `--tun-port` (GUE), 0 when not given.
    pub tun_port: u16,
    pub tun_csum: TunCsum,
}

/// How `-L` / `-S` print.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Format {
    pub numeric: bool,
    pub rule: bool,
    pub stats: bool,
    pub rate: bool,
    pub thresholds: bool,
    pub persistent_conn: bool,
    pub nosort: bool,
    pub exact: bool,
    pub tun_info: bool,
}

/// What `-L` lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListWhat {
    All,
    Service(VirtualService),
    Connections,
    Timeouts,
    Daemon,
}

/// The sync daemon's state argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DaemonState {
    Master,
    Backup,
}

/// One ipvsadm command, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    AddService(ServiceArgs),
    EditService(ServiceArgs),
    DeleteService(VirtualService),
    Clear,
    List {
        what: ListWhat,
        format: Format,
    },
    AddServer(ServerArgs),
    EditServer(ServerArgs),
    DeleteServer(ServerArgs),
    /// `--set tcp tcpfin udp` (0 keeps a value).
    SetTimeouts {
        tcp: u32,
        tcp_fin: u32,
        udp: u32,
    },
    StartDaemon(DaemonState),
    StopDaemon(DaemonState),
    Restore,
    Save {
        numeric: bool,
    },
    Zero(Option<VirtualService>),
    Help,
    Version,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cmd {
    Add = 0,
    Edit,
    Del,
    Flush,
    List,
    AddSrv,
    DelSrv,
    EditSrv,
    Timeout,
    StartD,
    StopD,
    Restore,
    Save,
    Zero,
}

const CMD_NAMES: [&str; 14] = [
    "add-service",
    "edit-service",
    "delete-service",
    "flush",
    "list",
    "add-server",
    "delete-server",
    "edit-server",
    "set",
    "start-daemon",
    "stop-daemon",
    "restore",
    "save",
    "zero",
];

/// ipvsadm's option classes (`OPTC_*`), in the order of its table.
const OPT_NAMES: [&str; 34] = [
    "numeric",
    "connection",
    "service-address",
    "scheduler",
    "persistent",
    "netmask",
    "real-server",
    "forwarding-method",
    "weight",
    "u-threshold",
    "l-threshold",
    "mcast-interface",
    "timeout",
    "daemon",
    "stats",
    "rate",
    "thresholds",
    "persistent-conn",
    "nosort",
    "syncid",
    "exact",
    "ops",
    "pe",
    "sched-flags",
    "mcast-group",
    "mcast-port",
    "mcast-ttl",
    "sync-maxlen",
    "tun-info",
    "tun-type",
    "tun-port",
    "tun-nocsum",
    "tun-csum",
    "tun-remcsum",
];

const O_NUMERIC: usize = 0;
const O_CONNECTION: usize = 1;
const O_SERVICE: usize = 2;
const O_SCHEDULER: usize = 3;
const O_PERSISTENT: usize = 4;
const O_NETMASK: usize = 5;
const O_SERVER: usize = 6;
const O_FORWARD: usize = 7;
const O_WEIGHT: usize = 8;
const O_UTHRESHOLD: usize = 9;
const O_LTHRESHOLD: usize = 10;
const O_MCAST: usize = 11;
const O_TIMEOUT: usize = 12;
const O_DAEMON: usize = 13;
const O_STATS: usize = 14;
const O_RATE: usize = 15;
const O_THRESHOLDS: usize = 16;
const O_PERSISTENTCONN: usize = 17;
const O_NOSORT: usize = 18;
const O_SYNCID: usize = 19;
const O_EXACT: usize = 20;
const O_ONEPACKET: usize = 21;
const O_PE: usize = 22;
const O_SCHED_FLAGS: usize = 23;
const O_MCAST_GROUP: usize = 24;
const O_MCAST_PORT: usize = 25;
const O_MCAST_TTL: usize = 26;
const O_SYNC_MAXLEN: usize = 27;
const O_TUN_INFO: usize = 28;
const O_TUN_TYPE: usize = 29;
const O_TUN_PORT: usize = 30;
const O_TUN_NOCSUM: usize = 31;
const O_TUN_CSUM: usize = 32;
const O_TUN_REMCSUM: usize = 33;

/// ipvsadm's `commands_v_options`: per command, per option class: `+` compulsory, `x`
/// illegal, `1` at most one of the `1`s, `.` optional.
const COMMANDS_V_OPTIONS: [&str; 14] = [
    /* add-service    */ "xx+...xxxxxxxxxxxxxxx...xxxxxxxxxx",
    /* edit-service   */ "xx+...xxxxxxxxxxxxxxx...xxxxxxxxxx",
    /* delete-service */ "xx+xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    /* flush          */ "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    /* list           */ ".11xxxxxxxxx11.......xxxxxxx.xxxxx",
    /* add-server     */ "xx+xxx+....xxxxxxxxxxxxxxxxxx.....",
    /* delete-server  */ "xx+xxx+xxxxxxxxxxxxxxxxxxxxxxxxxxx",
    /* edit-server    */ "xx+xxx+....xxxxxxxxxxxxxxxxxx.....",
    /* set            */ "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    /* start-daemon   */ "xxxxxxxxxxx.xxxxxxx.xxxx....xxxxxx",
    /* stop-daemon    */ "xxxxxxxxxxxxxxxxxxx.xxxxxxxxxxxxxx",
    /* restore        */ "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    /* save           */ ".xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    /* zero           */ "xx.xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
];

/// ipvsadm's `tunnel_types_v_options` over (tun-port, tun-nocsum, tun-csum, tun-remcsum).
const TUNNEL_TYPES_V_OPTIONS: [(TunType, &str); 3] = [
    (TunType::Ipip, "xxxx"),
    (TunType::Gue, "+111"),
    (TunType::Gre, "x111"),
];
const TUN_OPTS: [usize; 4] = [O_TUN_PORT, O_TUN_NOCSUM, O_TUN_CSUM, O_TUN_REMCSUM];

/// Everything the options said, before the per-command checks.
struct Raw {
    cmd: Cmd,
    options: u64,
    proto: Option<VProto>,
    addr: Option<(IpAddr, u16)>,
    fwmark: Option<(u32, bool)>,
    scheduler: Option<String>,
    persistent: Option<u32>,
    netmask: Option<PersistMask>,
    real: Option<(IpAddr, u16)>,
    method: Method,
    weight: u32,
    u_threshold: u32,
    l_threshold: u32,
    format: Format,
    ops: bool,
    pe: Option<String>,
    sched_flags_arg: Option<String>,
    tun_type: TunType,
    tun_port: u16,
    tun_csum: TunCsum,
    daemon: Option<DaemonState>,
}

fn has(options: u64, o: usize) -> bool {
    options & (1 << o) != 0
}

fn set_option(options: &mut u64, o: usize) -> Result<(), IpvsadmError> {
    if has(*options, o) {
        return Err(cmdline(format!(
            "multiple '{}' options specified",
            OPT_NAMES[o]
        )));
    }
    *options |= 1 << o;
    Ok(())
}

fn command_of(flag: Flag) -> Option<Cmd> {
    Some(match flag {
        Flag::AddService => Cmd::Add,
        Flag::EditService => Cmd::Edit,
        Flag::DeleteService => Cmd::Del,
        Flag::Clear => Cmd::Flush,
        Flag::List => Cmd::List,
        Flag::Zero => Cmd::Zero,
        Flag::AddServer => Cmd::AddSrv,
        Flag::EditServer => Cmd::EditSrv,
        Flag::DeleteServer => Cmd::DelSrv,
        Flag::Set => Cmd::Timeout,
        Flag::Restore => Cmd::Restore,
        Flag::Save => Cmd::Save,
        Flag::StartDaemon => Cmd::StartD,
        Flag::StopDaemon => Cmd::StopD,
        _ => return None,
    })
}

fn value(o: &Opt) -> &str {
    o.value.as_deref().unwrap_or("")
}

/// Parse ipvsadm's arguments (without the program name, which `prog` is, for messages).
pub fn parse(prog: &str, low: &LowArgs, names: &PortNames) -> Result<Command, IpvsadmError> {
    let try_help = || IpvsadmError::TryHelp(prog.to_owned());
    // popt reports an error on the first option instead of the option: ipvsadm then
    // only says to try -h.
    let Some(first) = low.opts.first() else {
        return Err(try_help());
    };
    let cmd = match first.flag {
        Flag::Help => return Ok(Command::Help),
        Flag::Version => return Ok(Command::Version),
        f => command_of(f).ok_or_else(try_help)?,
    };
    let mut raw = Raw {
        cmd,
        options: 0,
        proto: None,
        addr: None,
        fwmark: None,
        scheduler: None,
        persistent: None,
        netmask: None,
        real: None,
        method: Method::Route,
        weight: 1,
        u_threshold: 0,
        l_threshold: 0,
        format: Format::default(),
        ops: false,
        pe: None,
        sched_flags_arg: None,
        tun_type: TunType::Ipip,
        tun_port: 0,
        tun_csum: TunCsum::NoCsum,
        daemon: None,
    };
    match cmd {
        Cmd::StartD => {
            raw.daemon = Some(
                daemon_state(value(first))
                    .ok_or_else(|| cmdline("illegal start-daemon parameter specified"))?,
            )
        }
        Cmd::StopD => {
            raw.daemon = Some(
                daemon_state(value(first))
                    .ok_or_else(|| cmdline("illegal start_daemon specified"))?,
            )
        }
        _ => {}
    }
    for o in &low.opts[1..] {
        option(&mut raw, o, names)?;
    }
    if let Some(e) = &low.error {
        return Err(IpvsadmError::Popt {
            option: e.text.clone(),
            reason: e.reason,
        });
    }
    let mut positional = low.positional.iter();
    let mut timeouts = [0u32; 3];
    if cmd == Cmd::Timeout {
        let given: Vec<&String> = positional.by_ref().take(3).collect();
        if given.len() < 3 {
            return Err(cmdline("--set option requires 3 timeout values"));
        }
        for (t, v) in timeouts.iter_mut().zip(given) {
            *t = timeout(Some(v), 0)?;
        }
    }
    if let Some(extra) = positional.next() {
        return Err(cmdline(format!("unexpected argument {extra}")));
    }
    let sched_flags = match &raw.sched_flags_arg {
        Some(arg) => Some(sched_flags(raw.scheduler.as_deref(), arg)?),
        None => None,
    };
    generic_opt_check(cmd, raw.options)?;
    build(raw, sched_flags, timeouts)
}

fn daemon_state(s: &str) -> Option<DaemonState> {
    match s {
        "master" => Some(DaemonState::Master),
        "backup" => Some(DaemonState::Backup),
        _ => None,
    }
}

/// ipvsadm's `parse_timeout`: None (`-p` alone) is 360 s.
fn timeout(v: Option<&str>, min: i64) -> Result<u32, IpvsadmError> {
    let Some(v) = v else {
        return Ok(DEFAULT_PERSISTENT_TIMEOUT);
    };
    values::number(v, min, MAX_TIMEOUT)
        .map(|n| n as u32)
        .ok_or_else(|| cmdline(format!("invalid timeout value `{v}' specified")))
}

fn address_error(what: &str, e: AddrError) -> IpvsadmError {
    match e {
        AddrError::Invalid => cmdline(format!("illegal {what} address[:port] specified")),
        AddrError::HostName => cmdline(format!(
            "illegal {what} address[:port] specified (host names are not looked up: give an IP address)"
        )),
    }
}

fn option(raw: &mut Raw, o: &Opt, names: &PortNames) -> Result<(), IpvsadmError> {
    let v = value(o);
    let number = |min: i64, max: i64, msg: &str| {
        values::number(v, min, max)
            .map(|n| n as u32)
            .ok_or_else(|| cmdline(msg.to_owned()))
    };
    match o.flag {
        Flag::TcpService | Flag::UdpService | Flag::SctpService => {
            set_option(&mut raw.options, O_SERVICE)?;
            let proto = match o.flag {
                Flag::TcpService => VProto::Tcp,
                Flag::UdpService => VProto::Udp,
                _ => VProto::Sctp,
            };
            raw.proto = Some(proto);
            let (addr, port) = values::host_port(v, Some(proto.services_name()), names)
                .map_err(|e| address_error("virtual server", e))?;
            raw.addr = Some((addr, port.unwrap_or(0)));
        }
        Flag::FwmarkService => {
            set_option(&mut raw.options, O_SERVICE)?;
            raw.proto = Some(VProto::Tcp);
            let mark = values::number(v, 1, u32::MAX as i64)
                .ok_or_else(|| cmdline(format!("invalid fwmark value `{v}' specified")))?;
            raw.fwmark = Some((mark as u32, false));
        }
        Flag::Scheduler => {
            set_option(&mut raw.options, O_SCHEDULER)?;
            // IPVS keeps at most 15 characters of a scheduler name.
            raw.scheduler = Some(v.chars().take(15).collect());
        }
        Flag::Persistent => {
            set_option(&mut raw.options, O_PERSISTENT)?;
            raw.persistent = Some(timeout(o.value.as_deref(), 1)?);
        }
        Flag::Netmask => {
            set_option(&mut raw.options, O_NETMASK)?;
            let v6 = matches!(raw.addr, Some((IpAddr::V6(_), _)))
                || matches!(raw.fwmark, Some((_, true)));
            raw.netmask =
                Some(if v6 {
                    // atoi: leading digits count, the rest is ignored.
                    let digits: String = v
                        .trim_start()
                        .chars()
                        .take_while(char::is_ascii_digit)
                        .collect();
                    match digits.parse::<u8>() {
                        Ok(n) if (1..=128).contains(&n) => PersistMask::V6(n),
                        _ => return Err(cmdline("illegal ipv6 netmask specified")),
                    }
                } else {
                    PersistMask::V4(values::inet_aton(v).ok_or_else(|| {
                        cmdline("illegal virtual server persistent mask specified")
                    })?)
                });
        }
        Flag::RealServer => {
            set_option(&mut raw.options, O_SERVER)?;
            let proto = raw.proto.map(VProto::services_name);
            let (addr, port) =
                values::host_port(v, proto, names).map_err(|e| address_error("real server", e))?;
            // No port: the virtual port (as far as it is known yet, like ipvsadm).
            raw.real = Some((addr, port.unwrap_or(raw.addr.map_or(0, |a| a.1))));
        }
        Flag::Ipip | Flag::Gatewaying | Flag::Masquerading => {
            set_option(&mut raw.options, O_FORWARD)?;
            raw.method = match o.flag {
                Flag::Ipip => Method::Tunnel,
                Flag::Gatewaying => Method::Route,
                _ => Method::Masq,
            };
        }
        Flag::Weight => {
            set_option(&mut raw.options, O_WEIGHT)?;
            raw.weight = number(0, 65535, "illegal weight specified")?;
        }
        Flag::UThreshold => {
            set_option(&mut raw.options, O_UTHRESHOLD)?;
            raw.u_threshold = number(0, i32::MAX as i64, "illegal u_threshold specified")?;
        }
        Flag::LThreshold => {
            set_option(&mut raw.options, O_LTHRESHOLD)?;
            raw.l_threshold = number(0, i32::MAX as i64, "illegal l_threshold specified")?;
        }
        Flag::Connection => set_option(&mut raw.options, O_CONNECTION)?,
        Flag::Numeric => {
            set_option(&mut raw.options, O_NUMERIC)?;
            raw.format.numeric = true;
        }
        Flag::McastInterface => set_option(&mut raw.options, O_MCAST)?,
        Flag::SyncId => {
            set_option(&mut raw.options, O_SYNCID)?;
            number(0, 255, "illegal syncid specified")?;
        }
        Flag::Timeout => set_option(&mut raw.options, O_TIMEOUT)?,
        Flag::Daemon => set_option(&mut raw.options, O_DAEMON)?,
        Flag::Stats => {
            set_option(&mut raw.options, O_STATS)?;
            raw.format.stats = true;
        }
        Flag::Rate => {
            set_option(&mut raw.options, O_RATE)?;
            raw.format.rate = true;
        }
        Flag::Thresholds => {
            set_option(&mut raw.options, O_THRESHOLDS)?;
            raw.format.thresholds = true;
        }
        Flag::PersistentConn => {
            set_option(&mut raw.options, O_PERSISTENTCONN)?;
            raw.format.persistent_conn = true;
        }
        Flag::NoSort => {
            set_option(&mut raw.options, O_NOSORT)?;
            raw.format.nosort = true;
        }
        // Sorting is the default; --sort is a no-op kept for old scripts.
        Flag::Sort => {}
        Flag::Exact => {
            set_option(&mut raw.options, O_EXACT)?;
            raw.format.exact = true;
        }
        Flag::Ipv6 => match &mut raw.fwmark {
            Some((_, v6)) => *v6 = true,
            None => return Err(cmdline("-6 used before -f\n")),
        },
        Flag::Ops => {
            set_option(&mut raw.options, O_ONEPACKET)?;
            raw.ops = true;
        }
        Flag::Pe => {
            set_option(&mut raw.options, O_PE)?;
            raw.pe = Some(v.to_owned());
        }
        Flag::SchedFlags => {
            set_option(&mut raw.options, O_SCHED_FLAGS)?;
            raw.sched_flags_arg = Some(v.to_owned());
        }
        Flag::McastGroup => {
            set_option(&mut raw.options, O_MCAST_GROUP)?;
            if v.contains(':') {
                if !v
                    .parse::<std::net::Ipv6Addr>()
                    .is_ok_and(|a| a.is_multicast())
                {
                    return Err(cmdline(format!("invalid IPv6 mcast-group `{v}'")));
                }
            } else if !v.parse::<Ipv4Addr>().is_ok_and(|a| a.is_multicast()) {
                return Err(cmdline(format!("invalid IPv4 mcast-group `{v}'")));
            }
        }
        Flag::McastPort => {
            set_option(&mut raw.options, O_MCAST_PORT)?;
            number(1, 65535, "illegal mcast-port specified")?;
        }
        Flag::McastTtl => {
            set_option(&mut raw.options, O_MCAST_TTL)?;
            number(1, 255, "illegal mcast-ttl specified")?;
        }
        Flag::SyncMaxlen => {
            set_option(&mut raw.options, O_SYNC_MAXLEN)?;
            number(1, 65535 - 20 - 8, "illegal sync-maxlen specified")?;
        }
        Flag::TunInfo => {
            set_option(&mut raw.options, O_TUN_INFO)?;
            raw.format.tun_info = true;
        }
        Flag::TunType => {
            set_option(&mut raw.options, O_TUN_TYPE)?;
            raw.tun_type = match v {
                "ipip" => TunType::Ipip,
                "gue" => TunType::Gue,
                "gre" => TunType::Gre,
                _ => return Err(cmdline("illegal tunnel type specified")),
            };
        }
        Flag::TunPort => {
            set_option(&mut raw.options, O_TUN_PORT)?;
            raw.tun_port = number(1, 65535, "illegal tunnel port specified")? as u16;
        }
        // Exclusive (tunnel_opt_check): at most one of the three is ever set.
        Flag::TunNocsum => {
            set_option(&mut raw.options, O_TUN_NOCSUM)?;
            raw.tun_csum = TunCsum::NoCsum;
        }
        Flag::TunCsum => {
            set_option(&mut raw.options, O_TUN_CSUM)?;
            raw.tun_csum = TunCsum::Csum;
        }
        Flag::TunRemcsum => {
            set_option(&mut raw.options, O_TUN_REMCSUM)?;
            raw.tun_csum = TunCsum::RemCsum;
        }
        // A second command: ipvsadm 1.31 reports it as "invalid option `-D'" (its
        // command switch only runs on the first option); this is the message its code
        // means for the case, with the same exit code.
        Flag::AddService
        | Flag::EditService
        | Flag::DeleteService
        | Flag::Clear
        | Flag::List
        | Flag::Zero
        | Flag::AddServer
        | Flag::EditServer
        | Flag::DeleteServer
        | Flag::Set
        | Flag::Restore
        | Flag::Save
        | Flag::StartDaemon
        | Flag::StopDaemon
        | Flag::Help
        | Flag::Version => return Err(cmdline("multiple commands specified")),
    }
    Ok(())
}

/// ipvsadm's `parse_sched_flags`, against the scheduler given (or our default, mh).
fn sched_flags(scheduler: Option<&str>, arg: &str) -> Result<u8, IpvsadmError> {
    let sched = match scheduler {
        Some(s) if !s.is_empty() => s,
        _ => super::DEFAULT_SCHEDULER,
    };
    let mut flags = 0;
    let mut seen = false;
    for flag in arg.split(',').filter(|f| !f.is_empty()) {
        seen = true;
        let (bit, needs) = match flag {
            "flag-1" => (SCHED_FLAG_1, None),
            "flag-2" => (SCHED_FLAG_2, None),
            "flag-3" => (SCHED_FLAG_3, None),
            "sh-fallback" => (SCHED_FLAG_1, Some("sh")),
            "sh-port" => (SCHED_FLAG_2, Some("sh")),
            "mh-fallback" => (SCHED_FLAG_1, Some("mh")),
            "mh-port" => (SCHED_FLAG_2, Some("mh")),
            _ => return Err(cmdline(format!("invalid scheduler flag `{flag}'"))),
        };
        if needs.is_some_and(|n| n != sched) {
            return Err(cmdline(format!("incompatible scheduler flag `{flag}'")));
        }
        flags |= bit;
    }
    if !seen {
        return Err(cmdline(format!("invalid scheduler flag `{arg}'")));
    }
    Ok(flags)
}

fn generic_opt_check(cmd: Cmd, options: u64) -> Result<(), IpvsadmError> {
    let row = COMMANDS_V_OPTIONS[cmd as usize].as_bytes();
    let name = CMD_NAMES[cmd as usize];
    let mut last = None;
    for (j, &rule) in row.iter().enumerate() {
        if !has(options, j) {
            if rule == b'+' {
                return Err(cmdline(format!(
                    "You need to supply the '{}' option for the '{name}' command",
                    OPT_NAMES[j]
                )));
            }
            continue;
        }
        match rule {
            b'x' => {
                return Err(cmdline(format!(
                    "Illegal '{}' option with the '{name}' command",
                    OPT_NAMES[j]
                )));
            }
            b'1' => match last {
                None => last = Some(j),
                Some(l) => {
                    return Err(cmdline(format!(
                        "The option '{}' conflicts with the '{}' option in the '{name}' command",
                        OPT_NAMES[j], OPT_NAMES[l]
                    )));
                }
            },
            _ => {}
        }
    }
    Ok(())
}

fn tunnel_opt_check(tun: TunType, options: u64) -> Result<(), IpvsadmError> {
    let row = TUNNEL_TYPES_V_OPTIONS
        .iter()
        .find(|(t, _)| *t == tun)
        .map_or("xxxx", |(_, r)| r)
        .as_bytes();
    let name = tun.name();
    let mut last = None;
    for (j, &rule) in row.iter().enumerate() {
        let k = TUN_OPTS[j];
        if !has(options, k) {
            if rule == b'+' {
                return Err(cmdline(format!(
                    "You need to supply the '{}' option for the '{name}' tunnel type",
                    OPT_NAMES[k]
                )));
            }
            continue;
        }
        match rule {
            b'x' => {
                return Err(cmdline(format!(
                    "Illegal '{}' option with the '{name}' tunnel type",
                    OPT_NAMES[k]
                )));
            }
            b'1' => match last {
                None => last = Some(k),
                Some(l) => {
                    return Err(cmdline(format!(
                        "The option '{}' conflicts with the '{}' option in the '{name}' tunnel type",
                        OPT_NAMES[k], OPT_NAMES[l]
                    )));
                }
            },
            _ => {}
        }
    }
    Ok(())
}

fn virtual_service(raw: &Raw) -> Option<VirtualService> {
    if let Some((mark, ipv6)) = raw.fwmark {
        return Some(VirtualService::Fwmark { mark, ipv6 });
    }
    let (addr, port) = raw.addr?;
    Some(VirtualService::Addr {
        proto: raw.proto.unwrap_or(VProto::Tcp),
        addr,
        port,
    })
}

fn build(raw: Raw, sched_flags: Option<u8>, timeouts: [u32; 3]) -> Result<Command, IpvsadmError> {
    let options = raw.options;
    let service = virtual_service(&raw);
    // The table has checked that the commands needing a service have one.
    let svc = || service.expect("generic_opt_check requires the service option");
    Ok(match raw.cmd {
        Cmd::Add | Cmd::Edit => {
            let s = svc();
            let zero_port = matches!(s, VirtualService::Addr { port: 0, .. });
            if zero_port && raw.persistent.is_none() {
                return Err(cmdline("Zero port specified for non-persistent service"));
            }
            if raw.ops
                && !matches!(
                    s,
                    VirtualService::Addr {
                        proto: VProto::Udp,
                        ..
                    } | VirtualService::Fwmark { .. }
                )
            {
                return Err(cmdline(
                    "One-Packet Scheduling is only for UDP virtual services",
                ));
            }
            let args = ServiceArgs {
                service: s,
                scheduler: raw.scheduler.filter(|s| !s.is_empty()),
                persistent: raw.persistent,
                netmask: raw.netmask,
                sched_flags,
                ops: raw.ops,
                pe: raw.pe,
            };
            if raw.cmd == Cmd::Add {
                Command::AddService(args)
            } else {
                Command::EditService(args)
            }
        }
        Cmd::Del => Command::DeleteService(svc()),
        Cmd::Flush => Command::Clear,
        Cmd::AddSrv | Cmd::EditSrv | Cmd::DelSrv => {
            let s = svc();
            let (addr, mut port) = raw.real.expect("generic_opt_check requires -r");
            let vport = match s {
                VirtualService::Addr { port, .. } => Some(port),
                VirtualService::Fwmark { .. } => None,
            };
            if raw.cmd != Cmd::DelSrv {
                if let Some(vport) = vport
                    && raw.method != Method::Masq
                {
                    port = vport;
                }
                let svc_v6 = match s {
                    VirtualService::Addr { addr, .. } => addr.is_ipv6(),
                    VirtualService::Fwmark { ipv6, .. } => ipv6,
                };
                if addr.is_ipv6() != svc_v6 && raw.method != Method::Tunnel {
                    return Err(cmdline(
                        "Different address family is allowed only for tunneling servers",
                    ));
                }
                let tun_opts = [
                    O_TUN_TYPE,
                    O_TUN_PORT,
                    O_TUN_NOCSUM,
                    O_TUN_CSUM,
                    O_TUN_REMCSUM,
                ];
                if tun_opts.iter().any(|&o| has(options, o)) && raw.method != Method::Tunnel {
                    return Err(cmdline("Tunnel options conflict with forward method"));
                }
                tunnel_opt_check(raw.tun_type, options)?;
            }
            let args = ServerArgs {
                service: s,
                addr,
                port,
                method: raw.method,
                weight: raw.weight,
                u_threshold: raw.u_threshold,
                l_threshold: raw.l_threshold,
                tun_type: raw.tun_type,
                tun_port: raw.tun_port,
                tun_csum: raw.tun_csum,
            };
            match raw.cmd {
                Cmd::AddSrv => Command::AddServer(args),
                Cmd::EditSrv => Command::EditServer(args),
                _ => Command::DeleteServer(args),
            }
        }
        Cmd::List => {
            let listing =
                has(options, O_STATS) || has(options, O_RATE) || has(options, O_THRESHOLDS);
            let special =
                has(options, O_CONNECTION) || has(options, O_TIMEOUT) || has(options, O_DAEMON);
            if (special && listing)
                || ((has(options, O_TIMEOUT) || has(options, O_DAEMON))
                    && has(options, O_PERSISTENTCONN))
            {
                return Err(cmdline("options conflicts in the list command"));
            }
            let what = if has(options, O_CONNECTION) {
                ListWhat::Connections
            } else if let Some(s) = service {
                ListWhat::Service(s)
            } else if has(options, O_TIMEOUT) {
                ListWhat::Timeouts
            } else if has(options, O_DAEMON) {
                ListWhat::Daemon
            } else {
                ListWhat::All
            };
            Command::List {
                what,
                format: raw.format,
            }
        }
        Cmd::Timeout => Command::SetTimeouts {
            tcp: timeouts[0],
            tcp_fin: timeouts[1],
            udp: timeouts[2],
        },
        Cmd::StartD => Command::StartDaemon(raw.daemon.unwrap_or(DaemonState::Master)),
        Cmd::StopD => Command::StopDaemon(raw.daemon.unwrap_or(DaemonState::Master)),
        Cmd::Restore => Command::Restore,
        Cmd::Save => Command::Save {
            numeric: raw.format.numeric,
        },
        Cmd::Zero => Command::Zero(service),
    })
}
