//! A short human description of what a reload changes, one line per changed
//! listener, vhost, upstream or setting, e.g.
//! `upstream api: +127.0.0.1:9004, 127.0.0.1:9001 weight 5 -> 3` or
//! `vhost shop: route /v2/ added`. Logged with the reload and shown in
//! `GET /status` under `last_reload.changes`.

use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::hash::Hash;
use std::time::Duration;

use crate::config::{Config, Listener, ListenerTls, Route, Transport, Upstream, Vhost};

/// The changes from `old` to `new`, in a stable order.
pub fn describe(old: &Config, new: &Config) -> Vec<String> {
    let mut changes = Vec::new();
    global_changes(old, new, &mut changes);
    admin_changes(old, new, &mut changes);
    for (name, before, after) in pair_up(&old.listeners, &new.listeners, |l| &l.name) {
        match (before, after) {
            (None, Some(after)) => {
                changes.push(format!("listener {name} added on {}", after.listen))
            }
            (Some(_), None) => changes.push(format!("listener {name} removed")),
            (Some(before), Some(after)) => {
                let parts = listener_changes(before, after);
                if !parts.is_empty() {
                    changes.push(format!("listener {name}: {}", parts.join(", ")));
                }
            }
            (None, None) => {}
        }
    }
    for (name, before, after) in pair_up(&old.vhosts, &new.vhosts, |v| &v.name) {
        match (before, after) {
            (None, Some(_)) => changes.push(format!("vhost {name} added")),
            (Some(_), None) => changes.push(format!("vhost {name} removed")),
            (Some(before), Some(after)) => {
                let parts = vhost_changes(before, after);
                if !parts.is_empty() {
                    changes.push(format!("vhost {name}: {}", parts.join(", ")));
                }
            }
            (None, None) => {}
        }
    }
    for (name, before, after) in pair_up(&old.upstreams, &new.upstreams, |u| &u.name) {
        match (before, after) {
            (None, Some(after)) => changes.push(format!(
                "upstream {name} added ({}, {} servers)",
                after.strategy.name(),
                after.servers.len()
            )),
            (Some(_), None) => changes.push(format!("upstream {name} removed")),
            (Some(before), Some(after)) => {
                let parts = upstream_changes(before, after);
                if !parts.is_empty() {
                    changes.push(format!("upstream {name}: {}", parts.join(", ")));
                }
            }
            (None, None) => {}
        }
    }
    changes
}

fn global_changes(old: &Config, new: &Config, changes: &mut Vec<String>) {
    let (a, b) = (&old.global, &new.global);
    let mut parts = Vec::new();
    changed_duration(
        &mut parts,
        "shutdown_timeout",
        a.shutdown_timeout,
        b.shutdown_timeout,
    );
    changed_duration(
        &mut parts,
        "header_read_timeout",
        a.header_read_timeout,
        b.header_read_timeout,
    );
    changed_duration(&mut parts, "idle_timeout", a.idle_timeout, b.idle_timeout);
    changed(
        &mut parts,
        "max_connections",
        a.max_connections,
        b.max_connections,
    );
    changed(
        &mut parts,
        "max_request_header_size",
        a.max_request_header_size,
        b.max_request_header_size,
    );
    changed(
        &mut parts,
        "max_request_body",
        a.max_request_body.unwrap_or(0),
        b.max_request_body.unwrap_or(0),
    );
    if !parts.is_empty() {
        changes.push(format!("global: {}", parts.join(", ")));
    }
}

fn admin_changes(old: &Config, new: &Config, changes: &mut Vec<String>) {
    match (&old.admin, &new.admin) {
        (None, Some(admin)) => changes.push(format!("admin added on {}", admin.listen)),
        (Some(_), None) => changes.push("admin removed".into()),
        (Some(a), Some(b)) => {
            let mut parts = Vec::new();
            changed(&mut parts, "listen", a.listen, b.listen);
            if a.token != b.token {
                parts.push("token changed".into());
            }
            if !parts.is_empty() {
                changes.push(format!("admin: {}", parts.join(", ")));
            }
        }
        (None, None) => {}
    }
}

fn vhost_changes(before: &Vhost, after: &Vhost) -> Vec<String> {
    let mut parts = Vec::new();
    for host in &after.hosts {
        if !before.hosts.contains(host) {
            parts.push(format!("+host {host}"));
        }
    }
    for host in &before.hosts {
        if !after.hosts.contains(host) {
            parts.push(format!("-host {host}"));
        }
    }
    if before.listeners != after.listeners {
        parts.push(format!(
            "listeners {} -> {}",
            before.listeners.join("+"),
            after.listeners.join("+")
        ));
    }
    for (path, old_route, new_route) in pair_up(&before.routes, &after.routes, |r: &Route| &r.path)
    {
        match (old_route, new_route) {
            (None, Some(route)) => parts.push(format!("route {path} added -> {}", route.upstream)),
            (Some(_), None) => parts.push(format!("route {path} removed")),
            (Some(a), Some(b)) => {
                if a.upstream != b.upstream {
                    parts.push(format!(
                        "route {path} -> {} (was {})",
                        b.upstream, a.upstream
                    ));
                }
                if a.strip_prefix != b.strip_prefix {
                    let state = if b.strip_prefix { "on" } else { "off" };
                    parts.push(format!("route {path} strip_prefix {state}"));
                }
            }
            (None, None) => {}
        }
    }
    parts
}

fn listener_changes(before: &Listener, after: &Listener) -> Vec<String> {
    let mut parts = Vec::new();
    if before.listen != after.listen {
        parts.push(format!("{} -> {}", before.listen, after.listen));
    }
    match (&before.tls, &after.tls) {
        (None, Some(_)) => parts.push("tls on".into()),
        (Some(_), None) => parts.push("tls off".into()),
        (Some(old), Some(new)) => {
            if old.certs != new.certs {
                let names = |tls: &ListenerTls| {
                    tls.certs
                        .certs()
                        .iter()
                        .map(|cert| cert.names.join("+"))
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                parts.push(format!("certificates changed ({})", names(new)));
            }
            changed_duration(
                &mut parts,
                "handshake_timeout",
                old.handshake_timeout,
                new.handshake_timeout,
            );
        }
        (None, None) => {}
    }
    let redirect = |l: &Listener| l.redirect_https.map_or("-".to_string(), |p| p.to_string());
    changed(
        &mut parts,
        "redirect_https",
        redirect(before),
        redirect(after),
    );
    parts
}

fn upstream_changes(before: &Upstream, after: &Upstream) -> Vec<String> {
    let mut parts = Vec::new();
    if before.transport != after.transport {
        parts.push(format!(
            "transport {} -> {}",
            transport_name(&before.transport),
            transport_name(&after.transport)
        ));
    }
    changed(
        &mut parts,
        "strategy",
        before.strategy.name(),
        after.strategy.name(),
    );
    let hash_key = |u: &Upstream| {
        u.hash
            .as_ref()
            .map_or("-".to_string(), |h| h.key.to_string())
    };
    changed(&mut parts, "hash_key", hash_key(before), hash_key(after));
    let factor = |u: &Upstream| {
        u.hash
            .as_ref()
            .and_then(|h| h.balance_factor)
            .map_or("-".to_string(), |f| f.to_string())
    };
    changed(
        &mut parts,
        "hash_balance_factor",
        factor(before),
        factor(after),
    );
    for (addr, old_server, new_server) in pair_up(&before.servers, &after.servers, |s| &s.addr) {
        match (old_server, new_server) {
            (None, Some(_)) => parts.push(format!("+{addr}")),
            (Some(_), None) => parts.push(format!("-{addr}")),
            (Some(a), Some(b)) if a.weight != b.weight => {
                parts.push(format!("{addr} weight {} -> {}", a.weight, b.weight))
            }
            _ => {}
        }
    }
    changed_duration(
        &mut parts,
        "connect_timeout",
        before.connect_timeout,
        after.connect_timeout,
    );
    changed_duration(&mut parts, "timeout", before.timeout, after.timeout);
    changed(&mut parts, "retries", before.retries, after.retries);
    changed(
        &mut parts,
        "max_connections_per_server",
        before.max_connections_per_server.unwrap_or(0),
        after.max_connections_per_server.unwrap_or(0),
    );
    parts
}

/// `h2c`, `http1+tls`, `h2+tls(ca certs/ca.pem)`, ...
fn transport_name(transport: &Transport) -> String {
    let mut name = transport.protocol.name().to_string();
    if let Some(tls) = &transport.tls {
        name.push_str("+tls");
        let mut details = Vec::new();
        if let Some(server_name) = &tls.server_name {
            details.push(format!("name {server_name}"));
        }
        if let Some(ca) = &tls.ca {
            details.push(format!("ca {}", ca.path.display()));
        }
        if tls.insecure_skip_verify {
            details.push("unverified".into());
        }
        if !details.is_empty() {
            name.push_str(&format!("({})", details.join(", ")));
        }
    }
    name
}

fn changed<T: PartialEq + Display>(parts: &mut Vec<String>, what: &str, before: T, after: T) {
    if before != after {
        parts.push(format!("{what} {before} -> {after}"));
    }
}

fn changed_duration(parts: &mut Vec<String>, what: &str, before: Duration, after: Duration) {
    if before != after {
        parts.push(format!(
            "{what} {} -> {}",
            humantime::format_duration(before),
            humantime::format_duration(after)
        ));
    }
}

/// Items of both lists by key: new order first, then those only in `old`.
/// Linear time: configs with thousands of upstreams reload often.
fn pair_up<'a, T, K: Eq + Hash + ?Sized + 'a>(
    old: &'a [T],
    new: &'a [T],
    key: impl Fn(&'a T) -> &'a K,
) -> Vec<(&'a K, Option<&'a T>, Option<&'a T>)> {
    let old_by_key: HashMap<&K, &T> = old.iter().map(|item| (key(item), item)).collect();
    let new_keys: HashSet<&K> = new.iter().map(&key).collect();
    let mut pairs: Vec<_> = new
        .iter()
        .map(|item| {
            let name = key(item);
            (name, old_by_key.get(name).copied(), Some(item))
        })
        .collect();
    for item in old {
        let name = key(item);
        if !new_keys.contains(name) {
            pairs.push((name, Some(item), None));
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
                "vhost shop: listeners web -> web+admin2, route /v2/ added -> api",
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
}
