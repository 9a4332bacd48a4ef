//! Bodies on the wire for the HTTP/1 path: how a body is taken out of the
//! bytes that arrive (by its framing, counted against `max_request_body`),
//! the response body relayed to the client, and the tunnel of an upgrade.
//! Memory stays bounded: a body moves through the connection's buffers a
//! piece at a time, whatever its size.

use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::pin;
use std::task::Poll;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::conn::{make_room, Client, ClientStream, Peer, SendLimited};
use crate::body::MinRate;
use crate::http1::chunked::{size_line, LAST_CHUNK};
use crate::http1::{BodyLength, ChunkError, ChunkedDecoder};
use crate::upstream::h1::UpstreamStream;

/// The most body data moved in one step.
const BODY_STEP: usize = 64 * 1024;

/// Reads of bodies get this much room.
pub(super) const BODY_READ: usize = 32 * 1024;

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

    /// The bytes of the body still to be taken, when its framing says.
    pub fn remaining(&self) -> Option<u64> {
        match self {
            BodyDecoder::Exact(left) => Some(*left),
            BodyDecoder::Done => Some(0),
            BodyDecoder::Chunked(_) | BodyDecoder::UntilClose => None,
        }
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
pub(super) fn encode(out: &mut Vec<u8>, data: &[u8], chunked: bool) {
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
    min_rate: Option<MinRate>,
}

impl RequestBody {
    pub fn new(length: BodyLength, limit: Option<u64>) -> RequestBody {
        RequestBody {
            decoder: BodyDecoder::new(length),
            limit,
            seen: 0,
            started: false,
            min_rate: None,
        }
    }

    /// Cuts the body when it averages fewer than `bytes_per_second` (from
    /// now, after a grace period).
    pub fn with_min_rate(mut self, bytes_per_second: Option<u64>) -> RequestBody {
        self.min_rate = bytes_per_second.map(MinRate::new);
        self
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
        if took
            && !self.is_done()
            && self
                .min_rate
                .as_ref()
                .is_some_and(|rate| rate.too_slow(seen))
        {
            return Err(ClientFault::TooSlow);
        }
        Ok(took)
    }
}

/// How the client let a request down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ClientFault {
    /// Closed (or broke) the connection before the body was all sent.
    Gone,
    /// Sent no more of the body within `client_body_timeout`.
    TimedOut,
    /// Sent the body slower than `client_body_min_rate`.
    TooSlow,
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

/// Why a response body was not all relayed.
#[derive(Debug)]
pub(super) enum RelayError {
    /// Writing to the client failed: it went away.
    Client,
    Upstream(UpstreamFault),
}

/// Writes the response head (in `client.out`) and relays the body from the
/// server, re-framed as chunked when `chunked`; counts body bytes into
/// `bytes`. Each write to the client must make progress within
/// `send_timeout`.
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
        deadline,
        limits,
        conn,
        ..
    } = client;
    let mut io = SendLimited::new(io, deadline.as_mut(), limits.send, Peer::Client(conn));
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
/// sent early, then copies bytes both ways until one side closes, a side
/// reads nothing for `send_timeout`, or the proxy shuts down.
pub(super) async fn tunnel<S: ClientStream>(client: &mut Client<S>, upstream: &mut UpstreamStream) {
    client.out.extend_from_slice(&client.from_upstream);
    client.from_upstream.clear();
    if client.write_out().await.is_err() {
        return;
    }
    let Client {
        io,
        input,
        deadline,
        limits,
        conn,
        stop,
        ..
    } = client;
    let mut server_timer = pin!(tokio::time::sleep(limits.send));
    let mut upstream = SendLimited::new(upstream, server_timer.as_mut(), limits.send, Peer::Server);
    if !input.is_empty() {
        if upstream.write_all(input).await.is_err() {
            return;
        }
        input.clear();
    }
    let mut io = SendLimited::new(io, deadline.as_mut(), limits.send, Peer::Client(conn));
    let mut copied = pin!(tokio::io::copy_bidirectional(&mut io, &mut upstream));
    poll_fn(|cx| {
        if copied.as_mut().poll(cx).is_ready() || stop.poll_stopped(cx) {
            return Poll::Ready(());
        }
        Poll::Pending
    })
    .await;
}
