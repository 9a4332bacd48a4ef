//! Never send traffic to a dead server: active health checks with rise/fall,
//! passive outlier ejection, retries within a budget, connection limits, and
//! clients that cannot exhaust the proxy. Backends are real loopback servers
//! that are killed, hung, or made to fail.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use support::{backend, client, full, get, start_proxy, url, Behaviour, ControlledBackend};
use usherd::Proxy;

fn pool_config(servers: &[&ControlledBackend], upstream_extra: &str, global: &str) -> String {
    let addrs: Vec<String> = servers.iter().map(|s| s.addr.to_string()).collect();
    support::pool_config(&addrs, "round_robin", upstream_extra, global, true)
}

const FAST_CHECKS: &str = r#"retries = 2
[upstreams.pool.health_check]
path = "/healthz"
interval = "200ms"
timeout = "200ms"
rise = 2
fall = 2
"#;

/// Requests the proxy has sent to `server` (from its counters).
fn sent_to(proxy: &Proxy, server: &ControlledBackend) -> u64 {
    proxy
        .snapshot()
        .upstream("pool")
        .unwrap()
        .endpoint(&server.addr.to_string())
        .unwrap()
        .stats
        .requests()
}

fn is_up(proxy: &Proxy, server: &ControlledBackend) -> bool {
    proxy
        .snapshot()
        .upstream("pool")
        .unwrap()
        .endpoint(&server.addr.to_string())
        .unwrap()
        .health
        .is_up()
}

async fn wait_for(limit: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_three_under_load_loses_no_request() {
    let servers = [
        ControlledBackend::start("a").await,
        ControlledBackend::start("b").await,
        ControlledBackend::start("c").await,
    ];
    let refs: Vec<&ControlledBackend> = servers.iter().collect();
    let proxy = Arc::new(start_proxy(&pool_config(&refs, FAST_CHECKS, "")).await);
    let running = Arc::new(AtomicBool::new(true));
    let errors = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (proxy, running, errors, done) =
            (proxy.clone(), running.clone(), errors.clone(), done.clone());
        clients.push(tokio::spawn(async move {
            let client = client();
            while running.load(Ordering::SeqCst) && done.load(Ordering::SeqCst) < 1_000_000 {
                let request = Request::get(url(&proxy, "/")).body(full("")).unwrap();
                match tokio::time::timeout(Duration::from_secs(5), client.request(request)).await {
                    Ok(Ok(response)) if response.status() == 200 => {
                        let _ = response.into_body().collect().await;
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::SeqCst);
                    }
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let dead = &servers[1];
    dead.kill();
    let detected = wait_for(Duration::from_secs(3), || !is_up(&proxy, dead)).await;
    assert!(detected.is_some(), "the dead server was not marked down");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sent_after_detection = sent_to(&proxy, dead);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        sent_to(&proxy, dead),
        sent_after_detection,
        "requests went to a server marked down"
    );
    dead.restart().await;
    let back = wait_for(Duration::from_secs(3), || is_up(&proxy, dead)).await;
    assert!(back.is_some(), "the restarted server did not come back");
    let served_before = dead.requests();
    tokio::time::sleep(Duration::from_millis(800)).await;
    running.store(false, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }
    assert!(dead.requests() > served_before, "no traffic after recovery");
    let total = done.load(Ordering::SeqCst);
    assert!(total > 500, "only {total} requests");
    assert_eq!(
        errors.load(Ordering::SeqCst),
        0,
        "client-visible errors out of {total}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_health_endpoint_takes_a_server_out_and_back() {
    let servers = [
        ControlledBackend::start("a").await,
        ControlledBackend::start("b").await,
    ];
    let refs: Vec<&ControlledBackend> = servers.iter().collect();
    let proxy = start_proxy(&pool_config(&refs, FAST_CHECKS, "")).await;
    let sick = &servers[0];
    sick.set(Behaviour::FailingHealthCheck);
    // interval x fall = 400 ms, plus the first check's phase and slack.
    let down_after = wait_for(Duration::from_secs(3), || !is_up(&proxy, sick)).await;
    assert!(
        down_after.is_some_and(|t| t < Duration::from_millis(1500)),
        "down after {down_after:?}"
    );
    let before = sick.requests();
    for _ in 0..20 {
        let reply = get(&url(&proxy, "/"), None).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("x-backend"), Some("b"));
    }
    assert_eq!(sick.requests(), before);

    // Health state survives a reload that keeps the server.
    let text = pool_config(&refs, FAST_CHECKS, "").replace("retries = 2", "retries = 1");
    proxy
        .apply(usherd::config::parse_config(&text, "b.toml").unwrap())
        .await
        .unwrap();
    assert!(!is_up(&proxy, sick), "a reload reset the health state");
    let status = get(
        &format!("http://{}/status", proxy.admin_addr().unwrap()),
        None,
    )
    .await
    .json();
    let server = &status["upstreams"]["pool"]["servers"][0];
    assert_eq!(server["healthy"], false);
    assert_eq!(server["last_check"]["passed"], false);
    assert_eq!(server["last_check"]["detail"], "status 500");
    assert!(server["reason"]
        .as_str()
        .unwrap()
        .contains("failing health checks"));

    sick.set(Behaviour::Healthy);
    let up_after = wait_for(Duration::from_secs(3), || is_up(&proxy, sick)).await;
    // rise x interval = 400 ms, plus slack.
    assert!(
        up_after.is_some_and(|t| t >= Duration::from_millis(150)),
        "up after {up_after:?}"
    );
    let mut names = Vec::new();
    for _ in 0..4 {
        names.push(
            get(&url(&proxy, "/"), None)
                .await
                .header("x-backend")
                .unwrap()
                .to_string(),
        );
    }
    assert!(names.contains(&"a".to_string()), "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_server_times_out_and_is_ejected() {
    let servers = [
        ControlledBackend::start("a").await,
        ControlledBackend::start("b").await,
        ControlledBackend::start("c").await,
    ];
    let refs: Vec<&ControlledBackend> = servers.iter().collect();
    let outlier = "timeout = \"300ms\"\nretries = 1\n[upstreams.pool.outlier]\nconsecutive_failures = 2\nejection_time = \"30s\"\n";
    let proxy = start_proxy(&pool_config(&refs, outlier, "")).await;
    let hung = &servers[2];
    hung.set(Behaviour::Hung);
    let mut timeouts = 0;
    for _ in 0..12 {
        let reply = get(&url(&proxy, "/"), None).await;
        match reply.status {
            200 => assert_ne!(reply.header("x-backend"), Some("c")),
            504 => timeouts += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(
        timeouts, 2,
        "the hung server should be ejected after 2 timeouts"
    );
    let sent = sent_to(&proxy, hung);
    for _ in 0..20 {
        assert_eq!(get(&url(&proxy, "/"), None).await.status, 200);
    }
    assert_eq!(
        sent_to(&proxy, hung),
        sent,
        "an ejected server got requests"
    );
    let status = get(
        &format!("http://{}/status", proxy.admin_addr().unwrap()),
        None,
    )
    .await
    .json();
    let server = &status["upstreams"]["pool"]["servers"][2];
    assert_eq!(server["ejected"], true);
    assert!(
        server["reason"]
            .as_str()
            .unwrap()
            .starts_with("ejected for 30s"),
        "{server}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_half_a_pool_is_ejected() {
    let servers = [
        ControlledBackend::start("a").await,
        ControlledBackend::start("b").await,
    ];
    let refs: Vec<&ControlledBackend> = servers.iter().collect();
    let outlier = "retries = 0\n[upstreams.pool.outlier]\nconsecutive_failures = 1\nejection_time = \"30s\"\n";
    let proxy = start_proxy(&pool_config(&refs, outlier, "")).await;
    for server in &servers {
        server.set(Behaviour::Unavailable);
    }
    for _ in 0..10 {
        assert_eq!(get(&url(&proxy, "/"), None).await.status, 503);
    }
    let snapshot = proxy.snapshot();
    let pool = snapshot.upstream("pool").unwrap();
    let ejected = pool
        .endpoints
        .iter()
        .filter(|e| e.health.is_ejected(&mut Default::default()))
        .count();
    assert_eq!(ejected, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_servers_down_is_503_at_once() {
    let servers = [
        ControlledBackend::start("a").await,
        ControlledBackend::start("b").await,
    ];
    let refs: Vec<&ControlledBackend> = servers.iter().collect();
    let proxy = start_proxy(&pool_config(&refs, FAST_CHECKS, "")).await;
    for server in &servers {
        server.set(Behaviour::FailingHealthCheck);
    }
    let all_down = wait_for(Duration::from_secs(3), || {
        servers.iter().all(|s| !is_up(&proxy, s))
    })
    .await;
    assert!(all_down.is_some());
    let before: usize = servers.iter().map(|s| s.requests()).sum();
    let started = Instant::now();
    let reply = get(&url(&proxy, "/"), None).await;
    assert_eq!(reply.status, 503);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(servers.iter().map(|s| s.requests()).sum::<usize>(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stay_within_the_budget() {
    let servers = [
        ControlledBackend::start("a").await,
        ControlledBackend::start("b").await,
        ControlledBackend::start("c").await,
    ];
    for server in &servers {
        server.set(Behaviour::Unavailable);
    }
    let refs: Vec<&ControlledBackend> = servers.iter().collect();
    let proxy = start_proxy(&pool_config(&refs, "retries = 2", "")).await;
    let requests = 200;
    for _ in 0..requests {
        assert_eq!(get(&url(&proxy, "/"), None).await.status, 503);
    }
    let attempts: usize = servers.iter().map(|s| s.requests()).sum();
    // 20% of the requests plus the reserve of 10; without a budget: 600.
    assert!(attempts > requests, "no retries at all: {attempts}");
    assert!(
        attempts <= requests + requests / 5 + 10,
        "{attempts} attempts for {requests} requests"
    );
    let status = get(
        &format!("http://{}/status", proxy.admin_addr().unwrap()),
        None,
    )
    .await
    .json();
    assert!(
        status["upstreams"]["pool"]["retry_budget_exhausted"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert_eq!(
        status["upstreams"]["pool"]["retries"].as_u64().unwrap() as usize,
        attempts - requests
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_server_queues_briefly_then_503() {
    let slow = backend(|_| async {
        tokio::time::sleep(Duration::from_millis(600)).await;
        Response::new(full("slow"))
    })
    .await;
    let config = |queue: &str| {
        format!(
            r#"
[listeners.web]
listen = "127.0.0.1:0"
[vhosts.all]
hosts = ["*"]
routes = [{{ path = "/", upstream = "pool" }}]
[upstreams.pool]
servers = [{{ addr = "{}" }}]
max_connections_per_server = 1
connect_timeout = "{queue}"
"#,
            slow.addr
        )
    };
    // The second request waits for the first's slot and is served.
    let proxy = start_proxy(&config("2s")).await;
    let target = url(&proxy, "/");
    let started = Instant::now();
    let (first, second) = tokio::join!(get(&target, None), async {
        support::until(Duration::from_secs(10), "the first took the slot", || {
            slow.requests() == 1
        })
        .await;
        get(&target, None).await
    });
    assert_eq!((first.status, second.status), (200, 200));
    assert!(
        started.elapsed() >= Duration::from_millis(1150),
        "not queued: {:?}",
        started.elapsed()
    );
    assert_eq!(slow.requests(), 2);

    // With a short queue time the second gets 503 instead of hanging.
    let proxy = start_proxy(&config("200ms")).await;
    let target = url(&proxy, "/");
    let (first, second) = tokio::join!(get(&target, None), async {
        support::until(Duration::from_secs(10), "the first took the slot", || {
            slow.requests() == 3
        })
        .await;
        let started = Instant::now();
        (get(&target, None).await, started.elapsed())
    });
    assert_eq!(first.status, 200);
    assert_eq!(second.0.status, 503);
    assert!(
        second.1 < Duration::from_millis(500),
        "503 after {:?}",
        second.1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_connections_and_a_slowloris_do_not_stop_new_clients() {
    let server = ControlledBackend::start("a").await;
    let refs = [&server];
    let proxy = start_proxy(&pool_config(&refs, "", "header_read_timeout = \"1s\"")).await;
    let addr = proxy.listeners()[0].addr;
    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
    let started = Instant::now();
    for _ in 0..10 {
        assert_eq!(get(&url(&proxy, "/"), None).await.status, 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "new clients waited {:?}",
        started.elapsed()
    );
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_holds_new_clients_in_the_backlog() {
    let server = ControlledBackend::start("a").await;
    let refs = [&server];
    let proxy = start_proxy(&pool_config(
        &refs,
        "",
        "max_connections = 2\nheader_read_timeout = \"1s\"",
    ))
    .await;
    let addr = proxy.listeners()[0].addr;
    let _first = TcpStream::connect(addr).await.unwrap();
    let _second = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The third connects (into the kernel's backlog) and is served only when a
    // slot frees: the two silent connections are closed at header_read_timeout.
    let started = Instant::now();
    let reply = get(&url(&proxy, "/"), None).await;
    assert_eq!(reply.status, 200);
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "served at once: {:?}",
        started.elapsed()
    );
}
