//! `usherd bench`: which strategy suits my services? It runs the real proxy
//! (in-process, real sockets on loopback) in front of simulated backends, once
//! per strategy under the same load, and reports per strategy the throughput,
//! latency percentiles (HDR histogram), each backend's share and the errors;
//! as a table, as JSON, and as an SVG chart.
//!
//! Each strategy gets fresh backends seeded alike, so it meets the same
//! latencies in the same order; `--seed` makes runs repeatable.

mod chart;
mod load;
mod profile;
pub mod sim;
mod virtual_time;

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::config::{
    Config, Global, HashKey, HashSettings, HostPattern, Listener, Route, Server, StrategyKind,
    Upstream, Vhost,
};
use crate::Proxy;

pub use chart::write_svg;
pub use load::{parse_access_log, LoadShape};
pub use profile::{BackendProfile, Event, Latency, Profile, ProfileError};
pub use virtual_time::simulate;

/// Everything a bench run needs.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub profile: Profile,
    pub load: LoadShape,
    /// Per strategy.
    pub duration: Duration,
    pub strategies: Vec<StrategyKind>,
    pub seed: u64,
    /// Distinct request keys, drawn Zipf-skewed (s = 1.1), for hashing.
    pub keys: u64,
    pub hash_balance_factor: Option<f64>,
    /// Print progress to stderr.
    pub progress: bool,
}

/// The outcome for one strategy.
#[derive(Debug, Clone, Serialize)]
pub struct StrategyResult {
    pub strategy: String,
    pub completed: u64,
    pub errors: u64,
    pub throughput: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// Share of the requests each backend received, by backend name.
    pub shares: Vec<(String, f64)>,
    /// Requests each backend received in each second of the run.
    pub per_second: Vec<(String, Vec<u64>)>,
}

/// A whole bench run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub seed: u64,
    pub duration_s: f64,
    pub load: String,
    pub backends: Vec<String>,
    pub results: Vec<StrategyResult>,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot start a simulated backend: {0}")]
    Backend(std::io::Error),
    #[error("cannot start the proxy: {0}")]
    Proxy(crate::BindError),
}

/// Every strategy the proxy knows, in the order the table shows them.
pub fn all_strategies() -> Vec<StrategyKind> {
    vec![
        StrategyKind::RoundRobin,
        StrategyKind::Random,
        StrategyKind::Weighted,
        StrategyKind::WeightedRandom,
        StrategyKind::LeastConnections,
        StrategyKind::PeakEwma {
            decay: crate::config::DEFAULT_EWMA_DECAY,
        },
        StrategyKind::ConsistentHash,
    ]
}

/// Runs every strategy of `options` in turn.
pub async fn run(options: &BenchOptions) -> Result<BenchReport, BenchError> {
    let keys = zipf_keys(options.keys, options.seed);
    let mut results = Vec::new();
    for (index, strategy) in options.strategies.iter().enumerate() {
        if options.progress {
            progress(&format!(
                "[{}/{}] {} for {}",
                index + 1,
                options.strategies.len(),
                strategy.name(),
                humantime::format_duration(options.duration)
            ));
        }
        results.push(run_one(options, *strategy, &keys).await?);
    }
    if options.progress {
        progress("done\n");
    }
    Ok(report(options, results))
}

/// The report of a run whose strategies gave `results`.
fn report(options: &BenchOptions, results: Vec<StrategyResult>) -> BenchReport {
    BenchReport {
        seed: options.seed,
        duration_s: options.duration.as_secs_f64(),
        load: match &options.load {
            LoadShape::Open { rate } => format!("open loop, {rate} requests/s"),
            LoadShape::Closed { connections } => format!("closed loop, {connections} connections"),
            LoadShape::Replay(schedule) => format!("replay of {} requests", schedule.len()),
        },
        backends: options
            .profile
            .backends
            .iter()
            .map(|b| b.name.clone())
            .collect(),
        results,
    }
}

fn progress(text: &str) {
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[2K{text}");
    } else {
        eprintln!("{text}");
    }
}

async fn run_one(
    options: &BenchOptions,
    strategy: StrategyKind,
    keys: &Arc<dyn Fn(u64) -> String + Send + Sync>,
) -> Result<StrategyResult, BenchError> {
    let start = Instant::now();
    let seconds = options.duration.as_secs() as usize;
    let mut backends = Vec::new();
    for (index, backend) in options.profile.backends.iter().enumerate() {
        let sim = sim::SimBackend::start(
            index,
            backend,
            &options.profile.events,
            options.seed,
            start,
            seconds,
        )
        .await
        .map_err(BenchError::Backend)?;
        backends.push(sim);
    }
    let proxy = Proxy::start(proxy_config(options, strategy, &backends))
        .await
        .map_err(BenchError::Proxy)?;
    let url = format!("http://{}/", proxy.listeners()[0].addr);
    let measured = load::run(&url, &options.load, options.duration, keys).await;
    proxy.shutdown().await;

    let per_second: Vec<(String, Vec<u64>)> = options
        .profile
        .backends
        .iter()
        .zip(&backends)
        .map(|(profile, sim)| (profile.name.clone(), sim.per_second()))
        .collect();
    Ok(strategy_result(
        strategy,
        measured.completed,
        measured.errors,
        measured.elapsed,
        &measured.latency,
        per_second,
    ))
}

/// One strategy's figures from what its run counted; latencies in microseconds.
fn strategy_result(
    strategy: StrategyKind,
    completed: u64,
    errors: u64,
    elapsed: Duration,
    latency: &hdrhistogram::Histogram<u64>,
    per_second: Vec<(String, Vec<u64>)>,
) -> StrategyResult {
    let received: Vec<u64> = per_second.iter().map(|(_, s)| s.iter().sum()).collect();
    let all: u64 = received.iter().sum::<u64>().max(1);
    let percentile = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    StrategyResult {
        strategy: strategy.name().to_string(),
        completed,
        errors,
        throughput: completed as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile(0.5),
        p90_ms: percentile(0.9),
        p99_ms: percentile(0.99),
        p999_ms: percentile(0.999),
        shares: per_second
            .iter()
            .zip(&received)
            .map(|((name, _), count)| (name.clone(), *count as f64 / all as f64))
            .collect(),
        per_second,
    }
}

/// The proxy's config: one listener, every host to one upstream of the
/// simulated backends, no retries (so errors show as they are).
fn proxy_config(
    options: &BenchOptions,
    strategy: StrategyKind,
    backends: &[sim::SimBackend],
) -> Config {
    let hash = (strategy == StrategyKind::ConsistentHash).then(|| HashSettings {
        key: HashKey::Header(http::HeaderName::from_static("x-bench-key")),
        balance_factor: options.hash_balance_factor,
    });
    Config {
        path: None,
        global: Global::default(),
        admin: None,
        listeners: vec![Listener {
            name: "bench".into(),
            listen: ([127, 0, 0, 1], 0).into(),
            tls: None,
            redirect_https: None,
        }],
        vhosts: vec![Vhost {
            name: "bench".into(),
            hosts: vec![HostPattern::Any],
            listeners: vec!["bench".into()],
            routes: vec![Route {
                path: "/".into(),
                upstream: "bench".into(),
                strip_prefix: false,
            }],
        }],
        upstreams: vec![Upstream {
            name: "bench".into(),
            strategy,
            servers: options
                .profile
                .backends
                .iter()
                .zip(backends)
                .map(|(profile, sim)| Server {
                    addr: sim.addr.to_string(),
                    weight: profile.weight,
                })
                .collect(),
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(60),
            retries: 0,
            max_connections_per_server: None,
            transport: Default::default(),
            hash,
            health_check: None,
            outlier: None,
            discovery: None,
        }],
        registry: None,
        warnings: Vec::new(),
    }
}

/// Key n of a Zipf-skewed (s = 1.1) sequence over `count` keys, the same for
/// every strategy and seed.
fn zipf_keys(count: u64, seed: u64) -> Arc<dyn Fn(u64) -> String + Send + Sync> {
    let count = count.max(1);
    let cumulative: Vec<f64> = (1..=count)
        .scan(0.0, |sum, rank| {
            *sum += 1.0 / (rank as f64).powf(1.1);
            Some(*sum)
        })
        .collect();
    let total = *cumulative.last().unwrap_or(&1.0);
    Arc::new(move |n| {
        let mut rng = fastrand::Rng::with_seed(seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let ticket = rng.f64() * total;
        let rank = cumulative.partition_point(|&c| c < ticket);
        format!("key-{rank}")
    })
}

impl BenchReport {
    /// The table printed on stdout.
    pub fn table(&self) -> String {
        let mut out = format!(
            "usherd bench: {}, {} s per strategy, seed {}\n\n",
            self.load, self.duration_s, self.seed
        );
        let _ = writeln!(
            out,
            "{:<18} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}   share per backend",
            "strategy", "req/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "errors"
        );
        for result in &self.results {
            let shares: Vec<String> = result
                .shares
                .iter()
                .map(|(name, share)| format!("{name} {:.1}%", share * 100.0))
                .collect();
            let _ = writeln!(
                out,
                "{:<18} {:>9.1} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>7}   {}",
                result.strategy,
                result.throughput,
                result.p50_ms,
                result.p90_ms,
                result.p99_ms,
                result.p999_ms,
                result.errors,
                shares.join("  ")
            );
        }
        out
    }
}
