//! HTTP on one accepted (and, on TLS listeners, decrypted) connection: the
//! first bytes choose HTTP/1.1 or HTTP/2 (its preface), then hyper serves it
//! with the proxy service.
//!
//! An HTTP/1 connection idle for `PARK_AFTER_IDLE` is parked: hyper's
//! connection ends without closing the socket (`ClientIo` swallows the
//! shutdown), its state and buffers are freed, and the task waits for the
//! socket to become readable with nothing but the socket held. When the client
//! sends again, a new hyper connection takes over, with any bytes the old one
//! had read. An idle keep-alive connection thus costs a few hundred bytes
//! instead of hyper's two 8 KiB buffers (nginx frees its buffers the same way).

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use super::conn::{ClientIo, Protocol, WaitReadable};
use super::listener::stopped;
use crate::config::Global;
use crate::proxy::{handle, ClientConn};
use crate::snapshot::SharedSnapshot;

/// Streams one HTTP/2 client may have open at once (nginx: 128, HAProxy: 100).
const HTTP2_MAX_CONCURRENT_STREAMS: u32 = 128;

/// Streams a client may reset before they are served, at once.
const HTTP2_MAX_PENDING_RESETS: usize = 20;

/// Streams reset for a client's protocol errors before the connection goes.
const HTTP2_MAX_LOCAL_ERROR_RESETS: usize = 256;

/// hyper's HTTP/1 and HTTP/2 server settings from `[global]`.
#[derive(Debug, Clone)]
pub struct ServerBuilders {
    http1: hyper::server::conn::http1::Builder,
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
}

impl ServerBuilders {
    pub fn new(global: &Global) -> ServerBuilders {
        let header_limit = global.max_request_header_size;
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            // `ClientIo` enforces header_read_timeout and idle_timeout itself.
            .header_read_timeout(None)
            // A request head must fit in hyper's read buffer, else 431.
            .max_buf_size(header_limit);
        let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            // Also bounds CONTINUATION frames: h2 stops reading a header block
            // beyond it (the 2024 CONTINUATION flood).
            .max_header_list_size(u32::try_from(header_limit).unwrap_or(u32::MAX))
            .max_concurrent_streams(HTTP2_MAX_CONCURRENT_STREAMS)
            // Rapid reset (CVE-2023-44487): a client that opens and cancels
            // streams faster than they are served gets GOAWAY.
            .max_pending_accept_reset_streams(HTTP2_MAX_PENDING_RESETS)
            // A client whose streams keep failing by its own fault gets GOAWAY.
            .max_local_error_reset_streams(HTTP2_MAX_LOCAL_ERROR_RESETS);
        ServerBuilders { http1, http2 }
    }
}

/// How one hyper HTTP/1 connection ended.
enum Ended {
    /// Closed (by the client, an error, a time limit or shutdown).
    Closed(hyper::Result<()>),
    /// Ended on purpose to park the socket.
    Parked,
}

/// Serves the connection until it closes; on shutdown, it finishes the
/// requests it has and closes.
pub async fn serve_connection<S>(
    builders: &ServerBuilders,
    mut io: ClientIo<S>,
    snapshots: SharedSnapshot,
    client: Arc<ClientConn>,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + WaitReadable + Unpin + Send + 'static,
{
    let peer = client.client;
    let service =
        service_fn(move |request| handle(Arc::clone(&snapshots), Arc::clone(&client), request));
    let sniffed = tokio::select! {
        sniffed = io.sniff_protocol() => sniffed,
        // Nothing was asked yet: nothing to finish.
        _ = stopped(&mut shutdown) => return,
    };
    let protocol = match sniffed {
        Ok(protocol) => protocol,
        Err(error) => {
            tracing::debug!(client = %peer, %error, "client connection failed before a request");
            return;
        }
    };
    let result = match protocol {
        Protocol::Unknown => Ok(()),
        Protocol::Http2 => {
            // Boxed: HTTP/1 connections should not carry its size.
            let mut connection =
                Box::pin(builders.http2.serve_connection(TokioIo::new(io), service));
            tokio::select! {
                result = connection.as_mut() => result,
                _ = stopped(&mut shutdown) => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            }
        }
        Protocol::Http1 => loop {
            let state = io.state();
            // Boxed, so that a parked connection's task is small.
            let mut connection = Box::pin(
                builders
                    .http1
                    .serve_connection(TokioIo::new(io), service.clone())
                    .with_upgrades(),
            );
            let ended = {
                let mut stop = pin!(stopped(&mut shutdown));
                let (mut stopping, mut parking) = (false, false);
                poll_fn(|cx| loop {
                    if let Poll::Ready(result) = connection.as_mut().poll(cx) {
                        return Poll::Ready(match (parking, &result) {
                            (true, Ok(())) => Ended::Parked,
                            _ => Ended::Closed(result),
                        });
                    }
                    if !stopping && stop.as_mut().poll(cx).is_ready() {
                        stopping = true;
                        connection.as_mut().graceful_shutdown();
                        continue;
                    }
                    if !stopping && !parking && state.park_requested() {
                        parking = true;
                        connection.as_mut().graceful_shutdown();
                        continue;
                    }
                    return Poll::Pending;
                })
                .await
            };
            let parts = match ended {
                Ended::Closed(result) => break result,
                Ended::Parked => match std::pin::Pin::into_inner(connection).into_parts() {
                    Some(parts) => parts,
                    None => break Ok(()),
                },
            };
            io = parts.io.into_inner();
            // Dropped now, not at the end of the loop: hyper's read buffer
            // (8 KiB) and the service must not stay while parked.
            drop(parts.service);
            if parts.read_buf.is_empty() {
                drop(parts.read_buf);
            } else {
                io.unread(parts.read_buf);
            }
            let woke = tokio::select! {
                woke = io.wait_while_parked() => woke,
                _ = stopped(&mut shutdown) => false,
            };
            if !woke {
                break Ok(());
            }
            io.resume_after_park();
        },
    };
    if let Err(error) = result {
        tracing::debug!(client = %peer, %error, "client connection ended with an error");
    }
}
