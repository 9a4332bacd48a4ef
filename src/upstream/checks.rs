//! Active health checks of one upstream: one task checks every server with a
//! GET of `path` every `interval`, each server at its own random phase (and a
//! ±10% jitter on every interval) so servers are not checked in lockstep. A
//! check passes when the status is in `expect_status` within `timeout`.
//! Checks use their own small keep-alive client, apart from traffic.
//!
//! Check times are rounded to `TICK` and the checks of one tick start
//! together: waking the runtime once per check (1,000 times a second for
//! 1,000 servers) cost more CPU in thread wake-ups than the checks themselves.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{Request, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use super::health::{CheckReport, EndpointHealth};
use super::transport::{PoolSettings, ServerConnector};
use super::Upstream;
use crate::config::HealthCheck;

type CheckClient = Client<ServerConnector, Empty<Bytes>>;

/// The granularity of check times.
const TICK: Duration = Duration::from_millis(25);

/// `at` rounded up to the next tick after `start`.
fn on_tick(start: Instant, at: Instant) -> Instant {
    let ticks = at
        .duration_since(start)
        .as_nanos()
        .div_ceil(TICK.as_nanos());
    start + TICK * u32::try_from(ticks).unwrap_or(u32::MAX)
}

/// One server to check, with a small client of its own (one idle
/// connection), apart from the traffic's, over the upstream's transport.
struct Target {
    addr: Arc<str>,
    authority: Authority,
    health: Arc<EndpointHealth>,
    client: CheckClient,
}

/// How checks reach the servers of an upstream.
struct CheckRequests {
    check: HealthCheck,
    scheme: Scheme,
    version: Version,
}

/// Starts the checks of `upstream` (which must have a `health_check`).
pub fn spawn_checks(upstream: &Upstream, check: HealthCheck) -> JoinHandle<()> {
    let pool = PoolSettings {
        connect_timeout: check.timeout,
        idle_timeout: check.interval * 3,
        max_idle_per_host: 1,
    };
    let targets: Vec<Target> = upstream
        .endpoints
        .iter()
        .map(|endpoint| Target {
            addr: Arc::clone(&endpoint.addr),
            authority: endpoint.authority.clone(),
            health: Arc::clone(&endpoint.health),
            client: upstream.transport.client(&endpoint.addr, pool),
        })
        .collect();
    let requests = CheckRequests {
        check,
        scheme: upstream.transport.scheme(),
        version: if upstream.transport.is_http2() {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        },
    };
    tokio::spawn(run(Arc::clone(&upstream.name), targets, requests))
}

async fn run(upstream: Arc<str>, targets: Vec<Target>, requests: CheckRequests) {
    let targets = Arc::new(targets);
    let requests = Arc::new(requests);
    let check = &requests.check;
    let start = Instant::now();
    // Earliest next check first; the first round is spread over one
    // interval, but servers waiting for a first pass are checked at once.
    let mut schedule: BinaryHeap<Reverse<(Instant, usize)>> = (0..targets.len())
        .map(|index| {
            let at = if targets[index].health.awaits_first_pass() {
                start
            } else {
                start + check.interval.mul_f64(fastrand::f64())
            };
            Reverse((on_tick(start, at), index))
        })
        .collect();
    let mut running = JoinSet::new();
    while let Some(Reverse((at, index))) = schedule.pop() {
        if at > Instant::now() {
            tokio::time::sleep_until(at).await;
            while running.try_join_next().is_some() {}
        }
        let (all_targets, requests, upstream) = (
            Arc::clone(&targets),
            Arc::clone(&requests),
            Arc::clone(&upstream),
        );
        running.spawn(async move {
            let target = &all_targets[index];
            let this_check = &requests.check;
            let report = check_once(target, &requests).await;
            let passed = report.passed;
            let detail = report.detail.clone();
            match target.health.record_check(report, this_check.rise, this_check.fall) {
                Some(true) => tracing::info!(%upstream, server = %target.addr, %detail, "server marked healthy"),
                Some(false) => tracing::warn!(%upstream, server = %target.addr, %detail, "server marked unhealthy"),
                None if !passed => tracing::debug!(%upstream, server = %target.addr, %detail, "health check failed"),
                None => {}
            }
        });
        let jitter = 0.9 + 0.2 * fastrand::f64();
        let next = at + check.interval.mul_f64(jitter);
        schedule.push(Reverse((on_tick(start, next), index)));
    }
}

async fn check_once(target: &Target, requests: &CheckRequests) -> CheckReport {
    let check = &requests.check;
    let started = Instant::now();
    let at = SystemTime::now();
    let uri = format!("{}://{}{}", requests.scheme, target.authority, check.path);
    let request = Request::get(uri)
        .version(requests.version)
        .header(http::header::USER_AGENT, "usherd-health-check")
        .body(Empty::new());
    let outcome = match request {
        Ok(request) => {
            tokio::time::timeout(check.timeout, async {
                let response = target.client.request(request).await?;
                let status = response.status().as_u16();
                // Read the (small) body so the connection can be reused.
                response.into_body().collect().await.ok();
                Ok::<u16, hyper_util::client::legacy::Error>(status)
            })
            .await
        }
        Err(error) => {
            return report(at, started, false, format!("bad check request: {error}"));
        }
    };
    match outcome {
        Ok(Ok(status)) => report(
            at,
            started,
            check.passes(status),
            format!("status {status}"),
        ),
        Ok(Err(error)) if error.is_connect() => report(at, started, false, "connect failed".into()),
        Ok(Err(error)) => report(at, started, false, format!("request failed: {error}")),
        Err(_) => report(
            at,
            started,
            false,
            format!(
                "timed out after {}",
                humantime::format_duration(check.timeout)
            ),
        ),
    }
}

fn report(at: SystemTime, started: Instant, passed: bool, detail: String) -> CheckReport {
    CheckReport {
        at,
        passed,
        detail,
        duration: started.elapsed().min(Duration::from_secs(3600)),
    }
}
