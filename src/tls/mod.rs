//! TLS with rustls (ring provider): certificates and CA bundles loaded from
//! files, the server side of TLS listeners, whose certificate resolver asks
//! its listener for the certificates current at each handshake (so a reload
//! serves new certificates to new handshakes), and the client side of TLS
//! upstreams (roots from a CA file or the system, or no verification when a
//! user insists). A leaf: it imports nothing else of the crate.

mod certs;
mod client;

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

pub use certs::{load_cert, CertError, CertStore, LoadedCert};
pub use client::{client_config, load_ca_file, CaBundle, Verify};

/// ALPN protocols a TLS listener offers, preferred first.
const SERVER_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The one crypto provider every TLS config uses: ring.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())))
}

/// The rustls server config of one TLS listener: TLS 1.2 and 1.3, ALPN `h2`
/// and `http/1.1`, session tickets, and certificates chosen by SNI among the
/// certificates `certs` gives at each handshake.
pub fn server_config(certs: Arc<dyn CurrentCerts>) -> Arc<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(CurrentCertResolver(certs)));
    config.alpn_protocols = SERVER_ALPN.iter().map(|p| p.to_vec()).collect();
    match rustls::crypto::ring::Ticketer::new() {
        Ok(ticketer) => config.ticketer = ticketer,
        Err(error) => tracing::warn!(%error, "TLS session tickets are off"),
    }
    Arc::new(config)
}

/// Where a TLS listener finds its certificates at each handshake: the
/// server module answers from the current snapshot.
pub trait CurrentCerts: std::fmt::Debug + Send + Sync {
    /// The listener's certificates now, or `None` if it has no TLS any more.
    fn current(&self) -> Option<Arc<CertStore>>;
}

/// Picks a certificate by SNI among the listener's current certificates.
#[derive(Debug)]
struct CurrentCertResolver(Arc<dyn CurrentCerts>);

impl ResolvesServerCert for CurrentCertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let store = self.0.current()?;
        Some(Arc::clone(store.resolve(hello.server_name())))
    }
}
