//! The attempts of one request at an upstream (retries:
//! docs/config.md#upstreamsname), whoever carries them (hyper's client or the
//! HTTP/1 path): each goes to a server not tried yet; a failure is counted
//! against its server (outlier ejection) and decides whether another attempt
//! follows.
//!
//! Another attempt needs attempts left (`retries`), a server left, and, when
//! the failed one reached the server, budget left (`RetryBudget`, Finagle's:
//! retries add at most ~20% load). A connection that failed put no load on
//! any server, so its retry is free. After the request reached a server, only
//! idempotent requests with an empty body are tried again.

use std::fmt::Display;

use http::StatusCode;

use crate::error::ProxyError;
use crate::upstream::Upstream;

/// The most attempts a request can make (`retries` is at most 10).
const MAX_ATTEMPTS: usize = 11;

/// What became of one attempt.
pub enum Outcome<'a> {
    /// No connection: nothing reached the server.
    ConnectFailed(&'a dyn Display),
    /// The request reached the server, but no valid response head came.
    Failed(&'a dyn Display),
    /// No response head within the upstream's `timeout`.
    TimedOut,
    /// A response head with this status.
    Responded(StatusCode),
}

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Give the client this response.
    Deliver,
    /// Try again, on another server.
    Retry,
    /// Give up and answer with this error.
    Stop(ProxyError),
}

/// The attempts of one request.
#[derive(Debug)]
pub struct Attempts<'u> {
    upstream: &'u Upstream,
    key: Option<u64>,
    allowed: usize,
    tried: [usize; MAX_ATTEMPTS],
    made: usize,
    /// Failures after the request reached a server may be retried.
    retry_on_response: bool,
    last_error: ProxyError,
}

impl<'u> Attempts<'u> {
    /// The attempts of a request to `upstream`; `key` is its hash for
    /// `consistent_hash`; `retry_on_response` when it is idempotent with an
    /// empty body.
    pub fn new(upstream: &'u Upstream, key: Option<u64>, retry_on_response: bool) -> Attempts<'u> {
        upstream.retry_budget.deposit();
        Attempts {
            upstream,
            key,
            allowed: upstream.retries as usize + 1,
            tried: [usize::MAX; MAX_ATTEMPTS],
            made: 0,
            retry_on_response,
            last_error: upstream.when_empty,
        }
    }

    /// The server of the next attempt, waiting briefly when every candidate
    /// is at its connection limit; `None` when there is none (then answer
    /// with `error()`).
    pub async fn next_server(&mut self) -> Option<usize> {
        if self.made == self.allowed {
            return None;
        }
        let index = self
            .upstream
            .pick_or_wait(self.key, &self.tried[..self.made])
            .await?;
        self.tried[self.made] = index;
        self.made += 1;
        Some(index)
    }

    /// Attempts made so far (the one under way included).
    pub fn made(&self) -> u32 {
        self.made as u32
    }

    /// True when the attempt under way is the last one allowed.
    pub fn is_last(&self) -> bool {
        self.made == self.allowed
    }

    /// The error to answer with when no attempt delivered.
    pub fn error(&self) -> ProxyError {
        self.last_error
    }

    /// Records the outcome of the attempt under way on server `index` and
    /// says what follows.
    pub fn judge(&mut self, index: usize, outcome: Outcome<'_>) -> Verdict {
        let upstream = self.upstream;
        let endpoint = &upstream.endpoints[index];
        let attempt = self.made;
        match outcome {
            Outcome::TimedOut => {
                endpoint.stats.record_timeout();
                upstream.record_failure(index, "timed out before the response head");
                tracing::warn!(upstream = %upstream.name, server = %endpoint.addr, "upstream timed out before the response head");
                Verdict::Stop(ProxyError::Timeout)
            }
            Outcome::ConnectFailed(why) => {
                let why = why.to_string();
                upstream.record_failure(index, &why);
                endpoint.stats.record_connect_error();
                tracing::warn!(upstream = %upstream.name, server = %endpoint.addr, attempt, error = %why, "upstream request failed");
                self.last_error = ProxyError::Connect;
                self.retry_or(false, ProxyError::Connect)
            }
            Outcome::Failed(why) => {
                let why = why.to_string();
                upstream.record_failure(index, &why);
                tracing::warn!(upstream = %upstream.name, server = %endpoint.addr, attempt, error = %why, "upstream request failed");
                self.last_error = ProxyError::BadGateway;
                if self.retry_on_response {
                    self.retry_or(true, ProxyError::BadGateway)
                } else {
                    Verdict::Stop(ProxyError::BadGateway)
                }
            }
            Outcome::Responded(status) => {
                if matches!(
                    status,
                    StatusCode::BAD_GATEWAY
                        | StatusCode::SERVICE_UNAVAILABLE
                        | StatusCode::GATEWAY_TIMEOUT
                ) {
                    upstream.record_failure(index, status.as_str());
                    if status != StatusCode::GATEWAY_TIMEOUT
                        && self.retry_on_response
                        && self.may_retry(true)
                    {
                        tracing::info!(upstream = %upstream.name, server = %endpoint.addr, status = status.as_u16(), "retrying on another server");
                        return Verdict::Retry;
                    }
                } else {
                    upstream.record_success(index);
                }
                endpoint.stats.responses.record(status.as_u16());
                Verdict::Deliver
            }
        }
    }

    fn retry_or(&self, reached_server: bool, error: ProxyError) -> Verdict {
        if self.may_retry(reached_server) {
            Verdict::Retry
        } else {
            Verdict::Stop(error)
        }
    }

    /// Whether another attempt may follow a failed one.
    fn may_retry(&self, reached_server: bool) -> bool {
        self.made < self.allowed
            && self.upstream.any_available(&self.tried[..self.made])
            && (!reached_server || self.upstream.retry_budget.try_withdraw())
    }
}
