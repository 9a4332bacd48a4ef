//! Reload cost, for docs/benchmarks.md:
//! 1. build: parse + validate + compile a snapshot for 1,000 upstreams x 10
//!    servers and 1,000 vhosts (criterion);
//! 2. whole reload through the running proxy (read the file, validate, build,
//!    bind, swap), timed from the call to the new table being live;
//! 3. p99 request latency during a burst of 20 reloads vs without, same run;
//! 4. a discovery update: one upstream's set changes and only it is rebuilt,
//!    in a snapshot of 1,000 upstreams and in one of 10 (criterion).
//!
//! Run: `cargo bench --bench reload`.

use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::Criterion;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use usherd::config::parse_config;
use usherd::reload::Trigger;
use usherd::snapshot::Snapshot;
use usherd::upstream::RuntimeServers;
use usherd::Proxy;

const UPSTREAMS: usize = 1000;
const SERVERS: usize = 10;
const VHOSTS: usize = 1000;

/// A config with 1,000 vhosts routing to 1,000 upstreams of 10 servers; the
/// first upstream's servers are `live` so traffic can flow during reloads.
fn big_config(live: &[String], weight: u32) -> String {
    let mut text = String::from("[listeners.web]\nlisten = \"127.0.0.1:0\"\n");
    for v in 0..VHOSTS {
        let _ = write!(
            text,
            "[vhosts.v{v}]\nhosts = [\"site{v}.example.com\", \"*.site{v}.example.com\"]\nroutes = [{{ path = \"/\", upstream = \"u{u}\" }}, {{ path = \"/api/\", upstream = \"u{u}\", strip_prefix = true }}]\n",
            u = v % UPSTREAMS
        );
    }
    let _ = writeln!(
        text,
        "[vhosts.default]\nhosts = [\"*\"]\nroutes = [{{ path = \"/\", upstream = \"u0\" }}]"
    );
    for u in 0..UPSTREAMS {
        let servers: Vec<String> = (0..SERVERS)
            .map(|s| {
                if u == 0 {
                    format!("{{ addr = \"{}\", weight = {weight} }}", live[s])
                } else {
                    format!(
                        "{{ addr = \"10.{}.{}.{}:8080\", weight = {weight} }}",
                        u / 250,
                        u % 250,
                        s + 1
                    )
                }
            })
            .collect();
        let _ = writeln!(
            text,
            "[upstreams.u{u}]\nstrategy = \"weighted\"\nservers = [{}]",
            servers.join(", ")
        );
    }
    text
}

fn build_step(c: &mut Criterion) {
    let live: Vec<String> = (0..SERVERS)
        .map(|s| format!("127.0.0.1:{}", 9000 + s))
        .collect();
    let text = big_config(&live, 1);
    let mut group = c.benchmark_group("reload_build");
    group.sample_size(10);
    group.bench_function("parse_validate_build_1000x10_1000_vhosts", |b| {
        b.iter(|| {
            let config = parse_config(black_box(&text), "big.toml").unwrap();
            black_box(Snapshot::build(
                Arc::new(config),
                2,
                None,
                &Default::default(),
            ))
        })
    });
    group.bench_function("parse_validate_only", |b| {
        b.iter(|| black_box(parse_config(black_box(&text), "big.toml").unwrap()))
    });
    let parsed = Arc::new(parse_config(&text, "big.toml").unwrap());
    group.bench_function("build_only", |b| {
        b.iter(|| {
            black_box(Snapshot::build(
                Arc::clone(&parsed),
                2,
                None,
                &Default::default(),
            ))
        })
    });
    let previous = Snapshot::build(
        Arc::new(parse_config(&text, "big.toml").unwrap()),
        1,
        None,
        &Default::default(),
    );
    group.bench_function("build_with_carry_over", |b| {
        b.iter(|| {
            let config = parse_config(black_box(&text), "big.toml").unwrap();
            black_box(Snapshot::build(
                Arc::new(config),
                2,
                Some(&previous),
                &Default::default(),
            ))
        })
    });
    let mut edited: Vec<String> = live.clone();
    edited[0] = "127.0.0.1:8999".into();
    let changed = parse_config(&big_config(&edited, 2), "big.toml").unwrap();
    group.bench_function("describe_changes", |b| {
        b.iter(|| black_box(usherd::reload::diff::describe(&parsed, black_box(&changed))))
    });
    group.finish();
}

async fn start_backend() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|_| async {
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(
                        b"ok\n",
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// Latencies of requests sent by `clients` keep-alive loops for `duration`.
async fn load(url: &str, clients: usize, duration: Duration) -> Vec<Duration> {
    let running = Arc::new(AtomicBool::new(true));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (running, latencies, url) = (running.clone(), latencies.clone(), url.to_string());
        tasks.push(tokio::spawn(async move {
            let client: Client<HttpConnector, Empty<Bytes>> =
                Client::builder(TokioExecutor::new()).build(HttpConnector::new());
            let mut mine = Vec::new();
            while running.load(Ordering::Relaxed) && mine.len() < 1_000_000 {
                let start = Instant::now();
                let request = Request::get(&url)
                    .header("host", "site0.example.com")
                    .body(Empty::new())
                    .unwrap();
                let response = client.request(request).await.unwrap();
                assert_eq!(response.status(), 200);
                response.into_body().collect().await.unwrap();
                mine.push(start.elapsed());
            }
            latencies.lock().unwrap().extend(mine);
        }));
    }
    tokio::time::sleep(duration).await;
    running.store(false, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    Arc::try_unwrap(latencies).unwrap().into_inner().unwrap()
}

fn percentile(latencies: &mut [Duration], p: f64) -> Duration {
    latencies.sort();
    latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)]
}

fn whole_process() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut live = Vec::new();
        for _ in 0..SERVERS {
            live.push(start_backend().await);
        }
        let directory = std::env::temp_dir().join(format!("usherd-reload-bench-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join("big.toml");
        std::fs::write(&path, big_config(&live, 1)).unwrap();
        let config = usherd::config::load(&path).unwrap();
        let proxy = Proxy::start(config).await.unwrap();
        let url = format!("http://{}/", proxy.listeners()[0].addr);

        let mut reload_times = Vec::new();
        for round in 0..10 {
            std::fs::write(&path, big_config(&live, 1 + round % 2)).unwrap();
            let start = Instant::now();
            proxy.reload(Trigger::Api).await.unwrap();
            reload_times.push(start.elapsed());
        }
        let median = percentile(&mut reload_times, 0.5);
        println!("whole reload (read + validate + build + swap), {UPSTREAMS} upstreams x {SERVERS} servers, {VHOSTS} vhosts: median {median:?} of 10, max {:?}", reload_times.iter().max().unwrap());

        let mut quiet = load(&url, 8, Duration::from_secs(5)).await;
        let burst = {
            let url = url.clone();
            let load = tokio::spawn(async move { load(&url, 8, Duration::from_secs(5)).await });
            tokio::time::sleep(Duration::from_millis(500)).await;
            for round in 0..20 {
                std::fs::write(&path, big_config(&live, 1 + round % 2)).unwrap();
                proxy.reload(Trigger::Api).await.unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            load.await.unwrap()
        };
        let mut burst = burst;
        let (quiet_p99, burst_p99) = (percentile(&mut quiet, 0.99), percentile(&mut burst, 0.99));
        println!(
            "p99 without reloads {quiet_p99:?} ({} requests); during 20 reloads {burst_p99:?} ({} requests); ratio {:.2}",
            quiet.len(),
            burst.len(),
            burst_p99.as_secs_f64() / quiet_p99.as_secs_f64()
        );
        proxy.shutdown().await;
        std::fs::remove_dir_all(&directory).unwrap();
    });
}

/// One upstream's discovered set changing, in a snapshot of `upstreams`
/// upstreams of 10 servers: only that upstream is rebuilt.
fn discovery_update(c: &mut Criterion) {
    let mut group = c.benchmark_group("discovery_update");
    group.sample_size(50);
    for upstreams in [10, UPSTREAMS] {
        let mut text = String::from(
            "[listeners.web]\nlisten = \"127.0.0.1:0\"\n[vhosts.all]\nhosts = [\"*\"]\nroutes = [{ path = \"/\", upstream = \"u0\" }]\n",
        );
        for u in 0..upstreams {
            let _ = writeln!(
                text,
                "[upstreams.u{u}]\nstrategy = \"weighted\"\nservers = [{{ addr = \"10.0.0.1:8080\" }}]\n[upstreams.u{u}.discovery]\nsource = \"dns\"\nname = \"u{u}.internal\"\nport = 8080"
            );
        }
        let config = Arc::new(parse_config(&text, "discovery.toml").unwrap());
        let sets: Vec<Arc<[usherd::config::Server]>> = (0..2)
            .map(|variant| {
                (0..SERVERS)
                    .map(|s| usherd::config::Server {
                        addr: format!("10.1.{variant}.{}:8080", s + 1),
                        weight: 1,
                    })
                    .collect()
            })
            .collect();
        let mut runtime = RuntimeServers::default();
        runtime.discovered.insert("u7".into(), Arc::clone(&sets[0]));
        let mut snapshot = Snapshot::build(config, 1, None, &runtime);
        let mut turn = 0;
        group.bench_function(format!("one_of_{upstreams}_upstreams"), |b| {
            b.iter(|| {
                turn += 1;
                runtime
                    .discovered
                    .insert("u7".into(), Arc::clone(&sets[turn % 2]));
                snapshot = snapshot.with_upstreams_rebuilt(turn as u64, &["u7"], &runtime);
                black_box(&snapshot);
            })
        });
    }
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    build_step(&mut criterion);
    discovery_update(&mut criterion);
    criterion.final_summary();
    whole_process();
}
