//! Passive outlier detection: live-traffic failures of a server (connect
//! errors, resets, timeouts, 502/503/504) counted in a row; at
//! `consecutive_failures` the server is ejected for `ejection_time`, doubled
//! for each ejection in a row up to 10x (Envoy's `max_ejection_time` default of
//! 300 s for its 30 s base). Never more than half a pool is ejected at once, so
//! a shared downstream fault cannot empty the pool; the active checks, when
//! configured, can still take every server down.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::health::{clock_ms, LazyNow};
use super::Upstream;

/// The longest ejection, as a multiple of `ejection_time`.
const MAX_EJECTION_FACTOR: u32 = 10;

impl Upstream {
    /// The server answered (any status but 502/503/504).
    pub fn record_success(&self, index: usize) {
        let Some(outlier) = self.outlier else {
            return;
        };
        let endpoint = &self.endpoints[index];
        let health = &endpoint.health;
        health.consecutive_failures.store(0, Ordering::Relaxed);
        let until = health.ejected_until.load(Ordering::Relaxed);
        if until != 0 {
            let now = clock_ms();
            if now >= until {
                health.ejected_until.store(0, Ordering::Relaxed);
                tracing::info!(upstream = %self.name, server = %endpoint.addr, "server back in service after ejection");
            }
            // Healthy for a whole ejection time since: forget the doubling.
            if now >= until + outlier.ejection_time.as_millis() as u64 {
                health.ejections.store(0, Ordering::Relaxed);
            }
        }
    }

    /// The server failed a request; `why` says how, for the log.
    pub fn record_failure(&self, index: usize, why: &str) {
        let endpoint = &self.endpoints[index];
        endpoint.stats.record_failure();
        let Some(outlier) = self.outlier else {
            return;
        };
        let health = &endpoint.health;
        let in_a_row = health.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        let mut now = LazyNow::default();
        if in_a_row < outlier.consecutive_failures || health.is_ejected(&mut now) {
            return;
        }
        let ejected = self
            .endpoints
            .iter()
            .filter(|e| e.health.is_ejected(&mut now))
            .count();
        if (ejected + 1) * 2 > self.endpoints.len() {
            tracing::debug!(upstream = %self.name, server = %endpoint.addr, ejected, "not ejecting: at most half a pool is ejected");
            return;
        }
        let previous = health.ejections.fetch_add(1, Ordering::Relaxed);
        health.ejections_total.fetch_add(1, Ordering::Relaxed);
        let factor = 2u32.saturating_pow(previous).min(MAX_EJECTION_FACTOR);
        let duration: Duration = outlier.ejection_time * factor;
        health.consecutive_failures.store(0, Ordering::Relaxed);
        health
            .ejected_until
            .store(now.get() + duration.as_millis() as u64, Ordering::Relaxed);
        let reason = format!(
            "ejected for {}: {in_a_row} failures in a row, the last: {why}",
            humantime::format_duration(duration)
        );
        tracing::warn!(upstream = %self.name, server = %endpoint.addr, %reason, "server ejected");
        *health
            .ejection_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(reason);
    }
}
