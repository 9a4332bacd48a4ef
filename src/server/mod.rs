//! Client-facing servers: listeners that accept connections and serve HTTP/1.1
//! and h2c on them, per-connection limits, and graceful shutdown.

mod conn;
mod listener;
mod listener_set;
mod serve;

pub use conn::{ActiveRequest, ConnState, ConnTimeouts};
pub use listener::{serve_listener, stopped, ListenerContext};
pub use listener_set::{BindError, BindPlan, BoundListener, ListenerSet};
pub use serve::{ServerBuilders, HTTP2_MAX_CONCURRENT_STREAMS};
