//! `usherd bench --virtual-time`: the same comparison as the real run, but
//! as a discrete-event simulation in virtual time. The strategies are the
//! proxy's own (`balance::Balancer`, fed the same in-flight counts and
//! peak-EWMA estimates the proxy keeps); the backends are queues with the
//! profile's latencies, concurrency and events, drawn from the same seeded
//! generators. No socket, no clock: a run takes milliseconds and the same
//! options give the same numbers on any machine, however busy, which is what
//! tests need. What it leaves out is the proxy's own time per request.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Duration;

use hdrhistogram::Histogram;

use super::profile::{BackendProfile, Event};
use super::{zipf_keys, BenchOptions, BenchReport, LoadShape, StrategyResult};
use crate::balance::{key_hash, Balancer, Loads, PeakEwma};
use crate::config::{HashKey, HashSettings, Server, StrategyKind};

/// Runs every strategy of `options` in virtual time.
pub fn simulate(options: &BenchOptions) -> BenchReport {
    let results = options
        .strategies
        .iter()
        .map(|strategy| simulate_one(options, *strategy))
        .collect();
    super::report(options, results)
}

/// Something that happens at a moment of virtual time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Happening {
    /// Request `n` of the load arrives (for a closed loop: from client `n`).
    Arrival { n: u64 },
    /// Backend `server` finishes the request that arrived (and was sent to
    /// it) at `arrived_ns`; `client` sends again for a closed loop.
    Completion {
        server: usize,
        arrived_ns: u64,
        client: Option<u64>,
    },
}

/// A simulated backend: a queue in front of `concurrency` slots.
struct Backend<'a> {
    profile: &'a BackendProfile,
    events: Vec<&'a Event>,
    rng: fastrand::Rng,
    busy: usize,
    /// (arrived_ns, client) of requests waiting for a slot.
    waiting: VecDeque<(u64, Option<u64>)>,
    received: Vec<u64>,
}

impl Backend<'_> {
    /// How long the next request takes, at `now_ns`.
    fn service_time(&mut self, now_ns: u64) -> Duration {
        let elapsed = Duration::from_nanos(now_ns);
        let factor = self
            .events
            .iter()
            .filter(|event| event.at <= elapsed)
            .fold(1.0, |factor, event| event.latency_factor.unwrap_or(factor));
        self.profile.latency.sample(&mut self.rng).mul_f64(factor)
    }

    fn has_slot(&self) -> bool {
        self.profile
            .concurrency
            .is_none_or(|slots| self.busy < slots)
    }
}

/// The loads the strategies read, kept as the proxy keeps them.
struct SimulatedLoads {
    in_flight: Vec<u64>,
    latency: Vec<PeakEwma>,
    decay: Duration,
    now_ns: u64,
}

impl Loads for SimulatedLoads {
    fn in_flight(&self, server: usize) -> u64 {
        self.in_flight[server]
    }

    fn latency_estimate(&self, server: usize) -> f64 {
        self.latency[server].estimate(self.decay, self.now_ns)
    }

    fn pool_in_flight(&self) -> u64 {
        self.in_flight.iter().sum()
    }
}

fn simulate_one(options: &BenchOptions, strategy: StrategyKind) -> StrategyResult {
    // The strategies that draw at random use the thread's generator.
    fastrand::seed(options.seed);
    let profiles = &options.profile.backends;
    let servers: Vec<Server> = profiles
        .iter()
        .enumerate()
        .map(|(index, profile)| Server {
            addr: format!("backend-{index}"),
            weight: profile.weight,
        })
        .collect();
    let hash = HashSettings {
        key: HashKey::Header(http::HeaderName::from_static("x-bench-key")),
        balance_factor: options.hash_balance_factor,
    };
    let balancer = Balancer::new(strategy, &servers, Some(&hash));
    let keys = zipf_keys(options.keys, options.seed);
    let end_ns = options.duration.as_nanos() as u64;
    let seconds = options.duration.as_secs() as usize;
    let mut backends: Vec<Backend> = profiles
        .iter()
        .enumerate()
        .map(|(index, profile)| Backend {
            profile,
            events: options
                .profile
                .events
                .iter()
                .filter(|event| event.backend == index)
                .collect(),
            rng: fastrand::Rng::with_seed(
                options
                    .seed
                    .wrapping_mul(1_000_003)
                    .wrapping_add(index as u64),
            ),
            busy: 0,
            waiting: VecDeque::new(),
            received: vec![0; seconds + 1],
        })
        .collect();
    let mut loads = SimulatedLoads {
        in_flight: vec![0; profiles.len()],
        latency: profiles.iter().map(|_| PeakEwma::default()).collect(),
        decay: match strategy {
            StrategyKind::PeakEwma { decay } => decay,
            _ => crate::config::DEFAULT_EWMA_DECAY,
        },
        now_ns: 0,
    };
    let mut latency =
        Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds");
    let (mut completed, mut errors) = (0u64, 0u64);
    let mut queue: BinaryHeap<Reverse<(u64, u64, Happening)>> = BinaryHeap::new();
    let mut sequence = 0u64;
    let mut schedule = |queue: &mut BinaryHeap<_>, at_ns: u64, happening: Happening| {
        sequence += 1;
        queue.push(Reverse((at_ns, sequence, happening)));
    };
    match &options.load {
        LoadShape::Open { rate } => {
            let interval_ns = (1e9 / rate.max(f64::MIN_POSITIVE)) as u64;
            let count = end_ns / interval_ns.max(1);
            for n in 0..count {
                schedule(&mut queue, n * interval_ns, Happening::Arrival { n });
            }
        }
        LoadShape::Replay(requests) => {
            for (n, (offset, _)) in requests.iter().enumerate() {
                let at_ns = offset.as_nanos() as u64;
                if at_ns < end_ns {
                    schedule(&mut queue, at_ns, Happening::Arrival { n: n as u64 });
                }
            }
        }
        LoadShape::Closed { connections } => {
            for client in 0..*connections as u64 {
                schedule(&mut queue, 0, Happening::Arrival { n: client });
            }
        }
    }
    let closed = match options.load {
        LoadShape::Closed { connections } => Some(connections as u64),
        _ => None,
    };
    let mut sent_by_client: Vec<u64> = Vec::new();

    while let Some(Reverse((now_ns, _, happening))) = queue.pop() {
        loads.now_ns = now_ns;
        match happening {
            Happening::Arrival { n } => {
                if closed.is_some() && now_ns >= end_ns {
                    continue;
                }
                let (request, client) = match closed {
                    Some(connections) => {
                        let client = n as usize;
                        sent_by_client.resize(sent_by_client.len().max(client + 1), 0);
                        let request = n + sent_by_client[client] * connections;
                        sent_by_client[client] += 1;
                        (request, Some(n))
                    }
                    None => (n, None),
                };
                let key = match &options.load {
                    LoadShape::Replay(requests) => requests[request as usize].1.clone(),
                    _ => keys(request),
                };
                let key = Some(key_hash(key.as_bytes()));
                let Some(server) = balancer.pick(key, &loads, |_| true) else {
                    errors += 1;
                    continue;
                };
                loads.in_flight[server] += 1;
                let backend = &mut backends[server];
                let second = ((now_ns / 1_000_000_000) as usize).min(seconds);
                backend.received[second] += 1;
                if backend.has_slot() {
                    backend.busy += 1;
                    let done_ns = now_ns + backend.service_time(now_ns).as_nanos() as u64;
                    let happening = Happening::Completion {
                        server,
                        arrived_ns: now_ns,
                        client,
                    };
                    schedule(&mut queue, done_ns, happening);
                } else {
                    backend.waiting.push_back((now_ns, client));
                }
            }
            Happening::Completion {
                server,
                arrived_ns,
                client,
            } => {
                loads.in_flight[server] -= 1;
                loads.latency[server].observe(
                    Duration::from_nanos(now_ns - arrived_ns),
                    loads.decay,
                    now_ns.max(1),
                );
                let backend = &mut backends[server];
                let error_rate = backend
                    .events
                    .iter()
                    .filter(|event| event.at <= Duration::from_nanos(now_ns))
                    .fold(backend.profile.error_rate, |rate, event| {
                        event.error_rate.unwrap_or(rate)
                    });
                if backend.rng.f64() < error_rate {
                    errors += 1;
                } else {
                    completed += 1;
                    latency.saturating_record(((now_ns - arrived_ns) / 1_000).max(1));
                }
                match backend.waiting.pop_front() {
                    Some((arrived_ns, client)) => {
                        let done_ns = now_ns + backend.service_time(now_ns).as_nanos() as u64;
                        let happening = Happening::Completion {
                            server,
                            arrived_ns,
                            client,
                        };
                        schedule(&mut queue, done_ns, happening);
                    }
                    None => backend.busy -= 1,
                }
                if let Some(client) = client {
                    schedule(&mut queue, now_ns, Happening::Arrival { n: client });
                }
            }
        }
    }

    let per_second: Vec<(String, Vec<u64>)> = profiles
        .iter()
        .zip(backends)
        .map(|(profile, backend)| (profile.name.clone(), backend.received))
        .collect();
    super::strategy_result(
        strategy,
        completed,
        errors,
        options.duration,
        &latency,
        per_second,
    )
}
