//! One client connection's state and the IO wrapper that enforces its limits
//! until hyper (HTTP/2) or the HTTP/1 path (`proxy/h1`) takes it.
//!
//! `ClientIo` reads the first bytes to tell HTTP/1 from HTTP/2 (the preface),
//! from accept within `header_read_timeout`. The HTTP/1 path then takes the
//! socket and keeps its own limits. For HTTP/2, `ClientIo` stays between
//! hyper and the socket and closes a connection that has no stream open for
//! `idle_timeout` (after its first request; before it, `header_read_timeout`
//! from accept applies), and fails a write that makes no progress for
//! `send_timeout` (hyper then closes the connection).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::config::Global;

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Shared between a connection's IO and the requests served on it.
#[derive(Debug, Default)]
pub struct ConnState {
    active: AtomicU32,
    completed: AtomicU64,
    /// Reads that brought bytes from the client (HTTP/2 connections).
    reads: AtomicU64,
}

impl ConnState {
    /// Marks a request as being served until the guard is dropped.
    pub fn begin_request(self: &Arc<Self>) -> ActiveRequest {
        self.active.fetch_add(1, Ordering::AcqRel);
        ActiveRequest(Arc::clone(self))
    }

    /// How many reads have brought bytes from the client so far (HTTP/2):
    /// whether the client has sent anything since an earlier look.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
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
    pub send: Duration,
}

impl ConnTimeouts {
    pub fn new(global: &Global) -> ConnTimeouts {
        ConnTimeouts {
            header_read: global.header_read_timeout,
            idle: global.idle_timeout,
            send: global.send_timeout,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// From accept to the first request: `header_read` runs.
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

/// The client's socket, with the connection's time limits applied to reads.
#[derive(Debug)]
pub struct ClientIo<T> {
    inner: T,
    state: Arc<ConnState>,
    timeouts: ConnTimeouts,
    phase: Phase,
    completed_seen: u64,
    deadline: Pin<Box<Sleep>>,
    protocol: Protocol,
    /// Bytes already read (and seen) that the next reader gets first.
    unread: Bytes,
    /// Runs while a write waits (`send_timeout`); made at the first wait.
    send_deadline: Option<Pin<Box<Sleep>>>,
    /// A write is waiting: `send_deadline` runs for it.
    write_waiting: bool,
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
            protocol: Protocol::Unknown,
            unread: Bytes::new(),
            send_deadline: None,
            write_waiting: false,
        }
    }

    /// The socket and the bytes read from it so far, for the HTTP/1 path.
    pub fn into_parts(self) -> (T, Bytes) {
        (self.inner, self.unread)
    }

    fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        let limit = match phase {
            Phase::Head => self.timeouts.header_read,
            Phase::Idle => self.timeouts.idle,
            Phase::Busy => return,
        };
        self.deadline.as_mut().reset(Instant::now() + limit);
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
            let before = buf.filled().len();
            let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
            if buf.filled().len() > before {
                this.state.reads.fetch_add(1, Ordering::Relaxed);
            }
            return polled;
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
                    this.state.reads.fetch_add(1, Ordering::Relaxed);
                    this.on_bytes(&buf.filled()[before..]);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_ready() {
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

impl<T> ClientIo<T> {
    /// Passes on a write's result; one that must wait starts `send_timeout`
    /// and fails with `TimedOut` once it passed.
    fn send_limited<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if polled.is_ready() {
            self.write_waiting = false;
            return polled;
        }
        let until = Instant::now() + self.timeouts.send;
        let deadline = self
            .send_deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
        if !self.write_waiting {
            self.write_waiting = true;
            deadline.as_mut().reset(until);
        }
        if deadline.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        Poll::Ready(Err(io::ErrorKind::TimedOut.into()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ClientIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.send_limited(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.send_limited(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let flushed = Pin::new(&mut this.inner).poll_flush(cx);
        let flushed = this.send_limited(cx, flushed);
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
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
