//! Whether a valid configuration fits the data path it is applied to: the slots left by
//! the services the daemon does not manage, the fullest moment of applying it, and a
//! file that would remove every managed service without saying so.

use std::{collections::BTreeSet, net::IpAddr, path::PathBuf};

use director_control::{
    control::ServiceView,
    model::{RealSpec, ServiceAddr},
};

use super::model::{Config, ServiceConfig};

/// What the data path behind a map store holds (`director attach --max-services`,
/// `--max-reals`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    pub services: u32,
    /// Real servers over all services.
    pub reals: u32,
}

/// What a configuration is applied to: the attached data path's slots, the services in
/// its maps now, and those of them the daemon declared (its own to remove or change;
/// the others were made by hand or another tool and keep their slots).
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    pub capacity: Capacity,
    pub actual: &'a [ServiceView],
    pub owned: &'a BTreeSet<ServiceAddr>,
}

impl Config {
    /// Whether the whole configuration can be applied to `target`; one that cannot is
    /// refused as a whole (none of it applied) rather than applied up to the first
    /// service or real that finds no slot:
    /// - it must fit the slots left by the services the daemon does not manage;
    /// - it must not remove every service the daemon manages unless it says so
    ///   (`allow_empty = true`): an empty or truncated file is a mistake far more often
    ///   than an intent, and applying it would stop all traffic.
    pub fn applicable(&self, target: &Target<'_>) -> Result<(), NotApplicable> {
        let declared: BTreeSet<ServiceAddr> = self.services.iter().map(|s| s.spec.addr).collect();
        let others: Vec<&ServiceView> = target
            .actual
            .iter()
            .filter(|v| !declared.contains(&v.spec.addr) && !target.owned.contains(&v.spec.addr))
            .collect();
        let cap = target.capacity;
        let mut problems = Vec::new();
        let held = |n: usize, what: &str| {
            if n == 0 {
                String::new()
            } else {
                format!(
                    " and {n} {what} held by services the daemon does not manage (made with the command line or another tool)"
                )
            }
        };
        let services = self.services.len() + others.len();
        if services > cap.services as usize {
            problems.push(format!(
                "{} virtual services declared{}; the attached director holds at most {} (director attach --max-services)",
                self.services.len(),
                held(others.len(), "service slots"),
                cap.services
            ));
        }
        let other_reals: usize = others.iter().map(|v| v.reals.len()).sum();
        let reals = self.real_slots() + other_reals;
        if reals > cap.reals as usize {
            problems.push(format!(
                "{} real servers (with fallbacks) declared{}; the attached director holds at most {} in all (director attach --max-reals)",
                self.real_slots(),
                held(other_reals, "real slots"),
                cap.reals
            ));
        }
        let peak = self.peak_real_slots(target.actual, other_reals);
        if reals <= cap.reals as usize && peak > cap.reals as usize {
            problems.push(format!(
                "applying it needs {peak} real slots at once (a service's new reals are added before the reals it no longer has are removed, so that its traffic always has somewhere to go); the attached director holds at most {} in all (director attach --max-reals)",
                cap.reals
            ));
        }
        if self.services.is_empty() && !self.allow_empty {
            let removed = target
                .actual
                .iter()
                .filter(|v| target.owned.contains(&v.spec.addr))
                .count();
            if removed > 0 {
                problems.push(format!(
                    "no service declared: applying this would remove all {removed} services the daemon manages; if that is intended, put `allow_empty = true` at the top of the file"
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(NotApplicable {
                path: self.path.clone(),
                problems,
            })
        }
    }

    /// The real slots in use at the fullest moment of applying this configuration over
    /// `actual`, in the daemon's order: the services no longer declared removed first,
    /// then each declared service in address order, its new reals added before the
    /// ones it no longer has are removed.
    fn peak_real_slots(&self, actual: &[ServiceView], other_reals: usize) -> usize {
        let key = |r: &RealSpec| (r.addr, r.port);
        let have = |addr: &ServiceAddr| -> BTreeSet<(IpAddr, u16)> {
            actual
                .iter()
                .find(|v| v.spec.addr == *addr)
                .map(|v| v.reals.iter().map(|r| key(&r.spec)).collect())
                .unwrap_or_default()
        };
        let mut declared: Vec<&ServiceConfig> = self.services.iter().collect();
        declared.sort_by_key(|s| s.spec.addr);
        let mut in_use: usize = other_reals
            + declared
                .iter()
                .map(|s| have(&s.spec.addr).len())
                .sum::<usize>();
        let mut peak = in_use;
        for s in declared {
            let had = have(&s.spec.addr);
            let want: BTreeSet<(IpAddr, u16)> = s
                .reals
                .iter()
                .map(|r| key(&r.spec))
                .chain(s.fallback.as_ref().map(key))
                .collect();
            peak = peak.max(in_use - had.len() + had.union(&want).count());
            in_use = in_use - had.len() + want.len();
        }
        peak
    }
}

/// Why a configuration cannot be applied to the attached data path (none of it is).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {}", path.display(), problems.join("; "))]
pub struct NotApplicable {
    /// The file the configuration came from.
    pub path: PathBuf,
    /// Each reason, in words an operator acts on.
    pub problems: Vec<String>,
}
