//! Client helpers that run inside a lab namespace (via `Netns::try_run`), so their
//! packets start and end in the lab.

use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use super::netns::Netns;

/// Connect timeout of [`tcp_stream`].
pub const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// HTTP GET `url` from inside `ns`; returns the body of a 2xx answer (other statuses are
/// errors). The host part of `url` must be an IP literal (`http://10.0.0.1:80/`,
/// `http://[fd00::1]/`): no name is ever resolved, so nothing leaves the lab.
pub fn http_get(ns: &Netns, url: &str, timeout: Duration) -> Result<String> {
    check_url(url)?;
    let url = url.to_owned();
    let u = url.clone();
    ns.try_run(move || -> Result<String> {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .proxy(None)
                .timeout_global(Some(timeout))
                .max_idle_connections(0)
                .build(),
        );
        let mut resp = agent.get(&u).call()?;
        Ok(resp.body_mut().read_to_string()?)
    })?
    .with_context(|| format!("GET {url} from netns {}", ns.name()))
}

/// `http://IP:PORT/` for an address of either family (`http://[fd00::100]:80/` for
/// IPv6), the URL form [`http_get`] takes.
pub fn http_url(ip: IpAddr, port: u16) -> String {
    format!("http://{}/", SocketAddr::new(ip, port))
}

fn check_url(url: &str) -> Result<()> {
    let uri: ureq::http::Uri = url.parse().with_context(|| format!("bad URL {url:?}"))?;
    if uri.scheme_str() != Some("http") {
        bail!("{url:?}: only http:// URLs are supported");
    }
    let host = uri.host().ok_or_else(|| anyhow!("{url:?} has no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.parse::<IpAddr>().is_err() {
        bail!("{url:?}: the host must be an IP address of the lab, not a name");
    }
    Ok(())
}

/// Sends one datagram from inside `ns` to `target` and waits (up to `timeout`) for one
/// reply from it, which is returned. The socket is connected, so only `target` can answer
/// (an ICMP port unreachable shows up as a "connection refused" error).
pub fn udp_request(
    ns: &Netns,
    target: SocketAddr,
    payload: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>> {
    let payload = payload.to_vec();
    ns.try_run(move || -> Result<Vec<u8>> {
        let any: SocketAddr = if target.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let sock = UdpSocket::bind(any)?;
        sock.connect(target)?;
        sock.set_read_timeout(Some(timeout))?;
        sock.send(&payload)?;
        let mut buf = vec![0u8; 65536];
        let n = sock.recv(&mut buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                anyhow!("no reply within {timeout:?}")
            }
            _ => e.into(),
        })?;
        buf.truncate(n);
        Ok(buf)
    })?
    .with_context(|| format!("UDP request to {target} from netns {}", ns.name()))
}

/// Sends one datagram from an unconnected socket inside `ns` to `target` and waits (up
/// to `timeout`) for the first datagram back from anyone; returns it with the address it
/// came from, so a caller can check who answered (a connected socket would silently drop
/// an answer from another address).
pub fn udp_exchange(
    ns: &Netns,
    target: SocketAddr,
    payload: &[u8],
    timeout: Duration,
) -> Result<(Vec<u8>, SocketAddr)> {
    let payload = payload.to_vec();
    ns.try_run(move || -> Result<(Vec<u8>, SocketAddr)> {
        let any: SocketAddr = if target.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let sock = UdpSocket::bind(any)?;
        sock.set_read_timeout(Some(timeout))?;
        sock.send_to(&payload, target)?;
        let mut buf = vec![0u8; 65536];
        let (n, from) = sock.recv_from(&mut buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                anyhow!("no reply within {timeout:?}")
            }
            _ => e.into(),
        })?;
        buf.truncate(n);
        Ok((buf, from))
    })?
    .with_context(|| format!("UDP exchange with {target} from netns {}", ns.name()))
}

/// Opens a TCP connection from inside `ns` to `target` (connect timeout
/// [`TCP_CONNECT_TIMEOUT`]). The socket stays in `ns` for its whole life, whichever thread
/// then uses it; e.g. against a [`ServerSpec::Echo`](super::ServerSpec::Echo) server to
/// prove a long-lived connection keeps flowing.
pub fn tcp_stream(ns: &Netns, target: SocketAddr) -> Result<TcpStream> {
    ns.try_run(move || TcpStream::connect_timeout(&target, TCP_CONNECT_TIMEOUT))?
        .with_context(|| format!("TCP connect to {target} from netns {}", ns.name()))
}
