//! `round_robin`: servers in turn, weights ignored. One atomic counter, as in
//! pingora's `selection/algorithms.rs` RoundRobin.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::next_candidate;

#[derive(Debug)]
pub struct RoundRobin {
    len: usize,
    cursor: AtomicUsize,
}

impl RoundRobin {
    pub fn new(len: usize) -> RoundRobin {
        RoundRobin {
            len,
            cursor: AtomicUsize::new(0),
        }
    }

    pub fn continue_from(&self, previous: &RoundRobin) {
        self.cursor
            .store(previous.cursor.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    pub fn pick(&self, candidate: impl FnMut(usize) -> bool) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed) % self.len;
        next_candidate(start, self.len, candidate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_in_turn() {
        let strategy = RoundRobin::new(3);
        let picks: Vec<usize> = (0..7).map(|_| strategy.pick(|_| true).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn skips_servers_that_are_not_candidates() {
        let strategy = RoundRobin::new(3);
        let picks: Vec<usize> = (0..4).map(|_| strategy.pick(|i| i != 1).unwrap()).collect();
        assert_eq!(picks, [0, 2, 2, 0]);
        assert_eq!(strategy.pick(|_| false), None);
        assert_eq!(RoundRobin::new(0).pick(|_| true), None);
    }
}
