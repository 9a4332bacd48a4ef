//! `least_connections`: the server with the fewest requests in flight per unit
//! of weight; ties go to servers in turn (the scan starts at a rotating
//! position). O(n) per pick: every candidate's count is read.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::load::Loads;

#[derive(Debug)]
pub struct LeastConnections {
    weights: Vec<u32>,
    cursor: AtomicUsize,
}

impl LeastConnections {
    pub fn new(weights: &[u32]) -> LeastConnections {
        LeastConnections {
            weights: weights.to_vec(),
            cursor: AtomicUsize::new(0),
        }
    }

    pub fn pick(
        &self,
        loads: &impl Loads,
        mut candidate: impl FnMut(usize) -> bool,
    ) -> Option<usize> {
        let len = self.weights.len();
        if len == 0 {
            return None;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed) % len;
        let mut best: Option<(usize, u64)> = None;
        for step in 0..len {
            let index = (start + step) % len;
            if !candidate(index) {
                continue;
            }
            let load = loads.in_flight(index);
            // load / weight < best_load / best_weight, without division.
            let better = best.is_none_or(|(b, best_load)| {
                u128::from(load) * u128::from(self.weights[b])
                    < u128::from(best_load) * u128::from(self.weights[index])
            });
            if better {
                best = Some((index, load));
            }
        }
        best.map(|(index, _)| index)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::FixedLoads;
    use super::*;

    #[test]
    fn fewest_in_flight_per_weight() {
        let strategy = LeastConnections::new(&[1, 1, 1]);
        let loads = FixedLoads::in_flight(&[3, 1, 2]);
        for _ in 0..5 {
            assert_eq!(strategy.pick(&loads, |_| true), Some(1));
        }
        // Weight 4 with 4 in flight (1 per weight) beats weight 1 with 2.
        let strategy = LeastConnections::new(&[4, 1]);
        assert_eq!(
            strategy.pick(&FixedLoads::in_flight(&[4, 2]), |_| true),
            Some(0)
        );
    }

    #[test]
    fn ties_are_broken_in_turn() {
        let strategy = LeastConnections::new(&[1, 1, 1]);
        let loads = FixedLoads::in_flight(&[0, 0, 0]);
        let picks: Vec<usize> = (0..6)
            .map(|_| strategy.pick(&loads, |_| true).unwrap())
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        assert_eq!(strategy.pick(&loads, |i| i == 2), Some(2));
        assert_eq!(strategy.pick(&loads, |_| false), None);
    }
}
