//! The test harness of the director: packet fixtures run through BPF_PROG_TEST_RUN
//! ([`fixture`]), network-namespace labs ([`lab`]) and the standard director lab built
//! with them ([`lvs`]). The integration tests in `tests/integration/` and the benchmark
//! crate use it; all of it needs root ([`require_root`]).

pub mod bpf;
pub mod fixture;
pub mod host;
pub mod lab;
pub mod lvs;
mod root;

pub use root::{NEEDS_ROOT, require_root};
