//! Virtual service lookup: exact port first, then the service for every port (port 0).

use director_common::service::{Service, ServiceKey};

use crate::{maps::SERVICES, parse::Packet};

/// The virtual service a packet is for, if any.
#[inline(always)]
#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "a key passed by value gets a stack slot of its own"
)]
pub fn lookup(pkt: &Packet) -> Option<Service> {
    let mut key = ServiceKey {
        addr: pkt.dst,
        port_be: pkt.dport_be,
        proto: pkt.proto,
        family: pkt.family,
    };
    // SAFETY: the value is copied at once, and a `Service` is integers only: userspace
    // replacing it meanwhile gives the old or the new one's fields, never an invalid
    // value.
    let exact = unsafe { SERVICES.get(&key) };
    if let Some(s) = exact {
        return Some(*s);
    }
    key.port_be = 0;
    // SAFETY: as for the exact port.
    unsafe { SERVICES.get(&key) }.copied()
}
