//! usherd: a layer-7 reverse proxy and load balancer.
//!
//! `Proxy::start` binds the listeners of a validated `Config`, publishes its
//! routing `Snapshot` and serves until `Proxy::shutdown`. The binary
//! (`main.rs`) adds the command line, logging and signals around it.

#![forbid(unsafe_code)]

pub mod admin;
pub mod balance;
pub mod config;
pub mod demo;
pub mod error;
pub mod proxy;
pub mod routing;
pub mod server;
pub mod snapshot;
pub mod upstream;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::server::{http_builder, serve_listener, ConnTimeouts, ListenerContext};
use crate::snapshot::{SharedSnapshot, Snapshot};

/// The proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} for {what}: {source}")]
    Bind {
        what: String,
        addr: SocketAddr,
        source: io::Error,
    },
}

/// A listener as bound: its port is the real one even when the config said 0.
#[derive(Debug, Clone)]
pub struct BoundListener {
    pub name: String,
    pub addr: SocketAddr,
}

/// A running proxy.
pub struct Proxy {
    pub listeners: Vec<BoundListener>,
    /// Where the admin API answers, when the config has `[admin]`.
    pub admin: Option<SocketAddr>,
    snapshots: SharedSnapshot,
    shutdown: watch::Sender<bool>,
    connections: TaskTracker,
}

impl Proxy {
    /// Binds every listener (all or none) and starts serving.
    pub async fn start(config: Config) -> Result<Proxy, StartError> {
        let config = Arc::new(config);
        let mut bound = Vec::new();
        for listener in &config.listeners {
            let socket =
                TcpListener::bind(listener.listen)
                    .await
                    .map_err(|source| StartError::Bind {
                        what: format!("listener `{}`", listener.name),
                        addr: listener.listen,
                        source,
                    })?;
            bound.push((listener.name.clone(), socket));
        }
        let admin_socket =
            match &config.admin {
                Some(admin) => Some(TcpListener::bind(admin.listen).await.map_err(|source| {
                    StartError::Bind {
                        what: "the admin API".into(),
                        addr: admin.listen,
                        source,
                    }
                })?),
                None => None,
            };

        let snapshots: SharedSnapshot = Arc::new(ArcSwap::from_pointee(Snapshot::build(
            Arc::clone(&config),
            1,
        )));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let connections = TaskTracker::new();
        let http = Arc::new(http_builder(&config.global));
        let timeouts = ConnTimeouts {
            header_read: config.global.header_read_timeout,
            idle: config.global.idle_timeout,
        };
        let connection_slots = Arc::new(Semaphore::new(config.global.max_connections));
        let mut listeners = Vec::new();
        for (name, socket) in bound {
            let addr = socket.local_addr().map_err(|source| StartError::Bind {
                what: format!("listener `{name}`"),
                addr: socket
                    .local_addr()
                    .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into()),
                source,
            })?;
            tracing::info!(listener = %name, %addr, "listening");
            let context = ListenerContext {
                name: Arc::from(name.as_str()),
                snapshots: Arc::clone(&snapshots),
                http: Arc::clone(&http),
                timeouts,
                connection_slots: Arc::clone(&connection_slots),
                tracker: connections.clone(),
            };
            tokio::spawn(serve_listener(socket, context, shutdown_rx.clone()));
            listeners.push(BoundListener { name, addr });
        }
        let admin = match admin_socket {
            Some(socket) => {
                let addr = socket.local_addr().ok();
                let state = admin::AdminState {
                    snapshots: Arc::clone(&snapshots),
                    listeners: listeners.clone(),
                    started_at: SystemTime::now(),
                };
                if let Some(addr) = addr {
                    tracing::info!(%addr, "admin API listening");
                }
                tokio::spawn(admin::serve(socket, Arc::new(state), shutdown_rx.clone()));
                addr
            }
            None => None,
        };
        Ok(Proxy {
            listeners,
            admin,
            snapshots,
            shutdown,
            connections,
        })
    }

    /// The address a listener was bound to, by name.
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.addr)
    }

    /// The routing snapshot now in force.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshots.load_full()
    }

    /// Stops accepting, lets requests in flight finish for up to
    /// `shutdown_timeout`, and returns true if all finished in time.
    pub async fn shutdown(self) -> bool {
        let limit = self.snapshots.load().config.global.shutdown_timeout;
        // Receivers live as long as the listeners; none left means nothing to stop.
        self.shutdown.send_replace(true);
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
