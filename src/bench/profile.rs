//! What `usherd bench` simulates: backends (latency distribution, error rate,
//! concurrency) and events that change them mid-run, from a small TOML file
//! or the `--backends` shorthand.
//!
//! ```toml
//! [[backends]]
//! name = "a"                                   # default: a, b, c, ...
//! latency = { median = "5ms", p99 = "20ms" }   # log-normal; or "5ms" (fixed),
//!                                              # or { min = "2ms", max = "8ms" } (uniform)
//! weight = 1
//! error_rate = 0.0                             # share answered 500
//! concurrency = 0                              # 0: unlimited; else the rest queue
//!
//! [[events]]
//! at = "5s"
//! backend = "a"
//! latency_factor = 10.0                        # from then on, 10x slower
//! error_rate = 0.2                             # optional
//! ```

use std::time::Duration;

use serde::Deserialize;

/// A bad profile: what and where.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ProfileError(pub String);

#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub backends: Vec<BackendProfile>,
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BackendProfile {
    pub name: String,
    pub latency: Latency,
    pub weight: u32,
    pub error_rate: f64,
    /// Requests served at once; `None` is unlimited.
    pub concurrency: Option<usize>,
}

/// A latency distribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Latency {
    Fixed(Duration),
    Uniform {
        min: Duration,
        max: Duration,
    },
    /// Log-normal given by its median and 99th percentile.
    LogNormal {
        median: Duration,
        p99: Duration,
    },
}

/// The z-score of the 99th percentile of a standard normal distribution.
const Z99: f64 = 2.326_347_874;

impl Latency {
    /// One sample, from `rng`.
    pub fn sample(&self, rng: &mut fastrand::Rng) -> Duration {
        match *self {
            Latency::Fixed(value) => value,
            Latency::Uniform { min, max } => min + (max - min).mul_f64(rng.f64()),
            Latency::LogNormal { median, p99 } => {
                let sigma = (p99.as_secs_f64() / median.as_secs_f64()).ln() / Z99;
                median.mul_f64((sigma * standard_normal(rng)).exp())
            }
        }
    }
}

/// Box-Muller.
fn standard_normal(rng: &mut fastrand::Rng) -> f64 {
    let u1 = rng.f64().max(f64::MIN_POSITIVE);
    let u2 = rng.f64();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// A change to one backend from time `at` on.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub at: Duration,
    pub backend: usize,
    pub latency_factor: Option<f64>,
    pub error_rate: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    backends: Vec<BackendFile>,
    #[serde(default)]
    events: Vec<EventFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackendFile {
    name: Option<String>,
    latency: LatencyFile,
    #[serde(default = "one")]
    weight: u32,
    #[serde(default)]
    error_rate: f64,
    #[serde(default)]
    concurrency: usize,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum LatencyFile {
    Fixed(String),
    LogNormal { median: String, p99: String },
    Uniform { min: String, max: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventFile {
    at: String,
    backend: String,
    latency_factor: Option<f64>,
    error_rate: Option<f64>,
}

fn duration(text: &str) -> Result<Duration, ProfileError> {
    humantime::parse_duration(text)
        .map_err(|e| ProfileError(format!("`{text}` is not a duration: {e}")))
}

fn default_name(index: usize) -> String {
    let letter = (b'a' + (index % 26) as u8) as char;
    if index < 26 {
        letter.to_string()
    } else {
        format!("{letter}{}", index / 26)
    }
}

impl Profile {
    /// Parses a profile file's text.
    pub fn parse(text: &str) -> Result<Profile, ProfileError> {
        let file: ProfileFile = toml::from_str(text).map_err(|e| ProfileError(e.to_string()))?;
        let mut backends = Vec::new();
        for (index, backend) in file.backends.into_iter().enumerate() {
            let latency = match backend.latency {
                LatencyFile::Fixed(value) => Latency::Fixed(duration(&value)?),
                LatencyFile::LogNormal { median, p99 } => {
                    let (median, p99) = (duration(&median)?, duration(&p99)?);
                    if median.is_zero() || p99 < median {
                        return Err(ProfileError(format!(
                            "backend {index}: need 0 < median <= p99"
                        )));
                    }
                    Latency::LogNormal { median, p99 }
                }
                LatencyFile::Uniform { min, max } => {
                    let (min, max) = (duration(&min)?, duration(&max)?);
                    if max < min {
                        return Err(ProfileError(format!("backend {index}: need min <= max")));
                    }
                    Latency::Uniform { min, max }
                }
            };
            if !(0.0..=1.0).contains(&backend.error_rate) {
                return Err(ProfileError(format!(
                    "backend {index}: error_rate must be within 0 and 1"
                )));
            }
            backends.push(BackendProfile {
                name: backend.name.unwrap_or_else(|| default_name(index)),
                latency,
                weight: backend.weight.max(1),
                error_rate: backend.error_rate,
                concurrency: (backend.concurrency > 0).then_some(backend.concurrency),
            });
        }
        if backends.is_empty() {
            return Err(ProfileError("a profile needs at least one backend".into()));
        }
        let mut events = Vec::new();
        for event in file.events {
            let backend = backends
                .iter()
                .position(|b| b.name == event.backend)
                .ok_or_else(|| {
                    ProfileError(format!("event names unknown backend `{}`", event.backend))
                })?;
            events.push(Event {
                at: duration(&event.at)?,
                backend,
                latency_factor: event.latency_factor,
                error_rate: event.error_rate,
            });
        }
        events.sort_by_key(|e| e.at);
        Ok(Profile { backends, events })
    }

    /// `--backends 5ms,5ms,50ms`: log-normal backends with these medians and a
    /// p99 of three times the median.
    pub fn from_medians(list: &str) -> Result<Profile, ProfileError> {
        let backends = list
            .split(',')
            .enumerate()
            .map(|(index, median)| {
                let median = duration(median.trim())?;
                if median.is_zero() {
                    return Err(ProfileError("a median latency must be above zero".into()));
                }
                Ok(BackendProfile {
                    name: default_name(index),
                    latency: Latency::LogNormal {
                        median,
                        p99: median * 3,
                    },
                    weight: 1,
                    error_rate: 0.0,
                    concurrency: None,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Profile {
            backends,
            events: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_distribution_and_events() {
        let profile = Profile::parse(
            r#"
[[backends]]
latency = "5ms"
[[backends]]
name = "slow"
latency = { median = "10ms", p99 = "40ms" }
concurrency = 4
[[backends]]
latency = { min = "1ms", max = "3ms" }
error_rate = 0.1
[[events]]
at = "5s"
backend = "slow"
latency_factor = 10.0
"#,
        )
        .unwrap();
        assert_eq!(profile.backends[0].name, "a");
        assert_eq!(profile.backends[1].concurrency, Some(4));
        assert_eq!(profile.backends[2].name, "c");
        assert_eq!(profile.events[0].backend, 1);
        assert!(Profile::parse("[[backends]]\nlatency = \"x\"").is_err());
        assert!(Profile::parse(
            "[[backends]]\nlatency = \"1ms\"\n[[events]]\nat = \"1s\"\nbackend = \"zz\""
        )
        .is_err());
    }

    #[test]
    fn log_normal_has_the_median_and_p99_asked() {
        let latency = Latency::LogNormal {
            median: Duration::from_millis(10),
            p99: Duration::from_millis(50),
        };
        let mut rng = fastrand::Rng::with_seed(1);
        let mut samples: Vec<Duration> = (0..20_000).map(|_| latency.sample(&mut rng)).collect();
        samples.sort();
        let median = samples[10_000].as_secs_f64() * 1000.0;
        let p99 = samples[19_800].as_secs_f64() * 1000.0;
        assert!((9.5..10.5).contains(&median), "{median}");
        assert!((45.0..55.0).contains(&p99), "{p99}");
        // Same seed, same samples.
        let mut again = fastrand::Rng::with_seed(1);
        assert_eq!(
            latency.sample(&mut again),
            latency.sample(&mut fastrand::Rng::with_seed(1))
        );
    }
}
