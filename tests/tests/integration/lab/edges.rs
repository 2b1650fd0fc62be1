//! Real traffic at the edges: full-size segments through a tunnel (path MTU), ICMP
//! errors about flows reaching the real that owns them, a NAT real's ICMP error reaching
//! the client's socket, and NAT replies to a client the director has no neighbour entry
//! for.

use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    time::Duration,
};

use director_common::{real::Method, service::Scheduler};
use director_control::Protocol;
use director_tests::{
    lab::{Netns, tcp_stream, wait_until},
    lvs::{CLIENT, LvsLab, VIP_NAT, VIP_TUN, echo_round, vip_for},
};
use etherparse::{
    Icmpv4Header, Icmpv4Type, IpNumber, Ipv4Header, PacketBuilder, icmpv4::DestUnreachableHeader,
};

const TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn a_tunnel_upload_of_full_size_segments_completes_and_the_client_learns_the_path_mtu() {
    director_tests::require_root();
    let mut lvs = LvsLab::build(1).expect("lab");
    lvs.service(Method::Tunnel, Protocol::Tcp, 7, Scheduler::Maglev, &[1])
        .unwrap();
    let client = lvs.lab.ns("client");
    let mut s = tcp_stream(client, SocketAddr::new(IpAddr::V4(VIP_TUN), 7)).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    // 16 KiB writes on 1500-byte links: full-size segments, which no longer fit once
    // the tunnel header is on. Every byte must come back from the echo server.
    for round in 0..4u8 {
        let chunk: Vec<u8> = (0..16 * 1024).map(|i| (i as u8) ^ round).collect();
        s.write_all(&chunk).unwrap();
        let mut back = vec![0u8; chunk.len()];
        s.read_exact(&mut back)
            .unwrap_or_else(|e| panic!("round {round}: the echo of 16 KiB: {e}"));
        assert!(back == chunk, "round {round}: echoed bytes differ");
    }
    assert!(lvs.stat("icmp_too_big") >= 1, "the client was told");
    let route = client
        .exec_ok(&["ip", "route", "get", &VIP_TUN.to_string()])
        .unwrap();
    assert!(
        route.contains("mtu 1480"),
        "the client's route cache holds the learned MTU: {route}"
    );
}

/// Send a raw IPv4 packet (header included) from inside `ns`.
fn send_raw(ns: &Netns, packet: Vec<u8>, dst: Ipv4Addr) {
    ns.run(move || {
        // SAFETY: plain socket(2); the descriptor is closed below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(dst.octets()),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: `packet` and `addr` outlive the call, with the lengths given.
        let n = unsafe {
            libc::sendto(
                fd,
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&addr as *const libc::sockaddr_in).cast(),
                size_of::<libc::sockaddr_in>() as u32,
            )
        };
        let err = std::io::Error::last_os_error();
        // SAFETY: `fd` is ours and not used after this.
        unsafe { libc::close(fd) };
        assert_eq!(n, packet.len() as isize, "sendto: {err}");
    });
}

/// What a router on the client's side would send when the real's reply (from `vip`,
/// TCP port 7, to the client's `port`, starting at sequence number `seq`) did not fit
/// its next link of 1300 bytes.
fn router_frag_needed(vip: Ipv4Addr, port: u16, seq: u32) -> Vec<u8> {
    let mut quoted = Vec::new();
    PacketBuilder::ipv4(vip.octets(), CLIENT.octets(), 63)
        .tcp(7, port, seq, 64240)
        .ack(1)
        .write(&mut quoted, &[0x42; 1400])
        .unwrap();
    let quote = &quoted[..28];
    let icmp = Icmpv4Header::with_checksum(
        Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
            next_hop_mtu: 1300,
        }),
        quote,
    );
    let mut ip = Ipv4Header::new(
        (icmp.header_len() + quote.len()) as u16,
        64,
        IpNumber::ICMP,
        CLIENT.octets(),
        vip.octets(),
    )
    .unwrap();
    ip.header_checksum = ip.calc_header_checksum();
    let mut out = Vec::new();
    ip.write(&mut out).unwrap();
    icmp.write(&mut out).unwrap();
    out.extend_from_slice(quote);
    out
}

/// The next sequence number the client expects from the real: what the real's kernel
/// checks an ICMP error's quoted sequence number against (it must lie within what the
/// real has sent and not yet seen acknowledged, or at the next byte). Read through the
/// socket's repair mode (CAP_NET_ADMIN), left again without a window probe.
fn rcv_nxt(s: &std::net::TcpStream) -> u32 {
    use std::os::fd::AsRawFd;
    const TCP_REPAIR: libc::c_int = 19;
    const TCP_REPAIR_QUEUE: libc::c_int = 20;
    const TCP_QUEUE_SEQ: libc::c_int = 21;
    const TCP_RECV_QUEUE: libc::c_int = 1;
    const TCP_REPAIR_OFF_NO_WP: libc::c_int = -1;
    let fd = s.as_raw_fd();
    let set = |opt: libc::c_int, v: libc::c_int| {
        // SAFETY: `v` outlives the call and is the size given.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_TCP,
                opt,
                (&v as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as u32,
            )
        };
        assert_eq!(
            rc,
            0,
            "setsockopt {opt}: {}",
            std::io::Error::last_os_error()
        );
    };
    set(TCP_REPAIR, 1);
    set(TCP_REPAIR_QUEUE, TCP_RECV_QUEUE);
    let mut seq: u32 = 0;
    let mut len = size_of::<u32>() as u32;
    // SAFETY: `seq` and `len` outlive the call; `len` says `seq`'s size.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_TCP,
            TCP_QUEUE_SEQ,
            (&mut seq as *mut u32).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_QUEUE_SEQ: {}", std::io::Error::last_os_error());
    set(TCP_REPAIR, TCP_REPAIR_OFF_NO_WP);
    seq
}

#[test]
fn icmp_errors_about_dr_and_tunnel_connections_reach_the_real_that_owns_them() {
    director_tests::require_root();
    let mut lvs = LvsLab::build(2).expect("lab");
    // DR on real1, the tunnel on real2: each real learns from its own error.
    lvs.service(Method::Route, Protocol::Tcp, 7, Scheduler::Maglev, &[1, 0])
        .unwrap();
    lvs.service(Method::Tunnel, Protocol::Tcp, 7, Scheduler::Maglev, &[0, 1])
        .unwrap();
    let client = lvs.lab.ns("client");
    for (method, real) in [(Method::Route, 1u8), (Method::Tunnel, 2)] {
        let vip = vip_for(method);
        // A live connection, everything sent so far echoed and acknowledged.
        let mut s = tcp_stream(client, SocketAddr::new(IpAddr::V4(vip), 7)).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        echo_round(&mut s, 0);
        let port = s.local_addr().unwrap().port();
        let seq = rcv_nxt(&s);
        let host = lvs.lab.ns(&format!("real{real}"));
        let route = || {
            host.exec_ok(&["ip", "route", "get", &CLIENT.to_string()])
                .unwrap()
        };
        assert!(!route().contains("mtu 1300"), "{method:?}: not before");
        send_raw(client, router_frag_needed(vip, port, seq), vip);
        wait_until(
            TIMEOUT,
            &format!("{method:?}: real{real} to learn MTU 1300 towards the client"),
            || route().contains("mtu 1300"),
        )
        .unwrap();
        // The connection goes on.
        echo_round(&mut s, 1);
    }
    assert_eq!(lvs.stat("icmp_to_real"), 2);
}

#[test]
fn a_nat_real_s_port_unreachable_reaches_the_client_s_socket() {
    director_tests::require_root();
    let mut lvs = LvsLab::build(1).expect("lab");
    // Nothing listens on the real's port 9999: it answers "port unreachable".
    lvs.service(Method::Masq, Protocol::Udp, 9999, Scheduler::Maglev, &[1])
        .unwrap();
    let client = lvs.lab.ns("client");
    let got = client.run(|| {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        s.connect((VIP_NAT, 9999)).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.send(b"anyone?").unwrap();
        let mut buf = [0u8; 16];
        s.recv(&mut buf).map_err(|e| e.kind())
    });
    assert_eq!(
        got,
        Err(std::io::ErrorKind::ConnectionRefused),
        "the error, translated to the VIP, reaches the connected socket"
    );
    assert_eq!(lvs.stat("icmp_from_real"), 1);
}

#[test]
fn nat_replies_reach_a_client_whose_neighbour_entry_is_gone() {
    director_tests::require_root();
    let mut lvs = LvsLab::build(1).expect("lab");
    lvs.service(Method::Masq, Protocol::Tcp, 7, Scheduler::Maglev, &[1])
        .unwrap();
    let director = lvs.lab.ns("director");
    // Only what attach set up itself: no lab-wide accept_local.
    director
        .set_sysctl("net.ipv4.conf.all.accept_local", "0")
        .unwrap();
    assert_eq!(
        director
            .sysctl("net.ipv4.conf.eth1.accept_local")
            .unwrap()
            .trim(),
        "1",
        "attach lets translated replies through the kernel"
    );
    let client = lvs.lab.ns("client");
    let mut s = tcp_stream(client, SocketAddr::new(IpAddr::V4(VIP_NAT), 7)).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut round = |i: u32| echo_round(&mut s, i);
    round(0);
    let before = lvs.stat("pass_no_neigh");
    director
        .exec_ok(&["ip", "neigh", "del", &CLIENT.to_string(), "dev", "eth0"])
        .unwrap();
    // Replies keep coming while the cached next hop expires and the kernel resolves the
    // client again for the first reply it is handed.
    let mut i = 1;
    wait_until(TIMEOUT, "a reply to be handed to the kernel", || {
        round(i);
        i += 1;
        lvs.stat("pass_no_neigh") > before
    })
    .unwrap();
    for j in 0..5 {
        round(1000 + j);
    }
}
