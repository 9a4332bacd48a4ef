//! Response bodies: what the client receives. When a `ResponseBody` ends
//! (or is dropped) it releases the server's in-flight count and writes the
//! access log, as linkerd's `PendingUntilEos`. For an HTTP/2 client it arms
//! the stream's `SendWatch` while a frame waits on the client
//! (`server/streams.rs`). Request bodies are in `crate::body`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::access_log::AccessRecord;
use super::h1::PooledBody;
use crate::body::BoxError;
use crate::downstream::{ActiveRequest, SendWatch};
use crate::upstream::InFlight;

/// What is released when a response ends: the server's in-flight count, the
/// connection's active-request count, and the access-log line.
#[derive(Debug)]
pub struct Completion {
    pub in_flight: Option<InFlight>,
    pub access: Option<Box<AccessRecord>>,
    pub active: ActiveRequest,
    /// When the request came: a server's duration histogram gets the time
    /// to the end of its response.
    started: Instant,
}

impl Completion {
    pub fn new(
        active: ActiveRequest,
        access: Option<Box<AccessRecord>>,
        started: Instant,
    ) -> Completion {
        Completion {
            in_flight: None,
            access,
            active,
            started,
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if let Some(in_flight) = &self.in_flight {
            in_flight
                .endpoint()
                .stats
                .durations
                .observe(self.started.elapsed());
        }
    }
}

/// A server's response body: from hyper's client (an HTTP/2 server) or
/// read from a pooled HTTP/1.1 connection (`h1/client.rs`).
#[derive(Debug)]
pub enum ServerBody {
    Hyper(Incoming),
    Http1(PooledBody),
}

impl Body for ServerBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ServerBody::Hyper(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            ServerBody::Http1(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ServerBody::Hyper(body) => body.is_end_stream(),
            ServerBody::Http1(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ServerBody::Hyper(body) => body.size_hint(),
            ServerBody::Http1(body) => body.size_hint(),
        }
    }
}

#[derive(Debug)]
enum ResponseInner {
    Upstream(ServerBody),
    Full(Option<Bytes>),
}

/// The body the client receives.
#[derive(Debug)]
pub struct ResponseBody {
    inner: ResponseInner,
    completion: Option<Completion>,
    /// An HTTP/2 client's stream: armed while a frame waits on the client.
    watch: Option<Arc<SendWatch>>,
}

impl ResponseBody {
    pub fn upstream(inner: ServerBody, completion: Completion) -> ResponseBody {
        ResponseBody {
            inner: ResponseInner::Upstream(inner),
            completion: Some(completion),
            watch: None,
        }
    }

    pub fn full(bytes: Bytes, completion: Option<Completion>) -> ResponseBody {
        ResponseBody {
            inner: ResponseInner::Full(Some(bytes)),
            completion,
            watch: None,
        }
    }

    /// Holds the stream to `send_timeout` (`server/streams.rs`): armed now,
    /// as the response goes to hyper, which polls the body once the client's
    /// window lets it.
    pub fn watch_sends(&mut self, watch: Arc<SendWatch>) {
        if !self.is_end_stream() {
            watch.arm();
            self.watch = Some(watch);
        }
    }

    fn count(&mut self, bytes: usize) {
        if let Some(access) = self.completion.as_mut().and_then(|c| c.access.as_mut()) {
            access.bytes += bytes as u64;
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = match &mut this.inner {
            ResponseInner::Upstream(body) => Pin::new(body).poll_frame(cx),
            ResponseInner::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len();
                    this.count(len);
                }
            }
            Poll::Ready(_) => this.completion = None,
            Poll::Pending => {}
        }
        if let Some(watch) = &this.watch {
            match &polled {
                // hyper holds it until the client's window has room (the
                // last one too).
                Poll::Ready(Some(Ok(frame))) if frame.is_data() => watch.arm(),
                _ => watch.disarm(),
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            ResponseInner::Upstream(body) => body.is_end_stream(),
            ResponseInner::Full(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            ResponseInner::Upstream(body) => body.size_hint(),
            ResponseInner::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            ResponseInner::Full(None) => SizeHint::with_exact(0),
        }
    }
}
