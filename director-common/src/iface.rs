//! What the data path knows about the interfaces it is attached to, and the state of
//! the ICMP errors it sends itself.

/// The unicast MAC of an attached interface, in the slot [`iface_slot`] of its ifindex.
/// The data path balances only frames sent to this address; a slot whose `ifindex` is
/// not the ingress interface's (never written, or taken by another interface whose
/// index shares the slot) disables that check for the interface, and the control
/// library reports such a collision when it attaches.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfaceMac {
    pub ifindex: u32,
    pub mac: [u8; 6],
    pub _pad: u16,
}

/// Slots of `DIR_IFACES` (a power of two: the slot is the low bits of the ifindex).
pub const IFACE_SLOTS: u32 = 1024;

/// The slot of an interface in `DIR_IFACES`.
#[inline(always)]
pub const fn iface_slot(ifindex: u32) -> u32 {
    ifindex & (IFACE_SLOTS - 1)
}

/// Words of the VLAN bitmap `DIR_VLANS`: one bit per VLAN id (0..4096).
pub const VLAN_WORDS: u32 = 64;

/// One CPU's token bucket for the ICMP "fragmentation needed" messages the data path
/// sends, kept as credit in nanoseconds: each message costs
/// `NS_PER_S / ICMP_TOO_BIG_PER_S`, credit accrues with time up to
/// `ICMP_TOO_BIG_BURST` messages' worth.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IcmpBucket {
    pub credit_ns: u64,
    pub last_ns: u64,
}

/// Sustained ICMP "fragmentation needed" messages per second and CPU (the kernel's own
/// default for all ICMP errors is 1,000 per second with a burst of 50).
pub const ICMP_TOO_BIG_PER_S: u64 = 1_000;
/// Messages a CPU may send at once after a quiet period.
pub const ICMP_TOO_BIG_BURST: u64 = 50;
