//! What the registry's two HTTP APIs (Consul's and Eureka's) share: the
//! request as the admin listener hands it over, the query string, and who
//! may read and write.

use std::net::IpAddr;

use base64::Engine;
use bytes::Bytes;
use http::{header, HeaderMap, Method};
use serde_json::Value;

use super::{token_in, Registry};

/// One request to a registry API, its body already read.
pub struct ApiRequest<'a> {
    pub method: &'a Method,
    /// After the API's prefix (`/v1`, `/eureka` or `/eureka/v2`).
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: Bytes,
    /// Who sent it: the address of an instance that names none.
    pub peer: IpAddr,
    /// The admin listener's address, for `/v1/status/leader`.
    pub agent: String,
}

/// Reads need a read or write token when read tokens are set; writes a
/// write token when write tokens are set. A token comes in
/// `X-Consul-Token`, `Authorization: Bearer`, as the password of
/// `Authorization: Basic` (what Eureka clients send for
/// `http://user:TOKEN@host/eureka/`), or as `?token=`.
pub fn authorize(
    registry: &Registry,
    headers: &HeaderMap,
    query: &Query,
    writes: bool,
) -> Result<(), String> {
    let settings = registry.settings();
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let given = headers
        .get("x-consul-token")
        .and_then(|v| v.to_str().ok())
        .map(String::from)
        .or_else(|| {
            authorization
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(String::from)
        })
        .or_else(|| authorization.and_then(basic_password))
        .or_else(|| query.get("token"));
    let may_write = |token: &str| token_in(token, &settings.write_tokens);
    let allowed = if writes {
        settings.write_tokens.is_empty() || given.as_deref().is_some_and(may_write)
    } else {
        settings.read_tokens.is_empty()
            || given
                .as_deref()
                .is_some_and(|token| may_write(token) || token_in(token, &settings.read_tokens))
    };
    if allowed {
        return Ok(());
    }
    let message = match given {
        None => "Permission denied: a token is required",
        Some(_) if writes => "Permission denied: the token may not write",
        Some(_) => "Permission denied: the token may not read",
    };
    Err(message.into())
}

/// The password of `Basic base64(user:password)`.
fn basic_password(authorization: &str) -> Option<String> {
    let encoded = authorization.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    text.split_once(':')
        .map(|(_, password)| password.to_string())
}

/// The query string, decoded.
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(query: Option<&str>) -> Query {
        Query(
            query
                .unwrap_or("")
                .split('&')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    (decode(key), decode(value))
                })
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    /// Every pair, in order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }

    /// `?passing`, `?passing=1`, `?passing=true`.
    pub fn flag(&self, key: &str) -> bool {
        self.get(key)
            .is_some_and(|value| !matches!(value.as_str(), "false" | "0"))
    }
}

/// Percent-decoding, with `+` as a space (query strings) .
pub fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' if index + 2 < bytes.len() => {
                match text
                    .get(index + 1..index + 3)
                    .map(|hex| u8::from_str_radix(hex, 16))
                {
                    Some(Ok(byte)) => {
                        out.push(byte);
                        index += 3;
                    }
                    _ => {
                        out.push(b'%');
                        index += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                index += 1;
            }
            byte => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A value's kind, for error messages: `the string "x"`, `an object`.
pub fn kind(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

pub fn is_host_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_decode() {
        let query = Query::parse(Some("index=12&wait=5s&passing&tag=v%202&note=a+b"));
        assert_eq!(query.get("index").as_deref(), Some("12"));
        assert!(query.flag("passing"));
        assert_eq!(query.get("tag").as_deref(), Some("v 2"));
        assert_eq!(query.get("note").as_deref(), Some("a b"));
        assert!(!Query::parse(Some("passing=false")).flag("passing"));
    }

    #[test]
    fn a_basic_password_is_a_token() {
        // base64("eureka:s3cret")
        assert_eq!(
            basic_password("Basic ZXVyZWthOnMzY3JldA==").as_deref(),
            Some("s3cret")
        );
        assert_eq!(basic_password("Basic !!!"), None);
        assert_eq!(basic_password("Bearer x"), None);
    }
}
