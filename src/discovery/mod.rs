//! Discovery: sources that find an upstream's servers at run time: DNS
//! (`dns.rs`), usherd's own registry, a Consul agent (`consul.rs`), a
//! Eureka server (`eureka.rs`), ZooKeeper (`zookeeper.rs`, watched) and
//! etcd (`etcd.rs`, watched).
//! Each source is a task that asks again every `refresh` (a registry source
//! also as soon as the catalog changes; a consul source asks with blocking
//! queries, which the agent answers when the service changes) and hands every set that differs from the last one to the
//! control plane, which publishes it. The failure rules (docs/discovery.md)
//! live here:
//!
//! - a failed lookup (timeout, SERVFAIL, REFUSED, no server reachable) never
//!   changes the set: the source turns `stale`, retries from 1 s doubling up
//!   to `refresh` with jitter, and logs once per change of state;
//! - a successful empty answer (NXDOMAIN, NODATA) empties the pool only once
//!   it has lasted `empty_after`;
//! - `max_stale`, when set, drops the last set after that long without a
//!   successful answer.

mod consul;
mod dns;
mod etcd;
mod eureka;
mod zookeeper;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::{Discovery, DiscoverySource, Server};
use crate::registry::Registry;

pub use consul::ConsulSource;
pub use dns::DnsSource;
pub use etcd::EtcdSource;
pub use eureka::EurekaSource;
pub use zookeeper::ZookeeperSource;

/// What one lookup gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Servers, sorted by address, and how long the answer is valid.
    Found { servers: Vec<Server>, ttl: Duration },
    /// The source answered that there are none (NXDOMAIN, no records).
    None(String),
    /// The source could not be asked or did not answer.
    Failed(String),
}

/// Where a source stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No answer yet.
    Pending,
    /// The last lookup answered and the pool holds what it said.
    Ok,
    /// The pool holds an older answer: lookups fail, or an empty answer is
    /// held back for `empty_after`.
    Stale,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Ok => "ok",
            State::Stale => "stale",
        }
    }
}

/// A source's state as `/status` shows it.
#[derive(Debug, Clone)]
pub struct SourceState {
    pub state: State,
    /// Servers in the set the pool holds.
    pub servers: usize,
    pub last_success: Option<SystemTime>,
    pub last_change: Option<SystemTime>,
    pub last_error: Option<String>,
}

/// Lookups by what they led to, for metrics.
#[derive(Debug, Default)]
pub struct UpdateCounts {
    /// A new set was handed on.
    pub changed: AtomicU64,
    /// The same set as before.
    pub unchanged: AtomicU64,
    /// The lookup failed; the set stays.
    pub error: AtomicU64,
    /// An empty answer held back for `empty_after`.
    pub empty_held: AtomicU64,
}

/// One upstream's source: what it is and where it stands.
#[derive(Debug)]
pub struct SourceStatus {
    /// `dns api.internal:8080`.
    pub source: String,
    pub updates: UpdateCounts,
    state: Mutex<SourceState>,
}

impl SourceStatus {
    fn new(source: String) -> SourceStatus {
        SourceStatus {
            source,
            updates: UpdateCounts::default(),
            state: Mutex::new(SourceState {
                state: State::Pending,
                servers: 0,
                last_success: None,
                last_change: None,
                last_error: None,
            }),
        }
    }

    pub fn state(&self) -> SourceState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn update(&self, change: impl FnOnce(&mut SourceState)) {
        change(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// A new set for an upstream, for the control plane.
#[derive(Debug, Clone)]
pub struct Update {
    pub upstream: String,
    /// Which run of the source sent it: a set from a source the config has
    /// since replaced is dropped.
    pub run: u64,
    pub servers: Arc<[Server]>,
    /// `dns api.internal:8080`, for the change log.
    pub source: String,
}

/// A running source; stopped when dropped.
#[derive(Debug)]
pub struct RunningSource {
    pub settings: Discovery,
    pub run: u64,
    pub status: Arc<SourceStatus>,
    task: JoinHandle<()>,
}

impl Drop for RunningSource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the source of `upstream`; its sets go to `updates`. A `registry`
/// source reads `registry`.
pub fn spawn(
    upstream: &str,
    settings: &Discovery,
    run: u64,
    updates: UnboundedSender<Update>,
    registry: Option<Arc<Registry>>,
) -> RunningSource {
    let status = Arc::new(SourceStatus::new(settings.source.describe()));
    let task = tokio::spawn(follow(
        upstream.to_string(),
        settings.clone(),
        run,
        Arc::clone(&status),
        updates,
        registry,
    ));
    RunningSource {
        settings: settings.clone(),
        run,
        status,
        task,
    }
}

/// What the source has handed on, and since when things have gone wrong.
struct Follower {
    upstream: String,
    settings: Discovery,
    run: u64,
    status: Arc<SourceStatus>,
    updates: UnboundedSender<Update>,
    /// The last set handed on; `None` before the first.
    published: Option<Vec<Server>>,
    last_success: Option<Instant>,
    started: Instant,
    empty_since: Option<Instant>,
    failures: u32,
}

/// Where a source's answers come from.
enum Source {
    Dns(Box<DnsSource>),
    Registry(RegistryFeed),
    Consul(Box<ConsulSource>),
    Eureka(Box<EurekaSource>),
    Zookeeper(Box<ZookeeperSource>),
    Etcd(Box<EtcdSource>),
}

/// A `registry` source: the instances of one service, looked at again as
/// soon as the catalog changes.
struct RegistryFeed {
    registry: Arc<Registry>,
    service: String,
    tag: Option<String>,
    passing: bool,
    changes: watch::Receiver<u64>,
}

impl RegistryFeed {
    fn lookup(&mut self) -> Answer {
        self.changes.borrow_and_update();
        if !self.registry.loaded() {
            return Answer::Failed("the registry has not read its catalog from etcd yet".into());
        }
        let (servers, _) =
            self.registry
                .servers_of(&self.service, self.tag.as_deref(), self.passing);
        if servers.is_empty() {
            Answer::None(format!(
                "no {} instances of {}",
                if self.passing { "passing" } else { "healthy" },
                self.service
            ))
        } else {
            Answer::Found {
                servers,
                ttl: Duration::MAX,
            }
        }
    }
}

impl Source {
    async fn open(settings: &Discovery, registry: Option<Arc<Registry>>) -> Result<Source, String> {
        match (&settings.source, registry) {
            (
                DiscoverySource::Registry {
                    service,
                    tag,
                    passing,
                },
                Some(registry),
            ) => Ok(Source::Registry(RegistryFeed {
                changes: registry.subscribe(),
                registry,
                service: service.clone(),
                tag: tag.clone(),
                passing: *passing,
            })),
            (DiscoverySource::Registry { .. }, None) => {
                Err("the config has no [registry] to read".into())
            }
            (source @ DiscoverySource::Consul { .. }, _) => {
                ConsulSource::new(source, settings.timeout)
                    .map(|consul| Source::Consul(Box::new(consul)))
            }
            (source @ DiscoverySource::Eureka { .. }, _) => {
                EurekaSource::new(source, settings.timeout)
                    .map(|eureka| Source::Eureka(Box::new(eureka)))
            }
            (source @ DiscoverySource::Zookeeper { .. }, _) => {
                ZookeeperSource::new(source).map(|zookeeper| Source::Zookeeper(Box::new(zookeeper)))
            }
            (source @ DiscoverySource::Etcd { .. }, _) => {
                EtcdSource::new(source, settings.timeout).map(|etcd| Source::Etcd(Box::new(etcd)))
            }
            (source, _) => {
                DnsSource::new(source, settings.timeout).map(|dns| Source::Dns(Box::new(dns)))
            }
        }
    }

    async fn lookup(&mut self, timeout: Duration) -> Answer {
        match self {
            Source::Registry(feed) => feed.lookup(),
            // Its own limit: a blocking query may take `wait` longer.
            Source::Consul(consul) => consul.lookup().await,
            // A delta, and at most one whole fetch after it.
            Source::Eureka(eureka) => {
                match tokio::time::timeout(timeout * 2, eureka.lookup()).await {
                    Ok(answer) => answer,
                    Err(_) => Answer::Failed(format!(
                        "no answer within {}",
                        humantime::format_duration(timeout * 2)
                    )),
                }
            }
            // Connecting and the reads since the last answer; a change
            // waits in `pause`, not here.
            Source::Zookeeper(zookeeper) => {
                match tokio::time::timeout(timeout, zookeeper.lookup()).await {
                    Ok(answer) => answer,
                    Err(_) => Answer::Failed(format!(
                        "no answer within {}",
                        humantime::format_duration(timeout)
                    )),
                }
            }
            // Its own limits: the range and creating the watch, `timeout`
            // each; events wait in `pause`.
            Source::Etcd(etcd) => etcd.lookup().await,
            Source::Dns(dns) => match tokio::time::timeout(timeout, dns.lookup()).await {
                Ok(answer) => answer,
                Err(_) => Answer::Failed(format!(
                    "no answer within {}",
                    humantime::format_duration(timeout)
                )),
            },
        }
    }

    /// Waits `wait`; a registry feed wakes early when the catalog changes,
    /// and a consul source asks again at once after an answer (the query
    /// waits at the agent).
    async fn pause(&mut self, wait: Duration) {
        match self {
            Source::Registry(feed) => {
                let _ = tokio::time::timeout(wait, feed.changes.changed()).await;
            }
            Source::Consul(consul) => consul.pause(wait).await,
            Source::Zookeeper(zookeeper) => zookeeper.pause(wait).await,
            Source::Etcd(etcd) => etcd.pause(wait).await,
            Source::Dns(_) | Source::Eureka(_) => tokio::time::sleep(wait).await,
        }
    }
}

async fn follow(
    upstream: String,
    settings: Discovery,
    run: u64,
    status: Arc<SourceStatus>,
    updates: UnboundedSender<Update>,
    registry: Option<Arc<Registry>>,
) {
    let mut follower = Follower {
        upstream,
        settings,
        run,
        status,
        updates,
        published: None,
        last_success: None,
        started: Instant::now(),
        empty_since: None,
        failures: 0,
    };
    let mut source = loop {
        match Source::open(&follower.settings, registry.clone()).await {
            Ok(source) => break source,
            Err(error) => {
                let wait = follower.failed(error);
                tokio::time::sleep(wait).await;
            }
        }
    };
    loop {
        let wait = match source.lookup(follower.settings.timeout).await {
            Answer::Found { servers, ttl } => {
                follower.found(servers);
                follower.next_refresh(ttl)
            }
            Answer::None(reason) => {
                follower.none(reason);
                // A held empty answer is looked at again when it may apply.
                match follower.empty_since {
                    Some(since) => follower
                        .settings
                        .refresh
                        .min(
                            follower
                                .settings
                                .empty_after
                                .saturating_sub(since.elapsed()),
                        )
                        .max(Duration::from_millis(50)),
                    None => follower.settings.refresh,
                }
            }
            Answer::Failed(error) => follower.failed(error),
        };
        source.pause(wait).await;
    }
}

impl Follower {
    fn found(&mut self, servers: Vec<Server>) {
        self.succeeded();
        self.empty_since = None;
        self.status.update(|state| state.last_error = None);
        self.publish(servers);
    }

    /// An authoritative empty answer: applied at once when the pool has no
    /// discovered server anyway, else only once it has lasted `empty_after`.
    fn none(&mut self, reason: String) {
        self.succeeded();
        let holding = self.published.as_ref().is_some_and(|set| !set.is_empty());
        if !holding {
            self.status.update(|state| state.last_error = Some(reason));
            self.publish(Vec::new());
            return;
        }
        let since = *self.empty_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= self.settings.empty_after {
            tracing::warn!(
                upstream = %self.upstream,
                source = %self.status.source,
                %reason,
                "discovery found no servers for {}: pool emptied",
                humantime::format_duration(self.settings.empty_after)
            );
            self.status.update(|state| state.last_error = Some(reason));
            self.publish(Vec::new());
        } else {
            self.status
                .updates
                .empty_held
                .fetch_add(1, Ordering::Relaxed);
            let kept = self.published.as_ref().map_or(0, Vec::len);
            self.status.update(|state| {
                state.state = State::Stale;
                state.last_error = Some(format!(
                    "{reason}; the last {kept} servers are kept until the empty answer has lasted {}",
                    humantime::format_duration(self.settings.empty_after)
                ));
            });
        }
    }

    /// A failed lookup: the set stays; returns how long until the next try.
    fn failed(&mut self, error: String) -> Duration {
        self.failures += 1;
        self.status.updates.error.fetch_add(1, Ordering::Relaxed);
        let previous = self.status.state().state;
        if previous != State::Stale {
            tracing::warn!(
                upstream = %self.upstream,
                source = %self.status.source,
                %error,
                kept = self.published.as_ref().map_or(0, Vec::len),
                "discovery lookup failed; the pool keeps its servers"
            );
        }
        self.status.update(|state| {
            if state.state != State::Pending {
                state.state = State::Stale;
            }
            state.last_error = Some(error);
        });
        if let Some(max_stale) = self.settings.max_stale {
            let since = self.last_success.unwrap_or(self.started);
            let holding = self.published.as_ref().is_some_and(|set| !set.is_empty());
            if holding && since.elapsed() >= max_stale {
                tracing::warn!(
                    upstream = %self.upstream,
                    source = %self.status.source,
                    "no successful lookup for max_stale: pool emptied"
                );
                self.publish(Vec::new());
                self.status.update(|state| state.state = State::Stale);
            }
        }
        self.backoff()
    }

    fn succeeded(&mut self) {
        self.last_success = Some(Instant::now());
        self.failures = 0;
        let previous = self.status.state().state;
        if previous == State::Stale {
            tracing::info!(
                upstream = %self.upstream,
                source = %self.status.source,
                "discovery lookups succeed again"
            );
        }
        self.status.update(|state| {
            state.state = State::Ok;
            state.last_success = Some(SystemTime::now());
        });
    }

    /// Hands `servers` on if they differ from the last set.
    fn publish(&mut self, servers: Vec<Server>) {
        if self.published.as_ref() == Some(&servers) {
            self.status
                .updates
                .unchanged
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.status.updates.changed.fetch_add(1, Ordering::Relaxed);
        let count = servers.len();
        self.status.update(|state| {
            state.servers = count;
            state.last_change = Some(SystemTime::now());
        });
        let update = Update {
            upstream: self.upstream.clone(),
            run: self.run,
            servers: Arc::from(servers.as_slice()),
            source: self.status.source.clone(),
        };
        self.published = Some(servers);
        // The receiver goes only with the proxy.
        self.updates.send(update).ok();
    }

    /// `refresh`, or sooner when the TTL says so and `respect_ttl` is on.
    fn next_refresh(&self, ttl: Duration) -> Duration {
        let respect_ttl = match &self.settings.source {
            DiscoverySource::Dns { resolver, .. } | DiscoverySource::Srv { resolver, .. } => {
                resolver.respect_ttl
            }
            DiscoverySource::Registry { .. }
            | DiscoverySource::Consul { .. }
            | DiscoverySource::Eureka { .. }
            | DiscoverySource::Zookeeper { .. }
            | DiscoverySource::Etcd { .. } => false,
        };
        if respect_ttl {
            ttl.max(Duration::from_secs(1)).min(self.settings.refresh)
        } else {
            self.settings.refresh
        }
    }

    /// From 1 s (or `refresh` if shorter), doubling up to `refresh`, +-10%.
    fn backoff(&self) -> Duration {
        let first = self.settings.refresh.min(Duration::from_secs(1));
        let doublings = self.failures.saturating_sub(1).min(16);
        let wait = first
            .saturating_mul(1 << doublings)
            .min(self.settings.refresh);
        wait.mul_f64(0.9 + fastrand::f64() * 0.2)
    }
}
