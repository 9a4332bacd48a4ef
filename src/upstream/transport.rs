//! How the servers of one upstream are reached: HTTP/1.1, HTTP/2 over TLS
//! (`h2`) or HTTP/2 cleartext with prior knowledge (`h2c`), with or without
//! TLS, and the connector that takes every connection of a server's client to
//! that server's address whatever the request's URI names, so an HTTP/2
//! request can carry the client's host in `:authority`.

use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::Scheme;
use http::Uri;
use http_body::Body;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio_rustls::TlsConnector;
use tower_service::Service;

use super::h1::Connector;
use crate::config::{self, UpstreamProtocol};
use crate::tls::{client_config, Verify};

/// Connects to one server, over TLS when the request's scheme is `https`.
pub type ServerConnector = HttpsConnector<FixedAddress>;

/// The TLS side of a transport.
#[derive(Debug)]
struct TlsClient {
    config: Arc<ClientConfig>,
    /// `tls_server_name`, else each server's host.
    server_name: Option<ServerName<'static>>,
}

/// The transport of one upstream, shared by its servers' clients.
#[derive(Debug)]
pub struct Transport {
    /// The settings it was built from: a server keeps its client (and its idle
    /// connections) across a reload only when these stay the same.
    pub settings: config::Transport,
    tls: Option<TlsClient>,
}

/// How a client keeps idle connections.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_idle_per_host: usize,
}

impl Transport {
    pub fn new(upstream: &str, settings: &config::Transport) -> Transport {
        let tls = settings.tls.as_ref().map(|tls| {
            let verify = match (&tls.ca, tls.insecure_skip_verify) {
                (_, true) => {
                    tracing::warn!(%upstream, "tls_insecure_skip_verify: server certificates are NOT verified");
                    Verify::Nothing
                }
                (Some(bundle), false) => Verify::Bundle(bundle),
                (None, false) => Verify::SystemRoots,
            };
            let alpn: &[u8] = match settings.protocol {
                UpstreamProtocol::H2 => b"h2",
                UpstreamProtocol::Http1 | UpstreamProtocol::H2c => b"http/1.1",
            };
            TlsClient {
                config: client_config(verify, alpn),
                server_name: tls
                    .server_name
                    .as_ref()
                    .and_then(|name| ServerName::try_from(name.clone()).ok()),
            }
        });
        Transport {
            settings: settings.clone(),
            tls,
        }
    }

    /// The scheme of requests to these servers: `https` selects TLS.
    pub fn scheme(&self) -> Scheme {
        if self.tls.is_some() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        }
    }

    /// True when requests go out as HTTP/2.
    pub fn is_http2(&self) -> bool {
        matches!(
            self.settings.protocol,
            UpstreamProtocol::H2 | UpstreamProtocol::H2c
        )
    }

    /// How HTTP/1.1 connections to the server at `addr` (`host:port`) are
    /// made; `None` when the upstream speaks HTTP/2.
    pub fn http1_connector(&self, addr: &str, connect_timeout: Duration) -> Option<Connector> {
        if self.is_http2() {
            return None;
        }
        let tls = self.tls.as_ref().map(|tls| {
            let name = tls
                .server_name
                .clone()
                .unwrap_or_else(|| host_name(&server_uri(addr)));
            (TlsConnector::from(Arc::clone(&tls.config)), name)
        });
        Some(Connector::new(Arc::from(addr), connect_timeout, tls))
    }

    /// A client of its own for the server at `addr` (`host:port`).
    pub fn client<B>(&self, addr: &str, pool: PoolSettings) -> Client<ServerConnector, B>
    where
        B: Body + Send + 'static + Unpin,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(pool.connect_timeout));
        let target = server_uri(addr);
        let (config, server_name) = match &self.tls {
            Some(tls) => (
                Arc::clone(&tls.config),
                tls.server_name
                    .clone()
                    .unwrap_or_else(|| host_name(&target)),
            ),
            None => (plain_placeholder_config(), host_name(&target)),
        };
        let connector = HttpsConnector::new(
            FixedAddress { http, target },
            config,
            self.tls.is_some(),
            Arc::new(FixedServerNameResolver::new(server_name)),
        );
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(pool.idle_timeout)
            .pool_max_idle_per_host(pool.max_idle_per_host)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new());
        if self.is_http2() {
            builder.http2_only(true);
        }
        builder.build(connector)
    }
}

/// `http://host:port` for a server's address.
fn server_uri(addr: &str) -> Uri {
    format!("http://{addr}")
        .parse()
        .expect("server addresses are validated as host:port")
}

/// The name a server's certificate must carry: the host of its address.
fn host_name(target: &Uri) -> ServerName<'static> {
    let host = target.host().unwrap_or("localhost");
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .unwrap_or_else(|_| ServerName::try_from("localhost").expect("a valid name"))
}

/// The connector of a plain upstream needs a TLS config it never uses.
fn plain_placeholder_config() -> Arc<ClientConfig> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    Arc::clone(CONFIG.get_or_init(|| {
        Arc::new(
            ClientConfig::builder_with_provider(crate::tls::crypto_provider())
                .with_safe_default_protocol_versions()
                .expect("ring supports TLS 1.2 and 1.3")
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        )
    }))
}

/// Connects to one fixed address, whatever URI it is asked for.
#[derive(Debug, Clone)]
pub struct FixedAddress {
    http: HttpConnector,
    target: Uri,
}

impl Service<Uri> for FixedAddress {
    type Response = <HttpConnector as Service<Uri>>::Response;
    type Error = <HttpConnector as Service<Uri>>::Error;
    type Future = <HttpConnector as Service<Uri>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx)
    }

    fn call(&mut self, _requested: Uri) -> Self::Future {
        self.http.call(self.target.clone())
    }
}
