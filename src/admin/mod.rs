//! The admin API on `[admin] listen` (docs/operations.md#the-admin-api):
//! `GET /status`, `POST /reload`, `GET /metrics` (metrics.rs),
//! drain/enable/weight of a server (servers.rs) and the dashboard at `GET /`
//! (dashboard.rs). With a token configured, every call needs
//! `Authorization: Bearer <token>` but the dashboard page itself, which holds
//! no data and sends the token it is given.
//!
//! Hardening (docs/security.md): at most `MAX_CONNECTIONS` connections, each
//! held to `[global] header_read_timeout` and `idle_timeout`. Without a token
//! (then the admin listens on loopback: a config rule), it answers only
//! requests whose Host is `localhost` or a loopback address (DNS rebinding),
//! and a state change needs `X-Usherd: 1` or a JSON content type, which a web
//! page cannot send to another origin without the browser asking first.

mod dashboard;
mod metrics;
mod servers;

use std::convert::Infallible;
use std::net::{IpAddr, Ipv6Addr};
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
use tokio::sync::{watch, Semaphore};

use crate::control::App;
use crate::downstream::{stopped, ClientIo, ConnState, ConnTimeouts};
use crate::reload::Trigger;
use crate::secret::same_secret;
use crate::stats::{StatusClasses, LATENCY_BOUNDS};
use crate::upstream::LazyNow;
use servers::ServerCall;

/// Admin connections served at once; more wait in the accept backlog (they
/// take no file descriptor of the process until a slot frees).
pub const MAX_CONNECTIONS: usize = 64;

/// The header a tokenless state change carries to show it is no web page.
const NOT_A_WEB_PAGE: &str = "x-usherd";

/// Serves the admin API until `stop` turns true.
pub async fn serve(listener: TcpListener, app: Arc<App>, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&slots).acquire_owned() => {
                permit.expect("the admin connection slots are never closed")
            }
            _ = stopped(&mut stop) => return,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => return,
        };
        let app = Arc::clone(&app);
        // The head must come within `header_read_timeout` of accept (this also
        // bounds hyper's look at the first bytes for HTTP/2), and the next one
        // within `idle_timeout` of the last response.
        let state = Arc::new(ConnState::default());
        let io = ClientIo::new(
            stream,
            Arc::clone(&state),
            ConnTimeouts::new(&app.snapshots.load().config.global),
        );
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |request| {
                let app = Arc::clone(&app);
                let active = state.begin_request();
                async move {
                    let response = route(&app, request, peer).await;
                    drop(active);
                    Ok::<_, Infallible>(response)
                }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            if let Err(error) = builder.serve_connection(TokioIo::new(io), service).await {
                tracing::debug!(%error, "admin connection ended with an error");
            }
        });
    }
}

async fn route(
    app: &Arc<App>,
    request: Request<Incoming>,
    peer: std::net::SocketAddr,
) -> Response<Full<Bytes>> {
    let token = app
        .snapshots
        .load()
        .config
        .admin
        .as_ref()
        .and_then(|a| a.token.clone());
    if token.is_none() {
        if let Some(host) = foreign_host(&request) {
            return error(
                StatusCode::MISDIRECTED_REQUEST,
                &format!(
                    "Host {host:?} is refused: without [admin] token the admin API answers only \
                     to localhost or a loopback address (a guard against DNS rebinding)"
                ),
            );
        }
    }
    // The registry's APIs have tokens of their own.
    let path = request.uri().path();
    if path.starts_with("/v1/") || path == "/eureka" || path.starts_with("/eureka/") {
        return registry_call(app, request, peer).await;
    }
    // The dashboard page holds no data (a browser cannot send the header to
    // open it); everything it shows comes from calls that need the token.
    if request.method() == Method::GET && request.uri().path() == "/" {
        return dashboard::page();
    }
    if let Some(token) = token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "));
        if given.is_none_or(|given| !same_secret(given, token.as_bytes())) {
            return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        }
    } else if changes_state(request.method()) && !sent_by_a_program(&request) {
        return error(
            StatusCode::FORBIDDEN,
            "a state change without [admin] token needs the header `X-Usherd: 1` or \
             `Content-Type: application/json` (which a web page cannot send here)",
        );
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

/// A call of the registry's Consul API (`/v1/...`) or Eureka API
/// (`/eureka/...`, `/eureka/v2/...`).
async fn registry_call(
    app: &Arc<App>,
    request: Request<Incoming>,
    peer: std::net::SocketAddr,
) -> Response<Full<Bytes>> {
    let Some(registry) = app.registry() else {
        return error(
            StatusCode::NOT_FOUND,
            "no registry here: add a [registry] section to the config",
        );
    };
    let (parts, body) = request.into_parts();
    let limit = registry.settings().max_body as usize;
    let read = Limited::new(body, limit).collect();
    let body =
        match tokio::time::timeout(app.snapshots.load().config.global.header_read_timeout, read)
            .await
        {
            Ok(Ok(body)) => body.to_bytes(),
            Ok(Err(_)) => {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("the body is larger than the registry's max_body ({limit} bytes)"),
                )
            }
            Err(_) => {
                return error(
                    StatusCode::REQUEST_TIMEOUT,
                    "the body did not arrive in time",
                )
            }
        };
    let agent = app
        .bound
        .load()
        .admin
        .map_or_else(String::new, |addr| addr.to_string());
    let path = parts.uri.path();
    let api_request = |prefix: &str| crate::registry::ApiRequest {
        method: &parts.method,
        path: &path[prefix.len()..],
        query: parts.uri.query(),
        headers: &parts.headers,
        body: body.clone(),
        peer: peer.ip(),
        agent: agent.clone(),
    };
    if path.starts_with("/v1/") {
        return crate::registry::consul::handle(&registry, api_request("/v1")).await;
    }
    let prefix = if path == "/eureka/v2" || path.starts_with("/eureka/v2/") {
        "/eureka/v2"
    } else {
        "/eureka"
    };
    crate::registry::eureka::handle(&registry, api_request(prefix)).await
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
            // A request being served has no connection time limit: the body
            // gets `header_read_timeout`.
            let limit = app.snapshots.load().config.global.header_read_timeout;
            let body = Limited::new(request.into_body(), MAX_ADMIN_BODY).collect();
            let body = match tokio::time::timeout(limit, body).await {
                Ok(Ok(body)) => body.to_bytes(),
                Ok(Err(_)) => {
                    return error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "the body must be a weight: an integer",
                    )
                }
                Err(_elapsed) => {
                    let mut response = error(
                        StatusCode::REQUEST_TIMEOUT,
                        "the body did not come within header_read_timeout",
                    );
                    response.headers_mut().insert(
                        header::CONNECTION,
                        header::HeaderValue::from_static("close"),
                    );
                    return response;
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
        "fleet": app.config_store.get().map(|store| store.status()),
        "registry_store": app.registry().and_then(|registry| registry.store_state()).map(|(stale, error, leads_checks)| json!({
            "store": "etcd",
            "state": if stale { "stale" } else { "ok" },
            "last_error": error,
            "runs_checks": leads_checks,
        })),
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

/// The request's Host (or HTTP/2 authority) when it is neither `localhost`
/// nor a loopback address. A request without one is no browser's.
fn foreign_host(request: &Request<Incoming>) -> Option<String> {
    let host = match request.headers().get(header::HOST) {
        Some(value) => String::from_utf8_lossy(value.as_bytes()).into_owned(),
        None => request.uri().authority()?.to_string(),
    };
    (!is_loopback_host(&host)).then_some(host)
}

/// `localhost`, `127.0.0.0/8` or `[::1]` (IPv4-mapped too), with any port.
fn is_loopback_host(authority: &str) -> bool {
    let ip: Option<IpAddr> = if let Some(bracketed) = authority.strip_prefix('[') {
        let inside = bracketed.split_once(']').map_or(bracketed, |(ip, _)| ip);
        inside.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
    } else {
        let name = authority
            .split_once(':')
            .map_or(authority, |(name, _)| name);
        if name.eq_ignore_ascii_case("localhost") {
            return true;
        }
        name.parse().ok()
    };
    ip.is_some_and(|ip| ip.to_canonical().is_loopback())
}

/// Every method but GET and HEAD may change something.
fn changes_state(method: &Method) -> bool {
    method != Method::GET && method != Method::HEAD
}

/// `X-Usherd: 1` or a JSON content type: what a page of another origin cannot
/// send without the browser first asking the admin API (CORS preflight),
/// which never agrees.
fn sent_by_a_program(request: &Request<Incoming>) -> bool {
    let headers = request.headers();
    let marked = headers
        .get(NOT_A_WEB_PAGE)
        .is_some_and(|value| value.as_bytes() == b"1");
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
    marked || json
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
