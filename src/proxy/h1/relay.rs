//! Bodies and heads on the wire for the HTTP/1 path: the request body from
//! the client to the server (re-framed, counted against `max_request_body`,
//! with the server watched for an early answer), the response head from the
//! server, the response body to the client, and the tunnel of an upgrade.
//! Memory stays bounded: a body moves through the connection's buffers a
//! piece at a time, whatever its size.

use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::io::poll_read_buf;

use super::conn::{make_room, Client, ClientStream};
use crate::http1::chunked::{size_line, LAST_CHUNK};
use crate::http1::{BodyLength, ChunkError, ChunkedDecoder, HeadError};
use crate::upstream::h1::UpstreamStream;

/// The most body data moved in one step.
const BODY_STEP: usize = 64 * 1024;

/// Reads of bodies get this much room.
const BODY_READ: usize = 32 * 1024;

/// Reads of response heads get this much room (most heads are far
/// smaller; a larger one grows it).
const HEAD_READ: usize = 2 * 1024;

/// The largest response head accepted from a server (HAProxy's default
/// buffer is 16 KiB; nginx's `proxy_buffer_size` 4-8 KiB).
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Takes a body out of the bytes that arrive, by its framing.
#[derive(Debug)]
pub(super) enum BodyDecoder {
    Exact(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
    Done,
}

impl BodyDecoder {
    pub fn new(length: BodyLength) -> BodyDecoder {
        match length {
            BodyLength::Empty | BodyLength::Exact(0) => BodyDecoder::Done,
            BodyLength::Exact(length) => BodyDecoder::Exact(length),
            BodyLength::Chunked => BodyDecoder::Chunked(ChunkedDecoder::default()),
            BodyLength::UntilClose => BodyDecoder::UntilClose,
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self, BodyDecoder::Done)
    }

    /// Takes what `input` holds of the body (about `BODY_STEP` of data at
    /// most), handing each piece of data to `sink`; false when nothing could
    /// be taken without more input.
    pub fn take(
        &mut self,
        input: &mut BytesMut,
        mut sink: impl FnMut(&[u8]),
    ) -> Result<bool, ChunkError> {
        match self {
            BodyDecoder::Done => Ok(false),
            BodyDecoder::Exact(left) => {
                let take = input
                    .len()
                    .min(BODY_STEP)
                    .min(usize::try_from(*left).unwrap_or(usize::MAX));
                if take == 0 {
                    return Ok(false);
                }
                sink(&input[..take]);
                input.advance(take);
                *left -= take as u64;
                if *left == 0 {
                    *self = BodyDecoder::Done;
                }
                Ok(true)
            }
            BodyDecoder::UntilClose => {
                let take = input.len().min(BODY_STEP);
                if take == 0 {
                    return Ok(false);
                }
                sink(&input[..take]);
                input.advance(take);
                Ok(true)
            }
            BodyDecoder::Chunked(decoder) => {
                let (mut took, mut moved) = (false, 0);
                while !decoder.is_done() && moved < BODY_STEP {
                    let step = decoder.step(input)?;
                    if let Some((start, end)) = step.data {
                        sink(&input[start..end]);
                        moved += end - start;
                    }
                    if step.consumed == 0 {
                        break;
                    }
                    input.advance(step.consumed);
                    took = true;
                }
                if decoder.is_done() {
                    *self = BodyDecoder::Done;
                }
                Ok(took)
            }
        }
    }

    /// The sender closed: true when that ends the body (one that runs
    /// until close), false when the body was cut short.
    pub fn end_of_input(&mut self) -> bool {
        if matches!(self, BodyDecoder::UntilClose) {
            *self = BodyDecoder::Done;
        }
        self.is_done()
    }
}

/// Appends body data to `out`, as a chunk when `chunked`.
fn encode(out: &mut Vec<u8>, data: &[u8], chunked: bool) {
    if chunked {
        size_line(data.len(), out);
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(data);
    }
}

/// A request body on its way from the client, counted against the limit.
#[derive(Debug)]
pub(super) struct RequestBody {
    decoder: BodyDecoder,
    limit: Option<u64>,
    seen: u64,
    /// Some of it has been read (it can no longer be sent again).
    started: bool,
}

impl RequestBody {
    pub fn new(length: BodyLength, limit: Option<u64>) -> RequestBody {
        RequestBody {
            decoder: BodyDecoder::new(length),
            limit,
            seen: 0,
            started: false,
        }
    }

    /// All of it has been read.
    pub fn is_done(&self) -> bool {
        self.decoder.is_done()
    }

    /// Nothing of it has been read yet.
    pub fn untouched(&self) -> bool {
        !self.started
    }

    /// Takes what `input` holds of the body into `sink`; false when more
    /// input is needed.
    pub fn take(
        &mut self,
        input: &mut BytesMut,
        mut sink: impl FnMut(&[u8]),
    ) -> Result<bool, ClientFault> {
        let mut seen = self.seen;
        let took = self
            .decoder
            .take(input, |data| {
                seen += data.len() as u64;
                sink(data);
            })
            .map_err(ClientFault::BadChunk)?;
        self.seen = seen;
        self.started |= took;
        if self.limit.is_some_and(|limit| seen > limit) {
            return Err(ClientFault::TooLarge);
        }
        Ok(took)
    }
}

/// How the client let a request down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ClientFault {
    /// Closed (or broke) the connection before the body was all sent.
    Gone,
    /// Sent no more of the body within the limit.
    TimedOut,
    /// Sent more than `max_request_body`.
    TooLarge,
    BadChunk(ChunkError),
}

/// What went wrong on the server's side of an exchange.
#[derive(Debug)]
pub(super) enum UpstreamFault {
    Closed,
    Io(io::Error),
    Invalid(&'static str),
    BadChunk(ChunkError),
}

impl fmt::Display for UpstreamFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamFault::Closed => f.write_str("the server closed the connection"),
            UpstreamFault::Io(error) => write!(f, "connection to the server: {error}"),
            UpstreamFault::Invalid(why) => write!(f, "invalid response: {why}"),
            UpstreamFault::BadChunk(error) => write!(f, "invalid response body: {error}"),
        }
    }
}

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
    Upstream(UpstreamFault),
    /// The server took nothing more within the upstream's `timeout`.
    TimedOut,
}

/// Sends the rest of the request body to the server, re-framed (chunked
/// when it came chunked), while watching the server: an answer before the
/// body is all sent ends the sending. Each piece sent or read restarts the
/// upstream's `timeout`.
pub(super) async fn send_body<S: ClientStream>(
    client: &mut Client<S>,
    upstream: &mut UpstreamStream,
    body: &mut RequestBody,
    chunked: bool,
    timeout: Duration,
) -> Result<Sent, SendError> {
    let Client {
        io,
        input,
        out,
        from_upstream,
        deadline,
        ..
    } = client;
    out.clear();
    let mut written = 0;
    let mut last_chunk_queued = false;
    deadline.as_mut().reset(Instant::now() + timeout);
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
                    deadline.as_mut().reset(Instant::now() + timeout);
                    continue;
                }
                Poll::Ready(Err(error)) => {
                    return Poll::Ready(Err(SendError::Upstream(UpstreamFault::Io(error))))
                }
                Poll::Pending => {
                    if deadline.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Err(SendError::TimedOut));
                    }
                    return Poll::Pending;
                }
            }
        }
        out.clear();
        written = 0;
        if body.is_done() {
            if chunked && !last_chunk_queued {
                last_chunk_queued = true;
                out.extend_from_slice(LAST_CHUNK);
                continue;
            }
            return match Pin::new(&mut *upstream).poll_flush(cx) {
                Poll::Ready(Ok(())) => Poll::Ready(Ok(Sent::All)),
                Poll::Ready(Err(error)) => {
                    Poll::Ready(Err(SendError::Upstream(UpstreamFault::Io(error))))
                }
                Poll::Pending => Poll::Pending,
            };
        }
        match body.take(input, |data| encode(out, data, chunked)) {
            Ok(true) => continue,
            Ok(false) => {}
            Err(fault) => return Poll::Ready(Err(SendError::Client(fault))),
        }
        make_room(input, BODY_READ);
        match poll_read_buf(Pin::new(&mut *io), cx, input) {
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                return Poll::Ready(Err(SendError::Client(ClientFault::Gone)))
            }
            Poll::Ready(Ok(_)) => {
                deadline.as_mut().reset(Instant::now() + timeout);
            }
            Poll::Pending => {
                if deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(SendError::Client(ClientFault::TimedOut)));
                }
                return Poll::Pending;
            }
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

/// Reads the server's response head into `client.response` (bytes in
/// `client.from_upstream`), skipping interim 1xx responses but 101, until
/// the deadline already set.
pub(super) async fn read_response_head<S: ClientStream>(
    client: &mut Client<S>,
    upstream: &mut UpstreamStream,
) -> Result<(), ReceiveError> {
    let mut answered = !client.from_upstream.is_empty();
    loop {
        if !client.from_upstream.is_empty() {
            let invalid = |why| ReceiveError::Upstream {
                fault: UpstreamFault::Invalid(why),
                answered: true,
            };
            match client.response.parse(&client.from_upstream) {
                Ok(true)
                    if (100..200).contains(&client.response.status)
                        && client.response.status != 101 =>
                {
                    client.from_upstream.advance(client.response.len);
                    continue;
                }
                Ok(true) if client.response.len > MAX_RESPONSE_HEAD => {
                    return Err(invalid("the response head is too large"))
                }
                Ok(true) => return Ok(()),
                Ok(false) if client.from_upstream.len() > MAX_RESPONSE_HEAD => {
                    return Err(invalid("the response head is too large"))
                }
                Ok(false) => {}
                Err(HeadError::TooManyHeaders) => return Err(invalid("too many header lines")),
                Err(HeadError::Malformed(what)) => return Err(invalid(what)),
            }
        }
        make_room(&mut client.from_upstream, HEAD_READ);
        let read = poll_fn(|cx| {
            if let Poll::Ready(result) =
                poll_read_buf(Pin::new(&mut *upstream), cx, &mut client.from_upstream)
            {
                return Poll::Ready(Some(result));
            }
            if client.deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
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

/// Why a response body was not all relayed.
#[derive(Debug)]
pub(super) enum RelayError {
    /// Writing to the client failed: it went away.
    Client,
    Upstream(UpstreamFault),
}

/// Writes the response head (in `client.out`) and relays the body from the
/// server, re-framed as chunked when `chunked`; counts body bytes into
/// `bytes`.
pub(super) async fn relay_response<S: ClientStream>(
    client: &mut Client<S>,
    upstream: &mut UpstreamStream,
    body: &mut BodyDecoder,
    chunked: bool,
    bytes: &mut u64,
) -> Result<(), RelayError> {
    let Client {
        io,
        out,
        from_upstream,
        ..
    } = client;
    let mut ended = body.is_done();
    loop {
        if let BodyDecoder::Exact(left) = body {
            // A long body goes straight from the read buffer, once the head is out.
            if out.is_empty() && !chunked && from_upstream.len() >= BODY_READ / 2 {
                let take = from_upstream
                    .len()
                    .min(usize::try_from(*left).unwrap_or(usize::MAX));
                io.write_all(&from_upstream[..take])
                    .await
                    .map_err(|_| RelayError::Client)?;
                from_upstream.advance(take);
                *bytes += take as u64;
                *left -= take as u64;
                if *left == 0 {
                    *body = BodyDecoder::Done;
                }
            }
        }
        let mut moved = 0;
        body.take(from_upstream, |data| {
            moved += data.len();
            encode(out, data, chunked);
        })
        .map_err(|error| RelayError::Upstream(UpstreamFault::BadChunk(error)))?;
        *bytes += moved as u64;
        if body.is_done() && !ended {
            ended = true;
            if chunked {
                out.extend_from_slice(LAST_CHUNK);
            }
        }
        if !out.is_empty() {
            io.write_all(out).await.map_err(|_| RelayError::Client)?;
            out.clear();
        }
        if body.is_done() {
            return io.flush().await.map_err(|_| RelayError::Client);
        }
        make_room(from_upstream, BODY_READ);
        match upstream.read_buf(from_upstream).await {
            Ok(0) if body.end_of_input() => {}
            Ok(0) => return Err(RelayError::Upstream(UpstreamFault::Closed)),
            Ok(_) => {}
            Err(error) => return Err(RelayError::Upstream(UpstreamFault::Io(error))),
        }
    }
}

/// After a 101: writes the head (in `client.out`) and whatever either side
/// sent early, then copies bytes both ways until one side closes or the
/// proxy shuts down.
pub(super) async fn tunnel<S: ClientStream>(client: &mut Client<S>, upstream: &mut UpstreamStream) {
    client.out.extend_from_slice(&client.from_upstream);
    client.from_upstream.clear();
    if client.write_out().await.is_err() {
        return;
    }
    if !client.input.is_empty() {
        if upstream.write_all(&client.input).await.is_err() {
            return;
        }
        client.input.clear();
    }
    let Client { io, stop, .. } = client;
    let mut copied = std::pin::pin!(tokio::io::copy_bidirectional(io, upstream));
    poll_fn(|cx| {
        if copied.as_mut().poll(cx).is_ready() || stop.poll_stopped(cx) {
            return Poll::Ready(());
        }
        Poll::Pending
    })
    .await;
}
