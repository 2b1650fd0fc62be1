//! The test harness of the director: packet fixtures run through BPF_PROG_TEST_RUN
//! ([`fixture`]), network-namespace labs ([`lab`]), the standard director lab built with
//! them ([`lvs`]) and the scale-out lab of directors behind an ECMP router with BIRD
//! ([`scale_out`]). The integration tests in `tests/integration/`, the benchmark crate
//! and the demo use it; all of it needs root ([`require_root`]).

pub mod bpf;
pub mod conns6;
pub mod fixture;
pub mod fixture6;
pub mod host;
pub mod lab;
pub mod lvs;
mod root;
pub mod scale_out;

pub use root::{NEEDS_ROOT, require_root};
