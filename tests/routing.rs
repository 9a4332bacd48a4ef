//! Routing end to end: vhost by Host (exact, `*.suffix`, `*`), route by the
//! longest path prefix, strip_prefix, and 404 when nothing matches.

mod support;

use support::{echo_backend, get, start_proxy, url};

#[tokio::test]
async fn hosts_and_paths_pick_the_right_pool() {
    let shop = echo_backend("shop").await;
    let api = echo_backend("api").await;
    let wild = echo_backend("wild").await;
    let fallback = echo_backend("fallback").await;
    let proxy = start_proxy(&format!(
        r#"
[listeners.web]
listen = "127.0.0.1:0"

[vhosts.shop]
hosts = ["shop.example.com"]
routes = [
  {{ path = "/", upstream = "shop" }},
  {{ path = "/api/", upstream = "api", strip_prefix = true }},
  {{ path = "/api/raw/", upstream = "api" }},
]

[vhosts.wild]
hosts = ["*.shop.example.com"]
routes = [{{ path = "/", upstream = "wild" }}]

[vhosts.fallback]
hosts = ["*"]
routes = [{{ path = "/static/", upstream = "fallback" }}]

[upstreams.shop]
servers = [{{ addr = "{}" }}]
[upstreams.api]
servers = [{{ addr = "{}" }}]
[upstreams.wild]
servers = [{{ addr = "{}" }}]
[upstreams.fallback]
servers = [{{ addr = "{}" }}]
"#,
        shop.addr, api.addr, wild.addr, fallback.addr
    ))
    .await;

    let cases = [
        ("shop.example.com", "/", "shop", "/"),
        ("SHOP.example.com:8080", "/cart", "shop", "/cart"),
        ("shop.example.com", "/api/users?id=7", "api", "/users?id=7"),
        ("shop.example.com", "/api/raw/x", "api", "/api/raw/x"),
        ("shop.example.com", "/apix", "shop", "/apix"),
        ("eu.shop.example.com", "/", "wild", "/"),
        ("a.b.shop.example.com", "/x", "wild", "/x"),
        (
            "other.org",
            "/static/app.css",
            "fallback",
            "/static/app.css",
        ),
    ];
    for (host, path, backend, upstream_path) in cases {
        let reply = get(&url(&proxy, path), Some(host)).await;
        assert_eq!(reply.status, 200, "{host}{path}: {}", reply.text());
        let echo = reply.json();
        assert_eq!(echo["backend"], backend, "{host}{path}");
        assert_eq!(echo["path"], upstream_path, "{host}{path}");
    }

    // A host only the default vhost takes, on a path it has no route for.
    let reply = get(&url(&proxy, "/nothing"), Some("other.org")).await;
    assert_eq!(reply.status, 404);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert!(reply.text().starts_with("404"));
    proxy.shutdown().await;
}

#[tokio::test]
async fn no_default_vhost_means_404_for_unknown_hosts() {
    let shop = echo_backend("shop").await;
    let proxy = start_proxy(&format!(
        r#"
[listeners.web]
listen = "127.0.0.1:0"
[vhosts.shop]
hosts = ["shop.example.com"]
routes = [{{ path = "/", upstream = "shop" }}]
[upstreams.shop]
servers = [{{ addr = "{}" }}]
"#,
        shop.addr
    ))
    .await;
    assert_eq!(
        get(&url(&proxy, "/"), Some("shop.example.com"))
            .await
            .status,
        200
    );
    assert_eq!(
        get(&url(&proxy, "/"), Some("evil.example.com"))
            .await
            .status,
        404
    );
    assert_eq!(shop.requests(), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn vhosts_are_served_only_on_their_listeners() {
    let internal = echo_backend("internal").await;
    let public = echo_backend("public").await;
    let proxy = start_proxy(&format!(
        r#"
[listeners.public]
listen = "127.0.0.1:0"
[listeners.internal]
listen = "127.0.0.1:0"
[vhosts.public]
hosts = ["*"]
listeners = ["public"]
routes = [{{ path = "/", upstream = "public" }}]
[vhosts.internal]
hosts = ["*"]
listeners = ["internal"]
routes = [{{ path = "/", upstream = "internal" }}]
[upstreams.public]
servers = [{{ addr = "{}" }}]
[upstreams.internal]
servers = [{{ addr = "{}" }}]
"#,
        public.addr, internal.addr
    ))
    .await;
    let public_url = format!("http://{}/", proxy.listener_addr("public").unwrap());
    let internal_url = format!("http://{}/", proxy.listener_addr("internal").unwrap());
    assert_eq!(get(&public_url, None).await.json()["backend"], "public");
    assert_eq!(get(&internal_url, None).await.json()["backend"], "internal");
    proxy.shutdown().await;
}
