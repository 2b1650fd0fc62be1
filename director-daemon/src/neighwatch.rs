//! Watching the kernel's neighbour and route changes, so that the data path's next-hop
//! caches (per real, and per client for NAT replies) follow a new MAC address or a new
//! route at once.
//!
//! The data path caches each real's FIB answer (next hop MAC, interface) per CPU for up
//! to a second, and each client's for the NAT replies; without this watcher a real, or a
//! client's router, whose MAC changed (a replaced NIC, a failover announced by
//! gratuitous ARP or unsolicited neighbour advertisement) would get frames for its old
//! MAC until then. The watcher listens to the rtnetlink groups of neighbours and of IPv4
//! and IPv6 routes:
//!
//! - a neighbour entry whose link-layer address or usability changed clears the cached
//!   next hop of every real reached through it (the real itself, or its gateway), and,
//!   when a service has NAT reals, the cached next hops of the clients on its interface
//!   (the client cache does not record which neighbour an entry goes through);
//!   changes of state alone (REACHABLE to STALE...) leave the caches alone;
//! - any route change (or lost notifications) clears every real's cached next hop and
//!   every client's, and asks the kernel to keep the reals' next hops resolved, since a
//!   new route may lead through a new gateway.

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
    time::Duration,
};

use director_common::real::Method;
use director_control::{
    Control,
    control::{ClientHops, ServiceView},
    neighbours,
    state::StateOptions,
};
use futures::StreamExt as _;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::{
    RouteNetlinkMessage,
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
};
use rtnetlink::MulticastGroup;

use crate::blocking;

/// A neighbour entry: (interface, address).
type Key = (u32, IpAddr);
/// Its link-layer address when usable (empty for a usable entry without one).
type Lladdr = Option<Vec<u8>>;
/// Neighbour entries as last notified.
type Seen = HashMap<Key, Lladdr>;

/// What one batch of notifications asks for.
#[derive(Debug, Default, PartialEq, Eq)]
struct Changes {
    /// Every real's next hop may have changed.
    all: bool,
    /// Neighbours whose link-layer address (or usability) changed.
    neighbours: Vec<IpAddr>,
    /// The interfaces of those neighbours.
    interfaces: BTreeSet<u32>,
}

/// The running watcher; stops when dropped.
pub(crate) struct Watcher {
    task: tokio::task::JoinHandle<()>,
    connection: tokio::task::JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
        self.connection.abort();
    }
}

/// Starts watching this network namespace (the calling thread's) for the director whose
/// pinned maps `state` names.
pub(crate) fn start(state: StateOptions) -> std::io::Result<Watcher> {
    let (connection, _handle, mut messages) = rtnetlink::new_multicast_connection(&[
        MulticastGroup::Neigh,
        MulticastGroup::Ipv4Route,
        MulticastGroup::Ipv6Route,
    ])?;
    let connection = tokio::spawn(connection);
    let task = tokio::spawn(async move {
        let mut seen = Seen::new();
        while let Some((first, _)) = messages.next().await {
            let mut changes = Changes::default();
            note(&mut seen, &mut changes, first);
            // Whatever else has queued up meanwhile is handled in the same pass.
            while let Ok((m, _)) = messages.try_recv() {
                note(&mut seen, &mut changes, m);
            }
            if changes.all || !changes.neighbours.is_empty() {
                let state = state.clone();
                blocking(move || apply(&state, &changes));
            }
        }
        log::warn!("the neighbour and route notifications stopped");
    });
    Ok(Watcher { task, connection })
}

/// Adds what one notification means to `changes`.
fn note(seen: &mut Seen, changes: &mut Changes, m: NetlinkMessage<RouteNetlinkMessage>) {
    match m.payload {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(n)) => {
            if let Some((key, mac)) = entry(&n)
                && seen.insert(key, mac.clone()) != Some(mac)
            {
                changes.neighbours.push(key.1);
                changes.interfaces.insert(key.0);
            }
        }
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelNeighbour(n)) => {
            if let Some((key, _)) = entry(&n) {
                seen.remove(&key);
                changes.neighbours.push(key.1);
                changes.interfaces.insert(key.0);
            }
        }
        NetlinkPayload::InnerMessage(
            RouteNetlinkMessage::NewRoute(_) | RouteNetlinkMessage::DelRoute(_),
        ) => changes.all = true,
        // Notifications were lost: anything may have changed.
        NetlinkPayload::Overrun(_) => {
            seen.clear();
            changes.all = true;
        }
        _ => {}
    }
}

/// The key of a neighbour notification, and its link-layer address if usable.
fn entry(n: &NeighbourMessage) -> Option<(Key, Lladdr)> {
    let mut addr = None;
    let mut mac = None;
    for a in &n.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                addr = Some(IpAddr::V4(*v4))
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                addr = Some(IpAddr::V6(*v6))
            }
            NeighbourAttribute::LinkLayerAddress(l) => mac = Some(l.clone()),
            _ => {}
        }
    }
    let usable = matches!(
        n.header.state,
        NeighbourState::Reachable
            | NeighbourState::Stale
            | NeighbourState::Delay
            | NeighbourState::Probe
            | NeighbourState::Permanent
            | NeighbourState::Noarp
    );
    // A usable entry without a link-layer address (NOARP) still differs from an unusable
    // one: it is an empty address.
    let mac = usable.then(|| mac.unwrap_or_default());
    Some(((n.header.ifindex, addr?), mac))
}

/// How long a route change waits for the new next hops to resolve: not at all, the
/// kernel resolves managed entries by itself.
const RESOLVE_NOW: Duration = Duration::ZERO;

/// Clears the cached next hops the changes concern (blocking: netlink and the maps).
fn apply(state: &StateOptions, changes: &Changes) {
    let mut control = match state.open_control() {
        Ok(c) => c,
        // Detached meanwhile: nothing is cached any more.
        Err(e) => {
            log::debug!("neighbour change: the maps are not there: {e}");
            return;
        }
    };
    let services = match control.services() {
        Ok(s) => s,
        Err(e) => {
            log::warn!("neighbour change: reading the reals: {e}");
            return;
        }
    };
    forget_client_hops(&mut control, &services, changes);
    let reals: Vec<IpAddr> = services
        .into_iter()
        .flat_map(|s| s.reals)
        .map(|r| r.spec.addr)
        .collect();
    if reals.is_empty() {
        return;
    }
    let affected: Vec<IpAddr> = if changes.all {
        if let Err(e) = neighbours::resolve(&reals, RESOLVE_NOW) {
            log::warn!("route change: resolving the reals' next hops: {e}");
        }
        reals
    } else {
        match neighbours::reals_by_neighbour(&reals) {
            Ok(by) => changes
                .neighbours
                .iter()
                .filter_map(|n| by.get(n))
                .flatten()
                .copied()
                .collect(),
            Err(e) => {
                log::warn!("neighbour change: looking up the reals' routes: {e}");
                reals
            }
        }
    };
    if affected.is_empty() {
        return;
    }
    match control.forget_next_hops(&affected) {
        Ok(ids) => log::debug!(
            "{} changed: cleared the cached next hop of reals {ids:?}",
            if changes.all {
                "a route"
            } else {
                "a neighbour"
            }
        ),
        Err(e) => log::warn!("clearing the reals' cached next hops: {e}"),
    }
}

/// Clears the cached next hops towards clients the changes concern: on the changed
/// neighbours' interfaces, or all of them after a route change. Only NAT replies use
/// that cache, so without a NAT real there is nothing to clear (an entry left from a
/// removed NAT real is never read again before it expires).
fn forget_client_hops(control: &mut Control, services: &[ServiceView], changes: &Changes) {
    let nat = services
        .iter()
        .flat_map(|s| &s.reals)
        .any(|r| r.spec.method == Method::Masq);
    if !nat {
        return;
    }
    let interfaces: Vec<u32> = changes.interfaces.iter().copied().collect();
    let which = if changes.all {
        ClientHops::All
    } else {
        ClientHops::Via(&interfaces)
    };
    match control.forget_client_hops(which) {
        Ok(0) => {}
        Ok(n) => log::debug!("cleared {n} cached next hops towards clients ({which:?})"),
        Err(e) => log::warn!("clearing the cached next hops towards clients: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::neighbour::NeighbourHeader;

    fn neigh(
        addr: [u8; 4],
        state: NeighbourState,
        mac: Option<[u8; 6]>,
    ) -> NetlinkMessage<RouteNetlinkMessage> {
        let mut n = NeighbourMessage::default();
        n.header = NeighbourHeader {
            ifindex: 2,
            state,
            ..NeighbourHeader::default()
        };
        n.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                addr.into(),
            )));
        if let Some(m) = mac {
            n.attributes
                .push(NeighbourAttribute::LinkLayerAddress(m.to_vec()));
        }
        NetlinkMessage::from(RouteNetlinkMessage::NewNeighbour(n))
    }

    #[test]
    fn only_a_new_mac_or_a_change_of_usability_counts() {
        let mut seen = Seen::new();
        let a = [10, 1, 0, 11];
        let ip = IpAddr::from(a);
        let (m1, m2) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        // An entry seen for the first time counts as changed: the watcher cannot know what
        // the data path cached before it started.
        let steps = [
            (neigh(a, NeighbourState::Incomplete, None), true),
            (neigh(a, NeighbourState::Reachable, Some(m1)), true),
            (neigh(a, NeighbourState::Stale, Some(m1)), false),
            (neigh(a, NeighbourState::Reachable, Some(m1)), false),
            (neigh(a, NeighbourState::Reachable, Some(m2)), true),
            (neigh(a, NeighbourState::Failed, Some(m2)), true),
        ];
        for (i, (m, changed)) in steps.into_iter().enumerate() {
            let mut c = Changes::default();
            note(&mut seen, &mut c, m);
            let expect = if changed { vec![ip] } else { vec![] };
            assert_eq!(c.neighbours, expect, "step {i}");
            let interfaces: Vec<u32> = c.interfaces.into_iter().collect();
            assert_eq!(
                interfaces,
                if changed { vec![2] } else { vec![] },
                "step {i}"
            );
            assert!(!c.all);
        }
    }

    #[test]
    fn a_route_change_concerns_every_real() {
        let mut c = Changes::default();
        let route = netlink_packet_route::route::RouteMessage::default();
        note(
            &mut Seen::new(),
            &mut c,
            NetlinkMessage::from(RouteNetlinkMessage::NewRoute(route)),
        );
        assert!(c.all);
    }
}
