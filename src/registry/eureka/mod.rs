//! The Eureka REST API, served under `/eureka/` (Spring Cloud's paths) and
//! `/eureka/v2/` (Netflix's) on the admin listener: register, renew,
//! cancel, status overrides, metadata, and the reads (`/apps`, one app,
//! one instance, VIPs, and `/apps/delta` with `versions__delta` and
//! `apps__hashcode`), as JSON or XML by `Accept` (XML by default, as
//! Eureka). Registrations land in the same catalog as Consul's: an
//! instance's lease is a TTL check that removes it when it runs out.

mod model;
pub mod xml;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;
use serde_json::{json, Map, Value};

pub use model::{endpoint, hashcode, Endpoint};

use super::api::{authorize, decode, kind, ApiRequest, Query};
use super::catalog::{millis, DELTA_RETENTION};
use super::{Catalog, EurekaStatus, Instance, Refused, Registry};

type Reply = Response<Full<Bytes>>;

/// Answers one request under `/eureka` or `/eureka/v2` (`request.path` is
/// what follows).
pub async fn handle(registry: &Arc<Registry>, request: ApiRequest<'_>) -> Reply {
    let query = Query::parse(request.query);
    let writes = !matches!(*request.method, Method::GET | Method::HEAD);
    if let Err(message) = authorize(registry, request.headers, &query, writes) {
        let status = if message.contains("required") {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::FORBIDDEN
        };
        return text_reply(status, message);
    }
    let json = request
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("json"));
    let segments: Vec<String> = request
        .path
        .trim_start_matches('/')
        .trim_end_matches('/')
        .split('/')
        .map(decode)
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (request.method, segments.as_slice()) {
        (&Method::POST, ["apps", app]) => register(registry, app, &request.body),
        (&Method::PUT, ["apps", app, id]) => renew(registry, app, id, &query),
        (&Method::DELETE, ["apps", app, id]) => {
            if owned_by(registry, app, id) && registry.deregister(id) {
                empty(StatusCode::OK)
            } else {
                not_found(app, id)
            }
        }
        (&Method::PUT, ["apps", app, id, "status"]) => {
            let Some(status) = query.get("value").as_deref().and_then(EurekaStatus::parse) else {
                return text_reply(
                    StatusCode::BAD_REQUEST,
                    "value must be one of UP, DOWN, STARTING, OUT_OF_SERVICE, UNKNOWN".into(),
                );
            };
            set_status(registry, app, id, Some(status), status)
        }
        (&Method::DELETE, ["apps", app, id, "status"]) => {
            let status = match query.get("value") {
                None => EurekaStatus::Unknown,
                Some(value) => match EurekaStatus::parse(&value) {
                    Some(status) => status,
                    None => {
                        return text_reply(
                            StatusCode::BAD_REQUEST,
                            format!("value `{value}` is not one of UP, DOWN, STARTING, OUT_OF_SERVICE, UNKNOWN"),
                        )
                    }
                },
            };
            set_status(registry, app, id, None, status)
        }
        (&Method::PUT, ["apps", app, id, "metadata"]) => {
            let pairs: Vec<(String, String)> = query.pairs().to_vec();
            if !owned_by(registry, app, id) {
                return not_found(app, id);
            }
            registry.modify(id, |instance| {
                let before = instance.meta.clone();
                instance.meta.extend(pairs);
                instance.meta != before
            });
            empty(StatusCode::OK)
        }
        (&Method::GET, ["apps"]) => {
            let body = registry.read(|catalog| applications(catalog, |_| true));
            document("applications", body, json)
        }
        (&Method::GET, ["apps", "delta"]) => {
            let body = registry.read(|catalog| delta(catalog, SystemTime::now()));
            document("applications", body, json)
        }
        (&Method::GET, ["apps", app]) => {
            let instances: Vec<Value> = registry.read(|catalog| {
                catalog
                    .instances
                    .values()
                    .filter(|i| i.service.eq_ignore_ascii_case(app))
                    .map(|i| model::render(i, None))
                    .collect()
            });
            if instances.is_empty() {
                return text_reply(
                    StatusCode::NOT_FOUND,
                    format!("no application {}", app.to_ascii_uppercase()),
                );
            }
            document(
                "application",
                json!({ "name": app.to_ascii_uppercase(), "instance": instances }),
                json,
            )
        }
        (&Method::GET, ["apps", app, id]) => {
            match registry.read(|catalog| {
                catalog
                    .instances
                    .get(*id)
                    .filter(|i| i.service.eq_ignore_ascii_case(app))
                    .map(|i| model::render(i, None))
            }) {
                Some(instance) => document("instance", instance, json),
                None => not_found(app, id),
            }
        }
        (&Method::GET, ["instances", id]) => {
            match registry
                .read(|catalog| catalog.instances.get(*id).map(|i| model::render(i, None)))
            {
                Some(instance) => document("instance", instance, json),
                None => text_reply(StatusCode::NOT_FOUND, format!("no instance {id}")),
            }
        }
        (&Method::GET, [kind @ ("vips" | "svips"), vip]) => {
            let key = if *kind == "vips" {
                "vipAddress"
            } else {
                "secureVipAddress"
            };
            let body = registry.read(|catalog| {
                applications(catalog, |rendered| {
                    rendered
                        .get(key)
                        .and_then(Value::as_str)
                        .is_some_and(|v| v.eq_ignore_ascii_case(vip))
                })
            });
            document("applications", body, json)
        }
        _ => text_reply(
            StatusCode::NOT_FOUND,
            format!(
                "{} {} is not part of usherd's Eureka API",
                request.method, request.path
            ),
        ),
    }
}

/// `POST /apps/{app}`: the body is `{"instance": {...}}` or `<instance>...</instance>`.
fn register(registry: &Arc<Registry>, app: &str, body: &Bytes) -> Reply {
    let instance = match instance_object(body) {
        Ok(instance) => instance,
        Err(message) => return text_reply(StatusCode::BAD_REQUEST, message),
    };
    let now = SystemTime::now();
    let mut instance = match model::parse_registration(&instance, now) {
        Ok(instance) => instance,
        Err(message) => return text_reply(StatusCode::BAD_REQUEST, message),
    };
    if !instance.service.eq_ignore_ascii_case(app) {
        return text_reply(
            StatusCode::BAD_REQUEST,
            format!(
                "app: the body names `{}` but the path names `{app}`",
                instance.service
            ),
        );
    }
    // A re-registration keeps the lease's start and an operator's override,
    // as Eureka does.
    registry.read(|catalog| {
        let (Some(old), Some(new)) = (
            catalog
                .instances
                .get(&instance.id)
                .and_then(|old| old.eureka.as_ref()),
            instance.eureka.as_mut(),
        ) else {
            return;
        };
        new.registered_ms = old.registered_ms;
        if old.effective() == EurekaStatus::Up && new.effective() == EurekaStatus::Up {
            new.up_ms = old.up_ms;
        }
        new.overridden = new.overridden.or(old.overridden);
    });
    match registry.register(instance) {
        Ok(()) => empty(StatusCode::NO_CONTENT),
        Err(Refused::Invalid(message)) => text_reply(StatusCode::BAD_REQUEST, message),
        Err(refused @ Refused::Forbidden(_)) => {
            text_reply(StatusCode::FORBIDDEN, refused.to_string())
        }
        Err(refused @ Refused::Full(_)) => {
            text_reply(StatusCode::TOO_MANY_REQUESTS, refused.to_string())
        }
        Err(Refused::Conflict(message)) => text_reply(StatusCode::CONFLICT, message),
    }
}

/// The instance object of a registration body, JSON or XML.
fn instance_object(body: &Bytes) -> Result<Map<String, Value>, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the body is not UTF-8".to_string())?;
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return Err(
            "the body is empty; send {\"instance\": {...}} or <instance>...</instance>".into(),
        );
    }
    let (root, value) = if trimmed.starts_with('<') {
        xml::parse(trimmed)?
    } else {
        match serde_json::from_str::<Value>(trimmed) {
            Ok(Value::Object(mut object))
                if object.len() == 1 && object.contains_key("instance") =>
            {
                (
                    "instance".to_string(),
                    object.remove("instance").unwrap_or_default(),
                )
            }
            Ok(Value::Object(_)) => {
                return Err("the body must be {\"instance\": {...}}, with nothing beside it".into())
            }
            Ok(other) => {
                return Err(format!(
                    "the body must be a JSON object, not {}",
                    kind(&other)
                ))
            }
            Err(error) => return Err(format!("the body is not valid JSON: {error}")),
        }
    };
    match (root.as_str(), value) {
        ("instance", Value::Object(instance)) => Ok(instance),
        ("instance", other) => Err(format!(
            "instance: expected an object, found {}",
            kind(&other)
        )),
        (root, _) => Err(format!(
            "the document's root is <{root}>; expected <instance>"
        )),
    }
}

/// `PUT /apps/{app}/{id}`: a heartbeat. 404 tells the client to register
/// again: for an unknown instance, one whose status an operator reset to
/// `UNKNOWN`, or when the client's data is newer than what is held.
fn renew(registry: &Registry, app: &str, id: &str, query: &Query) -> Reply {
    let known = registry.read(|catalog| {
        catalog
            .instances
            .get(id)
            .filter(|instance| instance.service.eq_ignore_ascii_case(app))
            .and_then(|instance| instance.eureka.as_ref())
            .map(|eureka| (eureka.status, eureka.dirty_ms))
    });
    let Some((status, dirty_ms)) = known else {
        return not_found(app, id);
    };
    let newer = query
        .get("lastDirtyTimestamp")
        .and_then(|value| value.parse::<u64>().ok())
        .is_some_and(|theirs| theirs > dirty_ms);
    if status == EurekaStatus::Unknown || newer || !registry.renew(id) {
        return not_found(app, id);
    }
    empty(StatusCode::OK)
}

/// `PUT .../status?value=` sets an override; `DELETE .../status` removes it
/// and sets the reported status (`UNKNOWN` unless `value` names one, so the
/// next heartbeat makes the client register its own).
fn set_status(
    registry: &Registry,
    app: &str,
    id: &str,
    overridden: Option<EurekaStatus>,
    status: EurekaStatus,
) -> Reply {
    if !owned_by(registry, app, id) {
        return not_found(app, id);
    }
    let found = registry.modify(id, |instance| {
        let Some(eureka) = instance.eureka.as_mut() else {
            return false;
        };
        let before = (eureka.overridden, eureka.status);
        eureka.overridden = overridden;
        eureka.status = status;
        if eureka.effective() == EurekaStatus::Up
            && before.0.unwrap_or(before.1) != EurekaStatus::Up
        {
            eureka.up_ms = millis(SystemTime::now());
        }
        before != (eureka.overridden, eureka.status)
    });
    if found {
        empty(StatusCode::OK)
    } else {
        not_found(app, id)
    }
}

/// Whether `id` is an instance of `app` (any case).
fn owned_by(registry: &Registry, app: &str, id: &str) -> bool {
    registry.read(|catalog| {
        catalog
            .instances
            .get(id)
            .is_some_and(|instance| instance.service.eq_ignore_ascii_case(app))
    })
}

/// Every instance that `keep` accepts (as rendered), grouped by app.
fn applications(catalog: &Catalog, keep: impl Fn(&Map<String, Value>) -> bool) -> Value {
    let mut apps: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for instance in catalog.instances.values() {
        let rendered = model::render(instance, None);
        if rendered.as_object().is_some_and(&keep) {
            apps.entry(instance.service.to_ascii_uppercase())
                .or_default()
                .push(rendered);
        }
    }
    let code = hashcode(apps.values().flatten().filter_map(|i| i["status"].as_str()));
    json!({
        "versions__delta": catalog.index.to_string(),
        "apps__hashcode": code,
        "application": apps
            .into_iter()
            .map(|(name, instances)| json!({ "name": name, "instance": instances }))
            .collect::<Vec<_>>(),
    })
}

/// `GET /apps/delta`: what changed in the last 3 minutes, each instance
/// with its `actionType`; the hashcode is the whole registry's, so a client
/// whose copy has drifted fetches it all again.
fn delta(catalog: &Catalog, now: SystemTime) -> Value {
    let recent = |at: SystemTime| now.duration_since(at).unwrap_or_default() <= DELTA_RETENTION;
    let mut apps: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut add = |instance: &Instance, action: &str| {
        apps.entry(instance.service.to_ascii_uppercase())
            .or_default()
            .push(model::render(instance, Some(action)));
    };
    for (at, instance) in &catalog.removed {
        if recent(*at) {
            add(instance, "DELETED");
        }
    }
    for instance in catalog.instances.values() {
        if recent(instance.modified_at) {
            let action = if instance.create_index == instance.modify_index {
                "ADDED"
            } else {
                "MODIFIED"
            };
            add(instance, action);
        }
    }
    let all: Vec<Value> = catalog
        .instances
        .values()
        .map(|i| model::render(i, None))
        .collect();
    json!({
        "versions__delta": catalog.index.to_string(),
        "apps__hashcode": hashcode(all.iter().filter_map(|i| i["status"].as_str())),
        "application": apps
            .into_iter()
            .map(|(name, instances)| json!({ "name": name, "instance": instances }))
            .collect::<Vec<_>>(),
    })
}

/// A read's answer: `{root: body}` as JSON, or `<root>` as XML.
fn document(root: &str, body: Value, json: bool) -> Reply {
    let (bytes, content_type) = if json {
        (json!({ root: body }).to_string(), "application/json")
    } else {
        (xml::render(root, &body), "application/xml")
    };
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn empty(status: StatusCode) -> Reply {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

fn text_reply(status: StatusCode, message: String) -> Reply {
    let mut response = Response::new(Full::new(Bytes::from(message + "\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn not_found(app: &str, id: &str) -> Reply {
    text_reply(
        StatusCode::NOT_FOUND,
        format!("no instance {id} of {}", app.to_ascii_uppercase()),
    )
}
