//! The one place a request is decided, for both request paths: `service.rs`
//! (HTTP/2 clients, hyper's types) and `h1/request.rs` (HTTP/1 clients, raw
//! bytes) each describe their request as a `RequestView` and act on what
//! `decide` says: an https redirect, a refusal (the `ProxyError` and so the
//! status), or the route. The rules and their order live here only:
//! redirect, CONNECT, one Host line, Host against `:authority`, the declared
//! body against `max_request_body`, a valid Host, a Host for HTTP/1.1, then
//! the route by listener, host and path (docs/config.md#requests).

use http::HeaderValue;

use super::redirect::https_location;
use crate::error::ProxyError;
use crate::routing::Matched;
use crate::snapshot::Snapshot;

/// What `decide` needs of a request, whatever its protocol.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub is_connect: bool,
    /// The host the request names: the target's authority (an absolute-form
    /// target, HTTP/2's `:authority`), else its Host header.
    pub host: Option<&'a [u8]>,
    /// How many Host header lines came.
    pub host_lines: usize,
    /// An HTTP/2 request whose Host names another host than `:authority`
    /// (malformed, RFC 9113 §8.3.1).
    pub host_conflicts: bool,
    /// An HTTP/1.1 request: it must name a host (RFC 9112 §3.2).
    pub needs_host: bool,
    /// The target's path and query, as sent.
    pub path_and_query: &'a str,
    /// The body length the request declares, when it does.
    pub declared_length: Option<u64>,
}

/// Where a request goes.
#[derive(Debug)]
pub enum Decided<'s> {
    /// `redirect_https`: a 308 to this location.
    Redirect(HeaderValue),
    /// The vhost and route that take it.
    Route(Matched<'s>),
}

/// Decides `request`, which came on `listener`.
pub fn decide<'s>(
    snapshot: &'s Snapshot,
    listener: &str,
    request: &RequestView<'_>,
) -> Result<Decided<'s>, ProxyError> {
    if let Some(port) = snapshot.redirect_https(listener) {
        return request
            .host
            .and_then(|host| https_location(host, port, request.path_and_query))
            .map(Decided::Redirect)
            .ok_or(ProxyError::BadRequest(
                "a redirect to https needs a valid Host",
            ));
    }
    if request.is_connect {
        return Err(ProxyError::MethodNotAllowed);
    }
    if request.host_lines > 1 {
        return Err(ProxyError::BadRequest("a request has one Host header"));
    }
    if request.host_conflicts {
        return Err(ProxyError::BadRequest(
            "the Host header differs from :authority",
        ));
    }
    let limit = snapshot.config.global.max_request_body;
    if let (Some(limit), Some(length)) = (limit, request.declared_length) {
        if length > limit {
            return Err(ProxyError::BodyTooLarge);
        }
    }
    let host = match request.host.map(host_text) {
        Some(Some(name)) if is_authority(name) => name,
        Some(_) => return Err(ProxyError::BadRequest("the Host header is not valid")),
        None if request.needs_host => {
            return Err(ProxyError::BadRequest(
                "an HTTP/1.1 request needs a Host header",
            ))
        }
        None => "",
    };
    let path = request
        .path_and_query
        .split_once('?')
        .map_or(request.path_and_query, |(path, _)| path);
    let matched = snapshot
        .router
        .lookup(listener, host, path)
        .ok_or(ProxyError::NoRoute)?;
    Ok(Decided::Route(matched))
}

/// A Host value as text: visible ASCII (and tabs) only, as RFC 9110 allows.
pub fn host_text(host: &[u8]) -> Option<&str> {
    if host
        .iter()
        .all(|&b| (b' '..0x7f).contains(&b) || b == b'\t')
    {
        std::str::from_utf8(host).ok()
    } else {
        None
    }
}

/// Whether a Host can be an authority (`host[:port]`): no whitespace, and
/// none of the characters that end one in a URI (`/`, `?`, `#`, `@`, `\`).
fn is_authority(host: &str) -> bool {
    !host
        .bytes()
        .any(|b| matches!(b, b' ' | b'\t' | b'/' | b'?' | b'#' | b'@' | b'\\'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_is_visible_ascii_and_an_authority() {
        assert_eq!(host_text(b"shop.example:80"), Some("shop.example:80"));
        assert_eq!(host_text(b"sh\x01op"), None);
        assert_eq!(host_text("café".as_bytes()), None);
        assert!(is_authority("shop.example:80") && is_authority("[::1]:8080"));
        for bad in ["a b", "a\tb", "a/b", "a?b", "a#b", "u@a", "a\\b"] {
            assert!(!is_authority(bad), "{bad}");
        }
    }
}
