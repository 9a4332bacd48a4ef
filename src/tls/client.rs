//! The client side of TLS to upstream servers: which roots verify a server
//! (the upstream's `ca_file`, else the system's), or none at all with
//! `tls_insecure_skip_verify`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::crypto_provider;

/// The CA certificates of an upstream's `ca_file`.
#[derive(Debug, Clone, PartialEq)]
pub struct CaBundle {
    pub path: PathBuf,
    pub certs: Vec<CertificateDer<'static>>,
}

/// Reads a PEM bundle of CA certificates; it must hold at least one.
pub fn load_ca_file(path: &Path) -> Result<CaBundle, String> {
    let bytes = std::fs::read(path)
        .map_err(|error| format!("cannot read ca_file {}: {error}", path.display()))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|error| format!("{} is not a PEM bundle: {error}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    let mut roots = RootCertStore::empty();
    let (_, unusable) = roots.add_parsable_certificates(certs.iter().cloned());
    if roots.is_empty() {
        return Err(format!(
            "{}: none of its {unusable} certificates can serve as a trust anchor",
            path.display()
        ));
    }
    Ok(CaBundle {
        path: path.to_path_buf(),
        certs,
    })
}

/// How a TLS upstream's certificates are verified.
#[derive(Debug, Clone, Copy)]
pub enum Verify<'a> {
    /// Against the system's roots.
    SystemRoots,
    /// Against a CA bundle only.
    Bundle(&'a CaBundle),
    /// Not at all.
    Nothing,
}

/// A client config for TLS upstreams offering the ALPN protocol `alpn`.
pub fn client_config(verify: Verify<'_>, alpn: &[u8]) -> Arc<ClientConfig> {
    let provider = crypto_provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3");
    let mut config = match verify {
        Verify::SystemRoots => builder
            .with_root_certificates(system_roots())
            .with_no_client_auth(),
        Verify::Bundle(bundle) => {
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(bundle.certs.iter().cloned());
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Verify::Nothing => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(config)
}

/// The system's trust anchors, read once.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    Arc::clone(ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            tracing::warn!(%error, "could not read some system CA certificates");
        }
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(found.certs);
        if roots.is_empty() {
            tracing::warn!("no system CA certificates found: TLS upstreams without ca_file will fail to verify");
        }
        Arc::new(roots)
    }))
}

/// `tls_insecure_skip_verify`: any certificate for any name is accepted;
/// handshake signatures are still checked so the session is well formed.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
