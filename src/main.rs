//! The `usherd` command line (docs/cli.md): `run`, `check`, `bench`, `demo`,
//! `demo-backend`, `probe`; logging; signals; exit codes (0 clean, 1 bad
//! config or arguments, 2 runtime failure; `probe`: 0 or 1).

#[cfg(feature = "tools")]
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
#[cfg(feature = "tools")]
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

use usherd::config::{self, Config};
#[cfg(feature = "tools")]
use usherd::demo_registration::Registration;
use usherd::reload::Trigger;
#[cfg(feature = "tools")]
use usherd::{bench, demo};
use usherd::{fleet, host, probe, Proxy};

const DEFAULT_CONFIG: &str = "config/usherd.toml";

#[derive(Debug, Parser)]
#[command(
    name = "usherd",
    version,
    about = "A layer-7 reverse proxy and load balancer"
)]
struct Cli {
    /// Config file (default: $USHERD_CONFIG, else config/usherd.toml).
    #[arg(short, long, global = true, env = "USHERD_CONFIG")]
    config: Option<PathBuf>,

    /// Log format; the level comes from RUST_LOG (default `info`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy (the default command). `--config etcd://HOST:PORT/KEY`
    /// reads the config from an etcd key and follows it (docs/fleet.md).
    Run {
        /// Do not reload when the config file changes (SIGHUP and POST /reload still do).
        #[arg(long)]
        no_watch: bool,
        /// This instance's name in the fleet [default: the host name].
        #[arg(long, env = "USHERD_NAME")]
        name: Option<String>,
    },
    /// The fleet of instances that run the config of one etcd key.
    Fleet {
        #[command(subcommand)]
        action: FleetAction,
    },
    /// Validate a config: print a summary and exit 0, or every error and exit 1.
    Check,
    /// Compare balancing strategies on simulated backends (see docs/strategies.md).
    #[cfg(feature = "tools")]
    Bench(Box<BenchArgs>),
    /// Start 3 demo backends and a proxy in front of them.
    #[cfg(feature = "tools")]
    Demo {
        /// Port of the demo proxy on 127.0.0.1 (0: any free port).
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Port of the demo's admin API on 127.0.0.1 (0: any free port).
        #[arg(long, default_value_t = 9901)]
        admin_port: u16,
    },
    /// Serve one demo backend: every request gets its name and address back.
    #[cfg(feature = "tools")]
    DemoBackend {
        /// Address to listen on.
        #[arg(long, default_value = "0.0.0.0:8080")]
        listen: SocketAddr,
        /// The name it answers with [default: the host name].
        #[arg(long)]
        name: Option<String>,
        /// Register with this Consul-compatible registry (e.g.
        /// http://usherd:8500): a TTL check passed every few seconds,
        /// deregistered on SIGTERM.
        #[arg(long)]
        register: Option<String>,
        /// The token to register with (sent as X-Consul-Token).
        #[arg(long, requires = "register")]
        token: Option<String>,
        /// The service name to register under.
        #[arg(long, default_value = "api", requires = "register")]
        service: String,
        /// The address to register [default: the one the registry sees].
        #[arg(long, requires = "register")]
        advertise: Option<String>,
    },
    /// GET a URL; exit 0 on a 2xx or 3xx answer, else 1 (a container health check).
    Probe {
        /// The http:// URL to GET.
        url: http::Uri,
        /// How long the answer may take.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}

#[derive(Debug, Subcommand)]
enum FleetAction {
    /// One row per instance: the config revision it runs, its generation and
    /// state; exit 0 when every instance runs the key's latest revision, else 1.
    Status {
        /// The config key, `etcd://HOST:PORT[,HOST:PORT]/KEY` [default: --config].
        #[arg(long)]
        etcd: Option<String>,
    },
}

#[cfg(feature = "tools")]
#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// Backends and events from a TOML file (see docs/strategies.md).
    #[arg(long, conflicts_with = "backends")]
    profile: Option<PathBuf>,
    /// Backends as median latencies (log-normal, p99 = 3 x median).
    #[arg(long, default_value = "5ms,5ms,5ms,5ms")]
    backends: String,
    /// Open loop: requests per second, whatever the answers [default: 200].
    #[arg(long, conflicts_with_all = ["connections", "replay"])]
    rate: Option<f64>,
    /// Closed loop: connections each sending back to back.
    #[arg(long, conflicts_with = "replay")]
    connections: Option<usize>,
    /// Replay the timing and keys of a usherd JSON access log.
    #[arg(long)]
    replay: Option<PathBuf>,
    /// With --replay, the access-log field used as the hashing key.
    #[arg(long, default_value = "client", value_parser = ["client", "path", "host"])]
    replay_key: String,
    /// How long each strategy runs.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: std::time::Duration,
    /// Strategies to compare, comma-separated [default: all].
    #[arg(long, value_delimiter = ',')]
    strategies: Vec<String>,
    /// Seed of the simulated latencies and keys.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Distinct request keys (Zipf-skewed), for consistent_hash.
    #[arg(long, default_value_t = 1000)]
    keys: u64,
    /// consistent_hash's bounded-load factor, e.g. 1.25.
    #[arg(long)]
    hash_balance_factor: Option<f64>,
    /// Also write the report as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also write the chart as SVG.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Simulate in virtual time (no sockets, no proxy): the same strategies
    /// and backends, milliseconds per run, the same numbers on any machine.
    #[arg(long)]
    virtual_time: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let is_error = error.use_stderr();
            // Help and version print to stdout and succeed; bad arguments exit 1.
            error.print().ok();
            return if is_error {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    // The bench's proxy would log every request: warnings only, unless asked.
    #[cfg(feature = "tools")]
    let quiet = matches!(cli.command, Some(Command::Bench(_)));
    #[cfg(not(feature = "tools"))]
    let quiet = false;
    let default_level = if quiet { "warn" } else { "info" };
    init_logging(cli.log_format, default_level);
    let config_path = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    let etcd_key = config_path.to_str().and_then(fleet::ConfigKey::parse);
    match cli.command.unwrap_or(Command::Run {
        no_watch: false,
        name: None,
    }) {
        Command::Check => match etcd_key {
            Some(key) => on_runtime(check_etcd(key)),
            None => check(&config_path),
        },
        Command::Run { no_watch, name } => match etcd_key {
            Some(key) => on_runtime(run_from_etcd(
                key,
                name.or_else(host::host_name)
                    .unwrap_or_else(|| "usherd".into()),
            )),
            None => {
                let config = match config::load(&config_path) {
                    Ok(config) => config,
                    Err(errors) => return report_config_errors(&errors),
                };
                on_runtime(run(config, !no_watch))
            }
        },
        Command::Fleet {
            action: FleetAction::Status { etcd },
        } => {
            let key = match etcd
                .as_deref()
                .map(fleet::ConfigKey::parse)
                .unwrap_or(etcd_key)
            {
                Some(Ok(key)) => key,
                Some(Err(message)) => {
                    eprintln!("error: {message}");
                    return ExitCode::from(1);
                }
                None => {
                    eprintln!("error: name the config key with --etcd etcd://HOST:PORT/KEY");
                    return ExitCode::from(1);
                }
            };
            on_runtime(fleet_status(key))
        }
        #[cfg(feature = "tools")]
        Command::Demo { port, admin_port } => on_runtime(run_demo(port, admin_port)),
        #[cfg(feature = "tools")]
        Command::DemoBackend {
            listen,
            name,
            register,
            token,
            service,
            advertise,
        } => {
            let name = name
                .or_else(host::host_name)
                .unwrap_or_else(|| "demo-backend".into());
            let registration = register.map(|registry| Registration {
                registry,
                token,
                service,
                id: name.clone(),
                port: listen.port(),
                address: advertise,
            });
            on_runtime(run_demo_backend(listen, name, registration))
        }
        Command::Probe { url, timeout } => on_runtime(run_probe(url, timeout)),
        #[cfg(feature = "tools")]
        Command::Bench(args) => match bench_options(&args) {
            Ok(options) => on_runtime(run_bench(options, args.virtual_time, args.json, args.svg)),
            Err(message) => {
                eprintln!("error: {message}");
                ExitCode::from(1)
            }
        },
    }
}

fn init_logging(format: LogFormat, default_level: &str) {
    let mut filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    // h2 warns once per connection it ends for a reset flood, which a client
    // can repeat at will; usherd logs those itself, rate-limited
    // (server/serve.rs). zookeeper_client logs each connection it loses and
    // each attempt to connect; the zookeeper source logs once when it turns
    // stale and once when it recovers. Unless RUST_LOG asks for them by name.
    let directives = std::env::var("RUST_LOG").unwrap_or_default();
    for quiet in ["h2", "zookeeper_client"] {
        let named = directives
            .split(',')
            .any(|directive| directive.trim_start().starts_with(quiet));
        if !named {
            filter =
                filter.add_directive(format!("{quiet}=error").parse().expect("a valid directive"));
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn report_config_errors(errors: &config::ConfigErrors) -> ExitCode {
    for error in &errors.0 {
        eprintln!("error: {error}");
    }
    ExitCode::from(1)
}

fn check(path: &Path) -> ExitCode {
    let config = match config::load(path) {
        Ok(config) => config,
        Err(errors) => return report_config_errors(&errors),
    };
    println!("{}: OK", path.display());
    print!("{}", summary(&config));
    ExitCode::SUCCESS
}

/// The one-screen summary `usherd check` prints.
fn summary(config: &Config) -> String {
    let mut out = String::new();
    for listener in &config.listeners {
        out += &format!("listener {:<12} {}", listener.name, listener.listen);
        if let Some(tls) = &listener.tls {
            let certs: Vec<String> = tls
                .certs
                .certs()
                .iter()
                .map(|cert| {
                    format!(
                        "{} (until {})",
                        cert.names.join(" "),
                        humantime::format_rfc3339_seconds(cert.not_after)
                    )
                })
                .collect();
            out += &format!(" tls: {}", certs.join(", "));
        }
        if let Some(port) = listener.redirect_https {
            out += &format!(" redirects to https port {port}");
        }
        out += "\n";
    }
    if let Some(admin) = &config.admin {
        let token = if admin.token.is_some() {
            " (token required)"
        } else {
            ""
        };
        out += &format!("admin    {:<12} {}{token}\n", "", admin.listen);
    }
    for vhost in &config.vhosts {
        let hosts: Vec<String> = vhost.hosts.iter().map(ToString::to_string).collect();
        out += &format!("vhost    {:<12} {}\n", vhost.name, hosts.join(", "));
        for route in &vhost.routes {
            let strip = if route.strip_prefix {
                " (prefix stripped)"
            } else {
                ""
            };
            out += &format!(
                "           {:<20} -> {}{strip}\n",
                route.path, route.upstream
            );
        }
    }
    for upstream in &config.upstreams {
        let mut servers: Vec<String> = upstream
            .servers
            .iter()
            .map(|s| format!("{} w{}", s.addr, s.weight))
            .collect();
        if let Some(discovery) = &upstream.discovery {
            let every = match discovery.source {
                usherd::config::DiscoverySource::Registry { .. }
                | usherd::config::DiscoverySource::Zookeeper { .. }
                | usherd::config::DiscoverySource::Etcd { .. } => String::new(),
                _ => format!(" every {}", humantime::format_duration(discovery.refresh)),
            };
            servers.push(format!(
                "servers from {}{every}",
                discovery.source.describe()
            ));
        }
        let tls = if upstream.transport.tls.is_some() {
            "+tls"
        } else {
            ""
        };
        out += &format!(
            "upstream {:<12} {} over {} ({}{tls})\n",
            upstream.name,
            upstream.strategy.name(),
            servers.join(", "),
            upstream.transport.protocol.name(),
        );
    }
    for warning in &config.warnings {
        out += &format!("warning: {warning}\n");
    }
    out
}

/// Tasks the single-threaded runtime polls between two looks at the socket
/// events while tasks are ready (tokio's default: 61). Under load every look
/// is an `epoll_wait` that finds little new; 200 costs 2.5-5% less CPU per request
/// (benches/compare/ab.sh, docs/benchmarks.md). Events are still taken as soon
/// as no task is ready.
const CURRENT_THREAD_EVENT_INTERVAL: u32 = 200;

fn on_runtime(work: impl std::future::Future<Output = anyhow::Result<ExitCode>>) -> ExitCode {
    // Worker threads: TOKIO_WORKER_THREADS, else one per core. With one, a
    // current-thread runtime does the same work without the work-stealing
    // scheduler's cross-thread bookkeeping.
    let one_worker = std::env::var("TOKIO_WORKER_THREADS").is_ok_and(|n| n.trim() == "1");
    let mut builder = if one_worker {
        let mut builder = tokio::runtime::Builder::new_current_thread();
        builder.event_interval(CURRENT_THREAD_EVENT_INTERVAL);
        builder
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(work) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(config: Config, watch: bool) -> anyhow::Result<ExitCode> {
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let proxy = Proxy::start(config).await?;
    if watch {
        proxy
            .watch_config_file()
            .context("watching the config file (run with --no-watch to do without)")?;
    }
    wait_for_shutdown_signal(&proxy).await?;
    proxy.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// `usherd run --config etcd://...`: the config from the key, followed.
async fn run_from_etcd(
    key: Result<fleet::ConfigKey, String>,
    name: String,
) -> anyhow::Result<ExitCode> {
    let key = match key {
        Ok(key) => key,
        Err(message) => {
            eprintln!("error: {message}");
            return Ok(ExitCode::from(1));
        }
    };
    let (config, revision) = match fleet::load(&key).await {
        Ok(loaded) => loaded,
        Err(message) => {
            eprintln!("error: {message}");
            return Ok(ExitCode::from(1));
        }
    };
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let proxy = Proxy::start(config).await?;
    tracing::info!(config = %key.url(), revision, %name, "following the config in etcd");
    proxy.follow_fleet(key, revision, name);
    wait_for_shutdown_signal(&proxy).await?;
    proxy.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// `usherd check --config etcd://...`.
async fn check_etcd(key: Result<fleet::ConfigKey, String>) -> anyhow::Result<ExitCode> {
    let loaded = match key {
        Ok(key) => fleet::load(&key)
            .await
            .map(|(config, revision)| (key, config, revision)),
        Err(message) => Err(message),
    };
    match loaded {
        Ok((key, config, revision)) => {
            println!("{} (revision {revision}): OK", key.url());
            print!("{}", summary(&config));
            Ok(ExitCode::SUCCESS)
        }
        Err(message) => {
            eprintln!("error: {message}");
            Ok(ExitCode::from(1))
        }
    }
}

/// `usherd fleet status`: prints the table; exit 0 when converged.
async fn fleet_status(key: fleet::ConfigKey) -> anyhow::Result<ExitCode> {
    match fleet::status_table(&key).await {
        Ok((table, converged)) => {
            print!("{table}");
            Ok(if converged {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Err(message) => {
            eprintln!("error: {message}");
            Ok(ExitCode::from(2))
        }
    }
}

/// Waits for SIGTERM or SIGINT; reloads on SIGHUP (a refused reload is logged
/// and shown in /status; the running config stays).
async fn wait_for_shutdown_signal(proxy: &Proxy) -> anyhow::Result<()> {
    let mut terminate = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut hangup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = hangup.recv() => {
                // The outcome is logged and recorded by the reload itself.
                proxy.reload(Trigger::Signal).await.ok();
            }
        }
    }
    tracing::info!("shutting down: no new connections, waiting for requests in flight");
    Ok(())
}

#[cfg(feature = "tools")]
/// The bench's options from its arguments; an error is a bad argument.
fn bench_options(args: &BenchArgs) -> Result<bench::BenchOptions, String> {
    let profile = match &args.profile {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            bench::Profile::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => bench::Profile::from_medians(&args.backends).map_err(|e| e.to_string())?,
    };
    let load = match (&args.replay, args.connections, args.rate) {
        (Some(path), _, _) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let schedule = bench::parse_access_log(&text, &args.replay_key)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            bench::LoadShape::Replay(std::sync::Arc::new(schedule))
        }
        (None, Some(connections), _) if connections > 0 => bench::LoadShape::Closed { connections },
        (None, Some(_), _) => return Err("--connections must be above 0".into()),
        (None, None, rate) => {
            let rate = rate.unwrap_or(200.0);
            if !(rate > 0.0 && rate <= 100_000.0) {
                return Err("--rate must be above 0 and at most 100000".into());
            }
            bench::LoadShape::Open { rate }
        }
    };
    let strategies = if args.strategies.is_empty() {
        bench::all_strategies()
    } else {
        args.strategies
            .iter()
            .map(|name| config::strategy_by_name(name.trim()))
            .collect::<Result<Vec<_>, _>>()?
    };
    if args.duration < std::time::Duration::from_secs(1)
        || args.duration > std::time::Duration::from_secs(3600)
    {
        return Err("--duration must be between 1s and 1h".into());
    }
    if args
        .hash_balance_factor
        .is_some_and(|f| !(f > 1.0 && f <= 100.0))
    {
        return Err("--hash-balance-factor must be above 1.0 and at most 100".into());
    }
    Ok(bench::BenchOptions {
        profile,
        load,
        duration: args.duration,
        strategies,
        seed: args.seed,
        keys: args.keys,
        hash_balance_factor: args.hash_balance_factor,
        progress: true,
    })
}

#[cfg(feature = "tools")]
async fn run_bench(
    options: bench::BenchOptions,
    virtual_time: bool,
    json: Option<PathBuf>,
    svg: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let report = if virtual_time {
        bench::simulate(&options)
    } else {
        bench::run(&options).await?
    };
    print!("{}", report.table());
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("JSON report: {}", path.display());
    }
    if let Some(path) = svg {
        bench::write_svg(&report, &path)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        println!("chart: {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "tools")]
async fn run_demo(port: u16, admin_port: u16) -> anyhow::Result<ExitCode> {
    let backends = demo::start_backends()
        .await
        .context("starting the demo backends")?;
    let config = demo::demo_config(port, admin_port, &backends);
    let proxy = match Proxy::start(config).await {
        Ok(proxy) => proxy,
        Err(error) => {
            eprintln!(
                "error: cannot listen on {}: {}; pick other ports with --port and --admin-port",
                error.addr, error.source
            );
            return Ok(ExitCode::from(2));
        }
    };
    let url = format!("http://{}", proxy.listeners()[0].addr);
    println!("usherd demo: a proxy on {url} in front of three backends, strategy weighted 5/3/1");
    for ((name, addr), weight) in demo::BACKEND_NAMES.iter().zip(&backends).zip([5, 3, 1]) {
        println!("  backend {name:<6} http://{addr}  weight {weight}");
    }
    if let Some(admin) = proxy.admin_addr() {
        println!("  admin   http://{admin}/status");
    }
    println!();
    println!("Try:  for i in $(seq 9); do curl -s {url}/; done");
    println!("Ctrl-C stops everything.");
    wait_for_shutdown_signal(&proxy).await?;
    proxy.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// How long a demo backend waits for its requests in flight after SIGTERM.
#[cfg(feature = "tools")]
const DEMO_BACKEND_DRAIN_LIMIT: Duration = Duration::from_secs(5);

#[cfg(feature = "tools")]
async fn run_demo_backend(
    listen: SocketAddr,
    name: String,
    registration: Option<Registration>,
) -> anyhow::Result<ExitCode> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let mut terminate = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    tracing::info!(%listen, %name, "demo backend serving");
    let stop = tokio_util::sync::CancellationToken::new();
    let serving = tokio::spawn(demo::serve_backend(
        listener,
        Arc::from(name.as_str()),
        stop.clone(),
    ));
    let registered = registration.map(|registration| {
        let leave = tokio_util::sync::CancellationToken::new();
        (tokio::spawn(registration.keep(leave.clone())), leave)
    });
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    // Leave the registry first, so no new request is routed here.
    if let Some((task, leave)) = registered {
        leave.cancel();
        task.await.ok();
    }
    tracing::info!("demo backend stopping: no new connections, finishing requests in flight");
    stop.cancel();
    if tokio::time::timeout(DEMO_BACKEND_DRAIN_LIMIT, serving)
        .await
        .is_err()
    {
        tracing::warn!(
            "demo backend: requests still in flight after {DEMO_BACKEND_DRAIN_LIMIT:?}; exiting"
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_probe(url: http::Uri, timeout: Duration) -> anyhow::Result<ExitCode> {
    match probe::probe(&url, timeout).await {
        Ok(status) if status.is_success() || status.is_redirection() => {
            println!("{url}: {status}");
            Ok(ExitCode::SUCCESS)
        }
        Ok(status) => {
            eprintln!("error: {url}: {status}");
            Ok(ExitCode::from(1))
        }
        Err(message) => {
            eprintln!("error: {message}");
            Ok(ExitCode::from(1))
        }
    }
}
