//! Names and sizes of the maps the data path and the control library share.
//!
//! The names are what appears under the pin directory. The layout version is part of the
//! pin directory (see [`LAYOUT_VERSION`]), so a program built for another layout never
//! opens these maps.

/// Bumped on any change to a key or value layout in this crate.
pub const LAYOUT_VERSION: u32 = 2;

/// `HashMap<ServiceKey, Service>`.
pub const SERVICES: &str = "DIR_SERVICES";
/// `Array<Real>`, indexed by real id (0 unused).
pub const REALS: &str = "DIR_REALS";
/// `Array<u32>` of real ids: for service slot `s` and half `h`, entries
/// `(s * 2 + h) * table_size .. + table_len[h]` are its lookup table.
pub const TABLES: &str = "DIR_TABLES";
/// `PerCpuArray<HopCache>`, indexed by real id.
pub const HOPS: &str = "DIR_HOPS";
/// `PerCpuArray<HopCache>` of [`CLIENT_HOP_SLOTS`] entries: next hops towards clients
/// (NAT replies), direct-mapped by a hash of the client address.
pub const CLIENT_HOPS: &str = "DIR_CLIENT_HOPS";
/// `LruHashMap<FlowKey, Conn>`.
pub const CONNS: &str = "DIR_CONNS";
/// `LruHashMap<PersistKey, PersistEntry>`.
pub const PERSIST: &str = "DIR_PERSIST";
/// `PerCpuArray<u32>`: rr/wrr cursor per service slot.
pub const RR_CURSORS: &str = "DIR_RR";
/// `PerCpuArray<Counters>` per service slot.
pub const SERVICE_STATS: &str = "DIR_SVC_STATS";
/// `PerCpuArray<Counters>` per real id.
pub const REAL_STATS: &str = "DIR_REAL_STATS";
/// `PerCpuArray<u64>` indexed by [`crate::stats::Stat`].
pub const STATS: &str = "DIR_STATS";
/// `Array<Settings>` with one entry.
pub const SETTINGS: &str = "DIR_SETTINGS";

/// Compile-time capacities of the data path (the maps are declared with these; the
/// sizes that matter for memory, the connection table and the table size, are set at
/// load time).
pub const MAX_SERVICES: u32 = 256;
pub const MAX_REALS: u32 = 4096;
/// Slots of the client next-hop cache (a power of two: the index is a hash's top bits).
pub const CLIENT_HOP_SLOTS: u32 = 4096;

/// Default Maglev table size (prime; >= 100 x reals keeps imbalance near 1 %, so this
/// suits services of up to 163 reals).
pub const DEFAULT_TABLE_SIZE: u32 = 16_381;
/// Default connection table size.
pub const DEFAULT_CONN_TABLE: u32 = 1 << 20;
