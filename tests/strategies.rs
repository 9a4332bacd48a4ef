//! The load-aware and hashing strategies through the real proxy with real
//! backends: least_connections and peak_ewma steer away from a slow server;
//! consistent_hash keeps each key on one server, by header, cookie and path.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;

use support::{backend, client, full, get, send, start_proxy, url, Backend};

async fn delayed(name: &'static str, delay: Duration) -> Backend {
    backend(move |_| async move {
        tokio::time::sleep(delay).await;
        let mut response = Response::new(full(name));
        response
            .headers_mut()
            .insert("x-backend", http::HeaderValue::from_static(name));
        response
    })
    .await
}

fn config(servers: &[&Backend], strategy: &str, extra: &str) -> String {
    let addrs: Vec<String> = servers.iter().map(|s| s.addr.to_string()).collect();
    support::pool_config(&addrs, strategy, extra, "", false)
}

/// Shares of responses per backend from `clients` closed-loop clients.
async fn shares(
    proxy: &usherd::Proxy,
    clients: usize,
    duration: Duration,
) -> HashMap<String, usize> {
    let running = Arc::new(AtomicBool::new(true));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (target, running) = (url(proxy, "/"), running.clone());
        tasks.push(tokio::spawn(async move {
            let client = client();
            let mut seen = HashMap::new();
            let mut sent = 0;
            while running.load(Ordering::SeqCst) && sent < 100_000 {
                let request = Request::get(&target).body(full("")).unwrap();
                let response = client.request(request).await.unwrap();
                let name = response.headers()["x-backend"]
                    .to_str()
                    .unwrap()
                    .to_string();
                response.into_body().collect().await.unwrap();
                *seen.entry(name).or_insert(0) += 1;
                sent += 1;
            }
            seen
        }));
    }
    tokio::time::sleep(duration).await;
    running.store(false, Ordering::SeqCst);
    let mut total = HashMap::new();
    for task in tasks {
        for (name, count) in task.await.unwrap() {
            *total.entry(name).or_insert(0) += count;
        }
    }
    total
}

fn share(counts: &HashMap<String, usize>, name: &str) -> f64 {
    let all: usize = counts.values().sum();
    *counts.get(name).unwrap_or(&0) as f64 / all as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_sends_less_to_a_slow_server() {
    let fast1 = delayed("fast1", Duration::from_millis(2)).await;
    let fast2 = delayed("fast2", Duration::from_millis(2)).await;
    let slow = delayed("slow", Duration::from_millis(50)).await;
    let proxy = start_proxy(&config(&[&fast1, &fast2, &slow], "least_connections", "")).await;
    let counts = shares(&proxy, 8, Duration::from_secs(2)).await;
    assert!(share(&counts, "slow") < 0.15, "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peak_ewma_sends_little_to_a_ten_times_slower_server() {
    let mut servers = Vec::new();
    for (name, ms) in [("a", 5), ("b", 5), ("c", 5), ("slow", 50)] {
        servers.push(delayed(name, Duration::from_millis(ms)).await);
    }
    let refs: Vec<&Backend> = servers.iter().collect();
    let proxy = start_proxy(&config(&refs, "peak_ewma", "ewma_decay = \"5s\"")).await;
    let counts = shares(&proxy, 8, Duration::from_secs(3)).await;
    assert!(share(&counts, "slow") < 0.10, "{counts:?}");
    for name in ["a", "b", "c"] {
        assert!(share(&counts, name) > 0.2, "{counts:?}");
    }
}

async fn echo(name: &'static str) -> Backend {
    delayed(name, Duration::ZERO).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_keeps_each_key_on_one_server() {
    let servers = [echo("a").await, echo("b").await, echo("c").await];
    let refs: Vec<&Backend> = servers.iter().collect();
    for (hash_key, header) in [("header:x-tenant", "x-tenant"), ("cookie:sid", "cookie")] {
        let proxy = start_proxy(&config(
            &refs,
            "consistent_hash",
            &format!("hash_key = \"{hash_key}\""),
        ))
        .await;
        let mut owner: HashMap<String, String> = HashMap::new();
        for round in 0..3 {
            for key in 0..60 {
                let value = if header == "cookie" {
                    format!("theme=x; sid=user{key}")
                } else {
                    format!("tenant{key}")
                };
                let request = Request::get(url(&proxy, &format!("/r{round}")))
                    .header(header, value)
                    .body(full(""))
                    .unwrap();
                let name = send(&client(), request)
                    .await
                    .header("x-backend")
                    .unwrap()
                    .to_string();
                let first = owner.entry(key.to_string()).or_insert_with(|| name.clone());
                assert_eq!(*first, name, "{hash_key}: key {key} moved");
            }
        }
        let used: HashSet<&String> = owner.values().collect();
        assert_eq!(used.len(), 3, "{hash_key}: keys all on {used:?}");
        // Without the key: round-robin over all servers.
        let names: HashSet<String> = futures_util::future::join_all((0..6).map(|_| async {
            get(&url(&proxy, "/"), None)
                .await
                .header("x-backend")
                .unwrap()
                .to_string()
        }))
        .await
        .into_iter()
        .collect();
        assert_eq!(names.len(), 3, "{hash_key}: keyless requests {names:?}");
        proxy.shutdown().await;
    }

    let proxy = start_proxy(&config(&refs, "consistent_hash", "hash_key = \"path\"")).await;
    for path in ["/cart/1", "/cart/2", "/user/9"] {
        let first = get(&url(&proxy, path), None)
            .await
            .header("x-backend")
            .unwrap()
            .to_string();
        for _ in 0..5 {
            let again = get(&url(&proxy, &format!("{path}?v=2")), None).await;
            assert_eq!(again.header("x-backend").unwrap(), first, "{path}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_on_client_ip_sticks() {
    let servers = [echo("a").await, echo("b").await];
    let refs: Vec<&Backend> = servers.iter().collect();
    let proxy = start_proxy(&config(
        &refs,
        "consistent_hash",
        "hash_balance_factor = 1.5",
    ))
    .await;
    let first = get(&url(&proxy, "/"), None)
        .await
        .header("x-backend")
        .unwrap()
        .to_string();
    for _ in 0..10 {
        assert_eq!(
            get(&url(&proxy, "/"), None)
                .await
                .header("x-backend")
                .unwrap(),
            first
        );
    }
}
