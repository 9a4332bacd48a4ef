//! One HTTP/1 request, from its parsed head to the last byte of its response:
//! the same steps as `service.rs` (docs/config.md#requests) on the bytes as they
//! came. Everything the request needs of its head is taken in `prepare`,
//! with the upstream request head written at once; then the head's bytes are
//! let go and the request is answered by usherd (here), forwarded to an
//! `http1` upstream (`forward.rs`), or bridged to hyper's client for an
//! HTTP/2 upstream (`bridge.rs`).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Buf;
use http::header::HeaderValue;
use http::StatusCode;

use super::bridge::{self, Bridge};
use super::conn::{Client, ClientStream};
use super::forward;
use super::heads::{write_local_response, write_upstream_request, Forwarding, Persistence};
use super::relay::RequestBody;
use crate::downstream::ClientConn;
use crate::error::ProxyError;
use crate::http1::{
    request_framing, BodyLength, HeaderKind, Headers, Method, RequestFraming, RequestHead,
};
use crate::proxy::access_log::{self, AccessRecord};
use crate::proxy::decide::{decide, host_text, Decided, RequestView};
use crate::proxy::decision::{wants_decision, Decision};
use crate::proxy::redirect::REDIRECT_TEXT;
use crate::proxy::request_key::{request_key, HeaderSource};
use crate::snapshot::Snapshot;

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
pub(super) struct Known {
    pub facts: Facts,
    pub decision: Decision,
    pub debug: bool,
    pub access: Option<Box<AccessRecord>>,
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

pub(super) enum Reply {
    Error(ProxyError),
    Redirect(HeaderValue),
}

/// Where an `http1` upstream's request goes: the upstream (an index into the
/// snapshot) and the request's key for `consistent_hash`.
pub(super) struct Forward {
    pub upstream: usize,
    pub key: Option<u64>,
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
            forward::forward_to_http1(client, &snapshot, known, forward, started).await
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
    let request = RequestView {
        is_connect: method == Method::Connect,
        host,
        host_lines: head.headers.values(buf, HeaderKind::Host).count(),
        // An absolute-form target's host wins over Host (RFC 9112 §3.2.2).
        host_conflicts: false,
        needs_host: !known.facts.http10,
        path_and_query,
        declared_length: match known.facts.framing.body {
            BodyLength::Exact(length) => Some(length),
            _ => None,
        },
    };
    let matched = match decide(snapshot, &conn.listener, &request) {
        Ok(Decided::Route(matched)) => matched,
        Ok(Decided::Redirect(location)) => return answer(known, Reply::Redirect(location)),
        Err(error) => return answer(known, Reply::Error(error)),
    };
    let path = path_and_query
        .split_once('?')
        .map_or(path_and_query, |(path, _)| path);
    let upstream = &snapshot.upstreams[matched.route.upstream];
    if upstream.transport.is_http2() {
        // hyper's client takes it from here, with the whole request path of
        // service.rs (access log and metrics included).
        return match bridge::prepare(buf, head, known.facts) {
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
    // Made only for a request that named no host (HTTP/1.0).
    let default_host = if host.is_none() {
        conn.local.to_string()
    } else {
        String::new()
    };
    let forwarding = Forwarding {
        path: rewritten.as_deref().map_or(target.path, str::as_bytes),
        target_host: target.host,
        host,
        default_host: default_host.as_bytes(),
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
pub(super) async fn answer<S: ClientStream>(
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
}
