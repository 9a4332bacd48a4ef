//! Configuration: the TOML file (`file`), every error in its shape (`shape`),
//! its validation into typed values (`validate`), and the typed `Config` the
//! rest of the proxy is built from.

mod discovery;
mod file;
mod registry;
mod serialize;
mod shape;
mod tls;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::tls::{CaBundle, CertStore};

pub use discovery::{
    zookeeper_service_path, AddressFamily, Discovery, DiscoverySource, ResolverSettings,
    DEFAULT_DISCOVERY_TIMEOUT, DEFAULT_REFRESH,
};
pub use registry::{Registry, DEFAULT_MAX_BODY, DEFAULT_MAX_SERVICES};
pub use validate::{
    parse_config, parse_config_at, strategy_by_name, DEFAULT_EWMA_DECAY, MAX_WEIGHT,
};

/// A validated configuration with every default applied.
///
/// It serializes (to JSON, say) with the file's key names, durations as
/// `5s` and secrets as fingerprints: the reload's change list compares two
/// configs that way, so every field is covered without listing it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    /// Where the config was read from (`None` for the embedded demo config).
    #[serde(skip)]
    pub path: Option<PathBuf>,
    pub global: Global,
    pub admin: Option<Admin>,
    pub listeners: Vec<Listener>,
    pub vhosts: Vec<Vhost>,
    pub upstreams: Vec<Upstream>,
    /// The built-in service registry, served on the admin listener.
    pub registry: Option<Registry>,
    /// Things that are allowed but probably not what the user meant.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Global {
    #[serde(serialize_with = "serialize::duration")]
    pub shutdown_timeout: Duration,
    #[serde(serialize_with = "serialize::duration")]
    pub header_read_timeout: Duration,
    #[serde(serialize_with = "serialize::duration")]
    pub idle_timeout: Duration,
    /// Each write to a client must make progress within this.
    #[serde(serialize_with = "serialize::duration")]
    pub send_timeout: Duration,
    /// Each read of a request body must bring bytes within this.
    #[serde(serialize_with = "serialize::duration")]
    pub client_body_timeout: Duration,
    /// Bytes per second a request body must average; `None`: no minimum.
    pub client_body_min_rate: Option<u64>,
    pub max_connections: usize,
    pub max_request_header_size: usize,
    /// `None` means unlimited (`0` in the file).
    pub max_request_body: Option<u64>,
}

impl Default for Global {
    fn default() -> Self {
        Global {
            shutdown_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            client_body_timeout: Duration::from_secs(60),
            client_body_min_rate: None,
            max_connections: 10_000,
            max_request_header_size: 64 * 1024,
            max_request_body: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Admin {
    pub listen: SocketAddr,
    #[serde(serialize_with = "serialize::secret")]
    pub token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Listener {
    pub name: String,
    pub listen: SocketAddr,
    pub tls: Option<ListenerTls>,
    /// `redirect_https`: every request gets a 308 to https on this port.
    pub redirect_https: Option<u16>,
}

/// TLS termination on a listener.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ListenerTls {
    /// Chosen by SNI; the first is the default for clients without SNI or
    /// with a name no certificate has.
    #[serde(serialize_with = "serialize::certificates")]
    pub certs: Arc<CertStore>,
    #[serde(serialize_with = "serialize::duration")]
    pub handshake_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Vhost {
    pub name: String,
    #[serde(serialize_with = "serialize::displayed_list")]
    pub hosts: Vec<HostPattern>,
    /// Names of the listeners this vhost is served on (all of them by default).
    pub listeners: Vec<String>,
    pub routes: Vec<Route>,
}

/// How a vhost claims a Host header: exact name, `*.suffix`, or `*`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HostPattern {
    /// Lower-cased full name.
    Exact(String),
    /// Lower-cased suffix including its leading dot: `*.shop.example.com` is `.shop.example.com`.
    Suffix(String),
    /// `*`: any host that no other vhost names.
    Any,
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(name) => f.write_str(name),
            HostPattern::Suffix(suffix) => write!(f, "*{suffix}"),
            HostPattern::Any => f.write_str("*"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Route {
    pub path: String,
    pub upstream: String,
    pub strip_prefix: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Upstream {
    pub name: String,
    #[serde(serialize_with = "serialize::strategy")]
    pub strategy: StrategyKind,
    pub servers: Vec<Server>,
    #[serde(serialize_with = "serialize::duration")]
    pub connect_timeout: Duration,
    #[serde(serialize_with = "serialize::duration")]
    pub timeout: Duration,
    pub retries: u32,
    /// `None` means unlimited (`0` in the file).
    pub max_connections_per_server: Option<u32>,
    /// Set when the strategy is `consistent_hash`.
    #[serde(flatten)]
    pub hash: Option<HashSettings>,
    pub health_check: Option<HealthCheck>,
    pub outlier: Option<Outlier>,
    #[serde(flatten)]
    pub transport: Transport,
    /// Servers found at run time, beside `servers`.
    pub discovery: Option<Discovery>,
}

/// How usherd talks to an upstream's servers.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Transport {
    #[serde(serialize_with = "serialize::protocol")]
    pub protocol: UpstreamProtocol,
    pub tls: Option<UpstreamTls>,
}

/// The HTTP version spoken to an upstream's servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    /// HTTP/2 over TLS.
    H2,
    /// HTTP/2 over cleartext TCP, with prior knowledge.
    H2c,
}

impl UpstreamProtocol {
    pub fn name(self) -> &'static str {
        match self {
            UpstreamProtocol::Http1 => "http1",
            UpstreamProtocol::H2 => "h2",
            UpstreamProtocol::H2c => "h2c",
        }
    }
}

/// TLS to an upstream's servers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UpstreamTls {
    /// The name sent as SNI and verified; default: the host of each server's address.
    pub server_name: Option<String>,
    /// Roots to verify against; `None`: the system's roots.
    #[serde(rename = "ca_file", serialize_with = "serialize::ca_bundle")]
    pub ca: Option<CaBundle>,
    pub insecure_skip_verify: bool,
}

/// What `consistent_hash` hashes, and its bounded-load factor.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HashSettings {
    #[serde(rename = "hash_key", serialize_with = "serialize::displayed")]
    pub key: HashKey,
    /// A server above this factor x the pool's average in-flight is passed
    /// over for the next one on the ring (consistent hashing with bounded loads).
    #[serde(rename = "hash_balance_factor")]
    pub balance_factor: Option<f64>,
}

/// The request property `consistent_hash` hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    ClientIp,
    Header(http::HeaderName),
    Cookie(String),
    Path,
}

impl std::fmt::Display for HashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HashKey::ClientIp => f.write_str("client_ip"),
            HashKey::Header(name) => write!(f, "header:{name}"),
            HashKey::Cookie(name) => write!(f, "cookie:{name}"),
            HashKey::Path => f.write_str("path"),
        }
    }
}

/// Active health checks of an upstream's servers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthCheck {
    pub path: String,
    #[serde(serialize_with = "serialize::duration")]
    pub interval: Duration,
    #[serde(serialize_with = "serialize::duration")]
    pub timeout: Duration,
    /// Consecutive passes that mark a server healthy.
    pub rise: u32,
    /// Consecutive failures that mark a server unhealthy.
    pub fall: u32,
    /// Inclusive ranges of statuses that pass.
    #[serde(serialize_with = "serialize::status_ranges")]
    pub expect_status: Vec<(u16, u16)>,
}

impl HealthCheck {
    pub fn passes(&self, status: u16) -> bool {
        self.expect_status
            .iter()
            .any(|&(low, high)| (low..=high).contains(&status))
    }
}

/// Passive ejection of servers failing live traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Outlier {
    pub consecutive_failures: u32,
    #[serde(serialize_with = "serialize::duration")]
    pub ejection_time: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Server {
    /// `host:port` exactly as written; names are resolved by DNS when connecting.
    pub addr: String,
    pub weight: u32,
}

/// The balancing strategies a config can name (docs/strategies.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrategyKind {
    RoundRobin,
    Random,
    Weighted,
    WeightedRandom,
    LeastConnections,
    /// Power of two random choices by peak-EWMA latency; the decay time.
    PeakEwma {
        decay: Duration,
    },
    ConsistentHash,
}

impl StrategyKind {
    pub fn name(self) -> &'static str {
        match self {
            StrategyKind::RoundRobin => "round_robin",
            StrategyKind::Random => "random",
            StrategyKind::Weighted => "weighted",
            StrategyKind::WeightedRandom => "weighted_random",
            StrategyKind::LeastConnections => "least_connections",
            StrategyKind::PeakEwma { .. } => "peak_ewma",
            StrategyKind::ConsistentHash => "consistent_hash",
        }
    }
}

/// One problem in a config file, located by line and column (both 1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            return write!(f, "{}: {}", self.file, self.message);
        }
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// Every problem found in a config file, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let display = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| {
        ConfigErrors(vec![ConfigError {
            file: display.clone(),
            line: 0,
            column: 0,
            message: format!("cannot read the file: {error}"),
        }])
    })?;
    let mut config = parse_config(&text, &display)?;
    config.path = Some(path.to_path_buf());
    Ok(config)
}
