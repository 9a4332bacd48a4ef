//! The `etcd` source: every key under `prefix` in etcd (v3) holds one
//! instance, `{"address": "10.0.0.5", "port": 8080, "weight": 2}` (weight
//! optional), read through etcd's JSON gateway (`/v3/...`, keys and values
//! in base64) over usherd's own HTTP client, so no gRPC stack is needed.
//!
//! Read once (`POST /v3/kv/range` over the prefix), then watched (a
//! streaming `POST /v3/watch` from the range's revision + 1): every change
//! etcd commits under the prefix arrives as an event, including the
//! deletion of keys whose lease ran out. When the watch breaks (etcd
//! stopped, the connection dropped) or etcd says the revision was
//! compacted, everything is read again and a new watch starts from that
//! read's revision + 1: no change is missed, and each key is one instance,
//! so none is counted twice.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Map, Value};

use super::Answer;
use crate::config::{DiscoverySource, Server, MAX_WEIGHT};
use crate::registry::join_host_port;
use crate::tls::{client_config, Verify};

/// The largest range answer read, and the longest line of a watch.
const MAX_ANSWER: usize = 32 * 1024 * 1024;

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// What one key holds, as far as routing goes.
#[derive(Debug, Clone, PartialEq)]
enum Instance {
    Routed(Server),
    /// Weight 0, or a value that is not a usable instance.
    Skipped,
}

/// What the last lookup led to, which sets the pause after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Servers: wait for the next event, however long.
    Servers,
    /// No instances: wait for an event, or until the follower looks again.
    Empty,
    /// No usable answer: retry after the follower's backoff.
    Failed,
}

/// An open watch: the streaming answer and what of it is not read yet.
struct Watch {
    body: Incoming,
    pending: Vec<u8>,
}

/// An `etcd` source, ready to ask.
pub struct EtcdSource {
    client: HttpClient,
    endpoints: Vec<String>,
    /// The endpoint asked now; the next one after a failure.
    current: usize,
    prefix: String,
    /// `prefix` and its range end, in base64, as the gateway takes them.
    key: String,
    range_end: String,
    timeout: Duration,
    /// Key -> what it holds; `None` until a whole range has been read.
    instances: Option<BTreeMap<Vec<u8>, Instance>>,
    watch: Option<Watch>,
    /// Why the watch ended, when it did: the next lookup reads everything again.
    broken: Option<String>,
    /// Keys already reported as unusable, so each is logged once.
    warned: HashSet<Vec<u8>>,
    last: Outcome,
}

impl EtcdSource {
    pub fn new(source: &DiscoverySource, timeout: Duration) -> Result<EtcdSource, String> {
        let DiscoverySource::Etcd { endpoints, prefix } = source else {
            return Err("not an etcd source".into());
        };
        if endpoints.is_empty() {
            return Err("no endpoints".into());
        }
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
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(1)
            .build(connector);
        let engine = base64::engine::general_purpose::STANDARD;
        Ok(EtcdSource {
            client,
            endpoints: endpoints.clone(),
            current: 0,
            prefix: prefix.clone(),
            key: engine.encode(prefix.as_bytes()),
            range_end: engine.encode(range_end(prefix.as_bytes())),
            timeout,
            instances: None,
            watch: None,
            broken: None,
            warned: HashSet::new(),
            last: Outcome::Failed,
        })
    }

    fn endpoint(&self) -> &str {
        &self.endpoints[self.current % self.endpoints.len()]
    }

    /// Without a watch (at first, after a break or a compaction): reads the
    /// whole prefix and starts a watch from the revision after that read.
    /// With one: the set as the watch's events left it.
    pub async fn lookup(&mut self) -> Answer {
        if self.watch.is_none() || self.broken.is_some() {
            if let Some(why) = self.broken.take() {
                tracing::debug!(prefix = %self.prefix, %why, "discovery: the etcd watch ended; reading the prefix again");
            }
            self.watch = None;
            if let Err(error) = self.resync().await {
                self.last = Outcome::Failed;
                let endpoint = self.endpoint().to_string();
                // The next try asks the next endpoint.
                self.current = (self.current + 1) % self.endpoints.len();
                return Answer::Failed(format!("{} at {endpoint}: {error}", self.prefix));
            }
        }
        let answer = self.answer();
        self.last = match answer {
            Answer::Found { .. } => Outcome::Servers,
            _ => Outcome::Empty,
        };
        answer
    }

    /// After servers, waits for the next event however long it takes; after
    /// an empty answer, for an event or `wait`; after a failure, `wait`.
    pub async fn pause(&mut self, wait: Duration) {
        match self.last {
            Outcome::Servers => self.next_events().await,
            Outcome::Empty => {
                let _ = tokio::time::timeout(wait, self.next_events()).await;
            }
            Outcome::Failed => tokio::time::sleep(wait).await,
        }
    }

    /// The range, then the watch from its revision + 1 (created, as etcd
    /// confirms, before this returns). Bounded by `timeout` each.
    async fn resync(&mut self) -> Result<(), String> {
        let url = format!("{}/v3/kv/range", self.endpoint());
        let body = json!({"key": self.key, "range_end": self.range_end});
        let request = post(&url, &body)?;
        let read = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|error| error_chain(&error))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|error| format!("reading the range: {error}"))?
                .to_bytes();
            Ok::<_, String>((status, body))
        };
        let (status, body) = tokio::time::timeout(self.timeout, read)
            .await
            .map_err(|_| format!("no range answer within {}", duration(self.timeout)))??;
        if status != StatusCode::OK {
            return Err(format!(
                "POST /v3/kv/range answered {status}: {}",
                String::from_utf8_lossy(&body).trim()
            ));
        }
        let answer: Map<String, Value> = serde_json::from_slice(&body)
            .map_err(|error| format!("the range answer is not a JSON object: {error}"))?;
        let revision = answer
            .get("header")
            .and_then(|header| int(header.get("revision")))
            .ok_or("the range answer has no header.revision")?;
        let mut instances = BTreeMap::new();
        for kv in answer
            .get("kvs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let (key, instance) = self.read_kv(kv)?;
            instances.insert(key, instance);
        }
        self.warned.retain(|key| instances.contains_key(key));
        self.watch = Some(self.start_watch(revision + 1).await?);
        self.instances = Some(instances);
        Ok(())
    }

    async fn start_watch(&mut self, start_revision: i64) -> Result<Watch, String> {
        let url = format!("{}/v3/watch", self.endpoint());
        let body = json!({"create_request": {
            "key": self.key,
            "range_end": self.range_end,
            "start_revision": start_revision.to_string(),
        }});
        let request = post(&url, &body)?;
        let open = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|error| error_chain(&error))?;
            let status = response.status();
            let mut watch = Watch {
                body: response.into_body(),
                pending: Vec::new(),
            };
            if status != StatusCode::OK {
                let text = match watch.next_message().await {
                    Ok(Some(message)) => Value::Object(message).to_string(),
                    _ => String::new(),
                };
                return Err(format!("POST /v3/watch answered {status}: {text}"));
            }
            // The first message says the watch is created (or why not).
            match watch.next_message().await? {
                Some(message) => {
                    let result = watch_result(&message)?;
                    if result.get("created") != Some(&Value::Bool(true)) {
                        return Err(format!(
                            "the watch was not created: {}",
                            Value::Object(message)
                        ));
                    }
                    if let Some(why) = cancelled(result) {
                        return Err(why);
                    }
                    Ok(watch)
                }
                None => Err("the watch ended before it was created".into()),
            }
        };
        tokio::time::timeout(self.timeout, open)
            .await
            .map_err(|_| format!("no watch within {}", duration(self.timeout)))?
    }

    /// Reads the watch until a message with events has been applied, or the
    /// watch ends (then `broken` says why).
    async fn next_events(&mut self) {
        let Some(watch) = self.watch.as_mut() else {
            return std::future::pending().await;
        };
        loop {
            let message = match watch.next_message().await {
                Ok(Some(message)) => message,
                Ok(None) => {
                    self.broken = Some("etcd ended the watch".into());
                    return;
                }
                Err(error) => {
                    self.broken = Some(error);
                    return;
                }
            };
            let result = match watch_result(&message) {
                Ok(result) => result,
                Err(error) => {
                    self.broken = Some(error);
                    return;
                }
            };
            if let Some(why) = cancelled(result) {
                self.broken = Some(why);
                return;
            }
            let events = result.get("events").and_then(Value::as_array);
            let Some(events) = events.filter(|events| !events.is_empty()) else {
                // Created, or a progress notice.
                continue;
            };
            let events = events.clone();
            if let Err(error) = self.apply(&events) {
                self.broken = Some(error);
            }
            return;
        }
    }

    /// Applies watch events: a PUT sets its key, a DELETE (a key deleted,
    /// or whose lease ran out) removes it.
    fn apply(&mut self, events: &[Value]) -> Result<(), String> {
        for event in events {
            let kv = event.get("kv").ok_or("a watch event without kv")?;
            if event.get("type").and_then(Value::as_str) == Some("DELETE") {
                let key = decode(kv.get("key"))?;
                self.warned.remove(&key);
                if let Some(instances) = self.instances.as_mut() {
                    instances.remove(&key);
                }
            } else {
                let (key, instance) = self.read_kv(kv)?;
                if let Some(instances) = self.instances.as_mut() {
                    instances.insert(key, instance);
                }
            }
        }
        Ok(())
    }

    /// One key-value of a range or a PUT event. A value that is not an
    /// instance is skipped (with one warning per key); a key or value that
    /// is not base64 means the answer itself is broken.
    fn read_kv(&mut self, kv: &Value) -> Result<(Vec<u8>, Instance), String> {
        let key = decode(kv.get("key"))?;
        let value = decode(kv.get("value"))?;
        let instance = match parse_instance(&value) {
            Ok(instance) => {
                self.warned.remove(&key);
                instance
            }
            Err(error) => {
                if self.warned.insert(key.clone()) {
                    tracing::warn!(prefix = %self.prefix, key = %String::from_utf8_lossy(&key), %error, "discovery: an etcd instance key is skipped");
                }
                Instance::Skipped
            }
        };
        Ok((key, instance))
    }

    fn answer(&self) -> Answer {
        let mut servers: Vec<Server> = self
            .instances
            .iter()
            .flat_map(BTreeMap::values)
            .filter_map(|instance| match instance {
                Instance::Routed(server) => Some(server.clone()),
                Instance::Skipped => None,
            })
            .collect();
        // Two keys naming one address: one server, with the larger weight.
        servers.sort_by(|a, b| a.addr.cmp(&b.addr).then(b.weight.cmp(&a.weight)));
        servers.dedup_by(|a, b| a.addr == b.addr);
        if servers.is_empty() {
            return Answer::None(format!(
                "no usable keys under {} at {}",
                self.prefix,
                self.endpoint()
            ));
        }
        Answer::Found {
            servers,
            ttl: Duration::MAX,
        }
    }
}

impl Watch {
    /// The next newline-delimited JSON message of the stream; `None` when
    /// it ends.
    async fn next_message(&mut self) -> Result<Option<Map<String, Value>>, String> {
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return serde_json::from_slice(&line)
                    .map(Some)
                    .map_err(|error| format!("a watch message is not a JSON object: {error}"));
            }
            if self.pending.len() > MAX_ANSWER {
                return Err("a watch message is too long".into());
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.pending.extend_from_slice(&data);
                    }
                }
                Some(Err(error)) => return Err(format!("the watch broke: {error}")),
                None => {
                    // The last message may end without a newline.
                    if self.pending.iter().all(u8::is_ascii_whitespace) {
                        return Ok(None);
                    }
                    self.pending.push(b'\n');
                }
            }
        }
    }
}

/// The `result` of a watch message, or the gateway's `error`.
fn watch_result(message: &Map<String, Value>) -> Result<&Map<String, Value>, String> {
    if let Some(error) = message.get("error") {
        return Err(format!("the watch failed: {error}"));
    }
    message
        .get("result")
        .and_then(Value::as_object)
        .ok_or_else(|| "a watch message without result".to_string())
}

/// Why etcd cancelled the watch, if it did (a compacted revision, mostly).
fn cancelled(result: &Map<String, Value>) -> Option<String> {
    if let Some(revision) = int(result.get("compact_revision")).filter(|r| *r > 0) {
        return Some(format!(
            "the watch's revision was compacted (up to {revision})"
        ));
    }
    if result.get("canceled") == Some(&Value::Bool(true)) {
        let reason = result
            .get("cancel_reason")
            .and_then(Value::as_str)
            .unwrap_or("no reason given");
        return Some(format!("etcd cancelled the watch: {reason}"));
    }
    None
}

/// `{"address": "10.0.0.5", "port": 8080, "weight": 2}`; weight 1 when
/// left out, kept within 1-10000; weight 0 is not routed.
fn parse_instance(value: &[u8]) -> Result<Instance, String> {
    let value: Value =
        serde_json::from_slice(value).map_err(|error| format!("not JSON: {error}"))?;
    let Value::Object(instance) = value else {
        return Err("not a JSON object".into());
    };
    let address = match instance.get("address") {
        Some(Value::String(address)) if !address.trim().is_empty() => address.trim(),
        _ => return Err("no `address`".into()),
    };
    let port = match instance.get("port").and_then(Value::as_u64) {
        Some(port @ 1..=65535) => port as u16,
        Some(_) => return Err("the port is not 1-65535".into()),
        None => return Err("no `port` number".into()),
    };
    let weight = match instance.get("weight") {
        None | Some(Value::Null) => 1,
        Some(weight) => match weight.as_u64() {
            Some(0) => return Ok(Instance::Skipped),
            Some(weight) => weight.min(u64::from(MAX_WEIGHT)) as u32,
            None => return Err("the weight is not a whole number from 0".into()),
        },
    };
    Ok(Instance::Routed(Server {
        addr: join_host_port(address, port),
        weight,
    }))
}

/// The end of etcd's range for keys starting with `prefix`: the prefix
/// with its last byte below 0xff incremented and what follows dropped
/// (`\0`, every key, when there is none).
fn range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The gateway writes 64-bit integers as strings.
fn int(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::String(text) => text.parse().ok(),
        Value::Number(number) => number.as_i64(),
        _ => None,
    }
}

/// A base64 field; absent means empty (the gateway leaves empty fields out).
fn decode(value: Option<&Value>) -> Result<Vec<u8>, String> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) => base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|error| format!("a key or value is not base64: {error}")),
        Some(_) => Err("a key or value is not a string".into()),
    }
}

fn post(url: &str, body: &Value) -> Result<Request<Full<Bytes>>, String> {
    Request::post(url)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::USER_AGENT, "usherd etcd source")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|error| error.to_string())
}

fn duration(duration: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(duration)
}

/// A client error with its causes.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_end_where_etcd_says() {
        assert_eq!(range_end(b"/services/api/"), b"/services/api0");
        assert_eq!(range_end(b"a\xff"), b"b");
        assert_eq!(range_end(b"\xff\xff"), b"\0");
    }

    #[test]
    fn instance_values() {
        let server = |addr: &str, weight| {
            Instance::Routed(Server {
                addr: addr.into(),
                weight,
            })
        };
        assert_eq!(
            parse_instance(br#"{"address":"10.0.0.5","port":8080}"#),
            Ok(server("10.0.0.5:8080", 1))
        );
        assert_eq!(
            parse_instance(br#"{"address":"::1","port":8080,"weight":3}"#),
            Ok(server("[::1]:8080", 3))
        );
        assert_eq!(
            parse_instance(br#"{"address":"a","port":1,"weight":99999}"#),
            Ok(server("a:1", MAX_WEIGHT))
        );
        assert_eq!(
            parse_instance(br#"{"address":"a","port":1,"weight":0}"#),
            Ok(Instance::Skipped)
        );
        assert!(parse_instance(b"{oops").is_err());
        assert!(parse_instance(br#"{"address":"a","port":"80"}"#).is_err());
        assert!(parse_instance(br#"{"address":"a","port":0}"#).is_err());
        assert!(parse_instance(br#"{"port":80}"#).is_err());
        assert!(parse_instance(br#"{"address":"a","port":80,"weight":-1}"#).is_err());
    }

    #[test]
    fn watch_messages_say_when_to_read_again() {
        let message = |text: &str| -> Map<String, Value> { serde_json::from_str(text).unwrap() };
        let compacted = message(
            r#"{"result":{"header":{"raft_term":"2"},"canceled":true,"compact_revision":"4"}}"#,
        );
        assert!(cancelled(watch_result(&compacted).unwrap())
            .unwrap()
            .contains("compacted"));
        let created = message(r#"{"result":{"header":{"revision":"2"},"created":true}}"#);
        assert_eq!(cancelled(watch_result(&created).unwrap()), None);
        let error = message(r#"{"error":{"grpc_code":14,"message":"unavailable"}}"#);
        assert!(watch_result(&error).is_err());
        assert_eq!(int(Some(&json!("42"))), Some(42));
        assert_eq!(int(Some(&json!(42))), Some(42));
    }
}
