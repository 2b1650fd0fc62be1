//! Lookup tables of the schedulers, as pure functions of the reals and their weights.
//!
//! A table is a list of real ids; the data path indexes it by a hash (mh, sh) or by a
//! cursor (rr, wrr). Reals with weight 0 never appear, which is what makes them
//! quiescent: established flows are found in the connection table, new ones cannot land
//! there.
//!
//! Reals are ordered and hashed by their address and port, never by their slot id, so
//! two directors with the same reals and weights build the same table (stateless
//! failover between a director pair).

use std::net::IpAddr;

use director_common::{hash::hash_addr, service::Scheduler};

use crate::model::addr_to_16;

/// A real as the table builders see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backend {
    /// Real id written into the table (never 0).
    pub id: u32,
    /// The real's address: with `port`, what the builders order and hash reals by, so
    /// that directors with other slot ids build the same table.
    pub addr: IpAddr,
    /// The real's port (see `addr`).
    pub port: u16,
    /// The real's weight; a real of weight 0 is left out of the table.
    pub weight: u32,
}

/// Is `n` prime? (Maglev table sizes must be.)
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2u64;
    while d * d <= n as u64 {
        if (n as u64).is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

/// Table entries per real that keep Maglev's imbalance near 1 %.
pub const ENTRIES_PER_REAL: u32 = 100;

/// The reals a Maglev table of `size` entries serves well.
pub fn max_reals(size: u32) -> u32 {
    size / ENTRIES_PER_REAL
}

/// The smallest table size (a prime) that serves `reals` reals well.
pub fn size_for(reals: u32) -> u64 {
    let mut n = (reals as u64 * ENTRIES_PER_REAL as u64).max(2);
    while !is_prime_u64(n) {
        n += 1;
    }
    n
}

fn is_prime_u64(n: u64) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

fn sorted_available(backends: &[Backend]) -> Vec<Backend> {
    let mut v: Vec<Backend> = backends.iter().copied().filter(|b| b.weight > 0).collect();
    v.sort_by_key(|b| (b.addr, b.port));
    v
}

/// The table for a scheduler; at most `size` entries; empty when no real has weight.
pub fn build(scheduler: Scheduler, backends: &[Backend], size: u32) -> Vec<u32> {
    match scheduler {
        Scheduler::Maglev | Scheduler::SourceHash => maglev(backends, size),
        Scheduler::RoundRobin => sorted_available(backends).iter().map(|b| b.id).collect(),
        Scheduler::WeightedRoundRobin => smooth_wrr(backends, size),
    }
}

/// Weighted Maglev (Eisenbud et al., NSDI '16, with weights as in Katran): every real
/// walks its own permutation of the table and claims free slots in turns; a real with
/// weight w takes w turns for every `max weight` turns of the heaviest. `size` must be
/// prime so that every permutation visits every slot.
pub fn maglev(backends: &[Backend], size: u32) -> Vec<u32> {
    let reals = sorted_available(backends);
    if reals.is_empty() || size == 0 {
        return Vec::new();
    }
    let m = size as u64;
    let perms = permutations(&reals, m);
    let max_w = reals.iter().map(|b| b.weight as u64).max().unwrap_or(1);
    // Real i's j-th choice is (offset + j * skip) % m; kept as a running position
    // (offset and skip are below m, so one subtraction keeps it below m).
    let mut pos: Vec<u64> = perms.iter().map(|(offset, _)| *offset).collect();
    let mut credit = vec![0u64; reals.len()];
    let mut table = vec![0u32; size as usize];
    let mut filled = 0u64;
    loop {
        for (i, b) in reals.iter().enumerate() {
            credit[i] += b.weight as u64;
            while credit[i] >= max_w {
                credit[i] -= max_w;
                let skip = perms[i].1;
                loop {
                    let c = pos[i] as usize;
                    pos[i] += skip;
                    if pos[i] >= m {
                        pos[i] -= m;
                    }
                    if table[c] == 0 {
                        table[c] = b.id;
                        filled += 1;
                        break;
                    }
                }
                if filled == m {
                    return table;
                }
            }
        }
    }
}

/// Each real's permutation of a table of `m` entries: (offset, skip), both below m.
fn permutations(reals: &[Backend], m: u64) -> Vec<(u64, u64)> {
    reals
        .iter()
        .map(|b| {
            let (a, _) = addr_to_16(b.addr);
            let offset = hash_addr(&a, b.port as u32, 0x6d61_676c) as u64 % m;
            let skip = if m > 1 {
                hash_addr(&a, b.port as u32, 0x736b_6970) as u64 % (m - 1) + 1
            } else {
                1
            };
            (offset, skip)
        })
        .collect()
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Smooth weighted round robin (as nginx): each real appears as often as its weight
/// says, spread out rather than in bursts. Weights are reduced by their gcd and scaled
/// down (keeping every real at least once) when the sequence would not fit `size`.
pub fn smooth_wrr(backends: &[Backend], size: u32) -> Vec<u32> {
    let reals = sorted_available(backends);
    if reals.is_empty() {
        return Vec::new();
    }
    let g = reals.iter().fold(0u64, |g, b| gcd(g, b.weight as u64));
    let mut weights: Vec<u64> = reals.iter().map(|b| b.weight as u64 / g).collect();
    let total: u64 = weights.iter().sum();
    if total > size as u64 {
        for w in &mut weights {
            *w = (*w * size as u64 / total).max(1);
        }
    }
    let total: i64 = weights.iter().sum::<u64>() as i64;
    let mut current = vec![0i64; reals.len()];
    let mut seq = Vec::with_capacity(total as usize);
    for _ in 0..total.min(size as i64) {
        let mut best = 0;
        for i in 0..reals.len() {
            current[i] += weights[i] as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        seq.push(reals[best].id);
    }
    seq
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, net::Ipv4Addr};

    use director_common::hash::hash_flow;

    use super::*;

    fn backends(weights: &[u32]) -> Vec<Backend> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Backend {
                id: i as u32 + 1,
                addr: IpAddr::V4(Ipv4Addr::new(10, 1, 0, i as u8 + 1)),
                port: 80,
                weight: w,
            })
            .collect()
    }

    /// Where `n` distinct flows land, as the data path computes it.
    fn assign(table: &[u32], n: u32) -> Vec<u32> {
        (0..n)
            .map(|i| {
                let src = director_common::addr::v4_to_16([192, 0, (i >> 8) as u8, i as u8]);
                let sport = (1024 + (i % 50_000) as u16).to_be();
                table[(hash_flow(&src, sport, 80u16.to_be(), 6) % table.len() as u32) as usize]
            })
            .collect()
    }

    #[test]
    fn the_size_for_a_number_of_reals_is_the_next_prime() {
        assert_eq!(size_for(1_000), 100_003);
        assert_eq!(size_for(655), 65_519);
        assert_eq!(size_for(656), 65_609);
        assert!(max_reals(65_537) == 655 && max_reals(size_for(1_000) as u32) == 1_000);
    }

    #[test]
    fn primes() {
        assert!(is_prime(16_381) && is_prime(65_537) && is_prime(251));
        assert!(!is_prime(16_383) && !is_prime(1) && !is_prime(65_536));
    }

    /// Maglev as the paper writes it: the j-th choice of real i computed afresh.
    fn maglev_by_the_formula(backends: &[Backend], size: u32) -> Vec<u32> {
        let reals = sorted_available(backends);
        let m = size as u64;
        let perms = permutations(&reals, m);
        let max_w = reals.iter().map(|b| b.weight as u64).max().unwrap_or(1);
        let mut next = vec![0u64; reals.len()];
        let mut credit = vec![0u64; reals.len()];
        let mut table = vec![0u32; size as usize];
        let mut filled = 0u64;
        loop {
            for (i, b) in reals.iter().enumerate() {
                credit[i] += b.weight as u64;
                while credit[i] >= max_w {
                    credit[i] -= max_w;
                    let (offset, skip) = perms[i];
                    loop {
                        let c = ((offset + next[i] * skip) % m) as usize;
                        next[i] += 1;
                        if table[c] == 0 {
                            table[c] = b.id;
                            filled += 1;
                            break;
                        }
                    }
                    if filled == m {
                        return table;
                    }
                }
            }
        }
    }

    #[test]
    fn maglev_running_positions_give_the_formulas_table() {
        for (weights, size) in [
            (vec![1], 251),
            (vec![1, 2, 3], 251),
            (vec![1; 10], 16_381),
            (vec![3, 0, 7, 1, 1, 65535], 16_381),
            ((1..=100).collect::<Vec<u32>>(), 65_537),
        ] {
            let b = backends(&weights);
            assert_eq!(
                maglev(&b, size),
                maglev_by_the_formula(&b, size),
                "{weights:?}"
            );
        }
    }

    #[test]
    fn maglev_fills_every_slot_with_available_reals() {
        let t = maglev(&backends(&[1, 0, 3]), 251);
        assert_eq!(t.len(), 251);
        assert!(t.iter().all(|&id| id == 1 || id == 3));
    }

    #[test]
    fn maglev_weights_1_2_3_share_flows_within_2_points() {
        let t = maglev(&backends(&[1, 2, 3]), 16_381);
        let flows = assign(&t, 30_000);
        let mut count: HashMap<u32, u32> = HashMap::new();
        for id in flows {
            *count.entry(id).or_default() += 1;
        }
        for (id, want) in [(1, 1.0 / 6.0), (2, 2.0 / 6.0), (3, 3.0 / 6.0)] {
            let got = count[&id] as f64 / 30_000.0;
            eprintln!(
                "real {id}: {:.2}% of flows (weight share {:.2}%)",
                got * 100.0,
                want * 100.0
            );
            assert!((got - want).abs() < 0.02, "real {id}: {got} vs {want}");
        }
    }

    #[test]
    fn maglev_removing_one_of_ten_reals_moves_few_other_flows() {
        let all = backends(&[1; 10]);
        let before = assign(&maglev(&all, 16_381), 30_000);
        let fewer: Vec<Backend> = all.iter().copied().filter(|b| b.id != 4).collect();
        let after = assign(&maglev(&fewer, 16_381), 30_000);
        let (mut kept, mut moved) = (0u32, 0u32);
        for (b, a) in before.iter().zip(&after) {
            if *b == 4 {
                continue;
            }
            if a == b { kept += 1 } else { moved += 1 }
        }
        let share = moved as f64 / (kept + moved) as f64;
        eprintln!(
            "flows not on the removed real that moved: {moved} of {} ({:.2}%)",
            kept + moved,
            share * 100.0
        );
        assert!(share < 0.15, "{share}");
    }

    #[test]
    fn maglev_is_independent_of_real_ids_and_order() {
        let a = backends(&[1, 2, 3]);
        let mut b: Vec<Backend> = a.iter().rev().copied().collect();
        for x in &mut b {
            x.id += 100;
        }
        let ta: Vec<u32> = maglev(&a, 251);
        let tb: Vec<u32> = maglev(&b, 251).into_iter().map(|id| id - 100).collect();
        assert_eq!(ta, tb);
    }

    #[test]
    fn wrr_sequence_follows_weights_and_interleaves() {
        let s = smooth_wrr(&backends(&[4, 2, 0]), 1000);
        assert_eq!(s.len(), 3);
        assert_eq!(s.iter().filter(|&&x| x == 1).count(), 2);
        assert_eq!(s.iter().filter(|&&x| x == 2).count(), 1);
        let s = smooth_wrr(&backends(&[5, 1, 1]), 1000);
        assert_eq!(s, vec![1, 1, 2, 1, 3, 1, 1]);
    }

    #[test]
    fn rr_sequence_skips_quiescent_reals() {
        assert_eq!(
            build(Scheduler::RoundRobin, &backends(&[1, 0, 7]), 10),
            vec![1, 3]
        );
        assert!(build(Scheduler::Maglev, &backends(&[0, 0]), 251).is_empty());
    }
}
