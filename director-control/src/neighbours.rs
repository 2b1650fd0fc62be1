//! Keeping the neighbour entries of reals and next hops resolved.
//!
//! bpf_fib_lookup reads the kernel's neighbour table but never triggers ARP, and a DR or
//! TUN packet passed to the kernel instead would be delivered locally (the VIP is ours)
//! and reset. So the control side resolves every real before traffic needs it, and again
//! whenever an entry has gone (the daemon re-checks periodically).

use std::{
    collections::HashSet,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

/// IPv4 neighbours of the current network namespace whose link-layer address is known.
pub fn resolved_v4() -> std::io::Result<HashSet<Ipv4Addr>> {
    // /proc/thread-self/net follows this thread's network namespace.
    let table = std::fs::read_to_string("/proc/thread-self/net/arp")?;
    Ok(table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let flags = u32::from_str_radix(cols.get(2)?.trim_start_matches("0x"), 16).ok()?;
            // ATF_COM: the entry is complete.
            (flags & 0x2 != 0).then(|| cols[0].parse().ok())?
        })
        .collect())
}

/// Make the kernel resolve `addrs` (one datagram to the discard port of each makes it
/// ARP, as for any packet it sends), and wait up to `timeout` for their entries.
/// Returns the addresses that are still unresolved.
pub fn resolve_v4(addrs: &[Ipv4Addr], timeout: Duration) -> std::io::Result<Vec<Ipv4Addr>> {
    let known = resolved_v4()?;
    let missing: Vec<Ipv4Addr> = addrs
        .iter()
        .copied()
        .filter(|a| !known.contains(a))
        .collect();
    if missing.is_empty() {
        return Ok(missing);
    }
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    for a in &missing {
        // Errors (no route...) leave the address unresolved, which the caller reports.
        let _ = sock.send_to(b"", SocketAddr::from((*a, 9)));
    }
    let deadline = Instant::now() + timeout;
    loop {
        let known = resolved_v4()?;
        let left: Vec<Ipv4Addr> = missing
            .iter()
            .copied()
            .filter(|a| !known.contains(a))
            .collect();
        if left.is_empty() || Instant::now() >= deadline {
            return Ok(left);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
