//! Config parsing and validation (`usherd::config::parse_config`) on any
//! text: never a panic; a refused file has at least one error, each at a
//! line and column inside the text; an accepted one serializes (as the
//! reload's change list does) and compiles into a routing `Snapshot`, which
//! must not fail on anything validation let through.
//!
//! The file is named as if in `config/`, so the certificate paths of the
//! seeds (`certs/...`) are read. Texts naming `/dev`, `/proc` or `/sys` are
//! skipped: reading those is the operator's choice, not a parser bug.

#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use usherd::config::parse_config;
use usherd::snapshot::Snapshot;
use usherd::upstream::WeightOverrides;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if ["/dev", "/proc", "/sys"]
        .iter()
        .any(|dir| text.contains(dir))
    {
        return;
    }
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/fuzz.toml");
    match parse_config(text, file) {
        Ok(config) => {
            serde_json::to_string(&config).expect("a valid config serializes");
            Snapshot::build(Arc::new(config), 1, None, &WeightOverrides::default());
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "refused without an error");
            let lines = text.lines().count().max(1);
            for error in &errors.0 {
                assert!(error.line <= lines + 1, "{error}");
                let _ = error.to_string();
            }
        }
    }
});
