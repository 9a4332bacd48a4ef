//! Forwarding end to end (docs/config.md#requests) through the real server on
//! loopback with real hyper backends: header rules, keep-alive reuse, error
//! statuses, retries, WebSocket tunnelling, smuggling shapes and client limits.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest, Sha256};
use support::{
    backend, client, closed_port, echo_backend, exchange_websocket_echoes, full, get, raw_exchange,
    send, start_proxy, url, websocket_echo_backend, TestBody,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn one_pool(servers: &[String], extra_upstream: &str, global: &str) -> String {
    support::pool_config(servers, "round_robin", extra_upstream, global, false)
}

fn empty() -> TestBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

#[tokio::test]
async fn request_and_response_header_rules() {
    let upstream = backend(|request: Request<Incoming>| async move {
        let mut headers = serde_json::Map::new();
        for (key, value) in request.headers() {
            headers.insert(key.to_string(), value.to_str().unwrap().into());
        }
        let mut response = Response::new(full(serde_json::Value::Object(headers).to_string()));
        let h = response.headers_mut();
        h.insert("connection", "x-hop".parse().unwrap());
        h.insert("x-hop", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-end-to-end", "kept".parse().unwrap());
        response
    })
    .await;
    let proxy = start_proxy(&one_pool(&[upstream.addr.to_string()], "", "")).await;
    let request = Request::get(url(&proxy, "/h?q=1"))
        .header("host", "Shop.Example.com:8080")
        .header("connection", "x-secret")
        .header("x-secret", "drop me")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("te", "gzip")
        .header("x-forwarded-for", "203.0.113.9")
        .body(empty())
        .unwrap();
    let reply = send(&client(), request).await;
    assert_eq!(reply.status, 200);
    let seen = reply.json();
    for gone in [
        "x-secret",
        "keep-alive",
        "proxy-connection",
        "te",
        "transfer-encoding",
        "upgrade",
    ] {
        assert!(
            seen.get(gone).is_none(),
            "{gone} reached the backend: {seen}"
        );
    }
    assert_ne!(seen["connection"], "x-secret");
    assert_eq!(seen["host"], "Shop.Example.com:8080");
    assert_eq!(seen["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], "Shop.Example.com:8080");
    let id = seen["x-request-id"].as_str().unwrap();
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    // The response gets the same hop-by-hop cleaning.
    assert!(reply.header("x-hop").is_none());
    assert!(reply.header("keep-alive").is_none());
    assert_eq!(reply.header("x-end-to-end"), Some("kept"));

    // A client's request id is kept; two requests without one get different ids.
    let request = Request::get(url(&proxy, "/"))
        .header("x-request-id", "client-id-1")
        .body(empty())
        .unwrap();
    assert_eq!(
        send(&client(), request).await.json()["x-request-id"],
        "client-id-1"
    );
    let a = get(&url(&proxy, "/"), None).await.json()["x-request-id"].clone();
    let b = get(&url(&proxy, "/"), None).await.json()["x-request-id"].clone();
    assert_ne!(a, b);
    proxy.shutdown().await;
}

#[tokio::test]
async fn upstream_connections_are_kept_alive_and_reused() {
    let upstream = echo_backend("a").await;
    let proxy = start_proxy(&one_pool(&[upstream.addr.to_string()], "", "")).await;
    let client = client();
    for _ in 0..200 {
        let request = Request::get(url(&proxy, "/")).body(empty()).unwrap();
        assert_eq!(send(&client, request).await.status, 200);
    }
    assert_eq!(upstream.requests(), 200);
    assert!(
        upstream.connections() <= 3,
        "opened {} upstream connections",
        upstream.connections()
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn refused_upstream_is_502() {
    let dead = closed_port().await;
    let proxy = start_proxy(&one_pool(&[dead.to_string()], "retries = 0", "")).await;
    let reply = get(&url(&proxy, "/"), None).await;
    assert_eq!(reply.status, 502);
    assert!(reply.text().starts_with("502"));
    proxy.shutdown().await;
}

#[tokio::test]
async fn connect_failure_retries_on_the_live_server() {
    let dead = closed_port().await;
    let live = echo_backend("live").await;
    let proxy = start_proxy(&one_pool(
        &[dead.to_string(), live.addr.to_string()],
        "retries = 1",
        "",
    ))
    .await;
    for _ in 0..10 {
        let reply = get(&url(&proxy, "/"), None).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("x-backend"), Some("live"));
    }
    // A POST with a body is retried too: the connection failed before any byte was sent.
    let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let hashing = backend(|request: Request<Incoming>| async move {
        let body = request.into_body().collect().await.unwrap().to_bytes();
        Response::new(full(format!("{:x}", Sha256::digest(&body))))
    })
    .await;
    let proxy2 = start_proxy(&one_pool(
        &[dead.to_string(), hashing.addr.to_string()],
        "retries = 1",
        "",
    ))
    .await;
    for _ in 0..4 {
        let request = Request::post(url(&proxy2, "/upload"))
            .body(full(payload.clone()))
            .unwrap();
        let reply = send(&client(), request).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), format!("{:x}", Sha256::digest(&payload)));
    }
    proxy.shutdown().await;
    proxy2.shutdown().await;
}

#[tokio::test]
async fn idempotent_requests_are_retried_after_503_but_posts_are_not() {
    let failing = backend(|_| async {
        let mut response = Response::new(full("busy"));
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        response
    })
    .await;
    let healthy = echo_backend("healthy").await;
    let proxy = start_proxy(&one_pool(
        &[failing.addr.to_string(), healthy.addr.to_string()],
        "retries = 1",
        "",
    ))
    .await;
    for _ in 0..6 {
        let reply = get(&url(&proxy, "/"), None).await;
        assert_eq!(reply.status, 200);
    }
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let request = Request::post(url(&proxy, "/")).body(full("x")).unwrap();
        statuses.push(send(&client(), request).await.status);
    }
    assert!(
        statuses.contains(&503),
        "POSTs must not be retried: {statuses:?}"
    );
    assert!(statuses.contains(&200));
    proxy.shutdown().await;
}

#[tokio::test]
async fn slow_upstream_is_504() {
    let slow = backend(|_| async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        Response::new(full("late"))
    })
    .await;
    let proxy = start_proxy(&one_pool(
        &[slow.addr.to_string()],
        "timeout = \"300ms\"",
        "",
    ))
    .await;
    let started = Instant::now();
    let reply = get(&url(&proxy, "/"), None).await;
    assert_eq!(reply.status, 504);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn websocket_is_tunnelled_both_ways() {
    let upstream = websocket_echo_backend().await;
    let proxy = start_proxy(&one_pool(&[upstream.addr.to_string()], "", "")).await;
    let stream = TcpStream::connect(proxy.listeners()[0].addr).await.unwrap();
    let ws_url = format!("ws://{}/chat", proxy.listeners()[0].addr);
    exchange_websocket_echoes(ws_url, stream).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn smuggling_shapes_are_refused_and_never_forwarded() {
    let upstream = echo_backend("a").await;
    let proxy = start_proxy(&one_pool(&[upstream.addr.to_string()], "", "")).await;
    let addr = proxy.listeners()[0].addr;
    let shapes: [&[u8]; 4] = [
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    ];
    for shape in shapes {
        let answer = raw_exchange(addr, shape).await;
        assert!(
            answer.starts_with("HTTP/1.1 400"),
            "{}: {answer}",
            String::from_utf8_lossy(shape)
        );
    }
    assert_eq!(
        upstream.requests(),
        0,
        "a smuggling shape reached the backend"
    );
    // A plain chunked request still goes through.
    let answer = raw_exchange(addr, b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn oversized_heads_get_431_and_bodies_413() {
    let upstream = echo_backend("a").await;
    let proxy = start_proxy(&one_pool(
        &[upstream.addr.to_string()],
        "",
        "max_request_header_size = \"16KiB\"\nmax_request_body = \"1KiB\"",
    ))
    .await;
    let addr = proxy.listeners()[0].addr;
    let big = "x".repeat(20 * 1024);
    let answer = raw_exchange(
        addr,
        format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");

    let body = "y".repeat(2048);
    let answer = raw_exchange(
        addr,
        format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2048\r\n\r\n{body}").as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    // Chunked: counted as it streams.
    let chunk = "z".repeat(512);
    let mut request =
        String::from("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    for _ in 0..4 {
        request += &format!("200\r\n{chunk}\r\n");
    }
    request += "0\r\n\r\n";
    let answer = raw_exchange(addr, request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    // Within the limits all is well.
    let answer = raw_exchange(
        addr,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn slowloris_is_cut_at_header_read_timeout_while_others_are_served() {
    let upstream = echo_backend("a").await;
    let proxy = start_proxy(&one_pool(
        &[upstream.addr.to_string()],
        "",
        "header_read_timeout = \"1s\"\nidle_timeout = \"30s\"",
    ))
    .await;
    let addr = proxy.listeners()[0].addr;
    let mut slow = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    let dribble = tokio::spawn(async move {
        for byte in b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaa" {
            if slow.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut rest)).await;
        started.elapsed()
    });
    // Meanwhile another client is served normally.
    for _ in 0..5 {
        assert_eq!(get(&url(&proxy, "/"), None).await.status, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cut_after = dribble.await.unwrap();
    assert!(
        cut_after >= Duration::from_millis(900),
        "cut too early: {cut_after:?}"
    );
    assert!(
        cut_after < Duration::from_millis(4000),
        "not cut: {cut_after:?}"
    );
    assert_eq!(upstream.requests(), 5);
    proxy.shutdown().await;
}

#[tokio::test]
async fn idle_keep_alive_connections_close_at_idle_timeout_not_header_timeout() {
    let upstream = echo_backend("a").await;
    let proxy = start_proxy(&one_pool(
        &[upstream.addr.to_string()],
        "",
        "header_read_timeout = \"500ms\"\nidle_timeout = \"2s\"",
    ))
    .await;
    let addr = proxy.listeners()[0].addr;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    stream.write_all(request).await.unwrap();
    read_one_response(&mut stream).await;
    // Idle for longer than header_read_timeout: still open.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    stream.write_all(request).await.unwrap();
    read_one_response(&mut stream).await;
    // Then idle past idle_timeout: the proxy closes it.
    let idle_since = Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(6), stream.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "connection was not closed");
    let closed_after = idle_since.elapsed();
    assert!(
        closed_after >= Duration::from_millis(1800),
        "closed after {closed_after:?}"
    );
    assert_eq!(upstream.requests(), 2);
    proxy.shutdown().await;
}

#[tokio::test]
async fn every_idle_connection_closes_at_idle_timeout_whatever_the_response() {
    // Quick 502s (no server listening) once left some connections without
    // an armed idle limit: hyper does not read again after such a response.
    let dead = closed_port().await;
    let proxy = start_proxy(&one_pool(
        &[dead.to_string()],
        "retries = 0",
        "idle_timeout = \"500ms\"",
    ))
    .await;
    let addr = proxy.listeners()[0].addr;
    let mut clients = Vec::new();
    for _ in 0..40 {
        clients.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
                .await
                .unwrap();
            let mut all = Vec::new();
            let read =
                tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut all)).await;
            (read.is_ok(), String::from_utf8_lossy(&all).to_string())
        }));
    }
    for client in clients {
        let (closed, answer) = client.await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
        assert!(closed, "an idle connection outlived idle_timeout");
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn parked_idle_connections_take_up_any_next_request_and_shut_down_promptly() {
    let upstream = echo_backend("a").await;
    let proxy = start_proxy(&one_pool(&[upstream.addr.to_string()], "", "")).await;
    let addr = proxy.listeners()[0].addr;
    let request = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_one_response(&mut stream).await;
    // Idle well past the parking delay (100 ms), then a request sent a few
    // bytes at a time: the parked connection is taken up again.
    tokio::time::sleep(Duration::from_millis(400)).await;
    for piece in request.chunks(5) {
        stream.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    read_one_response(&mut stream).await;
    // Parked again, then two pipelined requests in one write.
    tokio::time::sleep(Duration::from_millis(400)).await;
    stream
        .write_all(&[&request[..], &request[..]].concat())
        .await
        .unwrap();
    let mut data = Vec::new();
    while complete_responses(&data) < 2 {
        let mut buffer = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
            .await
            .expect("both pipelined responses in time")
            .unwrap();
        assert!(n > 0, "closed early");
        data.extend_from_slice(&buffer[..n]);
    }
    assert_eq!(upstream.requests(), 4);
    // A parked connection does not hold up shutdown.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let started = Instant::now();
    assert!(proxy.shutdown().await, "nothing was in flight");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0))), "closed at shutdown: {read:?}");
}

/// How many whole 200 responses with a Content-Length body `data` holds.
fn complete_responses(data: &[u8]) -> usize {
    let text = String::from_utf8_lossy(data);
    let mut rest = &text[..];
    let mut count = 0;
    while let Some(head_end) = rest.find("\r\n\r\n") {
        assert!(rest.starts_with("HTTP/1.1 200"), "{rest}");
        let length: usize = rest[..head_end]
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap_or(0);
        if rest.len() < head_end + 4 + length {
            break;
        }
        count += 1;
        rest = &rest[head_end + 4 + length..];
    }
    count
}

/// Reads one response with a Content-Length body from a keep-alive connection.
async fn read_one_response(stream: &mut TcpStream) -> String {
    let mut data = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&data));
        data.extend_from_slice(&buffer[..n]);
        let text = String::from_utf8_lossy(&data).to_string();
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length: usize = text[..head_end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if data.len() >= head_end + 4 + length {
                assert!(text.starts_with("HTTP/1.1 200"), "{text}");
                return text;
            }
        }
    }
}

#[tokio::test]
async fn h2c_prior_knowledge_is_served() {
    let upstream = echo_backend("a").await;
    let proxy = start_proxy(&one_pool(&[upstream.addr.to_string()], "", "")).await;
    let h2: Client<HttpConnector, TestBody> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new());
    let concurrent = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..10 {
        let h2 = h2.clone();
        let target = url(&proxy, &format!("/h2/{i}"));
        let concurrent = concurrent.clone();
        tasks.push(tokio::spawn(async move {
            let request = Request::get(target).body(full(Bytes::new())).unwrap();
            let reply = send(&h2, request).await;
            assert_eq!(reply.status, 200);
            let echo = reply.json();
            assert_eq!(echo["path"], format!("/h2/{i}"));
            // The HTTP/2 :authority becomes the upstream Host.
            assert_eq!(
                echo["headers"]["host"][0],
                echo["headers"]["x-forwarded-host"][0]
            );
            concurrent.fetch_add(1, Ordering::SeqCst);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(concurrent.load(Ordering::SeqCst), 10);
    proxy.shutdown().await;
}

#[tokio::test]
async fn missing_host_on_http11_is_400() {
    let upstream = echo_backend("a").await;
    let proxy = start_proxy(&one_pool(&[upstream.addr.to_string()], "", "")).await;
    let answer = raw_exchange(proxy.listeners()[0].addr, b"GET / HTTP/1.1\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(upstream.requests(), 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn streamed_request_bodies_arrive_intact() {
    let hashing = backend(|request: Request<Incoming>| async move {
        let body = request.into_body().collect().await.unwrap().to_bytes();
        Response::new(full(format!("{:x}", Sha256::digest(&body))))
    })
    .await;
    let proxy = start_proxy(&one_pool(&[hashing.addr.to_string()], "retries = 0", "")).await;
    let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let request = Request::put(url(&proxy, "/blob"))
        .body(
            Full::new(Bytes::from(payload.clone()))
                .map_err(|never| match never {})
                .boxed(),
        )
        .unwrap();
    let reply = send(&client(), request).await;
    assert_eq!(reply.text(), format!("{:x}", Sha256::digest(&payload)));
    proxy.shutdown().await;
}
