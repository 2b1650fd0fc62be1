//! The control library: the only code that writes the data path's maps.
//!
//! Every operation validates first, then computes, then applies in an order that never
//! lets the data path see a half-made service: a real's slot is written before any
//! table points at it; a new table is written into the inactive half and made active by
//! one atomic update of the service entry; a removed real leaves the tables before its
//! slot is cleared. The maps are the single source of truth (as IPVS's kernel tables are
//! for ipvsadm); listings read them.
//!
//! Writes go through an in-memory index (`index::Index`) of the maps (services by key, the
//! reals of each service, free service and real slots), read once and then kept up to
//! date, so that an operation makes only the map writes it needs. Every write bumps a
//! generation kept in slot 0 of the reals array (never a real; the array is memory
//! mapped, so reading and bumping it costs no syscall): a `Control` whose index is of
//! another generation reads the maps again before its next operation, so several
//! processes (the CLI, the daemon) can take turns under the writers' lock.
//!
//! Reused real slots. A connection entry names its real by slot, and the data path
//! trusts a live entry whose slot holds a present real of the entry's service slot. A
//! removed real's slot may still be named by entries (its flows, until they expire or
//! their next packet reschedules them, and an entry a CPU inserts while the real is
//! being removed); if the slot went to a new real of the same service slot (perhaps a
//! new service), those flows would be sent to it. The slot of a removed real is
//! therefore *retired* (`REAL_F_RETIRED`, which the data path ignores), never handed out
//! directly: new reals take *clean* slots (never used, or swept). Only when no clean
//! slot is left does an `add_real` sweep: one walk of the connection table removes the
//! entries of every retired slot, and those slots become clean. With the default
//! 16,384 slots, a sweep happens at most once per thousands of removals, instead of a
//! walk of the whole connection table for every added (and every removed) real.
//!
//! Deferred tables ([`Control::defer_tables`], for `ipvsadm -R`): consecutive changes
//! to the reals of one service write its table once, when the batch moves on to
//! another service or anything else, or [`Control::flush`] is called (before waiting
//! for input, and at the end of the batch). The real slots are written at once, so a
//! writer killed in between leaves a table that [`Control::repair_interrupted`] completes.

mod client_hops;
mod connections;
mod conntable;
mod index;
pub use client_hops::{ClientHop, ClientHops};
mod ingress;
pub use ingress::MAX_VLAN_ID;
mod maps;
mod mmap;
mod vipfilter;

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
};

use aya::{
    Ebpf,
    maps::{MapData, MapError, PerCpuArray, PerCpuValues},
};
pub use connections::{
    ConnCounts, ConnState, ConnectionCensus, ConnectionEntry, Direction, PersistenceTemplate,
};
use conntable::{ConnTable, EntryMeta};
use director_common::{
    config::{SETTINGS_F_DEBUG, Settings},
    real::{HopCache, Method, REAL_F_PRESENT, REAL_F_RETIRED, Real, TunType},
    service::{
        SVC_F_HASH_PORT, SVC_F_HASH_SRC_ONLY, SVC_F_PERSISTENT, Scheduler, Service, ServiceKey,
    },
    stats::{Counters, Stat},
    vipfilter::Role,
};
use index::{Index, RealSlot};
pub(crate) use maps::Maps;
use mmap::ArrayMapping;

use crate::{
    model::{
        Persistence, Protocol, RealSpec, ServiceAddr, ServiceSpec, TunCsum, Tunnel, addr_from_16,
        addr_to_16,
    },
    tables::{self, Backend},
};

/// Why a [`Control`] operation failed. A refusal (a bad argument, a name that does not
/// exist or exists already, a full map) comes before any write: nothing changed. A
/// [`ControlError::Map`] error, and a [`ControlError::Invalid`] one that reports a failed
/// system call, may come after some of an operation's writes (see
/// [`Control::repair_interrupted`]).
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// [`Control::set_vlans`] was given VLAN id 0 or one above [`MAX_VLAN_ID`]; no VLAN
    /// setting changed.
    #[error("VLAN id {0} is out of range: 1 to 4094")]
    BadVlan(u16),
    /// [`Control::add_service`]: a service of this protocol, address and port exists.
    #[error("Service already exists")]
    ServiceExists,
    /// The maps hold no service of this protocol, address and port.
    #[error("No such service")]
    NoSuchService,
    /// [`Control::add_real`]: the service has a real of this address and port (compared
    /// as stored, see [`RealSpec::stored_under`]).
    #[error("Destination already exists")]
    RealExists,
    /// The service has no real of this address and port.
    #[error("No such destination")]
    NoSuchReal,
    /// Every service slot is taken; the value is the number of slots, fixed when the data
    /// path was attached.
    #[error(
        "no free service slot: at most {0} virtual services (attach with a larger --max-services)"
    )]
    ServicesFull(u32),
    /// Every real slot is taken, also after sweeping the slots of removed reals; the value
    /// is the number of slots over all services, fixed when the data path was attached.
    #[error(
        "no free real slot: at most {0} real servers in all (attach with a larger --max-reals)"
    )]
    RealsFull(u32),
    /// Input the data path cannot take (a DR or NAT real of the other address family
    /// than its service's, a DR or TUN real on another port than the service's, a persistence timeout
    /// of 0), refused before anything is written; the message says which.
    #[error("{0}")]
    Invalid(String),
    /// A system call outside the maps failed (drawing the seed, counting CPUs, mapping
    /// an array, building per-CPU values): unlike a refusal, it can come in the middle
    /// of an operation, after some of its writes.
    #[error("{0}")]
    System(String),
    /// A Maglev service would have more reals than its table serves well.
    #[error(
        "a Maglev table of {table_size} entries serves at most {} reals per service (100 entries per real keep the imbalance near 1%); for {requested} reals attach with --maglev-size {} or larger",
        tables::max_reals(*table_size),
        tables::size_for(*requested)
    )]
    TableTooSmall {
        /// Entries of each service's table in the attached data path.
        table_size: u32,
        /// The reals the service was asked to have.
        requested: u32,
    },
    /// The loaded object lacks a map this library needs: the object and the library come
    /// from different builds.
    #[error("map {0} is missing from the object")]
    MissingMap(&'static str),
    /// A bpf(2) operation on one of the data path's maps failed: a pin missing or of
    /// another layout, or a lookup or update the kernel refused. During a write, the
    /// operation's earlier writes stay.
    #[error("map {name}")]
    Map {
        /// The map's name (`DIR_*`).
        name: &'static str,
        /// aya's error, with the kernel's errno.
        #[source]
        source: MapError,
    },
}

fn map_err(name: &'static str) -> impl FnOnce(MapError) -> ControlError {
    move |source| ControlError::Map { name, source }
}

/// Zeroes every CPU's copy of `slot` in a per-CPU cache (an all-zero entry is an empty
/// one).
fn zero_slot<T: aya::Pod + Default>(
    map: &mut PerCpuArray<MapData, T>,
    name: &'static str,
    cpus: usize,
    slot: u32,
) -> Result<(), ControlError> {
    let zeros = PerCpuValues::try_from(vec![T::default(); cpus])
        .map_err(|e| ControlError::System(format!("per-CPU values: {e}")))?;
    map.set(slot, zeros, 0).map_err(map_err(name))
}

/// A service as read back from the maps.
#[derive(Clone, Debug)]
pub struct ServiceView {
    /// The service's identity and settings as the maps hold them.
    pub spec: ServiceSpec,
    /// Slot in the per-service arrays.
    pub id: u32,
    /// Traffic counters summed over CPUs, since the slot was taken or last zeroed
    /// ([`Control::zero`]).
    pub stats: Counters,
    /// Its reals, sorted by address and port (removed reals are not listed).
    pub reals: Vec<RealView>,
}

/// A real server of a service, as read back from the maps.
#[derive(Clone, Debug)]
pub struct RealView {
    /// The real's slot (1 to [`Control::real_capacity`]): what tables, connection entries
    /// and persistence templates name. A real removed and added again gets another slot.
    pub id: u32,
    /// Address, port, method and weight as stored: a DR or TUN real carries the virtual
    /// port ([`RealSpec::stored_under`]).
    pub spec: RealSpec,
    /// Traffic counters summed over CPUs, since the real was added or last zeroed.
    pub stats: Counters,
}

/// Timeouts in seconds (ipvsadm --set); 0 leaves a value unchanged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timeouts {
    /// Idle time after which an established TCP connection's entry expires.
    pub tcp: u32,
    /// Idle time after which a closing TCP connection's entry (a FIN seen) expires.
    pub tcp_fin: u32,
    /// Idle time after which a UDP flow's entry expires.
    pub udp: u32,
}

fn sum(values: &PerCpuValues<Counters>) -> Counters {
    values.iter().fold(Counters::default(), |a, c| Counters {
        conns: a.conns + c.conns,
        pkts_in: a.pkts_in + c.pkts_in,
        bytes_in: a.bytes_in + c.bytes_in,
        pkts_out: a.pkts_out + c.pkts_out,
        bytes_out: a.bytes_out + c.bytes_out,
    })
}

fn netmask_bytes(mask: IpAddr) -> [u8; 16] {
    match mask {
        IpAddr::V4(m) => director_common::addr::v4_to_16(m.octets()),
        IpAddr::V6(m) => m.octets(),
    }
}

/// The data path's maps, open for reading and writing: every listing and every change
/// goes through it. Reading needs nothing more; writing needs the writers' lock, which
/// [`crate::state::StateOptions::begin_write`] takes (its [`crate::state::WriteSession`]
/// derefs to a `Control`). Dropping it writes a deferred table and ignores any error in
/// doing so: call [`Control::flush`] first to see it.
pub struct Control {
    maps: Maps,
    table_size: u32,
    /// Windows on DIR_TABLES (a flat array of real ids), one per service slot written or
    /// read (both halves), mapped on first use: mapping the whole array would cost
    /// every command a page-table entry per 4 KiB of every service's tables.
    tables: HashMap<u32, ArrayMapping>,
    /// DIR_REALS, one element per slot; slot 0 holds the write generation.
    reals: ArrayMapping,
    /// DIR_VIP_FILTER, one element per word; None when the maps were pinned by a build
    /// without it (whose program does not read it).
    vip_filter: Option<ArrayMapping>,
    cpus: usize,
    /// The maps as of `index.generation`; None until the first write needs it, and after
    /// a write that failed midway.
    index: Option<Index>,
    /// Table rebuilds of real changes wait for a flush (see the module docs).
    deferred: bool,
    /// The service whose table is behind its reals (deferred mode only).
    dirty: Option<ServiceKey>,
}

impl Drop for Control {
    fn drop(&mut self) {
        // Callers flush and report errors themselves; this is the last resort.
        let _ = self.flush();
    }
}

impl Control {
    /// Take the maps of a freshly loaded object (what [`crate::Datapath::load`] does).
    /// Maps this load created get their initial settings (default timeouts, a new seed of
    /// the connection table's hash); maps reused from pins keep theirs.
    pub fn from_ebpf(ebpf: &mut Ebpf) -> Result<Self, ControlError> {
        let mut c = Self::new(Maps::from_ebpf(ebpf)?)?;
        // Only the loader, which creates the maps (under the writers' lock when
        // attaching), fills in fresh settings: a reader opening the pins at that moment
        // must not draw a second seed.
        c.init_settings()?;
        // A filter map this load created is empty, and one reused from its pins may be
        // older than the services (a build without the filter wrote them).
        c.filter_sync()?;
        Ok(c)
    }

    /// Open the maps pinned in `dir` (a [`crate::state::StateOptions::maps_dir`]),
    /// changing nothing and taking no lock. A pin missing or of another layout gives
    /// [`ControlError::Map`]; [`crate::state::StateOptions::open_control`] finds the
    /// directory and says when nothing is attached.
    pub fn from_pins(dir: &std::path::Path) -> Result<Self, ControlError> {
        Self::new(Maps::from_pins(dir)?)
    }

    fn new(maps: Maps) -> Result<Self, ControlError> {
        let table_size = ArrayMapping::elements(&maps.tables, director_common::maps::TABLES, 4)?
            / (maps.service_capacity.max(1) * 2);
        let reals =
            ArrayMapping::new(&maps.reals, director_common::maps::REALS, size_of::<Real>())?;
        let vip_filter = match &maps.vip_filter {
            Some(m) => Some(ArrayMapping::new(
                m,
                director_common::maps::VIP_FILTER,
                size_of::<u64>(),
            )?),
            None => None,
        };
        Ok(Self {
            maps,
            table_size,
            tables: HashMap::new(),
            reals,
            vip_filter,
            cpus: nr_cpus()?,
            index: None,
            deferred: false,
            dirty: None,
        })
    }

    /// A fresh settings entry is all zero; zero timeouts would expire every flow, and
    /// the connection table's seed is drawn once, with the maps (the program looks
    /// entries up under it; maps reused from their pins keep theirs).
    fn init_settings(&mut self) -> Result<(), ControlError> {
        let s = self.settings()?;
        if s.tcp_timeout_s == 0 && s.udp_timeout_s == 0 {
            self.write_settings(&Settings {
                flags: s.flags,
                conn_seed: random_seed()?,
                ..Settings::default()
            })?;
        }
        Ok(())
    }

    /// Entries of each service's lookup table (a prime: the Maglev size), fixed when the
    /// maps were created.
    pub fn table_size(&self) -> u32 {
        self.table_size
    }

    /// Virtual service slots of the attached data path.
    pub fn service_capacity(&self) -> u32 {
        self.maps.service_capacity
    }

    /// Real servers the attached data path holds, over all services (slot 0 is never a
    /// real).
    pub fn real_capacity(&self) -> u32 {
        self.reals.len().saturating_sub(1)
    }

    /// Entries the connection table holds (buckets x ways), fixed when the maps were
    /// created; the IPv6 flows' table holds as many.
    pub fn conn_table_size(&self) -> u32 {
        self.maps.conn_capacity
    }

    /// Capacity of the persistence template table.
    pub fn persist_table_size(&self) -> u32 {
        self.maps.persist_capacity
    }

    // ---- the index and the write generation ----

    fn generation(&self) -> Result<u64, ControlError> {
        self.reals.read::<u64>(0)
    }

    /// The index, read again from the maps first if another writer has changed them.
    fn fresh_index(&mut self) -> Result<&mut Index, ControlError> {
        let generation = self.generation()?;
        if self
            .index
            .as_ref()
            .is_none_or(|ix| ix.generation != generation)
        {
            let services = self.services_raw()?;
            let reals = self.real_slots()?;
            self.index = Some(Index::new(
                generation,
                self.maps.service_capacity,
                services,
                reals,
            ));
        }
        Ok(self.index.as_mut().expect("read above"))
    }

    /// The index while a write is under way: `applying` read it fresh, and only this
    /// process writes until it returns.
    fn index_in_write(&mut self) -> &mut Index {
        self.index
            .as_mut()
            .expect("an up-to-date index during a write")
    }

    /// Apply the writes of one operation: bump the generation first (any other
    /// process's index is stale from now on, even if this one dies midway), and forget
    /// the index if a write fails (it may no longer match the maps).
    fn applying<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, ControlError>,
    ) -> Result<T, ControlError> {
        let next = self.fresh_index()?.generation.wrapping_add(1);
        self.reals.write(0, &[next])?;
        self.index_in_write().generation = next;
        let result = f(self);
        if result.is_err() {
            self.index = None;
        }
        result
    }

    // ---- deferred tables ----

    /// Defer the table rebuilds of real changes (`add_real`, `edit_real`) until the
    /// next operation on another service or [`Control::flush`]; turning it off
    /// flushes. Meant for batches (`ipvsadm -R`), whose consecutive lines on one
    /// service then cost one table build instead of one per line.
    pub fn defer_tables(&mut self, on: bool) -> Result<(), ControlError> {
        self.deferred = on;
        if on { Ok(()) } else { self.flush() }
    }

    /// Whether a table waits for [`Control::flush`].
    pub fn has_pending(&self) -> bool {
        self.dirty.is_some()
    }

    /// Write the table that waits, if any.
    pub fn flush(&mut self) -> Result<(), ControlError> {
        let Some(key) = self.dirty else {
            return Ok(());
        };
        match self.fresh_index()?.service(&key) {
            Some(svc) => self.applying(|c| c.rebuild(key, svc).map(drop)),
            // Removed since (by another writer): nothing to write.
            None => {
                self.dirty = None;
                Ok(())
            }
        }
    }

    /// Before an operation: flush a waiting table unless it is `keep`'s.
    fn settle(&mut self, keep: Option<&ServiceKey>) -> Result<(), ControlError> {
        match self.dirty {
            Some(d) if Some(&d) != keep => self.flush(),
            _ => Ok(()),
        }
    }

    /// The reals of a service changed: write its table now, or mark it when deferred.
    fn table_changed(&mut self, key: ServiceKey) -> Result<(), ControlError> {
        if self.deferred {
            self.dirty = Some(key);
            return Ok(());
        }
        let svc = self
            .index_in_write()
            .service(&key)
            .ok_or(ControlError::NoSuchService)?;
        self.rebuild(key, svc).map(drop)
    }

    // ---- settings ----

    fn settings(&self) -> Result<Settings, ControlError> {
        self.maps
            .settings
            .get(&0, 0)
            .map_err(map_err(director_common::maps::SETTINGS))
    }

    fn write_settings(&mut self, s: &Settings) -> Result<(), ControlError> {
        self.maps
            .settings
            .set(0, s, 0)
            .map_err(map_err(director_common::maps::SETTINGS))
    }

    /// The connection timeouts the data path applies, in seconds.
    pub fn timeouts(&self) -> Result<Timeouts, ControlError> {
        let s = self.settings()?;
        Ok(Timeouts {
            tcp: s.tcp_timeout_s,
            tcp_fin: s.tcp_fin_timeout_s,
            udp: s.udp_timeout_s,
        })
    }

    /// Change the connection timeouts; a field of 0 keeps its value. Existing entries
    /// follow at once (the data path compares an entry's idle time with the current
    /// timeout). Settings are not indexed: the write generation is not bumped.
    pub fn set_timeouts(&mut self, t: Timeouts) -> Result<(), ControlError> {
        self.settle(None)?;
        let mut s = self.settings()?;
        if t.tcp != 0 {
            s.tcp_timeout_s = t.tcp;
        }
        if t.tcp_fin != 0 {
            s.tcp_fin_timeout_s = t.tcp_fin;
        }
        if t.udp != 0 {
            s.udp_timeout_s = t.udp;
        }
        self.write_settings(&s)
    }

    /// New flows per second per CPU above which DR and TUN flows are forwarded without
    /// a connection entry (docs/datapath.md, "Floods"); 0: no limit.
    pub fn flood_limit(&self) -> Result<u32, ControlError> {
        Ok(self.settings()?.flood_limit)
    }

    /// Set the flood limit (see [`Control::flood_limit`]); 0 removes it.
    pub fn set_flood_limit(&mut self, limit: u32) -> Result<(), ControlError> {
        self.settle(None)?;
        let mut s = self.settings()?;
        s.flood_limit = limit;
        self.write_settings(&s)
    }

    /// Whether the data path writes a log record per scheduled flow (`director debug`):
    /// for chasing a misconfiguration, off by default.
    pub fn debug(&self) -> Result<bool, ControlError> {
        Ok(self.settings()?.flags & SETTINGS_F_DEBUG != 0)
    }

    /// Turn the data path's per-flow log records on or off (see [`Control::debug`]);
    /// [`crate::state::follow_log`] prints them.
    pub fn set_debug(&mut self, on: bool) -> Result<(), ControlError> {
        self.settle(None)?;
        let mut s = self.settings()?;
        if on {
            s.flags |= SETTINGS_F_DEBUG;
        } else {
            s.flags &= !SETTINGS_F_DEBUG;
        }
        self.write_settings(&s)
    }

    // ---- reading ----

    fn services_raw(&self) -> Result<Vec<(ServiceKey, Service)>, ControlError> {
        self.maps
            .services
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err(director_common::maps::SERVICES))
    }

    fn find_service(&self, addr: &ServiceAddr) -> Result<Service, ControlError> {
        match self.maps.services.get(&addr.key(), 0) {
            Ok(s) => Ok(s),
            Err(MapError::KeyNotFound) => Err(ControlError::NoSuchService),
            Err(e) => Err(ControlError::Map {
                name: director_common::maps::SERVICES,
                source: e,
            }),
        }
    }

    /// Every slot of the reals array (slot 0 included), read through the mapping.
    fn real_slots(&self) -> Result<Vec<(u32, Real)>, ControlError> {
        Ok(self
            .reals
            .read_many::<Real>(0, self.reals.len() as usize)?
            .into_iter()
            .enumerate()
            .map(|(i, r)| (i as u32, r))
            .collect())
    }

    /// Every real slot in use: (id, value).
    fn reals_raw(&self) -> Result<Vec<(u32, Real)>, ControlError> {
        let mut reals = self.real_slots()?;
        reals.retain(|(i, r)| *i != 0 && r.flags & REAL_F_PRESENT != 0);
        Ok(reals)
    }

    fn spec_of(key: &ServiceKey, s: &Service) -> Option<ServiceSpec> {
        Some(ServiceSpec {
            addr: ServiceAddr::from_key(key)?,
            scheduler: Scheduler::from_u8(s.scheduler)?,
            hash_port: s.flags & SVC_F_HASH_PORT != 0,
            hash_source_only: s.flags & SVC_F_HASH_SRC_ONLY != 0,
            persistence: (s.flags & SVC_F_PERSISTENT != 0).then(|| Persistence {
                timeout_s: s.persist_timeout_s,
                netmask: addr_from_16(&s.persist_mask, key.family),
            }),
        })
    }

    fn real_spec(r: &Real) -> RealSpec {
        RealSpec {
            addr: addr_from_16(&r.addr, r.family),
            port: u16::from_be(r.port_be),
            method: Method::from_u8(r.method).unwrap_or(Method::Route),
            weight: r.weight,
            tunnel: Tunnel {
                kind: TunType::from_u8(r.tun_type).unwrap_or(TunType::Ipip),
                port: u16::from_be(r.tun_port_be),
                csum: TunCsum::from_flags(r.tun_flags),
            },
        }
    }

    fn counters(&self, which: &PerCpuArrayRef, id: u32) -> Result<Counters, ControlError> {
        let (map, name) = match which {
            PerCpuArrayRef::Service => (
                &self.maps.service_stats,
                director_common::maps::SERVICE_STATS,
            ),
            PerCpuArrayRef::Real => (&self.maps.real_stats, director_common::maps::REAL_STATS),
        };
        Ok(sum(&map.get(&id, 0).map_err(map_err(name))?))
    }

    fn view(
        &self,
        key: &ServiceKey,
        s: &Service,
        reals: &[(u32, Real)],
    ) -> Result<Option<ServiceView>, ControlError> {
        let Some(spec) = Self::spec_of(key, s) else {
            return Ok(None);
        };
        let mut rs = Vec::new();
        for (id, r) in reals.iter().filter(|(_, r)| r.service == s.id) {
            rs.push(RealView {
                id: *id,
                spec: Self::real_spec(r),
                stats: self.counters(&PerCpuArrayRef::Real, *id)?,
            });
        }
        rs.sort_by_key(|r| (r.spec.addr, r.spec.port));
        Ok(Some(ServiceView {
            spec,
            id: s.id,
            stats: self.counters(&PerCpuArrayRef::Service, s.id)?,
            reals: rs,
        }))
    }

    /// Every service with its reals and counters, sorted as IPVS lists them: IPv4
    /// services first, then by (protocol, address, port). A service of a scheduler this
    /// library does not know (a newer data path) is left out.
    pub fn services(&self) -> Result<Vec<ServiceView>, ControlError> {
        let reals = self.reals_raw()?;
        let mut out = Vec::new();
        for (key, s) in self.services_raw()? {
            out.extend(self.view(&key, &s, &reals)?);
        }
        out.sort_by_key(|v| (v.spec.addr.addr.is_ipv6(), v.spec.addr));
        Ok(out)
    }

    /// One service with its reals and counters; [`ControlError::NoSuchService`] when the
    /// maps hold none at `addr`.
    pub fn service(&self, addr: &ServiceAddr) -> Result<ServiceView, ControlError> {
        let s = self.find_service(addr)?;
        self.view(&addr.key(), &s, &self.reals_raw()?)?
            .ok_or(ControlError::NoSuchService)
    }

    /// Global outcome counters, summed over CPUs.
    pub fn stats(&self) -> Result<Vec<(Stat, u64)>, ControlError> {
        Stat::ALL
            .iter()
            .map(|&s| {
                let v = self
                    .maps
                    .stats
                    .get(&(s as u32), 0)
                    .map_err(map_err(director_common::maps::STATS))?;
                Ok((s, v.iter().sum()))
            })
            .collect()
    }

    // ---- services ----

    fn validate_service(&self, spec: &ServiceSpec) -> Result<(), ControlError> {
        if let Some(p) = spec.persistence {
            if p.netmask.is_ipv6() != spec.addr.addr.is_ipv6() {
                return Err(ControlError::Invalid(
                    "persistence netmask family differs from the service's".into(),
                ));
            }
            if p.timeout_s == 0 {
                return Err(ControlError::Invalid(
                    "persistence timeout must be at least 1 second".into(),
                ));
            }
        }
        Ok(())
    }

    fn service_value(spec: &ServiceSpec, id: u32, prev: Option<&Service>) -> Service {
        let mut flags = 0;
        if spec.persistence.is_some() {
            flags |= SVC_F_PERSISTENT;
        }
        if spec.hash_port {
            flags |= SVC_F_HASH_PORT;
        }
        if spec.hash_source_only {
            flags |= SVC_F_HASH_SRC_ONLY;
        }
        Service {
            id,
            flags,
            scheduler: spec.scheduler as u8,
            active_half: prev.map_or(0, |p| p.active_half),
            _pad0: [0; 2],
            table_len: prev.map_or([0, 0], |p| p.table_len),
            persist_timeout_s: spec.persistence.map_or(0, |p| p.timeout_s),
            persist_mask: spec
                .persistence
                .map_or([0; 16], |p| netmask_bytes(p.netmask)),
        }
    }

    /// Add a service with no reals (its new flows are dropped until it has one), in a
    /// free slot whose counters are zeroed. Refused: [`ControlError::Invalid`] (bad
    /// persistence), [`ControlError::ServiceExists`], [`ControlError::ServicesFull`].
    pub fn add_service(&mut self, spec: &ServiceSpec) -> Result<(), ControlError> {
        self.validate_service(spec)?;
        self.settle(None)?;
        let key = spec.addr.key();
        let capacity = self.maps.service_capacity;
        let ix = self.fresh_index()?;
        if ix.service(&key).is_some() {
            return Err(ControlError::ServiceExists);
        }
        let id = ix
            .free_service()
            .ok_or(ControlError::ServicesFull(capacity))?;
        self.applying(|c| {
            // The slot may have been used before: start from clean counters.
            c.zero_counters(PerCpuArrayRef::Service, id)?;
            let value = Self::service_value(spec, id, None);
            c.filter_add(&key.addr, key.family, Role::Vip)?;
            c.maps
                .services
                .insert(key, value, 0)
                .map_err(map_err(director_common::maps::SERVICES))?;
            c.index_in_write().put_service(key, value);
            Ok(())
        })
    }

    /// Change scheduler, flags or persistence; reals and established flows stay.
    pub fn edit_service(&mut self, spec: &ServiceSpec) -> Result<(), ControlError> {
        self.validate_service(spec)?;
        let key = spec.addr.key();
        // A table of this service that waits is written by the rebuild below.
        self.settle(Some(&key))?;
        let ix = self.fresh_index()?;
        let prev = ix.service(&key).ok_or(ControlError::NoSuchService)?;
        let reals = ix.reals_of(prev.id).len() as u32;
        self.check_table_capacity(spec.scheduler as u8, reals)?;
        let value = Self::service_value(spec, prev.id, Some(&prev));
        self.applying(|c| c.rebuild(key, value).map(drop))
    }

    /// Remove a service: its packets stop matching at once, then its reals' slots are
    /// retired (their flows find no service on their next packet; their entries go at the
    /// next sweep). [`ControlError::NoSuchService`] when there is none.
    pub fn delete_service(&mut self, addr: &ServiceAddr) -> Result<(), ControlError> {
        let key = addr.key();
        self.settle(Some(&key))?;
        self.fresh_index()?
            .service(&key)
            .ok_or(ControlError::NoSuchService)?;
        // Its table need not be written any more.
        self.dirty = None;
        self.applying(|c| {
            // Packets stop matching first; then the reals go. Their flows find no
            // service on their next packet; their entries go when the slots are swept.
            c.maps
                .services
                .remove(&key)
                .map_err(map_err(director_common::maps::SERVICES))?;
            for id in c.index_in_write().remove_service(&key) {
                c.retire_slot(id)?;
            }
            c.filter_sync()
        })
    }

    /// Remove every service (ipvsadm -C), one [`Control::delete_service`] after another in
    /// address order: an error stops it, with the services before it gone.
    pub fn clear(&mut self) -> Result<(), ControlError> {
        self.settle(None)?;
        let mut addrs: Vec<ServiceAddr> = self
            .fresh_index()?
            .services()
            .filter_map(|(k, _)| ServiceAddr::from_key(k))
            .collect();
        addrs.sort();
        for a in addrs {
            self.delete_service(&a)?;
        }
        Ok(())
    }

    // ---- reals ----

    fn validate_real(&self, svc: &ServiceAddr, real: &RealSpec) -> Result<(), ControlError> {
        // Only an encapsulation can carry a packet of one family to a real of the
        // other (4in6, 6in4); DR and NAT keep the client's packet.
        if real.addr.is_ipv6() != svc.addr.is_ipv6() && real.method != Method::Tunnel {
            return Err(ControlError::Invalid(
                "Different address family is allowed only for tunneling servers".into(),
            ));
        }
        if real.method != Method::Masq && real.port != 0 && real.port != svc.port {
            return Err(ControlError::Invalid(
                "direct routing and tunnelling cannot change the port: the real server port must equal the virtual port".into(),
            ));
        }
        if real.method != Method::Tunnel && real.tunnel != Tunnel::default() {
            return Err(ControlError::Invalid(
                "tunnel options conflict with the forwarding method: they need the tunnel method"
                    .into(),
            ));
        }
        if let Some(problem) = real.tunnel.problem() {
            return Err(ControlError::Invalid(problem.into()));
        }
        Ok(())
    }

    /// The real of service slot `svc_id` with this address and port.
    fn find_real(
        &mut self,
        svc_id: u32,
        real: &RealSpec,
    ) -> Result<Option<(u32, Real)>, ControlError> {
        let (addr, family) = addr_to_16(real.addr);
        Ok(self
            .fresh_index()?
            .find_real(svc_id, &addr, family, real.port))
    }

    /// The service of `addr` as the index has it.
    fn indexed_service(&mut self, addr: &ServiceAddr) -> Result<Service, ControlError> {
        self.fresh_index()?
            .service(&addr.key())
            .ok_or(ControlError::NoSuchService)
    }

    fn real_value(svc: &Service, real: &RealSpec, flags: u32) -> Real {
        let (addr, family) = addr_to_16(real.addr);
        Real {
            addr,
            port_be: real.port.to_be(),
            family,
            method: real.method as u8,
            weight: real.weight,
            service: svc.id,
            flags,
            tun_type: real.tunnel.kind as u8,
            tun_flags: real.tunnel.csum.flags(),
            tun_port_be: real.tunnel.port.to_be(),
            _pad: 0,
        }
    }

    /// Add a real to a service and rebuild the service's table (or defer it, see
    /// [`Control::defer_tables`]). It takes a clean slot, sweeping the connection table
    /// first when only retired ones are left. Refused: [`ControlError::Invalid`],
    /// [`ControlError::NoSuchService`], [`ControlError::RealExists`],
    /// [`ControlError::TableTooSmall`] (Maglev and source hash only),
    /// [`ControlError::RealsFull`].
    pub fn add_real(
        &mut self,
        svc_addr: &ServiceAddr,
        real: &RealSpec,
    ) -> Result<(), ControlError> {
        self.validate_real(svc_addr, real)?;
        let real = real.stored_under(svc_addr);
        let key = svc_addr.key();
        self.settle(Some(&key))?;
        let svc = self.indexed_service(svc_addr)?;
        if self.find_real(svc.id, &real)?.is_some() {
            return Err(ControlError::RealExists);
        }
        let reals = self.index_in_write().reals_of(svc.id).len() as u32 + 1;
        self.check_table_capacity(svc.scheduler, reals)?;
        let id = match self.index_in_write().next_real_slot() {
            RealSlot::Clean(id) => id,
            RealSlot::Full => return Err(ControlError::RealsFull(self.real_capacity())),
            RealSlot::NeedsSweep => {
                self.applying(|c| c.sweep())?;
                match self.index_in_write().next_real_slot() {
                    RealSlot::Clean(id) => id,
                    _ => return Err(ControlError::RealsFull(self.real_capacity())),
                }
            }
        };
        self.applying(|c| {
            // A clean slot: no connection entry names it; its counters and cached next
            // hop may be a former real's.
            c.zero_counters(PerCpuArrayRef::Real, id)?;
            c.clear_hop(id)?;
            c.store_real_filtered(id, Self::real_value(&svc, &real, REAL_F_PRESENT))?;
            c.table_changed(key)
        })
    }

    /// Change weight or forwarding method. Flows keep their real (weight 0 drains it).
    pub fn edit_real(
        &mut self,
        svc_addr: &ServiceAddr,
        real: &RealSpec,
    ) -> Result<(), ControlError> {
        self.validate_real(svc_addr, real)?;
        let real = real.stored_under(svc_addr);
        let key = svc_addr.key();
        self.settle(Some(&key))?;
        let svc = self.indexed_service(svc_addr)?;
        let (id, _) = self
            .find_real(svc.id, &real)?
            .ok_or(ControlError::NoSuchReal)?;
        self.applying(|c| {
            c.store_real_filtered(id, Self::real_value(&svc, &real, REAL_F_PRESENT))?;
            // A changed method may need another next hop (IPIP also needs our address).
            c.clear_hop(id)?;
            c.table_changed(key)?;
            // A real that was NAT may no longer be.
            c.filter_sync()
        })
    }

    /// Set a real's weight only (what the health checker does).
    pub fn set_weight(
        &mut self,
        svc_addr: &ServiceAddr,
        addr: IpAddr,
        port: u16,
        weight: u32,
    ) -> Result<(), ControlError> {
        self.settle(Some(&svc_addr.key()))?;
        let svc = self.indexed_service(svc_addr)?;
        let probe = RealSpec::new(addr, port, Method::Masq, 0).stored_under(svc_addr);
        let found = match self.find_real(svc.id, &probe)? {
            Some(r) => Some(r),
            None => self.find_real(
                svc.id,
                &RealSpec::new(addr, svc_addr.port, Method::Route, 0),
            )?,
        };
        let (_, r) = found.ok_or(ControlError::NoSuchReal)?;
        let mut spec = Self::real_spec(&r);
        spec.weight = weight;
        self.edit_real(svc_addr, &spec)
    }

    /// Remove a real. Its flows are rescheduled to the remaining reals on their next
    /// packet (see docs/datapath.md); its slot is retired (see the module docs).
    pub fn delete_real(
        &mut self,
        svc_addr: &ServiceAddr,
        addr: IpAddr,
        port: u16,
    ) -> Result<(), ControlError> {
        let key = svc_addr.key();
        // A table of this service that waits is written below, without the real.
        self.settle(Some(&key))?;
        let svc = self.indexed_service(svc_addr)?;
        let probe = RealSpec::new(
            addr,
            if port == 0 { svc_addr.port } else { port },
            Method::Masq,
            0,
        );
        let (id, _) = self
            .find_real(svc.id, &probe)?
            .ok_or(ControlError::NoSuchReal)?;
        self.applying(|c| {
            // Leave the table first, then free the slot.
            let reals: Vec<(u32, Real)> = c
                .index_in_write()
                .reals_of(svc.id)
                .iter()
                .filter(|(i, _)| *i != id)
                .copied()
                .collect();
            c.write_table(key, svc, &reals)?;
            c.index_in_write().retire_real(svc.id, id);
            c.retire_slot(id)?;
            c.filter_sync()
        })
    }

    /// Write a present real's slot, in the map and in the index.
    fn store_real(&mut self, id: u32, value: Real) -> Result<(), ControlError> {
        self.maps
            .reals
            .set(id, value, 0)
            .map_err(map_err(director_common::maps::REALS))?;
        self.index_in_write().put_real(id, value);
        Ok(())
    }

    /// [`Control::store_real`], the real's address set in the VIP filter first when its
    /// replies are to be un-NATed.
    fn store_real_filtered(&mut self, id: u32, value: Real) -> Result<(), ControlError> {
        if value.method == Method::Masq as u8 {
            self.filter_add(&value.addr, value.family, Role::NatReal)?;
        }
        self.store_real(id, value)
    }

    /// Mark a slot retired: the data path ignores it from now on; its connection entries
    /// go at the next sweep.
    fn retire_slot(&mut self, id: u32) -> Result<(), ControlError> {
        let retired = Real {
            flags: REAL_F_RETIRED,
            ..Real::default()
        };
        self.maps
            .reals
            .set(id, retired, 0)
            .map_err(map_err(director_common::maps::REALS))?;
        self.clear_hop(id)
    }

    /// Remove the connection entries of every retired slot, then mark the slots clean.
    fn sweep(&mut self) -> Result<(), ControlError> {
        let retired: BTreeSet<u32> = self.index_in_write().retired().clone();
        self.purge_conns(|c| retired.contains(&c.real))?;
        // Only the userspace flag changes (the slots are not present): no syscall.
        for &id in &retired {
            self.reals.write(id, &[Real::default()])?;
        }
        self.index_in_write().swept();
        Ok(())
    }

    /// Forget the data path's cached next hop of a real (every CPU's copy), in the
    /// caches of both families: a slot may have held a real of the other family.
    fn clear_hop(&mut self, id: u32) -> Result<(), ControlError> {
        self.clear_hop_v4(id)?;
        self.clear_hop_v6(id)
    }

    fn clear_hop_v4(&mut self, id: u32) -> Result<(), ControlError> {
        zero_slot(
            &mut self.maps.hops,
            director_common::maps::HOPS,
            self.cpus,
            id,
        )
    }

    fn clear_hop_v6(&mut self, id: u32) -> Result<(), ControlError> {
        zero_slot(
            &mut self.maps.hops6,
            director_common::maps::HOPS6,
            self.cpus,
            id,
        )
    }

    /// The addresses of every real of every service, sorted, once each (the
    /// neighbours the director keeps resolved are theirs).
    pub fn real_addresses(&self) -> Result<Vec<IpAddr>, ControlError> {
        let mut addrs: Vec<IpAddr> = self
            .services()?
            .into_iter()
            .flat_map(|s| s.reals)
            .map(|r| r.spec.addr)
            .collect();
        addrs.sort();
        addrs.dedup();
        Ok(addrs)
    }

    /// Forgets the data path's cached next hop of every real at one of `addrs`, in every
    /// service (each CPU's copy), so that the next packet to it asks the FIB again: a
    /// neighbour's new MAC address or a new route reaches the flows at once instead of
    /// within the cache's TTL. Returns the ids of the reals concerned.
    ///
    /// The cache only ever holds what the FIB said, so clearing it is always safe and
    /// needs no writer's lock: a concurrent writer can at worst make the data path look
    /// the FIB up once more.
    pub fn forget_next_hops(&mut self, addrs: &[IpAddr]) -> Result<Vec<u32>, ControlError> {
        let mut reals: Vec<(u32, IpAddr)> = self
            .services()?
            .into_iter()
            .flat_map(|v| v.reals)
            .filter(|r| addrs.contains(&r.spec.addr))
            .map(|r| (r.id, r.spec.addr))
            .collect();
        reals.sort();
        reals.dedup();
        for &(id, addr) in &reals {
            self.forget_hop(id, addr)?;
        }
        Ok(reals.into_iter().map(|(id, _)| id).collect())
    }

    /// Clears real `id`'s cached next hop in the cache of its address's family.
    fn forget_hop(&mut self, id: u32, addr: IpAddr) -> Result<(), ControlError> {
        match addr {
            IpAddr::V4(_) => self.clear_hop_v4(id),
            IpAddr::V6(_) => self.clear_hop_v6(id),
        }
    }

    /// Every CPU's cached next hop of real `id` (IPv4 reals), as the data path left it;
    /// an entry with `at_ns == 0` is empty.
    pub fn cached_next_hop(&self, id: u32) -> Result<Vec<HopCache>, ControlError> {
        let values = self
            .maps
            .hops
            .get(&id, 0)
            .map_err(map_err(director_common::maps::HOPS))?;
        Ok(values.iter().copied().collect())
    }

    // ---- tables ----

    /// Maglev keeps its imbalance near 1 % only with at least 100 table entries per real.
    fn check_table_capacity(&self, scheduler: u8, reals: u32) -> Result<(), ControlError> {
        let hashed = matches!(
            Scheduler::from_u8(scheduler),
            Some(Scheduler::Maglev | Scheduler::SourceHash)
        );
        if hashed && reals > tables::max_reals(self.table_size) {
            return Err(ControlError::TableTooSmall {
                table_size: self.table_size,
                requested: reals,
            });
        }
        Ok(())
    }

    /// Recompute a service's table from its reals (as indexed) and switch to it.
    fn rebuild(&mut self, key: ServiceKey, svc: Service) -> Result<Service, ControlError> {
        let reals = self.index_in_write().reals_of(svc.id).to_vec();
        self.write_table(key, svc, &reals)
    }

    fn backends(reals: &[(u32, Real)]) -> Vec<Backend> {
        reals
            .iter()
            .map(|(id, r)| Backend {
                id: *id,
                addr: addr_from_16(&r.addr, r.family),
                port: u16::from_be(r.port_be),
                weight: r.weight,
            })
            .collect()
    }

    /// Write the table of `reals` into the inactive half and switch `svc` to it.
    fn write_table(
        &mut self,
        key: ServiceKey,
        mut svc: Service,
        reals: &[(u32, Real)],
    ) -> Result<Service, ControlError> {
        let scheduler = Scheduler::from_u8(svc.scheduler).unwrap_or(Scheduler::Maglev);
        let table = tables::build(scheduler, &Self::backends(reals), self.table_size);
        let half = (svc.active_half ^ 1) & 1;
        let base = (svc.id * 2 + half as u32) * self.table_size;
        self.table_window(svc.id)?.write(base, &table)?;
        svc.active_half = half;
        svc.table_len[half as usize] = table.len() as u32;
        // The flip: one update of the service entry.
        self.maps
            .services
            .insert(key, svc, 0)
            .map_err(map_err(director_common::maps::SERVICES))?;
        if let Some(ix) = self.index.as_mut() {
            ix.put_service(key, svc);
        }
        if self.dirty == Some(key) {
            self.dirty = None;
        }
        Ok(svc)
    }

    /// The mapping of a service slot's two table halves.
    fn map_tables(&self, id: u32) -> Result<ArrayMapping, ControlError> {
        ArrayMapping::window(
            &self.maps.tables,
            director_common::maps::TABLES,
            4,
            id * 2 * self.table_size,
            2 * self.table_size,
        )
    }

    fn table_window(&mut self, id: u32) -> Result<&mut ArrayMapping, ControlError> {
        // A batch over more services than this drops its windows now and then, to keep
        // the process's mappings few.
        const WINDOWS: usize = 4096;
        if !self.tables.contains_key(&id) {
            if self.tables.len() >= WINDOWS {
                self.tables.clear();
            }
            let w = self.map_tables(id)?;
            self.tables.insert(id, w);
        }
        Ok(self.tables.get_mut(&id).expect("inserted above"))
    }

    /// The table a service uses now, read through `window` (of its slot).
    fn table_in(&self, window: &ArrayMapping, svc: &Service) -> Result<Vec<u32>, ControlError> {
        let half = (svc.active_half & 1) as u32;
        let base = (svc.id * 2 + half) * self.table_size;
        let len = svc.table_len[half as usize].min(self.table_size);
        window.read_many(base, len as usize)
    }

    /// The table a service currently uses (for tools and tests).
    pub fn active_table(&self, addr: &ServiceAddr) -> Result<Vec<u32>, ControlError> {
        let svc = self.find_service(addr)?;
        self.table_in(&self.map_tables(svc.id)?, &svc)
    }

    // ---- housekeeping ----

    /// Remove the entries `pred` picks from both connection tables.
    fn purge_conns(&mut self, pred: impl Fn(&EntryMeta) -> bool) -> Result<(), ControlError> {
        ConnTable::map(&self.maps.conns)?.remove_where(&pred)?;
        ConnTable::map(&self.maps.conns6)?.remove_where(&pred)?;
        Ok(())
    }

    fn zero_counters(&mut self, which: PerCpuArrayRef, id: u32) -> Result<(), ControlError> {
        let zeros = PerCpuValues::try_from(vec![Counters::default(); self.cpus])
            .map_err(|e| ControlError::System(format!("per-CPU values: {e}")))?;
        let (map, name) = match which {
            PerCpuArrayRef::Service => (
                &mut self.maps.service_stats,
                director_common::maps::SERVICE_STATS,
            ),
            PerCpuArrayRef::Real => (&mut self.maps.real_stats, director_common::maps::REAL_STATS),
        };
        map.set(id, zeros, 0).map_err(map_err(name))
    }

    /// Zero the counters of one service and its reals, or of everything (ipvsadm -Z).
    pub fn zero(&mut self, addr: Option<&ServiceAddr>) -> Result<(), ControlError> {
        self.settle(None)?;
        let want = addr.map(ServiceAddr::key);
        let ix = self.fresh_index()?;
        let mut ids: Vec<(u32, Vec<u32>)> = ix
            .services()
            .filter(|(k, _)| want.is_none_or(|w| **k == w))
            .map(|(_, s)| (s.id, ix.reals_of(s.id).iter().map(|(i, _)| *i).collect()))
            .collect();
        if want.is_some() && ids.is_empty() {
            return Err(ControlError::NoSuchService);
        }
        ids.sort();
        for (svc, reals) in ids {
            self.zero_counters(PerCpuArrayRef::Service, svc)?;
            for r in reals {
                self.zero_counters(PerCpuArrayRef::Real, r)?;
            }
        }
        Ok(())
    }

    /// The protocols a service can have (for callers building specs).
    pub fn protocols() -> [Protocol; 2] {
        [Protocol::Tcp, Protocol::Udp]
    }

    /// Bring the maps back to a state every operation leaves, after a writer was killed in
    /// the middle of one ([`crate::state::StateOptions::begin_write`] calls this when the
    /// writers' marker says the previous writer did not finish). Each operation writes in an order that keeps the data path
    /// safe, but can leave work undone:
    /// - real slots whose service was removed (`delete_service` stopped early) are
    ///   retired;
    /// - every service whose active table differs from the table its reals give is
    ///   rebuilt (tables are a pure function of the reals), which completes an `add_real`
    ///   or `edit_real` (or the deferred table of a batch) and undoes a `delete_real`
    ///   that stopped before retiring the slot;
    /// - buckets of the connection tables (IPv4's and IPv6's) it left claimed are opened
    ///   again.
    ///
    /// Returns what it completed; bumps the write generation.
    pub fn repair_interrupted(&mut self) -> Result<crate::state::Repaired, ControlError> {
        self.flush()?;
        ConnTable::map(&self.maps.conns)?.release_dead_claims()?;
        ConnTable::map(&self.maps.conns6)?.release_dead_claims()?;
        // Read afresh: the maps are what counts.
        self.index = None;
        let orphans = self.fresh_index()?.orphans().to_vec();
        let capacity = self.maps.service_capacity;
        self.applying(|c| {
            for &id in &orphans {
                c.retire_slot(id)?;
            }
            c.index_in_write().orphans_cleared(capacity);
            let services: Vec<(ServiceKey, Service)> = c
                .index_in_write()
                .services()
                .map(|(k, s)| (*k, *s))
                .collect();
            let mut rebuilt = 0;
            for (key, svc) in services {
                let reals = c.index_in_write().reals_of(svc.id).to_vec();
                let scheduler = Scheduler::from_u8(svc.scheduler).unwrap_or(Scheduler::Maglev);
                let expected = tables::build(scheduler, &Self::backends(&reals), c.table_size);
                let half = (svc.active_half & 1) as usize;
                let same = svc.table_len[half] as usize == expected.len() && {
                    let window = c.map_tables(svc.id)?;
                    c.table_in(&window, &svc)? == expected
                };
                if !same {
                    c.write_table(key, svc, &reals)?;
                    rebuilt += 1;
                }
            }
            Ok(crate::state::Repaired {
                slots_cleared: orphans.len(),
                tables_rebuilt: rebuilt,
            })
        })
    }
}

/// A non-zero random word from the kernel's generator.
fn random_seed() -> Result<u32, ControlError> {
    let mut b = [0u8; 4];
    loop {
        // SAFETY: writes at most 4 bytes into `b`.
        let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
        if n != b.len() as isize {
            return Err(ControlError::System(format!(
                "drawing the connection table's seed: {}",
                std::io::Error::last_os_error()
            )));
        }
        let seed = u32::from_ne_bytes(b);
        if seed != 0 {
            return Ok(seed);
        }
    }
}

fn nr_cpus() -> Result<usize, ControlError> {
    aya::util::nr_cpus().map_err(|(_, e)| ControlError::System(format!("counting CPUs: {e}")))
}

enum PerCpuArrayRef {
    Service,
    Real,
}

/// CLOCK_MONOTONIC_COARSE in ns: the clock of the data path (bpf_ktime_get_coarse_ns).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * director_common::config::NS_PER_S + ts.tv_nsec as u64
}
