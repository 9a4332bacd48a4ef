//! The HTTP/1 head parser (`usherd::http1::head`): any bytes, read as a
//! request head and as a response head. It must never panic; a head it
//! accepts lies within the input, each offset it gives is in range, each
//! header's kind is the kind of its name, and no name or value holds a line
//! break. A head that arrives in pieces is read the same: every cut before
//! its end is "not complete yet", never an error, and the head alone parses
//! to the same length.

#![no_main]

use libfuzzer_sys::fuzz_target;
use usherd::http1::head::MAX_HEADERS;
use usherd::http1::{HeaderKind, Headers, RequestHead, ResponseHead};

fuzz_target!(|data: &[u8]| {
    let mut request = RequestHead::default();
    if let Ok(true) = request.parse(data) {
        check_request(data, &request);
    }
    let mut response = ResponseHead::default();
    if let Ok(true) = response.parse(data) {
        check_response(data, &response);
    }
});

fn check_request(data: &[u8], head: &RequestHead) {
    assert!(head.len <= data.len());
    let buf = &data[..head.len];
    assert!(head.method.is_some());
    let method = head.method_name.of(buf);
    assert!(!method.is_empty() && method.iter().all(|&b| is_tchar(b)));
    let target = head.target.of(buf);
    assert!(!target.is_empty());
    assert!(!target
        .iter()
        .any(|&b| b.is_ascii_whitespace() || b.is_ascii_control()));
    assert!(head.minor_version <= 1);
    check_headers(buf, &head.headers);
    let mut again = RequestHead::default();
    assert_eq!(again.parse(buf), Ok(true), "the head alone");
    assert_eq!(again.len, head.len);
    for cut in cuts(head.len) {
        assert_eq!(again.parse(&buf[..cut]), Ok(false), "cut at {cut}");
    }
}

fn check_response(data: &[u8], head: &ResponseHead) {
    assert!(head.len <= data.len());
    let buf = &data[..head.len];
    assert!(head.status <= 999);
    assert!(head.minor_version <= 1);
    let reason = head.reason.of(buf);
    assert!(!reason.contains(&b'\r') && !reason.contains(&b'\n'));
    check_headers(buf, &head.headers);
    let mut again = ResponseHead::default();
    assert_eq!(again.parse(buf), Ok(true), "the head alone");
    assert_eq!(again.len, head.len);
    for cut in cuts(head.len) {
        assert_eq!(again.parse(&buf[..cut]), Ok(false), "cut at {cut}");
    }
}

fn check_headers(buf: &[u8], headers: &Headers) {
    assert!(headers.iter().count() <= MAX_HEADERS);
    for line in headers.iter() {
        let name = line.name.of(buf);
        let value = line.value.of(buf);
        assert!(!name.is_empty() && name.iter().all(|&b| is_tchar(b)));
        assert_eq!(line.kind, HeaderKind::of(name));
        assert!(!value.contains(&b'\r') && !value.contains(&b'\n'));
        if line.kind != HeaderKind::Other {
            assert_eq!(
                headers.first(buf, line.kind).is_some(),
                headers.has(line.kind)
            );
        }
    }
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Where to cut a head of `len` bytes: every byte of a short one, a spread
/// of a long one (to keep each run fast).
fn cuts(len: usize) -> impl Iterator<Item = usize> {
    let step = (len / 64).max(1);
    (0..len).step_by(step).chain(len.saturating_sub(4)..len)
}
