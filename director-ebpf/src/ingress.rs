//! Which frames are the director's to balance: those sent to the ingress interface's own
//! unicast MAC, untagged or tagged with a VLAN the operator named. Everything else is
//! the kernel's: a backup director that sees a switch flood another host's frames must
//! never forward a second copy of them.

use aya_ebpf::programs::XdpContext;
use director_common::iface::{IfaceMac, iface_slot};

use crate::{
    maps::{IFACES, VLANS},
    packet::{
        self,
        halves::{self, Mac},
    },
};

/// The frame's destination MAC is the ingress interface's own (when the control library
/// registered the interface; an unregistered one is trusted, as its NIC filters), and
/// never a group address (broadcast, multicast). Compared as half-words, not six bytes.
#[inline(always)]
pub fn sent_to_us(ctx: &XdpContext, dst: Mac) -> bool {
    if dst[0].to_ne_bytes()[0] & 1 != 0 {
        return false;
    }
    let ifindex = packet::ingress_ifindex(ctx);
    match IFACES.get(iface_slot(ifindex)) {
        Some(iface) if iface.ifindex == ifindex => {
            // SAFETY: the MAC follows the 4-byte ifindex in a `repr(C)` struct of
            // alignment 4.
            let own = unsafe { halves::mac(&iface.mac) };
            ((own[0] ^ dst[0]) | (own[1] ^ dst[1]) | (own[2] ^ dst[2])) == 0 || vrrp_mac(dst)
        }
        _ => true,
    }
}

const _: () = assert!(
    core::mem::offset_of!(IfaceMac, mac) % 2 == 0 && core::mem::align_of::<IfaceMac>() >= 2
);

/// A VRRP virtual router MAC (00:00:5e:00:01:VRID, RFC 5798): keepalived with
/// `use_vmac` answers for the VIP with it, on a macvlan over the attached interface.
#[inline(always)]
fn vrrp_mac(dst: Mac) -> bool {
    dst[0] == 0 && dst[1] == u16::from_ne_bytes([0x5e, 0]) && dst[2].to_ne_bytes()[0] == 1
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
