//! Framing decisions (`usherd::http1::framing`) on any head: never a panic,
//! and the smuggling rules hold for every request accepted: a chunked body
//! has `Transfer-Encoding` lines naming exactly one coding, `chunked` (empty
//! list elements aside: the proxy writes its own line upstream), in
//! HTTP/1.1 and without `Content-Length`; a sized body has every
//! `Content-Length` value equal to its size and no `Transfer-Encoding`; an
//! empty one has neither header but `Content-Length: 0`. For responses: no
//! body where RFC 9112 §6.3 says none, and a connection is only kept open
//! when the body's end is known. The body after the head is then read the
//! way the framing says, and the next request on the connection starts
//! where it ends.

#![no_main]

use libfuzzer_sys::fuzz_target;
use usherd::http1::{
    request_framing, response_framing, BodyLength, ChunkedDecoder, HeaderKind, Headers,
    RequestHead, ResponseHead,
};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, data)) = data.split_first() else {
        return;
    };
    let mut request = RequestHead::default();
    if let Ok(true) = request.parse(data) {
        if let Ok(framing) = request_framing(&request, data) {
            check_request(data, &request, framing.body);
            if framing.upgrade {
                assert_eq!(request.minor_version, 1);
                assert!(request.headers.has(HeaderKind::Upgrade));
            }
            if request.minor_version == 1 && framing.keep_alive {
                assert!(!tokens(&request.headers, data, HeaderKind::Connection)
                    .any(|t| t.eq_ignore_ascii_case(b"close")));
            }
            read_body(&data[request.len..], framing.body);
        }
    }
    let mut response = ResponseHead::default();
    if let Ok(true) = response.parse(data) {
        let to_head = flags & 1 == 1;
        if let Ok(framing) = response_framing(&response, data, to_head) {
            let status = response.status;
            if to_head || status < 200 || status == 204 || status == 304 {
                assert_eq!(framing.body, BodyLength::Empty);
            }
            if framing.body == BodyLength::UntilClose {
                assert!(!framing.keep_alive);
            }
            if framing.keep_alive && response.headers.has(HeaderKind::TransferEncoding) {
                assert!(
                    !response.headers.has(HeaderKind::ContentLength)
                        || framing.body == BodyLength::Empty
                );
            }
        }
    }
});

fn check_request(buf: &[u8], head: &RequestHead, body: BodyLength) {
    let headers = &head.headers;
    let lengths: Vec<&[u8]> = headers
        .values(buf, HeaderKind::ContentLength)
        .flat_map(|value| value.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .collect();
    let lines = headers.values(buf, HeaderKind::TransferEncoding).count();
    let codings: Vec<&[u8]> = tokens(headers, buf, HeaderKind::TransferEncoding)
        .filter(|coding| !coding.is_empty())
        .collect();
    match body {
        BodyLength::Chunked => {
            assert_eq!(head.minor_version, 1);
            assert!(lengths.is_empty());
            assert_eq!(codings.len(), 1);
            assert!(codings[0].eq_ignore_ascii_case(b"chunked"));
        }
        BodyLength::Exact(size) => {
            assert!(size > 0);
            assert_eq!(lines, 0);
            assert!(!lengths.is_empty());
            for length in lengths {
                assert!(length.iter().all(u8::is_ascii_digit));
                assert_eq!(
                    std::str::from_utf8(length).unwrap().parse::<u64>(),
                    Ok(size)
                );
            }
        }
        BodyLength::Empty => {
            assert_eq!(lines, 0);
            for length in lengths {
                assert!(!length.is_empty() && length.iter().all(|&b| b == b'0'));
            }
        }
        BodyLength::UntilClose => panic!("a request body is never read until close"),
    }
}

/// The comma-separated elements of a head's headers of `kind`, trimmed.
fn tokens<'a>(
    headers: &'a Headers,
    buf: &'a [u8],
    kind: HeaderKind,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    headers
        .values(buf, kind)
        .flat_map(|value| value.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
}

/// Reads the body that follows a request head as `body` says, then the next
/// head: it starts right where the body ended.
fn read_body(rest: &[u8], body: BodyLength) {
    let end = match body {
        BodyLength::Empty => 0,
        BodyLength::Exact(size) => match usize::try_from(size) {
            Ok(size) if size <= rest.len() => size,
            _ => return,
        },
        BodyLength::Chunked => {
            let mut decoder = ChunkedDecoder::default();
            let mut at = 0;
            loop {
                let Ok(step) = decoder.step(&rest[at..]) else {
                    return;
                };
                if let Some((start, end)) = step.data {
                    assert!(start <= end && end <= rest.len() - at);
                }
                at += step.consumed;
                assert!(at <= rest.len());
                if decoder.is_done() {
                    break at;
                }
                if step.consumed == 0 {
                    return;
                }
            }
        }
        BodyLength::UntilClose => unreachable!(),
    };
    let mut next = RequestHead::default();
    if let Ok(true) = next.parse(&rest[end..]) {
        let _ = request_framing(&next, &rest[end..]);
    }
}
