//! The `etcd` source: every key under `prefix` in etcd (v3) holds one
//! instance, `{"address": "10.0.0.5", "port": 8080, "weight": 2}` (weight
//! optional), read through etcd's JSON gateway (`/v3/...`, keys and values
//! in base64) with usherd's etcd client (`crate::etcd`), so no gRPC stack
//! is needed.
//!
//! Read once (`POST /v3/kv/range` over the prefix), then watched (a
//! streaming `POST /v3/watch` from the range's revision + 1): every change
//! etcd commits under the prefix arrives as an event, including the
//! deletion of keys whose lease ran out. When the watch breaks (etcd
//! stopped, the connection dropped) or etcd says the revision was
//! compacted, everything is read again and a new watch starts from that
//! read's revision + 1: no change is missed, and each key is one instance,
//! so none is counted twice.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde_json::Value;

use super::Answer;
use crate::config::{DiscoverySource, Server, MAX_WEIGHT};
use crate::etcd::{Etcd, Event, Watch};
use crate::registry::join_host_port;

/// What one key holds, as far as routing goes.
#[derive(Debug, Clone, PartialEq)]
enum Instance {
    Routed(Server),
    /// Weight 0, or a value that is not a usable instance.
    Skipped,
}

/// What the last lookup led to, which sets the pause after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Servers: wait for the next event, however long.
    Servers,
    /// No instances: wait for an event, or until the follower looks again.
    Empty,
    /// No usable answer: retry after the follower's backoff.
    Failed,
}

/// An `etcd` source, ready to ask.
pub struct EtcdSource {
    etcd: Etcd,
    prefix: String,
    /// Key -> what it holds; `None` until a whole range has been read.
    instances: Option<BTreeMap<String, Instance>>,
    watch: Option<Watch>,
    /// Why the watch ended, when it did: the next lookup reads everything again.
    broken: Option<String>,
    /// Keys already reported as unusable, so each is logged once.
    warned: HashSet<String>,
    last: Outcome,
}

impl EtcdSource {
    pub fn new(source: &DiscoverySource, timeout: Duration) -> Result<EtcdSource, String> {
        let DiscoverySource::Etcd { endpoints, prefix } = source else {
            return Err("not an etcd source".into());
        };
        if endpoints.is_empty() {
            return Err("no endpoints".into());
        }
        Ok(EtcdSource {
            etcd: Etcd::new(endpoints.clone(), timeout),
            prefix: prefix.clone(),
            instances: None,
            watch: None,
            broken: None,
            warned: HashSet::new(),
            last: Outcome::Failed,
        })
    }

    /// Without a watch (at first, after a break or a compaction): reads the
    /// whole prefix and starts a watch from the revision after that read.
    /// With one: the set as the watch's events left it.
    pub async fn lookup(&mut self) -> Answer {
        if self.watch.is_none() || self.broken.is_some() {
            if let Some(why) = self.broken.take() {
                tracing::debug!(prefix = %self.prefix, %why, "discovery: the etcd watch ended; reading the prefix again");
            }
            self.watch = None;
            if let Err(error) = self.resync().await {
                self.last = Outcome::Failed;
                return Answer::Failed(format!("{}: {error}", self.prefix));
            }
        }
        let answer = self.answer();
        self.last = match answer {
            Answer::Found { .. } => Outcome::Servers,
            _ => Outcome::Empty,
        };
        answer
    }

    /// After servers, waits for the next event however long it takes; after
    /// an empty answer, for an event or `wait`; after a failure, `wait`.
    pub async fn pause(&mut self, wait: Duration) {
        match self.last {
            Outcome::Servers => self.next_events().await,
            Outcome::Empty => {
                let _ = tokio::time::timeout(wait, self.next_events()).await;
            }
            Outcome::Failed => tokio::time::sleep(wait).await,
        }
    }

    /// The range, then the watch from its revision + 1.
    async fn resync(&mut self) -> Result<(), String> {
        let (kvs, revision) = self.etcd.prefix(&self.prefix).await?;
        let mut instances = BTreeMap::new();
        for kv in kvs {
            let instance = self.read(&kv.key, &kv.value);
            instances.insert(kv.key, instance);
        }
        self.warned.retain(|key| instances.contains_key(key));
        self.watch = Some(self.etcd.watch(&self.prefix, true, revision + 1).await?);
        self.instances = Some(instances);
        Ok(())
    }

    /// Reads the watch until a batch of events has been applied, or the
    /// watch ends (then `broken` says why).
    async fn next_events(&mut self) {
        let Some(watch) = self.watch.as_mut() else {
            return std::future::pending().await;
        };
        match watch.next().await {
            Ok((events, _)) => {
                for event in events {
                    match event {
                        Event::Put(kv) => {
                            let instance = self.read(&kv.key, &kv.value);
                            if let Some(instances) = self.instances.as_mut() {
                                instances.insert(kv.key, instance);
                            }
                        }
                        // A key deleted, or whose lease ran out.
                        Event::Delete { key, .. } => {
                            self.warned.remove(&key);
                            if let Some(instances) = self.instances.as_mut() {
                                instances.remove(&key);
                            }
                        }
                    }
                }
            }
            Err(error) => self.broken = Some(error),
        }
    }

    /// What one key holds. A value that is not an instance is skipped, with
    /// one warning per key.
    fn read(&mut self, key: &str, value: &[u8]) -> Instance {
        match parse_instance(value) {
            Ok(instance) => {
                self.warned.remove(key);
                instance
            }
            Err(error) => {
                if self.warned.insert(key.to_string()) {
                    tracing::warn!(prefix = %self.prefix, %key, %error, "discovery: an etcd instance key is skipped");
                }
                Instance::Skipped
            }
        }
    }

    fn answer(&self) -> Answer {
        let mut servers: Vec<Server> = self
            .instances
            .iter()
            .flat_map(BTreeMap::values)
            .filter_map(|instance| match instance {
                Instance::Routed(server) => Some(server.clone()),
                Instance::Skipped => None,
            })
            .collect();
        // Two keys naming one address: one server, with the larger weight.
        servers.sort_by(|a, b| a.addr.cmp(&b.addr).then(b.weight.cmp(&a.weight)));
        servers.dedup_by(|a, b| a.addr == b.addr);
        if servers.is_empty() {
            return Answer::None(format!("no usable keys under {}", self.prefix));
        }
        Answer::Found {
            servers,
            ttl: Duration::MAX,
        }
    }
}

/// `{"address": "10.0.0.5", "port": 8080, "weight": 2}`; weight 1 when
/// left out, kept within 1-10000; weight 0 is not routed.
fn parse_instance(value: &[u8]) -> Result<Instance, String> {
    let value: Value =
        serde_json::from_slice(value).map_err(|error| format!("not JSON: {error}"))?;
    let Value::Object(instance) = value else {
        return Err("not a JSON object".into());
    };
    let address = match instance.get("address") {
        Some(Value::String(address)) if !address.trim().is_empty() => address.trim(),
        _ => return Err("no `address`".into()),
    };
    let port = match instance.get("port").and_then(Value::as_u64) {
        Some(port @ 1..=65535) => port as u16,
        Some(_) => return Err("the port is not 1-65535".into()),
        None => return Err("no `port` number".into()),
    };
    let weight = match instance.get("weight") {
        None | Some(Value::Null) => 1,
        Some(weight) => match weight.as_u64() {
            Some(0) => return Ok(Instance::Skipped),
            Some(weight) => weight.min(u64::from(MAX_WEIGHT)) as u32,
            None => return Err("the weight is not a whole number from 0".into()),
        },
    };
    Ok(Instance::Routed(Server {
        addr: join_host_port(address, port),
        weight,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_values() {
        let server = |addr: &str, weight| {
            Instance::Routed(Server {
                addr: addr.into(),
                weight,
            })
        };
        assert_eq!(
            parse_instance(br#"{"address":"10.0.0.5","port":8080}"#),
            Ok(server("10.0.0.5:8080", 1))
        );
        assert_eq!(
            parse_instance(br#"{"address":"::1","port":8080,"weight":3}"#),
            Ok(server("[::1]:8080", 3))
        );
        assert_eq!(
            parse_instance(br#"{"address":"a","port":1,"weight":99999}"#),
            Ok(server("a:1", MAX_WEIGHT))
        );
        assert_eq!(
            parse_instance(br#"{"address":"a","port":1,"weight":0}"#),
            Ok(Instance::Skipped)
        );
        assert!(parse_instance(b"{oops").is_err());
        assert!(parse_instance(br#"{"address":"a","port":"80"}"#).is_err());
        assert!(parse_instance(br#"{"address":"a","port":0}"#).is_err());
        assert!(parse_instance(br#"{"port":80}"#).is_err());
        assert!(parse_instance(br#"{"address":"a","port":80,"weight":-1}"#).is_err());
    }
}
