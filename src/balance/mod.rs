//! Balancing strategies (docs/strategies.md): which server of a pool takes the
//! next request. One file per algorithm; `Balancer` is the enum a config names.
//!
//! Every `pick` takes a `candidate` predicate so the caller decides which
//! servers may take part (for a retry: not the one that just failed). A pick
//! is lock-free: atomics and a thread-local RNG, nothing shared by all requests
//! behind a lock (the one exception is documented in `weighted`).

mod consistent_hash;
mod least_connections;
mod load;
mod peak_ewma;
mod random;
mod round_robin;
mod weighted;
mod weighted_random;

use crate::config::{HashSettings, Server, StrategyKind};

pub use consistent_hash::{key_hash, ConsistentHash};
pub use least_connections::LeastConnections;
pub use load::{Loads, PeakEwma, DEFAULT_RTT};
pub use peak_ewma::PeakEwmaP2c;
pub use random::Random;
pub use round_robin::RoundRobin;
pub use weighted::SmoothWeighted;
pub use weighted_random::WeightedRandom;

/// The strategy of one upstream pool, built for its servers' weights.
#[derive(Debug)]
pub enum Balancer {
    RoundRobin(RoundRobin),
    Random(Random),
    Weighted(SmoothWeighted),
    WeightedRandom(WeightedRandom),
    LeastConnections(LeastConnections),
    PeakEwma(PeakEwmaP2c),
    ConsistentHash(ConsistentHash),
}

impl Balancer {
    /// The strategy `kind` for `servers`; `hash` is set for `consistent_hash`.
    pub fn new(kind: StrategyKind, servers: &[Server], hash: Option<&HashSettings>) -> Balancer {
        let weights: Vec<u32> = servers.iter().map(|s| s.weight).collect();
        match kind {
            StrategyKind::RoundRobin => Balancer::RoundRobin(RoundRobin::new(weights.len())),
            StrategyKind::Random => Balancer::Random(Random::new(weights.len())),
            StrategyKind::Weighted => Balancer::Weighted(SmoothWeighted::new(&weights)),
            StrategyKind::WeightedRandom => Balancer::WeightedRandom(WeightedRandom::new(&weights)),
            StrategyKind::LeastConnections => {
                Balancer::LeastConnections(LeastConnections::new(&weights))
            }
            StrategyKind::PeakEwma { .. } => Balancer::PeakEwma(PeakEwmaP2c::new(weights.len())),
            StrategyKind::ConsistentHash => {
                let ring: Vec<(&str, u32)> = servers
                    .iter()
                    .map(|s| (s.addr.as_str(), s.weight))
                    .collect();
                Balancer::ConsistentHash(ConsistentHash::new(
                    &ring,
                    hash.and_then(|h| h.balance_factor),
                ))
            }
        }
    }

    /// Continues the turn-taking of `previous` (the same pool before a
    /// reload) instead of starting over; the others have no position.
    pub fn continue_from(&self, previous: &Balancer) {
        match (self, previous) {
            (Balancer::RoundRobin(new), Balancer::RoundRobin(old)) => new.continue_from(old),
            (Balancer::Weighted(new), Balancer::Weighted(old)) => new.continue_from(old),
            _ => {}
        }
    }

    /// The index of the server for the next request among those for which
    /// `candidate` is true, or `None` when there is none. `key` is the hash of
    /// the request's key (for `consistent_hash`); `loads` what load-aware
    /// strategies read.
    pub fn pick(
        &self,
        key: Option<u64>,
        loads: &impl Loads,
        candidate: impl FnMut(usize) -> bool,
    ) -> Option<usize> {
        match self {
            Balancer::RoundRobin(strategy) => strategy.pick(candidate),
            Balancer::Random(strategy) => strategy.pick(candidate),
            Balancer::Weighted(strategy) => strategy.pick(candidate),
            Balancer::WeightedRandom(strategy) => strategy.pick(candidate),
            Balancer::LeastConnections(strategy) => strategy.pick(loads, candidate),
            Balancer::PeakEwma(strategy) => strategy.pick(loads, candidate),
            Balancer::ConsistentHash(strategy) => strategy.pick(key, loads, candidate),
        }
    }
}

/// The first candidate at or after `start`, wrapping around; the fallback of
/// every strategy when its first choice is not a candidate.
fn next_candidate(
    start: usize,
    len: usize,
    mut candidate: impl FnMut(usize) -> bool,
) -> Option<usize> {
    (0..len)
        .map(|step| (start + step) % len)
        .find(|&i| candidate(i))
}

/// Fixed loads for the strategies' unit tests.
#[cfg(test)]
mod testing {
    use super::Loads;

    #[derive(Debug, Default)]
    pub struct FixedLoads {
        pub in_flight: Vec<u64>,
        pub latency: Vec<f64>,
    }

    impl FixedLoads {
        pub fn in_flight(counts: &[u64]) -> FixedLoads {
            FixedLoads {
                in_flight: counts.to_vec(),
                latency: vec![1.0; counts.len()],
            }
        }

        pub fn latency(latency: &[f64]) -> FixedLoads {
            FixedLoads {
                in_flight: vec![0; latency.len()],
                latency: latency.to_vec(),
            }
        }
    }

    impl Loads for FixedLoads {
        fn in_flight(&self, server: usize) -> u64 {
            self.in_flight[server]
        }

        fn latency_estimate(&self, server: usize) -> f64 {
            self.latency[server]
        }

        fn pool_in_flight(&self) -> u64 {
            self.in_flight.iter().sum()
        }
    }
}
