//! The data path's next hops towards clients (`DIR_CLIENT_HOPS`, `DIR_CLIENT_HOPS6`):
//! where NAT replies go. Each CPU caches the FIB's answer for a client in a
//! direct-mapped slot for up to a second; a neighbour that changes its MAC (the client's
//! router replaced, a failover announced by gratuitous ARP) would get the replies at its
//! old MAC until then, unless the entries are cleared.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::maps::{MapData, PerCpuArray};
use director_common::{
    maps as names,
    real::{HopCache, HopCache6},
};

use super::{Control, ControlError, map_err, zero_slot};

/// One CPU's cached next hop towards a client, as the data path left it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientHop {
    /// The client (the NAT replies' destination).
    pub client: IpAddr,
    /// The virtual address the replies come from.
    pub vaddr: IpAddr,
    /// The interface the replies leave by.
    pub ifindex: u32,
    /// The next hop's MAC: the client's, or its router's.
    pub mac: [u8; 6],
}

/// Which cached client next hops to forget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientHops<'a> {
    /// Every one (a route changed: any client may have a new next hop).
    All,
    /// Those leaving by one of these interfaces (a neighbour on them changed).
    Via(&'a [u32]),
}

impl ClientHops<'_> {
    fn covers(&self, ifindex: u32) -> bool {
        match self {
            ClientHops::All => true,
            ClientHops::Via(ifindexes) => ifindexes.contains(&ifindex),
        }
    }
}

/// An entry of either family's cache, read as a client's next hop.
trait CachedHop: aya::Pod + Default {
    /// The entry, or `None` if the slot is empty.
    fn client_hop(&self) -> Option<ClientHop>;
}

impl CachedHop for HopCache {
    fn client_hop(&self) -> Option<ClientHop> {
        (self.at_ns != 0).then(|| ClientHop {
            client: IpAddr::V4(Ipv4Addr::from(self.dst)),
            vaddr: IpAddr::V4(Ipv4Addr::from(self.src)),
            ifindex: self.ifindex,
            mac: self.dmac,
        })
    }
}

impl CachedHop for HopCache6 {
    fn client_hop(&self) -> Option<ClientHop> {
        (self.at_ns != 0).then(|| ClientHop {
            client: IpAddr::V6(Ipv6Addr::from(self.dst)),
            vaddr: IpAddr::V6(Ipv6Addr::from(self.src)),
            ifindex: self.ifindex,
            mac: self.dmac,
        })
    }
}

impl Control {
    /// Every CPU's cached next hop towards a client, IPv4 and IPv6 (empty slots left
    /// out). Reads each slot of both caches (a syscall each).
    pub fn client_next_hops(&self) -> Result<Vec<ClientHop>, ControlError> {
        let mut hops = Vec::new();
        collect(&self.maps.client_hops, names::CLIENT_HOPS, &mut hops)?;
        collect(&self.maps.client_hops6, names::CLIENT_HOPS6, &mut hops)?;
        Ok(hops)
    }

    /// Forgets the data path's cached next hops towards clients that `which` names, in
    /// both families and on every CPU, so that the next NAT reply to such a client asks
    /// the FIB again: a neighbour's new MAC address or a new route reaches the replies at
    /// once instead of within the cache's TTL. Returns how many slots were cleared.
    ///
    /// The cache does not record which neighbour (gateway) an entry goes through, only
    /// its MAC and interface; a neighbour's change is therefore met by clearing every
    /// entry on its interface, which is sound (an entry through that neighbour leaves
    /// by that interface) and cheap (a cleared entry costs one FIB lookup at the next
    /// reply). Like the reals' cache, it only ever holds what the FIB said: clearing it
    /// needs no writer's lock.
    pub fn forget_client_hops(&mut self, which: ClientHops<'_>) -> Result<usize, ControlError> {
        let cpus = self.cpus;
        Ok(
            clear_where(&mut self.maps.client_hops, names::CLIENT_HOPS, cpus, which)?
                + clear_where(
                    &mut self.maps.client_hops6,
                    names::CLIENT_HOPS6,
                    cpus,
                    which,
                )?,
        )
    }
}

/// Appends every CPU's non-empty entry of `map` to `hops`.
fn collect<T: CachedHop>(
    map: &PerCpuArray<MapData, T>,
    name: &'static str,
    hops: &mut Vec<ClientHop>,
) -> Result<(), ControlError> {
    for values in map.iter() {
        let values = values.map_err(map_err(name))?;
        hops.extend(values.iter().filter_map(T::client_hop));
    }
    Ok(())
}

/// Zeroes every slot of `map` where some CPU's entry is one `which` names; the slots
/// cleared.
fn clear_where<T: CachedHop>(
    map: &mut PerCpuArray<MapData, T>,
    name: &'static str,
    cpus: usize,
    which: ClientHops<'_>,
) -> Result<usize, ControlError> {
    let mut slots = Vec::new();
    for (slot, values) in map.iter().enumerate() {
        let values = values.map_err(map_err(name))?;
        if values
            .iter()
            .any(|h| h.client_hop().is_some_and(|h| which.covers(h.ifindex)))
        {
            slots.push(slot as u32);
        }
    }
    for &slot in &slots {
        zero_slot(map, name, cpus, slot)?;
    }
    Ok(slots.len())
}
