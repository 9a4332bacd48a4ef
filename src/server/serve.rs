//! HTTP on one accepted (and, on TLS listeners, decrypted) connection: the
//! first bytes choose HTTP/2 (its preface), which hyper serves with the proxy
//! service, or HTTP/1, which usherd's own HTTP/1 path serves (`proxy/h1`,
//! docs/http1.md).

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use super::streams::StreamTasks;
use crate::body::{BodyLimits, ClientBody};
use crate::config::Global;
use crate::downstream::{stopped, ClientConn, ClientIo, Protocol};
use crate::log_limit::LogLimiter;
use crate::proxy::{h1, handle};
use crate::snapshot::SharedSnapshot;
use crate::stats::ClientTimeout;

/// Streams one HTTP/2 client may have open at once (nginx: 128, HAProxy: 100).
const HTTP2_MAX_CONCURRENT_STREAMS: u32 = 128;

/// Streams a client may reset before they are served, at once.
const HTTP2_MAX_PENDING_RESETS: usize = 20;

/// Streams reset for a client's protocol errors before the connection goes.
const HTTP2_MAX_LOCAL_ERROR_RESETS: usize = 256;

/// HTTP/2 connections closed with GOAWAY ENHANCE_YOUR_CALM because their
/// client reset, or made fail, too many streams (rapid reset and kin): one
/// warning per interval, however many clients do it.
pub static HTTP2_RESET_FLOODS: LogLimiter = LogLimiter::new(Duration::from_secs(10));

/// How new client connections are served, from `[global]`.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// `max_request_header_size`, for HTTP/2's header lists.
    header_limit: u32,
    send_timeout: Duration,
    http1: h1::Limits,
}

impl ServerSettings {
    pub fn new(global: &Global) -> ServerSettings {
        let header_limit = global.max_request_header_size;
        let http1 = h1::Limits {
            header_read: global.header_read_timeout,
            idle: global.idle_timeout,
            max_head: header_limit,
            send: global.send_timeout,
            body: global.client_body_timeout,
            body_min_rate: global.client_body_min_rate,
        };
        ServerSettings {
            header_limit: u32::try_from(header_limit).unwrap_or(u32::MAX),
            send_timeout: global.send_timeout,
            http1,
        }
    }

    /// hyper's HTTP/2 server for one connection, its streams spawned by
    /// `tasks` (the per-stream `send_timeout`, streams.rs).
    fn http2(&self, tasks: StreamTasks) -> http2::Builder<StreamTasks> {
        let mut http2 = http2::Builder::new(tasks);
        http2
            .timer(TokioTimer::new())
            // Also bounds CONTINUATION frames: h2 stops reading a header block
            // beyond it (the 2024 CONTINUATION flood).
            .max_header_list_size(self.header_limit)
            .max_concurrent_streams(HTTP2_MAX_CONCURRENT_STREAMS)
            // Rapid reset (CVE-2023-44487): a client that opens and cancels
            // streams faster than they are served gets GOAWAY.
            .max_pending_accept_reset_streams(HTTP2_MAX_PENDING_RESETS)
            // A client whose streams keep failing by its own fault gets GOAWAY.
            .max_local_error_reset_streams(HTTP2_MAX_LOCAL_ERROR_RESETS)
            // A client that stops reading its socket blocks a write
            // (`ClientIo`'s send_timeout); one that stops sending WINDOW_UPDATE
            // holds its streams without blocking one (the stream tasks'
            // send_timeout). One that stops altogether is found by PINGs: one
            // after half of `send_timeout` without a frame from it, answered
            // within the other half, else the connection closes.
            .keep_alive_interval(self.send_timeout / 2)
            .keep_alive_timeout(self.send_timeout / 2);
        http2
    }
}

/// Serves the connection until it closes; on shutdown, it finishes the
/// requests it has and closes.
pub async fn serve_connection<S>(
    settings: &ServerSettings,
    mut io: ClientIo<S>,
    snapshots: SharedSnapshot,
    client: Arc<ClientConn>,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = client.client;
    let sniffed = tokio::select! {
        sniffed = io.sniff_protocol() => sniffed,
        // Nothing was asked yet: nothing to finish.
        _ = stopped(&mut shutdown) => return,
    };
    match sniffed {
        Ok(Protocol::Unknown) => {}
        Ok(Protocol::Http1) => {
            let (stream, unread) = io.into_parts();
            h1::serve(stream, unread, snapshots, client, settings.http1, shutdown).await;
        }
        Ok(Protocol::Http2) => {
            let conn = Arc::clone(&client);
            let body_limits = BodyLimits {
                timeout: settings.http1.body,
                min_rate: settings.http1.body_min_rate,
            };
            let service = service_fn(move |request: Request<Incoming>| {
                let request = request.map(|body| ClientBody::stream(body, body_limits, &conn));
                handle(Arc::clone(&snapshots), Arc::clone(&conn), request)
            });
            let http2 =
                settings.http2(StreamTasks::new(Arc::clone(&client), settings.send_timeout));
            let mut connection = Box::pin(http2.serve_connection(TokioIo::new(io), service));
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = stopped(&mut shutdown) => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            match result {
                Err(error) if is_reset_flood(&error) => {
                    if let Some(seen) = HTTP2_RESET_FLOODS.admit() {
                        tracing::warn!(
                            client = %peer,
                            kind = "http2_reset_flood",
                            suppressed = seen.suppressed,
                            total = seen.total,
                            "HTTP/2 client reset or failed too many streams: GOAWAY ENHANCE_YOUR_CALM \
                             (logged once per 10 s; `suppressed` since the last such line)"
                        );
                    }
                }
                Err(error) if is_send_timeout(&error) => client.timed_out(ClientTimeout::Send),
                Err(error) => {
                    tracing::debug!(client = %peer, %error, "client connection ended with an error");
                }
                Ok(()) => {}
            }
        }
        Err(error) => {
            tracing::debug!(client = %peer, %error, "client connection failed before a request");
        }
    }
}

/// Whether hyper ended the connection because h2 sent GOAWAY
/// ENHANCE_YOUR_CALM for too many reset streams.
fn is_reset_flood(error: &hyper::Error) -> bool {
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<h2::Error>())
        .is_some_and(|h2| {
            h2.is_go_away() && h2.is_library() && h2.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM)
        })
}

/// Whether an HTTP/2 connection ended by `send_timeout`: a write of
/// `ClientIo` that timed out, or a PING that got no answer.
fn is_send_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(error) = source {
        let timed_out = error
            .downcast_ref::<std::io::Error>()
            .is_some_and(|error| error.kind() == std::io::ErrorKind::TimedOut);
        // hyper's `KeepAliveTimedOut` is private: known by its text.
        if timed_out || error.to_string() == "keep-alive timed out" {
            return true;
        }
        source = error.source();
    }
    false
}
