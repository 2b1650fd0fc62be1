//! BIRD 2: the include file the daemon generates, written atomically, and BIRD's control
//! socket (what `birdc` speaks) to make BIRD read its configuration again.
//!
//! The control protocol is line based: BIRD greets with `0001 BIRD x.y ready.`; each
//! reply line starts with a four-digit code followed by `-` (more lines follow) or a
//! space (the last line); lines starting with a space continue the previous code. Codes
//! 0xxx end a command that succeeded, 8xxx and 9xxx one that failed (BIRD's
//! doc/reply_codes).

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    io::{BufRead, BufReader, Write},
    net::IpAddr,
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use super::config::{BgpConfig, Community};

/// The static protocol holding the announced IPv4 routes; the IPv4 sessions export only
/// its routes.
pub const STATIC_PROTOCOL: &str = "director_vips";
/// Its IPv6 twin (a BIRD static protocol has one channel, so one per family).
pub const STATIC_PROTOCOL6: &str = "director_vips6";
pub const BFD_PROTOCOL: &str = "director_bfd";

/// BIRD's name for the session to `a`: stable across reorderings of the file, so a
/// reload that only moves a neighbour does not restart its session.
pub fn protocol_name(a: IpAddr) -> String {
    format!("director_{}", a.to_string().replace(['.', ':'], "_"))
}

/// The include file: the announced VIPs as /32 (IPv4) and /128 (IPv6) routes of a
/// static protocol per family, and the sessions (with BFD where asked), each exporting
/// only its family's. BIRD's own configuration has the device protocol and includes
/// this file.
pub fn render(cfg: &BgpConfig, announced: &BTreeSet<IpAddr>) -> String {
    let mut s = String::new();
    s.push_str("# Written by `director daemon` from its [bgp] section: edits here are lost.\n");
    if let Some(id) = cfg.router_id {
        let _ = writeln!(s, "router id {id};");
    }
    let _ = writeln!(s, "\nprotocol static {STATIC_PROTOCOL} {{\n  ipv4;");
    for vip in announced.iter().filter(|a| a.is_ipv4()) {
        let _ = writeln!(s, "  route {vip}/32 blackhole;");
    }
    s.push_str("}\n");
    if cfg.neighbors.iter().any(|n| n.address.is_ipv6()) {
        let _ = writeln!(s, "\nprotocol static {STATIC_PROTOCOL6} {{\n  ipv6;");
        for vip in announced.iter().filter(|a| a.is_ipv6()) {
            let _ = writeln!(s, "  route {vip}/128 blackhole;");
        }
        s.push_str("}\n");
    }
    if cfg.neighbors.iter().any(|n| n.bfd.is_some()) {
        let _ = writeln!(s, "\nprotocol bfd {BFD_PROTOCOL} {{\n}}");
    }
    let mut filter = String::new();
    for c in &cfg.communities {
        match c {
            Community::Standard(a, b) => {
                let _ = write!(filter, "bgp_community.add(({a},{b})); ");
            }
            Community::Large(a, b, c) => {
                let _ = write!(filter, "bgp_large_community.add(({a},{b},{c})); ");
            }
        }
    }
    filter.push_str("accept;");
    for n in &cfg.neighbors {
        let _ = writeln!(s, "\nprotocol bgp {} {{", protocol_name(n.address));
        match n.local_address {
            Some(l) => {
                let _ = writeln!(s, "  local {l} as {};", cfg.asn);
            }
            None => {
                let _ = writeln!(s, "  local as {};", cfg.asn);
            }
        }
        let _ = writeln!(s, "  neighbor {} as {};", n.address, n.asn);
        let _ = writeln!(s, "  hold time {};", n.hold_time.as_secs());
        if let Some(b) = n.bfd {
            let ms = b.interval.as_millis();
            let _ = writeln!(
                s,
                "  bfd {{ min rx interval {ms} ms; min tx interval {ms} ms; multiplier {}; }};",
                b.multiplier
            );
        }
        let (channel, from) = if n.address.is_ipv6() {
            ("ipv6", STATIC_PROTOCOL6)
        } else {
            ("ipv4", STATIC_PROTOCOL)
        };
        let _ = writeln!(
            s,
            "  {channel} {{\n    import none;\n    export filter {{ if proto != \"{from}\" then reject; {filter} }};\n  }};\n}}"
        );
    }
    s
}

/// Replace `path` with `text` so that BIRD never reads half a file: a temporary file
/// next to it, flushed, renamed over it.
pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// How long BIRD may take to answer (a configure with many protocols is quick; a BIRD
/// that hangs must not hang the daemon).
const TIMEOUT: Duration = Duration::from_secs(5);

/// A finished reply: its last code and every line's text.
#[derive(Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    pub fn ok(&self) -> bool {
        self.code < 8000
    }

    /// The reply's words, one line.
    pub fn text(&self) -> String {
        self.lines.join("; ")
    }
}

/// Read one reply (up to its last line) from BIRD.
pub fn read_reply(r: &mut impl BufRead) -> std::io::Result<Reply> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "BIRD closed the control socket",
            ));
        }
        let line = line.trim_end_matches(['\n', '\r']);
        if let Some(rest) = line.strip_prefix(' ') {
            lines.push(rest.to_owned());
            continue;
        }
        let code = line
            .get(..4)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("not a BIRD reply: {line:?}"),
                )
            })?;
        let text = line.get(5..).unwrap_or("").to_owned();
        if !text.is_empty() {
            lines.push(text);
        }
        if line.as_bytes().get(4) != Some(&b'-') {
            return Ok(Reply { code, lines });
        }
    }
}

/// One command on BIRD's control socket.
pub fn command(socket: &Path, cmd: &str) -> Result<Reply, String> {
    let s = UnixStream::connect(socket)
        .map_err(|e| format!("BIRD's control socket {}: {e}", socket.display()))?;
    let io = |e: std::io::Error| format!("BIRD's control socket {}: {e}", socket.display());
    s.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    s.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
    let mut r = BufReader::new(s.try_clone().map_err(io)?);
    let hello = read_reply(&mut r).map_err(io)?;
    if !hello.ok() {
        return Err(format!("BIRD refused the connection: {}", hello.text()));
    }
    (&s).write_all(format!("{cmd}\n").as_bytes()).map_err(io)?;
    read_reply(&mut r).map_err(io)
}

/// Make BIRD read its configuration (with the include file) again; Err carries why not
/// (BIRD unreachable, or its words about a configuration it refused).
pub fn configure(socket: &Path) -> Result<(), String> {
    let reply = command(socket, "configure")?;
    if reply.ok() {
        Ok(())
    } else {
        Err(format!("BIRD refused the configuration: {}", reply.text()))
    }
}

/// Whether BIRD answers on its control socket.
pub fn ping(socket: &Path) -> Result<(), String> {
    let reply = command(socket, "show status")?;
    if reply.ok() {
        Ok(())
    } else {
        Err(format!("BIRD: {}", reply.text()))
    }
}
