//! The admin API: `GET /status` in the shape docs/operations.md#the-admin-api
//! gives, with live counters, the token rule, and its hardening: time limits
//! and a cap on its connections, state changes a web page cannot send, and
//! the Host check against DNS rebinding.

mod support;

use std::time::{Duration, Instant};

use http::Request;
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::{client, echo_backend, get, send, start_proxy, url};

#[tokio::test]
async fn status_has_the_spec_shape_and_counts_requests() {
    let a = echo_backend("a").await;
    let b = echo_backend("b").await;
    let proxy = start_proxy(&format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[listeners.web]
listen = "127.0.0.1:0"
[vhosts.all]
hosts = ["*"]
routes = [{{ path = "/", upstream = "pool" }}]
[upstreams.pool]
strategy = "weighted"
servers = [{{ addr = "{}", weight = 3 }}, {{ addr = "{}", weight = 1 }}]
"#,
        a.addr, b.addr
    ))
    .await;
    for _ in 0..8 {
        assert_eq!(get(&url(&proxy, "/"), None).await.status, 200);
    }
    let admin = proxy.admin_addr().unwrap();
    let reply = get(&format!("http://{admin}/status"), None).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let status = reply.json();
    for key in [
        "version",
        "generation",
        "config_path",
        "started_at",
        "last_reload",
        "listeners",
        "upstreams",
    ] {
        assert!(status.get(key).is_some(), "missing {key}: {status}");
    }
    assert_eq!(status["generation"], 1);
    assert_eq!(status["last_reload"]["ok"], true);
    assert_eq!(status["listeners"][0]["name"], "web");
    assert_eq!(
        status["listeners"][0]["listen"],
        proxy.listeners()[0].addr.to_string()
    );
    let pool = &status["upstreams"]["pool"];
    assert_eq!(pool["strategy"], "weighted");
    let servers = pool["servers"].as_array().unwrap();
    assert_eq!(servers[0]["addr"], a.addr.to_string());
    assert_eq!(servers[0]["weight"], 3);
    assert_eq!(servers[0]["requests"], 6);
    assert_eq!(servers[1]["requests"], 2);
    for server in servers {
        assert_eq!(server["in_flight"], 0);
        assert_eq!(server["failures"], 0);
        assert_eq!(server["healthy"], true);
        assert_eq!(server["draining"], false);
    }
    let missing = get(&format!("http://{admin}/nope"), None).await;
    assert_eq!(missing.status, 404);
    assert!(missing.json()["error"].is_string());
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_token_is_required_when_set() {
    let a = echo_backend("a").await;
    let proxy = start_proxy(&format!(
        r#"
[admin]
listen = "127.0.0.1:0"
token = "s3cret"
[listeners.web]
listen = "127.0.0.1:0"
[vhosts.all]
hosts = ["*"]
routes = [{{ path = "/", upstream = "pool" }}]
[upstreams.pool]
servers = [{{ addr = "{}" }}]
"#,
        a.addr
    ))
    .await;
    let status_url = format!("http://{}/status", proxy.admin_addr().unwrap());
    assert_eq!(get(&status_url, None).await.status, 401);
    for token in ["Bearer wrong", "s3cret", "Bearer s3cre", "Bearer s3cret2"] {
        let request = Request::get(&status_url)
            .header("authorization", token)
            .body(Empty::new().map_err(|never| match never {}).boxed())
            .unwrap();
        assert_eq!(send(&client(), request).await.status, 401, "{token}");
    }
    let request = Request::get(&status_url)
        .header("authorization", "Bearer s3cret")
        .body(Empty::new().map_err(|never| match never {}).boxed())
        .unwrap();
    assert_eq!(send(&client(), request).await.status, 200);
    proxy.shutdown().await;
}

/// A tokenless admin on loopback in front of one echo server, with `global`
/// under `[global]`.
async fn tokenless_admin(global: &str) -> (support::Backend, usherd::Proxy) {
    let a = echo_backend("a").await;
    let proxy = start_proxy(&support::pool_config(
        &[a.addr.to_string()],
        "weighted",
        "",
        global,
        true,
    ))
    .await;
    (a, proxy)
}

/// Resolves when the server closes `stream` (end of stream or reset).
async fn closed_by_server(stream: &mut TcpStream) {
    let mut buffer = [0u8; 1024];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[tokio::test]
async fn half_open_and_idle_admin_connections_are_closed_in_time() {
    let (a, proxy) = tokenless_admin("header_read_timeout = \"1s\"\nidle_timeout = \"2s\"").await;
    let admin = proxy.admin_addr().unwrap();
    let started = Instant::now();
    let mut silent = TcpStream::connect(admin).await.unwrap();
    let mut partial = TcpStream::connect(admin).await.unwrap();
    partial
        .write_all(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    // A body that never comes: the request holds no slot for long either.
    let mut bodiless = TcpStream::connect(admin).await.unwrap();
    let weight = format!(
        "PUT /upstreams/pool/servers/{}/weight HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Usherd: 1\r\nContent-Length: 2\r\n\r\n",
        a.addr
    );
    bodiless.write_all(weight.as_bytes()).await.unwrap();
    let mut idle = TcpStream::connect(admin).await.unwrap();
    idle.write_all(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let head = support::read_head(&mut idle, &mut Vec::new())
        .await
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let answered = Instant::now();
    for stream in [&mut silent, &mut partial] {
        tokio::time::timeout(Duration::from_secs(5), closed_by_server(stream))
            .await
            .expect("a connection without a whole head is closed after header_read_timeout");
    }
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "not before"
    );
    let head = support::read_head(&mut bodiless, &mut Vec::new()).await;
    assert!(
        head.as_deref()
            .is_some_and(|h| h.starts_with("HTTP/1.1 408")),
        "{head:?}"
    );
    tokio::time::timeout(Duration::from_secs(5), closed_by_server(&mut bodiless))
        .await
        .expect("closed after its 408");
    tokio::time::timeout(Duration::from_secs(6), closed_by_server(&mut idle))
        .await
        .expect("an idle keep-alive connection is closed after idle_timeout");
    assert!(
        answered.elapsed() >= Duration::from_millis(1900),
        "not before"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn admin_connections_beyond_the_cap_wait_for_a_free_slot() {
    let (_a, proxy) = tokenless_admin("").await;
    let admin = proxy.admin_addr().unwrap();
    // Each of these was served once and stays open (keep-alive): it holds a slot.
    let mut held = Vec::new();
    for _ in 0..usherd::admin::MAX_CONNECTIONS {
        let mut stream = TcpStream::connect(admin).await.unwrap();
        stream
            .write_all(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .unwrap();
        let head = support::read_head(&mut stream, &mut Vec::new()).await;
        assert!(head.is_some_and(|h| h.starts_with("HTTP/1.1 200")));
        held.push(stream);
    }
    let mut waiting = TcpStream::connect(admin).await.unwrap();
    waiting
        .write_all(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(500), waiting.read(&mut first))
            .await
            .is_err(),
        "a connection beyond the cap is not served while the others are open"
    );
    drop(held.pop());
    let head = support::read_head(&mut waiting, &mut Vec::new()).await;
    assert!(
        head.is_some_and(|h| h.starts_with("HTTP/1.1 200")),
        "served once a slot is free"
    );
    proxy.shutdown().await;
}

/// An admin call with the given extra headers and body.
async fn call(
    proxy: &usherd::Proxy,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> support::Reply {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", proxy.admin_addr().unwrap()));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(
        &client(),
        request.body(support::full(body.to_string())).unwrap(),
    )
    .await
}

#[tokio::test]
async fn a_tokenless_admin_refuses_state_changes_a_web_page_could_send() {
    let (a, proxy) = tokenless_admin("").await;
    let server = format!("/upstreams/pool/servers/{}", a.addr);
    let text = ("content-type", "text/plain");
    let form = ("content-type", "application/x-www-form-urlencoded");
    for (method, path, headers, body) in [
        ("POST", format!("{server}/drain"), vec![text], ""),
        ("POST", format!("{server}/drain"), vec![form], "x=1"),
        ("POST", format!("{server}/drain"), vec![], ""),
        ("PUT", format!("{server}/weight"), vec![text], "7"),
        ("POST", "/reload".to_string(), vec![text], ""),
        (
            "POST",
            format!("{server}/drain"),
            vec![("x-usherd", "0")],
            "",
        ),
    ] {
        let reply = call(&proxy, method, &path, &headers, body).await;
        assert_eq!(
            reply.status,
            403,
            "{method} {path} {headers:?}: {}",
            reply.text()
        );
        assert!(reply.json()["error"].as_str().unwrap().contains("X-Usherd"));
    }
    let status = call(&proxy, "GET", "/status", &[], "").await.json();
    let pool = &status["upstreams"]["pool"]["servers"][0];
    assert_eq!(pool["draining"], false, "nothing changed");
    assert_eq!(pool["weight"], 1, "nothing changed");
    assert_eq!(status["generation"], 1, "no reload");
    assert_eq!(status["reloads"]["failed"], 0, "no reload tried");

    let reply = call(
        &proxy,
        "POST",
        &format!("{server}/drain"),
        &[("x-usherd", "1"), text],
        "",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["draining"], true);
    let json = ("content-type", "application/json; charset=utf-8");
    let reply = call(&proxy, "PUT", &format!("{server}/weight"), &[json], "7").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["weight"], 7);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_tokenless_admin_answers_only_loopback_hosts() {
    let (_a, proxy) = tokenless_admin("").await;
    let admin = proxy.admin_addr().unwrap();
    let port = admin.port();
    let status_url = format!("http://{admin}/status");
    for host in [
        "evil.example".to_string(),
        format!("evil.example:{port}"),
        format!("localhost.evil.example:{port}"),
        format!("10.1.2.3:{port}"),
    ] {
        let reply = get(&status_url, Some(&host)).await;
        assert_eq!(reply.status, 421, "{host}: {}", reply.text());
        assert!(reply.json()["error"].as_str().unwrap().contains("Host"));
        let page = get(&format!("http://{admin}/"), Some(&host)).await;
        assert_eq!(page.status, 421, "the dashboard too, for {host}");
    }
    for host in [
        format!("localhost:{port}"),
        "LocalHost".to_string(),
        format!("127.0.0.1:{port}"),
        format!("127.9.8.7:{port}"),
        format!("[::1]:{port}"),
    ] {
        assert_eq!(get(&status_url, Some(&host)).await.status, 200, "{host}");
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn with_a_token_any_host_and_no_extra_header_are_fine() {
    let a = echo_backend("a").await;
    let proxy = start_proxy(&format!(
        r#"
[admin]
listen = "127.0.0.1:0"
token = "s3cret"
[listeners.web]
listen = "127.0.0.1:0"
[vhosts.all]
hosts = ["*"]
routes = [{{ path = "/", upstream = "pool" }}]
[upstreams.pool]
servers = [{{ addr = "{}" }}]
"#,
        a.addr
    ))
    .await;
    let bearer = ("authorization", "Bearer s3cret");
    let host = ("host", "admin.example");
    let drain = format!("/upstreams/pool/servers/{}/drain", a.addr);
    let reply = call(&proxy, "GET", "/status", &[bearer, host], "").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let text = ("content-type", "text/plain");
    let reply = call(&proxy, "POST", &drain, &[bearer, host, text], "").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let reply = call(&proxy, "POST", &drain, &[host, ("x-usherd", "1")], "").await;
    assert_eq!(reply.status, 401, "the header is no token");
    proxy.shutdown().await;
}
