//! Virtual service lookup: exact port first, then the service for every port (port 0).

use director_common::service::{Service, ServiceKey};

use crate::{maps::SERVICES, parse::Packet};

#[inline(always)]
pub fn lookup(pkt: &Packet) -> Option<Service> {
    let mut key = ServiceKey {
        addr: pkt.dst,
        port_be: pkt.dport_be,
        proto: pkt.proto,
        family: pkt.family,
    };
    if let Some(s) = unsafe { SERVICES.get(&key) } {
        return Some(*s);
    }
    key.port_be = 0;
    unsafe { SERVICES.get(&key) }.copied()
}
