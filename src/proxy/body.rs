//! Bodies on both sides of the proxy, streamed frame by frame so memory per
//! request stays bounded whatever the size.
//!
//! - `ClientBody` is a request body as the service gets it: from hyper's
//!   server, or relayed chunk by chunk by the HTTP/1 path (`proxy/h1`) for
//!   an upstream that speaks HTTP/2.
//! - `UpstreamBody` is the client's request body on its way upstream; it counts
//!   bytes against `max_request_body` and, when the request may be retried, can
//!   be taken back if the first connection attempt failed before sending it.
//! - `ResponseBody` is what the client receives; when it ends (or is dropped)
//!   it releases the server's in-flight count and writes the access log, as
//!   linkerd's `PendingUntilEos`.

use std::error::Error as StdError;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::mpsc;

use super::access_log::AccessRecord;
use super::h1::PooledBody;
use crate::server::ActiveRequest;
use crate::upstream::InFlight;

pub type BoxError = Box<dyn StdError + Send + Sync>;

/// The request body went past `max_request_body` while streaming.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds max_request_body")]
pub struct BodyTooLarge;

/// A request body as the client sent it.
#[derive(Debug)]
pub enum ClientBody {
    Hyper(Incoming),
    Relayed(RelayedBody),
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ClientBody::Hyper(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            ClientBody::Relayed(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Hyper(body) => body.is_end_stream(),
            ClientBody::Relayed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Hyper(body) => body.size_hint(),
            ClientBody::Relayed(body) => body.hint,
        }
    }
}

/// What the HTTP/1 path hands over of a relayed body.
#[derive(Debug)]
pub enum RelayedChunk {
    Data(Bytes),
    /// The body ended as its framing said. Without it, a closed channel
    /// is a body cut short: an error, never a shorter body.
    End,
}

/// The body of an HTTP/1 request relayed to an HTTP/2 upstream.
#[derive(Debug)]
pub struct RelayedBody {
    chunks: Option<mpsc::Receiver<RelayedChunk>>,
    hint: SizeHint,
}

/// The relayed body was cut short: the client went away or sent bad framing.
#[derive(Debug, thiserror::Error)]
#[error("the client's request body was cut short")]
pub struct BodyCutShort;

impl RelayedBody {
    /// A body with nothing in it.
    pub fn empty() -> RelayedBody {
        RelayedBody {
            chunks: None,
            hint: SizeHint::with_exact(0),
        }
    }

    /// A body fed through the sender, of the size `hint` says.
    pub fn channel(hint: SizeHint) -> (mpsc::Sender<RelayedChunk>, RelayedBody) {
        let (sender, chunks) = mpsc::channel(1);
        let body = RelayedBody {
            chunks: Some(chunks),
            hint,
        };
        (sender, body)
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_none()
    }

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some(chunks) = self.chunks.as_mut() else {
            return Poll::Ready(None);
        };
        match chunks.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(RelayedChunk::Data(data))) => Poll::Ready(Some(Ok(Frame::data(data)))),
            Poll::Ready(Some(RelayedChunk::End)) => {
                self.chunks = None;
                Poll::Ready(None)
            }
            Poll::Ready(None) => {
                self.chunks = None;
                Poll::Ready(Some(Err(BodyCutShort.into())))
            }
        }
    }
}

/// The client's body, counted against the configured limit as it streams.
#[derive(Debug)]
pub struct LimitedBody {
    inner: ClientBody,
    limit: Option<u64>,
    seen: u64,
}

impl LimitedBody {
    pub fn new(inner: ClientBody, limit: Option<u64>) -> LimitedBody {
        LimitedBody {
            inner,
            limit,
            seen: 0,
        }
    }
}

impl Body for LimitedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        if let Some(data) = frame.data_ref() {
            self.seen += data.len() as u64;
            if self.limit.is_some_and(|limit| self.seen > limit) {
                return Poll::Ready(Some(Err(BodyTooLarge.into())));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Where a retryable request keeps its body until the first attempt polls it.
#[derive(Debug, Clone)]
pub struct BodySlot(Arc<Mutex<Option<LimitedBody>>>);

impl BodySlot {
    /// The body back, if no attempt has started reading it.
    pub fn reclaim(&self) -> Option<LimitedBody> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// The body of a request sent upstream.
#[derive(Debug)]
pub enum UpstreamBody {
    Empty,
    Streaming(LimitedBody),
    /// Taken out of its slot on the first poll; until then `BodySlot::reclaim`
    /// can take it back for another attempt.
    Reclaimable {
        slot: BodySlot,
        taken: Option<LimitedBody>,
        hint: SizeHint,
    },
}

impl UpstreamBody {
    /// A body that can be reclaimed, and the slot to reclaim it from.
    pub fn reclaimable(body: LimitedBody) -> (UpstreamBody, BodySlot) {
        let hint = body.size_hint();
        let slot = BodySlot(Arc::new(Mutex::new(Some(body))));
        let body = UpstreamBody::Reclaimable {
            slot: slot.clone(),
            taken: None,
            hint,
        };
        (body, slot)
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::Empty => Poll::Ready(None),
            UpstreamBody::Streaming(body) => Pin::new(body).poll_frame(cx),
            UpstreamBody::Reclaimable { slot, taken, .. } => {
                if taken.is_none() {
                    *taken = slot.reclaim();
                }
                match taken {
                    Some(body) => Pin::new(body).poll_frame(cx),
                    None => Poll::Ready(None),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Empty => true,
            UpstreamBody::Streaming(body) => body.is_end_stream(),
            UpstreamBody::Reclaimable { .. } => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Empty => SizeHint::with_exact(0),
            UpstreamBody::Streaming(body) => body.size_hint(),
            UpstreamBody::Reclaimable { hint, .. } => *hint,
        }
    }
}

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
}

impl ResponseBody {
    pub fn upstream(inner: ServerBody, completion: Completion) -> ResponseBody {
        ResponseBody {
            inner: ResponseInner::Upstream(inner),
            completion: Some(completion),
        }
    }

    pub fn full(bytes: Bytes, completion: Option<Completion>) -> ResponseBody {
        ResponseBody {
            inner: ResponseInner::Full(Some(bytes)),
            completion,
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
