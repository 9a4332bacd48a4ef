//! `source = "etcd"` against a real etcd (Debian's `etcd-server`, on free
//! loopback ports), with keys written through etcd's own v3 JSON gateway
//! as any client would: instances added, removed, reweighted; a key put
//! with a lease going when the lease runs out; a bad value skipped; a
//! stopped etcd leaving the last set serving and `stale`; a restarted one
//! (same data directory) followed again, with no duplicate.

mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use http::Request;
use serde_json::{json, Value};
use support::follow::{discovery, serving, until_serving, until_state};
use support::tempfile_path::TempPath;
use support::{client, echo_backend, full, get, send, start_proxy, Backend};

const PREFIX: &str = "/services/api/";

/// An etcd server on 127.0.0.1, killed by its PID when dropped. Its data
/// directory outlives a `stop`, for a restart.
struct Etcd {
    client: SocketAddr,
    peer: SocketAddr,
    directory: TempPath,
    child: Option<Child>,
}

fn free_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], support::free_port()))
}

impl Etcd {
    async fn start() -> Etcd {
        let mut etcd = Etcd {
            client: free_port(),
            peer: free_port(),
            directory: TempPath::new("etcd", "log"),
            child: None,
        };
        etcd.run().await;
        etcd
    }

    /// Runs etcd and polls `/version` until it answers.
    async fn run(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.directory.as_path())
            .unwrap();
        let (client, peer) = (
            format!("http://{}", self.client),
            format!("http://{}", self.peer),
        );
        let child = Command::new("etcd")
            .arg("--data-dir")
            .arg(self.directory.directory().join("data"))
            .args(["--name", "default"])
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("default={peer}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("etcd runs (tests/run.sh installs Debian's etcd-server)");
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("etcd exited with {status}: {}", self.log());
            }
            let answered = tokio::time::timeout(
                Duration::from_secs(1),
                client_get(&format!("http://{}/version", self.client)),
            )
            .await;
            if matches!(answered, Ok(Some(200))) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "etcd did not answer within 30 s: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.directory.as_path()).unwrap_or_default()
    }

    /// Kills etcd, as a crash would; the data directory stays.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    async fn restart(&mut self) {
        self.stop();
        self.run().await;
    }

    /// A call of the gateway; its JSON answer.
    async fn call(&self, path: &str, body: Value) -> Value {
        let request = Request::post(format!("http://{}{path}", self.client))
            .header("content-type", "application/json")
            .body(full(body.to_string()))
            .unwrap();
        let reply = send(&client(), request).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        reply.json()
    }

    /// Puts `value` at `PREFIX + name`, with a lease when given one.
    async fn put(&self, name: &str, value: &str, lease: Option<&str>) {
        let mut body = json!({"key": b64(&format!("{PREFIX}{name}")), "value": b64(value)});
        if let Some(lease) = lease {
            body["lease"] = json!(lease);
        }
        self.call("/v3/kv/put", body).await;
    }

    /// Registers `backend` as instance `name`.
    async fn add(&self, name: &str, backend: &Backend, weight: Option<u32>) {
        let mut value = json!({"address": "127.0.0.1", "port": backend.addr.port()});
        if let Some(weight) = weight {
            value["weight"] = json!(weight);
        }
        self.put(name, &value.to_string(), None).await;
    }

    async fn delete(&self, name: &str) {
        self.call(
            "/v3/kv/deleterange",
            json!({"key": b64(&format!("{PREFIX}{name}"))}),
        )
        .await;
    }

    /// A lease of `ttl` seconds; its ID.
    async fn grant(&self, ttl: u64) -> String {
        let answer = self
            .call("/v3/lease/grant", json!({"TTL": ttl.to_string()}))
            .await;
        answer["ID"].as_str().unwrap().to_string()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The status of a GET, or `None` when nothing answered.
async fn client_get(url: &str) -> Option<u16> {
    let request = Request::get(url).body(full("")).unwrap();
    client()
        .request(request)
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn follower(etcd: &Etcd, extra: &str) -> String {
    support::follow::follower_config(
        "round_robin",
        "",
        &format!(
            "source = \"etcd\"\nendpoints = [\"http://{}\"]\nprefix = \"{PREFIX}\"\n{extra}",
            etcd.client
        ),
    )
}

/// The weights of upstream `api`'s servers in `/status`, by address.
async fn weights(proxy: &usherd::Proxy) -> Vec<(String, u64)> {
    let reply = get(
        &format!("http://{}/status", proxy.admin_addr().unwrap()),
        None,
    )
    .await;
    let mut weights: Vec<(String, u64)> = reply.json()["upstreams"]["api"]["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|server| {
            (
                server["addr"].as_str().unwrap().to_string(),
                server["weight"].as_u64().unwrap(),
            )
        })
        .collect();
    weights.sort();
    weights
}

/// Polls until the servers' weights are `expected` (in any order).
async fn until_weights(proxy: &usherd::Proxy, expected: &[(String, u64)], limit: Duration) {
    let mut expected = expected.to_vec();
    expected.sort();
    let start = Instant::now();
    loop {
        let now = weights(proxy).await;
        if now == expected {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "weights not {expected:?} within {limit:?}: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_under_the_prefix_are_watched_and_a_lease_that_runs_out_takes_its_server() {
    let (a, b, c) = (
        echo_backend("a").await,
        echo_backend("b").await,
        echo_backend("c").await,
    );
    let etcd = Etcd::start().await;
    etcd.add("a", &a, None).await;
    // A key beside the prefix is not read.
    etcd.call(
        "/v3/kv/put",
        json!({"key": b64("/services/apiary"), "value": b64("{}")}),
    )
    .await;
    // refresh 60s: every change below comes from the watch, not from polling.
    let proxy = start_proxy(&follower(&etcd, "refresh = \"60s\"")).await;
    until_serving(&proxy, &["a"], Duration::from_secs(10)).await;
    let state = until_state(&proxy, "ok", Duration::from_secs(1)).await;
    assert_eq!(state["servers"], 1, "{state}");
    assert_eq!(
        state["source"],
        format!("etcd {PREFIX} at http://{}", etcd.client),
        "{state}"
    );

    etcd.add("b", &b, Some(3)).await;
    let took = until_serving(&proxy, &["a", "b"], Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(3), "a new key took {took:?}");
    until_weights(
        &proxy,
        &[(a.addr.to_string(), 1), (b.addr.to_string(), 3)],
        Duration::from_secs(1),
    )
    .await;

    // A new weight for b.
    etcd.add("b", &b, Some(7)).await;
    until_weights(
        &proxy,
        &[(a.addr.to_string(), 1), (b.addr.to_string(), 7)],
        Duration::from_secs(5),
    )
    .await;

    // And no weight: 1 again (so that b and c below share requests evenly).
    etcd.add("b", &b, None).await;
    until_weights(
        &proxy,
        &[(a.addr.to_string(), 1), (b.addr.to_string(), 1)],
        Duration::from_secs(5),
    )
    .await;

    etcd.delete("a").await;
    until_serving(&proxy, &["b"], Duration::from_secs(5)).await;

    // Bad values are skipped; the good keys apply.
    etcd.put("bad", "{not json", None).await;
    etcd.put("noport", r#"{"address": "127.0.0.1"}"#, None)
        .await;
    etcd.add("c", &c, None).await;
    until_serving(&proxy, &["b", "c"], Duration::from_secs(5)).await;
    let state = until_state(&proxy, "ok", Duration::from_secs(1)).await;
    assert_eq!(state["servers"], 2, "{state}");

    // c again, under a 2 s lease that is never kept alive: when it runs
    // out etcd deletes the key, and the server goes.
    let lease = etcd.grant(2).await;
    let value = json!({"address": "127.0.0.1", "port": c.addr.port()}).to_string();
    etcd.put("c", &value, Some(&lease)).await;
    let took = until_serving(&proxy, &["b"], Duration::from_secs(10)).await;
    assert!(took >= Duration::from_secs(1), "gone after {took:?}");
    let state = until_state(&proxy, "ok", Duration::from_secs(1)).await;
    assert_eq!(state["servers"], 1, "{state}");
    assert!(state["last_error"].is_null(), "{state}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_etcd_leaves_the_set_stale_and_a_restarted_one_is_resynced() {
    let (a, b, c) = (
        echo_backend("a").await,
        echo_backend("b").await,
        echo_backend("c").await,
    );
    let mut etcd = Etcd::start().await;
    etcd.add("a", &a, None).await;
    etcd.add("b", &b, None).await;
    let proxy = start_proxy(&follower(&etcd, "refresh = \"500ms\"\ntimeout = \"1s\"")).await;
    until_serving(&proxy, &["a", "b"], Duration::from_secs(10)).await;
    until_state(&proxy, "ok", Duration::from_secs(1)).await;

    // Down: the watch breaks, reads fail, the set stays.
    etcd.stop();
    let state = until_state(&proxy, "stale", Duration::from_secs(5)).await;
    assert_eq!(state["servers"], 2, "{state}");
    assert!(
        state["last_error"]
            .as_str()
            .is_some_and(|error| error.contains(PREFIX)),
        "{state}"
    );
    assert_eq!(serving(&proxy, 6).await, ["a", "b"]);

    // Back with the same data, and a change made as soon as it is up: read
    // whole again, then watched from that read on.
    etcd.restart().await;
    etcd.add("c", &c, None).await;
    until_serving(&proxy, &["a", "b", "c"], Duration::from_secs(10)).await;
    let state = until_state(&proxy, "ok", Duration::from_secs(2)).await;
    assert_eq!(state["servers"], 3, "{state}");
    etcd.delete("a").await;
    until_serving(&proxy, &["b", "c"], Duration::from_secs(5)).await;
    let state = discovery(&proxy).await;
    assert_eq!(state["servers"], 2, "{state}");
}
