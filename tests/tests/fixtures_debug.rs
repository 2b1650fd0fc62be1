//! The data path's opt-in debug trace: off by default, switched at run time, one record
//! per scheduled flow and none for established packets.

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::{Arc, Mutex},
};

use director_common::real::Method;
use director_control::{Protocol, RealSpec, ServiceSpec};
use director_tests::fixture::{ACK, CLIENT_MAC, DIRECTOR_MAC, Harness, SYN, tcp4};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<String>>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        self.0.lock().unwrap().push(record.args().to_string());
    }
    fn flush(&self) {}
}

#[test]
fn debug_trace_is_off_by_default_and_logs_only_new_flows_when_on() {
    let mut h = Harness::new();
    let capture = Capture::default();
    let mut logger =
        aya_log::EbpfLogger::init_with_logger(&mut h.dp.ebpf, capture.clone()).unwrap();
    let vip = Ipv4Addr::new(10, 0, 0, 100);
    let spec = ServiceSpec::new(Protocol::Tcp, IpAddr::V4(vip), 80);
    h.control().add_service(&spec).unwrap();
    h.control()
        .add_real(
            &spec.addr,
            &RealSpec::new(
                IpAddr::V4(Ipv4Addr::new(10, 1, 0, 11)),
                80,
                Method::Route,
                1,
            ),
        )
        .unwrap();
    let syn = |port| {
        tcp4(
            CLIENT_MAC,
            DIRECTOR_MAC,
            ([10, 0, 0, 2], port),
            (vip.octets(), 80),
            SYN,
            b"",
        )
    };

    h.run(&syn(40000));
    logger.flush();
    assert!(
        capture.0.lock().unwrap().is_empty(),
        "debug is off by default"
    );

    h.control().set_debug(true).unwrap();
    h.run(&syn(40001));
    h.run(&tcp4(
        CLIENT_MAC,
        DIRECTOR_MAC,
        ([10, 0, 0, 2], 40001),
        (vip.octets(), 80),
        ACK,
        b"x",
    ));
    logger.flush();
    let lines = capture.0.lock().unwrap().clone();
    assert_eq!(
        lines.len(),
        1,
        "one record for the new flow, none for its ACK: {lines:?}"
    );
    assert!(
        lines[0].contains("10.0.0.2:40001 -> 10.0.0.100:80"),
        "{}",
        lines[0]
    );

    h.control().set_debug(false).unwrap();
    h.run(&syn(40002));
    logger.flush();
    assert_eq!(capture.0.lock().unwrap().len(), 1, "off again");
}
