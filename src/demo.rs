//! `usherd demo`: three demo backends on loopback that answer with their own
//! name, and a proxy in front of them from the embedded `config/demo.toml`.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::config::{parse_config, Config};

/// The demo's config text, as shipped in `config/demo.toml`.
pub const DEMO_CONFIG: &str = include_str!("../config/demo.toml");

/// The names the demo backends answer with, in the order of the config's servers.
pub const BACKEND_NAMES: [&str; 3] = ["alpha", "beta", "gamma"];

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
        tokio::spawn(serve_backend(listener, name));
    }
    Ok(addrs)
}

async fn serve_backend(listener: TcpListener, name: &'static str) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| async move {
                let text = format!(
                    "hello from {name} ({} {})\n",
                    request.method(),
                    request.uri()
                );
                let mut response = Response::new(Full::new(Bytes::from(text)));
                response
                    .headers_mut()
                    .insert("x-backend", http::HeaderValue::from_static(name));
                Ok::<_, Infallible>(response)
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            if let Err(error) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(backend = name, %error, "demo backend connection ended");
            }
        });
    }
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
