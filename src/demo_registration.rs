//! `usherd demo-backend --register URL`: the demo backend registers itself
//! with a Consul-compatible registry (usherd's own, or Consul) the way a
//! microservice does: at start, with a TTL check it passes every third of
//! the TTL (registering again if the registry forgot it), and it
//! deregisters when it stops.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// The TTL of the check the demo backend registers.
pub const TTL: Duration = Duration::from_secs(10);

/// Who registers, and where.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The registry's base URL: `http://usherd:8500`.
    pub registry: String,
    pub token: Option<String>,
    pub service: String,
    pub id: String,
    pub port: u16,
    /// The address to register; `None`: the registry takes the one the
    /// request comes from.
    pub address: Option<String>,
}

type RegistryClient = Client<HttpConnector, Full<Bytes>>;

impl Registration {
    async fn put(
        &self,
        client: &RegistryClient,
        path: &str,
        body: String,
    ) -> Result<StatusCode, String> {
        let url = format!("{}{path}", self.registry.trim_end_matches('/'));
        let mut request = Request::builder().method(Method::PUT).uri(&url);
        if let Some(token) = &self.token {
            request = request.header("x-consul-token", token);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|error| format!("{url}: {error}"))?;
        let response = tokio::time::timeout(Duration::from_secs(5), client.request(request))
            .await
            .map_err(|_| format!("{url}: no answer within 5s"))?
            .map_err(|error| format!("{url}: {error}"))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        if status.is_success() || status == StatusCode::NOT_FOUND {
            Ok(status)
        } else {
            Err(format!(
                "{url}: {status} {}",
                String::from_utf8_lossy(&body)
            ))
        }
    }

    async fn register(&self, client: &RegistryClient) -> Result<(), String> {
        let mut body = json!({
            "ID": self.id,
            "Name": self.service,
            "Port": self.port,
            "Check": {
                "TTL": format!("{}s", TTL.as_secs()),
                "Status": "passing",
                "DeregisterCriticalServiceAfter": "1m",
            },
        });
        if let Some(address) = &self.address {
            body["Address"] = json!(address);
        }
        self.put(client, "/v1/agent/service/register", body.to_string())
            .await
            .map(|_| ())
    }

    /// Registers, passes the check every third of the TTL until `stop`, then
    /// deregisters. Failures are logged and tried again at the next turn.
    pub async fn keep(self, stop: CancellationToken) {
        let client: RegistryClient =
            Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let mut registered = false;
        let check = format!("/v1/agent/check/pass/service:{}", self.id);
        loop {
            let outcome = if registered {
                match self.put(&client, &check, String::new()).await {
                    // The registry forgot it (a restart without a state file): again.
                    Ok(StatusCode::NOT_FOUND) => self.register(&client).await,
                    other => other.map(|_| ()),
                }
            } else {
                self.register(&client).await
            };
            match outcome {
                Ok(()) if !registered => {
                    tracing::info!(registry = %self.registry, id = %self.id, service = %self.service, "registered");
                    registered = true;
                }
                Ok(()) => {}
                Err(error) => tracing::warn!(%error, "registry unreachable; trying again"),
            }
            tokio::select! {
                _ = tokio::time::sleep(TTL / 3) => {}
                _ = stop.cancelled() => break,
            }
        }
        let path = format!("/v1/agent/service/deregister/{}", self.id);
        match self.put(&client, &path, String::new()).await {
            Ok(_) => tracing::info!(id = %self.id, "deregistered"),
            Err(error) => tracing::warn!(%error, "could not deregister"),
        }
    }
}
