//! The one writer of the routing snapshot. Every snapshot the proxy serves is
//! built and stored here, from three inputs: the config (file reloads, SIGHUP,
//! `POST /reload`, the library's `apply`), the weights set through the admin
//! API, and the server sets discovery finds. Each publish takes the next
//! generation and records what asked for it and what changed.
//!
//! Callers hold `App::control`, so one change is made at a time. A config
//! rebuilds every upstream (servers that stay keep their state); a weight or
//! a discovered set rebuilds only its upstream and shares everything else
//! with the snapshot before, so its cost does not grow with the other
//! upstreams. Discovered sets arrive on a channel and are applied in
//! batches, at most one publish per `DISCOVERY_BATCH`.
//!
//! `App` (app.rs) is the state all of this works on; `records.rs` what is
//! kept of publishes and reloads. The data plane (proxy, upstream, balance,
//! routing, http1) never imports this module: it reads the published
//! snapshot.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::task::JoinHandle;

mod app;
mod records;

pub use app::App;
pub(crate) use app::{BoxFuture, ConfigStore};
pub use records::{PublishRecord, ReloadCounts, ReloadError, ReloadRecord};

use crate::config::{Config, DiscoverySource, HealthCheck, Server};
use crate::discovery::{self, RunningSource, SourceStatus, Update};
use crate::registry::Registry;
use crate::server::ListenerSet;
use crate::snapshot::Snapshot;
use crate::upstream::{spawn_checks, RuntimeServers};

/// Discovered sets that arrive within this time of each other are
/// published together.
pub const DISCOVERY_BATCH: Duration = Duration::from_millis(200);

/// What asked for a new snapshot; logged and shown with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// SIGHUP.
    Signal,
    /// The config file changed on disk.
    FileChange,
    /// The admin API: `POST /reload`, or a weight set.
    Admin,
    /// A caller of the library.
    Api,
    /// A discovery source found a new set of servers.
    Discovery,
    /// The config's etcd key changed.
    Store,
}

impl Trigger {
    pub fn name(self) -> &'static str {
        match self {
            Trigger::Signal => "signal",
            Trigger::FileChange => "file_change",
            Trigger::Admin => "admin",
            Trigger::Api => "api",
            Trigger::Discovery => "discovery",
            Trigger::Store => "etcd",
        }
    }
}

/// What only one change at a time may touch.
pub(crate) struct Control {
    pub listeners: ListenerSet,
    pub admin: ListenerSet,
    /// The `max_connections` the connection slots are sized for.
    pub max_connections: usize,
    /// The health checker of each upstream that has checks, by name.
    pub health_checks: HashMap<String, RunningChecks>,
    /// Admin weights and discovered servers: what the snapshot adds to the config.
    pub runtime: RuntimeServers,
    /// The discovery source of each upstream that has one, by name.
    pub sources: HashMap<String, RunningSource>,
    /// Numbers the runs of sources, so a set from a replaced one is dropped.
    next_run: u64,
    /// Where sources send their sets.
    updates: UnboundedSender<Update>,
    /// The registry `source = "registry"` reads.
    pub registry: Option<Arc<Registry>>,
}

/// A running health checker and what it was started for; aborted on drop.
pub(crate) struct RunningChecks {
    check: HealthCheck,
    servers: Vec<Arc<str>>,
    task: JoinHandle<()>,
}

impl Drop for RunningChecks {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Control {
    /// The control state of a proxy about to start; sources will send to `updates`.
    pub fn new(max_connections: usize, updates: UnboundedSender<Update>) -> Control {
        Control {
            listeners: ListenerSet::new("listener"),
            admin: ListenerSet::new("admin API"),
            max_connections,
            health_checks: HashMap::new(),
            runtime: RuntimeServers::default(),
            sources: HashMap::new(),
            next_run: 1,
            updates,
            registry: None,
        }
    }

    /// Starts, keeps or stops health checkers to match the upstreams of
    /// `snapshot` named in `upstreams` (all of them when `None`): a checker
    /// whose upstream kept its check settings and servers keeps running (and
    /// its schedule); the others restart. Health state itself lives with the
    /// servers, so a restart loses nothing.
    pub fn sync_health_checks(&mut self, snapshot: &Snapshot, upstreams: Option<&[&str]>) {
        let mut wanted = HashMap::new();
        for upstream in &snapshot.upstreams {
            if upstreams.is_some_and(|names| !names.contains(&&*upstream.name)) {
                if let Some(running) = self.health_checks.remove(&*upstream.name) {
                    wanted.insert(upstream.name.to_string(), running);
                }
                continue;
            }
            let Some(check) = &upstream.health_check else {
                continue;
            };
            let servers: Vec<Arc<str>> = upstream
                .endpoints
                .iter()
                .map(|e| Arc::clone(&e.addr))
                .collect();
            let running = match self.health_checks.remove(&*upstream.name) {
                Some(running) if running.check == *check && running.servers == servers => running,
                _ => RunningChecks {
                    check: check.clone(),
                    servers,
                    task: spawn_checks(upstream, check.clone()),
                },
            };
            wanted.insert(upstream.name.to_string(), running);
        }
        // Those left are for upstreams without checks now: dropping stops them.
        self.health_checks = wanted;
    }

    /// Makes the running sources and kept sets match `config`: a source
    /// whose upstream kept the same discovery settings keeps running and its
    /// set stays (a reload never empties a pool while waiting for an answer);
    /// the others stop and their sets go. New sources start.
    fn sync_sources(&mut self, config: &Config) {
        let mut kept = HashMap::new();
        for upstream in &config.upstreams {
            let Some(settings) = &upstream.discovery else {
                continue;
            };
            let running = match self.sources.remove(&upstream.name) {
                Some(running) if running.settings == *settings => running,
                _ => {
                    self.runtime.discovered.remove(&upstream.name);
                    let run = self.next_run;
                    self.next_run += 1;
                    discovery::spawn(
                        &upstream.name,
                        settings,
                        run,
                        self.updates.clone(),
                        self.registry.clone(),
                    )
                }
            };
            kept.insert(upstream.name.clone(), running);
        }
        for gone in self.sources.keys() {
            self.runtime.discovered.remove(gone);
        }
        self.sources = kept;
    }

    /// Sources read `registry` from now on; those that read another one
    /// stop (and start again on the new one with `sync_sources`).
    fn follow_registry(&mut self, registry: Option<Arc<Registry>>) {
        let same = match (&self.registry, &registry) {
            (Some(old), Some(new)) => Arc::ptr_eq(old, new),
            (None, None) => true,
            _ => false,
        };
        if !same {
            self.sources.retain(|_, running| {
                !matches!(running.settings.source, DiscoverySource::Registry { .. })
            });
        }
        self.registry = registry;
    }

    /// Forgets admin weights of servers that are gone from `config` and
    /// from the discovered sets.
    fn prune_weight_overrides(&mut self, config: &Config) {
        let discovered = &self.runtime.discovered;
        self.runtime.weight_overrides.retain(|upstream, weights| {
            let Some(pool) = config.upstreams.iter().find(|u| u.name == *upstream) else {
                return false;
            };
            let found = discovered.get(upstream);
            weights.retain(|addr, _| {
                pool.servers.iter().any(|s| s.addr == *addr)
                    || found.is_some_and(|set| set.iter().any(|s| s.addr == *addr))
            });
            !weights.is_empty()
        });
    }
}

/// Retires the servers that left an upstream between two snapshots, so
/// that requests still holding `previous` do not retry on them (a stopped
/// container's address costs a connect timeout per try).
fn retire_departed(previous: &Snapshot, snapshot: &Snapshot) {
    for upstream in &previous.upstreams {
        let Some(now) = snapshot.upstream(&upstream.name) else {
            continue;
        };
        let staying: HashSet<*const _> = now
            .endpoints
            .iter()
            .map(|e| Arc::as_ptr(&e.health))
            .collect();
        for endpoint in &upstream.endpoints {
            if !staying.contains(&Arc::as_ptr(&endpoint.health)) {
                endpoint.health.retire();
            }
        }
    }
}

impl App {
    /// Publishes a new config: every upstream is rebuilt (servers that stay
    /// keep their state), sources follow the new discovery settings, and
    /// health checkers the new checks. Returns the generation.
    pub(crate) async fn publish_config(
        &self,
        control: &mut Control,
        config: Arc<Config>,
        trigger: Trigger,
        changes: Vec<String>,
    ) -> u64 {
        self.sync_registry(&config);
        control.follow_registry(self.registry());
        control.sync_sources(&config);
        self.show_sources(control);
        control.prune_weight_overrides(&config);
        let previous = self.snapshots.load_full();
        let generation = previous.generation + 1;
        let runtime = control.runtime.clone();
        let snapshot = tokio::task::spawn_blocking(move || {
            Snapshot::build(config, generation, Some(&previous), &runtime)
        })
        .await
        .expect("building a snapshot does not panic");
        let snapshot = Arc::new(snapshot);
        let previous = self.snapshots.swap(Arc::clone(&snapshot));
        retire_departed(&previous, &snapshot);
        control.sync_health_checks(&snapshot, None);
        self.record_publish(generation, trigger, changes);
        generation
    }

    /// Publishes the current config with the upstreams named in `changed`
    /// rebuilt from `control.runtime` (a weight, a discovered set). Returns
    /// the generation.
    pub(crate) fn publish_runtime(
        &self,
        control: &mut Control,
        changed: &[&str],
        trigger: Trigger,
        changes: Vec<String>,
    ) -> u64 {
        let previous = self.snapshots.load_full();
        let generation = previous.generation + 1;
        let snapshot =
            Arc::new(previous.with_upstreams_rebuilt(generation, changed, &control.runtime));
        self.snapshots.store(Arc::clone(&snapshot));
        retire_departed(&previous, &snapshot);
        control.sync_health_checks(&snapshot, Some(changed));
        tracing::info!(
            generation,
            trigger = trigger.name(),
            changes = %changes.join("; "),
            "servers changed"
        );
        self.record_publish(generation, trigger, changes);
        generation
    }

    fn record_publish(&self, generation: u64, trigger: Trigger, changes: Vec<String>) {
        *self.last_publish.lock().unwrap_or_else(|p| p.into_inner()) = PublishRecord {
            generation,
            at: SystemTime::now(),
            trigger: Some(trigger),
            changes,
        };
    }

    /// The built-in registry, while the config has one.
    pub fn registry(&self) -> Option<Arc<Registry>> {
        self.registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Starts, updates or stops the registry to match `config`. A registry
    /// that keeps its state file (or its etcd store) keeps its catalog across
    /// a reload.
    fn sync_registry(&self, config: &Config) {
        let own = self.bound.load().addresses();
        let mut slot = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        match (&config.registry, slot.as_ref()) {
            (Some(settings), Some(running))
                if running.settings().state_file == settings.state_file
                    && running.settings().etcd == settings.etcd
                    && running.settings().etcd_prefix == settings.etcd_prefix =>
            {
                running.update(settings);
            }
            (Some(settings), _) => {
                if let Some(old) = slot.take() {
                    old.stop();
                }
                *slot = Some(Registry::start(settings, own));
            }
            (None, Some(_)) => {
                if let Some(old) = slot.take() {
                    old.stop();
                }
            }
            (None, None) => {}
        }
    }

    /// Starts what the config at start needs: the registry, discovery
    /// sources and health checkers.
    pub(crate) fn start_control(&self, control: &mut Control, config: &Config) {
        self.sync_registry(config);
        control.follow_registry(self.registry());
        control.sync_sources(config);
        self.show_sources(control);
        control.sync_health_checks(&self.snapshots.load(), None);
    }

    /// The last publish: what asked for it and what changed.
    pub fn last_publish(&self) -> PublishRecord {
        self.last_publish
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The discovery source of each upstream that has one, by name.
    pub fn discovery_sources(&self) -> Vec<(String, Arc<SourceStatus>)> {
        self.sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(name, status)| (name.clone(), Arc::clone(status)))
            .collect()
    }

    /// Keeps the sources `/status` and metrics read in step with `control`.
    pub(crate) fn show_sources(&self, control: &Control) {
        *self.sources.lock().unwrap_or_else(|p| p.into_inner()) = control
            .sources
            .iter()
            .map(|(name, running)| (name.clone(), Arc::clone(&running.status)))
            .collect();
    }
}

/// Applies discovered sets as they come, in batches: the first set of a
/// batch waits `DISCOVERY_BATCH` for others, the latest set per upstream
/// wins, and one publish rebuilds every upstream whose set changed.
pub(crate) async fn apply_discovered(app: Arc<App>, mut updates: UnboundedReceiver<Update>) {
    while let Some(first) = updates.recv().await {
        tokio::time::sleep(DISCOVERY_BATCH).await;
        let mut batch: HashMap<String, Update> = HashMap::new();
        batch.insert(first.upstream.clone(), first);
        while let Ok(update) = updates.try_recv() {
            batch.insert(update.upstream.clone(), update);
        }
        let mut control = app.control.lock().await;
        let mut changed = Vec::new();
        let mut changes = Vec::new();
        for (upstream, update) in batch {
            let current = control.sources.get(&upstream).map(|running| running.run);
            if current != Some(update.run) {
                continue; // from a source the config has replaced
            }
            let before = control.runtime.discovered.get(&upstream);
            if before.is_some_and(|set| **set == *update.servers) {
                continue;
            }
            changes.push(describe_set_change(
                &upstream,
                before.map(|set| &set[..]),
                &update.servers,
                &update.source,
            ));
            control
                .runtime
                .discovered
                .insert(upstream.clone(), update.servers);
            changed.push(upstream);
        }
        if changed.is_empty() {
            continue;
        }
        let names: Vec<&str> = changed.iter().map(String::as_str).collect();
        app.publish_runtime(&mut control, &names, Trigger::Discovery, changes);
    }
}

/// `upstream api: +10.0.0.5:8080, -10.0.0.3:8080 (dns api:8080)`.
fn describe_set_change(
    upstream: &str,
    before: Option<&[Server]>,
    after: &[Server],
    source: &str,
) -> String {
    let before = before.unwrap_or_default();
    let mut parts = Vec::new();
    for server in after {
        match before.iter().find(|b| b.addr == server.addr) {
            None => parts.push(format!("+{}", server.addr)),
            Some(old) if old.weight != server.weight => parts.push(format!(
                "{} weight {} -> {}",
                server.addr, old.weight, server.weight
            )),
            Some(_) => {}
        }
    }
    for server in before {
        if !after.iter().any(|a| a.addr == server.addr) {
            parts.push(format!("-{}", server.addr));
        }
    }
    if parts.is_empty() {
        parts.push("no servers".into());
    }
    format!("upstream {upstream}: {} ({source})", parts.join(", "))
}

/// The discovery statuses `App` shows, by upstream.
pub(crate) type ShownSources = Mutex<HashMap<String, Arc<SourceStatus>>>;
