//! The `usherd` command line (shared/SPEC.md §1): `run`, `check`, `demo`;
//! logging; signals; exit codes (0 clean, 1 bad config or arguments, 2 runtime
//! failure).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

use usherd::config::{self, Config};
use usherd::reload::Trigger;
use usherd::{demo, Proxy};

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
    /// Run the proxy (the default command).
    Run {
        /// Do not reload when the config file changes (SIGHUP and POST /reload still do).
        #[arg(long)]
        no_watch: bool,
    },
    /// Validate a config: print a summary and exit 0, or every error and exit 1.
    Check,
    /// Start 3 demo backends and a proxy in front of them.
    Demo {
        /// Port of the demo proxy on 127.0.0.1 (0: any free port).
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Port of the demo's admin API on 127.0.0.1 (0: any free port).
        #[arg(long, default_value_t = 9901)]
        admin_port: u16,
    },
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
    init_logging(cli.log_format);
    let config_path = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    match cli.command.unwrap_or(Command::Run { no_watch: false }) {
        Command::Check => check(&config_path),
        Command::Run { no_watch } => {
            let config = match config::load(&config_path) {
                Ok(config) => config,
                Err(errors) => return report_config_errors(&errors),
            };
            on_runtime(run(config, !no_watch))
        }
        Command::Demo { port, admin_port } => on_runtime(run_demo(port, admin_port)),
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
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
        out += &format!("listener {:<12} {}\n", listener.name, listener.listen);
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
        let servers: Vec<String> = upstream
            .servers
            .iter()
            .map(|s| format!("{} w{}", s.addr, s.weight))
            .collect();
        out += &format!(
            "upstream {:<12} {} over {}\n",
            upstream.name,
            upstream.strategy.name(),
            servers.join(", ")
        );
    }
    for warning in &config.warnings {
        out += &format!("warning: {warning}\n");
    }
    out
}

fn on_runtime(work: impl std::future::Future<Output = anyhow::Result<ExitCode>>) -> ExitCode {
    // Worker threads: TOKIO_WORKER_THREADS, else one per core.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
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
