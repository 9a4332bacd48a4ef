//! Why a request went where it did: filled in as the request is routed and
//! balanced, counted in the metrics, and returned in `X-Usherd-Decision`
//! when the request asks for it with the admin token (`X-Usherd-Debug`).

use http::header::{HeaderName, HeaderValue};

use crate::snapshot::Snapshot;

/// The request header that asks for `X-Usherd-Decision`; its value must be
/// the admin token. It never reaches a server. A static name: looking it up
/// by `&str` would parse the name on every request.
pub static DEBUG_HEADER: HeaderName = HeaderName::from_static("x-usherd-debug");

/// The response header that answers it.
pub static DECISION_HEADER: HeaderName = HeaderName::from_static("x-usherd-decision");

/// Where a request went: indexes into the snapshot it was routed with.
#[derive(Debug, Default)]
pub struct Decision {
    pub vhost: Option<usize>,
    pub upstream: Option<usize>,
    pub server: Option<usize>,
    pub attempts: u32,
}

impl Decision {
    /// `vhost=shop; upstream=api; strategy=weighted; server=127.0.0.1:9001; attempts=1`.
    pub fn describe(&self, snapshot: &Snapshot) -> HeaderValue {
        let vhost = self
            .vhost
            .map_or("-", |index| snapshot.config.vhosts[index].name.as_str());
        let upstream = self.upstream.map(|index| &snapshot.upstreams[index]);
        let server = upstream
            .zip(self.server)
            .map_or("-", |(upstream, index)| &*upstream.endpoints[index].addr);
        let text = format!(
            "vhost={vhost}; upstream={}; strategy={}; server={server}; attempts={}",
            upstream.map_or("-", |u| &*u.name),
            upstream.map_or("-", |u| u.strategy.name()),
            self.attempts
        );
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("unprintable"))
    }
}

/// True when `asked` (the value of `X-Usherd-Debug`, if the request has
/// one) is the admin token.
pub fn wants_decision(asked: Option<&[u8]>, snapshot: &Snapshot) -> bool {
    let Some(asked) = asked else {
        return false;
    };
    let token = snapshot
        .config
        .admin
        .as_ref()
        .and_then(|admin| admin.token.as_deref());
    token.is_some_and(|token| crate::secret::same_secret(asked, token.as_bytes()))
}
