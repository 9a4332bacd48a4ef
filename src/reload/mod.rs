//! Live reload (docs/config.md#reload): build, validate, then swap.
//!
//! The whole new config is read and validated off the request path, the new
//! snapshot is built carrying the state of servers that stay, new listeners
//! are bound (all or none), and only then is the snapshot published with one
//! `ArcSwap::store`. Any error leaves everything as it was. Requests in flight
//! keep the snapshot they loaded, so they finish as they started.
//!
//! Triggers: SIGHUP (main.rs), the file changing on disk (`watch`), the
//! config's etcd key changing (`fleet`), and `POST /reload` (admin). One
//! reload runs at a time.

pub mod diff;
mod watch;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use crate::config::{parse_config, Config, ConfigError, ConfigErrors};
use crate::control::{App, Control};
pub use crate::control::{ReloadCounts, ReloadError, ReloadRecord, Trigger};

pub use watch::{watch_config_file, DEBOUNCE};

impl App {
    /// Reads the config file (or etcd key) again and applies it; returns
    /// the new generation.
    pub async fn reload(self: &Arc<Self>, trigger: Trigger) -> Result<u64, ReloadError> {
        if let Some(store) = self.config_store.get() {
            return store.reread(self, trigger).await;
        }
        self.reload_file(trigger, true).await
    }

    /// As `reload`; with `report` false a file that cannot be read or parsed
    /// is not recorded as a failed reload (the watcher tries once more first).
    pub(crate) async fn reload_file(
        self: &Arc<Self>,
        trigger: Trigger,
        report: bool,
    ) -> Result<u64, ReloadError> {
        let Some(path) = self.snapshots.load().config.path.clone() else {
            return Err(ReloadError::NoFile);
        };
        let read = tokio::task::spawn_blocking(move || {
            let file = path.display().to_string();
            let text = std::fs::read_to_string(&path).map_err(|error| {
                ConfigErrors(vec![ConfigError {
                    file: file.clone(),
                    line: 0,
                    column: 0,
                    message: format!("cannot read the file: {error}"),
                }])
            })?;
            let parsed = parse_config(&text, &file).map(|mut config| {
                config.path = Some(path);
                config
            });
            Ok::<_, ConfigErrors>((text, parsed))
        })
        .await
        .expect("reading the config does not panic");
        let parsed = match read {
            Ok((text, parsed)) => {
                *self
                    .last_file_text
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(text);
                parsed
            }
            Err(unreadable) => Err(unreadable),
        };
        match parsed {
            Ok(config) => self.apply(config, trigger).await,
            Err(errors) => {
                if report {
                    self.record_failure(trigger, errors.to_string());
                }
                Err(ReloadError::Config(errors))
            }
        }
    }

    /// Applies a validated config: bind new listeners, build the snapshot with
    /// the state of servers that stay, publish it, switch listeners.
    pub async fn apply(
        self: &Arc<Self>,
        config: Config,
        trigger: Trigger,
    ) -> Result<u64, ReloadError> {
        let mut control = self.control.lock().await;
        let (listeners, admin) = match self.bind_missing(&control, &config).await {
            Ok(plans) => plans,
            Err(error) => {
                self.record_failure(trigger, error.to_string());
                return Err(ReloadError::Bind(error));
            }
        };
        let config = Arc::new(config);
        // Off the request threads: describing thousands of changed upstreams
        // takes milliseconds.
        let (before, after) = (
            Arc::clone(&self.snapshots.load().config),
            Arc::clone(&config),
        );
        let changes = tokio::task::spawn_blocking(move || diff::describe(&before, &after))
            .await
            .expect("describing the changes does not panic");
        for warning in &config.warnings {
            tracing::warn!("{warning}");
        }
        let max_connections = config.global.max_connections;
        let generation = self
            .publish_config(&mut control, config, trigger, changes.clone())
            .await;
        self.switch_listeners(&mut control, listeners, admin);
        self.resize_connection_slots(&mut control, max_connections);
        drop(control);

        self.reload_counts.ok.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            generation,
            trigger = trigger.name(),
            changes = %if changes.is_empty() { "none".to_string() } else { changes.join("; ") },
            "config reloaded"
        );
        *self.last_reload.lock().unwrap_or_else(|p| p.into_inner()) = ReloadRecord {
            at: SystemTime::now(),
            ok: true,
            error: None,
            changes,
            trigger: Some(trigger),
        };
        Ok(generation)
    }

    /// Records a refused reload: counted, logged, shown in `/status`.
    pub(crate) fn record_failure(&self, trigger: Trigger, error: String) {
        self.reload_counts.failed.fetch_add(1, Ordering::Relaxed);
        tracing::error!(trigger = trigger.name(), %error, "config reload refused; the running config stays");
        *self.last_reload.lock().unwrap_or_else(|p| p.into_inner()) = ReloadRecord {
            at: SystemTime::now(),
            ok: false,
            error: Some(error),
            changes: Vec::new(),
            trigger: Some(trigger),
        };
    }

    /// Makes the connection slots match a changed `max_connections`: more
    /// at once; fewer as connections beyond the new limit close.
    fn resize_connection_slots(&self, control: &mut Control, max_connections: usize) {
        let old = control.max_connections;
        control.max_connections = max_connections;
        if max_connections > old {
            self.connection_slots.add_permits(max_connections - old);
        } else if max_connections < old {
            let surplus = u32::try_from(old - max_connections).unwrap_or(u32::MAX);
            let slots = Arc::clone(&self.connection_slots);
            tokio::spawn(async move {
                if let Ok(permits) = slots.acquire_many_owned(surplus).await {
                    permits.forget();
                }
            });
        }
    }

    /// The last reload's outcome.
    pub fn last_reload(&self) -> ReloadRecord {
        self.last_reload
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
