//! Which frames are the director's to balance: those sent to the ingress interface's own
//! unicast MAC, untagged or tagged with a VLAN the operator named. Everything else is
//! the kernel's: a backup director that sees a switch flood another host's frames must
//! never forward a second copy of them.

use aya_ebpf::programs::XdpContext;
use director_common::iface::iface_slot;

use crate::{
    maps::{IFACES, VLANS},
    packet,
};

/// The frame's destination MAC is the ingress interface's own (when the control library
/// registered the interface; an unregistered one is trusted, as its NIC filters), and
/// never a group address (broadcast, multicast).
#[inline(always)]
pub fn sent_to_us(ctx: &XdpContext, dst: &[u8; 6]) -> bool {
    if dst[0] & 1 != 0 {
        return false;
    }
    let ifindex = packet::ingress_ifindex(ctx);
    match IFACES.get(iface_slot(ifindex)) {
        Some(iface) if iface.ifindex == ifindex => same_mac(&iface.mac, dst) || vrrp_mac(dst),
        _ => true,
    }
}

/// A VRRP virtual router MAC (00:00:5e:00:01:VRID, RFC 5798): keepalived with
/// `use_vmac` answers for the VIP with it, on a macvlan over the attached interface.
#[inline(always)]
fn vrrp_mac(dst: &[u8; 6]) -> bool {
    u32::from_ne_bytes([dst[0], dst[1], dst[2], dst[3]]) == u32::from_ne_bytes([0, 0, 0x5e, 0])
        && dst[4] == 1
}

/// Compared as a word and a half-word, not six bytes.
#[inline(always)]
fn same_mac(a: &[u8; 6], b: &[u8; 6]) -> bool {
    u32::from_ne_bytes([a[0], a[1], a[2], a[3]]) == u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
        && u16::from_ne_bytes([a[4], a[5]]) == u16::from_ne_bytes([b[4], b[5]])
}

/// The VLAN of a tag control field (priority and DEI bits ignored) is one whose frames
/// are balanced.
#[inline(always)]
pub fn vlan_balanced(tci: u16) -> bool {
    let vid = (tci & 0x0fff) as u32;
    match VLANS.get(vid >> 6) {
        Some(word) => (*word >> (vid & 63)) & 1 != 0,
        None => false,
    }
}
