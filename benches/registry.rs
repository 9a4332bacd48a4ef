//! The registry's cost, for docs/benchmarks.md: the real binary with 1,000
//! registered instances, each passing its TTL check every 10 s (100 passes a
//! second), watched by 10 blocking queries. Measured from the process's own
//! CPU time (/proc): CPU per pass, and how often the watchers wake while
//! nothing changes (they must not), then while 5% of the instances flip.
//!
//! Run: `cargo bench --bench registry` (about a minute).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const INSTANCES: usize = 1000;
const PASS_EVERY: Duration = Duration::from_secs(10);
const WATCHERS: usize = 10;
const STEADY: Duration = Duration::from_secs(30);

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// CPU seconds (user + system) the process `pid` has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// A PUT; sent once more if the pooled connection it went on was closed
/// under it (hyper's client does not resend a PUT by itself).
async fn put(client: &HttpClient, url: String, body: String) {
    for attempt in 0..2 {
        let request = Request::builder()
            .method(Method::PUT)
            .uri(&url)
            .body(Full::new(Bytes::from(body.clone())))
            .unwrap();
        match client.request(request).await {
            Ok(response) => {
                assert!(response.status().is_success(), "{}", response.status());
                response.into_body().collect().await.unwrap();
                return;
            }
            Err(error) if attempt == 0 => eprintln!("resending after: {error}"),
            Err(error) => panic!("{url}: {error}"),
        }
    }
}

/// Services reporting at once, each on a connection of its own.
const REPORTERS: usize = 8;

/// Passes (or fails) the check of each instance in `ids` once, spread over
/// `over`, from `REPORTERS` connections.
async fn pass_round(client: &HttpClient, admin: &str, ids: &[usize], over: Duration, verb: &str) {
    let start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for reporter in 0..REPORTERS {
        let mine: Vec<usize> = ids
            .iter()
            .copied()
            .skip(reporter)
            .step_by(REPORTERS)
            .collect();
        let gap = over / mine.len().max(1) as u32;
        let (client, admin, verb) = (client.clone(), admin.to_string(), verb.to_string());
        tasks.spawn(async move {
            for (n, id) in mine.iter().enumerate() {
                tokio::time::sleep_until(start + gap * n as u32).await;
                let url = format!("http://{admin}/v1/agent/check/{verb}/service:api-{id}");
                put(&client, url, String::new()).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(run());
}

async fn run() {
    let directory =
        std::env::temp_dir().join(format!("usherd-registry-bench-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let config = directory.join("usherd.toml");
    std::fs::write(
        &config,
        r#"
[admin]
listen = "127.0.0.1:0"
[registry]
state_file = "registry.json"
[listeners.web]
listen = "127.0.0.1:0"
[vhosts.all]
hosts = ["*"]
routes = [{ path = "/", upstream = "api" }]
[upstreams.api]
[upstreams.api.discovery]
source = "registry"
service = "api"
"#,
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_usherd"))
        .args(["run", "--log-format", "json", "-c"])
        .arg(&config)
        .env("RUST_LOG", "warn,usherd=info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut admin = String::new();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    for line in lines.by_ref().map_while(Result::ok) {
        let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if event["kind"] == "admin API" {
            admin = event["addr"].as_str().unwrap().to_string();
            break;
        }
    }
    // Its log goes on being read, so a full pipe never stops it.
    std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
    assert!(!admin.is_empty(), "usherd did not start");
    let client: HttpClient = Client::builder(TokioExecutor::new()).build(HttpConnector::new());

    for id in 0..INSTANCES {
        let body = serde_json::json!({
            "Name": "api", "ID": format!("api-{id}"), "Address": "127.0.0.1",
            "Port": 10_000 + id, "Check": {"TTL": "60s", "Status": "passing"}
        });
        put(
            &client,
            format!("http://{admin}/v1/agent/service/register"),
            body.to_string(),
        )
        .await;
    }

    let wakeups = Arc::new(AtomicU64::new(0));
    let running = Arc::new(AtomicBool::new(true));
    let mut watchers = Vec::new();
    for _ in 0..WATCHERS {
        let (client, admin, wakeups, running) = (
            client.clone(),
            admin.clone(),
            wakeups.clone(),
            running.clone(),
        );
        watchers.push(tokio::spawn(async move {
            let mut index = 0u64;
            while running.load(Ordering::Relaxed) {
                let request = Request::get(format!(
                    "http://{admin}/v1/health/service/api?passing&index={index}&wait=2s"
                ))
                .body(Full::new(Bytes::new()))
                .unwrap();
                let response = client.request(request).await.unwrap();
                let next: u64 = response.headers()["x-consul-index"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                response.into_body().collect().await.unwrap();
                if index != 0 && next != index {
                    wakeups.fetch_add(1, Ordering::Relaxed);
                }
                index = next;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let ids: Vec<usize> = (0..INSTANCES).collect();
    let (cpu_before, started) = (cpu_seconds(pid), Instant::now());
    let rounds = (STEADY.as_secs() / PASS_EVERY.as_secs()).max(1) as usize;
    for _ in 0..rounds {
        pass_round(&client, &admin, &ids, PASS_EVERY, "pass").await;
    }
    let steady_cpu = cpu_seconds(pid) - cpu_before;
    let steady_wakeups = wakeups.swap(0, Ordering::Relaxed);
    let passes = rounds * INSTANCES;
    println!(
        "steady: {passes} passes in {:.1} s: {:.1} us CPU per pass ({:.2}% of a core); \
         watcher wake-ups {steady_wakeups} (nothing changed)",
        started.elapsed().as_secs_f64(),
        steady_cpu * 1e6 / passes as f64,
        steady_cpu * 100.0 / started.elapsed().as_secs_f64(),
    );

    // 5% flip to critical and back, one at a time: each flip is a change.
    let flipping: Vec<usize> = (0..INSTANCES / 20).collect();
    let cpu_before = cpu_seconds(pid);
    pass_round(&client, &admin, &flipping, Duration::from_secs(2), "fail").await;
    pass_round(&client, &admin, &flipping, Duration::from_secs(2), "pass").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let flip_cpu = cpu_seconds(pid) - cpu_before;
    println!(
        "flips: {} status changes: watcher wake-ups {} across {WATCHERS} watchers; {:.1} us CPU per change",
        flipping.len() * 2,
        wakeups.load(Ordering::Relaxed),
        flip_cpu * 1e6 / (flipping.len() * 2) as f64,
    );

    running.store(false, Ordering::Relaxed);
    for watcher in watchers {
        watcher.await.ok();
    }
    child.kill().ok();
    child.wait().ok();
    std::fs::remove_dir_all(&directory).ok();
}
