//! The built-in service registry (docs/registry.md): services register with
//! usherd over the Consul agent API (`consul.rs`), usherd runs or times their
//! checks, keeps the catalog across restarts in a state file (`store.rs`),
//! and upstreams with `source = "registry"` route to the passing instances
//! through discovery. One catalog behind one lock; every change a reader can
//! see moves its index and wakes blocking readers.

mod api;
mod catalog;
mod checks;
pub mod consul;
pub mod eureka;
mod replica;
mod store;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config;

pub use api::ApiRequest;
pub use catalog::{
    Catalog, Check, EurekaInfo, EurekaStatus, Instance, Origin, Probe, Status, Weights,
};

/// How often TTLs and deregistration deadlines are looked at.
const SWEEP_EVERY: Duration = Duration::from_millis(200);

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("the registry holds its maximum of {0} instances")]
    Full(usize),
    /// The id belongs to an instance the other API registered.
    #[error("{0}")]
    Conflict(String),
}

/// The registry: the catalog, what runs its checks, and what keeps it.
pub struct Registry {
    catalog: Mutex<Catalog>,
    /// The catalog's index after each change.
    changed: watch::Sender<u64>,
    settings: ArcSwap<config::Registry>,
    /// Addresses of usherd's own listeners, which no registration may name.
    own: ArcSwap<Vec<SocketAddr>>,
    /// The HTTP and TCP checks running, by check id.
    probes: Mutex<HashMap<String, JoinHandle<()>>>,
    store: Option<store::Store>,
    /// The link to etcd, for a registry kept there.
    replica: std::sync::OnceLock<Arc<replica::Replica>>,
    sweeper: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    /// Starts the registry: restores the state file if there is one (TTLs
    /// that ran out meanwhile are critical), starts the checks and the sweeper.
    pub fn start(settings: &config::Registry, own: Vec<SocketAddr>) -> Arc<Registry> {
        let (catalog, store) = match &settings.state_file {
            Some(path) => {
                let (catalog, store) = store::Store::open(path.clone());
                (catalog, Some(store))
            }
            None => (Catalog::new(), None),
        };
        let mut catalog = catalog;
        catalog.extend_leases(SystemTime::now());
        let registry = Arc::new(Registry {
            changed: watch::channel(catalog.index).0,
            catalog: Mutex::new(catalog),
            settings: ArcSwap::from_pointee(settings.clone()),
            own: ArcSwap::from_pointee(own),
            probes: Mutex::default(),
            store,
            replica: std::sync::OnceLock::new(),
            sweeper: Mutex::default(),
        });
        if !settings.etcd.is_empty() {
            let link =
                replica::Replica::start(&registry, settings.etcd.clone(), &settings.etcd_prefix);
            registry.replica.set(link).ok();
        }
        registry.sweep(SystemTime::now());
        let instances: Vec<Instance> =
            registry.read(|catalog| catalog.instances.values().cloned().collect());
        for instance in &instances {
            registry.start_probes(instance);
        }
        let weak = Arc::downgrade(&registry);
        let sweeper = tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            loop {
                tick.tick().await;
                let Some(registry) = weak.upgrade() else {
                    return;
                };
                registry.sweep(SystemTime::now());
            }
        });
        *registry.sweeper.lock().unwrap_or_else(|p| p.into_inner()) = Some(sweeper);
        registry
    }

    /// New settings from a reload; the catalog stays.
    pub fn update(&self, settings: &config::Registry) {
        self.settings.store(Arc::new(settings.clone()));
    }

    /// The addresses usherd listens on now, which no registration may name.
    pub fn set_own(&self, own: Vec<SocketAddr>) {
        self.own.store(Arc::new(own));
    }

    /// Stops the checks and the sweeper, and writes the state file a last time.
    pub fn stop(&self) {
        if let Some(replica) = self.replica.get() {
            replica.stop();
        }
        if let Some(sweeper) = self
            .sweeper
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            sweeper.abort();
        }
        for (_, probe) in self
            .probes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
        {
            probe.abort();
        }
        if let Some(store) = &self.store {
            store.flush(&self.read(Catalog::clone));
        }
    }

    pub fn settings(&self) -> Arc<config::Registry> {
        self.settings.load_full()
    }

    /// Reads the catalog.
    pub fn read<T>(&self, read: impl FnOnce(&Catalog) -> T) -> T {
        read(&self.catalog.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Changes the catalog; when `change` says it changed something, readers
    /// are woken and the state file is written.
    fn write<T>(&self, change: impl FnOnce(&mut Catalog) -> (T, bool)) -> T {
        let mut catalog = self.catalog.lock().unwrap_or_else(|p| p.into_inner());
        let (result, changed) = change(&mut catalog);
        let dirty = catalog.take_dirty();
        if let Some(replica) = self.replica.get() {
            if !dirty.is_empty() {
                replica.changed(dirty);
            }
        }
        if changed {
            let index = catalog.index;
            if let Some(store) = &self.store {
                store.changed(&catalog);
            }
            drop(catalog);
            self.changed.send_replace(index);
        }
        result
    }

    /// An instance as etcd holds it now (`None`: gone), written by another
    /// usherd: replaces the local one; readers are woken.
    fn apply_stored(self: &Arc<Self>, id: &str, instance: Option<Instance>) {
        let (old, new) = {
            let mut catalog = self.catalog.lock().unwrap_or_else(|p| p.into_inner());
            let old = match &instance {
                Some(instance) => {
                    let old = catalog.instances.get(id).cloned();
                    catalog.store_put(instance.clone());
                    old
                }
                None => catalog.store_remove(id),
            };
            catalog.take_dirty();
            let index = catalog.index;
            drop(catalog);
            self.changed.send_replace(index);
            (old, instance)
        };
        if let Some(old) = &old {
            self.stop_probes(old);
        }
        if let Some(new) = &new {
            self.start_probes(new);
        }
    }

    /// This usherd took over the HTTP and TCP checks (`leading`) or gave
    /// them up, in a registry kept in etcd.
    fn checks_moved(self: &Arc<Self>, leading: bool) {
        let instances: Vec<Instance> =
            self.read(|catalog| catalog.instances.values().cloned().collect());
        for instance in &instances {
            if leading {
                self.start_probes(instance);
            } else {
                self.stop_probes(instance);
            }
        }
    }

    /// Whether the catalog can be read: a registry kept in etcd has read it once.
    pub fn loaded(&self) -> bool {
        self.replica
            .get()
            .is_none_or(|replica| replica.loaded.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// For `/status`: `None` for a registry of its own, else whether it is
    /// stale, its last error, and whether this usherd runs the HTTP and TCP checks.
    pub fn store_state(&self) -> Option<(bool, Option<String>, bool)> {
        self.replica.get().map(|replica| {
            let (stale, error) = replica.state();
            (
                stale,
                error,
                replica
                    .leads_checks
                    .load(std::sync::atomic::Ordering::Relaxed),
            )
        })
    }

    /// Waits until the catalog changes after `index` or `wait` passes.
    pub async fn wait_past(&self, index: u64, wait: Duration) {
        let mut changes = self.changed.subscribe();
        let _ = tokio::time::timeout(wait, changes.wait_for(|now| *now > index)).await;
    }

    /// A receiver that sees every change of the catalog's index.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Registers (or replaces) an instance after checking its address.
    pub fn register(self: &Arc<Self>, instance: Instance) -> Result<(), Refused> {
        self.check_address(&instance.address, instance.port)?;
        let max = self.settings.load().max_services;
        let replaced = self.write(|catalog| {
            let replaced = catalog.instances.get(&instance.id).cloned();
            if let Some(old) = replaced
                .as_ref()
                .filter(|old| old.origin != instance.origin)
            {
                let message = format!(
                    "instance id `{}` belongs to a {:?} registration of `{}`; \
                     deregister it there or use another id",
                    old.id, old.origin, old.service
                );
                return (Err(Refused::Conflict(message)), false);
            }
            if replaced.is_none() && catalog.instances.len() >= max {
                return (Err(Refused::Full(max)), false);
            }
            catalog.register(instance.clone());
            (Ok(replaced), true)
        })?;
        if let Some(old) = replaced {
            self.stop_probes(&old);
        }
        self.start_probes(&instance);
        tracing::info!(
            service = %instance.service,
            id = %instance.id,
            address = %instance.address,
            port = instance.port,
            "registry: registered"
        );
        Ok(())
    }

    /// Removes an instance; false if there was none.
    pub fn deregister(&self, id: &str) -> bool {
        let removed = self.write(|catalog| {
            let removed = catalog.instances.get(id).cloned();
            catalog.deregister(id);
            let changed = removed.is_some();
            (removed, changed)
        });
        match removed {
            Some(instance) => {
                self.stop_probes(&instance);
                tracing::info!(service = %instance.service, %id, "registry: deregistered");
                true
            }
            None => false,
        }
    }

    /// Sets a check's status; `false` when no instance has the check.
    pub fn update_check(&self, check_id: &str, status: Status, output: Option<String>) -> bool {
        self.write(|catalog| {
            match catalog.update_check(check_id, status, output, SystemTime::now()) {
                Some(changed) => (true, changed),
                None => (false, false),
            }
        })
    }

    /// Changes an instance in place (`change` says whether readers can see
    /// it); `false` when there is no such instance.
    pub fn modify(&self, id: &str, change: impl FnOnce(&mut Instance) -> bool) -> bool {
        self.write(|catalog| match catalog.modify(id, change) {
            Some(changed) => (true, changed),
            None => (false, false),
        })
    }

    /// Renews a Eureka lease; `false` when there is no such Eureka instance.
    pub fn renew(&self, id: &str) -> bool {
        self.write(|catalog| (catalog.renew(id, SystemTime::now()).is_some(), false))
    }

    /// Maintenance on (with a reason) or off; `false` when there is no such instance.
    pub fn set_maintenance(&self, id: &str, reason: Option<String>) -> bool {
        self.write(|catalog| match catalog.set_maintenance(id, reason) {
            Some(changed) => (true, changed),
            None => (false, false),
        })
    }

    fn sweep(self: &Arc<Self>, now: SystemTime) {
        let gone: Vec<Instance> = self.write(|catalog| {
            let (changed, gone) = catalog.expire(now);
            (gone, changed)
        });
        for instance in &gone {
            self.stop_probes(instance);
        }
    }

    fn start_probes(self: &Arc<Self>, instance: &Instance) {
        // In a registry kept in etcd, one usherd runs them.
        let runs_checks = self.replica.get().is_none_or(|replica| {
            replica
                .leads_checks
                .load(std::sync::atomic::Ordering::Relaxed)
        });
        if !runs_checks {
            return;
        }
        let mut probes = self.probes.lock().unwrap_or_else(|p| p.into_inner());
        for check in &instance.checks {
            if let Some(task) = checks::spawn(self, check) {
                if let Some(old) = probes.insert(check.id.clone(), task) {
                    old.abort();
                }
            }
        }
    }

    fn stop_probes(&self, instance: &Instance) {
        let mut probes = self.probes.lock().unwrap_or_else(|p| p.into_inner());
        for check in &instance.checks {
            if let Some(task) = probes.remove(&check.id) {
                task.abort();
            }
        }
    }

    /// Refuses addresses that would turn the gateway on something it must
    /// not reach: outside `allow_addresses`, link-local (cloud metadata),
    /// unspecified, multicast, or one of usherd's own listeners.
    fn check_address(&self, address: &str, port: u16) -> Result<(), Refused> {
        let ip: IpAddr = match address.parse() {
            Ok(ip) => ip,
            // A name: resolved when connecting, so only an allow list can vet it.
            Err(_) if self.settings.load().allow_addresses.is_empty() => return Ok(()),
            Err(_) => {
                return Err(Refused::Forbidden(format!(
                "address `{address}` is a name; with allow_addresses set, register an IP address"
            )))
            }
        };
        let refused = match ip {
            IpAddr::V4(v4) => {
                v4.is_link_local() || v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast()
            }
            IpAddr::V6(v6) => {
                v6.is_unspecified() || v6.is_multicast() || (v6.segments()[0] & 0xffc0) == 0xfe80
            }
        };
        if refused {
            return Err(Refused::Forbidden(format!(
                "address {ip} is link-local, unspecified or multicast: refused"
            )));
        }
        let target = SocketAddr::new(ip, port);
        let own = self.own.load();
        let is_own = own.iter().any(|listener| {
            listener.port() == port
                && (listener.ip() == ip
                    || (listener.ip().is_unspecified()
                        && (ip.is_loopback() || ip == listener.ip())))
        });
        if is_own {
            return Err(Refused::Forbidden(format!(
                "{target} is one of usherd's own listeners: refused"
            )));
        }
        let allowed = &self.settings.load().allow_addresses;
        if !allowed.is_empty() && !allowed.iter().any(|network| network.contains(&ip)) {
            return Err(Refused::Forbidden(format!(
                "address {ip} is outside allow_addresses"
            )));
        }
        Ok(())
    }

    /// The passing (or, with `passing` false, not critical) instances of
    /// `service` with `tag`, as servers sorted by address, and the
    /// service's index.
    pub fn servers_of(
        &self,
        service: &str,
        tag: Option<&str>,
        passing: bool,
    ) -> (Vec<config::Server>, u64) {
        self.read(|catalog| {
            let mut servers: Vec<config::Server> = catalog
                .named(service)
                .filter(|instance| tag.is_none_or(|tag| instance.tags.iter().any(|t| t == tag)))
                .filter(|instance| match instance.status() {
                    Status::Passing => true,
                    Status::Warning => !passing,
                    Status::Critical => false,
                })
                .filter(|instance| instance.weight() > 0)
                .map(|instance| config::Server {
                    addr: join_host_port(&instance.address, instance.port),
                    weight: instance.weight().clamp(1, config::MAX_WEIGHT),
                })
                .collect();
            servers.sort_by(|a, b| a.addr.cmp(&b.addr));
            servers.dedup_by(|a, b| a.addr == b.addr);
            (servers, catalog.service_index(service))
        })
    }
}

/// `10.0.0.5:8080`, `[fd00::5]:8080`, `api.internal:8080`.
pub fn join_host_port(host: &str, port: u16) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]:{port}"),
        _ => format!("{host}:{port}"),
    }
}

/// Constant-time comparison of a presented token with each of `tokens`.
pub fn token_in(given: &str, tokens: &[String]) -> bool {
    tokens.iter().fold(false, |found, token| {
        found | crate::secret::same_secret(given.as_bytes(), token.as_bytes())
    })
}
