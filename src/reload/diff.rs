//! A short human description of what a reload changes, one line per changed
//! listener, vhost, upstream or section, e.g.
//! `upstream api: +127.0.0.1:9004, 127.0.0.1:9001 weight 5 -> 3` or
//! `upstream api: health_check.interval 3s -> 5s`. Logged with the reload and
//! shown in `GET /status` under `last_reload.changes`.
//!
//! Sections and named items (listeners, vhosts, upstreams, by name) are
//! compared typed first; only those that differ are serialized (`Config`'s
//! `Serialize`, with the file's key names) and compared as trees, so every
//! field is covered by construction, and the cost of a reload that changes
//! one upstream of thousands stays small. A test enumerates every field of
//! the serialized config and checks that a change of it is reported. Lists
//! inside an item are paired by their identity (a server's `addr`, a route's
//! `path`), not by position.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::config::Config;

/// The changes from `old` to `new`, in a stable order.
pub fn describe(old: &Config, new: &Config) -> Vec<String> {
    let mut changes = Vec::new();
    section(&mut changes, "global", &old.global, &new.global);
    section(&mut changes, "admin", &old.admin, &new.admin);
    named_list(
        &mut changes,
        "listener",
        &old.listeners,
        &new.listeners,
        |l| &l.name,
    );
    named_list(&mut changes, "vhost", &old.vhosts, &new.vhosts, |v| &v.name);
    named_list(
        &mut changes,
        "upstream",
        &old.upstreams,
        &new.upstreams,
        |u| &u.name,
    );
    section(&mut changes, "registry", &old.registry, &new.registry);
    changes
}

fn value<T: Serialize>(item: &T) -> Value {
    serde_json::to_value(item).expect("a config serializes")
}

/// `global: ...`, `admin added on ...`, `registry removed`.
fn section<T: Serialize + PartialEq>(changes: &mut Vec<String>, name: &str, old: &T, new: &T) {
    if old == new {
        return;
    }
    match (value(old), value(new)) {
        (Value::Null, after) => changes.push(format!("{name} added{}", summary(&after))),
        (_, Value::Null) => changes.push(format!("{name} removed")),
        (before, after) => {
            let mut parts = Vec::new();
            compare("", &before, &after, &mut parts);
            changes.push(format!("{name}: {}", parts.join(", ")));
        }
    }
}

/// One line per added, removed or changed item of a named list, new order
/// first. Linear time: configs with thousands of upstreams reload often.
fn named_list<T, K>(
    changes: &mut Vec<String>,
    label: &str,
    old: &[T],
    new: &[T],
    name: impl Fn(&T) -> &K,
) where
    T: Serialize + PartialEq,
    K: Eq + Hash + std::fmt::Display + ?Sized,
{
    let before: HashMap<&K, &T> = old.iter().map(|item| (name(item), item)).collect();
    let names: HashSet<&K> = new.iter().map(&name).collect();
    for item in new {
        let key = name(item);
        match before.get(key) {
            None => changes.push(format!("{label} {key} added{}", summary(&value(item)))),
            Some(previous) if *previous != item => {
                let mut parts = Vec::new();
                compare("", &value(*previous), &value(item), &mut parts);
                if !parts.is_empty() {
                    changes.push(format!("{label} {key}: {}", parts.join(", ")));
                }
            }
            Some(_) => {}
        }
    }
    for item in old {
        let key = name(item);
        if !names.contains(key) {
            changes.push(format!("{label} {key} removed"));
        }
    }
}

/// Appends one part per difference between `old` and `new` found at `path`.
fn compare(path: &str, old: &Value, new: &Value, parts: &mut Vec<String>) {
    if old == new {
        return;
    }
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, before, after) in pair_keys(a, b) {
                compare(&join(path, key), before, after, parts);
            }
        }
        (Value::Array(a), Value::Array(b)) => match identity(a, b) {
            Some(id) => compare_items(path, id, a, b, parts),
            None => parts.push(leaf_change(path, old, new)),
        },
        (Value::Null, Value::Object(_)) => parts.push(format!("{path} added")),
        (Value::Object(_), Value::Null) => parts.push(format!("{path} removed")),
        _ => parts.push(leaf_change(path, old, new)),
    }
}

/// Lists of servers (by `addr`) and routes (by `path`): `+addr`, `-addr`,
/// `addr weight 1 -> 2`; `route /v2/ added`, `route /v2/ upstream a -> b`.
fn compare_items(path: &str, id: &str, a: &[Value], b: &[Value], parts: &mut Vec<String>) {
    let servers = id == "addr";
    let label = singular(path.rsplit('.').next().unwrap_or(path));
    for (key, before, after) in pair_items(a, b, id) {
        let item = if servers {
            key.to_string()
        } else {
            format!("{label} {key}")
        };
        match (before, after) {
            (None, Some(_)) if servers => parts.push(format!("+{key}")),
            (Some(_), None) if servers => parts.push(format!("-{key}")),
            (None, Some(added)) => parts.push(format!("{item} added{}", summary(added))),
            (Some(_), None) => parts.push(format!("{item} removed")),
            (Some(before), Some(after)) => compare(&format!("{item} "), before, after, parts),
            (None, None) => {}
        }
    }
}

/// `interval 3s -> 5s`; secrets and certificates say only that they changed.
fn leaf_change(path: &str, old: &Value, new: &Value) -> String {
    let key = path.rsplit(['.', ' ']).next().unwrap_or(path);
    match key {
        "token" | "write_tokens" | "read_tokens" => format!("{path} changed"),
        "certs" => format!("certificates changed ({})", render(new)),
        _ => format!("{path} {} -> {}", render(old), render(new)),
    }
}

/// The key that identifies the items of a list, if they have one.
fn identity(a: &[Value], b: &[Value]) -> Option<&'static str> {
    ["addr", "path", "name"].into_iter().find(|id| {
        let has = |item: &Value| item.get(id).is_some_and(Value::is_string);
        a.iter().chain(b).all(has) && !(a.is_empty() && b.is_empty())
    })
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() || path.ends_with(' ') {
        format!("{path}{key}")
    } else {
        format!("{path}.{key}")
    }
}

/// `listeners` -> `listener`, `routes` -> `route`.
fn singular(plural: &str) -> &str {
    plural.strip_suffix('s').unwrap_or(plural)
}

/// What an added section is, in a few words: ` on 127.0.0.1:8080`,
/// ` (weighted, 3 servers)`, ` -> api`.
fn summary(item: &Value) -> String {
    if let Some(listen) = item.get("listen").and_then(Value::as_str) {
        return format!(" on {listen}");
    }
    if let Some(upstream) = item.get("upstream").and_then(Value::as_str) {
        return format!(" -> {upstream}");
    }
    match (item.get("strategy"), item.get("servers")) {
        (Some(strategy), Some(Value::Array(servers))) => {
            format!(" ({}, {} servers)", render(strategy), servers.len())
        }
        _ => String::new(),
    }
}

fn render(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(text) => text.clone(),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(render).collect();
            format!("[{}]", items.join(", "))
        }
        other => other.to_string(),
    }
}

/// The keys of both objects with their values (`Null` where missing): those
/// of `new` in order, then those only in `old`.
fn pair_keys<'a>(
    old: &'a Map<String, Value>,
    new: &'a Map<String, Value>,
) -> Vec<(&'a str, &'a Value, &'a Value)> {
    let mut pairs: Vec<_> = new
        .iter()
        .map(|(key, after)| (key.as_str(), old.get(key).unwrap_or(&Value::Null), after))
        .collect();
    for (key, before) in old {
        if !new.contains_key(key) {
            pairs.push((key.as_str(), before, &Value::Null));
        }
    }
    pairs
}

/// The items of both lists by their `id` field: new order first, then those
/// only in `old`. Linear time: configs with thousands of upstreams reload often.
fn pair_items<'a>(
    old: &'a [Value],
    new: &'a [Value],
    id: &str,
) -> Vec<(&'a str, Option<&'a Value>, Option<&'a Value>)> {
    let key = |item: &'a Value| item.get(id).and_then(Value::as_str).unwrap_or("");
    let old_by_key: std::collections::HashMap<&str, &Value> =
        old.iter().map(|item| (key(item), item)).collect();
    let new_keys: HashSet<&str> = new.iter().map(key).collect();
    let mut pairs: Vec<_> = new
        .iter()
        .map(|item| (key(item), old_by_key.get(key(item)).copied(), Some(item)))
        .collect();
    for item in old {
        if !new_keys.contains(key(item)) {
            pairs.push((key(item), Some(item), None));
        }
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_config;

    const BEFORE: &str = r#"
[listeners.web]
listen = "127.0.0.1:8080"
[vhosts.shop]
hosts = ["shop.example.com"]
routes = [{ path = "/", upstream = "api" }]
[upstreams.api]
strategy = "weighted"
servers = [{ addr = "127.0.0.1:9001", weight = 5 }, { addr = "127.0.0.1:9002" }]
"#;

    #[test]
    fn no_change_is_no_line() {
        let config = parse_config(BEFORE, "a.toml").unwrap();
        assert!(describe(&config, &config).is_empty());
    }

    #[test]
    fn servers_weights_routes_and_listeners() {
        let after = BEFORE
            .replace("weight = 5 }", "weight = 3 }, { addr = \"127.0.0.1:9004\" }")
            .replace(", { addr = \"127.0.0.1:9002\" }", "")
            .replace(
                "routes = [{ path = \"/\", upstream = \"api\" }]",
                "routes = [{ path = \"/\", upstream = \"api\" }, { path = \"/v2/\", upstream = \"api\" }]",
            )
            + "[listeners.admin2]\nlisten = \"127.0.0.1:8081\"\n[global]\nidle_timeout = \"30s\"\n";
        let old = parse_config(BEFORE, "a.toml").unwrap();
        let new = parse_config(&after, "b.toml").unwrap();
        assert_eq!(
            describe(&old, &new),
            [
                "global: idle_timeout 1m -> 30s",
                "listener admin2 added on 127.0.0.1:8081",
                "vhost shop: listeners [web] -> [web, admin2], route /v2/ added -> api",
                "upstream api: 127.0.0.1:9001 weight 5 -> 3, +127.0.0.1:9004, -127.0.0.1:9002",
            ]
        );
    }

    #[test]
    fn additions_and_removals_of_whole_sections() {
        let old = parse_config(BEFORE, "a.toml").unwrap();
        let after = BEFORE
            .replace("[vhosts.shop]", "[vhosts.store]")
            .replace("strategy = \"weighted\"", "strategy = \"random\"");
        let new = parse_config(&after, "b.toml").unwrap();
        assert_eq!(
            describe(&old, &new),
            [
                "vhost store added",
                "vhost shop removed",
                "upstream api: strategy weighted -> random"
            ]
        );
    }

    /// A config that sets every key the file has.
    const EVERY_KEY: &str = r#"
[global]
shutdown_timeout = "30s"
header_read_timeout = "10s"
idle_timeout = "60s"
send_timeout = "60s"
client_body_timeout = "60s"
client_body_min_rate = "1KiB"
max_connections = 1000
max_request_header_size = "64KiB"
max_request_body = "10MiB"

[admin]
listen = "127.0.0.1:9901"
token = "secret-one"

[listeners.plain]
listen = "127.0.0.1:8080"
redirect_https = true
https_port = 8443

[listeners.secure]
listen = "127.0.0.1:8443"
tls = { certs = [{ cert = "certs/example.pem", key = "certs/example.key" }], handshake_timeout = "10s" }

[vhosts.shop]
hosts = ["shop.example.com"]
listeners = ["secure"]
routes = [{ path = "/api/", upstream = "api", strip_prefix = true }]

[upstreams.api]
strategy = "consistent_hash"
hash_key = "header:x-user"
hash_balance_factor = 1.25
servers = [{ addr = "127.0.0.1:9001", weight = 2 }]
connect_timeout = "1s"
timeout = "30s"
retries = 2
max_connections_per_server = 100
protocol = "http1"
tls = true
tls_server_name = "api.internal"
ca_file = "certs/example.pem"
tls_insecure_skip_verify = false
health_check = { path = "/healthz", interval = "3s", timeout = "1s", rise = 2, fall = 3, expect_status = "200-399" }
outlier = { consecutive_failures = 5, ejection_time = "30s" }

[upstreams.fast]
strategy = "peak_ewma"
ewma_decay = "10s"
servers = [{ addr = "127.0.0.1:9002" }]

[upstreams.fast.discovery]
source = "dns"
name = "fast.internal"
port = 8080
family = "any"
weight = 4
resolvers = ["127.0.0.1:5353"]
respect_ttl = false
refresh = "5s"
timeout = "2s"
empty_after = "10s"
max_stale = "0s"

[upstreams.catalog]
strategy = "round_robin"
servers = [{ addr = "127.0.0.1:9003" }]

[upstreams.catalog.discovery]
source = "consul"
address = "http://127.0.0.1:8500"
service = "billing"
tag = "blue"
passing = true
datacenter = "east-1"
token = "consul-token-a"
wait = "4m"
stale = false

[upstreams.keeper]
strategy = "round_robin"
servers = [{ addr = "127.0.0.1:9004" }]

[upstreams.keeper.discovery]
source = "zookeeper"
hosts = "127.0.0.1:2181,127.0.0.1:2182"
base_path = "/discovery"
service = "orders"
session_timeout = "15s"

[upstreams.store]
strategy = "round_robin"
servers = [{ addr = "127.0.0.1:9005" }]

[upstreams.store.discovery]
source = "etcd"
endpoints = ["http://127.0.0.1:2379"]
prefix = "/services/payments/"

[registry]
state_file = "registry.json"
write_tokens = ["write-secret-1"]
read_tokens = ["read-secret-1"]
allow_addresses = ["10.0.0.0/8"]
max_services = 100
max_body = "1MiB"
"#;

    /// For each field of the typed config: an edit of the file that changes
    /// it, and what the reload's change line must say.
    const EDITS: &[(&str, &str, &str, &str)] = &[
        (
            "global.shutdown_timeout",
            r#"shutdown_timeout = "30s""#,
            r#"shutdown_timeout = "5s""#,
            "global: shutdown_timeout 30s -> 5s",
        ),
        (
            "global.header_read_timeout",
            r#"header_read_timeout = "10s""#,
            r#"header_read_timeout = "5s""#,
            "global: header_read_timeout 10s -> 5s",
        ),
        (
            "global.idle_timeout",
            r#"idle_timeout = "60s""#,
            r#"idle_timeout = "5s""#,
            "global: idle_timeout 1m -> 5s",
        ),
        (
            "global.send_timeout",
            r#"send_timeout = "60s""#,
            r#"send_timeout = "5s""#,
            "global: send_timeout 1m -> 5s",
        ),
        (
            "global.client_body_timeout",
            r#"client_body_timeout = "60s""#,
            r#"client_body_timeout = "5s""#,
            "global: client_body_timeout 1m -> 5s",
        ),
        (
            "global.client_body_min_rate",
            r#"client_body_min_rate = "1KiB""#,
            "client_body_min_rate = 0",
            "global: client_body_min_rate 1024 -> -",
        ),
        (
            "global.max_connections",
            "max_connections = 1000",
            "max_connections = 999",
            "global: max_connections 1000 -> 999",
        ),
        (
            "global.max_request_header_size",
            r#""64KiB""#,
            r#""32KiB""#,
            "global: max_request_header_size 65536 -> 32768",
        ),
        (
            "global.max_request_body",
            r#""10MiB""#,
            "0",
            "global: max_request_body 10485760 -> -",
        ),
        (
            "admin.listen",
            "127.0.0.1:9901",
            "127.0.0.1:9902",
            "admin: listen 127.0.0.1:9901 -> 127.0.0.1:9902",
        ),
        (
            "admin.token",
            "secret-one",
            "secret-two",
            "admin: token changed",
        ),
        (
            "listeners[].name",
            "[listeners.plain]",
            "[listeners.web]",
            "listener web added on 127.0.0.1:8080",
        ),
        (
            "listeners[].listen",
            "127.0.0.1:8080",
            "127.0.0.1:8081",
            "listener plain: listen 127.0.0.1:8080 -> 127.0.0.1:8081",
        ),
        (
            "listeners[].tls.certs",
            r#"cert = "certs/example.pem", key"#,
            r#"cert = "certs/../certs/example.pem", key"#,
            "listener secure: certificates changed",
        ),
        (
            "listeners[].tls.handshake_timeout",
            r#"handshake_timeout = "10s""#,
            r#"handshake_timeout = "3s""#,
            "listener secure: tls.handshake_timeout 10s -> 3s",
        ),
        (
            "listeners[].redirect_https",
            "https_port = 8443",
            "https_port = 9443",
            "listener plain: redirect_https 8443 -> 9443",
        ),
        (
            "vhosts[].name",
            "[vhosts.shop]",
            "[vhosts.store]",
            "vhost store added",
        ),
        (
            "vhosts[].hosts",
            r#"["shop.example.com"]"#,
            r#"["*.example.com"]"#,
            "vhost shop: hosts [shop.example.com] -> [*.example.com]",
        ),
        (
            "vhosts[].listeners",
            r#"listeners = ["secure"]"#,
            r#"listeners = ["plain"]"#,
            "vhost shop: listeners [secure] -> [plain]",
        ),
        (
            "vhosts[].routes[].path",
            r#"path = "/api/""#,
            r#"path = "/v2/""#,
            "vhost shop: route /v2/ added -> api, route /api/ removed",
        ),
        (
            "vhosts[].routes[].upstream",
            r#"upstream = "api", strip"#,
            r#"upstream = "fast", strip"#,
            "vhost shop: route /api/ upstream api -> fast",
        ),
        (
            "vhosts[].routes[].strip_prefix",
            "strip_prefix = true",
            "strip_prefix = false",
            "vhost shop: route /api/ strip_prefix true -> false",
        ),
        (
            "upstreams[].name",
            "[upstreams.fast]",
            "[upstreams.quick]",
            "upstream quick added (peak_ewma (ewma_decay 10s), 1 servers)",
        ),
        (
            "upstreams[].strategy",
            r#"ewma_decay = "10s""#,
            r#"ewma_decay = "5s""#,
            "upstream fast: strategy peak_ewma (ewma_decay 10s) -> peak_ewma (ewma_decay 5s)",
        ),
        (
            "upstreams[].servers[].addr",
            "127.0.0.1:9002",
            "127.0.0.1:9003",
            "upstream fast: +127.0.0.1:9003, -127.0.0.1:9002",
        ),
        (
            "upstreams[].servers[].weight",
            "weight = 2",
            "weight = 3",
            "upstream api: 127.0.0.1:9001 weight 2 -> 3",
        ),
        (
            "upstreams[].connect_timeout",
            r#"connect_timeout = "1s""#,
            r#"connect_timeout = "2s""#,
            "upstream api: connect_timeout 1s -> 2s",
        ),
        (
            "upstreams[].timeout",
            r#"timeout = "30s"
retries"#,
            r#"timeout = "20s"
retries"#,
            "upstream api: timeout 30s -> 20s",
        ),
        (
            "upstreams[].retries",
            "retries = 2",
            "retries = 1",
            "upstream api: retries 2 -> 1",
        ),
        (
            "upstreams[].max_connections_per_server",
            "max_connections_per_server = 100",
            "max_connections_per_server = 0",
            "upstream api: max_connections_per_server 100 -> -",
        ),
        (
            "upstreams[].hash_key",
            "header:x-user",
            "cookie:session",
            "upstream api: hash_key header:x-user -> cookie:session",
        ),
        (
            "upstreams[].hash_balance_factor",
            "1.25",
            "1.5",
            "upstream api: hash_balance_factor 1.25 -> 1.5",
        ),
        (
            "upstreams[].health_check.path",
            "/healthz",
            "/ready",
            "upstream api: health_check.path /healthz -> /ready",
        ),
        (
            "upstreams[].health_check.interval",
            r#"interval = "3s""#,
            r#"interval = "5s""#,
            "upstream api: health_check.interval 3s -> 5s",
        ),
        (
            "upstreams[].health_check.timeout",
            r#"timeout = "1s", rise"#,
            r#"timeout = "2s", rise"#,
            "upstream api: health_check.timeout 1s -> 2s",
        ),
        (
            "upstreams[].health_check.rise",
            "rise = 2",
            "rise = 3",
            "upstream api: health_check.rise 2 -> 3",
        ),
        (
            "upstreams[].health_check.fall",
            "fall = 3",
            "fall = 4",
            "upstream api: health_check.fall 3 -> 4",
        ),
        (
            "upstreams[].health_check.expect_status",
            r#""200-399""#,
            r#""200,204""#,
            "upstream api: health_check.expect_status [200-399] -> [200, 204]",
        ),
        (
            "upstreams[].outlier.consecutive_failures",
            "consecutive_failures = 5",
            "consecutive_failures = 3",
            "upstream api: outlier.consecutive_failures 5 -> 3",
        ),
        (
            "upstreams[].outlier.ejection_time",
            r#"ejection_time = "30s""#,
            r#"ejection_time = "1m""#,
            "upstream api: outlier.ejection_time 30s -> 1m",
        ),
        (
            "upstreams[].protocol",
            r#"protocol = "http1""#,
            r#"protocol = "h2""#,
            "upstream api: protocol http1 -> h2",
        ),
        ("upstreams[].tls", TLS_KEYS, "", "upstream api: tls removed"),
        (
            "upstreams[].tls.server_name",
            "api.internal",
            "billing.internal",
            "upstream api: tls.server_name api.internal -> billing.internal",
        ),
        (
            "upstreams[].tls.ca_file",
            r#"ca_file = "certs/example.pem""#,
            r#"ca_file = "certs/../certs/example.pem""#,
            "upstream api: tls.ca_file /",
        ),
        (
            "upstreams[].tls.insecure_skip_verify",
            "ca_file = \"certs/example.pem\"\ntls_insecure_skip_verify = false",
            "tls_insecure_skip_verify = true",
            "tls.insecure_skip_verify false -> true",
        ),
        ("upstreams[].discovery.source", "source = \"dns\"\nname = \"fast.internal\"\nport = 8080\nfamily = \"any\"\nweight = 4\n", "source = \"srv\"\nname = \"_http._tcp.fast.internal\"\n", "upstream fast: discovery.source dns -> srv"),
        ("upstreams[].discovery.name", "fast.internal", "quick.internal", "upstream fast: discovery.name fast.internal -> quick.internal"),
        ("upstreams[].discovery.port", "port = 8080", "port = 8081", "upstream fast: discovery.port 8080 -> 8081"),
        ("upstreams[].discovery.family", r#"family = "any""#, r#"family = "ipv6""#, "upstream fast: discovery.family any -> ipv6"),
        ("upstreams[].discovery.weight", "weight = 4", "weight = 5", "upstream fast: discovery.weight 4 -> 5"),
        ("upstreams[].discovery.resolvers", "127.0.0.1:5353", "127.0.0.2:53", "upstream fast: discovery.resolvers [127.0.0.1:5353] -> [127.0.0.2:53]"),
        ("upstreams[].discovery.respect_ttl", "respect_ttl = false", "respect_ttl = true", "upstream fast: discovery.respect_ttl false -> true"),
        ("upstreams[].discovery.refresh", r#"refresh = "5s""#, r#"refresh = "1s""#, "upstream fast: discovery.refresh 5s -> 1s"),
        ("upstreams[].discovery.timeout", r#"timeout = "2s""#, r#"timeout = "3s""#, "upstream fast: discovery.timeout 2s -> 3s"),
        ("upstreams[].discovery.empty_after", r#"empty_after = "10s""#, r#"empty_after = "20s""#, "upstream fast: discovery.empty_after 10s -> 20s"),
        ("upstreams[].discovery.max_stale", r#"max_stale = "0s""#, r#"max_stale = "1m""#, "upstream fast: discovery.max_stale - -> 1m"),
        ("upstreams[].discovery.address", "http://127.0.0.1:8500", "https://127.0.0.1:8501", "upstream catalog: discovery.address http://127.0.0.1:8500 -> https://127.0.0.1:8501"),
        ("upstreams[].discovery.service", r#"service = "billing""#, r#"service = "ledger""#, "upstream catalog: discovery.service billing -> ledger"),
        ("upstreams[].discovery.tag", r#"tag = "blue""#, r#"tag = "green""#, "upstream catalog: discovery.tag blue -> green"),
        ("upstreams[].discovery.passing", "passing = true", "passing = false", "upstream catalog: discovery.passing true -> false"),
        ("upstreams[].discovery.datacenter", "east-1", "west-2", "upstream catalog: discovery.datacenter east-1 -> west-2"),
        ("upstreams[].discovery.token", "consul-token-a", "consul-token-b", "upstream catalog: discovery.token changed"),
        ("upstreams[].discovery.wait", r#"wait = "4m""#, r#"wait = "30s""#, "upstream catalog: discovery.wait 4m -> 30s"),
        ("upstreams[].discovery.stale", "stale = false", "stale = true", "upstream catalog: discovery.stale false -> true"),
        ("upstreams[].discovery.hosts", "127.0.0.1:2181,127.0.0.1:2182", "127.0.0.1:2183", "upstream keeper: discovery.hosts 127.0.0.1:2181,127.0.0.1:2182 -> 127.0.0.1:2183"),
        ("upstreams[].discovery.base_path", r#"base_path = "/discovery""#, r#"base_path = "/services""#, "upstream keeper: discovery.base_path /discovery -> /services"),
        ("upstreams[].discovery.endpoints", "http://127.0.0.1:2379", "http://127.0.0.1:2380", "upstream store: discovery.endpoints [http://127.0.0.1:2379] -> [http://127.0.0.1:2380]"),
        ("upstreams[].discovery.prefix", "/services/payments/", "/services/ledger/", "upstream store: discovery.prefix /services/payments/ -> /services/ledger/"),
        ("upstreams[].discovery.session_timeout", r#"session_timeout = "15s""#, r#"session_timeout = "20s""#, "upstream keeper: discovery.session_timeout 15s -> 20s"),
        ("registry.state_file", "registry.json", "other.json", "registry: state_file "),
        ("registry.etcd", r#"state_file = "registry.json""#, r#"etcd = ["http://127.0.0.1:2379"]"#, "etcd [] -> [http://127.0.0.1:2379]"),
        ("registry.etcd_prefix", r#"state_file = "registry.json""#, "etcd = [\"http://127.0.0.1:2379\"]\netcd_prefix = \"/fleet/registry\"", "etcd_prefix /usherd/registry -> /fleet/registry"),
        ("registry.write_tokens", "write-secret-1", "write-secret-2", "registry: write_tokens changed"),
        ("registry.read_tokens", "read-secret-1", "read-secret-2", "registry: read_tokens changed"),
        ("registry.allow_addresses", "10.0.0.0/8", "10.0.0.0/16", "registry: allow_addresses [10.0.0.0/8] -> [10.0.0.0/16]"),
        ("registry.max_services", "max_services = 100", "max_services = 200", "registry: max_services 100 -> 200"),
        ("registry.max_body", r#"max_body = "1MiB""#, r#"max_body = "2MiB""#, "registry: max_body 1048576 -> 2097152"),
    ];

    /// The upstream TLS keys of `EVERY_KEY`, together.
    const TLS_KEYS: &str = r#"tls = true
tls_server_name = "api.internal"
ca_file = "certs/example.pem"
tls_insecure_skip_verify = false
"#;

    fn parse_every_key(text: &str) -> Config {
        let file = concat!(env!("CARGO_MANIFEST_DIR"), "/config/every-key.toml");
        parse_config(text, file).unwrap_or_else(|errors| panic!("{errors}\n{text}"))
    }

    /// Every field path of a serialized config, with `[]` for list items.
    fn field_paths(path: &str, value: &Value, paths: &mut std::collections::BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    let child_path = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    if matches!(child, Value::Object(_)) {
                        // An optional section is a field of its own too.
                        paths.insert(child_path.clone());
                    }
                    field_paths(&child_path, child, paths);
                }
            }
            Value::Array(items) if items.iter().all(Value::is_object) && !items.is_empty() => {
                for item in items {
                    field_paths(&format!("{path}[]"), item, paths);
                }
            }
            _ => {
                paths.insert(path.to_string());
            }
        }
    }

    #[test]
    fn a_change_of_every_field_is_reported() {
        let base = parse_every_key(EVERY_KEY);
        let mut fields = std::collections::BTreeSet::new();
        field_paths("", &serde_json::to_value(&base).unwrap(), &mut fields);
        // Sections that are only containers of the fields listed.
        for container in [
            "global",
            "admin",
            "listeners[].tls",
            "upstreams[].health_check",
            "upstreams[].outlier",
            "upstreams[].discovery",
            "registry",
        ] {
            fields.remove(container);
        }
        let edited: std::collections::BTreeSet<String> =
            EDITS.iter().map(|(field, ..)| field.to_string()).collect();
        assert_eq!(
            fields, edited,
            "every field of the config needs an edit in EDITS (and no edit names a field that is gone)"
        );
        for (field, from, to, expected) in EDITS {
            assert_eq!(
                EVERY_KEY.matches(from).count(),
                1,
                "{field}: `{from}` must occur once"
            );
            let after = parse_every_key(&EVERY_KEY.replace(from, to));
            let changes = describe(&base, &after);
            assert!(
                changes.iter().any(|line| line.contains(expected)),
                "{field}: expected a line with `{expected}`, got {changes:?}"
            );
        }
    }

    #[test]
    fn a_consul_token_change_never_shows_the_token() {
        let base = parse_every_key(EVERY_KEY);
        let after = parse_every_key(&EVERY_KEY.replace("consul-token-a", "consul-token-b"));
        let changes = describe(&base, &after);
        assert_eq!(changes, ["upstream catalog: discovery.token changed"]);
        let serialized = serde_json::to_string(&after).unwrap();
        assert!(!serialized.contains("consul-token"), "{serialized}");
    }
}
