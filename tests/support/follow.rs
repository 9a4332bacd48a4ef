//! Watching a proxy that follows a discovery source: its `/status`
//! discovery block, which backends answer it, and polls on both.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::get;

/// A proxy config routing everything to upstream `api` (`strategy`, no
/// retries, then `upstream`'s lines) whose servers come from `discovery`,
/// the lines of `[upstreams.api.discovery]`.
pub fn follower_config(strategy: &str, upstream: &str, discovery: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[listeners.web]
listen = "127.0.0.1:0"
[vhosts.all]
hosts = ["*"]
routes = [{{ path = "/", upstream = "api" }}]
[upstreams.api]
strategy = "{strategy}"
retries = 0
{upstream}
[upstreams.api.discovery]
{discovery}
"#
    )
}

/// The discovery block of upstream `api` in `/status`.
pub async fn discovery(proxy: &usherd::Proxy) -> Value {
    let reply = get(
        &format!("http://{}/status", proxy.admin_addr().unwrap()),
        None,
    )
    .await;
    reply.json()["upstreams"]["api"]["discovery"].clone()
}

/// The backends that answer the proxy's next `count` requests, sorted,
/// deduplicated (`status 503` for a request no backend answered).
pub async fn serving(proxy: &usherd::Proxy, count: usize) -> Vec<String> {
    let mut names = Vec::new();
    for _ in 0..count {
        let reply = get(&super::url(proxy, "/"), None).await;
        names.push(match reply.header("x-backend") {
            Some(name) => name.to_string(),
            None => format!("status {}", reply.status),
        });
    }
    names.sort();
    names.dedup();
    names
}

/// Polls until the proxy is served by exactly `names`; how long that took.
pub async fn until_serving(proxy: &usherd::Proxy, names: &[&str], limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let now = serving(proxy, 6).await;
        if now == names {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "not served by {names:?} within {limit:?}: {now:?}, {}",
            discovery(proxy).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls until the source is in `state`; its discovery block then.
pub async fn until_state(proxy: &usherd::Proxy, state: &str, limit: Duration) -> Value {
    let start = Instant::now();
    loop {
        let now = discovery(proxy).await;
        if now["state"] == state {
            return now;
        }
        assert!(
            start.elapsed() < limit,
            "not {state} within {limit:?}: {now}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
