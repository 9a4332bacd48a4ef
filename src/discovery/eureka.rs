//! The `eureka` source: the `UP` instances of one app in a Eureka server
//! (or another usherd's Eureka API), followed as Eureka's own clients
//! follow the registry: the whole registry once (`GET {address}/apps`),
//! then every `refresh` only what changed (`GET {address}/apps/delta`),
//! applied to the copy kept here. When the copy's `apps__hashcode` differs
//! from the server's after a delta, the whole registry is fetched again.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{header, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Map, Value};

use super::Answer;
use crate::config::{DiscoverySource, Server};
use crate::registry::eureka::{endpoint, hashcode};
use crate::registry::{join_host_port, EurekaStatus};
use crate::tls::{client_config, Verify};

/// The largest answer read.
const MAX_ANSWER: usize = 32 * 1024 * 1024;

/// The registry as last fetched: app name -> instance id -> instance.
type Copy = BTreeMap<String, BTreeMap<String, Map<String, Value>>>;

/// A `eureka` source, ready to ask.
pub struct EurekaSource {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    /// The service URL, without a trailing slash.
    address: String,
    /// The app, in upper case.
    app: String,
    authorization: Option<HeaderValue>,
    /// `None` until a whole registry has been read.
    copy: Option<Copy>,
    /// Instances already reported as unusable, so each is logged once.
    warned: HashSet<String>,
}

impl EurekaSource {
    pub fn new(source: &DiscoverySource, timeout: Duration) -> Result<EurekaSource, String> {
        let DiscoverySource::Eureka {
            address,
            service,
            token,
        } = source
        else {
            return Err("not a eureka source".into());
        };
        let authorization = token
            .as_deref()
            .map(|token| {
                let credentials =
                    base64::engine::general_purpose::STANDARD.encode(format!("usherd:{token}"));
                let mut value = HeaderValue::from_str(&format!("Basic {credentials}"))
                    .map_err(|_| "the token is not a valid header value".to_string())?;
                value.set_sensitive(true);
                Ok::<_, String>(value)
            })
            .transpose()?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        let connector =
            HttpsConnector::from((http, client_config(Verify::SystemRoots, b"http/1.1")));
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(1)
            .build(connector);
        Ok(EurekaSource {
            client,
            address: address.clone(),
            app: service.clone(),
            authorization,
            copy: None,
            warned: HashSet::new(),
        })
    }

    /// Asks once: a delta when a copy is held, else (or when the delta does
    /// not bring the copy to the server's hashcode) the whole registry.
    pub async fn lookup(&mut self) -> Answer {
        if let Err(error) = self.refresh().await {
            return Answer::Failed(format!("{}: {error}", self.address));
        }
        let mut servers = Vec::new();
        let instances = self.copy.as_ref().and_then(|copy| copy.get(&self.app));
        for (id, instance) in instances.into_iter().flatten() {
            match endpoint(instance) {
                Ok(found) if found.status == EurekaStatus::Up => servers.push(Server {
                    addr: join_host_port(&found.address, found.port),
                    weight: 1,
                }),
                Ok(_) => {}
                Err(error) => {
                    if self.warned.insert(id.clone()) {
                        tracing::warn!(app = %self.app, instance = %id, %error, "discovery: a Eureka instance is skipped");
                    }
                }
            }
        }
        servers.sort_by(|a, b| a.addr.cmp(&b.addr));
        servers.dedup_by(|a, b| a.addr == b.addr);
        if servers.is_empty() {
            return Answer::None(format!(
                "no UP instances of {} at {}",
                self.app, self.address
            ));
        }
        Answer::Found {
            servers,
            ttl: Duration::MAX,
        }
    }

    async fn refresh(&mut self) -> Result<(), String> {
        if let Some(copy) = self.copy.as_mut() {
            let delta = fetch(
                &self.client,
                &self.address,
                "apps/delta",
                self.authorization.as_ref(),
            )
            .await?;
            apply_delta(copy, &delta);
            let theirs = delta
                .get("apps__hashcode")
                .and_then(Value::as_str)
                .unwrap_or("");
            if hashcode_of(copy) == theirs {
                return Ok(());
            }
            tracing::debug!(app = %self.app, "discovery: the Eureka delta left the copy behind; fetching the whole registry");
        }
        let whole = fetch(
            &self.client,
            &self.address,
            "apps",
            self.authorization.as_ref(),
        )
        .await?;
        self.copy = Some(read_registry(&whole));
        Ok(())
    }
}

/// One GET of `{address}/{path}` as JSON: the `applications` object.
async fn fetch(
    client: &Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    address: &str,
    path: &str,
    authorization: Option<&HeaderValue>,
) -> Result<Map<String, Value>, String> {
    let mut request = Request::get(format!("{address}/{path}"))
        .header(header::ACCEPT, "application/json")
        .header(header::USER_AGENT, "usherd eureka source");
    if let Some(authorization) = authorization {
        request = request.header(header::AUTHORIZATION, authorization.clone());
    }
    let request = request
        .body(Empty::new())
        .map_err(|error| error.to_string())?;
    let response = client
        .request(request)
        .await
        .map_err(|error| crate::error::with_causes(&error))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|error| format!("reading the answer: {error}"))?
        .to_bytes();
    if status != StatusCode::OK {
        let text = String::from_utf8_lossy(&body);
        return Err(format!("GET /{path} answered {status}: {}", text.trim()));
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(mut document)) => match document.remove("applications") {
            Some(Value::Object(applications)) => Ok(applications),
            _ => Err(format!(
                "GET /{path}: the answer has no `applications` object"
            )),
        },
        Ok(_) => Err(format!("GET /{path}: the answer is not a JSON object")),
        Err(error) => Err(format!("GET /{path}: the answer is not JSON: {error}")),
    }
}

/// A list that Eureka may write as one object or as an array.
fn list(value: Option<&Value>) -> Vec<&Map<String, Value>> {
    match value {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_object).collect(),
        Some(Value::Object(item)) => vec![item],
        _ => Vec::new(),
    }
}

/// Each application's instances, as `(APP, id, instance)`.
fn instances(applications: &Map<String, Value>) -> Vec<(String, String, &Map<String, Value>)> {
    let mut found = Vec::new();
    for application in list(applications.get("application")) {
        let name = application
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_ascii_uppercase();
        for instance in list(application.get("instance")) {
            let id = instance
                .get("instanceId")
                .and_then(Value::as_str)
                .or_else(|| instance.get("hostName").and_then(Value::as_str))
                .unwrap_or("")
                .to_string();
            found.push((name.clone(), id, instance));
        }
    }
    found
}

fn read_registry(applications: &Map<String, Value>) -> Copy {
    let mut copy = Copy::new();
    for (app, id, instance) in instances(applications) {
        copy.entry(app).or_default().insert(id, instance.clone());
    }
    copy
}

/// Applies a delta: `ADDED` and `MODIFIED` replace, `DELETED` removes.
fn apply_delta(copy: &mut Copy, delta: &Map<String, Value>) {
    for (app, id, instance) in instances(delta) {
        match instance.get("actionType").and_then(Value::as_str) {
            Some("DELETED") => {
                if let Some(instances) = copy.get_mut(&app) {
                    instances.remove(&id);
                    if instances.is_empty() {
                        copy.remove(&app);
                    }
                }
            }
            _ => {
                copy.entry(app).or_default().insert(id, instance.clone());
            }
        }
    }
}

fn hashcode_of(copy: &Copy) -> String {
    hashcode(copy.values().flat_map(BTreeMap::values).map(|instance| {
        instance
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("UNKNOWN")
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        let Value::Object(object) = value else {
            unreachable!()
        };
        object
    }

    #[test]
    fn a_delta_patches_the_copy_until_the_hashcodes_agree() {
        let whole = object(json!({
            "versions__delta": "1",
            "apps__hashcode": "UP_2_",
            "application": [{"name": "API", "instance": [
                {"instanceId": "a", "status": "UP"},
                {"instanceId": "b", "status": "UP"}
            ]}]
        }));
        let mut copy = read_registry(&whole);
        assert_eq!(hashcode_of(&copy), "UP_2_");
        // Eureka writes a lone application or instance as an object.
        let delta = object(json!({
            "apps__hashcode": "DOWN_1_UP_1_",
            "application": {"name": "API", "instance": [
                {"instanceId": "a", "status": "DOWN", "actionType": "MODIFIED"},
                {"instanceId": "c", "status": "UP", "actionType": "ADDED"},
                {"instanceId": "b", "status": "UP", "actionType": "DELETED"}
            ]}
        }));
        apply_delta(&mut copy, &delta);
        assert_eq!(hashcode_of(&copy), "DOWN_1_UP_1_");
        assert_eq!(copy["API"].keys().collect::<Vec<_>>(), ["a", "c"]);
    }
}
