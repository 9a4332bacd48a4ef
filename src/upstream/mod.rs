//! Upstream pools: the servers of one upstream, their live counters, their
//! pooled keep-alive connections, and the strategy that picks among them.
//!
//! A pool is immutable; a reload builds a new one. What must outlive a reload
//! for a server that stays (same upstream name and address) is shared with
//! the previous pool: its counters (`Arc<EndpointStats>`) and its client with
//! the idle keep-alive connections; the strategy continues from its position.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::balance::Balancer;
use crate::config::{self, StrategyKind};
use crate::proxy::UpstreamBody;

/// How long an idle pooled upstream connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The HTTP client of one server: its own pool of keep-alive connections.
pub type UpstreamClient = Client<HttpConnector, UpstreamBody>;

/// One upstream pool, immutable once built.
#[derive(Debug)]
pub struct Upstream {
    pub name: Arc<str>,
    pub strategy: StrategyKind,
    pub balancer: Balancer,
    pub endpoints: Vec<Arc<Endpoint>>,
    pub timeout: Duration,
    pub retries: u32,
    pub max_connections_per_server: Option<u32>,
}

impl Upstream {
    /// Builds a pool; with `previous` (the pool of the same name before a
    /// reload), servers that stay keep their state.
    pub fn build(config: &config::Upstream, previous: Option<&Upstream>) -> Upstream {
        let weights: Vec<u32> = config.servers.iter().map(|s| s.weight).collect();
        let balancer = Balancer::new(config.strategy, &weights);
        if let Some(previous) = previous {
            balancer.continue_from(&previous.balancer);
        }
        Upstream {
            name: Arc::from(config.name.as_str()),
            strategy: config.strategy,
            balancer,
            endpoints: config
                .servers
                .iter()
                .map(|server| {
                    let before = previous.and_then(|p| p.endpoint(&server.addr));
                    Arc::new(Endpoint::new(server, config.connect_timeout, before))
                })
                .collect(),
            timeout: config.timeout,
            retries: config.retries,
            max_connections_per_server: config.max_connections_per_server,
        }
    }

    /// The server with this address, if the pool has it.
    pub fn endpoint(&self, addr: &str) -> Option<&Arc<Endpoint>> {
        self.endpoints.iter().find(|e| &*e.addr == addr)
    }

    /// Picks a server that may take a request now and that `tried` does not
    /// name (retries go to a different server).
    pub fn pick(&self, tried: &[usize]) -> Option<usize> {
        let limit = self.max_connections_per_server.map(u64::from);
        self.balancer.pick(|index| {
            !tried.contains(&index)
                && limit.is_none_or(|limit| self.endpoints[index].stats.in_flight() < limit)
        })
    }
}

/// One server of a pool.
#[derive(Debug)]
pub struct Endpoint {
    /// `host:port` as written in the config.
    pub addr: Arc<str>,
    pub weight: u32,
    pub authority: Authority,
    pub stats: Arc<EndpointStats>,
    pub client: UpstreamClient,
    connect_timeout: Duration,
}

impl Endpoint {
    /// A server; `before` is the same server in the pool before a reload.
    fn new(
        server: &config::Server,
        connect_timeout: Duration,
        before: Option<&Arc<Endpoint>>,
    ) -> Endpoint {
        let stats = before.map_or_else(Default::default, |b| Arc::clone(&b.stats));
        // The client holds the idle connections; a new connect timeout needs a new one.
        let client = match before {
            Some(before) if before.connect_timeout == connect_timeout => before.client.clone(),
            _ => new_client(connect_timeout),
        };
        Endpoint {
            addr: Arc::from(server.addr.as_str()),
            weight: server.weight,
            authority: server
                .addr
                .parse()
                .expect("server addresses are validated as host:port"),
            stats,
            client,
            connect_timeout,
        }
    }
}

fn new_client(connect_timeout: Duration) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector)
}

/// Live counters of one server; atomics only.
#[derive(Debug, Default)]
pub struct EndpointStats {
    in_flight: AtomicU64,
    requests: AtomicU64,
    failures: AtomicU64,
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

    pub fn record_failure(&self) {
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
    }
}
