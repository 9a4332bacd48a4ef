//! The HTTP and TCP checks the registry runs for registered instances (TTL
//! checks need nothing running: the sweeper times them). As Consul: an HTTP
//! check passes on 2xx, warns on 429, and is critical on anything else or
//! no answer within its timeout; a TCP check passes when it connects.

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Empty;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinHandle;

use super::{Check, Probe, Registry, Status};

/// Starts the check if usherd runs it (HTTP, TCP); `None` for a TTL check.
pub fn spawn(registry: &Arc<Registry>, check: &Check) -> Option<JoinHandle<()>> {
    let (interval, timeout) = match &check.probe {
        Probe::Ttl { .. } => return None,
        Probe::Http {
            interval, timeout, ..
        }
        | Probe::Tcp {
            interval, timeout, ..
        } => (*interval, *timeout),
    };
    let registry = Arc::downgrade(registry);
    let check = check.clone();
    Some(tokio::spawn(async move {
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(1)
            .build(HttpConnector::new());
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            let (status, output) =
                match tokio::time::timeout(timeout, probe(&client, &check.probe)).await {
                    Ok(outcome) => outcome,
                    Err(_) => (
                        Status::Critical,
                        format!("no answer within {}", humantime::format_duration(timeout)),
                    ),
                };
            if !report(&registry, &check.id, status, output) {
                return;
            }
        }
    }))
}

/// Records an outcome; false once the registry or the check is gone.
fn report(registry: &Weak<Registry>, check_id: &str, status: Status, output: String) -> bool {
    match registry.upgrade() {
        Some(registry) => registry.update_check(check_id, status, Some(output)),
        None => false,
    }
}

async fn probe(client: &Client<HttpConnector, Empty<Bytes>>, probe: &Probe) -> (Status, String) {
    match probe {
        Probe::Ttl { .. } => (Status::Passing, String::new()),
        Probe::Tcp { address, .. } => {
            match tokio::net::TcpStream::connect(address.as_str()).await {
                Ok(_) => (Status::Passing, format!("TCP connect {address}: Success")),
                Err(error) => (Status::Critical, format!("dial tcp {address}: {error}")),
            }
        }
        Probe::Http {
            url,
            method,
            headers,
            ..
        } => {
            if !url.starts_with("http://") {
                return (
                    Status::Critical,
                    format!("{url}: only http:// checks are run by usherd"),
                );
            }
            let mut request = Request::builder()
                .method(Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET))
                .uri(url.as_str())
                .header("user-agent", "usherd registry check");
            for (name, value) in headers {
                request = request.header(name.as_str(), value.as_str());
            }
            let request = match request.body(Empty::new()) {
                Ok(request) => request,
                Err(error) => return (Status::Critical, format!("{url}: {error}")),
            };
            match client.request(request).await {
                Ok(response) => {
                    let code = response.status();
                    let status = if code.is_success() {
                        Status::Passing
                    } else if code.as_u16() == 429 {
                        Status::Warning
                    } else {
                        Status::Critical
                    };
                    (status, format!("HTTP {method} {url}: {code}"))
                }
                Err(error) => (Status::Critical, format!("HTTP {method} {url}: {error}")),
            }
        }
    }
}

/// The smallest interval a registration may ask for.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
