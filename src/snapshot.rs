//! The routing snapshot: router, upstream pools and client-connection settings
//! compiled from one config, immutable, published through ONE `ArcSwap` so a
//! request sees a consistent whole. Each request loads it once; each new client
//! connection takes its settings from it.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{Config, ListenerTls};
use crate::routing::Router;
use crate::stats::StatusClasses;
use crate::tls::CertStore;
use crate::upstream::{RuntimeServers, Upstream};

/// Everything a request needs to be routed and balanced.
#[derive(Debug)]
pub struct Snapshot {
    /// 1 for the config the proxy started with, +1 for each applied reload.
    pub generation: u64,
    pub config: Arc<Config>,
    pub router: Arc<Router>,
    /// In config order; routes refer to them by index.
    pub upstreams: Vec<Arc<Upstream>>,
    /// True when some listener has `redirect_https`, so requests on the
    /// others need not look.
    any_redirect: bool,
    /// Responses by status class per vhost, in config order; shared with the
    /// snapshot before for vhosts that stay.
    pub vhost_responses: Vec<Arc<StatusClasses>>,
    /// Responses to requests no vhost took.
    pub unrouted_responses: Arc<StatusClasses>,
}

/// The published snapshot.
pub type SharedSnapshot = Arc<ArcSwap<Snapshot>>;

impl Snapshot {
    /// Compiles `config`. With `previous` (the snapshot before a reload),
    /// servers that stay keep their counters, connections and turn.
    /// `runtime` holds the servers discovery found and the weights set
    /// through the admin API.
    pub fn build(
        config: Arc<Config>,
        generation: u64,
        previous: Option<&Snapshot>,
        runtime: &RuntimeServers,
    ) -> Snapshot {
        let upstreams: Vec<Arc<Upstream>> = config
            .upstreams
            .iter()
            .map(|upstream| {
                let before = previous.and_then(|p| p.upstream(&upstream.name));
                Arc::new(Upstream::build(upstream, before.map(|u| &**u), runtime))
            })
            .collect();
        let index: HashMap<&str, usize> = config
            .upstreams
            .iter()
            .enumerate()
            .map(|(i, u)| (u.name.as_str(), i))
            .collect();
        let listener_names: Vec<&str> = config.listeners.iter().map(|l| l.name.as_str()).collect();
        let router = Arc::new(Router::build(&config.vhosts, &listener_names, |name| {
            index[name]
        }));
        let vhost_responses = config
            .vhosts
            .iter()
            .map(|vhost| {
                previous
                    .and_then(|p| p.vhost_responses_named(&vhost.name))
                    .unwrap_or_default()
            })
            .collect();
        Snapshot {
            vhost_responses,
            unrouted_responses: previous
                .map(|p| Arc::clone(&p.unrouted_responses))
                .unwrap_or_default(),
            generation,
            router,
            upstreams,
            any_redirect: config.listeners.iter().any(|l| l.redirect_https.is_some()),
            config,
        }
    }

    /// This snapshot with the upstreams named in `changed` rebuilt from the
    /// same config and `runtime` (servers that stay keep their state); all
    /// else is shared, so the cost does not grow with the other upstreams.
    pub fn with_upstreams_rebuilt(
        &self,
        generation: u64,
        changed: &[&str],
        runtime: &RuntimeServers,
    ) -> Snapshot {
        let upstreams = self
            .upstreams
            .iter()
            .zip(&self.config.upstreams)
            .map(|(built, config)| {
                if changed.contains(&&*built.name) {
                    Arc::new(Upstream::build(config, Some(built), runtime))
                } else {
                    Arc::clone(built)
                }
            })
            .collect();
        Snapshot {
            generation,
            config: Arc::clone(&self.config),
            router: Arc::clone(&self.router),
            upstreams,
            any_redirect: self.any_redirect,
            vhost_responses: self.vhost_responses.clone(),
            unrouted_responses: Arc::clone(&self.unrouted_responses),
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

    fn vhost_responses_named(&self, name: &str) -> Option<Arc<StatusClasses>> {
        let index = self.config.vhosts.iter().position(|v| v.name == name)?;
        Some(Arc::clone(&self.vhost_responses[index]))
    }

    /// Counts a response to a request that vhost `vhost` (an index) took, or
    /// that none took.
    pub fn record_response(&self, vhost: Option<usize>, status: u16) {
        match vhost {
            Some(index) => self.vhost_responses[index].record(status),
            None => self.unrouted_responses.record(status),
        }
    }

    /// The pool named `name`.
    pub fn upstream(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.upstreams.iter().find(|u| &*u.name == name)
    }
}
