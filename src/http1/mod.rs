//! The HTTP/1.1 wire format (RFC 9112) as the proxy needs it, without IO:
//! heads parsed in place (`head`), where bodies end and connections persist,
//! with the request-smuggling rules (`framing`), and the chunked coding
//! (`chunked`). `proxy/h1` and `upstream/h1` do the reading and writing.

pub mod chunked;
pub mod framing;
pub mod head;

pub use chunked::{ChunkError, ChunkedDecoder};
pub use framing::{request_framing, response_framing, BodyLength, RequestFraming, ResponseFraming};
pub use head::{
    HeadError, HeaderKind, HeaderLine, Headers, Method, RequestHead, ResponseHead, Span,
};
