//! Observability and operations (docs/operations.md): `/metrics` parsed and
//! checked against the traffic sent, drain/enable/weight with their bad
//! inputs and the token rule, overrides across reloads, the decision header,
//! and the dashboard in a real headless browser (Debian's chromium).

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use http_body_util::{BodyExt, Empty};

use support::{
    backend, client, echo_backend, full, get, send, start_proxy, url, Backend, Reply, TestBody,
};

const TOKEN: &str = "s3cret";

fn config(servers: &[String], strategy: &str, extra: &str) -> String {
    let servers: Vec<String> = servers
        .iter()
        .map(|addr| format!("{{ addr = \"{addr}\" }}"))
        .collect();
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
token = "{TOKEN}"
[listeners.web]
listen = "127.0.0.1:0"
[vhosts.shop]
hosts = ["shop.test"]
routes = [{{ path = "/", upstream = "pool" }}]
[upstreams.pool]
strategy = "{strategy}"
servers = [{}]
{extra}
"#,
        servers.join(", ")
    )
}

/// Echo backends `a` and `b` behind a proxy with `strategy`.
async fn two_echo_servers(strategy: &str) -> (Backend, Backend, usherd::Proxy) {
    let a = echo_backend("a").await;
    let b = echo_backend("b").await;
    let proxy = start_proxy(&config(
        &[a.addr.to_string(), b.addr.to_string()],
        strategy,
        "",
    ))
    .await;
    (a, b, proxy)
}

fn empty() -> TestBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// An admin call with the token (or with `token` when given).
async fn admin(
    proxy: &usherd::Proxy,
    method: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> Reply {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", proxy.admin_addr().unwrap()));
    if let Some(token) = token.or(Some(TOKEN)).filter(|t| !t.is_empty()) {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    send(&client(), request.body(full(body.to_string())).unwrap()).await
}

async fn shop(proxy: &usherd::Proxy) -> Reply {
    get(&url(proxy, "/"), Some("shop.test")).await
}

/// A parsed exposition: series (name and labels, as written) to value.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut series = HashMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (name, value) = line.rsplit_once(' ').expect("`series value`");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("a number in {line}"));
        assert!(
            series.insert(name.to_string(), value).is_none(),
            "duplicate {name}"
        );
    }
    series
}

#[tokio::test]
async fn metrics_count_the_traffic_and_parse() {
    let (a, b, proxy) = two_echo_servers("round_robin").await;
    for _ in 0..10 {
        assert_eq!(shop(&proxy).await.status, 200);
    }
    for _ in 0..3 {
        assert_eq!(get(&url(&proxy, "/"), Some("other.test")).await.status, 404);
    }
    let reply = admin(&proxy, "GET", "/metrics", "", None).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = reply.text();
    for family in [
        "usherd_requests_total",
        "usherd_upstream_request_duration_seconds",
        "usherd_upstream_in_flight",
        "usherd_upstream_connect_errors_total",
        "usherd_upstream_timeouts_total",
        "usherd_upstream_retries_total",
        "usherd_upstream_retry_budget_exhausted_total",
        "usherd_upstream_server_healthy",
        "usherd_upstream_ejections_total",
        "usherd_connections_open",
        "usherd_connections_accepted_total",
        "usherd_reloads_total",
        "usherd_config_generation",
        "usherd_process_start_time_seconds",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "no {family} in\n{text}"
        );
    }
    let series = parse_metrics(&text);
    assert_eq!(
        series[r#"usherd_requests_total{vhost="shop",class="2xx"}"#],
        10.0
    );
    assert_eq!(
        series[r#"usherd_requests_total{vhost="",class="4xx"}"#],
        3.0
    );
    for server in [&a, &b] {
        let labels = format!(r#"upstream="pool",server="{}""#, server.addr);
        assert_eq!(
            series[&format!("usherd_upstream_responses_total{{{labels},class=\"2xx\"}}")],
            5.0
        );
        assert_eq!(
            series[&format!("usherd_upstream_in_flight{{{labels}}}")],
            0.0
        );
        assert_eq!(
            series[&format!("usherd_upstream_server_healthy{{{labels}}}")],
            1.0
        );
    }
    // The histogram: cumulative buckets ending at +Inf = count = requests.
    let mut buckets: Vec<(f64, f64)> = series
        .iter()
        .filter_map(|(name, value)| {
            let le = name
                .strip_prefix(
                    r#"usherd_upstream_request_duration_seconds_bucket{upstream="pool",le=""#,
                )?
                .strip_suffix("\"}")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            Some((le, *value))
        })
        .collect();
    buckets.sort_by(|x, y| x.0.total_cmp(&y.0));
    assert!(buckets.len() >= 10, "{buckets:?}");
    assert!(
        buckets.windows(2).all(|w| w[0].1 <= w[1].1),
        "not cumulative: {buckets:?}"
    );
    let count = series[r#"usherd_upstream_request_duration_seconds_count{upstream="pool"}"#];
    assert_eq!(buckets.last().unwrap(), &(f64::INFINITY, count));
    assert_eq!(count, 10.0);
    assert!(series[r#"usherd_upstream_request_duration_seconds_sum{upstream="pool"}"#] > 0.0);
    assert!(series[r#"usherd_connections_accepted_total{listener="web"}"#] >= 1.0);
    assert_eq!(series["usherd_config_generation"], 1.0);
    assert!(series["usherd_process_start_time_seconds"] > 1.7e9);

    // Counters move: ten more requests, and a reload.
    for _ in 0..10 {
        shop(&proxy).await;
    }
    proxy
        .apply(
            usherd::config::parse_config(
                &config(
                    &[a.addr.to_string(), b.addr.to_string()],
                    "round_robin",
                    "retries = 2",
                ),
                "t.toml",
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let series = parse_metrics(&admin(&proxy, "GET", "/metrics", "", None).await.text());
    assert_eq!(
        series[r#"usherd_requests_total{vhost="shop",class="2xx"}"#], 20.0,
        "counters survive a reload"
    );
    assert_eq!(
        series[r#"usherd_upstream_request_duration_seconds_count{upstream="pool"}"#],
        20.0
    );
    assert_eq!(series[r#"usherd_reloads_total{result="ok"}"#], 1.0);
    assert_eq!(series["usherd_config_generation"], 2.0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn drain_stops_new_requests_at_once_and_lets_in_flight_ones_finish() {
    let slow_started = Arc::new(tokio::sync::Notify::new());
    let started = Arc::clone(&slow_started);
    let a = backend(move |request: Request<hyper::body::Incoming>| {
        let started = Arc::clone(&started);
        async move {
            if request.uri().path() == "/slow" {
                started.notify_one();
                tokio::time::sleep(Duration::from_millis(800)).await;
            }
            Response::new(full("a"))
        }
    })
    .await;
    let b = echo_backend("b").await;
    let proxy = start_proxy(&config(
        &[a.addr.to_string(), b.addr.to_string()],
        "round_robin",
        "",
    ))
    .await;
    // Round robin starts at a: the slow request goes there.
    let slow_url = url(&proxy, "/slow");
    let slow = tokio::spawn(async move { get(&slow_url, Some("shop.test")).await });
    tokio::time::timeout(Duration::from_secs(5), slow_started.notified())
        .await
        .expect("the slow request reached a");

    let path = format!("/upstreams/pool/servers/{}/drain", a.addr);
    let reply = admin(&proxy, "POST", &path, "", None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["draining"], true);
    assert_eq!(reply.json()["in_flight"], 1);
    let before = a.requests();
    for _ in 0..10 {
        assert_eq!(shop(&proxy).await.header("x-backend"), Some("b"));
    }
    assert_eq!(a.requests(), before, "a drained server gets no new request");
    let slow = slow.await.unwrap();
    assert_eq!(slow.status, 200, "the request in flight finished");
    assert_eq!(slow.text(), "a");

    let status = admin(&proxy, "GET", "/status", "", None).await.json();
    let server = &status["upstreams"]["pool"]["servers"][0];
    assert_eq!(server["draining"], true);
    assert_eq!(server["overrides"]["draining"], true);
    assert_eq!(server["reason"], "draining (admin API)");

    let reply = admin(&proxy, "POST", &path.replace("drain", "enable"), "", None).await;
    assert_eq!(reply.status, 200);
    let mut backends = Vec::new();
    for _ in 0..4 {
        backends.push(shop(&proxy).await.text());
    }
    assert!(
        backends.iter().any(|b| b == "a"),
        "enabled again: {backends:?}"
    );
    proxy.shutdown().await;
}

/// Which backend each of `n` requests reached.
async fn spread(proxy: &usherd::Proxy, n: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let reply = shop(proxy).await;
        *counts
            .entry(reply.header("x-backend").unwrap_or("?").to_string())
            .or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn a_weight_change_shifts_traffic_at_once_and_survives_a_reload() {
    let a = echo_backend("a").await;
    let b = echo_backend("b").await;
    let c = echo_backend("c").await;
    let dir = support::tls::CertDir::new();
    let servers = [a.addr.to_string(), b.addr.to_string(), c.addr.to_string()];
    let path = dir.write("usherd.toml", &config(&servers[..2], "weighted", ""));
    let proxy = usherd::Proxy::start(usherd::config::load(&path).unwrap())
        .await
        .unwrap();
    assert_eq!(
        spread(&proxy, 20).await,
        HashMap::from([("a".into(), 10), ("b".into(), 10)])
    );

    let weight_path = format!("/upstreams/pool/servers/{}/weight", a.addr);
    let reply = admin(&proxy, "PUT", &weight_path, "3", None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["weight"], 3);
    assert_eq!(reply.json()["configured_weight"], 1);
    assert_eq!(
        spread(&proxy, 40).await,
        HashMap::from([("a".into(), 30), ("b".into(), 10)])
    );
    let status = admin(&proxy, "GET", "/status", "", None).await.json();
    let server = &status["upstreams"]["pool"]["servers"][0];
    assert_eq!(server["weight"], 3);
    assert_eq!(server["configured_weight"], 1);
    assert_eq!(server["overrides"]["weight"], 3);
    // Every publish takes the next generation and says why; a weight is no
    // config reload, so `last_reload` still shows the start.
    assert_eq!(status["generation"], 2);
    assert_eq!(status["last_change"]["generation"], 2);
    assert_eq!(status["last_change"]["trigger"], "admin");
    let changes = status["last_change"]["changes"].to_string();
    assert!(changes.contains("weight 1 -> 3 (admin)"), "{changes}");
    assert!(status["last_reload"]["trigger"].is_null(), "{status}");

    // A reload that keeps a (and adds c) keeps its weight.
    std::fs::write(&path, config(&servers, "weighted", "")).unwrap();
    proxy.reload(usherd::reload::Trigger::Api).await.unwrap();
    assert_eq!(
        spread(&proxy, 50).await,
        HashMap::from([("a".into(), 30), ("b".into(), 10), ("c".into(), 10)])
    );
    // A reload without a forgets it; a is back with the config's weight.
    std::fs::write(&path, config(&servers[1..], "weighted", "")).unwrap();
    proxy.reload(usherd::reload::Trigger::Api).await.unwrap();
    std::fs::write(&path, config(&servers, "weighted", "")).unwrap();
    proxy.reload(usherd::reload::Trigger::Api).await.unwrap();
    let status = admin(&proxy, "GET", "/status", "", None).await.json();
    let server = &status["upstreams"]["pool"]["servers"][0];
    assert_eq!(server["weight"], 1);
    assert_eq!(server["overrides"]["weight"], serde_json::Value::Null);
    proxy.shutdown().await;
}

#[tokio::test]
async fn bad_calls_get_json_errors_and_change_nothing() {
    let a = echo_backend("a").await;
    let proxy = start_proxy(&config(&[a.addr.to_string()], "weighted", "")).await;
    let server = format!("/upstreams/pool/servers/{}", a.addr);
    for (method, path, body, token, status) in [
        (
            "POST",
            "/upstreams/nope/servers/1.2.3.4:5/drain".to_string(),
            "",
            None,
            404,
        ),
        (
            "POST",
            "/upstreams/pool/servers/1.2.3.4:5/drain".to_string(),
            "",
            None,
            404,
        ),
        ("PUT", format!("{server}/weight"), "heavy", None, 400),
        ("PUT", format!("{server}/weight"), "2.5", None, 400),
        ("PUT", format!("{server}/weight"), "0", None, 400),
        ("PUT", format!("{server}/weight"), "10001", None, 400),
        ("GET", format!("{server}/drain"), "", None, 405),
        ("POST", format!("{server}/weight"), "2", None, 405),
        ("POST", format!("{server}/explode"), "", None, 404),
        ("POST", format!("{server}/drain"), "", Some(""), 401),
        ("POST", format!("{server}/drain"), "", Some("wrong"), 401),
        ("PUT", format!("{server}/weight"), "5", Some("wrong"), 401),
        ("GET", "/metrics".to_string(), "", Some(""), 401),
        ("POST", "/metrics".to_string(), "", None, 405),
    ] {
        let reply = admin(&proxy, method, &path, body, token).await;
        assert_eq!(
            reply.status,
            status,
            "{method} {path} {body:?}: {}",
            reply.text()
        );
        assert!(
            reply.json()["error"].is_string(),
            "{method} {path}: {}",
            reply.text()
        );
    }
    let status = admin(&proxy, "GET", "/status", "", None).await.json();
    let server = &status["upstreams"]["pool"]["servers"][0];
    assert_eq!(server["draining"], false, "nothing changed");
    assert_eq!(server["weight"], 1, "nothing changed");
    // The dashboard page holds no data: it opens without the token.
    let page = admin(&proxy, "GET", "/", "", Some("")).await;
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_decision_header_answers_only_with_the_admin_token() {
    let a = echo_backend("a").await;
    let proxy = start_proxy(&config(&[a.addr.to_string()], "least_connections", "")).await;
    let ask = |token: &'static str| {
        Request::get(url(&proxy, "/"))
            .header("host", "shop.test")
            .header("x-usherd-debug", token)
            .body(empty())
            .unwrap()
    };
    let reply = send(&client(), ask(TOKEN)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("x-usherd-decision"),
        Some(
            format!(
                "vhost=shop; upstream=pool; strategy=least_connections; server={}; attempts=1",
                a.addr
            )
            .as_str()
        )
    );
    assert!(
        reply.json()["headers"].get("x-usherd-debug").is_none(),
        "the debug header (a token) never reaches a server"
    );
    let reply = send(&client(), ask("wrong")).await;
    assert_eq!(reply.header("x-usherd-decision"), None);
    proxy.shutdown().await;
}

#[test]
fn the_access_log_carries_the_decision() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let a = runtime.block_on(echo_backend("a"));
    let (process, _config) =
        support::spawn_binary_logging(&config(&[a.addr.to_string()], "weighted", ""), 2, "info");
    let reply = runtime.block_on(get(
        &format!("http://{}/x", process.addr("web")),
        Some("shop.test"),
    ));
    assert_eq!(reply.status, 200);
    let line = process.wait_for_log("\"target\":\"access\"", Duration::from_secs(5));
    let fields: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(fields["vhost"], "shop");
    assert_eq!(fields["upstream"], "pool");
    assert_eq!(fields["strategy"], "weighted");
    assert_eq!(fields["server"], a.addr.to_string());
    assert_eq!(fields["attempts"], 1);
    assert_eq!(fields["status"], 200);
    assert!(fields["request_id"]
        .as_str()
        .is_some_and(|id| !id.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_every_server_and_a_drain_in_a_real_browser() {
    let (a, b, proxy) = two_echo_servers("weighted").await;
    let sent = Arc::new(AtomicUsize::new(0));
    let traffic_url = url(&proxy, "/");
    let counter = Arc::clone(&sent);
    let traffic = tokio::spawn(async move {
        for _ in 0..2000 {
            get(&traffic_url, Some("shop.test")).await;
            counter.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let page = format!("http://{}/#token={TOKEN}", proxy.admin_addr().unwrap());

    let dom = tokio::task::spawn_blocking({
        let page = page.clone();
        move || support::chromium(&page, &["--dump-dom"])
    })
    .await
    .unwrap();
    for server in [&a, &b] {
        assert!(
            dom.contains(&format!(
                r#"data-server="{}" data-state="healthy""#,
                server.addr
            )),
            "{} shown as healthy in\n{dom}",
            server.addr
        );
    }
    assert!(dom.contains(r#"data-upstream="pool""#));

    let drain = format!("/upstreams/pool/servers/{}/drain", a.addr);
    assert_eq!(admin(&proxy, "POST", &drain, "", None).await.status, 200);
    let screenshot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let dom = tokio::task::spawn_blocking({
        let screenshot = format!("--screenshot={}", screenshot.display());
        move || {
            let dom = support::chromium(&page, &["--dump-dom"]);
            support::chromium(&page, &[&screenshot]);
            dom
        }
    })
    .await
    .unwrap();
    assert!(
        dom.contains(&format!(
            r#"data-server="{}" data-state="draining""#,
            a.addr
        )),
        "the drain shows in\n{dom}"
    );
    assert!(dom.contains(&format!(r#"data-server="{}" data-state="healthy""#, b.addr)));
    assert!(
        std::fs::metadata(&screenshot).map(|m| m.len()).unwrap_or(0) > 10_000,
        "a screenshot at {}",
        screenshot.display()
    );
    traffic.abort();
    assert!(sent.load(Ordering::Relaxed) > 0);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_of_a_tokenless_admin_loads_in_a_real_browser() {
    let a = echo_backend("a").await;
    let proxy = start_proxy(&support::pool_config(
        &[a.addr.to_string()],
        "weighted",
        "",
        "",
        true,
    ))
    .await;
    // The browser's Host is the loopback address it was given.
    let page = format!("http://{}/", proxy.admin_addr().unwrap());
    let dom = tokio::task::spawn_blocking(move || support::chromium(&page, &["--dump-dom"]))
        .await
        .unwrap();
    assert!(
        dom.contains(&format!(r#"data-server="{}" data-state="healthy""#, a.addr)),
        "{} shown as healthy in\n{dom}",
        a.addr
    );
    proxy.shutdown().await;
}

/// One HTTP/2 connection that opens and cancels streams until the proxy ends
/// it with GOAWAY ENHANCE_YOUR_CALM (rapid reset, CVE-2023-44487).
async fn rapid_reset(addr: std::net::SocketAddr) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
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
        .expect("the proxy ends the connection");
    // Its GOAWAY, or the closed socket under the client's last writes.
    let error = ended.expect_err("the connection ends with an error");
    assert!(
        error.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM) || error.is_io(),
        "{error:?}"
    );
}

#[test]
fn a_rapid_reset_client_gets_a_counted_warning_not_a_storm() {
    const CONNECTIONS: u64 = 60;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let a = runtime.block_on(echo_backend("a"));
    let (process, _config) = support::spawn_binary(
        &support::pool_config(&[a.addr.to_string()], "round_robin", "", "", true),
        2,
    );
    let (web, admin) = (process.addr("web"), process.addr("[admin]"));
    runtime.block_on(async {
        let clients: Vec<_> = (0..4)
            .map(|_| {
                tokio::spawn(async move {
                    for _ in 0..CONNECTIONS / 4 {
                        rapid_reset(web).await;
                    }
                })
            })
            .collect();
        for client in clients {
            client.await.unwrap();
        }
    });
    // Every connection is counted, though few are logged.
    let metric = r#"usherd_client_protocol_errors_total{kind="http2_reset_flood"}"#;
    let counted = || {
        let text = runtime
            .block_on(get(&format!("http://{admin}/metrics"), None))
            .text();
        parse_metrics(&text).get(metric).copied()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while counted() != Some(CONNECTIONS as f64) {
        assert!(
            std::time::Instant::now() < deadline,
            "{metric} is {:?}, not {CONNECTIONS}",
            counted()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let first = process.wait_for_log("\"kind\":\"http2_reset_flood\"", Duration::from_secs(5));
    let first: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(first["level"], "WARN");
    assert!(first["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(first["total"].as_u64().unwrap() >= 1);
    let warnings: Vec<String> = process
        .stderr_tail
        .lock()
        .unwrap()
        .iter()
        .filter(|line| line.contains("\"level\":\"WARN\""))
        .cloned()
        .collect();
    assert!(
        warnings.len() <= 5,
        "{} warnings for {CONNECTIONS} connections: {warnings:#?}",
        warnings.len()
    );
}
