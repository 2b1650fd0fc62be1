//! Packet fixtures: run the director's XDP program on one frame through
//! BPF_PROG_TEST_RUN and check the verdict and the exact output frame.
//!
//! Frames are built and checked with etherparse, never with the code under test: an
//! output frame's checksums are recomputed independently.

use std::sync::Mutex;

use aya::programs::{TestRun as _, TestRunOptions};
use director::{Control, Datapath, LoadOptions, datapath::PROG_DIRECTOR};
use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};

/// XDP verdicts, as the program returns them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Aborted,
    Drop,
    Pass,
    Tx,
    Redirect,
}

impl Action {
    pub fn from_code(c: u32) -> Self {
        match c {
            0 => Action::Aborted,
            1 => Action::Drop,
            2 => Action::Pass,
            3 => Action::Tx,
            4 => Action::Redirect,
            other => panic!("unknown XDP verdict {other}"),
        }
    }
}

/// What one run of the program produced.
#[derive(Debug)]
pub struct Outcome {
    pub action: Action,
    pub frame: Vec<u8>,
}

/// A loaded director program with its own (unpinned) maps.
pub struct Harness {
    pub dp: Datapath,
    /// Ingress ifindex handed to the program (0: none; FIB lookups then fail).
    pub ingress_ifindex: u32,
}

/// Small tables keep fixture loads fast; 251 is prime.
pub const FIXTURE_TABLE_SIZE: u32 = 251;

// Loading many programs at once on a 2-core machine only slows every test down.
static LOAD: Mutex<()> = Mutex::new(());

impl Harness {
    pub fn new() -> Self {
        let _serial = LOAD.lock().unwrap_or_else(|e| e.into_inner());
        let dp = Datapath::load(&LoadOptions {
            conn_table: 4096,
            table_size: FIXTURE_TABLE_SIZE,
            pin_dir: None,
        })
        .unwrap_or_else(|e| panic!("loading the XDP object: {:#}", anyhow::Error::from(e)));
        Self {
            dp,
            ingress_ifindex: 0,
        }
    }

    pub fn control(&mut self) -> &mut Control {
        &mut self.dp.control
    }

    /// Run the director program once on `frame`.
    pub fn run(&self, frame: &[u8]) -> Outcome {
        // Room for an outer header (IPIP) on top of the input.
        let mut out = vec![0u8; frame.len() + 64];
        // xdp_md as the kernel accepts it for test runs: data, data_end, data_meta,
        // ingress_ifindex, rx_queue_index, egress_ifindex.
        let ctx: [u32; 6] = [0, frame.len() as u32, 0, self.ingress_ifindex, 0, 0];
        let ctx_bytes: Vec<u8> = ctx.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let prog = self.dp.program(PROG_DIRECTOR);
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: if self.ingress_ifindex != 0 {
                Some(&ctx_bytes)
            } else {
                None
            },
            repeat: 1,
            ..TestRunOptions::new()
        };
        let res = prog.test_run(opts).expect("BPF_PROG_TEST_RUN");
        out.truncate(res.data_size_out as usize);
        Outcome {
            action: Action::from_code(res.return_value),
            frame: out,
        }
    }

    /// One fixture: what it proves, the input, the expected verdict and output frame.
    #[track_caller]
    pub fn check(&self, intent: &str, input: &[u8], action: Action, expected: &[u8]) -> Outcome {
        let got = self.run(input);
        assert_eq!(got.action, action, "{intent}: verdict");
        assert_eq!(
            hex(&got.frame),
            hex(expected),
            "{intent}: output frame differs"
        );
        if action == Action::Tx || action == Action::Redirect {
            assert_checksums_valid(&got.frame, intent);
        }
        got
    }

    /// A global outcome counter (e.g. "pass_not_vip").
    pub fn stat(&self, name: &str) -> u64 {
        self.dp
            .control
            .stats()
            .expect("reading stats")
            .into_iter()
            .find(|(s, _)| s.name() == name)
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no counter {name}"))
    }
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// MAC addresses used by fixtures.
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const DIRECTOR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xd1];

/// TCP flags for [`tcp4`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Flags {
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
}
pub const SYN: Flags = Flags {
    syn: true,
    ack: false,
    fin: false,
    rst: false,
};
pub const ACK: Flags = Flags {
    syn: false,
    ack: true,
    fin: false,
    rst: false,
};
pub const FIN_ACK: Flags = Flags {
    syn: false,
    ack: true,
    fin: true,
    rst: false,
};
pub const RST: Flags = Flags {
    syn: false,
    ack: false,
    fin: false,
    rst: true,
};

/// An Ethernet/IPv4/TCP frame.
pub fn tcp4(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: ([u8; 4], u16),
    dst: ([u8; 4], u16),
    flags: Flags,
    payload: &[u8],
) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src.0, dst.0, 64)
        .tcp(src.1, dst.1, 1000, 64240);
    if flags.syn {
        b = b.syn();
    }
    if flags.ack {
        b = b.ack(1);
    }
    if flags.fin {
        b = b.fin();
    }
    if flags.rst {
        b = b.rst();
    }
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).expect("building a TCP frame");
    out
}

/// An Ethernet/IPv4/UDP frame.
pub fn udp4(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: ([u8; 4], u16),
    dst: ([u8; 4], u16),
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src.0, dst.0, 64)
        .udp(src.1, dst.1);
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).expect("building a UDP frame");
    out
}

/// Check every checksum of an Ethernet frame carrying IPv4 (and IPIP inside it) with
/// etherparse's own computation.
#[track_caller]
pub fn assert_checksums_valid(frame: &[u8], intent: &str) {
    let p = SlicedPacket::from_ethernet(frame)
        .unwrap_or_else(|e| panic!("{intent}: output does not parse: {e}"));
    check_ip_and_l4(&p, intent);
}

#[track_caller]
fn check_ip_and_l4(p: &SlicedPacket<'_>, intent: &str) {
    use etherparse::{InternetSlice, NetSlice};
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        panic!("{intent}: output is not IPv4");
    };
    let h = ip.header().to_header();
    assert_eq!(
        h.header_checksum,
        h.calc_header_checksum(),
        "{intent}: IPv4 header checksum"
    );
    if h.protocol == etherparse::IpNumber::IPV4 {
        // IPIP: check the inner packet too.
        let inner = SlicedPacket::from_ip(ip.payload().payload)
            .unwrap_or_else(|e| panic!("{intent}: inner packet: {e}"));
        return check_ip_and_l4(&inner, intent);
    }
    let _ = InternetSlice::Ipv4;
    let payload = ip.payload().payload;
    match &p.transport {
        Some(TransportSlice::Tcp(t)) => {
            let want = t
                .to_header()
                .calc_checksum_ipv4(&h, t.payload())
                .expect("tcp checksum");
            assert_eq!(t.checksum(), want, "{intent}: TCP checksum");
        }
        Some(TransportSlice::Udp(u)) => {
            if u.checksum() != 0 {
                let want = u
                    .to_header()
                    .calc_checksum_ipv4(&h, u.payload())
                    .expect("udp checksum");
                assert_eq!(u.checksum(), want, "{intent}: UDP checksum");
            }
        }
        _ => panic!(
            "{intent}: no TCP/UDP in the output ({} payload bytes)",
            payload.len()
        ),
    }
}

/// While alive, the current thread is inside another network namespace (FIB lookups of
/// test runs use the caller's namespace); the old one is restored on drop.
pub struct InNetns {
    home: std::fs::File,
}

impl InNetns {
    pub fn enter(path: &std::path::Path) -> Self {
        use nix::sched::{CloneFlags, setns};
        let home = std::fs::File::open("/proc/thread-self/ns/net").expect("opening our own netns");
        let target =
            std::fs::File::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
        setns(&target, CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("entering {}: {e}", path.display()));
        Self { home }
    }
}

impl Drop for InNetns {
    fn drop(&mut self) {
        use nix::sched::{CloneFlags, setns};
        if let Err(e) = setns(&self.home, CloneFlags::CLONE_NEWNET)
            && !std::thread::panicking()
        {
            panic!("returning to our netns: {e}");
        }
    }
}
