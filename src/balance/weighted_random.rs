//! `weighted_random`: at random with probability weight / sum of weights, by
//! binary search over the cumulative weights (O(log n), no allocation).

use super::next_candidate;

#[derive(Debug)]
pub struct WeightedRandom {
    /// `cumulative[i]` is the sum of the weights of servers `0..=i`.
    cumulative: Vec<u64>,
}

impl WeightedRandom {
    pub fn new(weights: &[u32]) -> WeightedRandom {
        let cumulative = weights
            .iter()
            .scan(0u64, |sum, &w| {
                *sum += u64::from(w);
                Some(*sum)
            })
            .collect();
        WeightedRandom { cumulative }
    }

    pub fn pick(&self, candidate: impl FnMut(usize) -> bool) -> Option<usize> {
        let total = *self.cumulative.last()?;
        let ticket = fastrand::u64(..total);
        let first = self.cumulative.partition_point(|&upto| upto <= ticket);
        next_candidate(first, self.cumulative.len(), candidate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_follow_weights_within_three_percent() {
        fastrand::seed(11);
        let weights = [5, 3, 1, 1];
        let strategy = WeightedRandom::new(&weights);
        let mut counts = [0u32; 4];
        let picks = 10_000;
        for _ in 0..picks {
            counts[strategy.pick(|_| true).unwrap()] += 1;
        }
        for (count, weight) in counts.iter().zip(weights) {
            let share = f64::from(*count) / f64::from(picks);
            let expected = f64::from(weight) / 10.0;
            assert!((share - expected).abs() < 0.03, "counts {counts:?}");
        }
    }

    #[test]
    fn empty_pool_has_no_pick() {
        assert_eq!(WeightedRandom::new(&[]).pick(|_| true), None);
    }
}
