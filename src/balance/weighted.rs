//! `weighted`: smooth weighted round-robin, nginx's algorithm
//! (ngx_http_upstream_round_robin.c, `ngx_http_upstream_get_peer`): each pick
//! adds every server's weight to its running score, takes the highest score and
//! subtracts the total weight from it. Over any window of sum(weights) picks each
//! server is picked exactly `weight` times, interleaved rather than in bursts.
//!
//! The sequence is periodic with period sum(weights)/gcd, so for the usual pools
//! it is computed once when the snapshot is built and a pick is one atomic
//! increment. Pools whose period exceeds `MAX_SCHEDULE` (thousands of servers
//! with large co-prime weights) run nginx's algorithm live under a mutex of
//! their own pool: a lock per pool, never one shared by all requests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::next_candidate;

/// The longest precomputed schedule (4 MiB of indices).
const MAX_SCHEDULE: u64 = 1 << 20;

#[derive(Debug)]
pub struct SmoothWeighted {
    weights: Vec<u32>,
    mode: Mode,
}

#[derive(Debug)]
enum Mode {
    Schedule {
        order: Vec<u32>,
        cursor: AtomicUsize,
    },
    Live {
        scores: Mutex<Vec<i64>>,
    },
}

impl SmoothWeighted {
    pub fn new(weights: &[u32]) -> SmoothWeighted {
        let divisor = weights.iter().copied().fold(0, gcd).max(1);
        let period: u64 = weights.iter().map(|&w| u64::from(w / divisor)).sum();
        let mode = if period <= MAX_SCHEDULE {
            let reduced: Vec<u32> = weights.iter().map(|&w| w / divisor).collect();
            let mut scores = vec![0i64; weights.len()];
            let order = (0..period)
                .map(|_| nginx_step(&reduced, &mut scores, |_| true).unwrap_or(0) as u32)
                .collect();
            Mode::Schedule {
                order,
                cursor: AtomicUsize::new(0),
            }
        } else {
            Mode::Live {
                scores: Mutex::new(vec![0; weights.len()]),
            }
        };
        SmoothWeighted {
            weights: weights.to_vec(),
            mode,
        }
    }

    /// Takes over the schedule position (live mode keeps no position: its
    /// scores start from zero, as nginx does after a reload).
    pub fn continue_from(&self, previous: &SmoothWeighted) {
        if let (
            Mode::Schedule { cursor, .. },
            Mode::Schedule {
                cursor: old_cursor, ..
            },
        ) = (&self.mode, &previous.mode)
        {
            cursor.store(old_cursor.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    pub fn pick(&self, mut candidate: impl FnMut(usize) -> bool) -> Option<usize> {
        let len = self.weights.len();
        if len == 0 {
            return None;
        }
        match &self.mode {
            Mode::Schedule { order, cursor } => {
                // Walk the schedule past servers that are not candidates, so the
                // remaining ones keep their relative weights; a few steps, then
                // give up on the schedule and take the next candidate in turn.
                for _ in 0..len.min(16) {
                    let slot = cursor.fetch_add(1, Ordering::Relaxed) % order.len();
                    let index = order[slot] as usize;
                    if candidate(index) {
                        return Some(index);
                    }
                }
                let slot = cursor.load(Ordering::Relaxed) % order.len();
                next_candidate(order[slot] as usize, len, candidate)
            }
            Mode::Live { scores } => {
                let mut scores = scores.lock().unwrap_or_else(|poison| poison.into_inner());
                nginx_step(&self.weights, &mut scores, candidate)
            }
        }
    }
}

/// One step of nginx's smooth weighted round-robin over the candidates.
fn nginx_step(
    weights: &[u32],
    scores: &mut [i64],
    mut candidate: impl FnMut(usize) -> bool,
) -> Option<usize> {
    let mut total = 0i64;
    let mut best: Option<usize> = None;
    for (index, &weight) in weights.iter().enumerate() {
        if !candidate(index) {
            continue;
        }
        scores[index] += i64::from(weight);
        total += i64::from(weight);
        if best.is_none_or(|b| scores[index] > scores[b]) {
            best = Some(index);
        }
    }
    let best = best?;
    scores[best] -= total;
    Some(best)
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picks(strategy: &SmoothWeighted, count: usize) -> Vec<usize> {
        (0..count)
            .map(|_| strategy.pick(|_| true).unwrap())
            .collect()
    }

    fn assert_exact_windows(sequence: &[usize], weights: &[u32]) {
        let window: u32 = weights.iter().sum();
        for start in 0..sequence.len() - window as usize {
            let mut counts = vec![0u32; weights.len()];
            for &index in &sequence[start..start + window as usize] {
                counts[index] += 1;
            }
            assert_eq!(counts, weights, "window at {start} of {sequence:?}");
        }
    }

    #[test]
    fn five_three_one_in_every_window_of_nine() {
        let strategy = SmoothWeighted::new(&[5, 3, 1]);
        let sequence = picks(&strategy, 90);
        assert_exact_windows(&sequence, &[5, 3, 1]);
        for run in sequence.windows(3) {
            assert!(
                !(run[0] == run[1] && run[1] == run[2]),
                "three picks of one server in a row: {sequence:?}"
            );
        }
    }

    #[test]
    fn matches_nginx_sequence() {
        // nginx's documented example for weights a=5, b=1, c=1.
        let strategy = SmoothWeighted::new(&[5, 1, 1]);
        assert_eq!(picks(&strategy, 7), [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn live_mode_gives_the_same_windows() {
        // Co-prime weights over many servers exceed the schedule limit.
        let weights: Vec<u32> = (0..300).map(|i| 9_000 + i).collect();
        let strategy = SmoothWeighted::new(&weights);
        assert!(matches!(strategy.mode, Mode::Live { .. }));
        let small = SmoothWeighted {
            weights: vec![5, 3, 1],
            mode: Mode::Live {
                scores: Mutex::new(vec![0; 3]),
            },
        };
        assert_exact_windows(&picks(&small, 45), &[5, 3, 1]);
        assert!(strategy.pick(|i| i == 299) == Some(299));
    }

    #[test]
    fn skipping_a_server_keeps_the_others_weighted() {
        let strategy = SmoothWeighted::new(&[5, 3, 1]);
        let mut counts = [0u32; 3];
        for _ in 0..800 {
            counts[strategy.pick(|i| i != 0).unwrap()] += 1;
        }
        assert_eq!(counts[0], 0);
        assert!((570..630).contains(&counts[1]), "{counts:?}");
        assert_eq!(strategy.pick(|_| false), None);
    }
}
