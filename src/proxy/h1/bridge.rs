//! An HTTP/1 client's request to an HTTP/2 upstream (`protocol = "h2"` or
//! `"h2c"`): it goes through `service.rs` and hyper's client, as an HTTP/2
//! client's would, so it gets the same routing, retries, access log and
//! metrics. This module turns the raw head into an `http::Request`, feeds
//! the body to it chunk by chunk, and writes the response back as HTTP/1.1.
//!
//! The body is fed while the response head is awaited; once it arrives, what
//! the client has not sent yet is no longer read (the connection closes
//! after the response).

use std::pin::pin;
use std::sync::Arc;

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::{Body, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::conn::{Client, ClientStream, Read};
use super::heads::{content_length_header, header, write_local_response, Persistence, CONTINUE};
use super::relay::{ClientFault, RequestBody};
use super::request::{After, Facts};
use crate::body::{ClientBody, RelayedBody, RelayedChunk};
use crate::error::ProxyError;
use crate::http1::chunked::{size_line, LAST_CHUNK};
use crate::http1::{BodyLength, RequestHead};
use crate::proxy::body::ResponseBody;
use crate::proxy::handle;
use crate::stats::ClientTimeout;

/// A request on its way to hyper's client.
pub(super) struct Bridge {
    facts: Facts,
    request: Request<ClientBody>,
    /// Where its body goes, when it has one.
    feed: Option<mpsc::Sender<RelayedChunk>>,
}

/// The `http::Request` of a raw head (in `buf`); the body is fed later.
pub(super) fn prepare(buf: &[u8], head: &RequestHead, facts: Facts) -> Result<Bridge, ProxyError> {
    let invalid = |_| ProxyError::BadRequest("the request head cannot be forwarded");
    let method = http::Method::from_bytes(head.method_name.of(buf)).map_err(invalid)?;
    let uri = Uri::try_from(head.target.of(buf))
        .map_err(|_| ProxyError::BadRequest("the request target is not valid"))?;
    let mut headers = HeaderMap::with_capacity(head.headers.iter().len());
    for line in head.headers.iter() {
        let name = HeaderName::from_bytes(line.name.of(buf))
            .map_err(|_| ProxyError::BadRequest("a header name cannot be forwarded"))?;
        let value = HeaderValue::from_bytes(line.value.of(buf))
            .map_err(|_| ProxyError::BadRequest("a header value cannot be forwarded"))?;
        headers.append(name, value);
    }
    let (feed, body) = match facts.framing.body {
        BodyLength::Empty => (None, RelayedBody::empty()),
        BodyLength::Exact(length) => {
            let (feed, body) = RelayedBody::channel(SizeHint::with_exact(length));
            (Some(feed), body)
        }
        BodyLength::Chunked | BodyLength::UntilClose => {
            let (feed, body) = RelayedBody::channel(SizeHint::default());
            (Some(feed), body)
        }
    };
    let mut request = Request::new(ClientBody::Relayed(body));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = if facts.http10 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    *request.headers_mut() = headers;
    Ok(Bridge {
        facts,
        request,
        feed,
    })
}

/// Has the request served through `service.rs` and writes the response.
pub(super) async fn forward<S: ClientStream>(client: &mut Client<S>, bridge: Bridge) -> After {
    let Bridge {
        facts,
        request,
        feed,
    } = bridge;
    // hyper's response and whether the request body was read to its end,
    // or the limit the body passed: the request is then given up, dropped
    // (its upstream stream with it) at the end of this block.
    let served: Result<(Response<ResponseBody>, bool), ClientTimeout> = {
        let served = handle(
            Arc::clone(&client.snapshots),
            Arc::clone(&client.conn),
            request,
        );
        let mut served = pin!(served);
        match feed {
            None => {
                let Ok(response) = served.await;
                Ok((response, true))
            }
            Some(feed) => {
                let mut feeding = pin!(feed_body(client, feed, facts));
                let mut fed = None;
                loop {
                    tokio::select! {
                        response = served.as_mut() => {
                            let Ok(response) = response;
                            break Ok((response, fed == Some(Ok(()))));
                        }
                        result = feeding.as_mut(), if fed.is_none() => match result {
                            Err(ClientFault::TimedOut) => break Err(ClientTimeout::Body),
                            Err(ClientFault::TooSlow) => break Err(ClientTimeout::BodyRate),
                            result => fed = Some(result),
                        },
                    }
                }
            }
        }
    };
    match served {
        Ok((response, body_done)) => write_response(client, response, facts, body_done).await,
        Err(limit) => {
            client.conn.timed_out(limit);
            let error = ProxyError::ClientTimeout;
            client
                .snapshots
                .load()
                .record_response(None, error.status().as_u16());
            write_local_response(
                &mut client.out,
                error.status(),
                error.body_text().as_bytes(),
                None,
                facts.is_head(),
                Persistence::Close,
                None,
            );
            if client.write_out().await.is_err() {
                return After::Drop;
            }
            After::Linger
        }
    }
}

/// Reads the request body from the client and hands it on, piece by piece,
/// each read within `client_body_timeout`.
async fn feed_body<S: ClientStream>(
    client: &mut Client<S>,
    feed: mpsc::Sender<RelayedChunk>,
    facts: Facts,
) -> Result<(), ClientFault> {
    if facts.framing.expect_continue && client.input.is_empty() {
        client.send(CONTINUE).await.map_err(|_| ClientFault::Gone)?;
    }
    // `max_request_body` is applied by service.rs, which answers 413.
    let mut body =
        RequestBody::new(facts.framing.body, None).with_min_rate(client.limits.body_min_rate);
    loop {
        let mut piece = BytesMut::new();
        let took = body.take(&mut client.input, |data| piece.extend_from_slice(data))?;
        if !piece.is_empty() && feed.send(RelayedChunk::Data(piece.freeze())).await.is_err() {
            // The request is over (answered without its body).
            return Err(ClientFault::Gone);
        }
        if body.is_done() {
            let _ = feed.send(RelayedChunk::End).await;
            return Ok(());
        }
        if !took {
            client
                .deadline
                .as_mut()
                .reset(Instant::now() + client.limits.body);
            match client.read_input(false).await {
                Read::Data => {}
                Read::TimedOut => return Err(ClientFault::TimedOut),
                Read::Closed | Read::Failed | Read::Stopped => return Err(ClientFault::Gone),
            }
        }
    }
}

/// How the bridged response's body is framed for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// Writes hyper's response as HTTP/1.1.
async fn write_response<S: ClientStream>(
    client: &mut Client<S>,
    response: Response<ResponseBody>,
    facts: Facts,
    body_done: bool,
) -> After {
    let (parts, mut body) = response.into_parts();
    let status = parts.status;
    let no_body = facts.is_head()
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = match body.size_hint().exact() {
        _ if no_body => Framing::None,
        Some(length) => Framing::Length(length),
        None if facts.http10 => Framing::UntilClose,
        None => Framing::Chunked,
    };
    // service.rs says `connection: close` when the client may have sent
    // more than was read.
    let closes = parts
        .headers
        .get(header::CONNECTION)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"close"));
    let keep = facts.framing.keep_alive
        && body_done
        && !closes
        && framing != Framing::UntilClose
        && !client.stopping();
    let persistence = if keep {
        Persistence::KeepAlive {
            http10: facts.http10,
        }
    } else {
        Persistence::Close
    };
    write_head(
        &mut client.out,
        status,
        &parts.headers,
        framing,
        persistence,
    );
    let chunked = framing == Framing::Chunked;
    if !no_body {
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                // The server's body broke off: so does the client's.
                let _ = client.write_out().await;
                return After::Drop;
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if data.is_empty() {
                continue;
            }
            if chunked {
                size_line(data.len(), &mut client.out);
            }
            client.out.extend_from_slice(&data);
            if chunked {
                client.out.extend_from_slice(b"\r\n");
            }
            if client.out.len() >= 16 * 1024 {
                if client.write_out().await.is_err() {
                    return After::Drop;
                }
                client.out.clear();
            }
        }
        if chunked {
            client.out.extend_from_slice(LAST_CHUNK);
        }
    }
    if client.write_out().await.is_err() {
        return After::Drop;
    }
    match (keep, body_done && !closes) {
        (true, _) => After::KeepAlive,
        (false, true) => After::Close,
        (false, false) => After::Linger,
    }
}

/// The head of a bridged response: its status, its headers (service.rs
/// cleaned them) but the framing and persistence ones, which are ours.
fn write_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    framing: Framing,
    persistence: Persistence,
) {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH && framing != Framing::None
            || name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
        {
            continue;
        }
        header(out, name.as_str().as_bytes(), value.as_bytes());
    }
    match framing {
        Framing::Length(length) => content_length_header(out, length),
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::None | Framing::UntilClose => {}
    }
    match persistence {
        Persistence::KeepAlive { http10: true } => {
            out.extend_from_slice(b"connection: keep-alive\r\n")
        }
        Persistence::Close => out.extend_from_slice(b"connection: close\r\n"),
        Persistence::KeepAlive { http10: false } | Persistence::Upgrade => {}
    }
    out.extend_from_slice(b"\r\n");
}
