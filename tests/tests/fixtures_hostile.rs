//! Fixtures for hostile and malformed input: headers that lie about their lengths,
//! sources no client can have, frames not sent to the director, VLANs it does not
//! balance, forged NAT replies. None may be forwarded, and none may hold a connection
//! entry or count as a connection.

use director_common::real::Method;
use director_control::{Protocol, RealSpec, ServiceSpec};
use director_tests::fixture::{
    ACK, Action, CLIENT, CLIENT_MAC, DIRECTOR_MAC, DIRECTOR_MAC_OUT, FibLab, Harness, SYN, VIP, ip,
    nat_reply_in, real_ip, real_mac, tcp4, udp4, with_macs,
};
use etherparse::{Ipv4Header, PacketBuilder, SingleVlanHeader, VlanId};

fn service(f: &mut FibLab, proto: Protocol, port: u16, method: Method, real_port: u16) {
    let spec = ServiceSpec::new(proto, ip(VIP), port);
    f.h.control().add_service(&spec).unwrap();
    f.h.control()
        .add_real(
            &spec.addr,
            &RealSpec::new(ip(real_ip(1)), real_port, method, 1),
        )
        .unwrap();
}

fn connections(h: &Harness) -> usize {
    h.dp.control.connection_entries().unwrap().len()
}

/// The frame with its IPv4 total length set to `len` (no checksum fix: the director
/// does not check IP checksums, so only the length can be what it refuses).
fn with_ip_len(frame: &[u8], len: u16) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[16..18].copy_from_slice(&len.to_be_bytes());
    f
}

#[test]
fn malformed_headers_are_dropped_and_never_recorded() {
    let mut f = FibLab::new();
    let _in = f.enter();
    service(&mut f, Protocol::Tcp, 80, Method::Route, 80);
    service(&mut f, Protocol::Udp, 53, Method::Route, 53);
    let syn = tcp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, 40000),
        (VIP, 80),
        SYN,
        b"hello",
    );
    let udp = udp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, 40000),
        (VIP, 53),
        b"query",
    );
    let ip_len = (syn.len() - 14) as u16;
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "total length beyond the frame",
            with_ip_len(&syn, ip_len + 100),
        ),
        ("total length below the header", with_ip_len(&syn, 10)),
        ("total length inside the TCP header", {
            // The frame is cut where the total length says the packet ends.
            let cut = with_ip_len(&syn, 20 + 10);
            cut[..14 + 30].to_vec()
        }),
    ];
    let mut ihl = |what, v: u8| {
        let mut f = syn.clone();
        f[14] = v;
        cases.push((what, f));
    };
    ihl("IHL below 5", 0x43);
    ihl("IHL beyond the packet", 0x4f);
    ihl("IP version 6 in an IPv4 frame", 0x65);
    let mut tcp = |what, data_offset: u8| {
        let mut f = syn.clone();
        f[14 + 20 + 12] = data_offset << 4;
        cases.push((what, f));
    };
    tcp("TCP data offset below 5", 4);
    tcp("TCP data offset beyond the segment", 15);
    let mut udp_len = |what, len: u16| {
        let mut f = udp.clone();
        f[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&len.to_be_bytes());
        cases.push((what, f));
    };
    udp_len("UDP length beyond the segment", 200);
    udp_len("UDP length below its header", 4);
    let n = cases.len() as u64;
    for (what, frame) in &cases {
        assert_eq!(f.h.run(frame).action, Action::Drop, "{what}: dropped");
    }
    assert_eq!(f.h.stat("drop_malformed"), n);
    assert_eq!(f.h.stat("tx") + f.h.stat("redirect"), 0, "none forwarded");
    assert_eq!(connections(&f.h), 0, "no connection entry");
    let svc = ServiceSpec::new(Protocol::Tcp, ip(VIP), 80).addr;
    assert_eq!(f.real_stats(&svc, 1).conns, 0, "no connection counted");
    // The well-formed originals still go through, and an Ethernet pad is no lie.
    let mut padded = udp.clone();
    padded.extend_from_slice(&[0; 8]);
    assert_eq!(f.h.run(&syn).action, Action::Redirect);
    assert_eq!(f.h.run(&padded).action, Action::Redirect);
}

#[test]
fn martian_sources_are_dropped_and_never_recorded() {
    let mut f = FibLab::new();
    let _in = f.enter();
    service(&mut f, Protocol::Tcp, 80, Method::Route, 80);
    let martians: [[u8; 4]; 7] = [
        [0, 0, 0, 0],
        [0, 1, 2, 3],
        [127, 0, 0, 1],
        [224, 0, 0, 5],
        [240, 1, 2, 3],
        [255, 255, 255, 255],
        VIP,
    ];
    for src in martians {
        for flags in [SYN, ACK] {
            let frame = tcp4(
                CLIENT_MAC,
                DIRECTOR_MAC,
                (src, 40000),
                (VIP, 80),
                flags,
                b"",
            );
            assert_eq!(f.h.run(&frame).action, Action::Drop, "source {src:?}");
        }
    }
    assert_eq!(f.h.stat("drop_martian"), 2 * martians.len() as u64);
    assert_eq!(connections(&f.h), 0);
    let ok = tcp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, 40000),
        (VIP, 80),
        SYN,
        b"",
    );
    assert_eq!(f.h.run(&ok).action, Action::Redirect, "a real client");
}

#[test]
fn only_frames_sent_to_the_interface_s_own_mac_are_balanced() {
    let mut f = FibLab::new();
    let _in = f.enter();
    service(&mut f, Protocol::Tcp, 80, Method::Route, 80);
    let syn = tcp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, 40000),
        (VIP, 80),
        SYN,
        b"",
    );
    let broadcast = with_macs(&syn, [0xff; 6], CLIENT_MAC);
    let multicast = with_macs(&syn, [0x01, 0x00, 0x5e, 0, 0, 1], CLIENT_MAC);
    let other_host = with_macs(&syn, [0x02, 0, 0, 0, 0, 0x77], CLIENT_MAC);
    // Group addresses are never ours, registered interface or not.
    for frame in [&broadcast, &multicast] {
        f.h.check("a group address", frame, Action::Pass, frame);
    }
    // Once attach has told the data path the interface's MAC, another host's frame
    // (switch flooding, promiscuous mode) is not ours either, even of a known flow.
    let eth0 = f.eth0;
    f.h.control()
        .register_interface(eth0, DIRECTOR_MAC)
        .unwrap();
    assert_eq!(f.h.run(&syn).action, Action::Redirect, "our own frame");
    let flooded_ack = with_macs(
        &tcp4(
            CLIENT_MAC,
            DIRECTOR_MAC,
            (CLIENT, 40000),
            (VIP, 80),
            ACK,
            b"x",
        ),
        [0x02, 0, 0, 0, 0, 0x77],
        CLIENT_MAC,
    );
    for frame in [&other_host, &flooded_ack] {
        f.h.check("another host's frame", frame, Action::Pass, frame);
    }
    assert_eq!(f.h.stat("pass_other_mac"), 4);
    assert_eq!(f.h.stat("tx") + f.h.stat("redirect"), 1);
    // keepalived's use_vmac: the VIP answers with a VRRP virtual MAC.
    let vrrp = with_macs(&syn, [0, 0, 0x5e, 0, 1, 51], CLIENT_MAC);
    assert_eq!(
        f.h.run(&vrrp).action,
        Action::Redirect,
        "a VRRP virtual MAC"
    );
    // The registration can be taken back (detach of one interface).
    f.h.control().unregister_interface(eth0).unwrap();
    assert_eq!(f.h.run(&other_host).action, Action::Redirect);
}

fn tagged_syn(vlan: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
        .single_vlan(VlanId::try_new(vlan).unwrap())
        .ipv4(CLIENT, VIP, 64)
        .tcp(40000, 80, 1000, 64240)
        .syn();
    let mut out = Vec::new();
    b.write(&mut out, b"").unwrap();
    out
}

#[test]
fn tagged_frames_are_balanced_only_for_the_vlans_named() {
    let mut f = FibLab::new();
    let _in = f.enter();
    service(&mut f, Protocol::Tcp, 80, Method::Route, 80);
    let (v42, v43) = (tagged_syn(42), tagged_syn(43));
    f.h.check("VLAN 42, none named", &v42, Action::Pass, &v42);
    f.h.control().set_vlans(&[42, 4094]).unwrap();
    assert_eq!(f.h.dp.control.vlans().unwrap(), vec![42, 4094]);
    assert_eq!(f.h.run(&v42).action, Action::Redirect, "VLAN 42, named");
    f.h.check("VLAN 43, not named", &v43, Action::Pass, &v43);
    assert_eq!(f.h.stat("pass_vlan"), 2);
    // A bad id changes nothing.
    assert!(f.h.control().set_vlans(&[43, 4095]).is_err());
    assert_eq!(f.h.dp.control.vlans().unwrap(), vec![42, 4094]);
    let _ = SingleVlanHeader::LEN;
}

#[test]
fn nat_replies_are_routed_traffic_from_the_real_side_only() {
    let mut f = FibLab::new();
    let _in = f.enter();
    service(&mut f, Protocol::Tcp, 80, Method::Masq, 8080);
    let syn = tcp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, 40000),
        (VIP, 80),
        SYN,
        b"",
    );
    assert_eq!(f.h.run(&syn).action, Action::Redirect);
    // A "reply" injected from the client side is a forgery: never reflected.
    let reply = nat_reply_in(ACK, b"data");
    let forged = with_macs(&reply, DIRECTOR_MAC, CLIENT_MAC);
    assert_eq!(f.h.run(&forged).action, Action::Drop);
    assert_eq!(f.h.stat("drop_spoofed_reply"), 1);
    // From the real's side, a reply whose TTL is spent goes to the kernel as it came
    // (which answers the real with "time exceeded"), never out with the real's address.
    f.h.ingress_ifindex = f.eth1;
    let (mut h, rest) = Ipv4Header::from_slice(&reply[14..]).unwrap();
    h.time_to_live = 1;
    h.header_checksum = h.calc_header_checksum();
    let mut ttl1 = reply[..14].to_vec();
    h.write(&mut ttl1).unwrap();
    ttl1.extend_from_slice(rest);
    f.h.check("TTL 1", &ttl1, Action::Pass, &ttl1);
    assert_eq!(f.h.stat("pass_ttl_exceeded"), 1);
    let out = f.h.run(&reply);
    assert_eq!(out.action, Action::Redirect);
    let (h, _) = Ipv4Header::from_slice(&out.frame[14..]).unwrap();
    assert_eq!(
        (h.source, h.time_to_live),
        (VIP, 63),
        "translated, one hop further"
    );
}

#[test]
fn ipip_outer_ids_vary_when_the_inner_packet_may_be_fragmented() {
    let mut f = FibLab::new();
    let _in = f.enter();
    service(&mut f, Protocol::Udp, 53, Method::Tunnel, 53);
    let udp = udp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, 40000),
        (VIP, 53),
        b"query",
    );
    let outer_id = |frame: &[u8]| {
        let out = f.h.run(frame);
        assert_eq!(out.action, Action::Redirect);
        let (h, _) = Ipv4Header::from_slice(&out.frame[14..]).unwrap();
        (h.identification, h.dont_fragment)
    };
    assert_eq!(outer_id(&udp), (0, true), "DF: the ID does not matter");
    let (mut h, rest) = Ipv4Header::from_slice(&udp[14..]).unwrap();
    h.dont_fragment = false;
    h.header_checksum = h.calc_header_checksum();
    let mut nodf = udp[..14].to_vec();
    h.write(&mut nodf).unwrap();
    nodf.extend_from_slice(rest);
    let ids: Vec<u16> = (0..4).map(|_| outer_id(&nodf).0).collect();
    // Four equal random IDs have a chance of 2^-48.
    assert!(
        ids.windows(2).any(|w| w[0] != w[1]),
        "outer IDs without DF: {ids:?}"
    );
    let _ = real_mac(1);
    let _ = DIRECTOR_MAC_OUT;
}
