//! Loading the XDP programs and their maps.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, ProgramArray},
    programs::{Xdp, XdpMode, xdp::XdpLinkId},
};
use director_common::{
    conntable::CONN_WAYS,
    maps::{self, MAX_REALS_LIMIT, MAX_SERVICES, TABLE_ROW},
};

use crate::{control::Control, tables::is_prime};

/// The compiled XDP object (built by build.rs from director-ebpf).
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/director-xdp"));

/// Program names in the object.
pub const PROG_DIRECTOR: &str = "director";
/// The real servers' decapsulation program: unwraps IPIP from the directors
/// [`Datapath::allow_decap`] names.
pub const PROG_DECAP: &str = "decap";
/// Passes every packet: attached to the peer of a veth the director sends into, it
/// makes the kernel deliver XDP_TX and XDP_REDIRECT frames there.
pub const PROG_PASS: &str = "pass";
/// Swaps the MAC addresses and returns XDP_TX: the cost floor of any XDP forwarder,
/// for the benchmarks.
pub const PROG_FLOOR: &str = "floor";
/// The balancer's tail calls, loaded with it, by their `DIR_JUMP` slot.
pub const BALANCER_JUMPS: [(&str, u32); 11] = [
    ("director_icmp", maps::JUMP_ICMP),
    ("director_fragment", maps::JUMP_FRAGMENT),
    ("director_new_flow", maps::JUMP_NEW_FLOW),
    ("director_too_big", maps::JUMP_TOO_BIG),
    ("director_forward", maps::JUMP_FORWARD),
    ("director_v6", maps::JUMP_V6),
    ("director_new_flow6", maps::JUMP_NEW_FLOW6),
    ("director_forward6", maps::JUMP_FORWARD6),
    ("director_icmp6", maps::JUMP_ICMP6),
    ("director_fragment6", maps::JUMP_FRAGMENT6),
    ("director_too_big6", maps::JUMP_TOO_BIG6),
];

/// Every map of the object, for pinning.
pub const ALL_MAPS: [&str; 27] = [
    maps::SERVICES,
    maps::REALS,
    maps::HOPS,
    maps::CLIENT_HOPS,
    maps::HOPS6,
    maps::CLIENT_HOPS6,
    maps::TABLES,
    maps::CONNS,
    maps::CONNS6,
    maps::PERSIST,
    maps::RR_CURSORS,
    maps::SERVICE_STATS,
    maps::REAL_STATS,
    maps::STATS,
    maps::SETTINGS,
    maps::JUMP,
    maps::HANDOVER,
    maps::TOO_BIG_MTU,
    maps::FIB_ARGS,
    maps::PARSE6,
    maps::IFACES,
    maps::VLANS,
    maps::ICMP_RATE,
    maps::FLOOD,
    maps::FRAGS,
    maps::VIP_FILTER,
    maps::FRAGS6,
];

/// Why loading, configuring or attaching the XDP object failed. The size checks
/// ([`LoadOptions::validate`]) come before anything is loaded.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    /// [`LoadOptions::table_size`] is not prime.
    #[error("table size {0} is not a prime number (Maglev needs a prime; e.g. 16381, 65537)")]
    TableSizeNotPrime(u32),
    /// [`LoadOptions::max_services`] x 2 x [`LoadOptions::table_size`] (the two values)
    /// exceeds 2^32 table entries.
    #[error(
        "{0} services x 2 halves x table size {1} is too large: the tables must fit in 2^32 entries"
    )]
    TableSizeTooLarge(u32, u32),
    /// [`LoadOptions::max_services`] is 0.
    #[error("at least one virtual service slot is needed")]
    NoServices,
    /// [`LoadOptions::max_reals`] (the value) is 0 or above `MAX_REALS_LIMIT`.
    #[error("--max-reals {0} is out of range: 1 to {MAX_REALS_LIMIT} real servers")]
    RealsOutOfRange(u32),
    /// [`LoadOptions::conn_table`] (the value) is not a power of two of at least one
    /// bucket.
    #[error(
        "connection table size {0} is not a power of two of at least {CONN_WAYS} entries (e.g. 65536, 1048576)"
    )]
    ConnTableSize(u32),
    /// [`LoadOptions::persist_table`] is 0.
    #[error("persistence template table size must be at least 1")]
    PersistTableEmpty,
    /// The kernel refused the object or one of its maps, or a pin in
    /// [`LoadOptions::pin_dir`] could not be reused.
    #[error("loading the XDP object failed")]
    Load(#[from] aya::EbpfError),
    /// The kernel refused to load a program (the verifier, most likely).
    #[error("loading program {name} failed")]
    Program {
        /// The program's name in the object.
        name: &'static str,
        /// aya's error, with the verifier's log when it refused.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// The kernel refused to attach a program ([`Datapath::attach`]).
    #[error("attaching program {name} to {} failed", interface_label(*ifindex))]
    Attach {
        /// The program's name in the object.
        name: &'static str,
        /// The interface's index.
        ifindex: u32,
        /// aya's error, with the kernel's errno.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// Turning on the interface's `accept_local` failed ([`accept_local_replies`]); the
    /// message names the interface or file.
    #[error("setting {0}")]
    Sysctl(String),
    /// Filling the balancer's tail-call table (`DIR_JUMP`) failed.
    #[error("filling the balancer's jump table failed")]
    Jump(#[source] aya::maps::MapError),
    /// The balancer cannot run on this architecture (the value): it does not keep memory
    /// accesses in order ([`keeps_store_order`]).
    #[error(
        "the director's connection table needs a CPU that keeps memory accesses in order (x86-64); this is {0}, where its lock-free readers could see another flow's entry (docs/datapath.md, \"Memory ordering\")"
    )]
    WeakOrdering(&'static str),
    /// [`Datapath::allow_decap`] was given no director address.
    #[error(
        "decapsulation accepts IPIP only from the directors' addresses: name at least one (--from ADDR[,ADDR...])"
    )]
    DecapNoDirectors,
    /// The decapsulation addresses, those allowed before and the new ones (the value),
    /// would exceed `DECAP_MAX_ADDRS`; nothing was written.
    #[error("too many decapsulation addresses: {0} (at most {max})", max = maps::DECAP_MAX_ADDRS)]
    DecapTooManyAddrs(usize),
    /// Reading or writing the decapsulation address map (or GUE port) failed.
    #[error("writing the decapsulation addresses failed")]
    DecapAddrs(#[source] aya::maps::MapError),
    /// Taking the maps into the control library, or initialising its settings, failed.
    #[error(transparent)]
    Control(#[from] crate::control::ControlError),
}

/// An interface by name (with its index), for messages.
fn interface_label(ifindex: u32) -> String {
    match nix::net::if_::if_indextoname(ifindex) {
        Ok(name) => format!("{} (index {ifindex})", name.to_string_lossy()),
        Err(_) => format!("the interface of index {ifindex}"),
    }
}

/// Sizes fixed when the maps are created.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Connection table entries.
    pub conn_table: u32,
    /// Persistence template entries.
    pub persist_table: u32,
    /// Entries of each service's Maglev table (prime).
    pub table_size: u32,
    /// Virtual service slots (sizes the service map, per-service arrays and tables).
    pub max_services: u32,
    /// Real servers over all services (sizes the per-real arrays: one more slot, as
    /// slot 0 is never a real).
    pub max_reals: u32,
    /// Pin (or reuse the pins of) every map under this bpffs directory.
    pub pin_dir: Option<PathBuf>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            conn_table: maps::DEFAULT_CONN_TABLE,
            persist_table: maps::DEFAULT_PERSIST_TABLE,
            table_size: maps::DEFAULT_TABLE_SIZE,
            max_services: MAX_SERVICES,
            max_reals: maps::DEFAULT_MAX_REALS,
            pin_dir: None,
        }
    }
}

impl LoadOptions {
    /// Check the sizes against what the data path can use; the `load` functions do it
    /// first, so a bad size is refused before anything is loaded.
    pub fn validate(&self) -> Result<(), DatapathError> {
        if !is_prime(self.table_size) {
            return Err(DatapathError::TableSizeNotPrime(self.table_size));
        }
        if self.max_services == 0 {
            return Err(DatapathError::NoServices);
        }
        if (self.max_services as u64) * 2 * self.table_size as u64 > u32::MAX as u64 {
            return Err(DatapathError::TableSizeTooLarge(
                self.max_services,
                self.table_size,
            ));
        }
        if self.max_reals == 0 || self.max_reals > MAX_REALS_LIMIT {
            return Err(DatapathError::RealsOutOfRange(self.max_reals));
        }
        if !self.conn_table.is_power_of_two() || self.conn_table < CONN_WAYS as u32 {
            return Err(DatapathError::ConnTableSize(self.conn_table));
        }
        if self.persist_table == 0 {
            return Err(DatapathError::PersistTableEmpty);
        }
        Ok(())
    }

    /// Buckets of the connection table (a power of two, as `conn_table` is).
    pub fn conn_buckets(&self) -> u32 {
        self.conn_table / CONN_WAYS as u32
    }

    /// Values of the lookup-table map: `max_services` x 2 halves x `table_size` real
    /// ids, [`TABLE_ROW`] per value.
    pub fn table_rows(&self) -> u32 {
        (self.max_services as u64 * 2 * self.table_size as u64).div_ceil(TABLE_ROW as u64) as u32
    }
}

/// The loaded object: programs ready to attach or test-run, maps created (or reused
/// from their pins).
pub struct Datapath {
    /// The programs (the maps have moved into `control`).
    pub ebpf: Ebpf,
    /// The control library over this object's maps: the only way to change them.
    pub control: Control,
    /// The balancer's jump table, held open: the kernel empties a program array when
    /// its last file descriptor (or pin) goes, and the balancer's tail calls would then
    /// fail.
    _jump: Option<ProgramArray<MapData>>,
}

impl Datapath {
    /// Load the object and all its programs.
    pub fn load(opts: &LoadOptions) -> Result<Self, DatapathError> {
        Self::load_programs(opts, &[PROG_DIRECTOR, PROG_DECAP, PROG_PASS, PROG_FLOOR])
    }

    /// Load the object with minimal map sizes and only the helper programs (decap, pass,
    /// floor): what a real server or a lab peer needs.
    pub fn load_helpers() -> Result<Self, DatapathError> {
        let opts = LoadOptions {
            conn_table: CONN_WAYS as u32,
            persist_table: 1,
            table_size: 2,
            max_services: 1,
            max_reals: 1,
            pin_dir: None,
        };
        Self::load_programs(&opts, &[PROG_DECAP, PROG_PASS, PROG_FLOOR])
    }

    /// Load the object and the named programs.
    pub fn load_programs(
        opts: &LoadOptions,
        programs: &[&'static str],
    ) -> Result<Self, DatapathError> {
        opts.validate()?;
        let reals = opts.max_reals + 1;
        let conn_bucket_mask = opts.conn_buckets() - 1;
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(maps::CONNS, opts.conn_buckets())
            .map_max_entries(maps::CONNS6, opts.conn_buckets())
            .map_max_entries(maps::PERSIST, opts.persist_table)
            .map_max_entries(maps::TABLES, opts.table_rows())
            .map_max_entries(maps::REALS, reals)
            .map_max_entries(maps::HOPS, reals)
            .map_max_entries(maps::HOPS6, reals)
            .map_max_entries(maps::REAL_STATS, reals)
            .map_max_entries(maps::SERVICES, opts.max_services)
            .map_max_entries(maps::RR_CURSORS, opts.max_services)
            .map_max_entries(maps::SERVICE_STATS, opts.max_services)
            .override_global("TABLE_SIZE", &opts.table_size, true)
            .override_global("CONN_BUCKET_MASK", &conn_bucket_mask, true);
        let pins: Vec<(&str, PathBuf)> = match &opts.pin_dir {
            Some(dir) => ALL_MAPS.iter().map(|m| (*m, dir.join(m))).collect(),
            None => Vec::new(),
        };
        for (name, path) in &pins {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(OBJECT)?;
        for &name in programs {
            let prog: &mut Xdp = ebpf
                .program_mut(name)
                .and_then(|p| p.try_into().ok())
                .expect("the object has all its XDP programs");
            load_retrying(prog).map_err(|source| DatapathError::Program { name, source })?;
        }
        let jump = if programs.contains(&PROG_DIRECTOR) {
            Some(load_jumps(&mut ebpf)?)
        } else {
            None
        };
        let control = Control::from_ebpf(&mut ebpf)?;
        Ok(Self {
            ebpf,
            control,
            _jump: jump,
        })
    }

    /// Attach a loaded program to an interface of the current network namespace. The
    /// attachment lasts as long as this object ([`crate::state::attach`] pins them).
    /// The balancer also turns on the interface's `accept_local` (see
    /// [`accept_local_replies`]).
    pub fn attach(
        &mut self,
        name: &'static str,
        ifindex: u32,
        mode: XdpMode,
    ) -> Result<XdpLinkId, DatapathError> {
        if name == PROG_DIRECTOR && !keeps_store_order(std::env::consts::ARCH) {
            return Err(DatapathError::WeakOrdering(std::env::consts::ARCH));
        }
        let id = self
            .program_mut(name)
            .attach_to_if_index(ifindex, mode)
            .map_err(|source| DatapathError::Attach {
                name,
                ifindex,
                source,
            })?;
        if name == PROG_DIRECTOR {
            accept_local_replies(ifindex)?;
        }
        Ok(id)
    }

    /// What the decap program unwraps: tunnels from one of `directors` to one of `local`
    /// (this host's addresses; in a lab whose reals share one loaded object, every
    /// real's), each address IPv4 or IPv6. Adds to what was allowed before; nothing is
    /// written unless all fits.
    pub fn allow_decap<A: Into<IpAddr> + Copy>(
        &mut self,
        directors: &[A],
        local: &[A],
    ) -> Result<(), DatapathError> {
        if directors.is_empty() {
            return Err(DatapathError::DecapNoDirectors);
        }
        let mut v4: BTreeMap<u32, u32> = BTreeMap::new();
        let mut v6: BTreeMap<[u8; 16], u32> = BTreeMap::new();
        for (addrs, flag) in [
            (directors, maps::DECAP_F_FROM),
            (local, maps::DECAP_F_LOCAL),
        ] {
            for &a in addrs {
                match a.into() {
                    IpAddr::V4(a) => *v4.entry(u32::from_ne_bytes(a.octets())).or_default() |= flag,
                    IpAddr::V6(a) => *v6.entry(a.octets()).or_default() |= flag,
                }
            }
        }
        // Both maps are checked for room before either is written.
        let full = |n: usize| n > maps::DECAP_MAX_ADDRS as usize;
        let n4 = merge_flags(&self.decap_map::<u32>(maps::DECAP_ADDRS)?, &mut v4);
        let n6 = merge_flags(&self.decap_map::<[u8; 16]>(maps::DECAP_ADDRS6)?, &mut v6);
        if full(n4) || full(n6) {
            return Err(DatapathError::DecapTooManyAddrs(n4.max(n6)));
        }
        let mut m4 = self.decap_map::<u32>(maps::DECAP_ADDRS)?;
        for (addr, f) in v4 {
            m4.insert(addr, f, 0).map_err(DatapathError::DecapAddrs)?;
        }
        let mut m6 = self.decap_map::<[u8; 16]>(maps::DECAP_ADDRS6)?;
        for (addr, f) in v6 {
            m6.insert(addr, f, 0).map_err(DatapathError::DecapAddrs)?;
        }
        Ok(())
    }

    /// One of the decap program's address maps (`DECAP_ADDRS*`).
    fn decap_map<K: aya::Pod>(
        &mut self,
        name: &str,
    ) -> Result<aya::maps::HashMap<&mut MapData, K, u32>, DatapathError> {
        let map = self
            .ebpf
            .map_mut(name)
            .expect("the object has the decap address maps");
        aya::maps::HashMap::try_from(map).map_err(DatapathError::DecapAddrs)
    }

    /// The UDP port on which the decap program unwraps GUE (the port the directors'
    /// `--tun-port` names); `None` unwraps no GUE (the default).
    pub fn decap_gue_port(&mut self, port: Option<u16>) -> Result<(), DatapathError> {
        let map = self
            .ebpf
            .map_mut(maps::DECAP_GUE_PORT)
            .expect("the object has the decap GUE port map");
        let mut map: aya::maps::Array<_, u32> =
            aya::maps::Array::try_from(map).map_err(DatapathError::DecapAddrs)?;
        map.set(0, port.map_or(0, |p| p.to_be() as u32), 0)
            .map_err(DatapathError::DecapAddrs)
    }

    /// The program `name` of the object (a `PROG_*` name or one of [`BALANCER_JUMPS`]).
    /// Panics when the object has no XDP program of that name.
    pub fn program(&self, name: &str) -> &Xdp {
        self.ebpf
            .program(name)
            .and_then(|p| p.try_into().ok())
            .expect("known program name")
    }

    /// The program `name`, to attach or detach with aya; panics as
    /// [`Datapath::program`] does.
    pub fn program_mut(&mut self, name: &str) -> &mut Xdp {
        self.ebpf
            .program_mut(name)
            .and_then(|p| p.try_into().ok())
            .expect("known program name")
    }
}

/// Whether the connection table's lock-free readers are correct on `arch`: they rely on
/// the CPU keeping a writer's stores, and a reader's loads, in program order (the JIT
/// emits plain loads and stores, and BPF has no fence instruction the program could
/// use short of load-acquire/store-release, which needs kernel 6.15 and `-mcpu=v4`).
/// x86-64 keeps them in order (TSO); arm64, POWER and RISC-V do not
/// (docs/datapath.md, "Memory ordering").
pub fn keeps_store_order(arch: &str) -> bool {
    matches!(arch, "x86_64" | "x86")
}

/// Set `net.ipv4.conf.<interface>.accept_local` to 1. A NAT reply whose client has no
/// neighbour entry yet is translated (its source is now a VIP, one of this host's
/// addresses) and passed to the kernel, which forwards it and resolves the client on
/// the way; without accept_local the kernel drops a packet arriving with one of its
/// own addresses as source, and the connection hangs. (Strict reverse-path filtering,
/// rp_filter=1, on the interface drops it too.)
pub fn accept_local_replies(ifindex: u32) -> Result<(), DatapathError> {
    let name = nix::net::if_::if_indextoname(ifindex)
        .map_err(|e| DatapathError::Sysctl(format!("interface {ifindex}: {e}")))?;
    let name = name.to_string_lossy();
    let path = format!("/proc/sys/net/ipv4/conf/{name}/accept_local");
    std::fs::write(&path, "1").map_err(|e| DatapathError::Sysctl(format!("{path}: {e}")))
}

/// Load the balancer's tail-call programs and put them in their `DIR_JUMP` slots (a
/// pinned map reused by an upgrade gets the new build's programs).
fn load_jumps(ebpf: &mut Ebpf) -> Result<ProgramArray<MapData>, DatapathError> {
    for (name, _) in BALANCER_JUMPS {
        let prog: &mut Xdp = ebpf
            .program_mut(name)
            .and_then(|p| p.try_into().ok())
            .expect("the object has the balancer's tail calls");
        load_retrying(prog).map_err(|source| DatapathError::Program { name, source })?;
    }
    let mut jump: ProgramArray<MapData> = ebpf
        .take_map(maps::JUMP)
        .expect("the object has the jump table")
        .try_into()
        .map_err(DatapathError::Jump)?;
    for (name, slot) in BALANCER_JUMPS {
        let prog: &Xdp = ebpf
            .program(name)
            .and_then(|p| p.try_into().ok())
            .expect("loaded above");
        let fd = prog
            .fd()
            .map_err(|source| DatapathError::Program { name, source })?;
        jump.set(slot, fd, 0).map_err(DatapathError::Jump)?;
    }
    Ok(jump)
}

/// Load a program with every signal blocked in this thread, and again when the kernel
/// still says EAGAIN. BPF_PROG_LOAD gives up with EAGAIN when a signal is pending for
/// the loading thread while the verifier runs, and verifying the balancer's larger
/// programs takes long enough on a busy machine for, say, a SIGCHLD of another thread's
/// child to land in it every time. Blocked here, a process-wide signal goes to another
/// thread or waits until the load is done (libbpf retries the same way, without the
/// mask).
fn load_retrying(prog: &mut Xdp) -> Result<(), aya::programs::ProgramError> {
    use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};
    const TRIES: u32 = 5;
    let mut old = SigSet::empty();
    let blocked = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&SigSet::all()), Some(&mut old));
    let result = load_retrying_unmasked(prog, TRIES);
    if blocked.is_ok() {
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    }
    result
}

fn load_retrying_unmasked(
    prog: &mut Xdp,
    tries_max: u32,
) -> Result<(), aya::programs::ProgramError> {
    let mut tries = 1;
    loop {
        match prog.load() {
            Err(aya::programs::ProgramError::LoadError { io_error, .. })
                if io_error.raw_os_error() == Some(libc::EAGAIN) && tries < tries_max =>
            {
                tries += 1;
            }
            other => return other,
        }
    }
}

/// Whether `dir` holds pinned maps of this layout.
pub fn pins_exist(dir: &Path) -> bool {
    dir.join(maps::SERVICES).exists()
}

/// Add to `flags` (new flags by address) the flags `map` holds for the same addresses;
/// the number of addresses the map holds once `flags` is written.
fn merge_flags<K: aya::Pod + Ord>(
    map: &aya::maps::HashMap<&mut MapData, K, u32>,
    flags: &mut BTreeMap<K, u32>,
) -> usize {
    let mut new = 0;
    for (addr, f) in flags.iter_mut() {
        match map.get(addr, 0) {
            Ok(old) => *f |= old,
            Err(_) => new += 1,
        }
    }
    map.keys().filter(|k| k.is_ok()).count() + new
}

#[cfg(test)]
mod tests {
    use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget};

    use super::{DatapathError, LoadOptions, OBJECT, keeps_store_order, maps};

    #[test]
    fn the_balancer_attaches_only_where_memory_accesses_stay_in_order() {
        assert!(keeps_store_order("x86_64"));
        for weak in ["aarch64", "arm", "powerpc64", "riscv64", "loongarch64"] {
            assert!(!keeps_store_order(weak), "{weak}");
        }
    }

    #[test]
    fn the_connection_table_size_is_a_power_of_two_of_whole_buckets() {
        for bad in [0, 1, 2, 1000, 5000, (1 << 20) + 4] {
            let opts = LoadOptions {
                conn_table: bad,
                ..LoadOptions::default()
            };
            let err = opts.validate().expect_err("not a table size");
            assert!(matches!(err, DatapathError::ConnTableSize(n) if n == bad));
            assert!(err.to_string().contains("is not a power of two"), "{err}");
        }
        for good in [4, 4096, 1 << 20] {
            let opts = LoadOptions {
                conn_table: good,
                ..LoadOptions::default()
            };
            opts.validate().expect("a table size");
            assert_eq!(opts.conn_buckets() * 4, good);
        }
    }

    /// The XDP programs call none of the memory builtins. bpf-linker has LLVM expand
    /// memcpy in order (`--bpf-expand-memcpy-in-order`), and with that every zero fill
    /// the optimiser forms (a zeroed struct, the padding of a key, twelve zero bytes of
    /// an address) becomes a call to compiler-builtins' byte-at-a-time `memset`: 30 ns
    /// per packet was measured when there were 22 of them (docs/performance.md).
    #[test]
    fn the_data_path_calls_no_memory_builtins() {
        let obj = object::File::parse(OBJECT).expect("the XDP object is ELF");
        let mut calls = Vec::new();
        let mut map_references = 0;
        for section in obj.sections() {
            for (offset, rel) in section.relocations() {
                let RelocationTarget::Symbol(i) = rel.target() else {
                    continue;
                };
                let name = obj
                    .symbol_by_index(i)
                    .and_then(|s| s.name())
                    .unwrap_or_default();
                if name == maps::CONNS {
                    map_references += 1;
                }
                if ["memset", "memcpy", "memmove", "memcmp", "bcmp"].contains(&name) {
                    let sec = section.name().unwrap_or_default();
                    calls.push(format!("{sec}+{offset:#x}: {name}"));
                }
            }
        }
        // The relocations were read at all: the program refers to its connection table.
        assert!(map_references > 0, "no relocation names {}", maps::CONNS);
        assert!(
            calls.is_empty(),
            "calls to memory builtins in the data path (build the value with word stores \
             instead, see docs/performance.md): {calls:?}"
        );
    }
}
