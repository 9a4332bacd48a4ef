//! The per-request work that is usherd's own: `router.lookup` and
//! `balancer.pick`. Run with `cargo bench --bench hot_path`; numbers go in
//! docs/benchmarks.md.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

use usherd::balance::Balancer;
use usherd::config::{HostPattern, Route, StrategyKind, Vhost};
use usherd::routing::Router;

const STRATEGIES: [StrategyKind; 4] = [
    StrategyKind::RoundRobin,
    StrategyKind::Random,
    StrategyKind::Weighted,
    StrategyKind::WeightedRandom,
];

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
    let balancer = Balancer::new(StrategyKind::Weighted, &[5, 3, 1]);
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
                black_box(balancer.pick(|_| true))
            })
        });
    }
    group.finish();
}

fn pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    for servers in [3usize, 100, 1000] {
        let weights: Vec<u32> = (0..servers).map(|i| 1 + (i as u32 * 7) % 10).collect();
        for strategy in STRATEGIES {
            let balancer = Balancer::new(strategy, &weights);
            group.bench_with_input(
                BenchmarkId::new(strategy.name(), servers),
                &balancer,
                |b, balancer| b.iter(|| black_box(balancer.pick(|_| true))),
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
            health_check: None,
            outlier: Some(usherd::config::Outlier {
                consecutive_failures: 5,
                ejection_time: std::time::Duration::from_secs(30),
            }),
        };
        let upstream = usherd::upstream::Upstream::build(&config, None);
        group.bench_with_input(
            BenchmarkId::new("weighted_with_availability", servers),
            &upstream,
            |b, upstream| b.iter(|| black_box(upstream.pick(&[]))),
        );
    }
    group.finish();
}

criterion_group!(benches, lookup_and_pick, pick, upstream_pick);
criterion_main!(benches);
