//! `consistent_hash`: a hash of the request's key (client IP, a header, a
//! cookie or the path) on a ring of virtual nodes (Karger et al. 1997, as
//! ketama and nginx's `hash ... consistent`), 160 points per server on average,
//! in proportion to weight. A ring rather than a Maglev table: removing a
//! server moves exactly its own keys, and adding one moves only keys to it.
//! Lookup is a binary search: O(log n).
//!
//! With a balance factor c (Mirrokni, Thorup, Zadimoghaddam, "Consistent
//! Hashing with Bounded Loads", 2018; HAProxy's `hash-balance-factor`), a
//! server already at ceil(c x (pool in-flight + 1) / servers) requests is
//! passed over for the next server on the ring, so a hot key cannot overload
//! one server. A request without a key is balanced round-robin.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use super::load::Loads;
use super::round_robin::RoundRobin;

/// Ring points per server, on average.
const POINTS_PER_SERVER: u64 = 160;

/// The hash of a request key.
pub fn key_hash(key: &[u8]) -> u64 {
    xxh3_64(key)
}

#[derive(Debug)]
pub struct ConsistentHash {
    /// (point, server index), sorted by point.
    ring: Vec<(u64, u32)>,
    len: usize,
    balance_factor: Option<f64>,
    keyless: RoundRobin,
}

impl ConsistentHash {
    /// A ring for servers given as (address, weight); the address places them.
    pub fn new(servers: &[(&str, u32)], balance_factor: Option<f64>) -> ConsistentHash {
        let total_weight: u64 = servers.iter().map(|(_, w)| u64::from(*w)).sum();
        let total_points = POINTS_PER_SERVER * servers.len() as u64;
        let mut ring = Vec::with_capacity(total_points as usize + servers.len());
        for (index, (addr, weight)) in servers.iter().enumerate() {
            let points = (total_points * u64::from(*weight) / total_weight.max(1)).max(1);
            for point in 0..points {
                ring.push((xxh3_64_with_seed(addr.as_bytes(), point), index as u32));
            }
        }
        ring.sort_unstable();
        ConsistentHash {
            ring,
            len: servers.len(),
            balance_factor,
            keyless: RoundRobin::new(servers.len()),
        }
    }

    pub fn pick(
        &self,
        key: Option<u64>,
        loads: &impl Loads,
        mut candidate: impl FnMut(usize) -> bool,
    ) -> Option<usize> {
        let Some(hash) = key else {
            return self.keyless.pick(candidate);
        };
        if self.ring.is_empty() {
            return None;
        }
        let capacity = self.balance_factor.map(|factor| {
            ((factor * (loads.pool_in_flight() + 1) as f64) / self.len as f64).ceil() as u64
        });
        let start = self.ring.partition_point(|&(point, _)| point < hash);
        let mut first_candidate = None;
        for step in 0..self.ring.len() {
            let server = self.ring[(start + step) % self.ring.len()].1 as usize;
            if !candidate(server) {
                continue;
            }
            match capacity {
                Some(capacity) if loads.in_flight(server) + 1 > capacity => {
                    first_candidate.get_or_insert(server);
                }
                _ => return Some(server),
            }
        }
        first_candidate
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::FixedLoads;
    use super::*;

    fn servers(count: usize) -> Vec<String> {
        (0..count)
            .map(|i| format!("10.0.0.{}:8080", i + 1))
            .collect()
    }

    fn ring(addrs: &[String]) -> ConsistentHash {
        let servers: Vec<(&str, u32)> = addrs.iter().map(|a| (a.as_str(), 1)).collect();
        ConsistentHash::new(&servers, None)
    }

    fn owners(ring: &ConsistentHash, addrs: &[String], keys: u64) -> Vec<String> {
        let loads = FixedLoads::in_flight(&vec![0; addrs.len()]);
        (0..keys)
            .map(|k| {
                let index = ring
                    .pick(Some(key_hash(&k.to_le_bytes())), &loads, |_| true)
                    .unwrap();
                addrs[index].clone()
            })
            .collect()
    }

    #[test]
    fn adding_a_fifth_server_moves_few_keys_and_only_to_it() {
        let four = servers(4);
        let five = servers(5);
        let before = owners(&ring(&four), &four, 10_000);
        let after = owners(&ring(&five), &five, 10_000);
        let moved: Vec<usize> = (0..10_000).filter(|&k| before[k] != after[k]).collect();
        assert!(
            moved.len() <= 2_500,
            "{} of 10000 keys moved (ideal 2000)",
            moved.len()
        );
        assert!(
            moved.iter().all(|&k| after[k] == five[4]),
            "a key moved between old servers"
        );
        // Spread: each of five servers holds 20% +- 6%.
        for addr in &five {
            let share = after.iter().filter(|a| *a == addr).count();
            assert!((1_400..=2_600).contains(&share), "{addr} holds {share}");
        }
    }

    #[test]
    fn removing_a_server_moves_only_its_keys() {
        let four = servers(4);
        let three: Vec<String> = four.iter().filter(|a| **a != four[1]).cloned().collect();
        let before = owners(&ring(&four), &four, 10_000);
        let after = owners(&ring(&three), &three, 10_000);
        for k in 0..10_000 {
            if before[k] != four[1] {
                assert_eq!(
                    before[k], after[k],
                    "key {k} moved though its server stayed"
                );
            }
        }
    }

    #[test]
    fn weights_scale_the_share() {
        let addrs = servers(2);
        let ring = ConsistentHash::new(&[(addrs[0].as_str(), 3), (addrs[1].as_str(), 1)], None);
        let owned = owners(&ring, &addrs, 10_000);
        let first = owned.iter().filter(|a| **a == addrs[0]).count();
        assert!((6_800..=8_200).contains(&first), "{first}");
    }

    /// Zipf-skewed keys (s = 1.1 over 1,000 keys) with 64 requests always in
    /// flight: with factor 1.25 no server ever holds more than
    /// ceil(1.25 x average); without it the hottest key's server does.
    #[test]
    fn bounded_loads_hold_under_zipf_keys() {
        fastrand::seed(9);
        let weights: Vec<f64> = (1..=1000)
            .map(|rank| 1.0 / f64::powf(rank as f64, 1.1))
            .collect();
        let total: f64 = weights.iter().sum();
        let zipf_key = || {
            let mut ticket = fastrand::f64() * total;
            for (key, weight) in weights.iter().enumerate() {
                ticket -= weight;
                if ticket <= 0.0 {
                    return key as u64;
                }
            }
            999
        };
        let addrs = servers(8);
        let pool: Vec<(&str, u32)> = addrs.iter().map(|a| (a.as_str(), 1)).collect();
        let worst = |factor: Option<f64>| {
            let ring = ConsistentHash::new(&pool, factor);
            let mut loads = FixedLoads::in_flight(&[0; 8]);
            let mut active = std::collections::VecDeque::new();
            let mut worst_ratio: f64 = 0.0;
            for _ in 0..20_000 {
                if active.len() == 64 {
                    let done: usize = active.pop_front().unwrap();
                    loads.in_flight[done] -= 1;
                }
                let key = Some(key_hash(&zipf_key().to_le_bytes()));
                let server = ring.pick(key, &loads, |_| true).unwrap();
                loads.in_flight[server] += 1;
                active.push_back(server);
                let total = loads.pool_in_flight() as f64;
                if let Some(factor) = factor {
                    let capacity = (factor * total / 8.0).ceil() as u64;
                    assert!(
                        loads.in_flight[server] <= capacity,
                        "over capacity at {total} in flight"
                    );
                }
                if active.len() == 64 {
                    worst_ratio = worst_ratio.max(loads.in_flight[server] as f64 / (total / 8.0));
                }
            }
            worst_ratio
        };
        let bounded = worst(Some(1.25));
        assert!(
            bounded <= 1.25,
            "bounded loads reached {bounded:.2}x the average"
        );
        let unbounded = worst(None);
        assert!(
            unbounded > 1.5,
            "the skew should overload a server without bounds ({unbounded:.2}x)"
        );
    }

    #[test]
    fn a_full_server_is_passed_over_for_the_next() {
        let addrs = servers(4);
        let servers: Vec<(&str, u32)> = addrs.iter().map(|a| (a.as_str(), 1)).collect();
        let ring = ConsistentHash::new(&servers, Some(1.25));
        let key = Some(key_hash(b"hot"));
        let idle = FixedLoads::in_flight(&[0, 0, 0, 0]);
        let home = ring.pick(key, &idle, |_| true).unwrap();
        // Home holds 10 of 12 in flight: capacity is ceil(1.25 x 13 / 4) = 5.
        let mut busy = vec![0u64; 4];
        busy[home] = 10;
        busy[(home + 1) % 4] = 2;
        let loads = FixedLoads::in_flight(&busy);
        let picked = ring.pick(key, &loads, |_| true).unwrap();
        assert_ne!(picked, home);
        assert!(busy[picked] < 5);
        // Without a key: round-robin.
        let picks: Vec<usize> = (0..4)
            .map(|_| ring.pick(None, &idle, |_| true).unwrap())
            .collect();
        assert_eq!(picks, [0, 1, 2, 3]);
    }
}
