//! One HTTP/1 client connection: read a head, have it answered
//! (`request.rs`), keep the connection or close it, and in between apply the
//! client-side time limits, park the connection when it idles, and stop at
//! shutdown.
//!
//! Time limits (as nginx's `client_header_timeout` and `keepalive_timeout`),
//! one timer per connection moved from limit to limit:
//! - from accept, and from the first byte of each later head, the whole head
//!   must arrive within `header_read_timeout` (slowloris);
//! - between requests the connection may idle for `idle_timeout`;
//! - while a request is served, the upstream's limits, `client_body_timeout`
//!   while its body is awaited, and `send_timeout` while a write to the
//!   client waits (`SendLimited`).
//!
//! Parking: a connection idle for `PARK_AFTER_IDLE` gives back its buffers
//! and waits for the client with a few bytes of stack, so an idle
//! keep-alive connection costs its socket and a small task, not 16 KiB of
//! buffers (nginx frees its buffers the same way).

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use tokio_util::io::poll_read_buf;

use super::heads::{write_local_response, Persistence};
use super::request;
use crate::downstream::{stopped, ClientConn};
use crate::error::ProxyError;
use crate::http1::{HeadError, RequestHead, ResponseHead};
use crate::snapshot::SharedSnapshot;
use crate::stats::ClientTimeout;

/// How long a connection idles before it gives back its buffers. Long
/// enough that busy keep-alive clients never pay for it.
pub const PARK_AFTER_IDLE: Duration = Duration::from_millis(100);

/// The room a head is read into; a head that does not fit grows it. Small,
/// as nginx's 1 KiB `client_header_buffer_size`: a burst of connections
/// each touches only this much (bodies are read in larger pieces).
const INPUT_SIZE: usize = 4 * 1024;

/// Reads get at least this much room.
const MIN_READ_ROOM: usize = 1024;

/// After a refusal, how long the client's remaining bytes are read and
/// dropped before closing, so that closing does not reset the connection
/// under the answer (nginx's lingering close).
const LINGER: Duration = Duration::from_secs(1);

/// The most bytes dropped while lingering.
const LINGER_BYTES: usize = 1 << 20;

/// A client's stream: TCP, or TLS over TCP.
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> ClientStream for S {}

/// The client-side limits of `[global]`, as they were at accept.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read: Duration,
    pub idle: Duration,
    pub max_head: usize,
    /// `send_timeout`: each write to the client must make progress within it.
    pub send: Duration,
    /// `client_body_timeout`: each read of a request body must bring bytes within it.
    pub body: Duration,
    /// `client_body_min_rate`, in bytes per second.
    pub body_min_rate: Option<u64>,
}

/// One client connection and what it reuses from request to request.
pub(super) struct Client<S> {
    pub io: S,
    /// Bytes from the client not used yet.
    pub input: BytesMut,
    pub head: RequestHead,
    /// Heads on their way out: the upstream request's, then the response's.
    pub out: Vec<u8>,
    /// Bytes from the upstream not used yet.
    pub from_upstream: BytesMut,
    pub response: ResponseHead,
    /// The one timer: see the module comment.
    pub deadline: Pin<Box<Sleep>>,
    pub conn: Arc<ClientConn>,
    pub snapshots: SharedSnapshot,
    pub limits: Limits,
    pub stop: StopSignal,
    shutdown: watch::Receiver<bool>,
}

/// Resolves once shutdown has begun (and stays resolved).
pub(super) struct StopSignal(Option<Pin<Box<dyn Future<Output = ()> + Send>>>);

impl StopSignal {
    /// Polls for shutdown: true once it has begun.
    pub fn poll_stopped(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(stop) = self.0.as_mut() else {
            return true;
        };
        if stop.as_mut().poll(cx).is_pending() {
            return false;
        }
        self.0 = None;
        true
    }
}

/// What waiting for the client's bytes came to.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Read {
    Data,
    Closed,
    TimedOut,
    Stopped,
    Failed,
}

/// What the next head is.
enum Next {
    Head,
    Close,
    Refuse(ProxyError),
}

impl<S: ClientStream> Client<S> {
    fn new(
        io: S,
        unread: Bytes,
        snapshots: SharedSnapshot,
        conn: Arc<ClientConn>,
        limits: Limits,
        shutdown: watch::Receiver<bool>,
    ) -> Client<S> {
        // Most first heads came whole with the bytes read to sniff the
        // protocol: no read buffer is needed before a second read.
        let input = BytesMut::from(&unread[..]);
        let mut stop_on = shutdown.clone();
        Client {
            io,
            input,
            head: RequestHead::default(),
            out: Vec::new(),
            from_upstream: BytesMut::new(),
            response: ResponseHead::default(),
            deadline: Box::pin(tokio::time::sleep(limits.header_read)),
            conn,
            snapshots,
            limits,
            stop: StopSignal(Some(Box::pin(async move { stopped(&mut stop_on).await }))),
            shutdown,
        }
    }

    /// True once shutdown has begun: finish this response, then close.
    pub fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Reads more of the client's bytes into `input`, until the deadline
    /// and, with `watch_stop`, shutdown.
    pub async fn read_input(&mut self, watch_stop: bool) -> Read {
        make_room(&mut self.input, INPUT_SIZE);
        poll_fn(|cx| {
            match poll_read_buf(Pin::new(&mut self.io), cx, &mut self.input) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Read::Closed),
                Poll::Ready(Ok(_)) => return Poll::Ready(Read::Data),
                Poll::Ready(Err(_)) => return Poll::Ready(Read::Failed),
                Poll::Pending => {}
            }
            if self.deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Read::TimedOut);
            }
            if watch_stop && self.stop.poll_stopped(cx) {
                return Poll::Ready(Read::Stopped);
            }
            Poll::Pending
        })
        .await
    }

    /// Writes `out` to the client, within `send_timeout`.
    pub async fn write_out(&mut self) -> io::Result<()> {
        let out = std::mem::take(&mut self.out);
        let written = self.send(&out).await;
        self.out = out;
        written
    }

    /// Writes `bytes` to the client and flushes, each write making progress
    /// within `send_timeout`.
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut io = SendLimited::new(
            &mut self.io,
            self.deadline.as_mut(),
            self.limits.send,
            Peer::Client(&self.conn),
        );
        io.write_all(bytes).await?;
        io.flush().await
    }

    /// Waits for the next head and parses it. `first`: the head read
    /// started at accept.
    async fn next_head(&mut self, first: bool) -> Next {
        if !first && self.input.is_empty() && !self.wait_while_idle().await {
            return Next::Close;
        }
        let mut timed = first;
        loop {
            match self.head.parse(&self.input) {
                Ok(true) if self.head.len > self.limits.max_head => {
                    return Next::Refuse(ProxyError::HeadTooLarge)
                }
                Ok(true) => return Next::Head,
                // Not complete, and already as long as the limit allows.
                Ok(false) if self.input.len() >= self.limits.max_head => {
                    return Next::Refuse(ProxyError::HeadTooLarge)
                }
                Ok(false) => {}
                Err(HeadError::TooManyHeaders) => return Next::Refuse(ProxyError::HeadTooLarge),
                Err(HeadError::Malformed(what)) => {
                    tracing::debug!(client = %self.conn.client, what, "malformed request head");
                    return Next::Refuse(ProxyError::BadRequest("malformed request head"));
                }
            }
            if !timed {
                // The first bytes of this head came; all of it must follow in time.
                self.deadline
                    .as_mut()
                    .reset(Instant::now() + self.limits.header_read);
                timed = true;
            }
            match self.read_input(true).await {
                Read::Data => {}
                Read::TimedOut => {
                    tracing::debug!(client = %self.conn.client, "closing a client connection past header_read_timeout");
                    return Next::Close;
                }
                Read::Closed | Read::Stopped | Read::Failed => return Next::Close,
            }
        }
    }

    /// Between requests: true when the client sent something, false when
    /// the connection should close (idle limit, shutdown, closed).
    async fn wait_while_idle(&mut self) -> bool {
        let now = Instant::now();
        let idle_until = now + self.limits.idle;
        if now + PARK_AFTER_IDLE < idle_until {
            self.deadline.as_mut().reset(now + PARK_AFTER_IDLE);
            match self.read_input(true).await {
                Read::Data => return true,
                Read::TimedOut => {}
                Read::Closed | Read::Stopped | Read::Failed => return false,
            }
            self.park();
        }
        self.deadline.as_mut().reset(idle_until);
        let arrived = self.read_parked().await;
        if !arrived {
            tracing::trace!(client = %self.conn.client, "closing an idle client connection");
        }
        arrived
    }

    /// Gives back the buffers, which an idle connection does not need.
    fn park(&mut self) {
        debug_assert!(self.input.is_empty());
        self.input = BytesMut::new();
        self.from_upstream = BytesMut::new();
        self.out = Vec::new();
        self.head = RequestHead::default();
        self.response = ResponseHead::default();
    }

    /// Waits for the client's next bytes with a few bytes of stack, so that a
    /// parked connection holds no buffer.
    async fn read_parked(&mut self) -> bool {
        let mut first = [0u8; 64];
        let mut bytes = ReadBuf::new(&mut first);
        let read = poll_fn(|cx| {
            match Pin::new(&mut self.io).poll_read(cx, &mut bytes) {
                Poll::Ready(Ok(())) => return Poll::Ready(!bytes.filled().is_empty()),
                Poll::Ready(Err(_)) => return Poll::Ready(false),
                Poll::Pending => {}
            }
            if self.deadline.as_mut().poll(cx).is_ready() || self.stop.poll_stopped(cx) {
                return Poll::Ready(false);
            }
            Poll::Pending
        })
        .await;
        if read {
            self.input.extend_from_slice(bytes.filled());
        }
        read
    }

    /// Answers a head that could not be taken, then the connection closes.
    async fn refuse(&mut self, error: ProxyError) {
        let snapshot = self.snapshots.load();
        snapshot.record_response(None, error.status().as_u16());
        drop(snapshot);
        write_local_response(
            &mut self.out,
            error.status(),
            error.body_text().as_bytes(),
            None,
            false,
            Persistence::Close,
            None,
        );
        if self.write_out().await.is_ok() {
            self.linger().await;
        }
    }

    /// Closes the sending side and drops what the client still sends for a
    /// moment, so that the kernel does not answer it with a reset that would
    /// destroy the response still on its way.
    pub async fn linger(&mut self) {
        let _ = self.io.shutdown().await;
        // On the heap: on the stack it would make every connection's task
        // 4 KiB larger.
        let mut sink = vec![0u8; 4096];
        let mut dropped = 0;
        let _ = tokio::time::timeout(LINGER, async {
            while dropped < LINGER_BYTES {
                match self.io.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => dropped += n,
                }
            }
        })
        .await;
    }
}

/// Whose end of a stream a `SendLimited` writes to, for the log and the
/// counters when its limit passes.
#[derive(Clone, Copy)]
pub(super) enum Peer<'a> {
    Client(&'a ClientConn),
    /// The server of a tunnel.
    Server,
}

/// A stream whose writes must each make progress within `limit` (nginx's
/// `send_timeout`: the time between two successive writes, not the whole
/// response). The timer is armed only when a write has to wait, so writes
/// that go at once cost nothing; past the limit a write fails with
/// `TimedOut`. Reads pass through untimed.
pub(super) struct SendLimited<'a, T> {
    io: &'a mut T,
    timer: Pin<&'a mut Sleep>,
    limit: Duration,
    peer: Peer<'a>,
    /// The timer runs for the write now waiting.
    waiting: bool,
}

impl<'a, T: AsyncRead + AsyncWrite + Unpin> SendLimited<'a, T> {
    pub fn new(
        io: &'a mut T,
        timer: Pin<&'a mut Sleep>,
        limit: Duration,
        peer: Peer<'a>,
    ) -> SendLimited<'a, T> {
        SendLimited {
            io,
            timer,
            limit,
            peer,
            waiting: false,
        }
    }

    /// Passes on a write's result; one that must wait arms the timer, and
    /// fails once it passed.
    fn limited<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if polled.is_ready() {
            self.waiting = false;
            return polled;
        }
        if !self.waiting {
            self.waiting = true;
            self.timer.as_mut().reset(Instant::now() + self.limit);
        }
        if self.timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        match self.peer {
            Peer::Client(conn) => conn.timed_out(ClientTimeout::Send),
            Peer::Server => {
                tracing::info!("closing a tunnel: its server read nothing for send_timeout")
            }
        }
        Poll::Ready(Err(io::ErrorKind::TimedOut.into()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for SendLimited<'_, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for SendLimited<'_, T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut *self.io).poll_write(cx, buf);
        self.limited(cx, polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut *self.io).poll_flush(cx);
        self.limited(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut *self.io).poll_shutdown(cx);
        self.limited(cx, polled)
    }
}

/// Leaves at least `MIN_READ_ROOM` free in `buf`, growing it by `size`.
pub(super) fn make_room(buf: &mut BytesMut, size: usize) {
    if buf.capacity() - buf.len() < MIN_READ_ROOM {
        buf.reserve(size);
    }
}

/// Serves an HTTP/1 client connection until it closes; `unread` is what was
/// read of it already (its first bytes, read to tell HTTP/1 from HTTP/2).
pub async fn serve<S: ClientStream>(
    io: S,
    unread: Bytes,
    snapshots: SharedSnapshot,
    conn: Arc<ClientConn>,
    limits: Limits,
    shutdown: watch::Receiver<bool>,
) {
    let mut client = Client::new(io, unread, snapshots, conn, limits, shutdown);
    let mut first = true;
    loop {
        match client.next_head(first).await {
            Next::Head => {}
            Next::Close => break,
            Next::Refuse(error) => {
                client.refuse(error).await;
                return;
            }
        }
        first = false;
        match Box::pin(request::serve(&mut client)).await {
            request::After::KeepAlive if !client.stopping() => {}
            request::After::KeepAlive | request::After::Close => break,
            request::After::Linger => {
                client.linger().await;
                return;
            }
            request::After::Drop => return,
        }
    }
    let _ = client.io.shutdown().await;
}
