//! The `dns` and `srv` sources: one lookup through hickory-resolver, with
//! its cache off (every refresh asks the servers) and the answer sorted into
//! servers, an authoritative "none", or a failure.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{ResolveError, TokioResolver};

use super::Answer;
use crate::config::{AddressFamily, DiscoverySource, ResolverSettings, Server, MAX_WEIGHT};

/// A DNS source, ready to ask.
pub struct DnsSource {
    resolver: TokioResolver,
    query: Query,
}

/// What a DNS source asks.
enum Query {
    Addresses {
        name: String,
        port: u16,
        weight: u32,
    },
    Srv {
        name: String,
    },
}

impl DnsSource {
    /// Builds the resolver for `source`; fails when the system's resolver
    /// configuration is needed and cannot be read.
    pub fn new(source: &DiscoverySource, timeout: Duration) -> Result<DnsSource, String> {
        let (settings, family, query) = match source {
            DiscoverySource::Dns {
                resolver,
                family,
                name,
                port,
                weight,
            } => (
                resolver,
                *family,
                Query::Addresses {
                    name: name.clone(),
                    port: *port,
                    weight: *weight,
                },
            ),
            DiscoverySource::Srv { resolver, name } => (
                resolver,
                AddressFamily::Any,
                Query::Srv { name: name.clone() },
            ),
            DiscoverySource::Registry { .. }
            | DiscoverySource::Consul { .. }
            | DiscoverySource::Eureka { .. }
            | DiscoverySource::Zookeeper { .. }
            | DiscoverySource::Etcd { .. } => return Err("not a DNS source".into()),
        };
        let (config, mut options) = resolver_config(settings)?;
        options.cache_size = 0;
        options.timeout = timeout;
        options.attempts = 1;
        options.use_hosts_file = ResolveHosts::Never;
        options.ip_strategy = match family {
            AddressFamily::Any => LookupIpStrategy::Ipv4AndIpv6,
            AddressFamily::Ipv4 => LookupIpStrategy::Ipv4Only,
            AddressFamily::Ipv6 => LookupIpStrategy::Ipv6Only,
        };
        let resolver =
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
                .with_options(options)
                .build();
        Ok(DnsSource { resolver, query })
    }

    /// Asks once.
    pub async fn lookup(&self) -> Answer {
        match &self.query {
            Query::Addresses { name, port, weight } => {
                match self.resolver.lookup_ip(name.as_str()).await {
                    Ok(found) => {
                        let servers = found
                            .iter()
                            .map(|ip| Server {
                                addr: SocketAddr::new(ip, *port).to_string(),
                                weight: *weight,
                            })
                            .collect();
                        Answer::found(servers, found.valid_until())
                    }
                    Err(error) => failure_or_none(name, &error),
                }
            }
            Query::Srv { name } => self.lookup_srv(name).await,
        }
    }

    /// SRV records of the lowest priority present; each target's addresses
    /// from the answer's additional section, else looked up.
    async fn lookup_srv(&self, name: &str) -> Answer {
        let found = match self.resolver.srv_lookup(name).await {
            Ok(found) => found,
            Err(error) => return failure_or_none(name, &error),
        };
        let Some(lowest) = found.iter().map(|srv| srv.priority()).min() else {
            return Answer::None(format!("no SRV records for {name}"));
        };
        let mut valid_until = found.as_lookup().valid_until();
        let mut additional: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
        for record in found.as_lookup().records() {
            let ip = match record.data() {
                RData::A(a) => IpAddr::V4(a.0),
                RData::AAAA(aaaa) => IpAddr::V6(aaaa.0),
                _ => continue,
            };
            additional
                .entry(record.name().to_ascii().to_ascii_lowercase())
                .or_default()
                .push(ip);
        }
        let mut servers = Vec::new();
        for srv in found.iter().filter(|srv| srv.priority() == lowest) {
            let target = srv.target().to_ascii().to_ascii_lowercase();
            let addresses = match additional.get(&target) {
                Some(addresses) => addresses.clone(),
                None => match self.resolver.lookup_ip(srv.target().clone()).await {
                    Ok(ips) => {
                        valid_until = valid_until.min(ips.valid_until());
                        ips.iter().collect()
                    }
                    Err(error) if is_authoritative_none(&error) => Vec::new(),
                    Err(error) => {
                        return Answer::Failed(format!("SRV target {target} of {name}: {error}"))
                    }
                },
            };
            // SRV weight 0 means "rarely"; a server weight must be at least 1.
            let weight = u32::from(srv.weight()).clamp(1, MAX_WEIGHT);
            servers.extend(addresses.into_iter().map(|ip| Server {
                addr: SocketAddr::new(ip, srv.port()).to_string(),
                weight,
            }));
        }
        Answer::found(servers, valid_until)
    }
}

/// The resolver's servers: those listed (over UDP, then TCP for a truncated
/// answer), or /etc/resolv.conf's.
fn resolver_config(settings: &ResolverSettings) -> Result<(ResolverConfig, ResolverOpts), String> {
    if settings.resolvers.is_empty() {
        return hickory_resolver::system_conf::read_system_conf()
            .map_err(|error| format!("cannot read /etc/resolv.conf: {error}"));
    }
    let mut config = ResolverConfig::new();
    for &addr in &settings.resolvers {
        for protocol in [Protocol::Udp, Protocol::Tcp] {
            let mut server = NameServerConfig::new(addr, protocol);
            server.trust_negative_responses = true;
            config.add_name_server(server);
        }
    }
    Ok((config, ResolverOpts::default()))
}

/// NXDOMAIN or NOERROR with no records: the name truly has none. Anything
/// else (timeout, SERVFAIL, REFUSED, no server reachable) is a failure.
fn is_authoritative_none(error: &ResolveError) -> bool {
    let Some(proto) = error.proto() else {
        return false;
    };
    match proto.kind() {
        hickory_resolver::proto::ProtoErrorKind::NoRecordsFound { response_code, .. } => {
            matches!(
                *response_code,
                ResponseCode::NXDomain | ResponseCode::NoError
            )
        }
        _ => false,
    }
}

fn failure_or_none(name: &str, error: &ResolveError) -> Answer {
    if is_authoritative_none(error) {
        Answer::None(format!("{name}: {error}"))
    } else {
        Answer::Failed(format!("{name}: {error}"))
    }
}

impl Answer {
    /// Servers found, sorted by address so every instance fed the same set
    /// orders (and hashes) it alike; duplicates dropped.
    fn found(mut servers: Vec<Server>, valid_until: Instant) -> Answer {
        if servers.is_empty() {
            return Answer::None("an answer without addresses".into());
        }
        servers.sort_by(|a, b| a.addr.cmp(&b.addr));
        servers.dedup_by(|a, b| a.addr == b.addr);
        Answer::Found {
            servers,
            ttl: valid_until.saturating_duration_since(Instant::now()),
        }
    }
}
