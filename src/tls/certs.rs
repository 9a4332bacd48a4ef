//! Server certificates: loading a PEM chain and key into a rustls
//! `CertifiedKey`, reading the DNS names and validity the certificate carries,
//! and choosing a certificate by SNI (exact name, then `*.` wildcard, then the
//! listener's default: the first certificate listed).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::crypto_provider;

/// One certificate chain with its key, as loaded from the config's files.
#[derive(Debug)]
pub struct LoadedCert {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// Lower-cased DNS names from the subjectAltName (or the CN when there is
    /// none), wildcards as written: `*.example.com`.
    pub names: Vec<String>,
    pub not_after: SystemTime,
    pub certified: Arc<CertifiedKey>,
    /// Hash of the chain and key bytes: tells a changed file from the same one.
    fingerprint: u64,
}

impl LoadedCert {
    /// Hash of the chain and key bytes.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }
}

impl PartialEq for LoadedCert {
    fn eq(&self, other: &Self) -> bool {
        self.cert_path == other.cert_path
            && self.key_path == other.key_path
            && self.fingerprint == other.fingerprint
    }
}

/// What loading found that is allowed but worth a warning.
#[derive(Debug, Default)]
pub struct CertWarnings(pub Vec<String>);

/// Why a certificate could not be loaded, by the file at fault.
#[derive(Debug)]
pub enum CertError {
    Cert(String),
    Key(String),
}

/// Loads the chain in `cert_path` and the key in `key_path` (PEM). Errors
/// name the file and what is wrong with it.
pub fn load_cert(
    cert_path: &Path,
    key_path: &Path,
) -> Result<(LoadedCert, CertWarnings), CertError> {
    let cert_bytes = std::fs::read(cert_path).map_err(|error| {
        CertError::Cert(format!(
            "cannot read certificate {}: {error}",
            cert_path.display()
        ))
    })?;
    let key_bytes = std::fs::read(key_path).map_err(|error| {
        CertError::Key(format!("cannot read key {}: {error}", key_path.display()))
    })?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_bytes)
        .collect::<Result<_, _>>()
        .map_err(|error| {
            CertError::Cert(format!(
                "{} is not a PEM certificate chain: {error}",
                cert_path.display()
            ))
        })?;
    if chain.is_empty() {
        return Err(CertError::Cert(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            cert_path.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|error| {
        CertError::Key(format!(
            "{} holds no usable PEM private key: {error}",
            key_path.display()
        ))
    })?;
    let (_, parsed) = X509Certificate::from_der(&chain[0]).map_err(|error| {
        CertError::Cert(format!(
            "{}: cannot parse the certificate: {error}",
            cert_path.display()
        ))
    })?;
    let names = dns_names(&parsed);
    if names.is_empty() {
        return Err(CertError::Cert(format!(
            "{}: the certificate names no DNS name (subjectAltName or CN), so SNI cannot choose it",
            cert_path.display()
        )));
    }
    let not_before = asn1_time(parsed.validity().not_before.timestamp());
    let not_after = asn1_time(parsed.validity().not_after.timestamp());
    let mut warnings = CertWarnings::default();
    let now = SystemTime::now();
    if not_after < now {
        warnings.0.push(format!(
            "{}: the certificate for {} expired at {}; clients will refuse it",
            cert_path.display(),
            names.join(", "),
            humantime::format_rfc3339_seconds(not_after)
        ));
    } else if not_before > now {
        warnings.0.push(format!(
            "{}: the certificate for {} is not valid before {}",
            cert_path.display(),
            names.join(", "),
            humantime::format_rfc3339_seconds(not_before)
        ));
    }
    let fingerprint = {
        let mut bytes = cert_bytes.clone();
        bytes.extend_from_slice(&key_bytes);
        xxhash_rust::xxh3::xxh3_64(&bytes)
    };
    let certified =
        CertifiedKey::from_der(chain, key, &crypto_provider()).map_err(|error| match error {
            rustls::Error::InconsistentKeys(_) => CertError::Key(format!(
                "the private key in {} does not match the certificate in {}",
                key_path.display(),
                cert_path.display()
            )),
            error => CertError::Key(format!(
                "{}: cannot use the private key: {error}",
                key_path.display()
            )),
        })?;
    Ok((
        LoadedCert {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            names,
            not_after,
            certified: Arc::new(certified),
            fingerprint,
        },
        warnings,
    ))
}

fn asn1_time(unix_seconds: i64) -> SystemTime {
    match u64::try_from(unix_seconds) {
        Ok(seconds) => SystemTime::UNIX_EPOCH + Duration::from_secs(seconds),
        Err(_) => SystemTime::UNIX_EPOCH,
    }
}

/// The DNS names a certificate is valid for: its subjectAltName DNS entries,
/// else (old certificates) its subject CN.
fn dns_names(cert: &X509Certificate<'_>) -> Vec<String> {
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                names.push(dns.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        for cn in cert.subject().iter_common_name() {
            if let Ok(text) = cn.as_str() {
                if text.contains('.') || text == "localhost" {
                    names.push(text.to_ascii_lowercase());
                }
            }
        }
    }
    names
}

/// The certificates of one listener, indexed for SNI.
#[derive(Debug)]
pub struct CertStore {
    certs: Vec<Arc<LoadedCert>>,
    exact: HashMap<String, usize>,
    /// Keyed by the part after `*`: `*.example.com` is `.example.com`.
    wildcard: HashMap<String, usize>,
}

impl PartialEq for CertStore {
    fn eq(&self, other: &Self) -> bool {
        self.certs == other.certs
    }
}

impl CertStore {
    /// Indexes `certs` (at least one); when two name the same host, the first wins.
    pub fn new(certs: Vec<Arc<LoadedCert>>) -> CertStore {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (index, cert) in certs.iter().enumerate() {
            for name in &cert.names {
                match name.strip_prefix('*') {
                    Some(suffix) => wildcard.entry(suffix.to_string()).or_insert(index),
                    None => exact.entry(name.clone()).or_insert(index),
                };
            }
        }
        CertStore {
            certs,
            exact,
            wildcard,
        }
    }

    pub fn certs(&self) -> &[Arc<LoadedCert>] {
        &self.certs
    }

    /// The certificate for a ClientHello's SNI: exact name, then a wildcard
    /// covering exactly one more label, then the first certificate.
    pub fn resolve(&self, server_name: Option<&str>) -> &Arc<CertifiedKey> {
        let index = server_name
            .map(|name| name.trim_end_matches('.').to_ascii_lowercase())
            .and_then(|name| {
                self.exact.get(&name).copied().or_else(|| {
                    let dot = name.find('.')?;
                    self.wildcard.get(&name[dot..]).copied()
                })
            })
            .unwrap_or(0);
        &self.certs[index].certified
    }
}
