//! What the proxy knows of the client connection a request came on, made
//! once per connection by the listener.

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::HeaderValue;

use crate::server::ConnState;

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
}

impl ClientConn {
    pub fn new(
        listener: Arc<str>,
        client: SocketAddr,
        local: SocketAddr,
        proto: &'static str,
        state: Arc<ConnState>,
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
        }
    }
}
