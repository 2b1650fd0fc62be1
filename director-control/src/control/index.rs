//! The control library's in-memory index of the maps: services by key, the reals of each
//! service, and the free service and real slots. Read from the maps once (and again
//! whenever another writer has changed them, which the write generation tells), then
//! kept up to date by every operation, so that an operation costs the few map writes it
//! makes instead of a scan of every slot.
//!
//! Pure bookkeeping: nothing here touches a map.

use std::collections::{BTreeSet, HashMap};

use director_common::{
    real::{REAL_F_PRESENT, REAL_F_RETIRED, Real},
    service::{Service, ServiceKey},
};

/// Where the next real goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RealSlot {
    /// A slot no connection entry names: use it.
    Clean(u32),
    /// Only retired slots are left: purge the connection entries that name them, then
    /// call [`Index::swept`] and ask again.
    NeedsSweep,
    /// Every slot holds a real.
    Full,
}

#[derive(Debug, Default)]
pub struct Index {
    /// The write generation this index reflects.
    pub generation: u64,
    services: HashMap<ServiceKey, Service>,
    /// Service slots below the capacity that no service (nor orphaned real) uses.
    free_services: BTreeSet<u32>,
    /// Reals of each service slot, in slot order.
    reals: HashMap<u32, Vec<(u32, Real)>>,
    /// Slots that held no real since the last sweep: no connection entry names them.
    clean: BTreeSet<u32>,
    /// Slots of removed reals that connection entries may still name.
    retired: BTreeSet<u32>,
    /// Reals whose service does not exist (a writer was killed while removing it).
    orphans: Vec<u32>,
}

impl Index {
    /// The index of `services` and the real slots `reals` (every slot, slot 0 included
    /// and ignored).
    pub fn new(
        generation: u64,
        service_capacity: u32,
        services: impl IntoIterator<Item = (ServiceKey, Service)>,
        reals: impl IntoIterator<Item = (u32, Real)>,
    ) -> Self {
        let services: HashMap<ServiceKey, Service> = services.into_iter().collect();
        let used: BTreeSet<u32> = services.values().map(|s| s.id).collect();
        let mut ix = Index {
            generation,
            ..Index::default()
        };
        let mut orphaned_services = BTreeSet::new();
        for (id, r) in reals {
            if id == 0 {
                continue;
            }
            if r.flags & REAL_F_PRESENT != 0 {
                if used.contains(&r.service) {
                    ix.reals.entry(r.service).or_default().push((id, r));
                } else {
                    // Its service slot stays taken until `repair_interrupted` clears it: a new
                    // service there would inherit the real.
                    orphaned_services.insert(r.service);
                    ix.orphans.push(id);
                }
            } else if r.flags & REAL_F_RETIRED != 0 {
                ix.retired.insert(id);
            } else {
                ix.clean.insert(id);
            }
        }
        for list in ix.reals.values_mut() {
            list.sort_by_key(|(id, _)| *id);
        }
        ix.free_services = (0..service_capacity)
            .filter(|i| !used.contains(i) && !orphaned_services.contains(i))
            .collect();
        ix.services = services;
        ix
    }

    // ---- services ----

    pub fn service(&self, key: &ServiceKey) -> Option<Service> {
        self.services.get(key).copied()
    }

    pub fn services(&self) -> impl Iterator<Item = (&ServiceKey, &Service)> {
        self.services.iter()
    }

    /// The lowest free service slot.
    pub fn free_service(&self) -> Option<u32> {
        self.free_services.first().copied()
    }

    /// A new service (its slot must be free) or a new value of an existing one (same
    /// slot).
    pub fn put_service(&mut self, key: ServiceKey, svc: Service) {
        self.free_services.remove(&svc.id);
        self.services.insert(key, svc);
    }

    /// Forget a service; its reals are retired and its slot is free again. Returns the
    /// slots of its reals.
    pub fn remove_service(&mut self, key: &ServiceKey) -> Vec<u32> {
        let Some(svc) = self.services.remove(key) else {
            return Vec::new();
        };
        let ids: Vec<u32> = self
            .reals
            .remove(&svc.id)
            .unwrap_or_default()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        self.retired.extend(ids.iter().copied());
        self.free_services.insert(svc.id);
        ids
    }

    // ---- reals ----

    pub fn reals_of(&self, service: u32) -> &[(u32, Real)] {
        self.reals.get(&service).map_or(&[], Vec::as_slice)
    }

    /// The real of a service with this address (in map layout, of `family`) and port.
    /// The family counts: an IPv4 address and an IPv6 one can have the same 16 bytes.
    pub fn find_real(
        &self,
        service: u32,
        addr: &[u8; 16],
        family: u8,
        port: u16,
    ) -> Option<(u32, Real)> {
        self.reals_of(service)
            .iter()
            .find(|(_, r)| r.addr == *addr && r.family == family && u16::from_be(r.port_be) == port)
            .copied()
    }

    /// Where the next real goes: the lowest clean slot.
    pub fn next_real_slot(&self) -> RealSlot {
        match self.clean.first() {
            Some(id) => RealSlot::Clean(*id),
            None if self.retired.is_empty() => RealSlot::Full,
            None => RealSlot::NeedsSweep,
        }
    }

    /// Slots whose connection entries a sweep purges.
    pub fn retired(&self) -> &BTreeSet<u32> {
        &self.retired
    }

    /// The connection entries of every retired slot are gone: the slots are clean.
    pub fn swept(&mut self) {
        let retired = std::mem::take(&mut self.retired);
        self.clean.extend(retired);
    }

    /// A new real in a clean slot, or a new value of a real in its slot. The real's
    /// service must be in the index.
    pub fn put_real(&mut self, id: u32, real: Real) {
        self.clean.remove(&id);
        let list = self.reals.entry(real.service).or_default();
        match list.binary_search_by_key(&id, |(i, _)| *i) {
            Ok(at) => list[at].1 = real,
            Err(at) => list.insert(at, (id, real)),
        }
    }

    /// A real removed from its service: its slot is retired.
    pub fn retire_real(&mut self, service: u32, id: u32) {
        if let Some(list) = self.reals.get_mut(&service) {
            list.retain(|(i, _)| *i != id);
            if list.is_empty() {
                self.reals.remove(&service);
            }
        }
        self.retired.insert(id);
    }

    /// Reals whose service does not exist.
    pub fn orphans(&self) -> &[u32] {
        &self.orphans
    }

    /// The orphans' slots are retired; their service slots are free again.
    pub fn orphans_cleared(&mut self, service_capacity: u32) {
        self.retired.extend(self.orphans.drain(..));
        let used: BTreeSet<u32> = self.services.values().map(|s| s.id).collect();
        self.free_services = (0..service_capacity)
            .filter(|i| !used.contains(i))
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use director_common::real::REAL_F_RETIRED;

    use super::*;

    fn key(n: u8) -> ServiceKey {
        ServiceKey {
            addr: [10, 0, 0, n, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            port_be: 80u16.to_be(),
            proto: 6,
            family: 2,
        }
    }

    fn svc(id: u32) -> Service {
        Service {
            id,
            ..Service::default()
        }
    }

    fn real(service: u32, last: u8, flags: u32) -> Real {
        Real {
            addr: [10, 1, 0, last, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            port_be: 80u16.to_be(),
            family: 2,
            service,
            weight: 1,
            flags,
            ..Real::default()
        }
    }

    fn slots(reals: &[(u32, Real)]) -> Vec<(u32, Real)> {
        // Slot 0 and every slot not listed are empty (never used).
        let n = reals.iter().map(|(i, _)| *i).max().unwrap_or(0) + 1;
        (0..n.max(8))
            .map(|i| {
                (
                    i,
                    reals
                        .iter()
                        .find(|(j, _)| *j == i)
                        .map_or(Real::default(), |(_, r)| *r),
                )
            })
            .collect()
    }

    #[test]
    fn reads_services_reals_and_free_slots_from_the_maps() {
        let ix = Index::new(
            7,
            4,
            [(key(1), svc(0)), (key(2), svc(2))],
            slots(&[
                (1, real(0, 11, REAL_F_PRESENT)),
                (2, real(2, 11, REAL_F_PRESENT)),
                (3, real(0, 12, REAL_F_PRESENT)),
                (4, real(0, 13, REAL_F_RETIRED)),
            ]),
        );
        assert_eq!(ix.generation, 7);
        assert_eq!(ix.service(&key(1)), Some(svc(0)));
        assert_eq!(ix.service(&key(3)), None);
        assert_eq!(ix.free_service(), Some(1));
        let ids: Vec<u32> = ix.reals_of(0).iter().map(|(i, _)| *i).collect();
        assert_eq!(ids, [1, 3]);
        assert_eq!(ix.find_real(0, &real(0, 12, 0).addr, 2, 80).unwrap().0, 3);
        assert_eq!(ix.find_real(0, &real(0, 12, 0).addr, 2, 81), None);
        assert_eq!(ix.find_real(2, &real(0, 12, 0).addr, 2, 80), None);
        // 10.1.0.12 and a:100:c:: have the same 16 bytes: another real.
        assert_eq!(ix.find_real(0, &real(0, 12, 0).addr, 10, 80), None);
        // Slot 0 is never a real; 4 is retired: 5 is the lowest clean slot.
        assert_eq!(ix.next_real_slot(), RealSlot::Clean(5));
        assert!(ix.orphans().is_empty());
    }

    #[test]
    fn slots_are_taken_lowest_first_and_a_removed_real_retires_its_slot() {
        let mut ix = Index::new(0, 2, [(key(1), svc(0))], slots(&[]));
        let mut taken = Vec::new();
        for n in 0..3 {
            let RealSlot::Clean(id) = ix.next_real_slot() else {
                panic!("no slot")
            };
            ix.put_real(id, real(0, 11 + n, REAL_F_PRESENT));
            taken.push(id);
        }
        assert_eq!(taken, [1, 2, 3]);
        ix.retire_real(0, 2);
        assert_eq!(ix.retired().iter().copied().collect::<Vec<_>>(), [2]);
        // A retired slot is not reused while a clean one is left.
        assert_eq!(ix.next_real_slot(), RealSlot::Clean(4));
        let ids: Vec<u32> = ix.reals_of(0).iter().map(|(i, _)| *i).collect();
        assert_eq!(ids, [1, 3]);
        // A new value of a real stays in its slot.
        let mut r = real(0, 13, REAL_F_PRESENT);
        r.weight = 5;
        ix.put_real(3, r);
        assert_eq!(ix.reals_of(0)[1], (3, r));
    }

    #[test]
    fn retired_slots_are_reused_only_after_a_sweep() {
        // Slots 1..=7 (slot 0 is never a real): 7 reals fill them.
        let mut ix = Index::new(0, 1, [(key(1), svc(0))], slots(&[]));
        for n in 1..=7u32 {
            assert_eq!(ix.next_real_slot(), RealSlot::Clean(n));
            ix.put_real(n, real(0, n as u8, REAL_F_PRESENT));
        }
        assert_eq!(ix.next_real_slot(), RealSlot::Full);
        ix.retire_real(0, 5);
        ix.retire_real(0, 2);
        assert_eq!(ix.next_real_slot(), RealSlot::NeedsSweep);
        ix.swept();
        assert!(ix.retired().is_empty());
        assert_eq!(ix.next_real_slot(), RealSlot::Clean(2));
        ix.put_real(2, real(0, 20, REAL_F_PRESENT));
        assert_eq!(ix.next_real_slot(), RealSlot::Clean(5));
    }

    #[test]
    fn removing_a_service_frees_its_slot_and_retires_its_reals() {
        let mut ix = Index::new(
            0,
            3,
            [(key(1), svc(0)), (key(2), svc(1))],
            slots(&[
                (1, real(0, 11, REAL_F_PRESENT)),
                (2, real(1, 11, REAL_F_PRESENT)),
                (3, real(0, 12, REAL_F_PRESENT)),
            ]),
        );
        assert_eq!(ix.free_service(), Some(2));
        assert_eq!(ix.remove_service(&key(1)), [1, 3]);
        assert_eq!(ix.remove_service(&key(1)), Vec::<u32>::new());
        assert_eq!(ix.free_service(), Some(0));
        assert!(ix.reals_of(0).is_empty());
        assert_eq!(ix.retired().iter().copied().collect::<Vec<_>>(), [1, 3]);
        assert_eq!(ix.reals_of(1).len(), 1);
        // The freed slot is taken by the next service.
        ix.put_service(key(3), svc(0));
        assert_eq!(ix.free_service(), Some(2));
        assert_eq!(ix.service(&key(3)), Some(svc(0)));
        // A new value of an existing service keeps its slot.
        let mut v = svc(1);
        v.active_half = 1;
        ix.put_service(key(2), v);
        assert_eq!(ix.service(&key(2)).unwrap().active_half, 1);
        assert_eq!(ix.free_service(), Some(2));
    }

    #[test]
    fn an_orphaned_real_keeps_its_service_slot_taken_until_cleared() {
        // Service slot 1 is gone but its real is still present (an interrupted -D).
        let mut ix = Index::new(
            0,
            3,
            [(key(1), svc(0))],
            slots(&[
                (1, real(0, 11, REAL_F_PRESENT)),
                (2, real(1, 11, REAL_F_PRESENT)),
            ]),
        );
        assert_eq!(ix.orphans(), [2]);
        assert_eq!(ix.free_service(), Some(2));
        assert!(ix.reals_of(1).is_empty());
        ix.orphans_cleared(3);
        assert!(ix.orphans().is_empty());
        assert_eq!(ix.free_service(), Some(1));
        assert_eq!(ix.retired().iter().copied().collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn a_full_service_table_has_no_free_slot() {
        let ix = Index::new(0, 2, [(key(1), svc(0)), (key(2), svc(1))], slots(&[]));
        assert_eq!(ix.free_service(), None);
    }
}
