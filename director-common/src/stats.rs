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
    /// forwarding disabled). Packets too big for the egress MTU have counters of their
    /// own (`icmp_too_big`, `drop_too_big`, `pass_too_big`).
    DropFib = 5,
    /// Passed to the kernel: the next hop's neighbour entry is missing. The kernel
    /// resolves it; the control side keeps reals resolved so this stays rare.
    PassNoNeigh = 6,
    /// Dropped: an IPv4 or IPv6 TCP/UDP frame whose headers contradict each other or the
    /// frame (total or payload length beyond the frame or below the header, an IPv6
    /// header of another version, a TCP data offset below 5 or beyond the segment, a
    /// truncated TCP header, a UDP length below 8 or beyond the segment). Never
    /// forwarded, never recorded; the kernel would discard it too.
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
    /// Dropped: a new flow for a virtual service from a source no host can have
    /// (0.0.0.0/8, 127.0.0.0/8, multicast, 240.0.0.0/4 incl. broadcast; IPv6's
    /// unspecified ::, loopback ::1, multicast ff00::/8; or the VIP itself). Never
    /// recorded as a connection.
    DropMartian = 17,
    /// Passed untouched: the frame is not addressed to this interface's own unicast MAC
    /// (broadcast, multicast, or another host's frame seen through switch flooding or
    /// promiscuous mode). A director never forwards what was not sent to it.
    PassOtherMac = 18,
    /// Passed untouched: an 802.1Q/802.1ad frame whose VLAN is not one the director
    /// balances (`director vlan`).
    PassVlan = 19,
    /// Answered: a packet with DF set that does not fit the egress MTU (after the tunnel
    /// header, for IPIP) was replaced by an ICMP "fragmentation needed" to its sender.
    IcmpTooBig = 20,
    /// Dropped without an answer: like `icmp_too_big`, but this CPU's ICMP token bucket
    /// was empty.
    IcmpTooBigLimited = 21,
    /// Dropped: a packet without DF that does not fit the egress MTU of a DR or IPIP real
    /// (XDP cannot fragment; see docs/datapath.md for how to avoid it).
    DropTooBig = 22,
    /// Passed to the kernel: a NAT packet that does not fit the egress MTU. Without DF
    /// the kernel fragments it; with DF (a real's reply, not yet translated) the kernel
    /// answers its sender with ICMP "fragmentation needed".
    PassTooBig = 23,
    /// An event, counted besides the outcome: an ICMP error about a virtual service's
    /// flow was sent to the real that owns the flow.
    IcmpToReal = 24,
    /// An event, counted besides the outcome: an ICMP error from a NAT real (or a router
    /// behind it) about a NAT flow was translated to the virtual address for the client.
    IcmpFromReal = 25,
    /// Passed to the kernel untranslated: a NAT reply with TTL <= 1 (the kernel, as the
    /// router it is, answers the real with ICMP "time exceeded").
    PassTtlExceeded = 26,
    /// Dropped: a packet matching a NAT reply entry arrived on an interface that is not
    /// the route to its real (a forged reply from the client side).
    DropSpoofedReply = 27,
    /// Decap program: IPIP for an outer destination that is no address of this host,
    /// passed to the kernel untouched (never unwrapped).
    DecapNotLocal = 28,
    /// Decap program, dropped: IPIP with an outer header the director never sends
    /// (options, lengths that disagree with the frame or the inner header, no IPv4
    /// inside).
    DecapMalformed = 29,
    /// Decap program, dropped: an outer fragment (the director never fragments).
    DecapFragment = 30,
    /// Decap program, dropped: outer TTL 0.
    DecapTtl = 31,
    /// Decap program, dropped: the outer source is not in the configured list of
    /// directors (`director decap attach IFACE --from ...`).
    DecapNotDirector = 32,
    /// An event, counted besides the outcome: a new flow forwarded by the consistent
    /// hash without a connection entry, because this CPU's new-flow rate is above the
    /// flood limit (DR and TUN; `director flood-limit`).
    ConnStateless = 33,
    /// Dropped: a new NAT flow during a flood (new-flow rate above the flood limit)
    /// whose entry would have replaced an established connection's.
    DropConnTableFull = 34,
    /// A later IPv4 fragment (no ports) of no datagram the director forwarded in the
    /// last 30 s: its first fragment has not come through yet (fragments overtook each
    /// other) or was not for a virtual service. Passed to the kernel untouched.
    PassFragment = 35,
    /// An event, counted besides the outcome: a later fragment was sent the way of its
    /// datagram's first fragment.
    FragmentForwarded = 36,
    /// GUE (on the configured port) for this host decapsulated and passed up (decap
    /// program; `decap` counts IPIP).
    DecapGue = 37,
    /// GRE for this host decapsulated and passed up (decap program).
    DecapGre = 38,
    /// An IPv6 frame passed to the kernel untouched because no IPv6 program is loaded
    /// (the balancer's IPv6 slot is empty).
    PassIpv6Unloaded = 39,
    /// An IPv6 packet whose extension headers (hop-by-hop, routing, destination options)
    /// are more than the data path skips to reach TCP/UDP: passed to the kernel
    /// untouched.
    PassIpv6ExtHeaders = 40,
}

impl Stat {
    pub const COUNT: u32 = 41;
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
        Stat::DropMartian,
        Stat::PassOtherMac,
        Stat::PassVlan,
        Stat::IcmpTooBig,
        Stat::IcmpTooBigLimited,
        Stat::DropTooBig,
        Stat::PassTooBig,
        Stat::IcmpToReal,
        Stat::IcmpFromReal,
        Stat::PassTtlExceeded,
        Stat::DropSpoofedReply,
        Stat::DecapNotLocal,
        Stat::DecapMalformed,
        Stat::DecapFragment,
        Stat::DecapTtl,
        Stat::DecapNotDirector,
        Stat::ConnStateless,
        Stat::DropConnTableFull,
        Stat::PassFragment,
        Stat::FragmentForwarded,
        Stat::DecapGue,
        Stat::DecapGre,
        Stat::PassIpv6Unloaded,
        Stat::PassIpv6ExtHeaders,
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
            Stat::DropMartian => "drop_martian",
            Stat::PassOtherMac => "pass_other_mac",
            Stat::PassVlan => "pass_vlan",
            Stat::IcmpTooBig => "icmp_too_big",
            Stat::IcmpTooBigLimited => "icmp_too_big_limited",
            Stat::DropTooBig => "drop_too_big",
            Stat::PassTooBig => "pass_too_big",
            Stat::IcmpToReal => "icmp_to_real",
            Stat::IcmpFromReal => "icmp_from_real",
            Stat::PassTtlExceeded => "pass_ttl_exceeded",
            Stat::DropSpoofedReply => "drop_spoofed_reply",
            Stat::DecapNotLocal => "decap_not_local",
            Stat::DecapMalformed => "decap_malformed",
            Stat::DecapFragment => "decap_fragment",
            Stat::DecapTtl => "decap_ttl",
            Stat::DecapNotDirector => "decap_not_director",
            Stat::ConnStateless => "conn_stateless",
            Stat::DropConnTableFull => "drop_conn_table_full",
            Stat::PassFragment => "pass_fragment",
            Stat::FragmentForwarded => "fragment_forwarded",
            Stat::DecapGue => "decap_gue",
            Stat::DecapGre => "decap_gre",
            Stat::PassIpv6Unloaded => "pass_ipv6_unloaded",
            Stat::PassIpv6ExtHeaders => "pass_ipv6_ext_headers",
        }
    }
}
