//! The Compose examples (examples/compose) run for real: the image built
//! from the Dockerfile around this build's binary, a Compose project of its
//! own, clients through the published loopback ports, and everything removed
//! by the project's name when the test ends, also when it fails. Shared by
//! tests/compose.rs (replicas found by DNS) and tests/compose_registry.rs
//! (replicas that register with usherd's registry).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// The example's admin token.
pub const ADMIN_TOKEN: &str = "compose-example";
/// Requests each traffic client sends at most, and for how long.
pub const REQUESTS_PER_CLIENT: usize = 200_000;
pub const TRAFFIC_LIMIT: Duration = Duration::from_secs(180);
pub const TRAFFIC_CLIENTS: usize = 3;

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a command to its end; its output, whatever the exit status.
pub fn output(program: &str, args: &[&str], envs: &[(&str, &str)]) -> Output {
    std::process::Command::new(program)
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .unwrap_or_else(|error| panic!("cannot run {program}: {error}"))
}

/// Runs a command that must succeed; its stdout.
pub fn must(program: &str, args: &[&str], envs: &[(&str, &str)]) -> String {
    let out = output(program, args, envs);
    assert!(
        out.status.success(),
        "{program} {} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `must`, off the runtime's threads (the traffic clients keep running).
pub async fn must_async(
    program: &'static str,
    args: Vec<String>,
    envs: Vec<(String, String)>,
) -> String {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        must(program, &args, &envs)
    })
    .await
    .unwrap()
}

/// Fails the test with a clear message when Docker or docker-compose is missing.
pub fn require_docker() {
    for (program, args) in [
        (
            "docker",
            &["version", "--format", "{{.Server.Version}}"][..],
        ),
        ("docker-compose", &["version", "--short"][..]),
    ] {
        let out = std::process::Command::new(program).args(args).output();
        let ok = out.as_ref().is_ok_and(|out| out.status.success());
        assert!(
            ok,
            "the Compose tests need a running Docker and docker-compose: `{program} {}` failed: {}",
            args.join(" "),
            match out {
                Ok(out) => String::from_utf8_lossy(&out.stderr).into_owned(),
                Err(error) => error.to_string(),
            }
        );
    }
}

/// The image and the Compose project of one test run; dropping it takes
/// the project down (containers, networks, volumes) and removes the image.
pub struct Project {
    pub name: String,
    pub image: String,
    file: PathBuf,
}

impl Project {
    /// A project of its own for the Compose file `file` (relative to
    /// examples/compose), named after the test process.
    pub fn new(file: &str) -> Project {
        let name = format!("usherd-test-{}", std::process::id());
        Project {
            image: format!("{name}:latest"),
            name,
            file: repo().join("examples/compose").join(file),
        }
    }

    /// Builds the image; brings the project up with `api` scaled to
    /// `replicas`; usherd as the host reaches it.
    pub async fn up(&self, replicas: usize) -> Usherd {
        build_image(&self.image);
        self.compose(&[
            "up",
            "-d",
            "--no-build",
            "--scale",
            &format!("api={replicas}"),
        ])
        .await;
        Usherd {
            client: Client::builder(TokioExecutor::new()).build_http(),
            url: format!("http://{}/", self.published("8080").await),
            status_url: format!("http://{}/status", self.published("9901").await),
        }
    }

    /// Takes the project down and removes its image (what dropping it
    /// does), then fails the test if a container, network, volume or the
    /// image is left.
    pub fn down_and_verify(self) {
        let (name, image) = (self.name.clone(), self.image.clone());
        drop(self);
        assert!(
            !output("docker", &["image", "inspect", &image], &[])
                .status
                .success(),
            "image {image} left"
        );
        let label = format!("label=com.docker.compose.project={name}");
        for kind in ["container", "network", "volume"] {
            let left = if kind == "container" {
                must("docker", &["ps", "-aq", "--filter", &label], &[])
            } else {
                must("docker", &[kind, "ls", "-q", "--filter", &label], &[])
            };
            assert!(left.trim().is_empty(), "{kind}s left by {name}: {left}");
        }
    }

    /// `-p NAME -f FILE ARGS`: docker-compose's arguments for this project.
    pub fn compose_args(&self, args: &[&str]) -> Vec<String> {
        ["-p", &self.name, "-f", self.file.to_str().unwrap()]
            .iter()
            .chain(args)
            .map(|arg| arg.to_string())
            .collect()
    }

    pub fn compose_env(&self) -> Vec<(String, String)> {
        vec![("USHERD_IMAGE".to_string(), self.image.clone())]
    }

    /// Runs docker-compose for this project; fails the test if it fails.
    pub async fn compose(&self, args: &[&str]) -> String {
        must_async(
            "docker-compose",
            self.compose_args(args),
            self.compose_env(),
        )
        .await
    }

    /// The host address a port of service `usherd` is published on.
    pub async fn published(&self, port: &str) -> SocketAddr {
        let text = self.compose(&["port", "usherd", port]).await;
        let addr: SocketAddr = text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("port {port}: {text}"));
        assert!(addr.ip().is_loopback(), "published beyond loopback: {addr}");
        addr
    }

    /// When the last `action` (`start`, `die`) of an `api` container
    /// happened after `since`, by Docker's events.
    pub async fn last_event(&self, action: &str, since: SystemTime) -> SystemTime {
        let seconds = |time: SystemTime| {
            let since_epoch = time.duration_since(UNIX_EPOCH).unwrap();
            format!(
                "{}.{:09}",
                since_epoch.as_secs(),
                since_epoch.subsec_nanos()
            )
        };
        let args = [
            "events",
            "--since",
            &seconds(since),
            "--until",
            &seconds(SystemTime::now()),
            "--filter",
            &format!("label=com.docker.compose.project={}", self.name),
            "--filter",
            "label=com.docker.compose.service=api",
            "--filter",
            &format!("event={action}"),
            "--format",
            "{{.TimeNano}}",
        ];
        must_async(
            "docker",
            args.iter().map(|a| a.to_string()).collect(),
            Vec::new(),
        )
        .await
        .lines()
        .filter_map(|line| line.trim().parse::<u64>().ok())
        .max()
        .map(|nanos| UNIX_EPOCH + Duration::from_nanos(nanos))
        .unwrap_or_else(|| panic!("no `{action}` event of an api container"))
    }

    /// The running replicas of `api`.
    pub async fn replicas(&self) -> Vec<Replica> {
        let ids = self.compose(&["ps", "-q", "api"]).await;
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if ids.is_empty() {
            return Vec::new();
        }
        let mut args = vec![
            "inspect".to_string(),
            "--format".to_string(),
            "{{.Id}} {{.State.Running}} {{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
                .to_string(),
        ];
        args.extend(ids.iter().map(|id| id.to_string()));
        must_async("docker", args, Vec::new())
            .await
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let (id, running, ip) = (fields.next()?, fields.next()?, fields.next()?);
                (running == "true").then(|| Replica {
                    id: id.to_string(),
                    addr: format!("{ip}:8080"),
                })
            })
            .collect()
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let args = self.compose_args(&["logs", "--no-color", "--tail", "300", "usherd"]);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let logs = output("docker-compose", &args, &[("USHERD_IMAGE", &self.image)]);
            eprintln!("usherd's log:\n{}", String::from_utf8_lossy(&logs.stdout));
        }
        let args = self.compose_args(&["down", "--volumes", "--remove-orphans", "-t", "2"]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let down = output("docker-compose", &args, &[("USHERD_IMAGE", &self.image)]);
        if !down.status.success() {
            eprintln!(
                "docker-compose down for {}: {}",
                self.name,
                String::from_utf8_lossy(&down.stderr)
            );
        }
        // Absent when the build failed: nothing to remove then.
        output("docker", &["image", "rm", &self.image], &[]);
    }
}

/// One running `api` container.
#[derive(Debug, Clone)]
pub struct Replica {
    pub id: String,
    /// Its address on the Compose network, as usherd reaches it.
    pub addr: String,
}

impl Replica {
    /// The name it answers with: its host name, the short container id.
    pub fn name(&self) -> String {
        self.id[..12].to_string()
    }
}

/// Builds the image's `runtime-prebuilt` stage around this build's binary,
/// in a build context of its own (Dockerfile, binary, default config).
pub fn build_image(image: &str) {
    let context = std::env::temp_dir().join(format!("usherd-image-{}", std::process::id()));
    std::fs::create_dir_all(context.join("config")).unwrap();
    std::fs::copy(repo().join("Dockerfile"), context.join("Dockerfile")).unwrap();
    std::fs::copy(
        repo().join("config/usherd.toml"),
        context.join("config/usherd.toml"),
    )
    .unwrap();
    let binary = Path::new(env!("CARGO_BIN_EXE_usherd"));
    if std::fs::hard_link(binary, context.join("usherd")).is_err() {
        std::fs::copy(binary, context.join("usherd")).unwrap();
    }
    // The classic builder: this Docker has no buildx. It builds the stages
    // up to the target only, so the Rust stage is never pulled.
    let built = output(
        "docker",
        &[
            "build",
            "--quiet",
            "--target",
            "runtime-prebuilt",
            "--build-arg",
            "USHERD_BINARY=usherd",
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

pub type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// GETs `url`; the status and `x-backend`, or why no response came.
pub async fn try_get(
    client: &HttpClient,
    url: &str,
    token: Option<&str>,
) -> Result<(u16, String, Bytes), String> {
    let mut request = Request::get(url);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request.body(Empty::new()).unwrap();
    let exchange = async {
        let response = client.request(request).await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let backend = response
            .headers()
            .get("x-backend")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok((status, backend, body.to_bytes()))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap_or_else(|_| Err("no response within 10 s".into()))
}

/// The usherd of the project, seen from the host.
#[derive(Clone)]
pub struct Usherd {
    pub client: HttpClient,
    pub url: String,
    pub status_url: String,
}

impl Usherd {
    /// The addresses usherd's `api` pool holds now (empty while it does not answer).
    pub async fn servers(&self) -> BTreeSet<String> {
        let Ok((200, _, body)) = try_get(&self.client, &self.status_url, Some(ADMIN_TOKEN)).await
        else {
            return BTreeSet::new();
        };
        let status: Value = serde_json::from_slice(&body).unwrap();
        status["upstreams"]["api"]["servers"]
            .as_array()
            .map(|servers| {
                servers
                    .iter()
                    .map(|s| s["addr"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Sends requests until every replica has answered, within `limit`.
    pub async fn all_answer(&self, replicas: &[Replica], limit: Duration) {
        let expected: BTreeSet<String> = replicas.iter().map(Replica::name).collect();
        let mut seen = BTreeSet::new();
        let start = Instant::now();
        while seen != expected {
            assert!(
                start.elapsed() < limit,
                "not every replica answered within {limit:?}: seen {seen:?}, replicas {expected:?}"
            );
            if let Ok((200, backend, _)) = try_get(&self.client, &self.url, None).await {
                assert!(
                    expected.contains(&backend),
                    "{backend} answered; the replicas are {expected:?}"
                );
                seen.insert(backend);
            }
        }
    }
}

/// The pool's addresses, each with when they were seen.
pub type PoolSnapshots = Arc<Mutex<Vec<(SystemTime, BTreeSet<String>)>>>;

/// usherd's `api` pool over time, polled every 50 ms from before a change
/// until the pool has settled on the replicas after it.
pub struct PoolWatch {
    snapshots: PoolSnapshots,
    running: Arc<AtomicBool>,
    poller: tokio::task::JoinHandle<()>,
}

impl PoolWatch {
    /// The longest a watch polls.
    const LIMIT: Duration = Duration::from_secs(120);

    pub fn start(usherd: &Usherd) -> PoolWatch {
        let snapshots = Arc::new(Mutex::new(Vec::new()));
        let running = Arc::new(AtomicBool::new(true));
        let poller = tokio::spawn({
            let (usherd, snapshots, running) =
                (usherd.clone(), Arc::clone(&snapshots), Arc::clone(&running));
            async move {
                let start = Instant::now();
                while running.load(Ordering::SeqCst) && start.elapsed() < PoolWatch::LIMIT {
                    let servers = usherd.servers().await;
                    snapshots.lock().unwrap().push((SystemTime::now(), servers));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        });
        PoolWatch {
            snapshots,
            running,
            poller,
        }
    }

    /// Waits, at most `limit`, until the pool holds exactly `replicas`;
    /// then when it first did for good (since then every poll saw them).
    pub async fn settles_on(self, replicas: &[Replica], limit: Duration) -> SystemTime {
        let expected: BTreeSet<String> = replicas.iter().map(|r| r.addr.clone()).collect();
        let start = Instant::now();
        loop {
            let last = self.snapshots.lock().unwrap().last().cloned();
            match last {
                Some((_, servers)) if servers == expected => break,
                last => assert!(
                    start.elapsed() < limit,
                    "usherd did not follow within {limit:?}: it has {:?}, the replicas are {expected:?}",
                    last.map(|(_, servers)| servers)
                ),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.running.store(false, Ordering::SeqCst);
        self.poller.await.unwrap();
        let snapshots = self.snapshots.lock().unwrap();
        snapshots
            .iter()
            .rev()
            .take_while(|(_, servers)| *servers == expected)
            .last()
            .map(|(at, _)| *at)
            .unwrap()
    }
}

/// Clients sending GETs through usherd until stopped; every failure is kept.
pub struct Traffic {
    running: Arc<AtomicBool>,
    started: Instant,
    /// Per client: when its last completed request started, in µs after `started`.
    last_completed: Arc<Vec<AtomicU64>>,
    sent: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    pub fn start(url: &str) -> Traffic {
        let running = Arc::new(AtomicBool::new(true));
        let sent = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        let last_completed: Arc<Vec<AtomicU64>> =
            Arc::new((0..TRAFFIC_CLIENTS).map(|_| AtomicU64::new(0)).collect());
        let clients = (0..TRAFFIC_CLIENTS)
            .map(|index| {
                let (running, sent) = (Arc::clone(&running), Arc::clone(&sent));
                let last_completed = Arc::clone(&last_completed);
                let failures = Arc::clone(&failures);
                let url = url.to_string();
                tokio::spawn(async move {
                    let client = Client::builder(TokioExecutor::new()).build_http();
                    for _ in 0..REQUESTS_PER_CLIENT {
                        if !running.load(Ordering::SeqCst) || started.elapsed() > TRAFFIC_LIMIT {
                            break;
                        }
                        let request_started = started.elapsed().as_micros() as u64;
                        let outcome = try_get(&client, &url, None).await;
                        last_completed[index].store(request_started, Ordering::SeqCst);
                        sent.fetch_add(1, Ordering::Relaxed);
                        let failure = match outcome {
                            Ok((200, _, _)) => continue,
                            Ok((status, _, body)) => {
                                format!("{status} {}", String::from_utf8_lossy(&body).trim())
                            }
                            Err(error) => error,
                        };
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("at {:.2?}: {failure}", started.elapsed()));
                    }
                })
            })
            .collect();
        Traffic {
            running,
            started,
            last_completed,
            sent,
            failures,
            clients,
        }
    }

    /// Waits, at most `limit`, until every client has completed a request
    /// it started after `moment`: none from before it is still in flight,
    /// retrying. The next change is then a change of its own.
    pub async fn settled_since(&self, moment: Instant, limit: Duration) {
        let moment = moment.duration_since(self.started).as_micros() as u64;
        let start = Instant::now();
        while self
            .last_completed
            .iter()
            .any(|last| last.load(Ordering::SeqCst) <= moment)
        {
            assert!(
                start.elapsed() < limit,
                "requests still in flight after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the clients; how many requests they sent, and the failures.
    pub async fn stop(self) -> (usize, Vec<String>) {
        self.running.store(false, Ordering::SeqCst);
        for client in self.clients {
            client.await.unwrap();
        }
        let failures = std::mem::take(&mut *self.failures.lock().unwrap());
        (self.sent.load(Ordering::Relaxed), failures)
    }
}

/// Prints how long after the replicas' last change usherd had the new set,
/// and fails when that was longer than `limit`.
pub fn report_follow(what: &str, seen: SystemTime, changed: SystemTime, limit: Duration) {
    // Docker's DNS can list a container a moment before its start event.
    let took = seen.duration_since(changed).unwrap_or_default();
    eprintln!("{what}: usherd followed {took:.2?} after the last container changed");
    assert!(took <= limit, "{what}: usherd followed after {took:?}");
}

/// `usherd check -c examples/compose/FILE` must pass.
pub fn check_config(file: &str) {
    let path = repo().join("examples/compose").join(file);
    let checked = output(
        env!("CARGO_BIN_EXE_usherd"),
        &["check", "-c", path.to_str().unwrap()],
        &[],
    );
    assert!(
        checked.status.success(),
        "usherd check of examples/compose/{file}:\n{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}

/// Makes sure the base image the Dockerfile starts from exists.
pub fn base_image() {
    let base = repo().join("tests/docker/base-image.sh");
    must("bash", &[base.to_str().unwrap()], &[]);
}
