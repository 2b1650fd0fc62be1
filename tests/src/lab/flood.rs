//! A packet flood for labs: TCP segments from random sources, written straight onto an
//! interface with an AF_PACKET socket (no kernel TCP state, no replies awaited), as
//! hping3 `--rand-source` would send them.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use etherparse::PacketBuilder;

use super::Netns;

/// What to flood with.
#[derive(Clone, Copy, Debug)]
pub struct Flood {
    /// Interface of `ns` to write the frames on.
    pub ifname: &'static str,
    /// The MAC the frames are addressed to (the director's).
    pub dst_mac: [u8; 6],
    /// The MAC they come from (the interface's own).
    pub src_mac: [u8; 6],
    /// Sources are drawn from `sources`/16 (a prefix nobody in the lab routes, so the
    /// answers to them go nowhere), source ports at random.
    pub sources: Ipv4Addr,
    /// Where the segments go (a VIP and port).
    pub target: SocketAddrV4,
    /// A pure SYN, or a bare ACK of a connection that does not exist.
    pub syn: bool,
    /// Frames to send.
    pub count: usize,
    /// The most time to take over it.
    pub limit: Duration,
}

/// Send the flood from `ns`; returns how many frames were written.
pub fn flood(ns: &Netns, f: Flood) -> Result<usize> {
    let ifindex = ns.ifindex(f.ifname)?;
    let fd = ns.try_run(move || -> Result<OwnedFd> {
        // SAFETY: plain socket(2); the descriptor is owned from here on. Protocol 0:
        // the socket only sends.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error()).context("AF_PACKET socket");
        }
        // SAFETY: `raw` is the new socket's descriptor, owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: an all-zero sockaddr_ll is valid (plain integers).
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: a sockaddr_ll of the size given.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).context("binding the AF_PACKET socket");
        }
        Ok(fd)
    })??;
    // xorshift64: any spread of sources will do, the same one every run.
    let mut state = 0x5eed_f100d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state as u32
    };
    let base = u32::from(f.sources) & 0xffff_0000;
    let deadline = Instant::now() + f.limit;
    let mut frame = Vec::with_capacity(64);
    let mut sent = 0;
    while sent < f.count && Instant::now() < deadline {
        let r = next();
        let src = Ipv4Addr::from(base | (r & 0xffff).max(1));
        let sport = 1024 + (r >> 16) as u16 % (65535 - 1024);
        let b = PacketBuilder::ethernet2(f.src_mac, f.dst_mac)
            .ipv4(src.octets(), f.target.ip().octets(), 64)
            .tcp(sport, f.target.port(), next(), 64240);
        let b = if f.syn { b.syn() } else { b.ack(next()) };
        frame.clear();
        b.write(&mut frame, &[])?;
        // SAFETY: sends `frame`, which lives across the call.
        let n = unsafe { libc::send(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            // The device queue is full: let it drain.
            if e.raw_os_error() == Some(libc::ENOBUFS) {
                std::thread::yield_now();
                continue;
            }
            bail!("sending a flood frame: {e}");
        }
        sent += 1;
    }
    Ok(sent)
}
