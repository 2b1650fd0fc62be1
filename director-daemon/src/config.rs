//! The daemon's configuration: a TOML file (docs/daemon.md, examples/director.toml),
//! read into a faithful record of what was written (`Raw*`, every value with its span),
//! then validated in full into [`Config`]. Every problem is reported with the file, line,
//! column and field, and what was expected; nothing is applied unless all is well.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    fmt,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    ops::Range,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use director_common::{maps::MAX_REALS_LIMIT, real::Method, service::Scheduler};
use serde::Deserialize;
use toml::Spanned;

use director_control::{
    control::ServiceView,
    model::{Persistence, Protocol, RealSpec, ServiceAddr, ServiceSpec},
};

// ---------------------------------------------------------------------------------------
// The validated configuration

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

/// What a configuration is applied to: the attached data path's slots, the services in
/// its maps now, and those of them the daemon declared (its own to remove or change;
/// the others were made by hand or another tool and keep their slots).
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    pub capacity: super::backend::Capacity,
    pub actual: &'a [ServiceView],
    pub owned: &'a BTreeSet<ServiceAddr>,
}

impl Config {
    /// Real servers declared over all services, fallbacks included: each takes a real
    /// slot of the data path.
    pub fn real_slots(&self) -> usize {
        real_slots(&self.services)
    }

    /// Whether the whole configuration can be applied to `target`; one that cannot is
    /// refused as a whole (none of it applied) rather than applied up to the first
    /// service or real that finds no slot:
    /// - it must fit the slots left by the services the daemon does not manage;
    /// - it must not remove every service the daemon manages unless it says so
    ///   (`allow_empty = true`): an empty or truncated file is a mistake far more often
    ///   than an intent, and applying it would stop all traffic.
    pub fn applicable(&self, target: &Target<'_>) -> Result<(), String> {
        let declared: BTreeSet<ServiceAddr> = self.services.iter().map(|s| s.spec.addr).collect();
        let others: Vec<&ServiceView> = target
            .actual
            .iter()
            .filter(|v| !declared.contains(&v.spec.addr) && !target.owned.contains(&v.spec.addr))
            .collect();
        let cap = target.capacity;
        let mut problems = Vec::new();
        let held = |n: usize, what: &str| {
            if n == 0 {
                String::new()
            } else {
                format!(
                    " and {n} {what} held by services the daemon does not manage (made with the command line or another tool)"
                )
            }
        };
        let services = self.services.len() + others.len();
        if services > cap.services as usize {
            problems.push(format!(
                "{} virtual services declared{}; the attached director holds at most {} (director attach --max-services)",
                self.services.len(),
                held(others.len(), "service slots"),
                cap.services
            ));
        }
        let other_reals: usize = others.iter().map(|v| v.reals.len()).sum();
        let reals = self.real_slots() + other_reals;
        if reals > cap.reals as usize {
            problems.push(format!(
                "{} real servers (with fallbacks) declared{}; the attached director holds at most {} in all (director attach --max-reals)",
                self.real_slots(),
                held(other_reals, "real slots"),
                cap.reals
            ));
        }
        let peak = self.peak_real_slots(target.actual, other_reals);
        if reals <= cap.reals as usize && peak > cap.reals as usize {
            problems.push(format!(
                "applying it needs {peak} real slots at once (a service's new reals are added before the reals it no longer has are removed, so that its traffic always has somewhere to go); the attached director holds at most {} in all (director attach --max-reals)",
                cap.reals
            ));
        }
        if self.services.is_empty() && !self.allow_empty {
            let removed = target
                .actual
                .iter()
                .filter(|v| target.owned.contains(&v.spec.addr))
                .count();
            if removed > 0 {
                problems.push(format!(
                    "no service declared: applying this would remove all {removed} services the daemon manages; if that is intended, put `allow_empty = true` at the top of the file"
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!("{}: {}", self.path.display(), problems.join("; ")))
        }
    }
}

impl Config {
    /// The real slots in use at the fullest moment of applying this configuration over
    /// `actual`, in the daemon's order: the services no longer declared removed first,
    /// then each declared service in address order, its new reals added before the
    /// ones it no longer has are removed.
    fn peak_real_slots(&self, actual: &[ServiceView], other_reals: usize) -> usize {
        let key = |r: &RealSpec| (r.addr, r.port);
        let have = |addr: &ServiceAddr| -> BTreeSet<(IpAddr, u16)> {
            actual
                .iter()
                .find(|v| v.spec.addr == *addr)
                .map(|v| v.reals.iter().map(|r| key(&r.spec)).collect())
                .unwrap_or_default()
        };
        let mut declared: Vec<&ServiceConfig> = self.services.iter().collect();
        declared.sort_by_key(|s| s.spec.addr);
        let mut in_use: usize = other_reals
            + declared
                .iter()
                .map(|s| have(&s.spec.addr).len())
                .sum::<usize>();
        let mut peak = in_use;
        for s in declared {
            let had = have(&s.spec.addr);
            let want: BTreeSet<(IpAddr, u16)> = s
                .reals
                .iter()
                .map(|r| key(&r.spec))
                .chain(s.fallback.as_ref().map(key))
                .collect();
            peak = peak.max(in_use - had.len() + had.union(&want).count());
            in_use = in_use - had.len() + want.len();
        }
        peak
    }
}

fn real_slots(services: &[ServiceConfig]) -> usize {
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

// ---------------------------------------------------------------------------------------
// Errors

/// One problem in a configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based; 0 when the problem is the file as a whole.
    pub line: usize,
    pub column: usize,
    /// Dotted path of the field, e.g. `service[0].real[1].weight`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// A configuration that cannot be used: every problem found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<Diagnostic>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl ConfigError {
    pub fn whole_file(file: &Path, message: impl Into<String>) -> Self {
        Self {
            problems: vec![Diagnostic {
                file: file.to_owned(),
                line: 0,
                column: 0,
                field: String::new(),
                message: message.into(),
            }],
        }
    }
}

/// Line and column (1-based) of a byte offset.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(offset, |i| offset - i - 1) + 1;
    (line, col)
}

/// Collects problems while validating.
pub(crate) struct Problems<'a> {
    file: &'a Path,
    src: &'a str,
    pub list: Vec<Diagnostic>,
}

impl<'a> Problems<'a> {
    pub(crate) fn new(file: &'a Path, src: &'a str) -> Self {
        Self {
            file,
            src,
            list: Vec::new(),
        }
    }

    pub(crate) fn at(&mut self, span: Range<usize>, field: &str, message: impl Into<String>) {
        let (line, column) = line_col(self.src, span.start);
        self.list.push(Diagnostic {
            file: self.file.to_owned(),
            line,
            column,
            field: field.to_owned(),
            message: message.into(),
        });
    }

    /// A problem at a given line (1-based), for line-oriented formats.
    pub(crate) fn at_line(&mut self, line: usize, field: &str, message: impl Into<String>) {
        self.list.push(Diagnostic {
            file: self.file.to_owned(),
            line,
            column: 1,
            field: field.to_owned(),
            message: message.into(),
        });
    }

    pub(crate) fn finish<T>(self, value: T) -> Result<T, ConfigError> {
        if self.list.is_empty() {
            Ok(value)
        } else {
            Err(ConfigError {
                problems: self.list,
            })
        }
    }
}

// ---------------------------------------------------------------------------------------
// The file as written

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    allow_empty: Option<bool>,
    daemon: Option<RawDaemon>,
    check: Option<RawTiming>,
    #[serde(default, rename = "service")]
    services: Vec<Spanned<RawService>>,
    bgp: Option<Spanned<crate::bgp::config::RawBgp>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    metrics: Option<Spanned<String>>,
    sync_interval: Option<Spanned<toml::Value>>,
    jitter: Option<Spanned<toml::Value>>,
    notify: Option<Spanned<toml::Value>>,
    notify_up: Option<Spanned<toml::Value>>,
    notify_down: Option<Spanned<toml::Value>>,
    notify_timeout: Option<Spanned<toml::Value>>,
    on_down: Option<Spanned<String>>,
}

/// `[check]`: timing defaults for every service's check.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTiming {
    interval: Option<Spanned<toml::Value>>,
    timeout: Option<Spanned<toml::Value>>,
    rise: Option<Spanned<i64>>,
    fall: Option<Spanned<i64>>,
    fastinter: Option<Spanned<toml::Value>>,
    downinter: Option<Spanned<toml::Value>>,
    init_state: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: Option<Spanned<String>>,
    address: Spanned<String>,
    protocol: Option<Spanned<String>>,
    scheduler: Option<Spanned<String>>,
    hash_port: Option<Spanned<bool>>,
    method: Option<Spanned<String>>,
    persistent: Option<Spanned<toml::Value>>,
    persistent_netmask: Option<Spanned<String>>,
    on_down: Option<Spanned<String>>,
    slowstart: Option<Spanned<toml::Value>>,
    quorum: Option<Spanned<i64>>,
    fallback: Option<Spanned<RawFallback>>,
    check: Option<Spanned<RawCheck>>,
    notify: Option<Spanned<toml::Value>>,
    notify_up: Option<Spanned<toml::Value>>,
    notify_down: Option<Spanned<toml::Value>>,
    #[serde(default, rename = "real")]
    reals: Vec<Spanned<RawReal>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFallback {
    address: Spanned<String>,
    method: Option<Spanned<String>>,
    weight: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReal {
    address: Spanned<String>,
    weight: Option<Spanned<i64>>,
    method: Option<Spanned<String>>,
    check_address: Option<Spanned<String>>,
    check_port: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    #[serde(rename = "type")]
    kind: Option<Spanned<String>>,
    interval: Option<Spanned<toml::Value>>,
    timeout: Option<Spanned<toml::Value>>,
    rise: Option<Spanned<i64>>,
    fall: Option<Spanned<i64>>,
    fastinter: Option<Spanned<toml::Value>>,
    downinter: Option<Spanned<toml::Value>>,
    init_state: Option<Spanned<String>>,
    port: Option<Spanned<i64>>,
    // http, https
    path: Option<Spanned<String>>,
    host: Option<Spanned<String>>,
    status: Option<Spanned<toml::Value>>,
    body: Option<Spanned<String>>,
    verify: Option<Spanned<bool>>,
    ca_file: Option<Spanned<String>>,
    // udp
    payload: Option<Spanned<String>>,
    expect: Option<Spanned<String>>,
    require_reply: Option<Spanned<bool>>,
    // dns
    name: Option<Spanned<String>>,
    query_type: Option<Spanned<String>>,
    // external
    command: Option<Spanned<toml::Value>>,
    dynamic: Option<Spanned<bool>>,
}

// ---------------------------------------------------------------------------------------
// Parsing

/// Read and validate a native configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let src = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::whole_file(path, format!("cannot read the file: {e}")))?;
    parse(path, &src)
}

/// Validate a native configuration given as text (`path` is only used in messages).
pub fn parse(path: &Path, src: &str) -> Result<Config, ConfigError> {
    let raw: RawFile = deserialize(path, src)?;
    let mut p = Problems::new(path, src);
    let config = validate(&mut p, path, raw);
    p.finish(config)
}

fn deserialize(path: &Path, src: &str) -> Result<RawFile, ConfigError> {
    let de = toml::Deserializer::parse(src).map_err(|e| toml_error(path, src, &e, ""))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e
            .path()
            .iter()
            .filter_map(|seg| match seg {
                serde_path_to_error::Segment::Seq { index } => Some(format!("[{index}]")),
                serde_path_to_error::Segment::Map { key } if key.starts_with("$__serde") => None,
                serde_path_to_error::Segment::Map { key } => Some(format!(".{key}")),
                serde_path_to_error::Segment::Enum { variant } => Some(format!(".{variant}")),
                serde_path_to_error::Segment::Unknown => None,
            })
            .collect::<String>();
        let field = field.trim_start_matches('.').to_owned();
        toml_error(path, src, e.inner(), &field)
    })
}

fn toml_error(path: &Path, src: &str, e: &toml::de::Error, field: &str) -> ConfigError {
    let (line, column) = e.span().map_or((0, 0), |s| line_col(src, s.start));
    let mut message = e.message().trim().to_owned();
    let mut field = field.to_owned();
    // serde names the table of a missing field; name the field itself.
    if let Some(rest) = message.strip_prefix("missing field `")
        && let Some((name, _)) = rest.split_once('`')
    {
        field = if field.is_empty() {
            name.to_owned()
        } else {
            format!("{field}.{name}")
        };
    }
    // serde says "unknown field `x`, expected one of ..."; keep it, it lists the keys.
    if message.starts_with("invalid type") {
        message = message.replacen("invalid type", "wrong type", 1);
    }
    for (rust, plain) in [
        ("expected i64", "expected an integer"),
        ("expected a boolean", "expected true or false"),
    ] {
        if message.ends_with(rust) {
            message = format!("{}{plain}", &message[..message.len() - rust.len()]);
        }
    }
    ConfigError {
        problems: vec![Diagnostic {
            file: path.to_owned(),
            line,
            column,
            field,
            message,
        }],
    }
}

fn validate(p: &mut Problems, path: &Path, raw: RawFile) -> Config {
    let mut daemon = DaemonSettings::default();
    let mut default_on_down = OnDown::Quiescent;
    if let Some(d) = raw.daemon {
        if let Some(m) = d.metrics {
            match m.get_ref().parse::<SocketAddr>() {
                Ok(a) => daemon.metrics = Some(a),
                Err(_) => p.at(
                    m.span(),
                    "daemon.metrics",
                    format!(
                        "expected an address and port to serve metrics on, like \"127.0.0.1:9410\", not {:?}",
                        m.get_ref()
                    ),
                ),
            }
        }
        if let Some(v) = d.sync_interval
            && let Some(t) = duration(p, &v, "daemon.sync_interval", Duration::from_secs(1))
        {
            daemon.sync_interval = t;
        }
        if let Some(v) = d.jitter {
            match v.get_ref() {
                toml::Value::Float(f) if (0.0..=0.5).contains(f) => daemon.jitter = *f,
                toml::Value::Integer(0) => daemon.jitter = 0.0,
                _ => p.at(
                    v.span(),
                    "daemon.jitter",
                    "expected a fraction from 0.0 to 0.5",
                ),
            }
        }
        daemon.hooks.any = d.notify.and_then(|v| command(p, &v, "daemon.notify"));
        daemon.hooks.up = d.notify_up.and_then(|v| command(p, &v, "daemon.notify_up"));
        daemon.hooks.down = d
            .notify_down
            .and_then(|v| command(p, &v, "daemon.notify_down"));
        if let Some(v) = d.notify_timeout
            && let Some(t) = duration(p, &v, "daemon.notify_timeout", Duration::from_millis(100))
        {
            daemon.notify_timeout = t;
        }
        if let Some(v) = d.on_down
            && let Some(m) = on_down(p, &v, "daemon.on_down")
        {
            default_on_down = m;
        }
    }
    let defaults = raw
        .check
        .map(|t| timing(p, t, "check", &CheckConfig::new(CheckKind::Tcp)))
        .unwrap_or_else(|| CheckConfig::new(CheckKind::Tcp));

    let mut services = Vec::new();
    let mut seen: BTreeMap<ServiceAddr, usize> = BTreeMap::new();
    let mut names: HashSet<String> = HashSet::new();
    for (i, s) in raw.services.into_iter().enumerate() {
        let field = format!("service[{i}]");
        let span = s.span();
        if let Some(svc) = service(
            p,
            s.into_inner(),
            &field,
            &defaults,
            default_on_down,
            span.clone(),
        ) {
            if let Some(prev) = seen.insert(svc.spec.addr, i) {
                p.at(
                    span.clone(),
                    &format!("{field}.address"),
                    format!("{} is already declared by service[{prev}]", svc.label()),
                );
            }
            if let Some(n) = &svc.name
                && !names.insert(n.clone())
            {
                p.at(
                    span,
                    &format!("{field}.name"),
                    format!("the name {n:?} is used twice"),
                );
            }
            services.push(svc);
        }
    }
    // The attached data path's own capacity (`director attach --max-services`,
    // `--max-reals`) is checked when the daemon loads the file (`Config::applicable`).
    let total_reals = real_slots(&services);
    if total_reals > MAX_REALS_LIMIT as usize {
        p.at(
            0..0,
            "service",
            format!(
                "{total_reals} real servers (with fallbacks) declared; the data path holds at most {MAX_REALS_LIMIT} in all"
            ),
        );
    }
    let bgp = raw
        .bgp
        .and_then(|b| crate::bgp::config::validate(p, b, &services));
    Config {
        path: path.to_owned(),
        allow_empty: raw.allow_empty.unwrap_or(false),
        daemon,
        services,
        bgp,
    }
}

fn service(
    p: &mut Problems,
    s: RawService,
    field: &str,
    defaults: &CheckConfig,
    default_on_down: OnDown,
    span: Range<usize>,
) -> Option<ServiceConfig> {
    let before = p.list.len();
    let proto = match &s.protocol {
        None => Protocol::Tcp,
        Some(v) => match v.get_ref().to_ascii_lowercase().as_str() {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "fwm" => {
                p.at(
                    v.span(),
                    &format!("{field}.protocol"),
                    "firewall-mark services are not supported; expected \"tcp\" or \"udp\"",
                );
                Protocol::Tcp
            }
            other => {
                p.at(
                    v.span(),
                    &format!("{field}.protocol"),
                    format!("expected \"tcp\" or \"udp\", not {other:?}"),
                );
                Protocol::Tcp
            }
        },
    };
    let addr = socket_addr(p, &s.address, &format!("{field}.address"), None);
    let (scheduler, hash_source_only) = match &s.scheduler {
        None => (Scheduler::Maglev, false),
        Some(v) => {
            scheduler(p, v, &format!("{field}.scheduler")).unwrap_or((Scheduler::Maglev, false))
        }
    };
    let hash_port = match &s.hash_port {
        Some(v) if *v.get_ref() => {
            if !matches!(scheduler, Scheduler::SourceHash) && !hash_source_only {
                p.at(
                    v.span(),
                    &format!("{field}.hash_port"),
                    "hash_port only applies to the \"sh\" and \"mh\" schedulers",
                );
            }
            true
        }
        _ => false,
    };
    let method = match &s.method {
        None => Method::Route,
        Some(v) => method(p, v, &format!("{field}.method")).unwrap_or(Method::Route),
    };
    let on_down = match &s.on_down {
        None => default_on_down,
        Some(v) => on_down(p, v, &format!("{field}.on_down")).unwrap_or(OnDown::Quiescent),
    };
    let slowstart = s
        .slowstart
        .as_ref()
        .and_then(|v| duration(p, v, &format!("{field}.slowstart"), Duration::ZERO))
        .unwrap_or(Duration::ZERO);
    let mut persistence = None;
    if let Some(v) = &s.persistent
        && let Some(d) = duration(p, v, &format!("{field}.persistent"), Duration::from_secs(1))
    {
        if d.subsec_nanos() != 0 {
            p.at(
                v.span(),
                &format!("{field}.persistent"),
                "expected whole seconds (the data path counts persistence in seconds)",
            );
        }
        persistence = Some(Persistence {
            timeout_s: d.as_secs().min(u32::MAX as u64) as u32,
            netmask: IpAddr::V4(Ipv4Addr::BROADCAST),
        });
    }
    if let Some(m) = &s.persistent_netmask {
        let f = format!("{field}.persistent_netmask");
        match m.get_ref().parse::<Ipv4Addr>() {
            Ok(mask) if u32::from(mask).leading_ones() + u32::from(mask).trailing_zeros() == 32 => {
                match &mut persistence {
                    Some(pers) => pers.netmask = IpAddr::V4(mask),
                    None => p.at(
                        m.span(),
                        &f,
                        "persistent_netmask needs persistent (a timeout)",
                    ),
                }
            }
            _ => p.at(
                m.span(),
                &f,
                format!(
                    "expected an IPv4 netmask like \"255.255.255.0\", not {:?}",
                    m.get_ref()
                ),
            ),
        }
    }
    let hooks = Hooks {
        any: s
            .notify
            .as_ref()
            .and_then(|v| command(p, v, &format!("{field}.notify"))),
        up: s
            .notify_up
            .as_ref()
            .and_then(|v| command(p, v, &format!("{field}.notify_up"))),
        down: s
            .notify_down
            .as_ref()
            .and_then(|v| command(p, v, &format!("{field}.notify_down"))),
    };
    let name = s.name.as_ref().map(|n| n.get_ref().clone());
    if let Some(n) = &s.name
        && (n.get_ref().is_empty() || n.get_ref().chars().any(|c| c.is_control()))
    {
        p.at(
            n.span(),
            &format!("{field}.name"),
            "expected a non-empty name without control characters",
        );
    }

    let vaddr = addr?;
    if vaddr.is_ipv6() {
        p.at(
            s.address.span(),
            &format!("{field}.address"),
            "IPv6 virtual services are not supported by the data path yet",
        );
    }
    let svc_addr = ServiceAddr {
        proto,
        addr: vaddr.ip(),
        port: vaddr.port(),
    };

    // The check, merged over the [check] defaults.
    let check = match s.check {
        Some(c) => check(p, c, &format!("{field}.check"), defaults, proto),
        None => {
            if proto == Protocol::Udp {
                p.at(
                    span.clone(),
                    &format!("{field}.check"),
                    "a UDP service needs a check with an explicit type (udp, dns, external, on or off); a TCP connect cannot test it",
                );
            }
            Some(defaults.clone())
        }
    };

    let mut reals: Vec<RealConfig> = Vec::new();
    if s.reals.is_empty() {
        p.at(
            span.clone(),
            &format!("{field}.real"),
            "a service needs at least one [[service.real]]",
        );
    }
    for (j, r) in s.reals.iter().enumerate() {
        let rf = format!("{field}.real[{j}]");
        let r = r.get_ref();
        let Some(real) = real_spec(
            p,
            &r.address,
            r.method.as_ref(),
            r.weight.as_ref(),
            &rf,
            &svc_addr,
            method,
        ) else {
            continue;
        };
        if let Some(prev) = reals
            .iter()
            .position(|x| x.spec.addr == real.addr && x.spec.port == real.port)
        {
            p.at(
                r.address.span(),
                &format!("{rf}.address"),
                format!(
                    "{} is already real[{prev}] of this service",
                    SocketAddr::new(real.addr, real.port)
                ),
            );
            continue;
        }
        let mut rc = RealConfig::new(real);
        if let Some(a) = &r.check_address {
            match a.get_ref().parse::<IpAddr>() {
                Ok(ip) => rc.check_addr = Some(ip),
                Err(_) => p.at(
                    a.span(),
                    &format!("{rf}.check_address"),
                    format!("expected an IP address, not {:?}", a.get_ref()),
                ),
            }
        }
        if let Some(v) = &r.check_port {
            rc.check_port = port(p, v, &format!("{rf}.check_port"));
        }
        reals.push(rc);
    }

    let fallback = s.fallback.as_ref().and_then(|f| {
        let ff = format!("{field}.fallback");
        let fr = f.get_ref();
        let spec = real_spec(
            p,
            &fr.address,
            fr.method.as_ref(),
            fr.weight.as_ref(),
            &ff,
            &svc_addr,
            method,
        )?;
        if reals
            .iter()
            .any(|r| r.spec.addr == spec.addr && r.spec.port == spec.port)
        {
            p.at(
                fr.address.span(),
                &format!("{ff}.address"),
                "the fallback server is also a real server of this service",
            );
        }
        if spec.weight == 0 {
            p.at(
                f.span(),
                &format!("{ff}.weight"),
                "a fallback with weight 0 would never get traffic; expected 1 to 65535",
            );
        }
        Some(spec)
    });

    let quorum = match &s.quorum {
        None => 1,
        Some(q) => {
            let n = *q.get_ref();
            if n < 1 || n as usize > reals.len().max(1) {
                p.at(
                    q.span(),
                    &format!("{field}.quorum"),
                    format!(
                        "expected the number of UP reals the service needs, from 1 to its {} reals",
                        reals.len()
                    ),
                );
                1
            } else {
                n as u32
            }
        }
    };

    if let Some(c) = &check {
        // A check without a port to go to.
        let needs_port = matches!(
            c.kind,
            CheckKind::Tcp | CheckKind::Http(_) | CheckKind::Udp(_) | CheckKind::Dns(_)
        );
        if needs_port && c.port.is_none() {
            for (j, r) in reals.iter().enumerate() {
                if r.check_port.is_none() && r.spec.port == 0 {
                    p.at(
                        span.clone(),
                        &format!("{field}.real[{j}].check_port"),
                        "the service covers every port (port 0): a check needs check.port or the real's check_port",
                    );
                }
            }
        }
    }

    if p.list.len() > before {
        return None;
    }
    Some(ServiceConfig {
        name,
        spec: ServiceSpec {
            addr: svc_addr,
            scheduler,
            hash_port,
            hash_source_only,
            persistence,
        },
        reals,
        check: Arc::new(check?),
        on_down,
        slowstart,
        quorum,
        fallback,
        hooks,
    })
}

#[allow(clippy::too_many_arguments)]
fn real_spec(
    p: &mut Problems,
    address: &Spanned<String>,
    method_v: Option<&Spanned<String>>,
    weight_v: Option<&Spanned<i64>>,
    field: &str,
    svc: &ServiceAddr,
    default_method: Method,
) -> Option<RealSpec> {
    let before = p.list.len();
    let sa = socket_addr(p, address, &format!("{field}.address"), Some(svc.port));
    let m = match method_v {
        None => default_method,
        Some(v) => method(p, v, &format!("{field}.method")).unwrap_or(default_method),
    };
    let weight = match weight_v {
        None => 1,
        Some(w) => {
            let n = *w.get_ref();
            if !(0..=MAX_WEIGHT as i64).contains(&n) {
                p.at(
                    w.span(),
                    &format!("{field}.weight"),
                    format!("expected a weight from 0 to {MAX_WEIGHT}, not {n}"),
                );
            }
            n.clamp(0, MAX_WEIGHT as i64) as u32
        }
    };
    let sa = sa?;
    if sa.is_ipv4() != svc.addr.is_ipv4() {
        p.at(
            address.span(),
            &format!("{field}.address"),
            "the real server's address family differs from the virtual service's",
        );
    }
    let mut port = sa.port();
    if m != Method::Masq {
        if port != 0 && port != svc.port {
            p.at(
                address.span(),
                &format!("{field}.address"),
                format!(
                    "direct routing and tunnelling cannot change the port: expected port {} (the virtual port) or none, or method = \"nat\"",
                    svc.port
                ),
            );
        }
        port = svc.port;
    } else if port == 0 {
        port = svc.port;
    }
    if p.list.len() > before {
        return None;
    }
    Some(RealSpec::new(sa.ip(), port, m, weight))
}

/// A key only some check types take: (name, where it was written, the types).
type TypedKey<'a> = (&'a str, Option<Range<usize>>, &'a [&'a str]);

fn check(
    p: &mut Problems,
    c: Spanned<RawCheck>,
    field: &str,
    defaults: &CheckConfig,
    proto: Protocol,
) -> Option<CheckConfig> {
    let before = p.list.len();
    let span = c.span();
    let c = c.into_inner();
    let mut cfg = timing(
        p,
        RawTiming {
            interval: c.interval,
            timeout: c.timeout,
            rise: c.rise,
            fall: c.fall,
            fastinter: c.fastinter,
            downinter: c.downinter,
            init_state: c.init_state,
        },
        field,
        defaults,
    );
    if let Some(v) = &c.port {
        cfg.port = port(p, v, &format!("{field}.port"));
    }
    let kind_name = match &c.kind {
        Some(k) => k.get_ref().to_ascii_lowercase(),
        None if proto == Protocol::Udp => {
            p.at(
                span.clone(),
                &format!("{field}.type"),
                "a UDP service needs an explicit check type (udp, dns, external, on or off)",
            );
            return None;
        }
        None => "tcp".to_owned(),
    };
    let kind_span = c.kind.as_ref().map_or(span.clone(), |k| k.span());
    // Keys that only some types take.
    let typed: [TypedKey; 12] = [
        (
            "path",
            c.path.as_ref().map(|v| v.span()),
            &["http", "https"],
        ),
        (
            "host",
            c.host.as_ref().map(|v| v.span()),
            &["http", "https"],
        ),
        (
            "status",
            c.status.as_ref().map(|v| v.span()),
            &["http", "https"],
        ),
        (
            "body",
            c.body.as_ref().map(|v| v.span()),
            &["http", "https"],
        ),
        ("verify", c.verify.as_ref().map(|v| v.span()), &["https"]),
        ("ca_file", c.ca_file.as_ref().map(|v| v.span()), &["https"]),
        ("payload", c.payload.as_ref().map(|v| v.span()), &["udp"]),
        ("expect", c.expect.as_ref().map(|v| v.span()), &["udp"]),
        (
            "require_reply",
            c.require_reply.as_ref().map(|v| v.span()),
            &["udp"],
        ),
        ("name", c.name.as_ref().map(|v| v.span()), &["dns"]),
        (
            "query_type",
            c.query_type.as_ref().map(|v| v.span()),
            &["dns"],
        ),
        (
            "command",
            c.command.as_ref().map(|v| v.span()),
            &["external"],
        ),
    ];
    for (key, sp, types) in typed.iter() {
        if let Some(sp) = sp
            && !types.contains(&kind_name.as_str())
        {
            p.at(
                sp.clone(),
                &format!("{field}.{key}"),
                format!(
                    "{key} does not apply to a {kind_name} check (only to {})",
                    types.join(", ")
                ),
            );
        }
    }
    if let Some(d) = &c.dynamic
        && kind_name != "external"
    {
        p.at(
            d.span(),
            &format!("{field}.dynamic"),
            format!("dynamic does not apply to a {kind_name} check (only to external)"),
        );
    }
    let kind = match kind_name.as_str() {
        "tcp" | "connect" => CheckKind::Tcp,
        "http" | "https" => {
            let path = match &c.path {
                None => "/".to_owned(),
                Some(v) => {
                    let s = v.get_ref();
                    if !s.starts_with('/') || s.chars().any(|c| c.is_whitespace() || c.is_control())
                    {
                        p.at(
                            v.span(),
                            &format!("{field}.path"),
                            format!("expected a request path starting with '/' and without spaces, like \"/health\", not {s:?}"),
                        );
                    }
                    s.clone()
                }
            };
            let host = c.host.as_ref().map(|h| {
                let s = h.get_ref();
                if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    p.at(
                        h.span(),
                        &format!("{field}.host"),
                        format!("expected a host name for the Host header, like \"www.example.com\", not {s:?}"),
                    );
                }
                s.clone()
            });
            let status = c
                .status
                .as_ref()
                .and_then(|v| status_set(p, v, &format!("{field}.status")))
                .unwrap_or_default();
            let body = c
                .body
                .as_ref()
                .and_then(|b| match regex::Regex::new(b.get_ref()) {
                    Ok(r) => Some(Pattern(r)),
                    Err(e) => {
                        p.at(
                            b.span(),
                            &format!("{field}.body"),
                            format!(
                                "expected a regular expression: {}",
                                one_line(&e.to_string())
                            ),
                        );
                        None
                    }
                });
            let tls = if kind_name == "https" {
                let verify = c.verify.as_ref().is_none_or(|v| *v.get_ref());
                let ca_file = c.ca_file.as_ref().map(|v| PathBuf::from(v.get_ref()));
                if !verify && let Some(v) = &c.ca_file {
                    p.at(
                        v.span(),
                        &format!("{field}.ca_file"),
                        "ca_file has no use with verify = false",
                    );
                }
                match super::check::http::client_config(verify, ca_file.as_deref()) {
                    Ok(client) => Some(TlsCheck {
                        verify,
                        ca_file,
                        client,
                    }),
                    Err(e) => {
                        let sp = c.ca_file.as_ref().map_or(kind_span.clone(), |v| v.span());
                        p.at(sp, &format!("{field}.ca_file"), e);
                        None
                    }
                }
            } else {
                None
            };
            CheckKind::Http(HttpCheck {
                path,
                host,
                status,
                body,
                tls,
            })
        }
        "udp" => {
            let expect =
                c.expect
                    .as_ref()
                    .and_then(|b| match regex::bytes::Regex::new(b.get_ref()) {
                        Ok(r) => Some(BytesPattern(r)),
                        Err(e) => {
                            p.at(
                                b.span(),
                                &format!("{field}.expect"),
                                format!(
                                    "expected a regular expression: {}",
                                    one_line(&e.to_string())
                                ),
                            );
                            None
                        }
                    });
            let require_reply = match &c.require_reply {
                Some(v) => {
                    if !*v.get_ref() && c.expect.is_some() {
                        p.at(
                            v.span(),
                            &format!("{field}.require_reply"),
                            "require_reply = false contradicts expect (a pattern needs a reply)",
                        );
                    }
                    *v.get_ref()
                }
                None => true,
            };
            CheckKind::Udp(UdpCheck {
                payload: c
                    .payload
                    .as_ref()
                    .map(|s| s.get_ref().as_bytes().to_vec())
                    .unwrap_or_default(),
                expect,
                require_reply,
            })
        }
        "dns" => {
            let name = match &c.name {
                Some(n) => {
                    let s = n.get_ref();
                    if s.is_empty()
                        || s.len() > 253
                        || s.trim_end_matches('.')
                            .split('.')
                            .any(|l| l.is_empty() || l.len() > 63)
                        || !s.is_ascii()
                    {
                        p.at(
                            n.span(),
                            &format!("{field}.name"),
                            format!("expected a domain name to query, like \"www.example.com\", not {s:?}"),
                        );
                    }
                    s.clone()
                }
                None => {
                    p.at(
                        kind_span.clone(),
                        &format!("{field}.name"),
                        "a dns check needs the name to query (name = \"...\")",
                    );
                    String::new()
                }
            };
            let qtype = match &c.query_type {
                None => DnsType::A,
                Some(t) => {
                    let up = t.get_ref().to_ascii_uppercase();
                    match DnsType::ALL.iter().find(|(n, _)| *n == up) {
                        Some((_, q)) => *q,
                        None => {
                            p.at(
                                t.span(),
                                &format!("{field}.query_type"),
                                format!(
                                    "expected one of {}, not {:?}",
                                    DnsType::ALL
                                        .iter()
                                        .map(|(n, _)| *n)
                                        .collect::<Vec<_>>()
                                        .join(", "),
                                    t.get_ref()
                                ),
                            );
                            DnsType::A
                        }
                    }
                }
            };
            CheckKind::Dns(DnsCheck { name, qtype })
        }
        "external" => match &c.command {
            Some(v) => match command(p, v, &format!("{field}.command")) {
                Some(command) => CheckKind::External(ExternalCheck {
                    command,
                    dynamic: c.dynamic.as_ref().is_none_or(|d| *d.get_ref()),
                }),
                None => return None,
            },
            None => {
                p.at(
                    kind_span,
                    &format!("{field}.command"),
                    "an external check needs a command (a string for /bin/sh -c, or an array)",
                );
                return None;
            }
        },
        "on" => CheckKind::On,
        "off" => CheckKind::Off,
        other => {
            p.at(
                kind_span,
                &format!("{field}.type"),
                format!(
                    "expected one of tcp, http, https, udp, dns, external, on, off; not {other:?}"
                ),
            );
            return None;
        }
    };
    if proto == Protocol::Udp
        && matches!(kind, CheckKind::Tcp | CheckKind::Http(_))
        && cfg.port.is_none()
    {
        p.at(
            c.kind.as_ref().map_or(span, |k| k.span()),
            &format!("{field}.type"),
            format!(
                "a {} check of a UDP service needs check.port (the service's port is UDP)",
                kind.name()
            ),
        );
    }
    cfg.kind = kind;
    (p.list.len() == before).then_some(cfg)
}

fn timing(p: &mut Problems, t: RawTiming, field: &str, defaults: &CheckConfig) -> CheckConfig {
    let mut c = defaults.clone();
    let min = Duration::from_millis(10);
    if let Some(v) = &t.interval
        && let Some(d) = duration(p, v, &format!("{field}.interval"), min)
    {
        c.interval = d;
    }
    if let Some(v) = &t.timeout
        && let Some(d) = duration(p, v, &format!("{field}.timeout"), min)
    {
        c.timeout = d;
    }
    if let Some(v) = &t.fastinter {
        c.fastinter = duration(p, v, &format!("{field}.fastinter"), min);
    }
    if let Some(v) = &t.downinter {
        c.downinter = duration(p, v, &format!("{field}.downinter"), min);
    }
    for (v, name, slot) in [
        (&t.rise, "rise", &mut c.rise),
        (&t.fall, "fall", &mut c.fall),
    ] {
        if let Some(v) = v {
            let n = *v.get_ref();
            if (1..=1000).contains(&n) {
                *slot = n as u32;
            } else {
                p.at(
                    v.span(),
                    &format!("{field}.{name}"),
                    format!("expected a number of consecutive checks from 1 to 1000, not {n}"),
                );
            }
        }
    }
    if let Some(v) = &t.init_state {
        c.init_state = match v.get_ref().as_str() {
            "up" => InitState::Up,
            "fully-up" => InitState::FullyUp,
            "down" => InitState::Down,
            "fully-down" => InitState::FullyDown,
            other => {
                p.at(
                    v.span(),
                    &format!("{field}.init_state"),
                    format!(
                        "expected \"up\", \"fully-up\", \"down\" or \"fully-down\", not {other:?}"
                    ),
                );
                c.init_state
            }
        };
    }
    c
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `"10.0.0.1:80"`, or `"10.0.0.1"` when a default port is given; `[v6]:port` too.
fn socket_addr(
    p: &mut Problems,
    v: &Spanned<String>,
    field: &str,
    default_port: Option<u16>,
) -> Option<SocketAddr> {
    let s = v.get_ref().trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a);
    }
    if let Some(port) = default_port
        && let Ok(ip) = s
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
    {
        return Some(SocketAddr::new(ip, port));
    }
    let expected = if default_port.is_some() {
        "an address with an optional port, like \"10.1.0.11\" or \"10.1.0.11:8080\""
    } else {
        "an address and port, like \"10.0.0.100:80\""
    };
    let hint = if s.chars().any(|c| c.is_ascii_alphabetic()) && !s.contains("::") {
        " (host names are not resolved)"
    } else {
        ""
    };
    p.at(
        v.span(),
        field,
        format!("expected {expected}, not {s:?}{hint}"),
    );
    None
}

fn port(p: &mut Problems, v: &Spanned<i64>, field: &str) -> Option<u16> {
    let n = *v.get_ref();
    if (1..=65535).contains(&n) {
        Some(n as u16)
    } else {
        p.at(
            v.span(),
            field,
            format!("expected a port from 1 to 65535, not {n}"),
        );
        None
    }
}

pub(crate) fn scheduler_by_name(name: &str) -> Option<(Scheduler, bool)> {
    Some(match name {
        "maglev" => (Scheduler::Maglev, false),
        "mh" => (Scheduler::Maglev, true),
        "sh" => (Scheduler::SourceHash, false),
        "rr" => (Scheduler::RoundRobin, false),
        "wrr" => (Scheduler::WeightedRoundRobin, false),
        _ => return None,
    })
}

fn scheduler(p: &mut Problems, v: &Spanned<String>, field: &str) -> Option<(Scheduler, bool)> {
    let name = v.get_ref().to_ascii_lowercase();
    let found = scheduler_by_name(&name);
    if found.is_none() {
        p.at(
            v.span(),
            field,
            format!(
                "expected one of maglev, mh, sh, rr, wrr, not {:?}{}",
                v.get_ref(),
                if [
                    "lc", "wlc", "sed", "nq", "lblc", "lblcr", "dh", "fo", "ovf", "twos"
                ]
                .contains(&name.as_str())
                {
                    " (the data path has no connection-counting schedulers)"
                } else {
                    ""
                }
            ),
        );
    }
    found
}

pub(crate) fn method_by_name(name: &str) -> Option<Method> {
    Some(match name {
        "dr" | "gate" | "route" | "direct" => Method::Route,
        "tun" | "tunnel" | "ipip" => Method::Tunnel,
        "nat" | "masq" | "masquerade" => Method::Masq,
        _ => return None,
    })
}

fn method(p: &mut Problems, v: &Spanned<String>, field: &str) -> Option<Method> {
    let m = method_by_name(&v.get_ref().to_ascii_lowercase());
    if m.is_none() {
        p.at(
            v.span(),
            field,
            format!("expected \"dr\", \"tun\" or \"nat\", not {:?}", v.get_ref()),
        );
    }
    m
}

fn on_down(p: &mut Problems, v: &Spanned<String>, field: &str) -> Option<OnDown> {
    match v.get_ref().as_str() {
        "quiescent" => Some(OnDown::Quiescent),
        "remove" => Some(OnDown::Remove),
        other => {
            p.at(
                v.span(),
                field,
                format!("expected \"quiescent\" or \"remove\", not {other:?}"),
            );
            None
        }
    }
}

/// Parse "1.5s", "500ms", "2m", "1h"; a bare integer is seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let scale = match unit.trim() {
        "ms" => 0.001,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return None,
    };
    let secs = n * scale;
    (secs.is_finite() && (0.0..1e9).contains(&secs)).then(|| Duration::from_secs_f64(secs))
}

fn duration(
    p: &mut Problems,
    v: &Spanned<toml::Value>,
    field: &str,
    min: Duration,
) -> Option<Duration> {
    let d = match v.get_ref() {
        toml::Value::Integer(n) if *n >= 0 => Some(Duration::from_secs(*n as u64)),
        toml::Value::String(s) => parse_duration(s),
        _ => None,
    };
    match d {
        Some(d) if d >= min => Some(d),
        Some(_) => {
            p.at(
                v.span(),
                field,
                format!("expected at least {}", fmt_duration(min)),
            );
            None
        }
        None => {
            p.at(
                v.span(),
                field,
                format!(
                    "expected a duration like \"2s\", \"500ms\" or \"1m\" (or whole seconds as a number), not {}",
                    describe(v.get_ref())
                ),
            );
            None
        }
    }
}

/// A TOML value as an operator wrote it, for messages.
fn describe(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("{s:?}"),
        toml::Value::Integer(n) => n.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(_) => "an array".into(),
        toml::Value::Table(_) => "a table".into(),
    }
}

pub fn fmt_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 && d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

fn command(p: &mut Problems, v: &Spanned<toml::Value>, field: &str) -> Option<Command> {
    match v.get_ref() {
        toml::Value::String(s) if !s.trim().is_empty() => Some(Command::Shell(s.clone())),
        toml::Value::Array(a)
            if !a.is_empty() && a.iter().all(|x| x.as_str().is_some_and(|s| !s.is_empty())) =>
        {
            Some(Command::Argv(
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect(),
            ))
        }
        _ => {
            p.at(
                v.span(),
                field,
                "expected a command: a string (run by /bin/sh -c) or a non-empty array of strings (program and arguments)",
            );
            None
        }
    }
}

fn status_set(p: &mut Problems, v: &Spanned<toml::Value>, field: &str) -> Option<StatusSet> {
    let items: Vec<&toml::Value> = match v.get_ref() {
        toml::Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    let mut out = Vec::new();
    let mut bad = false;
    for it in items {
        let range = match it {
            toml::Value::Integer(n) => u16::try_from(*n).ok().map(|c| (c, c)),
            toml::Value::String(s) => match s.split_once('-') {
                Some((a, b)) => a.trim().parse().ok().zip(b.trim().parse().ok()),
                None => s.trim().parse().ok().map(|c| (c, c)),
            },
            _ => None,
        };
        match range {
            Some((a, b)) if (100..=599).contains(&a) && (100..=599).contains(&b) && a <= b => {
                out.push((a, b))
            }
            _ => bad = true,
        }
    }
    if bad || out.is_empty() {
        p.at(
            v.span(),
            field,
            "expected HTTP status codes from 100 to 599: a code, a range \"200-299\", or an array of them",
        );
        return None;
    }
    Some(StatusSet(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(src: &str) -> String {
        parse(Path::new("d.toml"), src).unwrap_err().to_string()
    }

    const SVC: &str = "[[service]]\naddress = \"10.0.0.100:80\"\n";
    const REAL: &str = "[[service.real]]\naddress = \"10.1.0.11\"\n";

    /// Each broken file and the exact message an operator gets.
    #[test]
    fn broken_files_name_file_line_field_and_what_is_expected() {
        let with_check = |c: &str| format!("{SVC}check = {{ {c} }}\n{REAL}");
        let with_real = |r: &str| format!("{SVC}[[service.real]]\n{r}\n");
        let cases: Vec<(String, &str)> = vec![
            ("[[service]\n".into(), "d.toml:1:11: unclosed array table, expected `]`"),
            (
                format!("{SVC}weight = 3\n{REAL}"),
                "d.toml:3:1: service[0].weight: unknown field `weight`, expected one of `name`, `address`, `protocol`, `scheduler`, `hash_port`, `method`, `persistent`, `persistent_netmask`, `on_down`, `slowstart`, `quorum`, `fallback`, `check`, `notify`, `notify_up`, `notify_down`, `real`",
            ),
            (
                "[[service]]\nname = \"web\"\n".into(),
                "d.toml:1:1: service[0].address: missing field `address`",
            ),
            ("[[service]]\naddress = 80\n".into(), "d.toml:2:11: service[0].address: wrong type: integer `80`, expected a string"),
            (
                "[[service]]\naddress = \"10.0.0.100\"\n".into(),
                "d.toml:2:11: service[0].address: expected an address and port, like \"10.0.0.100:80\", not \"10.0.0.100\"",
            ),
            (
                "[[service]]\naddress = \"www.example.com:80\"\n".into(),
                "d.toml:2:11: service[0].address: expected an address and port, like \"10.0.0.100:80\", not \"www.example.com:80\" (host names are not resolved)",
            ),
            (
                "[[service]]\naddress = \"[fd00::1]:80\"\n[[service.real]]\naddress = \"fd00::11\"\n".into(),
                "d.toml:2:11: service[0].address: IPv6 virtual services are not supported by the data path yet",
            ),
            (SVC.into(), "d.toml:1:1: service[0].real: a service needs at least one [[service.real]]"),
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
            ("[daemon]\njitter = 0.9\n".into(), "d.toml:2:10: daemon.jitter: expected a fraction from 0.0 to 0.5"),
            (
                "[daemon]\nnotify = 5\n".into(),
                "d.toml:2:10: daemon.notify: expected a command: a string (run by /bin/sh -c) or a non-empty array of strings (program and arguments)",
            ),
            (
                "[check]\ntype = \"http\"\n".into(),
                "d.toml:2:1: check.type: unknown field `type`, expected one of `interval`, `timeout`, `rise`, `fall`, `fastinter`, `downinter`, `init_state`",
            ),
            (
                "[[service]]\naddress = \"10.0.0.100:0\"\n[[service.real]]\naddress = \"10.1.0.11\"\n".into(),
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
        assert_eq!(c.services.len(), 5);
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
    fn durations() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("10"), None, "a string needs a unit");
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(parse_duration("s"), None);
    }
}
