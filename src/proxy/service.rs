//! One request through the proxy on hyper's types: `router.lookup` ->
//! `upstream.pick` -> forward over the server's pooled client -> retry or map
//! the error -> stream the response back (docs/config.md#requests). It serves
//! HTTP/2 clients, and the HTTP/1 path's requests to HTTP/2 upstreams
//! (`h1/bridge.rs`). Neither can switch protocols (RFC 8441 is not supported),
//! so upgrades are the HTTP/1 path's alone.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body;

use super::access_log::AccessRecord;
use super::attempts::{Attempts, Outcome, Verdict};
use super::body::{Completion, ResponseBody, ServerBody};
use super::decide::{decide, Decided, RequestView};
use super::decision::{wants_decision, Decision, DEBUG_HEADER, DECISION_HEADER};
use super::h1;
use super::headers::{ensure_request_id, remove_hop_by_hop, set_forwarded};
use super::redirect::REDIRECT_TEXT;
use super::request_key::request_key;
use crate::body::{BodySlot, BodyTooLarge, ClientBody, LimitedBody, UpstreamBody};
use crate::downstream::{current_send_watch, ClientConn};
use crate::error::ProxyError;
use crate::routing::Matched;
use crate::snapshot::{SharedSnapshot, Snapshot};
use crate::upstream::{Endpoint, InFlight, ServerClient, Transport};

/// A response from a server, with the in-flight guard to release when its body ends.
struct Forwarded {
    response: Response<ServerBody>,
    in_flight: Option<InFlight>,
}

/// Why a server gave no response head, by the client that asked it.
#[derive(Debug)]
enum ServerError {
    Http2(hyper_util::client::legacy::Error),
    Http1(h1::SendFailure),
}

impl ServerError {
    fn is_connect(&self) -> bool {
        match self {
            ServerError::Http2(error) => error.is_connect(),
            ServerError::Http1(error) => error.is_connect(),
        }
    }

    fn is_body_too_large(&self) -> bool {
        match self {
            ServerError::Http2(error) => is_body_too_large(error),
            ServerError::Http1(error) => error.is_body_too_large(),
        }
    }

    /// The error and its causes on one line, for logs.
    fn describe(&self) -> String {
        match self {
            ServerError::Http2(error) => crate::error::with_causes(error),
            ServerError::Http1(error) => error.to_string(),
        }
    }
}

/// One request to one server, over the server's client.
async fn send(
    client: &ServerClient,
    request: Request<UpstreamBody>,
) -> Result<Response<ServerBody>, ServerError> {
    match client {
        ServerClient::Http2(client) => client
            .request(request)
            .await
            .map(|response| response.map(ServerBody::Hyper))
            .map_err(ServerError::Http2),
        ServerClient::Http1(pool) => h1::send(pool, request)
            .await
            .map(|response| response.map(ServerBody::Http1))
            .map_err(ServerError::Http1),
    }
}

/// Serves one client request. Never fails: errors become responses.
pub async fn handle(
    snapshots: SharedSnapshot,
    conn: Arc<ClientConn>,
    request: Request<ClientBody>,
) -> Result<Response<ResponseBody>, Infallible> {
    let active = conn.state.begin_request();
    let started = Instant::now();
    let host = request_host(&request);
    let mut access = AccessRecord::start(
        conn.client.ip(),
        request.method().clone(),
        host.as_ref().and_then(|host| host.to_str().ok()),
        request
            .uri()
            .path_and_query()
            .map_or("/", PathAndQuery::as_str),
    );
    let version = request.version();
    let snapshot = snapshots.load_full();
    let decided = decide(&snapshot, &conn.listener, &view(&request, host.as_ref()));
    let matched = match decided {
        Ok(Decided::Route(matched)) => Ok(matched),
        Ok(Decided::Redirect(location)) => {
            let completion = Completion::new(active, access, started);
            let response = redirect_response(location, completion);
            snapshot.record_response(None, response.status().as_u16());
            return Ok(response);
        }
        Err(error) => Err(error),
    };
    let asked = request
        .headers()
        .get(&DEBUG_HEADER)
        .map(HeaderValue::as_bytes);
    let debug = wants_decision(asked, &snapshot);
    let mut decision = Decision::default();
    let outcome = match matched {
        Ok(matched) => {
            forward(
                &snapshot,
                &conn,
                matched,
                request,
                host,
                &mut access,
                &mut decision,
            )
            .await
        }
        Err(error) => Err(error),
    };
    let mut response = match outcome {
        Ok(Forwarded {
            response,
            in_flight,
        }) => {
            let (mut parts, body) = response.into_parts();
            remove_hop_by_hop(&mut parts.headers);
            if let Some(access) = access.as_mut() {
                access.status = parts.status.as_u16();
            }
            let mut completion = Completion::new(active, access, started);
            completion.in_flight = in_flight;
            Response::from_parts(parts, ResponseBody::upstream(body, completion))
        }
        Err(error) => error_response(error, version, Completion::new(active, access, started)),
    };
    snapshot.record_response(decision.vhost, response.status().as_u16());
    // An HTTP/2 client's stream: held to `send_timeout` (server/streams.rs).
    if let Some(watch) = current_send_watch() {
        response.body_mut().watch_sends(watch);
    }
    if debug {
        response
            .headers_mut()
            .insert(DECISION_HEADER.clone(), decision.describe(&snapshot));
    }
    Ok(response)
}

/// The host a request names: the authority of an absolute URI or of an HTTP/2
/// request, else the Host header.
fn request_host(request: &Request<ClientBody>) -> Option<HeaderValue> {
    match request.uri().authority() {
        Some(authority) => HeaderValue::from_str(authority.as_str()).ok(),
        None => request.headers().get(header::HOST).cloned(),
    }
}

/// What `decide` needs of `request`, whose host (`request_host`) is `host`.
fn view<'a>(request: &'a Request<ClientBody>, host: Option<&'a HeaderValue>) -> RequestView<'a> {
    RequestView {
        is_connect: request.method() == Method::CONNECT,
        host: host.map(HeaderValue::as_bytes),
        host_lines: request.headers().get_all(header::HOST).iter().count(),
        host_conflicts: host_differs_from_authority(request),
        needs_host: request.version() == Version::HTTP_11,
        path_and_query: request
            .uri()
            .path_and_query()
            .map_or("/", PathAndQuery::as_str),
        declared_length: Some(request.body().size_hint().lower()).filter(|&length| length > 0),
    }
}

/// An HTTP/2 request whose `Host` names another host than its `:authority`
/// is malformed (RFC 9113 §8.3.1).
fn host_differs_from_authority(request: &Request<ClientBody>) -> bool {
    let Some(authority) = request.uri().authority() else {
        return false;
    };
    request.version() == Version::HTTP_2
        && request.headers().get_all(header::HOST).iter().any(|host| {
            !host
                .as_bytes()
                .eq_ignore_ascii_case(authority.as_str().as_bytes())
        })
}

async fn forward(
    snapshot: &Snapshot,
    conn: &ClientConn,
    matched: Matched<'_>,
    request: Request<ClientBody>,
    host: Option<HeaderValue>,
    access: &mut Option<Box<AccessRecord>>,
    decision: &mut Decision,
) -> Result<Forwarded, ProxyError> {
    let global = &snapshot.config.global;
    let upstream = &snapshot.upstreams[matched.route.upstream];
    decision.vhost = Some(matched.vhost.index);
    decision.upstream = Some(matched.route.upstream);
    if let Some(access) = access.as_mut() {
        access.vhost = Some(Arc::clone(&matched.vhost.name));
        access.upstream = Some(Arc::clone(&upstream.name));
        access.strategy = upstream.strategy.name();
    }

    let (mut parts, body) = request.into_parts();
    remove_hop_by_hop(&mut parts.headers);
    parts.headers.remove(&DEBUG_HEADER);
    set_forwarded(
        &mut parts.headers,
        &conn.client_ip,
        conn.proto,
        host.as_ref(),
    );
    // The host routing used, whatever `Host` said.
    if let Some(host) = &host {
        parts.headers.insert(header::HOST, host.clone());
    }
    let request_id = ensure_request_id(&mut parts.headers);
    if let Some(access) = access.as_mut() {
        access.request_id = Some(request_id);
    }
    let original = parts.uri.path_and_query().map_or("/", PathAndQuery::as_str);
    let path_and_query = match matched.route.rewritten_path(original) {
        Some(path) => PathAndQuery::try_from(path)
            .map_err(|_| ProxyError::BadRequest("the rewritten path is not valid"))?,
        None => parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    };

    let key = upstream
        .hash_key
        .as_ref()
        .and_then(|key| request_key(key, conn.client.ip(), parts.uri.path(), &parts.headers));
    let retry_on_response = is_idempotent(&parts.method) && body.is_end_stream();
    // Set when `client_body_timeout` or `client_body_min_rate` ended the
    // body (an HTTP/2 client's): the send then fails by the client's doing.
    let body_fault = body.fault();
    let mut body = RequestBody::new(body, global.max_request_body, upstream.retries > 0);
    let mut attempts = Attempts::new(upstream, key, retry_on_response);
    while let Some(index) = attempts.next_server().await {
        let endpoint = &upstream.endpoints[index];
        let Some(upstream_body) = body.next() else {
            break;
        };
        // Only an attempt that may be followed by another needs a copy of the head.
        let headers = if attempts.is_last() {
            std::mem::take(&mut parts.headers)
        } else {
            parts.headers.clone()
        };
        let request = upstream_request(
            &parts,
            headers,
            &upstream.transport,
            endpoint,
            &path_and_query,
            upstream_body,
        );
        let in_flight = InFlight::start(endpoint);
        decision.server = Some(index);
        decision.attempts = attempts.made();
        if let Some(access) = access.as_mut() {
            access.server = Some(Arc::clone(&endpoint.addr));
            access.attempts = attempts.made();
        }
        let sent_at = upstream.tracks_latency().then(std::time::Instant::now);
        let sent = tokio::time::timeout(upstream.timeout, send(&endpoint.client, request)).await;
        if body_fault
            .as_ref()
            .is_some_and(|fault| fault.get().is_some())
            && !matches!(sent, Ok(Ok(_)))
        {
            // Counted and logged where the body ended; not the server's
            // fault, so not judged. The upstream's side was dropped with
            // the send: a connection closed, or a stream reset.
            return Err(ProxyError::ClientTimeout);
        }
        if let (Some(sent_at), Ok(Ok(_))) = (sent_at, &sent) {
            upstream.observe_latency(index, sent_at.elapsed());
        }
        let verdict = match &sent {
            Err(_elapsed) => attempts.judge(index, Outcome::TimedOut),
            Ok(Err(error)) if error.is_body_too_large() => return Err(ProxyError::BodyTooLarge),
            Ok(Err(error)) => {
                let why = error.describe();
                attempts.judge(
                    index,
                    if error.is_connect() {
                        Outcome::ConnectFailed(&why)
                    } else {
                        Outcome::Failed(&why)
                    },
                )
            }
            Ok(Ok(response)) => attempts.judge(index, Outcome::Responded(response.status())),
        };
        match (verdict, sent) {
            (Verdict::Retry, _) => continue,
            (Verdict::Stop(error), _) => return Err(error),
            (Verdict::Deliver, Ok(Ok(response))) => {
                return Ok(Forwarded {
                    response,
                    in_flight: Some(in_flight),
                });
            }
            (Verdict::Deliver, _) => unreachable!("only a response is delivered"),
        }
    }
    Err(attempts.error())
}

/// The request for one attempt: the client's head, addressed to the server.
/// Over HTTP/1.1 the client's host travels in `Host`; over HTTP/2 it moves to
/// `:authority` (the connector goes to the server whatever the URI names).
fn upstream_request(
    parts: &http::request::Parts,
    mut headers: http::HeaderMap,
    transport: &Transport,
    endpoint: &Endpoint,
    path_and_query: &PathAndQuery,
    body: UpstreamBody,
) -> Request<UpstreamBody> {
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(transport.scheme());
    uri.path_and_query = Some(path_and_query.clone());
    let version = if transport.is_http2() {
        uri.authority = Some(
            headers
                .remove(header::HOST)
                .and_then(|host| Authority::try_from(host.as_bytes()).ok())
                .unwrap_or_else(|| endpoint.authority.clone()),
        );
        Version::HTTP_2
    } else {
        uri.authority = Some(endpoint.authority.clone());
        Version::HTTP_11
    };
    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = Uri::from_parts(uri).expect("scheme, authority and path make a URI");
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    request
}

/// Hands out the request body to each attempt, as long as it can be had.
enum RequestBody {
    Empty,
    /// Not retryable: handed out once.
    Once(Option<LimitedBody>),
    /// Retryable on connect failure: handed out in a slot that can be reclaimed
    /// while no attempt has read from it.
    Retryable {
        unsent: Option<LimitedBody>,
        slot: Option<BodySlot>,
    },
}

impl RequestBody {
    fn new(body: ClientBody, limit: Option<u64>, retryable: bool) -> RequestBody {
        if body.is_end_stream() {
            return RequestBody::Empty;
        }
        let body = LimitedBody::new(body, limit);
        if retryable {
            RequestBody::Retryable {
                unsent: Some(body),
                slot: None,
            }
        } else {
            RequestBody::Once(Some(body))
        }
    }

    fn next(&mut self) -> Option<UpstreamBody> {
        match self {
            RequestBody::Empty => Some(UpstreamBody::Empty),
            RequestBody::Once(body) => body.take().map(UpstreamBody::Streaming),
            RequestBody::Retryable { unsent, slot } => {
                let body = unsent.take().or_else(|| slot.as_ref()?.reclaim())?;
                let (body, new_slot) = UpstreamBody::reclaimable(body);
                *slot = Some(new_slot);
                Some(body)
            }
        }
    }
}

/// RFC 9110 §9.2.2: methods whose repetition has the same effect.
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    )
}

fn is_body_too_large(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(error) = source {
        if error.is::<BodyTooLarge>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// 308 Permanent Redirect to `location`.
fn redirect_response(location: HeaderValue, mut completion: Completion) -> Response<ResponseBody> {
    let status = StatusCode::PERMANENT_REDIRECT;
    if let Some(access) = completion.access.as_mut() {
        access.status = status.as_u16();
    }
    let text = Bytes::from_static(REDIRECT_TEXT.as_bytes());
    let mut response = Response::new(ResponseBody::full(text, Some(completion)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, location);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn error_response(
    error: ProxyError,
    version: Version,
    mut completion: Completion,
) -> Response<ResponseBody> {
    let status = error.status();
    if let Some(access) = completion.access.as_mut() {
        access.status = status.as_u16();
    }
    let text = Bytes::from(error.body_text());
    let mut response = Response::new(ResponseBody::full(text, Some(completion)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    // The client may have sent more than we read: do not parse it as a next request.
    if version < Version::HTTP_2 && error.closes_connection() {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotent_methods() {
        for method in [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::PUT,
            Method::DELETE,
        ] {
            assert!(is_idempotent(&method));
        }
        for method in [Method::POST, Method::PATCH] {
            assert!(!is_idempotent(&method));
        }
    }

    #[test]
    fn body_too_large_is_found_among_causes() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] BodyTooLarge);
        assert!(is_body_too_large(&Outer(BodyTooLarge)));
        assert!(!is_body_too_large(&std::io::Error::other("x")));
    }
}
