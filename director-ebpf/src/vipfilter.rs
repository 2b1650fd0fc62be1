//! The first check of a parsed packet: can it be a virtual service's at all
//! (`director_common::vipfilter`)? The host's own traffic then leaves for the kernel
//! after a word of a small array, before the connection table is searched.

use director_common::{
    addr::v4_of_16,
    vipfilter::{Role, slot_v4, slot_v6},
};

use crate::{maps::VIP_FILTER, parse::Packet};

/// The packet is to a virtual address or from a NAT real (its reply), or shares a bit
/// with one; false only when it is certainly neither.
#[inline(always)]
pub fn may_be_ours(pkt: &Packet) -> bool {
    marked(slot_v4(v4_of_16(&pkt.dst), Role::Vip))
        || marked(slot_v4(v4_of_16(&pkt.src), Role::NatReal))
}

/// [`may_be_ours`] for an IPv6 packet (the same bitmap; its addresses hash into the
/// same halves).
#[inline(always)]
pub fn may_be_ours6(pkt: &Packet) -> bool {
    marked(slot_v6(&pkt.dst, Role::Vip)) || marked(slot_v6(&pkt.src, Role::NatReal))
}

/// The bit is set; a word out of the map's range (it never is) counts as set, so the
/// packet takes the full path.
#[inline(always)]
fn marked((word, bit): (u32, u64)) -> bool {
    match VIP_FILTER.get(word) {
        Some(w) => *w & bit != 0,
        None => true,
    }
}
