//! How a validated config reads when it is written out: durations as `5s`,
//! strategies and protocols by their names in the file, certificates and
//! secrets as fingerprints (never their bytes). Used by `Config`'s
//! `Serialize`, which the reload's change list compares.

use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use serde::ser::SerializeSeq;
use serde::Serializer;

use super::{StrategyKind, UpstreamProtocol};
use crate::tls::{CaBundle, CertStore};

pub fn duration<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_duration(*value))
}

pub fn optional_duration<S: Serializer>(
    value: &Option<Duration>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => serializer.collect_str(&humantime::format_duration(*value)),
        None => serializer.serialize_none(),
    }
}

pub fn displayed<S: Serializer, T: Display>(value: &T, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

pub fn displayed_list<S: Serializer, T: Display>(
    values: &[T],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(values.iter().map(ToString::to_string))
}

/// A secret as a short fingerprint: a change shows, the secret does not.
pub fn secret<S: Serializer>(value: &Option<String>, serializer: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(secret) => serializer.serialize_some(&fingerprint(secret.as_bytes())),
        None => serializer.serialize_none(),
    }
}

/// Secrets as fingerprints, in order.
pub fn secrets<S: Serializer>(values: &[String], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(values.iter().map(|secret| fingerprint(secret.as_bytes())))
}

pub fn certificates<S: Serializer>(
    store: &Arc<CertStore>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let mut seq = serializer.serialize_seq(Some(store.certs().len()))?;
    for cert in store.certs() {
        seq.serialize_element(&format!(
            "{} ({}, {:016x})",
            cert.cert_path.display(),
            cert.names.join("+"),
            cert.fingerprint()
        ))?;
    }
    seq.end()
}

pub fn ca_bundle<S: Serializer>(
    bundle: &Option<CaBundle>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match bundle {
        Some(bundle) => {
            let bytes: Vec<u8> = bundle.certs.iter().flat_map(|der| der.to_vec()).collect();
            serializer.serialize_some(&format!(
                "{} ({})",
                bundle.path.display(),
                fingerprint(&bytes)
            ))
        }
        None => serializer.serialize_none(),
    }
}

pub fn status_ranges<S: Serializer>(
    ranges: &[(u16, u16)],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(ranges.iter().map(|&(low, high)| {
        if low == high {
            low.to_string()
        } else {
            format!("{low}-{high}")
        }
    }))
}

/// The strategy's name; `peak_ewma` with its `ewma_decay`.
pub fn strategy<S: Serializer>(kind: &StrategyKind, serializer: S) -> Result<S::Ok, S::Error> {
    match kind {
        StrategyKind::PeakEwma { decay } => serializer.collect_str(&format_args!(
            "peak_ewma (ewma_decay {})",
            humantime::format_duration(*decay)
        )),
        other => serializer.serialize_str(other.name()),
    }
}

pub fn protocol<S: Serializer>(
    protocol: &UpstreamProtocol,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(protocol.name())
}

fn fingerprint(bytes: &[u8]) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(bytes))
}
