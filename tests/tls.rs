//! TLS termination with SNI and ALPN, certificates swapped by reload,
//! HTTP/2 and gRPC-style streams with trailers, upstream TLS and h2/h2c,
//! redirect_https, WebSocket over TLS, HTTP/2 limits, and the TLS parts of
//! config validation. Certificates come from a test CA made with rcgen.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use support::tls::{alpn, client_config, peer_cert, tls_backend, tls_connect, CertDir, TestCa};
use support::{echo_backend, exchange_websocket_echoes, full, raw_exchange, stream_of, TestBody};

/// A TLS listener `secure` with `certs`, a plain listener `plain`, one pool.
fn tls_config(certs: &[String], servers: &[String], upstream_extra: &str) -> String {
    let servers: Vec<String> = servers
        .iter()
        .map(|addr| format!("{{ addr = \"{addr}\" }}"))
        .collect();
    format!(
        r#"
[listeners.secure]
listen = "127.0.0.1:0"
tls = {{ certs = [{}] }}

[listeners.plain]
listen = "127.0.0.1:0"

[vhosts.all]
hosts = ["*"]
routes = [{{ path = "/", upstream = "pool" }}]

[upstreams.pool]
servers = [{}]
{upstream_extra}
"#,
        certs.join(", "),
        servers.join(", ")
    )
}

async fn start(toml: &str) -> usherd::Proxy {
    support::start_proxy(toml).await
}

/// An HTTP/1.1 connection over `stream`.
async fn http1_over<S>(stream: S) -> hyper::client::conn::http1::SendRequest<TestBody>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

async fn get_on(
    sender: &mut hyper::client::conn::http1::SendRequest<TestBody>,
    host: &str,
) -> Response<Incoming> {
    let request = Request::get("/")
        .header("host", host)
        .body(full(""))
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
        .await
        .expect("answer in time")
        .unwrap()
}

#[tokio::test]
async fn sni_chooses_the_certificate_and_unknown_names_get_the_first() {
    let ca = TestCa::new("test ca");
    let a = ca.leaf(&["a.test", "*.wild.test"]);
    let b = ca.leaf(&["b.test"]);
    let dir = CertDir::new();
    let certs = [dir.write_leaf("a", &a), dir.write_leaf("b", &b)];
    let upstream = echo_backend("app").await;
    let proxy = start(&tls_config(&certs, &[upstream.addr.to_string()], "")).await;
    let addr = proxy.listener_addr("secure").unwrap();

    let verified = client_config(&ca.der, &[b"http/1.1"]);
    for (name, expected) in [("a.test", &a), ("b.test", &b), ("x.wild.test", &a)] {
        let stream = tls_connect(addr, name, verified.clone()).await.unwrap();
        assert_eq!(peer_cert(&stream), expected.der, "certificate for {name}");
    }
    // A name no certificate has, and no SNI at all (an IP address sends
    // none): the first certificate listed.
    let unverified = usherd::tls::client_config(usherd::tls::Verify::Nothing, b"http/1.1");
    for name in ["unknown.test", "deep.x.wild.test", "127.0.0.1"] {
        let stream = tls_connect(addr, name, unverified.clone()).await.unwrap();
        assert_eq!(peer_cert(&stream), a.der, "default certificate for {name}");
    }

    let stream = tls_connect(addr, "b.test", verified).await.unwrap();
    let mut sender = http1_over(stream).await;
    let response = get_on(&mut sender, "b.test").await;
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["headers"]["x-forwarded-proto"][0], "https");
    proxy.shutdown().await;
}

/// Runs curl with `args`; its `-w` output.
async fn curl(args: &[&str]) -> String {
    let output = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "-m",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
        ])
        .args(args)
        .output()
        .await
        .expect("curl is installed (.ci/run installs it)");
    assert!(
        output.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn curl_gets_http2_and_http1_over_tls_and_h2c_on_plain() {
    let ca = TestCa::new("test ca");
    let dir = CertDir::new();
    let certs = [dir.write_leaf("site", &ca.leaf(&["site.test"]))];
    let ca_file = dir.write("ca.pem", &ca.pem);
    let upstream = echo_backend("app").await;
    let proxy = start(&tls_config(&certs, &[upstream.addr.to_string()], "")).await;
    let secure = proxy.listener_addr("secure").unwrap();
    let plain = proxy.listener_addr("plain").unwrap();
    let resolve = format!("site.test:{}:127.0.0.1", secure.port());
    let url = format!("https://site.test:{}/", secure.port());
    let ca_file = ca_file.display().to_string();
    let tls = ["--cacert", &ca_file, "--resolve", &resolve, &url];
    assert_eq!(curl(&[&["--http2"], &tls[..]].concat()).await, "2 200");
    assert_eq!(curl(&[&["--http1.1"], &tls[..]].concat()).await, "1.1 200");
    let plain_url = format!("http://{plain}/");
    assert_eq!(
        curl(&["--http2-prior-knowledge", &plain_url]).await,
        "2 200"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_reload_serves_new_certificates_to_new_handshakes_only() {
    let ca = TestCa::new("test ca");
    let old = ca.leaf(&["site.test"]);
    let dir = CertDir::new();
    let upstream = echo_backend("app").await;
    let certs = [dir.write_leaf("site", &old)];
    let path = dir.write(
        "usherd.toml",
        &tls_config(&certs, &[upstream.addr.to_string()], ""),
    );
    let proxy = usherd::Proxy::start(usherd::config::load(&path).unwrap())
        .await
        .unwrap();
    let addr = proxy.listener_addr("secure").unwrap();
    let verified = client_config(&ca.der, &[b"http/1.1"]);
    let before = tls_connect(addr, "site.test", verified).await.unwrap();
    assert_eq!(peer_cert(&before), old.der);
    let mut kept = http1_over(before).await;
    assert_eq!(get_on(&mut kept, "site.test").await.status(), 200);

    let new = ca.leaf(&["site.test"]);
    dir.write_leaf("site", &new);
    proxy.reload(usherd::reload::Trigger::Api).await.unwrap();
    assert!(proxy
        .last_reload()
        .changes
        .iter()
        .any(|change| change.contains("certificates changed")));

    // A new client config: the old one would resume its TLS session, and a
    // resumed session shows the certificate of the first handshake.
    let fresh = client_config(&ca.der, &[b"http/1.1"]);
    let after = tls_connect(addr, "site.test", fresh).await.unwrap();
    assert_eq!(
        peer_cert(&after),
        new.der,
        "a new handshake gets the new certificate"
    );
    for _ in 0..3 {
        let response = get_on(&mut kept, "site.test").await;
        assert_eq!(
            response.status(),
            200,
            "the connection from before the reload still works"
        );
        response.into_body().collect().await.unwrap();
    }
    proxy.shutdown().await;
}

/// A gRPC-like h2c backend: echoes every request DATA frame as `echo:<data>`
/// as it arrives, then ends with trailers `grpc-status: 0`. Its response
/// headers tell the HTTP version and the `te` it got.
async fn grpc_echo_backend() -> support::Backend {
    support::backend(|request: Request<Incoming>| async move {
        let version = format!("{:?}", request.version());
        let te = request
            .headers()
            .get("te")
            .map_or("", |v| v.to_str().unwrap())
            .to_string();
        let (sender, receiver) =
            mpsc::channel::<Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>>(4);
        let mut body = request.into_body();
        tokio::spawn(async move {
            while let Some(Ok(frame)) = body.frame().await {
                // hyper may hand over an empty DATA frame; gRPC ignores them too.
                if let Some(data) = frame.into_data().ok().filter(|data| !data.is_empty()) {
                    let echo = [b"echo:".as_slice(), &data].concat();
                    if sender
                        .send(Ok(Frame::data(Bytes::from(echo))))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            trailers.insert("grpc-message", "done".parse().unwrap());
            let _ = sender.send(Ok(Frame::trailers(trailers))).await;
        });
        let stream = stream_of(receiver);
        Response::builder()
            .header("content-type", "application/grpc")
            .header("x-version", version)
            .header("x-te", te)
            .body(StreamBody::new(stream).boxed())
            .unwrap()
    })
    .await
}

#[tokio::test]
async fn grpc_style_streams_pass_both_ways_with_trailers_to_an_h2c_upstream() {
    let ca = TestCa::new("test ca");
    let dir = CertDir::new();
    let certs = [dir.write_leaf("site", &ca.leaf(&["grpc.test"]))];
    let upstream = grpc_echo_backend().await;
    let proxy = start(&tls_config(
        &certs,
        &[upstream.addr.to_string()],
        "protocol = \"h2c\"",
    ))
    .await;
    let addr = proxy.listener_addr("secure").unwrap();
    let stream = tls_connect(addr, "grpc.test", client_config(&ca.der, &[b"h2"]))
        .await
        .unwrap();
    assert_eq!(alpn(&stream).as_deref(), Some("h2"));
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let (frames, receiver) =
        mpsc::channel::<Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>>(4);
    let request = Request::post("https://grpc.test/echo.Echo/Stream")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(StreamBody::new(stream_of(receiver)).boxed())
        .unwrap();
    frames
        .send(Ok(Frame::data(Bytes::from("one"))))
        .await
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-version"], "HTTP/2.0");
    assert_eq!(response.headers()["x-te"], "trailers");
    let mut body = response.into_body();
    let mut next_frame = async || {
        tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("a frame in time")
            .unwrap()
            .unwrap()
    };
    // Each reply arrives before the next message is sent: streaming both ways.
    assert_eq!(next_frame().await.into_data().unwrap(), "echo:one");
    frames
        .send(Ok(Frame::data(Bytes::from("two"))))
        .await
        .unwrap();
    assert_eq!(next_frame().await.into_data().unwrap(), "echo:two");
    drop(frames);
    let trailers = next_frame().await.into_trailers().unwrap();
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "done");
    proxy.shutdown().await;
}

#[tokio::test]
async fn upstream_tls_verifies_with_the_ca_file_and_refuses_a_wrong_one() {
    let backend_ca = TestCa::new("backend ca");
    let other_ca = TestCa::new("some other ca");
    let (backend_addr, _backend) = tls_backend(&backend_ca.leaf(&["backend.test"])).await;
    let dir = CertDir::new();
    let good_ca = dir
        .write("backend-ca.pem", &backend_ca.pem)
        .display()
        .to_string();
    let wrong_ca = dir
        .write("other-ca.pem", &other_ca.pem)
        .display()
        .to_string();
    let toml = format!(
        r#"
[listeners.web]
listen = "127.0.0.1:0"

[vhosts.all]
hosts = ["*"]
routes = [
  {{ path = "/http1", upstream = "http1" }},
  {{ path = "/h2", upstream = "h2" }},
  {{ path = "/wrong", upstream = "wrong" }},
]

[upstreams.http1]
servers = [{{ addr = "{backend_addr}" }}]
tls = true
tls_server_name = "backend.test"
ca_file = "{good_ca}"

[upstreams.h2]
servers = [{{ addr = "{backend_addr}" }}]
protocol = "h2"
tls_server_name = "backend.test"
ca_file = "{good_ca}"

[upstreams.wrong]
servers = [{{ addr = "{backend_addr}" }}]
tls = true
tls_server_name = "backend.test"
ca_file = "{wrong_ca}"
retries = 0
"#
    );
    let (proxy, _config) = support::spawn_binary_logging(&toml, 1, "info,access=off");
    let base = format!("http://{}", proxy.addr("web"));
    let reply = support::get(&format!("{base}/http1"), Some("app.test")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-version"), Some("HTTP/1.1"));
    assert_eq!(reply.header("x-sni"), Some("backend.test"));
    let reply = support::get(&format!("{base}/h2"), Some("app.test")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-version"), Some("HTTP/2.0"));
    let reply = support::get(&format!("{base}/wrong"), Some("app.test")).await;
    assert_eq!(reply.status, 502);
    let logged = proxy.wait_for_log("invalid peer certificate", Duration::from_secs(5));
    assert!(
        logged.contains("wrong") && logged.contains("UnknownIssuer"),
        "the log names the upstream and the reason: {logged}"
    );
}

#[tokio::test]
async fn redirect_https_answers_308_to_the_same_host_and_path() {
    let upstream = echo_backend("app").await;
    let toml = format!(
        r#"
[listeners.web]
listen = "127.0.0.1:0"
redirect_https = true
https_port = 8443

[listeners.web443]
listen = "127.0.0.1:0"
redirect_https = true

[vhosts.all]
hosts = ["*"]
routes = [{{ path = "/", upstream = "pool" }}]

[upstreams.pool]
servers = [{{ addr = "{}" }}]
"#,
        upstream.addr
    );
    let proxy = start(&toml).await;
    let answer = raw_exchange(
        proxy.listener_addr("web").unwrap(),
        b"POST /cart/add?item=3 HTTP/1.1\r\nHost: Shop.test:8080\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 308"), "{answer}");
    assert!(
        answer.contains("location: https://Shop.test:8443/cart/add?item=3\r\n"),
        "{answer}"
    );
    let answer = raw_exchange(
        proxy.listener_addr("web443").unwrap(),
        b"GET / HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        answer.contains("location: https://shop.test/\r\n"),
        "{answer}"
    );
    assert_eq!(upstream.requests(), 0, "redirects never reach a server");
    proxy.shutdown().await;
}

#[tokio::test]
async fn websocket_upgrades_work_through_a_tls_listener() {
    let ca = TestCa::new("test ca");
    let dir = CertDir::new();
    let certs = [dir.write_leaf("site", &ca.leaf(&["ws.test"]))];
    let upstream = support::websocket_echo_backend().await;
    let proxy = start(&tls_config(&certs, &[upstream.addr.to_string()], "")).await;
    let addr = proxy.listener_addr("secure").unwrap();
    let stream = tls_connect(addr, "ws.test", client_config(&ca.der, &[b"http/1.1"]))
        .await
        .unwrap();
    exchange_websocket_echoes("ws://ws.test/chat".into(), stream).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn http2_limits_are_announced_and_enforced() {
    let upstream = echo_backend("app").await;
    let proxy = start(&support::pool_config(
        &[upstream.addr.to_string()],
        "round_robin",
        "",
        "",
        false,
    ))
    .await;
    let addr = proxy.listeners()[0].addr;

    // SETTINGS_MAX_CONCURRENT_STREAMS, and a header list beyond
    // max_request_header_size (64 KiB) refused. (A scope, so the connection
    // closes before the proxy shuts down.)
    {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
        tokio::pin!(connection);
        let request = Request::get("http://h2.test/").body(()).unwrap();
        let (response, _) = client.send_request(request, true).unwrap();
        let response = tokio::select! {
            response = response => response.unwrap(),
            _ = connection.as_mut() => panic!("connection ended"),
        };
        assert_eq!(response.status(), 200);
        assert_eq!(connection.max_concurrent_send_streams(), 128);
        let request = Request::get("http://h2.test/")
            .header("x-big", "x".repeat(70 * 1024))
            .body(())
            .unwrap();
        let refused = match client.send_request(request, true) {
            Ok((response, _)) => tokio::select! {
                response = response => response.map(|r| r.status()),
                _ = connection.as_mut() => panic!("connection ended"),
            },
            Err(error) => Err(error),
        };
        assert!(
            matches!(refused, Ok(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)) || refused.is_err(),
            "{refused:?}"
        );
        assert_eq!(
            upstream.requests(),
            1,
            "the oversized request never reached the server"
        );
    }

    // Rapid reset: streams opened and cancelled at once end in GOAWAY.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    for _ in 0..100 {
        let request = Request::get("http://h2.test/").body(()).unwrap();
        let Ok((_, mut stream)) = client.send_request(request, false) else {
            break;
        };
        stream.send_reset(h2::Reason::CANCEL);
    }
    let ended = tokio::time::timeout(Duration::from_secs(10), connection)
        .await
        .expect("the server ends the connection");
    let error = ended.expect_err("a GOAWAY with an error");
    assert_eq!(
        error.reason(),
        Some(h2::Reason::ENHANCE_YOUR_CALM),
        "{error}"
    );
    proxy.shutdown().await;
}

#[test]
fn config_errors_name_the_file_line_and_column() {
    let ca = TestCa::new("test ca");
    let dir = CertDir::new();
    let good = dir.write_leaf("good", &ca.leaf(&["good.test"]));
    let other = ca.leaf(&["other.test"]);
    let mismatched_key = dir.write("other.key", &other.key_pem);
    let good_cert = dir.dir().join("good.pem");
    let ip_only = dir.write_leaf("ip", &ca.leaf(&["127.0.0.1"]));
    let missing = dir.dir().join("missing.pem");
    let config = |listener_tls: &str, upstream: &str| {
        format!(
            "[listeners.web]\nlisten = \"127.0.0.1:0\"\n{listener_tls}\n[vhosts.all]\nhosts = [\"*\"]\nroutes = [{{ path = \"/\", upstream = \"pool\" }}]\n[upstreams.pool]\nservers = [{{ addr = \"127.0.0.1:1\" }}]\n{upstream}\n"
        )
    };
    let errors = |text: &str| {
        usherd::config::parse_config(text, "t.toml")
            .expect_err("refused")
            .0
            .iter()
            .map(|e| format!("{}:{}: {}", e.line, e.column, e.message))
            .collect::<Vec<_>>()
    };
    let first_error = |text: &str| errors(text).remove(0);

    assert!(usherd::config::parse_config(
        &config(&format!("tls = {{ certs = [{good}] }}"), ""),
        "t.toml"
    )
    .is_ok());
    let unreadable = first_error(&config(
        &format!(
            "tls = {{ certs = [{{ cert = \"{}\", key = \"x\" }}] }}",
            missing.display()
        ),
        "",
    ));
    assert!(
        unreadable.starts_with("3:27: cannot read certificate"),
        "{unreadable}"
    );
    let mismatch = first_error(&config(
        &format!(
            "tls = {{ certs = [{{ cert = \"{}\", key = \"{}\" }}] }}",
            good_cert.display(),
            mismatched_key.display()
        ),
        "",
    ));
    assert!(
        mismatch.contains("does not match the certificate"),
        "{mismatch}"
    );
    let no_name = first_error(&config(&format!("tls = {{ certs = [{ip_only}] }}"), ""));
    assert!(no_name.contains("names no DNS name"), "{no_name}");
    let empty = first_error(&config("tls = { certs = [] }", ""));
    assert!(
        empty.starts_with("3:17: tls needs at least one certificate"),
        "{empty}"
    );

    for (upstream, line, needle) in [
        ("protocol = \"h3\"", "9:12", "unknown protocol `h3`"),
        (
            "protocol = \"h2\"\ntls = false",
            "10:7",
            "for HTTP/2 without TLS use protocol = \"h2c\"",
        ),
        (
            "protocol = \"h2c\"\ntls = true",
            "10:7",
            "for HTTP/2 over TLS use protocol = \"h2\"",
        ),
        (
            "ca_file = \"ca.pem\"",
            "9:11",
            "ca_file applies only to upstreams with tls = true",
        ),
        (
            "tls = true\nca_file = \"/nonexistent/ca.pem\"",
            "10:11",
            "cannot read ca_file",
        ),
        (
            "tls = true\ntls_server_name = \"not a name\"",
            "10:19",
            "is not a DNS name",
        ),
    ] {
        let error = first_error(&config("", upstream));
        assert!(
            error.starts_with(line) && error.contains(needle),
            "{upstream}: {error}"
        );
    }
    let redirect = first_error(&config(
        &format!("tls = {{ certs = [{good}] }}\nredirect_https = true"),
        "",
    ));
    assert!(
        redirect.contains("redirect_https is for plain listeners"),
        "{redirect}"
    );
    let port = first_error(&config("https_port = 8443", ""));
    assert!(
        port.contains("https_port applies only with redirect_https"),
        "{port}"
    );
}

#[test]
fn expired_certificates_and_skipped_verification_are_warned_about() {
    let ca = TestCa::new("test ca");
    let dir = CertDir::new();
    let expired = dir.write_leaf("old", &ca.expired_leaf(&["old.test"]));
    let text = format!(
        "[listeners.web]\nlisten = \"127.0.0.1:0\"\ntls = {{ certs = [{expired}] }}\n[vhosts.all]\nhosts = [\"*\"]\nroutes = [{{ path = \"/\", upstream = \"pool\" }}]\n[upstreams.pool]\nservers = [{{ addr = \"127.0.0.1:1\" }}]\ntls = true\ntls_insecure_skip_verify = true\n"
    );
    let config = usherd::config::parse_config(&text, "t.toml").expect("warnings do not refuse");
    assert!(
        config.warnings.iter().any(|w| w.contains("expired")),
        "{:?}",
        config.warnings
    );
    assert!(
        config
            .warnings
            .iter()
            .any(|w| w.contains("t.toml:10:28") && w.contains("accepts ANY certificate")),
        "{:?}",
        config.warnings
    );
}

#[tokio::test]
async fn a_client_that_never_completes_the_handshake_is_dropped() {
    let ca = TestCa::new("test ca");
    let dir = CertDir::new();
    let cert = dir.write_leaf("site", &ca.leaf(&["site.test"]));
    let upstream = echo_backend("app").await;
    let toml = tls_config(&[cert], &[upstream.addr.to_string()], "").replace(
        "tls = { certs",
        "tls = { handshake_timeout = \"300ms\", certs",
    ) + "[admin]\nlisten = \"127.0.0.1:0\"\n";
    let proxy = start(&toml).await;
    let mut silent = TcpStream::connect(proxy.listener_addr("secure").unwrap())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buffer = [0u8; 64];
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut silent, &mut buffer),
    )
    .await
    .expect("the proxy closes the connection");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    let metrics = support::get(
        &format!("http://{}/metrics", proxy.admin_addr().unwrap()),
        None,
    )
    .await
    .text();
    assert!(
        metrics.contains("usherd_tls_handshake_failures_total{listener=\"secure\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("usherd_connections_open{listener=\"secure\"} 0"),
        "the dropped connection is no longer open: {metrics}"
    );
    proxy.shutdown().await;
}
