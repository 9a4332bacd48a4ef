//! One conformance table: every case goes through an HTTP/1.1 client, an
//! HTTP/2 cleartext (h2c) client and an HTTP/2-over-TLS client, to an `http1`
//! and to an `h2c` upstream, and must have the same outcome: routing,
//! 404/502/503/504, forwarded and hop-by-hop headers, the request id, bodies
//! streamed both ways, retries, 408/413/431, the https redirect and the
//! decision header. Where a difference is right, the case says so and why.
//! Each client kind reaches a different request path (`proxy/h1` for HTTP/1,
//! `proxy/service.rs` for HTTP/2; an HTTP/1 request to an `h2c` upstream is
//! bridged), so this is the proof that they apply the same rules.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::{Digest, Sha256};
use support::tls::{client_config, tls_connect, CertDir, TestCa};
use support::{
    backend, client, closed_port, full, send, start_proxy, stream_of, Backend, TestBody,
};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const TOKEN: &str = "conformance-token";
const UPLOAD: usize = 200 * 1024;
const DOWNLOAD: usize = 1024 * 1024;

/// The three ways a client reaches usherd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    Http1,
    H2c,
    H2Tls,
}

/// Where a case sends its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listener {
    /// `plain` for the cleartext clients, `secure` (TLS) for `H2Tls`.
    Main,
    /// A plain listener with `redirect_https`.
    Redirect,
}

/// The request body a case sends.
#[derive(Debug, Clone, Copy)]
enum Upload {
    None,
    /// A body of this size with its `content-length`.
    Sized(usize),
    /// A body of this size streamed without a length (HTTP/1: chunked).
    Streamed(usize),
    /// `content-length: 100`, then 10 bytes and nothing more.
    Stalled,
}

struct Case {
    name: &'static str,
    listener: Listener,
    method: Method,
    host: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    upload: Upload,
    /// The clients the case applies to, and why not the others.
    applies: fn(Client) -> bool,
    check: fn(&Context, &Reply) -> Result<(), String>,
}

/// What a case's check knows of the run.
struct Context {
    client: Client,
    echo: SocketAddr,
}

/// A response with its body read.
struct Reply {
    status: u16,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body).map_err(|error| {
            format!(
                "{} with a body that is not the echo ({error}): {}",
                self.status,
                String::from_utf8_lossy(&self.body[..self.body.len().min(200)])
            )
        })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

fn all(_: Client) -> bool {
    true
}

/// HTTP/2 forbids connection-specific headers (RFC 9113 §8.2.2): an HTTP/2
/// client cannot send `Connection`, `Keep-Alive` and the like at all.
fn http1_only(client: Client) -> bool {
    client == Client::Http1
}

/// hyper's HTTP/2 client sends no Host line (it names the host in
/// `:authority`): the HTTP/2 side of such a row is
/// `two_host_lines_over_http2_get_400`, with the `h2` crate.
fn http1_only_here(client: Client) -> bool {
    client == Client::Http1
}

/// `redirect_https` is a plain listener's; a TLS client is on https already.
fn cleartext_only(client: Client) -> bool {
    client != Client::H2Tls
}

fn status_is(reply: &Reply, status: u16) -> Result<(), String> {
    if reply.status == status {
        Ok(())
    } else {
        Err(format!(
            "status {} (expected {status}): {}",
            reply.status,
            String::from_utf8_lossy(&reply.body[..reply.body.len().min(200)])
        ))
    }
}

/// The echo's view of the request, after checking it came back 200.
fn echoed(reply: &Reply) -> Result<serde_json::Value, String> {
    status_is(reply, 200)?;
    reply.json()
}

/// The values the upstream saw of `name`, joined by ", ".
fn seen(echo: &serde_json::Value, name: &str) -> Option<String> {
    let values = echo["headers"][name].as_array()?;
    Some(
        values
            .iter()
            .filter_map(|v| v.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    )
}

fn expect_eq(what: &str, got: Option<String>, want: Option<&str>) -> Result<(), String> {
    if got.as_deref() == want {
        Ok(())
    } else {
        Err(format!("{what}: {got:?} (expected {want:?})"))
    }
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "a routed GET reaches the upstream with its path and host",
            listener: Listener::Main,
            method: Method::GET,
            host: "conf.test",
            path: "/hello?x=1",
            headers: &[],
            upload: Upload::None,
            applies: all,
            check: |_, reply| {
                let echo = echoed(reply)?;
                expect_eq(
                    "method",
                    echo["method"].as_str().map(Into::into),
                    Some("GET"),
                )?;
                expect_eq(
                    "path",
                    echo["path"].as_str().map(Into::into),
                    Some("/hello?x=1"),
                )?;
                expect_eq(
                    "host (or :authority)",
                    echo["authority"].as_str().map(Into::into),
                    Some("conf.test"),
                )
            },
        },
        Case {
            name: "strip_prefix removes the route's path, keeps the query",
            listener: Listener::Main,
            method: Method::GET,
            host: "conf.test",
            path: "/strip/users?x=1",
            headers: &[],
            upload: Upload::None,
            applies: all,
            check: |_, reply| {
                let echo = echoed(reply)?;
                expect_eq(
                    "path",
                    echo["path"].as_str().map(Into::into),
                    Some("/users?x=1"),
                )
            },
        },
        Case {
            name: "a host no vhost serves gets 404",
            listener: Listener::Main,
            method: Method::GET,
            host: "nobody.test",
            path: "/",
            headers: &[],
            upload: Upload::None,
            applies: all,
            check: |_, reply| status_is(reply, 404),
        },
        Case {
            name: "an upstream whose servers refuse connections gives 502",
            listener: Listener::Main,
            method: Method::GET,
            host: "conf.test",
            path: "/dead",
            headers: &[],
            upload: Upload::None,
            applies: all,
            check: |_, reply| status_is(reply, 502),
        },
        Case {
            name: "an upstream whose only server is drained gives 503",
            listener: Listener::Main,
            method: Method::GET,
            host: "conf.test",
            path: "/drained",
            headers: &[],
            upload: Upload::None,
            applies: all,
            check: |_, reply| status_is(reply, 503),
        },
        Case {
            name: "a server slower than the upstream's timeout gives 504",
            listener: Listener::Main,
            method: Method::GET,
            host: "conf.test",
            path: "/slow",
            headers: &[],
            upload: Upload::None,
            applies: all,
            check: |_, reply| status_is(reply, 504),
        },
        Case {
            name: "a refused connection is retried on the next server",
            listener: Listener::Main,
            method: Method::GET,
            host: "conf.test",
            path: "/retry",
            headers: &[],
            upload: Upload::None,
            applies: all,
            check: |_, reply| {
                echoed(reply)?;
                expect_eq(
                    "backend",
                    reply.header("x-backend").map(Into::into),
                    Some("echo"),
                )
            },
        },
        Case {
            name: "X-Forwarded-For is appended to, -Proto and -Host are set",
            listener: Listener::Main,
            method: Method::GET,
            host: "conf.test",
            path: "/",
            headers: &[
                ("x-forwarded-for", "10.0.0.1"),
                ("x-forwarded-proto", "gopher"),
                ("x-forwarded-host", "evil.test"),
            ],
            upload: Upload::None,
            applies: all,
            check: |context, reply| {
                let echo = echoed(reply)?;
                expect_eq(
                    "x-forwarded-for",
                    seen(&echo, "x-forwarded-for"),
                    Some("10.0.0.1, 127.0.0.1"),
                )?;
                let proto = if context.client == Client::H2Tls {
                    "https"
                } else {
                    "http"
                };
                expect_eq(
                    "x-forwarded-proto",
                    seen(&echo, "x-forwarded-proto"),
                    Some(proto),
                )?;
                expect_eq(
                    "x-forwarded-host",
                    seen(&echo, "x-forwarded-host"),
                    Some("conf.test"),
                )
            },
        },
        Case {
            name: "a client's X-Request-Id is kept",
            listener: Listener::Main,
            method: Method::GET,
            host: "conf.test",
            path: "/",
            headers: &[("x-request-id", "conformance-1")],
            upload: Upload::None,
            applies: all,
            check: |_, reply| {
                let echo = echoed(reply)?;
                expect_eq(
                    "x-request-id",
                    seen(&echo, "x-request-id"),
                    Some("conformance-1"),
                )
            },
        },
        Case {
            name: "a request without X-Request-Id gets one",
            listener: Listener::Main,
            method: Method::GET,
            host: "conf.test",
            path: "/",
            headers: &[],
            upload: Upload::None,
            applies: all,
            check: |_, reply| {
                let echo = echoed(reply)?;
                match seen(&echo, "x-request-id") {
                    Some(id) if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) => {
                        Ok(())
                    }
                    other => Err(format!("x-request-id {other:?}: expected 32 hex digits")),
                }
            },
        },
        Case {
            name: "hop-by-hop headers and those Connection names stay behind",
            listener: Listener::Main,
            method: Method::GET,
            host: "conf.test",
            path: "/",
            headers: &[
                ("connection", "x-secret"),
                ("x-secret", "1"),
                ("keep-alive", "timeout=5"),
                ("proxy-connection", "keep-alive"),
                ("te", "gzip"),
                ("x-kept", "1"),
            ],
            upload: Upload::None,
            applies: http1_only,
            check: |_, reply| {
                let echo = echoed(reply)?;
                for name in ["x-secret", "keep-alive", "proxy-connection", "te"] {
                    expect_eq(name, seen(&echo, name), None)?;
                }
                expect_eq("x-kept", seen(&echo, "x-kept"), Some("1"))
            },
        },
        Case {
            name: "Connection cannot take away the headers usherd sets",
            listener: Listener::Main,
            method: Method::GET,
            host: "conf.test",
            path: "/",
            headers: &[
                ("connection", "x-forwarded-for, x-request-id"),
                ("x-forwarded-for", "10.0.0.1"),
                ("x-request-id", "conformance-2"),
            ],
            upload: Upload::None,
            applies: http1_only,
            check: |_, reply| {
                let echo = echoed(reply)?;
                expect_eq(
                    "x-forwarded-for",
                    seen(&echo, "x-forwarded-for"),
                    Some("10.0.0.1, 127.0.0.1"),
                )?;
                expect_eq(
                    "x-request-id",
                    seen(&echo, "x-request-id"),
                    Some("conformance-2"),
                )
            },
        },
        Case {
            name: "TE: trailers goes end to end",
            listener: Listener::Main,
            method: Method::GET,
            host: "conf.test",
            path: "/",
            headers: &[("te", "trailers")],
            upload: Upload::None,
            applies: all,
            check: |_, reply| {
                let echo = echoed(reply)?;
                expect_eq("te", seen(&echo, "te"), Some("trailers"))
            },
        },
        Case {
            name: "a body without a length streams up whole",
            listener: Listener::Main,
            method: Method::POST,
            host: "conf.test",
            path: "/upload",
            headers: &[],
            upload: Upload::Streamed(UPLOAD),
            applies: all,
            check: |_, reply| {
                let echo = echoed(reply)?;
                expect_eq(
                    "body",
                    echo["body"].as_str().map(Into::into),
                    Some(&digest(&pattern(UPLOAD))),
                )
            },
        },
        Case {
            name: "a body with a length goes up whole",
            listener: Listener::Main,
            method: Method::PUT,
            host: "conf.test",
            path: "/upload",
            headers: &[],
            upload: Upload::Sized(UPLOAD),
            applies: all,
            check: |_, reply| {
                let echo = echoed(reply)?;
                expect_eq(
                    "content-length",
                    seen(&echo, "content-length"),
                    Some("204800"),
                )?;
                expect_eq(
                    "body",
                    echo["body"].as_str().map(Into::into),
                    Some(&digest(&pattern(UPLOAD))),
                )
            },
        },
        Case {
            name: "a large response streams down whole",
            listener: Listener::Main,
            method: Method::GET,
            host: "conf.test",
            path: "/big",
            headers: &[],
            upload: Upload::None,
            applies: all,
            check: |_, reply| {
                status_is(reply, 200)?;
                if reply.body.as_ref() == pattern(DOWNLOAD).as_slice() {
                    Ok(())
                } else {
                    Err(format!(
                        "a body of {} bytes, not the 1 MiB sent",
                        reply.body.len()
                    ))
                }
            },
        },
        Case {
            name: "a body over max_request_body gets 413",
            listener: Listener::Main,
            method: Method::POST,
            host: "conf.test",
            path: "/upload",
            headers: &[],
            upload: Upload::Sized(300 * 1024),
            applies: all,
            check: |_, reply| status_is(reply, 413),
        },
        Case {
            name: "a body that stops coming gets 408 after client_body_timeout",
            listener: Listener::Main,
            method: Method::POST,
            host: "conf.test",
            path: "/upload",
            headers: &[("content-length", "100")],
            upload: Upload::Stalled,
            applies: all,
            check: |_, reply| status_is(reply, 408),
        },
        Case {
            name: "a head over max_request_header_size gets 431",
            listener: Listener::Main,
            method: Method::GET,
            host: "conf.test",
            path: "/",
            headers: &[("x-big", BIG_VALUE)],
            upload: Upload::None,
            applies: all,
            check: |_, reply| status_is(reply, 431),
        },
        Case {
            name: "a plain listener with redirect_https answers 308 to https",
            listener: Listener::Redirect,
            method: Method::POST,
            host: "conf.test",
            path: "/cart?item=1",
            headers: &[],
            upload: Upload::None,
            applies: cleartext_only,
            check: |_, reply| {
                status_is(reply, 308)?;
                expect_eq(
                    "location",
                    reply.header("location").map(Into::into),
                    Some("https://conf.test:8443/cart?item=1"),
                )
            },
        },
        Case {
            name: "the decision header answers the admin token",
            listener: Listener::Main,
            method: Method::GET,
            host: "conf.test",
            path: "/",
            headers: &[("x-usherd-debug", TOKEN)],
            upload: Upload::None,
            applies: all,
            check: |context, reply| {
                let echo = echoed(reply)?;
                expect_eq(
                    "x-usherd-debug upstream",
                    seen(&echo, "x-usherd-debug"),
                    None,
                )?;
                let want = format!(
                    "vhost=conf; upstream=echo; strategy=round_robin; server={}; attempts=1",
                    context.echo
                );
                expect_eq(
                    "x-usherd-decision",
                    reply.header("x-usherd-decision").map(Into::into),
                    Some(&want),
                )
            },
        },
        Case {
            name: "two Host lines get 400",
            listener: Listener::Main,
            method: Method::GET,
            host: "conf.test",
            path: "/",
            headers: &[("host", "conf.test")],
            upload: Upload::None,
            applies: http1_only_here,
            check: |_, reply| status_is(reply, 400),
        },
    ]
}

/// Stands for a header value of 9 KiB, over the 8 KiB `max_request_header_size`.
const BIG_VALUE: &str = "(9 KiB of x)";

/// `len` bytes of a repeating pattern.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn digest(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// The upstream of every route: echoes the request head and a digest of its
/// body as JSON; `/big` answers 1 MiB, `/slow` waits past the timeout.
async fn echo_backend() -> Backend {
    backend(|request: Request<Incoming>| async move {
        let path = request.uri().path().to_string();
        if path.starts_with("/big") {
            return Response::new(full(pattern(DOWNLOAD)));
        }
        if path.starts_with("/slow") {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        let mut headers = serde_json::Map::new();
        for (key, value) in request.headers() {
            headers
                .entry(key.as_str().to_string())
                .or_insert_with(|| serde_json::Value::Array(vec![]))
                .as_array_mut()
                .unwrap()
                .push(value.to_str().unwrap_or("").into());
        }
        // The host: `:authority` for an HTTP/2 upstream, else the Host line.
        let authority = request
            .uri()
            .authority()
            .map(|authority| authority.to_string())
            .or_else(|| {
                let host = request.headers().get("host")?;
                host.to_str().ok().map(str::to_string)
            });
        let method = request.method().to_string();
        // HTTP/2 requests carry the whole URI; the path and query is what counts.
        let uri = request
            .uri()
            .path_and_query()
            .map_or("/", |path| path.as_str())
            .to_string();
        let body = match request.into_body().collect().await {
            Ok(body) => digest(&body.to_bytes()),
            Err(error) => format!("body error: {error}"),
        };
        let echo = serde_json::json!({
            "method": method,
            "path": uri,
            "authority": authority,
            "headers": headers,
            "body": body,
        });
        let mut response = Response::new(full(echo.to_string()));
        response
            .headers_mut()
            .insert("x-backend", http::HeaderValue::from_static("echo"));
        response
    })
    .await
}

/// A proxy for the table, with upstreams of `protocol`.
struct Setup {
    proxy: usherd::Proxy,
    echo: Backend,
    _drained: Backend,
    ca: TestCa,
    _certs: CertDir,
}

async fn setup(protocol: &str) -> Setup {
    let echo = echo_backend().await;
    let drained = echo_backend().await;
    let (dead, refused) = (closed_port().await, closed_port().await);
    let ca = TestCa::new("conformance ca");
    let certs = CertDir::new();
    let leaf = certs.write_leaf("conf", &ca.leaf(&["conf.test", "nobody.test"]));
    let config = format!(
        r#"
[global]
max_request_body = "256KiB"
max_request_header_size = "8KiB"
client_body_timeout = "1s"

[admin]
listen = "127.0.0.1:0"
token = "{TOKEN}"

[listeners.plain]
listen = "127.0.0.1:0"

[listeners.secure]
listen = "127.0.0.1:0"
tls = {{ certs = [{leaf}] }}

[listeners.redirect]
listen = "127.0.0.1:0"
redirect_https = true
https_port = 8443

[vhosts.conf]
hosts = ["conf.test"]
listeners = ["plain", "secure"]
routes = [
  {{ path = "/", upstream = "echo" }},
  {{ path = "/strip/", upstream = "echo", strip_prefix = true }},
  {{ path = "/retry", upstream = "retry" }},
  {{ path = "/dead", upstream = "dead" }},
  {{ path = "/drained", upstream = "drained" }},
  {{ path = "/slow", upstream = "slow" }},
]

[upstreams.echo]
protocol = "{protocol}"
servers = [{{ addr = "{echo}" }}]

[upstreams.retry]
protocol = "{protocol}"
retries = 1
servers = [{{ addr = "{refused}" }}, {{ addr = "{echo}" }}]

[upstreams.dead]
protocol = "{protocol}"
retries = 0
servers = [{{ addr = "{dead}" }}]

[upstreams.drained]
protocol = "{protocol}"
servers = [{{ addr = "{drained}" }}]

[upstreams.slow]
protocol = "{protocol}"
timeout = "1s"
retries = 0
servers = [{{ addr = "{echo}" }}]
"#,
        echo = echo.addr,
        drained = drained.addr,
    );
    let proxy = start_proxy(&config).await;
    let drain = Request::post(format!(
        "http://{}/upstreams/drained/servers/{}/drain",
        proxy.admin_addr().unwrap(),
        drained.addr
    ))
    .header("authorization", format!("Bearer {TOKEN}"))
    .body(full(""))
    .unwrap();
    assert_eq!(send(&client(), drain).await.status, 200, "drain");
    Setup {
        proxy,
        echo,
        _drained: drained,
        ca,
        _certs: certs,
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Sends the case's request as `client` on a new connection; the response
/// with its body, or why there is none.
async fn exchange(setup: &Setup, client: Client, case: &Case) -> Result<Reply, String> {
    let listener = match (case.listener, client) {
        (Listener::Redirect, _) => "redirect",
        (Listener::Main, Client::H2Tls) => "secure",
        (Listener::Main, _) => "plain",
    };
    let addr = setup.proxy.listener_addr(listener).unwrap();
    let mut request = match client {
        Client::Http1 => Request::builder().uri(case.path).header("host", case.host),
        Client::H2c => Request::builder().uri(format!("http://{}{}", case.host, case.path)),
        Client::H2Tls => Request::builder().uri(format!("https://{}{}", case.host, case.path)),
    }
    .method(case.method.clone());
    for (name, value) in case.headers {
        request = match *value {
            BIG_VALUE => request.header(*name, "x".repeat(9 * 1024)),
            value => request.header(*name, value),
        };
    }
    // Held until the exchange ends: the stalled body's sender.
    let mut _stalled = None;
    let body: TestBody = match case.upload {
        Upload::None => Empty::new().map_err(|never| match never {}).boxed(),
        Upload::Sized(len) => full(pattern(len)),
        Upload::Streamed(len) => {
            let (sender, receiver) = mpsc::channel::<Result<Frame<Bytes>, BoxError>>(4);
            tokio::spawn(async move {
                for chunk in pattern(len).chunks(16 * 1024) {
                    let frame = Ok(Frame::data(Bytes::copy_from_slice(chunk)));
                    if sender.send(frame).await.is_err() {
                        return;
                    }
                }
            });
            StreamBody::new(stream_of(receiver)).boxed()
        }
        Upload::Stalled => {
            let (sender, receiver) = mpsc::channel::<Result<Frame<Bytes>, BoxError>>(4);
            sender
                .send(Ok(Frame::data(Bytes::from_static(b"0123456789"))))
                .await
                .unwrap();
            _stalled = Some(sender);
            StreamBody::new(stream_of(receiver)).boxed()
        }
    };
    let request = request.body(body).map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(Duration::from_secs(20), async {
        let response: Response<Incoming> = match client {
            Client::Http1 => {
                let stream = TcpStream::connect(addr).await?;
                let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
                tokio::spawn(connection);
                sender.send_request(request).await?
            }
            Client::H2c => {
                let stream = TcpStream::connect(addr).await?;
                let (mut sender, connection) =
                    http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
                tokio::spawn(connection);
                sender.send_request(request).await?
            }
            Client::H2Tls => {
                let config = client_config(&setup.ca.der, &[b"h2"]);
                let stream = tls_connect(addr, "conf.test", config).await?;
                let (mut sender, connection) =
                    http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
                tokio::spawn(connection);
                sender.send_request(request).await?
            }
        };
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok::<_, BoxError>(Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    })
    .await;
    match response {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(error)) => Err(format!("no response: {error}")),
        Err(_) => Err("no response within 20 s".into()),
    }
}

/// Runs every case through every client to upstreams of `protocol`; the
/// failures, one line each.
async fn run_table(protocol: &str) -> Vec<String> {
    let setup = setup(protocol).await;
    let mut failures = Vec::new();
    for case in cases() {
        for client in [Client::Http1, Client::H2c, Client::H2Tls] {
            if !(case.applies)(client) {
                continue;
            }
            let context = Context {
                client,
                echo: setup.echo.addr,
            };
            let outcome = exchange(&setup, client, &case)
                .await
                .and_then(|reply| (case.check)(&context, &reply));
            if let Err(why) = outcome {
                failures.push(format!(
                    "{} / {client:?} client / {protocol} upstream: {why}",
                    case.name
                ));
            }
        }
    }
    failures
}

#[tokio::test]
async fn every_client_gets_the_same_outcome_from_http1_upstreams() {
    let failures = run_table("http1").await;
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[tokio::test]
async fn every_client_gets_the_same_outcome_from_h2c_upstreams() {
    let failures = run_table("h2c").await;
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// The HTTP/2 side of "two Host lines get 400": the `h2` crate sends the
/// lines as given (both naming the `:authority`), in cleartext and over TLS.
#[tokio::test]
async fn two_host_lines_over_http2_get_400() {
    for protocol in ["http1", "h2c"] {
        let setup = setup(protocol).await;
        for tls in [false, true] {
            let status = if tls {
                let addr = setup.proxy.listener_addr("secure").unwrap();
                let config = client_config(&setup.ca.der, &[b"h2"]);
                let stream = tls_connect(addr, "conf.test", config).await.unwrap();
                h2_two_hosts(stream, "https").await
            } else {
                let addr = setup.proxy.listener_addr("plain").unwrap();
                h2_two_hosts(TcpStream::connect(addr).await.unwrap(), "http").await
            };
            assert_eq!(status, 400, "{protocol} upstream, tls {tls}");
        }
    }
}

/// A GET for conf.test with two `host: conf.test` lines; its status.
async fn h2_two_hosts<S>(stream: S, scheme: &str) -> u16
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (client, connection) = h2::client::handshake(stream).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await.unwrap();
    let mut request = Request::get(format!("{scheme}://conf.test/"))
        .body(())
        .unwrap();
    for _ in 0..2 {
        request
            .headers_mut()
            .append("host", http::HeaderValue::from_static("conf.test"));
    }
    let (response, _) = client.send_request(request, true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("a response within 10 s")
        .unwrap()
        .status()
        .as_u16()
}
