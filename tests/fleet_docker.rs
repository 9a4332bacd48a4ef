//! The fleet as separate hosts: a three-member etcd cluster (Debian's etcd
//! binary in a local image) and three usherd containers (the image built
//! around this build's binary), each with its own address. The usherd
//! containers are on two networks: `store` (with etcd) and `front` (with the
//! demo backends, and where the test reaches them), so cutting one off the
//! store with `docker network disconnect` is a real partition while the test
//! still sees it. Everything the test starts is removed by its own id.

mod support;

use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use support::compose::{base_image, build_image, must, output, require_docker};
use usherd::etcd::Etcd;

const KEY: &str = "/usherd/config";
const ADMIN_TOKEN: &str = "fleet-docker-token";

/// Containers, networks and images of one run, removed when dropped.
struct Lab {
    tag: String,
    containers: Vec<String>,
    networks: Vec<String>,
    images: Vec<String>,
}

impl Lab {
    fn new() -> Lab {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        Lab {
            tag: format!("usherd-fleet-{}-{}", std::process::id(), nanos % 1_000_000),
            containers: Vec::new(),
            networks: Vec::new(),
            images: Vec::new(),
        }
    }

    fn name(&self, what: &str) -> String {
        format!("{}-{what}", self.tag)
    }

    fn network(&mut self, what: &str) -> String {
        let name = self.name(what);
        let id = must("docker", &["network", "create", &name], &[])
            .trim()
            .to_string();
        self.networks.push(id);
        name
    }

    /// Starts a container named `what` on `network` (and `also`, if any).
    fn run(
        &mut self,
        what: &str,
        image: &str,
        network: &str,
        also: Option<&str>,
        args: &[&str],
    ) -> String {
        let name = self.name(what);
        let mut command = vec![
            "run",
            "-d",
            "--name",
            &name,
            "--hostname",
            what,
            "--network",
            network,
        ];
        command.push("--network-alias");
        command.push(what);
        command.push(image);
        command.extend_from_slice(args);
        let id = must("docker", &command, &[]).trim().to_string();
        self.containers.push(id);
        if let Some(other) = also {
            must(
                "docker",
                &["network", "connect", "--alias", what, other, &name],
                &[],
            );
        }
        name
    }

    /// The container's address on `network`.
    fn address(&self, container: &str, network: &str) -> IpAddr {
        let format = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
        must("docker", &["inspect", "--format", &format, container], &[])
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{container} has no address on {network}"))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for id in &self.containers {
            output("docker", &["rm", "-f", id], &[]);
        }
        for id in &self.networks {
            output("docker", &["network", "rm", id], &[]);
        }
        for image in &self.images {
            output("docker", &["image", "rm", "-f", image], &[]);
        }
    }
}

/// An image holding this machine's etcd binary.
fn build_etcd_image(image: &str) {
    let context = std::env::temp_dir().join(format!("usherd-etcd-image-{}", std::process::id()));
    std::fs::create_dir_all(&context).unwrap();
    std::fs::copy("/usr/bin/etcd", context.join("etcd")).expect("etcd is installed (tests/run.sh)");
    std::fs::write(
        context.join("Dockerfile"),
        "FROM debian:bookworm-slim\nCOPY etcd /usr/local/bin/etcd\nENTRYPOINT [\"etcd\"]\n",
    )
    .unwrap();
    let built = output(
        "docker",
        &[
            "build",
            "--quiet",
            "--tag",
            image,
            context.to_str().unwrap(),
        ],
        &[("DOCKER_BUILDKIT", "0")],
    );
    std::fs::remove_dir_all(&context).ok();
    assert!(
        built.status.success(),
        "docker build failed:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
}

/// The fleet's config: `/` to `backends` with `strategy`; `/registered`
/// to what registers as `svc` in the registry the fleet keeps in etcd.
fn config(backends: &[&str], strategy: &str) -> String {
    let servers: Vec<String> = backends
        .iter()
        .map(|b| format!("{{ addr = \"{b}:8080\" }}"))
        .collect();
    format!(
        r#"
[admin]
listen = "0.0.0.0:9901"
token = "{ADMIN_TOKEN}"
[registry]
etcd = ["http://e1:2379", "http://e2:2379", "http://e3:2379"]
[listeners.web]
listen = "0.0.0.0:8080"
[vhosts.all]
hosts = ["*"]
routes = [{{ path = "/registered", upstream = "svc" }}, {{ path = "/", upstream = "api" }}]
[upstreams.api]
strategy = "{strategy}"
retries = 0
servers = [{}]
[upstreams.svc]
retries = 0
[upstreams.svc.discovery]
source = "registry"
service = "svc"
"#,
        servers.join(", ")
    )
}

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Empty<bytes::Bytes>,
>;

fn client() -> Client {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// GETs `url` within 3 s: the status and body, or `None`.
async fn fetch(client: &Client, url: &str, token: bool) -> Option<(u16, String)> {
    use http_body_util::BodyExt;
    let mut request = http::Request::get(url);
    if token {
        request = request.header("authorization", format!("Bearer {ADMIN_TOKEN}"));
    }
    let request = request.body(http_body_util::Empty::new()).unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(3), async {
        let response = client.request(request).await.ok()?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.ok()?.to_bytes();
        Some((status, String::from_utf8_lossy(&body).into_owned()))
    })
    .await;
    answer.ok().flatten()
}

struct Instance {
    name: String,
    front: IpAddr,
}

impl Instance {
    async fn status(&self, client: &Client) -> Value {
        match fetch(client, &format!("http://{}:9901/status", self.front), true).await {
            Some((200, body)) => serde_json::from_str(&body).unwrap_or(Value::Null),
            _ => Value::Null,
        }
    }

    /// The demo backend that answers `path`, or `None`.
    async fn backend(&self, client: &Client, path: &str) -> Option<String> {
        let (status, body) =
            fetch(client, &format!("http://{}:8080{path}", self.front), false).await?;
        // demo-backend answers "hello from NAME at ADDRESS (GET /)".
        (status == 200).then(|| body.split_whitespace().nth(2).unwrap_or("").to_string())
    }
}

async fn until(limit: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn all_on(client: &Client, instances: &[&Instance], revision: i64) -> bool {
    for instance in instances {
        if instance.status(client).await["fleet"]["revision"] != revision {
            return false;
        }
    }
    true
}

async fn all_route_to(client: &Client, instances: &[&Instance], backend: &str) -> bool {
    for instance in instances {
        if instance.backend(client, "/").await.as_deref() != Some(backend) {
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_on_separate_hosts_through_member_loss_partition_and_rolling_restart() {
    require_docker();
    base_image();
    let mut lab = Lab::new();
    let usherd_image = format!("{}:latest", lab.name("usherd"));
    build_image(&usherd_image);
    lab.images.push(usherd_image.clone());
    let etcd_image = format!("{}:latest", lab.name("etcd"));
    build_etcd_image(&etcd_image);
    lab.images.push(etcd_image.clone());
    let store = lab.network("store");
    let front = lab.network("front");

    // Three etcd members, each its own host on the store network.
    let cluster = "e1=http://e1:2380,e2=http://e2:2380,e3=http://e3:2380";
    let mut members = Vec::new();
    for member in ["e1", "e2", "e3"] {
        let (peer, client_url) = (
            format!("http://{member}:2380"),
            format!("http://{member}:2379"),
        );
        let args = [
            "--name",
            member,
            "--data-dir",
            "/tmp/etcd",
            "--listen-client-urls",
            "http://0.0.0.0:2379",
            "--advertise-client-urls",
            &client_url,
            "--listen-peer-urls",
            "http://0.0.0.0:2380",
            "--initial-advertise-peer-urls",
            &peer,
            "--initial-cluster",
            cluster,
            "--initial-cluster-state",
            "new",
            "--heartbeat-interval",
            "50",
            "--election-timeout",
            "500",
        ];
        members.push(lab.run(member, &etcd_image, &store, None, &args));
    }
    let endpoints: Vec<String> = members
        .iter()
        .map(|m| format!("http://{}:2379", lab.address(m, &store)))
        .collect();
    let etcd = Etcd::new(endpoints, Duration::from_secs(2));
    let mut put_first = None;
    until(Duration::from_secs(60), "etcd takes a put", async || {
        put_first = etcd
            .put(KEY, config(&["a"], "round_robin").as_bytes(), 0)
            .await
            .ok();
        put_first.is_some()
    })
    .await;

    // Demo backends on the front network.
    for name in ["a", "b", "c"] {
        lab.run(
            name,
            &usherd_image,
            &front,
            None,
            &["demo-backend", "--listen", "0.0.0.0:8080", "--name", name],
        );
    }
    // Three usherd hosts on both networks.
    let url = format!("etcd://e1:2379,e2:2379,e3:2379{KEY}");
    let mut instances = Vec::new();
    for name in ["u1", "u2", "u3"] {
        let container = lab.run(
            name,
            &usherd_image,
            &store,
            Some(&front),
            &["run", "--config", &url, "--name", name],
        );
        instances.push(Instance {
            front: lab.address(&container, &front),
            name: container,
        });
    }
    let client = client();
    let all: Vec<&Instance> = instances.iter().collect();
    until(
        Duration::from_secs(60),
        "all three route to a",
        async || all_route_to(&client, &all, "a").await,
    )
    .await;

    // A registration through u1 is routed by u3 (the registry kept in etcd).
    let registration = format!(
        r#"{{"ID": "svc-c", "Name": "svc", "Address": "{}", "Port": 8080}}"#,
        lab.address(&lab.name("c"), &front)
    );
    let request = http::Request::put(format!(
        "http://{}:9901/v1/agent/service/register",
        instances[0].front
    ))
    .body(http_body_util::Full::new(bytes::Bytes::from(registration)))
    .unwrap();
    let registered =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http()
            .request(request)
            .await
            .unwrap();
    assert_eq!(registered.status(), 200);
    until(
        Duration::from_secs(15),
        "u3 routes the registration made through u1",
        async || {
            instances[2]
                .backend(&client, "/registered")
                .await
                .as_deref()
                == Some("c")
        },
    )
    .await;

    // A put goes live on all three.
    let second = etcd
        .put(KEY, config(&["b"], "round_robin").as_bytes(), 0)
        .await
        .unwrap();
    until(
        Duration::from_secs(15),
        "all on the second revision",
        async || all_on(&client, &all, second).await,
    )
    .await;
    assert!(all_route_to(&client, &all, "b").await);

    // The same 1,000 keys give the same consistent_hash server on all three.
    let hashing = etcd
        .put(
            KEY,
            config(&["a", "b", "c"], "consistent_hash").as_bytes(),
            0,
        )
        .await
        .unwrap();
    until(
        Duration::from_secs(15),
        "all on the hashing config",
        async || all_on(&client, &all, hashing).await,
    )
    .await;
    for key in 0..1000 {
        let path = format!("/item/{key}");
        let mut seen = Vec::new();
        for instance in &instances {
            seen.push(instance.backend(&client, &path).await);
        }
        assert!(
            seen[0].is_some() && seen.iter().all(|s| s == &seen[0]),
            "key {key}: {seen:?}"
        );
    }

    // A bad put is refused by all; the old config keeps serving.
    let bad = etcd
        .put(KEY, b"[listeners.web]\nlisten = \"nowhere\"\n", 0)
        .await
        .unwrap();
    until(
        Duration::from_secs(15),
        "all refusing the bad put",
        async || {
            let mut refused = true;
            for instance in &instances {
                refused &= instance.status(&client).await["fleet"]["refused_revision"] == bad;
            }
            refused
        },
    )
    .await;
    let plain = etcd
        .put(KEY, config(&["b"], "round_robin").as_bytes(), 0)
        .await
        .unwrap();
    until(Duration::from_secs(15), "all on b again", async || {
        all_on(&client, &all, plain).await
    })
    .await;

    // One etcd member killed: nothing changes.
    must("docker", &["kill", &members[0]], &[]);
    let third = etcd
        .put(KEY, config(&["c"], "round_robin").as_bytes(), 0)
        .await
        .unwrap();
    until(
        Duration::from_secs(20),
        "all on the third revision",
        async || all_on(&client, &all, third).await,
    )
    .await;
    assert!(all_route_to(&client, &all, "c").await);

    // Every member killed: every instance keeps serving its last config, stale.
    must("docker", &["kill", &members[1], &members[2]], &[]);
    until(Duration::from_secs(40), "all stale", async || {
        let mut stale = true;
        for instance in &instances {
            stale &= instance.status(&client).await["fleet"]["state"] == "stale";
        }
        stale
    })
    .await;
    assert!(all_route_to(&client, &all, "c").await);

    // Members back: the fleet resyncs.
    must(
        "docker",
        &["start", &members[0], &members[1], &members[2]],
        &[],
    );
    until(Duration::from_secs(60), "all ok again", async || {
        let mut ok = true;
        for instance in &instances {
            ok &= instance.status(&client).await["fleet"]["state"] == "ok";
        }
        ok
    })
    .await;

    // u2 cut off from the store: it keeps serving its last config, stale;
    // the others follow a put; healed, u2 catches up.
    must(
        "docker",
        &["network", "disconnect", &store, &instances[1].name],
        &[],
    );
    until(Duration::from_secs(40), "u2 stale", async || {
        instances[1].status(&client).await["fleet"]["state"] == "stale"
    })
    .await;
    let fourth = etcd
        .put(KEY, config(&["a"], "round_robin").as_bytes(), 0)
        .await
        .unwrap();
    let others = [&instances[0], &instances[2]];
    until(
        Duration::from_secs(20),
        "u1 and u3 on the fourth revision",
        async || all_on(&client, &others, fourth).await,
    )
    .await;
    assert_eq!(
        instances[1].backend(&client, "/").await.as_deref(),
        Some("c")
    );
    must(
        "docker",
        &[
            "network",
            "connect",
            "--alias",
            "u2",
            &store,
            &instances[1].name,
        ],
        &[],
    );
    until(Duration::from_secs(60), "u2 caught up", async || {
        all_on(&client, &all, fourth).await
    })
    .await;
    assert!(all_route_to(&client, &all, "a").await);

    // A rolling restart behind a client that retries on another instance:
    // no request fails.
    let traffic_client = client.clone();
    let fronts: Vec<IpAddr> = instances.iter().map(|i| i.front).collect();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let traffic = tokio::spawn(async move {
        let (mut sent, mut failed) = (0u64, 0u64);
        let mut next = 0;
        while !*stopped.borrow() && sent < 100_000 {
            let mut answered = false;
            for attempt in 0..fronts.len() {
                let front = fronts[(next + attempt) % fronts.len()];
                if let Some((200, _)) =
                    fetch(&traffic_client, &format!("http://{front}:8080/"), false).await
                {
                    answered = true;
                    break;
                }
            }
            next += 1;
            sent += 1;
            failed += u64::from(!answered);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (sent, failed)
    });
    for instance in &instances {
        must("docker", &["restart", "--time", "10", &instance.name], &[]);
        // Its address may change with the restart.
        let restarted = Instance {
            name: instance.name.clone(),
            front: lab.address(&instance.name, &front),
        };
        until(
            Duration::from_secs(60),
            "the restarted instance serves",
            async || restarted.backend(&client, "/").await.as_deref() == Some("a"),
        )
        .await;
    }
    stop.send_replace(true);
    let (sent, failed) = traffic.await.unwrap();
    assert!(sent > 0);
    assert_eq!(
        failed, 0,
        "{failed} of {sent} requests failed on every instance during the rolling restart"
    );
}
