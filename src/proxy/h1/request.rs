//! One HTTP/1 request, from its parsed head to the last byte of its response:
//! the same steps as `service.rs` (shared/SPEC.md §4) on the bytes as they
//! came. Everything the request needs of its head is taken in `prepare`,
//! with the upstream request head written at once; then the head's bytes are
//! let go and the request is answered by usherd, forwarded to an `http1`
//! upstream over this module's connections, or bridged to hyper's client
//! for an HTTP/2 upstream (`bridge.rs`).

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Buf;
use http::header::HeaderValue;
use http::StatusCode;
use tokio::io::AsyncWriteExt;

use super::bridge::{self, Bridge};
use super::conn::{Client, ClientStream};
use super::heads::{
    write_client_response, write_local_response, write_upstream_request, ClientFraming, Forwarding,
    Persistence, CONTINUE,
};
use super::relay::{
    self, BodyDecoder, ClientFault, ReceiveError, RequestBody, SendError, Sent, UpstreamFault,
};
use crate::error::ProxyError;
use crate::http1::{
    request_framing, response_framing, BodyLength, HeaderKind, Headers, Method, RequestFraming,
    RequestHead,
};
use crate::proxy::access_log::{self, AccessRecord};
use crate::proxy::attempts::{Attempts, Outcome, Verdict};
use crate::proxy::decision::{wants_decision, Decision};
use crate::proxy::redirect::{https_location, REDIRECT_TEXT};
use crate::proxy::request_key::{request_key, HeaderSource};
use crate::proxy::ClientConn;
use crate::snapshot::Snapshot;
use crate::upstream::h1::{ConnectError, UpstreamConn, UpstreamStream};
use crate::upstream::{Http1Pool, InFlight};

/// What becomes of the connection after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum After {
    /// The exchange ended cleanly: read the next head.
    KeepAlive,
    /// The response said `connection: close`.
    Close,
    /// Close, and the client may still be sending: linger first.
    Linger,
    /// The connection is broken: let it go.
    Drop,
}

/// What the rest of a request needs of its head.
#[derive(Debug, Clone, Copy)]
pub(super) struct Facts {
    pub method: Method,
    pub framing: RequestFraming,
    pub http10: bool,
}

impl Facts {
    pub fn is_head(self) -> bool {
        self.method == Method::Head
    }
}

/// What was found of a request before it is answered.
struct Known {
    facts: Facts,
    decision: Decision,
    debug: bool,
    access: Option<Box<AccessRecord>>,
}

/// How a request is answered.
enum Plan {
    /// By usherd: an error, or a redirect to https.
    Answer(Known, Reply),
    /// By an `http1` upstream (its request head is in `client.out`).
    Forward(Known, Forward),
    /// By an HTTP/2 upstream, through hyper's client.
    Bridge(Bridge),
}

enum Reply {
    Error(ProxyError),
    Redirect(HeaderValue),
}

struct Forward {
    upstream: usize,
    key: Option<u64>,
}

/// Serves the request whose head is in `client.head`.
pub(super) async fn serve<S: ClientStream>(client: &mut Client<S>) -> After {
    let started = Instant::now();
    let snapshot = client.snapshots.load_full();
    let plan = prepare(
        &client.input[..client.head.len],
        &client.head,
        &mut client.out,
        &client.conn,
        &snapshot,
    );
    client.input.advance(client.head.len);
    match plan {
        Plan::Answer(known, reply) => {
            let body = RequestBody::new(known.facts.framing.body, None);
            answer(client, &snapshot, known, reply, &body).await
        }
        Plan::Forward(known, forward) => {
            forward_to_http1(client, &snapshot, known, forward, started).await
        }
        // Boxed: hyper's request future is large, and every connection's
        // task (parked ones too) would otherwise be as large.
        Plan::Bridge(bridged) => Box::pin(bridge::forward(client, bridged)).await,
    }
}

/// A request target: origin-form (`/path?query`), absolute-form
/// (`http://host/path`) or asterisk-form (`*`); authority-form is CONNECT's.
struct Target<'a> {
    host: Option<&'a [u8]>,
    path: &'a [u8],
}

impl<'a> Target<'a> {
    fn of(target: &'a [u8]) -> Option<Target<'a>> {
        if target.first() == Some(&b'/') || target == b"*" {
            return Some(Target {
                host: None,
                path: target,
            });
        }
        let scheme_end = target.windows(3).position(|w| w == b"://")?;
        let scheme = &target[..scheme_end];
        if !(scheme.eq_ignore_ascii_case(b"http") || scheme.eq_ignore_ascii_case(b"https")) {
            return None;
        }
        let rest = &target[scheme_end + 3..];
        let authority_end = rest
            .iter()
            .position(|&b| b == b'/' || b == b'?')
            .unwrap_or(rest.len());
        let (host, path) = rest.split_at(authority_end);
        if host.is_empty() || host.contains(&b'@') || path.first() == Some(&b'?') {
            return None;
        }
        Some(Target {
            host: Some(host),
            path: if path.is_empty() { b"/" } else { path },
        })
    }
}

/// The headers of a raw head, for `request_key`.
struct RawHeaders<'a> {
    headers: &'a Headers,
    buf: &'a [u8],
}

impl HeaderSource for RawHeaders<'_> {
    fn values_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers.named(self.buf, name)
    }
}

/// A Host value is visible ASCII (as `HeaderValue::to_str` wants).
fn host_text(host: &[u8]) -> Option<&str> {
    if host
        .iter()
        .all(|&b| (b' '..0x7f).contains(&b) || b == b'\t')
    {
        std::str::from_utf8(host).ok()
    } else {
        None
    }
}

/// Everything the request needs of its head (in `buf`): its framing, where
/// it goes, and, when it goes to an `http1` upstream, its upstream head,
/// written into `out`.
fn prepare(
    buf: &[u8],
    head: &RequestHead,
    out: &mut Vec<u8>,
    conn: &ClientConn,
    snapshot: &Snapshot,
) -> Plan {
    let method = head.method();
    let mut known = Known {
        facts: Facts {
            method,
            framing: RequestFraming {
                body: BodyLength::Empty,
                keep_alive: false,
                upgrade: false,
                expect_continue: false,
            },
            http10: head.minor_version == 0,
        },
        decision: Decision::default(),
        debug: wants_decision(head.headers.first(buf, HeaderKind::UsherdDebug), snapshot),
        access: None,
    };
    // Before the target is known, the record has only the method.
    let refuse = |mut known: Known, error| {
        known.access = access_record(conn.client.ip(), head, buf, None, b"");
        Plan::Answer(known, Reply::Error(error))
    };
    match request_framing(head, buf) {
        Ok(framing) => known.facts.framing = framing,
        Err(why) => return refuse(known, ProxyError::BadRequest(why)),
    }
    let Some(target) = Target::of(head.target.of(buf)) else {
        let error = if method == Method::Connect {
            ProxyError::MethodNotAllowed
        } else {
            ProxyError::BadRequest("the request target is not valid")
        };
        return refuse(known, error);
    };
    let host = target
        .host
        .or_else(|| head.headers.first(buf, HeaderKind::Host));
    let Ok(path_and_query) = std::str::from_utf8(target.path) else {
        return refuse(
            known,
            ProxyError::BadRequest("the request target is not valid"),
        );
    };
    // Made when the request is answered or forwarded here, not when it is
    // bridged: service.rs keeps the record of those.
    let record = || access_record(conn.client.ip(), head, buf, host, target.path);
    let answer = |mut known: Known, reply| {
        known.access = record();
        Plan::Answer(known, reply)
    };
    if let Some(port) = snapshot.redirect_https(&conn.listener) {
        return answer(
            known,
            match host.and_then(|host| https_location(host, port, path_and_query)) {
                Some(location) => Reply::Redirect(location),
                None => Reply::Error(ProxyError::BadRequest(
                    "a redirect to https needs a valid Host",
                )),
            },
        );
    }
    if method == Method::Connect {
        return answer(known, Reply::Error(ProxyError::MethodNotAllowed));
    }
    let limit = snapshot.config.global.max_request_body;
    if let (Some(limit), BodyLength::Exact(length)) = (limit, known.facts.framing.body) {
        if length > limit {
            return answer(known, Reply::Error(ProxyError::BodyTooLarge));
        }
    }
    // RFC 9112 §3.2: one Host line, a valid one, and one in every HTTP/1.1 request.
    if head.headers.values(buf, HeaderKind::Host).nth(1).is_some() {
        return answer(
            known,
            Reply::Error(ProxyError::BadRequest("a request has one Host header")),
        );
    }
    let host_name = match host.map(host_text) {
        Some(Some(name)) => name,
        Some(None) => {
            return answer(
                known,
                Reply::Error(ProxyError::BadRequest("the Host header is not valid")),
            )
        }
        None if !known.facts.http10 => {
            return answer(
                known,
                Reply::Error(ProxyError::BadRequest(
                    "an HTTP/1.1 request needs a Host header",
                )),
            )
        }
        None => "",
    };
    let path = path_and_query
        .split_once('?')
        .map_or(path_and_query, |(path, _)| path);
    let Some(matched) = snapshot.router.lookup(&conn.listener, host_name, path) else {
        return answer(known, Reply::Error(ProxyError::NoRoute));
    };
    let upstream = &snapshot.upstreams[matched.route.upstream];
    if upstream.transport.is_http2() {
        // hyper's client takes it from here, with the whole request path of
        // service.rs (access log and metrics included).
        return match bridge::prepare(buf, head, known.facts, upstream.timeout) {
            Ok(bridged) => Plan::Bridge(bridged),
            Err(error) => answer(known, Reply::Error(error)),
        };
    }
    known.access = record();
    known.decision.vhost = Some(matched.vhost.index);
    known.decision.upstream = Some(matched.route.upstream);
    if let Some(access) = known.access.as_mut() {
        access.vhost = Some(Arc::clone(&matched.vhost.name));
        access.upstream = Some(Arc::clone(&upstream.name));
        access.strategy = upstream.strategy.name();
    }
    let rewritten = matched.route.rewritten_path(path_and_query);
    let forwarding = Forwarding {
        path: rewritten.as_deref().map_or(target.path, str::as_bytes),
        target_host: target.host,
        host,
        client_ip: conn.client_ip.as_bytes(),
        proto: conn.proto,
        upgrade: known.facts.framing.upgrade,
        chunked: known.facts.framing.body == BodyLength::Chunked,
    };
    let request_id = write_upstream_request(out, buf, head, &forwarding);
    if let Some(access) = known.access.as_mut() {
        access.request_id = HeaderValue::from_bytes(request_id.as_bytes()).ok();
    }
    let key = upstream.hash_key.as_ref().and_then(|key| {
        let headers = RawHeaders {
            headers: &head.headers,
            buf,
        };
        request_key(key, conn.client.ip(), path, &headers)
    });
    Plan::Forward(
        known,
        Forward {
            upstream: matched.route.upstream,
            key,
        },
    )
}

/// The access record of a request, when the access log is on.
fn access_record(
    client: IpAddr,
    head: &RequestHead,
    buf: &[u8],
    host: Option<&[u8]>,
    path: &[u8],
) -> Option<Box<AccessRecord>> {
    if !access_log::enabled() {
        return None;
    }
    let method = http::Method::from_bytes(head.method_name.of(buf)).unwrap_or_default();
    let host = host.and_then(host_text);
    AccessRecord::start(client, method, host, &String::from_utf8_lossy(path))
}

/// Answers with usherd's own response: an error, or a redirect.
async fn answer<S: ClientStream>(
    client: &mut Client<S>,
    snapshot: &Snapshot,
    mut known: Known,
    reply: Reply,
    body: &RequestBody,
) -> After {
    let (status, text, location, closes) = match reply {
        Reply::Error(error) => (
            error.status(),
            error.body_text(),
            None,
            error.closes_connection(),
        ),
        Reply::Redirect(location) => (
            StatusCode::PERMANENT_REDIRECT,
            REDIRECT_TEXT.to_string(),
            Some(location),
            false,
        ),
    };
    // A body not read to its end is still coming: the connection cannot
    // be read for a next request.
    let unread = !body.is_done();
    let keep = known.facts.framing.keep_alive && !closes && !unread && !client.stopping();
    let persistence = if keep {
        Persistence::KeepAlive {
            http10: known.facts.http10,
        }
    } else {
        Persistence::Close
    };
    let decision = known.debug.then(|| known.decision.describe(snapshot));
    write_local_response(
        &mut client.out,
        status,
        text.as_bytes(),
        location.as_ref(),
        known.facts.is_head(),
        persistence,
        decision.as_ref(),
    );
    snapshot.record_response(known.decision.vhost, status.as_u16());
    if let Some(access) = known.access.as_mut() {
        access.status = status.as_u16();
        access.bytes = text.len() as u64;
    }
    if client.write_out().await.is_err() {
        return After::Drop;
    }
    match (keep, closes || unread) {
        (true, _) => After::KeepAlive,
        (false, true) => After::Linger,
        (false, false) => After::Close,
    }
}

/// Why an attempt on one server did not bring a response head.
enum AttemptError {
    Connect(ConnectError),
    Upstream(UpstreamFault),
    TimedOut,
    Client(ClientFault),
}

/// Why an exchange on one connection did not bring a response head.
#[derive(Debug)]
enum ExchangeError {
    /// The first write of the head failed: the server got nothing.
    NothingSent(std::io::Error),
    /// The server failed; `answered`: some of a response had come.
    Upstream {
        fault: UpstreamFault,
        answered: bool,
    },
    TimedOut,
    Client(ClientFault),
}

impl ExchangeError {
    /// Whether the request may go again on a new connection to the same
    /// server because this one, reused from the pool, was closed by the
    /// server before it took the request (Go's transport does the same):
    /// when nothing was written, or when nothing came back and the request
    /// can be repeated.
    fn may_resend(&self, replayable: bool) -> bool {
        match self {
            ExchangeError::NothingSent(_) => true,
            ExchangeError::Upstream {
                fault: UpstreamFault::Closed | UpstreamFault::Io(_),
                answered: false,
            } => replayable,
            _ => false,
        }
    }
}

impl fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExchangeError::NothingSent(error) => write!(f, "writing the request: {error}"),
            ExchangeError::Upstream { fault, .. } => fault.fmt(f),
            ExchangeError::TimedOut => f.write_str("timed out"),
            ExchangeError::Client(fault) => write!(f, "client: {fault:?}"),
        }
    }
}

impl From<ExchangeError> for AttemptError {
    fn from(error: ExchangeError) -> AttemptError {
        match error {
            ExchangeError::NothingSent(error) => AttemptError::Upstream(UpstreamFault::Io(error)),
            ExchangeError::Upstream { fault, .. } => AttemptError::Upstream(fault),
            ExchangeError::TimedOut => AttemptError::TimedOut,
            ExchangeError::Client(fault) => AttemptError::Client(fault),
        }
    }
}

/// Sends the request to an `http1` upstream, with retries, and relays the
/// response.
async fn forward_to_http1<S: ClientStream>(
    client: &mut Client<S>,
    snapshot: &Snapshot,
    mut known: Known,
    forward: Forward,
    started: Instant,
) -> After {
    let upstream = &snapshot.upstreams[forward.upstream];
    let facts = known.facts;
    let replayable = facts.method.is_idempotent() && facts.framing.body == BodyLength::Empty;
    let mut body = RequestBody::new(facts.framing.body, snapshot.config.global.max_request_body);
    let mut attempts = Attempts::new(upstream, forward.key, replayable);
    let mut continue_sent = false;
    loop {
        let Some(index) = attempts.next_server().await else {
            let error = attempts.error();
            return answer(client, snapshot, known, Reply::Error(error), &body).await;
        };
        let endpoint = &upstream.endpoints[index];
        known.decision.server = Some(index);
        known.decision.attempts = attempts.made();
        if let Some(access) = known.access.as_mut() {
            access.server = Some(Arc::clone(&endpoint.addr));
            access.attempts = attempts.made();
        }
        let pool = endpoint
            .http1
            .as_ref()
            .expect("the servers of an http1 upstream have HTTP/1.1 pools");
        // No attempt follows one that sent some of the body (`replayable`).
        debug_assert!(body.untouched());
        let in_flight = InFlight::start(endpoint);
        let sent_at = upstream.tracks_latency().then(Instant::now);
        let exchange = Exchange {
            facts,
            timeout: upstream.timeout,
            replayable,
        };
        let result = exchange
            .attempt(client, pool, &mut body, &mut continue_sent)
            .await;
        if let (Some(sent_at), Ok(_)) = (sent_at, &result) {
            upstream.observe_latency(index, sent_at.elapsed());
        }
        let verdict = match &result {
            Ok(_) => match StatusCode::from_u16(client.response.status) {
                Ok(status) => attempts.judge(index, Outcome::Responded(status)),
                Err(_) => attempts.judge(index, Outcome::Failed(&"invalid status code")),
            },
            Err(AttemptError::Connect(error)) => {
                attempts.judge(index, Outcome::ConnectFailed(error))
            }
            Err(AttemptError::Upstream(fault)) => attempts.judge(index, Outcome::Failed(fault)),
            Err(AttemptError::TimedOut) => attempts.judge(index, Outcome::TimedOut),
            // The client's doing: not counted against the server.
            Err(AttemptError::Client(fault)) => {
                let fault = *fault;
                return client_failed(client, snapshot, known, fault, &body).await;
            }
        };
        match (verdict, result) {
            (Verdict::Retry, _) => continue,
            (Verdict::Stop(error), _) => {
                return answer(client, snapshot, known, Reply::Error(error), &body).await
            }
            (Verdict::Deliver, Ok(conn)) => {
                let delivery = Delivery {
                    snapshot,
                    known,
                    upstream: forward.upstream,
                    index,
                    body_done: body.is_done(),
                    started,
                };
                return delivery.run(client, pool, conn, in_flight).await;
            }
            (Verdict::Deliver, Err(_)) => unreachable!("only a response is delivered"),
        }
    }
}

/// Answers a request the client itself broke off or overran.
async fn client_failed<S: ClientStream>(
    client: &mut Client<S>,
    snapshot: &Snapshot,
    known: Known,
    fault: ClientFault,
    body: &RequestBody,
) -> After {
    let error = match fault {
        ClientFault::Gone => return After::Drop,
        ClientFault::TimedOut => ProxyError::ClientTimeout,
        ClientFault::TooLarge => ProxyError::BodyTooLarge,
        ClientFault::BadChunk(_) => ProxyError::BadRequest("the chunked request body is not valid"),
    };
    answer(client, snapshot, known, Reply::Error(error), body).await
}

/// One request's exchanges with the servers of an `http1` upstream.
struct Exchange {
    facts: Facts,
    timeout: std::time::Duration,
    /// Idempotent with an empty body.
    replayable: bool,
}

impl Exchange {
    /// One attempt on one server: a connection (pooled, else new), the
    /// request written, the response head read.
    async fn attempt<S: ClientStream>(
        &self,
        client: &mut Client<S>,
        pool: &Arc<Http1Pool>,
        body: &mut RequestBody,
        continue_sent: &mut bool,
    ) -> Result<UpstreamConn, AttemptError> {
        let mut conn = match pool.checkout() {
            Some(conn) => conn,
            None => pool
                .connector
                .connect()
                .await
                .map_err(AttemptError::Connect)?,
        };
        loop {
            match self
                .exchange(client, &mut conn.stream, body, continue_sent)
                .await
            {
                Ok(()) => return Ok(conn),
                Err(error) if conn.reused && error.may_resend(self.replayable) => {
                    tracing::debug!(%error, "a pooled upstream connection was closed by the server; sending again on a new one");
                    conn = pool
                        .connector
                        .connect()
                        .await
                        .map_err(AttemptError::Connect)?;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// The request (head in `client.out`, body from the client) on one
    /// connection, and the response head.
    async fn exchange<S: ClientStream>(
        &self,
        client: &mut Client<S>,
        upstream: &mut UpstreamStream,
        body: &mut RequestBody,
        continue_sent: &mut bool,
    ) -> Result<(), ExchangeError> {
        client.from_upstream.clear();
        write_head(upstream, &client.out).await?;
        let answered = |fault| ExchangeError::Upstream {
            fault,
            answered: false,
        };
        if body.is_done() {
            upstream
                .flush()
                .await
                .map_err(|error| answered(UpstreamFault::Io(error)))?;
        } else {
            if self.facts.framing.expect_continue && !*continue_sent && client.input.is_empty() {
                *continue_sent = true;
                client
                    .io
                    .write_all(CONTINUE)
                    .await
                    .map_err(|_| ExchangeError::Client(ClientFault::Gone))?;
            }
            let chunked = self.facts.framing.body == BodyLength::Chunked;
            match relay::send_body(client, upstream, body, chunked, self.timeout).await {
                Ok(Sent::All | Sent::Answered) => {}
                Err(SendError::Client(fault)) => return Err(ExchangeError::Client(fault)),
                Err(SendError::Upstream(fault)) => return Err(answered(fault)),
                Err(SendError::TimedOut) => return Err(ExchangeError::TimedOut),
            }
        }
        client
            .deadline
            .as_mut()
            .reset(tokio::time::Instant::now() + self.timeout);
        match relay::read_response_head(client, upstream).await {
            Ok(()) => Ok(()),
            Err(ReceiveError::TimedOut) => Err(ExchangeError::TimedOut),
            Err(ReceiveError::Upstream { fault, answered }) => {
                Err(ExchangeError::Upstream { fault, answered })
            }
        }
    }
}

/// Writes a request head; when its first write fails, nothing was sent.
async fn write_head(upstream: &mut UpstreamStream, head: &[u8]) -> Result<(), ExchangeError> {
    let mut written = 0;
    while written < head.len() {
        let failed = match upstream.write(&head[written..]).await {
            Ok(0) => std::io::Error::from(std::io::ErrorKind::WriteZero),
            Ok(n) => {
                written += n;
                continue;
            }
            Err(error) => error,
        };
        return Err(if written == 0 {
            ExchangeError::NothingSent(failed)
        } else {
            ExchangeError::Upstream {
                fault: UpstreamFault::Io(failed),
                answered: false,
            }
        });
    }
    Ok(())
}

/// A response head from a server, on its way to the client.
struct Delivery<'s> {
    snapshot: &'s Snapshot,
    known: Known,
    /// The upstream, and its server, that answered.
    upstream: usize,
    index: usize,
    /// The request body was read to its end.
    body_done: bool,
    started: Instant,
}

impl Delivery<'_> {
    /// Relays the response (head in `client.response`) to the client; the
    /// connection goes back to `pool` when the exchange ended cleanly.
    async fn run<S: ClientStream>(
        mut self,
        client: &mut Client<S>,
        pool: &Arc<Http1Pool>,
        mut conn: UpstreamConn,
        in_flight: InFlight,
    ) -> After {
        let snapshot = self.snapshot;
        let upstream = &snapshot.upstreams[self.upstream];
        let endpoint = &upstream.endpoints[self.index];
        let facts = self.known.facts;
        let status = client.response.status;
        let switching = status == 101;
        let framing = if switching && !facts.framing.upgrade {
            Err("a switch of protocols nobody asked for")
        } else {
            response_framing(&client.response, &client.from_upstream, facts.is_head())
        };
        let framing = match framing {
            Ok(framing) => framing,
            Err(why) => {
                tracing::warn!(upstream = %upstream.name, server = %endpoint.addr, why, "invalid response from upstream");
                upstream.record_failure(self.index, why);
                let body = RequestBody::new(BodyLength::Empty, None);
                return answer(
                    client,
                    snapshot,
                    self.known,
                    Reply::Error(ProxyError::BadGateway),
                    &body,
                )
                .await;
            }
        };
        let client_framing = match framing.body {
            BodyLength::Empty | BodyLength::Exact(_) => ClientFraming::AsIs,
            BodyLength::Chunked | BodyLength::UntilClose if facts.http10 => {
                ClientFraming::UntilClose
            }
            BodyLength::Chunked | BodyLength::UntilClose => ClientFraming::Chunked,
        };
        let keep = facts.framing.keep_alive
            && self.body_done
            && client_framing != ClientFraming::UntilClose
            && !client.stopping();
        let persistence = match (switching, keep) {
            (true, _) => Persistence::Upgrade,
            (false, true) => Persistence::KeepAlive {
                http10: facts.http10,
            },
            (false, false) => Persistence::Close,
        };
        let decision = self
            .known
            .debug
            .then(|| self.known.decision.describe(snapshot));
        write_client_response(
            &mut client.out,
            &client.from_upstream,
            &client.response,
            client_framing,
            persistence,
            decision.as_ref(),
        );
        client.from_upstream.advance(client.response.len);
        snapshot.record_response(self.known.decision.vhost, status);
        if let Some(access) = self.known.access.as_mut() {
            access.status = status;
        }
        if switching {
            // Logged now; the server counts as in flight until the tunnel closes.
            drop(self.known.access.take());
            relay::tunnel(client, &mut conn.stream).await;
            drop(in_flight);
            return After::Drop;
        }
        let mut body = BodyDecoder::new(framing.body);
        let mut bytes = 0;
        let relayed = relay::relay_response(
            client,
            &mut conn.stream,
            &mut body,
            client_framing == ClientFraming::Chunked,
            &mut bytes,
        )
        .await;
        endpoint.stats.durations.observe(self.started.elapsed());
        if let Some(access) = self.known.access.as_mut() {
            access.bytes = bytes;
        }
        drop(in_flight);
        match relayed {
            Ok(()) => {
                if framing.keep_alive && self.body_done && client.from_upstream.is_empty() {
                    pool.checkin(conn);
                }
                match (keep, self.body_done) {
                    (true, _) => After::KeepAlive,
                    (false, true) => After::Close,
                    (false, false) => After::Linger,
                }
            }
            Err(relay::RelayError::Client) => After::Drop,
            Err(relay::RelayError::Upstream(fault)) => {
                tracing::warn!(upstream = %upstream.name, server = %endpoint.addr, error = %fault, "upstream response cut short");
                upstream.record_failure(self.index, "response body cut short");
                After::Drop
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_of_every_form() {
        let origin = Target::of(b"/a?b").unwrap();
        assert_eq!((origin.host, origin.path), (None, &b"/a?b"[..]));
        let absolute = Target::of(b"http://Shop.Example:8080/x?y").unwrap();
        assert_eq!(absolute.host, Some(&b"Shop.Example:8080"[..]));
        assert_eq!(absolute.path, b"/x?y");
        let bare = Target::of(b"https://shop").unwrap();
        assert_eq!((bare.host, bare.path), (Some(&b"shop"[..]), &b"/"[..]));
        assert_eq!(Target::of(b"*").unwrap().path, b"*");
        for bad in [
            &b"shop:443"[..],
            b"ftp://x/",
            b"http:///x",
            b"http://u@h/",
            b"http://h?q",
        ] {
            assert!(
                Target::of(bad).is_none(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn hosts_must_be_visible_ascii() {
        assert_eq!(host_text(b"shop.example:80"), Some("shop.example:80"));
        assert_eq!(host_text(b"sh\x01op"), None);
        assert_eq!(host_text("café".as_bytes()), None);
    }
}
