//! The proxy service: what happens to one request, from lookup to the last
//! byte of its response.

mod access_log;
mod attempts;
mod body;
mod decide;
mod decision;
pub mod h1;
pub mod headers;
mod redirect;
mod request_key;
mod service;

pub use body::ResponseBody;
pub use service::handle;
