//! The admin API: `GET /status` in the shape docs/operations.md#the-admin-api
//! gives, with live counters, and the token rule.

mod support;

use http::Request;
use http_body_util::{BodyExt, Empty};

use support::{client, echo_backend, get, send, start_proxy, url};

#[tokio::test]
async fn status_has_the_spec_shape_and_counts_requests() {
    let a = echo_backend("a").await;
    let b = echo_backend("b").await;
    let proxy = start_proxy(&format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[listeners.web]
listen = "127.0.0.1:0"
[vhosts.all]
hosts = ["*"]
routes = [{{ path = "/", upstream = "pool" }}]
[upstreams.pool]
strategy = "weighted"
servers = [{{ addr = "{}", weight = 3 }}, {{ addr = "{}", weight = 1 }}]
"#,
        a.addr, b.addr
    ))
    .await;
    for _ in 0..8 {
        assert_eq!(get(&url(&proxy, "/"), None).await.status, 200);
    }
    let admin = proxy.admin_addr().unwrap();
    let reply = get(&format!("http://{admin}/status"), None).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let status = reply.json();
    for key in [
        "version",
        "generation",
        "config_path",
        "started_at",
        "last_reload",
        "listeners",
        "upstreams",
    ] {
        assert!(status.get(key).is_some(), "missing {key}: {status}");
    }
    assert_eq!(status["generation"], 1);
    assert_eq!(status["last_reload"]["ok"], true);
    assert_eq!(status["listeners"][0]["name"], "web");
    assert_eq!(
        status["listeners"][0]["listen"],
        proxy.listeners()[0].addr.to_string()
    );
    let pool = &status["upstreams"]["pool"];
    assert_eq!(pool["strategy"], "weighted");
    let servers = pool["servers"].as_array().unwrap();
    assert_eq!(servers[0]["addr"], a.addr.to_string());
    assert_eq!(servers[0]["weight"], 3);
    assert_eq!(servers[0]["requests"], 6);
    assert_eq!(servers[1]["requests"], 2);
    for server in servers {
        assert_eq!(server["in_flight"], 0);
        assert_eq!(server["failures"], 0);
        assert_eq!(server["healthy"], true);
        assert_eq!(server["draining"], false);
    }
    let missing = get(&format!("http://{admin}/nope"), None).await;
    assert_eq!(missing.status, 404);
    assert!(missing.json()["error"].is_string());
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_token_is_required_when_set() {
    let a = echo_backend("a").await;
    let proxy = start_proxy(&format!(
        r#"
[admin]
listen = "127.0.0.1:0"
token = "s3cret"
[listeners.web]
listen = "127.0.0.1:0"
[vhosts.all]
hosts = ["*"]
routes = [{{ path = "/", upstream = "pool" }}]
[upstreams.pool]
servers = [{{ addr = "{}" }}]
"#,
        a.addr
    ))
    .await;
    let status_url = format!("http://{}/status", proxy.admin_addr().unwrap());
    assert_eq!(get(&status_url, None).await.status, 401);
    for token in ["Bearer wrong", "s3cret", "Bearer s3cre", "Bearer s3cret2"] {
        let request = Request::get(&status_url)
            .header("authorization", token)
            .body(Empty::new().map_err(|never| match never {}).boxed())
            .unwrap();
        assert_eq!(send(&client(), request).await.status, 401, "{token}");
    }
    let request = Request::get(&status_url)
        .header("authorization", "Bearer s3cret")
        .body(Empty::new().map_err(|never| match never {}).boxed())
        .unwrap();
    assert_eq!(send(&client(), request).await.status, 200);
    proxy.shutdown().await;
}
