//! The control library: the only code that writes the data path's maps.
//!
//! Every operation validates first, then computes, then applies in an order that never
//! lets the data path see a half-made service: a real's slot is written before any
//! table points at it; a new table is written into the inactive half and made active by
//! one atomic update of the service entry; a removed real leaves the tables before its
//! slot is cleared. All state is read back from the maps (they are the single source of
//! truth, as IPVS's kernel tables are for ipvsadm).

mod maps;
mod mmap;

use std::{collections::HashMap, net::IpAddr};

use aya::{
    Ebpf,
    maps::{MapError, PerCpuValues},
};
use director_common::{
    config::Settings,
    conntrack::{Conn, ConnState, FlowKey},
    maps::MAX_REALS,
    real::{HopCache, Method, REAL_F_PRESENT, Real},
    service::{SVC_F_HASH_PORT, SVC_F_HASH_SRC_ONLY, SVC_F_PERSISTENT, Scheduler, Service},
    stats::{Counters, Stat},
};
pub use maps::Maps;

use crate::{
    model::{Persistence, Protocol, RealSpec, ServiceAddr, ServiceSpec, addr_from_16, addr_to_16},
    tables::{self, Backend},
};

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("Service already exists")]
    ServiceExists,
    #[error("No such service")]
    NoSuchService,
    #[error("Destination already exists")]
    RealExists,
    #[error("No such destination")]
    NoSuchReal,
    #[error(
        "no free service slot: at most {0} virtual services (attach with a larger --max-services)"
    )]
    ServicesFull(u32),
    #[error("no free real slot: at most {} real servers in all", MAX_REALS - 1)]
    RealsFull,
    #[error("{0}")]
    Invalid(String),
    #[error("map {0} is missing from the object")]
    MissingMap(&'static str),
    #[error("map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
}

fn map_err(name: &'static str) -> impl FnOnce(MapError) -> ControlError {
    move |source| ControlError::Map { name, source }
}

/// A service as read back from the maps.
#[derive(Clone, Debug)]
pub struct ServiceView {
    pub spec: ServiceSpec,
    /// Slot in the per-service arrays.
    pub id: u32,
    pub stats: Counters,
    pub reals: Vec<RealView>,
}

#[derive(Clone, Debug)]
pub struct RealView {
    pub id: u32,
    pub spec: RealSpec,
    pub stats: Counters,
}

/// Connection counts per real, from the connection table (ipvsadm's ActiveConn and
/// InActConn).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnCounts {
    pub active: u64,
    pub inactive: u64,
}

/// Timeouts in seconds (ipvsadm --set); 0 leaves a value unchanged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp: u32,
    pub tcp_fin: u32,
    pub udp: u32,
}

pub struct Control {
    maps: Maps,
    table_size: u32,
    tables: mmap::TableMapping,
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

impl Control {
    pub fn from_ebpf(ebpf: &mut Ebpf) -> Result<Self, ControlError> {
        Self::new(Maps::from_ebpf(ebpf)?)
    }

    pub fn from_pins(dir: &std::path::Path) -> Result<Self, ControlError> {
        Self::new(Maps::from_pins(dir)?)
    }

    fn new(maps: Maps) -> Result<Self, ControlError> {
        let table_size = maps.tables.len() / (maps.service_capacity.max(1) * 2);
        let tables = mmap::TableMapping::new(&maps.tables)?;
        let mut c = Self {
            maps,
            table_size,
            tables,
        };
        // A fresh settings entry is all zero; zero timeouts would expire every flow.
        let s = c.settings()?;
        if s.tcp_timeout_s == 0 && s.udp_timeout_s == 0 {
            c.write_settings(&Settings {
                flags: s.flags,
                ..Settings::default()
            })?;
        }
        Ok(c)
    }

    pub fn table_size(&self) -> u32 {
        self.table_size
    }

    /// Virtual service slots of the attached data path.
    pub fn service_capacity(&self) -> u32 {
        self.maps.service_capacity
    }

    pub fn conn_table_size(&self) -> u32 {
        self.maps.conn_capacity
    }

    // ---- settings ----

    pub fn settings(&self) -> Result<Settings, ControlError> {
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

    pub fn timeouts(&self) -> Result<Timeouts, ControlError> {
        let s = self.settings()?;
        Ok(Timeouts {
            tcp: s.tcp_timeout_s,
            tcp_fin: s.tcp_fin_timeout_s,
            udp: s.udp_timeout_s,
        })
    }

    pub fn set_timeouts(&mut self, t: Timeouts) -> Result<(), ControlError> {
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

    pub fn set_flag(&mut self, flag: u32, on: bool) -> Result<(), ControlError> {
        let mut s = self.settings()?;
        if on {
            s.flags |= flag;
        } else {
            s.flags &= !flag;
        }
        self.write_settings(&s)
    }

    // ---- reading ----

    fn services_raw(
        &self,
    ) -> Result<Vec<(director_common::service::ServiceKey, Service)>, ControlError> {
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

    /// Every real slot in use: (id, value).
    fn reals_raw(&self) -> Result<Vec<(u32, Real)>, ControlError> {
        let mut out = Vec::new();
        for (i, r) in self.maps.reals.iter().enumerate() {
            let r = r.map_err(map_err(director_common::maps::REALS))?;
            if r.flags & REAL_F_PRESENT != 0 {
                out.push((i as u32, r));
            }
        }
        Ok(out)
    }

    fn reals_of(&self, service_id: u32) -> Result<Vec<(u32, Real)>, ControlError> {
        Ok(self
            .reals_raw()?
            .into_iter()
            .filter(|(_, r)| r.service == service_id)
            .collect())
    }

    fn spec_of(key: &director_common::service::ServiceKey, s: &Service) -> Option<ServiceSpec> {
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

    /// Every service with its reals and counters, sorted by (protocol, address, port).
    pub fn services(&self) -> Result<Vec<ServiceView>, ControlError> {
        let reals = self.reals_raw()?;
        let mut out = Vec::new();
        for (key, s) in self.services_raw()? {
            let Some(spec) = Self::spec_of(&key, &s) else {
                continue;
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
            out.push(ServiceView {
                spec,
                id: s.id,
                stats: self.counters(&PerCpuArrayRef::Service, s.id)?,
                reals: rs,
            });
        }
        out.sort_by_key(|v| v.spec.addr);
        Ok(out)
    }

    pub fn service(&self, addr: &ServiceAddr) -> Result<ServiceView, ControlError> {
        self.find_service(addr)?;
        self.services()?
            .into_iter()
            .find(|v| v.spec.addr == *addr)
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

    /// Live entries of the connection table (client direction only).
    pub fn connections(&self) -> Result<Vec<(FlowKey, Conn)>, ControlError> {
        let mut out = Vec::new();
        for e in self.maps.conns.iter() {
            let (k, v) = e.map_err(map_err(director_common::maps::CONNS))?;
            if v.flags & director_common::conntrack::CONN_F_REPLY == 0 {
                out.push((k, v));
            }
        }
        Ok(out)
    }

    /// ActiveConn / InActConn per real id, counting entries that have not timed out.
    pub fn conn_counts(&self) -> Result<HashMap<u32, ConnCounts>, ControlError> {
        let settings = self.settings()?;
        let now = monotonic_ns();
        let mut out: HashMap<u32, ConnCounts> = HashMap::new();
        for (_, c) in self.connections()? {
            let timeout = match ConnState::from_u8(c.state) {
                Some(ConnState::Established) => settings.tcp_timeout_s,
                Some(ConnState::FinWait) => settings.tcp_fin_timeout_s,
                Some(ConnState::Udp) => settings.udp_timeout_s,
                Some(ConnState::SynRecv) => director_common::config::SYN_TIMEOUT_S,
                _ => director_common::config::CLOSE_TIMEOUT_S,
            };
            if now.saturating_sub(c.last_seen_ns) > timeout as u64 * 1_000_000_000 {
                continue;
            }
            let e = out.entry(c.real).or_default();
            if c.state == ConnState::Established as u8 {
                e.active += 1;
            } else {
                e.inactive += 1;
            }
        }
        Ok(out)
    }

    // ---- services ----

    fn validate_service(&self, spec: &ServiceSpec) -> Result<(), ControlError> {
        if spec.addr.addr.is_ipv6() {
            return Err(ControlError::Invalid(
                "IPv6 virtual services are not supported by the data path yet".into(),
            ));
        }
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

    pub fn add_service(&mut self, spec: &ServiceSpec) -> Result<(), ControlError> {
        self.validate_service(spec)?;
        let existing = self.services_raw()?;
        let key = spec.addr.key();
        if existing.iter().any(|(k, _)| *k == key) {
            return Err(ControlError::ServiceExists);
        }
        let used: Vec<u32> = existing.iter().map(|(_, s)| s.id).collect();
        let capacity = self.maps.service_capacity;
        let id = (0..capacity)
            .find(|i| !used.contains(i))
            .ok_or(ControlError::ServicesFull(capacity))?;
        // The slot may have been used before: start from clean counters.
        self.zero_counters(PerCpuArrayRef::Service, id)?;
        let value = Self::service_value(spec, id, None);
        self.maps
            .services
            .insert(key, value, 0)
            .map_err(map_err(director_common::maps::SERVICES))
    }

    /// Change scheduler, flags or persistence; reals and established flows stay.
    pub fn edit_service(&mut self, spec: &ServiceSpec) -> Result<(), ControlError> {
        self.validate_service(spec)?;
        let prev = self.find_service(&spec.addr)?;
        self.check_table_capacity(spec.scheduler as u8, self.reals_of(prev.id)?.len() as u32)?;
        let value = Self::service_value(spec, prev.id, Some(&prev));
        self.rebuild(spec.addr.key(), value)
    }

    pub fn delete_service(&mut self, addr: &ServiceAddr) -> Result<(), ControlError> {
        let svc = self.find_service(addr)?;
        // Packets stop matching first; then the reals and the flows go.
        self.maps
            .services
            .remove(&addr.key())
            .map_err(map_err(director_common::maps::SERVICES))?;
        for (id, _) in self.reals_of(svc.id)? {
            self.clear_real(id)?;
        }
        self.purge_conns(|c| c.service == svc.id)?;
        Ok(())
    }

    /// Remove every service (ipvsadm -C).
    pub fn clear(&mut self) -> Result<(), ControlError> {
        for v in self.services()? {
            self.delete_service(&v.spec.addr)?;
        }
        Ok(())
    }

    // ---- reals ----

    fn validate_real(&self, svc: &ServiceAddr, real: &RealSpec) -> Result<(), ControlError> {
        if real.addr.is_ipv6() != svc.addr.is_ipv6() {
            return Err(ControlError::Invalid(
                "real server address family differs from the virtual service's".into(),
            ));
        }
        if real.method != Method::Masq && real.port != 0 && real.port != svc.port {
            return Err(ControlError::Invalid(
                "direct routing and tunnelling cannot change the port: the real server port must equal the virtual port".into(),
            ));
        }
        Ok(())
    }

    fn find_real(&self, svc_id: u32, real: &RealSpec) -> Result<Option<(u32, Real)>, ControlError> {
        let (addr, _) = addr_to_16(real.addr);
        Ok(self
            .reals_of(svc_id)?
            .into_iter()
            .find(|(_, r)| r.addr == addr && u16::from_be(r.port_be) == real.port))
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
        }
    }

    /// Normalise a real's port: DR and TUN always use the virtual port.
    fn normalised(svc: &ServiceAddr, real: &RealSpec) -> RealSpec {
        let mut r = *real;
        if r.method != Method::Masq || r.port == 0 {
            r.port = svc.port;
        }
        r
    }

    pub fn add_real(
        &mut self,
        svc_addr: &ServiceAddr,
        real: &RealSpec,
    ) -> Result<(), ControlError> {
        self.validate_real(svc_addr, real)?;
        let real = Self::normalised(svc_addr, real);
        let svc = self.find_service(svc_addr)?;
        if self.find_real(svc.id, &real)?.is_some() {
            return Err(ControlError::RealExists);
        }
        let reals = self.reals_of(svc.id)?.len() as u32 + 1;
        self.check_table_capacity(svc.scheduler, reals)?;
        let used: Vec<u32> = self.reals_raw()?.iter().map(|(id, _)| *id).collect();
        let id = (1..MAX_REALS)
            .find(|i| !used.contains(i))
            .ok_or(ControlError::RealsFull)?;
        self.zero_counters(PerCpuArrayRef::Real, id)?;
        self.clear_hop(id)?;
        // Old flows of a previous owner of this slot must not land on the new real.
        self.purge_conns(|c| c.real == id)?;
        self.maps
            .reals
            .set(id, Self::real_value(&svc, &real, REAL_F_PRESENT), 0)
            .map_err(map_err(director_common::maps::REALS))?;
        self.rebuild(svc_addr.key(), svc)?;
        Ok(())
    }

    /// Change weight or forwarding method. Flows keep their real (weight 0 drains it).
    pub fn edit_real(
        &mut self,
        svc_addr: &ServiceAddr,
        real: &RealSpec,
    ) -> Result<(), ControlError> {
        self.validate_real(svc_addr, real)?;
        let real = Self::normalised(svc_addr, real);
        let svc = self.find_service(svc_addr)?;
        let (id, _) = self
            .find_real(svc.id, &real)?
            .ok_or(ControlError::NoSuchReal)?;
        self.maps
            .reals
            .set(id, Self::real_value(&svc, &real, REAL_F_PRESENT), 0)
            .map_err(map_err(director_common::maps::REALS))?;
        // A changed method may need another next hop (IPIP also needs our address).
        self.clear_hop(id)?;
        self.rebuild(svc_addr.key(), svc)?;
        Ok(())
    }

    /// Set a real's weight only (what the health checker does).
    pub fn set_weight(
        &mut self,
        svc_addr: &ServiceAddr,
        addr: IpAddr,
        port: u16,
        weight: u32,
    ) -> Result<(), ControlError> {
        let svc = self.find_service(svc_addr)?;
        let probe = Self::normalised(svc_addr, &RealSpec::new(addr, port, Method::Masq, 0));
        let (_, r) = self
            .find_real(svc.id, &probe)?
            .or(self.find_real(
                svc.id,
                &RealSpec::new(addr, svc_addr.port, Method::Route, 0),
            )?)
            .ok_or(ControlError::NoSuchReal)?;
        let mut spec = Self::real_spec(&r);
        spec.weight = weight;
        self.edit_real(svc_addr, &spec)
    }

    /// Remove a real. Its flows are rescheduled to the remaining reals on their next
    /// packet (see docs/datapath.md).
    pub fn delete_real(
        &mut self,
        svc_addr: &ServiceAddr,
        addr: IpAddr,
        port: u16,
    ) -> Result<(), ControlError> {
        let svc = self.find_service(svc_addr)?;
        let probe = RealSpec::new(
            addr,
            if port == 0 { svc_addr.port } else { port },
            Method::Masq,
            0,
        );
        let (id, _) = self
            .find_real(svc.id, &probe)?
            .ok_or(ControlError::NoSuchReal)?;
        // Leave the tables first, then free the slot.
        let mut reals = self.reals_of(svc.id)?;
        reals.retain(|(i, _)| *i != id);
        self.write_table(svc_addr.key(), svc, &reals)?;
        self.clear_real(id)?;
        self.purge_conns(|c| c.real == id)?;
        Ok(())
    }

    fn clear_real(&mut self, id: u32) -> Result<(), ControlError> {
        self.maps
            .reals
            .set(id, Real::default(), 0)
            .map_err(map_err(director_common::maps::REALS))?;
        self.clear_hop(id)
    }

    /// Forget the data path's cached next hop of a real (every CPU's copy).
    fn clear_hop(&mut self, id: u32) -> Result<(), ControlError> {
        let zeros = PerCpuValues::try_from(vec![HopCache::default(); nr_cpus()?])
            .map_err(|e| ControlError::Invalid(format!("per-CPU values: {e}")))?;
        self.maps
            .hops
            .set(id, zeros, 0)
            .map_err(map_err(director_common::maps::HOPS))
    }

    // ---- tables ----

    /// Maglev keeps its imbalance near 1 % only with at least 100 table entries per real.
    fn check_table_capacity(&self, scheduler: u8, reals: u32) -> Result<(), ControlError> {
        let hashed = matches!(
            Scheduler::from_u8(scheduler),
            Some(Scheduler::Maglev | Scheduler::SourceHash)
        );
        let max = self.table_size / 100;
        if hashed && reals > max {
            return Err(ControlError::Invalid(format!(
                "a Maglev table of {} entries serves at most {max} reals per service (100 entries per real keep the imbalance near 1%); attach with a larger --maglev-size (a prime >= {})",
                self.table_size,
                reals * 100
            )));
        }
        Ok(())
    }

    /// Recompute a service's table from its reals and switch to it.
    fn rebuild(
        &mut self,
        key: director_common::service::ServiceKey,
        svc: Service,
    ) -> Result<(), ControlError> {
        let reals = self.reals_of(svc.id)?;
        self.write_table(key, svc, &reals)
    }

    fn write_table(
        &mut self,
        key: director_common::service::ServiceKey,
        mut svc: Service,
        reals: &[(u32, Real)],
    ) -> Result<(), ControlError> {
        let backends: Vec<Backend> = reals
            .iter()
            .map(|(id, r)| Backend {
                id: *id,
                addr: addr_from_16(&r.addr, r.family),
                port: u16::from_be(r.port_be),
                weight: r.weight,
            })
            .collect();
        let scheduler = Scheduler::from_u8(svc.scheduler).unwrap_or(Scheduler::Maglev);
        let table = tables::build(scheduler, &backends, self.table_size);
        let half = (svc.active_half ^ 1) & 1;
        let base = (svc.id * 2 + half as u32) * self.table_size;
        self.tables.write(base, &table)?;
        svc.active_half = half;
        svc.table_len[half as usize] = table.len() as u32;
        // The flip: one update of the service entry.
        self.maps
            .services
            .insert(key, svc, 0)
            .map_err(map_err(director_common::maps::SERVICES))
    }

    /// The table a service currently uses (for tools and tests).
    pub fn active_table(&self, addr: &ServiceAddr) -> Result<Vec<u32>, ControlError> {
        let svc = self.find_service(addr)?;
        let half = (svc.active_half & 1) as u32;
        let base = (svc.id * 2 + half) * self.table_size;
        (0..svc.table_len[half as usize])
            .map(|i| {
                self.maps
                    .tables
                    .get(&(base + i), 0)
                    .map_err(map_err(director_common::maps::TABLES))
            })
            .collect()
    }

    // ---- housekeeping ----

    fn purge_conns(&mut self, pred: impl Fn(&Conn) -> bool) -> Result<(), ControlError> {
        let doomed: Vec<FlowKey> = self
            .maps
            .conns
            .iter()
            .filter_map(|e| e.ok())
            .filter(|(_, c)| pred(c))
            .map(|(k, _)| k)
            .collect();
        for k in doomed {
            match self.maps.conns.remove(&k) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err(director_common::maps::CONNS)(e)),
            }
        }
        Ok(())
    }

    fn zero_counters(&mut self, which: PerCpuArrayRef, id: u32) -> Result<(), ControlError> {
        let n = aya::util::nr_cpus()
            .map_err(|(_, e)| ControlError::Invalid(format!("counting CPUs: {e}")))?;
        let zeros = PerCpuValues::try_from(vec![Counters::default(); n])
            .map_err(|e| ControlError::Invalid(format!("per-CPU values: {e}")))?;
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
        let views = self.services()?;
        for v in views
            .iter()
            .filter(|v| addr.is_none_or(|a| v.spec.addr == *a))
        {
            self.zero_counters(PerCpuArrayRef::Service, v.id)?;
            for r in &v.reals {
                self.zero_counters(PerCpuArrayRef::Real, r.id)?;
            }
        }
        if let Some(a) = addr
            && !views.iter().any(|v| v.spec.addr == *a)
        {
            return Err(ControlError::NoSuchService);
        }
        Ok(())
    }

    /// The protocols a service can have (for callers building specs).
    pub fn protocols() -> [Protocol; 2] {
        [Protocol::Tcp, Protocol::Udp]
    }

    // ---- reading for listings (ipvsadm -c / --persistent-conn, director status) ----

    /// Every persistence template in the table, expired or not (callers judge liveness
    /// with the service's persistence timeout against [`monotonic_ns`]).
    pub fn persistence_templates(
        &self,
    ) -> Result<
        Vec<(
            director_common::conntrack::PersistKey,
            director_common::conntrack::PersistEntry,
        )>,
        ControlError,
    > {
        let mut out = Vec::new();
        for e in self.maps.persist.iter() {
            out.push(e.map_err(map_err(director_common::maps::PERSIST))?);
        }
        Ok(out)
    }

    /// Bring the maps back to a state every operation leaves, after a writer was killed in
    /// the middle of one (the CLI calls this when its writer marker says the previous
    /// writer did not finish). Each operation writes in an order that keeps the data path
    /// safe, but can leave work undone:
    /// - real slots whose service was removed (`delete_service` stopped early) are
    ///   cleared, with their flows;
    /// - every service whose active table differs from the table its reals give is
    ///   rebuilt (tables are a pure function of the reals), which completes an `add_real`
    ///   or `edit_real` and undoes a `delete_real` that stopped before clearing the slot.
    ///
    /// Returns (slots cleared, tables rebuilt).
    pub fn reconcile(&mut self) -> Result<(usize, usize), ControlError> {
        let services = self.services_raw()?;
        let mut cleared = 0;
        for (id, r) in self.reals_raw()? {
            if !services.iter().any(|(_, s)| s.id == r.service) {
                self.clear_real(id)?;
                self.purge_conns(|c| c.real == id)?;
                cleared += 1;
            }
        }
        let mut rebuilt = 0;
        for (key, svc) in services {
            let reals = self.reals_of(svc.id)?;
            let backends: Vec<Backend> = reals
                .iter()
                .map(|(id, r)| Backend {
                    id: *id,
                    addr: addr_from_16(&r.addr, r.family),
                    port: u16::from_be(r.port_be),
                    weight: r.weight,
                })
                .collect();
            let scheduler = Scheduler::from_u8(svc.scheduler).unwrap_or(Scheduler::Maglev);
            let expected = tables::build(scheduler, &backends, self.table_size);
            let half = (svc.active_half & 1) as u32;
            let base = (svc.id * 2 + half) * self.table_size;
            let mut same = svc.table_len[half as usize] as usize == expected.len();
            for (i, want) in expected.iter().enumerate() {
                if !same {
                    break;
                }
                let got = self
                    .maps
                    .tables
                    .get(&(base + i as u32), 0)
                    .map_err(map_err(director_common::maps::TABLES))?;
                same = got == *want;
            }
            if !same {
                self.write_table(key, svc, &reals)?;
                rebuilt += 1;
            }
        }
        Ok((cleared, rebuilt))
    }

    /// Entries in the connection table, both directions, live or expired but not yet
    /// evicted: how full the LRU table is.
    pub fn conn_table_entries(&self) -> Result<usize, ControlError> {
        let mut n = 0;
        for k in self.maps.conns.keys() {
            k.map_err(map_err(director_common::maps::CONNS))?;
            n += 1;
        }
        Ok(n)
    }
}

fn nr_cpus() -> Result<usize, ControlError> {
    aya::util::nr_cpus().map_err(|(_, e)| ControlError::Invalid(format!("counting CPUs: {e}")))
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
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
