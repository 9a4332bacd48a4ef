//! Discovery by DNS against a real dnsmasq: records followed with the state
//! of servers that stay, no publish for an identical answer, a resolver
//! outage that keeps the set, an empty answer held for `empty_after`, a new
//! server that waits for a passing check, TTLs,
//! SRV weights and priorities, consistent hashing across a change, and
//! random sets under load with no failed request.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::dns::Dnsmasq;
use support::{echo_backend_on, get, within, Backend};

/// Three replicas on 127.0.0.11-13, the same port on each, as containers.
async fn replicas(count: u8) -> (Vec<Backend>, u16) {
    const NAMES: [&str; 4] = ["a", "b", "c", "d"];
    // Bounded: a port free on every address is found within a few tries.
    for _ in 0..20 {
        let first = echo_backend_on("127.0.0.11:0", NAMES[0]).await;
        let port = first.addr.port();
        let mut backends = vec![first];
        for index in 1..count {
            let bind = format!("127.0.0.{}:{port}", 11 + index);
            match tokio::net::TcpListener::bind(&bind).await {
                Ok(probe) => drop(probe),
                Err(_) => break,
            }
            backends.push(echo_backend_on(&bind, NAMES[index as usize]).await);
        }
        if backends.len() == count as usize {
            return (backends, port);
        }
    }
    panic!("no port free on 127.0.0.11-14");
}

/// `127.0.0.11 api.test` lines for the replicas named by index.
fn records(indexes: &[u8]) -> String {
    indexes
        .iter()
        .map(|index| format!("127.0.0.{} api.test\n", 11 + index))
        .collect()
}

fn config(dns: &Dnsmasq, port: u16, strategy: &str, discovery: &str, upstream: &str) -> String {
    support::follow::follower_config(
        strategy,
        upstream,
        &format!(
            "source = \"dns\"\nname = \"api.test\"\nport = {port}\nresolvers = [\"{}\"]\n\
             refresh = \"500ms\"\ntimeout = \"300ms\"\n{discovery}",
            dns.addr
        ),
    )
}

async fn status(proxy: &usherd::Proxy) -> Value {
    get(
        &format!("http://{}/status", proxy.admin_addr().unwrap()),
        None,
    )
    .await
    .json()
}

/// The discovery block of upstream `api` in `/status`.
async fn discovery(proxy: &usherd::Proxy) -> Value {
    status(proxy).await["upstreams"]["api"]["discovery"].clone()
}

/// Requests each server of `api` has had, by address.
async fn requests_by_server(proxy: &usherd::Proxy) -> HashMap<String, u64> {
    status(proxy).await["upstreams"]["api"]["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["addr"].as_str().unwrap().to_string(),
                s["requests"].as_u64().unwrap(),
            )
        })
        .collect()
}

async fn servers_now(proxy: &usherd::Proxy) -> usize {
    proxy.snapshot().upstream("api").unwrap().endpoints.len()
}

/// Sends `count` requests; the backends that answered, with their counts.
async fn spread(proxy: &usherd::Proxy, count: usize) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for _ in 0..count {
        let reply = get(&support::url(proxy, "/"), None).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        *seen
            .entry(reply.header("x-backend").unwrap().to_string())
            .or_default() += 1;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_follow_the_records_and_those_that_stay_keep_their_state() {
    let (_backends, port) = replicas(3).await;
    let dns = Dnsmasq::start(&records(&[0, 1, 2]), 1, &[]);
    let proxy = support::start_proxy(&config(&dns, port, "round_robin", "", "")).await;
    assert!(
        within(Duration::from_secs(10), || async {
            servers_now(&proxy).await == 3
        })
        .await
        .is_some(),
        "the three records were not followed: {}",
        discovery(&proxy).await
    );
    assert_eq!(
        spread(&proxy, 30).await,
        HashMap::from([("a".into(), 10), ("b".into(), 10), ("c".into(), 10)])
    );
    let state = discovery(&proxy).await;
    assert_eq!(state["state"], "ok", "{state}");
    assert_eq!(state["servers"], 3);
    assert_eq!(state["source"], format!("dns api.test:{port}"));
    let server = &status(&proxy).await["upstreams"]["api"]["servers"][0];
    assert_eq!(server["source"], "discovery");
    let before = requests_by_server(&proxy).await;
    let generation = proxy.snapshot().generation;

    // One record goes: within refresh + 1 s the removed server gets no more.
    dns.set_hosts(&records(&[0, 1]));
    let took = within(Duration::from_secs(10), || async {
        servers_now(&proxy).await == 2
    })
    .await;
    assert!(
        took.is_some_and(|took| took < Duration::from_millis(1500)),
        "the removal took {took:?}"
    );
    assert_eq!(proxy.snapshot().generation, generation + 1);
    let last_change = &status(&proxy).await["last_change"];
    assert_eq!(last_change["trigger"], "discovery");
    assert_eq!(
        last_change["changes"][0],
        format!("upstream api: -127.0.0.13:{port} (dns api.test:{port})")
    );
    assert_eq!(
        spread(&proxy, 20).await,
        HashMap::from([("a".into(), 10), ("b".into(), 10)])
    );
    // The servers that stayed count on from where they were.
    let after = requests_by_server(&proxy).await;
    for addr in [format!("127.0.0.11:{port}"), format!("127.0.0.12:{port}")] {
        assert_eq!(after[&addr], before[&addr] + 10, "{addr}");
    }

    // The same records again, in another order: nothing is published.
    dns.set_hosts(&records(&[1, 0]));
    let mut last = discovery(&proxy).await["last_success"].clone();
    let mut successes = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while successes < 3 && Instant::now() < deadline {
        let now = discovery(&proxy).await["last_success"].clone();
        if now != last {
            successes += 1;
            last = now;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let counted = (successes >= 3).then_some(());
    assert!(counted.is_some(), "no lookups were made");
    assert_eq!(proxy.snapshot().generation, generation + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_checks_a_discovered_server_takes_traffic_once_a_check_passes() {
    // A record for a replica that does not listen yet, as Docker's DNS lists
    // a container before its process listens.
    let (_backends, port) = replicas(1).await;
    let dns = Dnsmasq::start(&records(&[0]), 1, &[]);
    let checks = "\n[upstreams.api.health_check]\ninterval = \"300ms\"\ntimeout = \"200ms\"";
    let proxy = support::start_proxy(&config(&dns, port, "round_robin", checks, "")).await;
    assert!(
        within(Duration::from_secs(10), || async {
            get(&support::url(&proxy, "/"), None).await.status == 200
        })
        .await
        .is_some(),
        "the first server never took traffic: {}",
        status(&proxy).await
    );

    dns.set_hosts(&records(&[0, 1]));
    assert!(within(Duration::from_secs(10), || async {
        servers_now(&proxy).await == 2
    })
    .await
    .is_some());
    // With retries = 0, a request sent to the second would fail.
    assert_eq!(spread(&proxy, 20).await, HashMap::from([("a".into(), 20)]));
    let waiting = &status(&proxy).await["upstreams"]["api"]["servers"][1];
    assert_eq!(waiting["healthy"], false, "{waiting}");
    assert!(
        waiting["reason"]
            .as_str()
            .is_some_and(|r| r.contains("waiting for its first passing health check")),
        "{waiting}"
    );

    // It starts listening: one passing check lets it in.
    let _late = echo_backend_on(&format!("127.0.0.12:{port}"), "b").await;
    assert!(
        within(Duration::from_secs(10), || async {
            get(&support::url(&proxy, "/"), None)
                .await
                .header("x-backend")
                == Some("b")
        })
        .await
        .is_some(),
        "the second server never took traffic: {}",
        status(&proxy).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolver_outage_keeps_the_set_and_says_stale() {
    let (_backends, port) = replicas(3).await;
    let dns = Dnsmasq::start(&records(&[0, 1, 2]), 1, &[]);
    let text = config(&dns, port, "round_robin", "", "");
    let proxy = support::start_proxy(&text).await;
    assert!(within(Duration::from_secs(10), || async {
        servers_now(&proxy).await == 3
    })
    .await
    .is_some());

    dns.pause();
    assert!(
        within(Duration::from_secs(10), || async {
            discovery(&proxy).await["state"] == "stale"
        })
        .await
        .is_some(),
        "a frozen resolver was not noticed"
    );
    let state = discovery(&proxy).await;
    assert!(
        state["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{state}"
    );
    assert_eq!(state["servers"], 3);
    assert_eq!(spread(&proxy, 30).await.len(), 3);
    // The dashboard, in a real browser, says the source is stale.
    let page = format!("http://{}/", proxy.admin_addr().unwrap());
    let dom = tokio::task::spawn_blocking(move || support::chromium(&page, &["--dump-dom"]))
        .await
        .unwrap();
    assert!(
        dom.contains(r#"data-discovery="stale""#) && dom.contains("servers from dns api.test"),
        "the dashboard does not show the stale source"
    );

    // A reload during the outage keeps the discovered set.
    let reloaded = text.replace("retries = 0", "retries = 1");
    proxy
        .apply(usherd::config::parse_config(&reloaded, "test.toml").unwrap())
        .await
        .unwrap();
    assert_eq!(servers_now(&proxy).await, 3);
    assert_eq!(spread(&proxy, 30).await.len(), 3);

    dns.resume();
    assert!(
        within(Duration::from_secs(10), || async {
            discovery(&proxy).await["state"] == "ok"
        })
        .await
        .is_some(),
        "no recovery"
    );

    // A resolver that is gone altogether: the same.
    drop(dns);
    assert!(within(Duration::from_secs(10), || async {
        discovery(&proxy).await["state"] == "stale"
    })
    .await
    .is_some());
    assert_eq!(spread(&proxy, 30).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_answer_empties_the_pool_only_after_empty_after() {
    let (_backends, port) = replicas(2).await;
    let dns = Dnsmasq::start(&records(&[0, 1]), 1, &[]);
    let proxy = support::start_proxy(&config(
        &dns,
        port,
        "round_robin",
        "empty_after = \"2s\"",
        "",
    ))
    .await;
    assert!(within(Duration::from_secs(10), || async {
        servers_now(&proxy).await == 2
    })
    .await
    .is_some());
    // The name is gone: NXDOMAIN.
    let removed = Instant::now();
    dns.set_hosts("");
    assert!(within(Duration::from_secs(10), || async {
        discovery(&proxy).await["state"] == "stale"
    })
    .await
    .is_some());
    assert_eq!(spread(&proxy, 4).await.len(), 2, "emptied too early");
    let emptied = within(Duration::from_secs(10), || async {
        get(&support::url(&proxy, "/"), None).await.status == 503
    })
    .await;
    assert!(emptied.is_some(), "the pool was never emptied");
    assert!(
        removed.elapsed() >= Duration::from_secs(2),
        "emptied after {:?}, before empty_after",
        removed.elapsed()
    );
    let reply = get(&support::url(&proxy, "/"), None).await;
    assert!(
        reply.text().contains("discovery found none"),
        "{}",
        reply.text()
    );
    assert_eq!(discovery(&proxy).await["servers"], 0);

    // The name comes back.
    dns.set_hosts(&records(&[1]));
    assert!(within(Duration::from_secs(10), || async {
        get(&support::url(&proxy, "/"), None).await.status == 200
    })
    .await
    .is_some());
    assert_eq!(spread(&proxy, 4).await, HashMap::from([("b".into(), 4)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_ttl_does_not_slow_the_refresh() {
    // Docker's DNS answers with TTL 600; respect_ttl is off by default.
    let (_backends, port) = replicas(2).await;
    let dns = Dnsmasq::start(&records(&[0]), 600, &[]);
    let proxy = support::start_proxy(&config(&dns, port, "round_robin", "", "")).await;
    assert!(within(Duration::from_secs(10), || async {
        servers_now(&proxy).await == 1
    })
    .await
    .is_some());
    dns.set_hosts(&records(&[0, 1]));
    let took = within(Duration::from_secs(10), || async {
        servers_now(&proxy).await == 2
    })
    .await;
    assert!(
        took.is_some_and(|took| took < Duration::from_millis(1500)),
        "took {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_the_first_answer_static_servers_serve_or_503_says_pending() {
    let (_backends, port) = replicas(1).await;
    let dns = Dnsmasq::start(&records(&[0]), 1, &[]);
    dns.pause();
    let proxy = support::start_proxy(&config(&dns, port, "round_robin", "", "")).await;
    let reply = get(&support::url(&proxy, "/"), None).await;
    assert_eq!(reply.status, 503);
    assert!(
        reply.text().contains("discovery has not answered yet"),
        "{}",
        reply.text()
    );
    assert_eq!(discovery(&proxy).await["state"], "pending");
    drop(proxy);

    // Static servers serve meanwhile; a discovered one joins them.
    let fixed = support::echo_backend("fixed").await;
    let proxy = support::start_proxy(&config(
        &dns,
        port,
        "round_robin",
        "",
        &format!("servers = [{{ addr = \"{}\" }}]", fixed.addr),
    ))
    .await;
    assert_eq!(
        spread(&proxy, 4).await,
        HashMap::from([("fixed".into(), 4)])
    );
    dns.resume();
    assert!(within(Duration::from_secs(10), || async {
        servers_now(&proxy).await == 2
    })
    .await
    .is_some());
    assert_eq!(
        spread(&proxy, 4).await,
        HashMap::from([("fixed".into(), 2), ("a".into(), 2)])
    );
    let status = status(&proxy).await;
    let sources: Vec<&str> = status["upstreams"]["api"]["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources, ["config", "discovery"]);
}

/// A config whose upstream follows SRV records of `_http._tcp.api.test`.
fn srv_config(dns: &Dnsmasq) -> String {
    format!(
        r#"
[listeners.web]
listen = "127.0.0.1:0"
[vhosts.all]
hosts = ["*"]
routes = [{{ path = "/", upstream = "api" }}]
[upstreams.api]
strategy = "weighted"
[upstreams.api.discovery]
source = "srv"
name = "_http._tcp.api.test"
resolvers = ["{}"]
refresh = "500ms"
"#,
        dns.addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_records_give_ports_and_weights_and_only_the_lowest_priority_serves() {
    let a = support::echo_backend("a").await;
    let b = support::echo_backend("b").await;
    let c = support::echo_backend("c").await;
    let backup = support::echo_backend("backup").await;
    let srv = |target: &str, port: u16, priority: u16, weight: u16| {
        format!("--srv-host=_http._tcp.api.test,{target},{port},{priority},{weight}")
    };
    let options = [
        "--host-record=one.test,127.0.0.1".to_string(),
        srv("one.test", a.addr.port(), 1, 5),
        srv("one.test", b.addr.port(), 1, 3),
        srv("one.test", c.addr.port(), 1, 1),
        srv("one.test", backup.addr.port(), 2, 100),
    ];
    let options: Vec<&str> = options.iter().map(String::as_str).collect();
    let dns = Dnsmasq::start("", 1, &options);
    let proxy = support::start_proxy(&srv_config(&dns)).await;
    assert!(
        within(Duration::from_secs(10), || async {
            servers_now(&proxy).await == 3
        })
        .await
        .is_some(),
        "the SRV records were not followed"
    );
    // Smooth weighted round-robin: exactly 5:3:1 in every 9 picks.
    for _ in 0..3 {
        assert_eq!(
            spread(&proxy, 9).await,
            HashMap::from([("a".into(), 5), ("b".into(), 3), ("c".into(), 1)])
        );
    }
    assert_eq!(backup.requests(), 0, "a higher priority group was used");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hashing_keeps_the_keys_of_servers_that_stay() {
    let (_backends, port) = replicas(4).await;
    let dns = Dnsmasq::start(&records(&[0, 1, 2]), 1, &[]);
    let proxy = support::start_proxy(&config(
        &dns,
        port,
        "consistent_hash",
        "",
        "hash_key = \"header:x-user\"",
    ))
    .await;
    assert!(within(Duration::from_secs(10), || async {
        servers_now(&proxy).await == 3
    })
    .await
    .is_some());
    let owners = |proxy: &usherd::Proxy| {
        let url = support::url(proxy, "/");
        async move {
            let client = support::client();
            let mut owners = Vec::new();
            for user in 0..200 {
                let request = http::Request::get(&url)
                    .header("x-user", format!("user-{user}"))
                    .body(support::full(""))
                    .unwrap();
                let reply = support::send(&client, request).await;
                owners.push(reply.header("x-backend").unwrap().to_string());
            }
            owners
        }
    };
    let before = owners(&proxy).await;
    dns.set_hosts(&records(&[0, 1, 2, 3]));
    assert!(within(Duration::from_secs(10), || async {
        servers_now(&proxy).await == 4
    })
    .await
    .is_some());
    let after = owners(&proxy).await;
    let moved = before
        .iter()
        .zip(&after)
        .filter(|(old, new)| old != new)
        .inspect(|(_, new)| assert_eq!(*new, "d", "a key moved between servers that stayed"))
        .count();
    assert!(moved > 10, "the new server took only {moved} of 200 keys");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_sets_under_load_fail_no_request() {
    let (_backends, port) = replicas(4).await;
    let dns = Dnsmasq::start(&records(&[0, 1, 2, 3]), 1, &[]);
    let proxy =
        Arc::new(support::start_proxy(&config(&dns, port, "least_connections", "", "")).await);
    assert!(within(Duration::from_secs(10), || async {
        servers_now(&proxy).await == 4
    })
    .await
    .is_some());
    let running = Arc::new(AtomicBool::new(true));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (proxy, running) = (Arc::clone(&proxy), Arc::clone(&running));
        let (sent, failed) = (Arc::clone(&sent), Arc::clone(&failed));
        clients.push(tokio::spawn(async move {
            let client = support::client();
            // Bounded: 5,000 requests at most per client.
            for _ in 0..5_000 {
                if !running.load(Ordering::SeqCst) {
                    break;
                }
                let request = http::Request::get(support::url(&proxy, "/"))
                    .body(support::full(""))
                    .unwrap();
                let reply = support::send(&client, request).await;
                sent.fetch_add(1, Ordering::Relaxed);
                if reply.status != 200 {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let mut rng = fastrand::Rng::with_seed(16);
    let generation = proxy.snapshot().generation;
    for _ in 0..15 {
        // Never empty: 1 to 4 of the replicas, at random.
        let mut chosen: Vec<u8> = (0..4).filter(|_| rng.bool()).collect();
        if chosen.is_empty() {
            chosen.push(rng.u8(0..4));
        }
        dns.set_hosts(&records(&chosen));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    running.store(false, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }
    let sent = sent.load(Ordering::Relaxed);
    assert!(sent > 100, "only {sent} requests");
    assert_eq!(failed.load(Ordering::Relaxed), 0, "of {sent}");
    assert!(
        proxy.snapshot().generation > generation + 3,
        "the sets were not followed"
    );
}
