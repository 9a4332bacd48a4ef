//! One exchange with a server on one HTTP/1.1 connection, for both kinds of
//! request the proxy sends: the head written (noting whether anything went,
//! for a resend on a fresh connection), the body pumped from its sender
//! while the server is watched for an early answer, and the response head
//! read. Interim responses (1xx but 101) may come at any time before the
//! final one, while the body is sent too: each goes to the sender, which
//! passes it on or drops it, and the body keeps going. `forward.rs` sends
//! the HTTP/1 path's requests this way, `client.rs` the requests of HTTP/2
//! clients.

use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::{pin, Pin};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, Sleep};
use tokio_util::io::poll_read_buf;

use super::conn::{make_room, ClientStream, Peer, SendLimited};
use super::heads::write_interim_response;
use super::relay::{encode, ClientFault, RequestBody, UpstreamFault, BODY_READ};
use crate::body::BoxError;
use crate::downstream::ClientConn;
use crate::http1::chunked::LAST_CHUNK;
use crate::http1::{HeadError, ResponseHead};
use crate::upstream::h1::UpstreamStream;

/// The largest response head accepted from a server (HAProxy's default
/// buffer is 16 KiB; nginx's `proxy_buffer_size` 4-8 KiB).
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Reads of response heads get this much room (most heads are far
/// smaller; a larger one grows it).
const HEAD_READ: usize = 2 * 1024;

/// The time limits of an exchange, on one timer: the server's (the
/// upstream's `timeout`) while it takes the body or owes its response head,
/// the sender's (`client_body_timeout`) while the body is awaited from it.
/// The timer is armed when a wait begins, so pieces that move at once cost
/// nothing.
pub(super) struct Deadline<'a> {
    timer: &'a mut Pin<Box<Sleep>>,
    server: Duration,
    sender: Duration,
    /// Who the timer runs for now.
    waiting: Option<Wait>,
}

/// Whom an exchange waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    Server,
    Sender,
}

impl<'a> Deadline<'a> {
    pub fn new(timer: &'a mut Pin<Box<Sleep>>, server: Duration, sender: Duration) -> Deadline<'a> {
        Deadline {
            timer,
            server,
            sender,
            waiting: None,
        }
    }

    /// Something moved: the next wait starts a new limit.
    fn progress(&mut self) {
        self.waiting = None;
    }

    /// Waiting for `wait`: true once its limit passed (since the wait began).
    fn expired(&mut self, wait: Wait, cx: &mut Context<'_>) -> bool {
        if self.waiting != Some(wait) {
            self.waiting = Some(wait);
            let limit = match wait {
                Wait::Server => self.server,
                Wait::Sender => self.sender,
            };
            self.timer.as_mut().reset(Instant::now() + limit);
        }
        self.timer.as_mut().poll(cx).is_ready()
    }

    /// Starts the server's limit for its response head.
    fn await_server(&mut self) {
        self.waiting = Some(Wait::Server);
        self.timer.as_mut().reset(Instant::now() + self.server);
    }
}

/// How sending a request body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sent {
    /// All of it went.
    All,
    /// The server's final answer came first.
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
    /// No more of the body came within `client_body_timeout`.
    SourceTimedOut,
}

/// The side a request comes from: its body, a piece at a time, and where
/// the interim responses the server sends before its final one go.
pub(super) trait Sender {
    /// Appends the next piece of the body to `out`, framed as it goes to the
    /// server: `Ready(Ok(true))` when there was one, `Ready(Ok(false))` once
    /// the body (and its last chunk) is all out, `Pending` until more comes.
    fn poll_piece(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Vec<u8>,
    ) -> Poll<Result<bool, SendError>>;

    /// Takes an interim response (1xx but 101), `head` parsed from `buf`:
    /// passes it on to the client, or drops it.
    async fn interim(&mut self, head: &ResponseHead, buf: &[u8]) -> Result<(), SendError>;
}

/// A request from an HTTP/1 client's connection.
pub(super) struct ClientSender<'a, S> {
    pub io: &'a mut S,
    pub input: &'a mut BytesMut,
    pub body: &'a mut RequestBody,
    pub chunked: bool,
    pub ended: bool,
    /// HTTP/1.0 has no interim responses (RFC 9110 §15.2).
    pub http10: bool,
    /// A `100 Continue` went to the client (usherd's own, or a server's):
    /// the client waits for one only, and a second is dropped.
    pub continue_sent: &'a mut bool,
    /// `send_timeout`, for the interim responses written to the client.
    pub send_limit: Duration,
    pub conn: &'a ClientConn,
}

impl<S: ClientStream> Sender for ClientSender<'_, S> {
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

    async fn interim(&mut self, head: &ResponseHead, buf: &[u8]) -> Result<(), SendError> {
        let is_continue = head.status == 100;
        if self.http10 || is_continue && *self.continue_sent {
            return Ok(());
        }
        *self.continue_sent |= is_continue;
        // Interim responses are rare: their head gets a buffer of its own,
        // as `out` holds a piece of the body.
        let mut out = Vec::new();
        write_interim_response(&mut out, buf, head);
        let gone = |_| SendError::Client(ClientFault::Gone);
        // The connection's timer is the exchange's: interim responses, rare,
        // get one of their own.
        let timer = pin!(tokio::time::sleep(self.send_limit));
        let mut io = SendLimited::new(
            &mut *self.io,
            timer,
            self.send_limit,
            Peer::Client(self.conn),
        );
        io.write_all(&out).await.map_err(gone)?;
        io.flush().await.map_err(gone)
    }
}

/// What the start of a server's answer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Head {
    /// An interim response (1xx but 101), parsed.
    Interim,
    /// The final response (or bytes that are not one, refused when read).
    Final,
}

fn is_interim(status: u16) -> bool {
    (100..200).contains(&status) && status != 101
}

/// What the start of `from_upstream` (not empty) holds, when enough of it
/// came to tell; an interim head is parsed into `response`.
fn head_at_start(response: &mut ResponseHead, from_upstream: &[u8]) -> Option<Head> {
    match response.parse(from_upstream) {
        Ok(true) if is_interim(response.status) => Some(Head::Interim),
        Ok(false) if from_upstream.len() <= MAX_RESPONSE_HEAD => None,
        _ => Some(Head::Final),
    }
}

/// The rest of an exchange once the request head is written: the body from
/// `sender` (when `with_body`), sent while the server is watched, then the
/// response head, read into `response` (its bytes in `from_upstream`).
/// Interim responses that come on the way go to `sender`, and the body keeps
/// going; a final answer ends the sending. With a `deadline`, the server
/// must take each piece within its limit, the sender bring each within its
/// own, and the response head come within the server's limit of the body's
/// end.
pub(super) async fn send_body_and_read_head(
    upstream: &mut UpstreamStream,
    from_upstream: &mut BytesMut,
    response: &mut ResponseHead,
    out: &mut Vec<u8>,
    sender: &mut impl Sender,
    with_body: bool,
    mut deadline: Option<Deadline<'_>>,
) -> Result<Sent, ExchangeError> {
    let mut interim = false;
    // After an interim response the server has answered, whatever follows.
    let answered = |error: ExchangeError, interim: bool| match error {
        ExchangeError::Upstream { fault, answered } => ExchangeError::Upstream {
            fault,
            answered: answered || interim,
        },
        error => error,
    };
    let sent = if with_body {
        out.clear();
        let mut written = 0;
        loop {
            let pumped = pump_body(
                upstream,
                from_upstream,
                response,
                out,
                &mut written,
                sender,
                deadline.as_mut(),
            )
            .await;
            match pumped {
                Ok(Some(sent)) => break sent,
                Ok(None) => {
                    interim = true;
                    pass_interim(sender, response, from_upstream).await?;
                }
                Err(error) => return Err(answered(ExchangeError::of_send(error), interim)),
            }
        }
    } else {
        flush(upstream).await?;
        Sent::All
    };
    if let Some(deadline) = deadline.as_mut() {
        deadline.await_server();
    }
    loop {
        let head = read_response_head(
            upstream,
            from_upstream,
            response,
            deadline.as_mut().map(|deadline| &mut *deadline.timer),
        )
        .await;
        match head {
            Ok(Head::Final) => return Ok(sent),
            Ok(Head::Interim) => {
                interim = true;
                pass_interim(sender, response, from_upstream).await?;
            }
            Err(error) => return Err(answered(ExchangeError::of_receive(error), interim)),
        }
    }
}

/// Hands the interim response at the start of `from_upstream` to `sender`,
/// and moves past it.
async fn pass_interim(
    sender: &mut impl Sender,
    response: &ResponseHead,
    from_upstream: &mut BytesMut,
) -> Result<(), ExchangeError> {
    sender
        .interim(response, from_upstream)
        .await
        .map_err(ExchangeError::Body)?;
    from_upstream.advance(response.len);
    Ok(())
}

/// Sends the request body, piece by piece from `sender` (the piece in
/// `out`, `written` of it sent), while watching the server: `Some` once the
/// body is all sent or a final answer came, `None` when an interim response
/// came (parsed into `response`): the caller takes it and calls again. A
/// head that has begun to come stops the sending until it is whole. With a
/// `deadline`, each wait (for the server or the sender) has its limit.
async fn pump_body(
    upstream: &mut UpstreamStream,
    from_upstream: &mut BytesMut,
    response: &mut ResponseHead,
    out: &mut Vec<u8>,
    written: &mut usize,
    sender: &mut impl Sender,
    mut deadline: Option<&mut Deadline<'_>>,
) -> Result<Option<Sent>, SendError> {
    let progress = |deadline: &mut Option<&mut Deadline<'_>>| {
        if let Some(deadline) = deadline {
            deadline.progress();
        }
    };
    let expired = |deadline: &mut Option<&mut Deadline<'_>>, wait, cx: &mut Context<'_>| {
        deadline
            .as_mut()
            .is_some_and(|deadline| deadline.expired(wait, cx))
    };
    progress(&mut deadline);
    poll_fn(|cx| loop {
        if !from_upstream.is_empty() {
            match head_at_start(response, from_upstream) {
                Some(Head::Interim) => return Poll::Ready(Ok(None)),
                Some(Head::Final) => return Poll::Ready(Ok(Some(Sent::Answered))),
                None => {}
            }
        }
        make_room(from_upstream, HEAD_READ);
        match poll_read_buf(Pin::new(&mut *upstream), cx, from_upstream) {
            Poll::Ready(Ok(0)) => {
                return Poll::Ready(Err(SendError::Upstream(UpstreamFault::Closed)))
            }
            Poll::Ready(Ok(_)) => continue,
            Poll::Ready(Err(error)) => {
                return Poll::Ready(Err(SendError::Upstream(UpstreamFault::Io(error))))
            }
            Poll::Pending => {}
        }
        if !from_upstream.is_empty() {
            return if expired(&mut deadline, Wait::Server, cx) {
                Poll::Ready(Err(SendError::TimedOut))
            } else {
                Poll::Pending
            };
        }
        if *written < out.len() {
            match Pin::new(&mut *upstream).poll_write(cx, &out[*written..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(SendError::Upstream(UpstreamFault::Closed)))
                }
                Poll::Ready(Ok(n)) => {
                    *written += n;
                    progress(&mut deadline);
                    continue;
                }
                Poll::Ready(Err(error)) => {
                    return Poll::Ready(Err(SendError::Upstream(UpstreamFault::Io(error))))
                }
                Poll::Pending if expired(&mut deadline, Wait::Server, cx) => {
                    return Poll::Ready(Err(SendError::TimedOut))
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        out.clear();
        *written = 0;
        match sender.poll_piece(cx, out) {
            Poll::Ready(Ok(true)) => progress(&mut deadline),
            Poll::Ready(Ok(false)) => {
                return match Pin::new(&mut *upstream).poll_flush(cx) {
                    Poll::Ready(Ok(())) => Poll::Ready(Ok(Some(Sent::All))),
                    Poll::Ready(Err(error)) => {
                        Poll::Ready(Err(SendError::Upstream(UpstreamFault::Io(error))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
            Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
            Poll::Pending if expired(&mut deadline, Wait::Sender, cx) => {
                return Poll::Ready(Err(SendError::SourceTimedOut))
            }
            Poll::Pending => return Poll::Pending,
        }
    })
    .await
}

/// Why no response head came.
#[derive(Debug)]
enum ReceiveError {
    /// `answered`: some bytes of a response had come.
    Upstream {
        fault: UpstreamFault,
        answered: bool,
    },
    TimedOut,
}

/// Reads the server's next response head into `response` (its bytes in
/// `from_upstream`): an interim one, or the final one (101 included); with
/// a `deadline`, until it passes.
async fn read_response_head(
    upstream: &mut UpstreamStream,
    from_upstream: &mut BytesMut,
    response: &mut ResponseHead,
    mut deadline: Option<&mut Pin<Box<Sleep>>>,
) -> Result<Head, ReceiveError> {
    let mut answered = !from_upstream.is_empty();
    loop {
        if !from_upstream.is_empty() {
            let invalid = |why| ReceiveError::Upstream {
                fault: UpstreamFault::Invalid(why),
                answered: true,
            };
            match response.parse(from_upstream) {
                Ok(true) if is_interim(response.status) => return Ok(Head::Interim),
                Ok(true) if response.len > MAX_RESPONSE_HEAD => {
                    return Err(invalid("the response head is too large"))
                }
                Ok(true) => return Ok(Head::Final),
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
    fn of_send(error: SendError) -> ExchangeError {
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
    fn of_receive(error: ReceiveError) -> ExchangeError {
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
async fn flush(upstream: &mut UpstreamStream) -> Result<(), ExchangeError> {
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
