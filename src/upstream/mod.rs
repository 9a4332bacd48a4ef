//! Upstream pools: the servers of one upstream, their live counters and
//! health, their pooled keep-alive connections, the retry budget, and the
//! strategy that picks among the servers available now.
//!
//! A pool is immutable; a reload builds a new one. What must outlive a reload
//! for a server that stays (same upstream name and address) is shared with
//! the previous pool: its counters, its health (checks and ejection), and its
//! client with the idle keep-alive connections; the strategy continues from
//! its position and the upstream keeps its retry budget.

mod checks;
pub mod h1;
mod health;
mod outlier;
mod retry_budget;
mod transport;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use hyper_util::client::legacy::Client;
use tokio::sync::Notify;

use crate::balance::{Balancer, Loads, PeakEwma};
use crate::body::UpstreamBody;
use crate::config::{self, HashKey, HealthCheck, Outlier, StrategyKind};
use crate::error::ProxyError;
use crate::stats::{LatencyHistogram, StatusClasses};

pub use checks::spawn_checks;
pub use h1::Http1Pool;
pub use health::{clock_ns, CheckReport, EndpointHealth, LazyNow};
pub use retry_budget::RetryBudget;
pub use transport::{PoolSettings, ServerConnector, Transport};

/// How long an idle pooled upstream connection is kept (hyper-util's default).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Weights set through the admin API: upstream name -> server address ->
/// weight. They win over the config's while the server stays in it.
pub type WeightOverrides = HashMap<String, HashMap<String, u32>>;

/// What sets an upstream's servers at run time besides its config: weights
/// set through the admin API, and the servers discovery found (by upstream
/// name, sorted by address; no entry yet: discovery has not answered).
#[derive(Debug, Default, Clone)]
pub struct RuntimeServers {
    pub weight_overrides: WeightOverrides,
    pub discovered: HashMap<String, Arc<[config::Server]>>,
}

/// hyper-util's client for one HTTP/2 server.
pub type Http2Client = Client<ServerConnector, UpstreamBody>;

/// How one server is reached, by its upstream's `protocol`: HTTP/1.1
/// connections of our own and their pool (`h1.rs`), or hyper-util's client
/// for HTTP/2 (h2 over TLS, or h2c). Both kinds of client connection use the
/// same one, so a server has one pool of idle connections.
#[derive(Debug, Clone)]
pub enum ServerClient {
    Http1(Arc<Http1Pool>),
    /// Boxed: hyper-util's client is large, and most servers speak HTTP/1.1.
    Http2(Box<Http2Client>),
}

impl ServerClient {
    /// The HTTP/1.1 pool, for an `http1` upstream.
    pub fn http1(&self) -> Option<&Arc<Http1Pool>> {
        match self {
            ServerClient::Http1(pool) => Some(pool),
            ServerClient::Http2(_) => None,
        }
    }
}

/// One upstream pool, immutable once built.
#[derive(Debug)]
pub struct Upstream {
    pub name: Arc<str>,
    pub strategy: StrategyKind,
    pub balancer: Balancer,
    pub endpoints: Vec<Arc<Endpoint>>,
    pub timeout: Duration,
    /// How long a request waits for a server under its connection limit
    /// (as HAProxy's `timeout queue`, which defaults to `timeout connect`).
    pub queue_timeout: Duration,
    pub retries: u32,
    pub max_connections_per_server: Option<u32>,
    pub health_check: Option<HealthCheck>,
    pub outlier: Option<Outlier>,
    pub retry_budget: Arc<RetryBudget>,
    /// HTTP version and TLS towards the servers.
    pub transport: Arc<Transport>,
    /// What `consistent_hash` hashes.
    pub hash_key: Option<HashKey>,
    /// Requests in flight to the whole pool, kept for bounded-load hashing.
    pool_in_flight: Option<Arc<AtomicU64>>,
    /// Signalled when a server with a connection limit frees a slot.
    slot_freed: Option<Arc<Notify>>,
    /// What a request is told when the pool has no server at all.
    pub when_empty: ProxyError,
}

impl Upstream {
    /// Builds the pool of `config`; `previous` is the same upstream before a
    /// reload or a discovery update, whose servers that stay (same address)
    /// keep their state; `runtime` adds discovered servers and admin weights.
    pub fn build(
        config: &config::Upstream,
        previous: Option<&Upstream>,
        runtime: &RuntimeServers,
    ) -> Upstream {
        let discovered = runtime.discovered.get(&config.name);
        let configured = servers_of(config, discovered.map(|d| &d[..]));
        let servers: Cow<'_, [Configured]> = match runtime.weight_overrides.get(&config.name) {
            None => Cow::Borrowed(&configured),
            Some(weights) => Cow::Owned(
                configured
                    .iter()
                    .map(|c| Configured {
                        server: config::Server {
                            addr: c.server.addr.clone(),
                            weight: weights
                                .get(&c.server.addr)
                                .copied()
                                .unwrap_or(c.server.weight),
                        },
                        discovered: c.discovered,
                    })
                    .collect(),
            ),
        };
        let when_empty = match (configured.is_empty(), &config.discovery, discovered) {
            (true, Some(_), None) => ProxyError::DiscoveryPending,
            (true, Some(_), Some(_)) => ProxyError::NoneDiscovered,
            _ => ProxyError::NoServer,
        };
        let weights: Vec<config::Server> = servers.iter().map(|c| c.server.clone()).collect();
        let balancer = Balancer::new(config.strategy, &weights, config.hash.as_ref());
        if let Some(previous) = previous {
            balancer.continue_from(&previous.balancer);
        }
        let slot_freed = config
            .max_connections_per_server
            .map(|_| Arc::new(Notify::new()));
        let pool_in_flight = config
            .hash
            .as_ref()
            .and_then(|hash| hash.balance_factor)
            .map(|_| {
                previous
                    .and_then(|p| p.pool_in_flight.clone())
                    .unwrap_or_default()
            });
        let transport = match previous {
            Some(previous) if previous.transport.settings == config.transport => {
                Arc::clone(&previous.transport)
            }
            _ => Arc::new(Transport::new(&config.name, &config.transport)),
        };
        let endpoints = servers
            .iter()
            .zip(configured.iter())
            .map(|(chosen, configured)| {
                let before = previous.and_then(|p| p.endpoint(&chosen.server.addr));
                let endpoint = Endpoint::new(
                    chosen,
                    configured.server.weight,
                    config.connect_timeout,
                    &transport,
                    before,
                    slot_freed.clone(),
                    pool_in_flight.clone(),
                );
                if config.health_check.is_none() {
                    endpoint.health.forget_checks();
                } else if before.is_none() && chosen.discovered {
                    endpoint.health.await_first_pass();
                }
                Arc::new(endpoint)
            })
            .collect();
        Upstream {
            name: Arc::from(config.name.as_str()),
            strategy: config.strategy,
            balancer,
            endpoints,
            timeout: config.timeout,
            queue_timeout: config.connect_timeout,
            retries: config.retries,
            max_connections_per_server: config.max_connections_per_server,
            health_check: config.health_check.clone(),
            outlier: config.outlier,
            retry_budget: previous.map_or_else(Default::default, |p| Arc::clone(&p.retry_budget)),
            transport,
            hash_key: config.hash.as_ref().map(|hash| hash.key.clone()),
            pool_in_flight,
            slot_freed,
            when_empty,
        }
    }

    /// Records how long `index` took to send its response head, for `peak_ewma`.
    pub fn observe_latency(&self, index: usize, rtt: Duration) {
        if let StrategyKind::PeakEwma { decay } = self.strategy {
            self.endpoints[index]
                .stats
                .latency
                .observe(rtt, decay, clock_ns());
        }
    }

    /// Whether `observe_latency` is worth a clock read.
    pub fn tracks_latency(&self) -> bool {
        matches!(self.strategy, StrategyKind::PeakEwma { .. })
    }

    /// The server with this address, if the pool has it.
    pub fn endpoint(&self, addr: &str) -> Option<&Arc<Endpoint>> {
        self.endpoints.iter().find(|e| &*e.addr == addr)
    }

    /// Picks a server that is available now (healthy, not ejected, under its
    /// connection limit) and that `tried` does not name (retries go to a
    /// different server).
    /// `key` is the hash of the request's key, for `consistent_hash`.
    ///
    /// Servers that have since left the upstream (a request holding an older
    /// snapshot) are taken only when none that stayed is available, and never
    /// for a retry: a request must not fail for starting just before a change.
    pub fn pick(&self, key: Option<u64>, tried: &[usize]) -> Option<usize> {
        let mut now = LazyNow::default();
        let picked = self.balancer.pick(key, self, |index| {
            !tried.contains(&index) && self.is_available(index, &mut now)
        });
        if picked.is_some() || !tried.is_empty() {
            return picked;
        }
        self.balancer.pick(key, self, |index| {
            self.endpoints[index]
                .health
                .is_available_if_retired(&mut now)
                && self.under_limit(index)
        })
    }

    /// As `pick`, but when every such server is only full, waits up to
    /// `queue_timeout` for a slot; `None` then means 503.
    pub async fn pick_or_wait(&self, key: Option<u64>, tried: &[usize]) -> Option<usize> {
        if let Some(index) = self.pick(key, tried) {
            return Some(index);
        }
        let slot_freed = self.slot_freed.as_ref()?;
        let deadline = tokio::time::Instant::now() + self.queue_timeout;
        loop {
            let freed = slot_freed.notified();
            tokio::pin!(freed);
            // Registered before looking again, so no release is missed.
            freed.as_mut().enable();
            if let Some(index) = self.pick(key, tried) {
                return Some(index);
            }
            if !self.any_healthy_but_full(tried) {
                return None;
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return None;
            }
        }
    }

    /// Whether any server other than those `tried` is available now.
    pub fn any_available(&self, tried: &[usize]) -> bool {
        let mut now = LazyNow::default();
        (0..self.endpoints.len())
            .any(|index| !tried.contains(&index) && self.is_available(index, &mut now))
    }

    fn any_healthy_but_full(&self, tried: &[usize]) -> bool {
        let mut now = LazyNow::default();
        self.endpoints
            .iter()
            .enumerate()
            .any(|(index, e)| !tried.contains(&index) && e.health.is_available(&mut now))
    }

    #[inline]
    fn is_available(&self, index: usize, now: &mut LazyNow) -> bool {
        self.endpoints[index].health.is_available(now) && self.under_limit(index)
    }

    #[inline]
    fn under_limit(&self, index: usize) -> bool {
        self.max_connections_per_server
            .is_none_or(|limit| self.endpoints[index].stats.in_flight() < u64::from(limit))
    }
}

impl Loads for Upstream {
    fn in_flight(&self, server: usize) -> u64 {
        self.endpoints[server].stats.in_flight()
    }

    fn latency_estimate(&self, server: usize) -> f64 {
        match self.strategy {
            StrategyKind::PeakEwma { decay } => self.endpoints[server]
                .stats
                .latency
                .estimate(decay, clock_ns()),
            _ => 0.0,
        }
    }

    fn pool_in_flight(&self) -> u64 {
        self.pool_in_flight
            .as_ref()
            .map_or(0, |count| count.load(Ordering::Relaxed))
    }
}

/// A server of a pool and where it came from.
#[derive(Debug, Clone)]
struct Configured {
    server: config::Server,
    discovered: bool,
}

/// The config's servers, then the discovered ones the config does not list
/// (a static entry wins for the same address), in address order.
fn servers_of(config: &config::Upstream, discovered: Option<&[config::Server]>) -> Vec<Configured> {
    let mut servers: Vec<Configured> = config
        .servers
        .iter()
        .map(|server| Configured {
            server: server.clone(),
            discovered: false,
        })
        .collect();
    if let Some(discovered) = discovered {
        let listed: std::collections::HashSet<&str> =
            config.servers.iter().map(|s| s.addr.as_str()).collect();
        servers.extend(
            discovered
                .iter()
                .filter(|server| !listed.contains(server.addr.as_str()))
                .map(|server| Configured {
                    server: server.clone(),
                    discovered: true,
                }),
        );
    }
    servers
}

/// One server of a pool.
#[derive(Debug)]
pub struct Endpoint {
    /// `host:port` as written in the config.
    pub addr: Arc<str>,
    /// The weight in force: the config's, or the admin API's override.
    pub weight: u32,
    /// The weight the config (or discovery) gives.
    pub configured_weight: u32,
    /// Found by discovery, not listed in the config.
    pub discovered: bool,
    pub authority: Authority,
    pub stats: Arc<EndpointStats>,
    pub health: Arc<EndpointHealth>,
    /// Its connections: kept across a reload while the server stays.
    pub client: ServerClient,
    connect_timeout: Duration,
    /// The transport `client` was made for.
    transport: Arc<Transport>,
    slot_freed: Option<Arc<Notify>>,
    pool_in_flight: Option<Arc<AtomicU64>>,
}

impl Endpoint {
    /// A server; `before` is the same server in the pool before a reload.
    fn new(
        chosen: &Configured,
        configured_weight: u32,
        connect_timeout: Duration,
        transport: &Arc<Transport>,
        before: Option<&Arc<Endpoint>>,
        slot_freed: Option<Arc<Notify>>,
        pool_in_flight: Option<Arc<AtomicU64>>,
    ) -> Endpoint {
        let (server, discovered) = (&chosen.server, chosen.discovered);
        let stats = before.map_or_else(Default::default, |b| Arc::clone(&b.stats));
        let health = before.map_or_else(Default::default, |b| Arc::clone(&b.health));
        // The client holds the idle connections; a new connect timeout or
        // transport needs a new one.
        let client = match before {
            Some(before)
                if before.connect_timeout == connect_timeout
                    && Arc::ptr_eq(&before.transport, transport) =>
            {
                before.client.clone()
            }
            _ => match transport.http1_connector(&server.addr, connect_timeout) {
                Some(connector) => ServerClient::Http1(Arc::new(Http1Pool::new(connector))),
                None => ServerClient::Http2(Box::new(transport.client(
                    &server.addr,
                    PoolSettings {
                        connect_timeout,
                        idle_timeout: POOL_IDLE_TIMEOUT,
                        max_idle_per_host: usize::MAX,
                    },
                ))),
            },
        };
        Endpoint {
            addr: Arc::from(server.addr.as_str()),
            weight: server.weight,
            configured_weight,
            discovered,
            authority: server
                .addr
                .parse()
                .expect("server addresses are validated as host:port"),
            stats,
            health,
            client,
            connect_timeout,
            transport: Arc::clone(transport),
            slot_freed,
            pool_in_flight,
        }
    }
}

/// Live counters of one server; atomics only.
#[derive(Debug, Default)]
pub struct EndpointStats {
    in_flight: AtomicU64,
    requests: AtomicU64,
    failures: AtomicU64,
    connect_errors: AtomicU64,
    timeouts: AtomicU64,
    /// Response-head latency, for `peak_ewma`.
    pub latency: PeakEwma,
    /// Final responses from this server, by status class.
    pub responses: StatusClasses,
    /// Whole request durations (to the end of the response body).
    pub durations: LatencyHistogram,
}

impl EndpointStats {
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    pub fn connect_errors(&self) -> u64 {
        self.connect_errors.load(Ordering::Relaxed)
    }

    pub fn timeouts(&self) -> u64 {
        self.timeouts.load(Ordering::Relaxed)
    }

    pub fn record_connect_error(&self) {
        self.connect_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_timeout(&self) {
        self.timeouts.fetch_add(1, Ordering::Relaxed);
    }

    fn record_failure(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts a request against its server from the moment it is sent until the
/// response body ends (or the tunnel of an upgrade closes): dropping the guard
/// releases it. Model: tower's `load/pending_requests.rs`.
#[derive(Debug)]
pub struct InFlight {
    endpoint: Arc<Endpoint>,
}

impl InFlight {
    pub fn start(endpoint: &Arc<Endpoint>) -> InFlight {
        endpoint.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        endpoint.stats.requests.fetch_add(1, Ordering::Relaxed);
        if let Some(pool) = &endpoint.pool_in_flight {
            pool.fetch_add(1, Ordering::Relaxed);
        }
        InFlight {
            endpoint: Arc::clone(endpoint),
        }
    }

    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.endpoint
            .stats
            .in_flight
            .fetch_sub(1, Ordering::Relaxed);
        if let Some(pool) = &self.endpoint.pool_in_flight {
            pool.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(slot_freed) = &self.endpoint.slot_freed {
            slot_freed.notify_one();
        }
    }
}
