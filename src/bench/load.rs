//! The load `usherd bench` sends through the proxy.
//!
//! Open loop (the default): requests leave at a constant rate whatever the
//! responses do, and each latency is measured from the time the request was
//! *scheduled*, so a stall shows in the numbers instead of silently slowing
//! the load down (the coordinated-omission correction of Gil Tene's wrk2).
//! Closed loop: N connections each send the next request when the last one
//! answered. Replay: the request times and keys of an access log.
//! Every request carries `x-bench-key`, which `consistent_hash` hashes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Requests waiting for an answer at most, in open loop, before new ones are
/// counted as errors instead of sent (keeps memory bounded when overloaded).
const MAX_OUTSTANDING: usize = 20_000;

/// How requests are sent.
#[derive(Debug, Clone, PartialEq)]
pub enum LoadShape {
    /// Requests per second, whatever the answers.
    Open { rate: f64 },
    /// Connections each sending back to back.
    Closed { connections: usize },
    /// (offset from the start, key) of each request, from an access log.
    Replay(Arc<Vec<(Duration, String)>>),
}

/// What one run measured.
pub struct Measured {
    pub latency: Histogram<u64>,
    pub completed: u64,
    pub errors: u64,
    pub elapsed: Duration,
}

type BenchClient = Client<HttpConnector, Empty<Bytes>>;

/// Sends `shape` to `url` for `duration`; `keys` gives the key of request n.
pub async fn run(
    url: &str,
    shape: &LoadShape,
    duration: Duration,
    keys: &Arc<dyn Fn(u64) -> String + Send + Sync>,
) -> Measured {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: BenchClient = Client::builder(TokioExecutor::new()).build(connector);
    let latency = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds"),
    ));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    match shape {
        LoadShape::Open { rate } => {
            let interval = Duration::from_secs_f64(1.0 / rate);
            let mut n = 0u64;
            loop {
                let scheduled = start + interval.mul_f64(n as f64);
                if scheduled >= start + duration {
                    break;
                }
                tokio::time::sleep_until(scheduled).await;
                spawn_one(
                    &mut tasks,
                    &client,
                    url,
                    keys(n),
                    scheduled,
                    &latency,
                    &errors,
                );
                n += 1;
            }
        }
        LoadShape::Replay(schedule) => {
            for (offset, key) in schedule.iter() {
                if *offset >= duration {
                    break;
                }
                let scheduled = start + *offset;
                tokio::time::sleep_until(scheduled).await;
                spawn_one(
                    &mut tasks,
                    &client,
                    url,
                    key.clone(),
                    scheduled,
                    &latency,
                    &errors,
                );
            }
        }
        LoadShape::Closed { connections } => {
            for connection in 0..*connections {
                let (client, url, keys) = (client.clone(), url.to_string(), Arc::clone(keys));
                let (latency, errors) = (Arc::clone(&latency), Arc::clone(&errors));
                let connections = *connections as u64;
                tasks.spawn(async move {
                    let mut n = connection as u64;
                    while start.elapsed() < duration {
                        let sent = Instant::now();
                        let ok = send(&client, &url, &keys(n)).await;
                        record(&latency, &errors, sent, ok);
                        n += connections;
                    }
                });
            }
        }
    }
    // Answers still on their way get a bounded time to arrive.
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    let elapsed = start.elapsed().min(duration.max(Duration::from_millis(1)));
    let latency = Arc::try_unwrap(latency)
        .map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()))
        .unwrap_or_else(|shared| shared.lock().unwrap_or_else(|p| p.into_inner()).clone());
    Measured {
        completed: latency.len(),
        latency,
        errors: errors.load(std::sync::atomic::Ordering::Relaxed),
        elapsed,
    }
}

fn spawn_one(
    tasks: &mut JoinSet<()>,
    client: &BenchClient,
    url: &str,
    key: String,
    scheduled: Instant,
    latency: &Arc<Mutex<Histogram<u64>>>,
    errors: &Arc<std::sync::atomic::AtomicU64>,
) {
    while tasks.try_join_next().is_some() {}
    if tasks.len() >= MAX_OUTSTANDING {
        errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return;
    }
    let (client, url) = (client.clone(), url.to_string());
    let (latency, errors) = (Arc::clone(latency), Arc::clone(errors));
    tasks.spawn(async move {
        let ok = send(&client, &url, &key).await;
        record(&latency, &errors, scheduled, ok);
    });
}

async fn send(client: &BenchClient, url: &str, key: &str) -> bool {
    let Ok(request) = Request::get(url)
        .header("x-bench-key", key)
        .body(Empty::new())
    else {
        return false;
    };
    match tokio::time::timeout(Duration::from_secs(30), client.request(request)).await {
        Ok(Ok(response)) => {
            let ok = response.status().is_success();
            ok && response.into_body().collect().await.is_ok()
        }
        _ => false,
    }
}

fn record(
    latency: &Mutex<Histogram<u64>>,
    errors: &std::sync::atomic::AtomicU64,
    since: Instant,
    ok: bool,
) {
    if ok {
        let micros = since.elapsed().as_micros().max(1) as u64;
        latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .saturating_record(micros);
    } else {
        errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Reads usherd's JSON access log (`--log-format json`): for each `access`
/// event, its time from the first and the key (`client` or `path`).
pub fn parse_access_log(text: &str, key_field: &str) -> Result<Vec<(Duration, String)>, String> {
    let mut first = None;
    let mut schedule = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if event["target"] != "access" {
            continue;
        }
        let at = event["timestamp"]
            .as_str()
            .and_then(|t| humantime::parse_rfc3339(t).ok())
            .ok_or_else(|| format!("line {}: no RFC 3339 timestamp", number + 1))?;
        let first = *first.get_or_insert(at);
        let offset = at.duration_since(first).unwrap_or_default();
        let key = event[key_field].as_str().unwrap_or("").to_string();
        schedule.push((offset, key));
    }
    if schedule.is_empty() {
        return Err("no access-log events (target \"access\") in the file".into());
    }
    schedule.sort_by_key(|(offset, _)| *offset);
    Ok(schedule)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_log_lines_become_a_schedule() {
        let log = r#"{"timestamp":"2026-11-25T07:49:52.100000Z","level":"INFO","target":"usherd","message":"listening"}
{"timestamp":"2026-11-25T07:49:52.200000Z","level":"INFO","client":"10.0.0.1","path":"/a","target":"access"}
not json
{"timestamp":"2026-11-25T07:49:53.700000Z","level":"INFO","client":"10.0.0.2","path":"/b","target":"access"}"#;
        let schedule = parse_access_log(log, "client").unwrap();
        assert_eq!(
            schedule,
            [
                (Duration::ZERO, "10.0.0.1".into()),
                (Duration::from_millis(1500), "10.0.0.2".into())
            ]
        );
        assert_eq!(parse_access_log(log, "path").unwrap()[1].1, "/b");
        assert!(parse_access_log("{}", "client").is_err());
    }
}
