//! HTTP and HTTPS GET checks: hyper's HTTP/1 client over one fresh connection per check
//! (TLS by rustls with the ring provider), status code set, optional body pattern.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::{
    Request,
    header::{CONNECTION, HOST, USER_AGENT},
};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{InvalidDnsNameError, ServerName};
use tokio::net::TcpStream;

use super::{Outcome, io_detail, preview};
use crate::config::HttpCheck;

/// At most this much of a body is read and matched.
pub const MAX_BODY: usize = 64 * 1024;

/// The Host header for a target without a configured host.
fn default_host(target: SocketAddr, tls: bool) -> String {
    let default_port = if tls { 443 } else { 80 };
    let ip = match target.ip() {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    if target.port() == default_port {
        ip
    } else {
        format!("{ip}:{}", target.port())
    }
}

/// The TLS server name: the configured host (without a port), else the address.
fn server_name(
    host: Option<&str>,
    target: SocketAddr,
) -> Result<ServerName<'static>, BadServerName> {
    let Some(h) = host else {
        return Ok(ServerName::IpAddress(target.ip().into()));
    };
    let bare = if h.starts_with('[') {
        h.trim_start_matches('[').split(']').next().unwrap_or(h)
    } else {
        h.rsplit_once(':').map_or(h, |(a, p)| {
            if p.chars().all(|c| c.is_ascii_digit()) {
                a
            } else {
                h
            }
        })
    };
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(bare.to_owned()).map_err(|source| BadServerName {
        name: bare.to_owned(),
        source,
    })
}

/// A configured host that cannot name the TLS server.
#[derive(Debug, thiserror::Error)]
#[error("TLS server name {name:?}: {source}")]
struct BadServerName {
    name: String,
    source: InvalidDnsNameError,
}

pub async fn check(h: &HttpCheck, target: SocketAddr) -> Outcome {
    let tcp = match TcpStream::connect(target).await {
        Ok(s) => s,
        Err(e) => return Outcome::down(io_detail("connect", &e)),
    };
    let _ = tcp.set_nodelay(true);
    let host = h
        .host
        .clone()
        .unwrap_or_else(|| default_host(target, h.tls.is_some()));
    match &h.tls {
        None => request(h, TokioIo::new(tcp), &host).await,
        Some(t) => {
            let name = match server_name(h.host.as_deref(), target) {
                Ok(n) => n,
                Err(e) => return Outcome::down(e.to_string()),
            };
            let connector = tokio_rustls::TlsConnector::from(t.client.clone());
            match connector.connect(name, tcp).await {
                Ok(tls) => request(h, TokioIo::new(tls), &host).await,
                Err(e) => Outcome::down(format!("TLS: {e}")),
            }
        }
    }
}

async fn request<I>(h: &HttpCheck, io: I, host: &str) -> Outcome
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        match hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(io).await {
            Ok(x) => x,
            Err(e) => return Outcome::down(format!("HTTP: {e}")),
        };
    let req = match Request::get(h.path.as_str())
        .header(HOST, host)
        .header(
            USER_AGENT,
            concat!("director-healthcheck/", env!("CARGO_PKG_VERSION")),
        )
        .header(CONNECTION, "close")
        .body(Empty::new())
    {
        Ok(r) => r,
        Err(e) => return Outcome::down(format!("request: {e}")),
    };
    let work = async {
        let resp = match sender.send_request(req).await {
            Ok(r) => r,
            Err(e) => return Outcome::down(format!("HTTP: {e}")),
        };
        let code = resp.status().as_u16();
        if !h.status.contains(code) {
            return Outcome::down(format!("HTTP {code} (expected {})", h.status));
        }
        let Some(pattern) = &h.body else {
            return Outcome::up(format!("HTTP {code}"));
        };
        let mut body = resp.into_body();
        let mut buf: Vec<u8> = Vec::new();
        while buf.len() < MAX_BODY {
            match body.frame().await {
                None => break,
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data() {
                        buf.extend_from_slice(&d);
                    }
                }
                Some(Err(e)) => {
                    return Outcome::down(format!("HTTP {code}, reading the body: {e}"));
                }
            }
        }
        buf.truncate(MAX_BODY);
        let text = String::from_utf8_lossy(&buf);
        if pattern.0.is_match(&text) {
            Outcome::up(format!("HTTP {code}, body matches"))
        } else {
            Outcome::down(format!(
                "HTTP {code}, body {:?} does not match /{}/",
                preview(&buf),
                pattern.0.as_str()
            ))
        }
    };
    tokio::pin!(work);
    tokio::pin!(conn);
    let mut conn_done = false;
    loop {
        tokio::select! {
            biased;
            out = &mut work => return out,
            r = &mut conn, if !conn_done => {
                if let Err(e) = r {
                    return Outcome::down(format!("HTTP: {e}"));
                }
                // Closed after the response: what was read is still to be looked at.
                conn_done = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::{
        io::{AsyncReadExt as _, AsyncWriteExt as _},
        net::TcpListener,
    };

    use super::*;
    use crate::{
        check::{
            run,
            tests::{subject, with},
        },
        config::{CheckKind, Pattern, StatusSet, TlsCheck},
    };

    /// Serves `n` connections with a canned response, recording each request head.
    async fn server(
        response: &'static str,
        n: usize,
    ) -> (SocketAddr, tokio::task::JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let h = tokio::spawn(async move {
            let mut heads = Vec::new();
            for _ in 0..n {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let mut got = 0;
                while !buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                    let k = s.read(&mut buf[got..]).await.unwrap();
                    if k == 0 {
                        break;
                    }
                    got += k;
                }
                heads.push(String::from_utf8_lossy(&buf[..got]).into_owned());
                s.write_all(response.as_bytes()).await.unwrap();
                let _ = s.shutdown().await;
            }
            heads
        });
        (addr, h)
    }

    fn http(status: StatusSet, body: Option<&str>, host: Option<&str>) -> CheckKind {
        CheckKind::Http(HttpCheck {
            path: "/health?x=1".into(),
            host: host.map(str::to_owned),
            status,
            body: body.map(|b| Pattern(regex::Regex::new(b).unwrap())),
            tls: None,
        })
    }

    const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nreal1 ok\n";

    #[tokio::test]
    async fn http_status_body_and_host() {
        let (addr, srv) = server(OK, 3).await;
        let o = run(
            &with(http(
                StatusSet::default(),
                Some("^real1 ok"),
                Some("www.example.com"),
            )),
            &subject(addr),
        )
        .await;
        assert!(o.ok, "{o:?}");
        assert_eq!(o.detail, "HTTP 200, body matches");
        let o = run(
            &with(http(StatusSet(vec![(204, 204)]), None, None)),
            &subject(addr),
        )
        .await;
        assert!(!o.ok);
        assert_eq!(o.detail, "HTTP 200 (expected 204)");
        let o = run(
            &with(http(StatusSet::default(), Some("^real2"), None)),
            &subject(addr),
        )
        .await;
        assert!(!o.ok);
        assert_eq!(
            o.detail,
            "HTTP 200, body \"real1 ok\\n\" does not match /^real2/"
        );
        let heads = srv.await.unwrap();
        assert!(
            heads[0].starts_with("GET /health?x=1 HTTP/1.1\r\n"),
            "{}",
            heads[0]
        );
        assert!(
            heads[0]
                .to_ascii_lowercase()
                .contains("host: www.example.com\r\n"),
            "{}",
            heads[0]
        );
        assert!(
            heads[1]
                .to_ascii_lowercase()
                .contains(&format!("host: 127.0.0.1:{}\r\n", addr.port())),
            "{}",
            heads[1]
        );
    }

    #[tokio::test]
    async fn http_wrong_status_is_down() {
        let (addr, srv) = server(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n",
            1,
        )
        .await;
        let o = run(
            &with(http(StatusSet::default(), None, None)),
            &subject(addr),
        )
        .await;
        assert!(!o.ok);
        assert_eq!(o.detail, "HTTP 503 (expected 200-399)");
        srv.await.unwrap();
    }

    #[tokio::test]
    async fn http_garbage_and_silence_are_down() {
        let (addr, srv) = server("SSH-2.0-OpenSSH\r\n\r\n", 1).await;
        let o = run(
            &with(http(StatusSet::default(), None, None)),
            &subject(addr),
        )
        .await;
        assert!(!o.ok);
        assert!(o.detail.starts_with("HTTP: "), "{o:?}");
        srv.await.unwrap();
        // Accepts and never answers: the timeout bounds the check.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let mut c = CheckConfig::new(http(StatusSet::default(), None, None));
        c.timeout = Duration::from_millis(300);
        let o = run(&Arc::new(c), &subject(addr)).await;
        assert!(!o.ok);
        assert_eq!(o.detail, "timed out after 300ms");
    }

    use std::{path::Path, sync::Arc};

    use crate::config::{CheckConfig, tls::client_config};

    /// A TLS server with a self-signed certificate for "localhost".
    async fn tls_server(n: usize) -> (SocketAddr, String, tokio::task::JoinHandle<()>) {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert_pem = ck.cert.pem();
        let cert = ck.cert.der().clone();
        let key =
            rustls::pki_types::PrivateKeyDer::try_from(ck.signing_key.serialize_der()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let h = tokio::spawn(async move {
            for _ in 0..n {
                let (s, _) = l.accept().await.unwrap();
                // A failed handshake (the client refusing the certificate) is expected.
                let Ok(mut s) = acceptor.accept(s).await else {
                    continue;
                };
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(OK.as_bytes()).await;
                let _ = s.shutdown().await;
            }
        });
        (addr, cert_pem, h)
    }

    fn https(verify: bool, ca: Option<&Path>, host: Option<&str>) -> CheckKind {
        CheckKind::Http(HttpCheck {
            path: "/".into(),
            host: host.map(str::to_owned),
            status: StatusSet::default(),
            body: Some(Pattern(regex::Regex::new("ok").unwrap())),
            tls: Some(TlsCheck {
                verify,
                ca_file: ca.map(Path::to_owned),
                client: client_config(verify, ca).unwrap(),
            }),
        })
    }

    #[tokio::test]
    async fn https_verified_against_a_ca_file_unverified_and_refused() {
        let (addr, pem, srv) = tls_server(3).await;
        let dir = std::env::temp_dir().join(format!(
            "director-https-{}-{}",
            std::process::id(),
            addr.port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, pem).unwrap();
        let o = run(
            &with(https(true, Some(&ca), Some("localhost"))),
            &subject(addr),
        )
        .await;
        assert!(o.ok, "verified with the CA file: {o:?}");
        let o = run(&with(https(false, None, None)), &subject(addr)).await;
        assert!(o.ok, "not verified: {o:?}");
        // The certificate is for "localhost", not for the address.
        let o = run(&with(https(true, Some(&ca), None)), &subject(addr)).await;
        assert!(!o.ok);
        assert!(
            o.detail.starts_with("TLS: invalid peer certificate"),
            "{o:?}"
        );
        srv.await.unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn host_header_and_server_name() {
        let t: SocketAddr = "10.1.0.11:80".parse().unwrap();
        assert_eq!(default_host(t, false), "10.1.0.11");
        assert_eq!(default_host(t, true), "10.1.0.11:80");
        assert_eq!(
            default_host("[fd00::1]:443".parse().unwrap(), true),
            "[fd00::1]"
        );
        assert_eq!(
            server_name(Some("www.example.com:8443"), t).unwrap(),
            ServerName::try_from("www.example.com").unwrap()
        );
        assert!(matches!(
            server_name(None, t).unwrap(),
            ServerName::IpAddress(_)
        ));
    }
}
