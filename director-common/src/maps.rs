//! Names and sizes of the maps the data path and the control library share.
//!
//! The names are what appears under the pin directory. The layout version is part of the
//! pin directory (see [`LAYOUT_VERSION`]), so a program built for another layout never
//! opens these maps.

/// Bumped on any change to a key or value layout in this crate.
///
/// 2: `DIR_TABLES` values are rows of [`TABLE_ROW`] real ids (no padding); the reals
/// array is memory-mappable and sized at load time; `DIR_PERSIST` is sized on its own;
/// IPv4 connection keys of 16 bytes and entries of 24; `DIR_CLIENT_HOPS`.
/// 3: `DIR_CONNS` is an array of 4-way buckets ([`crate::conntable::ConnBucket`]); the
/// settings carry the table's hash seed.
/// 4: `DIR_IFACES` (attached interfaces' MACs), `DIR_VLANS` (balanced VLANs),
/// `DIR_ICMP_RATE` (ICMP token buckets), `DIR_FLOOD`, `DIR_FRAGS`, `DIR_JUMP` (the
/// balancer's tail calls); the settings carry the flood limit
/// ([`crate::config::Settings::flood_limit`]); more outcome counters.
/// 5: a tunnel real carries its encapsulation ([`crate::real::TunType`]), its GUE port
/// and its checksum flags ([`crate::real::Real`] grows to 40 bytes).
/// 6: IPv6: `DIR_CONNS6` ([`crate::conntable::ConnBucket6`]), the IPv6 hop caches
/// (`DIR_HOPS6`, `DIR_CLIENT_HOPS6`), the IPv6 fragments' `DIR_FRAGS6`
/// ([`crate::fragments::FragKey6`]) and the IPv6 programs' slots in `DIR_JUMP`.
pub const LAYOUT_VERSION: u32 = 6;

/// `HashMap<ServiceKey, Service>`.
pub const SERVICES: &str = "DIR_SERVICES";
/// `Array<Real>`, indexed by real id (0 is never a real; see [`crate::real::Real`]).
/// Memory-mappable (BPF_F_MMAPABLE): userspace reads every slot without a syscall each.
pub const REALS: &str = "DIR_REALS";
/// `Array<TableRow>`: a flat array of real ids, [`TABLE_ROW`] per map value. For service
/// slot `s` and half `h`, slots `(s * 2 + h) * table_size .. + table_len[h]` are its
/// lookup table; slot `i` is element `i % TABLE_ROW` of value `i / TABLE_ROW`.
pub const TABLES: &str = "DIR_TABLES";
/// `PerCpuArray<HopCache>`, indexed by real id.
pub const HOPS: &str = "DIR_HOPS";
/// `PerCpuArray<HopCache>` of [`CLIENT_HOP_SLOTS`] entries: next hops towards clients
/// (NAT replies), direct-mapped by a hash of the client address.
pub const CLIENT_HOPS: &str = "DIR_CLIENT_HOPS";
/// `PerCpuArray<HopCache6>`, indexed by real id: next hops towards IPv6 reals.
pub const HOPS6: &str = "DIR_HOPS6";
/// `PerCpuArray<HopCache6>` of [`CLIENT_HOP_SLOTS`] entries: next hops towards IPv6
/// clients (NAT66 replies).
pub const CLIENT_HOPS6: &str = "DIR_CLIENT_HOPS6";
/// `Array<ConnBucket>`, memory-mappable, a power of two of buckets of
/// [`crate::conntable::CONN_WAYS`] entries each.
pub const CONNS: &str = "DIR_CONNS";
/// `Array<ConnBucket6>`, memory-mappable: the IPv6 connection table, as many buckets
/// as [`CONNS`] (`director attach --conn-table` sizes both).
pub const CONNS6: &str = "DIR_CONNS6";
/// `LruHashMap<PersistKey, PersistEntry>` (size: load time, on its own).
pub const PERSIST: &str = "DIR_PERSIST";
/// `PerCpuArray<u32>`: rr/wrr cursor per service slot.
pub const RR_CURSORS: &str = "DIR_RR";
/// `PerCpuArray<Counters>` per service slot.
pub const SERVICE_STATS: &str = "DIR_SVC_STATS";
/// `PerCpuArray<Counters>` per real id.
pub const REAL_STATS: &str = "DIR_REAL_STATS";
/// `PerCpuArray<u64>` indexed by [`crate::stats::Stat`].
pub const STATS: &str = "DIR_STATS";
/// `Array<u64>` of [`crate::vipfilter::VIP_FILTER_WORDS`], memory-mappable: the
/// hashed addresses of the virtual services and of the NAT reals, which a packet must
/// match to be looked up in the connection table ([`crate::vipfilter`]). Written by the
/// control library whenever services or reals change, and at every load.
pub const VIP_FILTER: &str = "DIR_VIP_FILTER";
/// `Array<Settings>` with one entry.
pub const SETTINGS: &str = "DIR_SETTINGS";
/// `ProgramArray` of [`JUMP_SLOTS`]: the balancer's own tail calls, the new-flow path
/// ([`JUMP_NEW_FLOW`], then [`JUMP_FORWARD`]) and the paths a packet rarely takes ([`JUMP_ICMP`],
/// [`JUMP_FRAGMENT`], [`JUMP_TOO_BIG`]). Each is a program of its own,
/// so the verifier explores it apart from the balancer's main path (together they
/// exceed its limit of a million instructions explored). Pinned: the kernel empties a
/// program array when its last user reference goes.
pub const JUMP: &str = "DIR_JUMP";
/// Slot of the ICMP error path (`director_icmp`).
pub const JUMP_ICMP: u32 = 0;
/// Slot of the later-fragment path (`director_fragment`).
pub const JUMP_FRAGMENT: u32 = 1;
/// Slot of the new-flow path (`director_new_flow`): service lookup, scheduling, the new
/// entry.
pub const JUMP_NEW_FLOW: u32 = 2;
/// Slot of the ICMP "fragmentation needed" answer (`director_too_big`); the MTU to
/// announce is handed over in `DIR_TOO_BIG_MTU`.
pub const JUMP_TOO_BIG: u32 = 3;
/// Slot of a new flow's forwarding (`director_forward`), after the new-flow program
/// recorded it; the real is handed over in `DIR_HANDOVER`.
pub const JUMP_FORWARD: u32 = 4;
/// Slot of the IPv6 balancer (`director_v6`): the main program hands every IPv6 frame
/// to it, so IPv4's path carries none of IPv6's code.
pub const JUMP_V6: u32 = 5;
/// Slot of the IPv6 new-flow path (`director_new_flow6`).
pub const JUMP_NEW_FLOW6: u32 = 6;
/// Slot of an IPv6 new flow's forwarding (`director_forward6`), real handed over in
/// `DIR_HANDOVER`.
pub const JUMP_FORWARD6: u32 = 7;
/// Slot of the ICMPv6 error path (`director_icmp6`).
pub const JUMP_ICMP6: u32 = 8;
/// Slot of the IPv6 later-fragment path (`director_fragment6`).
pub const JUMP_FRAGMENT6: u32 = 9;
/// Slot of the ICMPv6 "packet too big" answer (`director_too_big6`), MTU handed over in
/// `DIR_TOO_BIG_MTU`.
pub const JUMP_TOO_BIG6: u32 = 10;
/// Slots of `DIR_JUMP`.
pub const JUMP_SLOTS: u32 = 11;
/// `PerCpuArray<[u32; 2]>`: a new flow's real and service, from the new-flow program to
/// its forwarding. Pinned with the jump table, so that programs of two loads that meet
/// through it (an upgrade fills the slots one by one) hand over through one map.
pub const HANDOVER: &str = "DIR_HANDOVER";
/// `PerCpuArray<u32>`: the MTU a too-big packet's sender is told, to `JUMP_TOO_BIG`.
/// Pinned for the same reason.
pub const TOO_BIG_MTU: &str = "DIR_TOO_BIG_MTU";
/// `PerCpuArray<u32>` with one entry: the IPv6 parser's offset of the TCP/UDP header,
/// stored and read back so that the verifier sees one unknown offset for every chain
/// of extension headers (see docs/datapath.md, "IPv6").
pub const PARSE6: &str = "DIR_PARSE6";
/// `PerCpuArray<FibArgs>`: `bpf_fib_lookup`'s argument, off the stack.
pub const FIB_ARGS: &str = "DIR_FIB_ARGS";
/// `Array<IfaceMac>` of [`crate::iface::IFACE_SLOTS`]: the MAC of each attached
/// interface, by the low bits of its ifindex.
pub const IFACES: &str = "DIR_IFACES";
/// `Array<u64>` of [`crate::iface::VLAN_WORDS`]: bit `vid % 64` of word `vid / 64` is set
/// for each VLAN whose tagged frames are balanced.
pub const VLANS: &str = "DIR_VLANS";
/// `PerCpuArray<IcmpBucket>` with one entry: the ICMP token bucket of each CPU.
pub const ICMP_RATE: &str = "DIR_ICMP_RATE";
/// `PerCpuArray<FloodMeter>` with one entry: each CPU's count of new flows in the
/// current second, against [`crate::config::Settings::flood_limit`].
pub const FLOOD: &str = "DIR_FLOOD";
/// `HashMap<u32, u32>` of the decap program: an IPv4 address (its four bytes read as a
/// native-endian u32) to `DECAP_F_*`. Not pinned: each `director decap attach` loads
/// the program with its own.
pub const DECAP_ADDRS: &str = "DIR_DECAP_ADDRS";
/// `HashMap<[u8; 16], u32>` of the decap program: an IPv6 address to `DECAP_F_*`, as
/// [`DECAP_ADDRS`] for IPv4 (a map of its own, so an IPv4 lookup keeps its 4-byte key).
/// Not pinned either.
pub const DECAP_ADDRS6: &str = "DIR_DECAP_ADDRS6";
/// Capacity of [`DECAP_ADDRS`] (and of [`DECAP_ADDRS6`]): directors and local addresses
/// together, of each family.
pub const DECAP_MAX_ADDRS: u32 = 1024;
/// The address is a director's: IPIP from it is unwrapped.
pub const DECAP_F_FROM: u32 = 1 << 0;
/// The address is this host's: IPIP to it is unwrapped.
pub const DECAP_F_LOCAL: u32 = 1 << 1;
/// `Array<u32>` of one entry: the UDP port (network byte order in the low half-word)
/// on which the decap program unwraps GUE, 0 for none (`director decap attach
/// --gue-port`). Not pinned, like [`DECAP_ADDRS`].
pub const DECAP_GUE_PORT: &str = "DIR_DECAP_GUE";
/// `LruHashMap<FragKey, FragEntry>` of [`FRAG_TABLE`] entries: the datagrams whose first
/// fragment was forwarded (see [`crate::fragments`]).
pub const FRAGS: &str = "DIR_FRAGS";

/// `LruHashMap<FragKey6, FragEntry6>` of [`FRAG_TABLE`] entries: the IPv6 datagrams
/// whose first fragment was forwarded (see [`crate::fragments`]).
pub const FRAGS6: &str = "DIR_FRAGS6";

/// Real ids per value of [`TABLES`]. An array map stores each value in a slot rounded up
/// to 8 bytes, so one 4-byte id per value would take 8 bytes; a row of two takes
/// exactly 8. A power of two: the data path splits a slot with a shift and a mask.
pub const TABLE_ROW: u32 = 2;
/// A value of [`TABLES`].
pub type TableRow = [u32; TABLE_ROW as usize];

/// Default number of virtual service slots (`director attach --max-services`).
pub const MAX_SERVICES: u32 = 256;
/// Slots of the client next-hop cache (a power of two: the index is a hash's top bits).
pub const CLIENT_HOP_SLOTS: u32 = 4096;
/// Entries of [`FRAGS`]: fragmented datagrams in flight (first fragment seen within the
/// last 30 s); the least recently used go first when it is full.
pub const FRAG_TABLE: u32 = 16_384;
/// Default number of real servers, over all services (`director attach --max-reals`):
/// the reals, next-hop and per-real counter arrays have one more slot (slot 0 is never
/// a real).
pub const DEFAULT_MAX_REALS: u32 = 16_384;
/// The largest `--max-reals` the loader accepts.
pub const MAX_REALS_LIMIT: u32 = 1 << 20;

/// Default Maglev table size (prime; >= 100 x reals keeps imbalance near 1 %, so this
/// suits services of up to 163 reals).
pub const DEFAULT_TABLE_SIZE: u32 = 16_381;
/// Default connection table size, in entries (`director attach --conn-table`: a power of
/// two, at least [`crate::conntable::CONN_WAYS`]). A set-associative table evicts before
/// it is full: a new flow evicts a live entry with a chance of ~1 % once 62 % of the
/// entries are live (docs/datapath.md), so this one holds ~1.3 million live connections
/// at that rate, in 96 MiB.
pub const DEFAULT_CONN_TABLE: u32 = 1 << 21;
/// Default size of the persistence template table (`director attach --persist-table`):
/// one template per (persistent service, client address under its netmask) seen within
/// the persistence timeout; the least recently used go first when it is full.
pub const DEFAULT_PERSIST_TABLE: u32 = 1 << 16;
