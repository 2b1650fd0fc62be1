//! In-process servers living in a host's namespace.
//!
//! One thread per host enters the namespace, binds every listener (so they are ready
//! when `Lab::build` returns), and serves them on a current-thread tokio runtime until
//! told to stop. Dropping that runtime closes every listener and connection, then the
//! thread ends, so nothing keeps the namespace alive after the lab is gone.

use std::convert::Infallible;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::sync::{Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use socket2::{Domain, Socket, Type};
use tokio::sync::oneshot;

use super::netns::{Netns, enter};
use super::topology::ServerSpec;

/// How long `Lab::build` waits for a host's servers to bind.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The servers of one host.
pub(crate) struct ServerSet {
    host: String,
    stop: Option<oneshot::Sender<()>>,
    /// Disconnected once the thread has ended (in a Mutex only to make `Lab` Sync).
    exited: Mutex<mpsc::Receiver<()>>,
    thread: Option<JoinHandle<()>>,
}

/// One listener of a server: every server listens on IPv4 and on IPv6.
enum Bound {
    Http(TcpListener),
    Udp(UdpSocket),
    Echo(TcpListener),
    UdpEcho(UdpSocket),
}

impl ServerSet {
    /// Starts `specs` inside `ns`; returns once all are bound (or failed to).
    pub(crate) fn start(ns: &Netns, host: &str, specs: &[ServerSpec]) -> Result<ServerSet> {
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (exit_tx, exit_rx) = mpsc::channel::<()>();
        let path = ns.path();
        let name = host.to_owned();
        let specs = specs.to_vec();
        let thread = std::thread::Builder::new()
            .name(format!("srv-{host}"))
            .spawn(move || {
                let _exit = exit_tx; // dropped (disconnecting `exited`) when the thread ends
                serve(path, name, specs, ready_tx, stop_rx);
            })
            .context("spawning a server thread")?;
        let set = ServerSet {
            host: host.to_owned(),
            stop: Some(stop_tx),
            exited: Mutex::new(exit_rx),
            thread: Some(thread),
        };
        // On any error `set` is dropped here, which stops and joins the thread.
        match ready_rx.recv_timeout(READY_TIMEOUT) {
            Ok(Ok(())) => Ok(set),
            Ok(Err(e)) => Err(e.context(format!("starting the servers of {host}"))),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(anyhow!(
                "the servers of {host} did not bind within {READY_TIMEOUT:?}"
            )),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err(anyhow!("the server thread of {host} died while starting"))
            }
        }
    }

    /// Tells the thread to stop (does not wait).
    pub(crate) fn signal(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits until `deadline` for the thread to end and reaps it; if it has not ended by
    /// then it is left detached (and reported).
    pub(crate) fn finish(&mut self, deadline: Instant) {
        self.signal();
        let Some(thread) = self.thread.take() else {
            return;
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let exited = self.exited.get_mut().unwrap_or_else(|e| e.into_inner());
        match exited.recv_timeout(left) {
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                if thread.join().is_err() {
                    log::warn!("lab: a server thread of {} panicked", self.host);
                }
            }
            _ => log::warn!("lab: the servers of {} did not stop in time", self.host),
        }
    }
}

impl Drop for ServerSet {
    fn drop(&mut self) {
        self.finish(Instant::now() + Duration::from_secs(5));
    }
}

/// Body of the server thread.
fn serve(
    path: PathBuf,
    name: String,
    specs: Vec<ServerSpec>,
    ready: mpsc::Sender<Result<()>>,
    stop: oneshot::Receiver<()>,
) {
    let setup = || -> Result<(tokio::runtime::Runtime, Vec<Bound>)> {
        enter(&path)?;
        let mut bound = Vec::new();
        for spec in &specs {
            for family in [Family::V4, Family::V6] {
                bound.push(
                    bind(*spec, family)
                        .with_context(|| format!("binding {spec:?} on {family:?}"))?,
                );
            }
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building a tokio runtime")?;
        Ok((rt, bound))
    };
    let (rt, bound) = match setup() {
        Ok(x) => x,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let started = rt.block_on(async {
        for b in bound {
            match b {
                Bound::Http(l) => {
                    let l = tokio::net::TcpListener::from_std(l)?;
                    tokio::spawn(http_server(l, Bytes::from(format!("{name}\n"))));
                }
                Bound::Echo(l) => {
                    let l = tokio::net::TcpListener::from_std(l)?;
                    tokio::spawn(echo_server(l));
                }
                Bound::Udp(s) => {
                    let s = tokio::net::UdpSocket::from_std(s)?;
                    tokio::spawn(udp_server(s, UdpAnswer::Name(Bytes::from(name.clone()))));
                }
                Bound::UdpEcho(s) => {
                    let s = tokio::net::UdpSocket::from_std(s)?;
                    tokio::spawn(udp_server(s, UdpAnswer::Echo));
                }
            }
        }
        anyhow::Ok(())
    });
    let ok = started.is_ok();
    let _ = ready.send(started);
    if ok {
        rt.block_on(async {
            // Either a stop signal or the lab's end (sender dropped).
            let _ = stop.await;
        });
    }
    // Dropping the runtime drops every task with its sockets.
    drop(rt);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

/// A socket bound to the wildcard address of `family`. The IPv6 one is IPv6-only, so
/// that it and the IPv4 one can share the port and every peer shows up with its own
/// family's address (never as an IPv4-mapped IPv6 address).
fn wildcard(family: Family, ty: Type, port: u16) -> Result<Socket> {
    let (domain, addr) = match family {
        Family::V4 => (
            Domain::IPV4,
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
        ),
        Family::V6 => (
            Domain::IPV6,
            SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)),
        ),
    };
    let s = Socket::new(domain, ty, None)?;
    if family == Family::V6 {
        s.set_only_v6(true)?;
    }
    if ty == Type::STREAM {
        s.set_reuse_address(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    if ty == Type::STREAM {
        s.listen(1024)?;
    }
    Ok(s)
}

fn bind(spec: ServerSpec, family: Family) -> Result<Bound> {
    let tcp = |port| -> Result<TcpListener> { Ok(wildcard(family, Type::STREAM, port)?.into()) };
    let udp = |port| -> Result<UdpSocket> { Ok(wildcard(family, Type::DGRAM, port)?.into()) };
    Ok(match spec {
        ServerSpec::Http { port } => Bound::Http(tcp(port)?),
        ServerSpec::Echo { port } => Bound::Echo(tcp(port)?),
        ServerSpec::Udp { port } => Bound::Udp(udp(port)?),
        ServerSpec::UdpEcho { port } => Bound::UdpEcho(udp(port)?),
    })
}

async fn backoff() {
    // accept()/recv_from() fail only on resource exhaustion (EMFILE, ENOBUFS...): back off
    // instead of spinning.
    tokio::time::sleep(Duration::from_millis(10)).await;
}

async fn http_server(listener: tokio::net::TcpListener, body: Bytes) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                backoff().await;
                continue;
            }
        };
        let body = body.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |_req: Request<Incoming>| {
                let body = body.clone();
                async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn echo_server(listener: tokio::net::TcpListener) {
    loop {
        let mut stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                backoff().await;
                continue;
            }
        };
        tokio::spawn(async move {
            let (mut r, mut w) = stream.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
    }
}

/// What a UDP server sends back.
enum UdpAnswer {
    /// The host name.
    Name(Bytes),
    /// The datagram itself.
    Echo,
}

/// Answers every datagram, from the address the datagram was sent to (IP_PKTINFO or
/// IPV6_PKTINFO), as real UDP services on LVS reals must: a reply from the real's own
/// address to a client that asked the VIP would be dropped by the client.
async fn udp_server(socket: tokio::net::UdpSocket, answer: UdpAnswer) {
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{
        ControlMessage, ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, sendmsg,
        setsockopt,
        sockopt::{Ipv4PacketInfo, Ipv6RecvPacketInfo},
    };
    use tokio::io::Interest;

    /// Where a datagram was sent to, as the kernel reported it.
    enum Dst {
        V4(libc::in_pktinfo),
        V6(libc::in6_pktinfo),
    }

    let v6 = match socket.local_addr() {
        Ok(a) => a.is_ipv6(),
        Err(_) => return,
    };
    let asked = if v6 {
        setsockopt(&socket, Ipv6RecvPacketInfo, &true)
    } else {
        setsockopt(&socket, Ipv4PacketInfo, &true)
    };
    if asked.is_err() {
        return;
    }
    let fd = socket.as_raw_fd();
    let mut buf = vec![0u8; 65536];
    loop {
        let received = socket
            .async_io(Interest::READABLE, || {
                let mut iov = [std::io::IoSliceMut::new(&mut buf)];
                let mut cmsg = nix::cmsg_space!(libc::in6_pktinfo);
                let msg =
                    recvmsg::<SockaddrStorage>(fd, &mut iov, Some(&mut cmsg), MsgFlags::empty())
                        .map_err(std::io::Error::from)?;
                let to = msg.cmsgs().ok().and_then(|mut c| {
                    c.find_map(|m| match m {
                        ControlMessageOwned::Ipv4PacketInfo(info) => Some(Dst::V4(info)),
                        ControlMessageOwned::Ipv6PacketInfo(info) => Some(Dst::V6(info)),
                        _ => None,
                    })
                });
                Ok((msg.address, to, msg.bytes))
            })
            .await;
        match received {
            Ok((Some(from), Some(to), len)) => {
                let reply = match &answer {
                    UdpAnswer::Name(name) => &name[..],
                    UdpAnswer::Echo => &buf[..len],
                };
                let iov = [std::io::IoSlice::new(reply)];
                let _ = match to {
                    Dst::V4(to) => {
                        let pktinfo = libc::in_pktinfo {
                            ipi_ifindex: 0,
                            ipi_spec_dst: to.ipi_addr,
                            ipi_addr: to.ipi_addr,
                        };
                        let cmsg = [ControlMessage::Ipv4PacketInfo(&pktinfo)];
                        sendmsg(fd, &iov, &cmsg, MsgFlags::MSG_DONTWAIT, Some(&from))
                    }
                    Dst::V6(to) => {
                        let pktinfo = libc::in6_pktinfo {
                            ipi6_addr: to.ipi6_addr,
                            ipi6_ifindex: 0,
                        };
                        let cmsg = [ControlMessage::Ipv6PacketInfo(&pktinfo)];
                        sendmsg(fd, &iov, &cmsg, MsgFlags::MSG_DONTWAIT, Some(&from))
                    }
                };
            }
            Ok(_) => {}
            Err(_) => backoff().await,
        }
    }
}
