//! The per-request work that is usherd's own: `router.lookup`,
//! `balancer.pick`, the HTTP/1 heads (parsed, then written with the header
//! rules) and hyper's header rules. Run with `cargo bench --bench hot_path`;
//! numbers go in docs/benchmarks.md.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use http::{HeaderMap, HeaderValue};

use usherd::balance::{key_hash, Balancer, Loads};
use usherd::config::{HashKey, HashSettings, HostPattern, Route, Server, StrategyKind, Vhost};
use usherd::http1::{RequestHead, ResponseHead};
use usherd::proxy::h1::heads::{
    write_client_response, write_upstream_request, ClientFraming, Forwarding, Persistence,
};
use usherd::proxy::headers::remove_hop_by_hop;
use usherd::routing::Router;

const STRATEGIES: [StrategyKind; 7] = [
    StrategyKind::RoundRobin,
    StrategyKind::Random,
    StrategyKind::Weighted,
    StrategyKind::WeightedRandom,
    StrategyKind::LeastConnections,
    StrategyKind::PeakEwma {
        decay: std::time::Duration::from_secs(10),
    },
    StrategyKind::ConsistentHash,
];

/// Servers with uneven load, as a pool under traffic has.
struct SpreadLoads(usize);

impl Loads for SpreadLoads {
    fn in_flight(&self, server: usize) -> u64 {
        (server as u64 * 7) % 5
    }

    fn latency_estimate(&self, server: usize) -> f64 {
        1e6 + (server as f64 * 13.0) % 9.0 * 1e5
    }

    fn pool_in_flight(&self) -> u64 {
        2 * self.0 as u64
    }
}

fn servers(count: usize) -> Vec<Server> {
    (0..count)
        .map(|i| Server {
            addr: format!("10.0.{}.{}:8080", i / 250, i % 250),
            weight: 1 + (i as u32 * 7) % 10,
        })
        .collect()
}

fn vhost(name: &str, hosts: Vec<HostPattern>, routes: &[&str]) -> Vhost {
    Vhost {
        name: name.into(),
        hosts,
        listeners: vec!["web".into()],
        routes: routes
            .iter()
            .map(|path| Route {
                path: path.to_string(),
                upstream: "pool".into(),
                strip_prefix: false,
            })
            .collect(),
    }
}

/// A router shaped like config/usherd.toml plus 100 other vhosts.
fn router() -> Router {
    let mut vhosts = vec![
        vhost(
            "shop",
            vec![
                HostPattern::Exact("shop.example.com".into()),
                HostPattern::Suffix(".shop.example.com".into()),
            ],
            &["/", "/api/", "/api/v2/", "/static/"],
        ),
        vhost("fallback", vec![HostPattern::Any], &["/"]),
    ];
    for i in 0..100 {
        vhosts.push(vhost(
            &format!("site{i}"),
            vec![HostPattern::Exact(format!("site{i}.example.org"))],
            &["/"],
        ));
    }
    Router::build(&vhosts, &["web"], |_| 0)
}

fn lookup_and_pick(c: &mut Criterion) {
    let router = router();
    let three = servers(3);
    let balancer = Balancer::new(StrategyKind::Weighted, &three, None);
    let loads = SpreadLoads(3);
    let mut group = c.benchmark_group("lookup_and_pick");
    for (name, host) in [
        ("exact_host", "shop.example.com"),
        ("exact_host_with_port_and_case", "Shop.Example.com:8080"),
        ("wildcard_host", "eu.shop.example.com"),
        ("default_host", "unknown.example.net"),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let matched = router
                    .lookup("web", black_box(host), black_box("/api/v2/orders/17"))
                    .unwrap();
                black_box(matched.route.upstream);
                black_box(balancer.pick(None, &loads, |_| true))
            })
        });
    }
    group.finish();
}

fn pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    let hash = HashSettings {
        key: HashKey::ClientIp,
        balance_factor: Some(1.25),
    };
    for count in [3usize, 100, 1000] {
        let pool = servers(count);
        let loads = SpreadLoads(count);
        for strategy in STRATEGIES {
            let balancer = Balancer::new(strategy, &pool, Some(&hash));
            let mut key = 0u64;
            group.bench_with_input(
                BenchmarkId::new(strategy.name(), count),
                &balancer,
                |b, balancer| {
                    b.iter(|| {
                        key = key.wrapping_add(1);
                        black_box(
                            balancer.pick(Some(key_hash(&key.to_le_bytes())), &loads, |_| true),
                        )
                    })
                },
            );
        }
    }
    group.finish();
}

/// `Upstream::pick`: the strategy plus availability (health, ejection, limit).
fn upstream_pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("upstream_pick");
    for servers in [3usize, 100] {
        let config = usherd::config::Upstream {
            name: "pool".into(),
            strategy: StrategyKind::Weighted,
            servers: (0..servers)
                .map(|i| usherd::config::Server {
                    addr: format!("127.0.0.1:{}", 10_000 + i),
                    weight: 1 + (i as u32 % 5),
                })
                .collect(),
            connect_timeout: std::time::Duration::from_secs(1),
            timeout: std::time::Duration::from_secs(30),
            retries: 1,
            max_connections_per_server: Some(1000),
            transport: Default::default(),
            hash: None,
            health_check: None,
            outlier: Some(usherd::config::Outlier {
                consecutive_failures: 5,
                ejection_time: std::time::Duration::from_secs(30),
            }),
            discovery: None,
        };
        let upstream = usherd::upstream::Upstream::build(&config, None, &Default::default());
        group.bench_with_input(
            BenchmarkId::new("weighted_with_availability", servers),
            &upstream,
            |b, upstream| b.iter(|| black_box(upstream.pick(None, &[]))),
        );
    }
    group.finish();
}

/// A header map as hyper hands it over, from `(name, value)` pairs.
fn header_map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.append(*name, HeaderValue::from_static(value));
    }
    headers
}

/// `remove_hop_by_hop` runs on every request and every response.
fn hop_by_hop(c: &mut Criterion) {
    let cases = [
        ("wrk request", header_map(&[("host", "shop.example.com")])),
        (
            "browser request",
            header_map(&[
                ("host", "shop.example.com"),
                ("user-agent", "Mozilla/5.0 (X11; Linux x86_64)"),
                ("accept", "text/html,application/xhtml+xml"),
                ("accept-encoding", "gzip, deflate, br"),
                ("accept-language", "en-GB,en;q=0.9"),
                ("connection", "keep-alive"),
                ("cookie", "session=0123456789abcdef"),
            ]),
        ),
        (
            "nginx response",
            header_map(&[
                ("server", "nginx/1.22.1"),
                ("date", "Wed, 25 Nov 2026 12:00:00 GMT"),
                ("content-type", "text/plain"),
                ("content-length", "3"),
                ("connection", "keep-alive"),
            ]),
        ),
    ];
    let mut group = c.benchmark_group("remove_hop_by_hop");
    for (name, headers) in &cases {
        group.bench_function(*name, |b| {
            b.iter_batched(
                || headers.clone(),
                |mut headers| {
                    remove_hop_by_hop(&mut headers);
                    headers
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// What the HTTP/1 path does to every head: parse it in place, then write
/// the upstream request (or the client's response) with the header rules.
fn http1_heads(c: &mut Criterion) {
    let requests: [(&str, &[u8]); 2] = [
        ("wrk request", b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"),
        (
            "browser request",
            b"GET /shop/cart?item=42 HTTP/1.1\r\nHost: shop.example.com\r\n\
              User-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\nAccept: text/html,application/xhtml+xml\r\n\
              Accept-Encoding: gzip, deflate, br\r\nAccept-Language: en-GB,en;q=0.9\r\n\
              Connection: keep-alive\r\nCookie: session=0123456789abcdef\r\n\r\n",
        ),
    ];
    let mut group = c.benchmark_group("http1_request_head");
    for (name, bytes) in requests {
        let mut head = RequestHead::default();
        let mut out = Vec::with_capacity(1024);
        group.bench_function(name, |b| {
            b.iter(|| {
                assert!(head.parse(black_box(bytes)).unwrap());
                let forwarding = Forwarding {
                    path: head.target.of(bytes),
                    target_host: None,
                    host: head.headers.first(bytes, usherd::http1::HeaderKind::Host),
                    default_host: b"127.0.0.1:8080",
                    client_ip: b"127.0.0.1",
                    proto: "http",
                    upgrade: false,
                    chunked: false,
                };
                write_upstream_request(&mut out, bytes, &head, &forwarding);
                black_box(out.len())
            })
        });
    }
    group.finish();
    let response: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\n\
        Date: Wed, 25 Nov 2026 12:00:00 GMT\r\nContent-Type: text/plain\r\n\
        Content-Length: 3\r\nConnection: keep-alive\r\n\r\n";
    let mut head = ResponseHead::default();
    let mut out = Vec::with_capacity(1024);
    c.bench_function("http1_response_head/nginx response", |b| {
        b.iter(|| {
            assert!(head.parse(black_box(response)).unwrap());
            write_client_response(
                &mut out,
                response,
                &head,
                ClientFraming::AsIs,
                Persistence::KeepAlive { http10: false },
                None,
            );
            black_box(out.len())
        })
    });
}

criterion_group!(
    benches,
    lookup_and_pick,
    pick,
    upstream_pick,
    hop_by_hop,
    http1_heads
);
criterion_main!(benches);
