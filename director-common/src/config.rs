//! Run-time settings the data path reads (one entry of the settings array).

/// Nanoseconds per second: the data path's clock counts nanoseconds, its settings count
/// seconds.
pub const NS_PER_S: u64 = 1_000_000_000;

// IPVS's default timeouts, settable with `ipvsadm --set tcp tcpfin udp` (those of
// SYN_RECV and CLOSE are not settable: see `crate::conn_state`).
/// Default timeout of an established TCP connection.
pub const DEFAULT_TCP_TIMEOUT_S: u32 = 900;
/// Default timeout of a TCP connection after its FIN.
pub const DEFAULT_TCP_FIN_TIMEOUT_S: u32 = 120;
/// Default timeout of a UDP flow.
pub const DEFAULT_UDP_TIMEOUT_S: u32 = 300;

/// Debug mode: the data path logs scheduling decisions through aya-log. Off by default;
/// `director debug on|off` switches it at run time.
pub const SETTINGS_F_DEBUG: u32 = 1 << 0;

/// Default flood limit: new flows per second per CPU (`director flood-limit`).
pub const DEFAULT_FLOOD_LIMIT: u32 = 50_000;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub tcp_timeout_s: u32,
    pub tcp_fin_timeout_s: u32,
    pub udp_timeout_s: u32,
    /// `SETTINGS_F_*`.
    pub flags: u32,
    /// Seed of the connection table's bucket hash, drawn at random when the maps are
    /// created and kept with them: 5-tuples cannot be chosen to crowd one bucket, and a
    /// program loaded later over the same maps finds the entries where they are.
    pub conn_seed: u32,
    /// New flows per second per CPU above which that CPU forwards the rest of the
    /// second's new DR and TUN flows without a connection entry, and records new NAT
    /// flows only where no established connection is displaced (docs/datapath.md,
    /// "Floods"). 0: no limit.
    pub flood_limit: u32,
}

/// Per CPU: new flows seen in the current one-second window (`DIR_FLOOD`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FloodMeter {
    /// bpf_ktime_get_coarse_ns() at the start of the window.
    pub window_ns: u64,
    pub flows: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            tcp_timeout_s: DEFAULT_TCP_TIMEOUT_S,
            tcp_fin_timeout_s: DEFAULT_TCP_FIN_TIMEOUT_S,
            udp_timeout_s: DEFAULT_UDP_TIMEOUT_S,
            flags: 0,
            conn_seed: 0,
            flood_limit: DEFAULT_FLOOD_LIMIT,
        }
    }
}
