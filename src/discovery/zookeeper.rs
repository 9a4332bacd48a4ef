//! The `zookeeper` source: the instances of one service in ZooKeeper, in
//! the layout of Apache Curator's x-discovery (which Spring Cloud Zookeeper
//! uses): `base_path/<service>/<instance-id>`, each node's data a JSON
//! `ServiceInstance` (`name`, `id`, `address`, `port`, `sslPort`,
//! `payload`, `registrationTimeUTC`, `serviceType`, `uriSpec`, ...).
//!
//! Watched, never polled: the service node's children are listed with a
//! watch and each instance node is read with a watch; a change ZooKeeper
//! reports reads again only what changed (the list, or that one node).
//! Ephemeral instance nodes go when their owner's session ends, and the
//! server with them.
//!
//! While the connection is lost the set stays (the lookup fails, so the
//! source is `stale`); when the session comes back, or a new one replaces
//! an expired one, everything is read again before an answer is given, so
//! the set jumps from the last good one to the current one: no gap, no
//! duplicate.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use zookeeper_client as zk;

use super::Answer;
use crate::config::{zookeeper_service_path, DiscoverySource, Server};
use crate::registry::join_host_port;

/// What a watch reported.
#[derive(Debug)]
enum Change {
    /// The service node's children changed (or it was created or deleted).
    Children,
    /// The data of one instance node changed, or it was deleted.
    Node(String),
    /// The session's state changed.
    Session(zk::SessionState),
}

/// What an instance node holds, as far as routing goes.
#[derive(Debug, Clone, PartialEq)]
enum Instance {
    /// Routed to this `host:port`.
    Routed(String),
    /// `"enabled": false`, or data that is not a usable instance.
    Skipped,
}

/// What the last lookup led to, which sets the pause after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Servers: wait for the next change, however long.
    Servers,
    /// No instances: wait for a change, or until the follower looks again.
    Empty,
    /// No usable answer: retry after the follower's backoff, or as soon as
    /// the session is back.
    Failed,
}

/// A `zookeeper` source, ready to ask.
pub struct ZookeeperSource {
    hosts: String,
    /// `base_path/service`.
    path: String,
    session_timeout: Duration,
    client: Option<zk::Client>,
    /// Node name -> what it holds; `None` until everything has been read.
    instances: Option<BTreeMap<String, Instance>>,
    /// Everything must be read again (a new session, a reconnection, or a
    /// read that did not finish).
    resync: bool,
    /// The children must be listed again.
    relist: bool,
    /// Nodes whose data must be read again.
    reread: BTreeSet<String>,
    changes: mpsc::UnboundedReceiver<Change>,
    sender: mpsc::UnboundedSender<Change>,
    /// The tasks waiting on node watches; aborted on a resync and on drop.
    node_watches: JoinSet<()>,
    /// The task following the session's state.
    session_watch: JoinSet<()>,
    /// Nodes already reported as unusable, so each is logged once.
    warned: HashSet<String>,
    last: Outcome,
}

impl ZookeeperSource {
    pub fn new(source: &DiscoverySource) -> Result<ZookeeperSource, String> {
        let DiscoverySource::Zookeeper {
            hosts,
            base_path,
            service,
            session_timeout,
        } = source
        else {
            return Err("not a zookeeper source".into());
        };
        let (sender, changes) = mpsc::unbounded_channel();
        Ok(ZookeeperSource {
            hosts: hosts.clone(),
            path: zookeeper_service_path(base_path, service),
            session_timeout: *session_timeout,
            client: None,
            instances: None,
            resync: true,
            relist: true,
            reread: BTreeSet::new(),
            changes,
            sender,
            node_watches: JoinSet::new(),
            session_watch: JoinSet::new(),
            warned: HashSet::new(),
            last: Outcome::Failed,
        })
    }

    /// Connects when there is no live session, then reads what changed (all
    /// of it after a new session or a reconnection). The caller bounds it
    /// in time; a read cut short is done again whole.
    pub async fn lookup(&mut self) -> Answer {
        match self.refresh().await {
            Ok(()) => {
                let answer = self.answer();
                self.last = match answer {
                    Answer::Found { .. } => Outcome::Servers,
                    _ => Outcome::Empty,
                };
                answer
            }
            Err(error) => {
                self.last = Outcome::Failed;
                Answer::Failed(format!("{} at {}: {error}", self.path, self.hosts))
            }
        }
    }

    /// After servers, waits for the next change however long it takes (the
    /// session's own pings find a lost connection); after an empty answer,
    /// for a change or `wait`; after a failure, `wait` or until the session
    /// is back, whichever comes first.
    pub async fn pause(&mut self, wait: Duration) {
        match self.last {
            Outcome::Servers => {
                if let Some(change) = self.changes.recv().await {
                    self.note(change);
                }
            }
            Outcome::Empty => {
                if let Ok(Some(change)) = tokio::time::timeout(wait, self.changes.recv()).await {
                    self.note(change);
                }
            }
            Outcome::Failed => {
                let back = async {
                    while let Some(change) = self.changes.recv().await {
                        let back = matches!(&change, Change::Session(state) if *state != zk::SessionState::Disconnected);
                        self.note(change);
                        if back {
                            return;
                        }
                    }
                };
                let _ = tokio::time::timeout(wait, back).await;
            }
        }
    }

    /// Takes a reported change into account; it is read at the next lookup.
    fn note(&mut self, change: Change) {
        match change {
            Change::Children => self.relist = true,
            Change::Node(name) => {
                self.reread.insert(name);
            }
            Change::Session(state) => match state {
                zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => {
                    self.resync = true;
                }
                zk::SessionState::Disconnected => {}
                zk::SessionState::Expired
                | zk::SessionState::Closed
                | zk::SessionState::AuthFailed => {
                    tracing::debug!(path = %self.path, %state, "discovery: the ZooKeeper session ended; a new one is opened");
                    self.client = None;
                    self.resync = true;
                }
            },
        }
    }

    async fn refresh(&mut self) -> Result<(), String> {
        while let Ok(change) = self.changes.try_recv() {
            self.note(change);
        }
        if self
            .client
            .as_ref()
            .is_some_and(|client| client.state().is_terminated())
        {
            self.client = None;
        }
        let client = match &self.client {
            Some(client) => client.clone(),
            None => {
                let client = zk::Client::connector()
                    .with_session_timeout(self.session_timeout)
                    .with_fail_eagerly()
                    .connect(&self.hosts)
                    .await
                    .map_err(|error| format!("connecting: {error}"))?;
                self.session_watch.abort_all();
                let mut states = client.state_watcher();
                let sender = self.sender.clone();
                self.session_watch.spawn(async move {
                    loop {
                        let state = states.changed().await;
                        if sender.send(Change::Session(state)).is_err() || state.is_terminated() {
                            return;
                        }
                    }
                });
                self.client = Some(client.clone());
                self.resync = true;
                client
            }
        };
        match client.state() {
            zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => {}
            state => {
                return Err(format!(
                    "the session is {state}; the client reconnects within the session timeout"
                ))
            }
        }
        // Reaps the watch tasks that are done.
        while self.node_watches.try_join_next().is_some() {}
        if self.resync {
            // A read cut short leaves `resync` set: the next one starts over.
            self.node_watches.abort_all();
            let mut instances = BTreeMap::new();
            let children = self.list(&client).await?;
            self.read(&client, children, &mut instances).await?;
            self.warned.retain(|name| instances.contains_key(name));
            self.instances = Some(instances);
            self.resync = false;
            self.relist = false;
            self.reread.clear();
            return Ok(());
        }
        let mut instances = self.instances.take().unwrap_or_default();
        let mut reread = std::mem::take(&mut self.reread);
        // Set again below once the reads are done; a read cut short resyncs.
        self.resync = true;
        if self.relist {
            let children: BTreeSet<String> = self.list(&client).await?.into_iter().collect();
            instances.retain(|name, _| children.contains(name));
            self.warned.retain(|name| children.contains(name));
            reread.retain(|name| children.contains(name));
            reread.extend(
                children
                    .into_iter()
                    .filter(|name| !instances.contains_key(name)),
            );
        } else {
            reread.retain(|name| instances.contains_key(name));
        }
        self.read(&client, reread.into_iter().collect(), &mut instances)
            .await?;
        self.instances = Some(instances);
        self.resync = false;
        self.relist = false;
        Ok(())
    }

    /// Lists the service node's children with a watch; with no service node
    /// yet, none, and a watch for its creation.
    async fn list(&mut self, client: &zk::Client) -> Result<Vec<String>, String> {
        let watcher = match client.get_and_watch_children(&self.path).await {
            Ok((children, _, watcher)) => {
                self.forward(watcher, Change::Children);
                return Ok(children);
            }
            Err(zk::Error::NoNode) => {
                let (stat, watcher) = client
                    .check_and_watch_stat(&self.path)
                    .await
                    .map_err(|error| format!("watching {}: {error}", self.path))?;
                if stat.is_some() {
                    // Created between the two calls: listed at the next lookup.
                    self.sender.send(Change::Children).ok();
                }
                watcher
            }
            Err(error) => return Err(format!("listing {}: {error}", self.path)),
        };
        self.forward(watcher, Change::Children);
        Ok(Vec::new())
    }

    /// Reads `names` (all requests sent before the first answer is awaited),
    /// each with a watch, into `instances`.
    async fn read(
        &mut self,
        client: &zk::Client,
        names: Vec<String>,
        instances: &mut BTreeMap<String, Instance>,
    ) -> Result<(), String> {
        let paths: Vec<String> = names
            .iter()
            .map(|name| format!("{}/{name}", self.path))
            .collect();
        let reads: Vec<_> = paths
            .iter()
            .map(|path| client.get_and_watch_data(path))
            .collect();
        for (name, read) in names.into_iter().zip(reads) {
            match read.await {
                Ok((data, _, watcher)) => {
                    self.forward(watcher, Change::Node(name.clone()));
                    let instance = match parse_instance(&data) {
                        Ok(Some(addr)) => {
                            self.warned.remove(&name);
                            Instance::Routed(addr)
                        }
                        Ok(None) => Instance::Skipped,
                        Err(error) => {
                            if self.warned.insert(name.clone()) {
                                tracing::warn!(path = %self.path, node = %name, %error, "discovery: a ZooKeeper instance node is skipped");
                            }
                            Instance::Skipped
                        }
                    };
                    instances.insert(name, instance);
                }
                // Gone since it was listed: the children watch says so too.
                Err(zk::Error::NoNode) => {
                    instances.remove(&name);
                }
                Err(error) => return Err(format!("reading {}/{name}: {error}", self.path)),
            }
        }
        Ok(())
    }

    /// Sends `change` when `watcher` fires (a node event, or the end of the
    /// session).
    fn forward(&mut self, watcher: zk::OneshotWatcher, change: Change) {
        let sender = self.sender.clone();
        self.node_watches.spawn(async move {
            watcher.changed().await;
            sender.send(change).ok();
        });
    }

    fn answer(&self) -> Answer {
        let mut servers: Vec<Server> = self
            .instances
            .iter()
            .flat_map(BTreeMap::values)
            .filter_map(|instance| match instance {
                Instance::Routed(addr) => Some(Server {
                    addr: addr.clone(),
                    weight: 1,
                }),
                Instance::Skipped => None,
            })
            .collect();
        servers.sort_by(|a, b| a.addr.cmp(&b.addr));
        servers.dedup_by(|a, b| a.addr == b.addr);
        if servers.is_empty() {
            return Answer::None(format!(
                "no usable instance nodes under {} at {}",
                self.path, self.hosts
            ));
        }
        Answer::Found {
            servers,
            ttl: Duration::MAX,
        }
    }
}

/// A Curator `ServiceInstance`: `address` on `port` (on `sslPort` when it
/// registered no `port`); `Ok(None)` for `"enabled": false`.
fn parse_instance(data: &[u8]) -> Result<Option<String>, String> {
    let value: Value =
        serde_json::from_slice(data).map_err(|error| format!("not JSON: {error}"))?;
    let Value::Object(instance) = value else {
        return Err("not a JSON object".into());
    };
    if instance.get("enabled") == Some(&Value::Bool(false)) {
        return Ok(None);
    }
    let address = match instance.get("address") {
        Some(Value::String(address)) if !address.trim().is_empty() => address.trim(),
        _ => return Err("no `address`".into()),
    };
    let port = [instance.get("port"), instance.get("sslPort")]
        .into_iter()
        .flatten()
        .find(|port| !port.is_null());
    let port = match port.and_then(Value::as_u64).map(u16::try_from) {
        Some(Ok(port)) if port > 0 => port,
        Some(_) => return Err("the port is not 1-65535".into()),
        None => return Err("no `port` or `sslPort`".into()),
    };
    Ok(Some(join_host_port(address, port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curator_service_instances_are_read() {
        // As Curator's JsonInstanceSerializer writes it.
        let curator = br#"{"name":"api","id":"5e4c","address":"10.0.0.5","port":8080,"sslPort":null,"payload":null,"registrationTimeUTC":1700000000000,"serviceType":"DYNAMIC","uriSpec":{"parts":[{"value":"scheme","variable":true}]}}"#;
        assert_eq!(
            parse_instance(curator).unwrap().as_deref(),
            Some("10.0.0.5:8080")
        );
        let ssl_only = br#"{"name":"api","id":"a","address":"::1","port":null,"sslPort":8443}"#;
        assert_eq!(
            parse_instance(ssl_only).unwrap().as_deref(),
            Some("[::1]:8443")
        );
        let disabled = br#"{"address":"10.0.0.5","port":8080,"enabled":false}"#;
        assert_eq!(parse_instance(disabled).unwrap(), None);
        assert!(parse_instance(b"{not json").is_err());
        assert!(parse_instance(b"[1]").is_err());
        assert!(parse_instance(br#"{"port":8080}"#).is_err());
        assert!(parse_instance(br#"{"address":"a","port":70000}"#).is_err());
        assert!(parse_instance(br#"{"address":"a"}"#).is_err());
    }
}
