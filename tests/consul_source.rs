//! `source = "consul"` against a real agent API: usherd A runs the registry
//! (the real binary, so it can be paused), usherd B follows A's service
//! `api` with blocking queries and routes to the echo backends registered
//! in A. Instances that come and go show up promptly; a paused or stopped A
//! leaves B serving its last set and `stale`; a resumed A brings B back.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::Request;
use support::follow::{discovery, serving, until_serving, until_state};
use support::{client, echo_backend, full, get, send, spawn_binary_with, start_proxy, Backend};

const REGISTRY: &str = r#"
[admin]
listen = "127.0.0.1:0"
[registry]
[listeners.web]
listen = "127.0.0.1:0"
[vhosts.all]
hosts = ["*"]
routes = [{ path = "/", upstream = "local" }]
[upstreams.local]
servers = [{ addr = "127.0.0.1:9" }]
"#;

/// How long B's blocking queries wait.
const WAIT: Duration = Duration::from_secs(3);

fn follower(registry: SocketAddr) -> String {
    support::follow::follower_config(
        "round_robin",
        "",
        &format!(
            "source = \"consul\"\naddress = \"http://{registry}\"\nservice = \"api\"\n\
             wait = \"{}s\"\nrefresh = \"500ms\"\ntimeout = \"500ms\"",
            WAIT.as_secs()
        ),
    )
}

/// Registers `backend` as instance `id` of `api`, with a passing TTL check.
async fn register(registry: SocketAddr, id: &str, backend: &Backend) {
    let body = serde_json::json!({
        "ID": id,
        "Name": "api",
        "Address": "127.0.0.1",
        "Port": backend.addr.port(),
        "Check": { "TTL": "30s", "Status": "passing" },
    });
    let request = Request::put(format!("http://{registry}/v1/agent/service/register"))
        .header("content-type", "application/json")
        .body(full(body.to_string()))
        .unwrap();
    let reply = send(&client(), request).await;
    assert_eq!(reply.status, 200, "register {id}: {}", reply.text());
}

async fn deregister(registry: SocketAddr, id: &str) {
    let request = Request::put(format!(
        "http://{registry}/v1/agent/service/deregister/{id}"
    ))
    .body(full(""))
    .unwrap();
    let reply = send(&client(), request).await;
    assert_eq!(reply.status, 200, "deregister {id}: {}", reply.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consul_source_follows_the_agent_and_keeps_its_set_while_the_agent_is_away() {
    let (a, b, c) = (
        echo_backend("a").await,
        echo_backend("b").await,
        echo_backend("c").await,
    );
    let (agent, _config) = spawn_binary_with(REGISTRY, 2, "info,access=off", &[]);
    let registry = agent.addr("[admin]");
    register(registry, "api-1", &a).await;
    let proxy = start_proxy(&follower(registry)).await;

    until_serving(&proxy, &["a"], Duration::from_secs(2)).await;
    let state = until_state(&proxy, "ok", Duration::from_secs(1)).await;
    assert_eq!(state["servers"], 1, "{state}");
    assert!(
        state["source"]
            .as_str()
            .unwrap()
            .contains("consul api at http://"),
        "{state}"
    );

    // B's next query blocks at A; a registration answers it at once.
    register(registry, "api-2", &b).await;
    let took = until_serving(&proxy, &["a", "b"], WAIT).await;
    assert!(
        took < WAIT / 3,
        "a new instance took {took:?}, not well under wait {WAIT:?}"
    );

    deregister(registry, "api-1").await;
    let took = until_serving(&proxy, &["b"], WAIT).await;
    assert!(took < WAIT / 3, "a deregistration took {took:?}");

    // A paused: B's blocking query times out after wait + jitter + timeout;
    // the set stays and the source says stale.
    agent.signal("STOP");
    let limit = WAIT + WAIT / 16 + Duration::from_secs(3);
    let state = until_state(&proxy, "stale", limit).await;
    assert!(state["last_error"].as_str().is_some(), "{state}");
    assert_eq!(state["servers"], 1, "{state}");
    assert_eq!(serving(&proxy, 4).await, ["b"]);

    // A back: B converges again, with what changed meanwhile.
    agent.signal("CONT");
    register(registry, "api-3", &c).await;
    until_serving(&proxy, &["b", "c"], Duration::from_secs(5)).await;
    until_state(&proxy, "ok", Duration::from_secs(2)).await;

    // A gone for good: connections refused, the set stays.
    drop(agent);
    let state = until_state(&proxy, "stale", limit).await;
    assert_eq!(state["servers"], 2, "{state}");
    assert_eq!(serving(&proxy, 6).await, ["b", "c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_sent_and_a_refusal_keeps_the_source_pending() {
    let a = echo_backend("a").await;
    let agent = start_proxy(&REGISTRY.replace(
        "[registry]",
        "[registry]\nread_tokens = [\"reader-token-1\"]",
    ))
    .await;
    let registry = agent.admin_addr().unwrap();
    register(registry, "api-1", &a).await;

    let with_token = start_proxy(&format!(
        "{}token = \"reader-token-1\"\n",
        follower(registry)
    ))
    .await;
    until_serving(&with_token, &["a"], Duration::from_secs(2)).await;
    let status = get(
        &format!("http://{}/status", with_token.admin_addr().unwrap()),
        None,
    )
    .await;
    assert!(
        !status.text().contains("reader-token-1"),
        "{}",
        status.text()
    );

    let without = start_proxy(&follower(registry)).await;
    let start = Instant::now();
    let state = loop {
        let state = discovery(&without).await;
        if state["last_error"].is_string() {
            break state;
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "no error: {state}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(state["state"], "pending", "{state}");
    assert!(
        state["last_error"].as_str().unwrap().contains("403"),
        "{state}"
    );
    assert_eq!(serving(&without, 2).await, ["status 503"]);
}
