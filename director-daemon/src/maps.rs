//! Where the daemon's writes go: the pinned maps of this network namespace (with the
//! writers' lock held around each batch, released between batches so the CLI can write
//! too), or an in-memory model (tests and the scale benchmark).

use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use director_common::stats::Stat;

use director_control::{
    Control, ControlError,
    control::{RealView, ServiceView},
    model::{RealSpec, ServiceAddr, ServiceSpec},
    state::{BeginWriteError, StateError, StateOptions},
};

use crate::config::{Capacity, service_label as label};

/// The map operations the daemon uses (the control library's, one to one).
pub trait Writer {
    fn services(&self) -> Result<Vec<ServiceView>, ControlError>;
    fn add_service(&mut self, spec: &ServiceSpec) -> Result<(), ControlError>;
    fn edit_service(&mut self, spec: &ServiceSpec) -> Result<(), ControlError>;
    fn delete_service(&mut self, addr: &ServiceAddr) -> Result<(), ControlError>;
    fn add_real(&mut self, svc: &ServiceAddr, real: &RealSpec) -> Result<(), ControlError>;
    fn edit_real(&mut self, svc: &ServiceAddr, real: &RealSpec) -> Result<(), ControlError>;
    fn delete_real(
        &mut self,
        svc: &ServiceAddr,
        addr: IpAddr,
        port: u16,
    ) -> Result<(), ControlError>;
}

impl Writer for Control {
    fn services(&self) -> Result<Vec<ServiceView>, ControlError> {
        Control::services(self)
    }
    fn add_service(&mut self, spec: &ServiceSpec) -> Result<(), ControlError> {
        Control::add_service(self, spec)
    }
    fn edit_service(&mut self, spec: &ServiceSpec) -> Result<(), ControlError> {
        Control::edit_service(self, spec)
    }
    fn delete_service(&mut self, addr: &ServiceAddr) -> Result<(), ControlError> {
        Control::delete_service(self, addr)
    }
    fn add_real(&mut self, svc: &ServiceAddr, real: &RealSpec) -> Result<(), ControlError> {
        Control::add_real(self, svc, real)
    }
    fn edit_real(&mut self, svc: &ServiceAddr, real: &RealSpec) -> Result<(), ControlError> {
        Control::edit_real(self, svc, real)
    }
    fn delete_real(
        &mut self,
        svc: &ServiceAddr,
        addr: IpAddr,
        port: u16,
    ) -> Result<(), ControlError> {
        Control::delete_real(self, svc, addr, port)
    }
}

/// What the metrics endpoint reads from the data path at each scrape.
#[derive(Clone, Debug, Default)]
pub struct DatapathSnapshot {
    pub stats: Vec<(Stat, u64)>,
    pub services: Vec<ServiceView>,
}

pub type Reader = Arc<dyn Fn() -> Result<DatapathSnapshot, MapsError> + Send + Sync>;

/// Why the maps could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    BeginWrite(#[from] BeginWriteError),
}

/// Where the daemon's state goes.
pub trait MapStore: Send {
    /// Read the services as they are now.
    fn read(&mut self) -> Result<Vec<ServiceView>, MapsError>;
    /// One batch of writes, with the writers' lock held for its duration.
    fn batch(
        &mut self,
        f: &mut dyn FnMut(&mut dyn Writer) -> Result<(), ControlError>,
    ) -> Result<(), MapsError>;
    /// Make the kernel resolve these neighbours; returns those still unresolved.
    fn resolve(&mut self, addrs: &[IpAddr]) -> Vec<IpAddr>;
    /// A reader of the data path's counters, for metrics.
    fn reader(&self) -> Reader;
    /// The slots of the data path, to refuse a configuration that cannot fit as a whole.
    fn capacity(&mut self) -> Result<Capacity, MapsError>;
    /// Whether the data path forwards here now (maps pinned and the program on at least
    /// one interface): a director announces its VIPs only then.
    fn attached(&mut self) -> bool {
        true
    }
}

/// The pinned maps of a network namespace (what `director attach` made).
pub struct PinnedMaps {
    state: StateOptions,
}

impl PinnedMaps {
    /// Fails clearly when the director is not attached here.
    pub fn open(state: StateOptions) -> Result<Self, MapsError> {
        state.open_control()?;
        Ok(Self { state })
    }
}

/// How long a batch waits for a real's neighbour entry before writing anyway.
const RESOLVE_TIMEOUT: Duration = Duration::from_millis(300);

impl MapStore for PinnedMaps {
    fn read(&mut self) -> Result<Vec<ServiceView>, MapsError> {
        Ok(self.state.open_control()?.services()?)
    }

    fn attached(&mut self) -> bool {
        let (Ok(maps), Ok(links)) = (self.state.maps_dir(), self.state.links_dir()) else {
            return false;
        };
        director_control::datapath::pins_exist(&maps)
            && !director_control::state::pinned_interfaces(&links).is_empty()
    }

    fn capacity(&mut self) -> Result<Capacity, MapsError> {
        let c = self.state.open_control()?;
        Ok(Capacity {
            services: c.service_capacity(),
            reals: c.real_capacity(),
        })
    }

    fn batch(
        &mut self,
        f: &mut dyn FnMut(&mut dyn Writer) -> Result<(), ControlError>,
    ) -> Result<(), MapsError> {
        // A writer's session, as the CLI writes: opened afresh each batch (after a detach
        // and a new attach the pins are new maps); a writer (CLI or daemon) killed in the
        // middle of its changes leaves its marker, and the next one completes them first.
        let mut session = self.state.begin_write()?;
        if let Some(r) = session.repaired() {
            log::warn!(
                "the previous writer was interrupted; completed its change ({} orphaned real slots cleared, {} service tables rebuilt)",
                r.slots_cleared,
                r.tables_rebuilt
            );
        }
        // Consecutive changes to one service's reals write its table once; every table
        // is written before the lock goes, also when a write failed.
        session.defer_tables(true)?;
        let before = session.real_addresses();
        let result = f(&mut *session);
        let flushed = session.defer_tables(false);
        let result = result.and(flushed);
        // After a failed batch the marker stays: the next writer repairs the maps first.
        if result.is_err() {
            session.left_undone();
        }
        let after = session.real_addresses();
        let result = result.and(session.finish());
        // Outside the lock (it waits on netlink): the neighbour entries made for reals
        // that are gone go too.
        if let (Ok(before), Ok(after)) = (before, after) {
            let gone: Vec<IpAddr> = before.into_iter().filter(|a| !after.contains(a)).collect();
            if let Err(e) = director_control::neighbours::release(&gone, &after) {
                log::warn!("removing the neighbour entries of removed reals: {e}");
            }
        }
        result.map_err(MapsError::from)
    }

    fn resolve(&mut self, addrs: &[IpAddr]) -> Vec<IpAddr> {
        director_control::neighbours::resolve(addrs, RESOLVE_TIMEOUT)
            .unwrap_or_else(|_| addrs.to_vec())
    }

    fn reader(&self) -> Reader {
        let state = self.state.clone();
        Arc::new(move || {
            let c = state.open_control()?;
            Ok(DatapathSnapshot {
                stats: c.stats()?,
                services: c.services()?,
            })
        })
    }
}

/// An in-memory stand-in for the maps: the same rules as the control library (ports of
/// DR/TUN reals normalised, errors for duplicates and unknowns), and a log of every write.
#[derive(Clone, Default)]
pub struct MemoryMaps {
    inner: Arc<Mutex<Memory>>,
}

#[derive(Default)]
struct Memory {
    services: BTreeMap<ServiceAddr, (ServiceSpec, Vec<RealSpec>)>,
    writes: Vec<String>,
    /// None: unlimited.
    capacity: Option<Capacity>,
}

impl MemoryMaps {
    pub fn new() -> Self {
        Self::default()
    }

    /// Hold at most this much, as an attached data path does.
    pub fn set_capacity(&self, capacity: Capacity) {
        self.lock().capacity = Some(capacity);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A real's weight, if it is in the service.
    pub fn weight(&self, svc: &ServiceAddr, addr: IpAddr, port: u16) -> Option<u32> {
        let m = self.lock();
        let (_, reals) = m.services.get(svc)?;
        reals
            .iter()
            .find(|r| r.addr == addr && r.port == port)
            .map(|r| r.weight)
    }

    /// The reals of a service, if it exists.
    pub fn reals(&self, svc: &ServiceAddr) -> Option<Vec<RealSpec>> {
        self.lock().services.get(svc).map(|(_, r)| r.clone())
    }

    pub fn service_addrs(&self) -> Vec<ServiceAddr> {
        self.lock().services.keys().copied().collect()
    }

    /// Every write so far ("add_real tcp/10.0.0.100:80 10.1.0.11:80 w1", ...).
    pub fn writes(&self) -> Vec<String> {
        self.lock().writes.clone()
    }

    pub fn clear_writes(&self) {
        self.lock().writes.clear();
    }
}

impl Writer for Memory {
    fn services(&self) -> Result<Vec<ServiceView>, ControlError> {
        Ok(self
            .services
            .values()
            .enumerate()
            .map(|(i, (spec, reals))| ServiceView {
                spec: spec.clone(),
                id: i as u32,
                stats: Default::default(),
                reals: reals
                    .iter()
                    .enumerate()
                    .map(|(j, r)| RealView {
                        id: j as u32 + 1,
                        spec: *r,
                        stats: Default::default(),
                    })
                    .collect(),
            })
            .collect())
    }

    fn add_service(&mut self, spec: &ServiceSpec) -> Result<(), ControlError> {
        if self.services.contains_key(&spec.addr) {
            return Err(ControlError::ServiceExists);
        }
        self.services.insert(spec.addr, (spec.clone(), Vec::new()));
        self.writes
            .push(format!("add_service {}", label(&spec.addr)));
        Ok(())
    }

    fn edit_service(&mut self, spec: &ServiceSpec) -> Result<(), ControlError> {
        let s = self
            .services
            .get_mut(&spec.addr)
            .ok_or(ControlError::NoSuchService)?;
        s.0 = spec.clone();
        self.writes
            .push(format!("edit_service {}", label(&spec.addr)));
        Ok(())
    }

    fn delete_service(&mut self, addr: &ServiceAddr) -> Result<(), ControlError> {
        self.services
            .remove(addr)
            .ok_or(ControlError::NoSuchService)?;
        self.writes.push(format!("delete_service {}", label(addr)));
        Ok(())
    }

    fn add_real(&mut self, svc: &ServiceAddr, real: &RealSpec) -> Result<(), ControlError> {
        let r = real.stored_under(svc);
        let s = self
            .services
            .get_mut(svc)
            .ok_or(ControlError::NoSuchService)?;
        if s.1.iter().any(|x| x.addr == r.addr && x.port == r.port) {
            return Err(ControlError::RealExists);
        }
        s.1.push(r);
        s.1.sort_by_key(|x| (x.addr, x.port));
        self.writes.push(format!(
            "add_real {} {}:{} w{}",
            label(svc),
            r.addr,
            r.port,
            r.weight
        ));
        Ok(())
    }

    fn edit_real(&mut self, svc: &ServiceAddr, real: &RealSpec) -> Result<(), ControlError> {
        let r = real.stored_under(svc);
        let s = self
            .services
            .get_mut(svc)
            .ok_or(ControlError::NoSuchService)?;
        let x =
            s.1.iter_mut()
                .find(|x| x.addr == r.addr && x.port == r.port)
                .ok_or(ControlError::NoSuchReal)?;
        *x = r;
        self.writes.push(format!(
            "edit_real {} {}:{} w{}",
            label(svc),
            r.addr,
            r.port,
            r.weight
        ));
        Ok(())
    }

    fn delete_real(
        &mut self,
        svc: &ServiceAddr,
        addr: IpAddr,
        port: u16,
    ) -> Result<(), ControlError> {
        let s = self
            .services
            .get_mut(svc)
            .ok_or(ControlError::NoSuchService)?;
        let port = if port == 0 { svc.port } else { port };
        let before = s.1.len();
        s.1.retain(|x| !(x.addr == addr && x.port == port));
        if s.1.len() == before {
            return Err(ControlError::NoSuchReal);
        }
        self.writes
            .push(format!("delete_real {} {addr}:{port}", label(svc)));
        Ok(())
    }
}

impl MapStore for MemoryMaps {
    fn read(&mut self) -> Result<Vec<ServiceView>, MapsError> {
        Ok(self.lock().services()?)
    }

    fn batch(
        &mut self,
        f: &mut dyn FnMut(&mut dyn Writer) -> Result<(), ControlError>,
    ) -> Result<(), MapsError> {
        let mut m = self.lock();
        Ok(f(&mut *m)?)
    }

    fn resolve(&mut self, _addrs: &[IpAddr]) -> Vec<IpAddr> {
        Vec::new()
    }

    fn capacity(&mut self) -> Result<Capacity, MapsError> {
        Ok(self.lock().capacity.unwrap_or(Capacity {
            services: u32::MAX,
            reals: u32::MAX,
        }))
    }

    fn reader(&self) -> Reader {
        let me = self.clone();
        Arc::new(move || {
            Ok(DatapathSnapshot {
                stats: Stat::ALL.iter().map(|s| (*s, 0)).collect(),
                services: me.lock().services()?,
            })
        })
    }
}
