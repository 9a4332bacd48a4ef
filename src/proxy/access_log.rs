//! The access log: one structured tracing event per request, target `access`
//! (docs/operations.md#why-did-this-request-go-there), written when the
//! response body ends so that `bytes` and `duration_ms` are the real ones.
//! Switch it off with `RUST_LOG=info,access=off`; the record is then never
//! built.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::HeaderValue;
use http::Method;

/// What the access log says of one request.
#[derive(Debug)]
pub struct AccessRecord {
    pub client: IpAddr,
    pub method: Method,
    pub host: Option<Box<str>>,
    /// Path and query, as the client sent them.
    pub path: Box<str>,
    pub request_id: Option<HeaderValue>,
    pub status: u16,
    pub vhost: Option<Arc<str>>,
    pub upstream: Option<Arc<str>>,
    /// The strategy that chose the server.
    pub strategy: &'static str,
    pub server: Option<Arc<str>>,
    pub attempts: u32,
    pub bytes: u64,
    pub started: Instant,
}

impl AccessRecord {
    /// A record for a new request, or `None` when nobody listens to `access`.
    pub fn start(
        client: IpAddr,
        method: Method,
        host: Option<&str>,
        path: &str,
    ) -> Option<Box<AccessRecord>> {
        if !enabled() {
            return None;
        }
        Some(Box::new(AccessRecord {
            client,
            method,
            host: host.map(Box::from),
            path: Box::from(path),
            request_id: None,
            status: 0,
            vhost: None,
            upstream: None,
            strategy: "-",
            server: None,
            attempts: 0,
            bytes: 0,
            started: Instant::now(),
        }))
    }
}

/// Whether anyone listens to `access`: when not, no record is built.
pub fn enabled() -> bool {
    tracing::enabled!(target: "access", tracing::Level::INFO)
}

impl Drop for AccessRecord {
    fn drop(&mut self) {
        let host = self.host.as_deref().unwrap_or("");
        let path = &*self.path;
        let request_id = self
            .request_id
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        tracing::info!(
            target: "access",
            client = %self.client,
            method = %self.method,
            host,
            path,
            status = self.status,
            vhost = self.vhost.as_deref().unwrap_or("-"),
            upstream = self.upstream.as_deref().unwrap_or("-"),
            strategy = self.strategy,
            server = self.server.as_deref().unwrap_or("-"),
            attempts = self.attempts,
            bytes = self.bytes,
            duration_ms = self.started.elapsed().as_secs_f64() * 1000.0,
            request_id,
        );
    }
}
