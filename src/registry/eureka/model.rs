//! Eureka's instance documents: a registration read into the catalog's
//! `Instance`, and instances written back the way Eureka clients read
//! them. A document may come from JSON or from XML (see `xml.rs`), so
//! every number is also accepted as a string.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use serde_json::{json, Map, Value};

use super::super::api::{is_host_name, kind};
use super::super::catalog::{lease_check_id, millis};
use super::super::{Check, EurekaInfo, EurekaStatus, Instance, Origin, Probe, Status, Weights};

/// Eureka's lease defaults: renew every 30 s, expire after 90 s.
const DEFAULT_RENEWAL_SECS: u64 = 30;
const DEFAULT_LEASE_SECS: u64 = 90;
/// The longest lease accepted (a day): an instance that registers with a
/// longer one would outlive its crash for too long.
const MAX_LEASE_SECS: u64 = 86_400;

/// Where an instance is reached and whether it is routed, read from an
/// instance document (a registration, or a Eureka server's answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub id: String,
    pub app: String,
    pub address: String,
    pub port: u16,
    /// The status readers see (the override when there is one).
    pub status: EurekaStatus,
    pub overridden: Option<EurekaStatus>,
    pub reported: EurekaStatus,
}

/// Reads the fields that place and route an instance.
pub fn endpoint(instance: &Map<String, Value>) -> Result<Endpoint, String> {
    let app = match text(instance, "app")? {
        Some(app) if !app.trim().is_empty() => app.trim().to_ascii_uppercase(),
        _ => return Err("app: missing; every instance names its application".into()),
    };
    let host_name = text(instance, "hostName")?;
    let ip = text(instance, "ipAddr")?;
    let id = text(instance, "instanceId")?
        .filter(|id| !id.is_empty())
        .or_else(|| host_name.clone().filter(|h| !h.is_empty()))
        .ok_or("instanceId: missing (and no hostName to stand for it)")?;
    if id.contains('/') {
        return Err(format!("instanceId: `{id}` must not contain `/`"));
    }
    let address = ip
        .filter(|ip| !ip.is_empty())
        .or(host_name.filter(|h| !h.is_empty()))
        .ok_or("ipAddr: missing (and no hostName): the instance has no address")?;
    if address.parse::<IpAddr>().is_err() && !is_host_name(&address) {
        return Err(format!(
            "ipAddr: `{address}` is neither an IP address nor a host name"
        ));
    }
    let plain = port(instance, "port", true)?;
    let secure = port(instance, "securePort", false)?;
    let port = plain
        .or(secure)
        .ok_or("port: no enabled port (port or securePort with @enabled \"true\")")?;
    let reported = match text(instance, "status")? {
        None => EurekaStatus::Up,
        Some(status) => EurekaStatus::parse(&status).ok_or_else(|| {
            format!("status: `{status}` is not one of UP, DOWN, STARTING, OUT_OF_SERVICE, UNKNOWN")
        })?,
    };
    let overridden = match text(instance, "overriddenStatus")?.or(text(instance, "overriddenstatus")?) {
        None => None,
        Some(status) => match EurekaStatus::parse(&status) {
            Some(EurekaStatus::Unknown) => None,
            Some(status) => Some(status),
            None => {
                return Err(format!(
                    "overriddenStatus: `{status}` is not one of UP, DOWN, STARTING, OUT_OF_SERVICE, UNKNOWN"
                ))
            }
        },
    };
    Ok(Endpoint {
        id,
        app,
        address,
        port,
        status: overridden.unwrap_or(reported),
        overridden,
        reported,
    })
}

/// A registration body's instance object, as a catalog instance whose
/// lease starts `now`.
pub fn parse_registration(
    instance: &Map<String, Value>,
    now: SystemTime,
) -> Result<Instance, String> {
    let endpoint = endpoint(instance)?;
    let lease = match instance.get("leaseInfo") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(lease)) => lease.clone(),
        Some(other) => {
            return Err(format!(
                "leaseInfo: expected an object, found {}",
                kind(other)
            ))
        }
    };
    let seconds = |key: &str, default: u64| -> Result<u64, String> {
        match number(&lease, key)? {
            None => Ok(default),
            Some(0) => Ok(default),
            Some(n) if n <= MAX_LEASE_SECS => Ok(n),
            Some(n) => Err(format!(
                "leaseInfo.{key}: {n} is more than a day ({MAX_LEASE_SECS})"
            )),
        }
    };
    let renewal = seconds("renewalIntervalInSecs", DEFAULT_RENEWAL_SECS)?;
    let lease_secs = seconds("durationInSecs", DEFAULT_LEASE_SECS)?;
    let meta = match instance.get("metadata") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::String(empty)) if empty.is_empty() => BTreeMap::new(),
        Some(Value::Object(metadata)) => metadata
            .iter()
            .filter(|(key, _)| !key.starts_with('@'))
            .map(|(key, value)| match value {
                Value::String(text) => Ok((key.clone(), text.clone())),
                Value::Number(_) | Value::Bool(_) => Ok((key.clone(), value.to_string())),
                other => Err(format!(
                    "metadata.{key}: expected a string, found {}",
                    kind(other)
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(format!(
                "metadata: expected an object, found {}",
                kind(other)
            ))
        }
    };
    let now_ms = millis(now);
    let dirty_ms = number(instance, "lastDirtyTimestamp")?.unwrap_or(now_ms);
    let lease_ttl = Duration::from_secs(lease_secs);
    Ok(Instance {
        id: endpoint.id.clone(),
        service: endpoint.app,
        address: endpoint.address,
        port: endpoint.port,
        tags: Vec::new(),
        meta,
        weights: Weights::default(),
        checks: vec![Check {
            id: lease_check_id(&endpoint.id),
            name: "Eureka lease".into(),
            probe: Probe::Ttl { ttl: lease_ttl },
            status: Status::Passing,
            output: String::new(),
            expires: Some(now + lease_ttl),
            // A lease that runs out removes the instance, as Eureka evicts it.
            deregister_after: Some(Duration::ZERO),
            critical_since: None,
        }],
        maintenance: None,
        origin: Origin::Eureka,
        eureka: Some(Box::new(EurekaInfo {
            status: endpoint.reported,
            overridden: endpoint.overridden,
            renewal_interval_secs: renewal,
            lease_secs,
            registered_ms: now_ms,
            renewed_ms: now_ms,
            up_ms: now_ms,
            dirty_ms,
            record: instance.clone(),
        })),
        create_index: 0,
        modify_index: 0,
        modified_at: now,
    })
}

/// An instance as Eureka clients read it: a Eureka registration as it was
/// sent with the live fields brought up to date, or a Consul registration
/// described the same way (status `UP` while passing).
pub fn render(instance: &Instance, action: Option<&str>) -> Value {
    let app = instance.service.to_ascii_uppercase();
    let mut out = instance
        .eureka
        .as_ref()
        .map(|eureka| eureka.record.clone())
        .unwrap_or_default();
    let (status, overridden, lease) = match &instance.eureka {
        Some(eureka) => (
            eureka.effective(),
            eureka.overridden.unwrap_or(EurekaStatus::Unknown),
            json!({
                "renewalIntervalInSecs": eureka.renewal_interval_secs,
                "durationInSecs": eureka.lease_secs,
                "registrationTimestamp": eureka.registered_ms,
                "lastRenewalTimestamp": eureka.renewed_ms,
                "evictionTimestamp": 0,
                "serviceUpTimestamp": eureka.up_ms,
            }),
        ),
        None => {
            let status = match (instance.maintenance.is_some(), instance.status()) {
                (true, _) => EurekaStatus::OutOfService,
                (false, Status::Passing) => EurekaStatus::Up,
                (false, _) => EurekaStatus::Down,
            };
            let registered = millis(instance.modified_at);
            (
                status,
                EurekaStatus::Unknown,
                json!({
                    "renewalIntervalInSecs": DEFAULT_RENEWAL_SECS,
                    "durationInSecs": DEFAULT_LEASE_SECS,
                    "registrationTimestamp": registered,
                    "lastRenewalTimestamp": registered,
                    "evictionTimestamp": 0,
                    "serviceUpTimestamp": registered,
                }),
            )
        }
    };
    let port_element = |key: &str, enabled_by_default: bool, default: (u64, bool)| {
        let (number, enabled) = lenient_port(&out, key, enabled_by_default).unwrap_or(default);
        json!({ "$": number, "@enabled": enabled.to_string() })
    };
    let port_value = port_element("port", true, (u64::from(instance.port), true));
    let secure_value = port_element("securePort", false, (443, false));
    let keep_text = |out: &Map<String, Value>, key: &str, default: String| match out.get(key) {
        Some(Value::String(text)) if !text.is_empty() => text.clone(),
        _ => default,
    };
    let host_name = keep_text(&out, "hostName", instance.address.clone());
    let vip = keep_text(&out, "vipAddress", instance.service.to_ascii_lowercase());
    let dirty = instance
        .eureka
        .as_ref()
        .map_or_else(|| millis(instance.modified_at), |eureka| eureka.dirty_ms);
    let metadata = if instance.meta.is_empty() {
        json!({ "@class": "java.util.Collections$EmptyMap" })
    } else {
        Value::Object(
            instance
                .meta
                .iter()
                .map(|(key, value)| (key.clone(), Value::String(value.clone())))
                .collect(),
        )
    };
    out.remove("overriddenStatus");
    let data_center = match out.get("dataCenterInfo") {
        Some(Value::Object(info)) if info.contains_key("@class") => Value::Object(info.clone()),
        _ => {
            json!({ "@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn" })
        }
    };
    for (key, value) in [
        ("instanceId", json!(instance.id)),
        ("hostName", json!(host_name)),
        ("app", json!(app)),
        ("ipAddr", json!(instance.address)),
        ("status", json!(status.name())),
        ("overriddenstatus", json!(overridden.name())),
        ("port", port_value),
        ("securePort", secure_value),
        (
            "countryId",
            json!(number(&out, "countryId").ok().flatten().unwrap_or(1)),
        ),
        ("dataCenterInfo", data_center),
        ("leaseInfo", lease),
        ("metadata", metadata),
        ("vipAddress", json!(vip)),
        ("isCoordinatingDiscoveryServer", json!("false")),
        (
            "lastUpdatedTimestamp",
            json!(millis(instance.modified_at).to_string()),
        ),
        ("lastDirtyTimestamp", json!(dirty.to_string())),
    ] {
        out.insert(key.into(), value);
    }
    match action {
        Some(action) => out.insert("actionType".into(), json!(action)),
        None => out.remove("actionType"),
    };
    Value::Object(out)
}

/// `apps__hashcode`: each status with its count, in status order
/// (`DOWN_1_UP_5_`), which clients compare with their own copy's.
pub fn hashcode<'a>(statuses: impl Iterator<Item = &'a str>) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for status in statuses {
        *counts.entry(status).or_default() += 1;
    }
    counts
        .iter()
        .map(|(status, count)| format!("{status}_{count}_"))
        .collect()
}

/// A port element: `{"$": 8080, "@enabled": "true"}`, or a bare number.
/// `None` when absent or not enabled.
fn port(
    instance: &Map<String, Value>,
    key: &str,
    enabled_by_default: bool,
) -> Result<Option<u16>, String> {
    let (value, enabled) = match instance.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(port)) => {
            let enabled = match port.get("@enabled") {
                None | Some(Value::Null) => enabled_by_default,
                Some(Value::Bool(enabled)) => *enabled,
                Some(Value::String(text)) if text == "true" => true,
                Some(Value::String(text)) if text == "false" => false,
                Some(other) => {
                    return Err(format!(
                        "{key}.@enabled: expected \"true\" or \"false\", found {}",
                        kind(other)
                    ))
                }
            };
            (port.get("$").cloned().unwrap_or(Value::Null), enabled)
        }
        Some(other) => (other.clone(), enabled_by_default),
    };
    let number = match &value {
        Value::Number(n) => n.as_u64(),
        Value::String(text) => text.trim().parse::<u64>().ok(),
        Value::Null => return Err(format!("{key}: the port number is missing")),
        _ => None,
    };
    match number {
        Some(port @ 1..=65535) if enabled => Ok(Some(port as u16)),
        Some(1..=65535) => Ok(None),
        // Eureka clients send a disabled secure port as 0 or 443.
        Some(0) if !enabled => Ok(None),
        Some(port) => Err(format!("{key}: {port} is not from 1 to 65535")),
        None => Err(format!(
            "{key}: expected a port number, found {}",
            kind(&value)
        )),
    }
}

/// A port element's number and whether it is enabled, whatever its shape;
/// `None` when it has no number.
fn lenient_port(
    instance: &Map<String, Value>,
    key: &str,
    enabled_by_default: bool,
) -> Option<(u64, bool)> {
    let (value, enabled) = match instance.get(key)? {
        Value::Object(port) => (
            port.get("$")?,
            match port.get("@enabled") {
                Some(Value::Bool(enabled)) => *enabled,
                Some(Value::String(text)) => text == "true",
                _ => enabled_by_default,
            },
        ),
        other => (other, enabled_by_default),
    };
    let number = match value {
        Value::Number(n) => n.as_u64()?,
        Value::String(text) => text.trim().parse().ok()?,
        _ => return None,
    };
    Some((number, enabled))
}

fn text(object: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(other) => Err(format!("{key}: expected a string, found {}", kind(other))),
    }
}

fn number(object: &Map<String, Value>, key: &str) -> Result<Option<u64>, String> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("{key}: {n} is not a whole number from 0")),
        Some(Value::String(text)) if text.trim().is_empty() => Ok(None),
        Some(Value::String(text)) => text
            .trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| format!("{key}: `{text}` is not a whole number from 0")),
        Some(other) => Err(format!("{key}: expected a number, found {}", kind(other))),
    }
}
