//! Test support: real loopback backends (hyper servers), the proxy started
//! in-process or as the real binary, and small clients. Ports are always 0.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub type TestBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

pub fn full(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A loopback backend: counts requests and accepted connections.
pub struct Backend {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicUsize>,
    pub connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Backend {
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Stops accepting; open connections end with the test's runtime.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a backend on 127.0.0.1:0 answering with `handler` (hyper, HTTP/1
/// and h2c, upgrades allowed).
pub async fn backend<F, Fut>(handler: F) -> Backend
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    backend_on("127.0.0.1:0", handler).await
}

/// As `backend`, listening on `bind` (e.g. `127.0.0.12:9000`, as a replica).
pub async fn backend_on<F, Fut>(bind: &str, handler: F) -> Backend
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    raw_backend_on(
        bind,
        move |stream: TcpStream, requests: Arc<AtomicUsize>| {
            let handler = handler.clone();
            async move {
                let service = service_fn(move |request| {
                    requests.fetch_add(1, Ordering::SeqCst);
                    let response = handler(request);
                    async move { Ok::<_, Infallible>(response.await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            }
        },
    )
    .await
}

/// Polls `check` every 10 ms until it holds; panics naming `what` if it
/// does not within `limit`. For waiting on something to have happened
/// instead of sleeping and hoping it has.
pub async fn until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls `check` every 20 ms until it holds or `limit` passes; how long it
/// took, or `None`.
pub async fn within<F, Fut>(limit: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// A loopback backend that speaks raw bytes: `handler` gets each accepted
/// connection, and the request counter to add to.
pub async fn raw_backend<F, Fut>(handler: F) -> Backend
where
    F: Fn(TcpStream, Arc<AtomicUsize>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    raw_backend_on("127.0.0.1:0", handler).await
}

/// As `raw_backend`, listening on `bind`.
pub async fn raw_backend_on<F, Fut>(bind: &str, handler: F) -> Backend
where
    F: Fn(TcpStream, Arc<AtomicUsize>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind(bind).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let connections = Arc::new(AtomicUsize::new(0));
    let (requests_seen, connections_seen) = (requests.clone(), connections.clone());
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            connections_seen.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(handler.clone()(stream, requests_seen.clone()));
        }
    });
    Backend {
        addr,
        requests,
        connections,
        task,
    }
}

/// Reads from a raw connection through the blank line that ends a head;
/// what came after it stays in `pending`. `None` when it closes first or
/// nothing comes for 10 s.
pub async fn read_head(stream: &mut TcpStream, pending: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end + 4]).into_owned();
            pending.drain(..end + 4);
            return Some(head);
        }
        let mut buffer = [0u8; 4096];
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer)).await;
        match read {
            Ok(Ok(n)) if n > 0 => pending.extend_from_slice(&buffer[..n]),
            _ => return None,
        }
    }
}

/// Reads exactly `len` more bytes after what `pending` holds.
pub async fn read_exact_more(stream: &mut TcpStream, pending: &mut Vec<u8>, len: usize) -> Vec<u8> {
    while pending.len() < len {
        let mut buffer = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer))
            .await
            .expect("bytes within 10 s")
            .unwrap();
        assert!(n > 0, "closed early");
        pending.extend_from_slice(&buffer[..n]);
    }
    pending.drain(..len).collect()
}

/// A backend that answers with its name and a JSON echo of the request head:
/// `{"backend", "method", "path", "headers": {name: [values]}}`.
pub async fn echo_backend(name: &'static str) -> Backend {
    echo_backend_on("127.0.0.1:0", name).await
}

/// As `echo_backend`, listening on `bind`.
pub async fn echo_backend_on(bind: &str, name: &'static str) -> Backend {
    backend_on(bind, move |request: Request<Incoming>| async move {
        let mut headers = serde_json::Map::new();
        for (key, value) in request.headers() {
            let entry = headers
                .entry(key.as_str().to_string())
                .or_insert_with(|| serde_json::Value::Array(vec![]));
            entry
                .as_array_mut()
                .unwrap()
                .push(value.to_str().unwrap_or("").into());
        }
        let body = serde_json::json!({
            "backend": name,
            "method": request.method().as_str(),
            "path": request.uri().to_string(),
            "headers": headers,
        });
        let mut response = Response::new(full(body.to_string()));
        response
            .headers_mut()
            .insert("x-backend", http::HeaderValue::from_static(name));
        response
    })
    .await
}

/// A backend that accepts WebSocket upgrades and answers each text message
/// `m` with `echo: m`.
pub async fn websocket_echo_backend() -> Backend {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use tokio_tungstenite::tungstenite::protocol::Role;
    use tokio_tungstenite::tungstenite::Message;
    backend(|mut request: Request<Incoming>| async move {
        let key = request.headers()["sec-websocket-key"].as_bytes().to_vec();
        let upgrade = hyper::upgrade::on(&mut request);
        tokio::spawn(async move {
            let upgraded = upgrade.await.unwrap();
            let mut socket = tokio_tungstenite::WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                None,
            )
            .await;
            while let Some(Ok(message)) = socket.next().await {
                if message.is_text() {
                    let reply = format!("echo: {}", message.into_text().unwrap());
                    socket.send(Message::text(reply)).await.unwrap();
                }
            }
        });
        Response::builder()
            .status(http::StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-accept", derive_accept_key(&key))
            .body(full(Bytes::new()))
            .unwrap()
    })
    .await
}

/// Opens a WebSocket to `ws_url` over `stream` (plain or TLS) and checks five
/// echoes from `websocket_echo_backend`.
pub async fn exchange_websocket_echoes<S>(ws_url: String, stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (mut socket, response) = tokio_tungstenite::client_async(ws_url, stream)
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
    for i in 0..5 {
        socket
            .send(Message::text(format!("hello {i}")))
            .await
            .unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(
            reply.into_text().unwrap().as_str(),
            format!("echo: hello {i}")
        );
    }
    socket.close(None).await.unwrap();
}

/// An address nothing listens on (bound, then closed).
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// The receiving side of a channel as a `Stream` (for `StreamBody`).
pub fn stream_of<T: Send + 'static>(
    mut receiver: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}

/// Starts the proxy in-process from config text.
pub async fn start_proxy(toml: &str) -> usherd::Proxy {
    let config = usherd::config::parse_config(toml, "test.toml").expect("test config is valid");
    usherd::Proxy::start(config).await.expect("proxy starts")
}

/// The URL of the proxy's first listener.
pub fn url(proxy: &usherd::Proxy, path: &str) -> String {
    format!("http://{}{path}", proxy.listeners()[0].addr)
}

/// A pooled HTTP/1.1 client.
pub fn client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// A response with its body read.
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends a request and reads the whole response, within 10 s.
pub async fn send(client: &Client<HttpConnector, TestBody>, request: Request<TestBody>) -> Reply {
    send_within(client, request, Duration::from_secs(10)).await
}

/// Sends a request and reads the whole response, within `limit`: for
/// large bodies, whose time depends on how loaded the machine is.
pub async fn send_within(
    client: &Client<HttpConnector, TestBody>,
    request: Request<TestBody>,
    limit: Duration,
) -> Reply {
    tokio::time::timeout(limit, async {
        let response = client.request(request).await.expect("request sent");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body read").to_bytes();
        Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        }
    })
    .await
    .unwrap_or_else(|_| panic!("response within {limit:?}"))
}

/// GET `url` with an optional Host header.
pub async fn get(url: &str, host: Option<&str>) -> Reply {
    let mut request = Request::get(url);
    if let Some(host) = host {
        request = request.header("host", host);
    }
    send(
        &client(),
        request
            .body(Empty::new().map_err(|never| match never {}).boxed())
            .unwrap(),
    )
    .await
}

/// Writes raw bytes on a new connection and reads until the server closes
/// it or 5 s pass; returns what was read.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The real binary, stopped by PID when dropped.
pub struct ProxyProcess {
    pub child: Child,
    pub listeners: Vec<(String, SocketAddr)>,
    pub stderr_tail: Arc<std::sync::Mutex<Vec<String>>>,
}

impl ProxyProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The first log line containing `needle`, waiting up to `limit` for it.
    pub fn wait_for_log(&self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let tail = self.stderr_tail.lock().unwrap();
            if let Some(line) = tail.iter().find(|line| line.contains(needle)) {
                return line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?} in {tail:?}"
            );
            drop(tail);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn addr(&self, listener: &str) -> SocketAddr {
        self.listeners
            .iter()
            .find(|(name, _)| name == listener)
            .map(|(_, addr)| *addr)
            .unwrap_or_else(|| panic!("no listener {listener}"))
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits up to `limit` for the process to exit; its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Resident memory in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:")
    }

    /// Peak resident memory in KiB, from /proc.
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM:")
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Writes `toml` to a temporary file and runs `usherd run -c FILE`, waiting
/// (up to 10 s) until it logs every listener as listening.
pub fn spawn_binary(toml: &str, listener_count: usize) -> (ProxyProcess, tempfile_path::TempPath) {
    spawn_binary_logging(toml, listener_count, "info,access=off")
}

/// `spawn_binary` with `RUST_LOG` set to `log_filter`.
pub fn spawn_binary_logging(
    toml: &str,
    listener_count: usize,
    log_filter: &str,
) -> (ProxyProcess, tempfile_path::TempPath) {
    spawn_binary_with(toml, listener_count, log_filter, &[])
}

/// `spawn_binary` with `RUST_LOG` and more arguments to `usherd run`. The
/// admin listener, if any, is named `[admin]` among the listeners.
pub fn spawn_binary_with(
    toml: &str,
    listener_count: usize,
    log_filter: &str,
    args: &[&str],
) -> (ProxyProcess, tempfile_path::TempPath) {
    let path = tempfile_path::TempPath::new("usherd-test", "toml");
    std::fs::write(path.as_path(), toml).unwrap();
    let proxy = spawn_binary_at(path.as_path(), listener_count, log_filter, args);
    (proxy, path)
}

/// Runs the usherd binary on the config file at `path` (which may be a
/// symlink) and waits for `listener_count` listeners to be up.
pub fn spawn_binary_at(
    path: &std::path::Path,
    listener_count: usize,
    log_filter: &str,
    args: &[&str],
) -> ProxyProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_usherd"))
        .args(["run", "-c"])
        .arg(path)
        .args(["--log-format", "json"])
        .args(args)
        .env("RUST_LOG", log_filter)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    let tail = Arc::new(std::sync::Mutex::new(Vec::new()));
    let tail_writer = tail.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) {
                if event["message"] == "listening" {
                    let mut name = event["listener"].as_str().unwrap_or("").to_string();
                    if event["kind"] == "admin API" {
                        name = "[admin]".into();
                    }
                    let addr: SocketAddr = event["addr"].as_str().unwrap().parse().unwrap();
                    let _ = sender.send((name, addr));
                }
            }
            tail_writer.lock().unwrap().push(line);
        }
    });
    let mut listeners = Vec::new();
    while listeners.len() < listener_count {
        match receiver.recv_timeout(Duration::from_secs(10)) {
            Ok(listener) => listeners.push(listener),
            Err(_) => panic!("usherd did not start: {:?}", tail.lock().unwrap()),
        }
    }
    ProxyProcess {
        child,
        listeners,
        stderr_tail: tail,
    }
}

/// A file path in a directory of its own, both removed when dropped.
/// Runs headless chromium on `url` with `args`; its stdout.
pub fn chromium(url: &str, args: &[&str]) -> String {
    let profile = tempfile_path::TempPath::new("chromium", "profile");
    let output = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            "--window-size=1280,800",
            "--virtual-time-budget=5000",
        ])
        .arg(format!(
            "--user-data-dir={}",
            profile.as_path().parent().unwrap().display()
        ))
        .args(args)
        .arg(url)
        .output()
        .expect("chromium is installed (tests/run.sh installs it)");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A free loopback TCP port for a server the test starts (and may stop and
/// start again on the same port): never handed out twice in one test
/// process, so a server stopped by one test cannot lose its port to another
/// test's server started meanwhile.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    // Bounded: the OS gives a fresh port within a few tries.
    for _ in 0..1000 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
    panic!("no fresh loopback port in 1000 tries");
}

/// The Python of the venv tests/run.sh made for `client` (a PyPI package
/// such as `py-consul`).
pub fn python(client: &str) -> std::path::PathBuf {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-python")
        .join(client)
        .join("bin/python");
    assert!(
        path.exists(),
        "{} is missing: run tests/run.sh, which installs the Python clients",
        path.display()
    );
    path
}

pub mod compose;
pub mod dns;
pub mod etcd;
pub mod follow;
pub mod scripted;
pub mod tls;

pub mod tempfile_path {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};

    static NEXT: AtomicUsize = AtomicUsize::new(0);

    pub struct TempPath {
        directory: PathBuf,
        file: PathBuf,
    }

    impl TempPath {
        pub fn new(stem: &str, extension: &str) -> TempPath {
            let n = NEXT.fetch_add(1, Ordering::SeqCst);
            let directory = std::env::temp_dir().join(format!("usherd-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&directory).unwrap();
            let file = directory.join(format!("{stem}.{extension}"));
            TempPath { directory, file }
        }

        pub fn as_path(&self) -> &Path {
            &self.file
        }

        /// The directory of its own the file is in.
        pub fn directory(&self) -> &Path {
            &self.directory
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.directory);
        }
    }
}

/// How a `ControlledBackend` behaves now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Behaviour {
    /// 200 to everything.
    Healthy = 0,
    /// `/healthz` answers 500; traffic is served.
    FailingHealthCheck = 1,
    /// Traffic gets 503; `/healthz` is fine.
    Unavailable = 2,
    /// Accepts and reads requests, never answers (health checks included).
    Hung = 3,
}

/// A backend a test can make fail, hang, die and come back on the same port.
/// `/healthz` requests are counted apart from traffic.
pub struct ControlledBackend {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub requests: Arc<AtomicUsize>,
    pub health_checks: Arc<AtomicUsize>,
    behaviour: Arc<std::sync::atomic::AtomicU8>,
    tasks: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl ControlledBackend {
    pub async fn start(name: &'static str) -> ControlledBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend = ControlledBackend {
            name,
            addr: listener.local_addr().unwrap(),
            requests: Arc::new(AtomicUsize::new(0)),
            health_checks: Arc::new(AtomicUsize::new(0)),
            behaviour: Arc::new(std::sync::atomic::AtomicU8::new(Behaviour::Healthy as u8)),
            tasks: Default::default(),
        };
        backend.serve(listener);
        backend
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn set(&self, behaviour: Behaviour) {
        self.behaviour.store(behaviour as u8, Ordering::SeqCst);
    }

    /// Closes the listener and every connection, as a crashed process would.
    pub fn kill(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Listens again on the same address.
    pub async fn restart(&self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }

    fn serve(&self, listener: TcpListener) {
        let (name, requests, checks, behaviour, tasks) = (
            self.name,
            self.requests.clone(),
            self.health_checks.clone(),
            self.behaviour.clone(),
            self.tasks.clone(),
        );
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (requests, checks, behaviour) =
                    (requests.clone(), checks.clone(), behaviour.clone());
                let connection = tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let (requests, checks, behaviour) =
                            (requests.clone(), checks.clone(), behaviour.clone());
                        async move {
                            let now = behaviour.load(Ordering::SeqCst);
                            let is_check = request.uri().path() == "/healthz";
                            if is_check {
                                checks.fetch_add(1, Ordering::SeqCst);
                            } else {
                                requests.fetch_add(1, Ordering::SeqCst);
                            }
                            if now == Behaviour::Hung as u8 {
                                std::future::pending::<()>().await;
                            }
                            let status = match (is_check, now) {
                                (true, n) if n == Behaviour::FailingHealthCheck as u8 => 500,
                                (false, n) if n == Behaviour::Unavailable as u8 => 503,
                                _ => 200,
                            };
                            let mut response = Response::new(full(name));
                            *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            response
                                .headers_mut()
                                .insert("x-backend", http::HeaderValue::from_static(name));
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                tasks.lock().unwrap().push(connection.abort_handle());
            }
        });
        self.tasks.lock().unwrap().push(accept.abort_handle());
    }
}

impl Drop for ControlledBackend {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Config text: one listener on 127.0.0.1:0, every host routed to the upstream
/// `pool` of `servers` with `strategy`; `upstream_extra` goes under the
/// upstream (and may open its sub-tables), `global` under `[global]`, and
/// `admin` adds an admin listener on port 0.
pub fn pool_config(
    servers: &[String],
    strategy: &str,
    upstream_extra: &str,
    global: &str,
    admin: bool,
) -> String {
    let servers: Vec<String> = servers
        .iter()
        .map(|addr| format!("{{ addr = \"{addr}\" }}"))
        .collect();
    let admin = if admin {
        "[admin]\nlisten = \"127.0.0.1:0\"\n"
    } else {
        ""
    };
    format!(
        r#"
[global]
{global}
{admin}
[listeners.web]
listen = "127.0.0.1:0"

[vhosts.all]
hosts = ["*"]
routes = [{{ path = "/", upstream = "pool" }}]

[upstreams.pool]
strategy = "{strategy}"
servers = [{}]
{upstream_extra}
"#,
        servers.join(", ")
    )
}
