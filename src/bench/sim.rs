//! Simulated backends: real HTTP servers on loopback that answer after a
//! latency drawn from their profile. Each backend draws from its own
//! generator seeded from the run's seed, so the same seed and inputs give the
//! same latencies in the same order. Requests per second are counted for the
//! per-backend chart.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::profile::{BackendProfile, Event};

/// One simulated backend, running until dropped.
pub struct SimBackend {
    pub addr: SocketAddr,
    per_second: Arc<Vec<AtomicU64>>,
    _tasks: JoinSet<()>,
}

struct Behaviour {
    profile: BackendProfile,
    events: Vec<Event>,
    rng: Mutex<fastrand::Rng>,
    slots: Option<Semaphore>,
    start: Instant,
    per_second: Arc<Vec<AtomicU64>>,
}

impl Behaviour {
    /// Latency factor and error rate at `elapsed`.
    fn now(&self, elapsed: Duration) -> (f64, f64) {
        let mut factor = 1.0;
        let mut error_rate = self.profile.error_rate;
        for event in self.events.iter().filter(|e| e.at <= elapsed) {
            factor = event.latency_factor.unwrap_or(factor);
            error_rate = event.error_rate.unwrap_or(error_rate);
        }
        (factor, error_rate)
    }
}

impl SimBackend {
    /// Starts backend `index` of a profile; `seconds` sizes the counters.
    pub async fn start(
        index: usize,
        profile: &BackendProfile,
        events: &[Event],
        seed: u64,
        start: Instant,
        seconds: usize,
    ) -> std::io::Result<SimBackend> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let per_second: Arc<Vec<AtomicU64>> =
            Arc::new((0..seconds + 1).map(|_| AtomicU64::new(0)).collect());
        let behaviour = Arc::new(Behaviour {
            profile: profile.clone(),
            events: events
                .iter()
                .filter(|e| e.backend == index)
                .cloned()
                .collect(),
            rng: Mutex::new(fastrand::Rng::with_seed(
                seed.wrapping_mul(1_000_003).wrapping_add(index as u64),
            )),
            slots: profile.concurrency.map(Semaphore::new),
            start,
            per_second: Arc::clone(&per_second),
        });
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let behaviour = Arc::clone(&behaviour);
                connections.spawn(async move {
                    let service = service_fn(move |_request| {
                        let behaviour = Arc::clone(&behaviour);
                        async move { Ok::<_, Infallible>(answer(&behaviour).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(SimBackend {
            addr,
            per_second,
            _tasks: tasks,
        })
    }

    /// Requests received in each second of the run.
    pub fn per_second(&self) -> Vec<u64> {
        self.per_second
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }
}

async fn answer(behaviour: &Behaviour) -> Response<Full<Bytes>> {
    let elapsed = behaviour.start.elapsed();
    let second = (elapsed.as_secs() as usize).min(behaviour.per_second.len() - 1);
    behaviour.per_second[second].fetch_add(1, Ordering::Relaxed);
    let (factor, error_rate) = behaviour.now(elapsed);
    let (latency, failed) = {
        let mut rng = behaviour.rng.lock().unwrap_or_else(|p| p.into_inner());
        let latency = behaviour.profile.latency.sample(&mut rng).mul_f64(factor);
        (latency, rng.f64() < error_rate)
    };
    let _slot = match &behaviour.slots {
        Some(slots) => slots.acquire().await.ok(),
        None => None,
    };
    tokio::time::sleep(latency).await;
    let mut response = Response::new(Full::new(Bytes::from_static(b"ok\n")));
    if failed {
        *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    }
    // The drawn latency, so a run can be checked against another.
    response.headers_mut().insert(
        "x-simulated-latency-us",
        http::HeaderValue::from(latency.as_micros() as u64),
    );
    response
}
