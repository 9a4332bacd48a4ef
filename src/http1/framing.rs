//! Where an HTTP/1 message's body ends (RFC 9112 §6) and whether its
//! connection stays open (§9.3), with the rules that keep one request from
//! hiding another (request smuggling): a request body is framed by exactly
//! one of `Transfer-Encoding: chunked` or agreeing `Content-Length` values,
//! and anything ambiguous is refused, never guessed at.

use super::head::{HeaderKind, Headers, RequestHead, ResponseHead};

/// How a body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    /// No body at all.
    Empty,
    /// Exactly this many bytes.
    Exact(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the sender closes the connection (responses only).
    UntilClose,
}

/// What a request head says of its body and its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestFraming {
    pub body: BodyLength,
    /// The client wants the connection kept open after the response.
    pub keep_alive: bool,
    /// An HTTP/1.1 upgrade (`Connection: upgrade` and an `Upgrade` header).
    pub upgrade: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
}

/// What a response head says of its body and its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseFraming {
    pub body: BodyLength,
    /// The server keeps the connection open after this response.
    pub keep_alive: bool,
}

/// The options of a head's `Connection` headers.
#[derive(Debug, Clone, Copy, Default)]
struct ConnectionOptions {
    close: bool,
    keep_alive: bool,
    upgrade: bool,
}

impl ConnectionOptions {
    fn of(headers: &Headers, buf: &[u8]) -> ConnectionOptions {
        let mut options = ConnectionOptions::default();
        for token in headers
            .values(buf, HeaderKind::Connection)
            .flat_map(|value| value.split(|&b| b == b','))
        {
            let token = token.trim_ascii();
            if token.eq_ignore_ascii_case(b"close") {
                options.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                options.keep_alive = true;
            } else if token.eq_ignore_ascii_case(b"upgrade") {
                options.upgrade = true;
            }
        }
        options
    }

    /// Persistence by the version's default (RFC 9112 §9.3).
    fn keep_alive(self, minor_version: u8) -> bool {
        !self.close && (minor_version >= 1 || self.keep_alive)
    }
}

/// The `Content-Length` of a head: `Ok(None)` when there is none. Several
/// values (lines or a list) must agree (RFC 9110 §8.6).
fn content_length(headers: &Headers, buf: &[u8]) -> Result<Option<u64>, ()> {
    let mut length = None;
    for value in headers
        .values(buf, HeaderKind::ContentLength)
        .flat_map(|value| value.split(|&b| b == b','))
    {
        let digits = value.trim_ascii();
        if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
            return Err(());
        }
        let parsed = digits
            .iter()
            .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
        if length.is_some_and(|seen| seen != parsed) {
            return Err(());
        }
        length = Some(parsed);
    }
    Ok(length)
}

/// The codings of a head's `Transfer-Encoding` headers: `None` when there
/// is none, else whether the last one is `chunked` and whether it is the
/// only one (neither, when the headers name no coding at all).
fn transfer_codings(headers: &Headers, buf: &[u8]) -> Option<(bool, bool)> {
    let mut values = headers.values(buf, HeaderKind::TransferEncoding).peekable();
    values.peek()?;
    let mut codings = values
        .flat_map(|value| value.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|coding| !coding.is_empty());
    let Some(first) = codings.next() else {
        return Some((false, false));
    };
    let (last, only) = match codings.last() {
        Some(last) => (last, false),
        None => (first, true),
    };
    Some((last.eq_ignore_ascii_case(b"chunked"), only))
}

/// Whether the `Upgrade` headers offer h2c (RFC 7540 §3.2).
fn upgrades_to_h2c(headers: &Headers, buf: &[u8]) -> bool {
    headers
        .values(buf, HeaderKind::Upgrade)
        .flat_map(|value| value.split(|&b| b == b','))
        .any(|protocol| protocol.trim_ascii().eq_ignore_ascii_case(b"h2c"))
}

/// The framing of a request, or why it is refused (400, then close).
pub fn request_framing(head: &RequestHead, buf: &[u8]) -> Result<RequestFraming, &'static str> {
    let headers = &head.headers;
    let length =
        content_length(headers, buf).map_err(|()| "the Content-Length is not one valid number")?;
    let body = match transfer_codings(headers, buf) {
        Some(_) if length.is_some() => {
            return Err("a request with both Content-Length and Transfer-Encoding is refused")
        }
        Some(_) if head.minor_version == 0 => {
            return Err("an HTTP/1.0 request cannot have a Transfer-Encoding")
        }
        // Only plain `chunked` frames a request we can read; `gzip, chunked`
        // and the obfuscated spellings (`xchunked`, `chunked, identity`) are
        // refused rather than guessed at.
        Some((true, true)) => BodyLength::Chunked,
        Some(_) => return Err("the Transfer-Encoding must be exactly chunked"),
        None => match length {
            Some(0) | None => BodyLength::Empty,
            Some(length) => BodyLength::Exact(length),
        },
    };
    let options = ConnectionOptions::of(headers, buf);
    // An upgrade to h2c is not passed on (as nginx): the request goes as it is.
    let upgrade = head.minor_version >= 1
        && options.upgrade
        && headers.has(HeaderKind::Upgrade)
        && !upgrades_to_h2c(headers, buf);
    let expect_continue = headers
        .values(buf, HeaderKind::Expect)
        .any(|value| value.trim_ascii().eq_ignore_ascii_case(b"100-continue"));
    Ok(RequestFraming {
        body,
        keep_alive: options.keep_alive(head.minor_version),
        upgrade,
        expect_continue,
    })
}

/// The framing of a response to a request (`to_head`: a HEAD request), or
/// why it is not valid (502). 1xx responses are interim: the caller reads
/// the next head (or tunnels, for 101).
pub fn response_framing(
    head: &ResponseHead,
    buf: &[u8],
    to_head: bool,
) -> Result<ResponseFraming, &'static str> {
    let headers = &head.headers;
    let options = ConnectionOptions::of(headers, buf);
    let mut keep_alive = options.keep_alive(head.minor_version);
    let no_body = to_head || head.status < 200 || head.status == 204 || head.status == 304;
    let length = content_length(headers, buf);
    let body = match transfer_codings(headers, buf) {
        _ if no_body => BodyLength::Empty,
        Some((chunked, _)) => {
            // Both framings, or a Transfer-Encoding in HTTP/1.0: it wins, and
            // the connection is not to be trusted with another message (RFC
            // 9112 §6.1).
            if length != Ok(None) || head.minor_version == 0 {
                keep_alive = false;
            }
            if chunked {
                BodyLength::Chunked
            } else {
                BodyLength::UntilClose
            }
        }
        None => match length {
            Err(()) => return Err("the response's Content-Length is not one valid number"),
            Ok(Some(length)) => BodyLength::Exact(length),
            Ok(None) => BodyLength::UntilClose,
        },
    };
    if body == BodyLength::UntilClose {
        keep_alive = false;
    }
    Ok(ResponseFraming { body, keep_alive })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(text: &str) -> Result<RequestFraming, &'static str> {
        let mut head = RequestHead::default();
        assert!(head.parse(text.as_bytes()).unwrap(), "{text}");
        request_framing(&head, text.as_bytes())
    }

    fn response(text: &str, to_head: bool) -> Result<ResponseFraming, &'static str> {
        let mut head = ResponseHead::default();
        assert!(head.parse(text.as_bytes()).unwrap(), "{text}");
        response_framing(&head, text.as_bytes(), to_head)
    }

    #[test]
    fn request_bodies_are_framed_by_one_rule() {
        let plain = request("GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(plain.body, BodyLength::Empty);
        assert!(plain.keep_alive && !plain.upgrade && !plain.expect_continue);
        let sized = request("PUT / HTTP/1.1\r\nContent-Length: 5, 5\r\ncontent-length: 5\r\n\r\n");
        assert_eq!(sized.unwrap().body, BodyLength::Exact(5));
        let chunked = request("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n");
        assert_eq!(chunked.unwrap().body, BodyLength::Chunked);
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        for shape in [
            "POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 4, 5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: +4\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length:\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding:\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: \t \r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: ,\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding:  \r\n\r\n",
        ] {
            assert!(request(shape).is_err(), "{shape}");
        }
    }

    #[test]
    fn persistence_follows_the_version_and_connection() {
        assert!(!request("GET / HTTP/1.0\r\n\r\n").unwrap().keep_alive);
        assert!(
            request("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
                .unwrap()
                .keep_alive
        );
        assert!(
            !request("GET / HTTP/1.1\r\nConnection: x, close\r\n\r\n")
                .unwrap()
                .keep_alive
        );
        let upgrade = request(
            "GET / HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
        );
        assert!(upgrade.unwrap().upgrade);
        assert!(
            !request("GET / HTTP/1.1\r\nConnection: upgrade\r\n\r\n")
                .unwrap()
                .upgrade
        );
        let h2c = request(
            "GET / HTTP/1.1\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: websocket, H2C\r\n\r\n",
        );
        assert!(!h2c.unwrap().upgrade);
        let expect = request("PUT / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n");
        assert!(expect.unwrap().expect_continue);
    }

    #[test]
    fn response_bodies_follow_rfc_9112_section_6_3() {
        let exact = response("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", false).unwrap();
        assert_eq!(
            exact,
            ResponseFraming {
                body: BodyLength::Exact(3),
                keep_alive: true
            }
        );
        let to_head = response("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", true).unwrap();
        assert_eq!(to_head.body, BodyLength::Empty);
        for status in ["204 No Content", "304 Not Modified", "100 Continue"] {
            let text = format!("HTTP/1.1 {status}\r\nTransfer-Encoding: chunked\r\n\r\n");
            assert_eq!(response(&text, false).unwrap().body, BodyLength::Empty);
        }
        let chunked = response(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            false,
        );
        assert_eq!(chunked.unwrap().body, BodyLength::Chunked);
        let both = response(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(
            both,
            ResponseFraming {
                body: BodyLength::Chunked,
                keep_alive: false
            }
        );
        let until_close = response("HTTP/1.1 200 OK\r\n\r\n", false).unwrap();
        assert_eq!(
            until_close,
            ResponseFraming {
                body: BodyLength::UntilClose,
                keep_alive: false
            }
        );
        let not_chunked = response("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false);
        assert_eq!(not_chunked.unwrap().body, BodyLength::UntilClose);
        assert!(response("HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n", false).is_err());
        let old = response("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false).unwrap();
        assert!(!old.keep_alive);
    }

    /// Found by fuzzing (tests/fuzz, target `differential`): RFC 9112 §6.1
    /// has an HTTP/1.0 message with a Transfer-Encoding close its
    /// connection, even one that asks for keep-alive.
    #[test]
    fn an_http10_response_with_a_transfer_encoding_closes() {
        let text =
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(
            response(text, false).unwrap(),
            ResponseFraming {
                body: BodyLength::Chunked,
                keep_alive: false
            }
        );
        let sized = "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n";
        assert!(response(sized, false).unwrap().keep_alive);
    }

    /// Valid heads with random bytes changed, inserted or cut: parsing and
    /// framing refuse or accept them, never panic, and every offset they
    /// give lies within the buffer.
    #[test]
    fn mutated_heads_are_handled_safely() {
        let mut rng = fastrand::Rng::with_seed(0xf00d);
        let seeds: [&[u8]; 3] = [
            b"POST /a?b HTTP/1.1\r\nHost: shop\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
            b"GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nX: y\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 1\r\n\r\n",
        ];
        let noise = b" :,;\r\n\t\x00\x7f\xffHTP/1.0aZ";
        for _ in 0..5000 {
            let mut bytes = seeds[rng.usize(..seeds.len())].to_vec();
            for _ in 0..rng.usize(1..6) {
                let at = rng.usize(..=bytes.len());
                let byte = noise[rng.usize(..noise.len())];
                match rng.u8(..3) {
                    0 if at < bytes.len() => bytes[at] = byte,
                    1 => bytes.insert(at, byte),
                    _ => bytes.truncate(at),
                }
            }
            let mut request = RequestHead::default();
            if let Ok(true) = request.parse(&bytes) {
                assert!(request.len <= bytes.len());
                let _ = request.target.of(&bytes);
                for line in request.headers.iter() {
                    let _ = (line.name.of(&bytes), line.value.of(&bytes));
                }
                let _ = request_framing(&request, &bytes);
            }
            let mut response = ResponseHead::default();
            if let Ok(true) = response.parse(&bytes) {
                assert!(response.len <= bytes.len());
                let _ = response_framing(&response, &bytes, rng.bool());
            }
        }
    }
}
