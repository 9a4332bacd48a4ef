//! The `consul` source: the instances of one service in a Consul catalog
//! (or another usherd's registry), followed with blocking queries on
//! `GET /v1/health/service/:name`, as Consul's docs describe them: the
//! first query does not block; each next one sends `?index=` (the last
//! `X-Consul-Index`) and `&wait=`, and the agent answers when the service
//! changes or `wait` runs out. An index that goes backwards or is 0 starts
//! over without blocking.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use tokio::time::Instant;

use super::Answer;
use crate::config::{DiscoverySource, Server, MAX_WEIGHT};
use crate::registry::join_host_port;
use crate::tls::{client_config, Verify};

/// Two queries start at least this far apart, however fast the agent answers.
const MIN_QUERY_GAP: Duration = Duration::from_millis(100);
/// The largest answer read.
const MAX_ANSWER: usize = 32 * 1024 * 1024;

/// A `consul` source, ready to ask.
pub struct ConsulSource {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    /// `http://host:port/v1/health/service/api?passing&tag=v2`, without
    /// `index` and `wait`.
    url: String,
    token: Option<HeaderValue>,
    tag: Option<String>,
    passing: bool,
    /// The configured `wait`.
    wait: Duration,
    /// The `wait` of the next blocking query: shorter while an empty answer
    /// is held, so it is looked at again in time.
    next_wait: Duration,
    timeout: Duration,
    /// The `X-Consul-Index` of the last answer; 0: the next query does not block.
    index: u64,
    /// What the last query led to, which sets the pause after it.
    last: Outcome,
    /// When the last query started.
    started: Instant,
}

/// What a query led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Servers: ask again at once (the query blocks at the agent).
    Servers,
    /// No instances: ask again at once, blocking no longer than the follower says.
    Empty,
    /// The agent answered index 0, so it does not block: ask again after the pause.
    Polling,
    /// No usable answer: retry after the follower's backoff, without blocking.
    Failed,
}

impl ConsulSource {
    pub fn new(source: &DiscoverySource, timeout: Duration) -> Result<ConsulSource, String> {
        let DiscoverySource::Consul {
            address,
            service,
            tag,
            passing,
            datacenter,
            token,
            wait,
            stale,
        } = source
        else {
            return Err("not a consul source".into());
        };
        let token = token
            .as_deref()
            .map(|token| {
                let mut value = HeaderValue::from_str(token)
                    .map_err(|_| "the token is not a valid header value".to_string())?;
                value.set_sensitive(true);
                Ok::<_, String>(value)
            })
            .transpose()?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        let connector =
            HttpsConnector::from((http, client_config(Verify::SystemRoots, b"http/1.1")));
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(1)
            .build(connector);
        Ok(ConsulSource {
            client,
            url: health_url(
                address,
                service,
                tag.as_deref(),
                *passing,
                datacenter.as_deref(),
                *stale,
            ),
            token,
            tag: tag.clone(),
            passing: *passing,
            wait: *wait,
            next_wait: *wait,
            timeout,
            index: 0,
            last: Outcome::Failed,
            started: Instant::now(),
        })
    }

    /// Asks once: blocking when an index is known and the last query did not
    /// fail. Bounded by `timeout`, plus `wait` and its 1/16 jitter when blocking.
    pub async fn lookup(&mut self) -> Answer {
        let blocking = self.index > 0 && self.last != Outcome::Failed;
        let (url, limit) = if blocking {
            (
                format!(
                    "{}{}index={}&wait={}ms",
                    self.url,
                    if self.url.contains('?') { '&' } else { '?' },
                    self.index,
                    self.next_wait.as_millis()
                ),
                self.next_wait + self.next_wait / 16 + self.timeout,
            )
        } else {
            (self.url.clone(), self.timeout)
        };
        self.started = Instant::now();
        let answer = match tokio::time::timeout(limit, self.fetch(&url)).await {
            Ok(Ok((status, index, body))) => parse_health(
                status,
                index.as_ref(),
                &body,
                self.tag.as_deref(),
                self.passing,
            ),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(format!(
                "no answer within {}",
                humantime::format_duration(limit)
            )),
        };
        match answer {
            Ok((index, servers)) => {
                self.last = if index == 0 {
                    Outcome::Polling
                } else if servers.is_empty() {
                    Outcome::Empty
                } else {
                    Outcome::Servers
                };
                self.index = next_index(self.index, index);
                self.found(servers)
            }
            Err(error) => {
                self.last = Outcome::Failed;
                Answer::Failed(format!("{}: {error}", self.address()))
            }
        }
    }

    /// After servers or an empty answer the next query starts at once (it
    /// blocks at the agent), at most `wait` later when an empty answer is
    /// held; after a failure or an agent that does not block, in `wait`.
    pub async fn pause(&mut self, wait: Duration) {
        match self.last {
            Outcome::Failed | Outcome::Polling => tokio::time::sleep(wait).await,
            Outcome::Servers | Outcome::Empty => {
                self.next_wait = if self.last == Outcome::Empty {
                    self.wait.min(wait).max(Duration::from_millis(1))
                } else {
                    self.wait
                };
                tokio::time::sleep_until(self.started + MIN_QUERY_GAP).await;
            }
        }
    }

    fn found(&self, servers: Vec<Server>) -> Answer {
        if servers.is_empty() {
            return Answer::None(format!(
                "no {} instances at {}",
                if self.passing { "passing" } else { "healthy" },
                self.address()
            ));
        }
        Answer::Found {
            servers,
            ttl: Duration::MAX,
        }
    }

    /// `http://host:port/v1/health/service/api`, for messages.
    fn address(&self) -> &str {
        self.url.split('?').next().unwrap_or(&self.url)
    }

    /// One GET: the status, the `X-Consul-Index` header and the body.
    async fn fetch(&self, url: &str) -> Result<(StatusCode, Option<HeaderValue>, Bytes), String> {
        let mut request = Request::get(url).header(header::USER_AGENT, "usherd consul source");
        if let Some(token) = &self.token {
            request = request.header("x-consul-token", token.clone());
        }
        let request = request
            .body(Empty::new())
            .map_err(|error| error.to_string())?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|error| crate::error::with_causes(&error))?;
        let status = response.status();
        let index = response.headers().get("x-consul-index").cloned();
        let body = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|error| format!("reading the answer: {error}"))?
            .to_bytes();
        Ok((status, index, body))
    }
}

/// The query without `index` and `wait`; names and values percent-encoded.
fn health_url(
    address: &str,
    service: &str,
    tag: Option<&str>,
    passing: bool,
    datacenter: Option<&str>,
    stale: bool,
) -> String {
    let mut params = Vec::new();
    if passing {
        params.push("passing".to_string());
    }
    if let Some(tag) = tag {
        params.push(format!("tag={}", encode(tag)));
    }
    if let Some(datacenter) = datacenter {
        params.push(format!("dc={}", encode(datacenter)));
    }
    if stale {
        params.push("stale".to_string());
    }
    let mut url = format!("{address}/v1/health/service/{}", encode(service));
    if !params.is_empty() {
        url.push('?');
        url.push_str(&params.join("&"));
    }
    url
}

/// Percent-encodes all but RFC 3986's unreserved characters.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The index the next query sends, after an answer with index `returned`:
/// Consul's rule is to start over (0, no blocking) when the index goes
/// backwards (a restored or rebuilt catalog) or is 0.
fn next_index(previous: u64, returned: u64) -> u64 {
    if returned < previous {
        0
    } else {
        returned
    }
}

/// An entry of `/v1/health/service/:name`; unknown keys are ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HealthEntry {
    #[serde(default)]
    node: Option<Node>,
    service: Service,
    #[serde(default)]
    checks: Vec<CheckEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Node {
    #[serde(default)]
    address: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Service {
    #[serde(default)]
    address: String,
    port: u16,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    weights: Option<Weights>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Weights {
    passing: u32,
    warning: u32,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CheckEntry {
    status: String,
}

/// An answer as the servers it names, sorted by address, and its index.
/// Fails on a status other than 200, a missing or bad `X-Consul-Index`,
/// or a body that is not a list of health entries. An instance counts when
/// its worst check passes (or warns, unless `passing`), it has a port and
/// an address (`Service.Address`, else `Node.Address`), and its weight for
/// that state (`Weights.Passing` or `.Warning`, 1 when absent) is not 0.
fn parse_health(
    status: StatusCode,
    index: Option<&HeaderValue>,
    body: &[u8],
    tag: Option<&str>,
    passing: bool,
) -> Result<(u64, Vec<Server>), String> {
    if status != StatusCode::OK {
        let text = String::from_utf8_lossy(body);
        let text: String = text.trim().chars().take(200).collect();
        return Err(if text.is_empty() {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status}: {text}")
        });
    }
    let index = index
        .ok_or("the answer has no X-Consul-Index header")?
        .to_str()
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
        .ok_or("the answer's X-Consul-Index is not a number")?;
    let entries: Vec<HealthEntry> = serde_json::from_slice(body)
        .map_err(|error| format!("the answer is not a list of health entries: {error}"))?;
    let mut servers: Vec<Server> = entries
        .iter()
        .filter_map(|entry| server_of(entry, tag, passing))
        .collect();
    servers.sort_by(|a, b| a.addr.cmp(&b.addr));
    servers.dedup_by(|a, b| a.addr == b.addr);
    Ok((index, servers))
}

/// The server an entry stands for, if it is routed to.
fn server_of(entry: &HealthEntry, tag: Option<&str>, passing: bool) -> Option<Server> {
    let service = &entry.service;
    if let Some(tag) = tag {
        if !service.tags.iter().flatten().any(|t| t == tag) {
            return None;
        }
    }
    let warning = match worst_status(&entry.checks) {
        Health::Passing => false,
        Health::Warning if !passing => true,
        Health::Warning | Health::Critical => return None,
    };
    let address = if service.address.is_empty() {
        entry.node.as_ref().map_or("", |node| node.address.as_str())
    } else {
        service.address.as_str()
    };
    if address.is_empty() || service.port == 0 {
        return None;
    }
    let weight = match &service.weights {
        None => 1,
        Some(weights) if warning => weights.warning,
        Some(weights) => weights.passing,
    };
    (weight > 0).then(|| Server {
        addr: join_host_port(address, service.port),
        weight: weight.clamp(1, MAX_WEIGHT),
    })
}

/// An instance's state: that of its worst check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Health {
    Passing,
    Warning,
    Critical,
}

/// `passing` with no checks; a status Consul does not name (say
/// `maintenance`) counts as critical.
fn worst_status(checks: &[CheckEntry]) -> Health {
    checks
        .iter()
        .map(|check| match check.status.as_str() {
            "passing" => Health::Passing,
            "warning" => Health::Warning,
            _ => Health::Critical,
        })
        .max()
        .unwrap_or(Health::Passing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(address: &str, node: &str, port: u16, status: &str, weights: &str) -> String {
        format!(
            r#"{{"Node":{{"Node":"n","Address":"{node}"}},"Service":{{"ID":"x","Service":"api","Tags":["v2"],"Address":"{address}","Port":{port}{weights}}},"Checks":[{{"CheckID":"serfHealth","Status":"passing"}},{{"CheckID":"c","Status":"{status}"}}]}}"#
        )
    }

    fn parse(body: &str, passing: bool) -> Result<(u64, Vec<Server>), String> {
        parse_health(
            StatusCode::OK,
            Some(&HeaderValue::from_static("42")),
            body.as_bytes(),
            None,
            passing,
        )
    }

    fn addrs(servers: &[Server]) -> Vec<(&str, u32)> {
        servers
            .iter()
            .map(|s| (s.addr.as_str(), s.weight))
            .collect()
    }

    #[test]
    fn an_index_that_goes_backwards_or_is_zero_starts_over() {
        assert_eq!(next_index(0, 7), 7);
        assert_eq!(next_index(7, 7), 7);
        assert_eq!(next_index(7, 9), 9);
        assert_eq!(next_index(9, 3), 0);
        assert_eq!(next_index(9, 0), 0);
        assert_eq!(next_index(0, 0), 0);
    }

    #[test]
    fn servers_take_the_service_address_else_the_node_address_sorted() {
        let body = format!(
            "[{},{},{}]",
            entry("10.0.0.9", "192.0.2.1", 8080, "passing", ""),
            entry("", "10.0.0.2", 9090, "passing", ""),
            entry("fd00::5", "192.0.2.1", 80, "passing", ""),
        );
        let (index, servers) = parse(&body, true).unwrap();
        assert_eq!(index, 42);
        assert_eq!(
            addrs(&servers),
            [
                ("10.0.0.2:9090", 1),
                ("10.0.0.9:8080", 1),
                ("[fd00::5]:80", 1)
            ]
        );
    }

    #[test]
    fn weights_follow_the_state_and_zero_is_not_routed() {
        let weights = |p: u32, w: u32| format!(r#","Weights":{{"Passing":{p},"Warning":{w}}}"#);
        let body = format!(
            "[{},{},{},{},{}]",
            entry("10.0.0.1", "", 80, "passing", &weights(5, 1)),
            entry("10.0.0.2", "", 80, "warning", &weights(5, 2)),
            entry("10.0.0.3", "", 80, "critical", &weights(5, 2)),
            entry("10.0.0.4", "", 80, "passing", &weights(0, 1)),
            entry("10.0.0.5", "", 80, "passing", &weights(65535, 1)),
        );
        let (_, servers) = parse(&body, false).unwrap();
        assert_eq!(
            addrs(&servers),
            [
                ("10.0.0.1:80", 5),
                ("10.0.0.2:80", 2),
                ("10.0.0.5:80", MAX_WEIGHT)
            ]
        );
        let (_, servers) = parse(&body, true).unwrap();
        assert_eq!(
            addrs(&servers),
            [("10.0.0.1:80", 5), ("10.0.0.5:80", MAX_WEIGHT)]
        );
    }

    #[test]
    fn a_tag_filters_and_an_empty_list_is_no_servers() {
        let body = format!("[{}]", entry("10.0.0.1", "", 80, "passing", ""));
        let only = |tag| {
            parse_health(
                StatusCode::OK,
                Some(&HeaderValue::from_static("3")),
                body.as_bytes(),
                Some(tag),
                true,
            )
        };
        assert_eq!(only("v2").unwrap().1.len(), 1);
        assert_eq!(only("v3").unwrap().1.len(), 0);
        assert_eq!(parse("[]", true), Ok((42, Vec::new())));
    }

    #[test]
    fn errors_and_bad_answers_fail() {
        let index = HeaderValue::from_static("5");
        let error = parse_health(
            StatusCode::INTERNAL_SERVER_ERROR,
            Some(&index),
            b"rpc error: No cluster leader",
            None,
            true,
        )
        .unwrap_err();
        assert!(
            error.contains("500") && error.contains("No cluster leader"),
            "{error}"
        );
        let error = parse_health(StatusCode::FORBIDDEN, None, b"", None, true).unwrap_err();
        assert!(error.contains("403"), "{error}");
        let error = parse_health(StatusCode::OK, None, b"[]", None, true).unwrap_err();
        assert!(error.contains("X-Consul-Index"), "{error}");
        let bad_index = HeaderValue::from_static("soon");
        assert!(parse_health(StatusCode::OK, Some(&bad_index), b"[]", None, true).is_err());
        for body in [
            "",
            "{",
            r#"{"Service":{}}"#,
            r#"[{"Node":{}}]"#,
            r#"[{"Service":{"Port":"x"}}]"#,
        ] {
            let error = parse(body, true).unwrap_err();
            assert!(
                error.contains("not a list of health entries"),
                "{body}: {error}"
            );
        }
    }

    #[test]
    fn the_query_encodes_names_and_options() {
        assert_eq!(
            health_url(
                "http://127.0.0.1:8500",
                "web api",
                Some("v/2"),
                true,
                Some("dc2"),
                true
            ),
            "http://127.0.0.1:8500/v1/health/service/web%20api?passing&tag=v%2F2&dc=dc2&stale"
        );
        assert_eq!(
            health_url("http://127.0.0.1:8500", "api", None, false, None, false),
            "http://127.0.0.1:8500/v1/health/service/api"
        );
    }
}
