//! Client-facing servers: listeners that accept connections (TLS handshakes
//! included) and serve HTTP/1.1 and HTTP/2 on them, per-connection limits,
//! parking of idle connections, and graceful shutdown.

mod listener;
mod listener_set;
mod serve;
mod streams;

pub use listener::{serve_listener, ListenerContext};
pub use listener_set::{BindError, BindPlan, BoundListener, ListenerSet};
pub use serve::HTTP2_RESET_FLOODS;
