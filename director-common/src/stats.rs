//! Counters. All of them are per-CPU arrays; userspace sums the CPUs.

/// Per service and per real: what ipvsadm --stats shows.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// New connections scheduled.
    pub conns: u64,
    /// Packets and bytes from clients (towards the reals).
    pub pkts_in: u64,
    pub bytes_in: u64,
    /// Packets and bytes from the reals (NAT replies only: DR and TUN replies bypass us).
    pub pkts_out: u64,
    pub bytes_out: u64,
}

/// Global counters, one per outcome of a packet, indexed by this enum's value.
/// Every packet the program sees is counted exactly once.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    /// Not for a virtual service: passed to the kernel untouched.
    PassNotVip = 0,
    /// Not IPv4/IPv6 TCP/UDP (ARP, ICMP...): passed untouched.
    PassOtherProto = 1,
    /// Forwarded with XDP_TX (out of the interface it came in on).
    Tx = 2,
    /// Forwarded with XDP_REDIRECT (out of another interface).
    Redirect = 3,
    /// Dropped: the service has no real with weight > 0.
    DropNoReal = 4,
    /// Dropped: the FIB lookup for the real or next hop failed (no route, unreachable,
    /// forwarding disabled, MTU exceeded).
    DropFib = 5,
    /// Passed to the kernel: the next hop's neighbour entry is missing. The kernel
    /// resolves it; the control side keeps reals resolved so this stays rare.
    PassNoNeigh = 6,
    /// Dropped: a frame for a VIP too short for the headers it announces.
    DropMalformed = 7,
    /// Dropped: a later fragment of a datagram whose real has left its service since
    /// the first fragment went there (the rest of the datagram cannot be completed on
    /// another real).
    DropFragment = 8,
    /// Forwarded although the connection could not be recorded: another CPU was writing
    /// the same bucket of the connection table at that instant. The next packet of the
    /// flow records it.
    ConnInsertFailed = 9,
    /// Dropped: no room to add the tunnel header.
    DropEncap = 10,
    /// Dropped: the service's table points at a real slot that is not in use.
    DropBadReal = 11,
    /// IPIP for this host decapsulated and passed up (decap program).
    Decap = 12,
    /// A frame truncated below the headers it announces: passed, not parsed.
    PassTruncated = 13,
    /// Dropped: DR/TUN next hop has no neighbour entry (passing it would deliver the
    /// VIP packet locally and reset the client); the control side resolves reals.
    DropNoNeigh = 14,
    /// Not an outcome but an event, counted besides the outcome: a packet for a virtual
    /// service carried IPv4 options (they are kept and forwarded as they are).
    IpOptions = 15,
    /// An event, counted besides the outcome: a new entry replaced a live one because
    /// its bucket of the connection table was full (all ways live). Steady growth means
    /// the table is too small for the connections it holds (`director attach
    /// --conn-table`).
    ConnEvicted = 16,
    /// A later IPv4 fragment (no ports) of no datagram the director forwarded in the
    /// last 30 s: its first fragment has not come through yet (fragments overtook each
    /// other) or was not for a virtual service. Passed to the kernel untouched.
    PassFragment = 17,
    /// An event, counted besides the outcome: a later fragment was sent the way of its
    /// datagram's first fragment.
    FragmentForwarded = 18,
}

impl Stat {
    pub const COUNT: u32 = 19;
    pub const ALL: [Stat; Self::COUNT as usize] = [
        Stat::PassNotVip,
        Stat::PassOtherProto,
        Stat::Tx,
        Stat::Redirect,
        Stat::DropNoReal,
        Stat::DropFib,
        Stat::PassNoNeigh,
        Stat::DropMalformed,
        Stat::DropFragment,
        Stat::ConnInsertFailed,
        Stat::DropEncap,
        Stat::DropBadReal,
        Stat::Decap,
        Stat::PassTruncated,
        Stat::DropNoNeigh,
        Stat::IpOptions,
        Stat::ConnEvicted,
        Stat::PassFragment,
        Stat::FragmentForwarded,
    ];

    /// Stable name, used by `director status`, JSON output and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Stat::PassNotVip => "pass_not_vip",
            Stat::PassOtherProto => "pass_other_proto",
            Stat::Tx => "tx",
            Stat::Redirect => "redirect",
            Stat::DropNoReal => "drop_no_real",
            Stat::DropFib => "drop_fib",
            Stat::PassNoNeigh => "pass_no_neigh",
            Stat::DropMalformed => "drop_malformed",
            Stat::DropFragment => "drop_fragment",
            Stat::ConnInsertFailed => "conn_insert_failed",
            Stat::DropEncap => "drop_encap",
            Stat::DropBadReal => "drop_bad_real",
            Stat::Decap => "decap",
            Stat::PassTruncated => "pass_truncated",
            Stat::DropNoNeigh => "drop_no_neigh",
            Stat::IpOptions => "ip_options",
            Stat::ConnEvicted => "conn_evicted",
            Stat::PassFragment => "pass_fragment",
            Stat::FragmentForwarded => "fragment_forwarded",
        }
    }
}
