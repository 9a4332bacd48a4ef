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
use usherd::fleet::etcd::Etcd;

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
