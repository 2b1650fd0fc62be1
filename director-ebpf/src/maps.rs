//! The maps of the data path. Names, key and value layouts come from director-common;
//! sizes marked "load time" are overridden by the control library when it loads us.

use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, ProgramArray},
};
use director_common::{
    config::{FloodMeter, Settings},
    conntable::{ConnBucket, ConnBucket6},
    fragments::{FragEntry, FragEntry6, FragKey, FragKey6},
    iface::{IFACE_SLOTS, IcmpBucket, IfaceMac, VLAN_WORDS},
    maps::{
        CLIENT_HOP_SLOTS, DECAP_MAX_ADDRS, DEFAULT_MAX_REALS, FRAG_TABLE, JUMP_SLOTS, MAX_SERVICES,
        TableRow,
    },
    persist::{PersistEntry, PersistKey},
    real::{HopCache, HopCache6, Real},
    service::{Service, ServiceKey},
    stats::{Counters, Stat},
    vipfilter::VIP_FILTER_WORDS,
};

/// Virtual services by (VIP, port, protocol).
#[map(name = "DIR_SERVICES")]
pub static SERVICES: HashMap<ServiceKey, Service> = HashMap::with_max_entries(MAX_SERVICES, 0);

/// Real servers by real id (0 unused; size: load time). Memory-mappable, so userspace
/// reads every slot without a syscall each.
#[map(name = "DIR_REALS")]
pub static REALS: Array<Real> = Array::with_max_entries(DEFAULT_MAX_REALS + 1, BPF_F_MMAPABLE);

/// Next-hop cache per real, per CPU (size: load time).
#[map(name = "DIR_HOPS")]
pub static HOPS: PerCpuArray<HopCache> = PerCpuArray::with_max_entries(DEFAULT_MAX_REALS + 1, 0);

/// Next hops towards clients (NAT replies), per CPU, direct-mapped by client address.
#[map(name = "DIR_CLIENT_HOPS")]
pub static CLIENT_HOPS: PerCpuArray<HopCache> = PerCpuArray::with_max_entries(CLIENT_HOP_SLOTS, 0);

/// Lookup tables: two halves of `TABLE_SIZE` real ids per service slot, `TABLE_ROW` ids
/// per value (size: load time). Memory-mappable, so userspace writes a whole table with
/// one memcpy instead of one syscall per entry.
#[map(name = "DIR_TABLES")]
pub static TABLES: Array<TableRow> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// Connection table: buckets of `CONN_WAYS` entries (size: load time, a power of two).
/// Memory-mappable: the values start on a page boundary, so each bucket's keys are one
/// cache line, and userspace scans the table without a syscall per bucket.
#[map(name = "DIR_CONNS")]
pub static CONNS: Array<ConnBucket> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// The IPv6 connection table: as `DIR_CONNS`, with IPv6 keys (size: load time, as many
/// buckets as `DIR_CONNS`, so one mask serves both).
#[map(name = "DIR_CONNS6")]
pub static CONNS6: Array<ConnBucket6> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// Next-hop cache per IPv6 real, per CPU (size: load time).
#[map(name = "DIR_HOPS6")]
pub static HOPS6: PerCpuArray<HopCache6> = PerCpuArray::with_max_entries(DEFAULT_MAX_REALS + 1, 0);

/// Next hops towards IPv6 clients (NAT66 replies), per CPU, direct-mapped by client
/// address.
#[map(name = "DIR_CLIENT_HOPS6")]
pub static CLIENT_HOPS6: PerCpuArray<HopCache6> =
    PerCpuArray::with_max_entries(CLIENT_HOP_SLOTS, 0);

/// The IPv6 parser's scratch word, per CPU: the offset of the TCP/UDP header goes
/// through it, which the verifier cannot follow, so every chain of extension headers
/// leaves the parser with the same (unknown, masked) offset and the programs behind it
/// are explored once, not once per chain.
#[map(name = "DIR_PARSE6")]
pub static PARSE6: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);
/// The VIP filter: hashed addresses of the services and of the NAT reals
/// (`director_common::vipfilter`). Memory-mappable: the control library rewrites changed
/// words in place.
#[map(name = "DIR_VIP_FILTER")]
pub static VIP_FILTER: Array<u64> = Array::with_max_entries(VIP_FILTER_WORDS, BPF_F_MMAPABLE);

/// Persistence templates (size: load time).
#[map(name = "DIR_PERSIST")]
pub static PERSIST: LruHashMap<PersistKey, PersistEntry> = LruHashMap::with_max_entries(1, 0);

/// rr/wrr position per service slot, per CPU (no lock on the fast path).
#[map(name = "DIR_RR")]
pub static RR_CURSORS: PerCpuArray<u32> = PerCpuArray::with_max_entries(MAX_SERVICES, 0);

/// Counters per service slot, per CPU.
#[map(name = "DIR_SVC_STATS")]
pub static SERVICE_STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(MAX_SERVICES, 0);

/// Counters per real id, per CPU.
#[map(name = "DIR_REAL_STATS")]
pub static REAL_STATS: PerCpuArray<Counters> =
    PerCpuArray::with_max_entries(DEFAULT_MAX_REALS + 1, 0);

/// One counter per packet outcome.
#[map(name = "DIR_STATS")]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Stat::COUNT, 0);

/// The run-time settings (one entry).
#[map(name = "DIR_SETTINGS")]
pub static SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);

/// The MTU a packet's sender is to be told, from the balancer to its `JUMP_TOO_BIG`
/// tail call (a tail call takes no arguments), per CPU.
#[map(name = "DIR_TOO_BIG_MTU")]
pub static TOO_BIG_MTU: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// A new flow's real and service, from the new-flow program to its `JUMP_FORWARD` tail
/// call, per CPU.
#[map(name = "DIR_HANDOVER")]
pub static HANDOVER: PerCpuArray<[u32; 2]> = PerCpuArray::with_max_entries(1, 0);

/// The balancer's tail calls (`JUMP_*` slots), filled by the loader.
#[map(name = "DIR_JUMP")]
pub static JUMP: ProgramArray = ProgramArray::with_max_entries(JUMP_SLOTS, 0);

/// The attached interfaces' own MACs, by the low bits of their ifindex (an array: the
/// verifier inlines the lookup, so the check costs no helper call).
#[map(name = "DIR_IFACES")]
pub static IFACES: Array<IfaceMac> = Array::with_max_entries(IFACE_SLOTS, 0);

/// The VLANs whose tagged frames are balanced: one bit per VLAN id.
#[map(name = "DIR_VLANS")]
pub static VLANS: Array<u64> = Array::with_max_entries(VLAN_WORDS, 0);

/// Each CPU's token bucket for the ICMP errors the data path sends itself.
#[map(name = "DIR_ICMP_RATE")]
pub static ICMP_RATE: PerCpuArray<IcmpBucket> = PerCpuArray::with_max_entries(1, 0);

/// New flows per CPU in the current second, against the flood limit.
#[map(name = "DIR_FLOOD")]
pub static FLOOD: PerCpuArray<FloodMeter> = PerCpuArray::with_max_entries(1, 0);

/// The decap program's directors and local addresses (`DECAP_F_*` by address).
#[map(name = "DIR_DECAP_ADDRS")]
pub static DECAP_ADDRS: HashMap<u32, u32> = HashMap::with_max_entries(DECAP_MAX_ADDRS, 0);

/// The decap program's IPv6 directors and local addresses (`DECAP_F_*` by address).
#[map(name = "DIR_DECAP_ADDRS6")]
pub static DECAP_ADDRS6: HashMap<[u8; 16], u32> = HashMap::with_max_entries(DECAP_MAX_ADDRS, 0);

/// The decap program's GUE port, network byte order (0: GUE is not unwrapped).
#[map(name = "DIR_DECAP_GUE")]
pub static DECAP_GUE_PORT: Array<u32> = Array::with_max_entries(1, 0);

/// Fragmented datagrams by (source, destination, IP id, protocol), written by their
/// first fragment. Shared by all CPUs, not per CPU: receive-side scaling hashes a first
/// fragment (which has ports) and its followers (which have none) differently, so a
/// datagram's fragments often arrive on different CPUs.
#[map(name = "DIR_FRAGS")]
pub static FRAGS: LruHashMap<FragKey, FragEntry> = LruHashMap::with_max_entries(FRAG_TABLE, 0);

/// IPv6 fragmented datagrams by (source, destination, identification, next header),
/// written by their first fragment; shared by all CPUs, as `DIR_FRAGS`.
#[map(name = "DIR_FRAGS6")]
pub static FRAGS6: LruHashMap<FragKey6, FragEntry6> = LruHashMap::with_max_entries(FRAG_TABLE, 0);

/// Entries per table half; patched by the loader (a read-only global, so the verifier
/// and JIT see a constant).
#[unsafe(no_mangle)]
static TABLE_SIZE: u32 = director_common::maps::DEFAULT_TABLE_SIZE;

/// [`TABLE_SIZE`] as the loader left it.
#[inline(always)]
pub fn table_size() -> u32 {
    // SAFETY: a reference to a static is valid and aligned. Volatile, so the compiler
    // does not fold in the value it was compiled with.
    unsafe { core::ptr::read_volatile(&TABLE_SIZE) }
}

/// Buckets of the connection table minus one (a power of two minus one); patched by the
/// loader like `TABLE_SIZE`.
#[unsafe(no_mangle)]
static CONN_BUCKET_MASK: u32 = 0;

/// [`CONN_BUCKET_MASK`] as the loader left it.
#[inline(always)]
pub fn conn_bucket_mask() -> u32 {
    // SAFETY: as in `table_size`.
    unsafe { core::ptr::read_volatile(&CONN_BUCKET_MASK) }
}
