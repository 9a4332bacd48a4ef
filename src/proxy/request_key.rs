//! The key `consistent_hash` hashes, taken from a request: the client IP, a
//! header, a cookie or the path (shared/SPEC.md §3). `None` when the request
//! has no such key; the strategy then balances it round-robin.

use std::net::IpAddr;

use http::header::{HeaderMap, COOKIE};
use http::Uri;

use crate::balance::key_hash;
use crate::config::HashKey;

/// The hash of the request's key, if it has one.
pub fn request_key(key: &HashKey, client: IpAddr, uri: &Uri, headers: &HeaderMap) -> Option<u64> {
    match key {
        HashKey::ClientIp => Some(match client {
            IpAddr::V4(ip) => key_hash(&ip.octets()),
            IpAddr::V6(ip) => key_hash(&ip.octets()),
        }),
        HashKey::Header(name) => headers.get(name).map(|value| key_hash(value.as_bytes())),
        HashKey::Cookie(name) => headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(cookie, _)| cookie == name)
            .map(|(_, value)| key_hash(value.as_bytes())),
        HashKey::Path => Some(key_hash(uri.path().as_bytes())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    #[test]
    fn keys_from_each_source() {
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let uri: Uri = "/cart/7?x=1".parse().unwrap();
        let empty = HeaderMap::new();
        assert_eq!(
            request_key(&HashKey::ClientIp, ip, &uri, &empty),
            Some(key_hash(&[10, 1, 2, 3]))
        );
        assert_eq!(
            request_key(&HashKey::Path, ip, &uri, &empty),
            Some(key_hash(b"/cart/7"))
        );
        let tenant = HashKey::Header(http::HeaderName::from_static("x-tenant"));
        assert_eq!(
            request_key(&tenant, ip, &uri, &headers(&[("x-tenant", "acme")])),
            Some(key_hash(b"acme"))
        );
        assert_eq!(request_key(&tenant, ip, &uri, &empty), None);
        let session = HashKey::Cookie("sid".into());
        let with_cookie = headers(&[("cookie", "theme=dark; sid=abc123"), ("cookie", "x=1")]);
        assert_eq!(
            request_key(&session, ip, &uri, &with_cookie),
            Some(key_hash(b"abc123"))
        );
        assert_eq!(
            request_key(&session, ip, &uri, &headers(&[("cookie", "sidx=1")])),
            None
        );
    }
}
