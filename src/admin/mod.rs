//! The admin API on `[admin] listen` (docs/operations.md#the-admin-api):
//! `GET /status`, `POST /reload`, `GET /metrics` (metrics.rs),
//! drain/enable/weight of a server (servers.rs) and the dashboard at `GET /`
//! (dashboard.rs). With a token configured, every call needs
//! `Authorization: Bearer <token>` but the dashboard page itself, which holds
//! no data and sends the token it is given.

mod dashboard;
mod metrics;
mod servers;

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app::App;
use crate::reload::Trigger;
use crate::stats::{StatusClasses, LATENCY_BOUNDS};
use crate::upstream::LazyNow;
use servers::ServerCall;

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
    // The dashboard page holds no data (a browser cannot send the header to
    // open it); everything it shows comes from calls that need the token.
    if request.method() == Method::GET && request.uri().path() == "/" {
        return dashboard::page();
    }
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
        (&Method::GET, "/metrics") => {
            let mut response = Response::new(Full::new(Bytes::from(metrics::render(app))));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(metrics::CONTENT_TYPE),
            );
            response
        }
        (_, "/status") => error(StatusCode::METHOD_NOT_ALLOWED, "use GET /status"),
        (_, "/reload") => error(StatusCode::METHOD_NOT_ALLOWED, "use POST /reload"),
        (_, "/metrics") => error(StatusCode::METHOD_NOT_ALLOWED, "use GET /metrics"),
        (_, "/") => error(StatusCode::METHOD_NOT_ALLOWED, "use GET /"),
        (_, path) if path.starts_with("/upstreams/") => server_call(app, request).await,
        _ => error(StatusCode::NOT_FOUND, "no such admin call"),
    }
}

/// The largest request body the admin API reads (a weight is a few bytes).
const MAX_ADMIN_BODY: usize = 1024;

/// `POST .../drain`, `POST .../enable`, `PUT .../weight`.
async fn server_call(app: &Arc<App>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let Some((upstream, addr, call)) = servers::parse_path(request.uri().path()) else {
        return error(
            StatusCode::NOT_FOUND,
            "use /upstreams/NAME/servers/ADDR/drain, /enable or /weight",
        );
    };
    let wanted = match call {
        ServerCall::Drain | ServerCall::Enable => Method::POST,
        ServerCall::Weight => Method::PUT,
    };
    if request.method() != wanted {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("use {wanted} for this call"),
        );
    }
    let outcome = match call {
        ServerCall::Drain => servers::set_draining(app, &upstream, &addr, true),
        ServerCall::Enable => servers::set_draining(app, &upstream, &addr, false),
        ServerCall::Weight => {
            let body = match Limited::new(request.into_body(), MAX_ADMIN_BODY)
                .collect()
                .await
            {
                Ok(body) => body.to_bytes(),
                Err(_) => {
                    return error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "the body must be a weight: an integer",
                    )
                }
            };
            match servers::parse_weight(&body) {
                Ok(weight) => servers::set_weight(app, &upstream, &addr, weight).await,
                Err(refusal) => Err(refusal),
            }
        }
    };
    match outcome {
        Ok(answer) => json_response(StatusCode::OK, &answer),
        Err((status, message)) => error(status, &message),
    }
}

/// The `GET /status` document.
pub fn status(app: &App) -> Value {
    let snapshot = app.snapshots.load();
    let last_reload = app.last_reload();
    let last_publish = app.last_publish();
    let sources: std::collections::HashMap<String, _> =
        app.discovery_sources().into_iter().collect();
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
                    let stats = &endpoint.stats;
                    let durations = stats.durations.snapshot();
                    let millis = |q: f64| durations.quantile(q).map(|s| s * 1000.0);
                    let overridden_weight =
                        (endpoint.weight != endpoint.configured_weight).then_some(endpoint.weight);
                    json!({
                        "addr": &*endpoint.addr,
                        "source": if endpoint.discovered { "discovery" } else { "config" },
                        "weight": endpoint.weight,
                        "configured_weight": endpoint.configured_weight,
                        "healthy": health.is_up(),
                        "ejected": health.is_ejected(&mut LazyNow::default()),
                        "draining": health.is_draining(),
                        "overrides": {
                            "weight": overridden_weight,
                            "draining": health.is_draining(),
                        },
                        "in_flight": stats.in_flight(),
                        "requests": stats.requests(),
                        "failures": stats.failures(),
                        "connect_errors": stats.connect_errors(),
                        "timeouts": stats.timeouts(),
                        "ejections": health.ejections_total(),
                        "responses": StatusClasses::NAMES
                            .iter()
                            .zip(stats.responses.counts())
                            .map(|(class, count)| (class.to_string(), json!(count)))
                            .collect::<serde_json::Map<_, _>>(),
                        "latency": {
                            "count": durations.count(),
                            "p50_ms": millis(0.5),
                            "p99_ms": millis(0.99),
                            "buckets": durations.buckets,
                        },
                        "last_check": last_check,
                        "reason": health.reason_unavailable(),
                    })
                })
                .collect();
            let discovery = sources.get(&*upstream.name).map(|status| {
                let state = status.state();
                json!({
                    "source": status.source,
                    "state": state.state.name(),
                    "servers": state.servers,
                    "last_success": state.last_success.map(rfc3339),
                    "last_change": state.last_change.map(rfc3339),
                    "last_error": state.last_error,
                })
            });
            (
                upstream.name.to_string(),
                json!({
                    "strategy": upstream.strategy.name(),
                    "discovery": discovery,
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
        "last_change": {
            "generation": last_publish.generation,
            "at": rfc3339(last_publish.at),
            "trigger": last_publish.trigger.map(Trigger::name),
            "changes": last_publish.changes,
        },
        "reloads": {
            "ok": app.reload_counts.ok.load(Ordering::Relaxed),
            "failed": app.reload_counts.failed.load(Ordering::Relaxed),
        },
        "listeners": listeners,
        "upstreams": upstreams,
        // Upper bounds of `latency.buckets` (the last bucket is above them all).
        "latency_bounds_ms": LATENCY_BOUNDS.iter().map(|s| s * 1000.0).collect::<Vec<_>>(),
    })
}

fn rfc3339(time: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

/// Compares without stopping at the first difference, so response timing
/// does not reveal how much of a guessed token was right.
pub(crate) fn same_secret(given: &[u8], expected: &[u8]) -> bool {
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
