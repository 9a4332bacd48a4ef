//! The admin API on `[admin] listen` (shared/SPEC.md §6): `GET /status` and
//! `POST /reload`. The other calls of the SPEC answer 501 until they exist.
//! With a token configured, every call needs `Authorization: Bearer <token>`.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

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

use crate::app::App;
use crate::reload::Trigger;
use crate::upstream::LazyNow;

/// Serves the admin API until `stop` turns true.
pub async fn serve(listener: TcpListener, app: Arc<App>, mut stop: watch::Receiver<bool>) {
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
            _ = crate::server::stopped(&mut stop) => return,
        };
        let app = Arc::clone(&app);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let app = Arc::clone(&app);
                async move { Ok::<_, Infallible>(route(&app, request).await) }
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

async fn route(app: &Arc<App>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let token = app
        .snapshots
        .load()
        .config
        .admin
        .as_ref()
        .and_then(|a| a.token.clone());
    if let Some(token) = token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "));
        if given.is_none_or(|given| !same_secret(given, token.as_bytes())) {
            return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        }
    }
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/status") => json_response(StatusCode::OK, &status(app)),
        (&Method::POST, "/reload") => match app.reload(Trigger::Admin).await {
            Ok(generation) => json_response(StatusCode::OK, &json!({ "generation": generation })),
            Err(reload_error) => error(StatusCode::BAD_REQUEST, &reload_error.to_string()),
        },
        (_, "/status") => error(StatusCode::METHOD_NOT_ALLOWED, "use GET /status"),
        (_, "/reload") => error(StatusCode::METHOD_NOT_ALLOWED, "use POST /reload"),
        (_, "/metrics" | "/") => error(
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
pub fn status(app: &App) -> Value {
    let snapshot = app.snapshots.load();
    let last_reload = app.last_reload();
    let upstreams: serde_json::Map<String, Value> = snapshot
        .upstreams
        .iter()
        .map(|upstream| {
            let servers: Vec<Value> = upstream
                .endpoints
                .iter()
                .map(|endpoint| {
                    let health = &endpoint.health;
                    let last_check = health.last_check().map(|check| {
                        json!({
                            "at": rfc3339(check.at),
                            "passed": check.passed,
                            "detail": check.detail,
                            "duration_ms": check.duration.as_secs_f64() * 1000.0,
                        })
                    });
                    json!({
                        "addr": &*endpoint.addr,
                        "weight": endpoint.weight,
                        "healthy": health.is_up(),
                        "ejected": health.is_ejected(&mut LazyNow::default()),
                        "draining": false,
                        "in_flight": endpoint.stats.in_flight(),
                        "requests": endpoint.stats.requests(),
                        "failures": endpoint.stats.failures(),
                        "last_check": last_check,
                        "reason": health.reason_unavailable(),
                    })
                })
                .collect();
            (
                upstream.name.to_string(),
                json!({
                    "strategy": upstream.strategy.name(),
                    "protocol": upstream.transport.settings.protocol.name(),
                    "tls": upstream.transport.settings.tls.is_some(),
                    "health_checks": upstream.health_check.is_some(),
                    "retries": upstream.retry_budget.retries(),
                    "retry_budget_exhausted": upstream.retry_budget.exhausted(),
                    "servers": servers,
                }),
            )
        })
        .collect();
    let listeners: Vec<Value> = app
        .bound
        .load()
        .listeners
        .iter()
        .map(|l| {
            json!({
                "name": l.name,
                "listen": l.addr.to_string(),
                "tls": snapshot.listener_tls(&l.name).is_some(),
            })
        })
        .collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "generation": snapshot.generation,
        "config_path": snapshot.config.path.as_ref().map(|p| p.display().to_string()),
        "started_at": rfc3339(app.started_at),
        "last_reload": {
            "at": rfc3339(last_reload.at),
            "ok": last_reload.ok,
            "error": last_reload.error,
            "changes": last_reload.changes,
            "trigger": last_reload.trigger.map(Trigger::name),
        },
        "reloads": {
            "ok": app.reload_counts.ok.load(Ordering::Relaxed),
            "failed": app.reload_counts.failed.load(Ordering::Relaxed),
        },
        "listeners": listeners,
        "upstreams": upstreams,
    })
}

fn rfc3339(time: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
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
