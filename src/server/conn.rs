//! One client connection's state and the IO wrapper that enforces its limits.
//!
//! hyper's own `header_read_timeout` restarts while a keep-alive connection
//! waits for its next request, so it cannot be told apart from an idle timeout.
//! `ClientIo` keeps the two apart, as nginx does with `client_header_timeout`
//! and `keepalive_timeout`:
//! - while no request is active and no byte of the next one has come, the
//!   connection may stay idle for `idle_timeout`;
//! - from the first byte of a request head (or from accept), the whole head
//!   must arrive within `header_read_timeout` (slowloris);
//! - while a request is being served, neither applies.
//!
//! It also watches HTTP/1 request heads for the one smuggling shape hyper
//! accepts silently: both `Content-Length` and `Transfer-Encoding` (hyper obeys
//! the latter, RFC 9112 §6.3). The service then refuses that request with 400.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Shared between a connection's IO and the requests served on it.
#[derive(Debug, Default)]
pub struct ConnState {
    active: AtomicU32,
    completed: AtomicU64,
    smuggling: AtomicBool,
    /// An HTTP/1 connection idle for `PARK_AFTER_IDLE`: its hyper state
    /// (buffers and all) should be dropped and the socket kept alone.
    parking: AtomicBool,
}

impl ConnState {
    /// Marks a request as being served until the guard is dropped.
    pub fn begin_request(self: &Arc<Self>) -> ActiveRequest {
        self.active.fetch_add(1, Ordering::AcqRel);
        ActiveRequest(Arc::clone(self))
    }

    /// True once a request head on this connection carried both
    /// Content-Length and Transfer-Encoding.
    pub fn smuggling_suspected(&self) -> bool {
        self.smuggling.load(Ordering::Acquire)
    }

    /// True while the connection asks to be parked (see `ClientIo`).
    pub fn park_requested(&self) -> bool {
        self.parking.load(Ordering::Acquire)
    }
}

/// A request being served on a connection; released when its response ends.
#[derive(Debug)]
pub struct ActiveRequest(Arc<ConnState>);

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.completed.fetch_add(1, Ordering::AcqRel);
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The client-side time limits of `[global]`.
#[derive(Debug, Clone, Copy)]
pub struct ConnTimeouts {
    pub header_read: Duration,
    pub idle: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading a request head: `header_read` runs.
    Head,
    /// Between requests: `idle` runs.
    Idle,
    /// A request is being served.
    Busy,
}

/// What a client speaks, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Unknown,
    Http1,
    Http2,
}

/// How long an HTTP/1 connection stays idle before it is parked: hyper's
/// connection state (two 8 KiB buffers and the rest) is dropped and only the
/// socket is kept until the client sends again, when a new one is made. Long
/// enough that busy keep-alive clients never pay for it.
pub const PARK_AFTER_IDLE: Duration = Duration::from_millis(100);

/// A socket whose readiness to read can be awaited without reading.
pub trait WaitReadable {
    fn wait_readable(&self) -> impl Future<Output = io::Result<()>> + Send + '_;
}

impl WaitReadable for TcpStream {
    fn wait_readable(&self) -> impl Future<Output = io::Result<()>> + Send + '_ {
        self.readable()
    }
}

impl WaitReadable for tokio_rustls::server::TlsStream<TcpStream> {
    fn wait_readable(&self) -> impl Future<Output = io::Result<()>> + Send + '_ {
        // hyper read until the TLS layer had no plaintext left, so new input
        // must come through the socket.
        self.get_ref().0.readable()
    }
}

/// The client's socket, with the connection's time limits applied to reads.
#[derive(Debug)]
pub struct ClientIo<T> {
    inner: T,
    state: Arc<ConnState>,
    timeouts: ConnTimeouts,
    phase: Phase,
    completed_seen: u64,
    deadline: Pin<Box<Sleep>>,
    /// While idle with `deadline` set to park: when the idle limit ends.
    idle_until: Option<Instant>,
    protocol: Protocol,
    scanner: HeadScanner,
    /// Bytes already read (and seen) that the next reader gets first.
    unread: Bytes,
}

impl<T> ClientIo<T> {
    pub fn new(inner: T, state: Arc<ConnState>, timeouts: ConnTimeouts) -> ClientIo<T> {
        ClientIo {
            inner,
            state,
            timeouts,
            phase: Phase::Head,
            completed_seen: 0,
            deadline: Box::pin(tokio::time::sleep(timeouts.header_read)),
            idle_until: None,
            protocol: Protocol::Unknown,
            scanner: HeadScanner::default(),
            unread: Bytes::new(),
        }
    }

    /// The state shared with the requests of this connection.
    pub fn state(&self) -> Arc<ConnState> {
        Arc::clone(&self.state)
    }

    /// Gives back bytes already read, for the next reader.
    pub fn unread(&mut self, bytes: Bytes) {
        debug_assert!(self.unread.is_empty());
        self.unread = bytes;
    }

    /// The connection was parked and is taken up again: the rest of the idle
    /// limit applies until the client sends.
    pub fn resume_after_park(&mut self) {
        if let Some(until) = self.idle_until.take() {
            self.deadline.as_mut().reset(until);
        }
        self.state.parking.store(false, Ordering::Release);
    }

    /// While parked: true when the client sent something (or closed), false
    /// when the idle limit ended first.
    pub async fn wait_while_parked(&self) -> bool
    where
        T: WaitReadable,
    {
        let Some(until) = self.idle_until else {
            return true;
        };
        if !self.unread.is_empty() {
            return true;
        }
        tokio::time::timeout_at(until, self.inner.wait_readable())
            .await
            .is_ok()
    }

    fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        self.idle_until = None;
        let limit = match phase {
            Phase::Head => self.timeouts.header_read,
            Phase::Idle
                if self.protocol == Protocol::Http1 && PARK_AFTER_IDLE < self.timeouts.idle =>
            {
                let now = Instant::now();
                self.idle_until = Some(now + self.timeouts.idle);
                self.deadline.as_mut().reset(now + PARK_AFTER_IDLE);
                return;
            }
            Phase::Idle => self.timeouts.idle,
            Phase::Busy => return,
        };
        self.deadline.as_mut().reset(Instant::now() + limit);
        if phase == Phase::Head {
            self.scanner = HeadScanner::default();
        }
    }

    /// Enters the idle phase once the requests so far have completed; true
    /// when it did now.
    fn note_idle(&mut self) -> bool {
        let completed = self.state.completed.load(Ordering::Acquire);
        if self.phase == Phase::Busy || completed != self.completed_seen {
            self.completed_seen = completed;
            self.enter(Phase::Idle);
            return true;
        }
        false
    }

    fn on_bytes(&mut self, bytes: &[u8]) {
        if self.protocol == Protocol::Unknown {
            let shown = bytes.len().min(H2_PREFACE.len());
            self.protocol = if bytes[..shown] == H2_PREFACE[..shown] {
                Protocol::Http2
            } else {
                Protocol::Http1
            };
        }
        if self.protocol == Protocol::Http2 {
            // HTTP/2 multiplexes: control frames between requests are not a
            // request head, so only the idle limit applies.
            return;
        }
        if self.phase == Phase::Idle {
            self.enter(Phase::Head);
        }
        if self.scanner.feed(bytes) {
            self.state.smuggling.store(true, Ordering::Release);
        }
    }
}

impl<T: AsyncRead + Unpin> ClientIo<T> {
    /// Reads the first bytes, which tell HTTP/1 from HTTP/2 (its preface),
    /// and gives them back for the server to read. `Unknown` when the client
    /// closed or ran out of time first.
    pub async fn sniff_protocol(&mut self) -> io::Result<Protocol> {
        // On the heap: a parked connection's task should not carry it.
        let mut first = vec![0u8; 512];
        let read = self.read(&mut first).await?;
        first.truncate(read);
        self.unread = Bytes::from(first);
        Ok(self.protocol)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ClientIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.state.active.load(Ordering::Acquire) > 0 {
            this.phase = Phase::Busy;
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        this.note_idle();
        if !this.unread.is_empty() {
            let n = this.unread.len().min(buf.remaining());
            buf.put_slice(&this.unread.split_to(n));
            if this.unread.is_empty() {
                // An empty slice would still hold its whole allocation.
                this.unread = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.on_bytes(&buf.filled()[before..]);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_ready() {
                    if this.phase == Phase::Idle && this.idle_until.is_some() {
                        // Idle long enough to park; the serving loop sees it
                        // as soon as hyper returns.
                        this.state.parking.store(true, Ordering::Release);
                        return Poll::Pending;
                    }
                    tracing::debug!(phase = ?this.phase, "closing a client connection past its time limit");
                    // End of stream: hyper closes the connection quietly.
                    return Poll::Ready(Ok(()));
                }
                Poll::Pending
            }
            ready_error => ready_error,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ClientIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let flushed = Pin::new(&mut this.inner).poll_flush(cx);
        // The last response may be out: hyper need not read again before the
        // client sends (its last read may have been while busy), so the idle
        // limit is armed here, with this task's waker.
        if flushed.is_ready() && this.state.active.load(Ordering::Acquire) == 0 && this.note_idle()
        {
            let _ = this.deadline.as_mut().poll(cx);
        }
        flushed
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.state.park_requested() {
            // hyper ends the parked connection's state, not the socket.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Finds `Content-Length` and `Transfer-Encoding` among the header names of
/// one HTTP/1 request head, fed in pieces as it arrives.
#[derive(Debug)]
struct HeadScanner {
    done: bool,
    first_line: bool,
    line_start: bool,
    in_name: bool,
    name: [u8; 17],
    name_len: usize,
    content_length: bool,
    transfer_encoding: bool,
}

impl Default for HeadScanner {
    fn default() -> Self {
        HeadScanner {
            done: false,
            first_line: true,
            line_start: true,
            in_name: false,
            name: [0; 17],
            name_len: 0,
            content_length: false,
            transfer_encoding: false,
        }
    }
}

impl HeadScanner {
    /// Feeds bytes; true once the head has shown both headers.
    fn feed(&mut self, bytes: &[u8]) -> bool {
        for &byte in bytes {
            if self.done {
                break;
            }
            match byte {
                b'\r' => continue,
                b'\n' => {
                    if self.line_start && !self.first_line {
                        self.done = true;
                    }
                    self.first_line = false;
                    self.line_start = true;
                    self.in_name = false;
                    continue;
                }
                _ => {}
            }
            if self.line_start {
                self.line_start = false;
                self.in_name = !self.first_line;
                self.name_len = 0;
            }
            if !self.in_name {
                continue;
            }
            if byte == b':' {
                match &self.name[..self.name_len] {
                    b"content-length" => self.content_length = true,
                    b"transfer-encoding" => self.transfer_encoding = true,
                    _ => {}
                }
                self.in_name = false;
            } else if self.name_len < self.name.len() {
                self.name[self.name_len] = byte.to_ascii_lowercase();
                self.name_len += 1;
            } else {
                self.in_name = false;
            }
        }
        self.content_length && self.transfer_encoding
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scanner_flags_content_length_with_transfer_encoding() {
        let mut scanner = HeadScanner::default();
        let head = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n";
        // Fed byte by byte, as a slow client would send it.
        let flagged = head.iter().any(|b| scanner.feed(std::slice::from_ref(b)));
        assert!(flagged);
    }

    #[test]
    fn scanner_ignores_single_framing_and_bodies() {
        let mut scanner = HeadScanner::default();
        assert!(
            !scanner.feed(b"POST / HTTP/1.1\r\ncontent-length: 40\r\n\r\ntransfer-encoding: x\r\n")
        );
        let mut scanner = HeadScanner::default();
        assert!(!scanner.feed(b"GET /transfer-encoding:x HTTP/1.1\r\nX-Transfer-Encoding: a\r\nContent-Length: 0\r\n\r\n"));
    }
}
