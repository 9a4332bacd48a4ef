//! The built-in registry through clients written by others: py-consul and
//! python-consul2 (real PyPI packages, in venvs tests/run.sh makes), and the
//! exact JSON the Go client and Spring Cloud Consul send. Registered
//! instances are routed when passing and dropped when not; blocking queries;
//! the state file across restarts and a SIGKILL; tokens and refused
//! addresses; malformed registrations.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request};
use serde_json::{json, Value};
use support::{echo_backend, get, python, send, within, Backend, Reply};

/// What every script starts with: `c`, a client of the registry on `ADMIN`.
const CONNECT: &str = "import os, consul\nc = consul.Consul(host=os.environ['ADMIN_HOST'], port=int(os.environ['ADMIN_PORT']))\n";

/// Runs `script` with `client`'s Python, `c` connected (`CONNECT`); `ADMIN` is the admin listener's
/// `host:port`. Returns stdout; panics with stderr on failure.
fn run_python(client: &str, admin: std::net::SocketAddr, script: &str) -> String {
    let output = Command::new(python(client))
        .arg("-c")
        .arg(format!("{CONNECT}{script}"))
        .env("ADMIN_HOST", admin.ip().to_string())
        .env("ADMIN_PORT", admin.port().to_string())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{client} script failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn config(registry: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[registry]
{registry}
[listeners.web]
listen = "127.0.0.1:0"
[vhosts.all]
hosts = ["*"]
routes = [{{ path = "/", upstream = "api" }}]
[upstreams.api]
retries = 0
[upstreams.api.discovery]
source = "registry"
service = "api"
"#
    )
}

async fn routed_to(proxy: &usherd::Proxy) -> Option<String> {
    let reply = get(&support::url(proxy, "/"), None).await;
    (reply.status == 200).then(|| reply.header("x-backend").unwrap_or("").to_string())
}

/// A request to the registry API on `admin`.
async fn call(
    admin: std::net::SocketAddr,
    method: Method,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> Reply {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{admin}{path}"));
    if let Some(token) = token {
        request = request.header("x-consul-token", token);
    }
    send(
        &support::client(),
        request
            .body(support::full(Bytes::from(body.to_string())))
            .unwrap(),
    )
    .await
}

fn servers(proxy: &usherd::Proxy) -> usize {
    proxy.snapshot().upstream("api").unwrap().endpoints.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn py_consul_registers_passes_and_deregisters() {
    let a = echo_backend("a").await;
    let b = echo_backend("b").await;
    let proxy = support::start_proxy(&config("")).await;
    let admin = proxy.admin_addr().unwrap();
    // A TTL check starts critical: not routed yet.
    run_python(
        "py-consul",
        admin,
        &format!(
            r#"
c.agent.service.register("api", service_id="api-1", address="127.0.0.1", port={port}, tags=["v1"],
                         check=consul.Check.ttl("2s"))
"#,
            port = a.addr.port()
        ),
    );
    assert!(proxy.snapshot().upstream("api").is_some());
    let reply = get(&support::url(&proxy, "/"), None).await;
    assert_eq!(reply.status, 503, "routed before its check passed");
    // The pass routes it within a second.
    let passed = Instant::now();
    run_python(
        "py-consul",
        admin,
        r#"
c.agent.check.ttl_pass("service:api-1")
"#,
    );
    assert!(
        within(Duration::from_secs(1), || async {
            routed_to(&proxy).await.as_deref() == Some("a")
        })
        .await
        .is_some(),
        "not routed within 1 s of the pass"
    );
    assert!(passed.elapsed() < Duration::from_secs(3));
    // No more passes: dropped once the 2 s TTL runs out.
    assert!(
        within(Duration::from_secs(5), || async { servers(&proxy) == 0 })
            .await
            .is_some(),
        "still routed after its TTL ran out"
    );

    // An HTTP check run by usherd; then a clean deregistration.
    run_python(
        "py-consul",
        admin,
        &format!(
            r#"
c.agent.service.register("api", service_id="api-2", address="127.0.0.1", port={port},
                         check=consul.Check.http("http://127.0.0.1:{port}/healthz", interval="1s"))
"#,
            port = b.addr.port()
        ),
    );
    assert!(
        within(Duration::from_secs(5), || async {
            routed_to(&proxy).await.as_deref() == Some("b")
        })
        .await
        .is_some(),
        "the HTTP check did not pass"
    );
    let health = run_python(
        "py-consul",
        admin,
        r#"
import json
index, nodes = c.health.service("api", passing=True)
print(json.dumps([n["Service"]["ID"] for n in nodes]))
"#,
    );
    assert_eq!(health.trim(), r#"["api-2"]"#);
    run_python(
        "py-consul",
        admin,
        r#"
c.agent.service.deregister("api-2")
"#,
    );
    assert!(
        within(Duration::from_secs(2), || async { servers(&proxy) == 0 })
            .await
            .is_some()
    );
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_query_wakes_on_a_change_and_not_on_a_pass_that_changes_nothing() {
    let a = echo_backend("a").await;
    let proxy = support::start_proxy(&config("")).await;
    let admin = proxy.admin_addr().unwrap();
    let port = a.addr.port();
    // py-consul waits on the index while another thread changes things.
    let out = run_python(
        "py-consul",
        admin,
        &format!(
            r#"
import threading, time, json
c.agent.service.register("api", service_id="api-1", address="127.0.0.1", port={port},
                         check=consul.Check.ttl("30s"))
c.agent.check.ttl_pass("service:api-1")
index, _ = c.health.service("api")
# A pass that changes nothing does not wake the waiter: it waits its 2 s.
threading.Timer(0.3, lambda: c.agent.check.ttl_pass("service:api-1")).start()
start = time.time()
same, _ = c.health.service("api", index=index, wait="2s")
unchanged = time.time() - start
# A new instance does wake it, at once.
threading.Timer(0.3, lambda: c.agent.service.register("api", service_id="api-2", address="127.0.0.1", port={port})).start()
start = time.time()
moved, nodes = c.health.service("api", index=index, wait="10s")
changed = time.time() - start
print(json.dumps({{"unchanged": unchanged, "changed": changed, "same": same == index, "moved": int(moved) > int(index), "count": len(nodes)}}))
"#
        ),
    );
    let result: Value = serde_json::from_str(out.trim()).unwrap();
    assert!(result["unchanged"].as_f64().unwrap() >= 1.9, "{result}");
    assert_eq!(result["same"], true, "{result}");
    assert!(result["changed"].as_f64().unwrap() < 5.0, "{result}");
    assert_eq!(result["moved"], true, "{result}");
    assert_eq!(result["count"], 2, "{result}");
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_consul2_registers_passes_and_deregisters() {
    let a = echo_backend("a").await;
    let proxy = support::start_proxy(&config("")).await;
    let admin = proxy.admin_addr().unwrap();
    run_python(
        "python-consul2",
        admin,
        &format!(
            r#"
c.agent.service.register("api", service_id="api-7", address="127.0.0.1", port={port},
                         check=consul.Check.ttl("10s"))
c.agent.check.ttl_pass("service:api-7")
"#,
            port = a.addr.port()
        ),
    );
    assert!(within(Duration::from_secs(2), || async {
        routed_to(&proxy).await.as_deref() == Some("a")
    })
    .await
    .is_some());
    run_python(
        "python-consul2",
        admin,
        r#"
c.agent.service.deregister("api-7")
"#,
    );
    assert!(
        within(Duration::from_secs(2), || async { servers(&proxy) == 0 })
            .await
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_go_and_spring_clients_json_register_alike() {
    let a = echo_backend("a").await;
    let b = echo_backend("b").await;
    let proxy = support::start_proxy(&config("")).await;
    let admin = proxy.admin_addr().unwrap();
    // What github.com/hashicorp/consul/api encodes for
    // AgentServiceRegistration{ID, Name, Tags, Address, Port, Check}: every
    // field of the struct, `null` for the unset pointers and slices.
    let go = json!({
        "Kind": "", "ID": "api-go", "Name": "api", "Tags": ["go"], "Port": a.addr.port(),
        "Address": "127.0.0.1", "TaggedAddresses": null, "EnableTagOverride": false,
        "Meta": null, "Weights": null,
        "Check": {"CheckID": "", "Name": "", "Args": null, "DockerContainerID": "", "Shell": "",
                  "Interval": "", "Timeout": "", "TTL": "15s", "HTTP": "", "Header": null,
                  "Method": "", "Body": "", "TCP": "", "Status": "passing", "Notes": "",
                  "TLSServerName": "", "TLSSkipVerify": false, "GRPC": "", "GRPCUseTLS": false,
                  "AliasNode": "", "AliasService": "", "SuccessBeforePassing": 0,
                  "FailuresBeforeCritical": 0, "DeregisterCriticalServiceAfter": "1m"},
        "Checks": null, "Proxy": null, "Connect": null, "Namespace": ""
    });
    // What Spring Cloud Consul (NewService, Jackson, nulls left out) sends.
    let spring = json!({
        "ID": "api-spring-8080", "Name": "api", "Tags": ["secure=false"],
        "Address": "127.0.0.1", "Meta": {"zone": "a"}, "Port": b.addr.port(),
        "Check": {"Interval": "10s", "HTTP": format!("http://127.0.0.1:{}/healthz", b.addr.port()),
                  "Header": {}, "Timeout": "5s", "DeregisterCriticalServiceAfter": "30s"}
    });
    for body in [&go, &spring] {
        let reply = call(
            admin,
            Method::PUT,
            "/v1/agent/service/register",
            &body.to_string(),
            None,
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    // Both routed: the Go one passing from the start, Spring's once usherd's
    // HTTP check of it passed (its first run is at once).
    let mut seen = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while seen.len() < 2 && Instant::now() < deadline {
        if let Some(name) = routed_to(&proxy).await {
            seen.insert(name);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen.len(), 2, "saw only {seen:?}");
    let services = call(admin, Method::GET, "/v1/agent/services", "", None)
        .await
        .json();
    assert_eq!(services["api-go"]["Service"], "api");
    assert_eq!(services["api-spring-8080"]["Meta"]["zone"], "a");
    let checks = call(admin, Method::GET, "/v1/agent/checks", "", None)
        .await
        .json();
    assert_eq!(checks["service:api-go"]["Status"], "passing");
    let catalog = call(admin, Method::GET, "/v1/catalog/service/api", "", None).await;
    assert!(catalog.header("x-consul-index").is_some());
    assert_eq!(catalog.json().as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_registrations_are_400_and_change_nothing() {
    let proxy = support::start_proxy(&config("")).await;
    let admin = proxy.admin_addr().unwrap();
    let cases: [(&str, &str); 16] = [
        ("not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        (r#"{"Port": 80}"#, "Name: missing"),
        (r#"{"Name": "", "Port": 80}"#, "Name: missing"),
        (r#"{"Name": 7, "Port": 80}"#, "Name: expected a string"),
        (r#"{"Name": "api"}"#, "Port: missing"),
        (
            r#"{"Name": "api", "Port": 0}"#,
            "Port: 0 is not from 1 to 65535",
        ),
        (
            r#"{"Name": "api", "Port": 70000}"#,
            "Port: 70000 is not from 1 to 65535",
        ),
        (
            r#"{"Name": "api", "Port": "80"}"#,
            "Port: expected a number",
        ),
        (
            r#"{"Name": "api", "Port": 80, "Tags": "web"}"#,
            "Tags: expected an array",
        ),
        (
            r#"{"Name": "api", "Port": 80, "Meta": {"a": 1}}"#,
            "Meta.a: expected a string",
        ),
        (
            r#"{"Name": "api", "Port": 80, "Check": {"TTL": "ten"}}"#,
            "Check.TTL: `ten` is not a duration",
        ),
        (
            r#"{"Name": "api", "Port": 80, "Check": {"HTTP": "http://x/"}}"#,
            "needs an Interval",
        ),
        (
            r#"{"Name": "api", "Port": 80, "Check": {"Script": "true"}}"#,
            "a check needs TTL, HTTP or TCP",
        ),
        (
            r#"{"Name": "api", "Port": 80, "Check": {"TTL": "5s", "Status": "fine"}}"#,
            "is not passing, warning or critical",
        ),
        (
            r#"{"Name": "api", "Port": 80, "Address": "not an address!"}"#,
            "neither an IP address nor a host name",
        ),
    ];
    for (body, expected) in cases {
        let reply = call(admin, Method::PUT, "/v1/agent/service/register", body, None).await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.text());
        let message = reply.json()["error"].as_str().unwrap_or("").to_string();
        assert!(message.contains(expected), "{body}: {message}");
    }
    let services = call(admin, Method::GET, "/v1/agent/services", "", None)
        .await
        .json();
    assert_eq!(services, json!({}), "a refused registration left something");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_refused_addresses() {
    let backend = echo_backend("a").await;
    let proxy = support::start_proxy(&config(
        r#"write_tokens = ["write-secret-1"]
read_tokens = ["read-secret-1"]
allow_addresses = ["127.0.0.0/8"]"#,
    ))
    .await;
    let admin = proxy.admin_addr().unwrap();
    let body =
        json!({"Name": "api", "ID": "api-1", "Address": "127.0.0.1", "Port": backend.addr.port()})
            .to_string();
    let register = "/v1/agent/service/register";
    for token in [None, Some("wrong-token"), Some("read-secret-1")] {
        let reply = call(admin, Method::PUT, register, &body, token).await;
        assert_eq!(reply.status, 403, "{token:?}: {}", reply.text());
    }
    assert_eq!(
        call(admin, Method::GET, "/v1/agent/services", "", None)
            .await
            .status,
        403
    );
    assert_eq!(
        call(admin, Method::PUT, register, &body, Some("write-secret-1"))
            .await
            .status,
        200
    );
    let read = call(
        admin,
        Method::GET,
        "/v1/agent/services",
        "",
        Some("read-secret-1"),
    )
    .await;
    assert_eq!(read.status, 200);
    assert!(read.json()["api-1"].is_object());
    // Addresses the gateway must not be pointed at.
    for (address, port) in [
        ("169.254.169.254", 80),
        ("10.0.0.5", 80),
        ("0.0.0.0", 80),
        ("127.0.0.1", admin.port()),
    ] {
        let body =
            json!({"Name": "api", "ID": "evil", "Address": address, "Port": port}).to_string();
        let reply = call(admin, Method::PUT, register, &body, Some("write-secret-1")).await;
        assert_eq!(reply.status, 403, "{address}:{port}: {}", reply.text());
    }
    let services = call(
        admin,
        Method::GET,
        "/v1/agent/services",
        "",
        Some("write-secret-1"),
    )
    .await
    .json();
    assert!(services.get("evil").is_none());
}

/// A registration of `id` at `backend` with a passing TTL check.
fn passing(id: &str, backend: &Backend, ttl: &str) -> String {
    json!({"Name": "api", "ID": id, "Address": "127.0.0.1", "Port": backend.addr.port(),
           "Check": {"TTL": ttl, "Status": "passing"}})
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_survive_a_restart_and_a_sigkill_mid_churn() {
    let a = echo_backend("a").await;
    let b = echo_backend("b").await;
    let toml = config(r#"state_file = "registry.json""#);
    let (first, path) = support::spawn_binary_with(&toml, 2, "info", &[]);
    let admin = first.addr("[admin]");
    let register = "/v1/agent/service/register";
    assert_eq!(
        call(
            admin,
            Method::PUT,
            register,
            &passing("api-a", &a, "1h"),
            None
        )
        .await
        .status,
        200
    );
    // A short TTL that will have run out when the proxy is back.
    assert_eq!(
        call(
            admin,
            Method::PUT,
            register,
            &passing("api-b", &b, "1s"),
            None
        )
        .await
        .status,
        200
    );
    let state_file = path.directory().join("registry.json");
    assert!(
        within(Duration::from_secs(5), || async {
            std::fs::read_to_string(&state_file).is_ok_and(|text| text.contains("api-b"))
        })
        .await
        .is_some(),
        "the state file was not written"
    );
    drop(first); // SIGKILL (ProxyProcess kills on drop)
    tokio::time::sleep(Duration::from_millis(1100)).await; // api-b's TTL runs out while down
    let second = support::spawn_binary_at(path.as_path(), 2, "info", &[]);
    let admin = second.addr("[admin]");
    let checks = call(admin, Method::GET, "/v1/agent/checks", "", None)
        .await
        .json();
    assert_eq!(checks["service:api-a"]["Status"], "passing", "{checks}");
    assert_eq!(checks["service:api-b"]["Status"], "critical", "{checks}");
    let web = second.addr("web");
    assert!(within(Duration::from_secs(3), || async {
        get(&format!("http://{web}/"), None)
            .await
            .header("x-backend")
            == Some("a")
    })
    .await
    .is_some());

    // Churn, then SIGKILL at a random moment: the file always loads.
    let churn = tokio::spawn(async move {
        for n in 0..200 {
            let id = format!("churn-{}", n % 20);
            let body =
                json!({"Name": "churn", "ID": id, "Address": "127.0.0.1", "Port": 10_000 + n})
                    .to_string();
            if call(admin, Method::PUT, register, &body, None).await.status != 200 {
                return;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(second);
    churn.await.ok();
    let third = support::spawn_binary_at(path.as_path(), 2, "info", &[]);
    let admin = third.addr("[admin]");
    let services = call(admin, Method::GET, "/v1/agent/services", "", None)
        .await
        .json();
    assert!(services["api-a"].is_object(), "{services}");
    third.wait_for_log("registry: state restored", Duration::from_secs(5));
    let broken = third
        .stderr_tail
        .lock()
        .unwrap()
        .iter()
        .any(|line| line.contains("cannot be read"));
    assert!(!broken, "the state file was broken by the kill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demo_backend_registers_itself_and_leaves_on_sigterm() {
    let proxy = support::start_proxy(&config("")).await;
    let admin = proxy.admin_addr().unwrap();
    let port = support::closed_port().await.port();
    let mut backend = Command::new(env!("CARGO_BIN_EXE_usherd"))
        .args(["demo-backend", "--name", "self-registered", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--register")
        .arg(format!("http://{admin}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let routed = within(Duration::from_secs(10), || async {
        routed_to(&proxy).await.as_deref() == Some("self-registered")
    })
    .await;
    let pid = backend.id().to_string();
    if routed.is_none() {
        backend.kill().ok();
        backend.wait().ok();
        panic!("the demo backend was not routed to after registering");
    }
    let checks = call(admin, Method::GET, "/v1/agent/checks", "", None)
        .await
        .json();
    assert_eq!(
        checks["service:self-registered"]["Status"], "passing",
        "{checks}"
    );
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let left = within(Duration::from_secs(10), || async { servers(&proxy) == 0 }).await;
    let status = backend.wait().unwrap();
    assert!(left.is_some(), "still registered after SIGTERM");
    assert!(status.success(), "{status:?}");
}
