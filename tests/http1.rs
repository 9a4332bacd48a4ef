//! The HTTP/1 path on the wire (docs/http1.md), through the real proxy on
//! loopback: raw clients, and raw backends that send exactly the bytes a
//! test needs (chunked, until close, interim, broken, early answers), so
//! that framing, persistence and the pooled connections are seen byte for
//! byte.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use sha2::{Digest, Sha256};
use support::{
    backend, echo_backend, full, raw_backend, raw_exchange, read_exact_more, read_head,
    start_proxy, Backend,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn one_pool(servers: &[String], extra_upstream: &str, global: &str) -> String {
    support::pool_config(servers, "round_robin", extra_upstream, global, false)
}

/// A raw backend that answers every request on a connection with
/// `answer(head)`, reading (and dropping) a request body of the length its
/// `Content-Length` gives.
async fn scripted(answer: fn(&str) -> Vec<u8>) -> Backend {
    raw_backend(
        move |mut stream: TcpStream, requests: Arc<AtomicUsize>| async move {
            let mut pending = Vec::new();
            while let Some(head) = read_head(&mut stream, &mut pending).await {
                requests.fetch_add(1, Ordering::SeqCst);
                let length = content_length(&head);
                read_exact_more(&mut stream, &mut pending, length).await;
                if stream.write_all(&answer(&head)).await.is_err() {
                    return;
                }
            }
        },
    )
    .await
}

fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().unwrap())
        })
        .unwrap_or(0)
}

/// The request line's path.
fn path_of(head: &str) -> &str {
    head.split(' ').nth(1).unwrap_or("")
}

/// One response from a raw client connection: its head and its body, read
/// by its framing (`Content-Length`, chunked, or until close).
async fn read_response(
    stream: &mut TcpStream,
    pending: &mut Vec<u8>,
    to_head: bool,
) -> (String, Vec<u8>) {
    let head = read_head(stream, pending).await.expect("a response head");
    let lower = head.to_ascii_lowercase();
    if to_head || lower.starts_with("http/1.1 204") || lower.starts_with("http/1.1 304") {
        return (head, Vec::new());
    }
    if lower.contains("transfer-encoding: chunked") {
        let mut body = Vec::new();
        loop {
            let line = read_line(stream, pending).await;
            let size = usize::from_str_radix(line.trim(), 16).expect("a chunk size");
            if size == 0 {
                assert_eq!(read_line(stream, pending).await, "", "no trailers");
                return (head, body);
            }
            body.extend(read_exact_more(stream, pending, size).await);
            assert_eq!(read_line(stream, pending).await, "");
        }
    }
    if lower.contains("content-length:") {
        let length = content_length(&head);
        return (head, read_exact_more(stream, pending, length).await);
    }
    let mut body = std::mem::take(pending);
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut body)).await;
    (head, body)
}

async fn read_line(stream: &mut TcpStream, pending: &mut Vec<u8>) -> String {
    loop {
        if let Some(end) = pending.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&pending[..end]).into_owned();
            pending.drain(..end + 2);
            return line;
        }
        let mut buffer = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
            .await
            .expect("a line within 5 s")
            .unwrap();
        assert!(n > 0, "closed in a line");
        pending.extend_from_slice(&buffer[..n]);
    }
}

/// True when the server closes the connection within 5 s.
async fn closes(stream: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    matches!(
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await,
        Ok(Ok(_))
    )
}

#[tokio::test]
async fn chunked_and_until_close_bodies_are_reframed_for_each_client() {
    let upstream = scripted(|head| match path_of(head) {
        "/chunked" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
            5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: dropped\r\n\r\n"
            .to_vec(),
        _ => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
    })
    .await;
    let until_close = raw_backend(
        |mut stream: TcpStream, requests: Arc<AtomicUsize>| async move {
            let mut pending = Vec::new();
            if read_head(&mut stream, &mut pending).await.is_some() {
                requests.fetch_add(1, Ordering::SeqCst);
                let _ = stream
                    .write_all(b"HTTP/1.0 200 OK\r\n\r\nuntil the end")
                    .await;
            }
        },
    )
    .await;
    let toml = format!(
        r#"
[listeners.web]
listen = "127.0.0.1:0"
[vhosts.all]
hosts = ["*"]
routes = [{{ path = "/", upstream = "chunked" }}, {{ path = "/close", upstream = "close" }}]
[upstreams.chunked]
servers = [{{ addr = "{}" }}]
[upstreams.close]
servers = [{{ addr = "{}" }}]
"#,
        upstream.addr, until_close.addr
    );
    let proxy = start_proxy(&toml).await;
    let addr = proxy.listeners()[0].addr;

    // HTTP/1.1: chunked both times, on one connection, trailers dropped.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut pending = Vec::new();
    stream
        .write_all(
            b"GET /chunked HTTP/1.1\r\nHost: a\r\n\r\nGET /close HTTP/1.1\r\nHost: a\r\n\r\n",
        )
        .await
        .unwrap();
    let (head, body) = read_response(&mut stream, &mut pending, false).await;
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    assert_eq!(body, b"hello world");
    let (head, body) = read_response(&mut stream, &mut pending, false).await;
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    assert!(
        !head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    assert_eq!(body, b"until the end");

    // HTTP/1.0: the body runs until close.
    let answer = raw_exchange(addr, b"GET /chunked HTTP/1.0\r\nHost: a\r\n\r\n").await;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "{head}"
    );
    assert_eq!(body, "hello world");
    proxy.shutdown().await;
}

#[tokio::test]
async fn request_bodies_go_upstream_reframed_and_whole() {
    // The backend writes back what it got after the head, byte for byte.
    let upstream = raw_backend(
        |mut stream: TcpStream, requests: Arc<AtomicUsize>| async move {
            let mut pending = Vec::new();
            while let Some(head) = read_head(&mut stream, &mut pending).await {
                requests.fetch_add(1, Ordering::SeqCst);
                let body = if head
                    .to_ascii_lowercase()
                    .contains("transfer-encoding: chunked")
                {
                    let mut raw = Vec::new();
                    while !raw.ends_with(b"0\r\n\r\n") {
                        raw.extend(read_exact_more(&mut stream, &mut pending, 1).await);
                    }
                    raw
                } else {
                    read_exact_more(&mut stream, &mut pending, content_length(&head)).await
                };
                let mut answer =
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len())
                        .into_bytes();
                answer.extend(body);
                stream.write_all(&answer).await.unwrap();
            }
        },
    )
    .await;
    let proxy = start_proxy(&one_pool(&[upstream.addr.to_string()], "", "")).await;
    let addr = proxy.listeners()[0].addr;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut pending = Vec::new();
    // Extensions and trailers are not passed on; the chunks are.
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n")
        .await
        .unwrap();
    let (_, body) = read_response(&mut stream, &mut pending, false).await;
    assert_eq!(body, b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
    // A sized body arrives as it was sent, in pieces.
    stream
        .write_all(b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n01234")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    stream.write_all(b"56789").await.unwrap();
    let (_, body) = read_response(&mut stream, &mut pending, false).await;
    assert_eq!(body, b"0123456789");
    assert_eq!(upstream.requests(), 2);
    assert_eq!(
        upstream.connections(),
        1,
        "one upstream connection, kept alive"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn expect_100_continue_is_answered_and_interim_responses_are_passed_on() {
    let upstream = scripted(|_| {
        b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            .to_vec()
    })
    .await;
    let proxy = start_proxy(&one_pool(&[upstream.addr.to_string()], "", "")).await;
    let mut stream = TcpStream::connect(proxy.listeners()[0].addr).await.unwrap();
    stream
        .write_all(
            b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
        )
        .await
        .unwrap();
    // As curl does: the body only after the 100.
    let mut pending = Vec::new();
    let interim = read_head(&mut stream, &mut pending).await.unwrap();
    assert!(
        interim.starts_with("HTTP/1.1 100 Continue\r\n"),
        "{interim}"
    );
    stream.write_all(b"hello").await.unwrap();
    let hints = read_head(&mut stream, &mut pending).await.unwrap();
    assert_eq!(hints, "HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n");
    let (head, body) = read_response(&mut stream, &mut pending, false).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(body, b"ok");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_server_that_answers_before_the_body_is_relayed_at_once() {
    // It reads the head only, answers 413 and closes.
    let upstream = raw_backend(|mut stream: TcpStream, requests: Arc<AtomicUsize>| async move {
        let mut pending = Vec::new();
        if read_head(&mut stream, &mut pending).await.is_some() {
            requests.fetch_add(1, Ordering::SeqCst);
            let _ = stream
                .write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbig!")
                .await;
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    })
    .await;
    let proxy = start_proxy(&one_pool(&[upstream.addr.to_string()], "", "")).await;
    let mut stream = TcpStream::connect(proxy.listeners()[0].addr).await.unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100000000\r\n\r\nfirst bytes")
        .await
        .unwrap();
    let started = Instant::now();
    let mut pending = Vec::new();
    let (head, body) = read_response(&mut stream, &mut pending, false).await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    assert_eq!(body, b"big!");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(
        closes(&mut stream).await,
        "the rest of the body is not read as a request"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn pooled_connections_the_server_closed_are_not_lost_requests() {
    // Each connection answers one request, then the server closes it after
    // a moment (a short keep-alive timeout, as node's 5 s).
    let closes_idle = scripted_then_close(Duration::from_millis(50), false).await;
    let proxy = start_proxy(&one_pool(
        &[closes_idle.addr.to_string()],
        "retries = 0",
        "",
    ))
    .await;
    for _ in 0..3 {
        assert_eq!(
            support::get(&support::url(&proxy, "/"), None).await.status,
            200
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        closes_idle.connections(),
        3,
        "a closed idle connection was skipped"
    );
    proxy.shutdown().await;

    // The race: the server takes the next request on a kept connection and
    // closes without a word. A GET goes again on a new connection; a POST
    // with a body cannot (it may have been acted on): 502.
    let drops_second = scripted_then_close(Duration::ZERO, true).await;
    let proxy = start_proxy(&one_pool(
        &[drops_second.addr.to_string()],
        "retries = 0",
        "",
    ))
    .await;
    let client = support::client();
    for _ in 0..3 {
        let request = Request::get(support::url(&proxy, "/"))
            .body(support::full(Bytes::new()))
            .unwrap();
        assert_eq!(support::send(&client, request).await.status, 200);
    }
    let post = Request::post(support::url(&proxy, "/"))
        .body(full("payload"))
        .unwrap();
    assert_eq!(support::send(&client, post).await.status, 502);
    proxy.shutdown().await;
}

/// A raw backend: each connection answers its first request, then either
/// closes after `linger`, or (with `drop_second`) keeps it open and closes
/// when the second request comes, without answering.
async fn scripted_then_close(linger: Duration, drop_second: bool) -> Backend {
    raw_backend(
        move |mut stream: TcpStream, requests: Arc<AtomicUsize>| async move {
            let mut pending = Vec::new();
            let Some(head) = read_head(&mut stream, &mut pending).await else {
                return;
            };
            requests.fetch_add(1, Ordering::SeqCst);
            read_exact_more(&mut stream, &mut pending, content_length(&head)).await;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await;
            if drop_second {
                let _ = read_head(&mut stream, &mut pending).await;
            } else {
                tokio::time::sleep(linger).await;
            }
        },
    )
    .await
}

#[tokio::test]
async fn absolute_targets_route_by_their_host_which_replaces_host() {
    let shop = echo_backend("shop").await;
    let other = echo_backend("other").await;
    let toml = format!(
        r#"
[listeners.web]
listen = "127.0.0.1:0"
[vhosts.shop]
hosts = ["shop.example"]
routes = [{{ path = "/", upstream = "shop" }}]
[vhosts.other]
hosts = ["*"]
routes = [{{ path = "/", upstream = "other" }}]
[upstreams.shop]
servers = [{{ addr = "{}" }}]
[upstreams.other]
servers = [{{ addr = "{}" }}]
"#,
        shop.addr, other.addr
    );
    let proxy = start_proxy(&toml).await;
    let answer = raw_exchange(
        proxy.listeners()[0].addr,
        b"GET http://shop.example/x?y=1 HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    let body = answer.split_once("\r\n\r\n").unwrap().1;
    let echo: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(echo["backend"], "shop");
    assert_eq!(echo["path"], "/x?y=1");
    assert_eq!(echo["headers"]["host"][0], "shop.example");
    assert_eq!(echo["headers"]["x-forwarded-host"][0], "shop.example");
    // Two Host lines could route one way and be read another: 400.
    let answer = raw_exchange(
        proxy.listeners()[0].addr,
        b"GET / HTTP/1.1\r\nHost: shop.example\r\nHost: other.example\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(shop.requests() + other.requests(), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn bodiless_responses_and_http10_keep_alive_share_one_connection() {
    let upstream = scripted(|head| match path_of(head) {
        "/no-content" => b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(),
        "/not-modified" => b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n".to_vec(),
        // HEAD: the length of the body a GET would get, and no body.
        _ => b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n".to_vec(),
    })
    .await;
    let proxy = start_proxy(&one_pool(&[upstream.addr.to_string()], "", "")).await;
    let mut stream = TcpStream::connect(proxy.listeners()[0].addr).await.unwrap();
    stream
        .write_all(
            b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\nGET /no-content HTTP/1.1\r\nHost: a\r\n\r\n\
              GET /not-modified HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n\
              HEAD / HTTP/1.1\r\nHost: a\r\n\r\n",
        )
        .await
        .unwrap();
    let mut pending = Vec::new();
    let (head, _) = read_response(&mut stream, &mut pending, true).await;
    assert!(
        head.starts_with("HTTP/1.1 200") && head.contains("Content-Length: 10"),
        "{head}"
    );
    let (head, _) = read_response(&mut stream, &mut pending, false).await;
    assert!(head.starts_with("HTTP/1.1 204"), "{head}");
    let (head, _) = read_response(&mut stream, &mut pending, false).await;
    assert!(head.starts_with("HTTP/1.1 304"), "{head}");
    assert!(
        head.contains("connection: keep-alive"),
        "an HTTP/1.0 client is told: {head}"
    );
    let (head, _) = read_response(&mut stream, &mut pending, true).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        pending.is_empty(),
        "no body after a HEAD response: {pending:?}"
    );
    assert_eq!(upstream.requests(), 4);
    proxy.shutdown().await;
}

#[tokio::test]
async fn invalid_responses_are_502_and_a_body_cut_short_closes_the_client() {
    let upstream = raw_backend(
        |mut stream: TcpStream, requests: Arc<AtomicUsize>| async move {
            let mut pending = Vec::new();
            let Some(head) = read_head(&mut stream, &mut pending).await else {
                return;
            };
            requests.fetch_add(1, Ordering::SeqCst);
            let answer = match path_of(&head) {
                "/garbage" => b"HTTP/1.1 2x0 OK\r\n\r\n".to_vec(),
                "/huge-head" => {
                    format!("HTTP/1.1 200 OK\r\nX-Big: {}\r\n\r\n", "b".repeat(70_000)).into_bytes()
                }
                "/two-lengths" => b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\nab".to_vec(),
                _ => b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc".to_vec(),
            };
            let _ = stream.write_all(&answer).await;
        },
    )
    .await;
    let proxy = start_proxy(&one_pool(&[upstream.addr.to_string()], "retries = 0", "")).await;
    let addr = proxy.listeners()[0].addr;
    for path in ["/garbage", "/huge-head", "/two-lengths"] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        let answer = raw_exchange(addr, request.as_bytes()).await;
        let start: String = answer.chars().take(120).collect();
        assert!(answer.starts_with("HTTP/1.1 502"), "{path}: {start}");
    }
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /cut HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut seen)).await;
    assert!(read.is_ok(), "the client connection was not closed");
    let seen = String::from_utf8_lossy(&seen);
    assert!(
        seen.starts_with("HTTP/1.1 200") && seen.ends_with("\r\n\r\nabc"),
        "{seen}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn broken_chunks_are_400_and_what_follows_them_never_reaches_a_server() {
    let upstream = echo_backend("a").await;
    let proxy = start_proxy(&one_pool(&[upstream.addr.to_string()], "", "")).await;
    let addr = proxy.listeners()[0].addr;
    for body in [
        &b"3\nabc\r\n0\r\n\r\n"[..],
        b"\r\n\r\n",
        b"3\r\nabcd\r\n0\r\n\r\n",
        b"3;a\nb\r\nabc\r\n0\r\n\r\n",
    ] {
        let mut request =
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        request.extend_from_slice(body);
        request.extend_from_slice(b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n");
        let answer = raw_exchange(addr, &request).await;
        assert!(
            answer.starts_with("HTTP/1.1 400"),
            "{}: {answer}",
            String::from_utf8_lossy(body)
        );
        assert!(!answer.contains("smuggled"), "{answer}");
    }
    // Too many header lines: 431.
    let many: String = (0..200).map(|i| format!("X-{i}: 1\r\n")).collect();
    let answer = raw_exchange(
        addr,
        format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n").as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_client_that_stops_sending_its_body_gets_408() {
    // It answers once it has the whole body.
    let upstream = backend(|request: Request<Incoming>| async move {
        let body = request.into_body().collect().await.unwrap().to_bytes();
        Response::new(full(body))
    })
    .await;
    // The body's wait is `client_body_timeout`'s, not the upstream's `timeout`.
    let proxy = start_proxy(&one_pool(
        &[upstream.addr.to_string()],
        "",
        "client_body_timeout = \"300ms\"",
    ))
    .await;
    let mut stream = TcpStream::connect(proxy.listeners()[0].addr).await.unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
        .await
        .unwrap();
    let started = Instant::now();
    let mut pending = Vec::new();
    let (head, _) = read_response(&mut stream, &mut pending, false).await;
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(closes(&mut stream).await);
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_http1_client_reaches_an_h2c_upstream_with_its_body() {
    let hashing = backend(|request: Request<Incoming>| async move {
        let version = format!("{:?}", request.version());
        let body = request.into_body().collect().await.unwrap().to_bytes();
        let mut response = Response::new(full(format!("{:x}", Sha256::digest(&body))));
        response
            .headers_mut()
            .insert("x-version", version.parse().unwrap());
        response
    })
    .await;
    let proxy = start_proxy(&one_pool(
        &[hashing.addr.to_string()],
        "protocol = \"h2c\"",
        "",
    ))
    .await;
    let addr = proxy.listeners()[0].addr;
    let payload: Vec<u8> = (0..500_000u32).map(|i| (i % 253) as u8).collect();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut pending = Vec::new();
    let mut request = format!(
        "POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
        payload.len()
    )
    .into_bytes();
    request.extend_from_slice(&payload);
    stream.write_all(&request).await.unwrap();
    let (head, body) = read_response(&mut stream, &mut pending, false).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("x-version: HTTP/2.0"), "{head}");
    assert_eq!(
        String::from_utf8(body).unwrap(),
        format!("{:x}", Sha256::digest(&payload))
    );
    // Chunked too, and the connection stays usable.
    stream
        .write_all(b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        .await
        .unwrap();
    let (_, body) = read_response(&mut stream, &mut pending, false).await;
    assert_eq!(
        String::from_utf8(body).unwrap(),
        format!("{:x}", Sha256::digest(b"abc"))
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_small_head_limit_is_kept_to_the_byte() {
    let upstream = echo_backend("a").await;
    let proxy = start_proxy(&one_pool(
        &[upstream.addr.to_string()],
        "",
        "max_request_header_size = \"2KiB\"",
    ))
    .await;
    let addr = proxy.listeners()[0].addr;
    let head = |filler: usize| {
        format!(
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nX-Fill: {}\r\n\r\n",
            "f".repeat(filler)
        )
    };
    let fixed = head(0).len();
    // A head of exactly the limit is taken; one byte more is refused,
    // whether it arrives in one piece or in two.
    let answer = raw_exchange(addr, head(2048 - fixed).as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let answer = raw_exchange(addr, head(2049 - fixed).as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let long = head(2049 - fixed);
    stream.write_all(&long.as_bytes()[..1500]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    stream.write_all(&long.as_bytes()[1500..]).await.unwrap();
    let mut pending = Vec::new();
    let (answer, _) = read_response(&mut stream, &mut pending, false).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn http2_and_http1_clients_share_one_pool_and_bodies_pass_both_ways() {
    // Echoes the SHA-256 of the body it got, or 1 MB for /big.
    let upstream = backend(|request: Request<Incoming>| async move {
        if request.uri().path() == "/big" {
            return Response::new(full(vec![7u8; 1 << 20]));
        }
        if request.uri().path() == "/none" {
            let mut response = Response::new(full(Bytes::new()));
            *response.status_mut() = http::StatusCode::NO_CONTENT;
            return response;
        }
        let body = request.into_body().collect().await.unwrap().to_bytes();
        Response::new(full(format!("{:x}", Sha256::digest(&body))))
    })
    .await;
    let proxy = start_proxy(&one_pool(&[upstream.addr.to_string()], "", "")).await;
    let url = |path: &str| support::url(&proxy, path);
    let empty = || full(Bytes::new());
    let http1 = support::client();
    let http2: hyper_util::client::legacy::Client<_, support::TestBody> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
    for client in [&http1, &http2, &http1, &http2] {
        let reply = support::send(client, Request::get(url("/")).body(empty()).unwrap()).await;
        assert_eq!(reply.status, 200);
    }
    assert_eq!(
        upstream.connections(),
        1,
        "one pool of upstream connections"
    );
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 249) as u8).collect();
    let post = Request::post(url("/up"))
        .body(full(payload.clone()))
        .unwrap();
    let reply = support::send(&http2, post).await;
    assert_eq!(reply.text(), format!("{:x}", Sha256::digest(&payload)));
    let reply = support::send(&http2, Request::get(url("/big")).body(empty()).unwrap()).await;
    assert_eq!(reply.body.len(), 1 << 20);
    assert!(reply.body.iter().all(|&b| b == 7));
    // After a whole body, and after none at all (nobody polls an empty
    // body), the connection went back to the pool.
    for _ in 0..3 {
        let reply = support::send(&http2, Request::get(url("/none")).body(empty()).unwrap()).await;
        assert_eq!(reply.status, 204);
    }
    let head = Request::head(url("/")).body(empty()).unwrap();
    assert_eq!(support::send(&http2, head).await.status, 200);
    let reply = support::send(&http1, Request::get(url("/")).body(empty()).unwrap()).await;
    assert_eq!(reply.status, 200);
    assert_eq!(upstream.connections(), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_connection_whose_server_answered_before_the_body_is_not_used_again() {
    // Answers a POST at once with 413 without reading its body, and keeps
    // the connection; anything else gets 200. The rest of that body may be
    // on its way: the connection must not carry another request.
    let upstream = raw_backend(
        |mut stream: TcpStream, requests: Arc<AtomicUsize>| async move {
            let mut pending = Vec::new();
            while let Some(head) = read_head(&mut stream, &mut pending).await {
                requests.fetch_add(1, Ordering::SeqCst);
                let answer: &[u8] = if head.starts_with("POST ") {
                    b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n"
                } else if head.starts_with("GET ") {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                } else {
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"
                };
                if stream.write_all(answer).await.is_err() {
                    return;
                }
            }
        },
    )
    .await;
    let proxy = start_proxy(&one_pool(&[upstream.addr.to_string()], "retries = 0", "")).await;
    let url = |path: &str| support::url(&proxy, path);
    let http1 = support::client();
    let http2: hyper_util::client::legacy::Client<_, support::TestBody> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let big = vec![b'x'; 4 << 20];
    for (round, client) in [&http1, &http2].into_iter().enumerate() {
        let post = Request::post(url("/up")).body(full(big.clone())).unwrap();
        assert_eq!(support::send(client, post).await.status, 413);
        let get = Request::get(url("/")).body(full(Bytes::new())).unwrap();
        assert_eq!(support::send(client, get).await.status, 200);
        // The POST took a new or pooled connection and dropped it; the GET
        // needed a new one.
        assert_eq!(upstream.connections(), round + 2, "round {round}");
    }
    proxy.shutdown().await;
}

/// A real Python `http.server` backend (HTTP/1.1, honouring `Expect:
/// 100-continue` with its own `100 Continue`) that answers a POST with the
/// SHA-256 of the body it got. Killed by its pid when dropped.
struct PythonBackend {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

const PYTHON_HASHING_SERVER: &str = r#"
import hashlib, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Hashing(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        left = int(self.headers["Content-Length"])
        digest = hashlib.sha256()
        while left:
            data = self.rfile.read(min(left, 65536))
            if not data:
                break
            digest.update(data)
            left -= len(data)
        body = digest.hexdigest().encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Hashing)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

impl PythonBackend {
    fn start() -> PythonBackend {
        use std::io::BufRead;
        let mut child = std::process::Command::new("python3")
            .args(["-c", PYTHON_HASHING_SERVER])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the server prints its port");
        let port: u16 = line.trim().parse().expect("a port");
        PythonBackend {
            child,
            addr: ([127, 0, 0, 1], port).into(),
        }
    }
}

impl Drop for PythonBackend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Uploads `payload` with curl (`--data-binary @file`, so that curl sends
/// `Expect: 100-continue`), with `extra` arguments; the status and the body.
async fn curl_upload(url: &str, payload: &[u8], extra: &[&str]) -> (u16, String) {
    let file = support::tempfile_path::TempPath::new("upload", "bin");
    std::fs::write(file.as_path(), payload).unwrap();
    let output = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "20", "-w", "\n%{http_code}"])
        .args(extra)
        .arg("--data-binary")
        .arg(format!("@{}", file.as_path().display()))
        .arg(url)
        .kill_on_drop(true)
        .output()
        .await
        .expect("curl runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').expect("a status line");
    (status.parse().unwrap_or(0), body.to_string())
}

fn upload_payload() -> Vec<u8> {
    (0..5u32 << 20).map(|i| (i % 251) as u8).collect()
}

#[tokio::test]
async fn an_upload_with_expect_100_continue_reaches_a_server_that_honours_it() {
    let python = PythonBackend::start();
    let proxy = start_proxy(&one_pool(
        &[python.addr.to_string()],
        "timeout = \"3s\"",
        "",
    ))
    .await;
    let payload = upload_payload();
    let (status, body) = curl_upload(&support::url(&proxy, "/up"), &payload, &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, format!("{:x}", Sha256::digest(&payload)));
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_http2_client_uploads_to_a_server_that_honours_expect_100_continue() {
    let python = PythonBackend::start();
    let proxy = start_proxy(&one_pool(
        &[python.addr.to_string()],
        "timeout = \"3s\"",
        "",
    ))
    .await;
    let payload = upload_payload();
    // curl sends `Expect` over HTTP/2 only when asked to.
    let (status, body) = curl_upload(
        &support::url(&proxy, "/up"),
        &payload,
        &[
            "--http2-prior-knowledge",
            "-H",
            "Expect: 100-continue",
            "--expect100-timeout",
            "0.2",
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, format!("{:x}", Sha256::digest(&payload)));
    proxy.shutdown().await;
}

/// A raw backend that answers a request with `103 Early Hints` and
/// `100 Continue` at once, then reads the body and answers with its SHA-256.
async fn early_hints_backend() -> Backend {
    raw_backend(
        |mut stream: TcpStream, requests: Arc<AtomicUsize>| async move {
            let mut pending = Vec::new();
            while let Some(head) = read_head(&mut stream, &mut pending).await {
                requests.fetch_add(1, Ordering::SeqCst);
                let interim = b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n\
                    HTTP/1.1 100 Continue\r\n\r\n";
                if stream.write_all(interim).await.is_err() {
                    return;
                }
                let body = read_exact_more(&mut stream, &mut pending, content_length(&head)).await;
                let digest = format!("{:x}", Sha256::digest(&body));
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{digest}",
                    digest.len()
                );
                if stream.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
            }
        },
    )
    .await
}

#[tokio::test]
async fn interim_responses_pass_to_http11_clients_while_the_body_flows() {
    let upstream = early_hints_backend().await;
    let proxy = start_proxy(&one_pool(
        &[upstream.addr.to_string()],
        "timeout = \"3s\"",
        "",
    ))
    .await;
    let addr = proxy.listeners()[0].addr;
    let payload: Vec<u8> = (0..1u32 << 20).map(|i| (i % 241) as u8).collect();
    let digest = format!("{:x}", Sha256::digest(&payload));

    // As curl does: the body after the 100. usherd sent that 100 itself, so
    // the server's is dropped; its 103 passes.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut pending = Vec::new();
    let request = format!(
        "POST /up HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        payload.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let interim = read_head(&mut stream, &mut pending).await.unwrap();
    assert_eq!(interim, "HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(&payload).await.unwrap();
    let hints = read_head(&mut stream, &mut pending).await.unwrap();
    assert!(hints.starts_with("HTTP/1.1 103 Early Hints\r\n"), "{hints}");
    assert!(hints.contains("Link: </s.css>; rel=preload\r\n"), "{hints}");
    let (head, body) = read_response(&mut stream, &mut pending, false).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(String::from_utf8(body).unwrap(), digest);

    // An HTTP/1.0 client gets no interim response at all.
    let mut request = format!(
        "POST /up HTTP/1.0\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
        payload.len()
    )
    .into_bytes();
    request.extend_from_slice(&payload);
    let answer = raw_exchange(addr, &request).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer:.200}");
    assert!(answer.ends_with(&digest), "{answer:.200}");
    proxy.shutdown().await;
}

/// An h2c backend (the `h2` crate) that answers each request with
/// `103 Early Hints` and `100 Continue`, then reads the body and answers
/// with its SHA-256.
async fn h2c_early_hints_backend() -> Backend {
    raw_backend(|stream: TcpStream, requests: Arc<AtomicUsize>| async move {
        let Ok(mut connection) = h2::server::handshake(stream).await else {
            return;
        };
        while let Some(Ok((request, mut respond))) = connection.accept().await {
            requests.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                for (status, link) in [(103, Some("</s.css>; rel=preload")), (100, None)] {
                    let mut interim = Response::builder().status(status);
                    if let Some(link) = link {
                        interim = interim.header("link", link);
                    }
                    respond
                        .send_informational(interim.body(()).unwrap())
                        .unwrap();
                }
                let mut body = request.into_body();
                let mut digest = Sha256::new();
                while let Some(data) = body.data().await {
                    let data = data.unwrap();
                    body.flow_control().release_capacity(data.len()).unwrap();
                    digest.update(&data);
                }
                let hex = format!("{:x}", digest.finalize());
                let mut send = respond.send_response(Response::new(()), false).unwrap();
                send.send_data(Bytes::from(hex), true).unwrap();
            });
        }
    })
    .await
}

#[tokio::test]
async fn uploads_reach_an_h2c_upstream_that_sends_interim_responses() {
    let upstream = h2c_early_hints_backend().await;
    let proxy = start_proxy(&one_pool(
        &[upstream.addr.to_string()],
        "protocol = \"h2c\"\ntimeout = \"3s\"",
        "",
    ))
    .await;
    let payload = upload_payload();
    let digest = format!("{:x}", Sha256::digest(&payload));
    let url = support::url(&proxy, "/up");
    for extra in [&[][..], &["--http2-prior-knowledge"]] {
        let (status, body) = curl_upload(&url, &payload, extra).await;
        assert_eq!((status, body.as_str()), (200, digest.as_str()), "{extra:?}");
    }
    assert_eq!(upstream.requests(), 2);
    proxy.shutdown().await;
}

#[tokio::test]
async fn strict_edges_of_http1_requests_are_refused_with_400() {
    let upstream = echo_backend("a").await;
    let proxy = start_proxy(&one_pool(&[upstream.addr.to_string()], "", "")).await;
    let addr = proxy.listeners()[0].addr;
    for request in [
        &b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a\tb\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
        b"GET / HTTP/1.0\r\nHost: a/../b\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:  \t \r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\nContent-Length: 5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: \r\n\r\nhello",
    ] {
        let answer = raw_exchange(addr, request).await;
        assert!(
            answer.starts_with("HTTP/1.1 400"),
            "{}: {answer}",
            String::from_utf8_lossy(request)
        );
    }
    assert_eq!(upstream.requests(), 0);
    // A chunk size with junk after it: the head went on, the body stops there.
    for size_line in ["5 junk", "5\tjunk;x=y", "5 5"] {
        let request = format!(
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
             {size_line}\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
        );
        let answer = raw_exchange(addr, request.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{size_line}: {answer}");
        assert!(!answer.contains("smuggled"), "{answer}");
    }
    // Whitespace before an extension is fine.
    let answer = raw_exchange(
        addr,
        b"POST / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n\
          5 ;x=y\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn requests_go_upstream_with_one_length_a_host_and_no_h2c_upgrade() {
    // Answers with the request head it got.
    let upstream = scripted(|head| {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{head}",
            head.len()
        )
        .into_bytes()
    })
    .await;
    let proxy = start_proxy(&one_pool(&[upstream.addr.to_string()], "", "")).await;
    let addr = proxy.listeners()[0].addr;
    let upstream_head = |answer: String| answer.split_once("\r\n\r\n").unwrap().1.to_string();
    let lines = |head: &str, name: &str| -> Vec<String> {
        head.lines()
            .filter(|line| {
                line.split_once(':')
                    .is_some_and(|(n, _)| n.eq_ignore_ascii_case(name))
            })
            .map(str::to_string)
            .collect()
    };
    for lengths in [
        "Content-Length: 3\r\nContent-Length: 3\r\n",
        "Content-Length: 3, 3\r\ncontent-length: 3\r\n",
    ] {
        let request =
            format!("POST / HTTP/1.1\r\nHost: a\r\n{lengths}Connection: close\r\n\r\nabc");
        let head = upstream_head(raw_exchange(addr, request.as_bytes()).await);
        assert_eq!(
            lines(&head, "content-length"),
            ["Content-Length: 3"],
            "{head}"
        );
    }

    // HTTP/1.0 without Host: the address the client connected to.
    let head = upstream_head(raw_exchange(addr, b"GET / HTTP/1.0\r\n\r\n").await);
    assert!(head.starts_with("GET / HTTP/1.1\r\n"), "{head}");
    assert_eq!(lines(&head, "host"), [format!("host: {addr}")], "{head}");
    assert!(lines(&head, "x-forwarded-host").is_empty(), "{head}");

    // An upgrade to h2c is not passed on: the request goes as a plain one.
    let head = upstream_head(
        raw_exchange(
            addr,
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings, close\r\n\
              Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
        )
        .await,
    );
    assert!(head.starts_with("GET / HTTP/1.1\r\n"), "{head}");
    for name in ["upgrade", "connection", "http2-settings"] {
        assert!(lines(&head, name).is_empty(), "{name}: {head}");
    }
    proxy.shutdown().await;
}

/// A GET over h2c (the `h2` crate, which sends a `host` header as given)
/// with `:authority` and maybe `host`; the status and the body.
async fn h2c_get(addr: std::net::SocketAddr, authority: &str, host: Option<&str>) -> (u16, String) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await.unwrap();
    let mut request = Request::get(format!("http://{authority}/"))
        .body(())
        .unwrap();
    if let Some(host) = host {
        request.headers_mut().insert("host", host.parse().unwrap());
    }
    let (response, _) = client.send_request(request, true).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("a response within 10 s")
        .unwrap();
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut text = Vec::new();
    while let Some(data) = body.data().await {
        let data = data.unwrap();
        body.flow_control().release_capacity(data.len()).unwrap();
        text.extend_from_slice(&data);
    }
    (status, String::from_utf8(text).unwrap())
}

#[tokio::test]
async fn an_http2_host_header_must_name_the_authority_which_goes_upstream() {
    let upstream = echo_backend("a").await;
    let proxy = start_proxy(&one_pool(&[upstream.addr.to_string()], "", "")).await;
    let addr = proxy.listeners()[0].addr;
    let (status, body) = h2c_get(addr, "a.example", Some("b.example")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(upstream.requests(), 0);
    for host in [None, Some("A.Example")] {
        let (status, body) = h2c_get(addr, "a.example", host).await;
        assert_eq!(status, 200, "{body}");
        let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            echo["headers"]["host"],
            serde_json::json!(["a.example"]),
            "{host:?}"
        );
    }
    proxy.shutdown().await;
}
