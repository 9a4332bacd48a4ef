//! One exchange with a server on one HTTP/1.1 connection, for both kinds of
//! request the proxy sends: the head written (noting whether anything went,
//! for a resend on a fresh connection), the body pumped from its source
//! while the server is watched for an early answer, and the response head
//! read. `request.rs` sends the HTTP/1 path's requests this way, `client.rs`
//! the requests of HTTP/2 clients.

use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, Sleep};
use tokio_util::io::poll_read_buf;

use super::conn::{make_room, ClientStream};
use super::relay::{encode, ClientFault, RequestBody, UpstreamFault, BODY_READ};
use crate::http1::chunked::LAST_CHUNK;
use crate::http1::{HeadError, ResponseHead};
use crate::proxy::body::BoxError;
use crate::upstream::h1::UpstreamStream;

/// The largest response head accepted from a server (HAProxy's default
/// buffer is 16 KiB; nginx's `proxy_buffer_size` 4-8 KiB).
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Reads of response heads get this much room (most heads are far
/// smaller; a larger one grows it).
const HEAD_READ: usize = 2 * 1024;

/// How sending a request body ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Sent {
    /// All of it went.
    All,
    /// The server answered first (its bytes are in `from_upstream`).
    Answered,
}

/// Why sending a request body stopped.
#[derive(Debug)]
pub(super) enum SendError {
    Client(ClientFault),
    /// A body in hyper's types failed (its client went, or it passed
    /// `max_request_body`).
    Body(BoxError),
    Upstream(UpstreamFault),
    /// The server took nothing more within the upstream's `timeout`.
    TimedOut,
    /// No more of the body came within the upstream's `timeout`.
    SourceTimedOut,
}

/// Where a request body comes from, a piece at a time.
pub(super) trait BodySource {
    /// Appends the next piece of the body to `out`, framed as it goes to the
    /// server: `Ready(Ok(true))` when there was one, `Ready(Ok(false))` once
    /// the body (and its last chunk) is all out, `Pending` until more comes.
    fn poll_piece(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Vec<u8>,
    ) -> Poll<Result<bool, SendError>>;
}

/// A request body read from an HTTP/1 client's connection.
pub(super) struct ClientBodySource<'a, S> {
    pub io: &'a mut S,
    pub input: &'a mut BytesMut,
    pub body: &'a mut RequestBody,
    pub chunked: bool,
    pub ended: bool,
}

impl<S: ClientStream> BodySource for ClientBodySource<'_, S> {
    fn poll_piece(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Vec<u8>,
    ) -> Poll<Result<bool, SendError>> {
        loop {
            if self.body.is_done() {
                if self.chunked && !self.ended {
                    self.ended = true;
                    out.extend_from_slice(LAST_CHUNK);
                    return Poll::Ready(Ok(true));
                }
                return Poll::Ready(Ok(false));
            }
            let chunked = self.chunked;
            match self
                .body
                .take(self.input, |data| encode(out, data, chunked))
            {
                Ok(true) => return Poll::Ready(Ok(true)),
                Ok(false) => {}
                Err(fault) => return Poll::Ready(Err(SendError::Client(fault))),
            }
            make_room(self.input, BODY_READ);
            match poll_read_buf(Pin::new(&mut *self.io), cx, self.input) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                    return Poll::Ready(Err(SendError::Client(ClientFault::Gone)))
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Sends a request body to the server, piece by piece from `source`, while
/// watching the server: an answer before the body is all sent ends the
/// sending. With a `deadline`, each piece sent or taken restarts `timeout`.
pub(super) async fn pump_body(
    upstream: &mut UpstreamStream,
    from_upstream: &mut BytesMut,
    out: &mut Vec<u8>,
    source: &mut impl BodySource,
    mut deadline: Option<(&mut Pin<Box<Sleep>>, Duration)>,
) -> Result<Sent, SendError> {
    out.clear();
    let mut written = 0;
    let progress = |deadline: &mut Option<(&mut Pin<Box<Sleep>>, Duration)>| {
        if let Some((deadline, timeout)) = deadline {
            deadline.as_mut().reset(Instant::now() + *timeout);
        }
    };
    let expired = |deadline: &mut Option<(&mut Pin<Box<Sleep>>, Duration)>,
                   cx: &mut Context<'_>| {
        deadline
            .as_mut()
            .is_some_and(|(deadline, _)| deadline.as_mut().poll(cx).is_ready())
    };
    progress(&mut deadline);
    poll_fn(|cx| loop {
        make_room(from_upstream, HEAD_READ);
        match poll_read_buf(Pin::new(&mut *upstream), cx, from_upstream) {
            Poll::Ready(Ok(0)) => {
                return Poll::Ready(Err(SendError::Upstream(UpstreamFault::Closed)))
            }
            Poll::Ready(Ok(_)) => return Poll::Ready(Ok(Sent::Answered)),
            Poll::Ready(Err(error)) => {
                return Poll::Ready(Err(SendError::Upstream(UpstreamFault::Io(error))))
            }
            Poll::Pending => {}
        }
        if written < out.len() {
            match Pin::new(&mut *upstream).poll_write(cx, &out[written..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(SendError::Upstream(UpstreamFault::Closed)))
                }
                Poll::Ready(Ok(n)) => {
                    written += n;
                    progress(&mut deadline);
                    continue;
                }
                Poll::Ready(Err(error)) => {
                    return Poll::Ready(Err(SendError::Upstream(UpstreamFault::Io(error))))
                }
                Poll::Pending if expired(&mut deadline, cx) => {
                    return Poll::Ready(Err(SendError::TimedOut))
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        out.clear();
        written = 0;
        match source.poll_piece(cx, out) {
            Poll::Ready(Ok(true)) => progress(&mut deadline),
            Poll::Ready(Ok(false)) => {
                return match Pin::new(&mut *upstream).poll_flush(cx) {
                    Poll::Ready(Ok(())) => Poll::Ready(Ok(Sent::All)),
                    Poll::Ready(Err(error)) => {
                        Poll::Ready(Err(SendError::Upstream(UpstreamFault::Io(error))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
            Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
            Poll::Pending if expired(&mut deadline, cx) => {
                return Poll::Ready(Err(SendError::SourceTimedOut))
            }
            Poll::Pending => return Poll::Pending,
        }
    })
    .await
}

/// Why no response head came.
#[derive(Debug)]
pub(super) enum ReceiveError {
    /// `answered`: some bytes of a response had come.
    Upstream {
        fault: UpstreamFault,
        answered: bool,
    },
    TimedOut,
}

/// Reads the server's response head into `response` (its bytes in
/// `from_upstream`), skipping interim 1xx responses but 101; with a
/// `deadline`, until it passes.
pub(super) async fn read_response_head(
    upstream: &mut UpstreamStream,
    from_upstream: &mut BytesMut,
    response: &mut ResponseHead,
    mut deadline: Option<&mut Pin<Box<Sleep>>>,
) -> Result<(), ReceiveError> {
    let mut answered = !from_upstream.is_empty();
    loop {
        if !from_upstream.is_empty() {
            let invalid = |why| ReceiveError::Upstream {
                fault: UpstreamFault::Invalid(why),
                answered: true,
            };
            match response.parse(from_upstream) {
                Ok(true) if (100..200).contains(&response.status) && response.status != 101 => {
                    from_upstream.advance(response.len);
                    continue;
                }
                Ok(true) if response.len > MAX_RESPONSE_HEAD => {
                    return Err(invalid("the response head is too large"))
                }
                Ok(true) => return Ok(()),
                Ok(false) if from_upstream.len() > MAX_RESPONSE_HEAD => {
                    return Err(invalid("the response head is too large"))
                }
                Ok(false) => {}
                Err(HeadError::TooManyHeaders) => return Err(invalid("too many header lines")),
                Err(HeadError::Malformed(what)) => return Err(invalid(what)),
            }
        }
        make_room(from_upstream, HEAD_READ);
        let read = poll_fn(|cx| {
            if let Poll::Ready(result) = poll_read_buf(Pin::new(&mut *upstream), cx, from_upstream)
            {
                return Poll::Ready(Some(result));
            }
            if let Some(deadline) = deadline.as_mut() {
                if deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(None);
                }
            }
            Poll::Pending
        })
        .await;
        let fault = match read {
            None => return Err(ReceiveError::TimedOut),
            Some(Ok(0)) => UpstreamFault::Closed,
            Some(Ok(_)) => {
                answered = true;
                continue;
            }
            Some(Err(error)) => UpstreamFault::Io(error),
        };
        return Err(ReceiveError::Upstream { fault, answered });
    }
}

/// Why an exchange on one connection did not bring a response head.
#[derive(Debug)]
pub(super) enum ExchangeError {
    /// The first write of the head failed: the server got nothing.
    NothingSent(io::Error),
    /// The server failed; `answered`: some of a response had come.
    Upstream {
        fault: UpstreamFault,
        answered: bool,
    },
    TimedOut,
    /// The request's own body failed (its sender's fault, not the server's).
    Body(SendError),
}

impl ExchangeError {
    /// Whether the request may go again on a new connection to the same
    /// server because this one, reused from the pool, was closed by the
    /// server before it took the request (Go's transport does the same):
    /// when nothing was written, or when nothing came back and the request
    /// can be repeated.
    pub fn may_resend(&self, replayable: bool) -> bool {
        match self {
            ExchangeError::NothingSent(_) => true,
            ExchangeError::Upstream {
                fault: UpstreamFault::Closed | UpstreamFault::Io(_),
                answered: false,
            } => replayable,
            _ => false,
        }
    }

    /// Sorts out how sending a body failed.
    pub fn of_send(error: SendError) -> ExchangeError {
        match error {
            SendError::Upstream(fault) => ExchangeError::Upstream {
                fault,
                answered: false,
            },
            SendError::TimedOut => ExchangeError::TimedOut,
            error => ExchangeError::Body(error),
        }
    }

    /// Sorts out how reading the response head failed.
    pub fn of_receive(error: ReceiveError) -> ExchangeError {
        match error {
            ReceiveError::TimedOut => ExchangeError::TimedOut,
            ReceiveError::Upstream { fault, answered } => {
                ExchangeError::Upstream { fault, answered }
            }
        }
    }
}

impl fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExchangeError::NothingSent(error) => write!(f, "writing the request: {error}"),
            ExchangeError::Upstream { fault, .. } => fault.fmt(f),
            ExchangeError::TimedOut => f.write_str("timed out"),
            ExchangeError::Body(error) => write!(f, "the request body: {error:?}"),
        }
    }
}

/// Pushes out what was written (a TLS stream may hold it back).
pub(super) async fn flush(upstream: &mut UpstreamStream) -> Result<(), ExchangeError> {
    upstream
        .flush()
        .await
        .map_err(|error| ExchangeError::Upstream {
            fault: UpstreamFault::Io(error),
            answered: false,
        })
}

/// Writes a request head; when its first write fails, nothing was sent.
pub(super) async fn write_head(
    upstream: &mut UpstreamStream,
    head: &[u8],
) -> Result<(), ExchangeError> {
    let mut written = 0;
    while written < head.len() {
        let failed = match upstream.write(&head[written..]).await {
            Ok(0) => io::Error::from(io::ErrorKind::WriteZero),
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
