//! The Consul agent HTTP API, the part services and gateways use, served
//! under `/v1/` on the admin listener: register, deregister, checks,
//! maintenance, and the reads with blocking queries (`index`, `wait`).
//! Bodies are taken as Go's Consul client (PascalCase), Python's py-consul
//! (lowercase) and snake_case send them; unknown keys are ignored, as Consul
//! does; every bad value is a 400 with a JSON `{"error": ...}` naming it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;
use serde_json::{json, Map, Value};

use super::api::{authorize, is_host_name, kind, ApiRequest, Query};
use super::checks::MIN_INTERVAL;
use super::{Check, Instance, Origin, Probe, Refused, Registry, Status, Weights};

/// A blocking query waits this long when it names no `wait` (Consul's default).
const DEFAULT_WAIT: Duration = Duration::from_secs(300);
/// The longest `wait` a blocking query may ask for (Consul's cap).
const MAX_WAIT: Duration = Duration::from_secs(600);
/// The node every instance is reported on: usherd is one agent.
const NODE: &str = "usherd";
const DATACENTER: &str = "dc1";

type Reply = Response<Full<Bytes>>;

/// Answers one `/v1/...` request.
pub async fn handle(registry: &Arc<Registry>, request: ApiRequest<'_>) -> Reply {
    let query = Query::parse(request.query);
    let writes = !matches!(*request.method, Method::GET | Method::HEAD);
    if let Err(message) = authorize(registry, request.headers, &query, writes) {
        return error_reply(StatusCode::FORBIDDEN, message);
    }
    let segments: Vec<&str> = request.path.trim_start_matches('/').split('/').collect();
    match (request.method, segments.as_slice()) {
        (&Method::PUT, ["agent", "service", "register"]) => register(registry, &request, &query),
        (&Method::PUT, ["agent", "service", "deregister", id]) => {
            if registry.deregister(id) {
                empty_ok()
            } else {
                not_found(format!("Unknown service ID \"{id}\""))
            }
        }
        (&Method::PUT, ["agent", "check", action @ ("pass" | "warn" | "fail"), id]) => {
            let status = match *action {
                "pass" => Status::Passing,
                "warn" => Status::Warning,
                _ => Status::Critical,
            };
            check_update(registry, id, status, query.get("note"))
        }
        (&Method::PUT, ["agent", "check", "update", id]) => {
            let body = match object(&request.body) {
                Ok(body) => body,
                Err(message) => return bad_request(message),
            };
            let status = match body
                .get("status")
                .and_then(Value::as_str)
                .map(Status::parse)
            {
                Some(Some(status)) => status,
                _ => return bad_request("Status must be one of passing, warning, critical".into()),
            };
            let output = body.get("output").and_then(Value::as_str).map(String::from);
            check_update(registry, id, status, output)
        }
        (&Method::PUT, ["agent", "service", "maintenance", id]) => {
            let enable = match query.get("enable").as_deref() {
                Some("true") => true,
                Some("false") => false,
                _ => return bad_request("enable must be true or false".into()),
            };
            let reason = enable.then(|| {
                query
                    .get("reason")
                    .unwrap_or_else(|| "Maintenance mode is enabled for this service".into())
            });
            if registry.set_maintenance(id, reason) {
                empty_ok()
            } else {
                not_found(format!("Unknown service ID \"{id}\""))
            }
        }
        (&Method::GET, ["agent", "services"]) => {
            let services: Map<String, Value> = registry.read(|catalog| {
                catalog
                    .instances
                    .values()
                    .map(|instance| (instance.id.clone(), agent_service(instance)))
                    .collect()
            });
            json_ok(Value::Object(services), None)
        }
        (&Method::GET, ["agent", "service", id]) => {
            match registry.read(|catalog| catalog.instances.get(*id).map(agent_service)) {
                Some(service) => json_ok(service, None),
                None => not_found(format!("unknown service ID: {id}")),
            }
        }
        (&Method::GET, ["agent", "checks"]) => {
            let checks: Map<String, Value> = registry.read(|catalog| {
                catalog
                    .instances
                    .values()
                    .flat_map(|instance| {
                        instance
                            .checks
                            .iter()
                            .map(|check| (check.id.clone(), health_check(instance, check)))
                    })
                    .collect()
            });
            json_ok(Value::Object(checks), None)
        }
        (&Method::GET, ["health", "service", name]) => {
            let index =
                blocking_wait(registry, &query, |r| r.read(|c| c.service_index(name))).await;
            let passing = query.flag("passing");
            let tag = query.get("tag");
            let entries: Vec<Value> = registry.read(|catalog| {
                catalog
                    .named(name)
                    .filter(|instance| tag.as_ref().is_none_or(|tag| instance.tags.contains(tag)))
                    .filter(|instance| !passing || instance.status() == Status::Passing)
                    .map(|instance| {
                        json!({
                            "Node": node(),
                            "Service": agent_service(instance),
                            "Checks": instance.checks.iter().map(|check| health_check(instance, check)).collect::<Vec<_>>(),
                        })
                    })
                    .collect()
            });
            json_ok(Value::Array(entries), Some(index))
        }
        (&Method::GET, ["catalog", "services"]) => {
            let index = blocking_wait(registry, &query, |r| r.read(|c| c.index)).await;
            let services: Map<String, Value> = registry.read(|catalog| {
                catalog
                    .services()
                    .into_iter()
                    .map(|(name, tags)| (name, json!(tags)))
                    .collect()
            });
            json_ok(Value::Object(services), Some(index))
        }
        (&Method::GET, ["catalog", "service", name]) => {
            let index =
                blocking_wait(registry, &query, |r| r.read(|c| c.service_index(name))).await;
            let tag = query.get("tag");
            let entries: Vec<Value> = registry.read(|catalog| {
                catalog
                    .named(name)
                    .filter(|instance| tag.as_ref().is_none_or(|tag| instance.tags.contains(tag)))
                    .map(catalog_service)
                    .collect()
            });
            json_ok(Value::Array(entries), Some(index))
        }
        (&Method::GET, ["status", "leader"]) => json_ok(json!(request.agent), None),
        (&Method::GET, ["agent", "self"]) => json_ok(
            json!({ "Config": { "Datacenter": DATACENTER, "NodeName": NODE, "Server": false }, "Member": { "Name": NODE } }),
            None,
        ),
        _ => not_found(format!(
            "{} /v1{} is not part of usherd's registry API",
            request.method, request.path
        )),
    }
}

fn register(registry: &Arc<Registry>, request: &ApiRequest<'_>, query: &Query) -> Reply {
    let body = match object(&request.body) {
        Ok(body) => body,
        Err(message) => return bad_request(message),
    };
    let instance = match parse_registration(&body, request.peer) {
        Ok(instance) => instance,
        Err(message) => return bad_request(message),
    };
    // Without replace-existing-checks, checks of the same id keep their state.
    let instance = if query.flag("replace-existing-checks") {
        instance
    } else {
        keep_check_state(registry, instance)
    };
    match registry.register(instance) {
        Ok(()) => empty_ok(),
        Err(Refused::Invalid(message)) => bad_request(message),
        Err(refused @ Refused::Forbidden(_)) => {
            error_reply(StatusCode::FORBIDDEN, refused.to_string())
        }
        Err(refused @ Refused::Full(_)) => {
            error_reply(StatusCode::TOO_MANY_REQUESTS, refused.to_string())
        }
        Err(Refused::Conflict(message)) => error_reply(StatusCode::CONFLICT, message),
    }
}

/// A re-registration keeps the status of checks that keep their id.
fn keep_check_state(registry: &Registry, mut instance: Instance) -> Instance {
    registry.read(|catalog| {
        if let Some(old) = catalog.instances.get(&instance.id) {
            for check in &mut instance.checks {
                if let Some(before) = old
                    .checks
                    .iter()
                    .find(|c| c.id == check.id && c.probe == check.probe)
                {
                    check.status = before.status;
                    check.output = before.output.clone();
                    check.expires = before.expires;
                    check.critical_since = before.critical_since;
                }
            }
        }
    });
    instance
}

fn check_update(registry: &Registry, id: &str, status: Status, output: Option<String>) -> Reply {
    if registry.update_check(id, status, output) {
        empty_ok()
    } else {
        not_found(format!("Unknown check ID \"{id}\""))
    }
}

/// Registration bodies: `AgentServiceRegistration` in any key case.
pub fn parse_registration(body: &Map<String, Value>, peer: IpAddr) -> Result<Instance, String> {
    let name = match body.get("name") {
        Some(Value::String(name)) if !name.trim().is_empty() => name.clone(),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            return Err("Name: missing service name".into())
        }
        Some(other) => return Err(format!("Name: expected a string, found {}", kind(other))),
    };
    let id = match body.get("id") {
        None | Some(Value::Null) => name.clone(),
        Some(Value::String(id)) if id.is_empty() => name.clone(),
        Some(Value::String(id)) => id.clone(),
        Some(other) => return Err(format!("ID: expected a string, found {}", kind(other))),
    };
    if id.contains('/') {
        return Err(format!("ID: `{id}` must not contain `/`"));
    }
    let port = match body.get("port") {
        Some(Value::Number(port)) => match port.as_u64() {
            Some(port @ 1..=65535) => port as u16,
            _ => return Err(format!("Port: {port} is not from 1 to 65535")),
        },
        None | Some(Value::Null) => {
            return Err("Port: missing; a routable instance needs a port from 1 to 65535".into())
        }
        Some(other) => return Err(format!("Port: expected a number, found {}", kind(other))),
    };
    let address = match body.get("address") {
        None | Some(Value::Null) => peer.to_string(),
        Some(Value::String(address)) if address.is_empty() => peer.to_string(),
        Some(Value::String(address)) => {
            if address.parse::<IpAddr>().is_err() && !is_host_name(address) {
                return Err(format!(
                    "Address: `{address}` is neither an IP address nor a host name"
                ));
            }
            address.clone()
        }
        Some(other) => return Err(format!("Address: expected a string, found {}", kind(other))),
    };
    let tags = strings(body.get("tags"), "Tags")?;
    let meta = match body.get("meta") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(meta)) => meta
            .iter()
            .map(|(key, value)| match value {
                Value::String(value) => Ok((key.clone(), value.clone())),
                other => Err(format!(
                    "Meta.{key}: expected a string, found {}",
                    kind(other)
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(format!("Meta: expected an object, found {}", kind(other))),
    };
    let weights = match body.get("weights") {
        None | Some(Value::Null) => Weights::default(),
        Some(Value::Object(weights)) => {
            let weights = normalize(weights);
            let weight = |key: &str, label: &str, default: u32| match weights.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(Value::Number(n)) => match n.as_u64() {
                    Some(n) if n <= u64::from(crate::config::MAX_WEIGHT) => Ok(n as u32),
                    _ => Err(format!(
                        "Weights.{label}: {n} is not from 0 to {}",
                        crate::config::MAX_WEIGHT
                    )),
                },
                Some(other) => Err(format!(
                    "Weights.{label}: expected a number, found {}",
                    kind(other)
                )),
            };
            Weights {
                passing: weight("passing", "Passing", 1)?,
                warning: weight("warning", "Warning", 1)?,
            }
        }
        Some(other) => {
            return Err(format!(
                "Weights: expected an object, found {}",
                kind(other)
            ))
        }
    };
    let mut definitions = Vec::new();
    match body.get("check") {
        None | Some(Value::Null) => {}
        Some(Value::Object(check)) => definitions.push(("Check".to_string(), normalize(check))),
        Some(other) => return Err(format!("Check: expected an object, found {}", kind(other))),
    }
    match body.get("checks") {
        None | Some(Value::Null) => {}
        Some(Value::Array(checks)) => {
            for (position, check) in checks.iter().enumerate() {
                match check {
                    Value::Object(check) => {
                        definitions.push((format!("Checks[{position}]"), normalize(check)))
                    }
                    other => {
                        return Err(format!(
                            "Checks[{position}]: expected an object, found {}",
                            kind(other)
                        ))
                    }
                }
            }
        }
        Some(other) => return Err(format!("Checks: expected an array, found {}", kind(other))),
    }
    let several = definitions.len() > 1;
    let mut checks = Vec::new();
    for (position, (label, definition)) in definitions.iter().enumerate() {
        let default_id = if several {
            format!("service:{id}:{}", position + 1)
        } else {
            format!("service:{id}")
        };
        checks.push(parse_check(label, definition, &default_id, &name)?);
    }
    Ok(Instance {
        id,
        service: name,
        address,
        port,
        tags,
        meta,
        weights,
        checks,
        maintenance: None,
        origin: Origin::Consul,
        eureka: None,
        create_index: 0,
        modify_index: 0,
        modified_at: SystemTime::UNIX_EPOCH,
    })
}

fn parse_check(
    label: &str,
    check: &Map<String, Value>,
    default_id: &str,
    service: &str,
) -> Result<Check, String> {
    let text = |key: &str, field: &str| -> Result<Option<String>, String> {
        match check.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) if text.is_empty() => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(other) => Err(format!(
                "{label}.{field}: expected a string, found {}",
                kind(other)
            )),
        }
    };
    let duration = |key: &str, field: &str| -> Result<Option<Duration>, String> {
        text(key, field)?
            .map(|value| {
                parse_go_duration(&value).ok_or_else(|| {
                    format!(
                        "{label}.{field}: `{value}` is not a duration like \"10s\" or \"1m30s\""
                    )
                })
            })
            .transpose()
    };
    let id = text("checkid", "CheckID")?.unwrap_or_else(|| default_id.to_string());
    let name = text("name", "Name")?.unwrap_or_else(|| format!("Service '{service}' check"));
    let interval = duration("interval", "Interval")?;
    let timeout = duration("timeout", "Timeout")?.unwrap_or(Duration::from_secs(10));
    let probe = if let Some(ttl) = duration("ttl", "TTL")? {
        if ttl.is_zero() {
            return Err(format!("{label}.TTL must be above zero"));
        }
        Probe::Ttl { ttl }
    } else if let Some(url) = text("http", "HTTP")? {
        let Some(interval) = interval else {
            return Err(format!("{label}: an HTTP check needs an Interval"));
        };
        let headers = match check.get("header") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Object(headers)) => headers
                .iter()
                .flat_map(|(name, values)| match values {
                    Value::Array(values) => values
                        .iter()
                        .filter_map(Value::as_str)
                        .map(|v| (name.clone(), v.to_string()))
                        .collect(),
                    Value::String(value) => vec![(name.clone(), value.clone())],
                    _ => Vec::new(),
                })
                .collect(),
            Some(other) => {
                return Err(format!(
                    "{label}.Header: expected an object, found {}",
                    kind(other)
                ))
            }
        };
        Probe::Http {
            url,
            method: text("method", "Method")?.unwrap_or_else(|| "GET".into()),
            headers,
            interval: interval.max(MIN_INTERVAL),
            timeout,
        }
    } else if let Some(address) = text("tcp", "TCP")? {
        let Some(interval) = interval else {
            return Err(format!("{label}: a TCP check needs an Interval"));
        };
        Probe::Tcp {
            address,
            interval: interval.max(MIN_INTERVAL),
            timeout,
        }
    } else {
        return Err(format!(
            "{label}: a check needs TTL, HTTP or TCP (script, gRPC and Docker checks are not run by usherd)"
        ));
    };
    let status = match text("status", "Status")? {
        None => Status::Critical,
        Some(status) => Status::parse(&status).ok_or_else(|| {
            format!("{label}.Status: `{status}` is not passing, warning or critical")
        })?,
    };
    let deregister_after = duration(
        "deregistercriticalserviceafter",
        "DeregisterCriticalServiceAfter",
    )?;
    let now = SystemTime::now();
    Ok(Check {
        id,
        name,
        expires: match &probe {
            Probe::Ttl { ttl } if status != Status::Critical => Some(now + *ttl),
            _ => None,
        },
        probe,
        status,
        output: text("notes", "Notes")?.unwrap_or_default(),
        deregister_after,
        critical_since: (status == Status::Critical).then_some(now),
    })
}

/// Keys compared as Consul's decoder does: case-insensitively, and with
/// snake_case accepted (`deregister_critical_service_after`).
fn normalize(object: &Map<String, Value>) -> Map<String, Value> {
    object
        .iter()
        .map(|(key, value)| (key.to_ascii_lowercase().replace('_', ""), value.clone()))
        .collect()
}

/// The body as a JSON object with normalized top-level keys; an error says
/// what is wrong with it.
fn object(body: &Bytes) -> Result<Map<String, Value>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => Ok(normalize(&object)),
        Ok(other) => Err(format!(
            "the body must be a JSON object, not {}",
            kind(&other)
        )),
        Err(error) => Err(format!("the body is not valid JSON: {error}")),
    }
}

fn strings(value: Option<&Value>, field: &str) -> Result<Vec<String>, String> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(position, item)| match item {
                Value::String(text) => Ok(text.clone()),
                other => Err(format!(
                    "{field}[{position}]: expected a string, found {}",
                    kind(other)
                )),
            })
            .collect(),
        Some(other) => Err(format!(
            "{field}: expected an array of strings, found {}",
            kind(other)
        )),
    }
}

/// Go's `time.ParseDuration`: `10s`, `1m30s`, `1.5s`, `250ms`.
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut any = false;
    while !rest.is_empty() {
        let number_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let number: f64 = rest[..number_end].parse().ok()?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += number * seconds;
        rest = &rest[unit_end..];
        any = true;
    }
    (any && total.is_finite()).then(|| Duration::from_secs_f64(total))
}

fn node() -> Value {
    json!({ "ID": "", "Node": NODE, "Address": "127.0.0.1", "Datacenter": DATACENTER, "Meta": {} })
}

fn agent_service(instance: &Instance) -> Value {
    json!({
        "ID": instance.id,
        "Service": instance.service,
        "Tags": instance.tags,
        "Meta": instance.meta,
        "Port": instance.port,
        "Address": instance.address,
        "Weights": { "Passing": instance.weights.passing, "Warning": instance.weights.warning },
        "EnableTagOverride": false,
        "Datacenter": DATACENTER,
        "CreateIndex": instance.create_index,
        "ModifyIndex": instance.modify_index,
    })
}

fn health_check(instance: &Instance, check: &Check) -> Value {
    let (kind, interval, timeout) = match &check.probe {
        Probe::Ttl { .. } => ("ttl", String::new(), String::new()),
        Probe::Http {
            interval, timeout, ..
        } => ("http", format_go(*interval), format_go(*timeout)),
        Probe::Tcp {
            interval, timeout, ..
        } => ("tcp", format_go(*interval), format_go(*timeout)),
    };
    let status = if instance.maintenance.is_some() {
        Status::Critical
    } else {
        check.status
    };
    json!({
        "Node": NODE,
        "CheckID": check.id,
        "Name": check.name,
        "Status": status.name(),
        "Notes": "",
        "Output": instance.maintenance.clone().unwrap_or_else(|| check.output.clone()),
        "ServiceID": instance.id,
        "ServiceName": instance.service,
        "ServiceTags": instance.tags,
        "Type": kind,
        "Interval": interval,
        "Timeout": timeout,
        "CreateIndex": instance.create_index,
        "ModifyIndex": instance.modify_index,
    })
}

fn catalog_service(instance: &Instance) -> Value {
    json!({
        "ID": "",
        "Node": NODE,
        "Address": "127.0.0.1",
        "Datacenter": DATACENTER,
        "ServiceID": instance.id,
        "ServiceName": instance.service,
        "ServiceAddress": instance.address,
        "ServicePort": instance.port,
        "ServiceTags": instance.tags,
        "ServiceMeta": instance.meta,
        "ServiceWeights": { "Passing": instance.weights.passing, "Warning": instance.weights.warning },
        "CreateIndex": instance.create_index,
        "ModifyIndex": instance.modify_index,
    })
}

fn format_go(duration: Duration) -> String {
    format!("{}s", duration.as_secs_f64())
}

/// Consul's blocking query: with `?index=N`, waits until the index of what
/// is read passes N or `wait` (+ up to 1/16 of it, jitter) runs out, and
/// returns the index then. Without `index`, answers at once.
async fn blocking_wait(
    registry: &Arc<Registry>,
    query: &Query,
    index_of: impl Fn(&Registry) -> u64,
) -> u64 {
    let Some(seen) = query
        .get("index")
        .and_then(|index| index.parse::<u64>().ok())
    else {
        return index_of(registry);
    };
    let wait = query
        .get("wait")
        .and_then(|wait| parse_go_duration(&wait))
        .unwrap_or(DEFAULT_WAIT)
        .min(MAX_WAIT);
    let deadline = tokio::time::Instant::now() + wait + wait.mul_f64(fastrand::f64() / 16.0);
    let mut changes = registry.subscribe();
    loop {
        let now = index_of(registry);
        if now > seen || seen == 0 {
            return now;
        }
        // A change elsewhere in the catalog wakes this; look again.
        if tokio::time::timeout_at(deadline, changes.changed())
            .await
            .is_err()
        {
            return index_of(registry);
        }
    }
}

fn json_ok(body: Value, index: Option<u64>) -> Reply {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(index) = index {
        headers.insert("x-consul-index", HeaderValue::from(index));
        headers.insert("x-consul-knownleader", HeaderValue::from_static("true"));
        headers.insert("x-consul-lastcontact", HeaderValue::from_static("0"));
    }
    response
}

fn empty_ok() -> Reply {
    Response::new(Full::new(Bytes::new()))
}

fn error_reply(status: StatusCode, message: String) -> Reply {
    let mut response = json_ok(json!({ "error": message }), None);
    *response.status_mut() = status;
    response
}

fn bad_request(message: String) -> Reply {
    error_reply(StatusCode::BAD_REQUEST, message)
}

fn not_found(message: String) -> Reply {
    error_reply(StatusCode::NOT_FOUND, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::join_host_port;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("10"), None);
        assert_eq!(parse_go_duration("ten seconds"), None);
        assert_eq!(parse_go_duration(""), None);
    }

    #[test]
    fn every_key_case_is_one_registration() {
        let peer: IpAddr = "10.0.0.9".parse().unwrap();
        let go = json!({"ID": "api-1", "Name": "api", "Port": 8080, "Address": "10.0.0.5", "Tags": ["v1"], "Checks": null, "Check": {"TTL": "10s", "DeregisterCriticalServiceAfter": "1m"}});
        let python = json!({"id": "api-1", "name": "api", "port": 8080, "address": "10.0.0.5", "tags": ["v1"], "check": {"ttl": "10s", "deregister_critical_service_after": "1m"}});
        let parse = |value: Value| {
            let Value::Object(object) = value else {
                unreachable!()
            };
            parse_registration(&normalize(&object), peer).unwrap()
        };
        let (a, b) = (parse(go), parse(python));
        assert_eq!(a.id, b.id);
        assert_eq!(a.port, b.port);
        assert_eq!(a.checks[0].probe, b.checks[0].probe);
        assert_eq!(a.checks[0].id, "service:api-1");
        assert_eq!(a.checks[0].deregister_after, Some(Duration::from_secs(60)));
        assert_eq!(a.checks[0].status, Status::Critical);
    }

    #[test]
    fn an_instance_without_address_is_where_it_registered_from() {
        let peer: IpAddr = "10.0.0.9".parse().unwrap();
        let Value::Object(body) = json!({"Name": "api", "Port": 80}) else {
            unreachable!()
        };
        let instance = parse_registration(&normalize(&body), peer).unwrap();
        assert_eq!(instance.address, "10.0.0.9");
        assert_eq!(instance.id, "api");
        assert_eq!(join_host_port("fd00::5", 80), "[fd00::5]:80");
    }
}
