//! The connection table and persistence templates.

/// Key of the connection table: the IPv4 5-tuple as seen in the packet.
///
/// NAT installs two entries per connection: the client's direction (client -> VIP) and
/// the reply direction (real -> client), the latter with [`CONN_F_REPLY`].
///
/// The table is IPv4 only, with a 16-byte key (as Cilium keeps separate v4 and v6
/// tables): the key is hashed and compared on every packet, and its size sets how much
/// of the table one entry occupies. An IPv6 data path gets a table of its own.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    /// Network byte order.
    pub sport_be: u16,
    /// Network byte order.
    pub dport_be: u16,
    pub proto: u8,
    /// Padding as a byte and a word: three zero bytes would be merged into a memset call.
    pub _pad0: u8,
    pub _pad1: u16,
}

/// TCP state as the director sees it (one direction only in DR/TUN, like IPVS).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnState {
    /// SYN seen, no ACK yet (IPVS SYN_RECV): counted as inactive.
    SynRecv = 0,
    /// ACK seen: established, counted as active.
    Established = 1,
    /// FIN seen: short timeout, inactive.
    FinWait = 2,
    /// RST seen: shortest timeout, inactive.
    Close = 3,
    /// UDP: no states.
    Udp = 4,
}

impl ConnState {
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::SynRecv),
            1 => Some(Self::Established),
            2 => Some(Self::FinWait),
            3 => Some(Self::Close),
            4 => Some(Self::Udp),
            _ => None,
        }
    }
}

/// The entry describes the reply direction of a NAT connection (real -> client).
pub const CONN_F_REPLY: u8 = 1 << 0;

/// Value of the connection table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Conn {
    /// bpf_ktime_get_coarse_ns() of the last packet (CLOCK_MONOTONIC_COARSE); the entry is dead once
    /// `now - last_seen_ns` exceeds the timeout of its state.
    pub last_seen_ns: u64,
    /// Real id the flow is bound to.
    pub real: u32,
    /// Service slot.
    pub service: u32,
    /// [`ConnState`] as u8.
    pub state: u8,
    /// `CONN_F_*`.
    pub flags: u8,
    /// The service's virtual port the client used, network byte order (reply entries
    /// restore it as source).
    pub vport_be: u16,
    /// The virtual address the client used (reply entries restore it as source).
    pub vaddr: [u8; 4],
}

/// Key of the persistence templates: (service, client address & netmask).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PersistKey {
    pub service: u32,
    pub family: u8,
    pub _pad: [u8; 3],
    pub client: [u8; 16],
}

/// Value of the persistence templates.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PersistEntry {
    pub last_seen_ns: u64,
    pub real: u32,
    pub _pad: u32,
}
