//! HTTP/1.1 connections to one server, over TCP or TLS, and its pool of idle
//! keep-alive connections. `proxy/h1` writes requests and reads responses on
//! them; this module only makes, keeps and hands them out.
//!
//! The pool is a stack behind a mutex of its own (one per server, held for a
//! push or a pop): the connection used last is used first, so a few warm
//! connections carry the traffic and the rest age out. A connection the
//! server closed while it sat idle is noticed from its socket's readiness
//! when it is taken out, which costs no system call while the socket is
//! quiet. Idle connections are closed after `POOL_IDLE_TIMEOUT` by a sweeper
//! task that runs only while the pool holds some.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::POOL_IDLE_TIMEOUT;

/// How often a pool with idle connections is swept.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// A connection to a server.
#[derive(Debug)]
pub enum UpstreamStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            UpstreamStream::Tls(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            UpstreamStream::Tls(stream) => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(stream) => Pin::new(stream).poll_flush(cx),
            UpstreamStream::Tls(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            UpstreamStream::Tls(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }
}

/// A connection to a server, and whether it carried requests before.
#[derive(Debug)]
pub struct UpstreamConn {
    pub stream: UpstreamStream,
    /// Taken from the pool rather than just made: the server may have
    /// closed it just before the request was written (see `proxy/h1`).
    pub reused: bool,
}

impl UpstreamConn {
    /// False when the socket shows the server closed it, or sent bytes
    /// nobody asked for, while it was idle. A quiet socket costs no system
    /// call: tokio knows it has not become readable.
    fn still_open(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        let mut byte = [0u8; 1];
        let mut probe = ReadBuf::new(&mut byte);
        Pin::new(&mut self.stream)
            .poll_read(&mut cx, &mut probe)
            .is_pending()
    }
}

/// Why a connection to a server could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {addr}: {source}")]
    Tcp { addr: Arc<str>, source: io::Error },
    #[error("connect to {addr}: timed out after {timeout:?}")]
    Timeout { addr: Arc<str>, timeout: Duration },
    #[error("TLS handshake with {addr}: {source}")]
    Tls { addr: Arc<str>, source: io::Error },
}

/// How connections to one server are made.
pub struct Connector {
    /// `host:port` as configured; names are resolved at each connect.
    addr: Arc<str>,
    timeout: Duration,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("addr", &self.addr)
            .field("timeout", &self.timeout)
            .field("tls", &self.tls.as_ref().map(|(_, name)| name))
            .finish()
    }
}

impl Connector {
    pub fn new(
        addr: Arc<str>,
        timeout: Duration,
        tls: Option<(TlsConnector, ServerName<'static>)>,
    ) -> Connector {
        Connector { addr, timeout, tls }
    }

    /// A new connection (TCP_NODELAY on; the TLS handshake done).
    pub async fn connect(&self) -> Result<UpstreamConn, ConnectError> {
        let connected = tokio::time::timeout(self.timeout, async {
            let stream =
                TcpStream::connect(&*self.addr)
                    .await
                    .map_err(|source| ConnectError::Tcp {
                        addr: Arc::clone(&self.addr),
                        source,
                    })?;
            // Requests and responses are written whole: no Nagle delay.
            let _ = stream.set_nodelay(true);
            let Some((connector, name)) = &self.tls else {
                return Ok(UpstreamStream::Plain(stream));
            };
            let stream = connector
                .connect(name.clone(), stream)
                .await
                .map_err(|source| ConnectError::Tls {
                    addr: Arc::clone(&self.addr),
                    source,
                })?;
            Ok(UpstreamStream::Tls(Box::new(stream)))
        });
        // Boxed: a connect is rare, and its future is large; the request
        // future of every client connection would otherwise carry it.
        match Box::pin(connected).await {
            Ok(Ok(stream)) => Ok(UpstreamConn {
                stream,
                reused: false,
            }),
            Ok(Err(error)) => Err(error),
            Err(_elapsed) => Err(ConnectError::Timeout {
                addr: Arc::clone(&self.addr),
                timeout: self.timeout,
            }),
        }
    }
}

#[derive(Debug, Default)]
struct Idle {
    /// Oldest first; each with when it was put back.
    conns: Vec<(UpstreamConn, Instant)>,
    sweeping: bool,
}

/// The HTTP/1.1 connections of one server: a connector and the idle ones.
#[derive(Debug)]
pub struct Http1Pool {
    pub connector: Connector,
    idle: Mutex<Idle>,
}

impl Http1Pool {
    pub fn new(connector: Connector) -> Http1Pool {
        Http1Pool {
            connector,
            idle: Mutex::default(),
        }
    }

    /// The idle connection used last that is still open, if any.
    pub fn checkout(&self) -> Option<UpstreamConn> {
        let mut idle = self.lock();
        while let Some((mut conn, _)) = idle.conns.pop() {
            if conn.still_open() {
                conn.reused = true;
                return Some(conn);
            }
        }
        None
    }

    /// Puts a connection whose last exchange ended cleanly back.
    pub fn checkin(self: &Arc<Self>, conn: UpstreamConn) {
        let mut idle = self.lock();
        idle.conns.push((conn, Instant::now()));
        if !idle.sweeping {
            idle.sweeping = true;
            tokio::spawn(sweep(Arc::downgrade(self)));
        }
    }

    /// Idle connections now.
    pub fn idle_count(&self) -> usize {
        self.lock().conns.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Closes the pool's connections idle for longer than `POOL_IDLE_TIMEOUT` or
/// closed by the server, until the pool is empty or gone.
async fn sweep(pool: Weak<Http1Pool>) {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        let mut idle = pool.lock();
        let now = Instant::now();
        idle.conns.retain_mut(|(conn, since)| {
            now.duration_since(*since) < POOL_IDLE_TIMEOUT && conn.still_open()
        });
        if idle.conns.is_empty() {
            idle.sweeping = false;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn pool_for(addr: std::net::SocketAddr) -> Arc<Http1Pool> {
        Arc::new(Http1Pool::new(Connector::new(
            Arc::from(addr.to_string()),
            Duration::from_secs(2),
            None,
        )))
    }

    #[tokio::test]
    async fn idle_connections_are_reused_last_first_and_closed_ones_skipped() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = pool_for(listener.local_addr().unwrap());
        let first = pool.connector.connect().await.unwrap();
        let (mut first_server, _) = listener.accept().await.unwrap();
        let second = pool.connector.connect().await.unwrap();
        let (_second_server, _) = listener.accept().await.unwrap();
        assert!(!first.reused);
        pool.checkin(first);
        pool.checkin(second);
        assert_eq!(pool.idle_count(), 2);

        let mut taken = pool.checkout().unwrap();
        assert!(taken.reused);
        // The one put back last came out: it is the second (the first's
        // server end gets this byte).
        taken.stream.write_all(b"x").await.unwrap();
        let mut byte = [0u8; 1];
        let quiet = tokio::time::timeout(Duration::from_millis(200), first_server.read(&mut byte));
        assert!(quiet.await.is_err(), "the first connection was taken");
        pool.checkin(taken);

        // The server closes the first one while it is idle: it is skipped.
        drop(first_server);
        drop(_second_server);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(pool.checkout().is_none());
        assert_eq!(pool.idle_count(), 0);
    }

    #[tokio::test]
    async fn connect_failures_say_where_and_why() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let error = pool_for(addr).connector.connect().await.unwrap_err();
        assert!(matches!(error, ConnectError::Tcp { .. }), "{error}");
        assert!(error.to_string().contains(&addr.to_string()), "{error}");
    }
}
