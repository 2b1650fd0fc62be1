//! Keeping the neighbour entries of reals and next hops resolved, over rtnetlink.
//!
//! bpf_fib_lookup reads the kernel's neighbour table but never triggers ARP or neighbour
//! discovery, and a DR or TUN packet passed to the kernel instead would be delivered
//! locally (the VIP is ours) and reset. So the control side asks the kernel to resolve
//! every real before traffic needs it, and to keep it resolved:
//!
//! - The neighbour that counts is the real's next hop: the real itself when it is on a
//!   connected network, the gateway of the route to it otherwise (a route lookup,
//!   RTM_GETROUTE, gives the egress interface and the gateway).
//! - On that interface the director creates a *managed* neighbour entry (NTF_MANAGED,
//!   Linux 5.16 and later): the kernel resolves it at once, without any packet to the
//!   real, and re-probes it whenever it goes stale, as long as it exists. The entries are
//!   tagged with the protocol [`PROTO_DIRECTOR`] (`ip neigh` shows `proto 211`), which is
//!   how [`release`] finds the ones it may remove. Static (`PERMANENT`, `NOARP`) entries
//!   and entries another program manages are left as they are.
//! - On a kernel without managed entries, the entry is probed instead (NTF_USE), which
//!   resolves it once; the daemon then probes again whenever a real is unresolved.
//!
//! Everything here speaks rtnetlink on a socket of the calling thread's network
//! namespace, synchronously (the control library runs no async runtime).

use std::{
    collections::{BTreeSet, HashMap},
    fmt, io,
    net::IpAddr,
    os::fd::AsFd as _,
    sync::atomic::{AtomicU8, Ordering},
    time::{Duration, Instant},
};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkBuffer,
    NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    neighbour::{
        NeighbourAddress, NeighbourAttribute, NeighbourExtFlags, NeighbourFlags, NeighbourMessage,
        NeighbourState,
    },
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteType},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// The protocol tag of the neighbour entries the director creates (NDA_PROTOCOL; an
/// unassigned value of the kernel's route protocol numbers).
pub const PROTO_DIRECTOR: u8 = 211;

/// How long one netlink request may wait for the kernel's answer.
const NETLINK_TIMEOUT: Duration = Duration::from_secs(5);
/// How often [`resolve`] looks at the neighbour table while it waits.
const POLL: Duration = Duration::from_millis(10);

/// The kernel's state of a neighbour entry (`NUD_*`), as `ip neigh` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Being resolved (a solicitation is out).
    Incomplete,
    /// Confirmed recently.
    Reachable,
    /// Usable, not confirmed lately; the next use starts a check.
    Stale,
    /// Usable, waiting for a confirmation before probing.
    Delay,
    /// Usable, being probed.
    Probe,
    /// Resolution failed.
    Failed,
    /// No resolution needed (e.g. point-to-point links).
    NoArp,
    /// Configured statically.
    Permanent,
    /// Created, never resolved yet (e.g. a managed entry just made).
    None,
}

impl State {
    fn from_kernel(s: NeighbourState) -> Self {
        match s {
            NeighbourState::Incomplete => State::Incomplete,
            NeighbourState::Reachable => State::Reachable,
            NeighbourState::Stale => State::Stale,
            NeighbourState::Delay => State::Delay,
            NeighbourState::Probe => State::Probe,
            NeighbourState::Failed => State::Failed,
            NeighbourState::Noarp => State::NoArp,
            NeighbourState::Permanent => State::Permanent,
            _ => State::None,
        }
    }

    /// Whether the entry has a link-layer address the data path can use (`NUD_VALID`).
    pub fn is_valid(self) -> bool {
        matches!(
            self,
            State::Reachable
                | State::Stale
                | State::Delay
                | State::Probe
                | State::NoArp
                | State::Permanent
        )
    }

    /// The name `ip neigh` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Incomplete => "INCOMPLETE",
            State::Reachable => "REACHABLE",
            State::Stale => "STALE",
            State::Delay => "DELAY",
            State::Probe => "PROBE",
            State::Failed => "FAILED",
            State::NoArp => "NOARP",
            State::Permanent => "PERMANENT",
            State::None => "NONE",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of the kernel's neighbour table (either family).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbour {
    /// The neighbour's IP address.
    pub addr: IpAddr,
    /// The interface it is on.
    pub ifindex: u32,
    /// Its link-layer address, when the kernel knows one.
    pub mac: Option<[u8; 6]>,
    /// The kernel's state of the entry.
    pub state: State,
    /// The kernel keeps it resolved (NTF_MANAGED).
    pub managed: bool,
    /// Made by the director (tagged [`PROTO_DIRECTOR`]).
    pub ours: bool,
}

impl Neighbour {
    /// Whether the data path can forward to it now.
    pub fn is_resolved(&self) -> bool {
        self.state.is_valid() && (self.mac.is_some() || self.state == State::NoArp)
    }

    fn from_message(m: &NeighbourMessage) -> Option<Self> {
        let mut n = Neighbour {
            addr: IpAddr::from([0u8; 4]),
            ifindex: m.header.ifindex,
            mac: None,
            state: State::from_kernel(m.header.state),
            managed: false,
            ours: false,
        };
        let mut addr = None;
        for a in &m.attributes {
            match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                    addr = Some(IpAddr::V4(*v4))
                }
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                    addr = Some(IpAddr::V6(*v6))
                }
                NeighbourAttribute::LinkLayerAddress(l) => {
                    n.mac = <[u8; 6]>::try_from(l.as_slice()).ok()
                }
                NeighbourAttribute::ExtFlags(f) => {
                    n.managed = f.contains(NeighbourExtFlags::Managed)
                }
                NeighbourAttribute::Protocol(p) => n.ours = u8::from(*p) == PROTO_DIRECTOR,
                _ => {}
            }
        }
        n.addr = addr?;
        Some(n)
    }
}

/// Where the kernel would send a packet for an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// The address is one of this host's: no neighbour involved.
    Local,
    /// Through a neighbour on an interface.
    Hop(NextHop),
}

/// The neighbour a packet to an address goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NextHop {
    /// The egress interface.
    pub ifindex: u32,
    /// The neighbour: the gateway of the route, or the address itself on a connected
    /// network.
    pub neighbour: IpAddr,
    /// Whether `neighbour` is a gateway (not the address itself).
    pub gateway: bool,
}

/// What the kernel knows of one real's next hop, for a status listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealNeighbour {
    /// The real's address.
    pub real: IpAddr,
    /// The route to it, or why there is none.
    pub path: Result<Path, String>,
    /// The next hop's neighbour entry, if there is one.
    pub entry: Option<Neighbour>,
}

/// A synchronous rtnetlink socket of the calling thread's network namespace.
struct Rtnl {
    socket: Socket,
    seq: u32,
}

fn decode_err(e: impl fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("netlink: {e}"))
}

impl Rtnl {
    fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        nix::sys::socket::setsockopt(
            &socket.as_fd(),
            nix::sys::socket::sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::new(NETLINK_TIMEOUT.as_secs() as i64, 0),
        )
        .map_err(io::Error::from)?;
        Ok(Self { socket, seq: 0 })
    }

    /// Sends one request and collects the messages of its answer: a dump's until
    /// NLMSG_DONE, otherwise until the acknowledgement (requests are sent with NLM_F_ACK).
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags | if dump { 0 } else { NLM_F_ACK };
        header.sequence_number = self.seq;
        let mut req = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        req.finalize();
        let mut buf = vec![0; req.buffer_len()];
        req.serialize(&mut buf);
        self.socket.send(&buf, 0)?;
        let mut out = Vec::new();
        loop {
            let (data, _) = self.socket.recv_from_full()?;
            let mut off = 0;
            while off < data.len() {
                let len = NetlinkBuffer::new_checked(&data[off..])
                    .map_err(decode_err)?
                    .length() as usize;
                let bytes = &data[off..off + len];
                off += (len + 3) & !3;
                let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes)
                    .map_err(decode_err)?;
                if m.header.sequence_number != self.seq {
                    continue;
                }
                match m.payload {
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(out),
                            Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                        };
                    }
                    NetlinkPayload::InnerMessage(inner) => out.push(inner),
                    _ => {}
                }
            }
        }
    }

    fn neighbours(&mut self) -> io::Result<Vec<Neighbour>> {
        let answer = self.request(
            RouteNetlinkMessage::GetNeighbour(NeighbourMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(answer
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n) => Neighbour::from_message(n),
                _ => None,
            })
            .collect())
    }

    fn path(&mut self, dst: IpAddr) -> io::Result<Path> {
        let mut msg = RouteMessage::default();
        let (family, len, addr) = match dst {
            IpAddr::V4(a) => (AddressFamily::Inet, 32, RouteAddress::Inet(a)),
            IpAddr::V6(a) => (AddressFamily::Inet6, 128, RouteAddress::Inet6(a)),
        };
        msg.header.address_family = family;
        msg.header.destination_prefix_length = len;
        msg.attributes.push(RouteAttribute::Destination(addr));
        let no_route = || io::Error::new(io::ErrorKind::NotFound, format!("no route to {dst}"));
        let answer = self
            .request(RouteNetlinkMessage::GetRoute(msg), 0)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ENETUNREACH | libc::EHOSTUNREACH) => no_route(),
                _ => e,
            })?;
        let route = answer
            .iter()
            .find_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => Some(r),
                _ => None,
            })
            .ok_or_else(no_route)?;
        match route.header.kind {
            RouteType::Local => return Ok(Path::Local),
            RouteType::Unicast => {}
            _ => return Err(no_route()),
        }
        let mut hop = NextHop {
            ifindex: 0,
            neighbour: dst,
            gateway: false,
        };
        for a in &route.attributes {
            match a {
                RouteAttribute::Oif(i) => hop.ifindex = *i,
                RouteAttribute::Gateway(RouteAddress::Inet(g)) => {
                    hop.neighbour = IpAddr::V4(*g);
                    hop.gateway = true;
                }
                RouteAttribute::Gateway(RouteAddress::Inet6(g)) => {
                    hop.neighbour = IpAddr::V6(*g);
                    hop.gateway = true;
                }
                _ => {}
            }
        }
        if hop.ifindex == 0 {
            return Err(no_route());
        }
        Ok(Path::Hop(hop))
    }

    /// RTM_NEWNEIGH for `hop` (created if missing, replaced otherwise) with the given
    /// header flags and extended flags, tagged as ours.
    fn set_neighbour(
        &mut self,
        hop: &NextHop,
        flags: NeighbourFlags,
        ext: NeighbourExtFlags,
    ) -> io::Result<()> {
        let mut msg = neighbour_key(hop);
        msg.header.state = NeighbourState::None;
        msg.header.flags = flags;
        if !ext.is_empty() {
            msg.attributes.push(NeighbourAttribute::ExtFlags(ext));
        }
        msg.attributes
            .push(NeighbourAttribute::Protocol(RouteProtocol::from(
                PROTO_DIRECTOR,
            )));
        self.request(
            RouteNetlinkMessage::NewNeighbour(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .map(drop)
    }

    fn delete_neighbour(&mut self, n: &Neighbour) -> io::Result<()> {
        let msg = neighbour_key(&NextHop {
            ifindex: n.ifindex,
            neighbour: n.addr,
            gateway: false,
        });
        match self.request(RouteNetlinkMessage::DelNeighbour(msg), 0) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            r => r.map(drop),
        }
    }
}

/// A neighbour message naming one entry (family, interface, address).
fn neighbour_key(hop: &NextHop) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.ifindex = hop.ifindex;
    let (family, addr) = match hop.neighbour {
        IpAddr::V4(a) => (AddressFamily::Inet, NeighbourAddress::Inet(a)),
        IpAddr::V6(a) => (AddressFamily::Inet6, NeighbourAddress::Inet6(a)),
    };
    msg.header.family = family;
    msg.attributes.push(NeighbourAttribute::Destination(addr));
    msg
}

/// Every neighbour entry of this network namespace, both families.
pub fn neighbours() -> io::Result<Vec<Neighbour>> {
    Rtnl::open()?.neighbours()
}

/// Where a packet to `dst` goes: a route lookup (as `ip route get`).
pub fn path(dst: IpAddr) -> io::Result<Path> {
    Rtnl::open()?.path(dst)
}

/// The next hop and its neighbour entry of each real, for a status listing.
pub fn of_reals(reals: &[IpAddr]) -> io::Result<Vec<RealNeighbour>> {
    let mut rtnl = Rtnl::open()?;
    let table = rtnl.neighbours()?;
    Ok(reals
        .iter()
        .map(|&real| {
            let path = rtnl.path(real).map_err(|e| e.to_string());
            let entry = match &path {
                Ok(Path::Hop(hop)) => find(&table, hop).cloned(),
                _ => None,
            };
            RealNeighbour { real, path, entry }
        })
        .collect())
}

fn find<'a>(table: &'a [Neighbour], hop: &NextHop) -> Option<&'a Neighbour> {
    table
        .iter()
        .find(|n| n.addr == hop.neighbour && n.ifindex == hop.ifindex)
}

/// Whether this kernel keeps managed entries: unknown until the first one is made.
static MANAGED: AtomicU8 = AtomicU8::new(UNKNOWN);
const UNKNOWN: u8 = 0;
const SUPPORTED: u8 = 1;
const UNSUPPORTED: u8 = 2;

/// Makes the kernel resolve the next hop of every address in `addrs`, and keep it
/// resolved (a managed entry; a one-off probe on kernels without them), then waits up to
/// `timeout` for all of them. Returns the addresses whose next hop is still unresolved
/// (or that have no route). Local addresses need nothing. No packet is sent to any of
/// the addresses.
pub fn resolve(addrs: &[IpAddr], timeout: Duration) -> io::Result<Vec<IpAddr>> {
    let mut rtnl = Rtnl::open()?;
    let table = rtnl.neighbours()?;
    let mut waiting: Vec<(IpAddr, Option<NextHop>)> = Vec::new();
    for &addr in addrs {
        let hop = match rtnl.path(addr) {
            Ok(Path::Local) => continue,
            Ok(Path::Hop(hop)) => hop,
            Err(_) => {
                waiting.push((addr, None));
                continue;
            }
        };
        let entry = find(&table, &hop);
        let keep = match entry {
            // Static entries, and entries someone already keeps resolved, stay as they are.
            Some(n) if n.managed || matches!(n.state, State::Permanent | State::NoArp) => false,
            _ => true,
        };
        if keep {
            keep_resolved(&mut rtnl, &hop)?;
        }
        waiting.push((addr, Some(hop)));
    }
    let deadline = Instant::now() + timeout;
    loop {
        let table = rtnl.neighbours()?;
        waiting.retain(|(_, hop)| match hop {
            Some(hop) => !find(&table, hop).is_some_and(Neighbour::is_resolved),
            None => true,
        });
        if waiting.is_empty() || Instant::now() >= deadline {
            let mut left: Vec<IpAddr> = waiting.into_iter().map(|(a, _)| a).collect();
            left.dedup();
            return Ok(left);
        }
        std::thread::sleep(POLL);
    }
}

/// Makes `hop`'s entry managed, or probes it on a kernel that has no managed entries.
fn keep_resolved(rtnl: &mut Rtnl, hop: &NextHop) -> io::Result<()> {
    if MANAGED.load(Ordering::Relaxed) != UNSUPPORTED {
        rtnl.set_neighbour(hop, NeighbourFlags::empty(), NeighbourExtFlags::Managed)?;
        if MANAGED.load(Ordering::Relaxed) == SUPPORTED {
            return Ok(());
        }
        // A kernel older than 5.16 ignores the flag it does not know and makes a plain
        // entry: tell by looking.
        let managed = find(&rtnl.neighbours()?, hop).is_some_and(|n| n.managed);
        MANAGED.store(
            if managed { SUPPORTED } else { UNSUPPORTED },
            Ordering::Relaxed,
        );
        if managed {
            return Ok(());
        }
    }
    rtnl.set_neighbour(hop, NeighbourFlags::Use, NeighbourExtFlags::empty())
}

/// Removes the managed entries the director made for the next hops of `gone` (reals that
/// were removed), except those still the next hop of an address in `kept` (the reals that
/// remain). An entry removed is made again, unmanaged, the next time the kernel itself
/// sends to that neighbour. Returns how many entries were removed.
pub fn release(gone: &[IpAddr], kept: &[IpAddr]) -> io::Result<usize> {
    if gone.is_empty() {
        return Ok(0);
    }
    let mut rtnl = Rtnl::open()?;
    let mut hops = |addrs: &[IpAddr]| -> BTreeSet<(u32, IpAddr)> {
        addrs
            .iter()
            .filter_map(|a| match rtnl.path(*a) {
                Ok(Path::Hop(h)) => Some((h.ifindex, h.neighbour)),
                _ => None,
            })
            .collect()
    };
    let kept = hops(kept);
    let gone = hops(gone);
    let mut removed = 0;
    for n in rtnl.neighbours()? {
        let key = (n.ifindex, n.addr);
        if n.ours && n.managed && gone.contains(&key) && !kept.contains(&key) {
            rtnl.delete_neighbour(&n)?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// The next hops of `reals`, by neighbour address: which reals a change of one
/// neighbour entry concerns. Reals without a route (or local ones) are left out.
pub fn reals_by_neighbour(reals: &[IpAddr]) -> io::Result<HashMap<IpAddr, Vec<IpAddr>>> {
    let mut rtnl = Rtnl::open()?;
    let mut by: HashMap<IpAddr, Vec<IpAddr>> = HashMap::new();
    for &real in reals {
        if let Ok(Path::Hop(hop)) = rtnl.path(real) {
            by.entry(hop.neighbour).or_default().push(real);
        }
    }
    Ok(by)
}
