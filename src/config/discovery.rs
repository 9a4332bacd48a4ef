//! `[upstreams.NAME.discovery]`: where an upstream finds servers besides its
//! `servers` list, as typed values, and the rules `usherd check` applies to
//! the section. Checking never touches the network.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Serialize;
use toml::Spanned;

use super::file::{DiscoverySection, DurationText};
use super::serialize;
use super::validate::Checker;
use super::MAX_WEIGHT;

/// How often a source is asked again, by default (Envoy's default too).
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(5);
/// How long one query may take, by default.
pub const DEFAULT_DISCOVERY_TIMEOUT: Duration = Duration::from_secs(2);
/// The shortest `refresh` allowed.
const MIN_REFRESH: Duration = Duration::from_millis(100);

/// An upstream's discovery source and the rules it follows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Discovery {
    #[serde(flatten)]
    pub source: DiscoverySource,
    /// How often the source is asked again.
    #[serde(serialize_with = "serialize::duration")]
    pub refresh: Duration,
    /// How long one query may take before it counts as failed.
    #[serde(serialize_with = "serialize::duration")]
    pub timeout: Duration,
    /// How long a successful but empty answer must last before it empties
    /// the pool.
    #[serde(serialize_with = "serialize::duration")]
    pub empty_after: Duration,
    /// After this long without a successful answer the last set is dropped;
    /// `None`: it is kept for as long as the source fails.
    #[serde(serialize_with = "serialize::optional_duration")]
    pub max_stale: Option<Duration>,
}

/// What is asked, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum DiscoverySource {
    /// A and/or AAAA records of `name`; every address serves on `port`.
    Dns {
        name: String,
        port: u16,
        family: AddressFamily,
        weight: u32,
        #[serde(flatten)]
        resolver: ResolverSettings,
    },
    /// SRV records of `name`: targets, ports and weights from the records,
    /// only the lowest priority present.
    Srv {
        name: String,
        #[serde(flatten)]
        resolver: ResolverSettings,
    },
    /// Instances of `service` in usherd's own registry.
    Registry {
        service: String,
        tag: Option<String>,
        /// Only passing instances (else warning ones too).
        passing: bool,
    },
}

impl DiscoverySource {
    /// `dns api.internal:8080`, `srv _http._tcp.api.internal`: for logs.
    pub fn describe(&self) -> String {
        match self {
            DiscoverySource::Dns { name, port, .. } => format!("dns {name}:{port}"),
            DiscoverySource::Srv { name, .. } => format!("srv {name}"),
            DiscoverySource::Registry { service, tag, .. } => match tag {
                Some(tag) => format!("registry {service} tag {tag}"),
                None => format!("registry {service}"),
            },
        }
    }

    /// `dns` or `srv`.
    pub fn kind(&self) -> &'static str {
        match self {
            DiscoverySource::Dns { .. } => "dns",
            DiscoverySource::Srv { .. } => "srv",
            DiscoverySource::Registry { .. } => "registry",
        }
    }
}

/// Which DNS servers are asked, and whether their TTLs count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolverSettings {
    /// Empty: the nameservers of /etc/resolv.conf (Docker's 127.0.0.11 lives there).
    pub resolvers: Vec<SocketAddr>,
    /// Ask again when the answer's TTL runs out, if that comes before `refresh`.
    pub respect_ttl: bool,
}

/// The address records a `dns` source asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AddressFamily {
    /// A and AAAA.
    Any,
    Ipv4,
    Ipv6,
}

impl Checker<'_> {
    pub(super) fn discovery(&mut self, section: &Spanned<DiscoverySection>) -> Option<Discovery> {
        let body = section.get_ref();
        let refresh = self.duration_or(&body.refresh, "refresh", DEFAULT_REFRESH);
        if refresh < MIN_REFRESH {
            if let Some(value) = &body.refresh {
                self.error(value.span(), "refresh must be at least 100ms".into());
            }
        }
        let timeout = self.duration_or(&body.timeout, "timeout", DEFAULT_DISCOVERY_TIMEOUT);
        let source = body.source.get_ref().as_str();
        // The registry is the truth itself: an instance that goes is gone.
        let empty_default = if source == "registry" {
            Duration::ZERO
        } else {
            refresh * 2
        };
        let empty_after = match &body.empty_after {
            Some(value)
                if humantime::parse_duration(&value.get_ref().0).is_ok_and(|d| d.is_zero()) =>
            {
                Duration::ZERO
            }
            _ => self.duration_or(&body.empty_after, "empty_after", empty_default),
        };
        let max_stale = self.max_stale(&body.max_stale);
        if source == "registry" {
            return self.registry_source(section, refresh, timeout, empty_after, max_stale);
        }
        if let Some(key) = [
            ("service", body.service.as_ref().map(Spanned::span)),
            ("tag", body.tag.as_ref().map(Spanned::span)),
            ("passing", body.passing.as_ref().map(Spanned::span)),
        ]
        .into_iter()
        .find(|(_, span)| span.is_some())
        {
            self.error(
                key.1.unwrap_or_default(),
                format!("`{}` applies only to source registry", key.0),
            );
        }
        let name = match &body.name {
            Some(name) => {
                if let Err(message) = check_dns_name(name.get_ref(), source == "srv") {
                    self.error(name.span(), message);
                }
                name.get_ref().clone()
            }
            None => {
                self.error(
                    section.span(),
                    format!("discovery source `{source}` needs `name`, the DNS name to look up"),
                );
                String::new()
            }
        };
        let resolver = ResolverSettings {
            resolvers: self.resolvers(&body.resolvers),
            respect_ttl: body.respect_ttl.as_ref().is_some_and(|v| *v.get_ref()),
        };
        let source = match source {
            "dns" => DiscoverySource::Dns {
                name,
                port: self.discovery_port(section),
                family: self.family(&body.family),
                weight: self.discovery_weight(&body.weight),
                resolver,
            },
            "srv" => {
                for (key, present) in [
                    ("port", body.port.as_ref().map(Spanned::span)),
                    ("family", body.family.as_ref().map(Spanned::span)),
                    ("weight", body.weight.as_ref().map(Spanned::span)),
                ] {
                    if let Some(span) = present {
                        self.error(
                            span,
                            format!("`{key}` does not apply to source srv: SRV records give ports and weights"),
                        );
                    }
                }
                DiscoverySource::Srv { name, resolver }
            }
            other => {
                self.error(
                    body.source.span(),
                    format!("unknown discovery source `{other}`: use dns, srv or registry"),
                );
                return None;
            }
        };
        Some(Discovery {
            source,
            refresh,
            timeout,
            empty_after,
            max_stale,
        })
    }

    /// `source = "registry"`: `service` (required), `tag`, `passing`.
    fn registry_source(
        &mut self,
        section: &Spanned<DiscoverySection>,
        refresh: Duration,
        timeout: Duration,
        empty_after: Duration,
        max_stale: Option<Duration>,
    ) -> Option<Discovery> {
        let body = section.get_ref();
        for (key, span) in [
            ("name", body.name.as_ref().map(Spanned::span)),
            ("port", body.port.as_ref().map(Spanned::span)),
            ("family", body.family.as_ref().map(Spanned::span)),
            ("weight", body.weight.as_ref().map(Spanned::span)),
            ("resolvers", body.resolvers.as_ref().map(Spanned::span)),
            ("respect_ttl", body.respect_ttl.as_ref().map(Spanned::span)),
        ] {
            if let Some(span) = span {
                self.error(
                    span,
                    format!("`{key}` does not apply to source registry: instances register their address, port and weights"),
                );
            }
        }
        if !self.has_registry {
            self.error(
                body.source.span(),
                "source registry needs the registry: add a [registry] section".into(),
            );
        }
        let service = match &body.service {
            Some(service) if !service.get_ref().trim().is_empty() => service.get_ref().clone(),
            Some(service) => {
                self.error(service.span(), "service must not be empty".into());
                String::new()
            }
            None => {
                self.error(
                    section.span(),
                    "source registry needs `service`, the name instances register under".into(),
                );
                String::new()
            }
        };
        Some(Discovery {
            source: DiscoverySource::Registry {
                service,
                tag: body.tag.as_ref().map(|tag| tag.get_ref().clone()),
                passing: body.passing.as_ref().is_none_or(|p| *p.get_ref()),
            },
            refresh,
            timeout,
            empty_after,
            max_stale,
        })
    }

    fn discovery_port(&mut self, section: &Spanned<DiscoverySection>) -> u16 {
        match &section.get_ref().port {
            Some(port) => match u16::try_from(*port.get_ref()) {
                Ok(port) if port > 0 => port,
                _ => {
                    self.error(port.span(), "port must be from 1 to 65535".into());
                    0
                }
            },
            None => {
                self.error(
                    section.span(),
                    "discovery source `dns` needs `port`: DNS address records carry no port".into(),
                );
                0
            }
        }
    }

    fn family(&mut self, family: &Option<Spanned<String>>) -> AddressFamily {
        match family.as_ref().map(|f| (f.get_ref().as_str(), f.span())) {
            None | Some(("any", _)) => AddressFamily::Any,
            Some(("ipv4", _)) => AddressFamily::Ipv4,
            Some(("ipv6", _)) => AddressFamily::Ipv6,
            Some((other, span)) => {
                self.error(
                    span,
                    format!("unknown family `{other}`: use any, ipv4 or ipv6"),
                );
                AddressFamily::Any
            }
        }
    }

    fn discovery_weight(&mut self, weight: &Option<Spanned<i64>>) -> u32 {
        match weight {
            None => 1,
            Some(value) => match u32::try_from(*value.get_ref()) {
                Ok(weight) if (1..=MAX_WEIGHT).contains(&weight) => weight,
                _ => {
                    self.error(
                        value.span(),
                        format!("weight must be from 1 to {MAX_WEIGHT}"),
                    );
                    1
                }
            },
        }
    }

    fn resolvers(&mut self, resolvers: &Option<Spanned<Vec<Spanned<String>>>>) -> Vec<SocketAddr> {
        let Some(resolvers) = resolvers else {
            return Vec::new();
        };
        if resolvers.get_ref().is_empty() {
            self.error(
                resolvers.span(),
                "resolvers must name at least one server; leave it out for /etc/resolv.conf's"
                    .into(),
            );
        }
        resolvers
            .get_ref()
            .iter()
            .filter_map(|resolver| match parse_resolver(resolver.get_ref()) {
                Some(addr) => Some(addr),
                None => {
                    self.error(
                        resolver.span(),
                        format!(
                            "resolver `{}` is not an IP address with an optional port, like \"10.0.0.2\" or \"127.0.0.1:5353\"",
                            resolver.get_ref()
                        ),
                    );
                    None
                }
            })
            .collect()
    }

    /// `max_stale`: `"0s"` (the default) keeps the last set forever.
    fn max_stale(&mut self, value: &Option<Spanned<DurationText>>) -> Option<Duration> {
        let value = value.as_ref()?;
        match humantime::parse_duration(&value.get_ref().0) {
            Ok(duration) if duration.is_zero() => None,
            Ok(duration) => Some(duration),
            Err(error) => {
                self.error(
                    value.span(),
                    format!(
                        "max_stale `{}` is not a duration like \"30s\" or \"0s\": {error}",
                        value.get_ref().0
                    ),
                );
                None
            }
        }
    }
}

/// `10.0.0.2`, `10.0.0.2:5353`, `::1`, `[::1]:5353`; port 53 when none.
fn parse_resolver(text: &str) -> Option<SocketAddr> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr);
    }
    text.parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, 53))
}

/// A name of dot-separated labels of letters, digits, `-` and `_` (SRV
/// names start with `_service._proto.`), 253 characters at most.
fn check_dns_name(name: &str, srv: bool) -> Result<(), String> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    let valid = !trimmed.is_empty()
        && trimmed.len() <= 253
        && trimmed.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !valid {
        return Err(format!("`{name}` is not a DNS name"));
    }
    if srv && !trimmed.starts_with('_') {
        return Err(format!(
            "`{name}` is not an SRV name: they look like _http._tcp.api.internal"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolvers_take_a_port_or_default_to_53() {
        assert_eq!(
            parse_resolver("10.0.0.2"),
            Some("10.0.0.2:53".parse().unwrap())
        );
        assert_eq!(
            parse_resolver("127.0.0.1:5353"),
            Some("127.0.0.1:5353".parse().unwrap())
        );
        assert_eq!(
            parse_resolver("[::1]:5353"),
            Some("[::1]:5353".parse().unwrap())
        );
        assert_eq!(parse_resolver("::1"), Some("[::1]:53".parse().unwrap()));
        assert_eq!(parse_resolver("dns.google"), None);
    }

    #[test]
    fn dns_names() {
        assert!(check_dns_name("api", false).is_ok());
        assert!(check_dns_name("api.test.", false).is_ok());
        assert!(check_dns_name("_http._tcp.api.test", true).is_ok());
        assert!(check_dns_name("api.test", true).is_err());
        assert!(check_dns_name("api..test", false).is_err());
        assert!(check_dns_name("api test", false).is_err());
        assert!(check_dns_name("", false).is_err());
    }
}
