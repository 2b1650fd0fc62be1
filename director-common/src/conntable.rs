//! The connection table's layout: the key of a flow, its entry, and the buckets of
//! [`CONN_WAYS`] entries that `DIR_CONNS` is an array of. The states an entry goes
//! through and how long each lives are in [`crate::conn_state`].

/// Key of the connection table: the IPv4 5-tuple as seen in the packet. A key whose
/// `proto` is 0 marks an empty way of a [`ConnBucket`] (no flow has protocol 0).
///
/// NAT installs two entries per connection: the client's direction (client -> VIP) and
/// the reply direction (real -> client), the latter with [`CONN_F_REPLY`].
///
/// This is the IPv4 table's key, 16 bytes; IPv6 flows live in a table of their own
/// ([`FlowKey6`] in `DIR_CONNS6`), as Cilium keeps separate v4 and v6 tables: the key is
/// hashed and compared on every packet, and its size sets how much of the table one
/// entry occupies, so IPv4's buckets stay three cache lines.
#[repr(C, align(8))]
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
    /// [`crate::conn_state::ConnState`] as u8.
    pub state: u8,
    /// `CONN_F_*`.
    pub flags: u8,
    /// The service's virtual port the client used, network byte order (reply entries
    /// restore it as source).
    pub vport_be: u16,
    /// The virtual address the client used (reply entries restore it as source).
    pub vaddr: [u8; 4],
}

impl FlowKey {
    /// The key as the two words a bucket scan compares.
    #[inline(always)]
    pub fn words(&self) -> [u64; 2] {
        // SAFETY: FlowKey is 16 bytes of integers with no implicit padding (the
        // `_pad` fields), aligned to 8: a valid, aligned [u64; 2].
        unsafe { *(self as *const Self).cast::<[u64; 2]>() }
    }

    /// The key as the four words the bucket hash mixes.
    #[inline(always)]
    pub fn halves(&self) -> [u32; 4] {
        // SAFETY: as in `words`: 16 bytes of integers, no holes, aligned to 8 (more than
        // [u32; 4] needs).
        unsafe { *(self as *const Self).cast::<[u32; 4]>() }
    }

    /// No flow is stored in this way.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.proto == 0
    }
}

/// Ways (entries) per bucket of the connection table.
pub const CONN_WAYS: usize = 4;

/// One bucket of the connection table (`DIR_CONNS`, an array of buckets).
///
/// The table is set-associative, like a CPU cache or the flow tables of hardware load
/// balancers, rather than a kernel hash map. A key has two candidate buckets (from one
/// seeded hash, [`crate::hash::conn_buckets`]): a lookup compares one cache line of
/// keys, or two, and a new flow's entry goes into a bucket the lookup already brought
/// into the cache, the one with more empty ways. A kernel LRU hash insert instead takes
/// a free element from an LRU list and links it into a bucket: more cold memory, and
/// three to four times a bucket insert's cost (docs/performance.md).
///
/// 192 bytes, three cache lines: the keys fill the first (the array is memory-mappable,
/// so its values start on a page boundary), the claim and the entries the next two.
///
/// A new entry takes an empty way, else one that timed out, else the least recently
/// seen of the two buckets (counted as `conn_evicted`). Writers (the data path storing,
/// userspace removing) first claim the bucket with a compare-and-swap on `claim` (1 for
/// the data path, 2 for userspace); readers take no lock, copy the entry and read the
/// key again. A writer clears the old key before it writes the entry and writes the new
/// key last (docs/datapath.md, "The connection table").
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnBucket {
    pub keys: [FlowKey; CONN_WAYS],
    /// 0, or 1 (the data path) or 2 (userspace) while a writer owns the bucket. 64 bits:
    /// the BPF back end has compare-and-swap on 32-bit words only with ALU32
    /// (`-mcpu=v3`). In the line of the first entries, so an insert into an emptyish
    /// bucket writes one line besides the keys.
    pub claim: u64,
    pub conns: [Conn; CONN_WAYS],
    pub _pad: [u64; 3],
}

const _: () = {
    assert!(core::mem::size_of::<ConnBucket>() == 192);
    assert!(core::mem::offset_of!(ConnBucket, claim) == 64);
};

/// Key of the IPv6 connection table (`DIR_CONNS6`): the IPv6 5-tuple as seen in the
/// packet, the same fields as [`FlowKey`] with 16-byte addresses; 40 bytes.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey6 {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Network byte order.
    pub sport_be: u16,
    /// Network byte order.
    pub dport_be: u16,
    pub proto: u8,
    pub _pad0: u8,
    pub _pad1: u16,
}

impl FlowKey6 {
    /// The key as the five words a bucket scan compares.
    #[inline(always)]
    pub fn words(&self) -> [u64; 5] {
        // SAFETY: FlowKey6 is 40 bytes of integers and byte arrays with no implicit
        // padding, aligned to 8: a valid, aligned [u64; 5].
        unsafe { *(self as *const Self).cast::<[u64; 5]>() }
    }

    /// The key as the ten words the bucket hash mixes.
    #[inline(always)]
    pub fn halves(&self) -> [u32; 10] {
        // SAFETY: as in `words`; [u32; 10] needs less alignment.
        unsafe { *(self as *const Self).cast::<[u32; 10]>() }
    }

    /// No flow is stored in this way.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.proto == 0
    }
}

/// Value of the IPv6 connection table: [`Conn`] with a 16-byte virtual address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Conn6 {
    /// As [`Conn::last_seen_ns`].
    pub last_seen_ns: u64,
    /// Real id the flow is bound to (a real of either family: an IPv6 service may have
    /// IPv4 tunnel reals).
    pub real: u32,
    /// Service slot.
    pub service: u32,
    /// [`crate::conn_state::ConnState`] as u8.
    pub state: u8,
    /// `CONN_F_*`.
    pub flags: u8,
    /// As [`Conn::vport_be`].
    pub vport_be: u16,
    pub _pad: u32,
    /// The virtual address the client used (reply entries restore it as source).
    pub vaddr: [u8; 16],
}

/// One bucket of the IPv6 connection table (`DIR_CONNS6`): the same set-associative
/// scheme as [`ConnBucket`], the same claim protocol, with [`CONN_WAYS`] IPv6 entries.
///
/// 384 bytes, six cache lines: the keys fill the first two and a half, the claim
/// follows them, then the entries.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnBucket6 {
    pub keys: [FlowKey6; CONN_WAYS],
    /// As [`ConnBucket::claim`].
    pub claim: u64,
    pub conns: [Conn6; CONN_WAYS],
    pub _pad: [u64; 7],
}

const _: () = {
    assert!(core::mem::size_of::<FlowKey6>() == 40);
    assert!(core::mem::size_of::<Conn6>() == 40);
    assert!(core::mem::size_of::<ConnBucket6>() == 384);
    assert!(core::mem::offset_of!(ConnBucket6, claim) == 160);
};
