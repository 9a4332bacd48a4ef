//! `redirect_https` on a plain listener: every request is answered with a 308
//! to the same host and path over https (308 keeps the method and body, where
//! 301 lets clients turn a POST into a GET).

use http::uri::Authority;
use http::HeaderValue;

/// The text of the 308 response's body.
pub const REDIRECT_TEXT: &str = "308 Permanent Redirect: use https\n";

/// The https URL for a request to `host` (a Host header, maybe with a port)
/// for `path` (and query), on `port` (omitted when 443). `None` when the host
/// is not valid.
pub fn https_location(host: &[u8], port: u16, path: &str) -> Option<HeaderValue> {
    let authority = Authority::try_from(host).ok()?;
    let location = if port == 443 {
        format!("https://{}{path}", authority.host())
    } else {
        format!("https://{}:{port}{path}", authority.host())
    };
    HeaderValue::try_from(location).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(host: &str, port: u16, uri: &str) -> Option<String> {
        https_location(host.as_bytes(), port, uri).map(|v| v.to_str().unwrap().to_string())
    }

    #[test]
    fn keeps_host_path_and_query_and_replaces_the_port() {
        assert_eq!(
            location("shop.example.com:8080", 8443, "/a/b?c=d").as_deref(),
            Some("https://shop.example.com:8443/a/b?c=d")
        );
        assert_eq!(
            location("shop.example.com", 443, "/").as_deref(),
            Some("https://shop.example.com/")
        );
        assert_eq!(
            location("[::1]:80", 443, "/x").as_deref(),
            Some("https://[::1]/x")
        );
    }

    #[test]
    fn refuses_a_host_that_is_not_an_authority() {
        assert_eq!(location("a b", 443, "/"), None);
        assert_eq!(location("evil.com/path", 443, "/"), None);
    }
}
