//! Writing IPv6 connection entries straight into a pinned `DIR_CONNS6`, for tests of
//! what the control side makes of them (listings, counts, the purge of a removed real's
//! entries, the repair of a claim a killed writer left) independently of the data path
//! that normally writes them.

use std::{net::Ipv6Addr, path::Path, time::Duration};

use anyhow::{Context, Result};
use aya::maps::{Array, Map, MapData};
use director_common::{
    conn_state::ConnState,
    conntable::{CONN_WAYS, Conn6, ConnBucket6, FlowKey6},
    maps::CONNS6,
};

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

/// CLOCK_MONOTONIC_COARSE in ns, the clock the data path stamps entries with.
fn coarse_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec, ours.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
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
            last_seen_ns: coarse_now_ns() - flow.idle.as_nanos() as u64,
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
