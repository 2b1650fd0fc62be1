//! The one precondition of every test in this crate, checked up front so that a plain
//! `cargo test` without privileges fails with what it needs, not with an `EPERM` from
//! somewhere inside a namespace or a program load.

/// What a test says when the process lacks the privileges the tests need.
pub const NEEDS_ROOT: &str =
    "needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN, bpffs): run `sudo cargo xtask test`";

/// Capabilities every lab and fixture uses: namespaces, links and routes
/// (CAP_NET_ADMIN); setns, mounting bpffs and loading programs (CAP_SYS_ADMIN).
const CAPS: [(u32, &str); 2] = [(12, "CAP_NET_ADMIN"), (21, "CAP_SYS_ADMIN")];

/// Panics with [`NEEDS_ROOT`] (and the capabilities that are missing) unless the process
/// holds what the tests need. Every test that touches namespaces, programs or bpffs calls
/// it first.
#[track_caller]
pub fn require_root() {
    let missing = missing_caps();
    if !missing.is_empty() {
        panic!("{NEEDS_ROOT}; this process lacks {}", missing.join(", "));
    }
}

/// The capabilities of [`CAPS`] missing from the effective set (all of them when the
/// set cannot be read).
fn missing_caps() -> Vec<&'static str> {
    let effective = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0);
    CAPS.iter()
        .filter(|(bit, _)| effective & (1 << bit) == 0)
        .map(|(_, name)| *name)
        .collect()
}
