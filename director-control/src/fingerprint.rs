//! One value that two directors can compare to know whether they schedule alike.
//!
//! Directors of a keepalived pair or an ECMP group send a flow to the same real only if
//! their services, scheduler settings and lookup tables agree. The tables hold real
//! slot ids, which differ between directors that were configured in another order, so
//! they cannot be compared as they are: a fingerprint resolves every table entry to the
//! real's address and port first. Two directors have the same fingerprint exactly when
//! every service they have picks the same real for every flow (up to SHA-256
//! collisions); the Maglev table size is part of it, since the same reals in tables of
//! another size send most flows elsewhere.

use std::{collections::BTreeMap, net::IpAddr};

use ring::digest::{Context, SHA256};

use crate::{
    Control, ControlError,
    model::{ServiceAddr, ServiceSpec, addr_to_16},
};

/// What a fingerprint covers, per service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceFingerprint {
    /// The service (protocol, virtual address, port) the fingerprint covers.
    pub addr: ServiceAddr,
    /// 16 hex digits.
    pub fingerprint: String,
}

/// A director's fingerprints: of the whole, and of each service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprints {
    /// Entries of each service's Maglev table.
    pub maglev_size: u32,
    /// 16 hex digits over every service (and the table size).
    pub director: String,
    /// Sorted by service.
    pub services: Vec<ServiceFingerprint>,
}

/// A service's fingerprint: its settings that steer a new flow (scheduler, hashing,
/// persistence), the table size, and its active table with each entry resolved to the
/// real's address and port.
pub fn service(spec: &ServiceSpec, table_size: u32, resolved: &[(IpAddr, u16)]) -> [u8; 32] {
    let mut ctx = Context::new(&SHA256);
    ctx.update(b"director service v1\0");
    service_identity(&mut ctx, &spec.addr);
    ctx.update(&[
        spec.scheduler as u8,
        spec.hash_port as u8,
        spec.hash_source_only as u8,
    ]);
    match spec.persistence {
        None => ctx.update(&[0]),
        Some(p) => {
            ctx.update(&[1]);
            ctx.update(&p.timeout_s.to_be_bytes());
            ctx.update(&addr_to_16(p.netmask).0);
        }
    }
    ctx.update(&table_size.to_be_bytes());
    // Each real of the table once, in address order, then the table as indices into
    // that list: the same as hashing every entry's address and port, in a fifth of the
    // bytes.
    let mut reals: Vec<(IpAddr, u16)> = resolved.to_vec();
    reals.sort();
    reals.dedup();
    ctx.update(&(reals.len() as u32).to_be_bytes());
    for (addr, port) in &reals {
        ctx.update(&addr_to_16(*addr).0);
        ctx.update(&port.to_be_bytes());
    }
    let index: BTreeMap<&(IpAddr, u16), u32> = reals
        .iter()
        .enumerate()
        .map(|(i, r)| (r, i as u32))
        .collect();
    ctx.update(&(resolved.len() as u32).to_be_bytes());
    let mut bytes = Vec::with_capacity(resolved.len() * 4);
    for r in resolved {
        bytes.extend_from_slice(&index[r].to_be_bytes());
    }
    ctx.update(&bytes);
    digest(ctx)
}

fn service_identity(ctx: &mut Context, addr: &ServiceAddr) {
    ctx.update(&[addr.proto.number()]);
    ctx.update(&addr_to_16(addr.addr).0);
    ctx.update(&addr.port.to_be_bytes());
}

fn digest(ctx: Context) -> [u8; 32] {
    ctx.finish()
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

/// The first 8 bytes in hex: enough to tell directors apart by eye.
fn short(d: &[u8; 32]) -> String {
    d[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The whole director's fingerprint from its services' (sorted by service).
pub fn director(table_size: u32, services: &[(ServiceAddr, [u8; 32])]) -> [u8; 32] {
    let mut ctx = Context::new(&SHA256);
    ctx.update(b"director v1\0");
    ctx.update(&table_size.to_be_bytes());
    ctx.update(&(services.len() as u32).to_be_bytes());
    for (addr, d) in services {
        service_identity(&mut ctx, addr);
        ctx.update(d);
    }
    digest(ctx)
}

/// Read every service's active table and fingerprint it.
pub fn read(c: &Control) -> Result<Fingerprints, ControlError> {
    let mut views = c.services()?;
    views.sort_by_key(|v| v.spec.addr);
    let mut each = Vec::with_capacity(views.len());
    for v in &views {
        let ids: BTreeMap<u32, (IpAddr, u16)> = v
            .reals
            .iter()
            .map(|r| (r.id, (r.spec.addr, r.spec.port)))
            .collect();
        let table = c.active_table(&v.spec.addr)?;
        // An entry naming no real of the service (a writer interrupted midway, until
        // the next one repairs it) sends its flows nowhere: it counts as such.
        let nowhere = (IpAddr::from([0, 0, 0, 0]), 0);
        let resolved: Vec<(IpAddr, u16)> = table
            .iter()
            .map(|id| ids.get(id).copied().unwrap_or(nowhere))
            .collect();
        each.push((v.spec.addr, service(&v.spec, c.table_size(), &resolved)));
    }
    Ok(Fingerprints {
        maglev_size: c.table_size(),
        director: short(&director(c.table_size(), &each)),
        services: each
            .iter()
            .map(|(addr, d)| ServiceFingerprint {
                addr: *addr,
                fingerprint: short(d),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use director_common::service::Scheduler;

    use super::*;
    use crate::{
        model::Protocol,
        tables::{self, Backend},
    };

    fn reals(order: &[u8], first_id: u32) -> Vec<Backend> {
        order
            .iter()
            .enumerate()
            .map(|(i, n)| Backend {
                id: first_id + i as u32,
                addr: IpAddr::V4(Ipv4Addr::new(10, 1, 0, *n)),
                port: 80,
                weight: *n as u32,
            })
            .collect()
    }

    /// The fingerprint of a Maglev service over `backends`, as a director computes it.
    fn fingerprint(spec: &ServiceSpec, backends: &[Backend], size: u32) -> [u8; 32] {
        let table = tables::build(spec.scheduler, backends, size);
        let resolved: Vec<(IpAddr, u16)> = table
            .iter()
            .map(|id| {
                let b = backends.iter().find(|b| b.id == *id).unwrap();
                (b.addr, b.port)
            })
            .collect();
        service(spec, size, &resolved)
    }

    #[test]
    fn equal_exactly_when_the_resolved_tables_and_settings_are() {
        let spec = ServiceSpec::new(Protocol::Tcp, "10.0.0.100".parse().unwrap(), 80);
        // Other slot ids, another order: the same scheduling, the same fingerprint.
        let a = fingerprint(&spec, &reals(&[11, 12, 13], 1), 251);
        let b = fingerprint(&spec, &reals(&[13, 11, 12], 40), 251);
        assert_eq!(a, b);
        // Another table size, another weight, another real, another scheduler setting:
        // flows go elsewhere, and the fingerprint differs.
        assert_ne!(a, fingerprint(&spec, &reals(&[11, 12, 13], 1), 257));
        let mut heavier = reals(&[11, 12, 13], 1);
        heavier[0].weight += 1;
        assert_ne!(a, fingerprint(&spec, &heavier, 251));
        assert_ne!(a, fingerprint(&spec, &reals(&[11, 12, 14], 1), 251));
        let source_only = ServiceSpec {
            hash_source_only: true,
            ..spec.clone()
        };
        assert_ne!(a, fingerprint(&source_only, &reals(&[11, 12, 13], 1), 251));
        let rr = spec.clone().scheduler(Scheduler::RoundRobin);
        assert_ne!(
            fingerprint(&rr, &reals(&[11, 12, 13], 1), 251),
            fingerprint(&rr, &reals(&[11, 12], 1), 251)
        );
        // A quiescent real is in no table: with or without it, flows go alike.
        let mut with_quiescent = reals(&[11, 12, 13, 14], 1);
        with_quiescent[3].weight = 0;
        assert_eq!(a, fingerprint(&spec, &with_quiescent, 251));
    }

    #[test]
    fn the_director_fingerprint_covers_every_service_and_the_table_size() {
        let svc = |port| ServiceAddr {
            proto: Protocol::Tcp,
            addr: "10.0.0.100".parse().unwrap(),
            port,
        };
        let (x, y) = ([1u8; 32], [2u8; 32]);
        let both = director(251, &[(svc(80), x), (svc(81), y)]);
        assert_eq!(both, director(251, &[(svc(80), x), (svc(81), y)]));
        assert_ne!(both, director(251, &[(svc(80), x)]));
        assert_ne!(both, director(251, &[(svc(80), x), (svc(81), x)]));
        assert_ne!(both, director(251, &[(svc(80), x), (svc(82), y)]));
        assert_ne!(both, director(257, &[(svc(80), x), (svc(81), y)]));
    }
}
