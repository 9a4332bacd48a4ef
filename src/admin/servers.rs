//! Runtime changes to one server: `drain`, `enable` and `weight`
//! (docs/operations.md#the-admin-api). They take effect at once and last while
//! the server stays in the config (same upstream name and address, or found
//! again by discovery), across reloads; `/status` shows them as overrides. A
//! drained server takes no new request; the requests it has finish. A weight
//! override publishes a snapshot with the upstream rebuilt (the next
//! generation), so every strategy sees it from the next pick.

use std::sync::Arc;

use http::StatusCode;
use serde_json::{json, Value};

use crate::config::MAX_WEIGHT;
use crate::control::App;
use crate::control::Trigger;
use crate::snapshot::Snapshot;

/// What a call asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerCall {
    Drain,
    Enable,
    Weight,
}

/// A refused call: its status and message.
pub type Refusal = (StatusCode, String);

/// `upstreams/NAME/servers/ADDR/ACTION` (the part after `/`) as
/// (upstream, server address, call); the address may be percent-encoded.
pub fn parse_path(path: &str) -> Option<(String, String, ServerCall)> {
    let rest = path.strip_prefix("/upstreams/")?;
    let (upstream, rest) = rest.split_once("/servers/")?;
    let (addr, action) = rest.rsplit_once('/')?;
    let call = match action {
        "drain" => ServerCall::Drain,
        "enable" => ServerCall::Enable,
        "weight" => ServerCall::Weight,
        _ => return None,
    };
    Some((percent_decode(upstream)?, percent_decode(addr)?, call))
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = text.get(index + 1..index + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn not_found(snapshot: &Snapshot, upstream: &str, addr: &str) -> Refusal {
    let message = if snapshot.upstream(upstream).is_none() {
        format!("no upstream named `{upstream}`")
    } else {
        format!("upstream `{upstream}` has no server `{addr}`")
    };
    (StatusCode::NOT_FOUND, message)
}

/// Drains (`true`) or enables (`false`) a server.
pub fn set_draining(
    app: &App,
    upstream: &str,
    addr: &str,
    draining: bool,
) -> Result<Value, Refusal> {
    let snapshot = app.snapshots.load();
    let endpoint = snapshot
        .upstream(upstream)
        .and_then(|pool| pool.endpoint(addr))
        .ok_or_else(|| not_found(&snapshot, upstream, addr))?;
    endpoint.health.set_draining(draining);
    tracing::info!(%upstream, server = %addr, draining, "server {} by the admin API", if draining { "drained" } else { "enabled" });
    Ok(json!({
        "upstream": upstream,
        "server": addr,
        "draining": draining,
        "in_flight": endpoint.stats.in_flight(),
    }))
}

/// Parses a weight body: an integer from 1 to `MAX_WEIGHT`.
pub fn parse_weight(body: &[u8]) -> Result<u32, Refusal> {
    let text = std::str::from_utf8(body).unwrap_or("").trim();
    let bad = || {
        (
            StatusCode::BAD_REQUEST,
            format!("the body must be a weight: an integer from 1 to {MAX_WEIGHT}, not `{text}`"),
        )
    };
    let weight: u64 = text.parse().map_err(|_| bad())?;
    match u32::try_from(weight) {
        Ok(weight) if (1..=MAX_WEIGHT).contains(&weight) => Ok(weight),
        _ => Err(bad()),
    }
}

/// Sets a server's weight; setting the config's weight removes the override.
pub async fn set_weight(
    app: &Arc<App>,
    upstream: &str,
    addr: &str,
    weight: u32,
) -> Result<Value, Refusal> {
    let mut control = app.control.lock().await;
    let current = app.snapshots.load_full();
    let endpoint = current
        .upstream(upstream)
        .and_then(|pool| pool.endpoint(addr))
        .ok_or_else(|| not_found(&current, upstream, addr))?;
    let configured = endpoint.configured_weight;
    let before = endpoint.weight;
    let overrides = &mut control.runtime.weight_overrides;
    let weights = overrides.entry(upstream.to_string()).or_default();
    if weight == configured {
        weights.remove(addr);
    } else {
        weights.insert(addr.to_string(), weight);
    }
    overrides.retain(|_, weights| !weights.is_empty());
    let strategy = current
        .upstream(upstream)
        .map_or("-", |pool| pool.strategy.name());
    app.publish_runtime(
        &mut control,
        &[upstream],
        Trigger::Admin,
        vec![format!(
            "upstream {upstream}: {addr} weight {before} -> {weight} (admin)"
        )],
    );
    drop(control);
    tracing::info!(%upstream, server = %addr, weight, configured, "weight set by the admin API");
    let mut answer = json!({
        "upstream": upstream,
        "server": addr,
        "weight": weight,
        "configured_weight": configured,
    });
    if matches!(strategy, "round_robin" | "random" | "peak_ewma") {
        answer["warning"] = json!(format!("strategy {strategy} ignores weights"));
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_upstream_server_and_call() {
        assert_eq!(
            parse_path("/upstreams/api/servers/127.0.0.1:9001/drain"),
            Some(("api".into(), "127.0.0.1:9001".into(), ServerCall::Drain))
        );
        assert_eq!(
            parse_path("/upstreams/api/servers/%5B%3A%3A1%5D%3A80/weight"),
            Some(("api".into(), "[::1]:80".into(), ServerCall::Weight))
        );
        assert_eq!(parse_path("/upstreams/api/servers/x/explode"), None);
        assert_eq!(parse_path("/upstreams/api/x/drain"), None);
    }

    #[test]
    fn weights_are_integers_in_range() {
        assert_eq!(parse_weight(b" 7\n"), Ok(7));
        assert!(parse_weight(b"0").is_err());
        assert!(parse_weight(b"10001").is_err());
        assert!(parse_weight(b"2.5").is_err());
        assert!(parse_weight(b"heavy").is_err());
        assert!(parse_weight(b"").is_err());
    }
}
