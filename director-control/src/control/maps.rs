//! Typed handles on the data path's maps, opened from a freshly loaded object or from
//! their pins.

use std::path::Path;

use aya::{
    Ebpf,
    maps::{Array, HashMap, Map, MapData, PerCpuArray},
};
use director_common::{
    config::Settings,
    conntable::{CONN_WAYS, ConnBucket, ConnBucket6},
    iface::IfaceMac,
    maps::{self as names, TableRow},
    persist::{PersistEntry, PersistKey},
    real::{HopCache, HopCache6, Real},
    service::{Service, ServiceKey},
    stats::Counters,
};

use super::ControlError;

pub struct Maps {
    pub services: HashMap<MapData, ServiceKey, Service>,
    pub reals: Array<MapData, Real>,
    pub hops: PerCpuArray<MapData, HopCache>,
    pub hops6: PerCpuArray<MapData, HopCache6>,
    /// Next hops towards clients (NAT replies), per family.
    pub client_hops: PerCpuArray<MapData, HopCache>,
    pub client_hops6: PerCpuArray<MapData, HopCache6>,
    pub tables: Array<MapData, TableRow>,
    pub conns: Array<MapData, ConnBucket>,
    /// The IPv6 flows' table, as many buckets as `conns`.
    pub conns6: Array<MapData, ConnBucket6>,
    pub persist: HashMap<MapData, PersistKey, PersistEntry>,
    /// Only the data path moves the rr/wrr cursors; held so that a missing map is
    /// found when the maps are opened, not when a listing needs it.
    pub _rr_cursors: PerCpuArray<MapData, u32>,
    pub service_stats: PerCpuArray<MapData, Counters>,
    pub real_stats: PerCpuArray<MapData, Counters>,
    pub stats: PerCpuArray<MapData, u64>,
    pub settings: Array<MapData, Settings>,
    pub ifaces: Array<MapData, IfaceMac>,
    pub vlans: Array<MapData, u64>,
    /// None in maps pinned by a build without it.
    pub vip_filter: Option<Array<MapData, u64>>,
    /// Capacity of the connection table in entries (buckets x ways), fixed when it was
    /// created.
    pub conn_capacity: u32,
    /// Virtual service slots, fixed when the maps were created.
    pub service_capacity: u32,
    /// Capacity of the persistence template table.
    pub persist_capacity: u32,
}

fn capacity(map: &Option<Map>) -> u32 {
    match map {
        Some(Map::LruHashMap(data)) | Some(Map::HashMap(data)) => {
            data.info().map(|i| i.max_entries()).unwrap_or(0)
        }
        _ => 0,
    }
}

fn typed<T: TryFrom<Map, Error = aya::maps::MapError>>(
    name: &'static str,
    map: Option<Map>,
) -> Result<T, ControlError> {
    let map = map.ok_or(ControlError::MissingMap(name))?;
    T::try_from(map).map_err(|source| ControlError::Map { name, source })
}

impl Maps {
    pub fn from_ebpf(ebpf: &mut Ebpf) -> Result<Self, ControlError> {
        let mut take = |name: &'static str| ebpf.take_map(name);
        let conns: Array<MapData, ConnBucket> = typed(names::CONNS, take(names::CONNS))?;
        let services = take(names::SERVICES);
        let persist = take(names::PERSIST);
        Ok(Self {
            conn_capacity: conns.len() * CONN_WAYS as u32,
            service_capacity: capacity(&services),
            persist_capacity: capacity(&persist),
            services: typed(names::SERVICES, services)?,
            reals: typed(names::REALS, take(names::REALS))?,
            hops: typed(names::HOPS, take(names::HOPS))?,
            hops6: typed(names::HOPS6, take(names::HOPS6))?,
            client_hops: typed(names::CLIENT_HOPS, take(names::CLIENT_HOPS))?,
            client_hops6: typed(names::CLIENT_HOPS6, take(names::CLIENT_HOPS6))?,
            tables: typed(names::TABLES, take(names::TABLES))?,
            conns,
            conns6: typed(names::CONNS6, take(names::CONNS6))?,
            persist: typed(names::PERSIST, persist)?,
            _rr_cursors: typed(names::RR_CURSORS, take(names::RR_CURSORS))?,
            service_stats: typed(names::SERVICE_STATS, take(names::SERVICE_STATS))?,
            real_stats: typed(names::REAL_STATS, take(names::REAL_STATS))?,
            stats: typed(names::STATS, take(names::STATS))?,
            settings: typed(names::SETTINGS, take(names::SETTINGS))?,
            ifaces: typed(names::IFACES, take(names::IFACES))?,
            vlans: typed(names::VLANS, take(names::VLANS))?,
            vip_filter: Some(typed(names::VIP_FILTER, take(names::VIP_FILTER))?),
        })
    }

    pub fn from_pins(dir: &Path) -> Result<Self, ControlError> {
        let open = |name: &'static str| -> Result<Option<Map>, ControlError> {
            let data = MapData::from_pin(dir.join(name))
                .map_err(|source| ControlError::Map { name, source })?;
            Ok(Some(
                Map::from_map_data(data).map_err(|source| ControlError::Map { name, source })?,
            ))
        };
        let conns: Array<MapData, ConnBucket> = typed(names::CONNS, open(names::CONNS)?)?;
        let services = open(names::SERVICES)?;
        let persist = open(names::PERSIST)?;
        Ok(Self {
            conn_capacity: conns.len() * CONN_WAYS as u32,
            service_capacity: capacity(&services),
            persist_capacity: capacity(&persist),
            services: typed(names::SERVICES, services)?,
            reals: typed(names::REALS, open(names::REALS)?)?,
            hops: typed(names::HOPS, open(names::HOPS)?)?,
            hops6: typed(names::HOPS6, open(names::HOPS6)?)?,
            client_hops: typed(names::CLIENT_HOPS, open(names::CLIENT_HOPS)?)?,
            client_hops6: typed(names::CLIENT_HOPS6, open(names::CLIENT_HOPS6)?)?,
            tables: typed(names::TABLES, open(names::TABLES)?)?,
            conns,
            conns6: typed(names::CONNS6, open(names::CONNS6)?)?,
            persist: typed(names::PERSIST, persist)?,
            _rr_cursors: typed(names::RR_CURSORS, open(names::RR_CURSORS)?)?,
            service_stats: typed(names::SERVICE_STATS, open(names::SERVICE_STATS)?)?,
            real_stats: typed(names::REAL_STATS, open(names::REAL_STATS)?)?,
            stats: typed(names::STATS, open(names::STATS)?)?,
            settings: typed(names::SETTINGS, open(names::SETTINGS)?)?,
            ifaces: typed(names::IFACES, open(names::IFACES)?)?,
            vlans: typed(names::VLANS, open(names::VLANS)?)?,
            vip_filter: if dir.join(names::VIP_FILTER).exists() {
                Some(typed(names::VIP_FILTER, open(names::VIP_FILTER)?)?)
            } else {
                None
            },
        })
    }
}
