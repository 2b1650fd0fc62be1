//! Reading the connection table and the persistence templates, in the library's own
//! terms: addresses, protocols, states and durations, never the kernel's layout.
//!
//! Three readers, one per question a caller asks:
//! - [`Control::connection_entries`]: every entry the table holds, both directions, live
//!   or timed out (diagnostics, tests);
//! - [`Control::connections`]: the live connections, one per flow (`ipvsadm -L -c`);
//! - [`Control::connection_census`]: counts from one scan (`-L`'s ActiveConn and
//!   InActConn, `director status`'s table fill).
//!
//! Each reads both tables, IPv4 flows' and IPv6 flows', in that order.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

pub use director_common::conn_state::ConnState;
use director_common::{
    config::{NS_PER_S, Settings},
    conn_state,
    conntable::{CONN_F_REPLY, ConnBucket, ConnBucket6},
};

use super::{
    Control, ControlError,
    conntable::{Bucket, ConnTable, EntryMeta},
    map_err, monotonic_ns,
};
use crate::model::{Protocol, addr_from_16};

/// Which side of a connection an entry matches packets from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Packets from the client to the virtual service (every connection has one).
    FromClient,
    /// Packets from a NAT real back to the client (NAT connections only).
    FromReal,
}

/// One entry of the connection table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionEntry {
    /// TCP or UDP: the protocol of the flow (entries of other protocols are not listed).
    pub protocol: Protocol,
    /// The packets' source: the client, or the real for [`Direction::FromReal`].
    pub source: SocketAddr,
    /// The packets' destination: the virtual service, or the client.
    pub destination: SocketAddr,
    /// Which side's packets the entry matches: a NAT connection has an entry each way,
    /// a DR or TUN connection only [`Direction::FromClient`].
    pub direction: Direction,
    /// The state the data path tracks (TCP's, or `Udp`); `None` for a value this
    /// library does not know (a newer data path).
    pub state: Option<ConnState>,
    /// The service's slot ([`super::ServiceView::id`]).
    pub service_id: u32,
    /// The real's slot ([`super::RealView::id`]).
    pub real_id: u32,
    /// The virtual service the connection was made to (for a reply entry, where the
    /// reply's source is translated back to).
    pub virtual_service: SocketAddr,
    /// Time since the entry's last packet.
    pub idle: Duration,
    /// Time left before the entry times out; `None` once it has (it stays in the table
    /// until a new flow takes its place).
    pub expires_in: Option<Duration>,
}

impl ConnectionEntry {
    /// Counted in listings: not timed out.
    pub fn is_live(&self) -> bool {
        self.expires_in.is_some()
    }
}

/// A persistence template: the real a client sticks to on a persistent service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PersistenceTemplate {
    /// The slot of the persistent service the template belongs to
    /// ([`super::ServiceView::id`]).
    pub service_id: u32,
    /// The client's address with the service's persistence netmask applied: one template
    /// covers every client of the masked network.
    pub client: IpAddr,
    /// The slot of the real that the client's new connections go to while the template
    /// lives ([`super::RealView::id`]).
    pub real_id: u32,
    /// Time left before the template expires (only live templates are listed).
    pub expires_in: Duration,
}

/// Connection counts per real, from the connection table (ipvsadm's ActiveConn and
/// InActConn).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnCounts {
    /// Live connections in the established state (ActiveConn).
    pub active: u64,
    /// Live connections in any other state: opening, closing, or UDP (InActConn).
    pub inactive: u64,
}

/// What one scan of the connection table counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectionCensus {
    /// Live connections per real slot: established ones are active, the rest inactive.
    pub per_real: HashMap<u32, ConnCounts>,
    /// Entries in use in the IPv4 table, both directions, live or timed out but not yet
    /// replaced: how full the table is.
    pub entries: usize,
    /// The same for the IPv6 table (as large as the IPv4 one).
    pub entries6: usize,
}

fn entry<B: Bucket>(
    key: &B::Key,
    conn: &B::Entry,
    settings: &Settings,
    now: u64,
) -> Option<ConnectionEntry> {
    let addrs = B::addrs(key, conn);
    let conn = B::meta(conn);
    let protocol = Protocol::from_number(addrs.proto)?;
    let state = ConnState::from_u8(conn.state);
    let idle = now.saturating_sub(conn.last_seen_ns);
    let lifetime = conn_state::timeout_ns(conn.state, settings);
    Some(ConnectionEntry {
        protocol,
        source: addrs.source,
        destination: addrs.destination,
        direction: if conn.flags & CONN_F_REPLY != 0 {
            Direction::FromReal
        } else {
            Direction::FromClient
        },
        state,
        service_id: conn.service,
        real_id: conn.real,
        virtual_service: addrs.vip,
        idle: Duration::from_nanos(idle),
        expires_in: (idle <= lifetime).then(|| Duration::from_nanos(lifetime - idle)),
    })
}

/// Count one table's entries into `census`; returns how many entries it holds.
fn count<B: Bucket>(
    table: &ConnTable<B>,
    census: &mut ConnectionCensus,
    settings: &Settings,
    now: u64,
) -> Result<usize, ControlError> {
    let mut entries = 0;
    table.for_each(|_, c| {
        entries += 1;
        let c: EntryMeta = B::meta(c);
        if c.flags & CONN_F_REPLY != 0 || !conn_state::alive(c.state, c.last_seen_ns, now, settings)
        {
            return;
        }
        let n = census.per_real.entry(c.real).or_default();
        if c.state == ConnState::Established as u8 {
            n.active += 1;
        } else {
            n.inactive += 1;
        }
    })?;
    Ok(entries)
}

impl Control {
    /// Every entry of the connection table, both directions, live or timed out. A
    /// bucket the data path is writing may be read half old, half new: a listing is a
    /// snapshot of moving state in any case.
    pub fn connection_entries(&self) -> Result<Vec<ConnectionEntry>, ControlError> {
        let settings = self.settings()?;
        let now = monotonic_ns();
        let mut out = Vec::new();
        ConnTable::map(&self.maps.conns)?
            .for_each(|k, c| out.extend(entry::<ConnBucket>(k, c, &settings, now)))?;
        ConnTable::map(&self.maps.conns6)?
            .for_each(|k, c| out.extend(entry::<ConnBucket6>(k, c, &settings, now)))?;
        Ok(out)
    }

    /// The live connections: one entry per flow, from the client's side.
    pub fn connections(&self) -> Result<Vec<ConnectionEntry>, ControlError> {
        let mut out = self.connection_entries()?;
        out.retain(|e| e.direction == Direction::FromClient && e.is_live());
        Ok(out)
    }

    /// Live connections per real and the table's fill, from one scan.
    pub fn connection_census(&self) -> Result<ConnectionCensus, ControlError> {
        let settings = self.settings()?;
        let now = monotonic_ns();
        let mut census = ConnectionCensus::default();
        census.entries = count(
            &ConnTable::map(&self.maps.conns)?,
            &mut census,
            &settings,
            now,
        )?;
        census.entries6 = count(
            &ConnTable::map(&self.maps.conns6)?,
            &mut census,
            &settings,
            now,
        )?;
        Ok(census)
    }

    /// The live persistence templates. A template lives for its service's persistence
    /// timeout after the client's last new connection; one whose service is gone or is
    /// no longer persistent is not listed.
    pub fn persistence_templates(&self) -> Result<Vec<PersistenceTemplate>, ControlError> {
        let now = monotonic_ns();
        let timeouts: HashMap<u32, u64> = self
            .services()?
            .iter()
            .filter_map(|v| Some((v.id, u64::from(v.spec.persistence?.timeout_s) * NS_PER_S)))
            .collect();
        let mut out = Vec::new();
        for item in self.maps.persist.iter() {
            let (k, e) = item.map_err(map_err(director_common::maps::PERSIST))?;
            let Some(&lifetime) = timeouts.get(&k.service) else {
                continue;
            };
            let idle = now.saturating_sub(e.last_seen_ns);
            if idle > lifetime {
                continue;
            }
            out.push(PersistenceTemplate {
                service_id: k.service,
                client: addr_from_16(&k.client, k.family),
                real_id: e.real,
                expires_in: Duration::from_nanos(lifetime - idle),
            });
        }
        Ok(out)
    }
}
