//! Every validation rule of docs/config.md refuses a bad config with a
//! clear message at the right line; `usherd check` reports it and exits 1.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use usherd::config::{parse_config, ConfigError, StrategyKind};

/// A valid base config; tests append or replace parts.
const BASE: &str = r#"
[listeners.web]
listen = "127.0.0.1:8080"

[vhosts.site]
hosts = ["site.example.com"]
routes = [{ path = "/", upstream = "app" }]

[upstreams.app]
strategy = "weighted"
servers = [{ addr = "127.0.0.1:9001", weight = 2 }]
"#;

fn errors(text: &str) -> Vec<ConfigError> {
    parse_config(text, "bad.toml")
        .expect_err("config must be refused")
        .0
}

/// The one error `text` has: at `line`, with a message containing `needle`.
#[track_caller]
fn assert_error(text: &str, line: usize, needle: &str) {
    let errors = errors(text);
    let error = errors
        .iter()
        .find(|e| e.message.contains(needle))
        .unwrap_or_else(|| panic!("no error containing {needle:?} in {errors:?}"));
    assert_eq!(error.line, line, "{error}");
    assert_eq!(error.file, "bad.toml");
    assert!(error.column >= 1);
    assert!(error.to_string().starts_with(&format!("bad.toml:{line}:")));
}

#[test]
fn base_config_is_valid() {
    let config = parse_config(BASE, "ok.toml").unwrap();
    assert_eq!(config.upstreams[0].servers[0].weight, 2);
    assert_eq!(config.global.max_request_header_size, 64 * 1024);
}

#[test]
fn route_to_unknown_upstream() {
    let text = BASE.replace(r#"upstream = "app""#, r#"upstream = "nope""#);
    assert_error(&text, 7, "unknown upstream `nope`");
}

#[test]
fn vhost_on_unknown_listener() {
    let text = BASE.replace(
        r#"hosts = ["site.example.com"]"#,
        "hosts = [\"site.example.com\"]\nlisteners = [\"webb\"]",
    );
    assert_error(&text, 7, "unknown listener `webb`");
}

#[test]
fn two_vhosts_claiming_one_host_on_a_shared_listener() {
    let text = format!(
        "{BASE}\n[vhosts.other]\nhosts = [\"other.example.com\", \"SITE.example.com\"]\nroutes = [{{ path = \"/\", upstream = \"app\" }}]\n"
    );
    assert_error(&text, 14, "already claimed by vhost `site`");
    // On different listeners the same host is fine.
    let text = format!(
        "{BASE}\n[listeners.b]\nlisten = \"127.0.0.1:8081\"\n[vhosts.other]\nhosts = [\"site.example.com\"]\nlisteners = [\"b\"]\nroutes = [{{ path = \"/\", upstream = \"app\" }}]\n"
    );
    let text = text.replace(
        r#"hosts = ["site.example.com"]
routes"#,
        "hosts = [\"site.example.com\"]\nlisteners = [\"web\"]\nroutes",
    );
    parse_config(&text, "ok.toml").unwrap();
}

#[test]
fn upstream_without_servers() {
    let text = BASE.replace(
        r#"servers = [{ addr = "127.0.0.1:9001", weight = 2 }]"#,
        "servers = []",
    );
    assert_error(&text, 9, "has no servers");
}

#[test]
fn weight_out_of_range() {
    let text = BASE.replace("weight = 2", "weight = 0");
    assert_error(&text, 11, "weight 0 is out of range");
    let text = BASE.replace("weight = 2", "weight = 10001");
    assert_error(&text, 11, "weight 10001 is out of range");
    let text = BASE.replace("weight = 2", "weight = 10000");
    parse_config(&text, "ok.toml").unwrap();
}

#[test]
fn duplicate_server() {
    let text = BASE.replace(
        r#"servers = [{ addr = "127.0.0.1:9001", weight = 2 }]"#,
        "servers = [\n  { addr = \"127.0.0.1:9001\" },\n  { addr = \"127.0.0.1:9001\" },\n]",
    );
    assert_error(&text, 13, "listed twice");
}

#[test]
fn unparsable_addresses() {
    let text = BASE.replace(r#"listen = "127.0.0.1:8080""#, r#"listen = "localhost""#);
    assert_error(&text, 3, "not an IP address with a port");
    let text = BASE.replace("127.0.0.1:9001", "127.0.0.1");
    assert_error(&text, 11, "is not host:port");
}

#[test]
fn unparsable_durations_and_sizes() {
    let text = format!("[global]\nidle_timeout = \"soon\"\n{BASE}");
    assert_error(&text, 2, "idle_timeout `soon` is not a duration");
    let text = format!("[global]\nmax_request_body = \"ten megs\"\n{BASE}");
    assert_error(&text, 2, "max_request_body `ten megs` is not a size");
    let text = BASE.replace(
        "strategy = \"weighted\"",
        "strategy = \"weighted\"\ntimeout = \"-1s\"",
    );
    assert_error(&text, 11, "timeout `-1s` is not a duration");
    let text =
        format!("[global]\nmax_request_body = \"10MiB\"\nmax_request_header_size = 16384\n{BASE}");
    let config = parse_config(&text, "ok.toml").unwrap();
    assert_eq!(config.global.max_request_body, Some(10 * 1024 * 1024));
    assert_eq!(config.global.max_request_header_size, 16384);
    let text = format!("[global]\nmax_request_header_size = \"512B\"\n{BASE}");
    assert_error(
        &text,
        2,
        "max_request_header_size must be at least 1024 bytes",
    );
}

#[test]
fn unknown_strategy() {
    let text = BASE.replace("\"weighted\"", "\"fastest\"");
    assert_error(&text, 10, "unknown strategy `fastest`");
}

#[test]
fn non_loopback_admin_needs_a_token() {
    let text = format!("[admin]\nlisten = \"0.0.0.0:9901\"\n{BASE}");
    assert_error(&text, 2, "needs a token");
    let text = format!("[admin]\nlisten = \"0.0.0.0:9901\"\ntoken = \"s3cret\"\n{BASE}");
    parse_config(&text, "ok.toml").unwrap();
    let text = format!("[admin]\nlisten = \"127.0.0.1:9901\"\n{BASE}");
    parse_config(&text, "ok.toml").unwrap();
}

#[test]
fn unknown_keys_are_typos() {
    let text = BASE.replace("strategy = ", "stratgy = ");
    assert_error(&text, 10, "unknown field `stratgy`");
    let text = format!("[globl]\n{BASE}");
    assert_error(&text, 1, "unknown field `globl`");
}

/// Ten mistakes in the file's shape: unknown keys at three depths (two of them
/// near misses), wrong types in `[global]`, an array element and
/// `health_check`, a string for a table, and a server without `addr`.
const TEN_SHAPE_MISTAKES: &str = r#"[global]
max_connections = "lots"
idle_timeout = 30
max_request_body = true

[listeners.web]
listen = "127.0.0.1:8080"
tls = "yes"

[vhosts.site]
hosts = ["site.example.com"]
routes = [{ path = "/", upstream = "api", strip_prefx = true }]

[upstreams.api]
stratgy = "weighted"
servers = [
  { addr = "127.0.0.1:9001", weight = 2 },
  { addr = "127.0.0.1:9002", weight = "lots" },
  { weight = 3 },
]

[upstreams.api.health_check]
interval = "2s"
rise = "two"

[metrics]
enabled = true
"#;

/// The errors of `TEN_SHAPE_MISTAKES` in file order: line, column, message.
const TEN_SHAPE_ERRORS: [(usize, usize, &str); 10] = [
    (
        2,
        19,
        r#"global.max_connections: expected a whole number, found the string "lots""#,
    ),
    (
        3,
        16,
        r#"global.idle_timeout: expected a duration string such as "5s", found the whole number 30"#,
    ),
    (
        4,
        20,
        r#"global.max_request_body: expected a size such as "64KiB" or a number of bytes, found the boolean true"#,
    ),
    (
        8,
        7,
        r#"listeners.web.tls: expected a table, found the string "yes""#,
    ),
    (
        12,
        43,
        "vhosts.site.routes[0].strip_prefx: unknown field `strip_prefx`, did you mean `strip_prefix`?",
    ),
    (
        15,
        1,
        "upstreams.api.stratgy: unknown field `stratgy`, did you mean `strategy`?",
    ),
    (
        18,
        39,
        r#"upstreams.api.servers[1].weight: expected a whole number, found the string "lots""#,
    ),
    (
        19,
        3,
        "upstreams.api.servers[2]: missing required key `addr`",
    ),
    (
        24,
        8,
        r#"upstreams.api.health_check.rise: expected a whole number, found the string "two""#,
    ),
    (
        26,
        2,
        "metrics: unknown field `metrics`, expected one of `global`, `admin`, `listeners`, `vhosts`, `upstreams`, `registry`",
    ),
];

#[test]
fn every_shape_error_is_reported_in_one_run() {
    let errors = errors(TEN_SHAPE_MISTAKES);
    let found: Vec<(usize, usize, &str)> = errors
        .iter()
        .map(|e| (e.line, e.column, e.message.as_str()))
        .collect();
    assert_eq!(found, TEN_SHAPE_ERRORS);
    assert!(errors.iter().all(|e| e.file == "bad.toml"));
}

#[test]
fn rules_are_checked_once_the_shape_is_right() {
    let text = BASE
        .replace("strategy = ", "stratgy = ")
        .replace(r#"upstream = "app""#, r#"upstream = "nope""#);
    let messages: Vec<String> = errors(&text).into_iter().map(|e| e.message).collect();
    assert_eq!(
        messages,
        ["upstreams.app.stratgy: unknown field `stratgy`, did you mean `strategy`?"]
    );
}

#[test]
fn toml_syntax_error() {
    let text = BASE.replace(
        "hosts = [\"site.example.com\"]",
        "hosts = [\"site.example.com\"",
    );
    let errors = errors(&text);
    assert_eq!(errors.len(), 1);
    assert!(errors[0].line >= 6, "{}", errors[0]);
}

#[test]
fn names_are_restricted() {
    let text = BASE
        .replace("[upstreams.app]", "[upstreams.\"my app\"]")
        .replace("upstream = \"app\"", "upstream = \"my app\"");
    assert_error(&text, 9, "may only use letters");
}

#[test]
fn no_listeners() {
    let text = "[upstreams.app]\nservers = [{ addr = \"127.0.0.1:1\" }]\n";
    assert_error(text, 1, "no listeners");
}

#[test]
fn health_check_and_outlier_settings_are_checked() {
    let text = format!(
        "{BASE}\n[upstreams.app.health_check]\npath = \"healthz\"\nrise = 0\nexpect_status = \"2xx\"\n[upstreams.app.outlier]\nconsecutive_failures = 0\nejection_time = \"never\"\n"
    );
    assert_error(&text, 14, "must start with `/`");
    assert_error(&text, 15, "rise must be between 1 and 100");
    assert_error(&text, 16, "expect_status `2xx` is not a status or range");
    assert_error(&text, 18, "consecutive_failures must be between 1 and 1000");
    assert_error(&text, 19, "ejection_time `never` is not a duration");
    let text = format!(
        "{BASE}\n[upstreams.app.health_check]\npath = \"/ready\"\ninterval = \"500ms\"\nexpect_status = \"200,204\"\n[upstreams.app.outlier]\n"
    );
    let config = parse_config(&text, "ok.toml").unwrap();
    let check = config.upstreams[0].health_check.as_ref().unwrap();
    assert_eq!(check.path, "/ready");
    assert_eq!((check.rise, check.fall), (2, 3));
    assert!(check.passes(204) && !check.passes(201));
    let outlier = config.upstreams[0].outlier.unwrap();
    assert_eq!(outlier.consecutive_failures, 5);
    assert_eq!(outlier.ejection_time, std::time::Duration::from_secs(30));
}

#[test]
fn strategy_settings_are_checked() {
    let with = |strategy: &str, extra: &str| {
        BASE.replace(
            "strategy = \"weighted\"",
            &format!("strategy = \"{strategy}\"\n{extra}"),
        )
    };
    assert_error(
        &with("weighted", "hash_key = \"path\""),
        11,
        "hash_key applies only to strategy consistent_hash",
    );
    assert_error(
        &with("consistent_hash", "hash_key = \"ip\""),
        11,
        "hash_key `ip` is not client_ip, path",
    );
    assert_error(
        &with("consistent_hash", "hash_key = \"header:bad header\""),
        11,
        "is not a header name",
    );
    assert_error(
        &with("consistent_hash", "hash_balance_factor = 0.9"),
        11,
        "hash_balance_factor must be above 1.0",
    );
    assert_error(
        &with("least_connections", "ewma_decay = \"5s\""),
        11,
        "ewma_decay applies only to strategy peak_ewma",
    );
    let config = parse_config(
        &with(
            "consistent_hash",
            "hash_key = \"cookie:sid\"\nhash_balance_factor = 1.25",
        ),
        "ok.toml",
    )
    .unwrap();
    let hash = config.upstreams[0].hash.as_ref().unwrap();
    assert_eq!(hash.key.to_string(), "cookie:sid");
    assert_eq!(hash.balance_factor, Some(1.25));
    let config = parse_config(&with("peak_ewma", "ewma_decay = \"3s\""), "ok.toml").unwrap();
    assert_eq!(
        config.upstreams[0].strategy,
        usherd::config::StrategyKind::PeakEwma {
            decay: std::time::Duration::from_secs(3)
        }
    );
    assert!(config.warnings[0].contains("ignores them"));
}

#[test]
fn all_errors_are_reported_in_file_order() {
    let text = BASE
        .replace("weight = 2", "weight = 0")
        .replace(r#"upstream = "app""#, r#"upstream = "nope""#);
    let lines: Vec<usize> = errors(&text).iter().map(|e| e.line).collect();
    assert_eq!(lines, [7, 11]);
}

#[test]
fn round_robin_with_weights_warns() {
    let text = BASE.replace("\"weighted\"", "\"round_robin\"");
    let config = parse_config(&text, "ok.toml").unwrap();
    assert_eq!(config.warnings.len(), 1);
    assert!(
        config.warnings[0].contains("ignores them"),
        "{:?}",
        config.warnings
    );
}

#[test]
fn check_command_accepts_every_example_config() {
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/config")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|ext| ext != "toml") {
            continue;
        }
        let output = Command::new(env!("CARGO_BIN_EXE_usherd"))
            .args(["check", "-c"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(String::from_utf8_lossy(&output.stdout).contains("OK"));
    }
}

#[test]
fn check_command_prints_every_error_and_exits_1() {
    let path = support::tempfile_path::TempPath::new("bad", "toml");
    let text = BASE
        .replace("weight = 2", "weight = 0")
        .replace(r#"upstream = "app""#, r#"upstream = "nope""#);
    std::fs::write(path.as_path(), text).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_usherd"))
        .args(["check", "-c"])
        .arg(path.as_path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    let file = path.as_path().display().to_string();
    assert!(
        lines[0].starts_with(&format!("error: {file}:7:")),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with(&format!("error: {file}:11:")),
        "{stderr}"
    );
}

#[test]
fn check_command_prints_every_shape_error_and_exits_1() {
    let path = support::tempfile_path::TempPath::new("shape", "toml");
    std::fs::write(path.as_path(), TEN_SHAPE_MISTAKES).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_usherd"))
        .args(["check", "-c"])
        .arg(path.as_path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let file = path.as_path().display().to_string();
    let expected: Vec<String> = TEN_SHAPE_ERRORS
        .iter()
        .map(|(line, column, message)| format!("error: {file}:{line}:{column}: {message}"))
        .collect();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().collect::<Vec<_>>(), expected, "{stderr}");
}

#[test]
fn example_config_parses_as_before() {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/usherd.toml"));
    let config = usherd::config::load(path).unwrap();
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    assert_eq!(config.global.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(config.global.header_read_timeout, Duration::from_secs(10));
    assert_eq!(config.global.idle_timeout, Duration::from_secs(60));
    assert_eq!(config.global.max_connections, 10_000);
    assert_eq!(config.global.max_request_header_size, 64 * 1024);
    assert_eq!(config.global.max_request_body, Some(10 * 1024 * 1024));
    assert_eq!(
        config.admin.unwrap().listen,
        "127.0.0.1:9901".parse().unwrap()
    );
    let listeners: Vec<&str> = config.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(listeners, ["web"]);
    let vhosts: Vec<(&str, usize)> = config
        .vhosts
        .iter()
        .map(|v| (v.name.as_str(), v.routes.len()))
        .collect();
    assert_eq!(vhosts, [("shop", 2), ("fallback", 1)]);
    let api = &config.upstreams[0];
    assert_eq!(api.name, "api");
    assert_eq!(api.strategy, StrategyKind::Weighted);
    let weights: Vec<(&str, u32)> = api
        .servers
        .iter()
        .map(|s| (s.addr.as_str(), s.weight))
        .collect();
    assert_eq!(
        weights,
        [
            ("127.0.0.1:9001", 5),
            ("127.0.0.1:9002", 3),
            ("127.0.0.1:9003", 1)
        ]
    );
    assert_eq!(api.connect_timeout, Duration::from_secs(1));
    assert_eq!(api.timeout, Duration::from_secs(30));
    assert_eq!(api.retries, 1);
    let check = api.health_check.as_ref().unwrap();
    assert_eq!(check.path, "/healthz");
    assert_eq!(check.interval, Duration::from_secs(2));
    assert_eq!(check.timeout, Duration::from_secs(1));
    assert_eq!((check.rise, check.fall), (2, 3));
    assert_eq!(check.expect_status, [(200, 399)]);
    let outlier = api.outlier.unwrap();
    assert_eq!(outlier.consecutive_failures, 5);
    assert_eq!(outlier.ejection_time, Duration::from_secs(30));
    let web = &config.upstreams[1];
    assert_eq!(web.name, "web");
    assert_eq!(web.strategy, StrategyKind::RoundRobin);
    assert_eq!(web.servers.len(), 2);
    assert_eq!(web.timeout, Duration::from_secs(10));
}

#[test]
fn bad_arguments_exit_1_and_missing_file_is_reported() {
    let output = Command::new(env!("CARGO_BIN_EXE_usherd"))
        .arg("--no-such-flag")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let output = Command::new(env!("CARGO_BIN_EXE_usherd"))
        .args(["check", "-c", "/nonexistent/usherd.toml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("/nonexistent/usherd.toml: cannot read")
    );
}

/// The line of `text` that holds `needle`, counting from 1.
fn line_of(text: &str, needle: &str) -> usize {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in the text"));
    text[..at].lines().count() + usize::from(text[..at].ends_with('\n'))
}

#[test]
fn consul_source_settings_are_checked() {
    let with =
        |keys: &str| format!("{BASE}\n[upstreams.app.discovery]\nsource = \"consul\"\n{keys}\n");
    let text = with("service = \"api\"");
    assert_error(
        &text,
        line_of(&text, "[upstreams.app.discovery]"),
        "needs `address`",
    );
    let text = with("address = \"http://127.0.0.1:8500\"");
    assert_error(
        &text,
        line_of(&text, "[upstreams.app.discovery]"),
        "needs `service`",
    );
    for (bad, needle) in [
        ("address = \"127.0.0.1:8500\"", "is not an HTTP address"),
        (
            "address = \"ftp://127.0.0.1:8500\"",
            "scheme must be http or https",
        ),
        (
            "address = \"http://127.0.0.1:8500/v1\"",
            "is not an HTTP address",
        ),
        ("wait = \"11m\"", "wait must be from 1s to 10m"),
        ("wait = \"500ms\"", "wait must be from 1s to 10m"),
        ("datacenter = \"east 1\"", "is not a datacenter name"),
        ("token = \"\"", "the token must not be empty"),
        ("token = \"two words\"", "one line of visible ASCII"),
        ("token = \"abc\"\ntoken_file = \"token\"", "not both"),
        ("token_file = \"no-such-token\"", "cannot read token_file"),
        (
            "name = \"api.internal\"",
            "`name` does not apply to source consul",
        ),
        ("port = 8080", "`port` does not apply to source consul"),
    ] {
        let address = if bad.starts_with("address") {
            ""
        } else {
            "address = \"http://127.0.0.1:8500\"\n"
        };
        let text = with(&format!("{address}service = \"api\"\n{bad}"));
        let bad_line = bad.lines().last().unwrap();
        assert_error(&text, line_of(&text, bad_line), needle);
    }
    let text = format!(
        "{BASE}\n[upstreams.app.discovery]\nsource = \"dns\"\nname = \"api\"\nport = 80\nwait = \"1m\"\nservice = \"api\"\n"
    );
    assert_error(
        &text,
        line_of(&text, "wait ="),
        "`wait` applies only to source consul",
    );
    assert_error(
        &text,
        line_of(&text, "service ="),
        "applies only to sources registry, consul, eureka and zookeeper",
    );
    let text = with("address = \"http://127.0.0.1:8500/\"\nservice = \"api\"");
    let config = parse_config(&text, "ok.toml").unwrap();
    let discovery = config.upstreams[0].discovery.as_ref().unwrap();
    let usherd::config::DiscoverySource::Consul {
        address,
        passing,
        wait,
        token,
        stale,
        ..
    } = &discovery.source
    else {
        panic!("not a consul source: {discovery:?}");
    };
    assert_eq!(address, "http://127.0.0.1:8500");
    assert!(*passing && !*stale && token.is_none());
    assert_eq!(*wait, Duration::from_secs(300));
}

#[test]
fn zookeeper_source_settings_are_checked() {
    let with =
        |keys: &str| format!("{BASE}\n[upstreams.app.discovery]\nsource = \"zookeeper\"\n{keys}\n");
    let text = with("service = \"api\"");
    assert_error(
        &text,
        line_of(&text, "[upstreams.app.discovery]"),
        "needs `hosts`",
    );
    let text = with("hosts = \"127.0.0.1:2181\"");
    assert_error(
        &text,
        line_of(&text, "[upstreams.app.discovery]"),
        "needs `service`",
    );
    for (bad, needle) in [
        (
            "hosts = \"127.0.0.1:2181/chroot\"",
            "give the path in `base_path`",
        ),
        ("hosts = \"127.0.0.1:99999\"", "is not 1-65535"),
        ("hosts = \"zk1,,zk2\"", "an empty host"),
        ("base_path = \"services\"", "is not a ZooKeeper path"),
        ("base_path = \"/services/\"", "is not a ZooKeeper path"),
        (
            "session_timeout = \"500ms\"",
            "session_timeout must be from 1s to 10m",
        ),
        (
            "session_timeout = \"1h\"",
            "session_timeout must be from 1s to 10m",
        ),
        (
            "name = \"api.internal\"",
            "`name` does not apply to source zookeeper",
        ),
        ("port = 8080", "`port` does not apply to source zookeeper"),
        ("tag = \"blue\"", "`tag` does not apply to source zookeeper"),
        (
            "passing = true",
            "`passing` does not apply to source zookeeper",
        ),
        (
            "address = \"http://127.0.0.1:8500\"",
            "`address` applies only to sources consul and eureka",
        ),
        (
            "token = \"abc\"",
            "`token` applies only to sources consul and eureka",
        ),
        ("wait = \"1m\"", "`wait` applies only to source consul"),
        (
            "endpoints = [\"http://127.0.0.1:2379\"]",
            "`endpoints` applies only to source etcd",
        ),
        (
            "prefix = \"/services/api/\"",
            "`prefix` applies only to source etcd",
        ),
    ] {
        let hosts = if bad.starts_with("hosts") {
            ""
        } else {
            "hosts = \"127.0.0.1:2181\"\n"
        };
        let text = with(&format!("{hosts}service = \"api\"\n{bad}"));
        assert_error(&text, line_of(&text, bad), needle);
    }
    let text = with("service = \"a/b\"\nhosts = \"127.0.0.1:2181\"");
    assert_error(
        &text,
        line_of(&text, "service ="),
        "not a ZooKeeper node name",
    );
    // The zookeeper keys, refused elsewhere.
    let text = format!(
        "{BASE}\n[upstreams.app.discovery]\nsource = \"consul\"\naddress = \"http://127.0.0.1:8500\"\nservice = \"api\"\nhosts = \"127.0.0.1:2181\"\nsession_timeout = \"5s\"\n"
    );
    assert_error(
        &text,
        line_of(&text, "hosts = \"127"),
        "`hosts` applies only to source zookeeper",
    );
    assert_error(
        &text,
        line_of(&text, "session_timeout ="),
        "`session_timeout` applies only to source zookeeper",
    );
    let text = format!(
        "{BASE}\n[upstreams.app.discovery]\nsource = \"dns\"\nname = \"api\"\nport = 80\nbase_path = \"/services\"\n"
    );
    assert_error(
        &text,
        line_of(&text, "base_path ="),
        "`base_path` applies only to source zookeeper",
    );

    let text = with("hosts = \"127.0.0.1:2181, 127.0.0.1:2182\"\nservice = \"api\"");
    let config = parse_config(&text, "ok.toml").unwrap();
    let discovery = config.upstreams[0].discovery.as_ref().unwrap();
    let usherd::config::DiscoverySource::Zookeeper {
        hosts,
        base_path,
        service,
        session_timeout,
    } = &discovery.source
    else {
        panic!("not a zookeeper source: {discovery:?}");
    };
    assert_eq!(hosts, "127.0.0.1:2181,127.0.0.1:2182");
    assert_eq!(base_path, "/services");
    assert_eq!(service, "api");
    assert_eq!(*session_timeout, Duration::from_secs(10));
    assert_eq!(discovery.empty_after, Duration::from_secs(10));
}

#[test]
fn etcd_source_settings_are_checked() {
    let with =
        |keys: &str| format!("{BASE}\n[upstreams.app.discovery]\nsource = \"etcd\"\n{keys}\n");
    let text = with("prefix = \"/services/api/\"");
    assert_error(
        &text,
        line_of(&text, "[upstreams.app.discovery]"),
        "needs `endpoints`",
    );
    let text = with("endpoints = [\"http://127.0.0.1:2379\"]");
    assert_error(
        &text,
        line_of(&text, "[upstreams.app.discovery]"),
        "needs `prefix`",
    );
    for (bad, needle) in [
        ("endpoints = []", "endpoints must name at least one etcd"),
        (
            "endpoints = [\"127.0.0.1:2379\"]",
            "is not an etcd client URL",
        ),
        (
            "endpoints = [\"http://127.0.0.1:2379/v3\"]",
            "is not an etcd client URL",
        ),
        ("prefix = \"\"", "prefix must not be empty"),
        (
            "service = \"api\"",
            "`service` does not apply to source etcd",
        ),
        ("tag = \"blue\"", "`tag` does not apply to source etcd"),
        ("weight = 3", "`weight` does not apply to source etcd"),
        (
            "token = \"abc\"",
            "`token` applies only to sources consul and eureka",
        ),
        (
            "hosts = \"127.0.0.1:2181\"",
            "`hosts` applies only to source zookeeper",
        ),
        (
            "session_timeout = \"5s\"",
            "`session_timeout` applies only to source zookeeper",
        ),
    ] {
        let endpoints = if bad.starts_with("endpoints") {
            ""
        } else {
            "endpoints = [\"http://127.0.0.1:2379\"]\n"
        };
        let prefix = if bad.starts_with("prefix") {
            ""
        } else {
            "prefix = \"/services/api/\"\n"
        };
        let text = with(&format!("{endpoints}{prefix}{bad}"));
        assert_error(&text, line_of(&text, bad), needle);
    }
    let text = format!(
        "{BASE}\n[upstreams.app.discovery]\nsource = \"registry\"\nservice = \"api\"\nprefix = \"/x/\"\n"
    );
    assert_error(
        &text,
        line_of(&text, "prefix ="),
        "`prefix` applies only to source etcd",
    );

    let text = with(
        "endpoints = [\"http://127.0.0.1:2379/\", \"https://etcd.internal:2379\"]\nprefix = \"/services/api/\"",
    );
    let config = parse_config(&text, "ok.toml").unwrap();
    let discovery = config.upstreams[0].discovery.as_ref().unwrap();
    let usherd::config::DiscoverySource::Etcd { endpoints, prefix } = &discovery.source else {
        panic!("not an etcd source: {discovery:?}");
    };
    assert_eq!(
        endpoints,
        &["http://127.0.0.1:2379", "https://etcd.internal:2379"]
    );
    assert_eq!(prefix, "/services/api/");
}

#[test]
fn a_consul_token_file_is_read_relative_to_the_config() {
    let file = support::tempfile_path::TempPath::new("usherd", "toml");
    std::fs::write(file.directory().join("consul.token"), "3f0c-token\n").unwrap();
    let text = format!(
        "{BASE}\n[upstreams.app.discovery]\nsource = \"consul\"\naddress = \"http://127.0.0.1:8500\"\nservice = \"api\"\ntoken_file = \"consul.token\"\n"
    );
    let config = parse_config(&text, file.as_path().to_str().unwrap()).unwrap();
    let source = &config.upstreams[0].discovery.as_ref().unwrap().source;
    let usherd::config::DiscoverySource::Consul { token, .. } = source else {
        panic!("not a consul source");
    };
    assert_eq!(token.as_deref(), Some("3f0c-token"));
    std::fs::write(file.directory().join("consul.token"), "\n").unwrap();
    let errors = errors_in(&text, file.as_path().to_str().unwrap());
    assert!(
        errors
            .iter()
            .any(|e| e.message.contains("must not be empty")),
        "{errors:?}"
    );
}

fn errors_in(text: &str, file: &str) -> Vec<ConfigError> {
    parse_config(text, file)
        .expect_err("config must be refused")
        .0
}
