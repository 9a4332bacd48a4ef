//! The accept loop of one listener: a connection slot from `max_connections`,
//! then HTTP/1.1 or h2c (by preface) served by hyper with the proxy service,
//! with the settings of the snapshot current at accept. When its stop signal
//! comes (shutdown, or a reload that removes it) it stops accepting and its
//! connections finish the requests they have, then close.

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_util::task::TaskTracker;

use super::conn::{ClientIo, ConnState};
use crate::config::Global;
use crate::proxy::{handle, ClientConn};
use crate::snapshot::SharedSnapshot;

pub type HttpBuilder = auto::Builder<TokioExecutor>;

/// hyper's HTTP/1 and HTTP/2 server settings from `[global]`.
pub fn http_builder(global: &Global) -> HttpBuilder {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let header_limit = global.max_request_header_size;
    builder
        .http1()
        .timer(TokioTimer::new())
        // `ClientIo` enforces header_read_timeout and idle_timeout itself.
        .header_read_timeout(None)
        // A request head must fit in hyper's read buffer, else 431.
        .max_buf_size(header_limit)
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(header_limit).unwrap_or(u32::MAX));
    builder
}

/// What every connection of a listener shares.
#[derive(Clone)]
pub struct ListenerContext {
    pub name: Arc<str>,
    pub snapshots: SharedSnapshot,
    pub connection_slots: Arc<Semaphore>,
    pub tracker: TaskTracker,
}

/// Accepts and serves connections until `shutdown` turns true.
pub async fn serve_listener(
    listener: TcpListener,
    context: ListenerContext,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&context.connection_slots).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_closed) => return,
            },
            _ = stopped(&mut shutdown) => return,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(listener = %context.name, %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => return,
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        let state = Arc::new(ConnState::default());
        let client = Arc::new(ClientConn::new(
            Arc::clone(&context.name),
            peer,
            "http",
            Arc::clone(&state),
        ));
        let (http, timeouts) = {
            let snapshot = context.snapshots.load();
            (Arc::clone(&snapshot.http), snapshot.timeouts)
        };
        let io = TokioIo::new(ClientIo::new(stream, state, timeouts));
        let snapshots = Arc::clone(&context.snapshots);
        let service =
            service_fn(move |request| handle(Arc::clone(&snapshots), Arc::clone(&client), request));
        let mut shutdown = shutdown.clone();
        context.tracker.spawn(async move {
            let _permit = permit;
            let connection = http.serve_connection_with_upgrades(io, service);
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = stopped(&mut shutdown) => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                tracing::debug!(client = %peer, %error, "client connection ended with an error");
            }
        });
    }
}

/// Resolves once shutdown has been signalled (or its sender is gone).
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // The borrow `wait_for` returns is dropped at once: it must not be held
    // across an await of a task that moves between threads.
    let _ = shutdown.wait_for(|stop| *stop).await;
}
