//! HTTP/1 message heads (RFC 9112 §2-5) parsed in place: `httparse` reads the
//! head, and what is kept is offsets into the buffer it was read into, so a
//! head costs no allocation and its bytes can be forwarded as they came. Each
//! header's meaning to the proxy (`HeaderKind`) is found once, here.

use std::mem::MaybeUninit;

/// The most header lines a head may have (hyper: 100, HAProxy: 101).
pub const MAX_HEADERS: usize = 128;

/// A range of bytes of the buffer a head was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    start: u32,
    end: u32,
}

impl Span {
    /// The span `inner` takes in `outer` (`inner` must lie within it).
    fn within(outer: &[u8], inner: &[u8]) -> Span {
        let start = inner.as_ptr() as usize - outer.as_ptr() as usize;
        debug_assert!(start + inner.len() <= outer.len());
        Span {
            start: start as u32,
            end: (start + inner.len()) as u32,
        }
    }

    /// Its bytes in `buf`, the buffer the head was parsed from.
    #[inline]
    pub fn of<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.start as usize..self.end as usize]
    }
}

/// What a header is to the proxy. Everything not named here is passed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderKind {
    Other,
    Host,
    Date,
    Connection,
    KeepAlive,
    ProxyConnection,
    Te,
    Trailer,
    TransferEncoding,
    Upgrade,
    /// `HTTP2-Settings`, of an upgrade to h2c (RFC 7540 §3.2.1).
    Http2Settings,
    ContentLength,
    Expect,
    Cookie,
    XForwardedFor,
    XForwardedProto,
    XForwardedHost,
    XRequestId,
    /// `X-Usherd-Debug`: asks for the routing decision; never forwarded.
    UsherdDebug,
}

impl HeaderKind {
    /// The kind of the header called `name` (any case): by length first, so
    /// most names are told apart without comparing their bytes.
    pub fn of(name: &[u8]) -> HeaderKind {
        use HeaderKind::*;
        let is = |known: &[u8]| name.eq_ignore_ascii_case(known);
        match name.len() {
            2 if is(b"te") => Te,
            4 if is(b"host") => Host,
            4 if is(b"date") => Date,
            6 if is(b"expect") => Expect,
            6 if is(b"cookie") => Cookie,
            7 if is(b"trailer") => Trailer,
            7 if is(b"upgrade") => Upgrade,
            10 if is(b"connection") => Connection,
            10 if is(b"keep-alive") => KeepAlive,
            12 if is(b"x-request-id") => XRequestId,
            14 if is(b"content-length") => ContentLength,
            14 if is(b"x-usherd-debug") => UsherdDebug,
            14 if is(b"http2-settings") => Http2Settings,
            15 if is(b"x-forwarded-for") => XForwardedFor,
            16 if is(b"proxy-connection") => ProxyConnection,
            16 if is(b"x-forwarded-host") => XForwardedHost,
            17 if is(b"transfer-encoding") => TransferEncoding,
            17 if is(b"x-forwarded-proto") => XForwardedProto,
            _ => Other,
        }
    }

    /// The hop-by-hop headers of RFC 9110 §7.6.1 that are always named
    /// (`Connection` can name more), and `HTTP2-Settings`.
    pub fn is_hop_by_hop(self) -> bool {
        use HeaderKind::*;
        matches!(
            self,
            Connection
                | KeepAlive
                | ProxyConnection
                | Te
                | Trailer
                | TransferEncoding
                | Upgrade
                | Http2Settings
        )
    }
}

/// One header line of a head.
#[derive(Debug, Clone, Copy)]
pub struct HeaderLine {
    pub name: Span,
    pub value: Span,
    pub kind: HeaderKind,
}

/// The methods the proxy treats differently; the rest are `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Connect,
    Other,
}

impl Method {
    fn of(name: &[u8]) -> Method {
        match name {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"POST" => Method::Post,
            b"PUT" => Method::Put,
            b"DELETE" => Method::Delete,
            b"OPTIONS" => Method::Options,
            b"CONNECT" => Method::Connect,
            _ => Method::Other,
        }
    }

    /// RFC 9110 §9.2.2: methods whose repetition has the same effect.
    pub fn is_idempotent(self) -> bool {
        matches!(
            self,
            Method::Get | Method::Head | Method::Options | Method::Put | Method::Delete
        )
    }
}

/// Why a head could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// More than `MAX_HEADERS` lines (431 for a request).
    #[error("too many header lines")]
    TooManyHeaders,
    #[error("malformed {0}")]
    Malformed(&'static str),
}

impl From<httparse::Error> for HeadError {
    fn from(error: httparse::Error) -> HeadError {
        HeadError::Malformed(match error {
            httparse::Error::TooManyHeaders => return HeadError::TooManyHeaders,
            httparse::Error::HeaderName => "header name",
            httparse::Error::HeaderValue => "header value",
            httparse::Error::NewLine | httparse::Error::Token => "request or status line",
            httparse::Error::Status => "status code",
            httparse::Error::Version => "HTTP version",
        })
    }
}

/// The header lines of a head, in order, with their kinds.
#[derive(Debug, Default)]
pub struct Headers(Vec<HeaderLine>);

impl Headers {
    fn fill(&mut self, buf: &[u8], parsed: &[httparse::Header<'_>]) {
        self.0.clear();
        self.0.extend(parsed.iter().map(|header| HeaderLine {
            name: Span::within(buf, header.name.as_bytes()),
            value: Span::within(buf, header.value),
            kind: HeaderKind::of(header.name.as_bytes()),
        }));
    }

    pub fn iter(&self) -> std::slice::Iter<'_, HeaderLine> {
        self.0.iter()
    }

    /// The values of the headers of `kind`, in order.
    pub fn values<'a>(
        &'a self,
        buf: &'a [u8],
        kind: HeaderKind,
    ) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.0
            .iter()
            .filter(move |line| line.kind == kind)
            .map(move |line| line.value.of(buf))
    }

    /// The first value of the header of `kind`.
    pub fn first<'a>(&self, buf: &'a [u8], kind: HeaderKind) -> Option<&'a [u8]> {
        self.0
            .iter()
            .find(|line| line.kind == kind)
            .map(|line| line.value.of(buf))
    }

    /// The values of the header called `name` (lower case), in order.
    pub fn named<'a>(
        &'a self,
        buf: &'a [u8],
        name: &'a str,
    ) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.0
            .iter()
            .filter(move |line| line.name.of(buf).eq_ignore_ascii_case(name.as_bytes()))
            .map(move |line| line.value.of(buf))
    }

    /// Whether a header of `kind` is there.
    pub fn has(&self, kind: HeaderKind) -> bool {
        self.0.iter().any(|line| line.kind == kind)
    }
}

/// A request head: request line and headers, as offsets into its buffer.
#[derive(Debug, Default)]
pub struct RequestHead {
    pub method: Option<Method>,
    pub method_name: Span,
    pub target: Span,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub headers: Headers,
    /// Bytes the head took, its blank line included.
    pub len: usize,
}

impl RequestHead {
    /// Parses the head at the start of `buf`: `Ok(false)` while it is not
    /// complete. On success, `self` describes it (offsets into `buf`).
    pub fn parse(&mut self, buf: &[u8]) -> Result<bool, HeadError> {
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut []);
        let status = httparse::ParserConfig::default().parse_request_with_uninit_headers(
            &mut request,
            buf,
            &mut slots,
        )?;
        let httparse::Status::Complete(len) = status else {
            return Ok(false);
        };
        let (Some(method), Some(target), Some(version)) =
            (request.method, request.path, request.version)
        else {
            return Err(HeadError::Malformed("request line"));
        };
        self.method = Some(Method::of(method.as_bytes()));
        self.method_name = Span::within(buf, method.as_bytes());
        self.target = Span::within(buf, target.as_bytes());
        self.minor_version = version;
        self.headers.fill(buf, request.headers);
        self.len = len;
        Ok(true)
    }

    pub fn method(&self) -> Method {
        self.method.unwrap_or(Method::Other)
    }
}

/// A response head: status line and headers, as offsets into its buffer.
#[derive(Debug, Default)]
pub struct ResponseHead {
    pub status: u16,
    pub reason: Span,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub headers: Headers,
    /// Bytes the head took, its blank line included.
    pub len: usize,
}

impl ResponseHead {
    /// Parses the head at the start of `buf`: `Ok(false)` while it is not
    /// complete.
    pub fn parse(&mut self, buf: &[u8]) -> Result<bool, HeadError> {
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let status = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            buf,
            &mut slots,
        )?;
        let httparse::Status::Complete(len) = status else {
            return Ok(false);
        };
        let (Some(code), Some(version)) = (response.code, response.version) else {
            return Err(HeadError::Malformed("status line"));
        };
        self.status = code;
        // httparse gives a reason it did not find as a `""` outside `buf`.
        self.reason = match response.reason {
            Some(reason) if !reason.is_empty() => Span::within(buf, reason.as_bytes()),
            _ => Span::default(),
        };
        self.minor_version = version;
        self.headers.fill(buf, response.headers);
        self.len = len;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_head_is_parsed_into_offsets() {
        let buf =
            b"POST /a?b=1 HTTP/1.1\r\nHost: shop\r\nX-Thing: 1\r\nContent-Length: 3\r\n\r\nabc";
        let mut head = RequestHead::default();
        assert!(head.parse(buf).unwrap());
        assert_eq!(head.method(), Method::Post);
        assert_eq!(head.method_name.of(buf), b"POST");
        assert_eq!(head.target.of(buf), b"/a?b=1");
        assert_eq!(head.minor_version, 1);
        assert_eq!(head.len, buf.len() - 3);
        let kinds: Vec<HeaderKind> = head.headers.iter().map(|h| h.kind).collect();
        assert_eq!(
            kinds,
            [
                HeaderKind::Host,
                HeaderKind::Other,
                HeaderKind::ContentLength
            ]
        );
        assert_eq!(
            head.headers.first(buf, HeaderKind::Host),
            Some(&b"shop"[..])
        );
        assert_eq!(head.headers.named(buf, "x-thing").next(), Some(&b"1"[..]));
    }

    #[test]
    fn partial_heads_wait_and_bad_ones_are_refused() {
        let mut head = RequestHead::default();
        assert!(!head.parse(b"GET / HTTP/1.1\r\nHost: a\r\n").unwrap());
        for bad in [
            &b"GET / HTTP/1.1\r\nHost : a\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nX: a\r\n  folded\r\n\r\n",
            b"GET / HTTP/1.2\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
        ] {
            assert!(head.parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: 1\r\n")).collect();
        let request = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(
            head.parse(request.as_bytes()),
            Err(HeadError::TooManyHeaders)
        );
    }

    #[test]
    fn header_kinds_ignore_case() {
        assert_eq!(
            HeaderKind::of(b"Transfer-Encoding"),
            HeaderKind::TransferEncoding
        );
        assert_eq!(
            HeaderKind::of(b"X-FORWARDED-PROTO"),
            HeaderKind::XForwardedProto
        );
        assert_eq!(
            HeaderKind::of(b"proxy-connection"),
            HeaderKind::ProxyConnection
        );
        assert_eq!(HeaderKind::of(b"x-forwarded-hosts"), HeaderKind::Other);
        assert_eq!(HeaderKind::of(b"tE"), HeaderKind::Te);
    }

    #[test]
    fn a_response_head_is_parsed() {
        let buf = b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        let mut head = ResponseHead::default();
        assert!(head.parse(buf).unwrap());
        assert_eq!(head.status, 404);
        assert_eq!(head.reason.of(buf), b"Not Found");
        assert_eq!(head.minor_version, 0);
        assert_eq!(head.len, buf.len());
    }

    /// Found by fuzzing (tests/fuzz, target `head`): a status line without
    /// a reason phrase gave a span outside the buffer.
    #[test]
    fn a_response_without_a_reason_phrase_has_an_empty_one() {
        for buf in [
            &b"HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n"[..],
            b"HTTP/1.1 200 \r\n\r\n",
            b"HTTP/1.1 204\n\n",
        ] {
            let mut head = ResponseHead::default();
            assert!(head.parse(buf).unwrap());
            assert_eq!(head.reason.of(buf), b"");
        }
    }
}
