//! The registry's Eureka API through clients written by others:
//! py-eureka-client (the real PyPI package, in a venv tests/run.sh makes)
//! registering, renewing, going out of service and leaving; the exact JSON
//! and XML the Java client (Spring Cloud Netflix) sends, with its heartbeat
//! and delta reads; bad bodies refused with the catalog unchanged; and a
//! second usherd following the first's Eureka API with `source = "eureka"`.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use serde_json::{json, Value};
use support::follow::{serving, until_serving, until_state};
use support::scripted::Scripted;
use support::{echo_backend, send, spawn_binary_with, start_proxy, within, Backend, Reply};

const TOKEN: &str = "eureka-write-token";

/// A proxy with a registry that needs `TOKEN` to write, routing `api` to
/// what is registered under that name in any API.
fn config() -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[registry]
write_tokens = ["{TOKEN}"]
[listeners.web]
listen = "127.0.0.1:0"
[vhosts.all]
hosts = ["*"]
routes = [{{ path = "/", upstream = "api" }}]
[upstreams.api]
strategy = "round_robin"
retries = 0
[upstreams.api.discovery]
source = "registry"
service = "api"
"#
    )
}

/// A request to the admin listener, with the token as Basic credentials
/// (what a Eureka client sends for `http://user:TOKEN@host/eureka/`).
async fn call(
    admin: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{admin}{path}"))
        // base64("usherd:eureka-write-token")
        .header(
            "authorization",
            "Basic dXNoZXJkOmV1cmVrYS13cml0ZS10b2tlbg==",
        );
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(
        &support::client(),
        request
            .body(support::full(Bytes::from(body.to_string())))
            .unwrap(),
    )
    .await
}

async fn catalog_index(admin: SocketAddr) -> String {
    let reply = call(admin, Method::GET, "/v1/catalog/services", &[], "").await;
    reply.header("x-consul-index").unwrap().to_string()
}

/// py-eureka-client in a child Python, driven by commands on its stdin.
struct PyEureka(Scripted);

const PY_EUREKA: &str = r#"
import os, sys
import py_eureka_client.eureka_client as ec
errors = []
client = ec.init(eureka_server=os.environ["EUREKA"], app_name="api",
                 instance_id=os.environ["ID"], instance_host="localhost", instance_ip="127.0.0.1",
                 instance_port=int(os.environ["PORT"]), renewal_interval_in_secs=1,
                 duration_in_secs=int(os.environ["LEASE"]),
                 on_error=lambda kind, error: errors.append(f"{kind}: {error!r}"))
loop = ec.get_event_loop()
print("started", flush=True)
for line in sys.stdin:
    command = line.strip()
    if command == "out":
        loop.run_until_complete(client.status_update("OUT_OF_SERVICE"))
    elif command == "up":
        loop.run_until_complete(client.status_update("UP"))
    elif command == "apps":
        # What the client's own copy of the registry holds (full fetch, then deltas).
        print(sorted((app.name, i.instanceId, i.status) for app in client.applications.applications for i in app.instances))
    elif command == "errors":
        print(errors)
    elif command == "stop":
        ec.stop()
        print("stopped", flush=True)
        sys.exit(0)
    elif command == "die":
        os._exit(0)
    print("done", flush=True)
"#;

impl PyEureka {
    async fn start(admin: SocketAddr, id: &str, backend: &Backend, lease_secs: u64) -> PyEureka {
        let envs = [
            ("EUREKA", format!("http://usherd:{TOKEN}@{admin}/eureka/")),
            ("ID", id.to_string()),
            ("PORT", backend.addr.port().to_string()),
            ("LEASE", lease_secs.to_string()),
        ];
        PyEureka(Scripted::start("py-eureka-client", PY_EUREKA, &envs, "started").await)
    }

    async fn command(&mut self, command: &str) -> String {
        self.0.command(command).await
    }

    /// `stop` (a clean shutdown: status DOWN, then cancel) and its exit.
    async fn stop(mut self) {
        self.0.send("stop").await;
        self.0.read_until("stopped").await;
        assert!(self.0.exit().await.success());
    }

    /// Ends the process without a word to the registry, as a crash does.
    async fn die(mut self) {
        self.0.send("die").await;
        self.0.exit().await;
    }
}

/// How many instances the registry holds, by its Consul API.
async fn instances(admin: SocketAddr) -> usize {
    let reply = call(admin, Method::GET, "/v1/agent/services", &[], "").await;
    reply.json().as_object().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn py_eureka_client_is_routed_while_up_and_gone_when_it_stops_or_dies() {
    let (a, b) = (echo_backend("a").await, echo_backend("b").await);
    let proxy = start_proxy(&config()).await;
    let admin = proxy.admin_addr().unwrap();

    // A long lease: A's removal below can only be its cancel.
    let mut first = PyEureka::start(admin, "a-1", &a, 60).await;
    until_serving(&proxy, &["a"], Duration::from_secs(10)).await;
    // The client read the registry back (XML, whole then by deltas).
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let seen = first.command("apps").await;
        if seen.contains("('API', 'a-1', 'UP')") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the client's copy: {seen}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    first.command("out").await;
    until_serving(&proxy, &["status 503"], Duration::from_secs(5)).await;
    let instance = call(
        admin,
        Method::GET,
        "/eureka/apps/API/a-1",
        &[("accept", "application/json")],
        "",
    )
    .await;
    assert_eq!(
        instance.json()["instance"]["status"],
        "OUT_OF_SERVICE",
        "{}",
        instance.text()
    );
    assert_eq!(
        instance.json()["instance"]["overriddenstatus"],
        "OUT_OF_SERVICE"
    );
    first.command("up").await;
    until_serving(&proxy, &["a"], Duration::from_secs(5)).await;

    // B renews every second on a 4 s lease.
    let second = PyEureka::start(admin, "b-1", &b, 4).await;
    until_serving(&proxy, &["a", "b"], Duration::from_secs(10)).await;
    let renewed_at = |reply: Reply| {
        reply.json()["instance"]["leaseInfo"]["lastRenewalTimestamp"]
            .as_u64()
            .unwrap()
    };
    let registered = renewed_at(
        call(
            admin,
            Method::GET,
            "/eureka/v2/apps/api/b-1",
            &[("accept", "application/json")],
            "",
        )
        .await,
    );
    let renewing = within(Duration::from_secs(10), || async {
        renewed_at(
            call(
                admin,
                Method::GET,
                "/eureka/v2/apps/api/b-1",
                &[("accept", "application/json")],
                "",
            )
            .await,
        ) > registered
    })
    .await;
    assert!(renewing.is_some(), "no renewal of b-1's lease");

    // B dies: its lease runs out and it is removed.
    second.die().await;
    until_serving(&proxy, &["a"], Duration::from_secs(20)).await;
    assert_eq!(instances(admin).await, 1);

    // A stops cleanly: DOWN, then cancelled, long before its lease.
    assert_eq!(
        first.command("errors").await.trim(),
        "[]",
        "the client reported errors"
    );
    first.stop().await;
    assert!(
        within(Duration::from_secs(5), || async {
            instances(admin).await == 0
        })
        .await
        .is_some(),
        "a-1 is still registered after a clean stop"
    );
    until_serving(&proxy, &["status 503"], Duration::from_secs(5)).await;
}

/// What the Java client (Spring Cloud Netflix) sends to register, as JSON.
fn java_json(id: &str, port: u16, status: &str) -> String {
    json!({"instance": {
        "instanceId": id,
        "hostName": "localhost",
        "app": "API",
        "ipAddr": "127.0.0.1",
        "status": status,
        "overriddenStatus": "UNKNOWN",
        "port": {"$": port, "@enabled": "true"},
        "securePort": {"$": 443, "@enabled": "false"},
        "countryId": 1,
        "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
        "leaseInfo": {"renewalIntervalInSecs": 30, "durationInSecs": 90, "registrationTimestamp": 0,
                      "lastRenewalTimestamp": 0, "evictionTimestamp": 0, "serviceUpTimestamp": 0},
        "metadata": {"management.port": port.to_string()},
        "homePageUrl": format!("http://localhost:{port}/"),
        "statusPageUrl": format!("http://localhost:{port}/actuator/info"),
        "healthCheckUrl": format!("http://localhost:{port}/actuator/health"),
        "vipAddress": "api",
        "secureVipAddress": "api",
        "isCoordinatingDiscoveryServer": "false",
        "lastUpdatedTimestamp": "1764000000000",
        "lastDirtyTimestamp": "1764000000000"
    }})
    .to_string()
}

/// The same as the Java client writes it in XML (XStream).
fn java_xml(id: &str, port: u16) -> String {
    format!(
        r#"<instance>
  <instanceId>{id}</instanceId>
  <hostName>localhost</hostName>
  <app>API</app>
  <ipAddr>127.0.0.1</ipAddr>
  <status>UP</status>
  <overriddenstatus>UNKNOWN</overriddenstatus>
  <port enabled="true">{port}</port>
  <securePort enabled="false">443</securePort>
  <countryId>1</countryId>
  <dataCenterInfo class="com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo">
    <name>MyOwn</name>
  </dataCenterInfo>
  <leaseInfo>
    <renewalIntervalInSecs>30</renewalIntervalInSecs>
    <durationInSecs>90</durationInSecs>
  </leaseInfo>
  <metadata class="java.util.Collections$EmptyMap"/>
  <vipAddress>api</vipAddress>
  <isCoordinatingDiscoveryServer>false</isCoordinatingDiscoveryServer>
  <lastUpdatedTimestamp>1764000000000</lastUpdatedTimestamp>
  <lastDirtyTimestamp>1764000000000</lastDirtyTimestamp>
</instance>"#
    )
}

/// The headers the Java client sends with a JSON body.
const JAVA_JSON: &[(&str, &str)] = &[
    ("content-type", "application/json"),
    ("accept", "application/json"),
    ("accept-encoding", "gzip"),
    ("discoveryidentity-name", "DefaultClient"),
    ("discoveryidentity-version", "1.4"),
];

fn delta_actions(delta: &Value) -> Vec<(String, String)> {
    let mut actions: Vec<(String, String)> = delta["applications"]["application"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|app| app["instance"].as_array().unwrap().clone())
        .map(|i| {
            (
                i["instanceId"].as_str().unwrap().to_string(),
                i["actionType"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    actions.sort();
    actions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_java_clients_json_and_xml_register_renew_and_read_deltas() {
    let (a, b, c) = (
        echo_backend("a").await,
        echo_backend("b").await,
        echo_backend("c").await,
    );
    let proxy = start_proxy(&config()).await;
    let admin = proxy.admin_addr().unwrap();

    // Spring Cloud's paths, JSON; STARTING is not routed until UP.
    let reply = call(
        admin,
        Method::POST,
        "/eureka/apps/API",
        JAVA_JSON,
        &java_json("host:api:a", a.addr.port(), "STARTING"),
    )
    .await;
    assert_eq!(reply.status, 204, "{}", reply.text());
    assert_eq!(serving(&proxy, 2).await, ["status 503"]);
    let reply = call(
        admin,
        Method::POST,
        "/eureka/apps/API",
        JAVA_JSON,
        &java_json("host:api:a", a.addr.port(), "UP"),
    )
    .await;
    assert_eq!(reply.status, 204, "{}", reply.text());
    until_serving(&proxy, &["a"], Duration::from_secs(5)).await;

    // Netflix's paths, XML.
    let xml_headers = [
        ("content-type", "application/xml"),
        ("accept", "application/xml"),
    ];
    let reply = call(
        admin,
        Method::POST,
        "/eureka/v2/apps/API",
        &xml_headers,
        &java_xml("host:api:b", b.addr.port()),
    )
    .await;
    assert_eq!(reply.status, 204, "{}", reply.text());
    until_serving(&proxy, &["a", "b"], Duration::from_secs(5)).await;

    // A Consul registration of `api` feeds the same upstream (migration).
    let consul = json!({"ID": "c-1", "Name": "api", "Address": "127.0.0.1", "Port": c.addr.port()})
        .to_string();
    let reply = call(
        admin,
        Method::PUT,
        "/v1/agent/service/register",
        &[],
        &consul,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    until_serving(&proxy, &["a", "b", "c"], Duration::from_secs(5)).await;

    // The heartbeat, as the Java client sends it; an unknown one is 404,
    // so the client registers again.
    let heartbeat = "/eureka/apps/API/host:api:a?status=UP&lastDirtyTimestamp=1764000000000";
    assert_eq!(
        call(admin, Method::PUT, heartbeat, JAVA_JSON, "")
            .await
            .status,
        200
    );
    let unknown = "/eureka/apps/API/host:api:z?status=UP&lastDirtyTimestamp=1764000000000";
    assert_eq!(
        call(admin, Method::PUT, unknown, JAVA_JSON, "")
            .await
            .status,
        404
    );
    // A client whose data is newer than what is held is told to register.
    let newer = "/eureka/apps/API/host:api:a?status=UP&lastDirtyTimestamp=1764000009999";
    assert_eq!(
        call(admin, Method::PUT, newer, JAVA_JSON, "").await.status,
        404
    );

    // The full read and the delta, as the Java client reads them.
    let apps = call(admin, Method::GET, "/eureka/apps/", JAVA_JSON, "").await;
    assert_eq!(apps.status, 200);
    assert_eq!(apps.header("content-type"), Some("application/json"));
    let apps = apps.json();
    assert_eq!(apps["applications"]["apps__hashcode"], "UP_3_", "{apps}");
    let versions = apps["applications"]["versions__delta"]
        .as_str()
        .unwrap()
        .to_string();
    let instances = apps["applications"]["application"][0]["instance"]
        .as_array()
        .unwrap();
    assert_eq!(apps["applications"]["application"][0]["name"], "API");
    assert_eq!(instances.len(), 3);
    let a_instance = instances
        .iter()
        .find(|i| i["instanceId"] == "host:api:a")
        .unwrap();
    assert_eq!(
        a_instance["port"],
        json!({"$": a.addr.port(), "@enabled": "true"})
    );
    assert_eq!(
        a_instance["metadata"]["management.port"],
        a.addr.port().to_string()
    );
    assert_eq!(a_instance["leaseInfo"]["durationInSecs"], 90);
    let delta = call(admin, Method::GET, "/eureka/apps/delta", JAVA_JSON, "")
        .await
        .json();
    assert_eq!(
        delta_actions(&delta),
        [
            ("c-1".to_string(), "ADDED".to_string()),
            ("host:api:a".to_string(), "MODIFIED".to_string()),
            ("host:api:b".to_string(), "ADDED".to_string()),
        ]
    );
    assert_eq!(delta["applications"]["versions__delta"], versions.as_str());
    assert_eq!(delta["applications"]["apps__hashcode"], "UP_3_");

    // XML reads by default, the way XStream writes them.
    let xml = call(admin, Method::GET, "/eureka/v2/apps/API", &[], "").await;
    assert_eq!(xml.header("content-type"), Some("application/xml"));
    let text = xml.text();
    assert!(
        text.contains("<application><name>API</name><instance>"),
        "{text}"
    );
    assert!(
        text.contains(&format!("<port enabled=\"true\">{}</port>", b.addr.port())),
        "{text}"
    );

    // An operator's override, its removal, metadata, and the VIP read.
    let status = "/eureka/apps/API/host:api:b/status?value=OUT_OF_SERVICE";
    assert_eq!(
        call(admin, Method::PUT, status, JAVA_JSON, "").await.status,
        200
    );
    until_serving(&proxy, &["a", "c"], Duration::from_secs(5)).await;
    let delta = call(admin, Method::GET, "/eureka/apps/delta", JAVA_JSON, "")
        .await
        .json();
    assert_eq!(
        delta["applications"]["apps__hashcode"],
        "OUT_OF_SERVICE_1_UP_2_"
    );
    let cleared = "/eureka/apps/API/host:api:b/status?value=UP";
    assert_eq!(
        call(admin, Method::DELETE, cleared, JAVA_JSON, "")
            .await
            .status,
        200
    );
    until_serving(&proxy, &["a", "b", "c"], Duration::from_secs(5)).await;
    let metadata = "/eureka/apps/API/host:api:b/metadata?zone=east";
    assert_eq!(
        call(admin, Method::PUT, metadata, JAVA_JSON, "")
            .await
            .status,
        200
    );
    let vip = call(admin, Method::GET, "/eureka/vips/api", JAVA_JSON, "")
        .await
        .json();
    let vip_instances = vip["applications"]["application"][0]["instance"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(vip_instances.len(), 3, "{vip}");
    let b_instance = vip_instances
        .iter()
        .find(|i| i["instanceId"] == "host:api:b")
        .unwrap();
    assert_eq!(b_instance["metadata"]["zone"], "east");
    let one = call(
        admin,
        Method::GET,
        "/eureka/instances/host:api:b",
        JAVA_JSON,
        "",
    )
    .await;
    assert_eq!(one.json()["instance"]["app"], "API");

    // Cancel: gone, and the delta says DELETED.
    assert_eq!(
        call(
            admin,
            Method::DELETE,
            "/eureka/apps/API/host:api:a",
            JAVA_JSON,
            ""
        )
        .await
        .status,
        200
    );
    until_serving(&proxy, &["b", "c"], Duration::from_secs(5)).await;
    assert_eq!(
        call(
            admin,
            Method::DELETE,
            "/eureka/apps/API/host:api:a",
            JAVA_JSON,
            ""
        )
        .await
        .status,
        404
    );
    let delta = call(admin, Method::GET, "/eureka/apps/delta", JAVA_JSON, "")
        .await
        .json();
    assert!(
        delta_actions(&delta).contains(&("host:api:a".to_string(), "DELETED".to_string())),
        "{delta}"
    );
    assert_eq!(delta["applications"]["apps__hashcode"], "UP_2_");

    // Writes need the token; reads here do not (no read_tokens).
    let anonymous = Request::post(format!("http://{admin}/eureka/apps/API"))
        .header("content-type", "application/json")
        .body(support::full(java_json("host:api:x", a.addr.port(), "UP")))
        .unwrap();
    assert_eq!(send(&support::client(), anonymous).await.status, 401);
    // One id, one owner: Eureka cannot take over a Consul registration.
    let reply = call(
        admin,
        Method::POST,
        "/eureka/apps/API",
        JAVA_JSON,
        &java_json("c-1", a.addr.port(), "UP"),
    )
    .await;
    assert_eq!(reply.status, 409, "{}", reply.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_eureka_bodies_are_refused_with_the_catalog_unchanged() {
    let a = echo_backend("a").await;
    let proxy = start_proxy(&config()).await;
    let admin = proxy.admin_addr().unwrap();
    let good = call(
        admin,
        Method::POST,
        "/eureka/apps/API",
        JAVA_JSON,
        &java_json("a-1", a.addr.port(), "UP"),
    )
    .await;
    assert_eq!(good.status, 204);
    let before = catalog_index(admin).await;
    let with = |change: &dyn Fn(&mut Value)| {
        let mut body: Value =
            serde_json::from_str(&java_json("bad-1", a.addr.port(), "UP")).unwrap();
        change(&mut body["instance"]);
        body.to_string()
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "/eureka/apps/API",
            with(&|i| {
                i.as_object_mut().unwrap().remove("app");
            }),
            "app: missing",
        ),
        (
            "/eureka/apps/API",
            with(&|i| i["port"]["$"] = json!(70000)),
            "port: 70000 is not from 1 to 65535",
        ),
        (
            "/eureka/apps/API",
            with(&|i| i["status"] = json!("SLEEPING")),
            "status: `SLEEPING` is not one of",
        ),
        (
            "/eureka/apps/API",
            with(&|i| i["port"]["@enabled"] = json!("false")),
            "no enabled port",
        ),
        (
            "/eureka/apps/API",
            with(&|i| i["ipAddr"] = json!("not an address!")),
            "neither an IP address",
        ),
        (
            "/eureka/apps/API",
            with(&|i| i["leaseInfo"]["durationInSecs"] = json!("soon")),
            "durationInSecs: `soon`",
        ),
        (
            "/eureka/apps/API",
            with(&|i| i["metadata"] = json!({"a": {"b": 1}})),
            "metadata.a: expected a string",
        ),
        (
            "/eureka/apps/API",
            with(&|i| i["instanceId"] = json!("a/b")),
            "must not contain `/`",
        ),
        (
            "/eureka/apps/OTHER",
            with(&|_| {}),
            "the path names `OTHER`",
        ),
        (
            "/eureka/apps/API",
            "{\"instance\": [1, 2]}".into(),
            "instance: expected an object",
        ),
        (
            "/eureka/apps/API",
            "{\"app\": \"API\"}".into(),
            "the body must be {\"instance\"",
        ),
        ("/eureka/apps/API", "{not json".into(), "not valid JSON"),
        (
            "/eureka/apps/API",
            "<instance><app>API</app>".into(),
            "not valid XML",
        ),
        (
            "/eureka/apps/API",
            "<application><name>API</name></application>".into(),
            "expected <instance>",
        ),
        ("/eureka/apps/API", "".into(), "the body is empty"),
    ];
    for (path, body, needle) in cases {
        let reply = call(admin, Method::POST, path, JAVA_JSON, &body).await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.text());
        assert!(
            reply.text().contains(needle),
            "{body}: expected `{needle}` in {}",
            reply.text()
        );
    }
    let reply = call(
        admin,
        Method::PUT,
        "/eureka/apps/API/a-1/status?value=ASLEEP",
        JAVA_JSON,
        "",
    )
    .await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert_eq!(
        catalog_index(admin).await,
        before,
        "a refused call changed the catalog"
    );
    assert_eq!(instances(admin).await, 1);
    until_serving(&proxy, &["a"], Duration::from_secs(5)).await;
}

/// usherd A runs the registry; B follows A's Eureka API.
const REGISTRY: &str = r#"
[admin]
listen = "127.0.0.1:0"
[registry]
[listeners.web]
listen = "127.0.0.1:0"
[vhosts.all]
hosts = ["*"]
routes = [{ path = "/", upstream = "local" }]
[upstreams.local]
servers = [{ addr = "127.0.0.1:9" }]
"#;

fn follower(registry: SocketAddr) -> String {
    support::follow::follower_config(
        "round_robin",
        "",
        &format!(
            "source = \"eureka\"\naddress = \"http://{registry}/eureka/\"\nservice = \"api\"\n\
             refresh = \"300ms\"\ntimeout = \"500ms\""
        ),
    )
}

async fn register_with(registry: SocketAddr, id: &str, backend: &Backend) {
    let body = java_json(id, backend.addr.port(), "UP");
    let reply = call(registry, Method::POST, "/eureka/apps/API", JAVA_JSON, &body).await;
    assert_eq!(reply.status, 204, "register {id}: {}", reply.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_eureka_source_follows_another_usherd_and_keeps_its_set_when_it_dies() {
    let (a, b, c) = (
        echo_backend("a").await,
        echo_backend("b").await,
        echo_backend("c").await,
    );
    let (registry_process, _config) = spawn_binary_with(REGISTRY, 2, "info,access=off", &[]);
    let registry = registry_process.addr("[admin]");
    register_with(registry, "api-a", &a).await;
    let proxy = start_proxy(&follower(registry)).await;

    until_serving(&proxy, &["a"], Duration::from_secs(5)).await;
    let state = until_state(&proxy, "ok", Duration::from_secs(2)).await;
    assert!(
        state["source"]
            .as_str()
            .unwrap()
            .contains("eureka API at http://"),
        "{state}"
    );

    // Changes arrive by deltas.
    register_with(registry, "api-b", &b).await;
    until_serving(&proxy, &["a", "b"], Duration::from_secs(5)).await;
    let out = call(
        registry,
        Method::PUT,
        "/eureka/apps/API/api-a/status?value=OUT_OF_SERVICE",
        JAVA_JSON,
        "",
    )
    .await;
    assert_eq!(out.status, 200);
    until_serving(&proxy, &["b"], Duration::from_secs(5)).await;
    let gone = call(
        registry,
        Method::DELETE,
        "/eureka/apps/API/api-b",
        JAVA_JSON,
        "",
    )
    .await;
    assert_eq!(gone.status, 200);
    register_with(registry, "api-c", &c).await;
    until_serving(&proxy, &["c"], Duration::from_secs(5)).await;

    // A gone: B keeps its last set and says stale.
    drop(registry_process);
    let state = until_state(&proxy, "stale", Duration::from_secs(10)).await;
    assert!(state["last_error"].as_str().is_some(), "{state}");
    assert_eq!(state["servers"], 1, "{state}");
    assert_eq!(serving(&proxy, 4).await, ["c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eureka_registrations_and_overrides_survive_a_restart() {
    let (a, b) = (echo_backend("a").await, echo_backend("b").await);
    let toml = config().replace("[registry]", "[registry]\nstate_file = \"registry.json\"");
    let (first, path) = spawn_binary_with(&toml, 2, "info", &[]);
    let admin = first.addr("[admin]");
    for (id, backend) in [("api-a", &a), ("api-b", &b)] {
        let reply = call(
            admin,
            Method::POST,
            "/eureka/apps/API",
            JAVA_JSON,
            &java_json(id, backend.addr.port(), "UP"),
        )
        .await;
        assert_eq!(reply.status, 204, "{}", reply.text());
    }
    let out = "/eureka/apps/API/api-b/status?value=OUT_OF_SERVICE";
    assert_eq!(
        call(admin, Method::PUT, out, JAVA_JSON, "").await.status,
        200
    );
    let state_file = path.directory().join("registry.json");
    assert!(
        within(Duration::from_secs(5), || async {
            std::fs::read_to_string(&state_file).is_ok_and(|text| text.contains("OUT_OF_SERVICE"))
        })
        .await
        .is_some(),
        "the state file was not written"
    );
    drop(first); // SIGKILL

    let second = support::spawn_binary_at(path.as_path(), 2, "info", &[]);
    let admin = second.addr("[admin]");
    let web = second.addr("web");
    let routed = within(Duration::from_secs(5), || async {
        support::get(&format!("http://{web}/"), None)
            .await
            .header("x-backend")
            == Some("a")
    })
    .await;
    assert!(routed.is_some(), "api-a is not routed after the restart");
    // The lease was renewed meanwhile as far as usherd knows: a heartbeat
    // is accepted, and the override is still there.
    let heartbeat = "/eureka/apps/API/api-a?status=UP&lastDirtyTimestamp=1764000000000";
    assert_eq!(
        call(admin, Method::PUT, heartbeat, JAVA_JSON, "")
            .await
            .status,
        200
    );
    let b_now = call(admin, Method::GET, "/eureka/apps/API/api-b", JAVA_JSON, "").await;
    assert_eq!(
        b_now.json()["instance"]["status"],
        "OUT_OF_SERVICE",
        "{}",
        b_now.text()
    );
    for _ in 0..6 {
        let reply = support::get(&format!("http://{web}/"), None).await;
        assert_eq!(reply.header("x-backend"), Some("a"));
    }
}
