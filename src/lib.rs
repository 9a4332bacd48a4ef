//! usherd: a layer-7 reverse proxy and load balancer.
//!
//! `Proxy::start` binds the listeners of a validated `Config`, publishes its
//! routing `Snapshot` and serves until `Proxy::shutdown`; `Proxy::reload` and
//! `Proxy::apply` change the config live. The binary (`main.rs`) adds the
//! command line, logging and signals around it.

#![forbid(unsafe_code)]

pub mod admin;
mod app;
pub mod balance;
#[cfg(feature = "tools")]
pub mod bench;
pub mod body;
pub mod config;
mod control;
#[cfg(feature = "tools")]
pub mod demo;
#[cfg(feature = "tools")]
pub mod demo_registration;
pub mod discovery;
pub mod downstream;
pub mod error;
pub mod etcd;
pub mod fleet;
pub mod host;
pub mod http1;
pub mod log_limit;
pub mod probe;
pub mod proxy;
pub mod registry;
pub mod reload;
pub mod routing;
mod secret;
pub mod server;
pub mod snapshot;
pub mod stats;
pub mod tls;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::Config;
use crate::control::App;
use crate::reload::{ReloadError, ReloadRecord, Trigger};
use crate::snapshot::Snapshot;

pub use crate::server::{BindError, BoundListener};

/// A running proxy.
pub struct Proxy {
    app: Arc<App>,
}

impl Proxy {
    /// Binds every listener (all or none) and starts serving.
    pub async fn start(config: Config) -> Result<Proxy, BindError> {
        Ok(Proxy {
            app: app::start(config).await?,
        })
    }

    /// The listeners now serving, in config order, with their real ports.
    pub fn listeners(&self) -> Vec<BoundListener> {
        self.app.bound.load().listeners.clone()
    }

    /// The address a listener is bound to, by name.
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.app
            .bound
            .load()
            .listeners
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.addr)
    }

    /// Where the admin API answers, when the config has `[admin]`.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.app.bound.load().admin
    }

    /// The routing snapshot now in force.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.app.snapshots.load_full()
    }

    /// Reads the config file again and applies it; the new generation.
    pub async fn reload(&self, trigger: Trigger) -> Result<u64, ReloadError> {
        self.app.reload(trigger).await
    }

    /// Applies a validated config; the new generation.
    pub async fn apply(&self, config: Config) -> Result<u64, ReloadError> {
        self.app.apply(config, Trigger::Api).await
    }

    /// The outcome of the last reload.
    pub fn last_reload(&self) -> ReloadRecord {
        self.app.last_reload()
    }

    /// Follows the config's etcd key (whose revision `revision` runs now)
    /// and keeps this instance's member key as `name` (docs/fleet.md).
    pub fn follow_fleet(&self, key: fleet::ConfigKey, revision: i64, name: String) {
        let fleet = fleet::Fleet::start(&self.app, key, revision, name);
        self.app.config_store.set(fleet).ok();
    }

    /// Reloads whenever the config file changes on disk.
    pub fn watch_config_file(&self) -> notify::Result<()> {
        reload::watch_config_file(Arc::clone(&self.app))
    }

    /// Stops accepting, lets requests in flight finish for up to
    /// `shutdown_timeout`, and returns true if all finished in time.
    pub async fn shutdown(self) -> bool {
        self.app.shutdown().await
    }
}
