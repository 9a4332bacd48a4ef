//! What the proxy knows of the client connection a request came on, made
//! once per connection by the listener.

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::HeaderValue;

use super::ConnState;
use crate::stats::{ClientTimeout, ListenerStats};

/// What the proxy knows of the client connection a request came on.
#[derive(Debug)]
pub struct ClientConn {
    pub listener: Arc<str>,
    pub client: SocketAddr,
    /// The address the client connected to.
    pub local: SocketAddr,
    /// The client IP, formatted once per connection for X-Forwarded-For.
    pub client_ip: HeaderValue,
    /// `http` or `https`, for X-Forwarded-Proto.
    pub proto: &'static str,
    pub state: Arc<ConnState>,
    /// The listener's counters.
    pub stats: Arc<ListenerStats>,
}

impl ClientConn {
    pub fn new(
        listener: Arc<str>,
        client: SocketAddr,
        local: SocketAddr,
        proto: &'static str,
        state: Arc<ConnState>,
        stats: Arc<ListenerStats>,
    ) -> ClientConn {
        let client_ip = HeaderValue::from_str(&client.ip().to_string())
            .expect("an IP address is a valid header value");
        ClientConn {
            listener,
            client,
            local,
            client_ip,
            proto,
            state,
            stats,
        }
    }

    /// Counts and logs this connection's closing by a client time limit.
    pub fn timed_out(&self, limit: ClientTimeout) {
        self.stats.client_timed_out(limit, self.client);
    }

    /// Counts and (rate-limited) logs an HTTP/2 stream of this connection
    /// ended by a client time limit.
    pub fn stream_timed_out(&self, limit: ClientTimeout) {
        self.stats.stream_timed_out(limit, self.client);
    }
}
