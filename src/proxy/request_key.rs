//! The key `consistent_hash` hashes, taken from a request: the client IP, a
//! header, a cookie or the path (`hash_key`, docs/config.md#upstreamsname).
//! `None` when the request has no such key; the strategy then balances it
//! round-robin.

use std::net::IpAddr;

use http::header::HeaderMap;

use crate::balance::key_hash;
use crate::config::HashKey;

/// Header values by name, from whichever form a request head has.
pub trait HeaderSource {
    /// The values of the header called `name` (lower case), in order.
    fn values_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a;
}

impl HeaderSource for HeaderMap {
    fn values_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.get_all(name).iter().map(|value| value.as_bytes())
    }
}

/// The hash of the request's key, if it has one; `path` is without the query.
pub fn request_key(
    key: &HashKey,
    client: IpAddr,
    path: &str,
    headers: &impl HeaderSource,
) -> Option<u64> {
    match key {
        HashKey::ClientIp => Some(match client {
            IpAddr::V4(ip) => key_hash(&ip.octets()),
            IpAddr::V6(ip) => key_hash(&ip.octets()),
        }),
        HashKey::Header(name) => headers.values_of(name.as_str()).next().map(key_hash),
        HashKey::Cookie(name) => headers
            .values_of("cookie")
            .filter_map(|value| std::str::from_utf8(value).ok())
            .flat_map(|value| value.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(cookie, _)| cookie == name)
            .map(|(_, value)| key_hash(value.as_bytes())),
        HashKey::Path => Some(key_hash(path.as_bytes())),
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
        let uri = "/cart/7";
        let empty = HeaderMap::new();
        assert_eq!(
            request_key(&HashKey::ClientIp, ip, uri, &empty),
            Some(key_hash(&[10, 1, 2, 3]))
        );
        assert_eq!(
            request_key(&HashKey::Path, ip, uri, &empty),
            Some(key_hash(b"/cart/7"))
        );
        let tenant = HashKey::Header(http::HeaderName::from_static("x-tenant"));
        assert_eq!(
            request_key(&tenant, ip, uri, &headers(&[("x-tenant", "acme")])),
            Some(key_hash(b"acme"))
        );
        assert_eq!(request_key(&tenant, ip, uri, &empty), None);
        let session = HashKey::Cookie("sid".into());
        let with_cookie = headers(&[("cookie", "theme=dark; sid=abc123"), ("cookie", "x=1")]);
        assert_eq!(
            request_key(&session, ip, uri, &with_cookie),
            Some(key_hash(b"abc123"))
        );
        assert_eq!(
            request_key(&session, ip, uri, &headers(&[("cookie", "sidx=1")])),
            None
        );
    }
}
