//! Real servers ("destinations" in IPVS): one slot per (service, real) pair.

use crate::{
    addr::{FAMILY_V4, FAMILY_V6},
    config::NS_PER_S,
};

/// How packets reach a real server (ipvsadm -g / -i / -m).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Direct routing (gatewaying): only the MAC addresses change.
    Route = 0,
    /// IPIP tunnel: an outer IPv4 header from the director to the real.
    Tunnel = 1,
    /// NAT (masquerading): destination address/port rewritten, replies un-NATed.
    Masq = 2,
}

impl Method {
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Route),
            1 => Some(Self::Tunnel),
            2 => Some(Self::Masq),
            _ => None,
        }
    }
}

/// The encapsulation of a tunnel real (ipvsadm `--tun-type`); the numbers are IPVS's.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TunType {
    /// IPv4 in IPv4: 20 bytes of outer header.
    Ipip = 0,
    /// Generic UDP Encapsulation (version 0, inner protocol IPIP) inside UDP to the
    /// real's tunnel port: 32 bytes (IPv4, UDP, the 4-byte GUE header). The UDP source
    /// port comes from the flow's hash, so a real's NIC spreads flows over its queues.
    Gue = 1,
    /// GRE (protocol 0x0800): 24 bytes, 28 with a checksum.
    Gre = 2,
}

impl TunType {
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Ipip),
            1 => Some(Self::Gue),
            2 => Some(Self::Gre),
            _ => None,
        }
    }

    /// The name ipvsadm gives the type (`--tun-type`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Ipip => "ipip",
            Self::Gue => "gue",
            Self::Gre => "gre",
        }
    }

    /// Bytes the encapsulation puts in front of the client's packet over an IPv4 outer
    /// header, with the checksum flags `tun_flags` (`TUN_F_*`).
    pub const fn overhead(self, tun_flags: u8) -> u16 {
        self.overhead_over(tun_flags, FAMILY_V4)
    }

    /// Bytes the encapsulation puts in front of the client's packet when the outer
    /// header is of `outer_family` (the real's family, `FAMILY_V4` or `FAMILY_V6`):
    /// the outer IP header (20 or 40 bytes) and the tunnel's own headers behind it
    /// (none for IPIP and IPv6-in-IPv6, UDP and GUE's 8 + 4, GRE's 4 or 8). What a
    /// client is told to take off the egress MTU, whatever its own family (4in6: an
    /// IPv4 client's "fragmentation needed" counts 40 bytes for the outer IPv6 header).
    pub const fn overhead_over(self, tun_flags: u8, outer_family: u8) -> u16 {
        let ip = if outer_family == FAMILY_V6 { 40 } else { 20 };
        ip + match self {
            Self::Ipip => 0,
            Self::Gue => 8 + 4,
            Self::Gre if tun_flags & TUN_F_CSUM != 0 => 8,
            Self::Gre => 4,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overhead_counts_the_outer_header_of_the_real_s_family() {
        let cases = [
            (TunType::Ipip, 0, 20, 40),
            (TunType::Gue, 0, 32, 52),
            (TunType::Gre, 0, 24, 44),
            (TunType::Gre, TUN_F_CSUM, 28, 48),
        ];
        for (t, flags, v4, v6) in cases {
            assert_eq!(t.overhead_over(flags, FAMILY_V4), v4, "{t:?} over IPv4");
            assert_eq!(t.overhead_over(flags, FAMILY_V6), v6, "{t:?} over IPv6");
            assert_eq!(t.overhead(flags), v4, "{t:?} default");
        }
    }
}

/// Tunnel flag (IPVS's `IP_VS_TUNNEL_ENCAP_FLAG_CSUM`): the outer header carries a
/// checksum (GUE: the UDP checksum; GRE: the GRE checksum).
pub const TUN_F_CSUM: u8 = 1 << 0;
/// Tunnel flag (IPVS's `IP_VS_TUNNEL_ENCAP_FLAG_REMCSUM`): remote checksum offload. It
/// only applies to packets whose checksum this host has yet to compute, which a
/// forwarded packet never is: such packets leave without a checksum, as with IPVS.
pub const TUN_F_REMCSUM: u8 = 1 << 1;

/// The slot is in use. A slot without it is a removed real: flows still pointing at it
/// are rescheduled (see docs/datapath.md).
pub const REAL_F_PRESENT: u32 = 1 << 0;
/// Userspace only (the data path looks at [`REAL_F_PRESENT`] alone): the slot held a
/// real that was removed, and connection entries may still name it. The control library
/// purges those entries before it gives the slot to another real; a slot with no flag
/// at all is named by no connection entry.
pub const REAL_F_RETIRED: u32 = 1 << 1;

/// Value of the reals array, indexed by real id. Id 0 is never used, so a zero table
/// entry means "no real" and is counted as a drop; the data path never reads slot 0,
/// and the control library keeps its write generation in its first 8 bytes (its
/// `flags` stay 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Real {
    /// Address of the real server; IPv4 in the first four bytes.
    pub addr: [u8; 16],
    /// NAT: destination port to rewrite to, network byte order (0 = keep the client's).
    pub port_be: u16,
    /// Address family of `addr`.
    pub family: u8,
    /// [`Method`] as u8.
    pub method: u8,
    /// Configured weight (informational for the data path: weights act through tables).
    pub weight: u32,
    /// The service slot this real belongs to.
    pub service: u32,
    /// `REAL_F_*`.
    pub flags: u32,
    /// Tunnel reals: [`TunType`] as u8 (0, IPIP, for every other method).
    pub tun_type: u8,
    /// Tunnel reals: `TUN_F_*`.
    pub tun_flags: u8,
    /// GUE: the real's UDP port, network byte order.
    pub tun_port_be: u16,
    /// The memory-mapped array keeps its values 8-byte aligned.
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<Real>() == 40);

/// The data path's cache of a next hop (a FIB lookup result), per CPU, refreshed when
/// older than [`HOP_TTL_NS`]. bpf_fib_lookup costs several times a whole
/// established-flow pass; a neighbour or route change reaches the flows within the TTL.
///
/// Two caches use it: one entry per real (`DIR_HOPS`, indexed by real id; the control
/// library clears a real's entry whenever the real changes) and the client cache of NAT
/// replies (`DIR_CLIENT_HOPS`, direct-mapped by a hash of the client address; `dst` and
/// `src` tell which client and virtual address an entry is for).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HopCache {
    /// bpf_ktime_get_coarse_ns() of the lookup (CLOCK_MONOTONIC_COARSE); 0 = empty.
    pub at_ns: u64,
    pub ifindex: u32,
    /// Our address towards the real (IPIP outer source); for a client, the virtual
    /// address the replies come from.
    pub src: [u8; 4],
    /// The destination the hop leads to (the real's or the client's address).
    pub dst: [u8; 4],
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
    /// Egress MTU.
    pub mtu: u16,
    /// Padding as words: zeroing six bytes one by one would become a memset call in BPF.
    pub _pad0: u16,
    pub _pad1: u32,
}

/// How long a cached next hop is used before the FIB is asked again.
pub const HOP_TTL_NS: u64 = NS_PER_S;

/// [`HopCache`] for IPv6 next hops: the real's (`DIR_HOPS6`, indexed by real id, for
/// IPv6 reals) and the clients' of NAT66 replies (`DIR_CLIENT_HOPS6`, direct-mapped by
/// a hash of the client address). A table of its own, so IPv4's cache entries stay 40
/// bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HopCache6 {
    /// As [`HopCache::at_ns`]; 0 = empty.
    pub at_ns: u64,
    pub ifindex: u32,
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
    /// Egress MTU.
    pub mtu: u16,
    pub _pad0: u16,
    pub _pad1: u32,
    /// Our address towards the real (the outer source of a tunnel); for a client, the
    /// virtual address the replies come from.
    pub src: [u8; 16],
    /// The destination the hop leads to.
    pub dst: [u8; 16],
}

const _: () = assert!(core::mem::size_of::<HopCache6>() == 64);
