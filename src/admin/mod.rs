//! The admin API on `[admin] listen` (shared/SPEC.md §6). This build answers
//! `GET /status`; the other calls of the SPEC answer 501 until they exist.
//! With a token configured, every call needs `Authorization: Bearer <token>`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::snapshot::SharedSnapshot;
use crate::BoundListener;

/// What the admin API reads.
pub struct AdminState {
    pub snapshots: SharedSnapshot,
    pub listeners: Vec<BoundListener>,
    pub started_at: SystemTime,
}

/// Serves the admin API until shutdown.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = crate::server::stopped(&mut shutdown) => return,
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(route(&state, request)) }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            if let Err(error) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "admin connection ended with an error");
            }
        });
    }
}

fn route(state: &AdminState, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let snapshot = state.snapshots.load();
    if let Some(token) = snapshot
        .config
        .admin
        .as_ref()
        .and_then(|a| a.token.as_deref())
    {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "));
        if given.is_none_or(|given| !same_secret(given, token.as_bytes())) {
            return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        }
    }
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/status") => json_response(StatusCode::OK, &status(state)),
        (_, "/status") => error(StatusCode::METHOD_NOT_ALLOWED, "use GET /status"),
        (_, "/reload" | "/metrics" | "/") => error(
            StatusCode::NOT_IMPLEMENTED,
            "not available in this build yet",
        ),
        (_, path) if path.starts_with("/upstreams/") => error(
            StatusCode::NOT_IMPLEMENTED,
            "not available in this build yet",
        ),
        _ => error(StatusCode::NOT_FOUND, "no such admin call"),
    }
}

/// The `GET /status` document.
pub fn status(state: &AdminState) -> Value {
    let snapshot = state.snapshots.load();
    let started_at = humantime::format_rfc3339_seconds(state.started_at).to_string();
    let upstreams: serde_json::Map<String, Value> = snapshot
        .upstreams
        .iter()
        .map(|upstream| {
            let servers: Vec<Value> = upstream
                .endpoints
                .iter()
                .map(|endpoint| {
                    json!({
                        "addr": &*endpoint.addr,
                        "weight": endpoint.weight,
                        "healthy": true,
                        "draining": false,
                        "in_flight": endpoint.stats.in_flight(),
                        "requests": endpoint.stats.requests(),
                        "failures": endpoint.stats.failures(),
                    })
                })
                .collect();
            (
                upstream.name.to_string(),
                json!({ "strategy": upstream.strategy.name(), "servers": servers }),
            )
        })
        .collect();
    let listeners: Vec<Value> = state
        .listeners
        .iter()
        .map(|l| json!({ "name": l.name, "listen": l.addr.to_string() }))
        .collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "generation": snapshot.generation,
        "config_path": snapshot.config.path.as_ref().map(|p| p.display().to_string()),
        "started_at": started_at,
        "last_reload": { "at": started_at, "ok": true, "error": null },
        "listeners": listeners,
        "upstreams": upstreams,
    })
}

/// Compares without stopping at the first difference, so response timing
/// does not reveal how much of a guessed token was right.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json_response(status, &json!({ "error": message }))
}
