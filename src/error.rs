//! Why a request could not be proxied, and what the client is told: each
//! variant knows its HTTP status (docs/config.md#requests). Also how any
//! error reads in a log line or `/status`, with its causes.

use http::StatusCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("no route for this host and path")]
    NoRoute,
    #[error("no server available")]
    NoServer,
    #[error("no server available: discovery has not answered yet")]
    DiscoveryPending,
    #[error("no server available: discovery found none")]
    NoneDiscovered,
    #[error("could not connect to the upstream")]
    Connect,
    #[error("the upstream gave no valid response")]
    BadGateway,
    #[error("the upstream timed out")]
    Timeout,
    #[error("request body too large")]
    BodyTooLarge,
    #[error("request header fields too large")]
    HeadTooLarge,
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("the request body did not arrive in time")]
    ClientTimeout,
}

impl ProxyError {
    pub fn status(self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::NoServer | ProxyError::DiscoveryPending | ProxyError::NoneDiscovered => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::Connect | ProxyError::BadGateway => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::ClientTimeout => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// The text/plain body of the response: `502 Bad Gateway: why`.
    pub fn body_text(self) -> String {
        let status = self.status();
        format!(
            "{} {}: {self}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        )
    }

    /// Whether the client may have sent more than was read, so that the
    /// connection must not be read for a next request.
    pub fn closes_connection(self) -> bool {
        matches!(
            self,
            ProxyError::BadRequest(_)
                | ProxyError::BodyTooLarge
                | ProxyError::HeadTooLarge
                | ProxyError::ClientTimeout
        )
    }
}

/// An error with its causes: "client error (Connect): tcp connect error:
/// Connection refused (os error 111)".
pub fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
