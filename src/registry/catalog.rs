//! The catalog: registered service instances with their checks, and the
//! index that moves on every change a reader can see (Consul's
//! `X-Consul-Index`). Pure data and rules, no IO: the registry around it
//! runs checks, persists, and wakes blocking readers.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// How long a removed instance is remembered for Eureka's delta reads
/// (Eureka's `retentionTimeInMSInDeltaQueue`, 3 minutes).
pub const DELTA_RETENTION: Duration = Duration::from_secs(180);

/// A check's state, as Consul names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Passing,
    Warning,
    Critical,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Passing => "passing",
            Status::Warning => "warning",
            Status::Critical => "critical",
        }
    }

    pub fn parse(text: &str) -> Option<Status> {
        match text {
            "passing" => Some(Status::Passing),
            "warning" => Some(Status::Warning),
            "critical" => Some(Status::Critical),
            _ => None,
        }
    }
}

/// How a check learns the instance's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Probe {
    /// The service reports in; no report for `ttl` makes it critical.
    Ttl {
        #[serde(with = "humantime_serde_duration")]
        ttl: Duration,
    },
    /// usherd requests `url` every `interval`: 2xx passing, 429 warning,
    /// anything else critical.
    Http {
        url: String,
        method: String,
        headers: Vec<(String, String)>,
        #[serde(with = "humantime_serde_duration")]
        interval: Duration,
        #[serde(with = "humantime_serde_duration")]
        timeout: Duration,
    },
    /// usherd connects to `address` every `interval`.
    Tcp {
        address: String,
        #[serde(with = "humantime_serde_duration")]
        interval: Duration,
        #[serde(with = "humantime_serde_duration")]
        timeout: Duration,
    },
}

/// One check of an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub id: String,
    pub name: String,
    pub probe: Probe,
    pub status: Status,
    pub output: String,
    /// TTL checks: when the last report expires.
    pub expires: Option<SystemTime>,
    /// Remove the instance once this check has been critical this long.
    #[serde(with = "humantime_serde_option")]
    pub deregister_after: Option<Duration>,
    pub critical_since: Option<SystemTime>,
}

/// How much traffic an instance takes in each state (Consul's `Weights`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Weights {
    pub passing: u32,
    pub warning: u32,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            passing: 1,
            warning: 1,
        }
    }
}

/// Which API registered an instance; each keeps its own rules (Eureka's
/// names are case-insensitive, its instances renew leases).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Consul,
    Eureka,
}

/// An instance's state as Eureka names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EurekaStatus {
    Up,
    Down,
    Starting,
    OutOfService,
    Unknown,
}

impl EurekaStatus {
    pub fn name(self) -> &'static str {
        match self {
            EurekaStatus::Up => "UP",
            EurekaStatus::Down => "DOWN",
            EurekaStatus::Starting => "STARTING",
            EurekaStatus::OutOfService => "OUT_OF_SERVICE",
            EurekaStatus::Unknown => "UNKNOWN",
        }
    }

    pub fn parse(text: &str) -> Option<EurekaStatus> {
        match text {
            "UP" => Some(EurekaStatus::Up),
            "DOWN" => Some(EurekaStatus::Down),
            "STARTING" => Some(EurekaStatus::Starting),
            "OUT_OF_SERVICE" => Some(EurekaStatus::OutOfService),
            "UNKNOWN" => Some(EurekaStatus::Unknown),
            _ => None,
        }
    }
}

/// What a Eureka registration adds to an instance: the status it reports,
/// the override an operator set, its lease (kept as a TTL check that
/// removes the instance when it runs out), and the registration as sent,
/// which Eureka clients read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EurekaInfo {
    pub status: EurekaStatus,
    /// Set by `PUT .../status`; wins over `status`, and survives a
    /// re-registration, as in Eureka.
    pub overridden: Option<EurekaStatus>,
    pub renewal_interval_secs: u64,
    pub lease_secs: u64,
    /// Milliseconds since the epoch, as Eureka reports them.
    pub registered_ms: u64,
    pub renewed_ms: u64,
    pub up_ms: u64,
    /// The client's `lastDirtyTimestamp`: a renewal that names a later one
    /// gets 404, so the client registers its newer data.
    pub dirty_ms: u64,
    /// The instance object as registered (XML turned into Eureka's JSON shape).
    pub record: serde_json::Map<String, serde_json::Value>,
}

impl EurekaInfo {
    /// The status readers see: the override when there is one.
    pub fn effective(&self) -> EurekaStatus {
        self.overridden.unwrap_or(self.status)
    }
}

/// The id of the TTL check that is a Eureka instance's lease.
pub fn lease_check_id(instance_id: &str) -> String {
    format!("eureka:{instance_id}")
}

/// One registered instance of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub id: String,
    pub service: String,
    pub address: String,
    pub port: u16,
    pub tags: Vec<String>,
    pub meta: BTreeMap<String, String>,
    pub weights: Weights,
    pub checks: Vec<Check>,
    /// Set while in maintenance mode (the reason); not routed meanwhile.
    pub maintenance: Option<String>,
    pub origin: Origin,
    /// Eureka registrations only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eureka: Option<Box<EurekaInfo>>,
    pub create_index: u64,
    pub modify_index: u64,
    /// When `modify_index` last moved (Eureka's delta reads look back 3 minutes).
    #[serde(default = "epoch")]
    pub modified_at: SystemTime,
}

fn epoch() -> SystemTime {
    SystemTime::UNIX_EPOCH
}

impl Instance {
    /// The worst status of its checks (passing with none); critical in
    /// maintenance, and for a Eureka instance that is not `UP`.
    pub fn status(&self) -> Status {
        if self.maintenance.is_some() {
            return Status::Critical;
        }
        if self
            .eureka
            .as_ref()
            .is_some_and(|eureka| eureka.effective() != EurekaStatus::Up)
        {
            return Status::Critical;
        }
        self.checks
            .iter()
            .map(|check| check.status)
            .max_by_key(|status| match status {
                Status::Passing => 0,
                Status::Warning => 1,
                Status::Critical => 2,
            })
            .unwrap_or(Status::Passing)
    }

    /// The weight it takes now: `Weights.Passing`, `Weights.Warning` while warning.
    pub fn weight(&self) -> u32 {
        match self.status() {
            Status::Warning => self.weights.warning,
            _ => self.weights.passing,
        }
    }
}

/// Every registration, with the index of the last change.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Catalog {
    /// Moves on every change; starts at 1 (Consul never answers index 0).
    pub index: u64,
    /// By instance id.
    pub instances: BTreeMap<String, Instance>,
    /// The index of the last change to each service, by lowercased name
    /// (Eureka's names are case-insensitive, see `named`).
    #[serde(skip)]
    service_index: HashMap<String, u64>,
    /// Instances removed in the last `DELTA_RETENTION`, oldest first, for
    /// Eureka's delta reads. Not kept across restarts.
    #[serde(skip)]
    pub removed: VecDeque<(SystemTime, Instance)>,
    /// Ids of instances changed here (registered, removed, a check's state
    /// or expiry, a lease) since the registry last took them, for a
    /// registry kept in etcd to write. Changes that came from etcd are not
    /// in it.
    #[serde(skip)]
    dirty: BTreeSet<String>,
}

impl Catalog {
    pub fn new() -> Catalog {
        Catalog {
            index: 1,
            ..Catalog::default()
        }
    }

    /// Rebuilds what is derived after loading from a file.
    pub fn restored(mut self) -> Catalog {
        self.index = self.index.max(1);
        self.service_index.clear();
        for instance in self.instances.values() {
            let entry = self
                .service_index
                .entry(instance.service.to_ascii_lowercase())
                .or_default();
            *entry = (*entry).max(instance.modify_index);
        }
        self
    }

    /// Marks `service` changed; returns the new index.
    pub fn touch(&mut self, service: &str) -> u64 {
        self.index += 1;
        self.service_index
            .insert(service.to_ascii_lowercase(), self.index);
        self.index
    }

    /// The index a reader of `service` compares with (at least 1). Names
    /// that differ only in case share it.
    pub fn service_index(&self, service: &str) -> u64 {
        self.service_index
            .get(&service.to_ascii_lowercase())
            .copied()
            .unwrap_or(1)
    }

    /// The ids changed here since the last call.
    pub fn take_dirty(&mut self) -> BTreeSet<String> {
        std::mem::take(&mut self.dirty)
    }

    /// An instance as the shared store holds it (another usherd changed
    /// it): replaces the local one, moves the index; not dirty.
    pub fn store_put(&mut self, instance: Instance) {
        let old_service = self
            .instances
            .get(&instance.id)
            .map(|old| old.service.clone())
            .filter(|old| *old != instance.service);
        if let Some(service) = old_service {
            self.touch(&service);
        }
        let index = self.touch(&instance.service);
        let mut instance = instance;
        instance.modify_index = index;
        if !self.instances.contains_key(&instance.id) {
            instance.create_index = index;
        }
        self.instances.insert(instance.id.clone(), instance);
    }

    /// An instance the shared store no longer holds; not dirty.
    pub fn store_remove(&mut self, id: &str) -> Option<Instance> {
        let removed = self.instances.get(id).cloned()?;
        let dirty_before = self.dirty.contains(id);
        self.deregister(id);
        if !dirty_before {
            self.dirty.remove(id);
        }
        Some(removed)
    }

    /// Marks an instance changed: the service's index moves, and the
    /// instance records it.
    fn touch_instance(&mut self, id: &str, now: SystemTime) {
        self.dirty.insert(id.to_string());
        let Some(service) = self.instances.get(id).map(|i| i.service.clone()) else {
            return;
        };
        let index = self.touch(&service);
        if let Some(instance) = self.instances.get_mut(id) {
            instance.modify_index = index;
            instance.modified_at = now;
        }
    }

    /// Adds or replaces an instance; returns the index.
    pub fn register(&mut self, mut instance: Instance) -> u64 {
        if let Some(old) = self.instances.get(&instance.id) {
            instance.create_index = old.create_index;
            if old.service != instance.service {
                let service = old.service.clone();
                self.touch(&service);
            }
        }
        let index = self.touch(&instance.service);
        if instance.create_index == 0 {
            instance.create_index = index;
        }
        instance.modify_index = index;
        instance.modified_at = SystemTime::now();
        self.dirty.insert(instance.id.clone());
        self.instances.insert(instance.id.clone(), instance);
        index
    }

    /// Removes an instance; false if there was none.
    pub fn deregister(&mut self, id: &str) -> bool {
        match self.instances.remove(id) {
            Some(instance) => {
                self.touch(&instance.service);
                self.dirty.insert(id.to_string());
                let now = SystemTime::now();
                while self.removed.front().is_some_and(|(at, _)| {
                    now.duration_since(*at).unwrap_or_default() > DELTA_RETENTION
                }) {
                    self.removed.pop_front();
                }
                self.removed.push_back((now, instance));
                true
            }
            None => false,
        }
    }

    /// Changes an instance in place; `change` says whether readers can see
    /// the change. `None` when there is no such instance.
    pub fn modify(&mut self, id: &str, change: impl FnOnce(&mut Instance) -> bool) -> Option<bool> {
        let changed = change(self.instances.get_mut(id)?);
        if changed {
            self.touch_instance(id, SystemTime::now());
        }
        Some(changed)
    }

    /// Renews a Eureka lease: its TTL check expires a lease later. Not a
    /// change readers see. `None` when there is no such Eureka instance.
    pub fn renew(&mut self, id: &str, now: SystemTime) -> Option<()> {
        let instance = self.instances.get_mut(id)?;
        let eureka = instance.eureka.as_mut()?;
        eureka.renewed_ms = millis(now);
        let lease = lease_check_id(id);
        for check in &mut instance.checks {
            if let (true, Probe::Ttl { ttl }) = (check.id == lease, &check.probe) {
                check.expires = Some(now + *ttl);
            }
        }
        self.dirty.insert(id.to_string());
        Some(())
    }

    /// After a restart, every Eureka lease gets a full term from `now`: the
    /// clients renewed while usherd was away, and a renewal was never a
    /// change worth writing to the state file.
    pub fn extend_leases(&mut self, now: SystemTime) {
        for instance in self.instances.values_mut() {
            if instance.eureka.is_none() {
                continue;
            }
            for check in &mut instance.checks {
                if let Probe::Ttl { ttl } = check.probe {
                    check.expires = Some(check.expires.map_or(now + ttl, |e| e.max(now + ttl)));
                }
            }
        }
    }

    /// Sets a check's status and output. A report that changes neither is
    /// no change: readers are not woken (Consul's rule). TTL checks get a
    /// new expiry either way. Returns `None` when no instance has the check.
    pub fn update_check(
        &mut self,
        check_id: &str,
        status: Status,
        output: Option<String>,
        now: SystemTime,
    ) -> Option<bool> {
        let (instance_id, position) = self.find_check(check_id)?;
        let instance = self.instances.get_mut(&instance_id)?;
        let check = &mut instance.checks[position];
        if let Probe::Ttl { ttl } = check.probe {
            check.expires = Some(now + ttl);
            self.dirty.insert(instance_id.clone());
        }
        let output = output.unwrap_or_else(|| check.output.clone());
        if check.status == status && check.output == output {
            return Some(false);
        }
        check.critical_since = match (status, check.critical_since) {
            (Status::Critical, Some(since)) => Some(since),
            (Status::Critical, None) => Some(now),
            _ => None,
        };
        check.status = status;
        check.output = output;
        self.touch_instance(&instance_id, now);
        Some(true)
    }

    /// Turns maintenance mode on (with a reason) or off; `None` when there
    /// is no such instance, else whether anything changed.
    pub fn set_maintenance(&mut self, id: &str, reason: Option<String>) -> Option<bool> {
        self.modify(id, |instance| {
            let changed = instance.maintenance != reason;
            instance.maintenance = reason;
            changed
        })
    }

    /// TTL checks whose report expired turn critical; instances critical
    /// past their `deregister_after` go. Returns whether anything changed,
    /// and the instances removed.
    pub fn expire(&mut self, now: SystemTime) -> (bool, Vec<Instance>) {
        let mut expired = Vec::new();
        for instance in self.instances.values() {
            for check in &instance.checks {
                let late = check.expires.is_some_and(|expires| expires <= now);
                if late && check.status != Status::Critical {
                    expired.push(check.id.clone());
                }
            }
        }
        let mut changed = false;
        for id in expired {
            changed |= self
                .update_check(&id, Status::Critical, Some("TTL expired".into()), now)
                .unwrap_or(false);
        }
        let reaped: Vec<String> = self
            .instances
            .values()
            .filter(|instance| {
                instance.checks.iter().any(|check| {
                    match (check.deregister_after, check.critical_since) {
                        (Some(after), Some(since)) => {
                            now.duration_since(since).unwrap_or_default() >= after
                        }
                        _ => false,
                    }
                })
            })
            .map(|instance| instance.id.clone())
            .collect();
        let mut removed = Vec::new();
        for id in reaped {
            tracing::info!(instance = %id, "registry: deregistered after being critical too long");
            if let Some(instance) = self.instances.get(&id).cloned() {
                self.deregister(&id);
                removed.push(instance);
                changed = true;
            }
        }
        (changed, removed)
    }

    fn find_check(&self, check_id: &str) -> Option<(String, usize)> {
        self.instances.values().find_map(|instance| {
            instance
                .checks
                .iter()
                .position(|check| check.id == check_id)
                .map(|position| (instance.id.clone(), position))
        })
    }

    /// The instances of `service`, sorted by id. A Consul registration's
    /// name must match exactly; a Eureka registration's in any case (Eureka
    /// keeps app names in upper case and its clients ask in any case).
    pub fn named<'a>(&'a self, service: &'a str) -> impl Iterator<Item = &'a Instance> + 'a {
        self.instances.values().filter(move |instance| {
            instance.service == service
                || (instance.origin == Origin::Eureka
                    && instance.service.eq_ignore_ascii_case(service))
        })
    }

    /// Service names with the union of their instances' tags.
    pub fn services(&self) -> BTreeMap<String, Vec<String>> {
        let mut services: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for instance in self.instances.values() {
            let tags = services.entry(instance.service.clone()).or_default();
            for tag in &instance.tags {
                if !tags.contains(tag) {
                    tags.push(tag.clone());
                }
            }
        }
        services
    }
}

/// Milliseconds since the epoch, as Eureka counts time.
pub fn millis(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// Durations as `10s` in the state file.
mod humantime_serde_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_duration(*value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// Optional durations as `10s` (or null) in the state file.
mod humantime_serde_option {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => serializer.collect_str(&humantime::format_duration(*value)),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(deserializer)?
            .map(|text| humantime::parse_duration(&text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str, ttl: Option<Duration>) -> Instance {
        Instance {
            id: id.into(),
            service: "api".into(),
            address: "10.0.0.1".into(),
            port: 8080,
            tags: vec![],
            meta: BTreeMap::new(),
            weights: Weights::default(),
            checks: ttl
                .map(|ttl| Check {
                    id: format!("service:{id}"),
                    name: "ttl".into(),
                    probe: Probe::Ttl { ttl },
                    status: Status::Critical,
                    output: String::new(),
                    expires: None,
                    deregister_after: Some(Duration::from_secs(60)),
                    critical_since: None,
                })
                .into_iter()
                .collect(),
            maintenance: None,
            origin: Origin::Consul,
            eureka: None,
            create_index: 0,
            modify_index: 0,
            modified_at: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn a_pass_that_changes_nothing_does_not_move_the_index() {
        let mut catalog = Catalog::new();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        catalog.register(instance("a", Some(Duration::from_secs(10))));
        let registered = catalog.service_index("api");
        assert_eq!(
            catalog.update_check("service:a", Status::Passing, None, now),
            Some(true)
        );
        let passed = catalog.service_index("api");
        assert!(passed > registered);
        assert_eq!(
            catalog.update_check("service:a", Status::Passing, None, now),
            Some(false)
        );
        assert_eq!(catalog.service_index("api"), passed);
        assert_eq!(
            catalog.update_check("nope", Status::Passing, None, now),
            None
        );
    }

    #[test]
    fn a_ttl_expires_to_critical_then_the_instance_is_reaped() {
        let mut catalog = Catalog::new();
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        catalog.register(instance("a", Some(Duration::from_secs(10))));
        catalog.update_check("service:a", Status::Passing, None, start);
        assert!(!catalog.expire(start + Duration::from_secs(9)).0);
        assert!(catalog.expire(start + Duration::from_secs(10)).0);
        assert_eq!(catalog.instances["a"].status(), Status::Critical);
        assert_eq!(catalog.instances["a"].checks[0].output, "TTL expired");
        assert!(!catalog.expire(start + Duration::from_secs(69)).0);
        assert_eq!(catalog.expire(start + Duration::from_secs(70)).1.len(), 1);
        assert!(catalog.instances.is_empty());
    }

    #[test]
    fn maintenance_makes_an_instance_critical() {
        let mut catalog = Catalog::new();
        catalog.register(instance("a", None));
        assert_eq!(catalog.instances["a"].status(), Status::Passing);
        assert_eq!(
            catalog.set_maintenance("a", Some("deploy".into())),
            Some(true)
        );
        assert_eq!(catalog.instances["a"].status(), Status::Critical);
        assert_eq!(
            catalog.set_maintenance("a", Some("deploy".into())),
            Some(false)
        );
        assert_eq!(catalog.set_maintenance("b", None), None);
    }
}
