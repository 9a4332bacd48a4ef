//! The client's side of a connection, as both the listeners (`server/`) and
//! the request path (`proxy/`) see it: the connection's state and counts
//! (`ConnState`, `ActiveRequest`), what the proxy knows of it (`ClientConn`),
//! the IO wrapper that enforces its time limits (`ClientIo`), the send watch
//! of an HTTP/2 stream, and the shutdown signal. Below both, so that neither
//! imports the other for these.

mod client_conn;
mod conn;
pub mod send_watch;

use tokio::sync::watch;

pub use client_conn::ClientConn;
pub use conn::{ActiveRequest, ConnState, ConnTimeouts};
pub(crate) use conn::{ClientIo, Protocol};
pub use send_watch::{current_send_watch, SendWatch};

/// Resolves once shutdown has been signalled (or its sender is gone).
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // The borrow `wait_for` returns is dropped at once: it must not be held
    // across an await of a task that moves between threads.
    let _ = shutdown.wait_for(|stop| *stop).await;
}
