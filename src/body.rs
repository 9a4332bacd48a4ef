//! Request bodies, streamed frame by frame so memory per request stays
//! bounded whatever the size.
//!
//! - `ClientBody` is a request body as the client sent it: from hyper's
//!   server (an HTTP/2 client's, held to `client_body_timeout` and
//!   `client_body_min_rate` by `StreamBody`), or relayed chunk by chunk by
//!   the HTTP/1 path (`proxy/h1`) for an upstream that speaks HTTP/2.
//! - `UpstreamBody` is the client's request body on its way upstream; it counts
//!   bytes against `max_request_body` and, when the request may be retried, can
//!   be taken back if the first connection attempt failed before sending it.
//!
//! Below `upstream/` (whose HTTP/2 client sends `UpstreamBody`); the response
//! bodies, which release upstream and connection counts, are in `proxy/body.rs`.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::mpsc;
use tokio::time::Sleep;

use crate::downstream::ClientConn;
use crate::stats::ClientTimeout;

pub type BoxError = Box<dyn StdError + Send + Sync>;

/// The request body went past `max_request_body` while streaming.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds max_request_body")]
pub struct BodyTooLarge;

/// A request body as the client sent it.
#[derive(Debug)]
pub enum ClientBody {
    /// An HTTP/2 client's.
    Stream(StreamBody),
    Relayed(RelayedBody),
}

impl ClientBody {
    /// An HTTP/2 client's body, held to `limits`.
    pub fn stream(body: Incoming, limits: BodyLimits, conn: &Arc<ClientConn>) -> ClientBody {
        let clock = (!body.is_end_stream()).then(|| {
            Box::new(BodyClock {
                limits,
                min_rate: limits.min_rate.map(MinRate::new),
                seen: 0,
                timer: None,
                waiting: false,
                fault: Arc::new(BodyFault::default()),
                conn: Arc::clone(conn),
            })
        });
        ClientBody::Stream(StreamBody { inner: body, clock })
    }

    /// Where the body's time limits note that they ended it (HTTP/2 clients).
    pub fn fault(&self) -> Option<Arc<BodyFault>> {
        match self {
            ClientBody::Stream(body) => body.clock.as_ref().map(|c| Arc::clone(&c.fault)),
            ClientBody::Relayed(_) => None,
        }
    }
}

/// `client_body_timeout` and `client_body_min_rate`.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub timeout: Duration,
    pub min_rate: Option<u64>,
}

/// How long a request body may come slower than `client_body_min_rate`
/// before its average counts (nginx-like rate limits leave a start too).
const MIN_RATE_GRACE: Duration = Duration::from_secs(5);

/// `client_body_min_rate`: the bytes per second a body must average.
#[derive(Debug)]
pub(crate) struct MinRate {
    pub bytes_per_second: u64,
    pub since: Instant,
}

impl MinRate {
    /// Counted from now.
    pub fn new(bytes_per_second: u64) -> MinRate {
        MinRate {
            bytes_per_second,
            since: Instant::now(),
        }
    }

    /// Whether `seen` bytes are too few for the time since the start.
    pub fn too_slow(&self, seen: u64) -> bool {
        let elapsed = self.since.elapsed();
        elapsed > MIN_RATE_GRACE
            && (seen as f64) < self.bytes_per_second as f64 * elapsed.as_secs_f64()
    }
}

/// Which client time limit ended a request body, if one did.
#[derive(Debug, Default)]
pub struct BodyFault(AtomicU8);

impl BodyFault {
    fn set(&self, limit: ClientTimeout) {
        self.0.store(limit as u8 + 1, Ordering::Relaxed);
    }

    pub fn get(&self) -> Option<ClientTimeout> {
        match self.0.load(Ordering::Relaxed) {
            1 => Some(ClientTimeout::Send),
            2 => Some(ClientTimeout::Body),
            3 => Some(ClientTimeout::BodyRate),
            _ => None,
        }
    }
}

/// The request body stopped by a client time limit.
#[derive(Debug, thiserror::Error)]
#[error("the client's request body stalled (client_body_timeout or client_body_min_rate)")]
pub struct BodyTimedOut;

/// An HTTP/2 client's request body. Whoever sends it upstream polls it
/// when it wants more: a wait from a poll that finds nothing to the next
/// frame longer than `client_body_timeout` (or a body averaging less than
/// `client_body_min_rate`) ends it with `BodyTimedOut`, as the HTTP/1 path
/// ends its bodies. The sender then stops: service.rs answers 408 when no
/// response has come yet; a response already under way is reset.
#[derive(Debug)]
pub struct StreamBody {
    inner: Incoming,
    /// None for a body that is empty from the start.
    clock: Option<Box<BodyClock>>,
}

#[derive(Debug)]
struct BodyClock {
    limits: BodyLimits,
    min_rate: Option<MinRate>,
    seen: u64,
    /// Made at the first wait.
    timer: Option<Pin<Box<Sleep>>>,
    /// A poll found nothing: the timer runs.
    waiting: bool,
    fault: Arc<BodyFault>,
    conn: Arc<ClientConn>,
}

impl BodyClock {
    /// Ends the body by `limit`: noted, counted, logged (rate-limited).
    fn expire(&mut self, limit: ClientTimeout) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.fault.get().is_none() {
            self.fault.set(limit);
            self.conn.stream_timed_out(limit);
        }
        Poll::Ready(Some(Err(BodyTimedOut.into())))
    }
}

impl Body for StreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let Some(clock) = this.clock.as_mut() else {
            return Pin::new(&mut this.inner).poll_frame(cx).map_err(Into::into);
        };
        if clock.fault.get().is_some() {
            return Poll::Ready(Some(Err(BodyTimedOut.into())));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                clock.waiting = false;
                if let Some(data) = frame.data_ref() {
                    clock.seen += data.len() as u64;
                    let slow = clock
                        .min_rate
                        .as_ref()
                        .is_some_and(|rate| rate.too_slow(clock.seen));
                    if slow && !this.inner.is_end_stream() {
                        return clock.expire(ClientTimeout::BodyRate);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(other) => {
                clock.waiting = false;
                Poll::Ready(other.map(|result| result.map_err(Into::into)))
            }
            Poll::Pending => {
                let until = tokio::time::Instant::now() + clock.limits.timeout;
                match clock.timer.as_mut() {
                    None => {
                        clock.timer = Some(Box::pin(tokio::time::sleep_until(until)));
                    }
                    Some(timer) if !clock.waiting => timer.as_mut().reset(until),
                    Some(_) => {}
                }
                clock.waiting = true;
                let timer = clock.timer.as_mut().expect("set above");
                if timer.as_mut().poll(cx).is_ready() {
                    return clock.expire(ClientTimeout::Body);
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ClientBody::Stream(body) => Pin::new(body).poll_frame(cx),
            ClientBody::Relayed(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Stream(body) => body.is_end_stream(),
            ClientBody::Relayed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Stream(body) => body.size_hint(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_too_slow_only_after_the_grace_period() {
        let rate = |ago: Duration| MinRate {
            bytes_per_second: 1000,
            since: Instant::now() - ago,
        };
        assert!(!rate(Duration::from_secs(1)).too_slow(0));
        assert!(!rate(Duration::from_secs(10)).too_slow(20_000));
        assert!(rate(Duration::from_secs(10)).too_slow(5_000));
    }

    #[test]
    fn a_body_fault_keeps_its_limit() {
        let fault = BodyFault::default();
        assert_eq!(fault.get(), None);
        fault.set(ClientTimeout::BodyRate);
        assert_eq!(fault.get(), Some(ClientTimeout::BodyRate));
    }
}
