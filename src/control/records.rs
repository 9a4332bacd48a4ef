//! What the control side records of its publishes and reloads, for
//! `GET /status` and the metrics, and why a reload was refused.

use std::sync::atomic::AtomicU64;
use std::time::SystemTime;

use super::Trigger;
use crate::config::ConfigErrors;
use crate::server::BindError;

/// The last publish, for `GET /status`.
#[derive(Debug, Clone)]
pub struct PublishRecord {
    pub generation: u64,
    pub at: SystemTime,
    pub trigger: Option<Trigger>,
    pub changes: Vec<String>,
}

/// Why a reload was refused; the running config stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(ConfigErrors),
    #[error(transparent)]
    Bind(BindError),
    #[error("the running config was not read from a file, so there is no file to reload")]
    NoFile,
    /// The config's etcd key could not be read, or its value was refused.
    #[error("{0}")]
    Store(String),
}

/// The outcome of the last reload, for `GET /status`.
#[derive(Debug, Clone)]
pub struct ReloadRecord {
    pub at: SystemTime,
    pub ok: bool,
    pub error: Option<String>,
    /// One line per changed listener, vhost, upstream or setting.
    pub changes: Vec<String>,
    pub trigger: Option<Trigger>,
}

impl ReloadRecord {
    /// The record before any reload: the start counts as a good load.
    pub fn started(at: SystemTime) -> ReloadRecord {
        ReloadRecord {
            at,
            ok: true,
            error: None,
            changes: Vec::new(),
            trigger: None,
        }
    }
}

/// Reloads by result, since start.
#[derive(Debug, Default)]
pub struct ReloadCounts {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
}
