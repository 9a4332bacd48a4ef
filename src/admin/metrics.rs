//! `GET /metrics`: the Prometheus text exposition (version 0.0.4, written by
//! prometheus-client) of the counters the proxy keeps anyway. Nothing here
//! runs per request: a scrape walks the current snapshot and reads atomics.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::control::App;
use crate::server::HTTP2_RESET_FLOODS;
use crate::stats::{ClientTimeout, LatencySnapshot, StatusClasses};
use crate::upstream::LazyNow;

pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The exposition text for `app` now.
pub fn render(app: &Arc<App>) -> String {
    let mut registry = Registry::with_prefix("usherd");
    registry.register_collector(Box::new(AppCollector(Arc::clone(app))));
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)
        .expect("writing to a String does not fail");
    text
}

struct AppCollector(Arc<App>);

impl std::fmt::Debug for AppCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppCollector")
    }
}

type Labels<'a> = Vec<(&'static str, &'a str)>;

/// One metric family: its descriptor, then one sample per label set.
struct Family<'e, 'a> {
    encoder: &'e mut DescriptorEncoder<'a>,
}

impl<'a> Family<'_, 'a> {
    fn counter<'l>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels<'l>, u64)>,
    ) -> std::fmt::Result {
        let mut metric = self
            .encoder
            .encode_descriptor(name, help, None, MetricType::Counter)?;
        for (labels, value) in samples {
            metric
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
        }
        Ok(())
    }

    fn gauge<'l>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels<'l>, f64)>,
    ) -> std::fmt::Result {
        let mut metric = self
            .encoder
            .encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (labels, value) in samples {
            metric.encode_family(&labels)?.encode_gauge(&value)?;
        }
        Ok(())
    }

    fn histogram<'l>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels<'l>, LatencySnapshot)>,
    ) -> std::fmt::Result {
        let mut metric = self
            .encoder
            .encode_descriptor(name, help, None, MetricType::Histogram)?;
        for (labels, histogram) in samples {
            let buckets = histogram.bounded_buckets();
            metric
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(
                    histogram.sum_seconds,
                    histogram.count(),
                    &buckets,
                    None,
                )?;
        }
        Ok(())
    }
}

fn by_class<'l>(
    labels: Labels<'l>,
    classes: &StatusClasses,
) -> impl Iterator<Item = (Labels<'l>, u64)> {
    StatusClasses::NAMES
        .into_iter()
        .zip(classes.counts())
        .map(move |(class, count)| {
            let mut labels = labels.clone();
            labels.push(("class", class));
            (labels, count)
        })
}

impl Collector for AppCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let app = &self.0;
        let snapshot = app.snapshots.load_full();
        let mut family = Family {
            encoder: &mut encoder,
        };

        let vhosts = snapshot
            .config
            .vhosts
            .iter()
            .zip(&snapshot.vhost_responses)
            .flat_map(|(vhost, classes)| by_class(vec![("vhost", vhost.name.as_str())], classes))
            .chain(by_class(vec![("vhost", "")], &snapshot.unrouted_responses));
        family.counter(
            "requests",
            "Responses to clients by vhost (empty: no vhost matched) and status class.",
            vhosts,
        )?;

        let servers: Vec<(Labels<'_>, &crate::upstream::Endpoint)> = snapshot
            .upstreams
            .iter()
            .flat_map(|upstream| {
                upstream.endpoints.iter().map(|endpoint| {
                    (
                        vec![("upstream", &*upstream.name), ("server", &*endpoint.addr)],
                        &**endpoint,
                    )
                })
            })
            .collect();
        family.counter(
            "upstream_responses",
            "Final responses from servers by upstream, server and status class.",
            servers
                .iter()
                .flat_map(|(labels, e)| by_class(labels.clone(), &e.stats.responses)),
        )?;
        family.counter(
            "upstream_requests",
            "Requests sent to each server, retries included.",
            servers.iter().map(|(l, e)| (l.clone(), e.stats.requests())),
        )?;
        family.counter(
            "upstream_failures",
            "Failed requests per server: connect errors, resets, timeouts, 502/503/504.",
            servers.iter().map(|(l, e)| (l.clone(), e.stats.failures())),
        )?;
        family.counter(
            "upstream_connect_errors",
            "Connections to a server that failed (refused, timed out, TLS).",
            servers
                .iter()
                .map(|(l, e)| (l.clone(), e.stats.connect_errors())),
        )?;
        family.counter(
            "upstream_timeouts",
            "Requests whose response head did not come within the upstream's timeout.",
            servers.iter().map(|(l, e)| (l.clone(), e.stats.timeouts())),
        )?;
        family.gauge(
            "upstream_in_flight",
            "Requests in flight per server.",
            servers
                .iter()
                .map(|(l, e)| (l.clone(), e.stats.in_flight() as f64)),
        )?;
        let mut now = LazyNow::default();
        family.gauge(
            "upstream_server_healthy",
            "1 when the active health checks let the server take traffic.",
            servers
                .iter()
                .map(|(l, e)| (l.clone(), f64::from(u8::from(e.health.is_up())))),
        )?;
        family.gauge(
            "upstream_server_ejected",
            "1 while outlier detection keeps the server out.",
            servers.iter().map(|(l, e)| {
                (
                    l.clone(),
                    f64::from(u8::from(e.health.is_ejected(&mut now))),
                )
            }),
        )?;
        family.gauge(
            "upstream_server_draining",
            "1 while the server is drained through the admin API.",
            servers
                .iter()
                .map(|(l, e)| (l.clone(), f64::from(u8::from(e.health.is_draining())))),
        )?;
        family.gauge(
            "upstream_server_weight",
            "The weight in force (the admin API's override, else the config's).",
            servers
                .iter()
                .map(|(l, e)| (l.clone(), f64::from(e.weight))),
        )?;
        family.counter(
            "upstream_ejections",
            "Times outlier detection ejected the server.",
            servers
                .iter()
                .map(|(l, e)| (l.clone(), e.health.ejections_total())),
        )?;
        family.histogram(
            "upstream_request_duration_seconds",
            "Time from a request's arrival to the end of its response, per upstream.",
            snapshot.upstreams.iter().map(|upstream| {
                let mut total = LatencySnapshot::default();
                for endpoint in &upstream.endpoints {
                    total.add(&endpoint.stats.durations.snapshot());
                }
                (vec![("upstream", &*upstream.name)], total)
            }),
        )?;
        family.counter(
            "upstream_retries",
            "Retries on another server, per upstream.",
            snapshot
                .upstreams
                .iter()
                .map(|u| (vec![("upstream", &*u.name)], u.retry_budget.retries())),
        )?;
        family.counter(
            "upstream_retry_budget_exhausted",
            "Retries not made because the upstream's retry budget was spent.",
            snapshot
                .upstreams
                .iter()
                .map(|u| (vec![("upstream", &*u.name)], u.retry_budget.exhausted())),
        )?;

        let listeners: Vec<(String, Arc<crate::stats::ListenerStats>)> = app
            .listener_stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(name, stats)| (name.clone(), Arc::clone(stats)))
            .collect();
        family.counter(
            "connections_accepted",
            "Client connections accepted per listener.",
            listeners.iter().map(|(name, s)| {
                (
                    vec![("listener", name.as_str())],
                    s.accepted.load(Ordering::Relaxed),
                )
            }),
        )?;
        family.gauge(
            "connections_open",
            "Client connections open per listener.",
            listeners.iter().map(|(name, s)| {
                (
                    vec![("listener", name.as_str())],
                    s.open.load(Ordering::Relaxed) as f64,
                )
            }),
        )?;
        family.counter(
            "tls_handshake_failures",
            "TLS handshakes that failed or timed out per listener.",
            listeners.iter().map(|(name, s)| {
                (
                    vec![("listener", name.as_str())],
                    s.tls_handshake_failures.load(Ordering::Relaxed),
                )
            }),
        )?;
        family.counter(
            "client_protocol_errors",
            "Client connections closed for protocol abuse, by kind (process-wide; \
             logged at most once per 10 s per kind).",
            [(
                vec![("kind", "http2_reset_flood")],
                HTTP2_RESET_FLOODS.total(),
            )],
        )?;

        family.counter(
            "client_timeouts",
            "Client connections closed (HTTP/2: streams reset or answered 408) by a client time limit per listener: send (send_timeout), body (client_body_timeout), body_rate (client_body_min_rate).",
            listeners.iter().flat_map(|(name, s)| {
                ClientTimeout::KINDS
                    .iter()
                    .zip(&s.client_timeouts)
                    .map(|(kind, count)| {
                        (
                            vec![("listener", name.as_str()), ("kind", *kind)],
                            count.load(Ordering::Relaxed),
                        )
                    })
            }),
        )?;

        family.counter(
            "reloads",
            "Config reloads by result.",
            [
                (
                    vec![("result", "ok")],
                    app.reload_counts.ok.load(Ordering::Relaxed),
                ),
                (
                    vec![("result", "failed")],
                    app.reload_counts.failed.load(Ordering::Relaxed),
                ),
            ],
        )?;
        family.gauge(
            "config_generation",
            "1 for the config usherd started with, +1 per published change (reload, admin weight, discovery).",
            [(vec![], snapshot.generation as f64)],
        )?;

        let sources = app.discovery_sources();
        let updates = sources.iter().flat_map(|(upstream, status)| {
            let counts = &status.updates;
            [
                ("changed", &counts.changed),
                ("unchanged", &counts.unchanged),
                ("error", &counts.error),
                ("empty_held", &counts.empty_held),
            ]
            .map(|(result, count)| {
                (
                    vec![("upstream", upstream.as_str()), ("result", result)],
                    count.load(Ordering::Relaxed),
                )
            })
        });
        family.counter(
            "discovery_updates",
            "Discovery lookups by upstream and what they led to: changed (a new set), unchanged, error (the set stays), empty_held (an empty answer held back for empty_after).",
            updates,
        )?;
        let states: Vec<_> = sources
            .iter()
            .map(|(upstream, status)| (upstream.as_str(), status.state()))
            .collect();
        family.gauge(
            "discovery_servers",
            "Servers in the set discovery last handed to each upstream.",
            states
                .iter()
                .map(|(upstream, state)| (vec![("upstream", *upstream)], state.servers as f64)),
        )?;
        family.gauge(
            "discovery_last_success_timestamp_seconds",
            "When each upstream's discovery source last answered, in seconds since the Unix epoch (0: never).",
            states.iter().map(|(upstream, state)| {
                let at = state
                    .last_success
                    .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
                    .map_or(0.0, |d| d.as_secs_f64());
                (vec![("upstream", *upstream)], at)
            }),
        )?;
        family.gauge(
            "discovery_stale",
            "1 when an upstream's pool holds an older answer than its source's last (lookups fail, or an empty answer is held back).",
            states.iter().map(|(upstream, state)| {
                let stale = state.state == crate::discovery::State::Stale;
                (vec![("upstream", *upstream)], f64::from(u8::from(stale)))
            }),
        )?;
        let started = app
            .started_at
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        family.gauge(
            "process_start_time_seconds",
            "When the process started, in seconds since the Unix epoch.",
            [(vec![], started)],
        )?;
        Ok(())
    }
}
