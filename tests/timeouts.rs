//! The client-side time limits of a request in progress, on the wire:
//! `send_timeout` for a client that stops reading (HTTP/1 responses,
//! WebSocket tunnels, HTTP/2) and `client_body_timeout` for a request body
//! that stalls. Each must close the client's connection and free the
//! upstream's, which the backends here see as their connection closing.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use support::{raw_backend, read_head, start_proxy, Backend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// How long a test waits for what a one-second limit should bring about.
const WITHIN: Duration = Duration::from_secs(15);

/// A response far larger than every socket buffer on the way.
const HUGE: usize = 64 << 20;

fn config(backend: &Backend, global: &str) -> String {
    support::pool_config(&[backend.addr.to_string()], "round_robin", "", global, true)
}

/// A connection to `addr` with a tiny receive buffer, so that a client that
/// does not read soon stops the bytes coming.
async fn tiny_window_connect(addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(addr).await.unwrap()
}

/// A backend that answers every request with a `HUGE` body, written until
/// the proxy stops taking it; `closed` turns true when a write fails (the
/// proxy closed the connection).
async fn streaming_backend(closed: Arc<AtomicBool>) -> Backend {
    raw_backend(move |mut stream: TcpStream, requests: Arc<AtomicUsize>| {
        let closed = Arc::clone(&closed);
        async move {
            let mut pending = Vec::new();
            if read_head(&mut stream, &mut pending).await.is_none() {
                return;
            }
            requests.fetch_add(1, Ordering::SeqCst);
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {HUGE}\r\n\r\n");
            let piece = vec![b'x'; 64 * 1024];
            let mut sent = stream.write_all(head.as_bytes()).await;
            let mut left = HUGE;
            while sent.is_ok() && left > 0 {
                sent = stream.write_all(&piece[..left.min(piece.len())]).await;
                left -= left.min(piece.len());
            }
            if sent.is_err() {
                closed.store(true, Ordering::SeqCst);
            }
        }
    })
    .await
}

/// Reads until the proxy's end closes (EOF or reset); panics if it stays
/// open past `WITHIN`.
async fn read_until_closed(stream: &mut (impl AsyncReadExt + Unpin)) {
    let deadline = Instant::now() + WITHIN;
    let mut sink = vec![0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut sink)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => {}
            Err(_) => panic!("the proxy kept the client's connection open"),
        }
    }
}

/// The value of `usherd_client_timeouts_total` of `kind` on the `web` listener.
async fn client_timeouts(proxy: &usherd::Proxy, kind: &str) -> f64 {
    let url = format!("http://{}/metrics", proxy.admin_addr().unwrap());
    let text = support::get(&url, None).await.text();
    let series = format!("usherd_client_timeouts_total{{listener=\"web\",kind=\"{kind}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(series.as_str()))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_client_that_reads_nothing_is_closed_after_send_timeout() {
    let closed = Arc::new(AtomicBool::new(false));
    let backend = streaming_backend(Arc::clone(&closed)).await;
    let proxy = start_proxy(&config(&backend, "send_timeout = \"1s\"")).await;
    let mut client = tiny_window_connect(proxy.listeners()[0].addr).await;
    client
        .write_all(b"GET /huge HTTP/1.1\r\nhost: shop.test\r\n\r\n")
        .await
        .unwrap();
    support::until(WITHIN, "the upstream connection is closed", || {
        closed.load(Ordering::SeqCst)
    })
    .await;
    assert_eq!(client_timeouts(&proxy, "send").await, 1.0);
    read_until_closed(&mut client).await;
}

#[tokio::test]
async fn a_stalled_request_body_gets_408_and_frees_the_upstream() {
    let closed = Arc::new(AtomicBool::new(false));
    // Reads the request and whatever of the body comes, never answers.
    let seen_closed = Arc::clone(&closed);
    let backend = raw_backend(move |mut stream: TcpStream, requests: Arc<AtomicUsize>| {
        let closed = Arc::clone(&seen_closed);
        async move {
            let mut pending = Vec::new();
            if read_head(&mut stream, &mut pending).await.is_none() {
                return;
            }
            requests.fetch_add(1, Ordering::SeqCst);
            let mut sink = [0u8; 1024];
            while let Ok(1..) = stream.read(&mut sink).await {}
            closed.store(true, Ordering::SeqCst);
        }
    })
    .await;
    let proxy = start_proxy(&config(&backend, "client_body_timeout = \"1s\"")).await;
    let mut client = TcpStream::connect(proxy.listeners()[0].addr).await.unwrap();
    client
        .write_all(b"POST /upload HTTP/1.1\r\nhost: shop.test\r\ncontent-length: 10\r\n\r\nx")
        .await
        .unwrap();
    let (mut reader, mut writer) = client.into_split();
    // One byte every 1.5 s: each wait is longer than the limit.
    let trickle = tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_millis(1500));
        interval.tick().await;
        for _ in 0..9 {
            interval.tick().await;
            if writer.write_all(b"x").await.is_err() {
                return;
            }
        }
    });
    let mut answer = vec![0u8; 12];
    tokio::time::timeout(WITHIN, reader.read_exact(&mut answer))
        .await
        .expect("an answer before the body ends")
        .unwrap();
    assert_eq!(&answer, b"HTTP/1.1 408");
    support::until(WITHIN, "the upstream connection is closed", || {
        closed.load(Ordering::SeqCst)
    })
    .await;
    assert_eq!(backend.requests(), 1);
    assert_eq!(client_timeouts(&proxy, "body").await, 1.0);
    read_until_closed(&mut reader).await;
    trickle.abort();
}

#[tokio::test]
async fn a_websocket_client_that_reads_nothing_is_closed_after_send_timeout() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use tokio_tungstenite::tungstenite::protocol::Role;
    use tokio_tungstenite::tungstenite::Message;

    // On the first message, sends messages until sending fails.
    let closed = Arc::new(AtomicBool::new(false));
    let seen_closed = Arc::clone(&closed);
    let backend = support::backend(move |mut request: http::Request<hyper::body::Incoming>| {
        let closed = Arc::clone(&seen_closed);
        async move {
            let key = request.headers()["sec-websocket-key"].as_bytes().to_vec();
            let upgrade = hyper::upgrade::on(&mut request);
            tokio::spawn(async move {
                let upgraded = upgrade.await.unwrap();
                let mut socket = tokio_tungstenite::WebSocketStream::from_raw_socket(
                    hyper_util::rt::TokioIo::new(upgraded),
                    Role::Server,
                    None,
                )
                .await;
                socket.next().await;
                let flood = Message::binary(vec![b'x'; 64 * 1024]);
                while socket.send(flood.clone()).await.is_ok() {}
                closed.store(true, Ordering::SeqCst);
            });
            http::Response::builder()
                .status(http::StatusCode::SWITCHING_PROTOCOLS)
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-accept", derive_accept_key(&key))
                .body(support::full(Bytes::new()))
                .unwrap()
        }
    })
    .await;
    let proxy = start_proxy(&config(&backend, "send_timeout = \"1s\"")).await;
    let addr = proxy.listeners()[0].addr;
    let stream = tiny_window_connect(addr).await;
    let (mut socket, response) = tokio_tungstenite::client_async(format!("ws://{addr}/"), stream)
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
    socket.send(Message::text("flood me")).await.unwrap();
    support::until(WITHIN, "the tunnel's upstream connection is closed", || {
        closed.load(Ordering::SeqCst)
    })
    .await;
    assert_eq!(client_timeouts(&proxy, "send").await, 1.0);
    read_until_closed(socket.get_mut()).await;
}

#[tokio::test]
async fn an_http2_client_that_reads_nothing_is_closed() {
    let closed = Arc::new(AtomicBool::new(false));
    let backend = streaming_backend(Arc::clone(&closed)).await;
    let proxy = start_proxy(&config(&backend, "send_timeout = \"1s\"")).await;
    let addr = proxy.listeners()[0].addr;
    let stream = tiny_window_connect(addr).await;
    let (mut client, connection) = h2::client::handshake(stream).await.unwrap();
    let mut connection = std::pin::pin!(connection);
    let request = http::Request::get(format!("http://{addr}/huge"))
        .body(())
        .unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    // The connection is driven until the response head came, then no more:
    // its socket stays open and unread.
    let response = tokio::select! {
        response = response => response.unwrap(),
        _ = connection.as_mut() => panic!("the connection ended first"),
    };
    assert_eq!(response.status(), 200);
    support::until(WITHIN, "the upstream connection is closed", || {
        closed.load(Ordering::SeqCst)
    })
    .await;
    assert_eq!(client_timeouts(&proxy, "send").await, 1.0);
}

/// An HTTP/2 connection to `addr` whose streams get a window of `window`
/// bytes, never opened further (nothing is released); the connection is
/// driven by a task of its own, so PINGs are answered.
async fn h2_shut_window_client(
    addr: SocketAddr,
    window: u32,
) -> (h2::client::SendRequest<Bytes>, tokio::task::JoinHandle<()>) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(window)
        .handshake(stream)
        .await
        .unwrap();
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    (client, driver)
}

#[tokio::test]
async fn an_http2_stream_whose_window_stays_shut_is_reset_after_send_timeout() {
    let closed = Arc::new(AtomicBool::new(false));
    let backend = streaming_backend(Arc::clone(&closed)).await;
    let proxy = start_proxy(&config(&backend, "send_timeout = \"1s\"")).await;
    let addr = proxy.listeners()[0].addr;
    let (client, driver) = h2_shut_window_client(addr, 1024).await;
    let mut client = client.ready().await.unwrap();
    let request = http::Request::get(format!("http://{addr}/huge"))
        .body(())
        .unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    let response = tokio::time::timeout(WITHIN, response)
        .await
        .expect("a response head")
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    // The window's worth comes; then, since the window never opens, the
    // stream is reset (the connection keeps answering PINGs meanwhile).
    let ended = tokio::time::timeout(WITHIN, async {
        loop {
            match body.data().await {
                Some(Ok(_)) => {}
                Some(Err(error)) => break Some(error),
                None => break None,
            }
        }
    })
    .await
    .expect("the stream stayed open past send_timeout");
    let error = ended.expect("a reset, not the end of a 64 MiB body");
    assert_eq!(error.reason(), Some(h2::Reason::CANCEL), "{error}");
    support::until(WITHIN, "the upstream connection is closed", || {
        closed.load(Ordering::SeqCst)
    })
    .await;
    assert_eq!(client_timeouts(&proxy, "send").await, 1.0);
    // Only the stream went: the connection still takes requests.
    let request = http::Request::get(format!("http://{addr}/again"))
        .body(())
        .unwrap();
    let mut client = client.ready().await.unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    let response = tokio::time::timeout(WITHIN, response)
        .await
        .expect("a second response on the same connection")
        .unwrap();
    assert_eq!(response.status(), 200);
    driver.abort();
}

/// A backend that reads the request and whatever of its body comes and
/// never answers; `closed` turns true when the proxy closes the connection.
async fn body_reading_backend(closed: Arc<AtomicBool>) -> Backend {
    raw_backend(move |mut stream: TcpStream, requests: Arc<AtomicUsize>| {
        let closed = Arc::clone(&closed);
        async move {
            let mut pending = Vec::new();
            if read_head(&mut stream, &mut pending).await.is_none() {
                return;
            }
            requests.fetch_add(1, Ordering::SeqCst);
            let mut sink = [0u8; 1024];
            while let Ok(1..) = stream.read(&mut sink).await {}
            closed.store(true, Ordering::SeqCst);
        }
    })
    .await
}

/// Sends a POST of `length` bytes over HTTP/2, one byte now and one more
/// every `every` (at most 20), and returns the response's status.
async fn h2_trickled_post(addr: SocketAddr, length: usize, every: Duration) -> u16 {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(stream).await.unwrap();
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await.unwrap();
    let request = http::Request::post(format!("http://{addr}/upload"))
        .header("content-length", length.to_string())
        .body(())
        .unwrap();
    let (response, mut body) = client.send_request(request, false).unwrap();
    body.send_data(Bytes::from_static(b"x"), false).unwrap();
    let trickle = tokio::spawn(async move {
        let mut interval = tokio::time::interval(every);
        interval.tick().await;
        for _ in 0..20 {
            interval.tick().await;
            if body.send_data(Bytes::from_static(b"x"), false).is_err() {
                return;
            }
        }
    });
    let response = tokio::time::timeout(WITHIN, response)
        .await
        .expect("an answer before the body ends")
        .unwrap();
    trickle.abort();
    driver.abort();
    response.status().as_u16()
}

#[tokio::test]
async fn a_stalled_http2_request_body_gets_408_and_frees_the_upstream() {
    let closed = Arc::new(AtomicBool::new(false));
    let backend = body_reading_backend(Arc::clone(&closed)).await;
    let proxy = start_proxy(&config(&backend, "client_body_timeout = \"1s\"")).await;
    let addr = proxy.listeners()[0].addr;
    // Each wait (1.5 s) is longer than the limit.
    let status = h2_trickled_post(addr, 10, Duration::from_millis(1500)).await;
    assert_eq!(status, 408);
    support::until(WITHIN, "the upstream connection is closed", || {
        closed.load(Ordering::SeqCst)
    })
    .await;
    assert_eq!(backend.requests(), 1);
    assert_eq!(client_timeouts(&proxy, "body").await, 1.0);
}

#[tokio::test]
async fn a_stalled_http2_request_body_to_an_h2c_upstream_gets_408() {
    // Reads the body until it fails (the proxy reset the stream).
    let reset = Arc::new(AtomicBool::new(false));
    let seen_reset = Arc::clone(&reset);
    let backend = support::backend(move |request: http::Request<hyper::body::Incoming>| {
        let reset = Arc::clone(&seen_reset);
        async move {
            use http_body_util::BodyExt;
            let mut body = request.into_body();
            while let Some(frame) = body.frame().await {
                if frame.is_err() {
                    reset.store(true, Ordering::SeqCst);
                    break;
                }
            }
            http::Response::new(support::full(Bytes::from_static(b"late")))
        }
    })
    .await;
    let toml = support::pool_config(
        &[backend.addr.to_string()],
        "round_robin",
        "protocol = \"h2c\"",
        "client_body_timeout = \"1s\"",
        true,
    );
    let proxy = start_proxy(&toml).await;
    let addr = proxy.listeners()[0].addr;
    let status = h2_trickled_post(addr, 10, Duration::from_millis(1500)).await;
    assert_eq!(status, 408);
    support::until(WITHIN, "the upstream stream is reset", || {
        reset.load(Ordering::SeqCst)
    })
    .await;
    assert_eq!(client_timeouts(&proxy, "body").await, 1.0);
}

#[tokio::test]
async fn an_http2_request_body_below_client_body_min_rate_gets_408() {
    let closed = Arc::new(AtomicBool::new(false));
    let backend = body_reading_backend(Arc::clone(&closed)).await;
    let global = "client_body_timeout = \"60s\"\nclient_body_min_rate = \"1KiB\"";
    let proxy = start_proxy(&config(&backend, global)).await;
    let addr = proxy.listeners()[0].addr;
    // A byte every 500 ms: never a wait of client_body_timeout, but far
    // below the rate once its 5 s of grace are over.
    let status = h2_trickled_post(addr, 100, Duration::from_millis(500)).await;
    assert_eq!(status, 408);
    support::until(WITHIN, "the upstream connection is closed", || {
        closed.load(Ordering::SeqCst)
    })
    .await;
    assert_eq!(client_timeouts(&proxy, "body_rate").await, 1.0);
}
