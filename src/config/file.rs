//! Serde structs that mirror the TOML file exactly (docs/config.md).
//!
//! They only deserialize: no defaults are applied and nothing is checked beyond
//! the TOML types. Every value a user can get wrong keeps its span so that
//! `validate` can name the line and column. Unknown keys are rejected. These
//! structs are the only description of the file's shape: `shape` reports every
//! key that does not fit them, with what serde expected there.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
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
    pub registry: Option<Spanned<RegistrySection>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySection {
    pub state_file: Option<Spanned<String>>,
    pub etcd: Option<Vec<Spanned<String>>>,
    pub etcd_prefix: Option<Spanned<String>>,
    pub write_tokens: Option<Vec<Spanned<String>>>,
    pub read_tokens: Option<Vec<Spanned<String>>>,
    pub allow_addresses: Option<Vec<Spanned<String>>>,
    pub max_services: Option<Spanned<i64>>,
    pub max_body: Option<Spanned<SizeValue>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalSection {
    pub shutdown_timeout: Option<Spanned<DurationText>>,
    pub header_read_timeout: Option<Spanned<DurationText>>,
    pub idle_timeout: Option<Spanned<DurationText>>,
    pub send_timeout: Option<Spanned<DurationText>>,
    pub client_body_timeout: Option<Spanned<DurationText>>,
    pub client_body_min_rate: Option<Spanned<SizeValue>>,
    pub max_connections: Option<Spanned<i64>>,
    pub max_request_header_size: Option<Spanned<SizeValue>>,
    pub max_request_body: Option<Spanned<SizeValue>>,
}

/// A size is a string with a unit (`"64KiB"`) or a plain number of bytes.
#[derive(Debug)]
pub enum SizeValue {
    Bytes(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for SizeValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;

        impl Visitor<'_> for SizeVisitor {
            type Value = SizeValue;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a size such as \"64KiB\" or a number of bytes")
            }

            fn visit_i64<E: de::Error>(self, bytes: i64) -> Result<SizeValue, E> {
                Ok(SizeValue::Bytes(bytes))
            }

            fn visit_u64<E: de::Error>(self, bytes: u64) -> Result<SizeValue, E> {
                i64::try_from(bytes)
                    .map(SizeValue::Bytes)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(bytes), &self))
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<SizeValue, E> {
                Ok(SizeValue::Text(text.to_string()))
            }
        }

        deserializer.deserialize_any(SizeVisitor)
    }
}

/// A duration as the file writes it (`"250ms"`, `"2s"`); `validate` parses it.
#[derive(Debug)]
pub struct DurationText(pub String);

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;

        impl Visitor<'_> for DurationVisitor {
            type Value = DurationText;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a duration string such as \"5s\"")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<DurationText, E> {
                Ok(DurationText(text.to_string()))
            }
        }

        deserializer.deserialize_string(DurationVisitor)
    }
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
    pub handshake_timeout: Option<Spanned<DurationText>>,
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
    pub connect_timeout: Option<Spanned<DurationText>>,
    pub timeout: Option<Spanned<DurationText>>,
    pub retries: Option<Spanned<i64>>,
    pub max_connections_per_server: Option<Spanned<i64>>,
    pub hash_key: Option<Spanned<String>>,
    pub hash_balance_factor: Option<Spanned<f64>>,
    pub ewma_decay: Option<Spanned<DurationText>>,
    pub health_check: Option<Spanned<HealthCheckSection>>,
    pub outlier: Option<Spanned<OutlierSection>>,
    pub protocol: Option<Spanned<String>>,
    pub tls: Option<Spanned<bool>>,
    pub tls_server_name: Option<Spanned<String>>,
    pub ca_file: Option<Spanned<String>>,
    pub tls_insecure_skip_verify: Option<Spanned<bool>>,
    pub discovery: Option<Spanned<DiscoverySection>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoverySection {
    pub source: Spanned<String>,
    pub name: Option<Spanned<String>>,
    pub service: Option<Spanned<String>>,
    pub tag: Option<Spanned<String>>,
    pub passing: Option<Spanned<bool>>,
    pub port: Option<Spanned<i64>>,
    pub family: Option<Spanned<String>>,
    pub weight: Option<Spanned<i64>>,
    pub resolvers: Option<Spanned<Vec<Spanned<String>>>>,
    pub respect_ttl: Option<Spanned<bool>>,
    pub address: Option<Spanned<String>>,
    pub datacenter: Option<Spanned<String>>,
    pub token: Option<Spanned<String>>,
    pub token_file: Option<Spanned<String>>,
    pub wait: Option<Spanned<DurationText>>,
    pub stale: Option<Spanned<bool>>,
    pub hosts: Option<Spanned<String>>,
    pub base_path: Option<Spanned<String>>,
    pub session_timeout: Option<Spanned<DurationText>>,
    pub endpoints: Option<Spanned<Vec<Spanned<String>>>>,
    pub prefix: Option<Spanned<String>>,
    pub refresh: Option<Spanned<DurationText>>,
    pub timeout: Option<Spanned<DurationText>>,
    pub empty_after: Option<Spanned<DurationText>>,
    pub max_stale: Option<Spanned<DurationText>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckSection {
    pub path: Option<Spanned<String>>,
    pub interval: Option<Spanned<DurationText>>,
    pub timeout: Option<Spanned<DurationText>>,
    pub rise: Option<Spanned<i64>>,
    pub fall: Option<Spanned<i64>>,
    pub expect_status: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierSection {
    pub consecutive_failures: Option<Spanned<i64>>,
    pub ejection_time: Option<Spanned<DurationText>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub addr: Spanned<String>,
    pub weight: Option<Spanned<i64>>,
}
