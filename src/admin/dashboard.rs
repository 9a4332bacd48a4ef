//! The dashboard at `GET /`: one self-contained HTML page (styles and script
//! inline, embedded in the binary; no CDN) that polls `GET /status` every
//! second and draws each pool: every server's state, weight, in-flight,
//! requests/s with a sparkline, p50/p99 over the last minute (from the
//! latency buckets), and drain/enable buttons. A token, if the admin API
//! needs one, is typed into the page or given as `#token=...` in the URL
//! (a fragment never reaches the server or its logs).

use bytes::Bytes;
use http::{header, Response};
use http_body_util::Full;

const PAGE: &str = include_str!("dashboard.html");

pub fn page() -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(PAGE.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
        ),
    );
    response
}
