//! Header rules of a forwarded request and its response
//! (docs/config.md#requests) on hyper's `HeaderMap`, for `service.rs`:
//! hop-by-hop headers removed, X-Forwarded-* set, a request id kept or made, in
//! place. The HTTP/1 path applies the same rules while it writes heads
//! (`h1/heads.rs`).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// `Keep-Alive` and `Proxy-Connection` have no constant in `http`.
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Removes the hop-by-hop headers of RFC 9110 §7.6.1: `Connection` and every
/// header it names, plus `Keep-Alive`, `Proxy-Connection`, `TE` (unless it is
/// exactly `trailers`, which gRPC needs end to end), `Trailer`,
/// `Transfer-Encoding` and `Upgrade`.
///
/// Runs on every request and response: one pass over the names decides
/// whether there is anything to remove (most messages carry no hop-by-hop
/// header but `Connection`), and the names `Connection` lists are removed by
/// `&str`, without making a `HeaderName` of each.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let (mut connection, mut others) = (false, false);
    for name in headers.keys() {
        if name == header::CONNECTION {
            connection = true;
        } else if is_hop_by_hop(name) {
            others = true;
        }
    }
    if connection {
        remove_connection_and_named(headers);
    }
    if others {
        headers.remove(&KEEP_ALIVE);
        headers.remove(&PROXY_CONNECTION);
        headers.remove(header::TRAILER);
        headers.remove(header::TRANSFER_ENCODING);
        let te_is_trailers = headers
            .get(header::TE)
            .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"trailers"));
        if !te_is_trailers {
            headers.remove(header::TE);
        }
        headers.remove(header::UPGRADE);
    }
}

/// The headers a `Connection` option cannot take away, because usherd sets
/// them or routes and frames by them: a client's `Connection:
/// x-forwarded-for` does not erase the chain it came with. The one list both
/// request paths follow (`h1/heads.rs` asks `connection_may_remove`).
const KEPT_FROM_CONNECTION: [&str; 6] = [
    "host",
    "content-length",
    "x-request-id",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
];

/// Whether a `Connection` option naming `name` removes that header.
pub fn connection_may_remove(name: &[u8]) -> bool {
    !KEPT_FROM_CONNECTION
        .iter()
        .any(|kept| kept.as_bytes().eq_ignore_ascii_case(name))
}

/// Removes `Connection` and the headers it names.
fn remove_connection_and_named(headers: &mut HeaderMap) {
    // `remove` returns the first value only; further `Connection` lines are rare.
    let more: Vec<HeaderValue> = headers
        .get_all(header::CONNECTION)
        .iter()
        .skip(1)
        .cloned()
        .collect();
    let first = headers.remove(header::CONNECTION);
    for value in first.iter().chain(&more) {
        let Ok(value) = value.to_str() else {
            continue;
        };
        for token in value.split(',').map(str::trim) {
            if connection_may_remove(token.as_bytes()) {
                headers.remove(token);
            }
        }
    }
}

/// The hop-by-hop headers but `Connection`.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::TRANSFER_ENCODING
        || name == header::TE
        || name == header::TRAILER
        || name == header::UPGRADE
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
}

/// Sets `X-Forwarded-For` (appending the client to any list already there),
/// `X-Forwarded-Proto` and `X-Forwarded-Host`.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    client_ip: &HeaderValue,
    proto: &'static str,
    host: Option<&HeaderValue>,
) {
    let mut previous = headers.get_all(&X_FORWARDED_FOR).iter().peekable();
    if previous.peek().is_none() {
        headers.insert(X_FORWARDED_FOR.clone(), client_ip.clone());
    } else {
        let mut list = Vec::with_capacity(64);
        for value in previous {
            list.extend_from_slice(value.as_bytes());
            list.extend_from_slice(b", ");
        }
        list.extend_from_slice(client_ip.as_bytes());
        match HeaderValue::from_bytes(&list) {
            Ok(value) => {
                headers.insert(X_FORWARDED_FOR.clone(), value);
            }
            Err(_) => {
                headers.insert(X_FORWARDED_FOR.clone(), client_ip.clone());
            }
        }
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    match host {
        Some(host) => headers.insert(X_FORWARDED_HOST.clone(), host.clone()),
        None => headers.remove(&X_FORWARDED_HOST),
    };
}

/// Keeps the client's `X-Request-Id` or sets a new random one (32 hex digits);
/// returns the id.
pub fn ensure_request_id(headers: &mut HeaderMap) -> HeaderValue {
    if let Some(id) = headers.get(&X_REQUEST_ID) {
        return id.clone();
    }
    let id = new_request_id();
    headers.insert(X_REQUEST_ID.clone(), id.clone());
    id
}

fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut bits = fastrand::u128(..);
    let mut text = [0u8; 32];
    for byte in text.iter_mut() {
        *byte = HEX[(bits & 0xf) as usize];
        bits >>= 4;
    }
    HeaderValue::from_bytes(&text).expect("hex digits are a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut headers = map(&[
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "gzip"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-kept", "yes"),
        ]);
        remove_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert_eq!(headers["x-kept"], "yes");
    }

    #[test]
    fn connection_cannot_remove_what_usherd_sets_or_routes_by() {
        let mut headers = map(&[
            (
                "connection",
                "X-Forwarded-For, x-request-id, host, content-length, x-gone",
            ),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-request-id", "abc"),
            ("host", "shop.test"),
            ("content-length", "0"),
            ("x-gone", "1"),
        ]);
        remove_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 4, "{headers:?}");
        assert_eq!(headers["x-forwarded-for"], "10.0.0.1");
        assert!(headers.get("x-gone").is_none());
    }

    #[test]
    fn every_connection_line_is_honoured_and_bad_tokens_are_skipped() {
        let mut headers = map(&[
            ("connection", "x-one,, bad name ,"),
            ("connection", "X-Two"),
            ("x-one", "1"),
            ("x-two", "2"),
            ("x-kept", "yes"),
        ]);
        remove_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert_eq!(headers["x-kept"], "yes");
    }

    #[test]
    fn end_to_end_headers_are_left_alone() {
        let mut headers = map(&[("host", "shop"), ("x-kept", "yes"), ("accept", "*/*")]);
        let before = headers.clone();
        remove_hop_by_hop(&mut headers);
        assert_eq!(headers, before);
    }

    #[test]
    fn te_trailers_is_kept() {
        let mut headers = map(&[("te", "trailers")]);
        remove_hop_by_hop(&mut headers);
        assert_eq!(headers["te"], "trailers");
    }

    #[test]
    fn forwarded_for_is_appended() {
        let ip = HeaderValue::from_static("10.0.0.9");
        let mut headers = map(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
        ]);
        set_forwarded(
            &mut headers,
            &ip,
            "http",
            Some(&HeaderValue::from_static("shop")),
        );
        assert_eq!(headers["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.0.0.9");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-forwarded-host"], "shop");

        let mut headers = HeaderMap::new();
        set_forwarded(&mut headers, &ip, "http", None);
        assert_eq!(headers["x-forwarded-for"], "10.0.0.9");
    }

    #[test]
    fn request_id_is_kept_or_made() {
        let mut headers = map(&[("x-request-id", "abc")]);
        assert_eq!(ensure_request_id(&mut headers), "abc");
        let mut headers = HeaderMap::new();
        let id = ensure_request_id(&mut headers);
        assert_eq!(id.len(), 32);
        assert_eq!(headers["x-request-id"], id);
    }
}
