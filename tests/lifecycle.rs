//! The real binary: graceful shutdown, exit codes, the demo, and bounded
//! memory while 64 MiB bodies stream both ways.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;

use support::{
    backend, client, echo_backend, full, get, send_within, spawn_binary, spawn_binary_logging,
    ProxyProcess,
};

const CHUNK: usize = 1024 * 1024;
const CHUNKS: usize = 64;

fn config(server: &str, global: &str) -> String {
    support::pool_config(
        &[server.to_string()],
        "round_robin",
        "timeout = \"10s\"",
        global,
        false,
    )
}

/// Deterministic 1 MiB chunk number `index`.
fn chunk(index: usize) -> Bytes {
    let seed = index as u32;
    Bytes::from(
        (0..CHUNK as u32)
            .map(|i| (i.wrapping_mul(31).wrapping_add(seed * 7) >> 3) as u8)
            .collect::<Vec<u8>>(),
    )
}

fn expected_digest() -> String {
    let mut hasher = Sha256::new();
    for index in 0..CHUNKS {
        hasher.update(chunk(index));
    }
    format!("{:x}", hasher.finalize())
}

fn streamed_body() -> support::TestBody {
    let frames = futures_util::stream::iter((0..CHUNKS).map(|i| Ok(Frame::data(chunk(i)))));
    StreamBody::new(frames).boxed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_mib_stream_both_ways_in_bounded_memory() {
    let upstream = backend(|request: Request<Incoming>| async move {
        if request.method() == http::Method::GET {
            return Response::new(streamed_body());
        }
        // Hash the upload as it streams, without holding it.
        let mut body = request.into_body();
        let mut hasher = Sha256::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                hasher.update(&data);
            }
        }
        Response::new(full(format!("{:x}", hasher.finalize())))
    })
    .await;
    let (proxy, _config) = spawn_binary(&config(&upstream.addr.to_string(), ""), 1);
    let base = format!("http://{}", proxy.addr("web"));
    // Warm up, then measure from here.
    assert_eq!(get(&format!("{base}/warm"), None).await.status, 200);
    let rss_before = proxy.rss_kib();
    let expected = expected_digest();

    let request = Request::post(format!("{base}/upload"))
        .body(streamed_body())
        .unwrap();
    // 64 MiB through debug builds on a loaded machine: a liveness bound,
    // not a speed test (docs/testing.md).
    let reply = send_within(&client(), request, Duration::from_secs(120)).await;
    assert_eq!(reply.text(), expected, "upload digest");

    let response = client()
        .request(
            Request::get(format!("{base}/download"))
                .body(support::full(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut hasher = Sha256::new();
    let mut total = 0;
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(30), body.frame())
        .await
        .unwrap()
    {
        if let Ok(data) = frame.unwrap().into_data() {
            total += data.len();
            hasher.update(&data);
        }
    }
    assert_eq!(total, CHUNK * CHUNKS);
    assert_eq!(
        format!("{:x}", hasher.finalize()),
        expected,
        "download digest"
    );

    let growth_kib = proxy.peak_rss_kib().saturating_sub(rss_before);
    assert!(growth_kib < 32 * 1024, "proxy RSS grew by {growth_kib} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_request_finish_then_exits_0() {
    let slow = backend(|_| async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        Response::new(full("finished"))
    })
    .await;
    let (mut proxy, _config) = spawn_binary(
        &config(&slow.addr.to_string(), "shutdown_timeout = \"10s\""),
        1,
    );
    let addr = proxy.addr("web");
    let in_flight = tokio::spawn(async move { get(&format!("http://{addr}/slow"), None).await });
    support::until(
        Duration::from_secs(10),
        "the request reached the server",
        || slow.requests() == 1,
    )
    .await;
    let signalled = Instant::now();
    proxy.signal("TERM");
    // New connections are refused soon after the signal.
    let mut refused = false;
    for _ in 0..50 {
        if TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "still accepting after SIGTERM");
    let reply = in_flight.await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "finished");
    let code = tokio::task::spawn_blocking(move || proxy.wait_exit(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(code, Some(0));
    assert!(signalled.elapsed() < Duration::from_secs(8));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listen_address_in_use_exits_2() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let toml =
        config("127.0.0.1:1", "").replace("127.0.0.1:0", &taken.local_addr().unwrap().to_string());
    let path = support::tempfile_path::TempPath::new("in-use", "toml");
    std::fs::write(path.as_path(), toml).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_usherd"))
        .args(["run", "-c"])
        .arg(path.as_path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot listen on"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_starts_answers_5_3_1_and_stops() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_usherd"))
        .args(["demo", "--port", "0", "--admin-port", "0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().unwrap().unwrap();
    let url = first
        .split_whitespace()
        .find(|word| word.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {first:?}"))
        .to_string();
    let admin = lines
        .map_while(Result::ok)
        .find(|l| l.trim_start().starts_with("admin"))
        .and_then(|l| l.split_whitespace().nth(1).map(String::from))
        .unwrap();
    let proxy = ProxyProcess {
        child,
        listeners: vec![],
        stderr_tail: Default::default(),
    };
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..9 {
        let reply = get(&format!("{url}/"), None).await;
        assert_eq!(reply.status, 200);
        assert!(reply.text().starts_with("hello from"));
        *counts
            .entry(reply.header("x-backend").unwrap().to_string())
            .or_insert(0) += 1;
    }
    assert_eq!(counts["alpha"], 5, "{counts:?}");
    assert_eq!(counts["beta"], 3, "{counts:?}");
    assert_eq!(counts["gamma"], 1, "{counts:?}");
    let status = get(&admin, None).await.json();
    assert_eq!(status["upstreams"]["demo"]["strategy"], "weighted");
    assert_eq!(status["generation"], 1);
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_on_a_taken_port_says_so_and_exits_2() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let output = Command::new(env!("CARGO_BIN_EXE_usherd"))
        .args(["demo", "--port", &port, "--admin-port", "0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}")) && stderr.contains("--port"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_json_access_log_event_per_request() {
    let upstream = echo_backend("a").await;
    let (proxy, _config) = spawn_binary_logging(&config(&upstream.addr.to_string(), ""), 1, "info");
    let base = format!("http://{}", proxy.addr("web"));
    assert_eq!(
        get(&format!("{base}/logged?x=1"), Some("shop.example.com"))
            .await
            .status,
        200
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let event = loop {
        let found = proxy
            .stderr_tail
            .lock()
            .unwrap()
            .iter()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find(|event| event["target"] == "access");
        if let Some(event) = found {
            break event;
        }
        assert!(Instant::now() < deadline, "no access event logged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(event["client"], "127.0.0.1");
    assert_eq!(event["method"], "GET");
    assert_eq!(event["host"], "shop.example.com");
    assert_eq!(event["path"], "/logged?x=1");
    assert_eq!(event["status"], 200);
    assert_eq!(event["upstream"], "pool");
    assert_eq!(event["server"], upstream.addr.to_string());
    assert!(event["bytes"].as_u64().unwrap() > 0);
    assert!(event["duration_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(event["request_id"].as_str().unwrap().len(), 32);
}
