//! Balancing strategies (shared/SPEC.md §3): which server of a pool takes the
//! next request. One file per algorithm; `Balancer` is the enum a config names.
//!
//! Every `pick` takes a `candidate` predicate so the caller decides which
//! servers may take part (for a retry: not the one that just failed). A pick
//! is lock-free: atomics and a thread-local RNG, nothing shared by all requests
//! behind a lock (the one exception is documented in `weighted`).

mod random;
mod round_robin;
mod weighted;
mod weighted_random;

use crate::config::StrategyKind;

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
}

impl Balancer {
    pub fn new(kind: StrategyKind, weights: &[u32]) -> Balancer {
        match kind {
            StrategyKind::RoundRobin => Balancer::RoundRobin(RoundRobin::new(weights.len())),
            StrategyKind::Random => Balancer::Random(Random::new(weights.len())),
            StrategyKind::Weighted => Balancer::Weighted(SmoothWeighted::new(weights)),
            StrategyKind::WeightedRandom => Balancer::WeightedRandom(WeightedRandom::new(weights)),
        }
    }

    /// Continues the turn-taking of `previous` (the same pool before a
    /// reload) instead of starting over; random strategies have no position.
    pub fn continue_from(&self, previous: &Balancer) {
        match (self, previous) {
            (Balancer::RoundRobin(new), Balancer::RoundRobin(old)) => new.continue_from(old),
            (Balancer::Weighted(new), Balancer::Weighted(old)) => new.continue_from(old),
            _ => {}
        }
    }

    /// The index of the server for the next request among those for which
    /// `candidate` is true, or `None` when there is none.
    pub fn pick(&self, candidate: impl FnMut(usize) -> bool) -> Option<usize> {
        match self {
            Balancer::RoundRobin(strategy) => strategy.pick(candidate),
            Balancer::Random(strategy) => strategy.pick(candidate),
            Balancer::Weighted(strategy) => strategy.pick(candidate),
            Balancer::WeightedRandom(strategy) => strategy.pick(candidate),
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
