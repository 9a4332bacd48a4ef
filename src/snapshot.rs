//! The routing snapshot: router, upstream pools and client-connection settings
//! compiled from one config, immutable, published through ONE `ArcSwap` so a
//! request sees a consistent whole. Each request loads it once; each new client
//! connection takes its settings from it.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{Config, ListenerTls};
use crate::routing::Router;
use crate::server::{http_builder, ConnTimeouts, HttpBuilder};
use crate::tls::CertStore;
use crate::upstream::Upstream;

/// Everything a request needs to be routed and balanced.
#[derive(Debug)]
pub struct Snapshot {
    /// 1 for the config the proxy started with, +1 for each applied reload.
    pub generation: u64,
    pub config: Arc<Config>,
    pub router: Router,
    /// In config order; routes refer to them by index.
    pub upstreams: Vec<Arc<Upstream>>,
    /// hyper's settings for new client connections (limits from `[global]`).
    pub http: Arc<HttpBuilder>,
    pub timeouts: ConnTimeouts,
    /// True when some listener has `redirect_https`, so requests on the
    /// others need not look.
    any_redirect: bool,
}

/// The published snapshot.
pub type SharedSnapshot = Arc<ArcSwap<Snapshot>>;

impl Snapshot {
    /// Compiles `config`. With `previous` (the snapshot before a reload),
    /// servers that stay keep their counters, connections and turn.
    pub fn build(config: Arc<Config>, generation: u64, previous: Option<&Snapshot>) -> Snapshot {
        let upstreams: Vec<Arc<Upstream>> = config
            .upstreams
            .iter()
            .map(|upstream| {
                let before = previous.and_then(|p| p.upstream(&upstream.name));
                Arc::new(Upstream::build(upstream, before.map(|u| &**u)))
            })
            .collect();
        let index: HashMap<&str, usize> = config
            .upstreams
            .iter()
            .enumerate()
            .map(|(i, u)| (u.name.as_str(), i))
            .collect();
        let listener_names: Vec<&str> = config.listeners.iter().map(|l| l.name.as_str()).collect();
        let router = Router::build(&config.vhosts, &listener_names, |name| index[name]);
        Snapshot {
            generation,
            router,
            upstreams,
            http: Arc::new(http_builder(&config.global)),
            timeouts: ConnTimeouts {
                header_read: config.global.header_read_timeout,
                idle: config.global.idle_timeout,
            },
            any_redirect: config.listeners.iter().any(|l| l.redirect_https.is_some()),
            config,
        }
    }

    /// The certificates of the TLS listener named `listener`.
    pub fn cert_store(&self, listener: &str) -> Option<&Arc<CertStore>> {
        self.listener_tls(listener).map(|tls| &tls.certs)
    }

    /// The TLS settings of the listener named `listener`, if it has TLS.
    pub fn listener_tls(&self, listener: &str) -> Option<&ListenerTls> {
        self.config
            .listeners
            .iter()
            .find(|l| l.name == listener)?
            .tls
            .as_ref()
    }

    /// The https port a plain listener redirects every request to, if it does.
    pub fn redirect_https(&self, listener: &str) -> Option<u16> {
        if !self.any_redirect {
            return None;
        }
        self.config
            .listeners
            .iter()
            .find(|l| l.name == listener)?
            .redirect_https
    }

    /// The pool named `name`.
    pub fn upstream(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.upstreams.iter().find(|u| &*u.name == name)
    }
}
