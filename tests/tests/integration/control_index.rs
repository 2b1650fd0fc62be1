//! The control library's index of the maps, against a loaded data path: writers that
//! take turns on one set of pinned maps, and the reuse of a removed real's slot (only
//! once the connection entries that name it are gone, in the IPv4 and the IPv6 table),
//! and the repair of an IPv6 bucket a killed writer left claimed.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use director_common::{conn_state::ConnState, real::Method};
use director_control::{
    Control, ControlError, Datapath, LoadOptions, Protocol, RealSpec, ServiceAddr, ServiceSpec,
    datapath::PROG_DIRECTOR,
};
use director_tests::{
    conns6::{Conns6, Flow6},
    fixture::{ACK, CLIENT, CLIENT_MAC, DIRECTOR_MAC, FIXTURE_TABLE_SIZE, Harness, VIP, tcp4},
    host::BpffsDir,
};

/// A DR real (on the virtual port).
fn real(n: u8) -> RealSpec {
    RealSpec::new(IpAddr::V4(Ipv4Addr::new(10, 1, 0, n)), 0, Method::Route, 1)
}

/// (address's last byte, slot) of each real of a service.
fn slots(c: &Control, svc: &ServiceAddr) -> Vec<(u8, u32)> {
    c.service(svc)
        .unwrap()
        .reals
        .iter()
        .map(|r| match r.spec.addr {
            IpAddr::V4(a) => (a.octets()[3], r.id),
            IpAddr::V6(_) => unreachable!("IPv4 reals only"),
        })
        .collect()
}

/// Every table holds only reals of its own service.
fn tables_hold_own_reals(c: &Control) {
    for svc in c.services().unwrap() {
        let ids: Vec<u32> = svc.reals.iter().map(|r| r.id).collect();
        let table = c.active_table(&svc.spec.addr).unwrap();
        assert_eq!(table.is_empty(), ids.is_empty(), "{:?}", svc.spec.addr);
        assert!(
            table.iter().all(|id| ids.contains(id)),
            "{:?}'s table names a slot not among {ids:?}",
            svc.spec.addr
        );
    }
}

#[test]
fn writers_taking_turns_see_each_others_changes() {
    director_tests::require_root();
    let pins = BpffsDir::new("index").unwrap();
    let mut first = Datapath::load_programs(
        &LoadOptions {
            conn_table: 1024,
            table_size: 1021,
            max_services: 4,
            max_reals: 8,
            pin_dir: Some(pins.path().to_owned()),
            ..LoadOptions::default()
        },
        &[PROG_DIRECTOR],
    )
    .unwrap();
    let mut second = Control::from_pins(pins.path()).unwrap();
    let a = ServiceSpec::new(Protocol::Tcp, IpAddr::V4(Ipv4Addr::from(VIP)), 80);
    let b = ServiceSpec::new(Protocol::Tcp, IpAddr::V4(Ipv4Addr::from(VIP)), 81);

    // Each writer reads the maps when it first writes, and again after the other wrote.
    first.control.add_service(&a).unwrap();
    second.add_service(&b).unwrap();
    first.control.add_real(&a.addr, &real(11)).unwrap();
    second.add_real(&b.addr, &real(11)).unwrap();
    first.control.add_real(&b.addr, &real(12)).unwrap();
    assert!(matches!(
        second.add_service(&a),
        Err(ControlError::ServiceExists)
    ));
    assert!(matches!(
        second.add_real(&a.addr, &real(11)),
        Err(ControlError::RealExists)
    ));
    assert_eq!(slots(&second, &a.addr), [(11, 1)]);
    assert_eq!(slots(&second, &b.addr), [(11, 2), (12, 3)]);
    let ids: Vec<u32> = second.services().unwrap().iter().map(|s| s.id).collect();
    assert_eq!(ids, [0, 1], "distinct service slots");

    // A real removed by one writer: the other does not hand its slot out (it is
    // retired while clean slots are left).
    second.delete_real(&a.addr, real(11).addr, 0).unwrap();
    first.control.add_real(&a.addr, &real(13)).unwrap();
    assert_eq!(slots(&second, &a.addr), [(13, 4)]);
    // A service removed by one writer: the other reuses its service slot.
    first.control.delete_service(&b.addr).unwrap();
    let c = ServiceSpec::new(Protocol::Udp, IpAddr::V4(Ipv4Addr::from(VIP)), 53);
    second.add_service(&c).unwrap();
    assert_eq!(second.service(&c.addr).unwrap().id, 1);
    tables_hold_own_reals(&second);
    tables_hold_own_reals(&first.control);
}

#[test]
fn a_removed_reals_slot_is_reused_only_after_its_connection_entries_are_purged() {
    director_tests::require_root();
    // Two real slots (1 and 2).
    let mut h = Harness::with_options(&LoadOptions {
        conn_table: 4096,
        table_size: FIXTURE_TABLE_SIZE,
        max_services: 4,
        max_reals: 2,
        ..LoadOptions::default()
    });
    let spec = ServiceSpec::new(Protocol::Tcp, IpAddr::V4(Ipv4Addr::from(VIP)), 80);
    let svc = spec.addr;
    h.control().add_service(&spec).unwrap();
    h.control().add_real(&svc, &real(11)).unwrap();
    assert_eq!(slots(&h.dp.control, &svc), [(11, 1)]);
    // A flow on slot 1 (its entry is made before forwarding, which needs no route to
    // have happened).
    let frame = tcp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, 40000),
        (VIP, 80),
        ACK,
        b"",
    );
    h.run(&frame);
    let on_slot = |h: &Harness, id: u32| {
        h.dp.control
            .connections()
            .unwrap()
            .iter()
            .filter(|c| c.real_id == id)
            .count()
    };
    assert_eq!(on_slot(&h, 1), 1);

    // Removing the real leaves its entry (its next packet reschedules it) and retires
    // the slot: the next real takes the clean slot 2.
    h.control().delete_real(&svc, real(11).addr, 0).unwrap();
    assert_eq!(on_slot(&h, 1), 1);
    h.control().add_real(&svc, &real(12)).unwrap();
    assert_eq!(slots(&h.dp.control, &svc), [(12, 2)]);

    // No clean slot is left: the next real sweeps (the entry naming slot 1 goes), then
    // takes slot 1. Without the sweep, the old flow would go to the new real.
    h.control().add_real(&svc, &real(13)).unwrap();
    assert_eq!(on_slot(&h, 1), 0);
    assert_eq!(slots(&h.dp.control, &svc), [(12, 2), (13, 1)]);

    // Full: refused with the limit and how to raise it; nothing changes.
    let err = h.control().add_real(&svc, &real(14)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no free real slot: at most 2 real servers in all (attach with a larger --max-reals)"
    );
    assert_eq!(slots(&h.dp.control, &svc), [(12, 2), (13, 1)]);
    tables_hold_own_reals(&h.dp.control);
}

/// A data path of two real slots whose maps are pinned in `pins`, with an IPv6 service.
fn pinned_v6(pins: &BpffsDir) -> (Datapath, ServiceAddr) {
    let mut dp = Datapath::load_programs(
        &LoadOptions {
            conn_table: 64,
            table_size: FIXTURE_TABLE_SIZE,
            max_services: 4,
            max_reals: 2,
            pin_dir: Some(pins.path().to_owned()),
            ..LoadOptions::default()
        },
        &[PROG_DIRECTOR],
    )
    .unwrap();
    let spec = ServiceSpec::new(Protocol::Tcp, IpAddr::V6(V6_VIP), 80);
    dp.control.add_service(&spec).unwrap();
    (dp, spec.addr)
}

const V6_VIP: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);

fn real6(n: u16) -> RealSpec {
    RealSpec::new(
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, n)),
        0,
        Method::Route,
        1,
    )
}

/// An established IPv6 flow from client port `port` on real slot `real`.
fn flow6(service: u32, real: u32, port: u16) -> Flow6 {
    Flow6 {
        proto: 6,
        client: (Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1), port),
        vip: (V6_VIP, 80),
        service,
        real,
        state: ConnState::Established,
        idle: Duration::from_secs(1),
    }
}

#[test]
fn a_removed_reals_ipv6_connection_entries_are_purged_before_its_slot_is_reused() {
    director_tests::require_root();
    let pins = BpffsDir::new("index6").unwrap();
    let (mut dp, svc) = pinned_v6(&pins);
    dp.control.add_real(&svc, &real6(11)).unwrap();
    let view = dp.control.service(&svc).unwrap();
    assert_eq!(view.reals[0].id, 1);
    let mut conns = Conns6::open(pins.path()).unwrap();
    conns.put(5, 2, &flow6(view.id, 1, 40000)).unwrap();
    conns.put(9, 0, &flow6(view.id, 1, 40001)).unwrap();

    // The readers see IPv6 entries as they see IPv4 ones.
    let listed = dp.control.connections().unwrap();
    let mut sources: Vec<SocketAddr> = listed.iter().map(|c| c.source).collect();
    sources.sort();
    assert_eq!(
        sources,
        [40000, 40001].map(|p| SocketAddr::new(IpAddr::V6(flow6(0, 0, 0).client.0), p))
    );
    assert!(listed.iter().all(|c| c.real_id == 1
        && c.destination == SocketAddr::new(IpAddr::V6(V6_VIP), 80)
        && c.virtual_service == c.destination));
    let census = dp.control.connection_census().unwrap();
    assert_eq!((census.entries, census.entries6), (0, 2));
    assert_eq!(census.per_real[&1].active, 2);

    // The real goes: its entries stay until its slot is needed again, and are purged
    // before that (the next real takes clean slot 2, the one after sweeps slot 1).
    dp.control.delete_real(&svc, real6(11).addr, 0).unwrap();
    assert_eq!(dp.control.connection_entries().unwrap().len(), 2);
    dp.control.add_real(&svc, &real6(12)).unwrap();
    assert_eq!(dp.control.connection_entries().unwrap().len(), 2);
    dp.control.add_real(&svc, &real6(13)).unwrap();
    assert_eq!(dp.control.connection_entries().unwrap(), []);
    let ids: Vec<u32> = dp
        .control
        .service(&svc)
        .unwrap()
        .reals
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, [2, 1]);
}

#[test]
fn repair_opens_ipv6_buckets_a_killed_writer_left_claimed() {
    director_tests::require_root();
    let pins = BpffsDir::new("claim6").unwrap();
    let (mut dp, svc) = pinned_v6(&pins);
    dp.control.add_real(&svc, &real6(11)).unwrap();
    let id = dp.control.service(&svc).unwrap().id;
    let mut conns = Conns6::open(pins.path()).unwrap();
    conns.put(3, 1, &flow6(id, 1, 40000)).unwrap();
    // A userspace writer's claim (2), as one killed inside a removal leaves it.
    let mut b = conns.bucket(3).unwrap();
    b.claim = 2;
    conns.set_bucket(3, b).unwrap();

    dp.control.repair_interrupted().unwrap();
    let after = conns.bucket(3).unwrap();
    assert_eq!(after.claim, 0, "the dead writer's claim is released");
    assert_eq!(after.keys[1], b.keys[1], "the entry under it stays");
}
