//! `usherd demo`: three demo backends on loopback that answer with their own
//! name, and a proxy in front of them from the embedded `config/demo.toml`.
//! `usherd demo-backend`: one such backend alone, as a container replica.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{parse_config, Config};

/// The demo's config text, as shipped in `config/demo.toml`.
pub const DEMO_CONFIG: &str = include_str!("../config/demo.toml");

/// The names the demo backends answer with, in the order of the config's servers.
pub const BACKEND_NAMES: [&str; 3] = ["alpha", "beta", "gamma"];

/// The pause after a failed accept (such as too many open files), so that
/// a failing listener does not spin.
const ACCEPT_RETRY_PAUSE: Duration = Duration::from_millis(50);

/// The demo config with its listen ports and backend addresses filled in.
pub fn demo_config(port: u16, admin_port: u16, backends: &[SocketAddr]) -> Config {
    let mut config = parse_config(DEMO_CONFIG, "config/demo.toml")
        .expect("the embedded demo config is valid (checked by a test)");
    for listener in &mut config.listeners {
        listener.listen.set_port(port);
    }
    if let Some(admin) = &mut config.admin {
        admin.listen.set_port(admin_port);
    }
    for upstream in &mut config.upstreams {
        for (server, backend) in upstream.servers.iter_mut().zip(backends) {
            server.addr = backend.to_string();
        }
    }
    config
}

/// Starts one demo backend per name on a free loopback port.
pub async fn start_backends() -> std::io::Result<Vec<SocketAddr>> {
    let mut addrs = Vec::new();
    for name in BACKEND_NAMES {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        addrs.push(listener.local_addr()?);
        tokio::spawn(serve_backend(
            listener,
            Arc::from(name),
            CancellationToken::new(),
        ));
    }
    Ok(addrs)
}

/// Serves the demo backend `name` on `listener` until `stop` is cancelled;
/// then it accepts no more connections, finishes the requests in flight,
/// closes its connections and returns.
///
/// Every request gets `hello from NAME at ADDR (METHOD URI)` with an
/// `x-backend: NAME` header, ADDR being the address the client reached;
/// `/healthz` gets `ok`.
pub async fn serve_backend(listener: TcpListener, name: Arc<str>, stop: CancellationToken) {
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => break,
        };
        match accepted {
            Ok((stream, _)) => {
                connections.spawn(serve_backend_connection(
                    stream,
                    Arc::clone(&name),
                    stop.clone(),
                ));
            }
            Err(error) => {
                tracing::warn!(backend = %name, %error, "demo backend cannot accept");
                tokio::time::sleep(ACCEPT_RETRY_PAUSE).await;
            }
        }
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

async fn serve_backend_connection(stream: TcpStream, name: Arc<str>, stop: CancellationToken) {
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let service = service_fn(move |request: Request<Incoming>| {
        let name = Arc::clone(&name);
        async move { Ok::<_, Infallible>(backend_response(&name, local, &request)) }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let mut connection = std::pin::pin!(builder.serve_connection(TokioIo::new(stream), service));
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "demo backend connection ended");
    }
}

fn backend_response(
    name: &str,
    local: SocketAddr,
    request: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    let text = if request.uri().path() == "/healthz" {
        "ok\n".to_string()
    } else {
        format!(
            "hello from {name} at {local} ({} {})\n",
            request.method(),
            request.uri()
        )
    };
    let mut response = Response::new(Full::new(Bytes::from(text)));
    if let Ok(value) = HeaderValue::from_str(name) {
        response.headers_mut().insert("x-backend", value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_config_is_valid_and_weighted_5_3_1() {
        let backends: Vec<SocketAddr> = (1..=3).map(|p| ([127, 0, 0, 1], p).into()).collect();
        let config = demo_config(18080, 19901, &backends);
        assert_eq!(config.listeners[0].listen.port(), 18080);
        let weights: Vec<u32> = config.upstreams[0]
            .servers
            .iter()
            .map(|s| s.weight)
            .collect();
        assert_eq!(weights, [5, 3, 1]);
        assert_eq!(config.upstreams[0].servers[2].addr, "127.0.0.1:3");
    }
}
