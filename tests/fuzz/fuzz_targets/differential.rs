//! Differential check of the head parser and the framing decisions.
//!
//! Any bytes are parsed three ways: by usherd (`RequestHead`/`ResponseHead`),
//! by `httparse` called directly, and by a strict RFC 9112 §2-5 grammar
//! written here (`rfc`). Then:
//!
//! 1. usherd and httparse agree on every outcome (complete, partial, too
//!    many headers, malformed) and, for a complete head, on its length,
//!    method/status, target/reason, version and every header name and value.
//! 2. A request head usherd accepts is one the grammar accepts, with the
//!    same fields; one the strict grammar accepts is one usherd accepts.
//! 3. The framing usherd decides (`request_framing`, `response_framing`) is
//!    one RFC 9112 §6.3 allows, decided here from the grammar's fields
//!    (`allowed_request`, `allowed_response`), and so is its persistence
//!    (§9.3) and its upgrade (RFC 9110 §7.8).
//!
//! Documented differences, where usherd is stricter or takes a choice the
//! RFC leaves open (each is allowed below, nothing else is):
//! - Line ends: a bare LF ends a line, and empty lines before a request
//!   line are skipped (both allowed by RFC 9112 §2.2); the proxy writes
//!   CRLF upstream.
//! - Versions: only HTTP/1.0 and HTTP/1.1 are accepted (httparse).
//! - Request targets: not checked against the URI grammar here, only that
//!   they are visible ASCII; httparse also takes UTF-8 in them (routing
//!   requires UTF-8, `request.rs`).
//! - A request with `Transfer-Encoding` is refused unless it is exactly one
//!   `chunked` line, in HTTP/1.1, without `Content-Length` (RFC 9112 §6.1
//!   lets a server refuse codings it does not know, and §6.3 lets an
//!   intermediary refuse both headers; it never forwards both).
//! - A `Content-Length` of more than 19 digits is refused, even with
//!   leading zeros.
//! - Identical `Content-Length` values (`5, 5` or two lines) are one length
//!   (RFC 9110 §8.6 allows either this or refusal).
//! - An HTTP/1.0 request with `Connection: keep-alive` is kept open: the
//!   proxy is the origin server to its clients (RFC 9112 §9.3 allows it).
//! - An upgrade to `h2c` is not taken up (as nginx): the request goes on
//!   as a plain one.
//! - `response_framing` does not know the request's method beyond HEAD: a
//!   2xx to CONNECT cannot happen (the proxy refuses CONNECT).

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::mem::MaybeUninit;
use usherd::http1::head::MAX_HEADERS;
use usherd::http1::{
    request_framing, response_framing, BodyLength, HeadError, RequestHead, ResponseHead,
};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, buf)) = data.split_first() else {
        return;
    };
    check_request(buf);
    check_response(buf, flags & 1 == 1);
});

/// A head as the grammar reads it.
#[derive(Debug)]
struct Head<'a> {
    start: [&'a [u8]; 3],
    minor_version: u8,
    headers: Vec<(&'a [u8], &'a [u8])>,
    len: usize,
}

fn check_request(buf: &[u8]) {
    let mut ours = RequestHead::default();
    let outcome = ours.parse(buf);
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut theirs = httparse::Request::new(&mut []);
    let status = httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut theirs,
        buf,
        &mut slots,
    );
    match (&outcome, &status) {
        (Ok(true), Ok(httparse::Status::Complete(len))) => {
            assert_eq!(ours.len, *len);
            assert_eq!(
                Some(ours.method_name.of(buf)),
                theirs.method.map(str::as_bytes)
            );
            assert_eq!(Some(ours.target.of(buf)), theirs.path.map(str::as_bytes));
            assert_eq!(Some(ours.minor_version), theirs.version);
            let our_headers: Vec<_> = ours
                .headers
                .iter()
                .map(|h| (h.name.of(buf), h.value.of(buf)))
                .collect();
            let their_headers: Vec<_> = theirs
                .headers
                .iter()
                .map(|h| (h.name.as_bytes(), h.value))
                .collect();
            assert_eq!(our_headers, their_headers);
        }
        (Ok(false), Ok(httparse::Status::Partial)) => {}
        (Err(HeadError::TooManyHeaders), Err(httparse::Error::TooManyHeaders)) => {}
        (Err(HeadError::Malformed(_)), Err(e)) if *e != httparse::Error::TooManyHeaders => {}
        (ours, theirs) => panic!("usherd {ours:?}, httparse {theirs:?}"),
    }

    let lenient = rfc(buf, true, true);
    let strict = rfc(buf, false, true);
    if let Ok(Some(strict)) = &strict {
        if strict.minor_version <= 1 && strict.headers.len() <= MAX_HEADERS {
            assert_eq!(outcome, Ok(true), "the strict grammar accepts {strict:?}");
        }
    }
    if outcome != Ok(true) {
        return;
    }
    let Ok(Some(model)) = lenient else {
        panic!("usherd accepts a head the grammar refuses: {lenient:?}");
    };
    assert_eq!(model.len, ours.len);
    assert_eq!(model.start[0], ours.method_name.of(buf));
    assert_eq!(model.start[1], ours.target.of(buf));
    assert_eq!(model.minor_version, ours.minor_version);
    let our_headers: Vec<_> = ours
        .headers
        .iter()
        .map(|h| (h.name.of(buf), h.value.of(buf)))
        .collect();
    assert_eq!(model.headers, our_headers);

    let framing = request_framing(&ours, buf);
    let allowed = allowed_request(&model);
    match framing {
        Err(_) => assert!(
            allowed.refuse,
            "refused, but RFC 9112 frames it: {allowed:?}"
        ),
        Ok(framing) => {
            assert!(
                allowed.bodies.contains(&framing.body),
                "{:?} where RFC 9112 allows {allowed:?}",
                framing.body
            );
            assert!(
                allowed.keep_alive.contains(&framing.keep_alive),
                "{allowed:?}"
            );
            if framing.upgrade {
                assert!(allowed.upgrade, "an upgrade RFC 9110 §7.8 does not allow");
            }
        }
    }
}

fn check_response(buf: &[u8], to_head: bool) {
    let mut ours = ResponseHead::default();
    let outcome = ours.parse(buf);
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut theirs = httparse::Response::new(&mut []);
    let status = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut theirs,
        buf,
        &mut slots,
    );
    match (&outcome, &status) {
        (Ok(true), Ok(httparse::Status::Complete(len))) => {
            assert_eq!(ours.len, *len);
            assert_eq!(Some(ours.status), theirs.code);
            assert_eq!(ours.reason.of(buf), theirs.reason.unwrap_or("").as_bytes());
            assert_eq!(Some(ours.minor_version), theirs.version);
            assert_eq!(ours.headers.iter().count(), theirs.headers.len());
        }
        (Ok(false), Ok(httparse::Status::Partial)) => {}
        (Err(HeadError::TooManyHeaders), Err(httparse::Error::TooManyHeaders)) => {}
        (Err(HeadError::Malformed(_)), Err(e)) if *e != httparse::Error::TooManyHeaders => {}
        (ours, theirs) => panic!("usherd {ours:?}, httparse {theirs:?}"),
    }
    if outcome != Ok(true) {
        return;
    }
    let Ok(Some(model)) = rfc(buf, true, false) else {
        return;
    };
    if model.len != ours.len {
        return;
    }
    let allowed = allowed_response(&model, ours.status, to_head);
    match response_framing(&ours, buf, to_head) {
        Err(_) => assert!(
            allowed.refuse,
            "refused, but RFC 9112 frames it: {allowed:?}"
        ),
        Ok(framing) => {
            assert!(
                allowed.bodies.contains(&framing.body),
                "{:?} where RFC 9112 allows {allowed:?}",
                framing.body
            );
            assert!(
                allowed.keep_alive.contains(&framing.keep_alive),
                "keep-alive {} where RFC 9112 allows {allowed:?}",
                framing.keep_alive
            );
        }
    }
}

/// What RFC 9112 lets a recipient decide for one message.
#[derive(Debug)]
struct Allowed {
    refuse: bool,
    bodies: Vec<BodyLength>,
    keep_alive: Vec<bool>,
    upgrade: bool,
}

/// The comma-separated elements of the values of header `name`, trimmed
/// (RFC 9110 §5.6.1).
fn list<'a>(head: &'a Head<'_>, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
    head.headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
        .flat_map(|(_, v)| v.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
}

fn has(head: &Head<'_>, name: &str) -> bool {
    head.headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
}

fn has_option(head: &Head<'_>, option: &str) -> bool {
    list(head, "connection").any(|t| t.eq_ignore_ascii_case(option.as_bytes()))
}

/// The `Content-Length` (RFC 9110 §8.6): `Ok(None)` for none, `Err` when
/// it is invalid or more than 19 digits long.
fn content_length(head: &Head<'_>) -> Result<Option<u64>, ()> {
    let mut length: Option<u128> = None;
    let mut long = false;
    for value in list(head, "content-length") {
        if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
            return Err(());
        }
        long |= value.len() > 19;
        let digits = std::str::from_utf8(value).unwrap().trim_start_matches('0');
        let parsed = if digits.len() > 30 {
            u128::MAX
        } else {
            digits.parse().unwrap_or(0)
        };
        if length.is_some_and(|seen| seen != parsed) {
            return Err(());
        }
        length = Some(parsed);
    }
    match length.map(u64::try_from) {
        None => Ok(None),
        Some(Ok(length)) if !long => Ok(Some(length)),
        Some(_) => Err(()),
    }
}

/// RFC 9112 §9.3: whether the connection may persist, by version and the
/// `Connection` options.
fn persistence(head: &Head<'_>) -> Vec<bool> {
    if has_option(head, "close") {
        vec![false]
    } else if head.minor_version >= 1 {
        vec![true]
    } else if has_option(head, "keep-alive") {
        vec![true, false]
    } else {
        vec![false]
    }
}

/// RFC 9112 §6.3 for a request (rules 3 to 7) and §6.1.
fn allowed_request(head: &Head<'_>) -> Allowed {
    let mut allowed = Allowed {
        refuse: false,
        bodies: Vec::new(),
        keep_alive: persistence(head),
        upgrade: head.minor_version >= 1 && has_option(head, "upgrade") && has(head, "upgrade"),
    };
    let length = content_length(head);
    if has(head, "transfer-encoding") {
        let codings: Vec<&[u8]> = list(head, "transfer-encoding")
            .filter(|c| !c.is_empty())
            .collect();
        let chunked_last = codings
            .last()
            .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"));
        // Rule 4: chunked must be the final coding; a coding it does not
        // know, chunked twice, both headers or HTTP/1.0 may all be refused.
        allowed.refuse = true;
        if chunked_last && length == Ok(None) {
            allowed.bodies.push(BodyLength::Chunked);
            if head.minor_version == 0 {
                allowed.keep_alive = vec![false];
            }
        }
        return allowed;
    }
    match length {
        Err(_) => allowed.refuse = true,
        Ok(None | Some(0)) => allowed.bodies.push(BodyLength::Empty),
        Ok(Some(length)) => allowed.bodies.push(BodyLength::Exact(length)),
    }
    allowed
}

/// RFC 9112 §6.3 for a response (rules 1, 3, 4, 5, 6, 8) and §6.1.
fn allowed_response(head: &Head<'_>, status: u16, to_head: bool) -> Allowed {
    let mut allowed = Allowed {
        refuse: false,
        bodies: Vec::new(),
        keep_alive: persistence(head),
        upgrade: false,
    };
    if to_head || status < 200 || status == 204 || status == 304 {
        allowed.bodies.push(BodyLength::Empty);
        return allowed;
    }
    let length = content_length(head);
    if has(head, "transfer-encoding") {
        let chunked_last = list(head, "transfer-encoding")
            .filter(|c| !c.is_empty())
            .last()
            .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"));
        allowed.bodies.push(if chunked_last {
            BodyLength::Chunked
        } else {
            BodyLength::UntilClose
        });
        // §6.1: after a message with both headers, or a Transfer-Encoding
        // in HTTP/1.0, the connection is closed; §6.3 rule 4 when read
        // until close.
        if has(head, "content-length") || head.minor_version == 0 || !chunked_last {
            allowed.keep_alive = vec![false];
        }
        return allowed;
    }
    match length {
        Err(_) => allowed.refuse = true,
        Ok(Some(length)) => allowed.bodies.push(BodyLength::Exact(length)),
        Ok(None) => {
            allowed.bodies.push(BodyLength::UntilClose);
            allowed.keep_alive = vec![false];
        }
    }
    allowed
}

/// A field value without its optional whitespace (RFC 9110 §5.6.3).
fn ows_trim(value: &[u8]) -> &[u8] {
    let ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !ows(b)).unwrap_or(value.len());
    let end = value.iter().rposition(|b| !ows(b)).map_or(start, |p| p + 1);
    &value[start..end]
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A head by RFC 9112's grammar: `Ok(None)` while it has not ended, `Err`
/// with why it is not one. `lenient` takes a bare LF as a line end and
/// skips empty lines before the start line (§2.2). `request`: a request
/// line, else a status line.
fn rfc(buf: &[u8], lenient: bool, request: bool) -> Result<Option<Head<'_>>, &'static str> {
    let mut at = 0;
    let mut lines = Vec::new();
    loop {
        let Some(lf) = buf[at..].iter().position(|&b| b == b'\n').map(|p| at + p) else {
            return Ok(None);
        };
        let line = match buf[at..lf].strip_suffix(b"\r") {
            Some(line) => line,
            None if lenient => &buf[at..lf],
            None => return Err("bare LF"),
        };
        at = lf + 1;
        if line.is_empty() && lines.is_empty() && lenient && request {
            continue;
        }
        if line.is_empty() {
            break;
        }
        lines.push(line);
    }
    let (start, fields) = lines.split_first().ok_or("no start line")?;
    let mut parts = start.splitn(3, |&b| b == b' ');
    let (Some(first), Some(second), Some(third)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err("start line");
    };
    let (version, start) = if request {
        if first.is_empty() || !first.iter().all(|&b| is_tchar(b)) {
            return Err("method");
        }
        let utf8 = lenient && std::str::from_utf8(second).is_ok();
        let visible = |b: &u8| (b'!'..=b'~').contains(b) || *b >= 0x80 && utf8;
        if second.is_empty() || !second.iter().all(visible) {
            return Err("request-target");
        }
        (third, [first, second, b"".as_slice()])
    } else {
        if second.len() != 3 || !second.iter().all(u8::is_ascii_digit) {
            return Err("status code");
        }
        if third.iter().any(|&b| b < b' ' && b != b'\t' || b == 0x7f) {
            return Err("reason");
        }
        (first, [second, third, b"".as_slice()])
    };
    let minor_version = match version {
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', minor] if minor.is_ascii_digit() => minor - b'0',
        _ => return Err("HTTP-version"),
    };
    let mut headers = Vec::new();
    for field in fields {
        let colon = field
            .iter()
            .position(|&b| b == b':')
            .ok_or("field without colon")?;
        let name = &field[..colon];
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err("field-name");
        }
        let value = ows_trim(&field[colon + 1..]);
        if value.iter().any(|&b| b < b' ' && b != b'\t' || b == 0x7f) {
            return Err("field-value");
        }
        headers.push((name, value));
    }
    Ok(Some(Head {
        start,
        minor_version,
        headers,
        len: at,
    }))
}
