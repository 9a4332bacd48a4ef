//! Validation of the TLS parts of a config: listener certificates (read,
//! parsed and matched with their keys now, so `usherd check` and a reload
//! refuse a bad file with its line and column), `redirect_https`, and the
//! transport of upstreams (`protocol`, `tls`, `ca_file`, ...).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::file::{ListenerSection, ListenerTlsSection, UpstreamSection};
use super::validate::Checker;
use super::{ListenerTls, Transport, UpstreamProtocol, UpstreamTls};
use crate::tls::{load_ca_file, load_cert, CertError, CertStore};

/// How long a client may take to complete a TLS handshake, by default.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The port `redirect_https` sends clients to when `https_port` is not set.
const DEFAULT_HTTPS_PORT: u16 = 443;

impl Checker<'_> {
    /// A path from the config, relative to the config file's directory.
    pub(super) fn config_path(&self, path: &str) -> PathBuf {
        let path = PathBuf::from(path);
        if path.is_absolute() {
            path
        } else {
            self.base_dir.join(path)
        }
    }

    pub(super) fn listener_tls(
        &mut self,
        section: &Spanned<ListenerTlsSection>,
    ) -> Option<ListenerTls> {
        let body = section.get_ref();
        if body.certs.get_ref().is_empty() {
            self.error(
                body.certs.span(),
                "tls needs at least one certificate: certs = [{ cert = \"site.pem\", key = \"site.key\" }]".into(),
            );
            return None;
        }
        let mut certs = Vec::new();
        for cert in body.certs.get_ref() {
            let cert = cert.get_ref();
            let cert_path = self.config_path(cert.cert.get_ref());
            let key_path = self.config_path(cert.key.get_ref());
            match load_cert(&cert_path, &key_path) {
                Ok((loaded, warnings)) => {
                    for warning in warnings.0 {
                        self.warn(cert.cert.span(), warning);
                    }
                    certs.push(Arc::new(loaded));
                }
                Err(CertError::Cert(message)) => self.error(cert.cert.span(), message),
                Err(CertError::Key(message)) => self.error(cert.key.span(), message),
            }
        }
        let handshake_timeout = self.duration_or(
            &body.handshake_timeout,
            "handshake_timeout",
            DEFAULT_HANDSHAKE_TIMEOUT,
        );
        (certs.len() == body.certs.get_ref().len()).then(|| ListenerTls {
            certs: Arc::new(CertStore::new(certs)),
            handshake_timeout,
        })
    }

    /// `redirect_https` and `https_port`: the port to redirect to.
    pub(super) fn redirect_https(&mut self, section: &ListenerSection) -> Option<u16> {
        let redirect = section
            .redirect_https
            .as_ref()
            .is_some_and(|r| *r.get_ref());
        if let (Some(flag), Some(_), true) = (&section.redirect_https, &section.tls, redirect) {
            self.error(
                flag.span(),
                "redirect_https is for plain listeners; this one already has tls".into(),
            );
        }
        let port = match &section.https_port {
            None => DEFAULT_HTTPS_PORT,
            Some(port) if !redirect => {
                self.error(
                    port.span(),
                    "https_port applies only with redirect_https = true".into(),
                );
                DEFAULT_HTTPS_PORT
            }
            Some(port) => match u16::try_from(*port.get_ref()) {
                Ok(port) if port > 0 => port,
                _ => {
                    self.error(port.span(), "https_port must be between 1 and 65535".into());
                    DEFAULT_HTTPS_PORT
                }
            },
        };
        redirect.then_some(port)
    }

    /// `protocol`, `tls`, `tls_server_name`, `ca_file`, `tls_insecure_skip_verify`.
    pub(super) fn transport(&mut self, name: &str, body: &UpstreamSection) -> Transport {
        let protocol = match &body.protocol {
            None => UpstreamProtocol::Http1,
            Some(value) => match value.get_ref().as_str() {
                "http1" => UpstreamProtocol::Http1,
                "h2" => UpstreamProtocol::H2,
                "h2c" => UpstreamProtocol::H2c,
                other => {
                    self.error(
                        value.span(),
                        format!("unknown protocol `{other}`: use http1, h2 (HTTP/2 over TLS) or h2c (HTTP/2 cleartext)"),
                    );
                    UpstreamProtocol::Http1
                }
            },
        };
        let tls = match (&body.tls, protocol) {
            (Some(flag), UpstreamProtocol::H2) if !*flag.get_ref() => {
                self.error(
                    flag.span(),
                    "protocol h2 is HTTP/2 over TLS; for HTTP/2 without TLS use protocol = \"h2c\""
                        .into(),
                );
                false
            }
            (Some(flag), UpstreamProtocol::H2c) if *flag.get_ref() => {
                self.error(
                    flag.span(),
                    "protocol h2c is HTTP/2 without TLS; for HTTP/2 over TLS use protocol = \"h2\""
                        .into(),
                );
                false
            }
            (_, UpstreamProtocol::H2) => true,
            (flag, _) => flag.as_ref().is_some_and(|flag| *flag.get_ref()),
        };
        let tls_only: [(&str, Option<std::ops::Range<usize>>); 3] = [
            (
                "tls_server_name",
                body.tls_server_name.as_ref().map(Spanned::span),
            ),
            ("ca_file", body.ca_file.as_ref().map(Spanned::span)),
            (
                "tls_insecure_skip_verify",
                body.tls_insecure_skip_verify.as_ref().map(Spanned::span),
            ),
        ];
        if !tls {
            for (key, span) in tls_only {
                if let Some(span) = span {
                    self.error(
                        span,
                        format!("{key} applies only to upstreams with tls = true"),
                    );
                }
            }
            return Transport {
                protocol,
                tls: None,
            };
        }
        let server_name = body.tls_server_name.as_ref().and_then(|value| {
            match rustls::pki_types::ServerName::try_from(value.get_ref().as_str()) {
                Ok(_) => Some(value.get_ref().clone()),
                Err(error) => {
                    self.error(
                        value.span(),
                        format!(
                            "tls_server_name `{}` is not a DNS name or IP address: {error}",
                            value.get_ref()
                        ),
                    );
                    None
                }
            }
        });
        let insecure_skip_verify = body
            .tls_insecure_skip_verify
            .as_ref()
            .is_some_and(|flag| *flag.get_ref());
        if let (true, Some(flag)) = (insecure_skip_verify, &body.tls_insecure_skip_verify) {
            self.warn(
                flag.span(),
                format!("upstream `{name}`: tls_insecure_skip_verify = true accepts ANY certificate; anyone on the path can read and change this traffic"),
            );
            if let Some(ca_file) = &body.ca_file {
                self.error(
                    ca_file.span(),
                    "ca_file has no use with tls_insecure_skip_verify = true".into(),
                );
            }
        }
        let ca = body.ca_file.as_ref().and_then(|value| {
            match load_ca_file(&self.config_path(value.get_ref())) {
                Ok(bundle) => Some(bundle),
                Err(message) => {
                    self.error(value.span(), message);
                    None
                }
            }
        });
        Transport {
            protocol,
            tls: Some(UpstreamTls {
                server_name,
                ca,
                insecure_skip_verify,
            }),
        }
    }
}
