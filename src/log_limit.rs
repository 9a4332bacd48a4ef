//! Log lines for events a client can cause at will (protocol abuse): each
//! kind is logged at most once per interval, and the line says how many were
//! left unlogged since the one before. Every event is still counted (for
//! `/metrics`). Atomics only: an event costs a few atomic operations, no lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Admits one log line per interval for one kind of event.
#[derive(Debug)]
pub struct LogLimiter {
    interval_ms: u64,
    /// Milliseconds since `epoch()` from which the next line may be logged.
    next_line_ms: AtomicU64,
    /// Events since the last logged line, not logged.
    suppressed: AtomicU64,
    /// Events since the process started.
    total: AtomicU64,
}

/// What a logged line reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    /// Events left unlogged since the previous line.
    pub suppressed: u64,
    /// Events since the process started, this one included.
    pub total: u64,
}

impl LogLimiter {
    pub const fn new(interval: Duration) -> LogLimiter {
        LogLimiter {
            interval_ms: interval.as_secs() * 1000 + interval.subsec_millis() as u64,
            next_line_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
            total: AtomicU64::new(0),
        }
    }

    /// Counts an event; `Some` when it should be logged now.
    pub fn admit(&self) -> Option<Admitted> {
        let now_ms = u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX);
        self.admit_at(now_ms)
    }

    /// Events since the process started.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    fn admit_at(&self, now_ms: u64) -> Option<Admitted> {
        let total = self.total.fetch_add(1, Ordering::Relaxed) + 1;
        let next = self.next_line_ms.load(Ordering::Relaxed);
        let due = now_ms >= next
            && self
                .next_line_ms
                .compare_exchange(
                    next,
                    now_ms.saturating_add(self.interval_ms),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok();
        if due {
            let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
            Some(Admitted { suppressed, total })
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// The clock's zero: the first use in this process.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_carries_what_was_left_out() {
        let limiter = LogLimiter::new(Duration::from_secs(10));
        assert_eq!(
            limiter.admit_at(5),
            Some(Admitted {
                suppressed: 0,
                total: 1
            })
        );
        for ms in 6..1006 {
            assert_eq!(limiter.admit_at(ms), None);
        }
        assert_eq!(limiter.admit_at(10_004), None, "not before the interval");
        assert_eq!(
            limiter.admit_at(10_005),
            Some(Admitted {
                suppressed: 1001,
                total: 1003
            })
        );
        assert_eq!(
            limiter.admit_at(60_000),
            Some(Admitted {
                suppressed: 0,
                total: 1004
            }),
            "a quiet spell logs the next one at once"
        );
        assert_eq!(limiter.total(), 1004);
    }

    #[test]
    fn threads_racing_get_one_line_and_lose_no_count() {
        let limiter = LogLimiter::new(Duration::from_secs(10));
        let lines: u64 = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        (0..10_000)
                            .filter(|_| limiter.admit_at(1).is_some())
                            .count() as u64
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).sum()
        });
        assert_eq!(lines, 1);
        assert_eq!(limiter.total(), 40_000);
        assert_eq!(limiter.suppressed.load(Ordering::Relaxed), 39_999);
    }
}
