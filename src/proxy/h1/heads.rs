//! The heads the HTTP/1 path writes, each straight into a byte buffer from the
//! head it came from: the upstream request (the client's head with the header
//! rules of docs/config.md#requests), the client's response (the server's head,
//! cleaned the same way) and usherd's own answers. Header names keep the case
//! they came with; nothing is parsed twice.

use http::header::HeaderValue;
use http::StatusCode;

use super::date::write_date_header;
use crate::proxy::headers::connection_may_remove;

/// What a head buffer starts with: most heads fit, and growing it by
/// doubling from nothing would take a handful of reallocations.
const HEAD_ROOM: usize = 512;
use crate::http1::{HeaderKind, Headers, RequestHead, ResponseHead};

/// Whether, and how, the client's connection stays open after a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// Open; `http10` when the client speaks HTTP/1.0 and so must be told.
    KeepAlive {
        http10: bool,
    },
    Close,
    /// Switching protocols (101).
    Upgrade,
}

/// How the body of a response to the client is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFraming {
    /// No body, or one of the length the server's `Content-Length` says.
    AsIs,
    /// Re-framed as chunked (the server's was chunked or until close).
    Chunked,
    /// Until close, for an HTTP/1.0 client.
    UntilClose,
}

/// What the upstream request says of the client beyond its own head.
#[derive(Debug)]
pub struct Forwarding<'a> {
    /// The path and query to ask for (`strip_prefix` may have shortened it).
    pub path: &'a [u8],
    /// The host of an absolute-form target: it replaces `Host` (RFC 9112
    /// §3.2.2).
    pub target_host: Option<&'a [u8]>,
    /// The host the request named, for `X-Forwarded-Host`.
    pub host: Option<&'a [u8]>,
    /// The `Host` of a request that named none (HTTP/1.0): the address the
    /// client connected to.
    pub default_host: &'a [u8],
    pub client_ip: &'a [u8],
    /// `http` or `https`.
    pub proto: &'static str,
    /// An HTTP/1.1 upgrade is asked for: `Upgrade` and `Connection: upgrade` go on.
    pub upgrade: bool,
    /// The body is chunked.
    pub chunked: bool,
}

/// The request id a request goes upstream with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestId<'a> {
    /// The client's `X-Request-Id`.
    Kept(&'a [u8]),
    /// A new one: 32 random hex digits.
    Made([u8; 32]),
}

impl RequestId<'_> {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            RequestId::Kept(id) => id,
            RequestId::Made(id) => id,
        }
    }
}

/// True when `token` (a `Connection` option) names a header to drop with it.
fn names_a_header(token: &[u8]) -> bool {
    !(token.is_empty()
        || token.eq_ignore_ascii_case(b"close")
        || token.eq_ignore_ascii_case(b"keep-alive")
        || token.eq_ignore_ascii_case(b"upgrade"))
        && connection_may_remove(token)
}

/// The headers that `Connection` names (RFC 9110 §7.6.1), beyond the
/// hop-by-hop ones dropped anyway.
struct ConnectionNamed<'a> {
    headers: &'a Headers,
    buf: &'a [u8],
    any: bool,
}

impl<'a> ConnectionNamed<'a> {
    fn of(headers: &'a Headers, buf: &'a [u8]) -> ConnectionNamed<'a> {
        let mut named = ConnectionNamed {
            headers,
            buf,
            any: false,
        };
        named.any = named.tokens().any(names_a_header);
        named
    }

    fn tokens(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .values(self.buf, HeaderKind::Connection)
            .flat_map(|value| value.split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
    }

    fn names(&self, name: &[u8]) -> bool {
        self.any && self.tokens().any(|token| token.eq_ignore_ascii_case(name))
    }
}

/// Appends the header line `name: value`.
pub(super) fn header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends `content-length: <length>`.
pub(super) fn content_length_header(out: &mut Vec<u8>, length: u64) {
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(itoa::Buffer::new().format(length).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Writes the upstream request head for the client's `head` (parsed from
/// `buf`) into `out`, and returns its request id.
pub fn write_upstream_request<'a>(
    out: &mut Vec<u8>,
    buf: &'a [u8],
    head: &RequestHead,
    forwarding: &Forwarding<'_>,
) -> RequestId<'a> {
    out.clear();
    out.reserve(HEAD_ROOM);
    out.extend_from_slice(head.method_name.of(buf));
    out.push(b' ');
    out.extend_from_slice(forwarding.path);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let named = ConnectionNamed::of(&head.headers, buf);
    let mut request_id = None;
    let mut forwarded_for = false;
    let mut has_host = false;
    let mut has_length = false;
    for line in head.headers.iter() {
        let name = line.name.of(buf);
        let value = line.value.of(buf);
        let keep = match line.kind {
            HeaderKind::Te => value.trim_ascii().eq_ignore_ascii_case(b"trailers"),
            HeaderKind::Upgrade => forwarding.upgrade,
            kind if kind.is_hop_by_hop() => false,
            HeaderKind::UsherdDebug | HeaderKind::XForwardedProto | HeaderKind::XForwardedHost => {
                false
            }
            HeaderKind::XForwardedFor => {
                forwarded_for = true;
                false
            }
            HeaderKind::Host => {
                has_host = forwarding.target_host.is_none();
                has_host
            }
            HeaderKind::XRequestId => {
                request_id.get_or_insert(value);
                true
            }
            // One line, of one value: framing checked that all agree.
            HeaderKind::ContentLength if !has_length => {
                has_length = true;
                let length = value.split(|&b| b == b',').next().unwrap_or(value);
                header(out, name, length.trim_ascii());
                false
            }
            HeaderKind::ContentLength => false,
            _ => !named.names(name),
        };
        if keep {
            header(out, name, value);
        }
    }
    if !has_host {
        let host = forwarding.target_host.or(forwarding.host);
        header(out, b"host", host.unwrap_or(forwarding.default_host));
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    if forwarded_for {
        for previous in head.headers.values(buf, HeaderKind::XForwardedFor) {
            out.extend_from_slice(previous);
            out.extend_from_slice(b", ");
        }
    }
    out.extend_from_slice(forwarding.client_ip);
    out.extend_from_slice(b"\r\n");
    header(out, b"x-forwarded-proto", forwarding.proto.as_bytes());
    if let Some(host) = forwarding.host {
        header(out, b"x-forwarded-host", host);
    }
    let request_id = match request_id {
        Some(id) => RequestId::Kept(id),
        None => {
            let id = new_request_id();
            header(out, b"x-request-id", &id);
            RequestId::Made(id)
        }
    };
    if forwarding.chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if forwarding.upgrade {
        out.extend_from_slice(b"connection: upgrade\r\n");
    }
    out.extend_from_slice(b"\r\n");
    request_id
}

/// 32 random hex digits.
fn new_request_id() -> [u8; 32] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut bits = fastrand::u128(..);
    let mut id = [0u8; 32];
    for digit in id.iter_mut() {
        *digit = HEX[(bits & 0xf) as usize];
        bits >>= 4;
    }
    id
}

fn status_line(out: &mut Vec<u8>, status: u16, reason: &[u8]) {
    out.extend_from_slice(b"HTTP/1.1 ");
    let mut digits = [b'0'; 3];
    let mut rest = status.min(999);
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    out.extend_from_slice(&digits);
    out.push(b' ');
    out.extend_from_slice(reason);
    out.extend_from_slice(b"\r\n");
}

fn persistence_header(out: &mut Vec<u8>, persistence: Persistence) {
    match persistence {
        Persistence::KeepAlive { http10: false } => {}
        Persistence::KeepAlive { http10: true } => {
            out.extend_from_slice(b"connection: keep-alive\r\n")
        }
        Persistence::Close => out.extend_from_slice(b"connection: close\r\n"),
        Persistence::Upgrade => out.extend_from_slice(b"connection: upgrade\r\n"),
    }
}

/// Writes the client's response head for the server's `head` (parsed from
/// `buf`) into `out`.
pub fn write_client_response(
    out: &mut Vec<u8>,
    buf: &[u8],
    head: &ResponseHead,
    framing: ClientFraming,
    persistence: Persistence,
    decision: Option<&HeaderValue>,
) {
    out.clear();
    out.reserve(HEAD_ROOM);
    status_line(out, head.status, head.reason.of(buf));
    let named = ConnectionNamed::of(&head.headers, buf);
    let switching = persistence == Persistence::Upgrade;
    let mut dated = false;
    for line in head.headers.iter() {
        let name = line.name.of(buf);
        let keep = match line.kind {
            HeaderKind::Upgrade => switching,
            kind if kind.is_hop_by_hop() => false,
            // Re-framed: the length is the chunks'.
            HeaderKind::ContentLength => framing == ClientFraming::AsIs,
            HeaderKind::Date => {
                dated = true;
                true
            }
            HeaderKind::Other => !named.names(name),
            _ => true,
        };
        if keep {
            header(out, name, line.value.of(buf));
        }
    }
    if !dated {
        write_date_header(out);
    }
    if framing == ClientFraming::Chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    persistence_header(out, persistence);
    if let Some(decision) = decision {
        header(out, b"x-usherd-decision", decision.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes the client's copy of a server's interim response (1xx), `head`
/// parsed from `buf`, into `out`: its status and its end-to-end headers.
pub fn write_interim_response(out: &mut Vec<u8>, buf: &[u8], head: &ResponseHead) {
    out.clear();
    status_line(out, head.status, head.reason.of(buf));
    let named = ConnectionNamed::of(&head.headers, buf);
    for line in head.headers.iter() {
        let name = line.name.of(buf);
        if !line.kind.is_hop_by_hop() && !named.names(name) {
            header(out, name, line.value.of(buf));
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes a whole response of usherd's own into `out`: `text` as a
/// text/plain body (not sent to a HEAD request), with `location` for a
/// redirect.
pub fn write_local_response(
    out: &mut Vec<u8>,
    status: StatusCode,
    text: &[u8],
    location: Option<&HeaderValue>,
    to_head: bool,
    persistence: Persistence,
    decision: Option<&HeaderValue>,
) {
    out.clear();
    status_line(
        out,
        status.as_u16(),
        status.canonical_reason().unwrap_or("").as_bytes(),
    );
    out.extend_from_slice(b"content-type: text/plain; charset=utf-8\r\n");
    content_length_header(out, text.len() as u64);
    write_date_header(out);
    if let Some(location) = location {
        header(out, b"location", location.as_bytes());
    }
    persistence_header(out, persistence);
    if let Some(decision) = decision {
        header(out, b"x-usherd-decision", decision.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    if !to_head {
        out.extend_from_slice(text);
    }
}

/// The interim response to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream_head(request: &str, forwarding: &Forwarding<'_>) -> (String, String) {
        let mut head = RequestHead::default();
        assert!(head.parse(request.as_bytes()).unwrap());
        let mut out = Vec::new();
        let id = write_upstream_request(&mut out, request.as_bytes(), &head, forwarding);
        (
            String::from_utf8(out).unwrap(),
            String::from_utf8(id.as_bytes().to_vec()).unwrap(),
        )
    }

    fn forwarding<'a>(path: &'a str, host: Option<&'a str>) -> Forwarding<'a> {
        Forwarding {
            path: path.as_bytes(),
            target_host: None,
            host: host.map(str::as_bytes),
            default_host: b"127.0.0.1:8080",
            client_ip: b"10.0.0.9",
            proto: "http",
            upgrade: false,
            chunked: false,
        }
    }

    #[test]
    fn the_upstream_request_follows_the_header_rules() {
        let request = "GET /a?b HTTP/1.1\r\nHost: Shop\r\nConnection: keep-alive, X-Secret\r\n\
            X-Secret: 1\r\nKeep-Alive: 5\r\nProxy-Connection: x\r\nTE: gzip\r\nUpgrade: h2c\r\n\
            X-Forwarded-For: 1.1.1.1\r\nx-forwarded-for: 2.2.2.2\r\nX-Forwarded-Proto: https\r\n\
            X-Usherd-Debug: token\r\nAccept: */*\r\n\r\n";
        let (head, id) = upstream_head(request, &forwarding("/a?b", Some("Shop")));
        let expected_start = "GET /a?b HTTP/1.1\r\nHost: Shop\r\nAccept: */*\r\n\
            x-forwarded-for: 1.1.1.1, 2.2.2.2, 10.0.0.9\r\nx-forwarded-proto: http\r\n\
            x-forwarded-host: Shop\r\nx-request-id: ";
        assert!(head.starts_with(expected_start), "{head}");
        assert!(head.ends_with(&format!("{id}\r\n\r\n")), "{head}");
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn ids_te_trailers_upgrades_and_absolute_targets() {
        let request = "GET http://api.example/x HTTP/1.1\r\nHost: wrong\r\nX-Request-Id: abc\r\n\
            TE: trailers\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
        let mut rules = forwarding("/x", Some("api.example"));
        rules.target_host = Some(b"api.example");
        rules.upgrade = true;
        let (head, id) = upstream_head(request, &rules);
        assert_eq!(id, "abc");
        assert_eq!(
            head,
            "GET /x HTTP/1.1\r\nX-Request-Id: abc\r\nTE: trailers\r\nUpgrade: websocket\r\n\
             host: api.example\r\nx-forwarded-for: 10.0.0.9\r\nx-forwarded-proto: http\r\n\
             x-forwarded-host: api.example\r\nconnection: upgrade\r\n\r\n"
        );
    }

    #[test]
    fn one_content_length_line_and_a_host_for_every_request() {
        let request = "POST /a HTTP/1.0\r\nContent-Length: 3, 3\r\ncontent-length: 3\r\n\r\n";
        let (head, _) = upstream_head(request, &forwarding("/a", None));
        assert!(
            head.starts_with("POST /a HTTP/1.1\r\nContent-Length: 3\r\nhost: 127.0.0.1:8080\r\n"),
            "{head}"
        );
        assert!(!head.contains("x-forwarded-host"), "{head}");
    }

    #[test]
    fn the_client_response_is_cleaned_and_reframed() {
        let response = "HTTP/1.1 200 OK\r\nConnection: x-hop\r\nX-Hop: 1\r\nKeep-Alive: 5\r\n\
            Transfer-Encoding: chunked\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nX-Kept: yes\r\n\r\n";
        let mut head = ResponseHead::default();
        assert!(head.parse(response.as_bytes()).unwrap());
        let mut out = Vec::new();
        let decision = HeaderValue::from_static("vhost=a");
        write_client_response(
            &mut out,
            response.as_bytes(),
            &head,
            ClientFraming::Chunked,
            Persistence::Close,
            Some(&decision),
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nX-Kept: yes\r\n\
             transfer-encoding: chunked\r\nconnection: close\r\nx-usherd-decision: vhost=a\r\n\r\n"
        );
    }

    #[test]
    fn interim_responses_keep_their_end_to_end_headers() {
        let response = "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\nConnection: x-hop\r\n\
            X-Hop: 1\r\nKeep-Alive: 5\r\n\r\n";
        let mut head = ResponseHead::default();
        assert!(head.parse(response.as_bytes()).unwrap());
        let mut out = Vec::new();
        write_interim_response(&mut out, response.as_bytes(), &head);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
        );
    }

    #[test]
    fn local_responses_have_a_length_and_no_body_for_head() {
        let mut out = Vec::new();
        write_local_response(
            &mut out,
            StatusCode::NOT_FOUND,
            b"404 Not Found: no route\n",
            None,
            true,
            Persistence::KeepAlive { http10: true },
            None,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"), "{text}");
        assert!(text.contains("content-length: 24\r\n"), "{text}");
        assert!(text.contains("connection: keep-alive\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n"), "{text}");
    }
}
