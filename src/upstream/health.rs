//! The health of one server, beside selection rather than inside it: what the
//! active checks decided (with rise/fall hysteresis, as pingora's
//! `health_threshold` and HAProxy's `rise`/`fall`) and whether passive outlier
//! detection has ejected it. Selection reads two atomics per candidate; only
//! the checker and the failure path write.
//!
//! A server with checks starts as healthy-unknown and takes traffic at once
//! (as HAProxy does), so a start or a reload never waits for a first check;
//! the first check decides alone (one failure marks it down, one pass keeps it
//! up); after that `rise` passes or `fall` failures in a row are needed.
//!
//! A server that discovery adds is the exception: it takes no traffic until
//! a check passes (one pass is enough, as for Envoy's hosts from EDS), and
//! its first check is made at once. A name is often listed before its server
//! listens: Docker's DNS lists a container as it joins the network.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// Nanoseconds on tokio's clock (so tests can pause time), never 0.
pub fn clock_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = *BASE.get_or_init(Instant::now);
    Instant::now().duration_since(base).as_nanos() as u64 + 1
}

/// Milliseconds on the same clock, never 0.
pub fn clock_ms() -> u64 {
    clock_ns() / 1_000_000 + 1
}

/// Reads the clock at most once, and only if asked.
#[derive(Debug, Default)]
pub struct LazyNow(Option<u64>);

impl LazyNow {
    pub fn get(&mut self) -> u64 {
        *self.0.get_or_insert_with(clock_ms)
    }
}

/// The outcome of the last active check.
#[derive(Debug, Clone)]
pub struct CheckReport {
    pub at: SystemTime,
    pub passed: bool,
    /// `status 200`, `status 500`, `timed out after 1s`, `connect: ...`.
    pub detail: String,
    pub duration: Duration,
}

#[derive(Debug)]
pub struct EndpointHealth {
    /// The active checks allow traffic (true when there are no checks).
    up: AtomicBool,
    checked: AtomicBool,
    /// Added by discovery and not passed a check yet: down until one passes.
    awaiting_first_pass: AtomicBool,
    /// Gone from its upstream: down for good, whatever a late check says.
    retired: AtomicBool,
    passes: AtomicU32,
    failures: AtomicU32,
    last_check: Mutex<Option<CheckReport>>,
    /// Live-traffic failures in a row (outlier detection).
    pub(super) consecutive_failures: AtomicU32,
    /// `clock_ms()` until which the server is ejected; 0 when it never was.
    pub(super) ejected_until: AtomicU64,
    /// Ejections in a row, for the doubling of the ejection time.
    pub(super) ejections: AtomicU32,
    pub(super) ejection_reason: Mutex<Option<String>>,
    /// Every ejection so far, for metrics.
    pub(super) ejections_total: AtomicU64,
    /// Drained by the admin API: no new requests, in-flight ones finish.
    draining: AtomicBool,
}

impl Default for EndpointHealth {
    fn default() -> Self {
        EndpointHealth {
            up: AtomicBool::new(true),
            checked: AtomicBool::new(false),
            awaiting_first_pass: AtomicBool::new(false),
            retired: AtomicBool::new(false),
            passes: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            last_check: Mutex::new(None),
            consecutive_failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            ejection_reason: Mutex::new(None),
            ejections_total: AtomicU64::new(0),
            draining: AtomicBool::new(false),
        }
    }
}

impl EndpointHealth {
    /// May take traffic: up by the checks, not draining and not ejected.
    /// The hot path.
    #[inline]
    pub fn is_available(&self, now: &mut LazyNow) -> bool {
        !self.retired.load(Ordering::Relaxed) && self.is_available_if_retired(now)
    }

    /// Available but for having left its upstream: what a request holding an
    /// older snapshot falls back on when no server of that snapshot stayed.
    pub fn is_available_if_retired(&self, now: &mut LazyNow) -> bool {
        self.up.load(Ordering::Relaxed)
            && !self.draining.load(Ordering::Relaxed)
            && !self.is_ejected(now)
    }

    /// For a server discovery has just added to an upstream with checks: no
    /// traffic until a check passes.
    pub fn await_first_pass(&self) {
        self.awaiting_first_pass.store(true, Ordering::Relaxed);
        self.up.store(false, Ordering::Relaxed);
    }

    /// No check has passed yet on a server that waits for one.
    pub fn awaits_first_pass(&self) -> bool {
        self.awaiting_first_pass.load(Ordering::Relaxed)
    }

    /// For a server that left its upstream (discovery or a reload): requests
    /// that still hold an older snapshot no longer retry on it.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
    }

    /// Drained (true) or enabled again (false) by the admin API.
    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// How many times outlier detection has ejected the server.
    pub fn ejections_total(&self) -> u64 {
        self.ejections_total.load(Ordering::Relaxed)
    }

    #[inline]
    pub fn is_ejected(&self, now: &mut LazyNow) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && now.get() < until
    }

    /// Up by the active checks.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed) && !self.retired.load(Ordering::Relaxed)
    }

    pub fn last_check(&self) -> Option<CheckReport> {
        self.last_check
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Why the server takes no traffic, if it does not.
    pub fn reason_unavailable(&self) -> Option<String> {
        if self.is_draining() {
            return Some("draining (admin API)".into());
        }
        if self.awaits_first_pass() {
            let detail = self
                .last_check()
                .map_or_else(|| "none made yet".into(), |c| c.detail);
            return Some(format!(
                "waiting for its first passing health check (last: {detail})"
            ));
        }
        if !self.is_up() {
            let detail = self.last_check().map_or_else(String::new, |c| c.detail);
            return Some(format!("failing health checks ({detail})"));
        }
        if self.is_ejected(&mut LazyNow::default()) {
            return self
                .ejection_reason
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
        }
        None
    }

    /// Back to healthy-unknown, for an upstream whose checks were removed.
    pub fn forget_checks(&self) {
        self.up.store(true, Ordering::Relaxed);
        self.checked.store(false, Ordering::Relaxed);
        self.awaiting_first_pass.store(false, Ordering::Relaxed);
        self.passes.store(0, Ordering::Relaxed);
        self.failures.store(0, Ordering::Relaxed);
    }

    /// Records an active check and applies the rise/fall thresholds; returns
    /// the new state when it changed.
    pub fn record_check(&self, report: CheckReport, rise: u32, fall: u32) -> Option<bool> {
        if self.retired.load(Ordering::Relaxed) {
            return None;
        }
        let first = !self.checked.swap(true, Ordering::Relaxed);
        let was_up = self.is_up();
        let now_up = if report.passed {
            self.failures.store(0, Ordering::Relaxed);
            let passes = self.passes.fetch_add(1, Ordering::Relaxed) + 1;
            let first_pass = self.awaiting_first_pass.swap(false, Ordering::Relaxed);
            was_up || first || first_pass || passes >= rise
        } else {
            self.passes.store(0, Ordering::Relaxed);
            let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
            was_up && !first && failures < fall
        };
        *self.last_check.lock().unwrap_or_else(|p| p.into_inner()) = Some(report);
        self.up.store(now_up, Ordering::Relaxed);
        (now_up != was_up).then_some(now_up)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(passed: bool) -> CheckReport {
        CheckReport {
            at: SystemTime::now(),
            passed,
            detail: String::new(),
            duration: Duration::ZERO,
        }
    }

    #[test]
    fn rise_and_fall_hysteresis() {
        let health = EndpointHealth::default();
        assert!(health.is_up());
        assert_eq!(health.record_check(report(true), 2, 3), None);
        assert_eq!(health.record_check(report(false), 2, 3), None);
        assert_eq!(health.record_check(report(false), 2, 3), None);
        assert_eq!(health.record_check(report(false), 2, 3), Some(false));
        assert!(!health.is_up());
        assert_eq!(health.record_check(report(true), 2, 3), None);
        assert_eq!(health.record_check(report(false), 2, 3), None);
        assert_eq!(health.record_check(report(true), 2, 3), None);
        assert_eq!(health.record_check(report(true), 2, 3), Some(true));
    }

    #[test]
    fn the_first_check_decides_alone() {
        let health = EndpointHealth::default();
        assert_eq!(health.record_check(report(false), 2, 3), Some(false));
        let health = EndpointHealth::default();
        assert_eq!(health.record_check(report(true), 2, 3), None);
        assert!(health.is_up());
    }

    #[test]
    fn a_discovered_server_waits_for_one_pass() {
        let health = EndpointHealth::default();
        health.await_first_pass();
        assert!(!health.is_available(&mut LazyNow::default()));
        assert!(health
            .reason_unavailable()
            .unwrap()
            .contains("none made yet"));
        assert_eq!(health.record_check(report(false), 2, 3), None);
        assert_eq!(health.record_check(report(false), 2, 3), None);
        assert!(health.awaits_first_pass());
        assert_eq!(health.record_check(report(true), 2, 3), Some(true));
        assert!(!health.awaits_first_pass());
        // From then on, rise and fall as for any server.
        assert_eq!(health.record_check(report(false), 2, 3), None);
    }

    #[test]
    fn a_retired_server_stays_down() {
        let health = EndpointHealth::default();
        health.retire();
        assert!(!health.is_available(&mut LazyNow::default()));
        assert!(health.is_available_if_retired(&mut LazyNow::default()));
        assert_eq!(health.record_check(report(true), 1, 1), None);
        assert!(!health.is_up());
    }
}
