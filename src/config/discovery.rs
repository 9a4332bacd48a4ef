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
/// How long a `consul` blocking query waits for a change, by default.
pub const DEFAULT_CONSUL_WAIT: Duration = Duration::from_secs(300);
/// The shortest and longest `wait` allowed (10 minutes is Consul's cap).
const CONSUL_WAIT_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(600));
/// Where Curator's x-discovery (and Spring Cloud Zookeeper) register, by default.
pub const DEFAULT_ZOOKEEPER_BASE_PATH: &str = "/services";
/// The ZooKeeper session timeout asked for, by default (kazoo's too).
pub const DEFAULT_ZOOKEEPER_SESSION_TIMEOUT: Duration = Duration::from_secs(10);
/// The shortest and longest `session_timeout` allowed.
const ZOOKEEPER_SESSION_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(600));
/// ZooKeeper's client port, when `hosts` names none.
const ZOOKEEPER_PORT: u16 = 2181;

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
    /// Instances of `service` in a Consul catalog (or another usherd's
    /// registry), followed with blocking queries on `/v1/health/service/`.
    Consul {
        /// `http://host:port`, without a path.
        address: String,
        service: String,
        tag: Option<String>,
        /// Only passing instances (else warning ones too).
        passing: bool,
        /// `?dc=`; `None`: the agent's own datacenter.
        datacenter: Option<String>,
        /// Sent as `X-Consul-Token` (from `token` or `token_file`).
        #[serde(serialize_with = "serialize::secret")]
        token: Option<String>,
        /// How long one blocking query may wait for a change.
        #[serde(serialize_with = "serialize::duration")]
        wait: Duration,
        /// `?stale`: any server may answer, not only the leader.
        stale: bool,
    },
    /// The `UP` instances of the app `service` in a Eureka server (or
    /// another usherd's Eureka API), fetched whole once and then by deltas
    /// from `GET {address}/apps/delta`, as Eureka's own clients do.
    Eureka {
        /// The service URL, as in Spring's `defaultZone`:
        /// `http://host:8761/eureka`, without a trailing slash.
        address: String,
        /// The app name, in upper case (Eureka's names are case-insensitive).
        service: String,
        /// Sent as the password of `Authorization: Basic` (user `usherd`).
        #[serde(serialize_with = "serialize::secret")]
        token: Option<String>,
    },
    /// The instances of `service` in ZooKeeper, in Curator x-discovery's
    /// layout (`base_path/service/instance-id`, each node a JSON
    /// `ServiceInstance`), watched: a change is read when ZooKeeper says so.
    Zookeeper {
        /// `host:port,host:port`: ZooKeeper's connect string, without a chroot.
        hosts: String,
        /// `/services`: absolute, without a trailing slash.
        base_path: String,
        service: String,
        /// The session timeout asked of ZooKeeper.
        #[serde(serialize_with = "serialize::duration")]
        session_timeout: Duration,
    },
    /// Every key under `prefix` in etcd (v3, through its JSON gateway) holds
    /// `{"address", "port", "weight"}`; read once, then watched.
    Etcd {
        /// `http://host:port`, one or more, without a path.
        endpoints: Vec<String>,
        prefix: String,
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
            DiscoverySource::Consul {
                address,
                service,
                tag,
                ..
            } => match tag {
                Some(tag) => format!("consul {service} tag {tag} at {address}"),
                None => format!("consul {service} at {address}"),
            },
            DiscoverySource::Eureka {
                address, service, ..
            } => format!("eureka {service} at {address}"),
            DiscoverySource::Zookeeper {
                hosts,
                base_path,
                service,
                ..
            } => format!(
                "zookeeper {} at {hosts}",
                zookeeper_service_path(base_path, service)
            ),
            DiscoverySource::Etcd { endpoints, prefix } => {
                format!("etcd {prefix} at {}", endpoints.join(","))
            }
        }
    }

    /// `dns`, `srv`, `registry`, `consul`, `eureka`, `zookeeper` or `etcd`.
    pub fn kind(&self) -> &'static str {
        match self {
            DiscoverySource::Dns { .. } => "dns",
            DiscoverySource::Srv { .. } => "srv",
            DiscoverySource::Registry { .. } => "registry",
            DiscoverySource::Consul { .. } => "consul",
            DiscoverySource::Eureka { .. } => "eureka",
            DiscoverySource::Zookeeper { .. } => "zookeeper",
            DiscoverySource::Etcd { .. } => "etcd",
        }
    }
}

/// `/services` + `api` -> `/services/api` (`/` + `api` -> `/api`).
pub fn zookeeper_service_path(base_path: &str, service: &str) -> String {
    format!("{}/{service}", base_path.trim_end_matches('/'))
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
        if matches!(source, "registry" | "consul" | "eureka") {
            self.refuse_store_keys(body, source);
            return self.catalog_source(section, refresh, timeout, empty_after, max_stale);
        }
        if matches!(source, "zookeeper" | "etcd") {
            let source = if source == "zookeeper" {
                self.zookeeper_source(section)
            } else {
                self.etcd_source(section)
            };
            return Some(Discovery {
                source,
                refresh,
                timeout,
                empty_after,
                max_stale,
            });
        }
        self.refuse(
            [("service", body.service.as_ref().map(Spanned::span))],
            "applies only to sources registry, consul, eureka and zookeeper",
        );
        self.refuse(
            [
                ("tag", body.tag.as_ref().map(Spanned::span)),
                ("passing", body.passing.as_ref().map(Spanned::span)),
            ],
            "applies only to sources registry, consul and eureka",
        );
        self.refuse_consul_keys(body);
        self.refuse_store_keys(body, source);
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
                self.refuse(
                    [
                        ("port", body.port.as_ref().map(Spanned::span)),
                        ("family", body.family.as_ref().map(Spanned::span)),
                        ("weight", body.weight.as_ref().map(Spanned::span)),
                    ],
                    "does not apply to source srv: SRV records give ports and weights",
                );
                DiscoverySource::Srv { name, resolver }
            }
            other => {
                self.error(
                    body.source.span(),
                    format!("unknown discovery source `{other}`: use dns, srv, registry, consul, eureka, zookeeper or etcd"),
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

    /// `source = "registry"`, `"consul"` or `"eureka"`: `service`
    /// (required), `tag` and `passing` (not for eureka: `UP` is routed);
    /// for consul and eureka also `address` (required) and `token` or
    /// `token_file`; for consul `datacenter`, `wait` and `stale`.
    fn catalog_source(
        &mut self,
        section: &Spanned<DiscoverySection>,
        refresh: Duration,
        timeout: Duration,
        empty_after: Duration,
        max_stale: Option<Duration>,
    ) -> Option<Discovery> {
        let body = section.get_ref();
        let kind = body.source.get_ref().as_str();
        self.refuse_registered_keys(body, kind);
        let service = match &body.service {
            Some(service) if !service.get_ref().trim().is_empty() => service.get_ref().clone(),
            Some(service) => {
                self.error(service.span(), "service must not be empty".into());
                String::new()
            }
            None => {
                self.error(
                    section.span(),
                    format!("source {kind} needs `service`, the name instances register under"),
                );
                String::new()
            }
        };
        let tag = body.tag.as_ref().map(|tag| tag.get_ref().clone());
        let passing = body.passing.as_ref().is_none_or(|p| *p.get_ref());
        let source = if kind == "eureka" {
            self.refuse(
                [
                    ("tag", body.tag.as_ref().map(Spanned::span)),
                    ("passing", body.passing.as_ref().map(Spanned::span)),
                    ("datacenter", body.datacenter.as_ref().map(Spanned::span)),
                    ("wait", body.wait.as_ref().map(Spanned::span)),
                    ("stale", body.stale.as_ref().map(Spanned::span)),
                ],
                "does not apply to source eureka: its instances that are UP are routed",
            );
            DiscoverySource::Eureka {
                address: self.source_address(section, kind),
                service: service.to_ascii_uppercase(),
                token: self.source_token(body),
            }
        } else if kind == "consul" {
            DiscoverySource::Consul {
                address: self.source_address(section, kind),
                service,
                tag,
                passing,
                datacenter: self.consul_datacenter(&body.datacenter),
                token: self.source_token(body),
                wait: self.consul_wait(&body.wait),
                stale: body.stale.as_ref().is_some_and(|s| *s.get_ref()),
            }
        } else {
            self.refuse_consul_keys(body);
            if !self.has_registry {
                self.error(
                    body.source.span(),
                    "source registry needs the registry: add a [registry] section".into(),
                );
            }
            DiscoverySource::Registry {
                service,
                tag,
                passing,
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

    /// `source = "zookeeper"`: `hosts` and `service` (required),
    /// `base_path` and `session_timeout`.
    fn zookeeper_source(&mut self, section: &Spanned<DiscoverySection>) -> DiscoverySource {
        let body = section.get_ref();
        self.refuse_registered_keys(body, "zookeeper");
        self.refuse(
            [
                ("tag", body.tag.as_ref().map(Spanned::span)),
                ("passing", body.passing.as_ref().map(Spanned::span)),
            ],
            "does not apply to source zookeeper: every instance node under the service is routed",
        );
        self.refuse_consul_keys(body);
        self.refuse_store_keys(body, "zookeeper");
        let hosts = match &body.hosts {
            Some(hosts) => match parse_zookeeper_hosts(hosts.get_ref()) {
                Ok(hosts) => hosts,
                Err(message) => {
                    self.error(hosts.span(), message);
                    String::new()
                }
            },
            None => {
                self.error(
                    section.span(),
                    "source zookeeper needs `hosts`, like \"127.0.0.1:2181,127.0.0.1:2182\"".into(),
                );
                String::new()
            }
        };
        let base_path = match &body.base_path {
            Some(path) => match check_zookeeper_path(path.get_ref()) {
                Ok(path) => path,
                Err(message) => {
                    self.error(path.span(), message);
                    String::new()
                }
            },
            None => DEFAULT_ZOOKEEPER_BASE_PATH.to_string(),
        };
        let service = match &body.service {
            Some(service) => {
                let name = service.get_ref();
                if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                    self.error(
                        service.span(),
                        format!("service `{name}` is not a ZooKeeper node name: not empty, no `/`"),
                    );
                }
                name.clone()
            }
            None => {
                self.error(
                    section.span(),
                    "source zookeeper needs `service`, the node under `base_path` its instances register in".into(),
                );
                String::new()
            }
        };
        let session_timeout = self.duration_or(
            &body.session_timeout,
            "session_timeout",
            DEFAULT_ZOOKEEPER_SESSION_TIMEOUT,
        );
        let (shortest, longest) = ZOOKEEPER_SESSION_RANGE;
        let session_timeout = match &body.session_timeout {
            Some(text) if session_timeout < shortest || session_timeout > longest => {
                self.error(text.span(), "session_timeout must be from 1s to 10m".into());
                DEFAULT_ZOOKEEPER_SESSION_TIMEOUT
            }
            _ => session_timeout,
        };
        DiscoverySource::Zookeeper {
            hosts,
            base_path,
            service,
            session_timeout,
        }
    }

    /// `source = "etcd"`: `endpoints` and `prefix` (required).
    fn etcd_source(&mut self, section: &Spanned<DiscoverySection>) -> DiscoverySource {
        let body = section.get_ref();
        self.refuse_registered_keys(body, "etcd");
        self.refuse(
            [
                ("service", body.service.as_ref().map(Spanned::span)),
                ("tag", body.tag.as_ref().map(Spanned::span)),
                ("passing", body.passing.as_ref().map(Spanned::span)),
            ],
            "does not apply to source etcd: every key under `prefix` is routed",
        );
        self.refuse_consul_keys(body);
        self.refuse_store_keys(body, "etcd");
        let endpoints = match &body.endpoints {
            Some(list) => {
                if list.get_ref().is_empty() {
                    self.error(
                        list.span(),
                        "endpoints must name at least one etcd, like \"http://127.0.0.1:2379\""
                            .into(),
                    );
                }
                list.get_ref()
                    .iter()
                    .filter_map(|endpoint| match parse_http_address(endpoint.get_ref()) {
                        Ok(url) => Some(url),
                        Err(_) => {
                            self.error(
                                endpoint.span(),
                                format!(
                                    "endpoint `{}` is not an etcd client URL like \"http://127.0.0.1:2379\" (scheme, host and port only)",
                                    endpoint.get_ref()
                                ),
                            );
                            None
                        }
                    })
                    .collect()
            }
            None => {
                self.error(
                    section.span(),
                    "source etcd needs `endpoints`, like [\"http://127.0.0.1:2379\"]".into(),
                );
                Vec::new()
            }
        };
        let prefix = match &body.prefix {
            Some(prefix) if !prefix.get_ref().is_empty() => prefix.get_ref().clone(),
            Some(prefix) => {
                self.error(prefix.span(), "prefix must not be empty".into());
                String::new()
            }
            None => {
                self.error(
                    section.span(),
                    "source etcd needs `prefix`, the start of the keys instances are written under, like \"/services/api/\"".into(),
                );
                String::new()
            }
        };
        DiscoverySource::Etcd { endpoints, prefix }
    }

    /// The DNS keys, refused for the sources whose instances register their
    /// own address, port and weight.
    fn refuse_registered_keys(&mut self, body: &DiscoverySection, kind: &str) {
        let why = format!(
            "does not apply to source {kind}: instances register their address, port and weights"
        );
        self.refuse(
            [
                ("name", body.name.as_ref().map(Spanned::span)),
                ("port", body.port.as_ref().map(Spanned::span)),
                ("family", body.family.as_ref().map(Spanned::span)),
                ("weight", body.weight.as_ref().map(Spanned::span)),
                ("resolvers", body.resolvers.as_ref().map(Spanned::span)),
                ("respect_ttl", body.respect_ttl.as_ref().map(Spanned::span)),
            ],
            &why,
        );
    }

    /// The keys of the zookeeper and etcd sources, refused for the others.
    fn refuse_store_keys(&mut self, body: &DiscoverySection, kind: &str) {
        if kind != "zookeeper" {
            self.refuse(
                [
                    ("hosts", body.hosts.as_ref().map(Spanned::span)),
                    ("base_path", body.base_path.as_ref().map(Spanned::span)),
                    (
                        "session_timeout",
                        body.session_timeout.as_ref().map(Spanned::span),
                    ),
                ],
                "applies only to source zookeeper",
            );
        }
        if kind != "etcd" {
            self.refuse(
                [
                    ("endpoints", body.endpoints.as_ref().map(Spanned::span)),
                    ("prefix", body.prefix.as_ref().map(Spanned::span)),
                ],
                "applies only to source etcd",
            );
        }
    }

    /// An error for each key of `keys` that is present: `` `key` why``.
    fn refuse<'k>(
        &mut self,
        keys: impl IntoIterator<Item = (&'k str, Option<std::ops::Range<usize>>)>,
        why: &str,
    ) {
        for (key, span) in keys {
            if let Some(span) = span {
                self.error(span, format!("`{key}` {why}"));
            }
        }
    }

    /// The keys only the remote catalogs (consul, eureka) take, refused for
    /// the others.
    fn refuse_consul_keys(&mut self, body: &DiscoverySection) {
        self.refuse(
            [
                ("address", body.address.as_ref().map(Spanned::span)),
                ("token", body.token.as_ref().map(Spanned::span)),
                ("token_file", body.token_file.as_ref().map(Spanned::span)),
            ],
            "applies only to sources consul and eureka",
        );
        self.refuse(
            [
                ("datacenter", body.datacenter.as_ref().map(Spanned::span)),
                ("wait", body.wait.as_ref().map(Spanned::span)),
                ("stale", body.stale.as_ref().map(Spanned::span)),
            ],
            "applies only to source consul",
        );
    }

    /// `address`: for consul `http://host:port` or `https://host:port`; for
    /// eureka the service URL with its path (`http://host:8761/eureka`);
    /// kept without a trailing slash.
    fn source_address(&mut self, section: &Spanned<DiscoverySection>, kind: &str) -> String {
        let Some(address) = &section.get_ref().address else {
            let example = if kind == "eureka" {
                "the service URL, like \"http://127.0.0.1:8761/eureka\""
            } else {
                "the agent's HTTP API, like \"http://127.0.0.1:8500\""
            };
            self.error(
                section.span(),
                format!("source {kind} needs `address`, {example}"),
            );
            return String::new();
        };
        let parsed = if kind == "eureka" {
            parse_eureka_address(address.get_ref())
        } else {
            parse_http_address(address.get_ref())
        };
        match parsed {
            Ok(address) => address,
            Err(message) => {
                self.error(address.span(), message);
                String::new()
            }
        }
    }

    fn consul_datacenter(&mut self, datacenter: &Option<Spanned<String>>) -> Option<String> {
        let datacenter = datacenter.as_ref()?;
        let text = datacenter.get_ref();
        let valid = !text.is_empty()
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !valid {
            self.error(
                datacenter.span(),
                format!("datacenter `{text}` is not a datacenter name: letters, digits, `-`, `_` and `.`"),
            );
        }
        Some(text.clone())
    }

    /// `token`, or the first line of `token_file` (relative to the config
    /// file's directory), read now. Messages never quote the token.
    fn source_token(&mut self, body: &DiscoverySection) -> Option<String> {
        let (token, span) = match (&body.token, &body.token_file) {
            (None, None) => return None,
            (Some(_), Some(file)) => {
                self.error(file.span(), "give `token` or `token_file`, not both".into());
                return None;
            }
            (Some(token), None) => (token.get_ref().clone(), token.span()),
            (None, Some(file)) => {
                let path = self.config_path(file.get_ref());
                match std::fs::read_to_string(&path) {
                    Ok(text) => (text.trim().to_string(), file.span()),
                    Err(error) => {
                        self.error(
                            file.span(),
                            format!("cannot read token_file {}: {error}", path.display()),
                        );
                        return None;
                    }
                }
            }
        };
        if token.is_empty() {
            self.error(span, "the token must not be empty".into());
            return None;
        }
        if http::HeaderValue::from_str(&token).is_err() || token.contains(char::is_whitespace) {
            self.error(
                span,
                "the token must be one line of visible ASCII characters".into(),
            );
            return None;
        }
        Some(token)
    }

    fn consul_wait(&mut self, wait: &Option<Spanned<DurationText>>) -> Duration {
        let value = self.duration_or(wait, "wait", DEFAULT_CONSUL_WAIT);
        let (shortest, longest) = CONSUL_WAIT_RANGE;
        match wait {
            Some(text) if value < shortest || value > longest => {
                self.error(text.span(), "wait must be from 1s to 10m".into());
                DEFAULT_CONSUL_WAIT
            }
            _ => value,
        }
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

/// `http://127.0.0.1:8500/` -> `http://127.0.0.1:8500`: a scheme of http or
/// https, a host, an optional port, nothing else.
/// `http://host:port` or `https://host:port` (no path), kept without a
/// trailing slash: Consul agents, etcd endpoints.
pub(super) fn parse_http_address(text: &str) -> Result<String, String> {
    let refused = || {
        format!("address `{text}` is not an HTTP address like \"http://127.0.0.1:8500\" (scheme, host and port only)")
    };
    let uri: http::Uri = text.parse().map_err(|_| refused())?;
    let scheme = uri.scheme_str().ok_or_else(refused)?;
    if scheme != "http" && scheme != "https" {
        return Err(format!(
            "address `{text}`: the scheme must be http or https"
        ));
    }
    let authority = uri.authority().ok_or_else(refused)?;
    let bare = authority.as_str().contains('@')
        || authority.host().is_empty()
        || uri.query().is_some()
        || !matches!(uri.path(), "" | "/");
    if bare {
        return Err(refused());
    }
    Ok(format!("{scheme}://{authority}"))
}

/// A Eureka service URL: `http(s)://host:port/path`, no credentials or
/// query; kept without a trailing slash.
fn parse_eureka_address(text: &str) -> Result<String, String> {
    let refused = || {
        format!(
            "address `{text}` is not a Eureka service URL like \"http://127.0.0.1:8761/eureka\""
        )
    };
    let uri: http::Uri = text.parse().map_err(|_| refused())?;
    let scheme = uri.scheme_str().ok_or_else(refused)?;
    if scheme != "http" && scheme != "https" {
        return Err(format!(
            "address `{text}`: the scheme must be http or https"
        ));
    }
    let authority = uri.authority().ok_or_else(refused)?;
    if authority.as_str().contains('@') {
        return Err(format!(
            "address `{text}`: put the password in `token` or `token_file`, not in the URL"
        ));
    }
    if authority.host().is_empty() || uri.query().is_some() {
        return Err(refused());
    }
    Ok(format!(
        "{scheme}://{authority}{}",
        uri.path().trim_end_matches('/')
    ))
}

/// `zk1:2181, zk2` -> `zk1:2181,zk2:2181`: hosts with optional ports
/// (2181 by default), comma-separated; no chroot (that is `base_path`).
fn parse_zookeeper_hosts(text: &str) -> Result<String, String> {
    let refused = |why: &str| {
        format!("hosts `{text}` is not a list of host:port like \"127.0.0.1:2181,127.0.0.1:2182\": {why}")
    };
    if text.contains('/') {
        return Err(refused("no path or scheme: give the path in `base_path`"));
    }
    let mut hosts = Vec::new();
    for host in text.split(',').map(str::trim) {
        if host.is_empty() {
            return Err(refused("an empty host"));
        }
        // `[::1]:2181`, `::1` (no port), `host:2181`, `host`.
        let (name, port) = if let Some(rest) = host.strip_prefix('[') {
            let (name, after) = rest
                .split_once(']')
                .ok_or_else(|| refused("an unclosed `[`"))?;
            match after.strip_prefix(':') {
                Some(port) => (name, Some(port)),
                None if after.is_empty() => (name, None),
                None => return Err(refused(&format!("`{host}`"))),
            }
        } else if host.matches(':').count() > 1 {
            (host, None)
        } else {
            match host.split_once(':') {
                Some((name, port)) => (name, Some(port)),
                None => (host, None),
            }
        };
        let port = match port {
            Some(port) => match port.parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => return Err(refused(&format!("the port of `{host}` is not 1-65535"))),
            },
            None => ZOOKEEPER_PORT,
        };
        let valid_name = !name.is_empty()
            && (name.parse::<IpAddr>().is_ok() || check_dns_name(name, false).is_ok());
        if !valid_name {
            return Err(refused(&format!(
                "`{name}` is not a host name or IP address"
            )));
        }
        hosts.push(if name.contains(':') {
            format!("[{name}]:{port}")
        } else {
            format!("{name}:{port}")
        });
    }
    Ok(hosts.join(","))
}

/// A ZooKeeper path: absolute, no empty, `.` or `..` segment, no trailing
/// slash (but `/` itself).
fn check_zookeeper_path(text: &str) -> Result<String, String> {
    let valid = text == "/"
        || (text.starts_with('/')
            && text[1..]
                .split('/')
                .all(|segment| !segment.is_empty() && segment != "." && segment != ".."));
    if valid {
        Ok(text.to_string())
    } else {
        Err(format!(
            "base_path `{text}` is not a ZooKeeper path like \"/services\": absolute, without a trailing `/`"
        ))
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
    fn consul_addresses_are_scheme_host_and_port() {
        assert_eq!(
            parse_http_address("http://127.0.0.1:8500/").as_deref(),
            Ok("http://127.0.0.1:8500")
        );
        assert_eq!(
            parse_http_address("https://consul.internal:8501").as_deref(),
            Ok("https://consul.internal:8501")
        );
        assert!(parse_http_address("127.0.0.1:8500").is_err());
        assert!(parse_http_address("ftp://127.0.0.1:8500").is_err());
        assert!(parse_http_address("http://127.0.0.1:8500/v1").is_err());
        assert!(parse_http_address("http://user:pw@127.0.0.1:8500").is_err());
        assert!(parse_http_address("http://127.0.0.1:8500?dc=a").is_err());
    }

    #[test]
    fn eureka_addresses_keep_their_path() {
        assert_eq!(
            parse_eureka_address("http://127.0.0.1:8761/eureka/").as_deref(),
            Ok("http://127.0.0.1:8761/eureka")
        );
        assert_eq!(
            parse_eureka_address("https://eureka.internal/eureka/v2").as_deref(),
            Ok("https://eureka.internal/eureka/v2")
        );
        assert!(parse_eureka_address("http://user:pw@127.0.0.1:8761/eureka")
            .unwrap_err()
            .contains("token"));
        assert!(parse_eureka_address("127.0.0.1:8761").is_err());
        assert!(parse_eureka_address("http://127.0.0.1:8761/eureka?x=1").is_err());
    }

    #[test]
    fn zookeeper_hosts_take_a_default_port() {
        assert_eq!(
            parse_zookeeper_hosts("127.0.0.1:2181, zk2 ,[::1]:2182,::1").as_deref(),
            Ok("127.0.0.1:2181,zk2:2181,[::1]:2182,[::1]:2181")
        );
        assert!(parse_zookeeper_hosts("127.0.0.1:2181/chroot").is_err());
        assert!(parse_zookeeper_hosts("127.0.0.1:0").is_err());
        assert!(parse_zookeeper_hosts("a,,b").is_err());
        assert!(parse_zookeeper_hosts("").is_err());
        assert!(parse_zookeeper_hosts("bad host:2181").is_err());
    }

    #[test]
    fn zookeeper_paths_are_absolute() {
        assert!(check_zookeeper_path("/services").is_ok());
        assert!(check_zookeeper_path("/a/b").is_ok());
        assert!(check_zookeeper_path("/").is_ok());
        assert!(check_zookeeper_path("services").is_err());
        assert!(check_zookeeper_path("/services/").is_err());
        assert!(check_zookeeper_path("/a//b").is_err());
        assert!(check_zookeeper_path("/a/../b").is_err());
        assert_eq!(zookeeper_service_path("/", "api"), "/api");
        assert_eq!(zookeeper_service_path("/services", "api"), "/services/api");
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
