//! A small etcd v3 client (for the fleet and the registry kept in etcd)
//! over etcd's JSON gateway (`POST /v3/...`, keys
//! and values in base64, 64-bit numbers as strings): get, range by prefix,
//! put with a lease, delete, lease grant / keep-alive / revoke, and the
//! streaming watch. Each call goes to the endpoint that answered last and
//! moves on to the next one when it cannot connect, so one member down
//! does not stop a client of a cluster.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use bytes::{Bytes, BytesMut};
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use crate::tls::{client_config, Verify};

/// The largest answer read (a range of a prefix with many members).
const MAX_ANSWER: usize = 16 * 1024 * 1024;
/// The longest line a watch stream may send (one batch of events).
const MAX_WATCH_LINE: usize = 16 * 1024 * 1024;

/// One key and its value, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: String,
    pub value: Vec<u8>,
    pub mod_revision: i64,
    pub lease: i64,
}

/// What a watch saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Put(Kv),
    Delete { key: String, mod_revision: i64 },
}

/// A client of one etcd cluster.
pub struct Etcd {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// `http://host:port` or `https://host:port` (verified against the
    /// system's CA roots), without a trailing slash.
    endpoints: Vec<String>,
    /// The endpoint to try first: the one that answered last.
    current: AtomicUsize,
    timeout: Duration,
}

impl Etcd {
    /// A client of the cluster at `endpoints`; each call may take `timeout`
    /// per endpoint tried.
    pub fn new(endpoints: Vec<String>, timeout: Duration) -> Etcd {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        // An idle watch sends nothing: a peer that vanished without closing
        // the connection is found by TCP keepalive, within about 25 s.
        http.set_keepalive(Some(Duration::from_secs(10)));
        http.set_keepalive_interval(Some(Duration::from_secs(5)));
        http.set_keepalive_retries(Some(3));
        let connector =
            HttpsConnector::from((http, client_config(Verify::SystemRoots, b"http/1.1")));
        Etcd {
            client: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(2)
                .build(connector),
            endpoints,
            current: AtomicUsize::new(0),
            timeout,
        }
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The value of `key` (if any) and the store's revision.
    pub async fn get(&self, key: &str) -> Result<(Option<Kv>, i64), String> {
        let answer = self
            .call("/v3/kv/range", json!({ "key": encode(key.as_bytes()) }))
            .await?;
        let mut kvs = kvs(&answer)?;
        Ok((kvs.pop(), revision(&answer)))
    }

    /// Every key under `prefix`, and the store's revision.
    pub async fn prefix(&self, prefix: &str) -> Result<(Vec<Kv>, i64), String> {
        let answer = self
            .call(
                "/v3/kv/range",
                json!({ "key": encode(prefix.as_bytes()), "range_end": encode(&prefix_end(prefix)) }),
            )
            .await?;
        Ok((kvs(&answer)?, revision(&answer)))
    }

    /// Puts `value` at `key`, attached to `lease` (0: none); the revision.
    pub async fn put(&self, key: &str, value: &[u8], lease: i64) -> Result<i64, String> {
        let mut body = json!({ "key": encode(key.as_bytes()), "value": encode(value) });
        if lease != 0 {
            body["lease"] = json!(lease.to_string());
        }
        let answer = self.call("/v3/kv/put", body).await?;
        Ok(revision(&answer))
    }

    /// Puts `value` at `key` (attached to `lease`, 0: none) if the key's mod
    /// revision is still `expected` (0: the key does not exist); with
    /// `value` `None`, deletes it under the same condition.
    /// `Ok(Ok(revision))` when done, `Ok(Err(now))` with what the key holds
    /// now when the condition failed.
    pub async fn swap(
        &self,
        key: &str,
        expected: i64,
        value: Option<&[u8]>,
        lease: i64,
    ) -> Result<Result<i64, Option<Kv>>, String> {
        let key64 = encode(key.as_bytes());
        let request = match value {
            Some(value) if lease != 0 => {
                json!({ "request_put": { "key": key64, "value": encode(value), "lease": lease.to_string() } })
            }
            Some(value) => json!({ "request_put": { "key": key64, "value": encode(value) } }),
            None => json!({ "request_delete_range": { "key": key64 } }),
        };
        let answer = self
            .call(
                "/v3/kv/txn",
                json!({
                    "compare": [{ "key": key64, "result": "EQUAL", "target": "MOD", "mod_revision": expected.to_string() }],
                    "success": [request],
                    "failure": [{ "request_range": { "key": key64 } }],
                }),
            )
            .await?;
        if answer["succeeded"] == json!(true) {
            return Ok(Ok(revision(&answer)));
        }
        let now = kvs(&answer["responses"][0]["response_range"])?.pop();
        Ok(Err(now))
    }

    pub async fn delete(&self, key: &str) -> Result<(), String> {
        self.call(
            "/v3/kv/deleterange",
            json!({ "key": encode(key.as_bytes()) }),
        )
        .await
        .map(drop)
    }

    /// A new lease of `ttl`; its id.
    pub async fn grant(&self, ttl: Duration) -> Result<i64, String> {
        let answer = self
            .call(
                "/v3/lease/grant",
                json!({ "TTL": ttl.as_secs().max(1).to_string() }),
            )
            .await?;
        number(&answer["ID"]).ok_or_else(|| format!("lease grant answered without an ID: {answer}"))
    }

    /// Renews `lease` once; its remaining TTL in seconds (0: the lease is gone).
    pub async fn keep_alive(&self, lease: i64) -> Result<i64, String> {
        let answer = self
            .call("/v3/lease/keepalive", json!({ "ID": lease.to_string() }))
            .await?;
        Ok(number(&answer["result"]["TTL"]).unwrap_or(0))
    }

    pub async fn revoke(&self, lease: i64) -> Result<(), String> {
        self.call("/v3/lease/revoke", json!({ "ID": lease.to_string() }))
            .await
            .map(drop)
    }

    /// Watches `key` (with `prefix`, every key under it) from `revision` on;
    /// set up (as etcd confirms) when this returns.
    pub async fn watch(&self, key: &str, prefix: bool, revision: i64) -> Result<Watch, String> {
        let mut request =
            json!({ "key": encode(key.as_bytes()), "start_revision": revision.to_string() });
        if prefix {
            request["range_end"] = json!(encode(&prefix_end(key)));
        }
        let body = json!({ "create_request": request }).to_string();
        let (response, endpoint) = self.send("/v3/watch", Bytes::from(body)).await?;
        let status = response.status();
        let mut watch = Watch {
            body: response.into_body(),
            pending: BytesMut::new(),
        };
        // The first message says the watch is set up, or why not.
        let first = tokio::time::timeout(self.timeout, watch.message())
            .await
            .map_err(|_| format!("{endpoint}/v3/watch: not set up within {:?}", self.timeout))??;
        if status != StatusCode::OK || first["result"]["created"] != json!(true) {
            return Err(format!(
                "{endpoint}/v3/watch: not set up ({status}): {first}"
            ));
        }
        Ok(watch)
    }

    /// A unary call: its JSON answer, or why there is none.
    async fn call(&self, path: &str, body: Value) -> Result<Value, String> {
        let (response, endpoint) = self.send(path, Bytes::from(body.to_string())).await?;
        let status = response.status();
        let read = Limited::new(response.into_body(), MAX_ANSWER).collect();
        let bytes = tokio::time::timeout(self.timeout, read)
            .await
            .map_err(|_| format!("{endpoint}{path}: no answer within {:?}", self.timeout))?
            .map_err(|error| format!("{endpoint}{path}: {error}"))?
            .to_bytes();
        let answer: Value = serde_json::from_slice(&bytes)
            .map_err(|error| format!("{endpoint}{path}: not JSON ({error})"))?;
        if status != StatusCode::OK {
            let message = answer["error"]
                .as_str()
                .or(answer["message"].as_str())
                .unwrap_or("");
            return Err(format!("{endpoint}{path}: {status} {message}"));
        }
        // A stream's single answer comes as {"result": ...}; an error inside it as {"error": ...}.
        if let Some(error) = answer.get("error") {
            return Err(format!("{endpoint}{path}: {error}"));
        }
        Ok(answer)
    }

    /// POSTs `body` to the first endpoint that takes it, starting with the
    /// one that answered last.
    async fn send(
        &self,
        path: &str,
        body: Bytes,
    ) -> Result<(http::Response<Incoming>, String), String> {
        let start = self.current.load(Ordering::Relaxed);
        let mut errors = Vec::new();
        for offset in 0..self.endpoints.len() {
            let index = (start + offset) % self.endpoints.len();
            let endpoint = &self.endpoints[index];
            let request = Request::post(format!("{endpoint}{path}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(body.clone()))
                .map_err(|error| error.to_string())?;
            match tokio::time::timeout(self.timeout, self.client.request(request)).await {
                Ok(Ok(response)) => {
                    self.current.store(index, Ordering::Relaxed);
                    return Ok((response, endpoint.clone()));
                }
                Ok(Err(error)) => {
                    errors.push(format!("{endpoint}: {}", crate::error::with_causes(&error)))
                }
                Err(_) => errors.push(format!("{endpoint}: no answer within {:?}", self.timeout)),
            }
        }
        Err(errors.join("; "))
    }
}

/// A watch stream: batches of events, one JSON message per line.
pub struct Watch {
    body: Incoming,
    pending: BytesMut,
}

impl Watch {
    /// The next batch of events and the revision it brings the store to.
    /// An error when the stream ends, breaks, or the revision asked for was
    /// compacted (then start over from a fresh read).
    pub async fn next(&mut self) -> Result<(Vec<Event>, i64), String> {
        loop {
            let message = self.message().await?;
            let result = &message["result"];
            if result["canceled"] == json!(true) {
                let compacted = number(&result["compact_revision"]).unwrap_or(0);
                return Err(if compacted > 0 {
                    format!("the revision asked for was compacted (now from {compacted})")
                } else {
                    format!("the watch was cancelled: {}", result["cancel_reason"])
                });
            }
            let events: Vec<Event> = result["events"]
                .as_array()
                .map(|events| events.iter().filter_map(event).collect())
                .unwrap_or_default();
            if events.is_empty() {
                // Progress notifications and the like.
                continue;
            }
            return Ok((events, revision(&message["result"])));
        }
    }

    async fn message(&mut self) -> Result<Value, String> {
        loop {
            if let Some(end) = self.pending.iter().position(|&byte| byte == b'\n') {
                let line = self.pending.split_to(end + 1);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let message: Value = serde_json::from_slice(&line)
                    .map_err(|error| format!("watch: not JSON ({error})"))?;
                if let Some(error) = message.get("error") {
                    return Err(format!("watch: {error}"));
                }
                return Ok(message);
            }
            if self.pending.len() > MAX_WATCH_LINE {
                return Err("watch: a message longer than 16 MiB".into());
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.pending.extend_from_slice(&data);
                    }
                }
                Some(Err(error)) => return Err(format!("watch: {error}")),
                None => return Err("watch: the stream ended".into()),
            }
        }
    }
}

fn event(value: &Value) -> Option<Event> {
    let kv = kv(&value["kv"])?;
    // The gateway leaves out the default enum value, PUT.
    match value["type"].as_str() {
        Some("DELETE") => Some(Event::Delete {
            key: kv.key,
            mod_revision: kv.mod_revision,
        }),
        _ => Some(Event::Put(kv)),
    }
}

fn kvs(answer: &Value) -> Result<Vec<Kv>, String> {
    match answer.get("kvs") {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => Ok(items.iter().filter_map(kv).collect()),
        Some(other) => Err(format!("range answered kvs that are not a list: {other}")),
    }
}

fn kv(value: &Value) -> Option<Kv> {
    let key = decode(value["key"].as_str()?)?;
    Some(Kv {
        key: String::from_utf8(key).ok()?,
        value: value["value"].as_str().and_then(decode).unwrap_or_default(),
        mod_revision: number(&value["mod_revision"]).unwrap_or(0),
        lease: number(&value["lease"]).unwrap_or(0),
    })
}

fn revision(answer: &Value) -> i64 {
    number(&answer["header"]["revision"]).unwrap_or(0)
}

/// A 64-bit number, which the gateway writes as a string.
fn number(value: &Value) -> Option<i64> {
    match value {
        Value::String(text) => text.parse().ok(),
        Value::Number(number) => number.as_i64(),
        _ => None,
    }
}

fn encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn decode(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

/// The end of the range of keys that start with `prefix` (etcd's rule:
/// the prefix with its last byte below 0xff plus one).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_where_the_next_prefix_starts() {
        assert_eq!(prefix_end("/usherd/a"), b"/usherd/b");
        assert_eq!(prefix_end("a~"), b"a\x7f");
    }

    #[test]
    fn gateway_events_read_with_put_left_out() {
        let put = json!({"kv": {"key": encode(b"/k"), "value": encode(b"v"), "mod_revision": "7"}});
        assert_eq!(
            event(&put),
            Some(Event::Put(Kv {
                key: "/k".into(),
                value: b"v".to_vec(),
                mod_revision: 7,
                lease: 0
            }))
        );
        let delete = json!({"type": "DELETE", "kv": {"key": encode(b"/k"), "mod_revision": "8"}});
        assert_eq!(
            event(&delete),
            Some(Event::Delete {
                key: "/k".into(),
                mod_revision: 8
            })
        );
    }
}
