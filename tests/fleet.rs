//! A fleet on a real etcd cluster (Debian's etcd, three members on
//! loopback): three usherd binaries run `--config etcd://.../usherd/config`.
//! A config put goes live on all three and `usherd fleet status` shows one
//! revision; a bad put is refused by all while the old config serves; one
//! member lost changes nothing; all members lost leaves every instance
//! serving its last config, stale; members back, the fleet resyncs; the
//! same keys give the same consistent_hash server everywhere; an instance
//! that stops leaves the member list.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::etcd::EtcdCluster;
use support::{echo_backend, get, spawn_binary_at, Backend, ProxyProcess};
use usherd::etcd::Etcd;

const KEY: &str = "/usherd/config";

fn config(backends: &[&Backend], strategy: &str) -> String {
    let servers: Vec<String> = backends
        .iter()
        .map(|b| format!("{{ addr = \"{}\" }}", b.addr))
        .collect();
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[listeners.web]
listen = "127.0.0.1:0"
[vhosts.all]
hosts = ["*"]
routes = [{{ path = "/", upstream = "api" }}]
[upstreams.api]
strategy = "{strategy}"
retries = 0
servers = [{}]
"#,
        servers.join(", ")
    )
}

async fn put(etcd: &Etcd, text: &str) -> i64 {
    etcd.put(KEY, text.as_bytes(), 0).await.unwrap()
}

fn start_instance(cluster: &EtcdCluster, name: &str) -> ProxyProcess {
    let url = format!("etcd://{}{KEY}", cluster.hosts());
    spawn_binary_at(
        std::path::Path::new(&url),
        2,
        "info,access=off",
        &["--name", name],
    )
}

async fn status(instance: &ProxyProcess) -> Value {
    get(&format!("http://{}/status", instance.addr("[admin]")), None)
        .await
        .json()
}

async fn backend_of(instance: &ProxyProcess) -> String {
    let reply = get(&format!("http://{}/", instance.addr("web")), None).await;
    reply.header("x-backend").unwrap_or("none").to_string()
}

/// Polls until every instance's `/status` satisfies `check`; how long it took.
async fn until_all(
    instances: &[ProxyProcess],
    limit: Duration,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let mut all = true;
        let mut last = Value::Null;
        for instance in instances {
            let now = status(instance).await;
            if !check(&now) {
                all = false;
                last = now;
                break;
            }
        }
        if all {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "not {what} within {limit:?}: {last}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn all_route_to(instances: &[ProxyProcess], name: &str) {
    for instance in instances {
        for _ in 0..3 {
            assert_eq!(backend_of(instance).await, name);
        }
    }
}

/// `usherd fleet status`: its output and exit code.
fn fleet_status(cluster: &EtcdCluster) -> (String, i32) {
    let output = Command::new(env!("CARGO_BIN_EXE_usherd"))
        .args(["fleet", "status", "--etcd"])
        .arg(format!("etcd://{}{KEY}", cluster.hosts()))
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        output.status.code().unwrap_or(-1),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_follows_one_config_in_etcd_through_member_loss() {
    let (a, b, c) = (
        echo_backend("a").await,
        echo_backend("b").await,
        echo_backend("c").await,
    );
    let mut cluster = EtcdCluster::start(3);
    let etcd = Etcd::new(cluster.endpoints(), Duration::from_secs(2));
    let first = put(&etcd, &config(&[&a], "round_robin")).await;
    let instances: Vec<ProxyProcess> = (1..=3)
        .map(|n| start_instance(&cluster, &format!("usherd-{n}")))
        .collect();
    all_route_to(&instances, "a").await;
    until_all(
        &instances,
        Duration::from_secs(10),
        "listing all three members",
        |s| {
            s["fleet"]["members"]
                .as_array()
                .is_some_and(|m| m.len() == 3)
        },
    )
    .await;
    let (table, code) = fleet_status(&cluster);
    assert_eq!(code, 0, "{table}");
    assert!(
        table.contains(&format!("all 3 instances run revision {first}")),
        "{table}"
    );

    // A put goes live everywhere.
    let second = put(&etcd, &config(&[&b], "round_robin")).await;
    until_all(
        &instances,
        Duration::from_secs(10),
        "on the second revision",
        |s| s["fleet"]["revision"] == second,
    )
    .await;
    all_route_to(&instances, "b").await;
    let status_one = status(&instances[0]).await;
    assert_eq!(status_one["last_reload"]["trigger"], "etcd", "{status_one}");

    // A bad put is refused by all; the old config keeps serving.
    let bad = put(&etcd, "[upstreams.api]\nstrategy = \"fastest\"\n").await;
    until_all(
        &instances,
        Duration::from_secs(10),
        "refusing the bad revision",
        |s| s["fleet"]["refused_revision"] == bad && s["last_reload"]["ok"] == false,
    )
    .await;
    all_route_to(&instances, "b").await;
    let table = loop {
        let (table, code) = fleet_status(&cluster);
        if table.matches("refused revision").count() == 3 {
            assert_eq!(code, 1, "{table}");
            break table;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        table.contains(&format!("0 of 3 instances run revision {bad}")),
        "{table}"
    );

    // The same keys, the same server, on every instance.
    put(&etcd, &config(&[&a, &b, &c], "consistent_hash")).await;
    until_all(
        &instances,
        Duration::from_secs(10),
        "on the hashing config",
        |s| s["upstreams"]["api"]["strategy"] == "consistent_hash",
    )
    .await;
    for key in 0..100 {
        let mut seen = Vec::new();
        for instance in &instances {
            let reply = get(&format!("http://{}/item/{key}", instance.addr("web")), None).await;
            seen.push(reply.header("x-backend").unwrap_or("none").to_string());
        }
        assert!(seen.iter().all(|s| s == &seen[0]), "key {key}: {seen:?}");
    }

    // One member lost: nothing changes, puts still go live.
    cluster.kill_member(0);
    let third = put(&etcd, &config(&[&c], "round_robin")).await;
    until_all(
        &instances,
        Duration::from_secs(15),
        "on the third revision",
        |s| s["fleet"]["revision"] == third,
    )
    .await;
    all_route_to(&instances, "c").await;

    // Every member lost: every instance serves its last config, stale.
    cluster.kill_member(1);
    cluster.kill_member(2);
    until_all(&instances, Duration::from_secs(30), "stale", |s| {
        s["fleet"]["state"] == "stale"
    })
    .await;
    all_route_to(&instances, "c").await;

    // Members back: the fleet resyncs and follows puts again.
    for index in 0..3 {
        cluster.start_member(index);
    }
    cluster.wait_healthy(&[0, 1, 2]);
    until_all(&instances, Duration::from_secs(30), "ok again", |s| {
        s["fleet"]["state"] == "ok"
    })
    .await;
    let fourth = put(&etcd, &config(&[&a], "round_robin")).await;
    until_all(
        &instances,
        Duration::from_secs(15),
        "on the fourth revision",
        |s| s["fleet"]["revision"] == fourth,
    )
    .await;
    all_route_to(&instances, "a").await;

    // An instance that stops leaves the member list at once.
    let mut instances = instances;
    let stopped = instances.pop().unwrap();
    stopped.signal("TERM");
    let mut stopped = stopped;
    stopped.wait_exit(Duration::from_secs(10));
    until_all(&instances, Duration::from_secs(10), "two members", |s| {
        s["fleet"]["members"]
            .as_array()
            .is_some_and(|m| m.len() == 2)
    })
    .await;
}

/// Time from a config put to every instance running it, over 50 puts:
/// printed (docs/fleet.md has the figures), bounded only by a generous
/// limit per put so a loaded machine does not fail it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_put_to_all_instances_convergence() {
    let a = echo_backend("a").await;
    let cluster = EtcdCluster::start(3);
    let etcd = Etcd::new(cluster.endpoints(), Duration::from_secs(2));
    put(&etcd, &config(&[&a], "round_robin")).await;
    let instances: Vec<ProxyProcess> = (1..=3)
        .map(|n| start_instance(&cluster, &format!("usherd-{n}")))
        .collect();
    all_route_to(&instances, "a").await;
    let mut times = Vec::new();
    for n in 0..50 {
        let text =
            config(&[&a], "round_robin").replace("retries = 0", &format!("retries = {}", n % 2));
        let started = Instant::now();
        let revision = put(&etcd, &text).await;
        until_all(
            &instances,
            Duration::from_secs(20),
            "on the new revision",
            |s| s["generation"].as_u64().is_some() && s["fleet"]["revision"] == revision,
        )
        .await;
        times.push(started.elapsed());
    }
    times.sort();
    eprintln!(
        "config put to all 3 instances running it: median {:?}, p99 {:?}, max {:?} (50 puts)",
        times[24], times[48], times[49]
    );
}

/// An usherd whose registry is kept in `cluster`, routing `api` to it.
fn registry_instance(cluster: &EtcdCluster) -> (ProxyProcess, support::tempfile_path::TempPath) {
    let endpoints: Vec<String> = cluster
        .endpoints()
        .iter()
        .map(|e| format!("\"{e}\""))
        .collect();
    let toml = format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[registry]
etcd = [{}]
[listeners.web]
listen = "127.0.0.1:0"
[vhosts.all]
hosts = ["*"]
routes = [{{ path = "/", upstream = "api" }}]
[upstreams.api]
strategy = "round_robin"
retries = 0
[upstreams.api.discovery]
source = "registry"
service = "api"
"#,
        endpoints.join(", ")
    );
    support::spawn_binary_with(&toml, 2, "info,access=off", &[])
}

async fn call(instance: &ProxyProcess, method: http::Method, path: &str, body: &str) -> u16 {
    let request = http::Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", instance.addr("[admin]")))
        .header("content-type", "application/json")
        .body(support::full(body.to_string()))
        .unwrap();
    support::send(&support::client(), request).await.status
}

/// The backends each instance routes `api` to, over `count` requests.
async fn routed(instance: &ProxyProcess, count: usize) -> Vec<String> {
    let mut names = Vec::new();
    for _ in 0..count {
        names.push(backend_of(instance).await);
    }
    names.sort();
    names.dedup();
    names
}

async fn until_routed(instances: &[&ProxyProcess], names: &[&str], limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let mut all = true;
        for instance in instances {
            all &= routed(instance, 6).await == names;
        }
        if all {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "not all routed to {names:?} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_kept_in_etcd_is_one_catalog_for_the_fleet() {
    let (a, b) = (echo_backend("a").await, echo_backend("b").await);
    let c = support::ControlledBackend::start("c").await;
    let cluster = EtcdCluster::start(3);
    let mut instances: Vec<(ProxyProcess, support::tempfile_path::TempPath)> =
        (0..3).map(|_| registry_instance(&cluster)).collect();

    // A registration through the first is routed by all three.
    let consul = format!(
        r#"{{"ID": "api-a", "Name": "api", "Address": "127.0.0.1", "Port": {}, "Check": {{"TTL": "30s", "Status": "passing"}}}}"#,
        a.addr.port()
    );
    assert_eq!(
        call(
            &instances[0].0,
            http::Method::PUT,
            "/v1/agent/service/register",
            &consul
        )
        .await,
        200
    );
    let all: Vec<&ProxyProcess> = instances.iter().map(|(p, _)| p).collect();
    let took = until_routed(&all, &["a"], Duration::from_secs(10)).await;
    eprintln!("a registration through one instance was routed by all three in {took:?}");

    // Eureka through the second; a TTL report through the third.
    let eureka = format!(
        r#"{{"instance": {{"instanceId": "api-b", "app": "API", "ipAddr": "127.0.0.1", "status": "UP", "port": {{"$": {}, "@enabled": "true"}}}}}}"#,
        b.addr.port()
    );
    assert_eq!(
        call(
            &instances[1].0,
            http::Method::POST,
            "/eureka/apps/API",
            &eureka
        )
        .await,
        204
    );
    until_routed(&all, &["a", "b"], Duration::from_secs(10)).await;
    assert_eq!(
        call(
            &instances[2].0,
            http::Method::PUT,
            "/v1/agent/check/fail/service:api-a",
            ""
        )
        .await,
        200
    );
    until_routed(&all, &["b"], Duration::from_secs(10)).await;
    assert_eq!(
        call(
            &instances[0].0,
            http::Method::PUT,
            "/v1/agent/check/pass/service:api-a",
            ""
        )
        .await,
        200
    );
    until_routed(&all, &["a", "b"], Duration::from_secs(10)).await;

    // An HTTP check runs on one of them, whichever holds the checks.
    let http_check = format!(
        r#"{{"ID": "api-c", "Name": "api", "Address": "127.0.0.1", "Port": {port}, "Check": {{"HTTP": "http://127.0.0.1:{port}/healthz", "Interval": "1s"}}}}"#,
        port = c.addr.port()
    );
    assert_eq!(
        call(
            &instances[2].0,
            http::Method::PUT,
            "/v1/agent/service/register",
            &http_check
        )
        .await,
        200
    );
    until_routed(&all, &["a", "b", "c"], Duration::from_secs(15)).await;
    let mut leaders = Vec::new();
    for (index, (instance, _)) in instances.iter().enumerate() {
        if status(instance).await["registry_store"]["runs_checks"] == true {
            leaders.push(index);
        }
    }
    assert_eq!(
        leaders.len(),
        1,
        "one instance runs the checks: {leaders:?}"
    );

    // The one running the checks is killed: another takes them over, and
    // nothing registered is lost.
    let (leader, _config) = instances.remove(leaders[0]);
    drop(leader); // SIGKILL
    let rest: Vec<&ProxyProcess> = instances.iter().map(|(p, _)| p).collect();
    c.set(support::Behaviour::FailingHealthCheck);
    until_routed(&rest, &["a", "b"], Duration::from_secs(30)).await;
    c.set(support::Behaviour::Healthy);
    until_routed(&rest, &["a", "b", "c"], Duration::from_secs(15)).await;

    // A deregistration through either remaining instance reaches the other.
    assert_eq!(
        call(
            rest[0],
            http::Method::PUT,
            "/v1/agent/service/deregister/api-a",
            ""
        )
        .await,
        200
    );
    until_routed(&rest, &["b", "c"], Duration::from_secs(10)).await;
}

/// Time from a registration through one instance to all three having the
/// instance in their routing snapshot, over 50 registrations: printed
/// (docs/fleet.md), bounded only by a generous limit per registration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_to_all_instances_convergence() {
    let cluster = EtcdCluster::start(3);
    let instances: Vec<(ProxyProcess, support::tempfile_path::TempPath)> =
        (0..3).map(|_| registry_instance(&cluster)).collect();
    let mut times = Vec::new();
    for n in 0..50u16 {
        let port = 20_000 + n;
        let body = format!(
            r#"{{"ID": "api-{n}", "Name": "api", "Address": "127.0.0.1", "Port": {port}}}"#
        );
        let started = Instant::now();
        let through = &instances[usize::from(n) % 3].0;
        assert_eq!(
            call(
                through,
                http::Method::PUT,
                "/v1/agent/service/register",
                &body
            )
            .await,
            200
        );
        let addr = format!("127.0.0.1:{port}");
        loop {
            let mut everywhere = true;
            for (instance, _) in &instances {
                let servers = status(instance).await["upstreams"]["api"]["servers"].clone();
                everywhere &= servers
                    .as_array()
                    .is_some_and(|s| s.iter().any(|s| s["addr"] == addr.as_str()));
            }
            if everywhere {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "api-{n} not on all three within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        times.push(started.elapsed());
    }
    times.sort();
    eprintln!(
        "registration to all 3 instances routing by it: median {:?}, p99 {:?}, max {:?} (50 registrations)",
        times[24], times[48], times[49]
    );
}
