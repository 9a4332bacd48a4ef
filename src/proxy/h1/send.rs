//! HTTP/1.1 requests in hyper's types over usherd's own upstream connections
//! (`upstream/h1.rs`): how `service.rs` reaches `http1` upstreams for HTTP/2
//! clients, so that a server has one pool of connections whichever kind of
//! client reaches it. The response's body reads from the connection as it is
//! polled and puts it back in the pool when it ends cleanly.
//!
//! The request body is sent while the server is watched (`exchange.rs`); the
//! upstream's `timeout` is the caller's (service.rs wraps the whole send).

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio_util::io::poll_read_buf;

use super::conn::make_room;
use super::exchange::{
    send_body_and_read_head, write_head, ExchangeError, SendError, Sender, Sent,
};
use super::heads::{content_length_header, header};
use super::relay::{encode, BodyDecoder, UpstreamFault, BODY_READ};
use crate::body::{BodyTooLarge, BoxError, UpstreamBody};
use crate::http1::chunked::LAST_CHUNK;
use crate::http1::{response_framing, ResponseHead};
use crate::upstream::h1::{ConnectError, UpstreamConn, UpstreamStream};
use crate::upstream::Http1Pool;

/// Why a request got no response head.
#[derive(Debug)]
pub struct SendFailure(Failure);

#[derive(Debug)]
enum Failure {
    /// No connection could be made: nothing reached the server.
    Connect(ConnectError),
    Upstream(UpstreamFault),
    /// The request's body failed (its client went, or it passed
    /// `max_request_body`).
    Body(BoxError),
}

impl SendFailure {
    /// Nothing reached the server: retried anywhere, for free.
    pub fn is_connect(&self) -> bool {
        matches!(self.0, Failure::Connect(_))
    }

    pub fn is_body_too_large(&self) -> bool {
        matches!(&self.0, Failure::Body(error) if error.is::<BodyTooLarge>())
    }

    fn invalid(why: &'static str) -> SendFailure {
        SendFailure(Failure::Upstream(UpstreamFault::Invalid(why)))
    }
}

impl fmt::Display for SendFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Failure::Connect(error) => error.fmt(f),
            Failure::Upstream(fault) => fault.fmt(f),
            Failure::Body(error) => write!(f, "the request body: {error}"),
        }
    }
}

impl From<ConnectError> for SendFailure {
    fn from(error: ConnectError) -> SendFailure {
        SendFailure(Failure::Connect(error))
    }
}

impl From<ExchangeError> for SendFailure {
    fn from(error: ExchangeError) -> SendFailure {
        SendFailure(match error {
            ExchangeError::NothingSent(error) => Failure::Upstream(UpstreamFault::Io(error)),
            ExchangeError::Upstream { fault, .. } => Failure::Upstream(fault),
            // No deadline is set here: the caller's timeout ends the send.
            ExchangeError::TimedOut => Failure::Upstream(UpstreamFault::Closed),
            ExchangeError::Body(SendError::Body(error)) => Failure::Body(error),
            ExchangeError::Body(error) => Failure::Body(format!("{error:?}").into()),
        })
    }
}

/// How the request body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RequestFraming {
    None,
    Length(u64),
    Chunked,
}

/// A request in hyper's types: its body framed for HTTP/1.1.
struct HyperSender<'a> {
    body: &'a mut UpstreamBody,
    chunked: bool,
    ended: bool,
}

impl Sender for HyperSender<'_> {
    fn poll_piece(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Vec<u8>,
    ) -> Poll<Result<bool, SendError>> {
        loop {
            if self.ended {
                return Poll::Ready(Ok(false));
            }
            match Pin::new(&mut *self.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    // Trailers of a request have no place in HTTP/1.1 here.
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if data.is_empty() {
                        continue;
                    }
                    encode(out, &data, self.chunked);
                    return Poll::Ready(Ok(true));
                }
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Err(SendError::Body(error))),
                Poll::Ready(None) => {
                    self.ended = true;
                    if self.chunked {
                        out.extend_from_slice(LAST_CHUNK);
                        return Poll::Ready(Ok(true));
                    }
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Dropped: hyper's server has no way to send an interim response to
    /// an HTTP/2 client.
    async fn interim(&mut self, _head: &ResponseHead, _buf: &[u8]) -> Result<(), SendError> {
        Ok(())
    }
}

/// Writes the request head: request line, the headers (service.rs applied
/// the header rules), and the framing of the body.
fn write_request_head(out: &mut Vec<u8>, request: &Request<UpstreamBody>, framing: RequestFraming) {
    out.clear();
    out.extend_from_slice(request.method().as_str().as_bytes());
    out.push(b' ');
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in request.headers() {
        if name == CONTENT_LENGTH || name == TRANSFER_ENCODING {
            continue;
        }
        header(out, name.as_str().as_bytes(), value.as_bytes());
    }
    match framing {
        RequestFraming::None => {}
        RequestFraming::Length(length) => content_length_header(out, length),
        RequestFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// Sends `request` on a connection of `pool` (an idle one, else a new one)
/// and returns the response, its body still on the connection.
pub async fn send(
    pool: &Arc<Http1Pool>,
    request: Request<UpstreamBody>,
) -> Result<Response<PooledBody>, SendFailure> {
    let framing = if request.body().is_end_stream() {
        RequestFraming::None
    } else if let Some(length) = request.body().size_hint().exact() {
        RequestFraming::Length(length)
    } else {
        RequestFraming::Chunked
    };
    let mut head = Vec::with_capacity(512);
    write_request_head(&mut head, &request, framing);
    let to_head = request.method() == Method::HEAD;
    let replayable = framing == RequestFraming::None
        && matches!(
            *request.method(),
            Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
        );
    let mut body = request.into_body();
    let mut from_upstream = BytesMut::new();
    let mut response = ResponseHead::default();
    let mut conn = match pool.checkout() {
        Some(conn) => conn,
        None => pool.connector.connect().await?,
    };
    let body_sent = loop {
        let exchanged = exchange(
            &mut conn.stream,
            &head,
            &mut body,
            framing,
            &mut from_upstream,
            &mut response,
        )
        .await;
        match exchanged {
            Ok(body_sent) => break body_sent,
            Err(error) if conn.reused && error.may_resend(replayable) => {
                tracing::debug!(%error, "a pooled upstream connection was closed by the server; sending again on a new one");
                conn = pool.connector.connect().await?;
            }
            Err(error) => return Err(error.into()),
        }
    };
    if response.status == 101 {
        return Err(SendFailure::invalid(
            "a switch of protocols nobody asked for",
        ));
    }
    let head_bytes = from_upstream.split_to(response.len).freeze();
    let framing =
        response_framing(&response, &head_bytes, to_head).map_err(SendFailure::invalid)?;
    let status =
        StatusCode::from_u16(response.status).map_err(|_| SendFailure::invalid("status code"))?;
    let mut headers = HeaderMap::with_capacity(response.headers.iter().len());
    for line in response.headers.iter() {
        let name = HeaderName::from_bytes(line.name.of(&head_bytes));
        let value =
            HeaderValue::from_maybe_shared(head_bytes.slice_ref(line.value.of(&head_bytes)));
        if let (Ok(name), Ok(value)) = (name, value) {
            headers.append(name, value);
        }
    }
    let mut pooled = PooledBody {
        conn: Some(conn),
        buf: from_upstream,
        decoder: BodyDecoder::new(framing.body),
        pool: Arc::clone(pool),
        // A server that answered before the whole request body came has
        // the rest of it coming: the connection cannot carry another.
        reusable: framing.keep_alive && body_sent,
    };
    // With no body to read, nobody need poll it: the connection goes back now.
    if pooled.decoder.is_done() {
        pooled.finish();
    }
    let mut response = Response::new(pooled);
    *response.status_mut() = status;
    *response.version_mut() = Version::HTTP_11;
    *response.headers_mut() = headers;
    Ok(response)
}

/// The request on one connection, and the response head; true when the
/// whole request body went before the answer came.
async fn exchange(
    upstream: &mut UpstreamStream,
    head: &[u8],
    body: &mut UpstreamBody,
    framing: RequestFraming,
    from_upstream: &mut BytesMut,
    response: &mut ResponseHead,
) -> Result<bool, ExchangeError> {
    from_upstream.clear();
    write_head(upstream, head).await?;
    let mut sender = HyperSender {
        body,
        chunked: framing == RequestFraming::Chunked,
        ended: false,
    };
    let mut out = Vec::new();
    let sent = send_body_and_read_head(
        upstream,
        from_upstream,
        response,
        &mut out,
        &mut sender,
        framing != RequestFraming::None,
        None,
    )
    .await?;
    Ok(sent == Sent::All)
}

/// A response body read from its connection as it is polled; the
/// connection goes back to the pool when the body ended cleanly.
#[derive(Debug)]
pub struct PooledBody {
    /// `None` once the body ended (or failed).
    conn: Option<UpstreamConn>,
    /// Bytes read from the connection, not used yet.
    buf: BytesMut,
    decoder: BodyDecoder,
    pool: Arc<Http1Pool>,
    /// The server keeps the connection open after this response.
    reusable: bool,
}

impl PooledBody {
    /// The body ended: the connection goes back when it is clean.
    fn finish(&mut self) {
        if let Some(conn) = self.conn.take() {
            if self.reusable && self.buf.is_empty() {
                self.pool.checkin(conn);
            }
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            let mut piece = BytesMut::new();
            let took = this
                .decoder
                .take(&mut this.buf, |data| piece.extend_from_slice(data));
            if let Err(error) = took {
                this.conn = None;
                return Poll::Ready(Some(Err(UpstreamFault::BadChunk(error).to_string().into())));
            }
            if this.decoder.is_done() {
                this.finish();
            }
            if !piece.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(piece.freeze()))));
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            make_room(&mut this.buf, BODY_READ);
            match poll_read_buf(Pin::new(&mut conn.stream), cx, &mut this.buf) {
                Poll::Ready(Ok(0)) => {
                    if !this.decoder.end_of_input() {
                        this.conn = None;
                        return Poll::Ready(Some(Err(UpstreamFault::Closed.to_string().into())));
                    }
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(error)) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(UpstreamFault::Io(error).to_string().into())));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder.remaining() {
            Some(left) => SizeHint::with_exact(left),
            None => SizeHint::default(),
        }
    }
}
