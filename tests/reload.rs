//! Live reload (docs/config.md#reload): every trigger, reload under load with no
//! failed request, in-flight requests across a reload, refused configs, state
//! carried over, and listeners added and removed.

mod support;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::{
    backend, client, echo_backend, full, get, send, spawn_binary_with, start_proxy, url, Backend,
};
use usherd::config::parse_config;

/// Polls `check` every 50 ms until it is true or `limit` passes.
async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn single_pool(server: &str, admin: bool) -> String {
    let admin = if admin {
        "[admin]\nlisten = \"127.0.0.1:0\"\n"
    } else {
        ""
    };
    format!(
        r#"{admin}
[listeners.web]
listen = "127.0.0.1:0"

[vhosts.all]
hosts = ["*"]
routes = [{{ path = "/", upstream = "pool" }}]

[upstreams.pool]
servers = [{{ addr = "{server}" }}]
"#
    )
}

async fn backend_name(base: &str) -> String {
    get(&format!("{base}/"), None)
        .await
        .header("x-backend")
        .unwrap_or("")
        .to_string()
}

async fn serves(base: &str, name: &str) -> bool {
    backend_name(base).await == name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_the_watcher_can_be_off() {
    let a = echo_backend("a").await;
    let b = echo_backend("b").await;
    let (proxy, config) = spawn_binary_with(
        &single_pool(&a.addr.to_string(), true),
        2,
        "info",
        &["--no-watch"],
    );
    let base = format!("http://{}", proxy.addr("web"));
    assert!(serves(&base, "a").await);
    std::fs::write(config.as_path(), single_pool(&b.addr.to_string(), true)).unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        serves(&base, "a").await,
        "reloaded without SIGHUP while --no-watch"
    );
    proxy.signal("HUP");
    assert!(eventually(Duration::from_secs(5), || serves(&base, "b")).await);
    let status = get(&format!("http://{}/status", proxy.addr("[admin]")), None)
        .await
        .json();
    assert_eq!(status["generation"], 2);
    assert_eq!(status["last_reload"]["ok"], true);
    assert_eq!(status["last_reload"]["trigger"], "signal");
    let changes = status["last_reload"]["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(
        changes[0],
        format!("upstream pool: +{}, -{}", b.addr, a.addr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_the_file_in_place_reloads() {
    let a = echo_backend("a").await;
    let b = echo_backend("b").await;
    let (proxy, config) =
        spawn_binary_with(&single_pool(&a.addr.to_string(), false), 1, "info", &[]);
    let base = format!("http://{}", proxy.addr("web"));
    assert!(serves(&base, "a").await);
    std::fs::write(config.as_path(), single_pool(&b.addr.to_string(), false)).unwrap();
    assert!(
        eventually(Duration::from_secs(5), || serves(&base, "b")).await,
        "edit not picked up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_the_file_by_rename_reloads() {
    let a = echo_backend("a").await;
    let b = echo_backend("b").await;
    let (proxy, config) =
        spawn_binary_with(&single_pool(&a.addr.to_string(), false), 1, "info", &[]);
    let base = format!("http://{}", proxy.addr("web"));
    assert!(serves(&base, "a").await);
    let staged = config.as_path().with_extension("toml.tmp");
    std::fs::write(&staged, single_pool(&b.addr.to_string(), false)).unwrap();
    std::fs::rename(&staged, config.as_path()).unwrap();
    assert!(
        eventually(Duration::from_secs(5), || serves(&base, "b")).await,
        "rename not picked up"
    );
    // And again: the watch survives the file being replaced.
    std::fs::write(&staged, single_pool(&a.addr.to_string(), false)).unwrap();
    std::fs::rename(&staged, config.as_path()).unwrap();
    assert!(
        eventually(Duration::from_secs(5), || serves(&base, "a")).await,
        "second rename not picked up"
    );
}

/// Appends a line to a log file beside the config every 20 ms until dropped,
/// as an access log written next to the config does under traffic.
struct NeighbourWriter {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NeighbourWriter {
    fn start(directory: &std::path::Path) -> NeighbourWriter {
        let stop = Arc::new(AtomicBool::new(false));
        let path = directory.join("usherd.log");
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            use std::io::Write;
            let mut log = std::fs::File::create(&path).unwrap();
            // Bounded: 60 s at most, whatever the test does.
            for line in 0..3_000 {
                if stopped.load(Ordering::Relaxed) {
                    return;
                }
                writeln!(log, "request {line}").unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        NeighbourWriter {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for NeighbourWriter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().ok();
        }
    }
}

/// Polls until `base` serves `name`; how long that took.
async fn time_until_serving(base: &str, name: &str) -> Option<Duration> {
    let start = Instant::now();
    eventually(Duration::from_secs(10), || serves(base, name))
        .await
        .then(|| start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_beside_the_config_do_not_hold_a_reload_back() {
    let a = echo_backend("a").await;
    let b = echo_backend("b").await;
    let (proxy, config) =
        spawn_binary_with(&single_pool(&a.addr.to_string(), false), 1, "info", &[]);
    let base = format!("http://{}", proxy.addr("web"));
    assert!(serves(&base, "a").await);
    let _writer = NeighbourWriter::start(config.directory());

    std::fs::write(config.as_path(), single_pool(&b.addr.to_string(), false)).unwrap();
    let took = time_until_serving(&base, "b").await;
    assert!(
        took.is_some_and(|took| took < Duration::from_millis(1500)),
        "an edit in place took {took:?} while a file beside it was written"
    );

    let staged = config.directory().join("usherd.toml.tmp");
    std::fs::write(&staged, single_pool(&a.addr.to_string(), false)).unwrap();
    std::fs::rename(&staged, config.as_path()).unwrap();
    let took = time_until_serving(&base, "a").await;
    assert!(
        took.is_some_and(|took| took < Duration::from_millis(1500)),
        "a replacement by rename took {took:?} while a file beside it was written"
    );
}

/// Points the symlink `link` at `target` in one rename, as `ln -sfn` and
/// Kubernetes do.
fn repoint(link: &std::path::Path, target: &std::path::Path) {
    let mut staged = link.as_os_str().to_owned();
    staged.push("_tmp");
    std::os::unix::fs::symlink(target, &staged).unwrap();
    std::fs::rename(&staged, link).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_path_that_is_a_symlink_follows_its_target() {
    let a = echo_backend("a").await;
    let b = echo_backend("b").await;
    let c = echo_backend("c").await;
    let links = support::tempfile_path::TempPath::new("usherd", "toml");
    let targets = support::tempfile_path::TempPath::new("first", "toml");
    let first = targets.as_path().to_path_buf();
    let second = targets.directory().join("second.toml");
    std::fs::write(&first, single_pool(&a.addr.to_string(), false)).unwrap();
    std::fs::write(&second, single_pool(&b.addr.to_string(), false)).unwrap();
    std::os::unix::fs::symlink(&first, links.as_path()).unwrap();
    let proxy = support::spawn_binary_at(links.as_path(), 1, "info", &[]);
    let base = format!("http://{}", proxy.addr("web"));
    assert!(serves(&base, "a").await);
    let _writer = NeighbourWriter::start(targets.directory());

    repoint(links.as_path(), &second);
    let took = time_until_serving(&base, "b").await;
    assert!(
        took.is_some_and(|took| took < Duration::from_millis(1500)),
        "repointing the symlink took {took:?}"
    );
    // The target, in another directory, edited in place.
    std::fs::write(&second, single_pool(&c.addr.to_string(), false)).unwrap();
    let took = time_until_serving(&base, "c").await;
    assert!(
        took.is_some_and(|took| took < Duration::from_millis(1500)),
        "an edit of the symlink's target took {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_configmap_swap_reloads() {
    // The layout a ConfigMap volume has: usherd.toml -> ..data/usherd.toml,
    // ..data -> ..<timestamp>/, and an update swaps ..data.
    let a = echo_backend("a").await;
    let b = echo_backend("b").await;
    let volume = support::tempfile_path::TempPath::new("usherd", "toml");
    let dir = volume.directory();
    for (version, backend) in [("..v1", &a), ("..v2", &b)] {
        std::fs::create_dir(dir.join(version)).unwrap();
        std::fs::write(
            dir.join(version).join("usherd.toml"),
            single_pool(&backend.addr.to_string(), false),
        )
        .unwrap();
    }
    std::os::unix::fs::symlink("..v1", dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/usherd.toml", volume.as_path()).unwrap();
    let proxy = support::spawn_binary_at(volume.as_path(), 1, "info", &[]);
    let base = format!("http://{}", proxy.addr("web"));
    assert!(serves(&base, "a").await);
    let _writer = NeighbourWriter::start(dir);

    repoint(&dir.join("..data"), std::path::Path::new("..v2"));
    let took = time_until_serving(&base, "b").await;
    assert!(
        took.is_some_and(|took| took < Duration::from_millis(1500)),
        "the ..data swap took {took:?}"
    );
}

/// A tokenless admin POST, with the header a state change needs.
async fn post(url: &str) -> support::Reply {
    let request = Request::post(url)
        .header("x-usherd", "1")
        .body(Empty::new().map_err(|never| match never {}).boxed())
        .unwrap();
    send(&client(), request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_reload_applies_or_refuses_with_the_line() {
    let a = echo_backend("a").await;
    let b = echo_backend("b").await;
    let (proxy, config) = spawn_binary_with(
        &single_pool(&a.addr.to_string(), true),
        2,
        "info",
        &["--no-watch"],
    );
    let base = format!("http://{}", proxy.addr("web"));
    let admin = format!("http://{}", proxy.addr("[admin]"));

    // A route to an unknown upstream, on line 9.
    let broken = single_pool(&b.addr.to_string(), true)
        .replace("upstream = \"pool\"", "upstream = \"nope\"");
    std::fs::write(config.as_path(), &broken).unwrap();
    let reply = post(&format!("{admin}/reload")).await;
    assert_eq!(reply.status, 400);
    let error = reply.json()["error"].as_str().unwrap().to_string();
    let at = format!("{}:9:", config.as_path().display());
    assert!(
        error.contains(&at) && error.contains("unknown upstream `nope`"),
        "{error}"
    );
    assert!(serves(&base, "a").await, "the old config must keep serving");
    let status = get(&format!("{admin}/status"), None).await.json();
    assert_eq!(status["generation"], 1);
    assert_eq!(status["last_reload"]["ok"], false);
    assert!(status["last_reload"]["error"]
        .as_str()
        .unwrap()
        .contains(&at));
    assert_eq!(status["reloads"]["failed"], 1);

    std::fs::write(config.as_path(), single_pool(&b.addr.to_string(), true)).unwrap();
    let reply = post(&format!("{admin}/reload")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["generation"], 2);
    assert!(serves(&base, "b").await);
    let status = get(&format!("{admin}/status"), None).await.json();
    assert_eq!(status["last_reload"]["ok"], true);
    assert_eq!(status["last_reload"]["error"], serde_json::Value::Null);
    assert_eq!(status["reloads"]["ok"], 1);
    assert_eq!(get(&format!("{admin}/reload"), None).await.status, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_edit_is_refused_and_a_good_one_follows() {
    let a = echo_backend("a").await;
    let b = echo_backend("b").await;
    let (proxy, config) =
        spawn_binary_with(&single_pool(&a.addr.to_string(), true), 2, "info", &[]);
    let base = format!("http://{}", proxy.addr("web"));
    let status_url = format!("http://{}/status", proxy.addr("[admin]"));

    // Not TOML at all.
    std::fs::write(config.as_path(), "[listeners.web\nlisten = 1\n").unwrap();
    let refused = eventually(Duration::from_secs(5), || async {
        get(&status_url, None).await.json()["last_reload"]["ok"] == false
    })
    .await;
    assert!(refused, "a broken file must be reported");
    let status = get(&status_url, None).await.json();
    let error = status["last_reload"]["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("{}:1:", config.as_path().display())),
        "{error}"
    );
    assert_eq!(status["generation"], 1);
    assert!(serves(&base, "a").await);

    std::fs::write(config.as_path(), single_pool(&b.addr.to_string(), true)).unwrap();
    assert!(eventually(Duration::from_secs(5), || serves(&base, "b")).await);
    let status = get(&status_url, None).await.json();
    assert_eq!(status["last_reload"]["ok"], true);
    assert_eq!(status["generation"], 2);
}

/// Config A: main = s1, s2 and no /v2/ route. Config B: main = s1 (weight
/// 3), s2, s3, and /v2/ routed to the v2 pool (s4).
fn load_config(servers: &[&Backend; 4], b: bool) -> String {
    let [s1, s2, s3, s4] = servers;
    let (main, routes) = if b {
        (
            format!(
                "{{ addr = \"{}\", weight = 3 }}, {{ addr = \"{}\" }}, {{ addr = \"{}\" }}",
                s1.addr, s2.addr, s3.addr
            ),
            "{ path = \"/\", upstream = \"main\" }, { path = \"/v2/\", upstream = \"v2\" }",
        )
    } else {
        (
            format!("{{ addr = \"{}\" }}, {{ addr = \"{}\" }}", s1.addr, s2.addr),
            "{ path = \"/\", upstream = \"main\" }",
        )
    };
    format!(
        r#"
[listeners.web]
listen = "127.0.0.1:0"
[vhosts.all]
hosts = ["*"]
routes = [{routes}]
[upstreams.main]
strategy = "weighted"
servers = [{main}]
[upstreams.v2]
servers = [{{ addr = "{}" }}]
"#,
        s4.addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_reloads_under_load_lose_no_request() {
    let s1 = echo_backend("s1").await;
    let s2 = echo_backend("s2").await;
    let s3 = echo_backend("s3").await;
    let s4 = echo_backend("s4").await;
    let servers = [&s1, &s2, &s3, &s4];
    let config_a = parse_config(&load_config(&servers, false), "a.toml").unwrap();
    let config_b = parse_config(&load_config(&servers, true), "b.toml").unwrap();
    let proxy = Arc::new(support::start_proxy(&load_config(&servers, false)).await);

    // Generation g runs config A when odd, B when even.
    let allowed = |generation: u64, path: &str| -> &'static [&'static str] {
        match (generation.is_multiple_of(2), path.starts_with("/v2/")) {
            (false, _) => &["s1", "s2"],
            (true, false) => &["s1", "s2", "s3"],
            (true, true) => &["s4"],
        }
    };
    let running = Arc::new(AtomicBool::new(true));
    let violations = Arc::new(Mutex::new(Vec::new()));
    let mut clients = Vec::new();
    for client_index in 0..8 {
        let (proxy, running, violations) = (proxy.clone(), running.clone(), violations.clone());
        clients.push(tokio::spawn(async move {
            let client = client();
            let mut done = 0u32;
            while running.load(Ordering::SeqCst) && done < 200_000 {
                let path = if (done + client_index).is_multiple_of(2) {
                    "/x"
                } else {
                    "/v2/x"
                };
                let before = proxy.snapshot().generation;
                let request = Request::get(url(&proxy, path)).body(full("")).unwrap();
                let outcome =
                    tokio::time::timeout(Duration::from_secs(5), client.request(request)).await;
                let after = proxy.snapshot().generation;
                let response = match outcome {
                    Ok(Ok(response)) => response,
                    other => {
                        violations
                            .lock()
                            .unwrap()
                            .push(format!("{path}: request failed: {other:?}"));
                        continue;
                    }
                };
                let status = response.status();
                let name = response
                    .headers()
                    .get("x-backend")
                    .map(|v| v.to_str().unwrap().to_string());
                let _ = response.into_body().collect().await;
                let name = name.unwrap_or_default();
                let ok = status == 200
                    && (before..=after).any(|g| allowed(g, path).contains(&name.as_str()));
                if !ok {
                    violations.lock().unwrap().push(format!(
                        "{path}: {status} from {name:?} in generations {before}..={after}"
                    ));
                }
                done += 1;
            }
            done
        }));
    }
    for reload in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let config = if reload % 2 == 0 {
            config_b.clone()
        } else {
            config_a.clone()
        };
        proxy.apply(config).await.expect("reload applies");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    running.store(false, Ordering::SeqCst);
    let mut total = 0;
    for client in clients {
        total += client.await.unwrap();
    }
    assert_eq!(proxy.snapshot().generation, 51);
    let violations = violations.lock().unwrap();
    assert!(
        violations.is_empty(),
        "{} of {total}: {:?}",
        violations.len(),
        &violations[..violations.len().min(10)]
    );
    eprintln!("{total} requests during 50 reloads");
    assert!(total > 1000, "only {total} requests were made");
    assert!(
        s3.requests() > 0 && s4.requests() > 0,
        "config B never served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_flight_request_to_a_removed_server_completes() {
    let slow = backend(|_| async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut response = Response::new(full("slow done"));
        response
            .headers_mut()
            .insert("x-backend", "slow".parse().unwrap());
        response
    })
    .await;
    let fast = echo_backend("fast").await;
    let proxy = Arc::new(start_proxy(&single_pool(&slow.addr.to_string(), false)).await);
    let target = url(&proxy, "/");
    let in_flight = tokio::spawn(async move { get(&target, None).await });
    support::until(
        Duration::from_secs(10),
        "the request reached the server",
        || slow.requests() == 1,
    )
    .await;
    let config = parse_config(&single_pool(&fast.addr.to_string(), false), "b.toml").unwrap();
    assert_eq!(proxy.apply(config).await.unwrap(), 2);
    assert_eq!(backend_name(&url(&proxy, "")).await, "fast");
    let reply = in_flight.await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "slow done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_and_pooled_connections_survive_for_servers_that_stay() {
    let a = echo_backend("a").await;
    let b = echo_backend("b").await;
    let proxy = start_proxy(&single_pool(&a.addr.to_string(), true)).await;
    let client = client();
    for _ in 0..10 {
        let request = Request::get(url(&proxy, "/")).body(full("")).unwrap();
        assert_eq!(send(&client, request).await.status, 200);
    }
    assert_eq!(a.connections(), 1);
    let text = single_pool(&a.addr.to_string(), true).replace(
        &format!("servers = [{{ addr = \"{}\" }}]", a.addr),
        &format!("strategy = \"weighted\"\nservers = [{{ addr = \"{}\", weight = 2 }}, {{ addr = \"{}\" }}]", a.addr, b.addr),
    );
    proxy
        .apply(parse_config(&text, "b.toml").unwrap())
        .await
        .unwrap();
    for _ in 0..6 {
        let request = Request::get(url(&proxy, "/")).body(full("")).unwrap();
        assert_eq!(send(&client, request).await.status, 200);
    }
    assert_eq!(a.requests(), 14);
    assert_eq!(b.requests(), 2);
    assert_eq!(
        a.connections(),
        1,
        "the idle upstream connection was not kept"
    );
    let status = get(
        &format!("http://{}/status", proxy.admin_addr().unwrap()),
        None,
    )
    .await
    .json();
    let servers = status["upstreams"]["pool"]["servers"].as_array().unwrap();
    assert_eq!(servers[0]["requests"], 14);
    assert_eq!(servers[0]["weight"], 2);
    assert_eq!(servers[1]["requests"], 2);
    let changes = &status["last_reload"]["changes"];
    assert_eq!(
        changes[0],
        format!(
            "upstream pool: strategy round_robin -> weighted, {} weight 1 -> 2, +{}",
            a.addr, b.addr
        )
    );
}

fn two_listeners(server: &str, second: &str) -> String {
    format!(
        r#"
[listeners.web]
listen = "127.0.0.1:0"
[listeners.{second}]
listen = "127.0.0.1:0"
[vhosts.all]
hosts = ["*"]
routes = [{{ path = "/", upstream = "pool" }}]
[upstreams.pool]
servers = [{{ addr = "{server}" }}]
timeout = "10s"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_are_added_removed_and_kept_without_rebinding() {
    let slow = backend(|request: http::Request<hyper::body::Incoming>| async move {
        if request.uri().path() == "/slow" {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        Response::new(full("done"))
    })
    .await;
    let proxy = start_proxy(&two_listeners(&slow.addr.to_string(), "old")).await;
    let web = proxy.listener_addr("web").unwrap();
    let old = proxy.listener_addr("old").unwrap();

    // A keep-alive connection on `web`, used before and after the reload.
    let mut kept = TcpStream::connect(web).await.unwrap();
    assert!(exchange(&mut kept).await.starts_with("HTTP/1.1 200"));
    let in_flight = tokio::spawn(async move { get(&format!("http://{old}/slow"), None).await });
    support::until(
        Duration::from_secs(10),
        "the request reached the server",
        || slow.requests() == 2,
    )
    .await;

    let config = parse_config(&two_listeners(&slow.addr.to_string(), "new"), "b.toml").unwrap();
    proxy.apply(config).await.unwrap();
    let new = proxy
        .listener_addr("new")
        .expect("the new listener is bound");
    assert_eq!(
        proxy.listener_addr("web"),
        Some(web),
        "web must not be rebound"
    );
    assert!(proxy.listener_addr("old").is_none());
    assert_eq!(get(&format!("http://{new}/"), None).await.status, 200);
    let refused = eventually(Duration::from_secs(3), || async {
        TcpStream::connect(old).await.is_err()
    })
    .await;
    assert!(refused, "the removed listener still accepts");
    assert!(
        exchange(&mut kept).await.starts_with("HTTP/1.1 200"),
        "a kept listener's connection broke"
    );
    let reply = in_flight.await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "done");
    let names: BTreeSet<String> = proxy.listeners().into_iter().map(|l| l.name).collect();
    assert_eq!(
        names,
        BTreeSet::from(["new".to_string(), "web".to_string()])
    );
}

/// One GET on a kept-alive raw connection; the response head and body.
async fn exchange(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buffer[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_cannot_bind_fails_the_whole_reload() {
    let a = echo_backend("a").await;
    let b = echo_backend("b").await;
    let proxy = start_proxy(&single_pool(&a.addr.to_string(), true)).await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let text = single_pool(&b.addr.to_string(), true)
        + &format!(
            "[listeners.extra]\nlisten = \"{}\"\n",
            taken.local_addr().unwrap()
        );
    let error = proxy
        .apply(parse_config(&text, "b.toml").unwrap())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("cannot listen on"), "{error}");
    assert!(
        serves(&url(&proxy, ""), "a").await,
        "the old config must keep serving"
    );
    assert_eq!(proxy.snapshot().generation, 1);
    assert!(proxy.listener_addr("extra").is_none());
    let record = proxy.last_reload();
    assert!(!record.ok);
    assert!(record.error.unwrap().contains("listener `extra`"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_written_file_is_read_again_before_failing() {
    let a = echo_backend("a").await;
    let b = echo_backend("b").await;
    let (proxy, config) =
        spawn_binary_with(&single_pool(&a.addr.to_string(), true), 2, "info", &[]);
    let base = format!("http://{}", proxy.addr("web"));
    let status_url = format!("http://{}/status", proxy.addr("[admin]"));
    let complete = single_pool(&b.addr.to_string(), true);
    // The first half sits there past the debounce; the rest comes before the retry.
    std::fs::write(config.as_path(), &complete[..complete.len() / 2]).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(config.as_path(), &complete).unwrap();
    assert!(eventually(Duration::from_secs(5), || serves(&base, "b")).await);
    let status = get(&status_url, None).await.json();
    assert_eq!(
        status["reloads"]["failed"], 0,
        "the half-written file was reported: {status}"
    );
    assert_eq!(status["last_reload"]["ok"], true);

    // A file that is briefly missing is no failure either.
    std::fs::remove_file(config.as_path()).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    std::fs::write(config.as_path(), single_pool(&a.addr.to_string(), true)).unwrap();
    assert!(eventually(Duration::from_secs(5), || serves(&base, "a")).await);
    let status = get(&status_url, None).await.json();
    assert_eq!(status["reloads"]["failed"], 0, "{status}");
}
