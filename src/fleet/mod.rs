//! The fleet (docs/fleet.md): usherd instances that read one config from an
//! etcd key (`usherd run --config etcd://HOST:PORT/KEY`), follow its changes
//! with a watch through the same build-validate-swap as a file, and each
//! keep a leased member key (`KEY/members/NAME`) saying which revision they
//! run, so `usherd fleet status` can tell whether the fleet has converged.
//!
//! Failure rules: the store unreachable or without quorum leaves the running
//! config serving and the state `stale`; on return the key is read again
//! and the watch resumes after that read's revision (no change is missed).
//! A config this instance refuses is reported in its member key and
//! `/status`; the old one keeps serving.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::config::{parse_config_at, Config};
use crate::control::{App, BoxFuture, ConfigStore};
use crate::etcd::{Etcd, Event};
use crate::reload::{ReloadError, Trigger};

/// How long one etcd call may take per endpoint.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// A member key's lease: it disappears this long after its instance stops.
const MEMBER_TTL: Duration = Duration::from_secs(10);
/// Retries after a failure start here and double up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Where the config lives: `etcd://host:port[,host:port...]/key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigKey {
    /// `http://host:port`.
    pub endpoints: Vec<String>,
    /// The key, starting with `/`.
    pub key: String,
}

impl ConfigKey {
    /// `None` when `text` is not an `etcd://` URL (a file path); else the
    /// key or why the URL is wrong.
    pub fn parse(text: &str) -> Option<Result<ConfigKey, String>> {
        let rest = text.strip_prefix("etcd://")?;
        let Some((hosts, key)) = rest.split_once('/') else {
            return Some(Err(format!(
                "{text}: name the key after the hosts, like etcd://127.0.0.1:2379/usherd/config"
            )));
        };
        let endpoints: Vec<String> = hosts
            .split(',')
            .filter(|host| !host.is_empty())
            .map(|host| format!("http://{host}"))
            .collect();
        if endpoints.is_empty() || key.is_empty() {
            return Some(Err(format!(
                "{text}: give at least one host:port and a key, like etcd://127.0.0.1:2379/usherd/config"
            )));
        }
        Some(Ok(ConfigKey {
            endpoints,
            key: format!("/{key}"),
        }))
    }

    /// `etcd://host:port/key`, for messages and `/status`.
    pub fn url(&self) -> String {
        let hosts: Vec<&str> = self
            .endpoints
            .iter()
            .map(|e| e.trim_start_matches("http://"))
            .collect();
        format!("etcd://{}{}", hosts.join(","), self.key)
    }

    /// Where the instances' member keys live.
    pub fn members_prefix(&self) -> String {
        format!("{}/members/", self.key)
    }
}

/// Reads and validates the config at `key`: the config and the revision of
/// the key. Relative paths in it are taken from the working directory.
pub async fn load(key: &ConfigKey) -> Result<(Config, i64), String> {
    let etcd = Etcd::new(key.endpoints.clone(), CALL_TIMEOUT);
    let (kv, _) = etcd.get(&key.key).await?;
    let kv = kv.ok_or_else(|| format!("{}: the key does not exist", key.url()))?;
    let text = String::from_utf8(kv.value)
        .map_err(|_| format!("{}: the value is not UTF-8", key.url()))?;
    let config = parse(key, &text)?;
    Ok((config, kv.mod_revision))
}

fn parse(key: &ConfigKey, text: &str) -> Result<Config, String> {
    let cwd = std::env::current_dir().unwrap_or_default();
    parse_config_at(text, &key.url(), &cwd).map_err(|errors| errors.to_string())
}

/// This instance's link to the fleet.
pub struct Fleet {
    key: ConfigKey,
    etcd: Etcd,
    /// This instance's name in the fleet (its member key).
    name: String,
    state: Mutex<State>,
    /// Wakes the member task to write the member key now.
    changed: Notify,
    /// The member key's lease (0: none yet).
    lease: AtomicI64,
}

#[derive(Debug, Clone, Default)]
struct State {
    /// The key's revision of the config running now.
    revision: i64,
    /// A revision this instance refused, and why; cleared by the next good one.
    refused: Option<(i64, String)>,
    /// The config watch is down.
    watch_down: bool,
    /// The store did not answer the member task's last calls.
    store_failing: bool,
    last_error: Option<String>,
    /// The fleet's member keys as last read.
    members: Vec<Value>,
}

impl Fleet {
    /// Starts following `key` (whose revision `revision` runs now) and
    /// keeping this instance's member key.
    pub fn start(app: &Arc<App>, key: ConfigKey, revision: i64, name: String) -> Arc<Fleet> {
        let fleet = Arc::new(Fleet {
            etcd: Etcd::new(key.endpoints.clone(), CALL_TIMEOUT),
            key,
            name,
            state: Mutex::new(State {
                revision,
                ..State::default()
            }),
            changed: Notify::new(),
            lease: AtomicI64::new(0),
        });
        tokio::spawn(follow(Arc::clone(&fleet), Arc::downgrade(app), revision));
        tokio::spawn(keep_member(Arc::clone(&fleet), Arc::downgrade(app)));
        fleet
    }

    /// Applies the config text of `revision`; a refusal is recorded.
    async fn apply(
        &self,
        app: &Arc<App>,
        value: Vec<u8>,
        revision: i64,
        trigger: Trigger,
    ) -> Result<u64, ReloadError> {
        let outcome = match String::from_utf8(value) {
            Ok(text) => match parse(&self.key, &text) {
                Ok(config) => app.apply(config, trigger).await,
                Err(errors) => {
                    app.record_failure(trigger, errors.clone());
                    Err(ReloadError::Store(errors))
                }
            },
            Err(_) => {
                let error = format!("{}: the value is not UTF-8", self.key.url());
                app.record_failure(trigger, error.clone());
                Err(ReloadError::Store(error))
            }
        };
        self.update(|state| match &outcome {
            Ok(_) => {
                state.revision = revision;
                state.refused = None;
            }
            Err(error) => state.refused = Some((revision, error.to_string())),
        });
        outcome
    }

    /// Changes the state and has the member key rewritten.
    fn update(&self, change: impl FnOnce(&mut State)) {
        self.update_quietly(change);
        self.changed.notify_one();
    }

    /// Changes the state without waking the member task (its own results).
    fn update_quietly(&self, change: impl FnOnce(&mut State)) {
        change(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn state(&self) -> State {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// This instance's member record.
    fn member(&self, app: &App) -> Value {
        let state = self.state();
        json!({
            "name": self.name,
            "admin": app.bound.load().admin.map(|addr| addr.to_string()),
            "revision": state.revision,
            "generation": app.snapshots.load().generation,
            "state": if state.refused.is_some() { "refused" } else if state.stale() { "stale" } else { "ok" },
            "refused_revision": state.refused.as_ref().map(|(revision, _)| revision),
            "error": state.refused.as_ref().map(|(_, error)| first_line(error)),
            "started_at": humantime::format_rfc3339_seconds(app.started_at).to_string(),
            "version": env!("CARGO_PKG_VERSION"),
        })
    }

    /// The `fleet` block of `/status`.
    fn fleet_status(&self) -> Value {
        let state = self.state();
        json!({
            "config": self.key.url(),
            "name": self.name,
            "revision": state.revision,
            "state": if state.stale() { "stale" } else { "ok" },
            "last_error": state.last_error,
            "refused_revision": state.refused.as_ref().map(|(revision, _)| revision),
            "refused_error": state.refused.as_ref().map(|(_, error)| error),
            "members": state.members,
        })
    }
}

impl State {
    /// The running config may be behind the store's: the watch is down or
    /// the store does not answer.
    fn stale(&self) -> bool {
        self.watch_down || self.store_failing
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

impl ConfigStore for Fleet {
    /// Reads the key again and applies it (SIGHUP, `POST /reload`).
    fn reread<'a>(
        &'a self,
        app: &'a Arc<App>,
        trigger: Trigger,
    ) -> BoxFuture<'a, Result<u64, ReloadError>> {
        Box::pin(async move {
            match self.etcd.get(&self.key.key).await {
                Ok((Some(kv), _)) => self.apply(app, kv.value, kv.mod_revision, trigger).await,
                Ok((None, _)) => Err(ReloadError::Store(format!(
                    "{}: the key does not exist",
                    self.key.url()
                ))),
                Err(error) => Err(ReloadError::Store(error)),
            }
        })
    }

    fn status(&self) -> Value {
        self.fleet_status()
    }

    /// Leaves the fleet on shutdown: the member key goes with its lease, so
    /// `fleet status` stops listing this instance at once.
    fn leave(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let lease = self.lease.swap(0, Ordering::Relaxed);
            if lease != 0 {
                if let Err(error) = self.etcd.revoke(lease).await {
                    tracing::warn!(%error, "fleet: could not revoke the member key's lease; it runs out on its own");
                }
            }
        })
    }
}

/// Follows the config key: a watch from the revision after the last read;
/// when it breaks, the key is read again (applied if it moved) and a new
/// watch starts after that read.
async fn follow(fleet: Arc<Fleet>, weak: std::sync::Weak<App>, mut applied: i64) {
    let mut from = applied + 1;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let error = match fleet.etcd.watch(&fleet.key.key, false, from).await {
            Ok(mut watch) => {
                fleet.update(|state| {
                    state.watch_down = false;
                    state.last_error = None;
                });
                backoff = FIRST_BACKOFF;
                loop {
                    let (events, revision) = match watch.next().await {
                        Ok(batch) => batch,
                        Err(error) => break error,
                    };
                    let Some(app) = weak.upgrade() else { return };
                    for event in events {
                        match event {
                            Event::Put(kv) if kv.mod_revision > applied => {
                                applied = kv.mod_revision;
                                fleet
                                    .apply(&app, kv.value, kv.mod_revision, Trigger::Store)
                                    .await
                                    .ok();
                            }
                            Event::Put(_) => {}
                            Event::Delete { .. } => tracing::warn!(
                                key = %fleet.key.url(),
                                "fleet: the config key was deleted; the running config stays"
                            ),
                        }
                    }
                    from = revision + 1;
                }
            }
            Err(error) => error,
        };
        match weak.upgrade() {
            Some(app) if !*app.shutdown.borrow() => {}
            _ => return,
        }
        if !fleet.state().watch_down {
            tracing::warn!(key = %fleet.key.url(), %error, "fleet: lost the config watch; the running config stays (stale)");
        }
        fleet.update(|state| {
            state.watch_down = true;
            state.last_error = Some(error);
        });
        tokio::time::sleep(jitter(backoff)).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
        // Read again: whatever changed while the watch was down.
        let Some(app) = weak.upgrade() else { return };
        match fleet.etcd.get(&fleet.key.key).await {
            Ok((kv, revision)) => {
                if let Some(kv) = kv.filter(|kv| kv.mod_revision > applied) {
                    applied = kv.mod_revision;
                    fleet
                        .apply(&app, kv.value, kv.mod_revision, Trigger::Store)
                        .await
                        .ok();
                }
                from = revision + 1;
            }
            Err(error) => fleet.update(|state| state.last_error = Some(error)),
        }
    }
}

/// Keeps `KEY/members/NAME` under a lease: renewed every third of its TTL,
/// rewritten whenever what it says changes, and the members read back for
/// `/status`. A store that does not answer marks the fleet stale.
async fn keep_member(fleet: Arc<Fleet>, app: std::sync::Weak<App>) {
    let key = format!("{}{}", fleet.key.members_prefix(), fleet.name);
    let mut lease = 0;
    let mut written = Value::Null;
    let mut shutdown = match app.upgrade() {
        Some(app) => app.shutdown.subscribe(),
        None => return,
    };
    loop {
        let Some(app_now) = app.upgrade() else { return };
        let member = fleet.member(&app_now);
        drop(app_now);
        let outcome = async {
            if lease != 0 && fleet.etcd.keep_alive(lease).await? == 0 {
                lease = 0;
            }
            if lease == 0 {
                lease = fleet.etcd.grant(MEMBER_TTL).await?;
                fleet.lease.store(lease, Ordering::Relaxed);
                written = Value::Null;
            }
            if member != written {
                fleet
                    .etcd
                    .put(&key, member.to_string().as_bytes(), lease)
                    .await?;
                written = member;
            }
            let (kvs, _) = fleet.etcd.prefix(&fleet.key.members_prefix()).await?;
            Ok::<_, String>(
                kvs.iter()
                    .filter_map(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
                    .collect::<Vec<Value>>(),
            )
        }
        .await;
        match outcome {
            Ok(members) => fleet.update_quietly(|state| {
                state.members = members;
                state.store_failing = false;
            }),
            Err(error) => {
                if !fleet.state().store_failing {
                    tracing::warn!(key = %fleet.key.url(), %error, "fleet: the store does not answer; the running config stays (stale)");
                }
                // A lease that may have run out meanwhile is asked for again.
                lease = 0;
                fleet.update_quietly(|state| {
                    state.store_failing = true;
                    state.last_error = Some(error);
                });
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(MEMBER_TTL / 3) => {}
            _ = fleet.changed.notified() => {}
            // `App::shutdown` revokes the lease (`leave`).
            _ = shutdown.wait_for(|down| *down) => return,
        }
    }
}

/// `usherd fleet status`: the table, and whether every instance runs the
/// key's latest revision.
pub async fn status_table(key: &ConfigKey) -> Result<(String, bool), String> {
    let etcd = Etcd::new(key.endpoints.clone(), CALL_TIMEOUT);
    let (config, _) = etcd.get(&key.key).await?;
    let latest = config.map_or(0, |kv| kv.mod_revision);
    let (kvs, _) = etcd.prefix(&key.members_prefix()).await?;
    let members: Vec<Value> = kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
        .collect();
    let mut out = format!("config {} at revision {latest}\n", key.url());
    out += &format!(
        "{:<20} {:<22} {:>9} {:>10}  {}\n",
        "NAME", "ADMIN", "REVISION", "GENERATION", "STATE"
    );
    let text = |value: &Value| value.as_str().map_or_else(|| "-".to_string(), String::from);
    for member in &members {
        let mut state = text(&member["state"]);
        if let (Some(revision), Some(error)) = (
            member["refused_revision"].as_i64(),
            member["error"].as_str(),
        ) {
            state += &format!(" (refused revision {revision}: {error})");
        }
        out += &format!(
            "{:<20} {:<22} {:>9} {:>10}  {state}\n",
            text(&member["name"]),
            text(&member["admin"]),
            member["revision"],
            member["generation"],
        );
    }
    let current = members
        .iter()
        .filter(|member| member["revision"].as_i64() == Some(latest))
        .count();
    let converged = !members.is_empty() && current == members.len();
    out += &if members.is_empty() {
        "no instance is running this config\n".to_string()
    } else if converged {
        format!("all {} instances run revision {latest}\n", members.len())
    } else {
        format!(
            "{current} of {} instances run revision {latest}\n",
            members.len()
        )
    };
    Ok((out, converged))
}

fn jitter(wait: Duration) -> Duration {
    wait.mul_f64(0.9 + fastrand::f64() * 0.2)
}
