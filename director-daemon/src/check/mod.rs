//! The checks themselves: one async function per type, each bounded by the check's
//! timeout, each returning an [`Outcome`] whose `detail` says what was seen (it becomes
//! the reason logged with a transition).

pub mod dns;
pub mod external;
pub mod http;

use std::{
    io::ErrorKind,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use tokio::{net::UdpSocket, time::Instant};

use super::config::{CheckConfig, CheckKind, UdpCheck};
use director_control::model::{RealSpec, ServiceAddr};

/// What one check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub ok: bool,
    /// An external check's dynamic weight (exit code - 2).
    pub weight: Option<u32>,
    /// What was seen: "HTTP 200", "connection refused", "timed out after 1s"...
    pub detail: String,
    pub latency: Duration,
}

impl Outcome {
    pub fn up(detail: impl Into<String>) -> Self {
        Self {
            ok: true,
            weight: None,
            detail: detail.into(),
            latency: Duration::ZERO,
        }
    }
    pub fn down(detail: impl Into<String>) -> Self {
        Self {
            ok: false,
            weight: None,
            detail: detail.into(),
            latency: Duration::ZERO,
        }
    }
}

/// Who is being checked (for an external command's environment).
#[derive(Clone, Debug)]
pub struct Subject {
    pub service: ServiceAddr,
    pub service_label: String,
    pub real: RealSpec,
    pub target: SocketAddr,
}

/// Run one check of `subject` as `check` says; never takes (much) longer than its timeout.
pub async fn run(check: &CheckConfig, subject: &Subject) -> Outcome {
    let start = Instant::now();
    let target = subject.target;
    let fut = async {
        match &check.kind {
            CheckKind::Tcp => tcp(target).await,
            CheckKind::Http(h) => http::check(h, target).await,
            CheckKind::Udp(u) => udp(u, target, check.timeout).await,
            CheckKind::Dns(d) => dns::check(d, target).await,
            CheckKind::External(e) => external::check(e, subject, check.timeout).await,
            CheckKind::On => Outcome::up("check off: always up"),
            CheckKind::Off => Outcome::down("check off: always down"),
        }
    };
    let mut out = match tokio::time::timeout(check.timeout, fut).await {
        Ok(o) => o,
        Err(_) => Outcome::down(format!(
            "timed out after {}",
            super::config::fmt_duration(check.timeout)
        )),
    };
    out.latency = start.elapsed();
    out
}

/// Describe a socket error the way an operator reads it.
pub(crate) fn io_detail(what: &str, e: &std::io::Error) -> String {
    let s = match e.kind() {
        ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        ErrorKind::ConnectionReset => "connection reset".to_owned(),
        ErrorKind::TimedOut => "timed out".to_owned(),
        _ => match e.raw_os_error() {
            Some(libc::EHOSTUNREACH) => "host unreachable".to_owned(),
            Some(libc::ENETUNREACH) => "network unreachable".to_owned(),
            _ => e.to_string(),
        },
    };
    if what.is_empty() {
        s
    } else {
        format!("{what}: {s}")
    }
}

/// A TCP connection is accepted. Closed with a reset (SO_LINGER 0), as HAProxy does, so
/// checks leave no TIME_WAIT sockets behind.
async fn tcp(target: SocketAddr) -> Outcome {
    match tokio::net::TcpStream::connect(target).await {
        Ok(s) => {
            let _ = s.set_zero_linger();
            Outcome::up("connected")
        }
        Err(e) => Outcome::down(io_detail("connect", &e)),
    }
}

pub(crate) fn unspecified_for(target: SocketAddr) -> SocketAddr {
    match target.ip() {
        IpAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        IpAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    }
}

/// Send the payload; expect a reply (matching the pattern), or, without require_reply,
/// only the absence of an ICMP error until the timeout.
async fn udp(u: &UdpCheck, target: SocketAddr, timeout: Duration) -> Outcome {
    let sock = match UdpSocket::bind(unspecified_for(target)).await {
        Ok(s) => s,
        Err(e) => return Outcome::down(io_detail("socket", &e)),
    };
    if let Err(e) = sock.connect(target).await {
        return Outcome::down(io_detail("connect", &e));
    }
    if let Err(e) = sock.send(&u.payload).await {
        return Outcome::down(io_detail("send", &e));
    }
    let mut buf = vec![0u8; 65_536];
    if !u.require_reply && u.expect.is_none() {
        // Wait for a reply or an ICMP error a little less than the check's timeout.
        let wait = timeout.mul_f64(0.9);
        return match tokio::time::timeout(wait, sock.recv(&mut buf)).await {
            Ok(Ok(_)) => Outcome::up("replied"),
            Ok(Err(e)) => Outcome::down(io_detail("", &e)),
            Err(_) => Outcome::up("no ICMP error"),
        };
    }
    match sock.recv(&mut buf).await {
        Ok(n) => {
            let reply = &buf[..n];
            match &u.expect {
                Some(p) if !p.0.is_match(reply) => Outcome::down(format!(
                    "reply {:?} does not match /{}/",
                    preview(reply),
                    p.0.as_str()
                )),
                _ => Outcome::up(format!("replied {} bytes", n)),
            }
        }
        Err(e) => Outcome::down(io_detail("", &e)),
    }
}

/// The first bytes of a reply or body, as text, for messages.
pub(crate) fn preview(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(64)]).into_owned();
    if b.len() > 64 { format!("{s}...") } else { s }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use director_common::real::Method;

    use super::*;
    use director_control::model::Protocol;

    use crate::config::{BytesPattern, CheckConfig};

    pub(crate) fn subject(target: SocketAddr) -> Subject {
        Subject {
            service: ServiceAddr {
                proto: Protocol::Tcp,
                addr: "10.0.0.100".parse().unwrap(),
                port: 80,
            },
            service_label: "tcp/10.0.0.100:80".into(),
            real: RealSpec::new(target.ip(), target.port(), Method::Masq, 1),
            target,
        }
    }

    pub(crate) fn with(kind: CheckKind) -> Arc<CheckConfig> {
        let mut c = CheckConfig::new(kind);
        c.timeout = Duration::from_secs(2);
        Arc::new(c)
    }

    #[tokio::test]
    async fn tcp_up_when_accepting_down_when_refused() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let c = with(CheckKind::Tcp);
        let o = run(&c, &subject(addr)).await;
        assert!(o.ok, "{o:?}");
        drop(l);
        let o = run(&c, &subject(addr)).await;
        assert!(!o.ok);
        assert_eq!(o.detail, "connect: connection refused");
    }

    async fn udp_server(reply: Option<&'static [u8]>) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = s.local_addr().unwrap();
        let h = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            // Bounded: the test ends the task.
            while let Ok((_, from)) = s.recv_from(&mut buf).await {
                if let Some(r) = reply {
                    let _ = s.send_to(r, from).await;
                }
            }
        });
        (addr, h)
    }

    fn udp_check(expect: Option<&str>, require_reply: bool) -> Arc<CheckConfig> {
        let mut c = CheckConfig::new(CheckKind::Udp(UdpCheck {
            payload: b"ping".to_vec(),
            expect: expect.map(|e| BytesPattern(regex::bytes::Regex::new(e).unwrap())),
            require_reply,
        }));
        c.timeout = Duration::from_millis(500);
        Arc::new(c)
    }

    #[tokio::test]
    async fn udp_reply_matching_and_not() {
        let (addr, h) = udp_server(Some(b"pong real1")).await;
        let o = run(&udp_check(Some("^pong"), true), &subject(addr)).await;
        assert!(o.ok, "{o:?}");
        let o = run(&udp_check(Some("^real"), true), &subject(addr)).await;
        assert!(!o.ok);
        assert_eq!(o.detail, "reply \"pong real1\" does not match /^real/");
        h.abort();
    }

    #[tokio::test]
    async fn udp_no_reply_is_down_unless_replies_are_optional() {
        let (addr, h) = udp_server(None).await;
        let o = run(&udp_check(None, true), &subject(addr)).await;
        assert!(!o.ok);
        assert_eq!(o.detail, "timed out after 500ms");
        let o = run(&udp_check(None, false), &subject(addr)).await;
        assert!(o.ok, "no reply, no ICMP error: up ({o:?})");
        h.abort();
    }

    #[tokio::test]
    async fn udp_port_unreachable_is_down() {
        // A port nothing listens on: the kernel answers with ICMP port unreachable.
        let (addr, h) = udp_server(None).await;
        h.abort();
        let _ = h.await;
        let o = run(&udp_check(None, false), &subject(addr)).await;
        assert!(!o.ok, "{o:?}");
        assert_eq!(o.detail, "connection refused");
    }

    #[tokio::test]
    async fn on_and_off() {
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert!(run(&with(CheckKind::On), &subject(addr)).await.ok);
        assert!(!run(&with(CheckKind::Off), &subject(addr)).await.ok);
    }
}
