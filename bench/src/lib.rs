//! The benchmark suite behind `cargo xtask bench`: the director against its
//! peers, measured side by side in one run, reported in `target/bench/` as a markdown
//! report and PNG plots. Benchmarks report; they never fail on a number. They do fail
//! when a measured run did not do what it was meant to (a wrong verdict, a flow that
//! was not new), because then the number would be about something else.
//!
//! Four parts, each its own module:
//! - [`testrun`]: the cost per packet of each forwarding method through
//!   BPF_PROG_TEST_RUN, next to the floor program, and how it scales with services,
//!   reals and connection-table fill;
//! - [`e2e`]: UDP packets and TCP connections through a namespace lab, for the director
//!   in each mode, nftables DNAT and plain routing, with the CPU each adds;
//! - [`control`]: Maglev table builds, the CLI restore path, pinned-map memory;
//! - [`report`]: the markdown report, the performance targets (met / not met), plots.
//!
//! Noise: a small machine may run other builds at the same time. Every
//! figure is a median over many samples taken in interleaved rounds (each round
//! measures every variant once, so a slow period hits all of them alike), costs are
//! differences against a baseline measured in the same round, and CPU is counted per
//! thread (schedstat), not machine-wide, so other processes' work is not counted.

pub mod control;
pub mod e2e;
mod plot;
pub mod report;
pub mod testrun;

// Shared with the integration tests, which time and pin the same way.
pub use director_tests::{
    bpf,
    host::{BpffsDir, online_cpus, pin_thread, unpin_thread},
};

/// How much to measure.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Fewer rounds and samples everywhere (a smoke run of the whole suite).
    pub quick: bool,
    /// Instead of part 1, loop the cases whose label contains this for a few seconds
    /// each (to profile the data path: `perf record -g -- bench --profile "DR TCP new"`).
    pub profile: Option<String>,
    /// Iterations per test-run call of part 1, instead of the mode's: for the cases that
    /// add no table entry, and for never-seen flows (`--calls EST,NEW`; to see what the
    /// calls' length does to the figures).
    pub calls: Option<(u32, u32)>,
}

/// A distribution of samples: median and the 10th..90th percentile spread.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Dist {
    pub median: f64,
    pub p10: f64,
    pub p90: f64,
    pub n: usize,
}

impl Dist {
    /// Of `samples` (any order); all zero when empty.
    pub fn of(samples: &[f64]) -> Dist {
        if samples.is_empty() {
            return Dist::default();
        }
        let mut v = samples.to_vec();
        v.sort_by(f64::total_cmp);
        let at = |q: f64| {
            let pos = (v.len() - 1) as f64 * q;
            let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
            v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
        };
        Dist {
            median: at(0.5),
            p10: at(0.1),
            p90: at(0.9),
            n: v.len(),
        }
    }

    /// `median (p10..p90)` with `digits` decimals.
    pub fn show(&self, digits: usize) -> String {
        format!(
            "{:.d$} ({:.d$}..{:.d$})",
            self.median,
            self.p10,
            self.p90,
            d = digits
        )
    }
}

/// The CPU the measurements run on: the last one (CPU 0 takes most device interrupts).
pub fn bench_cpu() -> usize {
    online_cpus().saturating_sub(1)
}

/// Formats a number with thousands separators (`12,345`).
pub fn thousands(n: f64) -> String {
    let s = format!("{:.0}", n.abs());
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0.0 && s != "0" {
        out.insert(0, '-');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dist_interpolates_percentiles() {
        let d = Dist::of(&[5.0, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!(d.median, 3.0);
        assert!((d.p10 - 1.4).abs() < 1e-9);
        assert!((d.p90 - 4.6).abs() < 1e-9);
        assert_eq!(Dist::of(&[]).n, 0);
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(-1000.0), "-1,000");
    }
}
