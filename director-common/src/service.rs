//! Virtual services: the key the data path looks up and what it finds there.

/// Key of the services map: (VIP, port, protocol). A service with `port_be == 0` matches
/// every port of its VIP (looked up after the exact port misses).
///
/// Aligned to 4 (the layout is unchanged, 20 bytes): the data path builds it with word
/// stores.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    /// Virtual address; IPv4 in the first four bytes (see [`crate::addr`]).
    pub addr: [u8; 16],
    /// Virtual port, network byte order; 0 = every port.
    pub port_be: u16,
    /// [`crate::addr::PROTO_TCP`] or [`crate::addr::PROTO_UDP`].
    pub proto: u8,
    /// [`crate::addr::FAMILY_V4`] or [`crate::addr::FAMILY_V6`].
    pub family: u8,
}

/// How a service picks a real server for a new connection.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheduler {
    /// Weighted Maglev over a hash of the connection's 5-tuple (the default).
    Maglev = 0,
    /// Weighted consistent hash of the source address (and port with [`SVC_F_HASH_PORT`]).
    SourceHash = 1,
    /// Round robin over a sequence of the available reals (per CPU).
    RoundRobin = 2,
    /// Weighted round robin: the sequence holds each real as often as its weight says,
    /// interleaved (smooth WRR).
    WeightedRoundRobin = 3,
}

impl Scheduler {
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Maglev),
            1 => Some(Self::SourceHash),
            2 => Some(Self::RoundRobin),
            3 => Some(Self::WeightedRoundRobin),
            _ => None,
        }
    }
}

/// Persistence (ipvsadm -p): clients are pinned to a real by a template entry.
pub const SVC_F_PERSISTENT: u32 = 1 << 0;
/// sh/mh: include the source port in the hash (ipvsadm's sh-port / mh-port).
pub const SVC_F_HASH_PORT: u32 = 1 << 1;
/// mh: hash only the source address (ipvsadm's mh without mh-port) instead of the 5-tuple.
pub const SVC_F_HASH_SRC_ONLY: u32 = 1 << 2;

/// Value of the services map.
///
/// Each service owns two halves of the lookup-table map (see [`crate::maps::TABLES`]);
/// the data path reads `active_half` and the matching `table_len`. Userspace writes the
/// inactive half and then replaces this whole value, which the kernel does atomically, so
/// the data path sees either the old table or the new one, never a mix.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Service {
    /// Slot of this service in the per-service arrays (tables, stats, rr cursors).
    pub id: u32,
    /// `SVC_F_*`.
    pub flags: u32,
    /// [`Scheduler`] as u8.
    pub scheduler: u8,
    /// 0 or 1: which half of the table the data path uses.
    pub active_half: u8,
    pub _pad0: [u8; 2],
    /// Entries in use in each half (the Maglev table size for mh/sh, the sequence length
    /// for rr/wrr; 0 = no real available).
    pub table_len: [u32; 2],
    /// Persistence timeout in seconds (ipvsadm -p), when `SVC_F_PERSISTENT`.
    pub persist_timeout_s: u32,
    /// Persistence netmask (ipvsadm -M), applied bytewise to the client address.
    pub persist_mask: [u8; 16],
}
