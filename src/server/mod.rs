//! Client-facing servers: listeners that accept connections and serve HTTP/1.1
//! and h2c on them, per-connection limits, and graceful shutdown.

mod conn;
mod listener;
mod listener_set;

pub use conn::{ActiveRequest, ConnState, ConnTimeouts};
pub use listener::{http_builder, serve_listener, stopped, HttpBuilder, ListenerContext};
pub use listener_set::{BindError, BindPlan, BoundListener, ListenerSet};
