//! The proxy service: what happens to one request, from lookup to the last
//! byte of its response.

mod access_log;
mod attempts;
mod body;
pub mod headers;
mod redirect;
mod request_key;
mod service;

pub use body::{BodyTooLarge, ResponseBody, UpstreamBody};
pub use service::{handle, ClientConn};
