//! Turns the TOML shape (`file::FileConfig`) into a typed `Config`: defaults
//! applied, every rule of docs/config.md checked, and every error located by
//! file, line and column. All errors are collected, not just the first.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::file::{
    DurationText, FileConfig, HealthCheckSection, OutlierSection, SizeValue, UpstreamSection,
    VhostSection,
};
use super::shape;
use super::{
    Admin, Config, ConfigError, ConfigErrors, Global, HashKey, HashSettings, HealthCheck,
    HostPattern, Listener, Outlier, Route, Server, StrategyKind, Upstream, Vhost,
};

/// How fast peak-EWMA forgets a latency, by default (Finagle and linkerd use 10 s).
pub const DEFAULT_EWMA_DECAY: Duration = Duration::from_secs(10);

/// The smallest request-head limit: a request line and a few headers (nginx's
/// `client_header_buffer_size` default).
pub const MIN_HEADER_LIMIT: u64 = 1024;

/// The highest weight a server may have.
pub const MAX_WEIGHT: u32 = 10_000;

/// Parses and validates config text; `file` names it in error messages, and
/// its directory is where relative paths in it start. The rules are checked
/// once the file's shape is right; shape errors come alone.
pub fn parse_config(text: &str, file: &str) -> Result<Config, ConfigErrors> {
    let base_dir = Path::new(file)
        .parent()
        .map_or_else(PathBuf::new, Path::to_path_buf);
    parse_config_at(text, file, &base_dir)
}

/// As `parse_config`, for text that is not in a file (an etcd key):
/// relative paths in it start at `base_dir`.
pub fn parse_config_at(text: &str, file: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
    let mut checker = Checker {
        text,
        file,
        base_dir: base_dir.to_path_buf(),
        errors: Vec::new(),
        warnings: Vec::new(),
        has_registry: false,
    };
    match shape::deserialize(text) {
        Ok(parsed) => {
            let config = checker.check(parsed);
            if checker.errors.is_empty() {
                return Ok(config);
            }
        }
        Err(errors) => {
            for error in errors {
                checker.error(error.span, error.message);
            }
        }
    }
    checker.errors.sort_by_key(|e| (e.line, e.column));
    Err(ConfigErrors(checker.errors))
}

/// Collects the errors and warnings of one file while converting it.
pub(super) struct Checker<'a> {
    text: &'a str,
    file: &'a str,
    /// Relative paths in the config (certificates, CA files) start here.
    pub(super) base_dir: PathBuf,
    errors: Vec<ConfigError>,
    warnings: Vec<String>,
    /// The file has a [registry] section (`source = "registry"` needs one).
    pub(super) has_registry: bool,
}

impl Checker<'_> {
    pub(super) fn error(&mut self, span: Range<usize>, message: String) {
        let (line, column) = line_and_column(self.text, span.start);
        self.errors.push(ConfigError {
            file: self.file.to_string(),
            line,
            column,
            message,
        });
    }

    pub(super) fn warn(&mut self, span: Range<usize>, message: String) {
        let (line, column) = line_and_column(self.text, span.start);
        self.warnings
            .push(format!("{}:{line}:{column}: {message}", self.file));
    }

    fn check(&mut self, file: FileConfig) -> Config {
        self.has_registry = file.registry.is_some();
        let global = self.global(&file);
        let admin = file.admin.as_ref().and_then(|admin| self.admin(admin));
        let listeners = self.listeners(&file);
        let upstreams = self.upstreams(&file);
        let vhosts = self.vhosts(&file, &listeners, &upstreams);
        let registry = self.registry(&file);
        Config {
            path: None,
            global,
            admin,
            listeners,
            vhosts,
            upstreams,
            registry,
            warnings: std::mem::take(&mut self.warnings),
        }
    }

    fn global(&mut self, file: &FileConfig) -> Global {
        let section = &file.global;
        let defaults = Global::default();
        Global {
            shutdown_timeout: self.duration_or(
                &section.shutdown_timeout,
                "shutdown_timeout",
                defaults.shutdown_timeout,
            ),
            header_read_timeout: self.duration_or(
                &section.header_read_timeout,
                "header_read_timeout",
                defaults.header_read_timeout,
            ),
            idle_timeout: self.duration_or(
                &section.idle_timeout,
                "idle_timeout",
                defaults.idle_timeout,
            ),
            send_timeout: self.duration_or(
                &section.send_timeout,
                "send_timeout",
                defaults.send_timeout,
            ),
            client_body_timeout: self.duration_or(
                &section.client_body_timeout,
                "client_body_timeout",
                defaults.client_body_timeout,
            ),
            client_body_min_rate: match &section.client_body_min_rate {
                Some(value) => match self.size(value, "client_body_min_rate") {
                    Some(0) | None => None,
                    Some(rate) => Some(rate),
                },
                None => defaults.client_body_min_rate,
            },
            max_connections: match &section.max_connections {
                Some(value) if *value.get_ref() < 1 => {
                    self.error(value.span(), "max_connections must be at least 1".into());
                    defaults.max_connections
                }
                Some(value) => *value.get_ref() as usize,
                None => defaults.max_connections,
            },
            max_request_header_size: match &section.max_request_header_size {
                Some(value) => match self.size(value, "max_request_header_size") {
                    Some(size) if size < MIN_HEADER_LIMIT => {
                        self.error(
                            value.span(),
                            format!("max_request_header_size must be at least {MIN_HEADER_LIMIT} bytes (1KiB)"),
                        );
                        defaults.max_request_header_size
                    }
                    Some(size) => usize::try_from(size).unwrap_or(usize::MAX),
                    None => defaults.max_request_header_size,
                },
                None => defaults.max_request_header_size,
            },
            max_request_body: match &section.max_request_body {
                Some(value) => match self.size(value, "max_request_body") {
                    Some(0) | None => None,
                    Some(size) => Some(size),
                },
                None => defaults.max_request_body,
            },
        }
    }

    fn admin(&mut self, admin: &Spanned<super::file::AdminSection>) -> Option<Admin> {
        let section = admin.get_ref();
        let listen = self.socket_addr(&section.listen, "admin listen")?;
        let token = section.token.as_ref().map(|t| t.get_ref().clone());
        if let Some(token) = &section.token {
            if token.get_ref().is_empty() {
                self.error(token.span(), "admin token must not be empty".into());
            }
        }
        if token.is_none() && !listen.ip().is_loopback() {
            self.error(
                section.listen.span(),
                format!(
                    "admin listen {listen} is not a loopback address, so [admin] needs a token"
                ),
            );
        }
        Some(Admin { listen, token })
    }

    fn listeners(&mut self, file: &FileConfig) -> Vec<Listener> {
        if file.listeners.is_empty() {
            self.error(
                0..0,
                "no listeners: add at least one [listeners.NAME] with a listen address".into(),
            );
        }
        let mut seen_addrs: HashMap<SocketAddr, String> = HashMap::new();
        let mut listeners = Vec::new();
        for (name, section) in in_file_order(&file.listeners) {
            self.name(name, "listener");
            let section_ref = section.get_ref();
            let tls = section_ref
                .tls
                .as_ref()
                .and_then(|tls| self.listener_tls(tls));
            let redirect_https = self.redirect_https(section_ref);
            let Some(listen) = self.socket_addr(&section_ref.listen, "listen") else {
                continue;
            };
            // Port 0 asks the OS for a free port: never a clash.
            let clash = (listen.port() != 0)
                .then(|| seen_addrs.insert(listen, name.get_ref().clone()))
                .flatten();
            if let Some(other) = clash {
                self.error(
                    section_ref.listen.span(),
                    format!("listen address {listen} is already used by listener `{other}`"),
                );
            }
            listeners.push(Listener {
                name: name.get_ref().clone(),
                listen,
                tls,
                redirect_https,
            });
        }
        listeners
    }

    fn upstreams(&mut self, file: &FileConfig) -> Vec<Upstream> {
        in_file_order(&file.upstreams)
            .map(|(name, section)| self.upstream(name, section))
            .collect()
    }

    fn upstream(&mut self, name: &Spanned<String>, section: &Spanned<UpstreamSection>) -> Upstream {
        self.name(name, "upstream");
        let body = section.get_ref();
        let mut strategy = match &body.strategy {
            None => StrategyKind::RoundRobin,
            Some(value) => match strategy_by_name(value.get_ref()) {
                Ok(kind) => kind,
                Err(message) => {
                    self.error(value.span(), message);
                    StrategyKind::RoundRobin
                }
            },
        };
        let hash = self.hash_settings(body, strategy);
        match (&mut strategy, &body.ewma_decay) {
            (StrategyKind::PeakEwma { decay }, Some(_)) => {
                *decay = self.duration_or(&body.ewma_decay, "ewma_decay", DEFAULT_EWMA_DECAY);
            }
            (_, Some(value)) => {
                self.error(
                    value.span(),
                    "ewma_decay applies only to strategy peak_ewma".into(),
                );
            }
            _ => {}
        }
        if body.servers.is_empty() && body.discovery.is_none() {
            self.error(
                section.span(),
                format!(
                    "upstream `{}` has no servers: list some, or find them with [upstreams.{}.discovery]",
                    name.get_ref(),
                    name.get_ref()
                ),
            );
        }
        let mut servers = Vec::new();
        let mut seen = HashSet::new();
        let mut weights_set = false;
        for server in &body.servers {
            let server = server.get_ref();
            let addr = server.addr.get_ref();
            if let Err(message) = check_server_addr(addr) {
                self.error(server.addr.span(), message);
                continue;
            }
            if !seen.insert(addr.to_ascii_lowercase()) {
                self.error(
                    server.addr.span(),
                    format!(
                        "server {addr} is listed twice in upstream `{}`",
                        name.get_ref()
                    ),
                );
                continue;
            }
            let weight = match &server.weight {
                None => 1,
                Some(weight) => {
                    weights_set = true;
                    let value = *weight.get_ref();
                    if value < 1 || value > i64::from(MAX_WEIGHT) {
                        self.error(
                            weight.span(),
                            format!("weight {value} is out of range: use 1 to {MAX_WEIGHT}"),
                        );
                        1
                    } else {
                        value as u32
                    }
                }
            };
            servers.push(Server {
                addr: addr.clone(),
                weight,
            });
        }
        if weights_set
            && matches!(
                strategy,
                StrategyKind::RoundRobin | StrategyKind::Random | StrategyKind::PeakEwma { .. }
            )
        {
            self.warn(
                section.span(),
                format!(
                    "upstream `{}` sets weights but strategy `{}` ignores them",
                    name.get_ref(),
                    strategy.name()
                ),
            );
        }
        let retries = match &body.retries {
            None => 1,
            Some(value) if !(0..=10).contains(value.get_ref()) => {
                self.error(value.span(), "retries must be between 0 and 10".into());
                1
            }
            Some(value) => *value.get_ref() as u32,
        };
        let max_connections_per_server = match &body.max_connections_per_server {
            None => None,
            Some(value) if *value.get_ref() < 0 || *value.get_ref() > i64::from(u32::MAX) => {
                self.error(
                    value.span(),
                    "max_connections_per_server must be 0 (unlimited) or a positive number".into(),
                );
                None
            }
            Some(value) if *value.get_ref() == 0 => None,
            Some(value) => Some(*value.get_ref() as u32),
        };
        Upstream {
            name: name.get_ref().clone(),
            strategy,
            servers,
            connect_timeout: self.duration_or(
                &body.connect_timeout,
                "connect_timeout",
                Duration::from_secs(1),
            ),
            timeout: self.duration_or(&body.timeout, "timeout", Duration::from_secs(30)),
            retries,
            max_connections_per_server,
            hash,
            health_check: body
                .health_check
                .as_ref()
                .map(|check| self.health_check(check)),
            outlier: body
                .outlier
                .as_ref()
                .map(|outlier| self.outlier(outlier.get_ref())),
            transport: self.transport(name.get_ref(), body),
            discovery: body
                .discovery
                .as_ref()
                .and_then(|section| self.discovery(section)),
        }
    }

    /// `hash_key` and `hash_balance_factor`, which only `consistent_hash` takes.
    fn hash_settings(
        &mut self,
        body: &UpstreamSection,
        strategy: StrategyKind,
    ) -> Option<HashSettings> {
        if strategy != StrategyKind::ConsistentHash {
            for (span, what) in [
                (body.hash_key.as_ref().map(|k| k.span()), "hash_key"),
                (
                    body.hash_balance_factor.as_ref().map(|f| f.span()),
                    "hash_balance_factor",
                ),
            ] {
                if let Some(span) = span {
                    self.error(
                        span,
                        format!("{what} applies only to strategy consistent_hash"),
                    );
                }
            }
            return None;
        }
        let key = match &body.hash_key {
            None => HashKey::ClientIp,
            Some(value) => hash_key(value.get_ref()).unwrap_or_else(|message| {
                self.error(value.span(), message);
                HashKey::ClientIp
            }),
        };
        let balance_factor = match &body.hash_balance_factor {
            Some(value) if !(*value.get_ref() > 1.0 && *value.get_ref() <= 100.0) => {
                self.error(
                    value.span(),
                    "hash_balance_factor must be above 1.0 (e.g. 1.25) and at most 100".into(),
                );
                None
            }
            Some(value) => Some(*value.get_ref()),
            None => None,
        };
        Some(HashSettings {
            key,
            balance_factor,
        })
    }

    fn health_check(&mut self, section: &Spanned<HealthCheckSection>) -> HealthCheck {
        let body = section.get_ref();
        let path = match &body.path {
            Some(path) if !path.get_ref().starts_with('/') => {
                self.error(
                    path.span(),
                    format!("health check path `{}` must start with `/`", path.get_ref()),
                );
                "/".to_string()
            }
            Some(path) => path.get_ref().clone(),
            None => "/healthz".to_string(),
        };
        let interval = self.duration_or(&body.interval, "interval", Duration::from_secs(2));
        let timeout = self.duration_or(&body.timeout, "timeout", Duration::from_secs(1));
        if timeout > interval {
            self.warn(
                section.span(),
                "health check timeout is longer than its interval; checks will overlap".into(),
            );
        }
        let expect_status = match &body.expect_status {
            None => vec![(200, 399)],
            Some(value) => match status_ranges(value.get_ref()) {
                Some(ranges) => ranges,
                None => {
                    self.error(
                        value.span(),
                        format!(
                            "expect_status `{}` is not a status or range like \"200\", \"200-399\" or \"200,204\"",
                            value.get_ref()
                        ),
                    );
                    vec![(200, 399)]
                }
            },
        };
        HealthCheck {
            path,
            interval,
            timeout,
            rise: self.count_or(&body.rise, "rise", 2, 100),
            fall: self.count_or(&body.fall, "fall", 3, 100),
            expect_status,
        }
    }

    fn outlier(&mut self, section: &OutlierSection) -> Outlier {
        Outlier {
            consecutive_failures: self.count_or(
                &section.consecutive_failures,
                "consecutive_failures",
                5,
                1000,
            ),
            ejection_time: self.duration_or(
                &section.ejection_time,
                "ejection_time",
                Duration::from_secs(30),
            ),
        }
    }

    /// A count from 1 to `max`, or `default` when not set.
    fn count_or(
        &mut self,
        value: &Option<Spanned<i64>>,
        what: &str,
        default: u32,
        max: u32,
    ) -> u32 {
        match value {
            None => default,
            Some(value) if !(1..=i64::from(max)).contains(value.get_ref()) => {
                self.error(value.span(), format!("{what} must be between 1 and {max}"));
                default
            }
            Some(value) => *value.get_ref() as u32,
        }
    }

    fn vhosts(
        &mut self,
        file: &FileConfig,
        listeners: &[Listener],
        upstreams: &[Upstream],
    ) -> Vec<Vhost> {
        let listener_names: HashSet<&str> = listeners.iter().map(|l| l.name.as_str()).collect();
        let all_listeners: Vec<String> = listeners.iter().map(|l| l.name.clone()).collect();
        let upstream_names: HashSet<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
        // (listener, host pattern) -> vhost that claimed it first.
        let mut claims: BTreeMap<(String, HostPattern), String> = BTreeMap::new();
        let mut vhosts = Vec::new();
        for (name, section) in in_file_order(&file.vhosts) {
            self.name(name, "vhost");
            let vhost = self.vhost(
                name,
                section.get_ref(),
                &all_listeners,
                &listener_names,
                &upstream_names,
            );
            for (pattern, span) in vhost.hosts.iter().zip(section.get_ref().hosts.get_ref()) {
                for listener in &vhost.listeners {
                    let key = (listener.clone(), pattern.clone());
                    if let Some(other) = claims.get(&key) {
                        self.error(
                            span.span(),
                            format!(
                                "host `{pattern}` is already claimed by vhost `{other}` on listener `{listener}`"
                            ),
                        );
                        break;
                    }
                    claims.insert(key, vhost.name.clone());
                }
            }
            vhosts.push(vhost);
        }
        vhosts
    }

    fn vhost(
        &mut self,
        name: &Spanned<String>,
        section: &VhostSection,
        all_listeners: &[String],
        listener_names: &HashSet<&str>,
        upstream_names: &HashSet<&str>,
    ) -> Vhost {
        if section.hosts.get_ref().is_empty() {
            self.error(
                section.hosts.span(),
                format!("vhost `{}` has no hosts", name.get_ref()),
            );
        }
        let mut hosts = Vec::new();
        for host in section.hosts.get_ref() {
            match host_pattern(host.get_ref()) {
                Ok(pattern) => hosts.push(pattern),
                Err(message) => self.error(host.span(), message),
            }
        }
        let listeners = match &section.listeners {
            None => all_listeners.to_vec(),
            Some(names) => {
                for listener in names {
                    if !listener_names.contains(listener.get_ref().as_str()) {
                        self.error(
                            listener.span(),
                            format!(
                                "vhost `{}` names unknown listener `{}`",
                                name.get_ref(),
                                listener.get_ref()
                            ),
                        );
                    }
                }
                names.iter().map(|l| l.get_ref().clone()).collect()
            }
        };
        if section.routes.is_empty() {
            self.error(
                name.span(),
                format!("vhost `{}` has no routes", name.get_ref()),
            );
        }
        let mut routes = Vec::new();
        let mut paths = HashSet::new();
        for route in &section.routes {
            let route = route.get_ref();
            let path = route.path.get_ref();
            if !path.starts_with('/') {
                self.error(
                    route.path.span(),
                    format!("route path `{path}` must start with `/`"),
                );
            } else if !paths.insert(path.clone()) {
                self.error(
                    route.path.span(),
                    format!(
                        "route path `{path}` appears twice in vhost `{}`",
                        name.get_ref()
                    ),
                );
            }
            if !upstream_names.contains(route.upstream.get_ref().as_str()) {
                self.error(
                    route.upstream.span(),
                    format!(
                        "route names unknown upstream `{}`",
                        route.upstream.get_ref()
                    ),
                );
            }
            routes.push(Route {
                path: path.clone(),
                upstream: route.upstream.get_ref().clone(),
                strip_prefix: route.strip_prefix,
            });
        }
        Vhost {
            name: name.get_ref().clone(),
            hosts,
            listeners,
            routes,
        }
    }

    fn name(&mut self, name: &Spanned<String>, what: &str) {
        let valid = !name.get_ref().is_empty()
            && name
                .get_ref()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !valid {
            self.error(
                name.span(),
                format!(
                    "{what} name `{}` may only use letters, digits, `_`, `.` and `-`",
                    name.get_ref()
                ),
            );
        }
    }

    fn socket_addr(&mut self, value: &Spanned<String>, what: &str) -> Option<SocketAddr> {
        match value.get_ref().parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.error(
                    value.span(),
                    format!(
                        "{what} `{}` is not an IP address with a port, like 127.0.0.1:8080",
                        value.get_ref()
                    ),
                );
                None
            }
        }
    }

    pub(super) fn duration_or(
        &mut self,
        value: &Option<Spanned<DurationText>>,
        what: &str,
        default: Duration,
    ) -> Duration {
        let Some(value) = value else {
            return default;
        };
        let text = &value.get_ref().0;
        match humantime::parse_duration(text) {
            Ok(duration) if duration.is_zero() => {
                self.error(value.span(), format!("{what} must be above zero"));
                default
            }
            Ok(duration) => duration,
            Err(error) => {
                self.error(
                    value.span(),
                    format!(
                        "{what} `{text}` is not a duration like \"250ms\", \"2s\" or \"1m\": {error}"
                    ),
                );
                default
            }
        }
    }

    pub(super) fn size(&mut self, value: &Spanned<SizeValue>, what: &str) -> Option<u64> {
        match value.get_ref() {
            SizeValue::Bytes(bytes) if *bytes < 0 => {
                self.error(value.span(), format!("{what} must not be negative"));
                None
            }
            SizeValue::Bytes(bytes) => Some(*bytes as u64),
            SizeValue::Text(text) => match parse_size::parse_size(text) {
                Ok(bytes) => Some(bytes),
                Err(error) => {
                    self.error(
                        value.span(),
                        format!(
                            "{what} `{text}` is not a size like \"64KiB\", \"10MiB\" or 1048576: {error}"
                        ),
                    );
                    None
                }
            },
        }
    }
}

/// The sections of a table in the order the file has them.
fn in_file_order<T>(
    table: &BTreeMap<Spanned<String>, T>,
) -> impl Iterator<Item = (&Spanned<String>, &T)> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(name, _)| name.span().start);
    entries.into_iter()
}

/// The strategy a config or `usherd bench --strategies` names.
pub fn strategy_by_name(name: &str) -> Result<StrategyKind, String> {
    match name {
        "round_robin" => Ok(StrategyKind::RoundRobin),
        "random" => Ok(StrategyKind::Random),
        "weighted" => Ok(StrategyKind::Weighted),
        "weighted_random" => Ok(StrategyKind::WeightedRandom),
        "least_connections" => Ok(StrategyKind::LeastConnections),
        "peak_ewma" => Ok(StrategyKind::PeakEwma {
            decay: DEFAULT_EWMA_DECAY,
        }),
        "consistent_hash" => Ok(StrategyKind::ConsistentHash),
        other => Err(format!(
            "unknown strategy `{other}`; expected one of round_robin, random, weighted, weighted_random, least_connections, peak_ewma, consistent_hash"
        )),
    }
}

/// `client_ip`, `path`, `header:NAME` or `cookie:NAME`.
fn hash_key(text: &str) -> Result<HashKey, String> {
    match text.split_once(':') {
        None if text == "client_ip" => Ok(HashKey::ClientIp),
        None if text == "path" => Ok(HashKey::Path),
        Some(("header", name)) => http::HeaderName::from_bytes(name.as_bytes())
            .map(HashKey::Header)
            .map_err(|_| format!("`{name}` is not a header name")),
        Some(("cookie", name))
            if !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"=;,\"".contains(&b)) =>
        {
            Ok(HashKey::Cookie(name.to_string()))
        }
        _ => Err(format!(
            "hash_key `{text}` is not client_ip, path, header:NAME or cookie:NAME"
        )),
    }
}

/// `"200"`, `"200-399"`, `"200,204,300-399"`: inclusive ranges of statuses.
fn status_ranges(text: &str) -> Option<Vec<(u16, u16)>> {
    let status = |s: &str| {
        s.trim()
            .parse::<u16>()
            .ok()
            .filter(|code| (100..=599).contains(code))
    };
    text.split(',')
        .map(|part| match part.split_once('-') {
            Some((low, high)) => {
                let (low, high) = (status(low)?, status(high)?);
                (low <= high).then_some((low, high))
            }
            None => status(part).map(|code| (code, code)),
        })
        .collect()
}

/// Checks a server address: `host:port` where host is an IP, `[v6]` or a DNS name.
fn check_server_addr(addr: &str) -> Result<(), String> {
    if addr.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let bad = || {
        format!(
            "server address `{addr}` is not host:port, like 127.0.0.1:9001 or api.internal:9000"
        )
    };
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let port_ok = port.parse::<u16>().map(|p| p != 0).unwrap_or(false);
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if port_ok && host_ok {
        Ok(())
    } else {
        Err(bad())
    }
}

fn host_pattern(host: &str) -> Result<HostPattern, String> {
    let lower = host.to_ascii_lowercase();
    let valid_name = |name: &str| {
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    };
    if lower == "*" {
        return Ok(HostPattern::Any);
    }
    if let Some(suffix) = lower.strip_prefix("*.") {
        if valid_name(suffix) {
            return Ok(HostPattern::Suffix(format!(".{suffix}")));
        }
    } else if valid_name(&lower) {
        return Ok(HostPattern::Exact(lower));
    }
    Err(format!(
        "host `{host}` is not a name (`shop.example.com`), a wildcard (`*.example.com`) or `*`; leave out the port"
    ))
}

/// 1-based line and column (in characters) of a byte offset.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_counts_from_one() {
        let text = "a = 1\nbb = 2\n";
        assert_eq!(line_and_column(text, 0), (1, 1));
        assert_eq!(line_and_column(text, 6), (2, 1));
        assert_eq!(line_and_column(text, 9), (2, 4));
    }

    #[test]
    fn server_addresses() {
        assert!(check_server_addr("127.0.0.1:9001").is_ok());
        assert!(check_server_addr("[::1]:9001").is_ok());
        assert!(check_server_addr("api-2.internal:9000").is_ok());
        assert!(check_server_addr("api-2.internal").is_err());
        assert!(check_server_addr("api:0").is_err());
        assert!(check_server_addr("a b:80").is_err());
    }

    #[test]
    fn status_ranges_parse() {
        assert_eq!(status_ranges("200-399"), Some(vec![(200, 399)]));
        assert_eq!(
            status_ranges("200, 204,300-301"),
            Some(vec![(200, 200), (204, 204), (300, 301)])
        );
        assert_eq!(status_ranges("399-200"), None);
        assert_eq!(status_ranges("2xx"), None);
        assert_eq!(status_ranges("700"), None);
    }

    #[test]
    fn host_patterns() {
        assert_eq!(host_pattern("*").unwrap(), HostPattern::Any);
        assert_eq!(
            host_pattern("*.Shop.example.com").unwrap(),
            HostPattern::Suffix(".shop.example.com".into())
        );
        assert_eq!(
            host_pattern("Shop.example.com").unwrap(),
            HostPattern::Exact("shop.example.com".into())
        );
        assert!(host_pattern("shop.example.com:80").is_err());
        assert!(host_pattern("*.").is_err());
    }
}
