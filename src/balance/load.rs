//! What load-aware strategies read of a pool's servers (`Loads`), and the
//! peak-EWMA latency estimator each server keeps.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The load of each server of a pool, by index.
pub trait Loads {
    /// Requests in flight to the server (released when the response body ends).
    fn in_flight(&self, server: usize) -> u64;
    /// The server's peak-EWMA latency estimate in nanoseconds, decayed to now.
    fn latency_estimate(&self, server: usize) -> f64;
    /// Requests in flight to the whole pool.
    fn pool_in_flight(&self) -> u64;
}

/// The latency assumed for a server not measured yet (linkerd's default).
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);

/// Peak-EWMA round-trip estimate, as Finagle's `PeakEwma` and tower's
/// `load/peak_ewma.rs`: a sample above the estimate replaces it at once (the
/// peak), one below pulls it down by an exponentially weighted moving average
/// with time constant `decay`, and without samples it decays toward zero, so
/// a server once slow is tried again. Lock-free: a racing update may be lost,
/// which an estimate can afford.
#[derive(Debug, Default)]
pub struct PeakEwma {
    /// f64 nanoseconds; 0 before the first sample.
    estimate: AtomicU64,
    /// When `estimate` was last updated, in nanoseconds of `now_ns`'s clock.
    updated: AtomicU64,
}

impl PeakEwma {
    /// Records a round trip observed at `now_ns`.
    pub fn observe(&self, rtt: Duration, decay: Duration, now_ns: u64) {
        let sample = rtt.as_nanos() as f64;
        let current = self.decayed(decay, now_ns);
        let next = if sample > current || current == 0.0 {
            sample
        } else {
            let elapsed = now_ns.saturating_sub(self.updated.load(Ordering::Relaxed)) as f64;
            let weight = (-elapsed / decay.as_nanos() as f64).exp();
            current * weight + sample * (1.0 - weight)
        };
        self.estimate.store(next.to_bits(), Ordering::Relaxed);
        self.updated.store(now_ns, Ordering::Relaxed);
    }

    /// The estimate at `now_ns`: `DEFAULT_RTT` before any sample.
    pub fn estimate(&self, decay: Duration, now_ns: u64) -> f64 {
        if self.updated.load(Ordering::Relaxed) == 0 {
            return DEFAULT_RTT.as_nanos() as f64;
        }
        self.decayed(decay, now_ns)
    }

    fn decayed(&self, decay: Duration, now_ns: u64) -> f64 {
        let estimate = f64::from_bits(self.estimate.load(Ordering::Relaxed));
        let elapsed = now_ns.saturating_sub(self.updated.load(Ordering::Relaxed)) as f64;
        estimate * (-elapsed / decay.as_nanos() as f64).exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DECAY: Duration = Duration::from_secs(10);
    const MS: u64 = 1_000_000;

    #[test]
    fn peaks_at_once_and_decays_slowly() {
        let ewma = PeakEwma::default();
        assert_eq!(ewma.estimate(DECAY, MS), 30.0 * MS as f64);
        ewma.observe(Duration::from_millis(10), DECAY, MS);
        assert_eq!(ewma.estimate(DECAY, MS), 10.0 * MS as f64);
        ewma.observe(Duration::from_millis(100), DECAY, 2 * MS);
        assert!((ewma.estimate(DECAY, 2 * MS) - 100.0 * MS as f64).abs() < 1.0);
        // A fast sample one second later pulls it down by about 1 - e^-0.1.
        ewma.observe(Duration::from_millis(10), DECAY, 1002 * MS);
        let after = ewma.estimate(DECAY, 1002 * MS) / MS as f64;
        assert!((80.0..92.0).contains(&after), "{after}");
        // Without samples it decays toward zero.
        let later = ewma.estimate(DECAY, 31_002 * MS) / MS as f64;
        assert!(later < after * 0.06, "{later}");
    }
}
