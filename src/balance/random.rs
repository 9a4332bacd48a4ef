//! `random`: uniformly at random, from the thread-local generator of
//! `fastrand` (no shared state at all).

use super::next_candidate;

#[derive(Debug)]
pub struct Random {
    len: usize,
}

impl Random {
    pub fn new(len: usize) -> Random {
        Random { len }
    }

    pub fn pick(&self, candidate: impl FnMut(usize) -> bool) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        next_candidate(fastrand::usize(..self.len), self.len, candidate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pearson's chi-square over 3000 picks of 3 servers: with 2 degrees of
    /// freedom the statistic stays under 13.82 with probability 0.999.
    #[test]
    fn uniform_by_chi_square() {
        fastrand::seed(7);
        let strategy = Random::new(3);
        let mut counts = [0u32; 3];
        for _ in 0..3000 {
            counts[strategy.pick(|_| true).unwrap()] += 1;
        }
        let expected = 1000.0;
        let chi_square: f64 = counts
            .iter()
            .map(|&c| (f64::from(c) - expected).powi(2) / expected)
            .sum();
        assert!(
            chi_square < 13.82,
            "counts {counts:?}, chi-square {chi_square}"
        );
    }

    #[test]
    fn only_candidates() {
        fastrand::seed(1);
        let strategy = Random::new(4);
        for _ in 0..100 {
            assert_eq!(strategy.pick(|i| i == 2), Some(2));
        }
    }
}
