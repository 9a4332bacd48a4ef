//! The registry kept in etcd (`[registry] etcd = [...]`), so that every
//! usherd pointed at the same cluster holds the same catalog: any of them
//! takes a registration, a check report or a lease renewal, and every one
//! routes by it. Each instance is one key, `PREFIX/instances/ID`, holding
//! its JSON (checks, their state and expiry included).
//!
//! - Changes made here (the catalog's dirty ids) are written by one task,
//!   each as a compare-and-swap on the key's last known revision. When the
//!   swap fails, another usherd changed the instance first: what etcd holds
//!   wins and replaces the local copy.
//! - Changes made elsewhere arrive by a watch of the prefix and replace the
//!   local copy. After a break, the prefix is read whole again (instances
//!   gone meanwhile are removed, unless written here and not yet stored)
//!   and the watch resumes after that read.
//! - HTTP and TCP checks run on one usherd only, the holder of the leased
//!   key `PREFIX/checks-leader`; when it stops, its lease runs out and
//!   another takes over. TTL checks and leases are reported to any of
//!   them; every one looks at expiries, and the first to write one wins.
//! - While etcd cannot be reached the local catalog keeps serving (`stale`)
//!   and local changes wait to be written.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::task::JoinHandle;

use super::{Instance, Registry};
use crate::etcd::{Etcd, Event, Kv};

/// How long one etcd call may take per endpoint.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// The checks leader's lease.
const LEADER_TTL: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The link between one registry and etcd.
pub struct Replica {
    etcd: Etcd,
    /// `PREFIX/instances/`.
    instances: String,
    /// `PREFIX/checks-leader`.
    leader_key: String,
    /// This usherd's name in the leader key.
    name: String,
    /// Each instance key's mod revision as last seen here.
    revisions: Mutex<HashMap<String, i64>>,
    /// Ids changed here and not yet stored.
    pending: Mutex<BTreeSet<String>>,
    outbox: UnboundedSender<String>,
    /// Whether the catalog has been read from etcd once.
    pub loaded: AtomicBool,
    /// Whether this usherd runs the HTTP and TCP checks.
    pub leads_checks: AtomicBool,
    state: Mutex<(bool, Option<String>)>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Replica {
    /// Connects `registry` to the cluster at `endpoints` under `prefix`:
    /// reads the catalog, then follows it and writes local changes.
    pub fn start(registry: &Arc<Registry>, endpoints: Vec<String>, prefix: &str) -> Arc<Replica> {
        let (outbox, queued) = unbounded_channel();
        let replica = Arc::new(Replica {
            etcd: Etcd::new(endpoints, CALL_TIMEOUT),
            instances: format!("{prefix}/instances/"),
            leader_key: format!("{prefix}/checks-leader"),
            name: format!(
                "{}-{}",
                crate::host::host_name().unwrap_or_else(|| "usherd".into()),
                std::process::id()
            ),
            revisions: Mutex::default(),
            pending: Mutex::default(),
            outbox,
            loaded: AtomicBool::new(false),
            leads_checks: AtomicBool::new(false),
            state: Mutex::new((true, None)),
            tasks: Mutex::default(),
        });
        let weak = Arc::downgrade(registry);
        let tasks = vec![
            tokio::spawn(follow(Arc::clone(&replica), weak.clone())),
            tokio::spawn(write(Arc::clone(&replica), weak.clone(), queued)),
            tokio::spawn(lead_checks(Arc::clone(&replica), weak)),
        ];
        *replica.tasks.lock().unwrap_or_else(|p| p.into_inner()) = tasks;
        replica
    }

    /// Ids changed here: they will be written.
    pub fn changed(&self, ids: BTreeSet<String>) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for id in ids {
            if pending.insert(id.clone()) {
                self.outbox.send(id).ok();
            }
        }
    }

    /// Stops following and writing, and gives up the checks.
    pub fn stop(&self) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }

    /// `stale` and the last error, for `/status`.
    pub fn state(&self) -> (bool, Option<String>) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_state(&self, stale: bool, error: Option<String>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if stale && !state.0 {
            tracing::warn!(
                error = error.as_deref().unwrap_or(""),
                "registry: etcd cannot be reached; the catalog here keeps serving (stale)"
            );
        } else if !stale && state.0 && self.loaded.load(Ordering::Relaxed) {
            tracing::info!("registry: following etcd again");
        }
        *state = (stale, error);
    }

    fn key(&self, id: &str) -> String {
        format!("{}{id}", self.instances)
    }

    fn revision(&self, id: &str) -> i64 {
        self.revisions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .copied()
            .unwrap_or(0)
    }

    fn set_revision(&self, id: &str, revision: Option<i64>) {
        let mut revisions = self.revisions.lock().unwrap_or_else(|p| p.into_inner());
        match revision {
            Some(revision) => revisions.insert(id.to_string(), revision),
            None => revisions.remove(id),
        };
    }

    /// Applies what etcd holds for one key, unless it is older than what
    /// was seen here.
    fn apply(&self, registry: &Arc<Registry>, id: &str, kv: Option<&Kv>, revision: i64) {
        if revision != 0 && revision <= self.revision(id) {
            return;
        }
        match kv {
            Some(kv) => match serde_json::from_slice::<Instance>(&kv.value) {
                Ok(instance) if instance.id == id => {
                    self.set_revision(id, Some(kv.mod_revision));
                    registry.apply_stored(id, Some(instance));
                }
                _ => {
                    tracing::warn!(key = %self.key(id), "registry: an instance in etcd cannot be read; skipped")
                }
            },
            None => {
                self.set_revision(id, None);
                registry.apply_stored(id, None);
            }
        }
    }
}

fn jitter(wait: Duration) -> Duration {
    wait.mul_f64(0.9 + fastrand::f64() * 0.2)
}

/// Reads the prefix whole, then watches it; again after every break.
async fn follow(replica: Arc<Replica>, weak: Weak<Registry>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let error = match replica.etcd.prefix(&replica.instances).await {
            Ok((kvs, revision)) => {
                let Some(registry) = weak.upgrade() else {
                    return;
                };
                let stored: HashMap<String, &Kv> = kvs
                    .iter()
                    .filter_map(|kv| {
                        kv.key
                            .strip_prefix(&replica.instances)
                            .map(|id| (id.to_string(), kv))
                    })
                    .collect();
                for (id, kv) in &stored {
                    if kv.mod_revision > replica.revision(id) {
                        replica.apply(&registry, id, Some(kv), 0);
                    }
                }
                // Gone from etcd meanwhile, unless changed here and not yet written.
                let pending = replica
                    .pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                let local: Vec<String> =
                    registry.read(|catalog| catalog.instances.keys().cloned().collect());
                for id in local {
                    if !stored.contains_key(&id) && !pending.contains(&id) {
                        replica.apply(&registry, &id, None, 0);
                    }
                }
                replica.loaded.store(true, Ordering::Relaxed);
                drop(registry);
                match replica
                    .etcd
                    .watch(&replica.instances, true, revision + 1)
                    .await
                {
                    Ok(mut watch) => {
                        replica.set_state(false, None);
                        backoff = FIRST_BACKOFF;
                        loop {
                            let events = match watch.next().await {
                                Ok((events, _)) => events,
                                Err(error) => break error,
                            };
                            let Some(registry) = weak.upgrade() else {
                                return;
                            };
                            for event in events {
                                match event {
                                    Event::Put(kv) => {
                                        if let Some(id) = kv.key.strip_prefix(&replica.instances) {
                                            replica.apply(
                                                &registry,
                                                id,
                                                Some(&kv),
                                                kv.mod_revision,
                                            );
                                        }
                                    }
                                    Event::Delete { key, mod_revision } => {
                                        if let Some(id) = key.strip_prefix(&replica.instances) {
                                            replica.apply(&registry, id, None, mod_revision);
                                        }
                                    }
                                }
                            }
                        }
                    }
                    Err(error) => error,
                }
            }
            Err(error) => error,
        };
        replica.set_state(true, Some(error));
        tokio::time::sleep(jitter(backoff)).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Writes the instances changed here, each as a compare-and-swap.
async fn write(replica: Arc<Replica>, weak: Weak<Registry>, mut queued: UnboundedReceiver<String>) {
    let mut backoff = FIRST_BACKOFF;
    while let Some(id) = queued.recv().await {
        loop {
            let Some(registry) = weak.upgrade() else {
                return;
            };
            // Taken off the pending set first: a change made while this one
            // is written queues the id again.
            replica
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            let value = registry.read(|catalog| {
                catalog
                    .instances
                    .get(&id)
                    .map(|instance| serde_json::to_vec(instance).unwrap_or_default())
            });
            let expected = replica.revision(&id);
            if value.is_none() && expected == 0 {
                break; // never stored, already gone
            }
            match replica
                .etcd
                .swap(&replica.key(&id), expected, value.as_deref(), 0)
                .await
            {
                Ok(Ok(revision)) => {
                    replica.set_revision(&id, value.is_some().then_some(revision));
                    backoff = FIRST_BACKOFF;
                    break;
                }
                Ok(Err(now)) => {
                    // Changed elsewhere first: what etcd holds wins.
                    replica.set_revision(&id, None);
                    replica.apply(&registry, &id, now.as_ref(), 0);
                    break;
                }
                Err(error) => {
                    replica
                        .pending
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(id.clone());
                    replica.set_state(true, Some(error));
                    drop(registry);
                    tokio::time::sleep(jitter(backoff)).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// Holds `PREFIX/checks-leader` under a lease while this usherd runs the
/// HTTP and TCP checks; tries to take it whenever nobody holds it.
async fn lead_checks(replica: Arc<Replica>, weak: Weak<Registry>) {
    let mut lease = 0;
    loop {
        let leading = async {
            if lease != 0 && replica.etcd.keep_alive(lease).await? > 0 {
                return Ok::<_, String>(true);
            }
            lease = replica.etcd.grant(LEADER_TTL).await?;
            let taken = replica
                .etcd
                .swap(&replica.leader_key, 0, Some(replica.name.as_bytes()), lease)
                .await?;
            if taken.is_err() {
                replica.etcd.revoke(lease).await.ok();
                lease = 0;
            }
            Ok(taken.is_ok())
        }
        .await
        .unwrap_or(false);
        let Some(registry) = weak.upgrade() else {
            return;
        };
        if leading != replica.leads_checks.swap(leading, Ordering::Relaxed) {
            tracing::info!(
                leading,
                "registry: {} the HTTP and TCP checks",
                if leading {
                    "this usherd runs"
                } else {
                    "another usherd runs"
                }
            );
            registry.checks_moved(leading);
        }
        drop(registry);
        tokio::time::sleep(jitter(LEADER_TTL / 3)).await;
    }
}
