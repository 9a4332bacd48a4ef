//! `[registry]`: the built-in service registry (docs/registry.md) as typed
//! values, and the rules `usherd check` applies to the section.

use std::path::PathBuf;

use ipnet::IpNet;
use serde::Serialize;
use toml::Spanned;

use super::file::{FileConfig, RegistrySection};
use super::serialize;
use super::validate::Checker;

/// Registrations kept at most, by default.
pub const DEFAULT_MAX_SERVICES: usize = 10_000;
/// The largest request body the registry reads, by default.
pub const DEFAULT_MAX_BODY: u64 = 64 * 1024;
/// Where the registry keeps its instances in etcd, by default.
pub const DEFAULT_ETCD_PREFIX: &str = "/usherd/registry";

/// The registry's settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Registry {
    /// Where registrations are kept across restarts (relative paths start at
    /// the config file's directory); `None`: in memory only.
    pub state_file: Option<PathBuf>,
    /// The etcd cluster that keeps the registrations, shared by every usherd
    /// pointed at it (`http://host:port` each); empty: this usherd alone.
    pub etcd: Vec<String>,
    /// The key prefix of the registrations in etcd.
    pub etcd_prefix: String,
    /// Tokens that may register, deregister and update checks. Empty: anyone
    /// who can reach the admin listener may.
    #[serde(serialize_with = "serialize::secrets")]
    pub write_tokens: Vec<String>,
    /// Tokens that may read (write tokens may too). Empty: reads are open.
    #[serde(serialize_with = "serialize::secrets")]
    pub read_tokens: Vec<String>,
    /// Networks a registered address must be in. Empty: any address but the
    /// ones always refused (link-local, unspecified, multicast, usherd's own).
    pub allow_addresses: Vec<IpNet>,
    pub max_services: usize,
    pub max_body: u64,
}

impl Checker<'_> {
    pub(super) fn registry(&mut self, file: &FileConfig) -> Option<Registry> {
        let section = file.registry.as_ref()?;
        if file.admin.is_none() {
            self.error(
                section.span(),
                "[registry] is served on the admin listener: add an [admin] section".into(),
            );
        }
        let body: &RegistrySection = section.get_ref();
        let tokens = |checker: &mut Self, list: &Option<Vec<Spanned<String>>>, what: &str| {
            let mut tokens = Vec::new();
            for token in list.iter().flatten() {
                if token.get_ref().len() < 8 {
                    checker.error(
                        token.span(),
                        format!("{what} must be at least 8 characters long"),
                    );
                }
                tokens.push(token.get_ref().clone());
            }
            tokens
        };
        let write_tokens = tokens(self, &body.write_tokens, "a write token");
        let read_tokens = tokens(self, &body.read_tokens, "a read token");
        let allow_addresses = body
            .allow_addresses
            .iter()
            .flatten()
            .filter_map(|cidr| match parse_network(cidr.get_ref()) {
                Some(network) => Some(network),
                None => {
                    self.error(
                        cidr.span(),
                        format!(
                            "`{}` is not a network like \"10.0.0.0/8\" or an address",
                            cidr.get_ref()
                        ),
                    );
                    None
                }
            })
            .collect();
        let max_services = match &body.max_services {
            None => DEFAULT_MAX_SERVICES,
            Some(value) => match usize::try_from(*value.get_ref()) {
                Ok(max) if max > 0 => max,
                _ => {
                    self.error(
                        value.span(),
                        "max_services must be a positive number".into(),
                    );
                    DEFAULT_MAX_SERVICES
                }
            },
        };
        let max_body = match &body.max_body {
            None => DEFAULT_MAX_BODY,
            Some(value) => self.size(value, "max_body").unwrap_or(DEFAULT_MAX_BODY),
        };
        let etcd: Vec<String> = body
            .etcd
            .iter()
            .flatten()
            .filter_map(
                |endpoint| match super::discovery::parse_http_address(endpoint.get_ref()) {
                    Ok(address) if address.starts_with("http://") => Some(address),
                    Ok(_) => {
                        self.error(
                            endpoint.span(),
                            "etcd endpoints are plain http://host:port for now".into(),
                        );
                        None
                    }
                    Err(message) => {
                        self.error(endpoint.span(), message);
                        None
                    }
                },
            )
            .collect();
        if let (Some(list), Some(file)) = (&body.etcd, &body.state_file) {
            if !list.is_empty() {
                self.error(
                    file.span(),
                    "give state_file or etcd, not both: with etcd the registrations are kept there"
                        .into(),
                );
            }
        }
        let etcd_prefix = match &body.etcd_prefix {
            None => DEFAULT_ETCD_PREFIX.to_string(),
            Some(prefix) => {
                let text = prefix.get_ref().trim_end_matches('/');
                if !text.starts_with('/') || text.len() < 2 {
                    self.error(
                        prefix.span(),
                        "etcd_prefix must start with `/`, like \"/usherd/registry\"".into(),
                    );
                }
                if body.etcd.as_ref().is_none_or(Vec::is_empty) {
                    self.error(
                        prefix.span(),
                        "etcd_prefix needs etcd, the endpoints".into(),
                    );
                }
                text.to_string()
            }
        };
        Some(Registry {
            state_file: body
                .state_file
                .as_ref()
                .map(|path| self.config_path(path.get_ref())),
            etcd,
            etcd_prefix,
            write_tokens,
            read_tokens,
            allow_addresses,
            max_services,
            max_body,
        })
    }
}

/// `10.0.0.0/8`, `fd00::/8`, or one address (`10.0.0.5`, a /32 or /128).
fn parse_network(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_and_single_addresses() {
        assert_eq!(
            parse_network("10.0.0.0/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            parse_network("10.1.2.3").unwrap().to_string(),
            "10.1.2.3/32"
        );
        assert_eq!(parse_network("::1").unwrap().to_string(), "::1/128");
        assert!(parse_network("10.0.0.0/33").is_none());
        assert!(parse_network("office").is_none());
    }
}
