//! Serde structs that mirror the TOML file exactly (shared/SPEC.md §2).
//!
//! They only deserialize: no defaults are applied and nothing is checked beyond
//! the TOML types. Every value a user can get wrong keeps its span so that
//! `validate` can name the line and column. Unknown keys are rejected.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub global: GlobalSection,
    pub admin: Option<Spanned<AdminSection>>,
    #[serde(default)]
    pub listeners: BTreeMap<Spanned<String>, Spanned<ListenerSection>>,
    #[serde(default)]
    pub vhosts: BTreeMap<Spanned<String>, Spanned<VhostSection>>,
    #[serde(default)]
    pub upstreams: BTreeMap<Spanned<String>, Spanned<UpstreamSection>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalSection {
    pub shutdown_timeout: Option<Spanned<String>>,
    pub header_read_timeout: Option<Spanned<String>>,
    pub idle_timeout: Option<Spanned<String>>,
    pub max_connections: Option<Spanned<i64>>,
    pub max_request_header_size: Option<Spanned<SizeValue>>,
    pub max_request_body: Option<Spanned<SizeValue>>,
}

/// A size is a string with a unit (`"64KiB"`) or a plain number of bytes.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum SizeValue {
    Bytes(i64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    pub listen: Spanned<String>,
    pub token: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerSection {
    pub listen: Spanned<String>,
    pub tls: Option<Spanned<ListenerTlsSection>>,
    pub redirect_https: Option<Spanned<bool>>,
    pub https_port: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsSection {
    pub certs: Spanned<Vec<Spanned<CertSection>>>,
    pub handshake_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertSection {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VhostSection {
    pub hosts: Spanned<Vec<Spanned<String>>>,
    pub listeners: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub routes: Vec<Spanned<RouteSection>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    pub path: Spanned<String>,
    pub upstream: Spanned<String>,
    #[serde(default)]
    pub strip_prefix: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    pub strategy: Option<Spanned<String>>,
    #[serde(default)]
    pub servers: Vec<Spanned<ServerSection>>,
    pub connect_timeout: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub retries: Option<Spanned<i64>>,
    pub max_connections_per_server: Option<Spanned<i64>>,
    pub hash_key: Option<Spanned<String>>,
    pub hash_balance_factor: Option<Spanned<f64>>,
    pub ewma_decay: Option<Spanned<String>>,
    pub health_check: Option<Spanned<HealthCheckSection>>,
    pub outlier: Option<Spanned<OutlierSection>>,
    pub protocol: Option<Spanned<String>>,
    pub tls: Option<Spanned<bool>>,
    pub tls_server_name: Option<Spanned<String>>,
    pub ca_file: Option<Spanned<String>>,
    pub tls_insecure_skip_verify: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckSection {
    pub path: Option<Spanned<String>>,
    pub interval: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub rise: Option<Spanned<i64>>,
    pub fall: Option<Spanned<i64>>,
    pub expect_status: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierSection {
    pub consecutive_failures: Option<Spanned<i64>>,
    pub ejection_time: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub addr: Spanned<String>,
    pub weight: Option<Spanned<i64>>,
}
