//! The counters and histograms the request path records into: atomics only,
//! no lock, no allocation, no label formatting. They live with what they
//! measure (a server, a vhost, a listener) and are shared across reloads with
//! it; `/metrics` and `/status` read them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::log_limit::LogLimiter;

/// Responses by status class: 1xx to 5xx.
#[derive(Debug, Default)]
pub struct StatusClasses([AtomicU64; 5]);

impl StatusClasses {
    pub const NAMES: [&'static str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

    pub fn record(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.0[class].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts by class, in the order of `NAMES`.
    pub fn counts(&self) -> [u64; 5] {
        std::array::from_fn(|class| self.0[class].load(Ordering::Relaxed))
    }
}

/// Upper bounds of the latency buckets, in seconds (Prometheus `le`).
pub const LATENCY_BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The same bounds in microseconds, for the hot path.
const BOUNDS_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// A latency histogram with fixed buckets (one more for above the last
/// bound), its count and its sum.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; 15],
    sum_us: AtomicU64,
}

/// A copy of a histogram's counts at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencySnapshot {
    /// Per bucket, not cumulative; the last is above every bound.
    pub buckets: [u64; 15],
    pub sum_seconds: f64,
}

impl LatencyHistogram {
    pub fn observe(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_US.partition_point(|&bound| bound < us);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> LatencySnapshot {
        LatencySnapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            sum_seconds: self.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

impl LatencySnapshot {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Adds another histogram's counts (an upstream's is its servers').
    pub fn add(&mut self, other: &LatencySnapshot) {
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets) {
            *mine += theirs;
        }
        self.sum_seconds += other.sum_seconds;
    }

    /// `(upper bound, count in that bucket)`, the last bound infinite: the
    /// encoder makes them cumulative.
    pub fn bounded_buckets(&self) -> Vec<(f64, u64)> {
        LATENCY_BOUNDS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.buckets)
            .collect()
    }

    /// The upper bound of the bucket holding quantile `q` (0..=1), in
    /// seconds; `None` without observations. Above the last bound: infinity.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = ((count as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (index, bucket) in self.buckets.iter().enumerate() {
            seen += bucket;
            if seen >= rank {
                return Some(LATENCY_BOUNDS.get(index).copied().unwrap_or(f64::INFINITY));
            }
        }
        Some(f64::INFINITY)
    }
}

/// Connections of one listener.
#[derive(Debug, Default)]
pub struct ListenerStats {
    pub accepted: AtomicU64,
    pub open: AtomicU64,
    pub tls_handshake_failures: AtomicU64,
    /// Client connections closed (HTTP/2: streams ended) by a client time
    /// limit, by `ClientTimeout`.
    pub client_timeouts: [AtomicU64; 3],
}

/// A client time limit that closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientTimeout {
    /// The client read nothing of a response (or tunnel) for `send_timeout`.
    Send = 0,
    /// The client sent nothing of its request body for `client_body_timeout`.
    Body = 1,
    /// The request body came slower than `client_body_min_rate`.
    BodyRate = 2,
}

impl ClientTimeout {
    /// The `kind` label of each, in the order of `ListenerStats::client_timeouts`.
    pub const KINDS: [&'static str; 3] = ["send", "body", "body_rate"];

    /// The `kind` of its rate-limited log line for HTTP/2 streams.
    pub fn stream_kind(self) -> &'static str {
        match self {
            ClientTimeout::Send => "http2_stream_send_timeout",
            ClientTimeout::Body => "http2_stream_body_timeout",
            ClientTimeout::BodyRate => "http2_stream_body_rate",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            ClientTimeout::Send => "it read nothing for send_timeout",
            ClientTimeout::Body => "it sent none of its request body for client_body_timeout",
            ClientTimeout::BodyRate => "its request body came slower than client_body_min_rate",
        }
    }
}

/// HTTP/2 streams ended by a client time limit, by `ClientTimeout`: a
/// client can have many streams at once, so these are logged at most once
/// per interval per kind (the count is `client_timeouts`).
pub static STREAM_TIMEOUT_LOGS: [LogLimiter; 3] = [
    LogLimiter::new(Duration::from_secs(10)),
    LogLimiter::new(Duration::from_secs(10)),
    LogLimiter::new(Duration::from_secs(10)),
];

impl ListenerStats {
    /// Counts and logs a client connection closed by `limit`.
    pub fn client_timed_out(&self, limit: ClientTimeout, client: std::net::SocketAddr) {
        self.client_timeouts[limit as usize].fetch_add(1, Ordering::Relaxed);
        tracing::info!(%client, "closing a client connection: {}", limit.describe());
    }

    /// Counts an HTTP/2 stream ended by `limit` (reset, or answered 408),
    /// and logs it when the kind's limiter lets it.
    pub fn stream_timed_out(&self, limit: ClientTimeout, client: std::net::SocketAddr) {
        self.client_timeouts[limit as usize].fetch_add(1, Ordering::Relaxed);
        if let Some(seen) = STREAM_TIMEOUT_LOGS[limit as usize].admit() {
            tracing::info!(
                %client,
                kind = limit.stream_kind(),
                suppressed = seen.suppressed,
                total = seen.total,
                "ending an HTTP/2 stream: {} (logged once per 10 s; `suppressed` since the last such line)",
                limit.describe()
            );
        }
    }
}

/// Counts a connection as open until dropped.
#[derive(Debug)]
pub struct OpenConnection(std::sync::Arc<ListenerStats>);

impl OpenConnection {
    pub fn new(stats: &std::sync::Arc<ListenerStats>) -> OpenConnection {
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        stats.open.fetch_add(1, Ordering::Relaxed);
        OpenConnection(std::sync::Arc::clone(stats))
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_count_by_hundreds() {
        let classes = StatusClasses::default();
        for status in [101, 200, 204, 308, 404, 431, 502, 599] {
            classes.record(status);
        }
        assert_eq!(classes.counts(), [1, 2, 1, 2, 2]);
    }

    #[test]
    fn histogram_buckets_are_upper_bounds() {
        let histogram = LatencyHistogram::default();
        histogram.observe(Duration::from_micros(500));
        histogram.observe(Duration::from_micros(501));
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_secs(60));
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count(), 4);
        let buckets = snapshot.bounded_buckets();
        assert_eq!(buckets[0], (0.0005, 1));
        assert_eq!(buckets[1], (0.001, 1));
        assert_eq!(buckets[2], (0.0025, 0));
        assert_eq!(buckets[3], (0.005, 1));
        assert_eq!(buckets.last().copied(), Some((f64::INFINITY, 1)));
        assert_eq!(buckets.len(), 15);
        assert_eq!(snapshot.quantile(0.5), Some(0.001));
        assert_eq!(snapshot.quantile(0.99), Some(f64::INFINITY));
        assert!((snapshot.sum_seconds - 60.004001).abs() < 1e-6);
    }
}
