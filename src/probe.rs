//! `usherd probe URL`: one GET, so that a container's health check needs no
//! curl in the image (docs/cli.md).

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// GETs `url` (plain http) and returns the response status, or why none
/// came within `timeout`.
pub async fn probe(url: &Uri, timeout: Duration) -> Result<StatusCode, String> {
    if url.scheme_str() != Some("http") {
        return Err(format!("{url}: only http:// URLs can be probed"));
    }
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let request = Request::get(url.clone())
        .header("user-agent", "usherd-probe")
        .body(Empty::new())
        .map_err(|error| format!("{url}: {error}"))?;
    match tokio::time::timeout(timeout, client.request(request)).await {
        Ok(Ok(response)) => Ok(response.status()),
        Ok(Err(error)) => Err(format!("{url}: {}", with_causes(&error))),
        Err(_) => Err(format!(
            "{url}: no response within {}",
            humantime::format_duration(timeout)
        )),
    }
}

/// An error and its sources, `outer: inner: ...`.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text += &format!(": {cause}");
        source = cause.source();
    }
    text
}
