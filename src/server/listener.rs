//! The accept loop of one listener: a connection slot from `max_connections`,
//! the TLS handshake on TLS listeners, then the connection is served
//! (serve.rs) with the settings of the snapshot current at accept. When its
//! stop signal comes (shutdown, or a reload that removes it) it stops
//! accepting and its connections finish the requests they have, then close.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

use super::serve::{serve_connection, ServerSettings};
use crate::downstream::{stopped, ClientConn, ClientIo, ConnState, ConnTimeouts};
use crate::snapshot::SharedSnapshot;
use crate::stats::{ListenerStats, OpenConnection};
use crate::tls::{self, CertStore, CurrentCerts};

/// What every connection of a listener shares.
#[derive(Clone)]
pub struct ListenerContext {
    pub name: Arc<str>,
    pub stats: Arc<ListenerStats>,
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
    // Made at the first TLS connection; its certificate resolver reads the
    // snapshot of each handshake, so it serves whatever the config says now.
    let mut tls_acceptor: Option<TlsAcceptor> = None;
    let listening = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
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
        let open = OpenConnection::new(&context.stats);
        let state = Arc::new(ConnState::default());
        let (http, timeouts, handshake_timeout) = {
            let snapshot = context.snapshots.load();
            let handshake_timeout = snapshot
                .listener_tls(&context.name)
                .map(|tls| tls.handshake_timeout);
            (
                ServerSettings::new(&snapshot.config.global),
                ConnTimeouts::new(&snapshot.config.global),
                handshake_timeout,
            )
        };
        let local = stream.local_addr().unwrap_or(listening);
        let client = Arc::new(ClientConn::new(
            Arc::clone(&context.name),
            peer,
            local,
            if handshake_timeout.is_some() {
                "https"
            } else {
                "http"
            },
            Arc::clone(&state),
            Arc::clone(&context.stats),
        ));
        let snapshots = Arc::clone(&context.snapshots);
        let shutdown = shutdown.clone();
        let Some(handshake_timeout) = handshake_timeout else {
            let io = ClientIo::new(stream, state, timeouts);
            context.tracker.spawn(async move {
                let _held = (permit, open);
                serve_connection(&http, io, snapshots, client, shutdown).await;
            });
            continue;
        };
        let acceptor = tls_acceptor
            .get_or_insert_with(|| {
                TlsAcceptor::from(tls::server_config(Arc::new(ListenerCerts {
                    snapshots: Arc::clone(&context.snapshots),
                    listener: Arc::clone(&context.name),
                })))
            })
            .clone();
        let stats = Arc::clone(&context.stats);
        context.tracker.spawn(async move {
            let _held = (permit, open);
            let stream =
                match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        stats.tls_handshake_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(client = %peer, %error, "TLS handshake failed");
                        return;
                    }
                    Err(_elapsed) => {
                        stats.tls_handshake_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(client = %peer, "TLS handshake timed out");
                        return;
                    }
                };
            let io = ClientIo::new(stream, state, timeouts);
            serve_connection(&http, io, snapshots, client, shutdown).await;
        });
    }
}

/// A TLS listener's certificates in the snapshot current at each handshake.
#[derive(Debug)]
struct ListenerCerts {
    snapshots: SharedSnapshot,
    listener: Arc<str>,
}

impl CurrentCerts for ListenerCerts {
    fn current(&self) -> Option<Arc<CertStore>> {
        self.snapshots.load().cert_store(&self.listener).cloned()
    }
}
