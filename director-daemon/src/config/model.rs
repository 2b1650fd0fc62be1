//! The validated configuration: what the daemon applies.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use director_control::model::{Protocol, RealSpec, ServiceAddr, ServiceSpec};

/// A validated configuration: what the daemon applies.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The file it came from (for messages).
    pub path: PathBuf,
    /// The file declares no services on purpose (`allow_empty = true`): applying it may
    /// remove every service the daemon manages. Without it such a file (empty, or cut
    /// short before its first service) is refused.
    pub allow_empty: bool,
    pub daemon: DaemonSettings,
    pub services: Vec<ServiceConfig>,
    /// `[bgp]`: announce the VIPs through BIRD (scale-out behind ECMP routers).
    pub bgp: Option<crate::bgp::BgpConfig>,
}

impl Config {
    /// Real servers declared over all services, fallbacks included: each takes a real
    /// slot of the data path.
    pub fn real_slots(&self) -> usize {
        real_slots(&self.services)
    }
}

/// Real slots taken by `services`: one per real, one per fallback.
pub(super) fn real_slots(services: &[ServiceConfig]) -> usize {
    services
        .iter()
        .map(|s| s.reals.len() + usize::from(s.fallback.is_some()))
        .sum()
}

/// `[daemon]`: settings of the process.
#[derive(Clone, Debug, PartialEq)]
pub struct DaemonSettings {
    /// Prometheus endpoint; `None` = off.
    pub metrics: Option<SocketAddr>,
    /// How often every declared service is compared with the maps (and repaired) and the
    /// reals' neighbour entries are refreshed.
    pub sync_interval: Duration,
    /// Each wait between two checks of a real is shortened by a random fraction up to
    /// this (0 to 0.5), so checks of many reals do not run in lockstep.
    pub jitter: f64,
    /// Hooks for every service that has none of its own.
    pub hooks: Hooks,
    /// A hook still running after this is killed.
    pub notify_timeout: Duration,
}

impl Default for DaemonSettings {
    fn default() -> Self {
        Self {
            metrics: None,
            sync_interval: DEFAULT_SYNC_INTERVAL,
            jitter: DEFAULT_JITTER,
            hooks: Hooks::default(),
            notify_timeout: DEFAULT_NOTIFY_TIMEOUT,
        }
    }
}

pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_JITTER: f64 = 0.1;
pub const DEFAULT_NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_RISE: u32 = 2;
pub const DEFAULT_FALL: u32 = 3;
/// Largest weight (as ipvsadm's).
pub const MAX_WEIGHT: u32 = 65_535;

/// Commands run on events (see notify.rs for their environment).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hooks {
    /// Run on every event, with DIRECTOR_EVENT saying which.
    pub any: Option<Command>,
    /// Run when a real goes UP.
    pub up: Option<Command>,
    /// Run when a real goes DOWN.
    pub down: Option<Command>,
}

impl Hooks {
    pub fn is_empty(&self) -> bool {
        self.any.is_none() && self.up.is_none() && self.down.is_none()
    }
}

/// A command: a string runs through `/bin/sh -c`, an array is the argv itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Shell(String),
    Argv(Vec<String>),
}

impl Command {
    pub fn to_tokio(&self) -> tokio::process::Command {
        match self {
            Command::Shell(s) => {
                let mut c = tokio::process::Command::new("/bin/sh");
                c.arg("-c").arg(s);
                c
            }
            Command::Argv(v) => {
                let mut c = tokio::process::Command::new(&v[0]);
                c.args(&v[1..]);
                c
            }
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Shell(s) => write!(f, "{s}"),
            Command::Argv(v) => write!(f, "{}", v.join(" ")),
        }
    }
}

/// What happens to a real that goes DOWN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnDown {
    /// Weight 0: no new connections, established ones continue (the default).
    Quiescent,
    /// Removed from the service: its connections are rescheduled on their next packet.
    Remove,
}

/// One virtual service the daemon declares and owns.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceConfig {
    pub name: Option<String>,
    pub spec: ServiceSpec,
    pub reals: Vec<RealConfig>,
    pub check: Arc<CheckConfig>,
    pub on_down: OnDown,
    /// After a recovery, the weight ramps from ~0 to the full weight over this; zero = off.
    pub slowstart: Duration,
    /// Fewer UP reals than this: the fallback server (if any) takes the traffic.
    pub quorum: u32,
    pub fallback: Option<RealSpec>,
    pub hooks: Hooks,
}

impl ServiceConfig {
    /// `tcp/10.0.0.100:80`: how logs, metrics and hooks name a service.
    pub fn label(&self) -> String {
        service_label(&self.spec.addr)
    }
}

pub fn service_label(a: &ServiceAddr) -> String {
    let proto = match a.proto {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    };
    format!("{proto}/{}", SocketAddr::new(a.addr, a.port))
}

/// A real server of a service.
#[derive(Clone, Debug, PartialEq)]
pub struct RealConfig {
    /// Port normalised: DR and TUN reals carry the virtual port.
    pub spec: RealSpec,
    /// Check this address instead of the real's.
    pub check_addr: Option<IpAddr>,
    /// Check this port instead of the check's or the real's.
    pub check_port: Option<u16>,
}

impl RealConfig {
    pub fn new(spec: RealSpec) -> Self {
        Self {
            spec,
            check_addr: None,
            check_port: None,
        }
    }

    /// Where a check of this real goes.
    pub fn check_target(&self, check: &CheckConfig) -> SocketAddr {
        SocketAddr::new(
            self.check_addr.unwrap_or(self.spec.addr),
            self.check_port.or(check.port).unwrap_or(self.spec.port),
        )
    }
}

/// The initial health of a real the maps know nothing about (HAProxy's init-state).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitState {
    /// UP, but DOWN at the first failure.
    Up,
    /// UP, DOWN after `fall` failures.
    FullyUp,
    /// DOWN, but UP at the first success.
    Down,
    /// DOWN, UP after `rise` successes.
    FullyDown,
}

/// A check and its timing.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckConfig {
    pub kind: CheckKind,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    /// Interval while a real is changing state (defaults to `interval`).
    pub fastinter: Option<Duration>,
    /// Interval while a real is DOWN (defaults to `interval`).
    pub downinter: Option<Duration>,
    pub init_state: InitState,
    /// Check port for every real of the service (a real's `check_port` wins).
    pub port: Option<u16>,
}

impl CheckConfig {
    /// A check with the default timing.
    pub fn new(kind: CheckKind) -> Self {
        Self {
            kind,
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            rise: DEFAULT_RISE,
            fall: DEFAULT_FALL,
            fastinter: None,
            downinter: None,
            init_state: InitState::Up,
            port: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum CheckKind {
    /// A TCP connection is accepted.
    Tcp,
    /// HTTP (or HTTPS with `tls`) GET.
    Http(HttpCheck),
    /// A datagram is answered.
    Udp(UdpCheck),
    /// A DNS query is answered.
    Dns(DnsCheck),
    /// A command's exit status (keepalived's MISC_CHECK).
    External(ExternalCheck),
    /// Always UP, never checked.
    On,
    /// Always DOWN (maintenance), never checked.
    Off,
}

impl CheckKind {
    pub fn name(&self) -> &'static str {
        match self {
            CheckKind::Tcp => "tcp",
            CheckKind::Http(h) if h.tls.is_some() => "https",
            CheckKind::Http(_) => "http",
            CheckKind::Udp(_) => "udp",
            CheckKind::Dns(_) => "dns",
            CheckKind::External(_) => "external",
            CheckKind::On => "on",
            CheckKind::Off => "off",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct HttpCheck {
    /// Request path (with query), starting with '/'.
    pub path: String,
    /// Host header (and TLS server name); default: the check address.
    pub host: Option<String>,
    pub status: StatusSet,
    /// The body (its first 64 KiB) must match.
    pub body: Option<Pattern>,
    pub tls: Option<TlsCheck>,
}

/// Accepted HTTP status codes: inclusive ranges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusSet(pub Vec<(u16, u16)>);

impl StatusSet {
    pub fn contains(&self, code: u16) -> bool {
        self.0.iter().any(|(a, b)| (*a..=*b).contains(&code))
    }
}

impl Default for StatusSet {
    /// 2xx and 3xx, as HAProxy's httpchk.
    fn default() -> Self {
        Self(vec![(200, 399)])
    }
}

impl fmt::Display for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect();
        write!(f, "{}", parts.join(","))
    }
}

/// A regular expression over text, compared by its source.
#[derive(Clone, Debug)]
pub struct Pattern(pub regex::Regex);

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

/// A regular expression over bytes, compared by its source.
#[derive(Clone, Debug)]
pub struct BytesPattern(pub regex::bytes::Regex);

impl PartialEq for BytesPattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

#[derive(Clone, Debug)]
pub struct TlsCheck {
    /// Verify the certificate chain and name (default yes).
    pub verify: bool,
    /// Trust these PEM certificates instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// The rustls configuration made from the above (CA file read at validation).
    pub client: Arc<rustls::ClientConfig>,
}

impl PartialEq for TlsCheck {
    fn eq(&self, other: &Self) -> bool {
        self.verify == other.verify && self.ca_file == other.ca_file
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct UdpCheck {
    pub payload: Vec<u8>,
    /// The reply must match (implies a reply is required).
    pub expect: Option<BytesPattern>,
    /// Without a reply the check fails; otherwise only an ICMP error fails it.
    pub require_reply: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DnsCheck {
    pub name: String,
    pub qtype: DnsType,
}

/// Query types a DNS check can ask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsType {
    A,
    Aaaa,
    Cname,
    Mx,
    Ns,
    Ptr,
    Soa,
    Srv,
    Txt,
}

impl DnsType {
    pub const ALL: [(&'static str, DnsType); 9] = [
        ("A", DnsType::A),
        ("AAAA", DnsType::Aaaa),
        ("CNAME", DnsType::Cname),
        ("MX", DnsType::Mx),
        ("NS", DnsType::Ns),
        ("PTR", DnsType::Ptr),
        ("SOA", DnsType::Soa),
        ("SRV", DnsType::Srv),
        ("TXT", DnsType::Txt),
    ];
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, t)| *t == self)
            .map_or("?", |(n, _)| n)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ExternalCheck {
    pub command: Command,
    /// Exit codes 2..=255 mean UP with weight code - 2 (keepalived's misc_dynamic);
    /// without it every non-zero code is DOWN.
    pub dynamic: bool,
}
