//! The running proxy's shared state: the published snapshot, the listener
//! sets, the reload and publish records, and the client connections to drain
//! on shutdown. `control` publishes snapshots, `reload` feeds it configs,
//! `admin` reads it, `app` (the top of the control side) starts it; `Proxy`
//! (lib.rs) is its handle. It names nothing above `control`: the admin API
//! and the fleet's config store come in as `ServeAdmin` and `ConfigStore`.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::{watch, Semaphore};
use tokio_util::task::TaskTracker;

use super::records::{PublishRecord, ReloadCounts, ReloadError, ReloadRecord};
use super::{Control, ShownSources, Trigger};
use crate::config::Config;
use crate::discovery::Update;
use crate::registry::Registry;
use crate::server::{serve_listener, BindError, BindPlan, BoundListener, ListenerContext};
use crate::snapshot::{SharedSnapshot, Snapshot};
use crate::stats::ListenerStats;
use crate::upstream::RuntimeServers;

/// Where the proxy is listening now.
#[derive(Debug, Default, Clone)]
pub struct Bound {
    pub listeners: Vec<BoundListener>,
    pub admin: Option<SocketAddr>,
}

impl Bound {
    /// Every address usherd listens on.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .map(|listener| listener.addr)
            .chain(self.admin)
            .collect()
    }
}

/// Serves the admin API on one bound admin listener until `stop` turns true
/// (`admin::serve`, spawned).
pub(crate) type ServeAdmin = fn(TcpListener, Arc<App>, watch::Receiver<bool>);

/// A future a trait object can return.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where the config comes from when it is not a file: the fleet's etcd key
/// (`fleet::Fleet`). Reloads re-read it, `/status` shows it, shutdown leaves it.
pub(crate) trait ConfigStore: Send + Sync {
    /// Reads the config again and applies it; the new generation.
    fn reread<'a>(
        &'a self,
        app: &'a Arc<App>,
        trigger: Trigger,
    ) -> BoxFuture<'a, Result<u64, ReloadError>>;

    /// The store and its members, for `/status`.
    fn status(&self) -> serde_json::Value;

    /// Gives up this instance's place in the store (shutdown).
    fn leave(&self) -> BoxFuture<'_, ()>;
}

pub struct App {
    pub snapshots: SharedSnapshot,
    pub(crate) control: tokio::sync::Mutex<Control>,
    pub bound: ArcSwap<Bound>,
    pub(crate) last_reload: Mutex<ReloadRecord>,
    pub(crate) last_publish: Mutex<PublishRecord>,
    /// The discovery source of each upstream that has one, for `/status`.
    pub(crate) sources: ShownSources,
    /// The built-in service registry, while the config has one.
    pub(crate) registry: Mutex<Option<Arc<Registry>>>,
    pub reload_counts: ReloadCounts,
    /// The config text the last reload from the file read, so the file
    /// watcher can skip events that did not change it.
    pub(crate) last_file_text: Mutex<Option<String>>,
    pub started_at: SystemTime,
    pub(crate) connection_slots: Arc<Semaphore>,
    /// Connection counters of every listener that ever ran, by name; a
    /// listener that comes back keeps counting where it stopped.
    pub listener_stats: Mutex<HashMap<String, Arc<ListenerStats>>>,
    connections: TaskTracker,
    /// Turns true on shutdown, for background tasks such as the file watcher.
    pub(crate) shutdown: watch::Sender<bool>,
    /// Where the config comes from, when it is not a file.
    pub(crate) config_store: OnceLock<Arc<dyn ConfigStore>>,
    serve_admin: ServeAdmin,
}

impl App {
    /// The state of a proxy about to start with `config`, its first
    /// snapshot published as generation 1; nothing is bound or running yet.
    /// `serve_admin` serves the admin API on each admin listener it binds;
    /// discovered sets come in on `discovered`'s sender, kept by `Control`.
    pub(crate) fn new(
        config: Arc<Config>,
        serve_admin: ServeAdmin,
    ) -> (Arc<App>, UnboundedReceiver<Update>) {
        let started_at = SystemTime::now();
        let file_text = config
            .path
            .as_ref()
            .and_then(|path| std::fs::read_to_string(path).ok());
        let (updates, discovered) = tokio::sync::mpsc::unbounded_channel();
        let app = Arc::new(App {
            snapshots: Arc::new(ArcSwap::from_pointee(Snapshot::build(
                Arc::clone(&config),
                1,
                None,
                &RuntimeServers::default(),
            ))),
            control: tokio::sync::Mutex::new(Control::new(config.global.max_connections, updates)),
            bound: ArcSwap::default(),
            last_reload: Mutex::new(ReloadRecord::started(started_at)),
            last_publish: Mutex::new(PublishRecord {
                generation: 1,
                at: started_at,
                trigger: None,
                changes: Vec::new(),
            }),
            sources: Mutex::default(),
            registry: Mutex::default(),
            reload_counts: ReloadCounts::default(),
            last_file_text: Mutex::new(file_text),
            started_at,
            connection_slots: Arc::new(Semaphore::new(config.global.max_connections)),
            listener_stats: Mutex::default(),
            connections: TaskTracker::new(),
            shutdown: watch::channel(false).0,
            config_store: OnceLock::new(),
            serve_admin,
        });
        (app, discovered)
    }

    /// Binds what `config` wants and is not bound yet: listeners, then admin.
    pub(crate) async fn bind_missing(
        &self,
        control: &Control,
        config: &Config,
    ) -> Result<(BindPlan, BindPlan), BindError> {
        let listeners: Vec<(String, SocketAddr)> = config
            .listeners
            .iter()
            .map(|l| (l.name.clone(), l.listen))
            .collect();
        let admin: Vec<(String, SocketAddr)> = config
            .admin
            .iter()
            .map(|a| ("admin".to_string(), a.listen))
            .collect();
        let listeners = control.listeners.bind_missing(&listeners).await?;
        let admin = control.admin.bind_missing(&admin).await?;
        Ok((listeners, admin))
    }

    /// Starts newly bound listeners and stops those no longer wanted.
    pub(crate) fn switch_listeners(
        self: &Arc<Self>,
        control: &mut Control,
        listeners: BindPlan,
        admin: BindPlan,
    ) {
        control
            .listeners
            .switch_to(listeners, |name, socket, stop| {
                let stats = Arc::clone(
                    self.listener_stats
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(name.to_string())
                        .or_default(),
                );
                let context = ListenerContext {
                    name: Arc::from(name),
                    stats,
                    snapshots: Arc::clone(&self.snapshots),
                    connection_slots: Arc::clone(&self.connection_slots),
                    tracker: self.connections.clone(),
                };
                tokio::spawn(serve_listener(socket, context, stop));
            });
        control.admin.switch_to(admin, |_, socket, stop| {
            (self.serve_admin)(socket, Arc::clone(self), stop);
        });
        let bound = Bound {
            listeners: control.listeners.bound(),
            admin: control.admin.bound().first().map(|b| b.addr),
        };
        if let Some(registry) = self.registry() {
            registry.set_own(bound.addresses());
        }
        self.bound.store(Arc::new(bound));
    }

    /// Stops accepting, lets requests in flight finish for up to
    /// `shutdown_timeout`, and returns true if all finished in time.
    pub async fn shutdown(&self) -> bool {
        let limit = self.snapshots.load().config.global.shutdown_timeout;
        {
            let mut control = self.control.lock().await;
            control.listeners.stop_all();
            control.admin.stop_all();
            control.health_checks.clear();
            control.sources.clear();
        }
        if let Some(registry) = self
            .registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            registry.stop();
        }
        self.shutdown.send_replace(true);
        if let Some(store) = self.config_store.get() {
            store.leave().await;
        }
        self.connections.close();
        let in_time = tokio::time::timeout(limit, self.connections.wait())
            .await
            .is_ok();
        if !in_time {
            tracing::warn!(
                ?limit,
                "shutdown_timeout passed with requests still in flight"
            );
        }
        in_time
    }
}
