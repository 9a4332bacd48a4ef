//! The HTTP/1 path (docs/http1.md): usherd's own HTTP/1.1 server for client
//! connections, and client for `http1` upstreams, on heads parsed in place
//! (`crate::http1`) and bytes relayed with edits. HTTP/2 clients are served
//! by hyper (`service.rs`); an HTTP/1 request to an HTTP/2 upstream is
//! bridged to it (`bridge.rs`).
//!
//! `conn` owns a client connection (heads, time limits, parking, shutdown);
//! `request` one request (route, answer or hand on); `forward` its attempts
//! at an `http1` upstream and the delivery of the response; `exchange` one
//! exchange on one upstream connection; `heads` the heads it writes;
//! `relay` the bodies; `date` the `Date` header. `client` sends the requests
//! of HTTP/2 clients (hyper's types) over the same upstream connections.

mod bridge;
mod conn;
mod date;
mod exchange;
mod forward;
pub mod heads;
mod relay;
mod request;
mod send;

pub use conn::{serve, Limits, PARK_AFTER_IDLE};
pub use send::{send, PooledBody, SendFailure};
