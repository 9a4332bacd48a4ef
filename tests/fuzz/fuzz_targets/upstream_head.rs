//! The upstream request head (`usherd::proxy::h1::heads::write_upstream_request`)
//! written from any request head the proxy accepts (`request_framing` and
//! the Host rules of `proxy/h1/request.rs`, repeated here). What goes
//! upstream must parse as one complete HTTP/1.1 head with the same body
//! framing (the smuggling check: the upstream reads the body the proxy
//! reads), exactly one `Host`, one `X-Forwarded-For`, `X-Forwarded-Proto`
//! and `X-Request-Id`, and none of the hop-by-hop headers, `X-Usherd-Debug`
//! or the headers `Connection` names (RFC 9110 §7.6.1).
//!
//! Documented exceptions: `Host`, `Content-Length` and `X-Request-Id` are
//! kept even when `Connection` names them (the first two frame and route
//! the request); `TE: trailers` and, on an upgrade, `Upgrade` go on.
//!
//! Not checked: a head within `ADDED` lines of `MAX_HEADERS` can go
//! upstream with more lines than usherd itself accepts.
//!
//! Input: one byte of flags (`https`), then the request head.

#![no_main]

use libfuzzer_sys::fuzz_target;
use usherd::http1::head::MAX_HEADERS;
use usherd::http1::{request_framing, HeaderKind, RequestHead};
use usherd::proxy::h1::heads::{write_upstream_request, Forwarding, RequestId};

/// The most lines the proxy adds (Host, the three X-Forwarded-*,
/// X-Request-Id, Transfer-Encoding, Connection): heads nearer usherd's own
/// limit than that are skipped, as the upstream head would pass it.
const ADDED: usize = 7;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, buf)) = data.split_first() else {
        return;
    };
    let mut head = RequestHead::default();
    if head.parse(buf) != Ok(true) || head.headers.iter().count() + ADDED > MAX_HEADERS {
        return;
    }
    let Ok(framing) = request_framing(&head, buf) else {
        return;
    };
    let Some((target_host, path)) = target(head.target.of(buf)) else {
        return;
    };
    if std::str::from_utf8(path).is_err()
        || head.headers.values(buf, HeaderKind::Host).nth(1).is_some()
    {
        return;
    }
    let host = target_host.or_else(|| head.headers.first(buf, HeaderKind::Host));
    match host {
        Some(host) if !is_authority(host) => return,
        None if head.minor_version == 1 => return,
        _ => {}
    }
    let forwarding = Forwarding {
        path,
        target_host,
        host,
        default_host: b"127.0.0.1:8080",
        client_ip: b"192.0.2.7",
        proto: if flags & 1 == 1 { "https" } else { "http" },
        upgrade: framing.upgrade,
        chunked: framing.body == usherd::http1::BodyLength::Chunked,
    };
    let mut out = Vec::new();
    let id = write_upstream_request(&mut out, buf, &head, &forwarding);

    let mut sent = RequestHead::default();
    assert_eq!(
        sent.parse(&out),
        Ok(true),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(sent.len, out.len(), "one head, nothing after it");
    let sent_framing = request_framing(&sent, &out).expect("the upstream head frames");
    assert_eq!(
        sent_framing.body, framing.body,
        "the upstream reads the same body"
    );
    assert_eq!(sent_framing.upgrade, framing.upgrade);
    assert_eq!(sent.method_name.of(&out), head.method_name.of(buf));
    assert_eq!(sent.target.of(&out), path);
    assert_eq!(sent.minor_version, 1);

    let count = |kind| sent.headers.values(&out, kind).count();
    assert_eq!(count(HeaderKind::Host), 1);
    assert_eq!(
        sent.headers.first(&out, HeaderKind::Host),
        Some(host.unwrap_or(b"127.0.0.1:8080").trim_ascii())
    );
    assert_eq!(count(HeaderKind::XForwardedFor), 1);
    assert!(sent
        .headers
        .first(&out, HeaderKind::XForwardedFor)
        .unwrap()
        .ends_with(b"192.0.2.7"));
    assert_eq!(
        sent.headers.first(&out, HeaderKind::XForwardedProto),
        Some(forwarding.proto.as_bytes())
    );
    assert_eq!(count(HeaderKind::XForwardedProto), 1);
    assert_eq!(
        count(HeaderKind::XForwardedHost),
        usize::from(host.is_some())
    );
    assert_eq!(count(HeaderKind::UsherdDebug), 0);
    assert!(count(HeaderKind::ContentLength) <= 1);
    assert!(count(HeaderKind::XRequestId) >= 1);
    match id {
        RequestId::Kept(kept) => {
            assert_eq!(Some(kept), head.headers.first(buf, HeaderKind::XRequestId))
        }
        RequestId::Made(made) => {
            assert!(!head.headers.has(HeaderKind::XRequestId));
            assert!(made.iter().all(u8::is_ascii_hexdigit));
            assert_eq!(
                sent.headers.first(&out, HeaderKind::XRequestId),
                Some(&made[..])
            );
        }
    }

    let named: Vec<&[u8]> = head
        .headers
        .values(buf, HeaderKind::Connection)
        .flat_map(|value| value.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .collect();
    for line in sent.headers.iter() {
        let name = line.name.of(&out);
        let value = line.value.of(&out);
        match line.kind {
            HeaderKind::Te => assert!(value.eq_ignore_ascii_case(b"trailers")),
            HeaderKind::Upgrade => assert!(framing.upgrade),
            HeaderKind::Connection => {
                assert!(framing.upgrade);
                assert_eq!(value, b"upgrade");
            }
            HeaderKind::TransferEncoding => assert_eq!(value, b"chunked"),
            kind => assert!(!kind.is_hop_by_hop(), "{kind:?} goes upstream"),
        }
        let exception = matches!(
            line.kind,
            HeaderKind::Host
                | HeaderKind::ContentLength
                | HeaderKind::XRequestId
                | HeaderKind::XForwardedFor
                | HeaderKind::XForwardedProto
                | HeaderKind::XForwardedHost
                | HeaderKind::TransferEncoding
                | HeaderKind::Connection
                | HeaderKind::Upgrade
                | HeaderKind::Te
        );
        if !exception {
            assert!(
                !named.iter().any(|token| token.eq_ignore_ascii_case(name)),
                "{} is named by Connection",
                String::from_utf8_lossy(name)
            );
        }
    }
});

/// The host and path of a request target, as `proxy/h1/request.rs` reads
/// it: origin-form, `*`, or absolute-form `http(s)://host/path`.
fn target(target: &[u8]) -> Option<(Option<&[u8]>, &[u8])> {
    if target.first() == Some(&b'/') || target == b"*" {
        return Some((None, target));
    }
    let scheme_end = target.windows(3).position(|w| w == b"://")?;
    let scheme = &target[..scheme_end];
    if !(scheme.eq_ignore_ascii_case(b"http") || scheme.eq_ignore_ascii_case(b"https")) {
        return None;
    }
    let rest = &target[scheme_end + 3..];
    let end = rest
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(rest.len());
    let (host, path) = rest.split_at(end);
    if host.is_empty() || host.contains(&b'@') || path.first() == Some(&b'?') {
        return None;
    }
    Some((Some(host), if path.is_empty() { b"/" } else { path }))
}

/// A Host the proxy accepts: visible ASCII, and nothing that ends an
/// authority in a URI.
fn is_authority(host: &[u8]) -> bool {
    host.iter().all(|&b| (b'!'..0x7f).contains(&b)) && !host.iter().any(|b| b"/?#@\\".contains(b))
}
