//! `peak_ewma`: the power of two random choices (Mitzenmacher, "The Power of
//! Two Choices in Randomized Load Balancing", 2001) over the cost
//! peak-EWMA latency x (in-flight + 1), as Finagle's and linkerd's balancers
//! (tower `balance/p2c`, `load/peak_ewma.rs`). Two servers drawn at random,
//! the cheaper one wins: O(1), and slow or busy servers shed load quickly
//! without the herding of always choosing the global minimum.

use super::load::Loads;

#[derive(Debug)]
pub struct PeakEwmaP2c {
    len: usize,
}

impl PeakEwmaP2c {
    pub fn new(len: usize) -> PeakEwmaP2c {
        PeakEwmaP2c { len }
    }

    pub fn pick(
        &self,
        loads: &impl Loads,
        mut candidate: impl FnMut(usize) -> bool,
    ) -> Option<usize> {
        let cost =
            |index: usize| loads.latency_estimate(index) * (loads.in_flight(index) + 1) as f64;
        match self.len {
            0 => None,
            1 => candidate(0).then_some(0),
            len => {
                let first = fastrand::usize(..len);
                let mut second = fastrand::usize(..len - 1);
                if second >= first {
                    second += 1;
                }
                match (candidate(first), candidate(second)) {
                    (true, true) => Some(if cost(second) < cost(first) {
                        second
                    } else {
                        first
                    }),
                    (true, false) => Some(first),
                    (false, true) => Some(second),
                    // Both drawn servers are out: the cheapest of the rest (O(n)).
                    (false, false) => (0..len)
                        .filter(|&i| candidate(i))
                        .min_by(|&a, &b| cost(a).total_cmp(&cost(b))),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::FixedLoads;
    use super::*;

    #[test]
    fn the_slow_server_loses_every_draw_it_is_in() {
        fastrand::seed(3);
        let strategy = PeakEwmaP2c::new(4);
        let loads = FixedLoads::latency(&[10.0, 10.0, 10.0, 100.0]);
        let mut counts = [0; 4];
        for _ in 0..4000 {
            counts[strategy.pick(&loads, |_| true).unwrap()] += 1;
        }
        assert_eq!(counts[3], 0, "{counts:?}");
        for count in &counts[..3] {
            assert!((1100..1600).contains(count), "{counts:?}");
        }
    }

    #[test]
    fn in_flight_raises_the_cost() {
        fastrand::seed(5);
        let strategy = PeakEwmaP2c::new(2);
        let mut loads = FixedLoads::latency(&[10.0, 10.0]);
        loads.in_flight = vec![5, 0];
        assert_eq!(strategy.pick(&loads, |_| true), Some(1));
        assert_eq!(strategy.pick(&loads, |i| i == 0), Some(0));
        let strategy = PeakEwmaP2c::new(5);
        assert_eq!(
            strategy.pick(&FixedLoads::latency(&[1.0; 5]), |i| i == 4),
            Some(4)
        );
        assert_eq!(
            strategy.pick(&FixedLoads::latency(&[1.0; 5]), |_| false),
            None
        );
    }
}
