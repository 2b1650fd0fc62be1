//! A packet's parse, handed from a program of the balancer to the one it tail-calls (a
//! tail call takes no arguments): the new-flow program and a new flow's forwarding then
//! read the headers' fields from a per-CPU map instead of parsing the frame again
//! (the MAC filter's lookup, the VLAN check, the IP and L4 checks).
//!
//! The handover is checked against the frame before it is used: the IP header's
//! checksum and addresses, the ports, TCP's flags word and the frame's length must be
//! the ones it was made from. A program of another load (an upgrade swaps programs one
//! by one) may have left something else there, or nothing; the frame is then parsed.

use aya_ebpf::{macros::map, maps::PerCpuArray, programs::XdpContext};
use director_common::addr::PROTO_TCP;

use crate::{packet, parse::Packet};

/// What identifies a frame: its IP header's checksum and addresses, its ports and
/// (TCP) its flags, as 16-bit words.
type Identity = [u16; 8];

#[repr(C, align(8))]
struct Parsed {
    pkt: Packet,
    now: u64,
    id: Identity,
}

/// One per CPU: a handover is read by the program the writer tail-calls, on the same
/// CPU, before anything else runs there. Not pinned: only programs of one load meet
/// through it (others fail the check above).
#[map(name = "DIR_PARSED")]
static PARSED: PerCpuArray<Parsed> = PerCpuArray::with_max_entries(1, 0);

/// Hand `pkt` (parsed from this frame at `now`) to the next program.
#[inline(always)]
pub fn leave(pkt: &Packet, now: u64) {
    if let Some(p) = PARSED.get_ptr_mut(0) {
        // SAFETY: a per-CPU map value, valid while the program runs; only this CPU's
        // programs touch it, one at a time. Plain integers: copied field by field.
        unsafe {
            (*p).pkt = pkt.copy();
            (*p).now = now;
        }
    }
}

/// The parse the previous program left for this frame, with its clock reading.
#[inline(always)]
pub fn take(ctx: &XdpContext) -> Option<(Packet, u64)> {
    let p = PARSED.get(0)?;
    let mut pkt = p.pkt.copy();
    // Offsets from a map value are unknown to the verifier: bounded here (an L2 header
    // is at most 18 bytes, an IPv4 header 60), as the parser's are.
    pkt.l2_len &= 0x1f;
    pkt.l4_off &= 0x7f;
    (in_frame(ctx, &pkt)? == of_fields(&pkt)).then_some((pkt, p.now))
}

/// The identity the parse says the frame has.
#[inline(always)]
fn of_fields(pkt: &Packet) -> Identity {
    let w = |a: u8, b: u8| u16::from_ne_bytes([a, b]);
    [
        w(pkt.ip_check[0], pkt.ip_check[1]),
        w(pkt.src[0], pkt.src[1]),
        w(pkt.src[2], pkt.src[3]),
        w(pkt.dst[0], pkt.dst[1]),
        w(pkt.dst[2], pkt.dst[3]),
        pkt.sport_be,
        pkt.dport_be,
        pkt.tcp_flags as u16,
    ]
}

/// The identity the frame has, read from it.
#[inline(always)]
fn in_frame(ctx: &XdpContext, pkt: &Packet) -> Option<Identity> {
    if packet::len(ctx) as u64 != pkt.frame_len {
        return None;
    }
    let ip: [u16; 5] = *packet::header(ctx, pkt.l2_len + 10).ok()?;
    let ports: [u16; 2] = *packet::header(ctx, pkt.l4_off).ok()?;
    let flags = if pkt.proto == PROTO_TCP {
        let [_, f]: [u8; 2] = *packet::header(ctx, pkt.l4_off + 12).ok()?;
        f as u16
    } else {
        0
    };
    Some([ip[0], ip[1], ip[2], ip[3], ip[4], ports[0], ports[1], flags])
}
