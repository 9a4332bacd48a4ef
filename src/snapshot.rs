//! The routing snapshot: router and upstream pools compiled from one config,
//! immutable, published through ONE `ArcSwap` so a request sees a consistent
//! whole. Each request loads it once.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::routing::Router;
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
}

/// The published snapshot.
pub type SharedSnapshot = Arc<ArcSwap<Snapshot>>;

impl Snapshot {
    pub fn build(config: Arc<Config>, generation: u64) -> Snapshot {
        let upstreams: Vec<Arc<Upstream>> = config
            .upstreams
            .iter()
            .map(|upstream| Arc::new(Upstream::build(upstream)))
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
            config: Arc::clone(&config),
            router,
            upstreams,
        }
    }
}
