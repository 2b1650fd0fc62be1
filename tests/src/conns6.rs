//! Writing IPv6 connection entries straight into a pinned `DIR_CONNS6` (and IPv6
//! persistence templates into `DIR_PERSIST`), for tests of what the control side makes
//! of them (listings, counts, the purge of a removed real's entries, the repair of a
//! claim a killed writer left) independently of the data path that normally writes them.

use std::{net::Ipv6Addr, path::Path, time::Duration};

use anyhow::{Context, Result};
use aya::maps::{Array, HashMap, Map, MapData};
use director_common::{
    addr::FAMILY_V6,
    conn_state::ConnState,
    conntable::{CONN_WAYS, Conn6, ConnBucket6, FlowKey6},
    maps::{CONNS6, PERSIST},
    persist::{PersistEntry, PersistKey},
};
use director_control::control::monotonic_ns;

/// The pinned IPv6 connection table of the maps in `maps_dir`.
pub struct Conns6(Array<MapData, ConnBucket6>);

/// One IPv6 flow from the client's side, as the data path would store it.
#[derive(Clone, Copy, Debug)]
pub struct Flow6 {
    pub proto: u8,
    pub client: (Ipv6Addr, u16),
    pub vip: (Ipv6Addr, u16),
    pub service: u32,
    pub real: u32,
    pub state: ConnState,
    /// How long ago its last packet was seen.
    pub idle: Duration,
}

impl Conns6 {
    pub fn open(maps_dir: &Path) -> Result<Self> {
        let path = maps_dir.join(CONNS6);
        let data =
            MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
        Ok(Self(Array::try_from(Map::from_map_data(data)?)?))
    }

    pub fn bucket(&self, index: u32) -> Result<ConnBucket6> {
        Ok(self.0.get(&index, 0)?)
    }

    pub fn set_bucket(&mut self, index: u32, bucket: ConnBucket6) -> Result<()> {
        Ok(self.0.set(index, bucket, 0)?)
    }

    /// Store `flow` in way `way` of bucket `index` (any bucket: listings scan them all).
    pub fn put(&mut self, index: u32, way: usize, flow: &Flow6) -> Result<()> {
        assert!(way < CONN_WAYS);
        let mut b = self.bucket(index)?;
        b.keys[way] = FlowKey6 {
            src: flow.client.0.octets(),
            dst: flow.vip.0.octets(),
            sport_be: flow.client.1.to_be(),
            dport_be: flow.vip.1.to_be(),
            proto: flow.proto,
            ..FlowKey6::default()
        };
        b.conns[way] = Conn6 {
            last_seen_ns: monotonic_ns() - flow.idle.as_nanos() as u64,
            real: flow.real,
            service: flow.service,
            state: flow.state as u8,
            vport_be: flow.vip.1.to_be(),
            vaddr: flow.vip.0.octets(),
            ..Conn6::default()
        };
        self.set_bucket(index, b)
    }
}

/// Store a persistence template of service slot `service`: clients of the (already
/// masked) network `client` stick to real slot `real`; its last new connection was
/// `idle` ago.
pub fn put_template6(
    maps_dir: &Path,
    service: u32,
    client: Ipv6Addr,
    real: u32,
    idle: Duration,
) -> Result<()> {
    let path = maps_dir.join(PERSIST);
    let data = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    let mut map: HashMap<MapData, PersistKey, PersistEntry> =
        HashMap::try_from(Map::from_map_data(data)?)?;
    let key = PersistKey {
        service,
        family: FAMILY_V6,
        client: client.octets(),
        ..PersistKey::default()
    };
    let entry = PersistEntry {
        last_seen_ns: monotonic_ns() - idle.as_nanos() as u64,
        real,
        ..PersistEntry::default()
    };
    Ok(map.insert(key, entry, 0)?)
}
